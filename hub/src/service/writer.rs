//! Group commit: one writer task per hub takes every queued write, runs them in one
//! transaction under the change-index lock, gives their changes consecutive indexes, commits
//! once, publishes the changes to the feed, and only then answers the callers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use api::{ManagedCluster, ManifestWork};
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use super::error::{Error, Result};
use super::feed::ChangeFeed;
use super::{clusters, registration, works};
use crate::store::{Change, ChangeKind, NewAuditEntry, Store, StoreError, WriteTx};

/// Most writes per transaction; beyond this the commit latency grows for little gain.
const MAX_BATCH: usize = 256;

/// A write request.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    PutWork(Box<works::PutWork>),
    DeleteWork {
        cluster: String,
        name: String,
    },
    PutWorkStatus(Box<works::PutStatus>),
    RemoveFinalizer {
        cluster: String,
        name: String,
        finalizer: String,
    },
    PutCluster(Box<ManagedCluster>),
    SetClusterLabels(clusters::SetLabels),
    DeleteCluster {
        name: String,
        force: bool,
    },
    MarkClusterJoined {
        name: String,
    },
    CreateRegistration {
        registration: Box<api::Registration>,
        auto_accept: bool,
    },
    DecideRegistration {
        id: String,
        accept: bool,
    },
    RevokeAgent {
        cluster: String,
    },
    SetAvailability {
        cluster: String,
        available: bool,
        claims: Option<Vec<api::Claim>>,
    },
}

/// Who asked for a write and from where, for the audit log. The entry is written in the
/// write's own transaction: an acknowledged write always has its entry, and auditing costs
/// no round trip of its own (it was a quarter of the create rate as a separate insert).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The principal, as [`crate::auth::Principal::actor`] names it.
    pub actor: String,
    /// The peer address.
    pub source: String,
}

impl Op {
    /// The work and the cluster this op reads, for the batch's prefetch.
    fn reads(&self) -> (Option<(String, String)>, Option<&String>) {
        let work = |c: &String, n: &String| Some((c.clone(), n.clone()));
        match self {
            Op::PutWork(p) => (work(&p.cluster, &p.name), Some(&p.cluster)),
            Op::DeleteWork { cluster, name } | Op::RemoveFinalizer { cluster, name, .. } => {
                (work(cluster, name), None)
            }
            Op::PutWorkStatus(p) => (work(&p.cluster, &p.name), None),
            _ => (None, None),
        }
    }

    /// The audit entry of this op, given what it did; `None` for writes not audited
    /// (agents' status, finalizers and leases; the rest is audited by its handler).
    fn audit_entry(&self, by: &Caller, outcome: &Outcome) -> Option<NewAuditEntry> {
        let (action, cluster, name) = match self {
            Op::PutWork(put) => ("work.put", &put.cluster, &put.name),
            Op::DeleteWork { cluster, name } => ("work.delete", cluster, name),
            _ => return None,
        };
        let Outcome::Work {
            work,
            gone,
            created,
        } = outcome
        else {
            return None;
        };
        let details = match self {
            Op::PutWork(_) => serde_json::json!({
                "generation": work.metadata.generation,
                "resourceVersion": work.metadata.resource_version,
                "created": created,
            }),
            _ => serde_json::json!({"removed": gone}),
        };
        Some(NewAuditEntry {
            actor: by.actor.clone(),
            action: action.into(),
            target: format!("clusters/{cluster}/manifestworks/{name}"),
            source: by.source.clone(),
            details,
        })
    }
}

/// What a write produced.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// The work after the write; `gone` when the write removed it.
    Work {
        work: Box<ManifestWork>,
        gone: bool,
        created: bool,
    },
    /// The cluster after the write.
    Cluster(Box<ManagedCluster>),
    /// A cluster deletion's result.
    ClusterDeletion(api::ClusterDeletion),
    /// A registration after the write.
    Registration(Box<api::Registration>),
}

/// The writes of one transaction, and the changes they made so far.
pub(crate) struct Batch<'a> {
    pub tx: &'a mut dyn WriteTx,
    pub changes: Vec<Change>,
    /// Audit entries of the writes so far, inserted at commit.
    pub audit: Vec<NewAuditEntry>,
    pub now: DateTime<Utc>,
    next: u64,
}

