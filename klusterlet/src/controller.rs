//! The work loop: follow this cluster's works with blocking queries, make the managed
//! cluster match them, report status, clean up.
//!
//! * A follower keeps the latest view of the works (`GET .../manifestworks?index=N&wait=`)
//!   and queues every work whose generation or deletion changed; it resumes from its last
//!   index after a hub restart or a network cut, with backoff and jitter.
//! * A resync queues each `--resync` the works whose objects moved (drift: hand edits are
//!   re-applied), and watchers on the workloads the works applied queue their work when
//!   the object changes, so a Deployment turning available is reported at once.
//! * Workers (`--concurrency` at a time) reconcile one work each: apply, record in the
//!   ledger, delete what a work no longer names, and push status when it changed. A work is
//!   never reconciled twice at once; a request while it runs re-runs it after.
//! * A deleting work is cleaned up per its `deleteOption`, then its finalizer is removed.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::{
    CLEANUP_FINALIZER, DeleteOption, ListOptions, ManifestWork, ManifestWorkStatus,
    PropagationPolicy, ResourceIdentifier, UpdateStrategyType,
};
use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::watcher;
use tokio::sync::{Mutex, Notify, RwLock, watch};

use crate::agent::Session;
use crate::apply::{Applier, DeleteOutcome, ManifestOutcome, ResourceRef};
use crate::backoff::Backoff;
use crate::ledger::{Entry, Ledger, Record};
use crate::status;

/// Timings and limits of the work loop.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// How often to look for drift and re-apply the works whose objects moved.
    pub resync: Duration,
    /// A manifest failing longer than this makes its work Degraded.
    pub degraded_after: Duration,
    /// Works reconciled at once.
    pub concurrency: usize,
    /// How long one blocking query waits on the hub.
    pub wait: Duration,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            resync: Duration::from_secs(60),
            degraded_after: Duration::from_secs(60),
            concurrency: 8,
            wait: Duration::from_secs(60),
        }
    }
}

/// Kinds whose status the klusterlet watches, so readiness is reported without polling.
const WATCHED: &[(&str, &str, &str, &str)] = &[
    ("apps", "v1", "Deployment", "deployments"),
    ("apps", "v1", "StatefulSet", "statefulsets"),
    ("apps", "v1", "DaemonSet", "daemonsets"),
    ("batch", "v1", "Job", "jobs"),
    ("", "v1", "Pod", "pods"),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
];

/// (group, kind, namespace, name) of an applied object → the works that applied it.
type Owners = HashMap<(String, String, String, String), HashSet<String>>;

/// What the controller remembers of a work between reconciles.
#[derive(Default)]
struct WorkMemory {
    /// The status last accepted by the hub.
    pushed: Option<ManifestWorkStatus>,
    /// Since when some manifest keeps failing.
    failing_since: Option<Instant>,
    /// When a retry is due, after a retryable failure.
    retry: Option<Backoff>,
    /// What the last clean apply left on the cluster, to skip the next resync's apply
    /// when none of it moved.
    applied: Option<Applied>,
}

/// A work's generation and the `resourceVersion` of each object its last apply returned,
/// kept only when every manifest applied and nothing was left to delete.
#[derive(Clone)]
struct Applied {
    generation: i64,
    versions: Vec<(ResourceRef, String)>,
}

/// The queue of works to reconcile, with at most one run per work at a time.
#[derive(Default)]
struct Queue {
    queued: VecDeque<String>,
    pending: HashSet<String>,
    running: HashSet<String>,
    dirty: HashSet<String>,
}

struct Shared {
    session: Arc<Session>,
    applier: Arc<Applier>,
    ledger: Ledger,
    options: ControllerOptions,
    /// The latest view of the works, from the follower.
    works: RwLock<BTreeMap<String, ManifestWork>>,
    /// The ledger, cached (the ConfigMaps are the durable copy).
    records: RwLock<BTreeMap<String, Record>>,
    memory: Mutex<HashMap<String, WorkMemory>>,
    queue: std::sync::Mutex<Queue>,
    wake: Notify,
    /// Which work each watched object belongs to.
    owners: std::sync::RwLock<Owners>,
    /// Turns true once the follower has a complete list of the works from the hub.
    /// Until then no work is reconciled: a work missing from an empty view is not a work
    /// the hub deleted, and reconciling it as one deleted running workloads on restart.
    synced: watch::Sender<bool>,
}

