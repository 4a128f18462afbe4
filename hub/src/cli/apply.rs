//! `hub apply`: put works to one cluster or to every cluster a selector matches, and
//! Placements and ManifestWorkReplicaSets to the hub (see [`super::fleet::apply`]).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use api::{HubClient, ListOptions, ManifestWork};
use clap::{ArgGroup, Args};
use futures::StreamExt;

use super::fleet::apply::{FleetObject, apply_fleet, as_values, objects_text, split_fleet};
use super::fleet::wait::wait_set;
use super::support::connection::ConnectionArgs;
use super::support::error::{CliError, describe_client_error};
use super::support::input::{plan_works, read_documents};
use super::support::output::{self, DocumentFormat, WORK_RESOURCE};
use super::support::progress::Progress;
use super::support::query::{check_selector, matching_clusters};
use super::wait::{
    ClusterScope, Overall, Report, ResultStatus, Start, WaitFor, WorkResult, conclude, wait_for,
};

/// The flags of `hub apply` (its help text is on [`super::ClientCommand::Apply`]).
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").args(["cluster", "cluster_selector"])))]
pub struct ApplyArgs {
    /// A file, a directory (its *.yaml, *.yml and *.json files in lexical order, not
    /// recursive) or - for stdin; repeat for more.
    #[arg(
        short = 'f',
        long = "filename",
        required = true,
        value_name = "FILE|DIR|-"
    )]
    pub filenames: Vec<PathBuf>,
    /// The cluster to apply works to (ManifestWork documents must have this namespace or
    /// none); needed for works, not for Placements and ManifestWorkReplicaSets.
    #[arg(long)]
    pub cluster: Option<String>,
    /// The namespace of Placements and ManifestWorkReplicaSets that name none
    /// [default: default].
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Apply to every cluster whose labels match this selector, e.g. env=prod; each
    /// work's namespace is set to the cluster.
    #[arg(long, value_name = "SELECTOR")]
    pub cluster_selector: Option<String>,
    /// Name of the work when the input is plain Kubernetes manifests (required then).
    #[arg(long)]
    pub name: Option<String>,
    /// Print the works that would be sent, as YAML (or -o json: a List), and send
    /// nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Then wait until every work is --for on every cluster, and every
    /// ManifestWorkReplicaSet applied is --for (exit 1 when one fails, 3 when --timeout
    /// runs out).
    #[arg(long, conflicts_with = "dry_run")]
    pub wait: bool,
    /// What --wait waits for: Ready, Applied or Available (also condition=Ready)
    /// [default: Ready].
    #[arg(
        long = "for",
        value_name = "CONDITION",
        requires = "wait",
        value_parser = WaitFor::parse_condition
    )]
    pub for_: Option<WaitFor>,
    /// How long --wait waits, counted from the start of the command, e.g. 90s, 5m
    /// [default: 5m].
    #[arg(long, requires = "wait", value_parser = api::parse_duration)]
    pub timeout: Option<Duration>,
    /// Print the result per work and cluster as JSON or YAML on stdout (progress goes to
    /// stderr).
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<DocumentFormat>,
    /// Print nothing but errors (and the -o document): no per-work lines, no progress.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// How to reach the hub.
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// What applying one work did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
    Created,
    Configured,
    Unchanged,
}

impl Applied {
    fn as_str(self) -> &'static str {
        match self {
            Applied::Created => "created",
            Applied::Configured => "configured",
            Applied::Unchanged => "unchanged",
        }
    }
}

/// PUTs in flight at once when applying to many clusters.
const PUTS_IN_FLIGHT: usize = 16;

