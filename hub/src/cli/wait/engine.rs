//! The wait itself: watchers on blocking queries feed what the hub says into verdicts.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use api::{ClientError, HubClient, ListOptions, ManagedCluster, ManifestWork, WorkSummary};
use chrono::Utc;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::condition::WaitFor;
use super::report::{Overall, Report, render, report};
use super::verdict::{ClusterSeen, Seen, Start, State, Verdict, evaluate};
use crate::cli::support::error::CliError;
use crate::cli::support::progress::{Progress, ProgressMode};
use crate::cli::support::watch::{backoff, block_for, transient, trouble_text};

/// Where the clusters' records are read from while waiting.
#[derive(Debug, Clone)]
pub enum ClusterScope {
    /// One cluster, by name.
    One(String),
    /// The clusters a label selector matches.
    Selector(String),
}

/// What the watchers tell the wait.
#[derive(Debug)]
pub(crate) enum Event {
    /// The work of target `i` as read now (`None`: 404).
    Work(usize, Option<Box<ManifestWork>>),
    /// The clusters' records as read now (`None`: not found).
    Clusters(Vec<(String, Option<Box<ManagedCluster>>)>),
    /// The hub could not be reached or answered 5xx; being retried.
    Trouble(String),
    /// The hub refused (401, 403, another 4xx): the wait cannot go on.
    Fatal(Box<ClientError>),
}

/// Follows one work with blocking GETs from `index` until it is gone or the deadline.
pub(crate) async fn watch_work(
    client: HubClient,
    target: Target,
    mut index: u64,
    tx: mpsc::UnboundedSender<Event>,
    deadline: Instant,
) {
    let Target {
        i,
        cluster,
        work: name,
    } = target;
    let mut backoff = backoff();
    while let Some(wait) = block_for(deadline) {
        let opts = ListOptions {
            index: Some(index),
            wait: Some(wait),
            ..Default::default()
        };
        let event = match client.get_work(&cluster, &name, &opts).await {
            Ok(r) => {
                backoff.reset();
                index = index.max(r.index);
                Event::Work(i, Some(Box::new(r.value)))
            }
            Err(e) if e.is_not_found() => {
                let _ = tx.send(Event::Work(i, None));
                return;
            }
            Err(e) => match retry_after(e, &tx, &mut backoff, wait).await {
                true => continue,
                false => return,
            },
        };
        if tx.send(event).is_err() {
            return;
        }
    }
}

/// A work on a cluster being waited for: its place among the starts and its names.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Index of its start.
    pub(crate) i: usize,
    /// The cluster.
    pub(crate) cluster: String,
    /// The work's name.
    pub(crate) work: String,
}

/// Reads of works in flight at once after the summary changed.
const READS_IN_FLIGHT: usize = 16;

