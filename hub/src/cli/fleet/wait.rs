//! `hub wait manifestworkreplicaset NAME --for Applied|Available|Ready|delete`: blocking
//! GETs of the set until its status says so, with a line per cluster.
//!
//! A set is Applied (Available) when its summary counts at least one work and every work
//! is Applied (Available); Ready when, besides, every cluster of `status.clusters[]` has
//! `Ready=True`. Either way the status must be current: `PlacementVerified=True`,
//! `ManifestworkApplied` with reason `AsExpected` (no work missing), and the set's
//! conditions about its current generation. A Degraded work fails the wait at once.

use std::time::{Duration, Instant};

use api::fleet::{ManifestWorkReplicaSet, conditions};
use api::{Condition, HubClient, ListOptions, find_condition, status};
use clap::Args;
use serde::Serialize;

use super::DEFAULT_NAMESPACE;
use crate::cli::support::error::CliError;
use crate::cli::support::output::{self, DocumentFormat, SET_RESOURCE};
use crate::cli::support::progress::{Line, Progress};
use crate::cli::support::wait_for::WaitFor;
use crate::cli::support::watch::{backoff, block_for, humantime, transient, trouble_text};

/// The reason of `ManifestworkApplied` when a work exists for every decided cluster.
const AS_EXPECTED: &str = "AsExpected";

/// `hub wait manifestworkreplicaset`.
#[derive(Debug, Args)]
pub struct WaitSetArgs {
    /// The set's name.
    pub name: String,
    /// Its namespace.
    #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// What to wait for: Ready, Applied, Available, or delete (the set is gone); also
    /// kubectl's condition=Ready[=True].
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
    /// Print a SetWaitResult (the outcome and the set as last seen) as JSON or YAML on
    /// stdout (progress goes to stderr).
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<DocumentFormat>,
    /// No progress and no summary: only errors (and the -o document).
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// How a set stands against what is waited for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetVerdict {
    /// Reached.
    Done,
    /// Not yet: why.
    Pending(String),
    /// A work failed (Degraded): where.
    Failed(String),
}

/// How the set stands for `for_` (never [`WaitFor::Deleted`], which only a 404 meets).
pub fn evaluate(set: &ManifestWorkReplicaSet, for_: WaitFor) -> SetVerdict {
    let st = &set.status;
    let degraded: Vec<&str> = st
        .clusters
        .iter()
        .filter(|c| c.conditions.get(status::DEGRADED).map(String::as_str) == Some("True"))
        .map(|c| c.cluster_name.as_str())
        .collect();
    if !degraded.is_empty() {
        return SetVerdict::Failed(format!(
            "the work is Degraded on cluster {}",
            degraded.join(", ")
        ));
    }
    if st.summary.degraded > 0 {
        return SetVerdict::Failed(format!("{} works are Degraded", st.summary.degraded));
    }
    let generation = set.metadata.generation;
    let stale = |c: &Condition| matches!((c.observed_generation, generation), (Some(seen), Some(current)) if seen < current);
    match find_condition(&st.conditions, conditions::PLACEMENT_VERIFIED) {
        Some(c) if stale(c) => {
            return SetVerdict::Pending(format!(
                "the hub has not evaluated generation {} of the set yet",
                generation.unwrap_or_default()
            ));
        }
        Some(c) if c.is_true() => {}
        Some(c) => return SetVerdict::Pending(format!("placement not verified: {}", why(c))),
        None => return SetVerdict::Pending("placement not verified yet".into()),
    }
    match find_condition(&st.conditions, conditions::MANIFESTWORK_APPLIED) {
        Some(c) if c.reason == AS_EXPECTED && !stale(c) => {}
        Some(c) => return SetVerdict::Pending(format!("works not all created: {}", why(c))),
        None => return SetVerdict::Pending("works not created yet".into()),
    }
    let sum = &st.summary;
    if sum.total <= 0 {
        return SetVerdict::Pending("no work yet: no cluster decided".into());
    }
    let (count, of) = match for_ {
        WaitFor::Applied => (i64::from(sum.applied), i64::from(sum.total)),
        WaitFor::Available => (i64::from(sum.available), i64::from(sum.total)),
        WaitFor::Ready | WaitFor::Deleted => {
            let ready = st
                .clusters
                .iter()
                .filter(|c| c.conditions.get(status::READY).map(String::as_str) == Some("True"))
                .count();
            let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
            (count(ready), count(st.clusters.len()))
        }
    };
    if of > 0 && count >= of {
        SetVerdict::Done
    } else {
        SetVerdict::Pending(format!("{count} of {of} works {for_}"))
    }
}

