//! Unit tests of rendering a set's works: merge patch, manifest references, overrides, the
//! split workload and the spec checks.

use api::fleet::{
    ClusterWeight, LocalPlacementReference, ManifestRef, ManifestWorkReplicaSetSpec, ReplicaSplit,
    SetOverride,
};
use api::types::ManifestWorkSpec;
use serde_json::{Value, json};

use super::*;

fn deployment(name: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "web"},
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [
            {"name": "app", "image": "nginx:1.27"}
        ]}}}
    })
}

fn config_map(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "web"},
        "data": {"color": "blue", "size": "m"}
    })
}

fn template(manifests: Vec<Value>) -> ManifestWorkSpec {
    serde_json::from_value(json!({"workload": {"manifests": manifests}})).expect("template")
}

fn reference(kind: &str, name: &str) -> ManifestRef {
    ManifestRef {
        kind: kind.into(),
        name: name.into(),
        ..Default::default()
    }
}

fn over(kind: &str, name: &str, patch: Value) -> SetOverride {
    SetOverride {
        manifest: reference(kind, name),
        patch,
        ..Default::default()
    }
}

fn set_spec(manifests: Vec<Value>) -> ManifestWorkReplicaSetSpec {
    ManifestWorkReplicaSetSpec {
        manifest_work_template: template(manifests),
        placement_refs: vec![LocalPlacementReference {
            name: "prod".into(),
            rollout_strategy: None,
        }],
        ..Default::default()
    }
}

fn fields(errs: &[FieldError]) -> Vec<&str> {
    errs.iter().map(|e| e.field.as_str()).collect()
}

#[test]
fn merge_patch_follows_rfc_7386() {
    // The examples of RFC 7386's appendix A.
    let cases = [
        (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
        (
            json!({"a": "b"}),
            json!({"b": "c"}),
            json!({"a": "b", "b": "c"}),
        ),
        (json!({"a": "b"}), json!({"a": null}), json!({})),
        (
            json!({"a": "b", "b": "c"}),
            json!({"a": null}),
            json!({"b": "c"}),
        ),
        (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
        (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
        (
            json!({"a": {"b": "c"}}),
            json!({"a": {"b": "d", "c": null}}),
            json!({"a": {"b": "d"}}),
        ),
        (
            json!({"a": [{"b": "c"}]}),
            json!({"a": [1]}),
            json!({"a": [1]}),
        ),
        (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
        (json!({"a": "b"}), json!(["c"]), json!(["c"])),
        (json!({"a": "foo"}), json!(null), json!(null)),
        (json!({"a": "foo"}), json!("bar"), json!("bar")),
        (
            json!({"e": null}),
            json!({"a": 1}),
            json!({"e": null, "a": 1}),
        ),
        (
            json!([1, 2]),
            json!({"a": "b", "c": null}),
            json!({"a": "b"}),
        ),
        (
            json!({}),
            json!({"a": {"bb": {"ccc": null}}}),
            json!({"a": {"bb": {}}}),
        ),
    ];
    for (target, patch, want) in cases {
        let mut got = target.clone();
        merge_patch(&mut got, &patch);
        assert_eq!(got, want, "{target} + {patch}");
    }
}

#[test]
fn manifest_refs_match_by_each_given_part() {
    let d = deployment("api", 1);
    let yes = |r: ManifestRef| assert!(names(&r, &d), "{r:?}");
    let no = |r: ManifestRef| assert!(!names(&r, &d), "{r:?}");
    yes(ManifestRef::default());
    yes(reference("Deployment", ""));
    yes(reference("Deployment", "api"));
    yes(reference("", "api"));
    no(reference("Deployment", "web"));
    no(reference("StatefulSet", "api"));
    let with = |api_version: &str, namespace: &str| ManifestRef {
        api_version: api_version.into(),
        namespace: namespace.into(),
        ..reference("Deployment", "api")
    };
    yes(with("apps/v1", "web"));
    yes(with("apps", ""));
    no(with("apps/v1beta1", ""));
    no(with("batch", ""));
    no(with("v1", ""));
    no(with("", "other"));
    // The core group has no name: `v1` is how a user writes it.
    let cm = config_map("settings");
    let core = |api_version: &str| ManifestRef {
        api_version: api_version.into(),
        ..reference("ConfigMap", "")
    };
    assert!(names(&core("v1"), &cm));
    assert!(!names(&core("apps"), &cm));
    // A manifest without a namespace is not "in" any namespace a ref names.
    let mut cluster_scoped = deployment("api", 1);
    cluster_scoped["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("namespace");
    assert!(!names(&with("", "web"), &cluster_scoped));
    assert!(names(&with("", ""), &cluster_scoped));
}

#[test]
fn overrides_patch_only_the_manifests_they_name_in_order() {
    let t = template(vec![
        deployment("api", 1),
        config_map("settings"),
        config_map("other"),
    ]);
    let image = over(
        "Deployment",
        "api",
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "nginx:1.28"}
        ]}}}}),
    );
    let red = over(
        "ConfigMap",
        "settings",
        json!({"data": {"color": "red", "size": null}}),
    );
    let green = over("ConfigMap", "settings", json!({"data": {"color": "green"}}));
    let got = render(&t, &[&image, &red, &green], None).expect("render");
    let m = &got.workload.manifests;
    assert_eq!(
        m[0]["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.28"
    );
    assert_eq!(m[0]["spec"]["replicas"], 1);
    assert_eq!(
        m[1]["data"],
        json!({"color": "green"}),
        "later overrides win"
    );
    assert_eq!(
        m[2],
        config_map("other"),
        "an unnamed manifest is untouched"
    );
    // The template itself is not changed.
    assert_eq!(t.workload.manifests[1], config_map("settings"));
}

