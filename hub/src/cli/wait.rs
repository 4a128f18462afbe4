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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use api::{ClientError, Condition, HubClient, ListOptions, ManagedCluster, ManifestWork};
use chrono::{DateTime, Utc};
use clap::{ArgGroup, Args, Subcommand};
use serde::Serialize;
use tokio::sync::mpsc;

use super::delete::humantime;
use super::get::{check_selector, list_all_clusters};
use super::output::{self, DocumentFormat};
use super::{CliError, ConnectionArgs, describe_client_error};

/// The longest one blocking query asks the hub to wait; shorter than the hub's maximum so
/// that a connection silently lost (a NAT dropping it) is noticed within a minute.
const MAX_BLOCK: Duration = Duration::from_secs(60);
/// Unready resources listed per cluster in the progress; the rest are counted.
const MAX_RESOURCE_LINES: usize = 5;
/// The condition of a cluster that tells whether its agent renews its lease.
const CLUSTER_AVAILABLE: &str = "ManagedClusterConditionAvailable";

/// What a wait waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum WaitFor {
    /// Every manifest applied.
    Applied,
    /// Every resource exists on the cluster.
    Available,
    /// Every resource is ready (workloads up, jobs done, ...).
    Ready,
    /// The work is gone from the hub (its agent removed its resources).
    Deleted,
}

impl WaitFor {
    /// Parses `--for`: `Ready`, `Applied`, `Available`, `Deleted`, and kubectl's forms
    /// `condition=Ready`, `condition=Ready=True` and `delete`. Case does not matter.
    pub fn parse(text: &str) -> Result<WaitFor, String> {
        let t = text.trim();
        let lower = t.to_ascii_lowercase();
        if matches!(lower.as_str(), "delete" | "deleted") {
            return Ok(WaitFor::Deleted);
        }
        let expected = "expected Ready, Applied, Available, Deleted, delete, or \
                        condition=NAME[=True] with NAME one of Ready, Applied, Available";
        if lower.starts_with("jsonpath=") || lower.starts_with("create") {
            return Err(format!("{t:?} is not supported: {expected}"));
        }
        let condition = match lower.strip_prefix("condition=") {
            Some(_) => &t["condition=".len()..],
            None => t,
        };
        let name = match condition.split_once('=') {
            Some((name, value)) if value.eq_ignore_ascii_case("true") => name,
            Some((name, value)) => {
                return Err(format!(
                    "{t:?}: only {name}=True can be waited for, not {name}={value}"
                ));
            }
            None => condition,
        };
        match name.to_ascii_lowercase().as_str() {
            "applied" => Ok(WaitFor::Applied),
            "available" => Ok(WaitFor::Available),
            "ready" => Ok(WaitFor::Ready),
            _ => Err(format!("{t:?}: {expected}")),
        }
    }

    /// Parses `--for` of `hub apply`: a condition, not deletion.
    pub fn parse_condition(text: &str) -> Result<WaitFor, String> {
        match WaitFor::parse(text)? {
            WaitFor::Deleted => Err(format!(
                "{text:?}: apply waits for Ready, Applied or Available (hub wait --for delete waits for a deletion)"
            )),
            other => Ok(other),
        }
    }

    /// The name as written on the command line and in output.
    pub fn as_str(self) -> &'static str {
        match self {
            WaitFor::Applied => "Applied",
            WaitFor::Available => "Available",
            WaitFor::Ready => "Ready",
            WaitFor::Deleted => "Deleted",
        }
    }

    /// The work condition awaited, if any.
    fn condition(self) -> Option<&'static str> {
        match self {
            WaitFor::Deleted => None,
            other => Some(other.as_str()),
        }
    }
}

impl std::fmt::Display for WaitFor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    let WaitCommand::Work(WaitWorkArgs {
        name,
        cluster,
        cluster_selector,
        for_,
        timeout,
        output,
        quiet,
    }) = what;
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

/// Where the clusters' records are read from while waiting.
#[derive(Debug, Clone)]
pub enum ClusterScope {
    /// One cluster, by name.
    One(String),
    /// The clusters a label selector matches.
    Selector(String),
}

/// One work on one cluster to wait for, as the hub last showed it when the wait starts.
#[derive(Debug, Clone)]
pub struct Start {
    /// The cluster.
    pub cluster: String,
    /// The work's name.
    pub work: String,
    /// The work as last read or written; `None` when it does not exist.
    pub seen: Option<ManifestWork>,
    /// The change index `seen` is consistent with; blocking queries start from it.
    pub index: u64,
    /// What `hub apply` did to it (`created`, `configured`, `unchanged`).
    pub action: Option<&'static str>,
}

/// The outcome of a wait, as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Overall {
    /// Every work is done on every cluster.
    Done,
    /// A work failed (or the hub refused one).
    Failed,
    /// The timeout ran out first.
    Timeout,
}

/// The outcome for one work on one cluster (`status` of a result).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultStatus {
    /// Reached what was waited for (without --wait: the hub took the work).
    Done,
    /// Degraded at the current generation, deleted while waited for, or refused by the hub.
    Failed,
    /// Still pending when the timeout ran out.
    Timeout,
    /// Its cluster's lease had expired (or it never had one): not done.
    Unavailable,
    /// Not finished when the command stopped because another work failed.
    Pending,
}

/// One resource of a work that is not there yet or failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceReport {
    /// Index of the manifest in the work.
    pub ordinal: i32,
    /// `group/version` or `version`.
    pub api_version: String,
    /// Kind.
    pub kind: String,
    /// Namespace; absent for cluster-scoped resources.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The condition concerned: `Applied`, `Available` or `Ready`.
    pub condition: String,
    /// Its status: `False` or `Unknown`.
    pub status: String,
    /// Its reason (for `Applied=False`, Kubernetes' reason such as `Invalid`, `Forbidden`).
    pub reason: String,
    /// Its message (for `Applied=False`, Kubernetes' message).
    pub message: String,
}

impl ResourceReport {
    fn from_manifest(m: &api::ManifestCondition, c: &Condition) -> Self {
        let meta = &m.resource_meta;
        ResourceReport {
            ordinal: meta.ordinal,
            api_version: if meta.group.is_empty() {
                meta.version.clone()
            } else {
                format!("{}/{}", meta.group, meta.version)
            },
            kind: meta.kind.clone(),
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
            condition: c.type_.clone(),
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
        }
    }

