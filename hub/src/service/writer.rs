//! Group commit: one writer task per hub takes every queued write, runs them in one
//! transaction under the change-index lock, gives their changes consecutive indexes, commits
//! once, publishes the changes to the feed, and only then answers the callers.
//!
//! A write is a [`WriteOp`]: it declares what it reads, applies itself to the [`Batch`] and
//! returns its own typed result; the writer knows no op by name. Each op runs under its own
//! savepoint, so an op that is refused halfway leaves no row, no change and no audit entry
//! behind while the rest of its batch commits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use api::{ManagedCluster, ManifestWork};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use super::error::{Error, Result};
use super::feed::ChangeFeed;
use crate::store::{Change, ChangeKind, NewAuditEntry, ObjectKind, Store, StoreError, WriteTx};

/// Most writes per transaction; beyond this the commit latency grows for little gain.
const MAX_BATCH: usize = 256;

/// What an op reads, for the batch's prefetch: works by (cluster, name) and clusters.
#[derive(Debug, Default)]
pub struct Reads {
    /// Works by (cluster, name).
    pub works: Vec<(String, String)>,
    /// Clusters by name.
    pub clusters: Vec<String>,
}

/// What the audit log records of a write, besides who asked and from where.
#[derive(Debug, Clone)]
pub struct Audit {
    /// What was done (`work.put`, `cluster.label`, ...).
    pub action: &'static str,
    /// On what (`clusters/c1`, ...).
    pub target: String,
    /// Extra facts, never secrets.
    pub details: serde_json::Value,
}

/// One write, run by the writer inside a batch transaction.
#[async_trait]
pub trait WriteOp: Send + Sync + 'static {
    /// What the write answers.
    type Output: Send + 'static;

    /// The works and clusters it reads, read for the whole batch as it begins.
    fn reads(&self) -> Reads {
        Reads::default()
    }

    /// Checks and writes. An error undoes whatever it wrote (its savepoint).
    async fn apply(&self, batch: &mut Batch<'_>) -> Result<Self::Output>;

    /// Its audit entry, given what it did; `None`: not audited (agents' own writes).
    fn audit(&self, _output: &Self::Output) -> Option<Audit> {
        None
    }
}

/// A committed write's result and its index: the index of the last change it made, or,
/// when it changed nothing, of the state it read.
#[derive(Debug, Clone)]
pub struct Written<T> {
    /// What the op returned.
    pub value: T,
    /// Its change index (for `X-Hub-Index`).
    pub index: u64,
}

/// Who asked for a write and from where, for the audit log. The entry is written in the
/// write's own transaction: an acknowledged write always has its entry, and auditing costs
/// no round trip of its own (it was a quarter of the create rate as a separate insert).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The principal, as the audit log names it (`admin`, `token:<id>`, ...).
    pub actor: String,
    /// The peer address.
    pub source: String,
}

/// The writes of one transaction, and the changes they made so far.
pub struct Batch<'a> {
    /// The transaction.
    pub tx: &'a mut dyn WriteTx,
    changes: Vec<Change>,
    audit: Vec<NewAuditEntry>,
    /// The time every write of the batch is stamped with.
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
        let prev_labels = old
            .map(|w| &w.metadata.labels)
            .filter(|l| **l != labels)
            .cloned();
        self.push(Change {
            prev_labels,
            status_only,
            has_ttl: Some(new.is_some_and(|w| w.ttl_seconds_after_finished().is_some())),
            ..self.change(ChangeKind::Work, cluster, name, labels)
        });
    }

    /// Records a change to a cluster at `next_index()`.
    pub fn record_cluster(
        &mut self,
        name: &str,
        old: Option<&ManagedCluster>,
        new: Option<&ManagedCluster>,
    ) {
        let labels = new.map(|c| c.metadata.labels.clone()).unwrap_or_default();
        let prev_labels = old
            .map(|c| &c.metadata.labels)
            .filter(|l| **l != labels)
            .cloned();
        self.push(Change {
            prev_labels,
            ..self.change(ChangeKind::Cluster, name, name, labels)
        });
    }

    /// Records a change to a registration at `next_index()`.
    pub fn record_registration(&mut self, cluster: &str, id: &str) {
        let change = self.change(ChangeKind::Registration, cluster, id, Default::default());
        self.push(change);
    }

    /// Records a change to a namespaced fleet object (Placement, its decisions, a
    /// ManifestWorkReplicaSet) at `next_index()`; `status_only` when only the hub's status of
    /// it changed (its controller does not act on its own status writes).
    pub fn record_object(
        &mut self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
        labels: std::collections::BTreeMap<String, String>,
        status_only: bool,
    ) {
        self.push(Change {
            status_only,
            ..self.change(kind.into(), namespace, name, labels)
        });
    }

    /// Adds an audit entry that commits with the batch (an op auditing more than its
    /// [`WriteOp::audit`] says).
    pub fn audit(&mut self, entry: NewAuditEntry) {
        self.audit.push(entry);
    }

    /// A change at `next_index()` with no previous labels, not status-only, nothing known
    /// of a TTL: what the `record_*` methods start from.
    fn change(
        &self,
        kind: ChangeKind,
        cluster: &str,
        name: &str,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Change {
        Change {
            index: self.next,
            kind,
            cluster: cluster.to_string(),
            name: name.to_string(),
            labels,
            prev_labels: None,
            status_only: false,
            has_ttl: None,
        }
    }

    fn push(&mut self, change: Change) {
        self.changes.push(change);
        self.next += 1;
    }

    /// Where the batch stands, to go back to when an op is refused.
    fn mark(&self) -> (usize, usize, u64) {
        (self.changes.len(), self.audit.len(), self.next)
    }

    fn reset(&mut self, (changes, audit, next): (usize, usize, u64)) {
        self.changes.truncate(changes);
        self.audit.truncate(audit);
        self.next = next;
    }
}