/// Follows and reconciles this cluster's works.
pub struct WorkController {
    shared: Arc<Shared>,
    kube: kube::Client,
}

impl WorkController {
    /// A controller for the session's cluster.
    pub fn new(
        session: Arc<Session>,
        kube: kube::Client,
        applier: Arc<Applier>,
        ledger: Ledger,
        options: ControllerOptions,
    ) -> Self {
        let shared = Shared {
            session,
            applier,
            ledger,
            options,
            works: RwLock::new(BTreeMap::new()),
            records: RwLock::new(BTreeMap::new()),
            memory: Mutex::new(HashMap::new()),
            queue: std::sync::Mutex::new(Queue::default()),
            wake: Notify::new(),
            owners: std::sync::RwLock::new(HashMap::new()),
            synced: watch::Sender::new(false),
        };
        WorkController {
            shared: Arc::new(shared),
            kube,
        }
    }

    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let WorkController { shared, kube } = self;
        // The ledger first: it says what to clean up for works that vanished meanwhile.
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        loop {
            match shared.ledger.load_all().await {
                Ok(records) => {
                    *shared.records.write().await = records;
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "reading the ledger failed; retrying"),
            }
            if sleep_or_stop(backoff.next_delay(), &mut stop).await {
                return;
            }
        }
        shared.index_owners().await;
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(follow(shared.clone(), stop.clone()));
        tasks.spawn(resync(shared.clone(), kube.clone(), stop.clone()));
        for (group, version, kind, plural) in WATCHED {
            let gvk = GroupVersionKind::gvk(group, version, kind);
            tasks.spawn(watch_kind(
                shared.clone(),
                kube.clone(),
                ApiResource::from_gvk_with_plural(&gvk, plural),
                stop.clone(),
            ));
        }
        for _ in 0..shared.options.concurrency.max(1) {
            tasks.spawn(worker(shared.clone(), stop.clone()));
        }
        let _ = stop.changed().await;
        shared.wake.notify_waiters();
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        tasks.abort_all();
    }
}

async fn sleep_or_stop(delay: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = stop.changed() => true,
    }
}

impl Shared {
    fn enqueue(&self, work: &str) {
        let mut q = self.queue.lock().expect("queue lock");
        if q.running.contains(work) {
            q.dirty.insert(work.to_string());
        } else if q.pending.insert(work.to_string()) {
            q.queued.push_back(work.to_string());
        }
        drop(q);
        self.wake.notify_one();
    }

    fn take(&self) -> Option<String> {
        let mut q = self.queue.lock().expect("queue lock");
        let name = q.queued.pop_front()?;
        q.pending.remove(&name);
        q.running.insert(name.clone());
        let more = !q.queued.is_empty();
        drop(q);
        if more {
            // A burst of enqueues leaves at most one stored wake-up: pass it on.
            self.wake.notify_one();
        }
        Some(name)
    }

    fn done(&self, work: &str) {
        let mut q = self.queue.lock().expect("queue lock");
        q.running.remove(work);
        let again = q.dirty.remove(work);
        drop(q);
        if again {
            self.enqueue(work);
        }
    }

    /// Rebuilds which work owns each watched object, from the ledger.
    async fn index_owners(&self) {
        let records = self.records.read().await;
        let mut owners = Owners::new();
        for (work, record) in records.iter() {
            for e in &record.entries {
                let r = &e.reference;
                owners
                    .entry((
                        r.group.clone(),
                        r.kind.clone(),
                        r.namespace.clone(),
                        r.name.clone(),
                    ))
                    .or_default()
                    .insert(work.clone());
            }
        }
        *self.owners.write().expect("owners lock") = owners;
    }

    async fn hub(&self) -> Result<api::HubClient, crate::Error> {
        Ok(self.session.authorized().await?.client)
    }
}

