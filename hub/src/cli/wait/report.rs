//! The outcome of a wait: progress lines, the summary, the `-o` document and the exit error.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use api::Condition;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::condition::WaitFor;
use super::verdict::{ResourceReport, Seen, Start, State, Verdict};
use crate::cli::support::error::CliError;
use crate::cli::support::output::{self, DocumentFormat};
use crate::cli::support::progress::{Line, Progress};
use crate::cli::support::watch::humantime;

/// Unready resources listed per cluster in the progress; the rest are counted.
const MAX_RESOURCE_LINES: usize = 5;

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

/// What one work on one cluster is called in progress lines.
pub(crate) fn label(cluster: &str, work: &str, several_works: bool) -> String {
    if several_works {
        format!("cluster {cluster}, work {work}")
    } else {
        format!("cluster {cluster}")
    }
}

/// The progress lines: one per work and cluster, one per unready resource (indented),
/// and one when the hub is being retried.
pub(crate) fn render(
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

/// The report of a finished wait.
pub(crate) fn report(
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
pub(crate) fn pending_text(start: &Start, v: &Verdict, several_works: bool) -> String {
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