/// Runs `hub apply`.
pub async fn run(args: ApplyArgs) -> Result<(), CliError> {
    let ApplyArgs {
        filenames,
        cluster,
        namespace,
        cluster_selector,
        name,
        dry_run,
        wait,
        for_,
        timeout,
        output,
        quiet,
        connection,
    } = args;
    let started = Instant::now();
    check_selector("--cluster-selector", cluster_selector.as_deref())?;
    let docs = read_documents(&filenames)?;
    let (fleet, docs) = split_fleet(docs, namespace.as_deref())?;
    if !fleet.is_empty() && docs.is_empty() {
        let only = FleetOnly {
            wait: wait.then(|| for_.unwrap_or(WaitFor::Ready)),
            started,
            timeout: timeout.unwrap_or(DEFAULT_TIMEOUT),
            dry_run,
            output,
            quiet,
        };
        return apply_fleet_only(fleet, only, &connection).await;
    }
    if cluster.is_none() && cluster_selector.is_none() {
        return Err(CliError::Usage(
            "the input holds works (ManifestWork documents or plain manifests): pass --cluster \
             or --cluster-selector"
                .into(),
        ));
    }
    let works = plan_works(docs, name.as_deref(), cluster.as_deref())?;

    // The client is made only when needed: a dry run to one cluster works offline.
    let mut client: Option<HubClient> = None;
    let (scope, clusters) = match (&cluster, &cluster_selector) {
        (Some(c), _) => (ClusterScope::One(c.clone()), vec![c.clone()]),
        (None, Some(selector)) => {
            let hub = client.insert(connection.client()?);
            (
                ClusterScope::Selector(selector.clone()),
                matching_clusters(hub, selector).await?,
            )
        }
        (None, None) => unreachable!("clap requires --cluster or --cluster-selector"),
    };

    if dry_run {
        let planned: Vec<ManifestWork> = works
            .iter()
            .flat_map(|work| {
                clusters.iter().map(move |c| {
                    let mut w = work.clone();
                    w.metadata.namespace = Some(c.clone());
                    w
                })
            })
            .collect();
        let mut objects = as_values(&fleet);
        for w in &planned {
            objects.push(
                serde_json::to_value(w)
                    .map_err(|e| CliError::Usage(format!("cannot render JSON: {e}")))?,
            );
        }
        let json = output == Some(DocumentFormat::Json);
        output::print(&objects_text(objects, json)?);
        return Ok(());
    }

    let client = match client {
        Some(c) => c,
        None => connection.client()?,
    };
    let mut progress = Progress::new(output.is_some(), quiet);
    if !quiet {
        warn_unjoined(&client, &clusters).await;
    }
    let fleet_applied = apply_fleet(&client, &fleet, &mut progress).await?;
    let mut refused = fleet_applied.refused;
    let mut starts = Vec::new();
    let mut results = Vec::new();
    let pairs: Vec<ManifestWork> = works
        .iter()
        .flat_map(|work| {
            clusters.iter().map(move |c| {
                let mut w = work.clone();
                w.metadata.namespace = Some(c.clone());
                w
            })
        })
        .collect();
    // Several PUTs in flight, their results taken (and printed) in the input's order.
    let mut puts = futures::stream::iter(pairs.iter().map(|w| {
        let client = &client;
        async move { (w, apply_one(client, w).await) }
    }))
    .buffered(PUTS_IN_FLIGHT);
    while let Some((w, put)) = puts.next().await {
        let c = w.metadata.namespace.clone().unwrap_or_default();
        match put {
            Ok((applied, stored)) => {
                progress.line(&format!(
                    "{WORK_RESOURCE}/{} {} (cluster {c})",
                    w.metadata.name,
                    applied.as_str()
                ));
                // The stored work and the index it is consistent with: its
                // resourceVersion (the response's X-Hub-Index may be newer than the
                // body, and blocking from it could miss a status write).
                let index = stored
                    .metadata
                    .resource_version
                    .as_deref()
                    .and_then(|rv| rv.parse().ok())
                    .unwrap_or(0);
                starts.push(Start {
                    cluster: c,
                    work: w.metadata.name.clone(),
                    seen: Some(stored),
                    index,
                    action: Some(applied.as_str()),
                });
            }
            // A refusal concerns this work only; the others may still go through.
            Err(e) if e.exit_code() == 1 => {
                refused = true;
                let about = format!("manifestwork {:?} (cluster {c})", w.metadata.name);
                let line = describe_client_error(&e, Some(&about));
                eprintln!("{line}");
                results.push(WorkResult {
                    cluster: c,
                    work: w.metadata.name.clone(),
                    action: Some("refused"),
                    status: ResultStatus::Failed,
                    message: line,
                    generation: None,
                    conditions: Vec::new(),
                    pending: Vec::new(),
                    failed: Vec::new(),
                    last_lease_time: None,
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
    drop(puts);
    let for_ = wait.then(|| for_.unwrap_or(WaitFor::Ready));
    let report = match for_ {
        Some(for_) if !refused => {
            let timeout = timeout.unwrap_or(DEFAULT_TIMEOUT);
            let mut report = wait_for(
                &client,
                scope,
                starts,
                for_,
                started,
                timeout,
                &mut progress,
            )
            .await?;
            report.results.splice(0..0, results);
            report
        }
        _ => {
            // Without --wait (or after a refusal): the hub took the others, done.
            let status = if refused {
                Overall::Failed
            } else {
                Overall::Done
            };
            let took = if refused && wait {
                ResultStatus::Pending
            } else {
                ResultStatus::Done
            };
            results.extend(starts.into_iter().map(|s| {
                let work = s
                    .seen
                    .unwrap_or_else(|| ManifestWork::new(&s.cluster, &s.work, Vec::new()));
                WorkResult {
                    cluster: s.cluster,
                    work: s.work,
                    action: s.action,
                    status: took,
                    message: s.action.unwrap_or("applied").to_string(),
                    generation: work.metadata.generation,
                    conditions: work.status.conditions,
                    pending: Vec::new(),
                    failed: Vec::new(),
                    last_lease_time: None,
                }
            }));
            Report {
                status,
                results,
                summary: String::new(),
                error: refused.then_some(CliError::Reported(1)),
            }
        }
    };
    conclude("ApplyResult", for_, report, started, output, &mut progress)?;
    match for_ {
        Some(for_) => {
            let timeout = timeout.unwrap_or(DEFAULT_TIMEOUT);
            let sets = &fleet_applied.sets;
            wait_sets(&client, sets, for_, (started, timeout), &mut progress).await
        }
        None => Ok(()),
    }
}

/// How long `--wait` waits without `--timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// What `hub apply` does with an input of Placements and ManifestWorkReplicaSets only.
struct FleetOnly {
    /// `--wait --for`.
    wait: Option<WaitFor>,
    /// When the command started.
    started: Instant,
    /// `--timeout`.
    timeout: Duration,
    dry_run: bool,
    output: Option<DocumentFormat>,
    quiet: bool,
}

/// Applies fleet objects (no cluster needs naming); `-o` prints them as stored.
async fn apply_fleet_only(
    fleet: Vec<FleetObject>,
    only: FleetOnly,
    connection: &ConnectionArgs,
) -> Result<(), CliError> {
    let FleetOnly {
        wait,
        started,
        timeout,
        dry_run,
        output,
        quiet,
    } = only;
    let json = output == Some(DocumentFormat::Json);
    if dry_run {
        output::print(&objects_text(as_values(&fleet), json)?);
        return Ok(());
    }
    let client = connection.client()?;
    let mut progress = Progress::new(output.is_some(), quiet);
    let applied = apply_fleet(&client, &fleet, &mut progress).await?;
    if output.is_some() {
        output::print(&objects_text(applied.stored, json)?);
    }
    if applied.refused {
        return Err(CliError::Reported(1));
    }
    match wait {
        Some(for_) => {
            let sets = &applied.sets;
            wait_sets(&client, sets, for_, (started, timeout), &mut progress).await
        }
        None => Ok(()),
    }
}

/// `--wait` for the sets applied, one after another, until `timeout` from `started`.
async fn wait_sets(
    client: &HubClient,
    sets: &[(String, String)],
    for_: WaitFor,
    time: (Instant, Duration),
    progress: &mut Progress,
) -> Result<(), CliError> {
    for (namespace, name) in sets {
        let done = wait_set(client, namespace, name, for_, time, progress).await?;
        if let Some(e) = done.error() {
            return Err(e);
        }
        progress.line(&done.message);
    }
    Ok(())
}

/// Warns about each cluster that has no joined agent: the works stored for it wait there,
/// and nothing applies them until an agent joins (a wait would only time out). A cluster
/// this token may not read is not warned about.
async fn warn_unjoined(client: &HubClient, clusters: &[String]) {
    for c in clusters {
        let joined = match client.get_cluster(c).await {
            Ok(found) => found
                .value
                .condition(api::status::CLUSTER_JOINED)
                .is_some_and(|j| j.status == "True"),
            Err(_) => continue,
        };
        if !joined {
            eprintln!(
                "warning: cluster {c} has no joined agent: nothing applies its works until one \
                 joins (`klusterlet join` on the cluster, then `hub accept {c}`)"
            );
        }
    }
}

/// PUTs one work and tells what changed, from what was there before; returns the work as
/// stored.
async fn apply_one(
    client: &HubClient,
    work: &ManifestWork,
) -> Result<(Applied, ManifestWork), api::ClientError> {
    let cluster = work.metadata.namespace.as_deref().unwrap_or_default();
    let before = match client
        .get_work(cluster, &work.metadata.name, &ListOptions::default())
        .await
    {
        Ok(w) => Some(w.value.metadata.resource_version),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e),
    };
    let after = client.put_work(work, None).await?.value;
    let applied = match before {
        None => Applied::Created,
        Some(rv) if rv != after.metadata.resource_version => Applied::Configured,
        Some(_) => Applied::Unchanged,
    };
    Ok((applied, after))
}