/// Follows the works with blocking queries and queues what changed.
async fn follow(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let cluster = shared.session.cluster().to_string();
    let mut index = 0u64;
    let mut first = true;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        if *stop.borrow() {
            return;
        }
        let opts = ListOptions {
            index: (index > 0).then_some(index),
            wait: Some(shared.options.wait),
            ..Default::default()
        };
        let result = tokio::select! {
            r = list_every_work(&shared, &cluster, opts) => r,
            _ = stop.changed() => return,
        };
        match result {
            Ok((listed_index, items)) => {
                backoff.reset();
                index = listed_index;
                let fresh: BTreeMap<String, ManifestWork> = items
                    .into_iter()
                    .map(|w| (w.metadata.name.clone(), w))
                    .collect();
                let mut works = shared.works.write().await;
                let mut changed: Vec<String> = Vec::new();
                for (name, w) in &fresh {
                    let before = works.get(name);
                    let moved = before.is_none_or(|b| {
                        b.metadata.generation != w.metadata.generation
                            || b.metadata.deletion_timestamp != w.metadata.deletion_timestamp
                    });
                    if moved || first {
                        changed.push(name.clone());
                    }
                }
                // Works gone from the hub without our finalizer (created before this agent
                // joined, or force-removed): clean up what the ledger holds for them.
                let records = shared.records.read().await;
                let vanished: Vec<String> = records
                    .keys()
                    .filter(|n| !fresh.contains_key(*n))
                    .cloned()
                    .collect();
                drop(records);
                *works = fresh;
                drop(works);
                first = false;
                for name in changed.into_iter().chain(vanished) {
                    shared.enqueue(&name);
                }
                shared.synced.send_replace(true);
            }
            Err(e) => {
                if let crate::Error::Hub(h) = &e
                    && h.status() == Some(reqwest::StatusCode::UNAUTHORIZED)
                    && let Ok(a) = shared.session.authorized().await
                {
                    shared.session.invalidate(a.generation).await;
                }
                tracing::warn!(error = %crate::Chain(&e), "following the works failed; retrying");
                if sleep_or_stop(backoff.next_delay(), &mut stop).await {
                    return;
                }
            }
        }
    }
}

/// Every work of the cluster, following `continue` pages, with the index of the first
/// page: only a complete list may tell that a work is gone.
async fn list_every_work(
    shared: &Shared,
    cluster: &str,
    mut opts: ListOptions,
) -> Result<(u64, Vec<ManifestWork>), crate::Error> {
    let hub = shared.hub().await?;
    let mut index = None;
    let mut items = Vec::new();
    loop {
        let page = hub
            .list_works(Some(cluster), &opts)
            .await
            .map_err(|e| crate::Error::Hub(Box::new(e)))?;
        index.get_or_insert(page.value.metadata.index.max(page.index));
        items.extend(page.value.items);
        match page.value.metadata.continue_.filter(|c| !c.is_empty()) {
            // Later pages are not blocking queries.
            Some(token) => {
                opts = ListOptions {
                    continue_: Some(token),
                    ..Default::default()
                }
            }
            None => return Ok((index.unwrap_or_default(), items)),
        }
    }
}

/// Queues, each resync period, every work whose objects may have drifted.
///
/// Re-applying every object of every work each period was most of an idle agent's CPU
/// (100 server-side applies a minute for 100 works). Instead one metadata-only list per
/// resource and namespace tells which objects moved since their work's last clean apply:
/// a hand edit, a deletion or a controller's status write changes the `resourceVersion`.
/// Only works with such an object (or without a clean apply on record) are re-applied.
async fn resync(shared: Arc<Shared>, kube: kube::Client, mut stop: watch::Receiver<bool>) {
    loop {
        if sleep_or_stop(shared.options.resync, &mut stop).await {
            return;
        }
        // (name, generation) of every work; a deleting one has no generation to match,
        // so it is always queued (its cleanup may be waiting).
        let works: Vec<(String, Option<i64>)> = shared
            .works
            .read()
            .await
            .iter()
            .map(|(n, w)| {
                let deleting = w.metadata.deletion_timestamp.is_some();
                (n.clone(), w.metadata.generation.filter(|_| !deleting))
            })
            .collect();
        let applied: HashMap<String, Applied> = {
            let memory = shared.memory.lock().await;
            works
                .iter()
                .filter_map(|(n, generation)| {
                    let a = memory.get(n)?.applied.as_ref()?;
                    (Some(a.generation) == *generation).then(|| (n.clone(), a.clone()))
                })
                .collect()
        };
        let live = live_versions(&kube, applied.values()).await;
        let mut skipped = 0usize;
        for (n, _) in works {
            let unmoved = applied.get(&n).is_some_and(|a| {
                a.versions.iter().all(|(r, v)| {
                    live.get(&object_key(r))
                        .is_some_and(|l| l.as_deref() == Some(v.as_str()))
                })
            });
            if unmoved {
                skipped += 1;
            } else {
                shared.enqueue(&n);
            }
        }
        tracing::debug!(skipped, "resync: works whose objects did not move");
    }
}

