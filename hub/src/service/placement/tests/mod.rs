//! Unit tests of the placement engine. Helpers here; selection and filters in this file,
//! scores and choosing in `choosing`, groups and decisions in `grouping`, validation in
//! `validation`.

use std::collections::{BTreeSet, HashMap};

use api::fleet::{PlacementSpec, Taint};
use api::{Claim, ManagedCluster};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};

use super::*;

mod choosing;
mod grouping;
mod validation;

/// An accepted cluster with these labels.
pub(super) fn cluster(name: &str, labels: &[(&str, &str)]) -> ManagedCluster {
    let mut c = ManagedCluster::new(
        name,
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    c.spec.hub_accepts_client = true;
    c
}

pub(super) fn with_claims(mut c: ManagedCluster, claims: &[(&str, &str)]) -> ManagedCluster {
    c.status.claims = claims
        .iter()
        .map(|(n, v)| Claim {
            name: n.to_string(),
            value: v.to_string(),
        })
        .collect();
    c
}

pub(super) fn with_taint(
    mut c: ManagedCluster,
    key: &str,
    value: &str,
    effect: &str,
    added: Option<DateTime<Utc>>,
) -> ManagedCluster {
    let taint = Taint {
        key: key.to_string(),
        value: value.to_string(),
        effect: effect.to_string(),
        time_added: added,
    };
    c.spec.taints.push(serde_json::to_value(taint).unwrap());
    c
}

pub(super) fn with_allocatable(mut c: ManagedCluster, cpu: &str, memory: &str) -> ManagedCluster {
    if !cpu.is_empty() {
        c.status.allocatable.insert("cpu".into(), cpu.into());
    }
    if !memory.is_empty() {
        c.status.allocatable.insert("memory".into(), memory.into());
    }
    c
}

pub(super) fn spec(value: Value) -> PlacementSpec {
    serde_json::from_value(value).expect("a placement spec")
}

pub(super) fn compiled(value: Value) -> Compiled {
    Compiled::new(&spec(value)).expect("a valid spec")
}

pub(super) fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
}

/// Evaluates with the given previous decisions and no load from other placements.
pub(super) fn run(p: &Compiled, clusters: &[ManagedCluster], previous: &[&str]) -> Evaluation {
    run_with(p, clusters, previous, &HashMap::new(), now())
}

pub(super) fn run_with(
    p: &Compiled,
    clusters: &[ManagedCluster],
    previous: &[&str],
    load: &HashMap<String, u32>,
    now: DateTime<Utc>,
) -> Evaluation {
    let previous: BTreeSet<String> = previous.iter().map(|s| s.to_string()).collect();
    evaluate(
        "web",
        p,
        &Inputs {
            clusters,
            previous: &previous,
            load,
            now,
        },
    )
}

/// The decided clusters, sorted (for set comparisons).
pub(super) fn chosen(e: &Evaluation) -> Vec<&str> {
    let mut names: Vec<&str> = e.decided.iter().map(String::as_str).collect();
    names.sort();
    names
}

pub(super) fn explanation<'e>(e: &'e Evaluation, cluster: &str) -> &'e ClusterExplanation {
    e.explanations
        .iter()
        .find(|x| x.cluster_name == cluster)
        .unwrap_or_else(|| panic!("no explanation for {cluster}"))
}

pub(super) fn reasons(e: &Evaluation, cluster: &str) -> String {
    explanation(e, cluster).reasons.join(" | ")
}

fn fleet() -> Vec<ManagedCluster> {
    vec![
        cluster("eu-1", &[("zone", "eu"), ("tier", "gold")]),
        cluster("eu-2", &[("zone", "eu")]),
        cluster("us-1", &[("zone", "us"), ("tier", "silver")]),
        cluster("bare", &[]),
    ]
}

#[test]
fn compiled_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Compiled>();
    check::<ClusterMatcher>();
}