/// A condition's reason and message, for a person.
fn why(c: &Condition) -> String {
    match (c.reason.is_empty(), c.message.is_empty()) {
        (false, false) => format!("{} ({})", c.reason, c.message),
        (false, true) => c.reason.clone(),
        (true, false) => c.message.clone(),
        (true, true) => format!("{}={}", c.type_, c.status),
    }
}

/// The progress lines: the set's state, then one per cluster with its work's conditions
/// (or why the set keeps no work there).
pub fn progress_lines(set: &ManifestWorkReplicaSet, verdict: &SetVerdict) -> Vec<Line> {
    let who = format!("{SET_RESOURCE}/{}", set.metadata.name);
    let state = match verdict {
        SetVerdict::Done => "done".to_string(),
        SetVerdict::Pending(why) => why.clone(),
        SetVerdict::Failed(why) => format!("failed: {why}"),
    };
    let mut lines = vec![Line::plain("set".into(), format!("{who}: {state}"))];
    for c in &set.status.clusters {
        let text = if c.conditions.is_empty() {
            if c.message.is_empty() {
                "no work yet".to_string()
            } else {
                c.message.clone()
            }
        } else {
            let mut parts: Vec<String> = [status::APPLIED, status::AVAILABLE, status::READY]
                .iter()
                .map(|t| {
                    let s = c.conditions.get(*t).map_or("-", String::as_str);
                    format!("{t}={s}")
                })
                .collect();
            if c.conditions.get(status::DEGRADED).map(String::as_str) == Some("True") {
                parts.push("Degraded=True".into());
            }
            parts.join(" ")
        };
        lines.push(Line::plain(
            format!("cluster/{}", c.cluster_name),
            format!("  cluster {}: {text}", c.cluster_name),
        ));
    }
    lines
}

/// How a set's wait ended (`status` of a SetWaitResult).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SetOutcome {
    /// Reached.
    Done,
    /// A work is Degraded, or the set was deleted while waited for.
    Failed,
    /// The timeout ran out.
    Timeout,
}

/// The document `hub wait manifestworkreplicaset -o json|yaml` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SetWaitResult {
    /// Always `v1`.
    pub api_version: &'static str,
    /// Always `SetWaitResult`.
    pub kind: &'static str,
    /// What was waited for.
    #[serde(rename = "for")]
    pub for_: WaitFor,
    /// done, failed or timeout.
    pub status: SetOutcome,
    /// Seconds from the command's start to its end.
    pub elapsed_seconds: f64,
    /// How it stands, for a person.
    pub message: String,
    /// The set as last seen (absent once deleted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set: Option<ManifestWorkReplicaSet>,
}

/// How a finished wait stands: the outcome, a message, the set as last seen.
#[derive(Debug)]
pub struct SetWait {
    /// done, failed or timeout.
    pub outcome: SetOutcome,
    /// One line for a person.
    pub message: String,
    /// The set as last seen (`None` once gone).
    pub set: Option<ManifestWorkReplicaSet>,
}

impl SetWait {
    /// The error to exit with: none when done, 1 failed, 3 timed out.
    pub fn error(&self) -> Option<CliError> {
        match self.outcome {
            SetOutcome::Done => None,
            SetOutcome::Failed => Some(CliError::Failed(self.message.clone())),
            SetOutcome::Timeout => Some(CliError::TimedOut(self.message.clone())),
        }
    }
}