/// (group, resource, namespace, name) of an object.
type ObjectKey = (String, String, String, String);

fn object_key(r: &ResourceRef) -> ObjectKey {
    (
        r.group.clone(),
        r.resource.clone(),
        r.namespace.clone(),
        r.name.clone(),
    )
}

/// The live `resourceVersion` of the objects these works applied, by one metadata-only
/// list per resource and namespace: `Some(version)`, or `None` where the object is gone.
/// Objects of a list that failed are left out, so their works are re-applied.
async fn live_versions<'a>(
    kube: &kube::Client,
    applied: impl Iterator<Item = &'a Applied>,
) -> HashMap<ObjectKey, Option<String>> {
    let mut groups: HashMap<(String, String, String), (ResourceRef, Vec<ObjectKey>)> =
        HashMap::new();
    for (r, _) in applied.flat_map(|a| a.versions.iter()) {
        groups
            .entry((r.group.clone(), r.resource.clone(), r.namespace.clone()))
            .or_insert_with(|| (r.clone(), Vec::new()))
            .1
            .push(object_key(r));
    }
    let mut live = HashMap::new();
    for (r, keys) in groups.into_values() {
        let api = r.api(kube.clone());
        let mut found: HashMap<String, String> = HashMap::new();
        let mut params = kube::api::ListParams::default().limit(500);
        let listed: Result<(), kube::Error> = async {
            loop {
                let page = api.list_metadata(&params).await?;
                for o in page.items {
                    if let (Some(n), Some(v)) = (o.metadata.name, o.metadata.resource_version) {
                        found.insert(n, v);
                    }
                }
                match page.metadata.continue_.filter(|c| !c.is_empty()) {
                    Some(token) => params = params.continue_token(&token),
                    None => return Ok(()),
                }
            }
        }
        .await;
        if let Err(e) = listed {
            tracing::debug!(resource = %r.resource, namespace = %r.namespace, error = %e, "resync list failed; re-applying its works");
            continue;
        }
        for key in keys {
            let version = found.get(&key.3).cloned();
            live.insert(key, version);
        }
    }
    live
}

/// Watches one workload kind cluster-wide and queues the works that own a changed object.
async fn watch_kind(
    shared: Arc<Shared>,
    kube: kube::Client,
    ar: ApiResource,
    mut stop: watch::Receiver<bool>,
) {
    let api: kube::Api<DynamicObject> = kube::Api::all_with(kube, &ar);
    let mut events = watcher(api, watcher::Config::default()).boxed();
    let mut warned_forbidden = false;
    loop {
        let ev = tokio::select! {
            ev = events.next() => ev,
            _ = stop.changed() => return,
        };
        let obj = match ev {
            Some(Ok(watcher::Event::Apply(o)))
            | Some(Ok(watcher::Event::Delete(o)))
            | Some(Ok(watcher::Event::InitApply(o))) => o,
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                // The watcher backs off and resumes by itself; the resync covers the gap.
                // An agent without the right to watch this kind cluster-wide (least
                // privilege) asks again much later, and says so once.
                let (forbidden, error) = match e {
                    watcher::Error::InitialListFailed(k)
                    | watcher::Error::WatchStartFailed(k)
                    | watcher::Error::WatchFailed(k) => {
                        let k = crate::KubeError::new("watch", ar.plural.clone(), k);
                        (k.code() == Some(403), k.to_string())
                    }
                    watcher::Error::WatchError(status) => (
                        status.code == 403,
                        format!("watch {}: {} ({})", ar.plural, status.message, status.code),
                    ),
                    other => (false, other.to_string()),
                };
                let delay = if forbidden {
                    if !warned_forbidden {
                        warned_forbidden = true;
                        tracing::info!(kind = %ar.kind, %error, "not watching this kind cluster-wide; its readiness is reported at each resync");
                    }
                    Duration::from_secs(60)
                } else {
                    tracing::debug!(kind = %ar.kind, %error, "watch error");
                    Duration::from_secs(1)
                };
                if sleep_or_stop(delay, &mut stop).await {
                    return;
                }
                continue;
            }
            None => return,
        };
        let key = (
            ar.group.clone(),
            ar.kind.clone(),
            obj.metadata.namespace.clone().unwrap_or_default(),
            obj.metadata.name.clone().unwrap_or_default(),
        );
        let owners: Vec<String> = shared
            .owners
            .read()
            .expect("owners lock")
            .get(&key)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for w in owners {
            shared.enqueue(&w);
        }
    }
}