#[test]
fn no_overrides_no_split_is_the_template() {
    let t = template(vec![deployment("api", 4), config_map("settings")]);
    assert_eq!(render(&t, &[], None).expect("render"), t);
}

#[test]
fn overrides_and_the_split_name_manifests_as_the_template_writes_them() {
    let t = template(vec![deployment("api", 1)]);
    let rename = over("Deployment", "api", json!({"metadata": {"name": "api-eu"}}));
    let label = over(
        "Deployment",
        "api",
        json!({"metadata": {"labels": {"zone": "eu"}}}),
    );
    let workload = reference("Deployment", "api");
    let got = render(&t, &[&rename, &label], Some((&workload, 3))).expect("render");
    let m = &got.workload.manifests[0];
    assert_eq!(m["metadata"]["name"], "api-eu");
    assert_eq!(m["metadata"]["labels"]["zone"], "eu");
    assert_eq!(m["spec"]["replicas"], 3);
}

#[test]
fn the_split_sets_replicas_after_overrides() {
    let t = template(vec![deployment("api", 10), config_map("settings")]);
    let scale = over("Deployment", "", json!({"spec": {"replicas": 99}}));
    let workload = reference("Deployment", "api");
    let got = render(&t, &[&scale], Some((&workload, 4))).expect("render");
    assert_eq!(got.workload.manifests[0]["spec"]["replicas"], 4);
    let got = render(&t, &[], Some((&workload, 0))).expect("render");
    assert_eq!(got.workload.manifests[0]["spec"]["replicas"], 0);
}

#[test]
fn the_split_adds_spec_replicas_when_the_template_leaves_it_out() {
    let sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"}});
    let t = template(vec![sts]);
    let workload = reference("StatefulSet", "db");
    let got = render(&t, &[], Some((&workload, 2))).expect("render");
    assert_eq!(got.workload.manifests[0]["spec"], json!({"replicas": 2}));
}

