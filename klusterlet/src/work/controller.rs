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
//!
//! The queue and its retries live in [`super::runner`]; what one run does lives in
//! [`super::reconcile`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use api::{ListOptions, ManifestWork};
use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::watcher;
use tokio::sync::watch;

use super::ledger::Ledger;
use super::reconcile::{self, Applied, Context, ObjectKey, object_key};
use super::runner::{self, Queue};
use crate::apply::{Applier, ResourceRef};
use crate::hub::session::Session;
use crate::sleep_or_stop;
use crate::telemetry;
use api::retry::Backoff;

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
    /// How long the objects of a work missing from the hub stay when the hub does not say
    /// it deleted the work ([`super::eviction`]).
    pub eviction_grace: Duration,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            resync: Duration::from_secs(60),
            degraded_after: Duration::from_secs(60),
            concurrency: 8,
            wait: Duration::from_secs(60),
            eviction_grace: super::eviction::DEFAULT_GRACE,
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

/// What the controller's tasks share: the reconcile context, the queue, the options and
/// the gate.
struct Shared {
    ctx: Arc<Context>,
    queue: Arc<Queue>,
    options: ControllerOptions,
    /// Turns true once the follower has a complete list of the works from the hub.
    /// Until then no work is reconciled: a work missing from an empty view is not a work
    /// the hub deleted, and reconciling it as one deleted running workloads on restart.
    synced: watch::Sender<bool>,
    /// Turns true once every work of that first list was reconciled once (`/readyz`).
    ready: Arc<AtomicBool>,
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
        let mut ctx = Context::new(session, applier, ledger, options.degraded_after);
        ctx.eviction_grace = options.eviction_grace;
        let shared = Shared {
            ctx: Arc::new(ctx),
            queue: Arc::new(Queue::default()),
            options,
            synced: watch::Sender::new(false),
            ready: Arc::new(AtomicBool::new(false)),
        };
        WorkController {
            shared: Arc::new(shared),
            kube,
        }
    }

    /// True once the first complete list of works was read from the hub and each of its
    /// works reconciled once (applied, or failed and waiting for its retry).
    pub fn readiness(&self) -> Arc<AtomicBool> {
        self.shared.ready.clone()
    }

    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let WorkController { shared, kube } = self;
        let ctx = shared.ctx.clone();
        // The ledger first: it says what to clean up for works that vanished meanwhile.
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        loop {
            match ctx.ledger.load_all().await {
                Ok(records) => {
                    *ctx.records.write().await = records;
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "reading the ledger failed; retrying"),
            }
            if sleep_or_stop(backoff.next_delay(), &mut stop).await {
                return;
            }
        }
        ctx.index_owners().await;
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(follow(shared.clone(), stop.clone()));
        tasks.spawn(first_pass(shared.clone(), stop.clone()));
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
        let reconcile_ctx = ctx.clone();
        tasks.spawn(runner::run(
            shared.queue.clone(),
            shared.options.concurrency,
            shared.synced.subscribe(),
            stop.clone(),
            move |name: String| {
                let ctx = reconcile_ctx.clone();
                async move { reconcile::reconcile(&ctx, &name).await }
            },
            reconcile::error_policy,
            |_: &str, took: Duration, error: Option<&crate::Error>| {
                telemetry::reconciled(took, error.map(crate::Error::kind))
            },
        ));
        let _ = stop.changed().await;
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        tasks.abort_all();
    }
}

/// Opens readiness once the first list's works were all reconciled once: the follower
/// queues them before opening the gate, so an idle queue after the gate means done. Polls
/// only until then.
async fn first_pass(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut synced = shared.synced.subscribe();
    tokio::select! {
        r = synced.wait_for(|s| *s) => if r.is_err() { return },
        _ = stop.wait_for(|s| *s) => return,
    }
    while !shared.queue.idle() {
        if sleep_or_stop(Duration::from_millis(100), &mut stop).await {
            return;
        }
    }
    shared.ready.store(true, Ordering::Relaxed);
    tracing::info!("the first list of works is reconciled; ready");
}