/// A queued write with its reply, its type erased so that one queue carries every op.
#[async_trait]
trait Job: Send {
    fn reads(&self) -> Reads;
    /// Runs the op under a savepoint and keeps its result; `Err` only when the batch as a
    /// whole must fail (the database failed).
    async fn run(&mut self, batch: &mut Batch<'_>) -> Result<(), StoreError>;
    /// Answers the caller: its kept result, or `failure` when the batch failed.
    fn answer(self: Box<Self>, failure: Option<Error>);
}

struct Queued<O: WriteOp> {
    op: O,
    by: Option<Caller>,
    result: Option<Result<Written<O::Output>>>,
    reply: oneshot::Sender<Result<Written<O::Output>>>,
}

#[async_trait]
impl<O: WriteOp> Job for Queued<O> {
    fn reads(&self) -> Reads {
        self.op.reads()
    }

    async fn run(&mut self, batch: &mut Batch<'_>) -> Result<(), StoreError> {
        let mark = batch.mark();
        batch.tx.begin_op();
        match self.op.apply(batch).await {
            Ok(value) => {
                if let (Some(by), Some(a)) = (&self.by, self.op.audit(&value)) {
                    batch.audit.push(NewAuditEntry {
                        actor: by.actor.clone(),
                        action: a.action.into(),
                        target: a.target,
                        source: by.source.clone(),
                        details: a.details,
                    });
                }
                batch.tx.end_op().await?;
                let index = batch.next - 1;
                self.result = Some(Ok(Written { value, index }));
            }
            Err(Error::Unavailable(e)) => return Err(e),
            Err(e) => {
                batch.tx.undo_op().await?;
                batch.reset(mark);
                self.result = Some(Err(e));
            }
        }
        Ok(())
    }

    fn answer(self: Box<Self>, failure: Option<Error>) {
        let r = match failure {
            Some(e) => Err(e),
            None => self
                .result
                .unwrap_or_else(|| Err(Error::Internal("the write did not run".into()))),
        };
        let _ = self.reply.send(r);
    }
}

/// The handle through which requests reach the writer task.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Box<dyn Job>>,
    /// Whether the last commit failed: then readiness probes whether writes commit again.
    failing: Arc<AtomicBool>,
}

