//! The placement controller's part: evaluate the placements a change touched and write the
//! decisions that changed.

use std::collections::BTreeSet;

use api::Condition;
use api::fleet::{PlacementStatus, conditions};
use chrono::{DateTime, Utc};

use super::world::{Key, World};
use crate::service::Hub;
use crate::service::placement::{self, Inputs};
use crate::service::placements::{Decide, Decisions};

/// A status as compared between evaluations: without the times and generations the write
/// stamps.
fn bare(status: &PlacementStatus) -> PlacementStatus {
    let mut s = status.clone();
    for c in &mut s.conditions {
        c.last_transition_time = None;
        c.observed_generation = None;
    }
    s
}

fn misconfigured(message: &str) -> PlacementStatus {
    PlacementStatus {
        conditions: vec![
            Condition {
                type_: conditions::PLACEMENT_MISCONFIGURED.into(),
                status: "True".into(),
                reason: "Misconfigured".into(),
                message: message.into(),
                ..Default::default()
            },
            Condition {
                type_: conditions::PLACEMENT_SATISFIED.into(),
                status: "False".into(),
                reason: "Misconfigured".into(),
                message: "the placement cannot be evaluated".into(),
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

/// Which placements a change to cluster `name` may move: those for which the cluster's
/// feasibility changed, and those that order or group clusters when it is feasible.
pub fn touched_by_cluster(world: &World, name: &str, now: DateTime<Utc>) -> Vec<Key> {
    let cluster = world.cluster(name);
    world
        .placements
        .iter()
        .filter(|(_, p)| {
            let Some(compiled) = &p.compiled else {
                return false;
            };
            let was = p.feasible.contains(name);
            let decided = p.decisions.clusters().any(|c| c == name);
            let is = cluster.is_some_and(|c| compiled.feasible(c, decided, now).feasible);
            was != is || (is && p.orders_clusters())
        })
        .map(|(k, _)| k.clone())
        .collect()
}

/// Evaluates the placements in `dirty` and writes what changed (all writes at once, so they
/// share a transaction); the placements whose decisions changed, and those whose write
/// failed (to try again).
pub async fn decide(
    hub: &Hub,
    world: &mut World,
    dirty: &BTreeSet<Key>,
) -> (BTreeSet<Key>, BTreeSet<Key>) {
    let now = Utc::now();
    let mut writes = Vec::new();
    for key in dirty {
        let Some(state) = world.placements.get(key) else {
            continue;
        };
        let (status, decisions, feasible, recheck_at) = match &state.compiled {
            // A stored spec that no longer compiles (a newer hub checks more) keeps the
            // decisions it had: emptying them would take the sets' works off every cluster.
            None => (
                misconfigured(
                    "the stored spec no longer compiles; write it again (its decisions are kept)",
                ),
                state.decisions.clone(),
                Default::default(),
                None,
            ),
            Some(compiled) => {
                let load = world.load_without(key);
                let previous = state.decided();
                let eval = placement::decide(
                    &key.1,
                    compiled,
                    &Inputs {
                        clusters: world.clusters(),
                        previous: &previous,
                        load: &load,
                        now,
                    },
                );
                let feasible = eval.feasible.into_iter().collect();
                (
                    eval.status,
                    Decisions::from_groups(&eval.groups),
                    feasible,
                    eval.recheck_at,
                )
            }
        };
        let state = world.placements.get_mut(key).expect("looked up above");
        state.feasible = feasible;
        state.recheck_at = recheck_at;
        if decisions == state.decisions && bare(&status) == bare(&state.placement.status) {
            continue;
        }
        writes.push((
            key.clone(),
            status,
            decisions,
            state.placement.metadata.generation,
        ));
    }
    let results =
        futures::future::join_all(writes.iter().map(|(key, status, decisions, generation)| {
            hub.write_decisions(Decide {
                namespace: key.0.clone(),
                name: key.1.clone(),
                generation: *generation,
                status: status.clone(),
                decisions: decisions.clone(),
            })
        }))
        .await;
    let (mut moved, mut failed) = (BTreeSet::new(), BTreeSet::new());
    for ((key, status, decisions, _), result) in writes.into_iter().zip(results) {
        match result {
            Ok(w) => {
                if !w.value.added.is_empty() || !w.value.removed.is_empty() {
                    tracing::info!(
                        placement = %format!("{}/{}", key.0, key.1),
                        added = ?w.value.added,
                        removed = ?w.value.removed,
                        "decisions changed"
                    );
                }
                if let Some(state) = world.placements.get_mut(&key) {
                    state.placement.status = status;
                }
                if world
                    .placements
                    .get(&key)
                    .is_some_and(|s| s.decisions != decisions)
                {
                    world.set_decisions(&key, decisions);
                    moved.insert(key);
                }
            }
            Err(e) => {
                tracing::warn!(placement = %format!("{}/{}", key.0, key.1), error = %e, "writing decisions failed; will retry");
                failed.insert(key);
            }
        }
    }
    (moved, failed)
}

/// The earliest time a placement must be evaluated again (a toleration running out).
pub fn next_recheck(world: &World) -> Option<DateTime<Utc>> {
    world.placements.values().filter_map(|p| p.recheck_at).min()
}
