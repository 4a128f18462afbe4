//! `hub get works|clusters|registrations|tokens|audit`, and the fleet's nouns
//! (`placements`, `decisions`, `manifestworkreplicasets`) from [`super::fleet::get`].

use api::{ListOptions, ManagedCluster, ManifestWork, status};
use chrono::Utc;
use clap::{Args, Subcommand};

use super::audit::GetAuditArgs;
use super::fleet::get::{GetDecisionsArgs, GetPlacementsArgs, GetSetsArgs};
use super::registration::GetRegistrationsArgs;
use super::support::connection::ConnectionArgs;
use super::support::error::CliError;
use super::support::output::{self, OutputFormat, Table};
use super::support::query::{check_selector, list_all_clusters, list_all_works};

/// `hub get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// What to show.
    #[command(subcommand)]
    pub what: GetCommand,
    /// How to reach the hub.
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// The kinds `hub get` shows.
#[derive(Debug, Subcommand)]
pub enum GetCommand {
    /// ManifestWorks: CLUSTER, NAME, MANIFESTS, APPLIED, AVAILABLE, READY, AGE.
    ///
    /// APPLIED, AVAILABLE and READY are the work's condition statuses: True, False,
    /// Unknown when the condition is about an older generation of the work, `-` when the
    /// agent has not reported it.
    #[command(visible_alias = "work", aliases = ["manifestworks", "manifestwork", "mw"])]
    Works(GetWorksArgs),
    /// ManagedClusters: NAME, ACCEPTED, JOINED, AVAILABLE, LABELS, AGE.
    ///
    /// ACCEPTED is spec.hubAcceptsClient; JOINED and AVAILABLE are the statuses of the
    /// conditions ManagedClusterJoined and ManagedClusterConditionAvailable (`-` when
    /// absent). -o wide adds VERSION, LEASE (time since the agent's last lease renewal)
    /// and RESOURCEVERSION.
    #[command(
        visible_alias = "cluster",
        aliases = ["managedclusters", "managedcluster", "mcl"]
    )]
    Clusters(GetClustersArgs),
    /// Join requests: ID, CLUSTER, STATE, KEY, LABELS, AGE (admins only).
    ///
    /// KEY is the first 12 hex digits of the SHA-256 of the agent's public key, to tell
    /// two agents asking for one name apart.
    #[command(
        visible_alias = "registration",
        aliases = ["reg", "regs", "joinrequests"]
    )]
    Registrations(GetRegistrationsArgs),
    /// Tokens: ID, KIND, USES, MAX, EXPIRES, AUTO-ACCEPT, LABELS/SCOPE, AGE (never their
    /// secrets; admins only). The same as `hub token list`.
    #[command(visible_alias = "token")]
    Tokens(GetTokensArgs),
    /// The audit log, newest first: TIME, ACTOR, ACTION, TARGET, SOURCE (admins only).
    Audit(GetAuditArgs),
    /// Placements: NAME, SUCCEEDED, REASON, SELECTEDCLUSTERS, AGE (NAMESPACE first with
    /// -A).
    ///
    /// SUCCEEDED and REASON are the status and reason of the PlacementSatisfied
    /// condition, as OCM prints them. -o wide adds CLUSTERSETS, NUMBEROFCLUSTERS (`all`
    /// when unset), DECISIONGROUPS and RESOURCEVERSION.
    #[command(visible_alias = "placement")]
    Placements(GetPlacementsArgs),
    /// The clusters a Placement decided: NAME (the PlacementDecision), GROUP, CLUSTER.
    ///
    /// One row per decided cluster, so that grep finds a cluster and wc -l counts them.
    /// GROUP is the decision group's name, or its index when unnamed. -o wide adds the
    /// decision's REASON; -o json|yaml print OCM's PlacementDecisionList.
    #[command(
        visible_alias = "decision",
        aliases = ["placementdecisions", "placementdecision"]
    )]
    Decisions(GetDecisionsArgs),
    /// ManifestWorkReplicaSets: NAME, PLACEMENT, FOUND, TOTAL, APPLIED, AVAILABLE, AGE
    /// (NAMESPACE first with -A).
    ///
    /// PLACEMENT and FOUND are the reasons of the PlacementVerified and
    /// ManifestworkApplied conditions (OCM's columns); the counts are the set's summary
    /// of its works. -o wide adds DEGRADED, PROGRESSING, PLACEMENTS and RESOURCEVERSION.
    #[command(
        name = "manifestworkreplicasets",
        visible_aliases = ["manifestworkreplicaset", "mwrs"]
    )]
    ManifestWorkReplicaSets(GetSetsArgs),
}