/// Follows works across the clusters a selector matches with blocking queries on
/// `/api/v1/manifestworks/summary` (one connection, not one per cluster). When the summary
/// of a work name changes, the works of that name are read again (at most
/// [`READS_IN_FLIGHT`] at once) so the progress can name clusters and resources; a work
/// that is gone (404) is reported and no longer read.
pub(crate) async fn watch_summary(
    client: HubClient,
    selector: String,
    mut targets: Vec<Target>,
    mut index: u64,
    tx: mpsc::UnboundedSender<Event>,
    deadline: Instant,
) {
    let names: BTreeSet<String> = targets.iter().map(|t| t.work.clone()).collect();
    // With one name the hub filters; with several, the summary of every name comes back.
    let only = (names.len() == 1)
        .then(|| names.iter().next().cloned())
        .flatten();
    let mut last: Option<BTreeMap<String, WorkSummary>> = None;
    let mut backoff = backoff();
    while let Some(wait) = block_for(deadline) {
        if targets.is_empty() {
            return;
        }
        let opts = ListOptions {
            cluster_selector: Some(selector.clone()),
            index: Some(index),
            wait: Some(wait),
            ..Default::default()
        };
        // The index is taken only once the reads it caused went through, so that a read
        // that failed is made again at once.
        let (summary, next_index) = match client.summary(only.as_deref(), &opts).await {
            Ok(r) => {
                let next = index.max(r.index).max(r.value.metadata.index);
                let items = r
                    .value
                    .items
                    .into_iter()
                    .filter(|s| names.contains(&s.name))
                    .map(|s| (s.name.clone(), s))
                    .collect::<BTreeMap<_, _>>();
                (items, next)
            }
            Err(e) => match retry_after(e, &tx, &mut backoff, wait).await {
                true => continue,
                false => return,
            },
        };
        // Another work changed, or only the index moved: nothing to read again.
        let changed: BTreeSet<&String> = names
            .iter()
            .filter(|n| last.as_ref().is_none_or(|l| l.get(*n) != summary.get(*n)))
            .collect();
        let to_read: Vec<Target> = targets
            .iter()
            .filter(|t| changed.contains(&t.work))
            .cloned()
            .collect();
        if to_read.is_empty() {
            backoff.reset();
            index = next_index;
            continue;
        }
        let reads = futures::stream::iter(to_read.into_iter().map(|t| {
            let client = client.clone();
            async move {
                let read = client
                    .get_work(&t.cluster, &t.work, &ListOptions::default())
                    .await;
                (t.i, read)
            }
        }))
        .buffered(READS_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await;
        let mut gone = BTreeSet::new();
        let mut troubled = false;
        for (i, read) in reads {
            let event = match read {
                Ok(r) => Event::Work(i, Some(Box::new(r.value))),
                Err(e) if e.is_not_found() => {
                    gone.insert(i);
                    Event::Work(i, None)
                }
                Err(e) if transient(&e) => {
                    troubled = true;
                    Event::Trouble(trouble_text(&e))
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
        targets.retain(|t| !gone.contains(&t.i));
        if troubled {
            tokio::time::sleep(backoff.next_delay().min(wait)).await;
            continue;
        }
        backoff.reset();
        index = next_index;
        last = Some(summary);
    }
}

/// Follows the clusters' records (their availability) with blocking queries.
pub(crate) async fn watch_clusters(
    client: HubClient,
    scope: ClusterScope,
    names: Vec<String>,
    tx: mpsc::UnboundedSender<Event>,
    deadline: Instant,
) {
    let mut backoff = backoff();
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
                backoff.reset();
                index = Some(index.unwrap_or(0).max(i));
                if tx.send(Event::Clusters(clusters)).is_err() {
                    return;
                }
            }
            Err(e) => {
                if !retry_after(e, &tx, &mut backoff, wait).await {
                    return;
                }
            }
        }
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
    let seen: Vec<Seen> = starts
        .iter()
        .map(|s| match &s.seen {
            Some(w) => Seen::Present(Box::new(w.clone())),
            None => Seen::Gone,
        })
        .collect();
    let present: Vec<Target> = starts
        .iter()
        .enumerate()
        .filter(|(_, s)| s.seen.is_some())
        .map(|(i, s)| Target {
            i,
            cluster: s.cluster.clone(),
            work: s.work.clone(),
        })
        .collect();
    match &scope {
        // One cluster: a blocking GET per work (usually one) says exactly what changed.
        ClusterScope::One(_) => {
            for t in present {
                let index = starts[t.i].index;
                tasks.spawn(watch_work(client.clone(), t, index, tx.clone(), deadline));
            }
        }
        // A fleet: one blocking query on the summary instead of a connection per cluster.
        ClusterScope::Selector(selector) => {
            let index = starts.iter().map(|s| s.index).min().unwrap_or(0);
            tasks.spawn(watch_summary(
                client.clone(),
                selector.clone(),
                present,
                index,
                tx.clone(),
                deadline,
            ));
        }
    }
    let mut seen = seen;
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

/// A watcher's failed read: a transient error is reported as trouble and retried after the
/// backoff (at most `wait`), `true`; any other ends the wait as fatal, `false`.
async fn retry_after(
    e: ClientError,
    tx: &mpsc::UnboundedSender<Event>,
    backoff: &mut api::retry::Backoff,
    wait: Duration,
) -> bool {
    if transient(&e) {
        let _ = tx.send(Event::Trouble(trouble_text(&e)));
        tokio::time::sleep(backoff.next_delay().min(wait)).await;
        true
    } else {
        let _ = tx.send(Event::Fatal(Box::new(e)));
        false
    }
}
