//! `hub delete work|cluster|placement|manifestworkreplicaset`: ask for deletion, then
//! wait with blocking GETs until the object is gone (like kubectl, by default).

use std::time::{Duration, Instant};

use api::{ClientError, HubClient, Indexed, ListOptions, ManagedCluster, ManifestWork};
use clap::{ArgGroup, Args, Subcommand};
use serde::Serialize;

use super::fleet::DEFAULT_NAMESPACE;
use super::support::connection::ConnectionArgs;
use super::support::error::{CliError, describe_client_error};
use super::support::output::{
    self, CLUSTER_RESOURCE, DocumentFormat, PLACEMENT_RESOURCE, SET_RESOURCE, WORK_RESOURCE,
};
use super::support::query::{check_selector, list_all_clusters, list_all_works};
use super::support::watch::{block_for, humantime};

/// `--wait`/`--timeout` of the deletions.
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// Wait until the object is gone (`--wait=false` returns once deletion was asked for).
    #[arg(
        long,
        default_value_t = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub wait: bool,
    /// How long to wait for the deletion, e.g. 30s, 5m (exit code 3 when it runs out).
    #[arg(long, default_value = "60s", value_parser = api::parse_duration)]
    pub timeout: std::time::Duration,
}

/// The flags of `hub delete` (its help text is on [`super::ClientCommand::Delete`]).
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// What to delete.
    #[command(subcommand)]
    pub what: DeleteCommand,
    /// How to reach the hub.
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// The kinds `hub delete` deletes.
#[derive(Debug, Subcommand)]
pub enum DeleteCommand {
    /// Delete a ManifestWork; its agent removes its resources from the cluster first.
    ///
    /// Exit codes: 0 gone; 1 refused or not found; 2 usage; 3 timed out; 4 hub
    /// unreachable, 5xx, 401 or 403.
    #[command(visible_alias = "works", aliases = ["manifestwork", "manifestworks", "mw"])]
    Work(DeleteWorkArgs),
    /// Delete a cluster and all its works; the record goes once its agent cleaned up.
    ///
    /// Exit codes: 0 gone; 1 refused or not found; 2 usage; 3 timed out; 4 hub
    /// unreachable, 5xx, 401 or 403.
    #[command(
        visible_alias = "clusters",
        aliases = ["managedcluster", "managedclusters", "mcl"]
    )]
    Cluster(DeleteClusterArgs),
    /// Delete a Placement; sets that use it keep their works until it exists again (their
    /// PlacementVerified turns False).
    ///
    /// Exit codes: 0 gone; 1 refused or not found; 2 usage; 3 timed out; 4 hub
    /// unreachable, 5xx, 401 or 403.
    #[command(visible_alias = "placements")]
    Placement(DeleteFleetArgs),
    /// Delete a ManifestWorkReplicaSet; its works go as its cascadeDeletionPolicy says
    /// (Background: with it; Foreground: first, the set waits for them; Orphan: they
    /// stay).
    ///
    /// Exit codes: 0 gone; 1 refused or not found; 2 usage; 3 timed out (the works still
    /// there are counted); 4 hub unreachable, 5xx, 401 or 403.
    #[command(
        name = "manifestworkreplicaset",
        visible_aliases = ["manifestworkreplicasets", "mwrs"]
    )]
    ManifestWorkReplicaSet(DeleteFleetArgs),
}

/// `hub delete placement` and `hub delete manifestworkreplicaset`.
#[derive(Debug, Args)]
pub struct DeleteFleetArgs {
    /// The object's name.
    pub name: String,
    /// Its namespace.
    #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Waiting.
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Output.
    #[command(flatten)]
    pub report: ReportArgs,
}

/// `hub delete work`.
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("target").required(true).args(["cluster", "cluster_selector"])
))]
pub struct DeleteWorkArgs {
    /// The work's name.
    pub name: String,
    /// The cluster the work belongs to.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Delete the work from every cluster whose labels match this selector.
    #[arg(long, value_name = "SELECTOR")]
    pub cluster_selector: Option<String>,
    /// Waiting.
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Output.
    #[command(flatten)]
    pub report: ReportArgs,
}