/// `hub get tokens`.
#[derive(Debug, Args)]
pub struct GetTokensArgs {
    /// Output format: wide, name, json, yaml, or jsonpath=TEMPLATE as kubectl's
    /// (e.g. 'jsonpath={.items[*].metadata.name}') [default: a table].
    #[arg(short = 'o', long, value_name = "FORMAT", value_parser = OutputFormat::parser())]
    pub output: Option<OutputFormat>,
}

/// `hub get works`.
#[derive(Debug, Args)]
pub struct GetWorksArgs {
    /// Show only this work (needs --cluster).
    #[arg(requires = "cluster", conflicts_with = "selector")]
    pub name: Option<String>,
    /// The cluster whose works to show [default: all clusters].
    #[arg(long, conflicts_with = "all_clusters")]
    pub cluster: Option<String>,
    /// Show the works of all clusters (what happens anyway without --cluster).
    #[arg(short = 'A', long)]
    pub all_clusters: bool,
    /// Label selector, e.g. app=web,tier!=db.
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Output format: wide, name, json, yaml, or jsonpath=TEMPLATE as kubectl's
    /// (e.g. 'jsonpath={.items[*].metadata.name}') [default: a table].
    #[arg(short = 'o', long, value_name = "FORMAT", value_parser = OutputFormat::parser())]
    pub output: Option<OutputFormat>,
    /// Fetch long lists this many works at a time (0: all in one answer); the output is
    /// one list either way.
    #[arg(long, default_value_t = 500, value_name = "N")]
    pub chunk_size: u32,
    /// Print the table without its header line.
    #[arg(long)]
    pub no_headers: bool,
    /// After the list, keep printing the works that change (created or changed; a
    /// deletion shows as a change first), one row each, as `kubectl get -w` does, until
    /// interrupted.
    #[arg(short = 'w', long)]
    pub watch: bool,
}

/// `hub get clusters`.
#[derive(Debug, Args)]
pub struct GetClustersArgs {
    /// Show only this cluster.
    #[arg(conflicts_with = "selector")]
    pub name: Option<String>,
    /// Label selector, e.g. env=prod,region in (eu,us).
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Output format: wide, name, json, yaml, or jsonpath=TEMPLATE as kubectl's
    /// (e.g. 'jsonpath={.items[*].metadata.name}') [default: a table].
    #[arg(short = 'o', long, value_name = "FORMAT", value_parser = OutputFormat::parser())]
    pub output: Option<OutputFormat>,
    /// Print the table without its header line.
    #[arg(long)]
    pub no_headers: bool,
    /// After the list, keep printing the clusters that change, one row each, until
    /// interrupted.
    #[arg(short = 'w', long)]
    pub watch: bool,
}

/// Runs `hub get`.
pub async fn run(args: GetArgs) -> Result<(), CliError> {
    let GetArgs { what, connection } = args;
    match what {
        GetCommand::Works(a) => works(a, &connection).await,
        GetCommand::Clusters(a) => clusters(a, &connection).await,
        GetCommand::Registrations(a) => super::registration::get(a, &connection).await,
        GetCommand::Tokens(GetTokensArgs { output }) => {
            super::token::list(output, &connection).await
        }
        GetCommand::Audit(a) => super::audit::get(a, &connection).await,
        GetCommand::Placements(a) => super::fleet::get::placements(a, &connection.client()?).await,
        GetCommand::Decisions(a) => super::fleet::get::decisions(a, &connection.client()?).await,
        GetCommand::ManifestWorkReplicaSets(a) => {
            super::fleet::get::sets(a, &connection.client()?).await
        }
    }
}