    /// `Kind namespace/name`, `Kind name`, or `manifest N`.
    pub fn resource(&self) -> String {
        match (
            self.kind.is_empty(),
            self.name.is_empty(),
            self.namespace.is_empty(),
        ) {
            (true, _, _) | (_, true, _) => format!("manifest {}", self.ordinal),
            (false, false, true) => format!("{} {}", self.kind, self.name),
            (false, false, false) => format!("{} {}/{}", self.kind, self.namespace, self.name),
        }
    }

    /// `Kind ns/name: Ready=False: message` (the reason too when it explains more).
    fn line(&self) -> String {
        let mut s = format!("{}: {}={}", self.resource(), self.condition, self.status);
        if self.condition == "Applied" && !self.reason.is_empty() {
            s.push_str(&format!(": {}", self.reason));
        }
        if !self.message.is_empty() {
            s.push_str(&format!(": {}", self.message));
        }
        s
    }
}

/// The result of `hub apply` or `hub wait` for one work on one cluster (`-o json|yaml`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkResult {
    /// The cluster.
    pub cluster: String,
    /// The work's name.
    pub work: String,
    /// `hub apply` only: `created`, `configured`, `unchanged`, or `refused`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<&'static str>,
    /// done, failed, timeout, unavailable or pending.
    pub status: ResultStatus,
    /// One line on how it stands, for a person.
    pub message: String,
    /// The work's `metadata.generation` as last seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// The work's conditions as last seen (each with its `observedGeneration`).
    pub conditions: Vec<Condition>,
    /// Resources not (yet) there: their `Applied` condition when that is not True, else
    /// the awaited one.
    pub pending: Vec<ResourceReport>,
    /// Resources that failed to apply, with Kubernetes' reason and message.
    pub failed: Vec<ResourceReport>,
    /// When the cluster's agent last renewed its lease (with status `unavailable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_lease_time: Option<DateTime<Utc>>,
}

/// The document `-o json|yaml` prints for `hub apply` and `hub wait`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandResult {
    /// Always `v1`.
    pub api_version: &'static str,
    /// `ApplyResult` or `WaitResult`.
    pub kind: &'static str,
    /// What was waited for; `null` for `hub apply` without `--wait`.
    #[serde(rename = "for")]
    pub for_: Option<WaitFor>,
    /// done, failed or timeout.
    pub status: Overall,
    /// Seconds from the command's start to its end.
    pub elapsed_seconds: f64,
    /// One per work and cluster.
    pub results: Vec<WorkResult>,
}

/// What a finished wait found.
#[derive(Debug)]
pub struct Report {
    /// The outcome as a whole.
    pub status: Overall,
    /// One per work and cluster, in the order of the starts.
    pub results: Vec<WorkResult>,
    /// The one-line summary for the progress.
    pub summary: String,
    /// The error to exit with (`None` when done).
    pub error: Option<CliError>,
}

/// Prints the `-o` document, and returns the report's error.
pub fn conclude(
    kind: &'static str,
    for_: Option<WaitFor>,
    report: Report,
    started: Instant,
    format: Option<DocumentFormat>,
    progress: &mut Progress,
) -> Result<(), CliError> {
    progress.line(&report.summary);
    if let Some(format) = format {
        let doc = CommandResult {
            api_version: "v1",
            kind,
            for_,
            status: report.status,
            elapsed_seconds: (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            results: report.results,
        };
        output::print(&output::document(&doc, format)?);
    }
    match report.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The hub's last word on one work.
#[derive(Debug, Clone)]
enum Seen {
    /// The work as last read.
    Present(Box<ManifestWork>),
    /// 404.
    Gone,
}

/// The hub's last word on one cluster.
#[derive(Debug, Clone)]
enum ClusterSeen {
    /// Not answered yet.
    Waiting,
    /// The record as last read.
    Present(Box<ManagedCluster>),
    /// No such cluster (or no longer matching the selector).
    Gone,
}

/// Where one work on one cluster stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Done,
    Failed,
    Pending,
    Unavailable,
}

/// Why a cluster counts as unavailable.
#[derive(Debug, Clone, PartialEq)]
struct Unavailability {
    /// e.g. `ManagedClusterLeaseUpdateStopped`, `no agent has joined`.
    why: String,
    last_lease: Option<DateTime<Utc>>,
}

/// Where one work on one cluster stands, and why.
#[derive(Debug, Clone, PartialEq)]
struct Verdict {
    state: State,
    /// For a person: `Ready`, `waiting for the agent ...`, the failure.
    message: String,
    pending: Vec<ResourceReport>,
    failed: Vec<ResourceReport>,
    unavailable: Option<Unavailability>,
}

impl Verdict {
    fn new(state: State, message: impl Into<String>) -> Self {
        Verdict {
            state,
            message: message.into(),
            pending: Vec::new(),
            failed: Vec::new(),
            unavailable: None,
        }
    }
}

/// The work's condition of this type, if it was computed for its current generation.
fn current<'a>(work: &'a ManifestWork, type_: &str) -> Option<&'a Condition> {
    work.condition(type_)
        .filter(|c| c.observed_generation == work.metadata.generation)
}

/// Why the cluster is unavailable, or `None` when its agent renews its lease (or when
/// the hub has not answered yet).
fn unavailability(cluster: &ClusterSeen) -> Option<Unavailability> {
    match cluster {
        ClusterSeen::Waiting => None,
        ClusterSeen::Gone => Some(Unavailability {
            why: "the cluster does not exist (or no longer matches the selector)".into(),
            last_lease: None,
        }),
        ClusterSeen::Present(c) => {
            let last_lease = c.status.last_lease_time;
            match c.condition(CLUSTER_AVAILABLE) {
                Some(a) if a.is_true() => None,
                Some(a) => Some(Unavailability {
                    why: if a.reason.is_empty() {
                        format!("{CLUSTER_AVAILABLE}={}", a.status)
                    } else {
                        a.reason.clone()
                    },
                    last_lease,
                }),
                None => Some(Unavailability {
                    why: "no agent has joined".into(),
                    last_lease,
                }),
            }
        }
    }
}