impl Writer {
    /// Starts the writer: on a thread and a runtime of its own when the store
    /// [asks for it](Store::writer_apart), else as a task of the caller's runtime.
    ///
    /// The writer's cycle is a few round trips to the database, and under load each reply
    /// could wait its turn behind the request tasks that the shared runtime's workers were
    /// polling. On its own thread the kernel wakes the writer as its reply lands: a median
    /// 6 % more creates per second on Postgres on a busy 2-core machine (docs/benchmarks.md).
    /// Either way it ends when every handle is dropped.
    pub fn start(store: Arc<dyn Store>, feed: Arc<ChangeFeed>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(4096);
        let failing = Arc::new(AtomicBool::new(false));
        // Both series exist from the start, so a dashboard shows 0 rather than nothing.
        for kind in ["unreachable", "failed"] {
            metrics::counter!("hub_write_errors_total", "kind" => kind).increment(0);
        }
        let apart = store.writer_apart();
        let writing = run(store, feed, rx, failing.clone());
        if apart {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            std::thread::Builder::new()
                .name("hub-writer".into())
                .spawn(move || runtime.block_on(writing))?;
        } else {
            tokio::spawn(writing);
        }
        Ok(Writer { tx, failing })
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
    pub async fn write<O: WriteOp>(&self, op: O) -> Result<Written<O::Output>> {
        self.write_by(op, None).await
    }

    /// Queues a write whose audit entry (when `by` is given) commits with it.
    pub async fn write_by<O: WriteOp>(
        &self,
        op: O,
        by: Option<Caller>,
    ) -> Result<Written<O::Output>> {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Queued {
            op,
            by,
            result: None,
            reply,
        });
        self.tx
            .send(job)
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
    mut rx: mpsc::Receiver<Box<dyn Job>>,
    failing: Arc<AtomicBool>,
) {
    let mut queue = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut queue, MAX_BATCH).await > 0 {
        let mut jobs: Vec<Box<dyn Job>> = std::mem::take(&mut queue);
        metrics::histogram!("hub_write_batch_size").record(jobs.len() as f64);
        let result = commit(&*store, &feed, &mut jobs).await;
        failing.store(result.is_err(), Ordering::Relaxed);
        if let Err(e) = &result {
            count_error(e);
        }
        match result {
            Ok(()) => jobs.into_iter().for_each(|j| j.answer(None)),
            Err(StoreError::CommitUnknown(e)) => {
                // The commit may have happened: retrying could apply a write twice, and
                // answering success could acknowledge one that a failover lost. Every
                // write of the batch is answered 503 and its caller decides (a read
                // shows whether it landed).
                tracing::error!(error = %e, writes = jobs.len(), "commit outcome unknown; batch answered unavailable");
                for j in jobs {
                    let copy = StoreError::CommitUnknown(Box::new(e.unreachable_copy()));
                    j.answer(Some(Error::Unavailable(copy)));
                }
            }
            Err(e) if e.is_unreachable() => {
                // Without a database every write fails alike. Retrying them one by one (below)
                // would make each wait out the pool's acquire timeout in turn, so that the
                // last caller of a batch of N heard back only after N times that (a Postgres
                // restart under load had writes answered after 20 s); answer them all now.
                tracing::error!(error = %e, writes = jobs.len(), "database unreachable; batch failed");
                for j in jobs {
                    j.answer(Some(e.unreachable_copy().into()));
                }
            }
            Err(e) if jobs.len() > 1 => {
                // One write may have tripped the database; retry each alone so the others
                // still land and only the culprit fails.
                tracing::warn!(error = %e, writes = jobs.len(), "batch failed; retrying writes one by one");
                for job in jobs {
                    let mut one = vec![job];
                    let result = commit(&*store, &feed, &mut one).await;
                    failing.store(result.is_err(), Ordering::Relaxed);
                    // An unknown outcome here too is a 503 (`From` maps it so).
                    let failure = result.err().map(Error::from);
                    if let Some(j) = one.pop() {
                        j.answer(failure);
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "write failed");
                if let Some(j) = jobs.pop() {
                    j.answer(Some(e.into()));
                }
            }
        }
    }
}

/// Counts a failed commit for `hub_write_errors_total{kind}`: `unreachable` (no database)
/// or `failed` (the database refused the batch).
fn count_error(e: &StoreError) {
    let kind = if e.is_unreachable() {
        "unreachable"
    } else {
        "failed"
    };
    metrics::counter!("hub_write_errors_total", "kind" => kind).increment(1);
}

/// Runs the jobs in one transaction and publishes their changes. Each job keeps its result;
/// they count only when the commit succeeded.
async fn commit(
    store: &dyn Store,
    feed: &ChangeFeed,
    jobs: &mut [Box<dyn Job>],
) -> Result<(), StoreError> {
    // The works and the clusters the batch touches are read as it begins, instead of a
    // round trip per op.
    let (mut works, mut clusters) = (Vec::new(), Vec::new());
    for j in jobs.iter() {
        let r = j.reads();
        works.extend(r.works);
        clusters.extend(r.clusters);
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
    for j in jobs.iter_mut() {
        j.run(&mut batch).await?;
    }
    let changes = std::mem::take(&mut batch.changes);
    let audit = std::mem::take(&mut batch.audit);
    // An error of COMMIT itself is `CommitUnknown`: the server may have committed. One
    // before it (a row the database refused) failed the batch and nothing of it committed,
    // so its writes are retried one by one like any other failed batch's.
    tx.commit(&changes, &audit).await?;
    // The writes are durable now: a failure to publish must not fail (and so repeat) them.
    // The feed's poll catches up on its own.
    if let Err(e) = feed.publish_local(store, changes).await {
        tracing::warn!(error = %e, "could not publish committed changes; the feed will catch up");
    }
    Ok(())
}