async fn works(args: GetWorksArgs, connection: &ConnectionArgs) -> Result<(), CliError> {
    let GetWorksArgs {
        name,
        cluster,
        all_clusters: _,
        selector,
        output,
        chunk_size,
        no_headers,
        watch,
    } = args;
    check_selector("--selector", selector.as_deref())?;
    let client = connection.client()?;
    let style = Style { output, no_headers };
    let with_cluster = cluster.is_none();
    if let (Some(name), Some(cluster)) = (&name, &cluster) {
        let found = client
            .get_work(cluster, name, &ListOptions::default())
            .await?;
        let work = found.value;
        print_works(std::slice::from_ref(&work), &work, false, &style, None)?;
        if watch {
            let (cluster, name) = (cluster.clone(), name.clone());
            watch_changes(
                std::slice::from_ref(&work),
                found.index,
                work_key,
                |index| {
                    let client = client.clone();
                    let (cluster, name) = (cluster.clone(), name.clone());
                    async move {
                        let opts = blocking(index);
                        match client.get_work(&cluster, &name, &opts).await {
                            Ok(w) => Ok((vec![w.value], w.index)),
                            Err(e) if e.is_not_found() => Ok((Vec::new(), index)),
                            Err(e) => Err(e),
                        }
                    }
                },
                |changed| print_works(changed, &changed.to_vec(), false, &style.rows_only(), None),
            )
            .await?;
        }
        return Ok(());
    }
    let opts = ListOptions {
        label_selector: selector.clone(),
        limit: (chunk_size > 0).then_some(chunk_size),
        ..Default::default()
    };
    let list = list_all_works(&client, cluster.as_deref(), opts).await?;
    let scope = match &cluster {
        Some(c) => format!(" in cluster {c}"),
        None => String::new(),
    };
    print_works(&list.items, &list, with_cluster, &style, Some(&scope))?;
    if watch {
        watch_changes(
            &list.items,
            list.metadata.index,
            work_key,
            |index| {
                let client = client.clone();
                let cluster = cluster.clone();
                let opts = ListOptions {
                    label_selector: selector.clone(),
                    ..blocking(index)
                };
                async move {
                    let page = client.list_works(cluster.as_deref(), &opts).await?;
                    Ok((page.value.items, page.index))
                }
            },
            |changed| {
                print_works(
                    changed,
                    &changed.to_vec(),
                    with_cluster,
                    &style.rows_only(),
                    None,
                )
            },
        )
        .await?;
    }
    Ok(())
}

/// How `get works|clusters` prints.
#[derive(Debug, Clone)]
struct Style {
    output: Option<OutputFormat>,
    no_headers: bool,
}

impl Style {
    /// The same for rows printed under a table already shown (`--watch`).
    fn rows_only(&self) -> Style {
        Style {
            no_headers: true,
            ..self.clone()
        }
    }
}

fn blocking(index: u64) -> ListOptions {
    ListOptions {
        index: Some(index),
        wait: Some(std::time::Duration::from_secs(60)),
        ..Default::default()
    }
}

fn work_key(w: &ManifestWork) -> (String, String, Option<String>) {
    (
        w.metadata.namespace.clone().unwrap_or_default(),
        w.metadata.name.clone(),
        w.metadata.resource_version.clone(),
    )
}

fn cluster_key(c: &ManagedCluster) -> (String, String, Option<String>) {
    (
        String::new(),
        c.metadata.name.clone(),
        c.metadata.resource_version.clone(),
    )
}

