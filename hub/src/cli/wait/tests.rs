//! Unit tests of the wait: `--for`, verdicts, progress and the timeout message.

use std::io::Write;
use std::time::{Duration, Instant};

use api::status::CLUSTER_AVAILABLE;
use chrono::{DateTime, Utc};

use super::condition::WaitFor;
use super::report::{Overall, ResultStatus, render, report};
use super::verdict::{
    ClusterSeen, ResourceReport, Seen, Start, State, Unavailability, Verdict, evaluate,
};
use crate::cli::support::error::CliError;
use crate::cli::support::progress::{Progress, ProgressMode};
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