#[test]
fn label_selection_with_every_operator() {
    let table: Vec<(Value, Vec<&str>)> = vec![
        (json!({"matchLabels": {"zone": "eu"}}), vec!["eu-1", "eu-2"]),
        (
            json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["us", "ap"]}]}),
            vec!["us-1"],
        ),
        (
            json!({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["eu"]}]}),
            vec!["bare", "us-1"],
        ),
        (
            json!({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}),
            vec!["eu-1", "us-1"],
        ),
        (
            json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}),
            vec!["bare", "eu-2"],
        ),
        (
            json!({"matchLabels": {"zone": "eu"},
                   "matchExpressions": [{"key": "tier", "operator": "In", "values": ["gold"]}]}),
            vec!["eu-1"],
        ),
        (json!({}), vec!["bare", "eu-1", "eu-2", "us-1"]),
    ];
    for (selector, want) in table {
        let p = compiled(json!({
            "predicates": [{"requiredClusterSelector": {"labelSelector": selector.clone()}}]
        }));
        assert_eq!(chosen(&run(&p, &fleet(), &[])), want, "selector {selector}");
    }
}

#[test]
fn a_failed_label_term_is_named_with_its_predicate() {
    let p = compiled(json!({"predicates": [
        {"requiredClusterSelector": {"labelSelector": {"matchLabels": {"zone": "eu"}}}},
        {"requiredClusterSelector": {"labelSelector": {"matchExpressions": [
            {"key": "tier", "operator": "Exists"}]}}}
    ]}));
    let e = run(&p, &fleet(), &[]);
    assert_eq!(chosen(&e), ["eu-1", "eu-2", "us-1"], "predicates are ORed");
    let bare = explanation(&e, "bare");
    assert!(!bare.feasible && !bare.selected);
    assert_eq!(
        bare.reasons,
        [
            "predicate 0: label zone missing (wanted in [eu])",
            "predicate 1: label tier missing"
        ]
    );
    let p = compiled(
        json!({"predicates": [{"requiredClusterSelector": {"labelSelector":
        {"matchLabels": {"zone": "eu"}}}}]}),
    );
    assert_eq!(
        reasons(&run(&p, &fleet(), &[]), "us-1"),
        "predicate 0: label zone=us not in [eu]"
    );
}

#[test]
fn claim_selection() {
    let clusters = vec![
        with_claims(
            cluster("a", &[]),
            &[("region", "eu-west"), ("platform", "kind")],
        ),
        with_claims(cluster("b", &[]), &[("region", "us-east")]),
        cluster("c", &[]),
    ];
    let table: Vec<(Value, Vec<&str>)> = vec![
        (
            json!([{"key": "region", "operator": "In", "values": ["eu-west"]}]),
            vec!["a"],
        ),
        (
            json!([{"key": "region", "operator": "NotIn", "values": ["eu-west"]}]),
            vec!["b", "c"],
        ),
        (
            json!([{"key": "platform", "operator": "Exists"}]),
            vec!["a"],
        ),
        (
            json!([{"key": "platform", "operator": "DoesNotExist"}]),
            vec!["b", "c"],
        ),
    ];
    for (expressions, want) in table {
        let p = compiled(json!({"predicates": [{"requiredClusterSelector":
            {"claimSelector": {"matchExpressions": expressions.clone()}}}]}));
        assert_eq!(
            chosen(&run(&p, &clusters, &[])),
            want,
            "claims {expressions}"
        );
    }
    let p = compiled(json!({"predicates": [{"requiredClusterSelector":
        {"claimSelector": {"matchExpressions": [{"key": "region", "operator": "Exists"}]}}}]}));
    assert_eq!(
        reasons(&run(&p, &clusters, &[]), "c"),
        "predicate 0: claim region missing"
    );
}

#[test]
fn cel_selection_over_the_cluster_document() {
    let clusters = vec![
        with_allocatable(cluster("big", &[("zone", "eu")]), "16", "64Gi"),
        with_allocatable(cluster("small", &[("zone", "eu")]), "2", "4Gi"),
        with_allocatable(cluster("far", &[("zone", "us")]), "32", "64Gi"),
    ];
    let p = compiled(
        json!({"predicates": [{"requiredClusterSelector": {"celSelector":
        {"celExpressions": [
            "managedCluster.metadata.labels.zone == 'eu'",
            "int(managedCluster.status.allocatable.cpu) >= 4"
        ]}}}]}),
    );
    let e = run(&p, &clusters, &[]);
    assert_eq!(chosen(&e), ["big"]);
    assert_eq!(
        reasons(&e, "small"),
        "predicate 0: CEL expression 1 `int(managedCluster.status.allocatable.cpu) >= 4` was false"
    );
    assert!(
        reasons(&e, "far").contains("CEL expression 0"),
        "{}",
        reasons(&e, "far")
    );
    // Label and CEL parts of one selector are ANDed.
    let p = compiled(json!({"predicates": [{"requiredClusterSelector": {
        "labelSelector": {"matchLabels": {"zone": "us"}},
        "celSelector": {"celExpressions": ["managedCluster.metadata.name.startsWith('f')"]}}}]}));
    assert_eq!(chosen(&run(&p, &clusters, &[])), ["far"]);
}

