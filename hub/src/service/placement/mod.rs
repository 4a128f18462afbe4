//! The placement engine: which clusters a Placement chooses, and why. Pure: no store, no
//! writer, no async; the service calls it for explain, preview and validation, the
//! placement controller for decisions.
//!
//! The steps follow OCM v1beta1: [`Compiled::new`] checks and compiles a spec
//! ([`compile`]); [`evaluate`] filters every cluster ([`filter`]: acceptance, cluster sets,
//! predicates ([`selector`]), taints), scores the feasible ones ([`score`]), chooses
//! `numberOfClusters` of them under the spread constraints ([`spread`]) and splits the
//! choice into decision groups ([`groups`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use api::ManagedCluster;
use api::fleet::{ClusterExplanation, PlacementStatus, conditions};
use api::types::Condition;
use chrono::{DateTime, Utc};

pub mod compile;
pub mod filter;
pub mod groups;
pub mod score;
pub mod selector;
pub mod spread;

pub use filter::Filtered;
pub use groups::{DECISIONS_PER_OBJECT, Group, decision_objects};
pub use selector::{ClusterMatcher, compile_selector};

use groups::{ChunkSize, NamedGroup};
use score::BuiltIn;
use selector::CelScope;
use spread::SpreadRule;

/// A placement's spec, checked and compiled (selectors parsed, CEL programs compiled).
/// `Send + Sync`: the controller keeps them across awaits.
#[derive(Debug)]
pub struct Compiled {
    cluster_sets: Vec<String>,
    predicates: Vec<ClusterMatcher>,
    uses_cel: bool,
    number_of_clusters: Option<usize>,
    prioritizers: Vec<(BuiltIn, i64)>,
    spread: Vec<SpreadRule>,
    tolerations: Vec<filter::TolerationRule>,
    groups: Vec<NamedGroup>,
    chunk: ChunkSize,
}

impl Compiled {
    /// How many clusters the placement asks for; None: every feasible one.
    pub fn number_of_clusters(&self) -> Option<usize> {
        self.number_of_clusters
    }

    /// Whether its predicates use CEL (evaluations then convert each cluster once).
    pub fn uses_cel(&self) -> bool {
        self.uses_cel
    }
}

/// What an evaluation looks at.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// Every cluster the hub knows.
    pub clusters: &'a [ManagedCluster],
    /// This placement's current decisions (for Steady and NoSelectIfNew).
    pub previous: &'a BTreeSet<String>,
    /// Decisions of other placements per cluster (for Balance).
    pub load: &'a HashMap<String, u32>,
    /// The time tolerations are measured against.
    pub now: DateTime<Utc>,
}

/// The outcome of one evaluation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    /// The decided clusters, in group order.
    pub decided: Vec<String>,
    /// The decision groups.
    pub groups: Vec<Group>,
    /// Every cluster: decided first, then the other feasible ones by score, then the rest
    /// by name.
    pub explanations: Vec<ClusterExplanation>,
    /// The status as OCM writes it (`lastTransitionTime` left to the caller).
    pub status: PlacementStatus,
    /// When a `tolerationSeconds` runs out: evaluate again then.
    pub recheck_at: Option<DateTime<Utc>>,
    /// The clusters that passed the filters (the controller compares them when one
    /// cluster changes).
    pub feasible: Vec<String>,
}

/// A feasible cluster on its way through scoring and choosing.
struct Candidate<'a> {
    cluster: &'a ManagedCluster,
    filtered: Filtered,
    total: i64,
    row: usize,
}

/// Evaluates placement `name` (used in decision names) over `inputs`, with an explanation
/// for every cluster.
pub fn evaluate(name: &str, p: &Compiled, inputs: &Inputs<'_>) -> Evaluation {
    run(name, p, inputs, true)
}

/// As [`evaluate`] without explanations (`explanations` is empty): the same decisions,
/// groups, status and `recheck_at`, for the controller, which keeps no reasons.
pub fn decide(name: &str, p: &Compiled, inputs: &Inputs<'_>) -> Evaluation {
    run(name, p, inputs, false)
}

