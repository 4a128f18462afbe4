//! One run of the work controller for one work: apply it, record what it applied in the
//! ledger, delete what it no longer names, push its status; or clean up a deleting or
//! vanished work. The runner decides when to run it again, from the [`Action`] returned
//! here or, on an error, from [`error_policy`].
//!
//! An agent restart must never delete running workloads: objects are deleted only when
//! the hub says the work is deleting, when the work no longer names them, or when a
//! fresh GET of a work missing from the list answers 404 and either the hub says it
//! deleted the work or the eviction grace ended ([`super::eviction`]); each deletion is
//! logged at info with its reason.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::{
    CLEANUP_FINALIZER, DeleteOption, ListOptions, ManifestWork, ManifestWorkStatus,
    PropagationPolicy, ResourceIdentifier, UpdateStrategyType,
};
use tokio::sync::{Mutex, RwLock};

use super::eviction::{self, Decision, HubAnswer};
use super::ledger::{Entry, Ledger, Record};
use super::runner::Action;
use super::shared;
use crate::apply::{Applier, DeleteOutcome, ManifestConfigs, ManifestOutcome, ResourceRef};
use crate::hub::session::Session;
use crate::status;
use crate::telemetry;

/// (group, kind, namespace, name) of an applied object → the works that applied it.
pub type Owners = HashMap<(String, String, String, String), HashSet<String>>;

/// What the controller remembers of a work between reconciles.
#[derive(Default)]
pub struct WorkMemory {
    /// The status last accepted by the hub.
    pushed: Option<ManifestWorkStatus>,
    /// Since when some manifest keeps failing.
    failing_since: Option<Instant>,
    /// What the last clean apply left on the cluster, to skip the next resync's apply
    /// when none of it moved.
    pub applied: Option<Applied>,
    /// Whether this run of the agent logged the eviction grace of this vanished work.
    grace_announced: bool,
}

impl WorkMemory {
    /// After a restore of the hub's database: whether the hub's copy of the status is not
    /// what this agent last pushed; then forgets the push, so the next reconcile pushes
    /// the status again instead of finding it unchanged.
    pub fn forget_stale_push(&mut self, on_hub: &ManifestWorkStatus) -> bool {
        let stale = self.pushed.as_ref().is_some_and(|p| p != on_hub);
        if stale {
            self.pushed = None;
        }
        stale
    }

    /// A memory whose last accepted push was `status` (for the restore module's tests).
    #[cfg(test)]
    pub(crate) fn pushed(status: ManifestWorkStatus) -> WorkMemory {
        WorkMemory {
            pushed: Some(status),
            ..Default::default()
        }
    }
}

/// A work's generation and the `resourceVersion` of each object its last apply returned,
/// kept only when every manifest applied and nothing was left to delete.
#[derive(Clone)]
pub struct Applied {
    /// The work's generation then.
    pub generation: i64,
    /// Each object and the `resourceVersion` the apply returned.
    pub versions: Vec<(ResourceRef, String)>,
}

/// What every reconcile shares: the hub session, the apply engine, the ledger, the latest
/// view of the works and what the controller remembers of each.
pub struct Context {
    /// The session with the hub.
    pub session: Arc<Session>,
    /// The apply engine of the managed cluster.
    pub applier: Arc<Applier>,
    /// The durable record of what each work applied.
    pub ledger: Ledger,
    /// A manifest failing longer than this makes its work Degraded.
    pub degraded_after: Duration,
    /// How long the objects of a work missing from the hub stay when the hub does not say
    /// it deleted the work.
    pub eviction_grace: Duration,
    /// The latest view of the works, from the follower.
    pub works: RwLock<BTreeMap<String, ManifestWork>>,
    /// The ledger, cached (the ConfigMaps are the durable copy).
    pub records: RwLock<BTreeMap<String, Record>>,
    /// What the controller remembers of each work.
    pub memory: Mutex<HashMap<String, WorkMemory>>,
    /// Which work each watched object belongs to.
    pub owners: std::sync::RwLock<Owners>,
}