async fn worker(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    // Nothing is reconciled before the hub has been heard from: watchers and the ledger
    // queue works meanwhile, and they wait in the queue.
    let mut synced = shared.synced.subscribe();
    tokio::select! {
        r = synced.wait_for(|s| *s) => if r.is_err() { return },
        _ = stop.wait_for(|s| *s) => return,
    }
    loop {
        if *stop.borrow() {
            return;
        }
        let Some(name) = shared.take() else {
            // No timer here: an idle agent's workers must not wake up for nothing. A
            // notification sent before this wait stays stored in the `Notify`, and stopping
            // wakes every waiter.
            let notified = shared.wake.notified();
            tokio::select! {
                _ = notified => {},
                changed = stop.changed() => if changed.is_err() { return },
            }
            continue;
        };
        let retry = reconcile(&shared, &name).await;
        tracing::debug!(work = %name, ?retry, "reconciled");
        shared.done(&name);
        if let Some(delay) = retry {
            let shared = shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                shared.enqueue(&name);
            });
        }
    }
}

/// Reconciles one work; returns when to try again, if something is still pending.
async fn reconcile(shared: &Shared, name: &str) -> Option<Duration> {
    let work = shared.works.read().await.get(name).cloned();
    let deleting = work
        .as_ref()
        .is_none_or(|w| w.metadata.deletion_timestamp.is_some());
    let result = match work {
        Some(w) if w.metadata.deletion_timestamp.is_some() => clean_up(shared, &w).await,
        Some(w) => apply(shared, &w).await,
        None => forget_vanished(shared, name).await,
    };
    let mut memory = shared.memory.lock().await;
    let m = memory.entry(name.to_string()).or_default();
    match result {
        Ok(false) => {
            m.retry = None;
            None
        }
        // Objects on their way out are not a failure: back off to 5 s at most, not 30 s,
        // so the finalizer goes soon after the garbage collector is done (which, at
        // kube-controller-manager's default 20 requests/s, takes ~15 s for 300 objects).
        Ok(true) if deleting => Some(
            m.retry
                .get_or_insert_with(|| {
                    Backoff::new(Duration::from_millis(500), Duration::from_secs(5))
                })
                .next_delay(),
        ),
        Ok(true) => Some(
            m.retry
                .get_or_insert_with(|| {
                    Backoff::new(Duration::from_millis(500), Duration::from_secs(30))
                })
                .next_delay(),
        ),
        Err(e) => {
            tracing::warn!(work = name, error = %crate::Chain(&e), "reconcile failed; retrying");
            Some(
                m.retry
                    .get_or_insert_with(|| {
                        Backoff::new(Duration::from_millis(500), Duration::from_secs(30))
                    })
                    .next_delay(),
            )
        }
    }
}

fn identifies(id: &ResourceIdentifier, r: &ResourceRef) -> bool {
    id.group == r.group
        && id.resource == r.resource
        && id.name == r.name
        && id.namespace == r.namespace
}

/// Whether the work observes this manifest only (ReadOnly): never recorded, never deleted.
fn read_only(work: &ManifestWork, r: &ResourceRef) -> bool {
    crate::apply::manifest_config(work, r)
        .update_strategy
        .is_some_and(|s| s.type_ == UpdateStrategyType::ReadOnly)
}

