//! The fleet controllers: placement (decisions) and set (works and status). They run in one
//! hub per database at a time, the one holding the Postgres advisory lock
//! [`LOCK`] on a connection of its own (a single SQLite hub simply holds it), and are driven
//! by the change feed: a cluster, placement, set or set-owned work that changes wakes them,
//! and they re-decide only what that change touches. The one timer is for a toleration that
//! runs out at a known time.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use api::fleet::{ManifestWorkReplicaSet, Placement, SET_LABEL};
use chrono::Utc;

use super::leader::{self, LEASE_CHECK, Lease, Led};
use crate::service::Hub;
use crate::service::follow::{Change, ChangeKind};
use crate::service::namespaced::{get_authored, list_authored};

mod decide;
mod status;
mod sync;
mod world;

use world::{Key, PlacementState, SetState, WorkView, World};

/// The name of the lock whose holder runs the fleet controllers.
pub const LOCK: &str = "fleethub.fleet-controllers";

/// While the hub lives: waits for the lock, then runs the controllers until it is lost.
pub async fn run(hub: Weak<Hub>) {
    let led = Led {
        lock: LOCK,
        does: "runs the fleet controllers",
        gauge: Some("hub_fleet_controllers_leader"),
    };
    leader::run(hub, led, lead).await;
}

fn key(c: &Change) -> Key {
    (c.cluster.clone(), c.name.clone())
}

/// Whether a change may concern the fleet controllers.
fn interesting(c: &Change) -> bool {
    match c.kind {
        ChangeKind::Cluster => true,
        ChangeKind::Placement | ChangeKind::ManifestWorkReplicaSet => !c.status_only,
        ChangeKind::Work => {
            c.labels.contains_key(SET_LABEL)
                || c.prev_labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key(SET_LABEL))
        }
        _ => false,
    }
}

/// Work the loop still owes.
#[derive(Default)]
struct Dirty {
    placements: BTreeSet<Key>,
    sets: BTreeSet<Key>,
    statuses: BTreeSet<Key>,
}

async fn lead(hub: Weak<Hub>, mut lease: Lease) {
    let mut world = World::default();
    let mut seen = 0;
    let mut dirty = Dirty::default();
    let mut loaded = false;
    loop {
        let Some(h) = hub.upgrade() else { return };
        if !loaded {
            seen = h.index();
            match load(&h).await {
                Ok(w) => {
                    world = w;
                    dirty.placements = world.placements.keys().cloned().collect();
                    dirty.sets = world.sets.keys().cloned().collect();
                    loaded = true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "loading the fleet failed; will retry");
                    drop(h);
                    tokio::time::sleep(LEASE_CHECK).await;
                    if !lease.still_held().await {
                        return;
                    }
                    continue;
                }
            }
        }
        run_once(&h, &mut world, &mut dirty).await;
        // Sleep until something changes, a toleration runs out, or it is time to check the
        // lock; owed work is retried after a short pause.
        let mut wait = LEASE_CHECK;
        if let Some(at) = decide::next_recheck(&world) {
            let until = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            wait = wait.min(until + Duration::from_millis(50));
        }
        if !dirty.placements.is_empty() || !dirty.sets.is_empty() || !dirty.statuses.is_empty() {
            wait = wait.min(Duration::from_millis(500));
        }
        let upto = h.wait_for_changes(seen, Box::new(interesting), wait).await;
        if !lease.still_held().await {
            return;
        }
        let Some(changes) = h.changes_between(seen, upto) else {
            tracing::info!("the change feed moved past the fleet controllers; reloading");
            loaded = false;
            continue;
        };
        seen = upto;
        for c in changes.iter().filter(|c| interesting(c)) {
            if let Err(e) = apply_change(&h, &mut world, &mut dirty, c).await {
                tracing::warn!(error = %e, "reading a change failed; reloading the fleet");
                loaded = false;
                break;
            }
        }
        if let Some(at) = decide::next_recheck(&world)
            && at <= Utc::now()
        {
            for (k, p) in &mut world.placements {
                if p.recheck_at.is_some_and(|t| t <= Utc::now()) {
                    p.recheck_at = None;
                    dirty.placements.insert(k.clone());
                }
            }
        }
    }
}

/// Decides the dirty placements, syncs the sets that follow the ones that moved (and the
/// dirty sets), writes the statuses that changed.
async fn run_once(hub: &Arc<Hub>, world: &mut World, dirty: &mut Dirty) {
    let started = std::time::Instant::now();
    let placements = std::mem::take(&mut dirty.placements);
    metrics::counter!("hub_placement_evaluations_total").increment(placements.len() as u64);
    let (moved, failed) = decide::decide(hub, world, &placements).await;
    dirty.placements.extend(failed);
    for (k, s) in &world.sets {
        if moved.iter().any(|p| p.0 == k.0 && s.follows(&p.1)) {
            dirty.sets.insert(k.clone());
        }
    }
    metrics::histogram!("hub_placement_decide_seconds").record(started.elapsed().as_secs_f64());
    let sets = std::mem::take(&mut dirty.sets);
    metrics::counter!("hub_set_syncs_total").increment(sets.len() as u64);
    let failed = sync::sync(hub, world, &sets).await;
    dirty
        .statuses
        .extend(sets.iter().filter(|k| !failed.contains(*k)).cloned());
    dirty.sets.extend(failed);
    let statuses = std::mem::take(&mut dirty.statuses);
    for key in statuses {
        let Some(state) = world.sets.get(&key) else {
            continue;
        };
        let status = status::status_of(world, &key, state);
        if status::bare(&status) == status::bare(&state.status) {
            continue;
        }
        let op = crate::service::set_sync::PutSetStatus {
            namespace: key.0.clone(),
            name: key.1.clone(),
            status: status.clone(),
        };
        match hub.write_set_status(op).await {
            Ok(_) => {
                if let Some(s) = world.sets.get_mut(&key) {
                    s.status = status;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "writing a set's status failed; will retry");
                dirty.statuses.insert(key);
            }
        }
    }
}

