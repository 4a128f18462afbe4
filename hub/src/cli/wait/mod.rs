//! `hub wait work` and `hub apply --wait`: block until works reach a condition on their
//! clusters, on blocking queries only, with progress a person can read and an exit code
//! a script can trust.
//!
//! A work is done on a cluster when its condition of the awaited type is `True` with
//! `observedGeneration` equal to the work's `metadata.generation`, and the cluster is
//! available (`ManagedClusterConditionAvailable=True`); a cluster whose lease expired is
//! reported as unavailable and never counts as done. `Degraded=True` at the current
//! generation fails the wait at once. The hub going away during a wait (a restart, a
//! 5xx) is retried with backoff until the timeout: the change index lives in the
//! database, so the blocking queries resume where they were.

use std::time::{Duration, Instant};

use api::ListOptions;
use clap::{ArgGroup, Args, Subcommand};

use super::support::connection::ConnectionArgs;
use super::support::error::CliError;
use super::support::output::DocumentFormat;
use super::support::progress::Progress;
use super::support::query::{check_selector, list_all_clusters};
// `--for` is shared with the fleet's waits, so it lives in `support`.
use super::support::wait_for as condition;

mod engine;
mod report;
#[cfg(test)]
mod tests;
mod verdict;

pub use condition::WaitFor;
pub use engine::{ClusterScope, wait_for};
pub use report::{CommandResult, Overall, Report, ResultStatus, WorkResult, conclude};
pub use verdict::{ResourceReport, Start};

/// The flags of `hub wait` (its help text is on [`super::ClientCommand::Wait`]).
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// What to wait for.
    #[command(subcommand)]
    pub what: WaitCommand,
    /// How to reach the hub.
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// The kinds `hub wait` waits for.
#[derive(Debug, Subcommand)]
pub enum WaitCommand {
    /// Wait until a ManifestWork is Ready (Applied, Available) or deleted on its clusters.
    ///
    /// Exit codes: 0 done on every cluster; 1 the work failed (Degraded at its current
    /// generation: the cluster, the resource and Kubernetes' reason are printed), or it
    /// does not exist; 2 usage error; 3 --timeout ran out (what is still pending is
    /// printed); 4 the hub is unreachable, answered 5xx, 401 or 403 when the wait starts.
    #[command(visible_alias = "works", aliases = ["manifestwork", "manifestworks", "mw"])]
    Work(WaitWorkArgs),
    /// Wait until a ManifestWorkReplicaSet's works are Ready (Applied, Available), or the
    /// set is deleted.
    ///
    /// Met when the set's summary counts at least one work and every work is Applied
    /// (Available), or for Ready every cluster of status.clusters has Ready=True; and
    /// the status is current: PlacementVerified=True and ManifestworkApplied with reason
    /// AsExpected (no work missing). Blocking GETs of the set; one line per cluster.
    ///
    /// Exit codes: 0 met; 1 a work is Degraded (the clusters are named), the set does
    /// not exist or was deleted while waited for; 2 usage error; 3 --timeout ran out
    /// (why it is not met is printed); 4 the hub is unreachable, answered 5xx, 401 or 403
    /// when the wait starts (during the wait it is retried until --timeout).
    #[command(
        name = "manifestworkreplicaset",
        visible_aliases = ["manifestworkreplicasets", "mwrs"]
    )]
    ManifestWorkReplicaSet(super::fleet::wait::WaitSetArgs),
}