fn run(name: &str, p: &Compiled, inputs: &Inputs<'_>, explain: bool) -> Evaluation {
    let mut scope = CelScope::new();
    let mut recheck_at: Option<DateTime<Utc>> = None;
    let mut candidates = Vec::new();
    let mut rejected = Vec::new();
    for cluster in inputs.clusters {
        let was_decided = inputs.previous.contains(&cluster.metadata.name);
        let filtered = p.filter_in(cluster, was_decided, inputs.now, &mut scope, explain);
        if filtered.feasible {
            if let Some(at) = filtered.recheck_at {
                recheck_at = Some(recheck_at.map_or(at, |r| r.min(at)));
            }
            candidates.push(Candidate {
                cluster,
                filtered,
                total: 0,
                row: candidates.len(),
            });
        } else {
            rejected.push((cluster, filtered));
        }
    }
    let feasible: Vec<&ManagedCluster> = candidates.iter().map(|c| c.cluster).collect();
    let scores = score::score(&p.prioritizers, &feasible, inputs.previous, inputs.load);
    for c in &mut candidates {
        c.total = scores.totals[c.row];
    }
    // Best first: clusters with an untolerated PreferNoSelect taint after all others, then
    // by total score, ties by name.
    candidates.sort_by(|a, b| {
        a.filtered
            .prefer_not
            .cmp(&b.filtered.prefer_not)
            .then(b.total.cmp(&a.total))
            .then_with(|| a.cluster.metadata.name.cmp(&b.cluster.metadata.name))
    });
    let ordered: Vec<&ManagedCluster> = candidates.iter().map(|c| c.cluster).collect();
    let picked = match p.number_of_clusters {
        None => spread::Picked {
            chosen: (0..ordered.len()).collect(),
            notes: vec![None; ordered.len()],
        },
        Some(want) => spread::pick(&p.spread, &ordered, want),
    };
    let chosen: Vec<&ManagedCluster> = picked.chosen.iter().map(|&i| ordered[i]).collect();
    let (groups, members) = groups::form(&chosen, &p.groups, p.chunk);
    let decided: Vec<String> = groups.iter().flat_map(|g| g.clusters.clone()).collect();
    let status = status(name, p, &groups, decided.len());
    // Each group's members as candidate positions: explanations need no name lookups.
    let members: Vec<Vec<usize>> = members
        .into_iter()
        .map(|m| m.into_iter().map(|k| picked.chosen[k]).collect())
        .collect();
    let feasible = candidates
        .iter()
        .map(|c| c.cluster.metadata.name.clone())
        .collect();
    let explanations = if explain {
        self::explain(
            p,
            &candidates,
            &scores,
            &picked,
            &groups,
            &members,
            rejected,
        )
    } else {
        Vec::new()
    };
    Evaluation {
        decided,
        groups,
        explanations,
        status,
        recheck_at,
        feasible,
    }
}

fn condition(type_: &str, ok: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: None,
        last_transition_time: None,
    }
}

/// The status with OCM's conditions, reasons and messages.
fn status(name: &str, p: &Compiled, groups: &[Group], selected: usize) -> PlacementStatus {
    let satisfied = match p.number_of_clusters {
        Some(want) if selected == want => condition(
            conditions::PLACEMENT_SATISFIED,
            true,
            "AllDecisionsScheduled",
            "All cluster decisions scheduled".to_string(),
        ),
        None if selected > 0 => condition(
            conditions::PLACEMENT_SATISFIED,
            true,
            "AllDecisionsScheduled",
            "All cluster decisions scheduled".to_string(),
        ),
        _ if selected == 0 => condition(
            conditions::PLACEMENT_SATISFIED,
            false,
            "NoManagedClusterMatched",
            "No managed cluster matches any of the cluster predicate".to_string(),
        ),
        want => condition(
            conditions::PLACEMENT_SATISFIED,
            false,
            "NotAllDecisionsScheduled",
            format!(
                "{selected} cluster(s) selected, {} asked",
                want.unwrap_or(selected)
            ),
        ),
    };
    let misconfigured = condition(
        conditions::PLACEMENT_MISCONFIGURED,
        false,
        "Succeedconfigured",
        "Placement configurations check pass".to_string(),
    );
    PlacementStatus {
        number_of_selected_clusters: i32::try_from(selected).unwrap_or(i32::MAX),
        decision_groups: groups::group_status(name, groups),
        conditions: vec![satisfied, misconfigured],
    }
}

