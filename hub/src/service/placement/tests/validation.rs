//! Every validation rule, with its field path.

use super::*;

/// The errors of a spec, as (field, message).
fn errors(value: Value) -> Vec<(String, String)> {
    match Compiled::new(&spec(value.clone())) {
        Ok(_) => panic!("{value} should be refused"),
        Err(e) => e.into_iter().map(|e| (e.field, e.message)).collect(),
    }
}

fn label_expression(expression: Value) -> Value {
    json!({"predicates": [{"requiredClusterSelector": {"labelSelector": {"matchExpressions": [expression]}}}]})
}

#[test]
fn each_rule_with_its_field_path() {
    let sel = "spec.predicates[0].requiredClusterSelector";
    let table: Vec<(Value, String, &str)> = vec![
        (json!({"numberOfClusters": -1}), "spec.numberOfClusters".into(), "negative"),
        (json!({"clusterSets": ["ok", "Not OK!"]}), "spec.clusterSets[1]".into(), "cluster set"),
        (json!({"clusterSets": [""]}), "spec.clusterSets[0]".into(), "required"),
        (
            json!({"predicates": [{"requiredClusterSelector": {"labelSelector": {"matchLabels": {"-bad": "x"}}}}]}),
            format!("{sel}.labelSelector.matchLabels[-bad]"),
            "label key",
        ),
        (
            json!({"predicates": [{"requiredClusterSelector": {"labelSelector": {"matchLabels": {"ok": "bad value"}}}}]}),
            format!("{sel}.labelSelector.matchLabels[ok]"),
            "label value",
        ),
        (
            label_expression(json!({"key": "a/b/c", "operator": "Exists"})),
            format!("{sel}.labelSelector.matchExpressions[0].key"),
            "label name",
        ),
        (
            label_expression(json!({"key": "zone", "operator": "Equals", "values": ["x"]})),
            format!("{sel}.labelSelector.matchExpressions[0].operator"),
            "one of In, NotIn, Exists, DoesNotExist",
        ),
        (
            label_expression(json!({"key": "zone", "operator": "In"})),
            format!("{sel}.labelSelector.matchExpressions[0].values"),
            "In needs at least one value",
        ),
        (
            label_expression(json!({"key": "zone", "operator": "NotIn", "values": []})),
            format!("{sel}.labelSelector.matchExpressions[0].values"),
            "NotIn needs at least one value",
        ),
        (
            label_expression(json!({"key": "zone", "operator": "Exists", "values": ["x"]})),
            format!("{sel}.labelSelector.matchExpressions[0].values"),
            "Exists takes no values",
        ),
        (
            label_expression(json!({"key": "zone", "operator": "DoesNotExist", "values": ["x"]})),
            format!("{sel}.labelSelector.matchExpressions[0].values"),
            "DoesNotExist takes no values",
        ),
        (
            label_expression(json!({"key": "zone", "operator": "In", "values": ["ok", "not ok"]})),
            format!("{sel}.labelSelector.matchExpressions[0].values[1]"),
            "label value",
        ),
        (
            json!({"predicates": [{"requiredClusterSelector": {"claimSelector": {"matchExpressions": [
                {"key": "region", "operator": "Exists", "values": ["x"]}]}}}]}),
            format!("{sel}.claimSelector.matchExpressions[0].values"),
            "takes no values",
        ),
        (
            json!({"predicates": [{"requiredClusterSelector": {"celSelector": {"celExpressions": ["1 +"]}}}]}),
            format!("{sel}.celSelector.celExpressions[0]"),
            "CEL does not compile: line 1, column",
        ),
        (
            json!({"predicates": [{"requiredClusterSelector": {"celSelector": {"celExpressions": [
                format!("managedCluster.metadata.name == '{}'", "x".repeat(4100))]}}}]}),
            format!("{sel}.celSelector.celExpressions[0]"),
            "at most 4096",
        ),
        (
            json!({"predicates": [{"requiredClusterSelector": {"celSelector": {"celExpressions":
                vec!["true"; 65]}}}]}),
            format!("{sel}.celSelector.celExpressions"),
            "65 expressions; at most 64",
        ),
        (
            json!({"predicates": vec![json!({}); 65]}),
            "spec.predicates".into(),
            "65 predicates; at most 64",
        ),
        (
            json!({"prioritizerPolicy": {"mode": "Fancy"}}),
            "spec.prioritizerPolicy.mode".into(),
            "Additive or Exact",
        ),
        (
            json!({"prioritizerPolicy": {"configurations": [{"scoreCoordinate": {"type": "AddOn",
                "addOn": {"resourceName": "x", "scoreName": "y"}}}]}}),
            "spec.prioritizerPolicy.configurations[0].scoreCoordinate.type".into(),
            "add-on scores are not served by this hub",
        ),
        (
            json!({"prioritizerPolicy": {"configurations": [{"scoreCoordinate": {"type": "Other"}}]}}),
            "spec.prioritizerPolicy.configurations[0].scoreCoordinate.type".into(),
            "BuiltIn or AddOn",
        ),
        (
            json!({"prioritizerPolicy": {"configurations": [{"scoreCoordinate": {"builtIn": "Cheapest"}}]}}),
            "spec.prioritizerPolicy.configurations[0].scoreCoordinate.builtIn".into(),
            "one of Balance, Steady, ResourceAllocatableCPU, ResourceAllocatableMemory",
        ),
        (
            json!({"prioritizerPolicy": {"configurations": [{"scoreCoordinate": {"type": "BuiltIn"}}]}}),
            "spec.prioritizerPolicy.configurations[0].scoreCoordinate.builtIn".into(),
            "required",
        ),
        (
            json!({"prioritizerPolicy": {"configurations": [{"scoreCoordinate": {"builtIn": "Steady"}, "weight": 11}]}}),
            "spec.prioritizerPolicy.configurations[0].weight".into(),
            "-10 to 10",
        ),
        (
            json!({"prioritizerPolicy": {"configurations": [{"scoreCoordinate": {"builtIn": "Steady"}, "weight": -11}]}}),
            "spec.prioritizerPolicy.configurations[0].weight".into(),
            "-10 to 10",
        ),
        (
            json!({"spreadPolicy": {"spreadConstraints": [{"topologyKey": "zone", "topologyKeyType": "Node"}]}}),
            "spec.spreadPolicy.spreadConstraints[0].topologyKeyType".into(),
            "Label or Claim",
        ),
        (
            json!({"spreadPolicy": {"spreadConstraints": [{"topologyKey": "", "topologyKeyType": "Label"}]}}),
            "spec.spreadPolicy.spreadConstraints[0].topologyKey".into(),
            "1-63 characters",
        ),
        (
            json!({"spreadPolicy": {"spreadConstraints": [{"topologyKey": "zone", "topologyKeyType": "Label", "maxSkew": 0}]}}),
            "spec.spreadPolicy.spreadConstraints[0].maxSkew".into(),
            "less than 1",
        ),
        (
            json!({"spreadPolicy": {"spreadConstraints": [{"topologyKey": "zone", "topologyKeyType": "Label",
                "whenUnsatisfiable": "Whatever"}]}}),
            "spec.spreadPolicy.spreadConstraints[0].whenUnsatisfiable".into(),
            "ScheduleAnyway or DoNotSchedule",
        ),
        (
            json!({"tolerations": [{"key": "k", "operator": "Like"}]}),
            "spec.tolerations[0].operator".into(),
            "Equal or Exists",
        ),
        (
            json!({"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}),
            "spec.tolerations[0].value".into(),
            "must be empty when the operator is Exists",
        ),
        (
            json!({"tolerations": [{"key": "k", "effect": "NoExecute"}]}),
            "spec.tolerations[0].effect".into(),
            "one of NoSelect, PreferNoSelect, NoSelectIfNew",
        ),
        (
            json!({"tolerations": [{"key": "k", "effect": "NoSelect", "tolerationSeconds": -5}]}),
            "spec.tolerations[0].tolerationSeconds".into(),
            "negative",
        ),
        (
            json!({"tolerations": [{"key": "bad key!", "operator": "Exists"}]}),
            "spec.tolerations[0].key".into(),
            "1-63 characters",
        ),
        (
            json!({"decisionStrategy": {"groupStrategy": {"decisionGroups": [{"groupName": ""}]}}}),
            "spec.decisionStrategy.groupStrategy.decisionGroups[0].groupName".into(),
            "required",
        ),
        (
            json!({"decisionStrategy": {"groupStrategy": {"decisionGroups": [{"groupName": "not valid!"}]}}}),
            "spec.decisionStrategy.groupStrategy.decisionGroups[0].groupName".into(),
            "group name",
        ),
        (
            json!({"decisionStrategy": {"groupStrategy": {"decisionGroups": [{"groupName": "a"}, {"groupName": "a"}]}}}),
            "spec.decisionStrategy.groupStrategy.decisionGroups[1].groupName".into(),
            "already used by decisionGroups[0]",
        ),
        (
            json!({"decisionStrategy": {"groupStrategy": {"decisionGroups": [{"groupName": "a",
                "groupClusterSelector": {"celSelector": {"celExpressions": ["(("]}}}]}}}),
            "spec.decisionStrategy.groupStrategy.decisionGroups[0].groupClusterSelector.celSelector.celExpressions[0]".into(),
            "CEL does not compile",
        ),
    ];
    for (value, field, message) in table {
        let got = errors(value.clone());
        assert!(
            got.iter().any(|(f, m)| *f == field && m.contains(message)),
            "{value}: wanted {field}: …{message}…, got {got:?}"
        );
    }
}

#[test]
fn clusters_per_decision_group() {
    let field = "spec.decisionStrategy.groupStrategy.clustersPerDecisionGroup";
    for bad in [
        json!(0),
        json!(-3),
        json!("0%"),
        json!("101%"),
        json!("x%"),
        json!("abc"),
        json!(1.5),
        json!(true),
    ] {
        let got = errors(
            json!({"decisionStrategy": {"groupStrategy": {"clustersPerDecisionGroup": bad.clone()}}}),
        );
        assert_eq!(got.len(), 1, "{bad}: {got:?}");
        assert_eq!(got[0].0, field, "{bad}");
    }
    for good in [json!(1), json!(250), json!("1%"), json!("100%"), json!("7")] {
        let s = spec(
            json!({"decisionStrategy": {"groupStrategy": {"clustersPerDecisionGroup": good.clone()}}}),
        );
        assert!(Compiled::new(&s).is_ok(), "{good}");
    }
}

#[test]
fn every_problem_is_listed_not_just_the_first() {
    let got = errors(json!({
        "numberOfClusters": -2,
        "predicates": [{"requiredClusterSelector": {"celSelector": {"celExpressions": ["a +", "b +"]}}}],
        "prioritizerPolicy": {"mode": "Exact", "configurations": [{"scoreCoordinate": {"builtIn": "Nope"}, "weight": 99}]},
        "spreadPolicy": {"spreadConstraints": [{"topologyKey": "zone", "topologyKeyType": "Label", "maxSkew": 0}]},
        "tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]
    }));
    let fields: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.numberOfClusters",
            "spec.predicates[0].requiredClusterSelector.celSelector.celExpressions[0]",
            "spec.predicates[0].requiredClusterSelector.celSelector.celExpressions[1]",
            "spec.prioritizerPolicy.configurations[0].weight",
            "spec.prioritizerPolicy.configurations[0].scoreCoordinate.builtIn",
            "spec.spreadPolicy.spreadConstraints[0].maxSkew",
            "spec.tolerations[0].value",
        ]
    );
}