#[test]
fn render_refuses_what_no_agent_could_apply() {
    let t = template(vec![deployment("api", 1), deployment("worker", 1)]);
    let not_object = over("Deployment", "api", json!(["replicas", 3]));
    let err = render(&t, &[&not_object], None).expect_err("array patch");
    assert!(matches!(
        err,
        RenderError::PatchNotObject {
            found: "an array",
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        r#"the override of Deployment "api" has a patch that is an array, not an object"#
    );

    for (patch, problem) in [
        (json!({"kind": null}), "without kind"),
        (json!({"apiVersion": ""}), "without apiVersion"),
        (json!({"metadata": {"name": null}}), "without metadata.name"),
        (
            json!({"metadata": null, "kind": 7}),
            "without kind, metadata.name",
        ),
    ] {
        let broken = over("Deployment", "worker", patch.clone());
        let err = render(&t, &[&broken], None).expect_err("broken manifest");
        let RenderError::BrokenManifest {
            index,
            problem: got,
            ..
        } = &err
        else {
            panic!("{patch}: {err:?}");
        };
        assert_eq!((*index, got.as_str()), (1, problem), "{patch}");
        assert!(
            err.to_string()
                .contains(r#"manifest 1 (Deployment "worker")"#),
            "{err}"
        );
    }

    let workload = reference("Deployment", "");
    let err = render(&t, &[], Some((&workload, 1))).expect_err("two deployments");
    assert_eq!(
        err,
        RenderError::WorkloadAmbiguous {
            target: "Deployment".into(),
            indexes: vec![0, 1],
        }
    );
    let workload = reference("Deployment", "db");
    let err = render(&t, &[], Some((&workload, 1))).expect_err("no such workload");
    assert_eq!(
        err.to_string(),
        r#"replicaSplit.workload Deployment "db" names no manifest of the template"#
    );

    let flatten = over("Deployment", "api", json!({"spec": "none"}));
    let workload = reference("Deployment", "api");
    let err = render(&t, &[&flatten], Some((&workload, 1))).expect_err("spec a string");
    assert!(matches!(
        err,
        RenderError::WorkloadSpecNotObject {
            found: "a string",
            ..
        }
    ));
}

#[test]
fn a_valid_set_spec_has_no_errors() {
    let mut spec = set_spec(vec![deployment("api", 1), config_map("settings")]);
    spec.placement_refs.push(LocalPlacementReference {
        name: "canary".into(),
        rollout_strategy: Some(
            json!({"type": "Progressive", "progressive": {"maxConcurrency": 1}}),
        ),
    });
    spec.cascade_deletion_policy = Some("Orphan".into());
    spec.overrides = vec![over(
        "ConfigMap",
        "settings",
        json!({"data": {"color": "red"}}),
    )];
    spec.replica_split = Some(ReplicaSplit {
        workload: reference("Deployment", "api"),
        total_replicas: 10,
        strategy: Some("Weighted".into()),
        weights: vec![ClusterWeight {
            weight: 3,
            ..Default::default()
        }],
    });
    assert_eq!(validate_set_spec(&spec), vec![]);
    // OCM's older field name and a strategy without type (OCM's default: All).
    spec.placement_refs[1].rollout_strategy = Some(json!({"rolloutType": "ProgressivePerGroup"}));
    spec.placement_refs[0].rollout_strategy = Some(json!({}));
    assert_eq!(validate_set_spec(&spec), vec![]);
}

#[test]
fn placement_refs_are_needed_valid_and_unique() {
    let mut spec = set_spec(vec![deployment("api", 1)]);
    spec.placement_refs.clear();
    assert_eq!(fields(&validate_set_spec(&spec)), ["spec.placementRefs"]);

    spec.placement_refs = ["prod", "Bad_Name", "prod", ""]
        .iter()
        .map(|n| LocalPlacementReference {
            name: n.to_string(),
            rollout_strategy: None,
        })
        .collect();
    let errs = validate_set_spec(&spec);
    assert_eq!(
        fields(&errs),
        [
            "spec.placementRefs[1].name",
            "spec.placementRefs[2].name",
            "spec.placementRefs[3].name"
        ]
    );
    assert!(errs[1].message.contains("listed twice"), "{errs:?}");
}

#[test]
fn rollout_strategies_and_cascade_policies_are_ocm_s() {
    let mut spec = set_spec(vec![deployment("api", 1)]);
    let strategies = [
        json!("All"),
        json!({"type": "Canary"}),
        json!({"rolloutType": 3}),
        json!({"type": "All", "rolloutType": "Progressive"}),
    ];
    spec.placement_refs = strategies
        .iter()
        .enumerate()
        .map(|(i, s)| LocalPlacementReference {
            name: format!("p{i}"),
            rollout_strategy: Some(s.clone()),
        })
        .collect();
    spec.cascade_deletion_policy = Some("Eventually".into());
    let errs = validate_set_spec(&spec);
    assert_eq!(
        fields(&errs),
        [
            "spec.placementRefs[0].rolloutStrategy",
            "spec.placementRefs[1].rolloutStrategy.type",
            "spec.placementRefs[2].rolloutStrategy.rolloutType",
            "spec.placementRefs[3].rolloutStrategy.rolloutType",
            "spec.cascadeDeletionPolicy",
        ],
        "{errs:?}"
    );
    assert!(errs[0].message.contains("a string"), "{errs:?}");
    assert!(errs[1].message.contains("\"Canary\""), "{errs:?}");
    for policy in CASCADE_POLICIES {
        spec.cascade_deletion_policy = Some(policy.into());
        spec.placement_refs.truncate(0);
        assert_eq!(fields(&validate_set_spec(&spec)), ["spec.placementRefs"]);
    }
}

#[test]
fn overrides_must_be_object_patches_that_name_a_manifest_and_keep_it_whole() {
    let mut spec = set_spec(vec![deployment("api", 1), config_map("settings")]);
    spec.overrides = vec![
        over("ConfigMap", "settings", json!({"data": {"x": "y"}})),
        over("ConfigMap", "settings", json!("replace me")),
        over("Secret", "", json!({"data": {}})),
        over("", "", json!({"metadata": {"name": null}})),
    ];
    let errs = validate_set_spec(&spec);
    assert_eq!(
        fields(&errs),
        [
            "spec.overrides[1].patch",
            "spec.overrides[2].manifest",
            "spec.overrides[3].patch",
        ],
        "{errs:?}"
    );
    assert!(
        errs[1].message.contains("Secret names no manifest"),
        "{errs:?}"
    );
    assert!(
        errs[2].message.contains("without metadata.name"),
        "{errs:?}"
    );

    // With a split, an override may not take away the workload's spec.
    spec.overrides = vec![over("Deployment", "api", json!({"spec": []}))];
    assert_eq!(validate_set_spec(&spec), vec![]);
    spec.replica_split = Some(ReplicaSplit {
        workload: reference("Deployment", "api"),
        total_replicas: 2,
        ..Default::default()
    });
    let errs = validate_set_spec(&spec);
    assert_eq!(fields(&errs), ["spec.overrides[0].patch"], "{errs:?}");
    assert!(errs[0].message.contains("its spec is an array"), "{errs:?}");
}

#[test]
fn replica_split_bounds_strategies_and_weights() {
    let split = |total: i32, strategy: Option<&str>, weights: &[i32]| ReplicaSplit {
        workload: reference("Deployment", "api"),
        total_replicas: total,
        strategy: strategy.map(str::to_string),
        weights: weights
            .iter()
            .map(|w| ClusterWeight {
                weight: *w,
                ..Default::default()
            })
            .collect(),
    };
    let check = |s: ReplicaSplit| {
        let mut spec = set_spec(vec![deployment("api", 1)]);
        spec.replica_split = Some(s);
        validate_set_spec(&spec)
    };
    for ok in [
        split(0, None, &[]),
        split(MAX_TOTAL_REPLICAS, Some("Equal"), &[]),
        split(7, Some("AllocatableCPU"), &[]),
        split(7, Some("Weighted"), &[0, MAX_WEIGHT]),
    ] {
        assert_eq!(check(ok.clone()), vec![], "{ok:?}");
    }
    for (bad, field) in [
        (split(-1, None, &[]), "spec.replicaSplit.totalReplicas"),
        (split(100_001, None, &[]), "spec.replicaSplit.totalReplicas"),
        (split(3, Some("Random"), &[]), "spec.replicaSplit.strategy"),
        (split(3, Some("Weighted"), &[]), "spec.replicaSplit.weights"),
        (split(3, None, &[1]), "spec.replicaSplit.weights"),
        (
            split(3, Some("AllocatableCPU"), &[1]),
            "spec.replicaSplit.weights",
        ),
        (
            split(3, Some("Weighted"), &[1, -1]),
            "spec.replicaSplit.weights[1].weight",
        ),
        (
            split(3, Some("Weighted"), &[1001]),
            "spec.replicaSplit.weights[0].weight",
        ),
    ] {
        assert_eq!(fields(&check(bad.clone())), [field], "{bad:?}");
    }
}

#[test]
fn the_split_workload_is_one_manifest_with_replicas() {
    let workload = |kind: &str, name: &str| ReplicaSplit {
        workload: reference(kind, name),
        total_replicas: 3,
        ..Default::default()
    };
    let crd_with_replicas = json!({
        "apiVersion": "example.com/v1", "kind": "Scaled",
        "metadata": {"name": "s"}, "spec": {"replicas": 1}
    });
    let spec_with = |s: ReplicaSplit| {
        let mut spec = set_spec(vec![
            deployment("api", 1),
            deployment("worker", 1),
            config_map("settings"),
            crd_with_replicas.clone(),
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"}}),
        ]);
        spec.replica_split = Some(s);
        validate_set_spec(&spec)
    };
    for ok in [
        workload("Deployment", "worker"),
        workload("StatefulSet", ""),
        workload("Scaled", "s"),
    ] {
        assert_eq!(spec_with(ok.clone()), vec![], "{ok:?}");
    }
    for (bad, says) in [
        (workload("Deployment", ""), "names 2 manifests"),
        (workload("Job", ""), "names no manifest"),
        (workload("ConfigMap", "settings"), "has no spec.replicas"),
    ] {
        let errs = spec_with(bad.clone());
        assert_eq!(fields(&errs), ["spec.replicaSplit.workload"], "{bad:?}");
        assert!(errs[0].message.contains(says), "{errs:?}");
    }
}
