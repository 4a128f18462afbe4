//! Placements and ManifestWorkReplicaSets through the router, with the hub's controllers
//! running on a real SQLite store (clusters are admin-created records, no agents): what
//! the placement decides, what the set keeps, who may do what, and bad input.
//!
//! Bad inputs tried: a selector operator that does not exist, values with `Exists`, CEL
//! that does not compile, an unknown prioritizer, an add-on score, `maxSkew: 0`,
//! `numberOfClusters: -1`, a bad `clustersPerDecisionGroup`, the wrong apiVersion and kind,
//! a name that is not DNS-1123, a namespace in the body that differs from the path; a set
//! without placementRefs, with an unknown cascadeDeletionPolicy, a patch that is not an
//! object, a replica split naming no manifest, a template manifest without a kind; a user
//! putting the set label on a work; a direct PUT and DELETE of a work a set keeps.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};

mod common;
use common::router::{Api, api_with_controllers, assert_error};

const P: &str = "/api/v1/namespaces/apps/placements";
const S: &str = "/api/v1/namespaces/apps/manifestworkreplicasets";
const SET_LABEL: &str = "work.open-cluster-management.io/manifestworkreplicaset";
const SOON: Duration = Duration::from_secs(20);

async fn cluster(api: &Api, name: &str, labels: Value) {
    let r = api
        .admin(
            "PUT",
            &format!("/api/v1/clusters/{name}"),
            Some(json!({
                "apiVersion": "cluster.open-cluster-management.io/v1",
                "kind": "ManagedCluster",
                "metadata": {"labels": labels},
                "spec": {"hubAcceptsClient": true},
            })),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.body);
}

fn placement(spec: Value) -> Value {
    json!({
        "apiVersion": "cluster.open-cluster-management.io/v1beta1",
        "kind": "Placement",
        "spec": spec,
    })
}

fn set(placement: &str, extra: Value) -> Value {
    let mut s = json!({
        "apiVersion": "work.open-cluster-management.io/v1alpha1",
        "kind": "ManifestWorkReplicaSet",
        "spec": {
            "placementRefs": [{"name": placement}],
            "manifestWorkTemplate": {"workload": {"manifests": [
                {"apiVersion": "apps/v1", "kind": "Deployment",
                 "metadata": {"name": "web", "namespace": "default"},
                 "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                          "template": {"metadata": {"labels": {"app": "web"}},
                                       "spec": {"containers": [{"name": "w", "image": "nginx"}]}}}},
                {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "cfg", "namespace": "default"}, "data": {"region": "any"}}
            ]}},
        },
    });
    if let (Some(spec), Some(extra)) = (s["spec"].as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    s
}