/// `--watch`: blocks on `next(index)` (a blocking query returning the objects in view and
/// the new index) and prints, with `print`, the objects whose resourceVersion is new since
/// the last answer, until the process is interrupted. A failure (hub restarting) is
/// retried after a pause, as `kubectl get -w` reconnects.
async fn watch_changes<T, F, Fut>(
    printed: &[T],
    mut index: u64,
    key: fn(&T) -> (String, String, Option<String>),
    next: F,
    print: impl Fn(&[T]) -> Result<(), CliError>,
) -> Result<(), CliError>
where
    T: Clone,
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, u64), api::ClientError>>,
{
    let mut seen: std::collections::HashSet<(String, String, Option<String>)> =
        printed.iter().map(key).collect();
    loop {
        match next(index).await {
            Ok((items, new_index)) => {
                let changed: Vec<T> = items
                    .iter()
                    .filter(|o| !seen.contains(&key(o)))
                    .cloned()
                    .collect();
                seen = items.iter().map(key).collect();
                if !changed.is_empty() {
                    print(&changed)?;
                }
                index = new_index.max(index);
            }
            Err(e) if e.exit_code() == 1 => return Err(e.into()),
            Err(_) => tokio::time::sleep(std::time::Duration::from_secs(1)).await,
        }
    }
}

/// The status column of a condition: its status at the current generation, `Unknown`
/// when it is about an older one, `-` when absent.
fn condition_cell(work: &ManifestWork, type_: &str) -> String {
    status::shown_status(work.condition(type_), work.metadata.generation)
}

fn print_works<T: serde::Serialize>(
    works: &[ManifestWork],
    raw: &T,
    with_cluster: bool,
    style: &Style,
    empty_scope: Option<&str>,
) -> Result<(), CliError> {
    let wide = match &style.output {
        Some(OutputFormat::Json) => {
            output::print(&output::to_json(raw)?);
            return Ok(());
        }
        Some(OutputFormat::Yaml) => {
            output::print(&output::to_yaml(raw)?);
            return Ok(());
        }
        Some(OutputFormat::JsonPath(t)) => {
            output::print(&output::jsonpath(t, raw)?);
            return Ok(());
        }
        Some(OutputFormat::Name) => {
            let names: String = works
                .iter()
                .map(|w| format!("manifestwork/{}\n", w.metadata.name))
                .collect();
            output::print(&names);
            return Ok(());
        }
        Some(OutputFormat::Wide) => true,
        None => false,
    };
    if works.is_empty() {
        if let Some(scope) = empty_scope {
            eprintln!("No resources found{scope}.");
        }
        return Ok(());
    }
    let mut header = Vec::new();
    if with_cluster {
        header.push("CLUSTER");
    }
    header.extend(["NAME", "MANIFESTS", "APPLIED", "AVAILABLE", "READY", "AGE"]);
    if wide {
        header.extend(["GENERATION", "RESOURCEVERSION", "LABELS"]);
    }
    let mut table = Table::new(&header);
    let now = Utc::now();
    for w in works {
        let m = &w.metadata;
        let mut row = Vec::new();
        if with_cluster {
            row.push(m.namespace.clone().unwrap_or_default());
        }
        row.extend([
            m.name.clone(),
            w.spec.workload.manifests.len().to_string(),
            condition_cell(w, status::APPLIED),
            condition_cell(w, status::AVAILABLE),
            condition_cell(w, status::READY),
            output::age(m.creation_timestamp, now),
        ]);
        if wide {
            row.extend([
                m.generation.map(|g| g.to_string()).unwrap_or_default(),
                m.resource_version.clone().unwrap_or_default(),
                output::labels(&m.labels),
            ]);
        }
        table.row(row);
    }
    print_table(&table, style);
    Ok(())
}

fn print_table(table: &Table, style: &Style) {
    if style.no_headers {
        output::print(&table.render_rows());
    } else {
        output::print(&table.render());
    }
}