impl Batch<'_> {
    /// The index the next recorded change will get; objects store it as resourceVersion.
    pub fn next_index(&self) -> u64 {
        self.next
    }

    /// Records a change to a work at `next_index()`.
    pub fn record_work(
        &mut self,
        cluster: &str,
        name: &str,
        old: Option<&ManifestWork>,
        new: Option<&ManifestWork>,
        status_only: bool,
    ) {
        let labels = new.map(|w| w.metadata.labels.clone()).unwrap_or_default();
        let prev = old
            .map(|w| &w.metadata.labels)
            .filter(|l| **l != labels)
            .cloned();
        self.push(ChangeKind::Work, cluster, name, labels, prev, status_only);
    }

    /// Records a change to a cluster at `next_index()`.
    pub fn record_cluster(
        &mut self,
        name: &str,
        old: Option<&ManagedCluster>,
        new: Option<&ManagedCluster>,
    ) {
        let labels = new.map(|c| c.metadata.labels.clone()).unwrap_or_default();
        let prev = old
            .map(|c| &c.metadata.labels)
            .filter(|l| **l != labels)
            .cloned();
        self.push(ChangeKind::Cluster, name, name, labels, prev, false);
    }

    /// Records a change to a registration at `next_index()`.
    pub fn record_registration(&mut self, cluster: &str, id: &str) {
        self.push(
            ChangeKind::Registration,
            cluster,
            id,
            Default::default(),
            None,
            false,
        );
    }

    fn push(
        &mut self,
        kind: ChangeKind,
        cluster: &str,
        name: &str,
        labels: std::collections::BTreeMap<String, String>,
        prev_labels: Option<std::collections::BTreeMap<String, String>>,
        status_only: bool,
    ) {
        self.changes.push(Change {
            index: self.next,
            kind,
            cluster: cluster.to_string(),
            name: name.to_string(),
            labels,
            prev_labels,
            status_only,
        });
        self.next += 1;
    }
}

async fn execute(batch: &mut Batch<'_>, op: &Op) -> Result<Outcome> {
    match op {
        Op::PutWork(put) => works::put(batch, put).await,
        Op::DeleteWork { cluster, name } => works::delete(batch, cluster, name).await,
        Op::PutWorkStatus(put) => works::put_status(batch, put).await,
        Op::RemoveFinalizer {
            cluster,
            name,
            finalizer,
        } => works::remove_finalizer(batch, cluster, name, finalizer).await,
        Op::PutCluster(c) => clusters::put(batch, c).await,
        Op::SetClusterLabels(s) => clusters::set_labels(batch, s).await,
        Op::DeleteCluster { name, force } => clusters::delete(batch, name, *force).await,
        Op::MarkClusterJoined { name } => clusters::mark_joined(batch, name).await,
        Op::CreateRegistration {
            registration,
            auto_accept,
        } => registration::create(batch, registration, *auto_accept).await,
        Op::DecideRegistration { id, accept } => registration::decide(batch, id, *accept).await,
        Op::RevokeAgent { cluster } => registration::revoke(batch, cluster).await,
        Op::SetAvailability {
            cluster,
            available,
            claims,
        } => registration::set_availability(batch, cluster, *available, claims.as_deref()).await,
    }
}

type Reply = oneshot::Sender<Result<Outcome>>;

/// A write waiting for the writer, and who asked for it when it is audited.
struct Queued {
    op: Op,
    by: Option<Caller>,
}

/// The handle through which requests reach the writer task.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<(Queued, Reply)>,
    /// Whether the last commit failed: then readiness probes whether writes commit again.
    failing: Arc<AtomicBool>,
}

impl Writer {
    /// Starts the writer task.
    pub fn start(store: Arc<dyn Store>, feed: Arc<ChangeFeed>) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        let failing = Arc::new(AtomicBool::new(false));
        tokio::spawn(run(store, feed, rx, failing.clone()));
        Writer { tx, failing }
    }

    /// Whether the last commit failed (and none succeeded since).
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// A probe committed: writes work again.
    pub fn recovered(&self) {
        self.failing.store(false, Ordering::Relaxed);
    }

    /// Queues a write and waits for its committed result.
    pub async fn write(&self, op: Op) -> Result<Outcome> {
        self.write_by(op, None).await
    }

    /// Queues a write whose audit entry (when `by` is given) commits with it.
    pub async fn write_by(&self, op: Op, by: Option<Caller>) -> Result<Outcome> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((Queued { op, by }, reply))
            .await
            .map_err(|_| Error::Internal("the writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Internal("the writer dropped a request".into()))?
    }
}

