//! Decision groups, status groups and PlacementDecision pages.

use super::*;
use api::fleet::{DECISION_GROUP_INDEX_LABEL, DECISION_GROUP_NAME_LABEL, PLACEMENT_LABEL};

fn canaries_and_rest() -> Vec<ManagedCluster> {
    let mut clusters = vec![
        cluster("canary-b", &[("canary", "true")]),
        cluster("canary-a", &[("canary", "true")]),
    ];
    for i in 0..8 {
        clusters.push(cluster(&format!("prod-{i}"), &[]));
    }
    clusters
}

#[test]
fn a_named_group_then_the_rest_in_percentage_chunks() {
    let p = compiled(json!({"decisionStrategy": {"groupStrategy": {
        "decisionGroups": [{"groupName": "canary", "groupClusterSelector":
            {"labelSelector": {"matchLabels": {"canary": "true"}}}}],
        "clustersPerDecisionGroup": "25%"}}}));
    let e = run(&p, &canaries_and_rest(), &[]);
    // 25% of 10 decided clusters, rounded up: 3 per group.
    let shape: Vec<(usize, &str, Vec<&str>)> = e
        .groups
        .iter()
        .map(|g| {
            (
                g.index,
                g.name.as_str(),
                g.clusters.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            (0, "canary", vec!["canary-a", "canary-b"]),
            (1, "", vec!["prod-0", "prod-1", "prod-2"]),
            (2, "", vec!["prod-3", "prod-4", "prod-5"]),
            (3, "", vec!["prod-6", "prod-7"]),
        ]
    );
    assert_eq!(
        &e.decided[..3],
        ["canary-a", "canary-b", "prod-0"],
        "decided in group order"
    );
    assert_eq!(
        explanation(&e, "canary-b").decision_group.as_deref(),
        Some("canary")
    );
    assert_eq!(
        explanation(&e, "prod-4").decision_group.as_deref(),
        Some("#2")
    );
    let status: Vec<(i32, &str, Vec<&str>, i32)> = e
        .status
        .decision_groups
        .iter()
        .map(|g| {
            (
                g.decision_group_index,
                g.decision_group_name.as_str(),
                g.decisions.iter().map(String::as_str).collect(),
                g.clusters_count,
            )
        })
        .collect();
    assert_eq!(
        status,
        vec![
            (0, "canary", vec!["web-decision-1"], 2),
            (1, "", vec!["web-decision-2"], 3),
            (2, "", vec!["web-decision-3"], 3),
            (3, "", vec!["web-decision-4"], 2),
        ]
    );
}

#[test]
fn a_number_per_group_chunks_named_groups_too() {
    let p = compiled(json!({"decisionStrategy": {"groupStrategy": {
        "decisionGroups": [
            {"groupName": "first", "groupClusterSelector": {"labelSelector": {"matchLabels": {"canary": "true"}}}},
            {"groupName": "again", "groupClusterSelector": {"labelSelector": {"matchLabels": {"canary": "true"}}}},
            {"groupName": "prod", "groupClusterSelector": {"celSelector": {"celExpressions":
                ["managedCluster.metadata.name.startsWith('prod-')"]}}}],
        "clustersPerDecisionGroup": 5}}}));
    let e = run(&p, &canaries_and_rest(), &[]);
    let shape: Vec<(&str, usize)> = e
        .groups
        .iter()
        .map(|g| (g.name.as_str(), g.clusters.len()))
        .collect();
    // A cluster goes to the first group that takes it; an empty named group is left out.
    assert_eq!(shape, [("first", 2), ("prod", 5), ("prod", 3)]);
    assert_eq!(
        e.groups.iter().map(|g| g.index).collect::<Vec<_>>(),
        [0, 1, 2]
    );
}

#[test]
fn no_decisions_still_have_one_empty_group_and_decision() {
    let p = compiled(json!({"clusterSets": ["none"]}));
    let e = run(&p, &canaries_and_rest(), &[]);
    assert_eq!(e.groups, [Group::default()]);
    let objects = decision_objects("ns", "web", &e.groups);
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].metadata.name, "web-decision-1");
    assert!(objects[0].status.decisions.is_empty());
    assert_eq!(e.status.decision_groups[0].decisions, ["web-decision-1"]);
}

#[test]
fn decision_objects_hold_at_most_a_hundred_clusters() {
    let clusters: Vec<ManagedCluster> = (0..250)
        .map(|i| {
            cluster(
                &format!("c{i:03}"),
                &[("canary", if i < 30 { "true" } else { "false" })],
            )
        })
        .collect();
    let p = compiled(
        json!({"decisionStrategy": {"groupStrategy": {"decisionGroups": [
        {"groupName": "canary", "groupClusterSelector": {"labelSelector": {"matchLabels": {"canary": "true"}}}}]}}}),
    );
    let e = run(&p, &clusters, &[]);
    assert_eq!(e.status.number_of_selected_clusters, 250);
    let objects = decision_objects("fleet", "web", &e.groups);
    let pages: Vec<(&str, usize, &str, &str)> = objects
        .iter()
        .map(|o| {
            (
                o.metadata.name.as_str(),
                o.status.decisions.len(),
                o.metadata.labels[DECISION_GROUP_INDEX_LABEL].as_str(),
                o.metadata.labels[DECISION_GROUP_NAME_LABEL].as_str(),
            )
        })
        .collect();
    assert_eq!(
        pages,
        [
            ("web-decision-1", 30, "0", "canary"),
            ("web-decision-2", 100, "1", ""),
            ("web-decision-3", 100, "1", ""),
            ("web-decision-4", 20, "1", ""),
        ]
    );
    for o in &objects {
        assert_eq!(o.metadata.labels[PLACEMENT_LABEL], "web");
        assert_eq!(o.metadata.namespace.as_deref(), Some("fleet"));
        assert_eq!(o.kind, "PlacementDecision");
        assert_eq!(o.api_version, api::fleet::PLACEMENT_API_VERSION);
    }
    assert_eq!(
        e.status.decision_groups[1].decisions,
        ["web-decision-2", "web-decision-3", "web-decision-4"]
    );
    assert_eq!(e.status.decision_groups[1].clusters_count, 220);
    let all: Vec<&str> = objects
        .iter()
        .flat_map(|o| o.status.decisions.iter().map(|d| d.cluster_name.as_str()))
        .collect();
    assert_eq!(
        all,
        e.decided.iter().map(String::as_str).collect::<Vec<_>>()
    );
}

#[test]
fn a_compiled_selector_for_other_callers() {
    let selector: api::fleet::ClusterSelector = serde_json::from_value(json!({
        "labelSelector": {"matchLabels": {"zone": "eu"}},
        "claimSelector": {"matchExpressions": [{"key": "platform", "operator": "In", "values": ["kind"]}]}}))
    .unwrap();
    let m = compile_selector(&selector, "spec.overrides[0].clusterSelector").unwrap();
    let eu = cluster("eu", &[("zone", "eu")]);
    assert_eq!(
        m.matches(&eu),
        Err("claim platform missing (wanted in [kind])".to_string())
    );
    assert_eq!(m.matches(&with_claims(eu, &[("platform", "kind")])), Ok(()));
    let bad: api::fleet::ClusterSelector = serde_json::from_value(json!({
        "labelSelector": {"matchExpressions": [{"key": "zone", "operator": "Near"}]}}))
    .unwrap();
    let errors = compile_selector(&bad, "spec.overrides[0].clusterSelector").unwrap_err();
    assert_eq!(
        errors[0].field,
        "spec.overrides[0].clusterSelector.labelSelector.matchExpressions[0].operator"
    );
}