/// `-o` and `--quiet` of `hub delete`.
#[derive(Debug, Clone, Copy, Args)]
pub struct ReportArgs {
    /// Print a DeleteResult as JSON or YAML instead of one line per object.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<DocumentFormat>,
    /// Print nothing but errors (and the -o document).
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// What happened to one object (`hub delete -o json|yaml`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteOutcome {
    /// `ManifestWork`, `ManagedCluster`, `Placement` or `ManifestWorkReplicaSet`.
    pub kind: &'static str,
    /// The work's cluster (works only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The namespace (Placements and ManifestWorkReplicaSets only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The object's name.
    pub name: String,
    /// `deleted` (gone, or asked for with --wait=false) or `timeout` (still there).
    pub status: &'static str,
    /// What keeps it, with `timeout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
}

/// The document `hub delete -o json|yaml` prints.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteResult {
    /// Always `v1`.
    pub api_version: &'static str,
    /// Always `DeleteResult`.
    pub kind: &'static str,
    /// `done` or `timeout`.
    pub status: &'static str,
    /// One per object.
    pub results: Vec<DeleteOutcome>,
}

impl ReportArgs {
    /// Prints a line unless quiet or printing a document.
    fn line(&self, text: &str) {
        if !self.quiet && self.output.is_none() {
            output::print(text);
        }
    }

    /// Prints the document, if asked for.
    fn document(&self, results: Vec<DeleteOutcome>) -> Result<(), CliError> {
        if let Some(format) = self.output {
            let status = if results.iter().all(|r| r.status == "deleted") {
                "done"
            } else {
                "timeout"
            };
            let doc = DeleteResult {
                api_version: "v1",
                kind: "DeleteResult",
                status,
                results,
            };
            output::print(&output::document(&doc, format)?);
        }
        Ok(())
    }
}

/// `hub delete cluster`.
#[derive(Debug, Args)]
pub struct DeleteClusterArgs {
    /// The cluster's name.
    pub name: String,
    /// Remove the records at once, without waiting for the agent to clean up: resources
    /// of its works may be left on the cluster (they are listed).
    #[arg(long)]
    pub force: bool,
    /// Waiting.
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Output.
    #[command(flatten)]
    pub report: ReportArgs,
}

/// Runs `hub delete`.
pub async fn run(args: DeleteArgs) -> Result<(), CliError> {
    let DeleteArgs { what, connection } = args;
    match what {
        DeleteCommand::Work(a) => delete_work(a, &connection).await,
        DeleteCommand::Cluster(a) => delete_cluster(a, &connection).await,
        DeleteCommand::Placement(a) => delete_fleet(Fleet::Placement, a, &connection).await,
        DeleteCommand::ManifestWorkReplicaSet(a) => delete_fleet(Fleet::Set, a, &connection).await,
    }
}

fn deadline_after(timeout: Duration) -> Instant {
    Instant::now() + timeout
}

fn work_deleted(name: &str, cluster: &str) -> String {
    format!("{WORK_RESOURCE} {name:?} deleted (cluster {cluster})\n")
}