async fn clusters(args: GetClustersArgs, connection: &ConnectionArgs) -> Result<(), CliError> {
    let GetClustersArgs {
        name,
        selector,
        output,
        no_headers,
        watch,
    } = args;
    check_selector("--selector", selector.as_deref())?;
    let client = connection.client()?;
    let style = Style { output, no_headers };
    let print_changed = |changed: &[ManagedCluster]| {
        print_clusters(changed, &changed.to_vec(), &style.rows_only(), false)
    };
    if let Some(name) = name {
        let found = client.get_cluster(&name).await?;
        let cluster = found.value;
        print_clusters(std::slice::from_ref(&cluster), &cluster, &style, true)?;
        if watch {
            watch_changes(
                std::slice::from_ref(&cluster),
                found.index,
                cluster_key,
                |index| {
                    let client = client.clone();
                    let name = name.clone();
                    async move {
                        match client.get_cluster_with(&name, &blocking(index)).await {
                            Ok(c) => Ok((vec![c.value], c.index)),
                            Err(e) if e.is_not_found() => Ok((Vec::new(), index)),
                            Err(e) => Err(e),
                        }
                    }
                },
                print_changed,
            )
            .await?;
        }
        return Ok(());
    }
    let opts = ListOptions {
        label_selector: selector.clone(),
        ..Default::default()
    };
    let list = list_all_clusters(&client, opts).await?;
    print_clusters(&list.items, &list, &style, true)?;
    if watch {
        watch_changes(
            &list.items,
            list.metadata.index,
            cluster_key,
            |index| {
                let client = client.clone();
                let opts = ListOptions {
                    label_selector: selector.clone(),
                    ..blocking(index)
                };
                async move {
                    let page = client.list_clusters(&opts).await?;
                    Ok((page.value.items, page.index))
                }
            },
            print_changed,
        )
        .await?;
    }
    Ok(())
}

fn print_clusters<T: serde::Serialize>(
    clusters: &[ManagedCluster],
    raw: &T,
    style: &Style,
    say_if_empty: bool,
) -> Result<(), CliError> {
    let wide = match &style.output {
        Some(OutputFormat::Json) => {
            output::print(&output::to_json(raw)?);
            return Ok(());
        }
        Some(OutputFormat::Yaml) => {
            output::print(&output::to_yaml(raw)?);
            return Ok(());
        }
        Some(OutputFormat::JsonPath(t)) => {
            output::print(&output::jsonpath(t, raw)?);
            return Ok(());
        }
        Some(OutputFormat::Name) => {
            let names: String = clusters
                .iter()
                .map(|c| format!("managedcluster/{}\n", c.metadata.name))
                .collect();
            output::print(&names);
            return Ok(());
        }
        Some(OutputFormat::Wide) => true,
        None => false,
    };
    if clusters.is_empty() {
        if say_if_empty {
            eprintln!("No resources found.");
        }
        return Ok(());
    }
    let mut header = vec!["NAME", "ACCEPTED", "JOINED", "AVAILABLE", "LABELS", "AGE"];
    if wide {
        header.extend(["VERSION", "LEASE", "RESOURCEVERSION"]);
    }
    let mut table = Table::new(&header);
    let now = Utc::now();
    for c in clusters {
        let status = |t: &str| c.condition(t).map_or("-".to_string(), |c| c.status.clone());
        let mut row = vec![
            c.metadata.name.clone(),
            c.spec.hub_accepts_client.to_string(),
            status(status::CLUSTER_JOINED),
            status(status::CLUSTER_AVAILABLE),
            output::labels(&c.metadata.labels),
            output::age(c.metadata.creation_timestamp, now),
        ];
        if wide {
            row.extend([
                c.status
                    .version
                    .as_ref()
                    .map(|v| v.kubernetes.clone())
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| "-".into()),
                c.status
                    .last_lease_time
                    .map_or_else(|| "-".into(), |t| output::age(Some(t), now)),
                c.metadata.resource_version.clone().unwrap_or_default(),
            ]);
        }
        table.row(row);
    }
    print_table(&table, style);
    Ok(())
}