/// Reads everything the controllers follow.
async fn load(hub: &Hub) -> crate::service::Result<World> {
    let mut world = World::default();
    world.set_clusters(hub.list_clusters(&Default::default(), None).await?.items);
    let decisions = hub.all_decisions().await?;
    for p in list_authored::<Placement>(hub).await? {
        let key = (
            p.object.metadata.namespace.clone().unwrap_or_default(),
            p.object.metadata.name.clone(),
        );
        let d = decisions.get(&key).cloned().unwrap_or_default();
        world.put_placement(key, PlacementState::new(p, d));
    }
    for s in list_authored::<ManifestWorkReplicaSet>(hub).await? {
        let key = (
            s.object.metadata.namespace.clone().unwrap_or_default(),
            s.object.metadata.name.clone(),
        );
        let mut state = SetState::new(s);
        // The works it kept (as its last status says) are read again; the rest of its
        // clusters are found as the sync writes them.
        let named: Vec<String> = state
            .status
            .clusters
            .iter()
            .map(|c| c.cluster_name.clone())
            .collect();
        for c in named {
            if let Some(w) = hub.get_work(&c, &key.1, None).await?.data
                && crate::service::works::owning_set(&w)
                    == Some(crate::service::sets::set_key(&key.0, &key.1).as_str())
            {
                state.works.insert(c, WorkView::of(&w));
            }
        }
        world.sets.insert(key, state);
    }
    Ok(world)
}

/// Takes one change into the world and marks what it touches.
async fn apply_change(
    hub: &Hub,
    world: &mut World,
    dirty: &mut Dirty,
    c: &Change,
) -> crate::service::Result<()> {
    match c.kind {
        ChangeKind::Cluster => {
            let cluster = hub.get_cluster(&c.name, None).await?.data;
            world.put_cluster(&c.name, cluster);
            dirty
                .placements
                .extend(decide::touched_by_cluster(world, &c.name, Utc::now()));
            // Overrides, weights and reach are matched against the cluster's labels.
            for (k, s) in &world.sets {
                if s.placed_by.contains_key(&c.name) {
                    dirty.sets.insert(k.clone());
                }
            }
        }
        ChangeKind::Placement => {
            let k = key(c);
            match get_authored::<Placement>(hub, &k.0, &k.1).await? {
                Some(p) => {
                    let decisions = hub.decisions_of(&k.0, &k.1).await?;
                    world.put_placement(k.clone(), PlacementState::new(p, decisions));
                    dirty.placements.insert(k.clone());
                }
                None => world.remove_placement(&k),
            }
            for (sk, s) in &world.sets {
                if sk.0 == k.0 && s.follows(&k.1) {
                    dirty.sets.insert(sk.clone());
                }
            }
        }
        ChangeKind::ManifestWorkReplicaSet => {
            let k = key(c);
            match get_authored::<ManifestWorkReplicaSet>(hub, &k.0, &k.1).await? {
                Some(s) => {
                    let mut state = SetState::new(s);
                    if let Some(old) = world.sets.remove(&k) {
                        // What it keeps stays known; the new spec is compared with it.
                        state.rendered = old.rendered;
                        state.works = old.works;
                        state.shares = old.shares;
                        state.status = old.status;
                        state.swept = old.swept;
                    } else {
                        // New since this hub took over: no earlier leader wrote for it.
                        state.swept = true;
                    }
                    world.sets.insert(k.clone(), state);
                    dirty.sets.insert(k);
                }
                None => {
                    world.sets.remove(&k);
                }
            }
        }
        ChangeKind::Work => {
            let owner = c
                .labels
                .get(SET_LABEL)
                .or_else(|| c.prev_labels.as_ref().and_then(|l| l.get(SET_LABEL)));
            let Some((ns, name)) = owner.and_then(|o| o.split_once('.')) else {
                return Ok(());
            };
            let k = (ns.to_string(), name.to_string());
            let Some(state) = world.sets.get_mut(&k) else {
                return Ok(());
            };
            let work = hub.get_work(&c.cluster, &c.name, None).await?.data;
            let key_value = crate::service::sets::set_key(ns, name);
            match work.filter(|w| crate::service::works::owning_set(w) == Some(key_value.as_str()))
            {
                Some(w) => {
                    let view = WorkView::of(&w);
                    if view.deleting && state.placed_by.contains_key(&c.cluster) {
                        dirty.sets.insert(k.clone());
                    }
                    state.works.insert(c.cluster.clone(), view);
                }
                None => {
                    state.works.remove(&c.cluster);
                    state.rendered.remove(&c.cluster);
                    // Gone: a decided cluster gets it again, a deleting set may be done.
                    if state.placed_by.contains_key(&c.cluster)
                        || state.set.metadata.deletion_timestamp.is_some()
                    {
                        dirty.sets.insert(k.clone());
                    }
                }
            }
            dirty.statuses.insert(k);
        }
        _ => {}
    }
    Ok(())
}