/// `hub wait work`.
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("target").required(true).args(["cluster", "cluster_selector"])
))]
pub struct WaitWorkArgs {
    /// The work's name.
    pub name: String,
    /// The cluster the work belongs to.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Wait on every cluster whose labels match this selector and that holds the work
    /// (for a deletion: every matching cluster).
    #[arg(long, value_name = "SELECTOR")]
    pub cluster_selector: Option<String>,
    /// What to wait for: Ready, Applied, Available, Deleted; also kubectl's
    /// condition=Ready[=True] and delete.
    #[arg(
        long = "for",
        value_name = "CONDITION",
        default_value = "Ready",
        value_parser = WaitFor::parse
    )]
    pub for_: WaitFor,
    /// How long to wait, e.g. 90s, 5m (exit code 3 when it runs out).
    #[arg(long, default_value = "5m", value_parser = api::parse_duration)]
    pub timeout: Duration,
    /// Print the result per cluster as JSON or YAML on stdout (progress goes to stderr).
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<DocumentFormat>,
    /// No progress and no summary: only errors (and the -o document).
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// Runs `hub wait`.
pub async fn run(args: WaitArgs) -> Result<(), CliError> {
    let WaitArgs { what, connection } = args;
    let WaitWorkArgs {
        name,
        cluster,
        cluster_selector,
        for_,
        timeout,
        output,
        quiet,
    } = match what {
        WaitCommand::Work(a) => a,
        WaitCommand::ManifestWorkReplicaSet(a) => {
            return super::fleet::wait::run(a, &connection.client()?).await;
        }
    };
    check_selector("--cluster-selector", cluster_selector.as_deref())?;
    let started = Instant::now();
    let client = connection.client()?;
    let mut progress = Progress::new(output.is_some(), quiet);
    let (scope, clusters) = match (cluster, cluster_selector) {
        (Some(c), _) => (ClusterScope::One(c.clone()), vec![c]),
        (None, Some(selector)) => {
            let opts = ListOptions {
                label_selector: Some(selector.clone()),
                ..Default::default()
            };
            let list = list_all_clusters(&client, opts).await?;
            if list.items.is_empty() {
                return Err(CliError::Refused(format!(
                    "no cluster matches the selector {selector:?}"
                )));
            }
            let names = list.items.into_iter().map(|c| c.metadata.name).collect();
            (ClusterScope::Selector(selector), names)
        }
        (None, None) => unreachable!("clap requires --cluster or --cluster-selector"),
    };
    // The first read of each work: a plain GET, whose index the blocking ones start from.
    let reads = futures::future::join_all(clusters.iter().map(|c| {
        let client = &client;
        let name = &name;
        async move {
            (
                c.clone(),
                client.get_work(c, name, &ListOptions::default()).await,
            )
        }
    }))
    .await;
    let mut starts = Vec::new();
    let mut missing = Vec::new();
    for (c, read) in reads {
        match read {
            Ok(r) => starts.push(Start {
                cluster: c,
                work: name.clone(),
                seen: Some(r.value),
                index: r.index,
                action: None,
            }),
            Err(e) if e.is_not_found() => missing.push(c),
            Err(e) => return Err(e.into()),
        }
    }
    if for_ != WaitFor::Deleted {
        match (&scope, starts.is_empty()) {
            (ClusterScope::One(c), true) => {
                return Err(CliError::Refused(format!(
                    "manifestwork {name:?} not found in cluster {c}"
                )));
            }
            (ClusterScope::Selector(s), true) => {
                return Err(CliError::Refused(format!(
                    "manifestwork {name:?} not found in any cluster matching {s:?}"
                )));
            }
            (ClusterScope::Selector(_), false) if !missing.is_empty() && !quiet => {
                eprintln!(
                    "warning: manifestwork {name:?} does not exist in matching clusters {}; not waiting for them",
                    missing.join(", ")
                );
            }
            _ => {}
        }
    } else {
        // Gone already is deleted.
        starts.extend(missing.into_iter().map(|c| Start {
            cluster: c,
            work: name.clone(),
            seen: None,
            index: 0,
            action: None,
        }));
        starts.sort_by(|a, b| a.cluster.cmp(&b.cluster));
    }
    let report = wait_for(
        &client,
        scope,
        starts,
        for_,
        started,
        timeout,
        &mut progress,
    )
    .await?;
    conclude(
        "WaitResult",
        Some(for_),
        report,
        started,
        output,
        &mut progress,
    )
}
