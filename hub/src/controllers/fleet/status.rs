//! A set's status from what the controller knows: OCM's summary, placement summaries and
//! conditions, and our per-cluster table.

use std::collections::BTreeSet;

use api::Condition;
use api::fleet::{
    ManifestWorkReplicaSetStatus, PlacementSummary, SetClusterStatus, SetSummary, conditions,
};

use super::world::{Key, SetState, WorkView, World};

fn count<'a>(works: impl Iterator<Item = &'a WorkView>) -> SetSummary {
    let mut s = SetSummary::default();
    for w in works.filter(|w| !w.deleting) {
        s.total += 1;
        s.applied += i32::from(w.is("Applied"));
        s.available += i32::from(w.is("Available"));
        s.degraded += i32::from(w.is("Degraded"));
        s.progressing += i32::from(w.is("Progressing"));
    }
    s
}

fn condition(type_: &str, ok: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        ..Default::default()
    }
}

/// The status a set should show now.
pub fn status_of(world: &World, key: &Key, state: &SetState) -> ManifestWorkReplicaSetStatus {
    let refs = &state.set.spec.placement_refs;
    let kept: Vec<&WorkView> = state
        .placed_by
        .keys()
        .filter(|c| !state.messages.contains_key(*c))
        .filter_map(|c| state.works.get(c))
        .collect();
    let summary = count(kept.iter().copied());
    let mut placements_summary = Vec::new();
    for r in refs {
        let clusters: BTreeSet<&String> = state
            .placed_by
            .iter()
            .filter(|(_, p)| **p == r.name)
            .map(|(c, _)| c)
            .collect();
        let groups = world
            .placements
            .get(&(key.0.clone(), r.name.clone()))
            .map(|p| p.decisions.groups.clone())
            .unwrap_or_default();
        let available = groups
            .iter()
            .filter(|g| {
                g.clusters.iter().all(|c| {
                    state
                        .works
                        .get(c)
                        .is_some_and(|w| w.is("Available") && !w.deleting)
                })
            })
            .count();
        placements_summary.push(PlacementSummary {
            name: r.name.clone(),
            available_decision_groups: format!("{available}/{}", groups.len()),
            summary: count(clusters.iter().filter_map(|c| state.works.get(*c))),
        });
    }
    let missing: Vec<&str> = refs
        .iter()
        .filter(|r| {
            !world
                .placements
                .contains_key(&(key.0.clone(), r.name.clone()))
        })
        .map(|r| r.name.as_str())
        .collect();
    let verified = if !missing.is_empty() {
        condition(
            conditions::PLACEMENT_VERIFIED,
            false,
            "PlacementDecisionNotFound",
            format!(
                "placement(s) not found in namespace {:?}: {}",
                key.0,
                missing.join(", ")
            ),
        )
    } else if state.placed_by.is_empty() {
        condition(
            conditions::PLACEMENT_VERIFIED,
            false,
            "PlacementDecisionEmpty",
            "the placements decided no cluster".into(),
        )
    } else {
        condition(
            conditions::PLACEMENT_VERIFIED,
            true,
            "AsExpected",
            String::new(),
        )
    };
    let wanted = state.placed_by.len();
    let refused: Vec<String> = state
        .messages
        .iter()
        .take(3)
        .map(|(c, m)| format!("{c}: {m}"))
        .collect();
    let written = state
        .placed_by
        .keys()
        .filter(|c| {
            state.rendered.contains_key(*c) && state.works.get(*c).is_some_and(|w| !w.deleting)
        })
        .count();
    let applied_cond = if !state.messages.is_empty() {
        condition(
            conditions::MANIFESTWORK_APPLIED,
            false,
            "NotAsExpected",
            format!(
                "{} of {wanted} decided cluster(s) have no work: {}",
                state.messages.len(),
                refused.join("; ")
            ),
        )
    } else if written == wanted && wanted > 0 {
        condition(
            conditions::MANIFESTWORK_APPLIED,
            true,
            "AsExpected",
            String::new(),
        )
    } else {
        condition(
            conditions::MANIFESTWORK_APPLIED,
            false,
            "Processing",
            format!("{written} of {wanted} work(s) written"),
        )
    };
    let rolled_out =
        if wanted > 0 && summary.applied as usize == wanted && summary.total as usize == wanted {
            condition(
                conditions::PLACEMENT_ROLLED_OUT,
                true,
                "Complete",
                String::new(),
            )
        } else {
            condition(
                conditions::PLACEMENT_ROLLED_OUT,
                false,
                "Progressing",
                format!("{} of {wanted} work(s) applied", summary.applied),
            )
        };
    let clusters = state
        .placed_by
        .iter()
        .map(|(c, p)| SetClusterStatus {
            cluster_name: c.clone(),
            placement: p.clone(),
            replicas: state
                .set
                .spec
                .replica_split
                .as_ref()
                .map(|_| state.shares.get(c).copied().unwrap_or(0)),
            conditions: state
                .works
                .get(c)
                .map(|w| w.conditions.clone())
                .unwrap_or_default(),
            message: state.messages.get(c).cloned().unwrap_or_default(),
        })
        .collect();
    ManifestWorkReplicaSetStatus {
        conditions: vec![verified, rolled_out, applied_cond],
        summary,
        placements_summary,
        clusters,
    }
}

/// A status as compared between writes: without the times and generations the write stamps.
pub fn bare(status: &ManifestWorkReplicaSetStatus) -> ManifestWorkReplicaSetStatus {
    let mut s = status.clone();
    for c in &mut s.conditions {
        c.last_transition_time = None;
        c.observed_generation = None;
    }
    s
}