/// Applies a work, records what it applied, deletes what it no longer names, pushes status.
/// Returns whether something is still pending (a retryable failure, or not ready yet is not
/// pending: watchers report readiness).
async fn apply(shared: &Shared, work: &ManifestWork) -> Result<bool, crate::Error> {
    let name = work.metadata.name.clone();
    let outcomes = shared.applier.apply_work(work).await;
    let previous = shared
        .records
        .read()
        .await
        .get(&name)
        .cloned()
        .unwrap_or_default();

    // The ledger after this apply: what applied now, plus what failed now but was applied
    // before (a transient failure must not make us forget, or later delete, an object).
    let mut entries: Vec<Entry> = Vec::new();
    for o in &outcomes {
        match (&o.reference, &o.result) {
            (Some(r), Ok(obj)) if !read_only(work, r) => {
                if let Some(uid) = obj.metadata.uid.clone() {
                    entries.push(Entry {
                        reference: r.clone(),
                        uid,
                    });
                }
            }
            (Some(r), Err(_)) => entries.extend(
                previous
                    .entries
                    .iter()
                    .filter(|e| e.reference == *r)
                    .cloned(),
            ),
            _ => {}
        }
    }
    // Everything the previous apply recorded that this work no longer names goes.
    let named: HashSet<ObjectKey> = outcomes
        .iter()
        .filter_map(|o| o.reference.as_ref())
        .map(object_key)
        .collect();
    let unresolved = outcomes.iter().any(|o| o.reference.is_none());
    let mut still_deleting = false;
    for e in &previous.entries {
        let r = &e.reference;
        if named.contains(&object_key(r)) || entries.contains(e) {
            continue;
        }
        if unresolved {
            // A manifest whose kind is unknown right now might be this one: keep it.
            entries.push(e.clone());
            continue;
        }
        tracing::info!(work = %name, kind = %r.kind, namespace = %r.namespace, object = %r.name, uid = %e.uid, reason = "the work no longer names it", "deleting");
        match shared.applier.delete(r, &e.uid).await {
            Ok(DeleteOutcome::Gone) | Ok(DeleteOutcome::NotOurs) => {}
            Ok(DeleteOutcome::Deleting) => still_deleting = true,
            Err(err) => {
                tracing::warn!(work = %name, kind = %r.kind, object = %r.name, reason = %err.reason, "deleting a dropped manifest failed; will retry");
                entries.push(e.clone());
            }
        }
    }
    let record = Record {
        entries,
        delete_option: work.spec.delete_option.clone(),
    };
    if record != previous {
        shared.ledger.save(&name, &record).await?;
        shared.records.write().await.insert(name.clone(), record);
        shared.index_owners().await;
    }

    let retryable_failure = outcomes
        .iter()
        .any(|o| o.result.as_ref().is_err_and(|e| e.retryable));
    push_status(shared, work, &outcomes).await?;
    // Only a clean apply may let the next resync skip this work.
    let clean = !still_deleting && !unresolved && outcomes.iter().all(|o| o.result.is_ok());
    let applied = clean
        .then(|| {
            let versions = outcomes
                .iter()
                .map(|o| {
                    let r = o.reference.clone()?;
                    let v = o.result.as_ref().ok()?.metadata.resource_version.clone()?;
                    Some((r, v))
                })
                .collect::<Option<Vec<_>>>()?;
            Some(Applied {
                generation: work.metadata.generation?,
                versions,
            })
        })
        .flatten();
    shared.memory.lock().await.entry(name).or_default().applied = applied;
    Ok(retryable_failure || still_deleting)
}

