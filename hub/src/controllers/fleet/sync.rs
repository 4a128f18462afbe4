//! The set controller's part: for each set a change touched, the works its placements'
//! decisions call for (inside its authors' reach, with overrides and replica shares), put
//! where they changed and removed where no longer decided; then its status.

use std::collections::{BTreeMap, BTreeSet};

use api::fleet::{ManifestWorkReplicaSet, SetOverride};
use api::{ManagedCluster, ManifestWorkSpec};

use super::world::{Key, SetState, WorkView, World};
use crate::service::Hub;
use crate::service::namespaced::reaches;
use crate::service::replica_split::{cpu_millis, split};
use crate::service::set_render::render;
use crate::service::set_sync::{Placed, SyncSet, Synced};

/// What a set should keep: per decided cluster, the placement that decided it and the
/// rendered spec (or why none).
pub struct Plan {
    /// Per cluster: (placement, rendered spec or the reason there is none).
    pub clusters: BTreeMap<String, (String, Result<ManifestWorkSpec, String>)>,
    /// Replica shares, with `replicaSplit`.
    pub shares: BTreeMap<String, i32>,
    /// Decided clusters whose work could not be rendered: the work they have is left as it
    /// is (a set that cannot render must not take running workloads away).
    pub broken: BTreeSet<String>,
}

/// Whether `cluster` may receive the set's work: inside the reach of the set's author and
/// of the author of the placement that decided it.
fn reachable(
    world: &World,
    state: &SetState,
    ns: &str,
    placement: &str,
    cluster: &ManagedCluster,
) -> Result<(), String> {
    if !reaches(&state.reach, cluster) {
        return Err(format!(
            "cluster {:?} is outside the reach of the set's last writer",
            cluster.metadata.name
        ));
    }
    let placement_reach = world
        .placements
        .get(&(ns.to_string(), placement.to_string()))
        .map(|p| &p.reach);
    if let Some(reach) = placement_reach
        && !reaches(reach, cluster)
    {
        return Err(format!(
            "cluster {:?} is outside the reach of placement {placement:?}'s last writer",
            cluster.metadata.name
        ));
    }
    Ok(())
}

fn weight(state: &SetState, cluster: &ManagedCluster) -> u64 {
    let Some(rs) = &state.set.spec.replica_split else {
        return 1;
    };
    match rs.strategy.as_deref().unwrap_or("Equal") {
        "Weighted" => {
            let matchers = state.weights.as_deref().unwrap_or_default();
            rs.weights
                .iter()
                .zip(matchers)
                .find(|(_, m)| m.matches(cluster).is_ok())
                .map(|(w, _)| u64::try_from(w.weight).unwrap_or(0))
                .unwrap_or(0)
        }
        "AllocatableCPU" => cluster
            .status
            .allocatable
            .get("cpu")
            .and_then(|q| cpu_millis(q))
            .unwrap_or(0),
        _ => 1,
    }
}

/// Works out what a set should keep now.
pub fn plan(world: &World, key: &Key, state: &SetState) -> Plan {
    let set: &ManifestWorkReplicaSet = &state.set;
    let mut clusters: BTreeMap<String, (String, Result<ManifestWorkSpec, String>)> =
        BTreeMap::new();
    for r in &set.spec.placement_refs {
        // A missing placement decides nothing (the status says so).
        let Some(p) = world.placements.get(&(key.0.clone(), r.name.clone())) else {
            continue;
        };
        for c in p.decisions.clusters() {
            if clusters.contains_key(c) {
                continue;
            }
            let verdict = match world.cluster(c) {
                None => Err(format!("cluster {c:?} no longer exists")),
                Some(cluster) => reachable(world, state, &key.0, &r.name, cluster)
                    .map(|()| ManifestWorkSpec::default()),
            };
            clusters.insert(c.clone(), (r.name.clone(), verdict));
        }
    }
    let shares = match &set.spec.replica_split {
        None => BTreeMap::new(),
        Some(rs) => {
            let weights: BTreeMap<String, u64> = clusters
                .iter()
                .filter(|(_, (_, v))| v.is_ok())
                .filter_map(|(c, _)| Some((c.clone(), weight(state, world.cluster(c)?))))
                .collect();
            split(rs.total_replicas, &weights, &state.shares)
        }
    };
    let mut broken = BTreeSet::new();
    for (c, (_, verdict)) in clusters.iter_mut() {
        let Ok(_) = verdict else { continue };
        let Some(cluster) = world.cluster(c) else {
            continue;
        };
        let overrides: Vec<&SetOverride> = match &state.overrides {
            Some(matchers) => set
                .spec
                .overrides
                .iter()
                .zip(matchers)
                .filter(|(_, m)| m.matches(cluster).is_ok())
                .map(|(o, _)| o)
                .collect(),
            None => {
                *verdict = Err("an override's cluster selector no longer compiles".into());
                broken.insert(c.clone());
                continue;
            }
        };
        let share = set
            .spec
            .replica_split
            .as_ref()
            .map(|rs| (&rs.workload, shares.get(c).copied().unwrap_or(0)));
        *verdict =
            render(&set.spec.manifest_work_template, &overrides, share).map_err(|e| e.to_string());
        if verdict.is_err() {
            broken.insert(c.clone());
        }
    }
    Plan {
        clusters,
        shares,
        broken,
    }
}