/// Per-manifest conditions at the work's current generation: those that failed to apply
/// and those not yet `type_`.
fn resource_reports(
    work: &ManifestWork,
    type_: &str,
) -> (Vec<ResourceReport>, Vec<ResourceReport>) {
    let generation = work.metadata.generation;
    let mut pending = Vec::new();
    let mut failed = Vec::new();
    for m in work
        .status
        .resource_status
        .iter()
        .flat_map(|r| &r.manifests)
    {
        let at = |t: &str| {
            m.conditions
                .iter()
                .find(|c| c.type_ == t && c.observed_generation == generation)
        };
        if let Some(applied) = at("Applied").filter(|c| !c.is_true()) {
            let report = ResourceReport::from_manifest(m, applied);
            if applied.status == "False" {
                failed.push(report.clone());
            }
            pending.push(report);
        } else if let Some(c) = at(type_).filter(|c| !c.is_true()) {
            pending.push(ResourceReport::from_manifest(m, c));
        }
    }
    (pending, failed)
}

/// Where a work stands on its cluster, from what the hub last said about both.
fn evaluate(for_: WaitFor, seen: &Seen, cluster: &ClusterSeen) -> Verdict {
    let unavailable = unavailability(cluster);
    let work = match seen {
        Seen::Gone if for_ == WaitFor::Deleted => return Verdict::new(State::Done, "deleted"),
        Seen::Gone => {
            return Verdict::new(State::Failed, "the work was deleted while waiting for it");
        }
        Seen::Present(w) => w,
    };
    let generation = work.metadata.generation;
    let gen_text = generation
        .map(|g| format!(" (generation {g})"))
        .unwrap_or_default();
    let Some(type_) = for_.condition() else {
        // Waiting for a deletion.
        let m = &work.metadata;
        let message = if m.deletion_timestamp.is_none() {
            "not being deleted: no deletion was asked for".to_string()
        } else if m.finalizers.is_empty() {
            "deleting".to_string()
        } else {
            format!(
                "deleting: waiting for the agent to remove its resources (finalizer {})",
                m.finalizers.join(", ")
            )
        };
        let mut v = Verdict::new(State::Pending, message);
        if unavailable.is_some() {
            v.state = State::Unavailable;
            v.unavailable = unavailable;
        }
        return v;
    };
    if work.metadata.deletion_timestamp.is_some() {
        return Verdict::new(State::Failed, "the work is being deleted");
    }
    let (pending, failed) = resource_reports(work, type_);
    if let Some(d) = current(work, "Degraded").filter(|c| c.is_true()) {
        let message = if failed.is_empty() {
            format!("Degraded: {}", d.message)
        } else {
            failed
                .iter()
                .map(|r| {
                    format!(
                        "{}: {}: {}",
                        r.resource(),
                        if r.reason.is_empty() {
                            "Failed"
                        } else {
                            &r.reason
                        },
                        r.message
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        return Verdict {
            state: State::Failed,
            message,
            pending,
            failed,
            unavailable: None,
        };
    }
    let condition = current(work, type_);
    let mut v = Verdict {
        state: State::Pending,
        message: String::new(),
        pending,
        failed,
        unavailable: None,
    };
    match condition {
        Some(c) if c.is_true() => {
            v.state = State::Done;
            v.message = format!("{type_}{gen_text}");
        }
        Some(c) => {
            v.message = format!("waiting for {type_}{gen_text}: {type_}={}", c.status);
            if !c.reason.is_empty() {
                v.message.push_str(&format!(" ({})", c.reason));
            }
            if v.pending.is_empty() && !c.message.is_empty() {
                v.message.push_str(&format!(": {}", c.message));
            }
        }
        None => {
            let reported = work
                .condition(type_)
                .and_then(|c| c.observed_generation)
                .map(|g| format!(", it last reported generation {g}"))
                .unwrap_or_default();
            v.message = format!("waiting for the agent to report{gen_text}{reported}");
        }
    }
    if unavailable.is_some() {
        v.state = State::Unavailable;
        v.unavailable = unavailable;
    } else if v.state == State::Done && matches!(cluster, ClusterSeen::Waiting) {
        v.state = State::Pending;
        v.message = format!("{type_}{gen_text}; waiting for the cluster's record");
    }
    v
}

/// One line of progress: `key` tells which thing it is about, `stable` its text without
/// what changes by itself (ages), `display` what is shown.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    key: String,
    stable: String,
    display: String,
}

impl Line {
    fn plain(key: String, text: String) -> Self {
        Line {
            key,
            stable: text.clone(),
            display: text,
        }
    }
}

/// What one work on one cluster is called in progress lines.
fn label(cluster: &str, work: &str, several_works: bool) -> String {
    if several_works {
        format!("cluster {cluster}, work {work}")
    } else {
        format!("cluster {cluster}")
    }
}

/// The progress lines: one per work and cluster, one per unready resource (indented),
/// and one when the hub is being retried.
fn render(
    for_: WaitFor,
    targets: &[(String, String)],
    verdicts: &[Verdict],
    trouble: Option<&str>,
    now: DateTime<Utc>,
) -> Vec<Line> {
    let works: BTreeSet<&str> = targets.iter().map(|(_, w)| w.as_str()).collect();
    let several = works.len() > 1;
    let mut lines = Vec::new();
    for ((cluster, work), v) in targets.iter().zip(verdicts) {
        let who = label(cluster, work, several);
        let key = format!("{cluster}/{work}");
        match v.state {
            State::Done => lines.push(Line::plain(key, format!("{who}: {}", v.message))),
            State::Failed => lines.push(Line::plain(key, format!("{who}: failed: {}", v.message))),
            State::Pending => lines.push(Line::plain(key, format!("{who}: {}", v.message))),
            State::Unavailable => {
                let u = v.unavailable.as_ref();
                let why = u.map(|u| u.why.as_str()).unwrap_or("unavailable");
                let stable = format!(
                    "{who}: unavailable ({why}), not counted as {for_}: {}",
                    v.message
                );
                let lease = match u.and_then(|u| u.last_lease) {
                    Some(t) => format!("last lease {} ago", output::human_duration(now - t)),
                    None => "no lease yet".to_string(),
                };
                let display = format!(
                    "{who}: unavailable ({why}; {lease}), not counted as {for_}: {}",
                    v.message
                );
                lines.push(Line {
                    key,
                    stable,
                    display,
                });
            }
        }
        if matches!(v.state, State::Pending | State::Unavailable) {
            for r in v.pending.iter().take(MAX_RESOURCE_LINES) {
                lines.push(Line::plain(
                    format!("{cluster}/{work}/{}", r.ordinal),
                    format!("  {}", r.line()),
                ));
            }
            if v.pending.len() > MAX_RESOURCE_LINES {
                lines.push(Line::plain(
                    format!("{cluster}/{work}/more"),
                    format!(
                        "  and {} more resources",
                        v.pending.len() - MAX_RESOURCE_LINES
                    ),
                ));
            }
        }
    }
    if let Some(t) = trouble {
        lines.push(Line::plain(
            "hub".into(),
            format!("hub: {t}; retrying with backoff until the timeout"),
        ));
    }
    lines
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// Nothing at all (`--quiet`).
    Quiet,
    /// A block redrawn in place (the stream is a terminal).
    Terminal,
    /// Plain lines, each printed when it changes (CI logs, pipes, files).
    Append,
}

/// Progress of a wait on stdout (on stderr when stdout carries an `-o` document).
pub struct Progress {
    out: Box<dyn Write + Send>,
    mode: ProgressMode,
    /// Lines of the block drawn last (terminal mode).
    drawn: Vec<String>,
    /// `key` → `stable` of what was printed last (append mode).
    printed: HashMap<String, String>,
}

impl Progress {
    /// Progress on stdout, or on stderr when `to_stderr`; redrawn in place when that
    /// stream is a terminal, nothing at all when `quiet`.
    pub fn new(to_stderr: bool, quiet: bool) -> Self {
        let (out, terminal): (Box<dyn Write + Send>, bool) = if to_stderr {
            (Box::new(std::io::stderr()), std::io::stderr().is_terminal())
        } else {
            (Box::new(std::io::stdout()), std::io::stdout().is_terminal())
        };
        let mode = match (quiet, terminal) {
            (true, _) => ProgressMode::Quiet,
            (false, true) => ProgressMode::Terminal,
            (false, false) => ProgressMode::Append,
        };
        Progress::with_writer(out, mode)
    }

    /// Progress written to `out` in this mode.
    pub fn with_writer(out: Box<dyn Write + Send>, mode: ProgressMode) -> Self {
        Progress {
            out,
            mode,
            drawn: Vec::new(),
            printed: HashMap::new(),
        }
    }

    /// The mode.
    pub fn mode(&self) -> ProgressMode {
        self.mode
    }

    /// Shows the current lines: redraws the block on a terminal, prints the lines that
    /// changed otherwise.
    pub fn update(&mut self, lines: &[Line]) {
        let mut text = String::new();
        match self.mode {
            ProgressMode::Quiet => return,
            ProgressMode::Terminal => {
                let display: Vec<String> = lines.iter().map(|l| l.display.clone()).collect();
                if display == self.drawn {
                    return;
                }
                if !self.drawn.is_empty() {
                    // Up to the block's first line, then clear to the end of the screen.
                    text.push_str(&format!("\x1b[{}A\r\x1b[J", self.drawn.len()));
                }
                // No wrapping while drawing, so each line takes exactly one row.
                text.push_str("\x1b[?7l");
                for l in &display {
                    text.push_str(l);
                    text.push('\n');
                }
                text.push_str("\x1b[?7h");
                self.drawn = display;
            }
            ProgressMode::Append => {
                for l in lines {
                    if self.printed.get(&l.key) != Some(&l.stable) {
                        text.push_str(&l.display);
                        text.push('\n');
                    }
                }
                self.printed = lines
                    .iter()
                    .map(|l| (l.key.clone(), l.stable.clone()))
                    .collect();
            }
        }
        self.write(&text);
    }

    /// A line that stays (below the block on a terminal, which is not redrawn after it).
    pub fn line(&mut self, text: &str) {
        if self.mode == ProgressMode::Quiet || text.is_empty() {
            return;
        }
        self.drawn.clear();
        self.write(&format!("{text}\n"));
    }

    fn write(&mut self, text: &str) {
        let _ = self
            .out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush());
    }
}

/// What the watchers tell the wait.
#[derive(Debug)]
enum Event {
    /// The work of target `i` as read now (`None`: 404).
    Work(usize, Option<Box<ManifestWork>>),
    /// The clusters' records as read now (`None`: not found).
    Clusters(Vec<(String, Option<Box<ManagedCluster>>)>),
    /// The hub could not be reached or answered 5xx; being retried.
    Trouble(String),
    /// The hub refused (401, 403, another 4xx): the wait cannot go on.
    Fatal(Box<ClientError>),
}

/// Whether an error may pass by itself (a hub restarting, a proxy hiccup).
fn transient(e: &ClientError) -> bool {
    match e {
        ClientError::Transport { .. } | ClientError::Decode(_) => true,
        ClientError::Api { status, .. } => {
            status.is_server_error() || matches!(status.as_u16(), 408 | 429)
        }
        ClientError::Config(_) => false,
    }
}

/// Exponential backoff from 250 ms to 4 s.
#[derive(Debug, Default)]
struct Backoff {
    attempt: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let d = Duration::from_millis(250) * 2u32.pow(self.attempt.min(4));
        self.attempt += 1;
        d
    }
}

/// How long the next blocking query may wait, or `None` when the deadline has passed.
fn block_for(deadline: Instant) -> Option<Duration> {
    let left = deadline.checked_duration_since(Instant::now())?;
    (left >= Duration::from_millis(1)).then(|| left.min(MAX_BLOCK))
}

/// Follows one work with blocking GETs from `index` until it is gone or the deadline.
async fn watch_work(
    client: HubClient,
    i: usize,
    cluster: String,
    name: String,
    mut index: u64,
    tx: mpsc::UnboundedSender<Event>,
    deadline: Instant,
) {
    let mut backoff = Backoff::default();
    while let Some(wait) = block_for(deadline) {
        let opts = ListOptions {
            index: Some(index),
            wait: Some(wait),
            ..Default::default()
        };
        let event = match client.get_work(&cluster, &name, &opts).await {
            Ok(r) => {
                backoff = Backoff::default();
                index = index.max(r.index);
                Event::Work(i, Some(Box::new(r.value)))
            }
            Err(e) if e.is_not_found() => {
                let _ = tx.send(Event::Work(i, None));
                return;
            }
            Err(e) if transient(&e) => {
                let _ = tx.send(Event::Trouble(trouble_text(&e)));
                tokio::time::sleep(backoff.next().min(wait)).await;
                continue;
            }
            Err(e) => {
                let _ = tx.send(Event::Fatal(Box::new(e)));
                return;
            }
        };
        if tx.send(event).is_err() {
            return;
        }
    }
}

/// Follows the clusters' records (their availability) with blocking queries.
async fn watch_clusters(
    client: HubClient,
    scope: ClusterScope,
    names: Vec<String>,
    tx: mpsc::UnboundedSender<Event>,
    deadline: Instant,
) {
    let mut backoff = Backoff::default();
    let mut index: Option<u64> = None;
    while let Some(wait) = block_for(deadline) {
        let opts = ListOptions {
            index,
            wait: index.map(|_| wait),
            label_selector: match &scope {
                ClusterScope::Selector(s) => Some(s.clone()),
                ClusterScope::One(_) => None,
            },
            ..Default::default()
        };
        let read = match &scope {
            ClusterScope::One(name) => match client.get_cluster_with(name, &opts).await {
                Ok(r) => Ok((vec![(name.clone(), Some(Box::new(r.value)))], r.index)),
                Err(e) if e.is_not_found() => {
                    let _ = tx.send(Event::Clusters(vec![(name.clone(), None)]));
                    return;
                }
                Err(e) => Err(e),
            },
            ClusterScope::Selector(_) => client.list_clusters(&opts).await.map(|r| {
                let index = r.index.max(r.value.metadata.index);
                let mut items: BTreeMap<String, ManagedCluster> = r
                    .value
                    .items
                    .into_iter()
                    .map(|c| (c.metadata.name.clone(), c))
                    .collect();
                let seen = names
                    .iter()
                    .map(|n| (n.clone(), items.remove(n).map(Box::new)))
                    .collect();
                (seen, index)
            }),
        };
        match read {
            Ok((clusters, i)) => {
                backoff = Backoff::default();
                index = Some(index.unwrap_or(0).max(i));
                if tx.send(Event::Clusters(clusters)).is_err() {
                    return;
                }
            }
            Err(e) if transient(&e) => {
                let _ = tx.send(Event::Trouble(trouble_text(&e)));
                tokio::time::sleep(backoff.next().min(wait)).await;
            }
            Err(e) => {
                let _ = tx.send(Event::Fatal(Box::new(e)));
                return;
            }
        }
    }
}

/// The hub's trouble in one line; the same for every request (no path or query), so that
/// it is printed once per change, not once per watcher.
fn trouble_text(e: &ClientError) -> String {
    let text = describe_client_error(e, None);
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    match e {
        ClientError::Transport { url, .. } => {
            let base = url.split("/api/").next().unwrap_or(url);
            text.replace(url.as_str(), base)
        }
        _ => text.to_string(),
    }
}

/// Waits until every start is done, one fails, or the deadline passes, showing progress.
/// Fails only when the hub refuses (401, 403, another 4xx): the outcome of the wait
/// itself, and its error, are in the report.
pub async fn wait_for(
    client: &HubClient,
    scope: ClusterScope,
    starts: Vec<Start>,
    for_: WaitFor,
    started: Instant,
    timeout: Duration,
    progress: &mut Progress,
) -> Result<Report, CliError> {
    let deadline = started + timeout;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut tasks = tokio::task::JoinSet::new();
    let mut seen: Vec<Seen> = Vec::with_capacity(starts.len());
    for (i, s) in starts.iter().enumerate() {
        match &s.seen {
            Some(w) => {
                seen.push(Seen::Present(Box::new(w.clone())));
                tasks.spawn(watch_work(
                    client.clone(),
                    i,
                    s.cluster.clone(),
                    s.work.clone(),
                    s.index,
                    tx.clone(),
                    deadline,
                ));
            }
            None => seen.push(Seen::Gone),
        }
    }
    let names: Vec<String> = starts
        .iter()
        .map(|s| s.cluster.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut clusters: BTreeMap<String, ClusterSeen> = names
        .iter()
        .map(|n| (n.clone(), ClusterSeen::Waiting))
        .collect();
    tasks.spawn(watch_clusters(
        client.clone(),
        scope,
        names,
        tx.clone(),
        deadline,
    ));
    drop(tx);
    let targets: Vec<(String, String)> = starts
        .iter()
        .map(|s| (s.cluster.clone(), s.work.clone()))
        .collect();
    let mut trouble: Option<String> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let terminal = progress.mode() == ProgressMode::Terminal;
    let mut listening = true;
    let status = loop {
        let verdicts: Vec<Verdict> = starts
            .iter()
            .zip(&seen)
            .map(|(s, w)| {
                let c = clusters.get(&s.cluster).unwrap_or(&ClusterSeen::Waiting);
                evaluate(for_, w, c)
            })
            .collect();
        progress.update(&render(
            for_,
            &targets,
            &verdicts,
            trouble.as_deref(),
            Utc::now(),
        ));
        if verdicts.iter().any(|v| v.state == State::Failed) {
            break Overall::Failed;
        }
        if verdicts.iter().all(|v| v.state == State::Done) {
            break Overall::Done;
        }
        tokio::select! {
            event = rx.recv(), if listening => match event {
                Some(Event::Work(i, work)) => {
                    seen[i] = match work {
                        Some(w) => Seen::Present(w),
                        None => Seen::Gone,
                    };
                    trouble = None;
                }
                Some(Event::Clusters(list)) => {
                    for (name, c) in list {
                        clusters.insert(name, match c {
                            Some(c) => ClusterSeen::Present(c),
                            None => ClusterSeen::Gone,
                        });
                    }
                    trouble = None;
                }
                Some(Event::Trouble(t)) => trouble = Some(t),
                Some(Event::Fatal(e)) => return Err(CliError::Client(e)),
                // Every watcher ended: nothing will change any more.
                None => listening = false,
            },
            _ = tokio::time::sleep_until(deadline.into()) => break Overall::Timeout,
            _ = tick.tick(), if terminal => {}
        }
    };
    tasks.abort_all();
    let verdicts: Vec<Verdict> = starts
        .iter()
        .zip(&seen)
        .map(|(s, w)| {
            let c = clusters.get(&s.cluster).unwrap_or(&ClusterSeen::Waiting);
            evaluate(for_, w, c)
        })
        .collect();
    Ok(report(
        for_, status, &starts, &seen, &verdicts, started, timeout,
    ))
}

/// The report of a finished wait.
fn report(
    for_: WaitFor,
    status: Overall,
    starts: &[Start],
    seen: &[Seen],
    verdicts: &[Verdict],
    started: Instant,
    timeout: Duration,
) -> Report {
    let mut results = Vec::new();
    for ((s, w), v) in starts.iter().zip(seen).zip(verdicts) {
        let work = match w {
            Seen::Present(w) => Some(w.as_ref()),
            _ => None,
        };
        let result_status = match (v.state, status) {
            (State::Done, _) => ResultStatus::Done,
            (State::Failed, _) => ResultStatus::Failed,
            (State::Unavailable, _) => ResultStatus::Unavailable,
            (State::Pending, Overall::Timeout) => ResultStatus::Timeout,
            (State::Pending, _) => ResultStatus::Pending,
        };
        results.push(WorkResult {
            cluster: s.cluster.clone(),
            work: s.work.clone(),
            action: s.action,
            status: result_status,
            message: match &v.unavailable {
                Some(u) => format!("unavailable ({}): {}", u.why, v.message),
                None => v.message.clone(),
            },
            generation: work.and_then(|w| w.metadata.generation),
            conditions: work
                .map(|w| w.status.conditions.clone())
                .unwrap_or_default(),
            pending: v.pending.clone(),
            failed: v.failed.clone(),
            last_lease_time: v.unavailable.as_ref().and_then(|u| u.last_lease),
        });
    }
    let names: BTreeSet<&str> = starts.iter().map(|s| s.work.as_str()).collect();
    let what = match names.iter().next() {
        Some(n) if names.len() == 1 => format!("manifestwork {n:?}"),
        _ => format!("{} works", names.len()),
    };
    let done = verdicts.iter().filter(|v| v.state == State::Done).count();
    let total = verdicts.len();
    let clusters = |n: usize| if n == 1 { "cluster" } else { "clusters" };
    let span = if names.len() > 1 {
        format!("{done} of {total} (work, cluster) pairs")
    } else {
        format!("{done} of {total} {}", clusters(total))
    };
    let elapsed = format!("{:.1}s", started.elapsed().as_secs_f64());
    let verb = match for_ {
        WaitFor::Deleted => "deleted".to_string(),
        other => other.to_string(),
    };
    let (summary, error) = match status {
        Overall::Done => (format!("{what} {verb} on {span} after {elapsed}"), None),
        Overall::Failed => {
            let failures: Vec<String> = starts
                .iter()
                .zip(verdicts)
                .filter(|(_, v)| v.state == State::Failed)
                .map(|(s, v)| {
                    format!(
                        "manifestwork {:?} failed on cluster {}: {}",
                        s.work, s.cluster, v.message
                    )
                })
                .collect();
            (
                format!("{what}: failed after {elapsed} ({verb} on {span})"),
                Some(CliError::Failed(failures.join("; "))),
            )
        }
        Overall::Timeout => {
            let pending: Vec<String> = starts
                .iter()
                .zip(verdicts)
                .filter(|(_, v)| v.state != State::Done)
                .map(|(s, v)| pending_text(s, v, names.len() > 1))
                .collect();
            (
                format!(
                    "timed out after {}: {what} {verb} on {span}",
                    humantime(timeout)
                ),
                Some(CliError::TimedOut(format!(
                    "timed out after {} waiting for {what} to be {verb}; still pending: {}",
                    humantime(timeout),
                    pending.join("; ")
                ))),
            )
        }
    };
    Report {
        status,
        results,
        summary,
        error,
    }
}

/// What is still pending on one cluster, for the timeout message.
fn pending_text(start: &Start, v: &Verdict, several_works: bool) -> String {
    let who = label(&start.cluster, &start.work, several_works);
    let mut text = match &v.unavailable {
        Some(u) => {
            let lease = match u.last_lease {
                Some(t) => format!("last lease {} ago", output::human_duration(Utc::now() - t)),
                None => "no lease yet".to_string(),
            };
            format!("{who}: unavailable ({}; {lease}): {}", u.why, v.message)
        }
        None => format!("{who}: {}", v.message),
    };
    let resources: Vec<String> = v
        .pending
        .iter()
        .take(MAX_RESOURCE_LINES)
        .map(ResourceReport::line)
        .collect();
    if !resources.is_empty() {
        text.push_str(&format!(" [{}", resources.join(", ")));
        if v.pending.len() > MAX_RESOURCE_LINES {
            text.push_str(&format!(
                ", and {} more",
                v.pending.len() - MAX_RESOURCE_LINES
            ));
        }
        text.push(']');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::{Arc, Mutex};

    #[test]
    fn for_takes_our_names_and_kubectls_forms() {
        let ok = [
            ("Ready", WaitFor::Ready),
            ("ready", WaitFor::Ready),
            ("condition=Ready", WaitFor::Ready),
            ("condition=Ready=True", WaitFor::Ready),
            ("condition=available=true", WaitFor::Available),
            ("Applied", WaitFor::Applied),
            ("Available", WaitFor::Available),
            ("Deleted", WaitFor::Deleted),
            ("delete", WaitFor::Deleted),
        ];
        for (text, want) in ok {
            assert_eq!(WaitFor::parse(text), Ok(want), "{text}");
        }
        for bad in [
            "",
            "Degraded",
            "condition=Degraded",
            "condition=Ready=False",
            "condition=Deleted",
            "jsonpath={.status}",
            "create",
        ] {
            let err = WaitFor::parse(bad).unwrap_err();
            assert!(err.contains(bad.split('=').next().unwrap()), "{bad}: {err}");
        }
        assert!(WaitFor::parse_condition("delete").is_err());
        assert_eq!(
            WaitFor::parse_condition("condition=Applied"),
            Ok(WaitFor::Applied)
        );
    }

    fn work(generation: i64, conditions: serde_json::Value, manifests: serde_json::Value) -> Seen {
        Seen::Present(Box::new(
            serde_json::from_value(json!({
                "metadata": {"name": "web", "namespace": "c1", "generation": generation},
                "status": {"conditions": conditions, "resourceStatus": {"manifests": manifests}}
            }))
            .unwrap(),
        ))
    }

    fn cluster(available: &str, reason: &str) -> ClusterSeen {
        ClusterSeen::Present(Box::new(
            serde_json::from_value(json!({
                "metadata": {"name": "c1"},
                "status": {
                    "conditions": [{"type": CLUSTER_AVAILABLE, "status": available, "reason": reason}],
                    "lastLeaseTime": "2020-01-01T00:00:00Z"
                }
            }))
            .unwrap(),
        ))
    }

    fn deployment(
        generation: i64,
        applied: (&str, &str, &str),
        ready: (&str, &str),
    ) -> serde_json::Value {
        json!({
            "resourceMeta": {"ordinal": 0, "group": "apps", "version": "v1", "kind": "Deployment", "namespace": "ns", "name": "web"},
            "conditions": [
                {"type": "Applied", "status": applied.0, "reason": applied.1, "message": applied.2, "observedGeneration": generation},
                {"type": "Ready", "status": ready.0, "message": ready.1, "observedGeneration": generation}
            ]
        })
    }

    #[test]
    fn done_needs_the_condition_at_the_current_generation_on_an_available_cluster() {
        let up = cluster("True", "ManagedClusterAvailable");
        let stale = work(
            3,
            json!([{"type": "Ready", "status": "True", "observedGeneration": 2}]),
            json!([]),
        );
        let v = evaluate(WaitFor::Ready, &stale, &up);
        assert_eq!(v.state, State::Pending);
        assert!(
            v.message.contains("generation 3") && v.message.contains("last reported generation 2"),
            "{v:?}"
        );

        let ready = work(
            3,
            json!([{"type": "Ready", "status": "True", "observedGeneration": 3}]),
            json!([]),
        );
        assert_eq!(evaluate(WaitFor::Ready, &ready, &up).state, State::Done);
        // Not yet known whether the cluster is available: not done yet.
        assert_eq!(
            evaluate(WaitFor::Ready, &ready, &ClusterSeen::Waiting).state,
            State::Pending
        );
        // A cluster whose lease expired never counts as done.
        let down = cluster("Unknown", "ManagedClusterLeaseUpdateStopped");
        let v = evaluate(WaitFor::Ready, &ready, &down);
        assert_eq!(v.state, State::Unavailable);
        assert_eq!(
            v.unavailable.as_ref().unwrap().why,
            "ManagedClusterLeaseUpdateStopped"
        );
    }

    #[test]
    fn degraded_fails_naming_the_resource_and_kubernetes_reason() {
        let up = cluster("True", "");
        let failed = work(
            2,
            json!([{"type": "Degraded", "status": "True", "observedGeneration": 2, "message": "x"},
                   {"type": "Ready", "status": "False", "observedGeneration": 2}]),
            json!([deployment(
                2,
                (
                    "False",
                    "Invalid",
                    "Deployment.apps \"web\" is invalid: spec.replicas: Invalid value: -1"
                ),
                ("False", "not applied")
            )]),
        );
        let v = evaluate(WaitFor::Ready, &failed, &up);
        assert_eq!(v.state, State::Failed);
        assert_eq!(
            v.message,
            "Deployment ns/web: Invalid: Deployment.apps \"web\" is invalid: spec.replicas: Invalid value: -1"
        );
        assert_eq!(v.failed.len(), 1);
        assert_eq!(v.failed[0].api_version, "apps/v1");
        // Degraded at an older generation is history, not a failure.
        let old = work(
            3,
            json!([{"type": "Degraded", "status": "True", "observedGeneration": 2}]),
            json!([]),
        );
        assert_eq!(evaluate(WaitFor::Ready, &old, &up).state, State::Pending);
    }

    #[test]
    fn pending_lists_unready_resources_with_their_message() {
        let up = cluster("True", "");
        let rolling = work(
            1,
            json!([{"type": "Ready", "status": "False", "reason": "ResourcesNotReady", "observedGeneration": 1}]),
            json!([deployment(
                1,
                ("True", "AppliedManifestComplete", ""),
                ("False", "0 of 2 replicas available")
            )]),
        );
        let v = evaluate(WaitFor::Ready, &rolling, &up);
        assert_eq!(v.state, State::Pending);
        assert_eq!(v.pending.len(), 1);
        assert_eq!(
            v.pending[0].line(),
            "Deployment ns/web: Ready=False: 0 of 2 replicas available"
        );
        // Applied: the same work is done.
        let applied = work(
            1,
            json!([{"type": "Applied", "status": "True", "observedGeneration": 1}]),
            json!([deployment(
                1,
                ("True", "AppliedManifestComplete", ""),
                ("False", "0 of 2 replicas available")
            )]),
        );
        assert_eq!(evaluate(WaitFor::Applied, &applied, &up).state, State::Done);
    }

    #[test]
    fn deletion_is_done_when_the_work_is_gone() {
        let up = cluster("True", "");
        assert_eq!(
            evaluate(WaitFor::Deleted, &Seen::Gone, &up).state,
            State::Done
        );
        let present = work(1, json!([]), json!([]));
        let v = evaluate(WaitFor::Deleted, &present, &up);
        assert_eq!(v.state, State::Pending);
        assert!(v.message.contains("no deletion"), "{v:?}");
        // Waiting for Ready on a work that goes away fails.
        assert_eq!(
            evaluate(WaitFor::Ready, &Seen::Gone, &up).state,
            State::Failed
        );
    }

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn take(&self) -> String {
            String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
        }
    }

    fn targets() -> Vec<(String, String)> {
        vec![("c1".into(), "web".into()), ("c2".into(), "web".into())]
    }

    fn verdicts(first: State, second: State, now: DateTime<Utc>) -> Vec<Verdict> {
        let mut a = Verdict::new(
            first,
            if first == State::Done {
                "Ready (generation 1)"
            } else {
                "waiting for Ready (generation 1): Ready=False"
            },
        );
        if first == State::Pending {
            a.pending.push(ResourceReport {
                ordinal: 0,
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                namespace: "ns".into(),
                name: "web".into(),
                condition: "Ready".into(),
                status: "False".into(),
                reason: "ResourceNotReady".into(),
                message: "0 of 2 replicas available".into(),
            });
        }
        let mut b = Verdict::new(second, "waiting for Ready (generation 1): Ready=False");
        if second == State::Unavailable {
            b.unavailable = Some(Unavailability {
                why: "ManagedClusterLeaseUpdateStopped".into(),
                last_lease: Some(now - chrono::TimeDelta::seconds(12)),
            });
        }
        vec![a, b]
    }

    #[test]
    fn progress_appends_only_what_changed_when_not_a_terminal() {
        let sink = Sink::default();
        let mut p = Progress::with_writer(Box::new(sink.clone()), ProgressMode::Append);
        let now = Utc::now();
        let lines = render(
            WaitFor::Ready,
            &targets(),
            &verdicts(State::Pending, State::Unavailable, now),
            None,
            now,
        );
        p.update(&lines);
        assert_eq!(
            sink.take(),
            "cluster c1: waiting for Ready (generation 1): Ready=False\n\
             \x20 Deployment ns/web: Ready=False: 0 of 2 replicas available\n\
             cluster c2: unavailable (ManagedClusterLeaseUpdateStopped; last lease 12s ago), not counted as Ready: waiting for Ready (generation 1): Ready=False\n"
        );
        // The same state a few seconds later (only the lease age moved): nothing printed.
        let later = render(
            WaitFor::Ready,
            &targets(),
            &verdicts(State::Pending, State::Unavailable, now),
            None,
            now + chrono::TimeDelta::seconds(3),
        );
        p.update(&later);
        assert_eq!(sink.take(), "");
        // c1 becomes ready, and the hub goes away: only those lines.
        let lines = render(
            WaitFor::Ready,
            &targets(),
            &verdicts(State::Done, State::Unavailable, now),
            Some("cannot reach the hub"),
            now,
        );
        p.update(&lines);
        assert_eq!(
            sink.take(),
            "cluster c1: Ready (generation 1)\nhub: cannot reach the hub; retrying with backoff until the timeout\n"
        );
        p.line("summary");
        assert_eq!(sink.take(), "summary\n");
    }

    #[test]
    fn progress_redraws_in_place_on_a_terminal() {
        let sink = Sink::default();
        let mut p = Progress::with_writer(Box::new(sink.clone()), ProgressMode::Terminal);
        let now = Utc::now();
        p.update(&render(
            WaitFor::Ready,
            &targets(),
            &verdicts(State::Pending, State::Pending, now),
            None,
            now,
        ));
        let first = sink.take();
        assert!(first.starts_with("\x1b[?7l"), "{first:?}");
        assert_eq!(first.matches('\n').count(), 3, "{first:?}");
        // Unchanged: nothing written.
        p.update(&render(
            WaitFor::Ready,
            &targets(),
            &verdicts(State::Pending, State::Pending, now),
            None,
            now,
        ));
        assert_eq!(sink.take(), "");
        // Changed: up three lines, clear, draw the two new ones.
        p.update(&render(
            WaitFor::Ready,
            &targets(),
            &verdicts(State::Done, State::Pending, now),
            None,
            now,
        ));
        let second = sink.take();
        assert!(second.starts_with("\x1b[3A\r\x1b[J\x1b[?7l"), "{second:?}");
        assert!(
            second.contains("cluster c1: Ready (generation 1)\n"),
            "{second:?}"
        );
        assert_eq!(second.matches('\n').count(), 2, "{second:?}");
        // The summary stays below; the next block does not erase it.
        p.line("done");
        assert_eq!(sink.take(), "done\n");
        p.update(&render(
            WaitFor::Ready,
            &targets(),
            &verdicts(State::Done, State::Done, now),
            None,
            now,
        ));
        assert!(!sink.take().contains("\x1b[2A"));
    }

    #[test]
    fn quiet_progress_prints_nothing() {
        let now = Utc::now();
        let sink = Sink::default();
        let mut p = Progress::with_writer(Box::new(sink.clone()), ProgressMode::Quiet);
        p.update(&render(
            WaitFor::Ready,
            &targets(),
            &verdicts(State::Pending, State::Pending, now),
            None,
            Utc::now(),
        ));
        p.line("summary");
        assert_eq!(sink.take(), "");
    }

    #[test]
    fn the_timeout_message_names_cluster_and_resource() {
        let now = Utc::now();
        let starts: Vec<Start> = targets()
            .into_iter()
            .map(|(c, w)| Start {
                cluster: c,
                work: w,
                seen: None,
                index: 0,
                action: None,
            })
            .collect();
        let v = verdicts(State::Pending, State::Unavailable, now);
        let r = report(
            WaitFor::Ready,
            Overall::Timeout,
            &starts,
            &[Seen::Gone, Seen::Gone],
            &v,
            Instant::now(),
            Duration::from_secs(5),
        );
        let Some(CliError::TimedOut(msg)) = &r.error else {
            panic!("{r:?}")
        };
        assert!(msg.starts_with("timed out after 5s waiting for manifestwork \"web\" to be Ready; still pending: cluster c1: "), "{msg}");
        assert!(
            msg.contains("Deployment ns/web: Ready=False: 0 of 2 replicas available"),
            "{msg}"
        );
        assert!(
            msg.contains(
                "cluster c2: unavailable (ManagedClusterLeaseUpdateStopped; last lease 12s ago)"
            ),
            "{msg}"
        );
        assert_eq!(r.results[0].status, ResultStatus::Timeout);
        assert_eq!(r.results[1].status, ResultStatus::Unavailable);
        let doc = serde_json::to_value(&r.results[1]).unwrap();
        assert_eq!(doc["status"], "unavailable");
        assert!(doc["lastLeaseTime"].is_string(), "{doc}");
        assert_eq!(
            r.summary,
            "timed out after 5s: manifestwork \"web\" Ready on 0 of 2 clusters"
        );
    }
}