/// Computes the status of an applied work and pushes it when it changed.
async fn push_status(
    shared: &Shared,
    work: &ManifestWork,
    outcomes: &[ManifestOutcome],
) -> Result<(), crate::Error> {
    let name = work.metadata.name.clone();
    let generation = work.metadata.generation.unwrap_or_default();
    let now = chrono::Utc::now();
    // What the hub holds is what this agent last pushed (only the agent writes status);
    // the follower's copy of the work is older, because an agent's own status writes do
    // not wake its follower. Carrying `lastTransitionTime` over from that stale copy reset
    // it on every resync and pushed an unchanged status each time (half of an idle agent's
    // CPU with 100 works).
    let pushed = shared
        .memory
        .lock()
        .await
        .get(&name)
        .and_then(|m| m.pushed.clone());
    let prev_status = pushed.as_ref().unwrap_or(&work.status);
    let prev_manifests = prev_status
        .resource_status
        .as_ref()
        .map(|r| r.manifests.as_slice())
        .unwrap_or_default();
    let manifests: Vec<api::ManifestCondition> = outcomes
        .iter()
        .map(|o| {
            status::manifest_condition(
                o,
                work,
                prev_manifests
                    .iter()
                    .find(|m| m.resource_meta.ordinal == o.ordinal),
                now,
            )
        })
        .collect();
    let failures: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().err().map(|e| (o, e)))
        .map(|(o, e)| {
            let what = o
                .reference
                .as_ref()
                .map(|r| format!("{} {}/{}", r.kind, r.namespace, r.name))
                .unwrap_or_else(|| format!("manifest {}", o.ordinal));
            format!("{what}: {}: {}", e.reason, e.message)
        })
        .collect();
    let hard_failure = outcomes
        .iter()
        .any(|o| o.result.as_ref().is_err_and(|e| !e.retryable));
    let degraded = {
        let mut memory = shared.memory.lock().await;
        let m = memory.entry(name.clone()).or_default();
        if failures.is_empty() {
            m.failing_since = None;
        } else if m.failing_since.is_none() {
            m.failing_since = Some(Instant::now());
        }
        let too_long = m
            .failing_since
            .is_some_and(|t| t.elapsed() > shared.options.degraded_after);
        (hard_failure || too_long).then(|| failures.join("; "))
    };
    let conditions = status::work_conditions(
        &manifests,
        generation,
        &prev_status.conditions,
        degraded,
        now,
    );
    let status = ManifestWorkStatus {
        conditions,
        resource_status: Some(api::ManifestResourceStatus { manifests }),
        extra: prev_status.extra.clone(),
    };
    {
        let memory = shared.memory.lock().await;
        let already = memory
            .get(&name)
            .and_then(|m| m.pushed.as_ref())
            .is_some_and(|p| *p == status)
            || *prev_status == status;
        if already {
            return Ok(());
        }
    }
    let hub = shared.hub().await?;
    match hub
        .put_work_status(shared.session.cluster(), &name, &status)
        .await
    {
        Ok(_) => {
            shared.memory.lock().await.entry(name).or_default().pushed = Some(status);
            Ok(())
        }
        // The work went away meanwhile: the follower will tell.
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(crate::Error::Hub(Box::new(e))),
    }
}

/// Whether a deletion of the work leaves this resource on the cluster.
fn orphaned(option: Option<&DeleteOption>, r: &ResourceRef) -> bool {
    match option.map(|o| o.propagation_policy).unwrap_or_default() {
        PropagationPolicy::Foreground => false,
        PropagationPolicy::Orphan => true,
        PropagationPolicy::SelectivelyOrphan => option
            .and_then(|o| o.selectively_orphans.as_ref())
            .is_some_and(|s| s.orphaning_rules.iter().any(|id| identifies(id, r))),
    }
}

/// Deletes what the ledger holds for a work per its delete option; returns whether some
/// object is still on its way out.
async fn delete_recorded(
    shared: &Shared,
    name: &str,
    option: Option<&DeleteOption>,
    reason: &str,
) -> Result<bool, crate::Error> {
    let record = shared
        .records
        .read()
        .await
        .get(name)
        .cloned()
        .unwrap_or_default();
    let mut left = Vec::new();
    for e in &record.entries {
        if orphaned(option, &e.reference) {
            tracing::info!(work = name, kind = %e.reference.kind, namespace = %e.reference.namespace, object = %e.reference.name, reason, "leaving the object on the cluster (orphaned by the delete option)");
            continue;
        }
        tracing::info!(work = name, kind = %e.reference.kind, namespace = %e.reference.namespace, object = %e.reference.name, uid = %e.uid, reason, "deleting");
        match shared.applier.delete(&e.reference, &e.uid).await {
            Ok(DeleteOutcome::Gone) | Ok(DeleteOutcome::NotOurs) => {}
            Ok(DeleteOutcome::Deleting) => left.push(e.clone()),
            Err(err) => {
                tracing::warn!(work = name, kind = %e.reference.kind, object = %e.reference.name, reason = %err.reason, "deleting failed; will retry");
                left.push(e.clone());
            }
        }
    }
    if left.is_empty() {
        shared.ledger.remove(name).await?;
        shared.records.write().await.remove(name);
    } else {
        let record = Record {
            entries: left,
            delete_option: record.delete_option.clone(),
        };
        shared.ledger.save(name, &record).await?;
        shared
            .records
            .write()
            .await
            .insert(name.to_string(), record);
    }
    shared.index_owners().await;
    Ok(shared.records.read().await.contains_key(name))
}