/// Follows the works with blocking queries and queues what changed.
async fn follow(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let cluster = shared.ctx.session.cluster().to_string();
    let mut index = 0u64;
    let mut epoch: Option<String> = None;
    let mut first = true;
    // After a failure the next list answers at once instead of waiting past the index: a
    // hub restarted on a database restored by copying its files keeps its epoch, and this
    // agent's lease renewals can carry the restored index past ours before we ask again,
    // so a blocking list would wait its whole `wait` before showing the works it lost.
    let mut failed = false;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        if *stop.borrow() {
            return;
        }
        let opts = ListOptions {
            index: (index > 0 && !failed).then_some(index),
            wait: Some(shared.options.wait),
            // The hub answers at once when this is not its epoch any more.
            epoch: epoch.clone(),
            ..Default::default()
        };
        let result = tokio::select! {
            r = list_every_work(&shared, &cluster, opts) => r,
            _ = stop.changed() => return,
        };
        match result {
            Ok((listed_index, listed_epoch, items)) => {
                backoff.reset();
                failed = false;
                let previous_index = index;
                // A restored hub: another epoch, or an index below the one seen.
                let restored = !first
                    && (listed_index < index
                        || (epoch.is_some() && listed_epoch.is_some() && epoch != listed_epoch));
                epoch = listed_epoch.or(epoch);
                shared.ctx.session.reached();
                metrics::gauge!(telemetry::WORKS).set(items.len() as f64);
                index = listed_index;
                let fresh: BTreeMap<String, ManifestWork> = items
                    .into_iter()
                    .map(|w| (w.metadata.name.clone(), w))
                    .collect();
                let mut works = shared.ctx.works.write().await;
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
                if restored {
                    let again = super::restore::compare(
                        &works,
                        &fresh,
                        &mut *shared.ctx.memory.lock().await,
                    );
                    tracing::info!(
                        previous_index,
                        index = listed_index,
                        reapply = again.reapply.len(),
                        repush = again.repush.len(),
                        "the hub's database was restored (its index epoch changed or its index went back): applying again only what differs, pushing stale statuses again"
                    );
                    changed.extend(again.reapply);
                    changed.extend(again.repush);
                    changed.sort();
                    changed.dedup();
                }
                // Works gone from the hub without our finalizer (created before this agent
                // joined, or force-removed): clean up what the ledger holds for them.
                let records = shared.ctx.records.read().await;
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
                    shared.queue.enqueue(&name);
                }
                shared.synced.send_replace(true);
            }
            Err(e) => {
                failed = true;
                if e.is_transient() {
                    shared.ctx.session.unreachable();
                }
                if let crate::Error::Hub(h) = &e
                    && h.status() == Some(reqwest::StatusCode::UNAUTHORIZED)
                    && let Ok(a) = shared.ctx.session.authorized().await
                {
                    shared.ctx.session.invalidate(a.generation).await;
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
) -> Result<(u64, Option<String>, Vec<ManifestWork>), crate::Error> {
    let hub = shared.ctx.session.authorized().await?.client;
    let mut index = None;
    let mut epoch = None;
    let mut items = Vec::new();
    loop {
        let page = telemetry::hub_call("list_works", hub.list_works(Some(cluster), &opts))
            .await
            .map_err(|e| crate::Error::Hub(Box::new(e)))?;
        index.get_or_insert(page.value.metadata.index.max(page.index));
        epoch = epoch.or(page.epoch);
        items.extend(page.value.items);
        match page.value.metadata.continue_.filter(|c| !c.is_empty()) {
            // Later pages are not blocking queries.
            Some(token) => {
                opts = ListOptions {
                    continue_: Some(token),
                    ..Default::default()
                }
            }
            None => return Ok((index.unwrap_or_default(), epoch, items)),
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
            .ctx
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
            let memory = shared.ctx.memory.lock().await;
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
                shared.queue.enqueue(&n);
            }
        }
        tracing::debug!(skipped, "resync: works whose objects did not move");
    }
}

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
            .ctx
            .owners
            .read()
            .expect("owners lock")
            .get(&key)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for w in owners {
            shared.queue.enqueue(&w);
        }
    }
}