async fn delete_work(args: DeleteWorkArgs, connection: &ConnectionArgs) -> Result<(), CliError> {
    let DeleteWorkArgs {
        name,
        cluster,
        cluster_selector,
        wait: WaitArgs { wait, timeout },
        report,
    } = args;
    check_selector("--cluster-selector", cluster_selector.as_deref())?;
    let deadline = deadline_after(timeout);
    let client = connection.client()?;
    let targets: Vec<String> = match (cluster, &cluster_selector) {
        (Some(c), _) => {
            client.delete_work(&c, &name).await?;
            vec![c]
        }
        (None, Some(selector)) => {
            let opts = ListOptions {
                label_selector: Some(selector.clone()),
                ..Default::default()
            };
            let clusters = list_all_clusters(&client, opts).await?;
            if clusters.items.is_empty() {
                return Err(CliError::Refused(format!(
                    "no cluster matches the selector {selector:?}"
                )));
            }
            let mut targets = Vec::new();
            for c in clusters.items {
                let c = c.metadata.name;
                match client.delete_work(&c, &name).await {
                    Ok(_) => targets.push(c),
                    Err(e) if e.is_not_found() => {}
                    Err(e) => {
                        let about = format!("manifestwork {name:?} (cluster {c})");
                        eprintln!("{}", describe_client_error(&e, Some(&about)));
                        return Err(CliError::Reported(e.exit_code()));
                    }
                }
            }
            if targets.is_empty() {
                return Err(CliError::Refused(format!(
                    "manifestwork {name:?} not found in any cluster matching {selector:?}"
                )));
            }
            targets
        }
        (None, None) => unreachable!("clap requires --cluster or --cluster-selector"),
    };
    let outcome = |c: &str, pending: Option<String>| DeleteOutcome {
        kind: "ManifestWork",
        cluster: Some(c.to_string()),
        namespace: None,
        name: name.clone(),
        status: if pending.is_some() {
            "timeout"
        } else {
            "deleted"
        },
        pending,
    };
    let mut results = Vec::new();
    if !wait {
        for c in &targets {
            report.line(&work_deleted(&name, c));
            results.push(outcome(c, None));
        }
        return report.document(results);
    }
    let mut pending = Vec::new();
    for c in &targets {
        match wait_work_gone(&client, c, &name, deadline).await? {
            None => {
                report.line(&work_deleted(&name, c));
                results.push(outcome(c, None));
            }
            Some(w) => {
                pending.push(work_pending(&w));
                results.push(outcome(c, Some(work_pending(&w))));
            }
        }
    }
    report.document(results)?;
    if !pending.is_empty() {
        return Err(CliError::TimedOut(format!(
            "timed out after {} waiting for the deletion of {}",
            humantime(timeout),
            pending.join("; ")
        )));
    }
    Ok(())
}

/// What keeps a deleting work around, for the timeout message.
fn work_pending(w: &ManifestWork) -> String {
    let m = &w.metadata;
    let cluster = m.namespace.as_deref().unwrap_or_default();
    if m.finalizers.is_empty() {
        format!(
            "manifestwork {:?} in cluster {cluster}: still present",
            m.name
        )
    } else {
        format!(
            "manifestwork {:?} in cluster {cluster}: waiting for finalizer {} (the cluster's agent has not finished removing its resources)",
            m.name,
            m.finalizers.join(", ")
        )
    }
}

/// Blocks until the work is gone (`None`) or the deadline passed (the work as last seen).
async fn wait_work_gone(
    client: &HubClient,
    cluster: &str,
    name: &str,
    deadline: Instant,
) -> Result<Option<ManifestWork>, CliError> {
    let get = |opts: ListOptions| async move { client.get_work(cluster, name, &opts).await };
    wait_gone(get, deadline).await
}