/// The sync a set needs now: the works to put and remove, and (unless it is being
/// deleted) the plan they come from.
fn next_sync(world: &World, key: &Key, state: &SetState) -> (SyncSet, Option<Plan>) {
    let deleting = state.set.metadata.deletion_timestamp.is_some();
    let mut op = SyncSet {
        namespace: key.0.clone(),
        name: key.1.clone(),
        generation: state.set.metadata.generation,
        place: Vec::new(),
        remove: Vec::new(),
        orphan: deleting && policy(state) == "Orphan",
        author: state.author.clone(),
    };
    // Until the set was swept in this leadership, every cluster is looked at: an earlier
    // leader may have left a work anywhere. After that, only the works it knows.
    let known: BTreeSet<&String> = if state.swept {
        state.rendered.keys().chain(state.works.keys()).collect()
    } else {
        world.clusters().iter().map(|c| &c.metadata.name).collect()
    };
    if deleting {
        op.remove = known.into_iter().cloned().collect();
        return (op, None);
    }
    let plan = plan(world, key, state);
    for (c, (_, verdict)) in &plan.clusters {
        if let Ok(spec) = verdict
            && state.rendered.get(c) != Some(spec)
        {
            op.place.push(Placed {
                cluster: c.clone(),
                spec: spec.clone(),
            });
        }
    }
    op.remove = known
        .into_iter()
        .filter(|c| !matches!(plan.clusters.get(*c), Some((_, Ok(_)))) && !plan.broken.contains(*c))
        .cloned()
        .collect();
    (op, Some(plan))
}

fn policy(state: &SetState) -> &str {
    state
        .set
        .spec
        .cascade_deletion_policy
        .as_deref()
        .unwrap_or("Background")
}

/// Takes what a plan and its sync did into the set's state.
fn absorb(state: &mut SetState, plan: Option<Plan>, synced: Option<Synced>) {
    if let Some(plan) = plan {
        state.placed_by = plan
            .clusters
            .iter()
            .map(|(c, (p, _))| (c.clone(), p.clone()))
            .collect();
        state.messages = plan
            .clusters
            .iter()
            .filter_map(|(c, (_, v))| v.as_ref().err().map(|m| (c.clone(), m.clone())))
            .collect();
        state.shares = plan.shares;
    }
    let synced = match synced {
        Some(s) if s.stale => return,
        Some(s) => s,
        None => Synced::default(),
    };
    state.swept = true;
    for (c, r) in synced.placed {
        match r {
            Ok(work) => {
                state.rendered.insert(c.clone(), work.spec.clone());
                state.works.insert(c.clone(), WorkView::of(&work));
                state.messages.remove(&c);
            }
            Err(m) => {
                state.rendered.remove(&c);
                state.messages.insert(c, m);
            }
        }
    }
    for (c, r) in synced.removed {
        state.rendered.remove(&c);
        match r {
            Ok(Some(work)) => {
                state.works.insert(c, WorkView::of(&work));
            }
            Ok(None) => {
                state.works.remove(&c);
            }
            Err(m) => {
                state.messages.insert(c, m);
            }
        }
    }
}

