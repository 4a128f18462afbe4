//! Decision groups and the PlacementDecision pages that hold them.

use std::collections::BTreeMap;

use api::ObjectMeta;
use api::fleet::{
    ClusterDecision, DECISION_GROUP_INDEX_LABEL, DECISION_GROUP_NAME_LABEL, DecisionGroupStatus,
    PLACEMENT_API_VERSION, PLACEMENT_LABEL, PlacementDecision, PlacementDecisionStatus,
};
use api::{FieldError, ManagedCluster};
use serde_json::Value;

use super::selector::{CelScope, ClusterMatcher, error};

/// Most clusters in one PlacementDecision (OCM's page size).
pub const DECISIONS_PER_OBJECT: usize = 100;

/// One decision group: a chunk of a named group or of the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    /// From 0, in order.
    pub index: usize,
    /// The named group it comes from; empty for the rest.
    pub name: String,
    /// Its clusters, by name.
    pub clusters: Vec<String>,
}

/// A named group, compiled.
#[derive(Debug)]
pub(crate) struct NamedGroup {
    pub(crate) name: String,
    pub(crate) selector: ClusterMatcher,
}

/// `clustersPerDecisionGroup`, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChunkSize {
    Count(usize),
    Percent(u32),
}

impl Default for ChunkSize {
    fn default() -> Self {
        ChunkSize::Percent(100)
    }
}

impl ChunkSize {
    /// Reads `N` (≥ 1) or `"N%"` (1..=100); a number in a string is taken as a number,
    /// as Kubernetes' IntOrString does.
    pub(crate) fn parse(value: &Value, field: &str) -> Result<ChunkSize, FieldError> {
        let bad = || {
            error(
                field,
                format!("{value} is neither a number ≥ 1 nor a percentage from 1% to 100%"),
            )
        };
        match value {
            Value::Number(n) => match n.as_u64() {
                Some(n) if n >= 1 => Ok(ChunkSize::Count(usize::try_from(n).map_err(|_| bad())?)),
                _ => Err(bad()),
            },
            Value::String(s) => {
                if let Some(p) = s.strip_suffix('%') {
                    match p.parse::<u32>() {
                        Ok(p) if (1..=100).contains(&p) => Ok(ChunkSize::Percent(p)),
                        _ => Err(bad()),
                    }
                } else {
                    match s.parse::<usize>() {
                        Ok(n) if n >= 1 => Ok(ChunkSize::Count(n)),
                        _ => Err(bad()),
                    }
                }
            }
            _ => Err(bad()),
        }
    }

    /// Clusters per group when `decided` clusters are decided in all (at least 1).
    fn per_group(self, decided: usize) -> usize {
        match self {
            ChunkSize::Count(n) => n.max(1),
            ChunkSize::Percent(p) => decided.saturating_mul(p as usize).div_ceil(100).max(1),
        }
    }
}

/// Splits the decided clusters into groups: named groups in order take the clusters their
/// selector accepts (a cluster goes to the first), the rest follow; every group is chunked.
/// Clusters are in name order within a group so chunks do not move when scores do. Also
/// returns each group's members as positions in `decided`.
pub(crate) fn form(
    decided: &[&ManagedCluster],
    named: &[NamedGroup],
    chunk: ChunkSize,
) -> (Vec<Group>, Vec<Vec<usize>>) {
    let mut remaining: Vec<usize> = (0..decided.len()).collect();
    remaining.sort_by(|&a, &b| decided[a].metadata.name.cmp(&decided[b].metadata.name));
    let mut scope = CelScope::new();
    let mut parts: Vec<(&str, Vec<usize>)> = Vec::new();
    for group in named {
        let (mine, rest): (Vec<usize>, Vec<usize>) = remaining
            .into_iter()
            .partition(|&c| group.selector.accepts_in(decided[c], &mut scope));
        remaining = rest;
        if !mine.is_empty() {
            parts.push((&group.name, mine));
        }
    }
    if !remaining.is_empty() {
        parts.push(("", remaining));
    }
    let size = chunk.per_group(decided.len());
    let mut groups = Vec::new();
    let mut members = Vec::new();
    for (name, clusters) in parts {
        for piece in clusters.chunks(size) {
            groups.push(Group {
                index: groups.len(),
                name: name.to_string(),
                clusters: piece
                    .iter()
                    .map(|&c| decided[c].metadata.name.clone())
                    .collect(),
            });
            members.push(piece.to_vec());
        }
    }
    if groups.is_empty() {
        // OCM keeps one (empty) group and decision so consumers always find the list.
        groups.push(Group::default());
        members.push(Vec::new());
    }
    (groups, members)
}

/// `<placement>-decision-<k>`, k from 1.
fn decision_name(placement: &str, k: usize) -> String {
    format!("{placement}-decision-{k}")
}

/// Each group's PlacementDecision names, in order, numbered across groups.
fn names_per_group(placement: &str, groups: &[Group]) -> Vec<Vec<String>> {
    let mut k = 0;
    groups
        .iter()
        .map(|g| {
            let pages = g.clusters.len().div_ceil(DECISIONS_PER_OBJECT).max(1);
            (0..pages)
                .map(|_| {
                    k += 1;
                    decision_name(placement, k)
                })
                .collect()
        })
        .collect()
}

/// The status's `decisionGroups`.
pub(crate) fn group_status(placement: &str, groups: &[Group]) -> Vec<DecisionGroupStatus> {
    groups
        .iter()
        .zip(names_per_group(placement, groups))
        .map(|(g, decisions)| DecisionGroupStatus {
            decision_group_index: i32::try_from(g.index).unwrap_or(i32::MAX),
            decision_group_name: g.name.clone(),
            decisions,
            clusters_count: i32::try_from(g.clusters.len()).unwrap_or(i32::MAX),
        })
        .collect()
}

/// The PlacementDecision objects for an evaluation: at most 100 clusters each, one or more
/// per group, labelled with the placement and the group's index and name.
pub fn decision_objects(namespace: &str, name: &str, groups: &[Group]) -> Vec<PlacementDecision> {
    let mut objects = Vec::new();
    for (group, names) in groups.iter().zip(names_per_group(name, groups)) {
        let mut pages = group.clusters.chunks(DECISIONS_PER_OBJECT);
        for object_name in names {
            let page = pages.next().unwrap_or(&[]);
            let labels = BTreeMap::from([
                (PLACEMENT_LABEL.to_string(), name.to_string()),
                (
                    DECISION_GROUP_INDEX_LABEL.to_string(),
                    group.index.to_string(),
                ),
                (DECISION_GROUP_NAME_LABEL.to_string(), group.name.clone()),
            ]);
            objects.push(PlacementDecision {
                api_version: PLACEMENT_API_VERSION.to_string(),
                kind: "PlacementDecision".to_string(),
                metadata: ObjectMeta {
                    name: object_name,
                    namespace: Some(namespace.to_string()),
                    labels,
                    ..ObjectMeta::default()
                },
                status: PlacementDecisionStatus {
                    decisions: page
                        .iter()
                        .map(|c| ClusterDecision {
                            cluster_name: c.clone(),
                            reason: String::new(),
                        })
                        .collect(),
                },
            });
        }
    }
    objects
}