/// The wait loop shared by works and clusters: one plain GET for the index, then
/// blocking GETs from the last index until a 404 or the deadline.
async fn wait_gone<T, F, Fut>(get: F, deadline: Instant) -> Result<Option<T>, CliError>
where
    F: Fn(ListOptions) -> Fut,
    Fut: std::future::Future<Output = Result<Indexed<T>, ClientError>>,
{
    let mut last = match get(ListOptions::default()).await {
        Ok(v) => v,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    while let Some(wait) = block_for(deadline) {
        let opts = ListOptions {
            index: Some(last.index),
            wait: Some(wait),
            ..Default::default()
        };
        match get(opts).await {
            Ok(v) => {
                // Never go back: a missing header must not turn into a busy loop at 0.
                let index = v.index.max(last.index);
                last = Indexed {
                    value: v.value,
                    index,
                    epoch: v.epoch,
                };
            }
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Some(last.value))
}

async fn delete_cluster(
    args: DeleteClusterArgs,
    connection: &ConnectionArgs,
) -> Result<(), CliError> {
    let DeleteClusterArgs {
        name,
        force,
        wait: WaitArgs { wait, timeout },
        report,
    } = args;
    let deadline = deadline_after(timeout);
    let client = connection.client()?;
    let deletion = client.delete_cluster(&name, force).await?.value;
    if force && !deletion.works_left.is_empty() {
        eprintln!(
            "warning: the agent of cluster {name} did not clean up these works; their resources may still be on the cluster: {}",
            deletion.works_left.join(", ")
        );
    }
    let deleted = format!("{CLUSTER_RESOURCE} {name:?} deleted\n");
    let outcome = |pending: Option<String>| DeleteOutcome {
        kind: "ManagedCluster",
        cluster: None,
        namespace: None,
        name: name.clone(),
        status: if pending.is_some() {
            "timeout"
        } else {
            "deleted"
        },
        pending,
    };
    if deletion.removed || !wait {
        report.line(&deleted);
        return report.document(vec![outcome(None)]);
    }
    let get = |opts: ListOptions| {
        let (client, name) = (&client, &name);
        async move { client.get_cluster_with(name, &opts).await }
    };
    let still: Option<ManagedCluster> = wait_gone(get, deadline).await?;
    if still.is_none() {
        report.line(&deleted);
        return report.document(vec![outcome(None)]);
    }
    let works = list_all_works(&client, Some(&name), ListOptions::default())
        .await
        .map(|l| {
            l.items
                .into_iter()
                .map(|w| w.metadata.name)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let pending = if works.is_empty() {
        "the cluster record is still there".to_string()
    } else {
        format!(
            "its agent has not cleaned up these works yet: {} (--force removes the records at once)",
            works.join(", ")
        )
    };
    report.document(vec![outcome(Some(pending.clone()))])?;
    Err(CliError::TimedOut(format!(
        "timed out after {} waiting for the deletion of cluster {name}: {pending}",
        humantime(timeout)
    )))
}

/// The fleet kinds `hub delete` deletes.
#[derive(Debug, Clone, Copy)]
enum Fleet {
    Placement,
    Set,
}

impl Fleet {
    fn kind(self) -> &'static str {
        match self {
            Fleet::Placement => "Placement",
            Fleet::Set => "ManifestWorkReplicaSet",
        }
    }

    fn resource(self) -> &'static str {
        match self {
            Fleet::Placement => PLACEMENT_RESOURCE,
            Fleet::Set => SET_RESOURCE,
        }
    }
}

/// What keeps a Placement around, for the timeout message.
fn placement_pending(p: &api::fleet::Placement) -> String {
    if p.metadata.finalizers.is_empty() {
        "still present".into()
    } else {
        format!("waiting for finalizer {}", p.metadata.finalizers.join(", "))
    }
}

/// What keeps a set around (Foreground deletion waits for its works), for the timeout
/// message.
fn set_pending(s: &api::fleet::ManifestWorkReplicaSet) -> String {
    format!(
        "its works are still being removed ({} left)",
        s.status.summary.total
    )
}

async fn delete_fleet(
    what: Fleet,
    args: DeleteFleetArgs,
    connection: &ConnectionArgs,
) -> Result<(), CliError> {
    let DeleteFleetArgs {
        name,
        namespace,
        wait: WaitArgs { wait, timeout },
        report,
    } = args;
    let deadline = deadline_after(timeout);
    let client = connection.client()?;
    let asked = match what {
        Fleet::Placement => client.delete_placement(&namespace, &name).await?.is_some(),
        Fleet::Set => client.delete_set(&namespace, &name).await?.is_some(),
    };
    let deleted = format!(
        "{} {name:?} deleted (namespace {namespace})\n",
        what.resource()
    );
    let outcome = |pending: Option<String>| DeleteOutcome {
        kind: what.kind(),
        cluster: None,
        namespace: Some(namespace.clone()),
        name: name.clone(),
        status: if pending.is_some() {
            "timeout"
        } else {
            "deleted"
        },
        pending,
    };
    if !asked || !wait {
        report.line(&deleted);
        return report.document(vec![outcome(None)]);
    }
    let (client, ns, n) = (&client, namespace.as_str(), name.as_str());
    let pending = match what {
        Fleet::Placement => {
            let get = |opts: ListOptions| async move { client.get_placement(ns, n, &opts).await };
            wait_gone(get, deadline)
                .await?
                .map(|p| placement_pending(&p))
        }
        Fleet::Set => {
            let get = |opts: ListOptions| async move { client.get_set(ns, n, &opts).await };
            wait_gone(get, deadline).await?.map(|s| set_pending(&s))
        }
    };
    let Some(pending) = pending else {
        report.line(&deleted);
        return report.document(vec![outcome(None)]);
    };
    report.document(vec![outcome(Some(pending.clone()))])?;
    Err(CliError::TimedOut(format!(
        "timed out after {} waiting for the deletion of {} {name:?} in namespace {namespace}: {pending}",
        humantime(timeout),
        what.kind().to_ascii_lowercase()
    )))
}
