//! The per-cluster table of a placement's explanation, shared by `hub describe placement`
//! and `hub placement preview`.

use api::fleet::{PlacementExplanation, PlacementStatus};
use chrono::{DateTime, Utc};

use super::cell;
use crate::cli::support::output::Table;
use crate::cli::support::text::{conditions_table, field, indent};

/// Every cluster of an explanation: CLUSTER, SELECTED, SCORE, GROUP, WHY (its reasons
/// joined by `; `). A cluster that failed the filters has no score (`-`); a feasible one
/// that lost says `no` with its score.
pub fn clusters_table(explanation: &PlacementExplanation) -> String {
    if explanation.clusters.is_empty() {
        return "  <no cluster the caller may read>\n".into();
    }
    let mut t = Table::new(&["CLUSTER", "SELECTED", "SCORE", "GROUP", "WHY"]);
    for c in &explanation.clusters {
        let selected = match (c.selected, c.feasible) {
            (true, _) => "yes",
            (false, true) => "no",
            (false, false) => "filtered",
        };
        t.row(vec![
            c.cluster_name.clone(),
            selected.into(),
            c.score.map_or_else(|| "-".into(), |s| s.to_string()),
            cell(c.decision_group.clone().unwrap_or_default()),
            cell(c.reasons.join("; ")),
        ]);
    }
    indent(&t.render())
}

/// The decided count and the decision groups of a placement's status.
pub fn status_summary(out: &mut String, status: &PlacementStatus) {
    field(out, "Selected", status.number_of_selected_clusters);
    if status.decision_groups.is_empty() {
        return;
    }
    let mut t = Table::new(&["INDEX", "NAME", "CLUSTERS", "DECISIONS"]);
    for g in &status.decision_groups {
        t.row(vec![
            g.decision_group_index.to_string(),
            cell(g.decision_group_name.clone()),
            g.clusters_count.to_string(),
            cell(g.decisions.join(",")),
        ]);
    }
    out.push_str("Decision groups:\n");
    out.push_str(&indent(&t.render()));
}

/// The text `hub placement preview` prints: the outcome and the per-cluster table.
pub fn preview_text(explanation: &PlacementExplanation, now: DateTime<Utc>) -> String {
    let mut out = String::new();
    status_summary(&mut out, &explanation.status);
    out.push_str("Conditions:\n");
    out.push_str(&conditions_table(&explanation.status.conditions, None, now));
    out.push_str("Clusters:\n");
    out.push_str(&clusters_table(explanation));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::fleet::ClusterExplanation;

    #[test]
    fn every_cluster_says_why() {
        let e = PlacementExplanation {
            clusters: vec![
                ClusterExplanation {
                    cluster_name: "c1".into(),
                    selected: true,
                    feasible: true,
                    score: Some(120),
                    decision_group: Some("canary".into()),
                    reasons: vec!["highest score".into()],
                    ..Default::default()
                },
                ClusterExplanation {
                    cluster_name: "c2".into(),
                    selected: false,
                    feasible: false,
                    reasons: vec![
                        "predicates[0].requiredClusterSelector.labelSelector: env=prod does not match env=dev".into(),
                        "taint unreachable not tolerated".into(),
                    ],
                    ..Default::default()
                },
                ClusterExplanation {
                    cluster_name: "c3".into(),
                    selected: false,
                    feasible: true,
                    score: Some(40),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            clusters_table(&e),
            "  CLUSTER   SELECTED   SCORE   GROUP    WHY\n\
             \x20 c1        yes        120     canary   highest score\n\
             \x20 c2        filtered   -       -        predicates[0].requiredClusterSelector.labelSelector: env=prod does not match env=dev; taint unreachable not tolerated\n\
             \x20 c3        no         40      -        -\n"
        );
    }
}