#[test]
fn a_cel_runtime_error_fails_the_cluster_with_a_reason() {
    let clusters = vec![cluster("tagged", &[("team", "a")]), cluster("plain", &[])];
    let p = compiled(
        json!({"predicates": [{"requiredClusterSelector": {"celSelector":
        {"celExpressions": ["managedCluster.metadata.labels.team == 'a'"]}}}]}),
    );
    let e = run(&p, &clusters, &[]);
    assert_eq!(chosen(&e), ["tagged"]);
    let why = reasons(&e, "plain");
    assert!(
        why.starts_with(
            "predicate 0: CEL expression 0 `managedCluster.metadata.labels.team == 'a'` failed:"
        ) && why.contains("team"),
        "{why}"
    );
    let p = compiled(
        json!({"predicates": [{"requiredClusterSelector": {"celSelector":
        {"celExpressions": ["managedCluster.metadata.name"]}}}]}),
    );
    let e = run(&p, &clusters, &[]);
    assert!(e.decided.is_empty());
    assert!(
        reasons(&e, "plain").contains("not a boolean"),
        "{}",
        reasons(&e, "plain")
    );
}

#[test]
fn cel_compile_errors_name_the_position() {
    let errors = Compiled::new(&spec(json!({"predicates": [{"requiredClusterSelector":
        {"celSelector": {"celExpressions": ["true", "managedCluster.metadata.name == "]}}}]})))
    .unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        errors[0].field,
        "spec.predicates[0].requiredClusterSelector.celSelector.celExpressions[1]"
    );
    // The expression ends at column 32: that is where the operand is missing.
    assert!(
        errors[0]
            .message
            .starts_with("CEL does not compile: line 1, column 33: "),
        "{}",
        errors[0].message
    );
    let errors = Compiled::new(&spec(json!({"predicates": [{"requiredClusterSelector":
        {"celSelector": {"celExpressions": ["true &&\n  managedCluster.(x"]}}}]})))
    .unwrap_err();
    assert!(
        errors[0].message.contains("line 2, column "),
        "{}",
        errors[0].message
    );
}

#[test]
fn cluster_sets_acceptance_and_deletion_filter() {
    let mut gone = cluster("gone", &[(api::fleet::CLUSTER_SET_LABEL, "prod")]);
    gone.metadata.deletion_timestamp = Some(now());
    let mut pending = cluster("pending", &[(api::fleet::CLUSTER_SET_LABEL, "prod")]);
    pending.spec.hub_accepts_client = false;
    let clusters = vec![
        cluster("p1", &[(api::fleet::CLUSTER_SET_LABEL, "prod")]),
        cluster("d1", &[(api::fleet::CLUSTER_SET_LABEL, "dev")]),
        cluster("none", &[]),
        gone,
        pending,
    ];
    let p = compiled(json!({"clusterSets": ["prod"]}));
    let e = run(&p, &clusters, &[]);
    assert_eq!(chosen(&e), ["p1"]);
    assert_eq!(
        reasons(&e, "d1"),
        "not in cluster sets [prod] (it is in dev)"
    );
    assert_eq!(
        reasons(&e, "none"),
        "not in cluster sets [prod] (it is in none)"
    );
    assert!(reasons(&e, "gone").starts_with("being deleted"));
    assert!(reasons(&e, "pending").contains("hubAcceptsClient"));
    let all = run(&compiled(json!({})), &clusters, &[]);
    assert_eq!(
        chosen(&all),
        ["d1", "none", "p1"],
        "no cluster sets: every cluster"
    );
}