/// Every cluster's explanation: decided first (in decision order), then the other feasible
/// ones by rank, then the filtered ones by name.
fn explain(
    p: &Compiled,
    candidates: &[Candidate<'_>],
    scores: &score::Scores,
    picked: &spread::Picked,
    groups: &[Group],
    members: &[Vec<usize>],
    mut rejected: Vec<(&ManagedCluster, Filtered)>,
) -> Vec<ClusterExplanation> {
    let mut group_of: Vec<Option<&Group>> = vec![None; candidates.len()];
    let mut rank_chosen = vec![false; candidates.len()];
    for (g, m) in groups.iter().zip(members) {
        for &i in m {
            group_of[i] = Some(g);
            rank_chosen[i] = true;
        }
    }
    let last_chosen = picked.chosen.iter().copied().max();
    let want = p.number_of_clusters;
    let full = want.is_none_or(|w| picked.chosen.len() >= w);
    let explained = |i: usize| {
        let c = &candidates[i];
        let mut reasons = c.filtered.reasons.clone();
        let selected = rank_chosen[i];
        if selected {
            reasons.push(format!("chosen with score {}", c.total));
            reasons.extend(picked.notes[i].clone());
        } else if want == Some(0) {
            reasons.push("numberOfClusters is 0".to_string());
        } else if let Some(note) = picked.notes[i]
            .clone()
            .filter(|_| !full || last_chosen.is_some_and(|l| i < l))
        {
            reasons.push(note);
        } else if let Some(l) = last_chosen {
            let last = &candidates[l];
            let name = &last.cluster.metadata.name;
            reasons.push(if c.filtered.prefer_not && !last.filtered.prefer_not {
                format!("ranked after every cluster without a PreferNoSelect taint; {name} was the last chosen")
            } else if c.total < last.total {
                format!("score {} < {} of the last chosen ({name})", c.total, last.total)
            } else if c.total > last.total {
                format!("left out although its score {} > {} of the last chosen ({name})", c.total, last.total)
            } else {
                format!(
                    "score {} = {} of the last chosen ({name}); ties go to the name first in order",
                    c.total, last.total
                )
            });
        } else {
            reasons.push("not chosen: no pick was possible".to_string());
        }
        let names = p.prioritizers.iter().map(|(b, _)| b.name().to_string());
        ClusterExplanation {
            cluster_name: c.cluster.metadata.name.clone(),
            selected,
            feasible: true,
            score: Some(c.total),
            scores: names.zip(scores.row(c.row).iter().copied()).collect(),
            decision_group: group_of[i].map(|g| {
                if g.name.is_empty() {
                    format!("#{}", g.index)
                } else {
                    g.name.clone()
                }
            }),
            reasons,
        }
    };
    let mut out = Vec::with_capacity(candidates.len() + rejected.len());
    // Decided ones in decision (group) order.
    out.extend(members.iter().flatten().map(|&i| explained(i)));
    out.extend(
        (0..candidates.len())
            .filter(|&i| !rank_chosen[i])
            .map(explained),
    );
    rejected.sort_by(|a, b| a.0.metadata.name.cmp(&b.0.metadata.name));
    out.extend(rejected.into_iter().map(|(cluster, f)| ClusterExplanation {
        cluster_name: cluster.metadata.name.clone(),
        selected: false,
        feasible: false,
        score: None,
        scores: BTreeMap::new(),
        decision_group: None,
        reasons: f.reasons,
    }));
    out
}

#[cfg(test)]
mod tests;