/// Cleans up a deleting work, then removes the agent's finalizer.
async fn clean_up(shared: &Shared, work: &ManifestWork) -> Result<bool, crate::Error> {
    let name = &work.metadata.name;
    if delete_recorded(
        shared,
        name,
        work.spec.delete_option.as_ref(),
        "the work is being deleted on the hub",
    )
    .await?
    {
        return Ok(true);
    }
    if work
        .metadata
        .finalizers
        .iter()
        .any(|f| f == CLEANUP_FINALIZER)
    {
        let hub = shared.hub().await?;
        match hub
            .remove_work_finalizer(shared.session.cluster(), name, CLEANUP_FINALIZER)
            .await
        {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(crate::Error::Hub(Box::new(e))),
        }
    }
    shared.memory.lock().await.remove(name);
    Ok(false)
}

/// A work missing from the latest list of the works (gone from the hub without our
/// finalizer: created before this agent joined, or force-removed): its resources go too,
/// per the delete option it last had, but only once a fresh read from the hub answers
/// that the work does not exist. Anything else (the work is there after all, the hub
/// cannot be reached) deletes nothing.
async fn forget_vanished(shared: &Shared, name: &str) -> Result<bool, crate::Error> {
    let Some(option) = shared
        .records
        .read()
        .await
        .get(name)
        .map(|r| r.delete_option.clone())
    else {
        // Nothing recorded: nothing of ours to remove.
        shared.memory.lock().await.remove(name);
        return Ok(false);
    };
    let hub = shared.hub().await?;
    match hub
        .get_work(shared.session.cluster(), name, &ListOptions::default())
        .await
    {
        Ok(found) => {
            tracing::info!(
                work = name,
                "the work is missing from the last list but still on the hub; reconciling it, deleting nothing"
            );
            shared
                .works
                .write()
                .await
                .entry(name.to_string())
                .or_insert(found.value);
            // Runs again once this run is done, now with the work in view.
            shared.enqueue(name);
            return Ok(false);
        }
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(crate::Error::Hub(Box::new(e))),
    }
    let pending = delete_recorded(
        shared,
        name,
        option.as_ref(),
        "the work no longer exists on the hub",
    )
    .await?;
    if !pending {
        shared.memory.lock().await.remove(name);
    }
    Ok(pending)
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::SelectivelyOrphan;

    fn r(name: &str) -> ResourceRef {
        ResourceRef {
            group: "apps".into(),
            version: "v1".into(),
            kind: "Deployment".into(),
            resource: "deployments".into(),
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    #[test]
    fn delete_options() {
        assert!(!orphaned(None, &r("a")));
        let orphan = DeleteOption {
            propagation_policy: PropagationPolicy::Orphan,
            ..Default::default()
        };
        assert!(orphaned(Some(&orphan), &r("a")));
        let rules = vec![ResourceIdentifier {
            group: "apps".into(),
            resource: "deployments".into(),
            name: "keep".into(),
            namespace: "ns".into(),
        }];
        let selective = DeleteOption {
            propagation_policy: PropagationPolicy::SelectivelyOrphan,
            selectively_orphans: Some(SelectivelyOrphan {
                orphaning_rules: rules,
            }),
            ..Default::default()
        };
        assert!(orphaned(Some(&selective), &r("keep")));
        assert!(!orphaned(Some(&selective), &r("drop")));
    }
}