#[test]
fn taints_by_effect() {
    let clusters = vec![
        with_taint(
            cluster("down", &[]),
            "cluster.open-cluster-management.io/unreachable",
            "",
            "NoSelect",
            Some(now()),
        ),
        with_taint(cluster("meh", &[]), "gpu", "old", "PreferNoSelect", None),
        with_taint(
            cluster("new-only", &[]),
            "maintenance",
            "",
            "NoSelectIfNew",
            None,
        ),
        cluster("fine", &[]),
    ];
    let p = compiled(json!({}));
    let e = run(&p, &clusters, &[]);
    assert_eq!(chosen(&e), ["fine", "meh"]);
    assert_eq!(
        reasons(&e, "down"),
        "taint cluster.open-cluster-management.io/unreachable:NoSelect not tolerated"
    );
    assert!(reasons(&e, "new-only").contains("taint maintenance:NoSelectIfNew not tolerated"));
    // Already chosen: NoSelectIfNew keeps it.
    let e = run(&p, &clusters, &["new-only"]);
    assert_eq!(chosen(&e), ["fine", "meh", "new-only"]);
    // PreferNoSelect: chosen only after the others, even with the better score.
    let p = compiled(json!({"numberOfClusters": 1}));
    let e = run(&p, &clusters, &["meh"]);
    assert_eq!(e.decided, ["fine"]);
    assert!(
        reasons(&e, "meh").contains("taint gpu=old:PreferNoSelect not tolerated"),
        "{}",
        reasons(&e, "meh")
    );
    assert!(
        reasons(&e, "meh").contains("ranked after every cluster without a PreferNoSelect taint")
    );
    // Tolerations: by key with Exists, by key and value, and everything.
    let table: Vec<(Value, Vec<&str>)> = vec![
        (
            json!([{"key": "cluster.open-cluster-management.io/unreachable", "operator": "Exists"}]),
            vec!["down", "fine", "meh"],
        ),
        (
            json!([{"key": "gpu", "value": "new"}, {"key": "maintenance", "operator": "Exists", "effect": "NoSelect"}]),
            vec!["fine", "meh"],
        ),
        (
            json!([{"key": "maintenance", "operator": "Exists", "effect": "NoSelectIfNew"}]),
            vec!["fine", "meh", "new-only"],
        ),
        (
            json!([{"operator": "Exists"}]),
            vec!["down", "fine", "meh", "new-only"],
        ),
    ];
    for (tolerations, want) in table {
        let p = compiled(json!({"tolerations": tolerations.clone()}));
        assert_eq!(
            chosen(&run(&p, &clusters, &[])),
            want,
            "tolerations {tolerations}"
        );
    }
    let p = compiled(
        json!({"numberOfClusters": 1, "tolerations": [{"key": "gpu", "operator": "Exists"}]}),
    );
    let e = run(&p, &clusters, &["meh"]);
    assert_eq!(
        e.decided,
        ["meh"],
        "a tolerated PreferNoSelect is not pushed back"
    );
}

#[test]
fn toleration_seconds_run_out_and_ask_for_a_recheck() {
    let added = now() - chrono::Duration::seconds(30);
    let clusters = vec![
        with_taint(
            cluster("a", &[]),
            "cluster.open-cluster-management.io/unreachable",
            "",
            "NoSelect",
            Some(added),
        ),
        with_taint(
            cluster("b", &[]),
            "cluster.open-cluster-management.io/unreachable",
            "",
            "NoSelect",
            Some(added - chrono::Duration::seconds(100)),
        ),
        with_taint(
            cluster("c", &[]),
            "cluster.open-cluster-management.io/unreachable",
            "",
            "NoSelect",
            None,
        ),
    ];
    let p = compiled(
        json!({"tolerations": [{"key": "cluster.open-cluster-management.io/unreachable",
        "operator": "Exists", "tolerationSeconds": 60}]}),
    );
    let e = run(&p, &clusters, &[]);
    assert_eq!(chosen(&e), ["a"]);
    let expiry = added + chrono::Duration::seconds(60);
    assert_eq!(e.recheck_at, Some(expiry));
    assert!(reasons(&e, "a").contains(&format!("tolerated until {}", expiry.to_rfc3339())));
    assert_eq!(
        reasons(&e, "b"),
        format!(
            "toleration of cluster.open-cluster-management.io/unreachable ran out at {}",
            (added - chrono::Duration::seconds(40)).to_rfc3339()
        )
    );
    assert!(reasons(&e, "c").contains("ran out (the taint has no timeAdded)"));
    // After the expiry, the cluster is dropped and nothing is left to recheck.
    let later = run_with(&p, &clusters, &["a"], &HashMap::new(), expiry);
    assert!(later.decided.is_empty());
    assert_eq!(later.recheck_at, None);
    // The engine's single-cluster answer agrees.
    let f = p.feasible(&clusters[0], true, now());
    assert!(f.feasible && f.recheck_at == Some(expiry));
    assert!(!p.feasible(&clusters[0], true, expiry).feasible);
}