#[test]
fn a_valid_spec_in_full_compiles() {
    let p = compiled(json!({
        "clusterSets": ["prod", "edge"],
        "numberOfClusters": 3,
        "predicates": [{"requiredClusterSelector": {
            "labelSelector": {"matchLabels": {"env": "prod"},
                "matchExpressions": [{"key": "zone", "operator": "In", "values": ["eu", "us"]}]},
            "claimSelector": {"matchExpressions": [{"key": "platform.open-cluster-management.io", "operator": "Exists"}]},
            "celSelector": {"celExpressions": ["managedCluster.metadata.name != ''"]}}}],
        "prioritizerPolicy": {"mode": "Additive", "configurations": [
            {"scoreCoordinate": {"type": "BuiltIn", "builtIn": "ResourceAllocatableMemory"}, "weight": -2},
            {"scoreCoordinate": {"builtIn": "Balance"}, "weight": 0}]},
        "spreadPolicy": {"spreadConstraints": [{"topologyKey": "zone", "topologyKeyType": "Label", "maxSkew": 2,
            "whenUnsatisfiable": "DoNotSchedule"}]},
        "tolerations": [{"key": "cluster.open-cluster-management.io/unreachable", "operator": "Exists",
            "effect": "NoSelect", "tolerationSeconds": 300}, {"operator": "Exists", "effect": "PreferNoSelect"}],
        "decisionStrategy": {"groupStrategy": {"decisionGroups": [{"groupName": "canary",
            "groupClusterSelector": {"labelSelector": {"matchLabels": {"canary": "true"}}}}],
            "clustersPerDecisionGroup": "50%"}}
    }));
    assert_eq!(p.number_of_clusters(), Some(3));
    assert!(p.uses_cel());
    // Weight 0 turns Balance off; Steady stays at its default weight.
    let c = with_allocatable(
        with_claims(
            cluster(
                "a",
                &[
                    ("env", "prod"),
                    ("zone", "eu"),
                    (api::fleet::CLUSTER_SET_LABEL, "prod"),
                ],
            ),
            &[("platform.open-cluster-management.io", "kind")],
        ),
        "",
        "1Gi",
    );
    let e = run(&p, &[c], &[]);
    assert_eq!(e.decided, ["a"]);
    let names: Vec<&String> = explanation(&e, "a").scores.keys().collect();
    assert_eq!(names, ["ResourceAllocatableMemory", "Steady"]);
}