impl Context {
    /// A context with nothing in view yet.
    pub fn new(
        session: Arc<Session>,
        applier: Arc<Applier>,
        ledger: Ledger,
        degraded_after: Duration,
    ) -> Self {
        Context {
            session,
            applier,
            ledger,
            degraded_after,
            eviction_grace: super::eviction::DEFAULT_GRACE,
            works: RwLock::new(BTreeMap::new()),
            records: RwLock::new(BTreeMap::new()),
            memory: Mutex::new(HashMap::new()),
            owners: std::sync::RwLock::new(HashMap::new()),
        }
    }

    /// Rebuilds which work owns each watched object, from the ledger.
    pub async fn index_owners(&self) {
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

/// (group, resource, namespace, name) of an object.
pub type ObjectKey = (String, String, String, String);

/// The key of an object in [`Applied::versions`] lookups.
pub fn object_key(r: &ResourceRef) -> ObjectKey {
    (
        r.group.clone(),
        r.resource.clone(),
        r.namespace.clone(),
        r.name.clone(),
    )
}

/// Objects on their way out are not a failure: back off to 5 s at most, not 30 s, so the
/// finalizer goes soon after the garbage collector is done (which, at
/// kube-controller-manager's default 20 requests/s, takes ~15 s for 300 objects).
const DELETING_RETRY_CAP: Duration = Duration::from_secs(5);
/// The longest wait between retries of a failing work.
const RETRY_CAP: Duration = Duration::from_secs(30);

/// Reconciles one work: applies it, cleans it up when deleting, or forgets it when it
/// vanished from the hub. Says when to run again when something is still pending.
#[tracing::instrument(skip_all, fields(work = name, cluster = %ctx.session.cluster()))]
pub async fn reconcile(ctx: &Context, name: &str) -> Result<Action, crate::Error> {
    let work = ctx.works.read().await.get(name).cloned();
    let pending = match work {
        Some(w) if w.metadata.deletion_timestamp.is_some() => {
            clean_up(ctx, &w).await?.then_some(DELETING_RETRY_CAP)
        }
        // As OCM: a work its rules found Complete receives no more updates (a finished Job
        // that was cleaned up is not run again). Its deletion still goes through above.
        Some(w) if finished(ctx, &w).await => None,
        Some(w) => apply(ctx, &w).await?.then_some(RETRY_CAP),
        None => match forget_vanished(ctx, name).await? {
            Vanished::StillOnTheHub => return Ok(Action::requeue_now()),
            Vanished::InGrace(left) => return Ok(Action::requeue_after(left)),
            Vanished::Deleting => Some(DELETING_RETRY_CAP),
            Vanished::Forgotten => None,
        },
    };
    Ok(match pending {
        Some(cap) => Action::retry_within(cap),
        None => Action::await_change(),
    })
}

/// Whether the status this agent last pushed (or the hub's copy) says the work is
/// `Complete` for its current generation.
async fn finished(ctx: &Context, work: &ManifestWork) -> bool {
    let memory = ctx.memory.lock().await;
    let pushed = memory
        .get(&work.metadata.name)
        .and_then(|m| m.pushed.as_ref());
    status::rules::work_complete(pushed.unwrap_or(&work.status), work.metadata.generation)
}

/// A failed reconcile is logged and retried with the work's backoff.
pub fn error_policy(name: &str, error: &crate::Error) -> Action {
    tracing::warn!(work = name, error = %crate::Chain(error), "reconcile failed; retrying");
    Action::retry_within(RETRY_CAP)
}

fn identifies(id: &ResourceIdentifier, r: &ResourceRef) -> bool {
    id.group == r.group
        && id.resource == r.resource
        && id.name == r.name
        && id.namespace == r.namespace
}

/// Whether the work observes this manifest only (ReadOnly): never recorded, never deleted.
fn read_only(configs: &ManifestConfigs, r: &ResourceRef) -> bool {
    configs
        .get(r)
        .update_strategy
        .is_some_and(|s| s.type_ == UpdateStrategyType::ReadOnly)
}

/// The manifest status with this ordinal: at its own position when the statuses are in
/// order (as this agent writes them), else found by a scan.
fn by_ordinal(
    manifests: &[api::ManifestCondition],
    ordinal: i32,
) -> Option<&api::ManifestCondition> {
    usize::try_from(ordinal)
        .ok()
        .and_then(|at| manifests.get(at))
        .filter(|m| m.resource_meta.ordinal == ordinal)
        .or_else(|| {
            manifests
                .iter()
                .find(|m| m.resource_meta.ordinal == ordinal)
        })
}

/// Applies a work, records what it applied, deletes what it no longer names, pushes status.
/// Returns whether something is still pending (a retryable failure, or not ready yet is not
/// pending: watchers report readiness).
#[tracing::instrument(level = "debug", skip_all, fields(work = %work.metadata.name, generation = ?work.metadata.generation))]
async fn apply(ctx: &Context, work: &ManifestWork) -> Result<bool, crate::Error> {
    let name = work.metadata.name.clone();
    let outcomes = ctx.applier.apply_work(work).await;
    for e in outcomes.iter().filter_map(|o| o.result.as_ref().err()) {
        telemetry::manifest_failed(&e.reason);
    }
    let previous = ctx
        .records
        .read()
        .await
        .get(&name)
        .cloned()
        .unwrap_or_default();

    // The ledger after this apply: what applied now, plus what failed now but was applied
    // before (a transient failure must not make us forget, or later delete, an object).
    let mut entries: Vec<Entry> = Vec::new();
    let configs = ManifestConfigs::new(work);
    for o in &outcomes {
        match (&o.reference, &o.result) {
            (Some(r), Ok(obj)) if !read_only(&configs, r) => {
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
        let others = staying_sharers(ctx, &name, r).await;
        if !others.is_empty() {
            tracing::info!(work = %name, kind = %r.kind, namespace = %r.namespace, object = %r.name, still_named_by = ?others, "the work no longer names it; leaving the object to the other works that applied it");
            continue;
        }
        tracing::info!(work = %name, kind = %r.kind, namespace = %r.namespace, object = %r.name, uid = %e.uid, reason = "the work no longer names it", "deleting");
        match ctx
            .applier
            .delete_as(r, &e.uid, work.spec.executor.as_ref())
            .await
        {
            Ok(DeleteOutcome::Gone) | Ok(DeleteOutcome::NotOurs) => {}
            Ok(DeleteOutcome::Deleting) => still_deleting = true,
            Err(err) => {
                tracing::warn!(work = %name, kind = %r.kind, object = %r.name, reason = %err.reason, "deleting a dropped manifest failed; will retry");
                entries.push(e.clone());
            }
        }
    }
    // A work in view again is not vanishing any more: its grace is forgotten.
    let record = Record {
        entries,
        delete_option: work.spec.delete_option.clone(),
        work_created: work.metadata.creation_timestamp,
        executor: work.spec.executor.clone(),
        ..Default::default()
    };
    if record != previous {
        let objects = previous.entries.iter().chain(&record.entries);
        let sharers = shared::sharers(
            &*ctx.records.read().await,
            &name,
            objects.map(|e| &e.reference),
        );
        ctx.ledger.save(&name, &record).await?;
        ctx.records.write().await.insert(name.clone(), record);
        ctx.index_owners().await;
        forget_clean_apply(ctx, &sharers).await;
    }

    let retryable_failure = outcomes
        .iter()
        .any(|o| o.result.as_ref().is_err_and(|e| e.retryable));
    push_status(ctx, work, &outcomes).await?;
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
    ctx.memory.lock().await.entry(name).or_default().applied = applied;
    Ok(retryable_failure || still_deleting)
}

/// Computes the status of an applied work and pushes it when it changed.
#[tracing::instrument(level = "debug", skip_all, fields(work = %work.metadata.name))]
async fn push_status(
    ctx: &Context,
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
    let pushed = ctx
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
    let configs = ManifestConfigs::new(work);
    let mut manifests: Vec<api::ManifestCondition> = outcomes
        .iter()
        .map(|o| {
            let config = o.reference.as_ref().map(|r| configs.get(r));
            let previous = by_ordinal(prev_manifests, o.ordinal);
            status::manifest_condition_with(o, work, config.unwrap_or_default(), previous, now)
        })
        .collect();
    {
        let records = ctx.records.read().await;
        let sharing = shared::Sharing::of(&records);
        for (m, o) in manifests.iter_mut().zip(outcomes) {
            if let Some(r) = &o.reference {
                let previous = by_ordinal(prev_manifests, o.ordinal);
                let others = sharing.others(&name, r);
                shared::mark_shared(m, &others, previous, work.metadata.generation, now);
            }
        }
    }
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
        let mut memory = ctx.memory.lock().await;
        let m = memory.entry(name.clone()).or_default();
        if failures.is_empty() {
            m.failing_since = None;
        } else if m.failing_since.is_none() {
            m.failing_since = Some(Instant::now());
        }
        let too_long = m
            .failing_since
            .is_some_and(|t| t.elapsed() > ctx.degraded_after);
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
        let memory = ctx.memory.lock().await;
        let already = memory
            .get(&name)
            .and_then(|m| m.pushed.as_ref())
            .is_some_and(|p| *p == status)
            || *prev_status == status;
        if already {
            return Ok(());
        }
    }
    let hub = ctx.hub().await?;
    match telemetry::hub_call(
        "put_status",
        hub.put_work_status_receipt(ctx.session.cluster(), &name, &status),
    )
    .await
    {
        Ok(_) => {
            ctx.memory.lock().await.entry(name).or_default().pushed = Some(status);
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
    ctx: &Context,
    name: &str,
    option: Option<&DeleteOption>,
    reason: &str,
) -> Result<bool, crate::Error> {
    let record = ctx
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
        let others = staying_sharers(ctx, name, &e.reference).await;
        if !others.is_empty() {
            tracing::info!(work = name, kind = %e.reference.kind, namespace = %e.reference.namespace, object = %e.reference.name, still_named_by = ?others, reason, "leaving the object to the other works that applied it");
            continue;
        }
        tracing::info!(work = name, kind = %e.reference.kind, namespace = %e.reference.namespace, object = %e.reference.name, uid = %e.uid, reason, "deleting");
        match ctx
            .applier
            .delete_as(&e.reference, &e.uid, record.executor.as_ref())
            .await
        {
            Ok(DeleteOutcome::Gone) | Ok(DeleteOutcome::NotOurs) => {}
            Ok(DeleteOutcome::Deleting) => left.push(e.clone()),
            Err(err) => {
                tracing::warn!(work = name, kind = %e.reference.kind, object = %e.reference.name, reason = %err.reason, "deleting failed; will retry");
                left.push(e.clone());
            }
        }
    }
    let sharers = shared::sharers(
        &*ctx.records.read().await,
        name,
        record.entries.iter().map(|e| &e.reference),
    );
    forget_clean_apply(ctx, &sharers).await;
    if left.is_empty() {
        ctx.ledger.remove(name).await?;
        ctx.records.write().await.remove(name);
    } else {
        let record = Record {
            entries: left,
            ..record
        };
        ctx.ledger.save(name, &record).await?;
        ctx.records.write().await.insert(name.to_string(), record);
    }
    ctx.index_owners().await;
    Ok(ctx.records.read().await.contains_key(name))
}

/// The other works that applied `r` and stay: on the hub and not being deleted. An
/// object is deleted only by the last of its works to go (two works deleted together
/// both delete it; the uid precondition makes the second a no-op).
async fn staying_sharers(ctx: &Context, work: &str, r: &ResourceRef) -> Vec<String> {
    let others = shared::others_naming(&*ctx.records.read().await, work, r);
    let works = ctx.works.read().await;
    others
        .into_iter()
        .filter(|w| {
            works
                .get(w)
                .is_some_and(|w| w.metadata.deletion_timestamp.is_none())
        })
        .collect()
}

/// Makes the next resync re-apply these works (their shared objects changed hands, so
/// their status must say so) even if none of their objects moved.
async fn forget_clean_apply(ctx: &Context, works: &std::collections::BTreeSet<String>) {
    let mut memory = ctx.memory.lock().await;
    for w in works {
        if let Some(m) = memory.get_mut(w) {
            m.applied = None;
        }
    }
}

/// Cleans up a deleting work, then removes the agent's finalizer.
#[tracing::instrument(level = "debug", skip_all, fields(work = %work.metadata.name))]
async fn clean_up(ctx: &Context, work: &ManifestWork) -> Result<bool, crate::Error> {
    let name = &work.metadata.name;
    if delete_recorded(
        ctx,
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
        let hub = ctx.hub().await?;
        match telemetry::hub_call(
            "remove_finalizer",
            hub.remove_work_finalizer(ctx.session.cluster(), name, CLEANUP_FINALIZER),
        )
        .await
        {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(crate::Error::Hub(Box::new(e))),
        }
    }
    ctx.memory.lock().await.remove(name);
    Ok(false)
}

/// What became of a work missing from the latest list.
enum Vanished {
    /// A fresh read found it on the hub after all: nothing was deleted.
    StillOnTheHub,
    /// Its objects are on their way out.
    Deleting,
    /// Its objects stay until the eviction grace ends, this much later.
    InGrace(Duration),
    /// Nothing of it is left.
    Forgotten,
}

/// A work missing from the latest list of the works (gone from the hub without our
/// finalizer: created before this agent joined, deleted by a set or a user, or lost by the
/// hub's database): its resources go too, per the delete option it last had, but only once
/// a fresh read from the hub answers that the work does not exist, and then only when the
/// hub says it deleted the work or the eviction grace ended ([`super::eviction`]). Anything
/// else (the work is there after all, the hub cannot be reached) deletes nothing.
#[tracing::instrument(level = "debug", skip_all, fields(work = name))]
async fn forget_vanished(ctx: &Context, name: &str) -> Result<Vanished, crate::Error> {
    let Some(record) = ctx.records.read().await.get(name).cloned() else {
        // Nothing recorded: nothing of ours to remove.
        ctx.memory.lock().await.remove(name);
        return Ok(Vanished::Forgotten);
    };
    let hub = ctx.hub().await?;
    let answer = match telemetry::hub_call(
        "get_work",
        hub.get_work(ctx.session.cluster(), name, &ListOptions::default()),
    )
    .await
    {
        Ok(found) => {
            tracing::info!(
                work = name,
                "the work is missing from the last list but still on the hub; reconciling it, deleting nothing"
            );
            ctx.works
                .write()
                .await
                .entry(name.to_string())
                .or_insert(found.value);
            // Runs again once this run is done, now with the work in view.
            return Ok(Vanished::StillOnTheHub);
        }
        Err(e) if e.is_not_found() => HubAnswer::of(&e),
        Err(e) => return Err(crate::Error::Hub(Box::new(e))),
    };
    let now = chrono::Utc::now();
    let first_seen = record.vanished_at.is_none();
    let vanished_at = match record.vanished_at {
        Some(at) => at,
        None => {
            // On the cluster before anything else: a restart must neither restart the
            // grace nor find a record without it and start over.
            let marked = Record {
                vanished_at: Some(now),
                ..record.clone()
            };
            ctx.ledger.save(name, &marked).await?;
            ctx.records.write().await.insert(name.to_string(), marked);
            now
        }
    };
    let reason = match eviction::decide(
        answer,
        record.work_created,
        vanished_at,
        ctx.eviction_grace,
        now,
    ) {
        Decision::Keep { until } => {
            // Said at info once per agent run (the follower asks again on each list).
            let announced = std::mem::replace(
                &mut ctx
                    .memory
                    .lock()
                    .await
                    .entry(name.to_string())
                    .or_default()
                    .grace_announced,
                true,
            );
            if first_seen || !announced {
                tracing::info!(work = name, %vanished_at, grace_ends = %until, "the work is gone from the hub, which does not say it deleted it (a restored backup or another database?); keeping its objects until the eviction grace ends");
            }
            let left = (until - now).to_std().unwrap_or_default();
            return Ok(Vanished::InGrace(left));
        }
        Decision::Delete(reason) => reason,
    };
    tracing::info!(work = name, %reason, "cleaning up a work gone from the hub");
    let pending = delete_recorded(ctx, name, record.delete_option.as_ref(), &reason).await?;
    if pending {
        return Ok(Vanished::Deleting);
    }
    ctx.memory.lock().await.remove(name);
    Ok(Vanished::Forgotten)
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