fn decided(list: &Value) -> Vec<String> {
    let mut out: Vec<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|d| {
            d["status"]["decisions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|d| d["clusterName"].as_str().map(str::to_string))
        .collect();
    out.sort();
    out
}

/// The set's works, by cluster.
async fn works_of(api: &Api, set: &str) -> Vec<(String, Value)> {
    let r = api
        .admin(
            "GET",
            &format!("/api/v1/manifestworks?labelSelector={SET_LABEL}%3Dapps.{set}"),
            None,
        )
        .await;
    let mut out: Vec<(String, Value)> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["metadata"]["namespace"].as_str().unwrap().to_string(),
                w.clone(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

async fn prod_fleet(api: &Api) {
    for (name, zone, env) in [
        ("c1", "a", "prod"),
        ("c2", "a", "prod"),
        ("c3", "b", "prod"),
        ("c4", "b", "dev"),
    ] {
        cluster(
            api,
            name,
            json!({"zone": zone, "env": env, "cluster.open-cluster-management.io/clusterset": env}),
        )
        .await;
    }
}

#[tokio::test]
async fn placements_decide_by_label_cel_and_cluster_set_and_follow_relabels() {
    let api = api_with_controllers().await;
    prod_fleet(&api).await;
    for (name, spec) in [
        (
            "by-label",
            json!({"predicates": [{"requiredClusterSelector": {"labelSelector": {"matchLabels": {"env": "prod"}}}}]}),
        ),
        (
            "by-cel",
            json!({"predicates": [{"requiredClusterSelector": {"celSelector": {"celExpressions": ["managedCluster.metadata.labels[\"zone\"] == \"b\""]}}}]}),
        ),
        ("by-set", json!({"clusterSets": ["dev"]})),
    ] {
        let r = api
            .admin("PUT", &format!("{P}/{name}"), Some(placement(spec)))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    let want = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    for (name, expect) in [
        ("by-label", want(&["c1", "c2", "c3"])),
        ("by-cel", want(&["c3", "c4"])),
        ("by-set", want(&["c4"])),
    ] {
        api.until(&format!("{P}/{name}/decisions"), SOON, |b| {
            decided(b) == expect
        })
        .await;
    }
    // Status as OCM writes it.
    let p = api
        .until(&format!("{P}/by-label"), SOON, |b| {
            b["status"]["numberOfSelectedClusters"] == 3
        })
        .await;
    let satisfied = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "PlacementSatisfied")
        .cloned()
        .unwrap();
    assert_eq!(satisfied["status"], "True", "{p}");
    // A relabelled cluster leaves the decisions.
    let r = api
        .admin(
            "PUT",
            "/api/v1/clusters/c2/labels",
            Some(json!({"env": "dev"})),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.body);
    api.until(&format!("{P}/by-label/decisions"), SOON, |b| {
        decided(b) == want(&["c1", "c3"])
    })
    .await;
    // Explain names the failed term for c2 and c4.
    let e = api
        .admin("GET", &format!("{P}/by-label/explain"), None)
        .await;
    assert_eq!(e.status, StatusCode::OK, "{}", e.body);
    let rows = e.body["clusters"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "{}", e.body);
    let c2 = rows.iter().find(|r| r["clusterName"] == "c2").unwrap();
    assert_eq!(c2["selected"], false);
    assert!(c2["reasons"].to_string().contains("env"), "{c2}");
    // Preview stores nothing.
    let before = api.admin("GET", "/api/v1/placements", None).await;
    let pv = api
        .admin(
            "POST",
            "/api/v1/placements/preview",
            Some(placement(
                json!({"numberOfClusters": 1, "clusterSets": ["prod"]}),
            )),
        )
        .await;
    assert_eq!(pv.status, StatusCode::OK, "{}", pv.body);
    assert_eq!(
        pv.body["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["selected"] == true)
            .count(),
        1,
        "{}",
        pv.body
    );
    let after = api.admin("GET", "/api/v1/placements", None).await;
    assert_eq!(before.body["items"], after.body["items"]);
}

#[tokio::test]
async fn one_cluster_stays_chosen_and_spread_covers_both_zones() {
    let api = api_with_controllers().await;
    prod_fleet(&api).await;
    let r = api
        .admin(
            "PUT",
            &format!("{P}/unique"),
            Some(placement(
                json!({"numberOfClusters": 1, "clusterSets": ["prod"]}),
            )),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let first = decided(
        &api.until(&format!("{P}/unique/decisions"), SOON, |b| {
            decided(b).len() == 1
        })
        .await,
    );
    // Every other cluster changes (a new label each): the pick stays.
    for c in ["c1", "c2", "c3"].iter().filter(|c| **c != first[0]) {
        api.admin(
            "PUT",
            &format!("/api/v1/clusters/{c}/labels"),
            Some(json!({"tier": "gold"})),
        )
        .await;
    }
    api.admin(
        "PUT",
        &format!("{P}/unique"),
        Some(placement(
            json!({"numberOfClusters": 1, "clusterSets": ["prod"], "tolerations": []}),
        )),
    )
    .await;
    let again = api
        .admin("GET", &format!("{P}/unique/decisions"), None)
        .await;
    assert_eq!(decided(&again.body), first, "Steady keeps the pick");

    let r = api
        .admin(
            "PUT",
            &format!("{P}/spread"),
            Some(placement(json!({
                "numberOfClusters": 2,
                "clusterSets": ["prod"],
                "spreadPolicy": {"spreadConstraints": [{"topologyKey": "zone", "topologyKeyType": "Label", "maxSkew": 1, "whenUnsatisfiable": "DoNotSchedule"}]},
            }))),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let d = decided(
        &api.until(&format!("{P}/spread/decisions"), SOON, |b| {
            decided(b).len() == 2
        })
        .await,
    );
    assert!(d.contains(&"c3".to_string()), "one of zone b: {d:?}");
}

#[tokio::test]
async fn a_set_keeps_one_work_per_decided_cluster_with_shares_and_overrides() {
    let api = api_with_controllers().await;
    prod_fleet(&api).await;
    api.admin(
        "PUT",
        &format!("{P}/prod"),
        Some(placement(json!({"clusterSets": ["prod"]}))),
    )
    .await;
    let s = set(
        "prod",
        json!({
            "replicaSplit": {"workload": {"kind": "Deployment", "name": "web"}, "totalReplicas": 10,
                             "strategy": "Weighted",
                             "weights": [{"clusterSelector": {"labelSelector": {"matchLabels": {"zone": "b"}}}, "weight": 2},
                                         {"clusterSelector": {}, "weight": 1}]},
            "overrides": [{"clusterSelector": {"labelSelector": {"matchLabels": {"zone": "b"}}},
                           "manifest": {"kind": "ConfigMap", "name": "cfg"},
                           "patch": {"data": {"region": "b"}}}],
        }),
    );
    let r = api.admin("PUT", &format!("{S}/web"), Some(s)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let status = api
        .until(&format!("{S}/web"), SOON, |b| {
            b["status"]["summary"]["total"] == 3
        })
        .await;
    let works = works_of(&api, "web").await;
    let got: Vec<(String, i64, String)> = works
        .iter()
        .map(|(c, w)| {
            let m = &w["spec"]["workload"]["manifests"];
            (
                c.clone(),
                m[0]["spec"]["replicas"].as_i64().unwrap(),
                m[1]["data"]["region"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("c1".into(), 3, "any".into()),
            ("c2".into(), 2, "any".into()),
            ("c3".into(), 5, "b".into())
        ],
        "10 over 1:1:2; only zone b's ConfigMap overridden"
    );
    let shares: Vec<i64> = status["status"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["replicas"].as_i64().unwrap())
        .collect();
    assert_eq!(shares.iter().sum::<i64>(), 10, "{status}");

    // The works are the set's: users may not change them, nor claim a work for it.
    let w = api
        .admin("GET", "/api/v1/clusters/c1/manifestworks/web", None)
        .await;
    let put = api
        .admin(
            "PUT",
            "/api/v1/clusters/c1/manifestworks/web",
            Some(w.body.clone()),
        )
        .await;
    assert_error(&put, StatusCode::CONFLICT, "owned");
    assert_eq!(put.body["details"]["manifestWorkReplicaSet"], "apps/web");
    let del = api
        .admin("DELETE", "/api/v1/clusters/c1/manifestworks/web", None)
        .await;
    assert_error(&del, StatusCode::CONFLICT, "owned");
    let mut forged = w.body.clone();
    forged["metadata"] = json!({"name": "mine", "labels": {SET_LABEL: "apps.web"}});
    let r = api
        .admin(
            "PUT",
            "/api/v1/clusters/c1/manifestworks/mine",
            Some(forged),
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid");

    // A cluster leaves: its work goes, the shares are recomputed.
    api.admin(
        "PUT",
        "/api/v1/clusters/c1/labels",
        Some(json!({"cluster.open-cluster-management.io/clusterset": "dev"})),
    )
    .await;
    api.until(&format!("{S}/web"), SOON, |b| {
        b["status"]["summary"]["total"] == 2
    })
    .await;
    let works = works_of(&api, "web").await;
    let clusters: Vec<&str> = works.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(clusters, ["c2", "c3"]);
    let total: i64 = works
        .iter()
        .map(|(_, w)| {
            w["spec"]["workload"]["manifests"][0]["spec"]["replicas"]
                .as_i64()
                .unwrap()
        })
        .sum();
    assert_eq!(total, 10);

    // Orphan: the works stay, no longer the set's.
    let mut s = api.admin("GET", &format!("{S}/web"), None).await.body;
    s["spec"]["cascadeDeletionPolicy"] = json!("Orphan");
    let r = api.admin("PUT", &format!("{S}/web"), Some(s)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = api.admin("DELETE", &format!("{S}/web"), None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let deadline = std::time::Instant::now() + SOON;
    while api.admin("GET", &format!("{S}/web"), None).await.status != StatusCode::NOT_FOUND {
        assert!(
            std::time::Instant::now() < deadline,
            "the set was not removed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let w = api
        .admin("GET", "/api/v1/clusters/c2/manifestworks/web", None)
        .await;
    assert_eq!(w.status, StatusCode::OK, "orphaned works stay: {}", w.body);
    assert!(
        w.body["metadata"]["labels"].get(SET_LABEL).is_none(),
        "{}",
        w.body
    );
    let r = api
        .admin("DELETE", "/api/v1/clusters/c2/manifestworks/web", None)
        .await;
    assert!(
        r.status.is_success(),
        "an orphaned work is the users' again: {}",
        r.body
    );
}

#[tokio::test]
async fn background_deletion_takes_the_works_and_a_missing_placement_is_reported() {
    let api = api_with_controllers().await;
    prod_fleet(&api).await;
    let r = api
        .admin("PUT", &format!("{S}/lost"), Some(set("nowhere", json!({}))))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let s = api
        .until(&format!("{S}/lost"), SOON, |b| {
            b["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter().any(|c| {
                    c["type"] == "PlacementVerified" && c["reason"] == "PlacementDecisionNotFound"
                })
            })
        })
        .await;
    assert_eq!(s["status"]["summary"]["total"], 0);

    api.admin(
        "PUT",
        &format!("{P}/nowhere"),
        Some(placement(json!({"clusterSets": ["dev"]}))),
    )
    .await;
    api.until(&format!("{S}/lost"), SOON, |b| {
        b["status"]["summary"]["total"] == 1
    })
    .await;
    assert_eq!(works_of(&api, "lost").await.len(), 1);
    let r = api.admin("DELETE", &format!("{S}/lost"), None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let deadline = std::time::Instant::now() + SOON;
    while !works_of(&api, "lost").await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the set's works were not removed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_scoped_writers_set_stays_in_its_scope() {
    let api = api_with_controllers().await;
    prod_fleet(&api).await;
    api.admin("PUT", &format!("{P}/all"), Some(placement(json!({}))))
        .await;
    let t = api
        .admin(
            "POST",
            "/api/v1/tokens",
            Some(json!({"kind": "api", "clusterSelector": "env=dev", "verbs": ["read", "write"]})),
        )
        .await;
    assert!(t.status.is_success(), "{}", t.body);
    let token = t.body["token"].as_str().unwrap().to_string();
    let auth = format!("Bearer {token}");
    let as_dev = |method: &'static str, uri: String, body: Option<Value>| {
        let auth = auth.clone();
        let api = &api;
        async move {
            api.call(
                method,
                &uri,
                Some("application/json"),
                body.map(|b| b.to_string()).unwrap_or_default(),
                &[("authorization", &auth)],
            )
            .await
        }
    };
    let r = as_dev("PUT", format!("{S}/dev-app"), Some(set("all", json!({})))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let s = api
        .until(&format!("{S}/dev-app"), SOON, |b| {
            b["status"]["clusters"]
                .as_array()
                .is_some_and(|c| c.len() == 4)
                && b["status"]["summary"]["total"] == 1
        })
        .await;
    let works = works_of(&api, "dev-app").await;
    assert_eq!(works.len(), 1, "only the dev cluster: {s}");
    assert_eq!(works[0].0, "c4");
    let refused = s["status"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["message"].as_str().is_some_and(|m| m.contains("reach")))
        .count();
    assert_eq!(refused, 3, "{s}");
    // Its explain shows only what it may read.
    let e = as_dev("GET", format!("{P}/all/explain"), None).await;
    assert_eq!(e.status, StatusCode::OK, "{}", e.body);
    assert_eq!(
        e.body["clusters"].as_array().unwrap().len(),
        1,
        "{}",
        e.body
    );
    let d = as_dev("GET", format!("{P}/all/decisions"), None).await;
    assert_eq!(decided(&d.body), ["c4"], "{}", d.body);
}

#[tokio::test]
async fn bad_placements_and_sets_are_422_with_field_paths() {
    let api = api_with_controllers().await;
    let cases = [
        (
            json!({"predicates": [{"requiredClusterSelector": {"labelSelector": {"matchExpressions": [{"key": "a", "operator": "Near", "values": ["x"]}]}}}]}),
            "spec.predicates[0].requiredClusterSelector.labelSelector.matchExpressions[0].operator",
        ),
        (
            json!({"predicates": [{"requiredClusterSelector": {"claimSelector": {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}}}]}),
            "spec.predicates[0].requiredClusterSelector.claimSelector.matchExpressions[0].values",
        ),
        (
            json!({"predicates": [{"requiredClusterSelector": {"celSelector": {"celExpressions": ["managedCluster.metadata.labels[\"a\" == 1"]}}}]}),
            "spec.predicates[0].requiredClusterSelector.celSelector.celExpressions[0]",
        ),
        (
            json!({"prioritizerPolicy": {"configurations": [{"scoreCoordinate": {"builtIn": "Cheapest"}}]}}),
            "spec.prioritizerPolicy.configurations[0].scoreCoordinate.builtIn",
        ),
        (
            json!({"prioritizerPolicy": {"configurations": [{"scoreCoordinate": {"type": "AddOn", "addOn": {"resourceName": "x", "scoreName": "y"}}}]}}),
            "spec.prioritizerPolicy.configurations[0].scoreCoordinate.type",
        ),
        (
            json!({"spreadPolicy": {"spreadConstraints": [{"topologyKey": "zone", "topologyKeyType": "Label", "maxSkew": 0}]}}),
            "spec.spreadPolicy.spreadConstraints[0].maxSkew",
        ),
        (json!({"numberOfClusters": -1}), "spec.numberOfClusters"),
        (
            json!({"decisionStrategy": {"groupStrategy": {"clustersPerDecisionGroup": "0%"}}}),
            "spec.decisionStrategy.groupStrategy.clustersPerDecisionGroup",
        ),
    ];
    for (spec, field) in cases {
        let r = api
            .admin("PUT", &format!("{P}/bad"), Some(placement(spec.clone())))
            .await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
        let fields: Vec<&str> = r.body["details"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f["field"].as_str())
            .collect();
        assert!(
            fields.contains(&field),
            "{spec}: wanted {field} in {}",
            r.body
        );
    }
    let cel = api
        .admin("PUT", &format!("{P}/bad"), Some(placement(json!({"predicates": [{"requiredClusterSelector": {"celSelector": {"celExpressions": ["managedCluster.metadata.labels[\"a\" == 1"]}}}]}))))
        .await;
    assert!(
        cel.body["message"].as_str().unwrap().contains(':'),
        "CEL errors carry a position: {}",
        cel.body
    );
    let mut wrong = placement(json!({}));
    wrong["apiVersion"] = json!("cluster.open-cluster-management.io/v1alpha1");
    wrong["kind"] = json!("Placements");
    wrong["metadata"] = json!({"namespace": "other"});
    let r = api
        .admin("PUT", &format!("{P}/Bad_Name"), Some(wrong))
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    for f in ["apiVersion", "kind", "metadata.name", "metadata.namespace"] {
        assert!(
            r.body["details"].to_string().contains(&format!("\"{f}\"")),
            "{f}: {}",
            r.body
        );
    }
    // Nothing was stored.
    let list = api.admin("GET", P, None).await;
    assert_eq!(list.body["items"], json!([]));

    let set_cases = [
        (json!({"placementRefs": []}), "spec.placementRefs"),
        (
            json!({"cascadeDeletionPolicy": "Never"}),
            "spec.cascadeDeletionPolicy",
        ),
        (
            json!({"overrides": [{"manifest": {"kind": "ConfigMap"}, "patch": [1]}]}),
            "spec.overrides[0].patch",
        ),
        (
            json!({"replicaSplit": {"workload": {"kind": "StatefulSet", "name": "db"}, "totalReplicas": 3}}),
            "spec.replicaSplit.workload",
        ),
    ];
    for (extra, field) in set_cases {
        let r = api
            .admin("PUT", &format!("{S}/bad"), Some(set("p", extra.clone())))
            .await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
        assert!(
            r.body["details"].to_string().contains(field),
            "{extra}: wanted {field} in {}",
            r.body
        );
    }
    let mut s = set("p", json!({}));
    s["spec"]["manifestWorkTemplate"]["workload"]["manifests"][1] =
        json!({"apiVersion": "v1", "metadata": {"name": "x"}});
    let r = api.admin("PUT", &format!("{S}/bad"), Some(s)).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert!(
        r.body["details"]
            .to_string()
            .contains("spec.manifestWorkTemplate.workload.manifests[1].kind"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn agents_and_bootstrap_tokens_may_not_touch_placements() {
    let api = api_with_controllers().await;
    let t = api
        .admin("POST", "/api/v1/tokens", Some(json!({"kind": "bootstrap"})))
        .await;
    let auth = format!("Bearer {}", t.body["token"].as_str().unwrap());
    for (method, uri) in [
        ("GET", P.to_string()),
        ("PUT", format!("{P}/x")),
        ("GET", "/api/v1/manifestworkreplicasets".into()),
    ] {
        let r = api
            .call(
                method,
                &uri,
                Some("application/json"),
                placement(json!({})).to_string(),
                &[("authorization", &auth)],
            )
            .await;
        assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    }
    let ro = api
        .admin(
            "POST",
            "/api/v1/tokens",
            Some(json!({"kind": "api", "clusters": ["c1"], "verbs": ["read"]})),
        )
        .await;
    let auth = format!("Bearer {}", ro.body["token"].as_str().unwrap());
    let r = api
        .call(
            "PUT",
            &format!("{P}/x"),
            Some("application/json"),
            placement(json!({})).to_string(),
            &[("authorization", &auth)],
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
}