/// Syncs the sets in `dirty`: writes the works that changed and removes the ones no longer
/// decided; a deleted set has all its works removed (or released), then goes (with
/// `Foreground`, once they are gone). Returns the sets whose sync failed (to try again).
pub async fn sync(hub: &Hub, world: &mut World, dirty: &BTreeSet<Key>) -> BTreeSet<Key> {
    let mut failed = BTreeSet::new();
    for key in dirty {
        let Some(state) = world.sets.get(key) else {
            continue;
        };
        let (op, plan) = next_sync(world, key, state);
        let synced = if op.place.is_empty() && op.remove.is_empty() {
            None
        } else {
            match hub.sync_set(op).await {
                Ok(w) => Some(w.value),
                Err(e) => {
                    tracing::warn!(set = %format!("{}/{}", key.0, key.1), error = %e, "syncing the set failed; will retry");
                    failed.insert(key.clone());
                    continue;
                }
            }
        };
        let state = world.sets.get_mut(key).expect("looked up above");
        absorb(state, plan, synced);
        let deleting = state.set.metadata.deletion_timestamp.is_some();
        if deleting && (policy(state) != "Foreground" || state.works.is_empty()) {
            match hub.remove_set(&key.0, &key.1).await {
                Ok(_) => {
                    world.sets.remove(key);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "removing a deleted set failed; will retry");
                    failed.insert(key.clone());
                }
            }
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use api::fleet::{LocalPlacementReference, Placement, SetOverride};
    use api::{ManagedCluster, ObjectMeta};

    use super::*;
    use crate::controllers::fleet::world::PlacementState;
    use crate::service::namespaced::Authored;
    use crate::service::placements::{Decisions, StoredGroup};

    fn meta(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: name.into(),
            namespace: Some("apps".into()),
            generation: Some(1),
            ..Default::default()
        }
    }

    /// A world with cluster c1 decided by placement p, and set s over p that wrote c1's work.
    fn world_with_set(overrides: Vec<SetOverride>) -> (World, Key) {
        let mut world = World::default();
        let mut c1 = ManagedCluster::new("c1", Default::default());
        c1.spec.hub_accepts_client = true;
        world.set_clusters(vec![c1]);
        let placement = Placement {
            metadata: meta("p"),
            ..Default::default()
        };
        let decisions = Decisions {
            groups: vec![StoredGroup {
                index: 0,
                name: String::new(),
                clusters: vec!["c1".into()],
            }],
        };
        let p = PlacementState::new(
            Authored {
                object: placement,
                author: Default::default(),
            },
            decisions,
        );
        world.put_placement(("apps".into(), "p".into()), p);
        let mut set = ManifestWorkReplicaSet {
            metadata: meta("s"),
            ..Default::default()
        };
        set.spec.placement_refs = vec![LocalPlacementReference {
            name: "p".into(),
            rollout_strategy: None,
        }];
        set.spec.overrides = overrides;
        let mut state = SetState::new(Authored {
            object: set,
            author: Default::default(),
        });
        state.swept = true;
        state
            .rendered
            .insert("c1".into(), ManifestWorkSpec::default());
        let key: Key = ("apps".into(), "s".into());
        world.sets.insert(key.clone(), state);
        (world, key)
    }

    #[test]
    fn a_set_keeps_the_work_of_a_decided_cluster() {
        let (world, key) = world_with_set(Vec::new());
        let (op, _) = next_sync(&world, &key, &world.sets[&key]);
        assert!(op.remove.is_empty(), "{:?}", op.remove);
    }

    #[test]
    fn a_set_that_cannot_render_leaves_running_works_alone() {
        // An override whose selector a newer hub no longer compiles: the set cannot render
        // c1's work, and must not take away the one running there.
        let (mut world, key) = world_with_set(vec![SetOverride::default()]);
        if let Some(s) = world.sets.get_mut(&key) {
            s.overrides = None;
        }
        let state = &world.sets[&key];
        let (op, plan) = next_sync(&world, &key, state);
        assert!(op.remove.is_empty(), "removed {:?}", op.remove);
        assert!(op.place.is_empty());
        let plan = plan.expect("a plan");
        assert!(plan.broken.contains("c1"));
        assert!(plan.clusters["c1"].1.is_err());
    }
}