/// Waits for one set with blocking GETs until `for_` is met, a work fails, or `timeout`
/// from `started` ran out. A set that does not exist when the wait starts is refused
/// (exit 1), except for `delete`; errors of the hub during the wait are retried until the
/// timeout.
pub async fn wait_set(
    client: &HubClient,
    namespace: &str,
    name: &str,
    for_: WaitFor,
    (started, timeout): (Instant, Duration),
    progress: &mut Progress,
) -> Result<SetWait, CliError> {
    let deadline = started + timeout;
    let who = format!("manifestworkreplicaset {name:?} (namespace {namespace})");
    let mut last = match client
        .get_set(namespace, name, &ListOptions::default())
        .await
    {
        Ok(found) => found,
        Err(e) if e.is_not_found() && for_ == WaitFor::Deleted => {
            return Ok(SetWait {
                outcome: SetOutcome::Done,
                message: format!("{who} deleted"),
                set: None,
            });
        }
        Err(e) if e.is_not_found() => {
            return Err(CliError::Refused(format!("{who} not found")));
        }
        Err(e) => return Err(e.into()),
    };
    let mut backoff = backoff();
    let mut trouble: Option<String> = None;
    loop {
        let verdict = match for_ {
            WaitFor::Deleted => SetVerdict::Pending(match last.value.metadata.deletion_timestamp {
                Some(_) => "deleting: its works are being removed".into(),
                None => "still there (nobody asked for its deletion)".into(),
            }),
            _ => evaluate(&last.value, for_),
        };
        let mut lines = progress_lines(&last.value, &verdict);
        if let Some(t) = &trouble {
            lines.push(Line::plain(
                "hub".into(),
                format!("hub: {t}; retrying with backoff until the timeout"),
            ));
        }
        progress.update(&lines);
        match verdict {
            SetVerdict::Done => {
                return Ok(SetWait {
                    outcome: SetOutcome::Done,
                    message: format!("{who} {for_}"),
                    set: Some(last.value),
                });
            }
            SetVerdict::Failed(why) => {
                return Ok(SetWait {
                    outcome: SetOutcome::Failed,
                    message: format!("{who} failed: {why}"),
                    set: Some(last.value),
                });
            }
            SetVerdict::Pending(why) => {
                let Some(wait) = block_for(deadline) else {
                    return Ok(SetWait {
                        outcome: SetOutcome::Timeout,
                        message: format!(
                            "timed out after {} waiting for {who} to be {for_}: {why}",
                            humantime(timeout)
                        ),
                        set: Some(last.value),
                    });
                };
                let opts = ListOptions {
                    index: Some(last.index),
                    wait: Some(wait),
                    ..Default::default()
                };
                match client.get_set(namespace, name, &opts).await {
                    Ok(found) => {
                        backoff.reset();
                        trouble = None;
                        // Never go back: a missing header must not turn into a busy loop.
                        let index = found.index.max(last.index);
                        last = api::Indexed {
                            value: found.value,
                            index,
                            epoch: found.epoch,
                        };
                    }
                    Err(e) if e.is_not_found() => {
                        let (outcome, message) = match for_ {
                            WaitFor::Deleted => (SetOutcome::Done, format!("{who} deleted")),
                            _ => (
                                SetOutcome::Failed,
                                format!("{who} was deleted while waiting for {for_}"),
                            ),
                        };
                        return Ok(SetWait {
                            outcome,
                            message,
                            set: None,
                        });
                    }
                    Err(e) if transient(&e) => {
                        trouble = Some(trouble_text(&e));
                        tokio::time::sleep(backoff.next_delay().min(wait)).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
}

/// Runs `hub wait manifestworkreplicaset`.
pub async fn run(args: WaitSetArgs, client: &HubClient) -> Result<(), CliError> {
    let WaitSetArgs {
        name,
        namespace,
        for_,
        timeout,
        output,
        quiet,
    } = args;
    let started = Instant::now();
    let mut progress = Progress::new(output.is_some(), quiet);
    let done = wait_set(
        client,
        &namespace,
        &name,
        for_,
        (started, timeout),
        &mut progress,
    )
    .await?;
    let elapsed = started.elapsed().as_secs_f64();
    if done.outcome == SetOutcome::Done {
        progress.line(&format!("{} after {elapsed:.1}s", done.message));
    }
    if let Some(format) = output {
        let doc = SetWaitResult {
            api_version: "v1",
            kind: "SetWaitResult",
            for_,
            status: done.outcome,
            elapsed_seconds: (elapsed * 1000.0).round() / 1000.0,
            message: done.message.clone(),
            set: done.set.clone(),
        };
        output::print(&output::document(&doc, format)?);
    }
    match done.error() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::fleet::SetClusterStatus;

    fn condition(type_: &str, status: &str, reason: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            observed_generation: Some(1),
            ..Default::default()
        }
    }

    fn cluster(name: &str, conds: &[(&str, &str)]) -> SetClusterStatus {
        SetClusterStatus {
            cluster_name: name.into(),
            placement: "p".into(),
            conditions: conds
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    /// A set at generation 1 whose status is current, with two works.
    fn set() -> ManifestWorkReplicaSet {
        let mut s = ManifestWorkReplicaSet::default();
        s.metadata.name = "web".into();
        s.metadata.generation = Some(1);
        s.status.conditions = vec![
            condition(conditions::PLACEMENT_VERIFIED, "True", "AsExpected"),
            condition(conditions::MANIFESTWORK_APPLIED, "True", AS_EXPECTED),
        ];
        s.status.summary.total = 2;
        s.status.summary.applied = 2;
        s.status.summary.available = 1;
        s.status.clusters = vec![
            cluster(
                "c1",
                &[
                    ("Applied", "True"),
                    ("Available", "True"),
                    ("Ready", "True"),
                ],
            ),
            cluster(
                "c2",
                &[
                    ("Applied", "True"),
                    ("Available", "False"),
                    ("Ready", "False"),
                ],
            ),
        ];
        s
    }

    #[test]
    fn each_condition_needs_every_work() {
        let s = set();
        assert_eq!(evaluate(&s, WaitFor::Applied), SetVerdict::Done);
        assert_eq!(
            evaluate(&s, WaitFor::Available),
            SetVerdict::Pending("1 of 2 works Available".into())
        );
        assert_eq!(
            evaluate(&s, WaitFor::Ready),
            SetVerdict::Pending("1 of 2 works Ready".into())
        );
    }

    #[test]
    fn a_status_that_is_not_current_is_not_done() {
        // No work yet.
        let mut s = set();
        s.status.summary = Default::default();
        assert!(matches!(
            evaluate(&s, WaitFor::Applied),
            SetVerdict::Pending(_)
        ));
        // A work missing: the counts may look complete, the set is not.
        let mut s = set();
        s.status.conditions[1] = condition(conditions::MANIFESTWORK_APPLIED, "False", "Processing");
        assert_eq!(
            evaluate(&s, WaitFor::Applied),
            SetVerdict::Pending("works not all created: Processing".into())
        );
        // The placement does not exist.
        let mut s = set();
        s.status.conditions[0] = condition(
            conditions::PLACEMENT_VERIFIED,
            "False",
            "PlacementDecisionNotFound",
        );
        assert!(
            matches!(evaluate(&s, WaitFor::Applied), SetVerdict::Pending(m) if m.contains("PlacementDecisionNotFound"))
        );
        // The set changed and the hub has not caught up.
        let mut s = set();
        s.metadata.generation = Some(2);
        assert!(
            matches!(evaluate(&s, WaitFor::Applied), SetVerdict::Pending(m) if m.contains("generation 2"))
        );
    }

    #[test]
    fn a_degraded_work_fails_at_once() {
        let mut s = set();
        s.status.clusters[1]
            .conditions
            .insert("Degraded".into(), "True".into());
        assert_eq!(
            evaluate(&s, WaitFor::Applied),
            SetVerdict::Failed("the work is Degraded on cluster c2".into())
        );
    }

    #[test]
    fn progress_has_a_line_per_cluster() {
        let s = set();
        let lines: Vec<String> = progress_lines(&s, &evaluate(&s, WaitFor::Ready))
            .into_iter()
            .map(|l| l.display)
            .collect();
        assert_eq!(
            lines,
            [
                format!("{SET_RESOURCE}/web: 1 of 2 works Ready"),
                "  cluster c1: Applied=True Available=True Ready=True".into(),
                "  cluster c2: Applied=True Available=False Ready=False".into(),
            ]
        );
    }
}
