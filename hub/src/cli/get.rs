//! `hub get works|clusters|registrations|tokens|audit`.

use api::selector::Selector;
use api::{HubClient, List, ListOptions, ManagedCluster, ManifestWork};
use chrono::Utc;
use clap::{Args, Subcommand};

use super::audit::GetAuditArgs;
use super::output::{self, OutputFormat, Table};
use super::registration::GetRegistrationsArgs;
use super::{CliError, ConnectionArgs};

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
}

/// `hub get tokens`.
#[derive(Debug, Args)]
pub struct GetTokensArgs {
    /// Output format [default: a table].
    #[arg(short = 'o', long, value_enum)]
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
    /// Output format [default: a table].
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<OutputFormat>,
    /// Fetch long lists this many works at a time (0: all in one answer); the output is
    /// one list either way.
    #[arg(long, default_value_t = 500, value_name = "N")]
    pub chunk_size: u32,
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
    /// Output format [default: a table].
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<OutputFormat>,
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
    }
}

/// Checks a selector here, so a typo is a usage error (exit 2), not a refusal.
pub fn check_selector(flag: &str, selector: Option<&str>) -> Result<(), CliError> {
    if let Some(s) = selector {
        Selector::parse(s).map_err(|e| CliError::Usage(format!("{flag} {s:?}: {e}")))?;
    }
    Ok(())
}

/// Every page of a work list, as one list with the first page's index.
pub async fn list_all_works(
    client: &HubClient,
    cluster: Option<&str>,
    opts: ListOptions,
) -> Result<List<ManifestWork>, CliError> {
    let mut opts = opts;
    let first = client.list_works(cluster, &opts).await?.value;
    let mut next = first.metadata.continue_.clone();
    let mut list = List {
        metadata: api::ListMeta {
            continue_: None,
            ..first.metadata
        },
        ..first
    };
    while let Some(token) = next.filter(|t| !t.is_empty()) {
        opts.continue_ = Some(token);
        let page = client.list_works(cluster, &opts).await?.value;
        list.items.extend(page.items);
        next = page.metadata.continue_;
    }
    Ok(list)
}

/// Every page of a cluster list, as one list with the first page's index.
pub async fn list_all_clusters(
    client: &HubClient,
    opts: ListOptions,
) -> Result<List<ManagedCluster>, CliError> {
    let mut opts = opts;
    let first = client.list_clusters(&opts).await?.value;
    let mut next = first.metadata.continue_.clone();
    let mut list = List {
        metadata: api::ListMeta {
            continue_: None,
            ..first.metadata
        },
        ..first
    };
    while let Some(token) = next.filter(|t| !t.is_empty()) {
        opts.continue_ = Some(token);
        let page = client.list_clusters(&opts).await?.value;
        list.items.extend(page.items);
        next = page.metadata.continue_;
    }
    Ok(list)
}

async fn works(args: GetWorksArgs, connection: &ConnectionArgs) -> Result<(), CliError> {
    let GetWorksArgs {
        name,
        cluster,
        all_clusters: _,
        selector,
        output,
        chunk_size,
    } = args;
    check_selector("--selector", selector.as_deref())?;
    let client = connection.client()?;
    if let (Some(name), Some(cluster)) = (&name, &cluster) {
        let work = client
            .get_work(cluster, name, &ListOptions::default())
            .await?
            .value;
        return print_works(std::slice::from_ref(&work), &work, false, output, None);
    }
    let opts = ListOptions {
        label_selector: selector,
        limit: (chunk_size > 0).then_some(chunk_size),
        ..Default::default()
    };
    let list = list_all_works(&client, cluster.as_deref(), opts).await?;
    let scope = match &cluster {
        Some(c) => format!(" in cluster {c}"),
        None => String::new(),
    };
    print_works(&list.items, &list, cluster.is_none(), output, Some(&scope))
}

/// The status column of a condition: its status at the current generation, `Unknown`
/// when it is about an older one, `-` when absent.
fn condition_cell(work: &ManifestWork, type_: &str) -> String {
    let Some(c) = work.condition(type_) else {
        return "-".into();
    };
    match (c.observed_generation, work.metadata.generation) {
        (Some(seen), Some(current)) if seen < current => "Unknown".into(),
        _ => c.status.clone(),
    }
}

fn print_works<T: serde::Serialize>(
    works: &[ManifestWork],
    raw: &T,
    with_cluster: bool,
    output: Option<OutputFormat>,
    empty_scope: Option<&str>,
) -> Result<(), CliError> {
    let wide = match output {
        Some(OutputFormat::Json) => {
            output::print(&output::to_json(raw)?);
            return Ok(());
        }
        Some(OutputFormat::Yaml) => {
            output::print(&output::to_yaml(raw)?);
            return Ok(());
        }
        Some(OutputFormat::Wide) => true,
        None => false,
    };
    if works.is_empty() {
        eprintln!("No resources found{}.", empty_scope.unwrap_or_default());
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
            condition_cell(w, "Applied"),
            condition_cell(w, "Available"),
            condition_cell(w, "Ready"),
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
    output::print(&table.render());
    Ok(())
}

async fn clusters(args: GetClustersArgs, connection: &ConnectionArgs) -> Result<(), CliError> {
    let GetClustersArgs {
        name,
        selector,
        output,
    } = args;
    check_selector("--selector", selector.as_deref())?;
    let client = connection.client()?;
    if let Some(name) = name {
        let cluster = client.get_cluster(&name).await?.value;
        return print_clusters(std::slice::from_ref(&cluster), &cluster, output);
    }
    let opts = ListOptions {
        label_selector: selector,
        ..Default::default()
    };
    let list = list_all_clusters(&client, opts).await?;
    print_clusters(&list.items, &list, output)
}

fn print_clusters<T: serde::Serialize>(
    clusters: &[ManagedCluster],
    raw: &T,
    output: Option<OutputFormat>,
) -> Result<(), CliError> {
    let wide = match output {
        Some(OutputFormat::Json) => {
            output::print(&output::to_json(raw)?);
            return Ok(());
        }
        Some(OutputFormat::Yaml) => {
            output::print(&output::to_yaml(raw)?);
            return Ok(());
        }
        Some(OutputFormat::Wide) => true,
        None => false,
    };
    if clusters.is_empty() {
        eprintln!("No resources found.");
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
            status("ManagedClusterJoined"),
            status("ManagedClusterConditionAvailable"),
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
    output::print(&table.render());
    Ok(())
}