async fn run(
    store: Arc<dyn Store>,
    feed: Arc<ChangeFeed>,
    mut rx: mpsc::Receiver<(Queued, Reply)>,
    failing: Arc<AtomicBool>,
) {
    let mut queue = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut queue, MAX_BATCH).await > 0 {
        let ops: Vec<(Queued, Reply)> = std::mem::take(&mut queue);
        metrics::histogram!("hub_write_batch_size").record(ops.len() as f64);
        let (ops, replies): (Vec<Queued>, Vec<Reply>) = ops.into_iter().unzip();
        let result = commit(&*store, &feed, &ops).await;
        failing.store(result.is_err(), Ordering::Relaxed);
        match result {
            Ok(results) => {
                for (reply, r) in replies.into_iter().zip(results) {
                    let _ = reply.send(r);
                }
            }
            Err(e) if e.is_unreachable() => {
                // Without a database every write fails alike. Retrying them one by one (below)
                // would make each wait out the pool's acquire timeout in turn, so that the
                // last caller of a batch of N heard back only after N times that (a Postgres
                // restart under load had writes answered after 20 s); answer them all now.
                tracing::error!(error = %e, writes = ops.len(), "database unreachable; batch failed");
                for reply in replies {
                    let _ = reply.send(Err(e.unreachable_copy().into()));
                }
            }
            Err(e) if ops.len() > 1 => {
                // One write may have tripped the database; retry each alone so the others
                // still land and only the culprit fails.
                tracing::warn!(error = %e, writes = ops.len(), "batch failed; retrying writes one by one");
                for (op, reply) in ops.into_iter().zip(replies) {
                    let result = commit(&*store, &feed, std::slice::from_ref(&op)).await;
                    failing.store(result.is_err(), Ordering::Relaxed);
                    let r = match result {
                        Ok(mut r) => r
                            .pop()
                            .unwrap_or_else(|| Err(Error::Internal("no result".into()))),
                        Err(e) => Err(e.into()),
                    };
                    let _ = reply.send(r);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "write failed");
                if let Some(reply) = replies.into_iter().next() {
                    let _ = reply.send(Err(e.into()));
                }
            }
        }
    }
}

/// Runs the ops in one transaction and publishes their changes. The per-op results are
/// returned only when the commit succeeded.
async fn commit(
    store: &dyn Store,
    feed: &ChangeFeed,
    ops: &[Queued],
) -> Result<Vec<Result<Outcome>>, StoreError> {
    // The works and the clusters the batch touches are read as it begins, instead of a
    // round trip per op.
    let (mut works, mut clusters) = (Vec::new(), Vec::new());
    for q in ops {
        let (w, c) = q.op.reads();
        works.extend(w);
        clusters.extend(c.cloned());
    }
    let mut tx = store.begin_write(&works, &clusters).await?;
    let base = tx.base_index();
    let mut batch = Batch {
        tx: &mut *tx,
        changes: Vec::new(),
        audit: Vec::new(),
        now: Utc::now(),
        next: base + 1,
    };
    let mut results = Vec::with_capacity(ops.len());
    for Queued { op, by } in ops {
        let mark = batch.changes.len();
        let r = execute(&mut batch, op).await;
        if let Err(Error::Unavailable(e)) = r {
            return Err(e);
        }
        match (&r, by) {
            (Ok(outcome), Some(by)) => batch.audit.extend(op.audit_entry(by, outcome)),
            // A refused write must leave no change behind (ops check before they write).
            (Err(_), _) => debug_assert_eq!(batch.changes.len(), mark),
            (Ok(_), None) => {}
        }
        results.push(r);
    }
    let changes = std::mem::take(&mut batch.changes);
    let audit = std::mem::take(&mut batch.audit);
    tx.commit(&changes, &audit).await?;
    // The writes are durable now: a failure to publish must not fail (and so repeat) them.
    // The feed's poll catches up on its own.
    if let Err(e) = feed.publish_local(store, changes).await {
        tracing::warn!(error = %e, "could not publish committed changes; the feed will catch up");
    }
    Ok(results)
}