#[test]
fn malformed_taints_are_skipped_with_a_reason() {
    let mut c = cluster("odd", &[]);
    c.spec
        .taints
        .push(json!({"value": "x", "effect": "NoSelect"}));
    c.spec.taints.push(json!({"key": "k", "effect": "Explode"}));
    c.spec
        .taints
        .push(json!({"key": "t", "effect": "NoSelect", "timeAdded": "yesterday"}));
    let e = run(&compiled(json!({})), &[c], &[]);
    assert_eq!(e.decided, ["odd"]);
    let why = reasons(&e, "odd");
    assert!(
        why.contains("a malformed taint was ignored: it has no key"),
        "{why}"
    );
    assert!(why.contains("unknown effect \"Explode\""), "{why}");
    assert!(why.contains("unreadable timeAdded"), "{why}");
}

#[test]
fn status_conditions_as_ocm_writes_them() {
    let clusters = fleet();
    let cond = |e: &Evaluation, t: &str| {
        let c = api::find_condition(&e.status.conditions, t)
            .expect("condition")
            .clone();
        (c.status, c.reason, c.message)
    };
    let e = run(&compiled(json!({"numberOfClusters": 2})), &clusters, &[]);
    assert_eq!(e.status.number_of_selected_clusters, 2);
    assert_eq!(cond(&e, "PlacementSatisfied").1, "AllDecisionsScheduled");
    assert_eq!(
        cond(&e, "PlacementMisconfigured"),
        (
            "False".into(),
            "Succeedconfigured".into(),
            "Placement configurations check pass".into()
        )
    );
    let e = run(&compiled(json!({"numberOfClusters": 9})), &clusters, &[]);
    assert_eq!(
        cond(&e, "PlacementSatisfied"),
        (
            "False".into(),
            "NotAllDecisionsScheduled".into(),
            "4 cluster(s) selected, 9 asked".into()
        )
    );
    let e = run(
        &compiled(json!({"clusterSets": ["nothing"]})),
        &clusters,
        &[],
    );
    assert_eq!(cond(&e, "PlacementSatisfied").0, "False");
    assert_eq!(cond(&e, "PlacementSatisfied").1, "NoManagedClusterMatched");
    let e = run(&compiled(json!({"numberOfClusters": 0})), &clusters, &[]);
    assert!(e.decided.is_empty());
    assert_eq!(cond(&e, "PlacementSatisfied").0, "True");
    assert_eq!(reasons(&e, "eu-1"), "numberOfClusters is 0");
    assert!(
        e.status
            .conditions
            .iter()
            .all(|c| c.last_transition_time.is_none())
    );
}

#[test]
fn explanations_list_decided_then_feasible_then_the_rest() {
    let p = compiled(json!({"numberOfClusters": 1,
        "predicates": [{"requiredClusterSelector": {"labelSelector": {"matchLabels": {"zone": "eu"}}}}]}));
    let e = run(&p, &fleet(), &["eu-2"]);
    let order: Vec<&str> = e
        .explanations
        .iter()
        .map(|x| x.cluster_name.as_str())
        .collect();
    assert_eq!(order, ["eu-2", "eu-1", "bare", "us-1"]);
    let won = explanation(&e, "eu-2");
    assert!(won.selected && won.feasible);
    assert_eq!(won.score, Some(200));
    assert_eq!(won.scores.get("Steady"), Some(&100));
    assert_eq!(won.scores.get("Balance"), Some(&100));
    assert_eq!(won.decision_group.as_deref(), Some("#0"));
    assert_eq!(
        reasons(&e, "eu-1"),
        "score 100 < 200 of the last chosen (eu-2)"
    );
}
