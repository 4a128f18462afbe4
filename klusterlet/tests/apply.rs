//! The apply engine against a real kube-apiserver (and, for workload readiness, a full
//! cluster with a KWOK node): every update strategy, CRDs with their custom resources in
//! one work, unknown kinds, RBAC refusals in Kubernetes' words, uid-guarded deletion, and
//! a Deployment's readiness and well-known status feedback.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use api::{ManifestWork, UpdateStrategyType};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use klusterlet::apply::{Applier, ApplyError, DeleteOutcome, ManifestOutcome, ResourceRef};
use klusterlet::status;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use testkit::cluster::{ClusterOptions, TestCluster};
use tokio::sync::OnceCell;

/// One apiserver for the whole test binary, a namespace per test. The harness' watchdog
/// stops it when the test process exits (a static is never dropped).
static CLUSTER: OnceCell<TestCluster> = OnceCell::const_new();

/// How long something that must happen may take: generous, CI runs clusters side by side.
const DEADLINE: Duration = Duration::from_secs(120);

async fn cluster() -> &'static TestCluster {
    CLUSTER
        .get_or_init(|| async {
            TestCluster::start(ClusterOptions::apiserver_only())
                .await
                .expect("start the test cluster")
        })
        .await
}

/// A namespace of its own for a test.
async fn namespace(client: &kube::Client, prefix: &str) -> anyhow::Result<String> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!("{prefix}-{}", N.fetch_add(1, Ordering::Relaxed));
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(name)
}

fn work(name: &str, manifests: Vec<Value>) -> ManifestWork {
    let mut work = ManifestWork::new("edge-1", name, manifests);
    work.metadata.generation = Some(1);
    work
}

/// Adds a `manifestConfigs` entry for a resource.
fn configure(work: &mut ManifestWork, identifier: Value, rest: Value) {
    let mut entry = json!({"resourceIdentifier": identifier});
    for (k, v) in rest.as_object().expect("an object").clone() {
        entry[k] = v;
    }
    work.spec
        .manifest_configs
        .push(serde_json::from_value(entry).expect("a manifest config"));
}

fn config_map(namespace: &str, name: &str, data: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    })
}

fn applied(outcome: &ManifestOutcome) -> &DynamicObject {
    match &outcome.result {
        Ok(obj) => obj,
        Err(e) => panic!("manifest {} failed: {e:?}", outcome.ordinal),
    }
}

fn failed(outcome: &ManifestOutcome) -> &ApplyError {
    match &outcome.result {
        Ok(obj) => panic!(
            "manifest {} applied, expected a failure: {obj:?}",
            outcome.ordinal
        ),
        Err(e) => e,
    }
}

fn managers(obj: &DynamicObject) -> Vec<String> {
    obj.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect()
}

async fn data_of(client: &kube::Client, namespace: &str, name: &str) -> anyhow::Result<Value> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get(name)
        .await?;
    Ok(serde_json::to_value(cm.data.unwrap_or_default())?)
}

/// A change by hand (`kubectl edit`-like: a merge patch under another field manager).
async fn edit(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    data: Value,
) -> anyhow::Result<()> {
    Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({"data": data})),
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn update_restores_the_works_fields_and_leaves_the_others() -> anyhow::Result<()> {
    let client = cluster().await.client();
    let applier = Applier::new(client.clone()).await.expect("discovery");
    static N: AtomicUsize = AtomicUsize::new(0);
    let ns = format!("update-{}", N.fetch_add(1, Ordering::Relaxed));
    let default_name = format!("{ns}-in-default");
    // The ConfigMap comes before its Namespace: Namespaces are applied first.
    let work = work(
        "update",
        vec![
            config_map(&ns, "settings", json!({"color": "blue"})),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": default_name}, "data": {"k": "v"}}),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        ],
    );
    let outcomes = applier.apply_work(&work).await;
    let ordinals: Vec<i32> = outcomes.iter().map(|o| o.ordinal).collect();
    assert_eq!(ordinals, [0, 1, 2]);
    let cm = applied(&outcomes[0]);
    assert!(
        managers(cm).contains(&"klusterlet".to_string()),
        "{:?}",
        managers(cm)
    );
    assert_eq!(
        outcomes[0].reference,
        Some(ResourceRef {
            group: String::new(),
            version: "v1".into(),
            kind: "ConfigMap".into(),
            resource: "configmaps".into(),
            namespace: ns.clone(),
            name: "settings".into(),
        })
    );
    // A namespaced kind without a namespace lands in "default".
    assert_eq!(outcomes[1].reference.as_ref().unwrap().namespace, "default");
    applied(&outcomes[1]);
    let namespace_ref = outcomes[2].reference.clone().unwrap();
    assert_eq!(
        (
            namespace_ref.resource.as_str(),
            namespace_ref.namespace.as_str()
        ),
        ("namespaces", "")
    );
    applied(&outcomes[2]);

    edit(
        &client,
        &ns,
        "settings",
        json!({"color": "red", "added": "by hand"}),
    )
    .await?;
    let again = applier.apply_work(&work).await;
    applied(&again[0]);
    assert_eq!(
        data_of(&client, &ns, "settings").await?,
        json!({"color": "blue", "added": "by hand"}),
        "the work's field is restored, a field it never set is left alone"
    );
    Ok(())
}

#[tokio::test]
async fn server_side_apply_reports_a_conflict_unless_forced() -> anyhow::Result<()> {
    let client = cluster().await.client();
    let ns = namespace(&client, "ssa").await?;
    let applier = Applier::new(client.clone()).await.expect("discovery");
    let identifier =
        json!({"group": "", "resource": "configmaps", "name": "owned", "namespace": ns});
    let mut work = work(
        "ssa",
        vec![config_map(&ns, "owned", json!({"owner": "team-a"}))],
    );
    configure(
        &mut work,
        identifier.clone(),
        json!({"updateStrategy": {"type": "ServerSideApply", "serverSideApply": {"fieldManager": "team-a"}}}),
    );
    let first = applier.apply_work(&work).await;
    assert_eq!(managers(applied(&first[0])), ["team-a"]);

    // Another manager takes the field over.
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .patch(
            "owned",
            &PatchParams::apply("other-tool").force(),
            &Patch::Apply(config_map(&ns, "owned", json!({"owner": "other"}))),
        )
        .await?;

    let conflict = applier.apply_work(&work).await;
    let err = failed(&conflict[0]);
    assert_eq!(err.reason, "Conflict", "{err:?}");
    assert!(!err.retryable);
    assert!(
        err.message
            .contains(r#".data.owner (field manager "other-tool")"#),
        "{}",
        err.message
    );
    assert!(err.message.contains(".data.owner"), "{}", err.message);
    assert_eq!(
        data_of(&client, &ns, "owned").await?,
        json!({"owner": "other"})
    );
    let condition = status::manifest_condition(&conflict[0], &work, None, chrono::Utc::now());
    let applied_condition = api::find_condition(&condition.conditions, status::APPLIED).unwrap();
    assert_eq!(
        (
            applied_condition.status.as_str(),
            applied_condition.reason.as_str()
        ),
        ("False", "Conflict")
    );
    assert_eq!(applied_condition.message, err.message);

    // With force the work wins.
    work.spec.manifest_configs.clear();
    configure(
        &mut work,
        identifier,
        json!({"updateStrategy": {"type": "ServerSideApply", "serverSideApply": {"fieldManager": "team-a", "force": true}}}),
    );
    let forced = applier.apply_work(&work).await;
    applied(&forced[0]);
    assert_eq!(
        data_of(&client, &ns, "owned").await?,
        json!({"owner": "team-a"})
    );
    Ok(())
}

#[tokio::test]
async fn create_only_creates_once_and_never_updates() -> anyhow::Result<()> {
    let client = cluster().await.client();
    let ns = namespace(&client, "create-only").await?;
    let applier = Applier::new(client.clone()).await.expect("discovery");
    let mut work = work(
        "create-only",
        vec![config_map(&ns, "seed", json!({"value": "initial"}))],
    );
    configure(
        &mut work,
        json!({"group": "", "resource": "configmaps", "name": "seed", "namespace": ns}),
        json!({"updateStrategy": {"type": "CreateOnly"}}),
    );
    assert_eq!(
        work.spec.manifest_configs[0]
            .update_strategy
            .as_ref()
            .unwrap()
            .type_,
        UpdateStrategyType::CreateOnly
    );
    let created = applier.apply_work(&work).await;
    let uid = applied(&created[0]).metadata.uid.clone().unwrap();
    assert_eq!(
        data_of(&client, &ns, "seed").await?,
        json!({"value": "initial"})
    );

    edit(&client, &ns, "seed", json!({"value": "changed by hand"})).await?;
    let version_before = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get("seed")
        .await?
        .metadata
        .resource_version;
    let again = applier.apply_work(&work).await;
    let found = applied(&again[0]);
    assert_eq!(found.metadata.uid.as_deref(), Some(uid.as_str()));
    assert_eq!(found.data["data"], json!({"value": "changed by hand"}));
    let live = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get("seed")
        .await?;
    assert_eq!(
        live.metadata.resource_version, version_before,
        "not written"
    );
    Ok(())
}

#[tokio::test]
async fn read_only_never_writes() -> anyhow::Result<()> {
    let client = cluster().await.client();
    let ns = namespace(&client, "read-only").await?;
    let applier = Applier::new(client.clone()).await.expect("discovery");
    let mut work = work(
        "read-only",
        vec![config_map(&ns, "observed", json!({"a": "from the work"}))],
    );
    configure(
        &mut work,
        json!({"group": "", "resource": "configmaps", "name": "observed", "namespace": ns}),
        json!({"updateStrategy": {"type": "ReadOnly"}, "feedbackRules": [{"type": "JSONPaths", "jsonPaths": [{"name": "a", "path": ".data.a"}]}]}),
    );
    let absent = applier.apply_work(&work).await;
    let err = failed(&absent[0]);
    assert_eq!(err.reason, "NotFound");
    assert!(err.retryable);
    assert_eq!(err.message, r#"configmaps "observed" not found"#);
    let reference = absent[0].reference.clone().unwrap();
    assert!(
        applier.get(&reference).await.unwrap().is_none(),
        "not created"
    );

    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let by_hand: ConfigMap =
        serde_json::from_value(config_map(&ns, "observed", json!({"a": "by hand"})))?;
    cms.create(&PostParams::default(), &by_hand).await?;
    let present = applier.apply_work(&work).await;
    let obj = applied(&present[0]);
    assert_eq!(obj.data["data"], json!({"a": "by hand"}));
    assert!(!managers(obj).contains(&"klusterlet".to_string()));
    assert_eq!(
        data_of(&client, &ns, "observed").await?,
        json!({"a": "by hand"})
    );
    let condition = status::manifest_condition(&present[0], &work, None, chrono::Utc::now());
    let values = &condition.status_feedback.unwrap().values;
    assert_eq!(values.len(), 1);
    assert_eq!(values[0].field_value.string.as_deref(), Some("by hand"));
    Ok(())
}

#[tokio::test]
async fn a_crd_and_its_custom_resource_apply_in_one_work_even_listed_after_it() -> anyhow::Result<()>
{
    let client = cluster().await.client();
    let ns = namespace(&client, "crd").await?;
    let applier = Applier::new(client.clone()).await.expect("discovery");
    let group = "apply-test.fleethub.test";
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("gadgets.{group}")},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                }}},
            }],
        },
    });
    let gadget = json!({
        "apiVersion": format!("{group}/v1"),
        "kind": "Gadget",
        "metadata": {"name": "g1", "namespace": ns},
        "spec": {"size": 3},
    });
    let work = work("crd", vec![gadget, crd]);
    let outcomes = applier.apply_work(&work).await;
    let cr = applied(&outcomes[0]);
    assert_eq!(cr.data["spec"]["size"], 3);
    let crd_obj = applied(&outcomes[1]);
    let reference = outcomes[0].reference.clone().unwrap();
    assert_eq!(
        (
            reference.group.as_str(),
            reference.resource.as_str(),
            reference.namespace.as_str()
        ),
        (group, "gadgets", ns.as_str())
    );
    let live = applier
        .get(&reference)
        .await
        .unwrap()
        .expect("the custom resource exists");
    assert_eq!(live.metadata.uid, cr.metadata.uid);
    let crd_ref = outcomes[1].reference.clone().unwrap();
    let crd_live = applier.get(&crd_ref).await.unwrap().unwrap();
    assert_eq!(crd_live.metadata.uid, crd_obj.metadata.uid);
    assert!(status::readiness(&crd_live).0, "the CRD is Established");

    // Applying it again changes nothing and still works.
    let again = applier.apply_work(&work).await;
    assert_eq!(applied(&again[0]).metadata.uid, cr.metadata.uid);
    Ok(())
}

#[tokio::test]
async fn an_unknown_kind_fails_only_itself() -> anyhow::Result<()> {
    let client = cluster().await.client();
    let ns = namespace(&client, "unknown").await?;
    let applier = Applier::new(client.clone()).await.expect("discovery");
    let mut manifests: Vec<Value> = (0..30)
        .map(|i| config_map(&ns, &format!("cm-{i}"), json!({"i": i.to_string()})))
        .collect();
    manifests.insert(
        11,
        json!({"apiVersion": "nowhere.fleethub.test/v1", "kind": "Gizmo", "metadata": {"name": "g", "namespace": ns}}),
    );
    manifests.insert(20, json!({"apiVersion": "v1", "kind": "ConfigMap"}));
    let work = work("unknown", manifests);
    let outcomes = applier.apply_work(&work).await;
    assert_eq!(outcomes.len(), 32);
    for (i, outcome) in outcomes.iter().enumerate() {
        assert_eq!(outcome.ordinal, i as i32, "outcomes come in manifest order");
        match i {
            11 => {
                let err = failed(outcome);
                assert_eq!(err.reason, "UnknownKind");
                // A person must install the CRD: Degraded at once, not after a minute.
                assert!(!err.retryable);
                assert!(
                    err.message
                        .contains(r#"kind "Gizmo" in version "nowhere.fleethub.test/v1""#),
                    "{}",
                    err.message
                );
                assert!(outcome.reference.is_none());
            }
            20 => {
                let err = failed(outcome);
                assert_eq!(err.reason, "Invalid");
                assert!(!err.retryable);
            }
            _ => {
                applied(outcome);
            }
        }
    }
    let applied_here = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter(|cm| {
            cm.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("cm-"))
        })
        .count();
    assert_eq!(applied_here, 30);

    let conditions: Vec<_> = outcomes
        .iter()
        .map(|o| status::manifest_condition(o, &work, None, chrono::Utc::now()))
        .collect();
    assert_eq!(conditions[11].resource_meta.kind, "Gizmo");
    let work_conditions = status::work_conditions(&conditions, 1, &[], None, chrono::Utc::now());
    let applied_condition = api::find_condition(&work_conditions, status::APPLIED).unwrap();
    assert_eq!(applied_condition.status, "False");
    assert!(
        applied_condition.message.starts_with(&format!(
            "2 of 32 manifests failed to apply: Gizmo {ns}/g: UnknownKind: "
        )),
        "{}",
        applied_condition.message
    );
    Ok(())
}

#[tokio::test]
async fn missing_rights_are_reported_in_kubernetes_words_on_that_manifest() -> anyhow::Result<()> {
    let cluster = cluster().await;
    let admin = cluster.client();
    let ns = namespace(&admin, "rbac").await?;
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "web", "image": "nginx"}]}},
        },
    });

    // No rights at all: the apply (a PATCH) is refused.
    let nobody = cluster.user_client("nobody", &[]).await?;
    let applier = Applier::new(nobody)
        .await
        .expect("discovery is open to every user");
    let outcomes = applier
        .apply_work(&work("rbac", vec![deployment.clone()]))
        .await;
    let err = failed(&outcomes[0]);
    assert_eq!(err.reason, "Forbidden");
    assert!(!err.retryable);
    assert_eq!(
        err.message,
        format!(
            r#"deployments.apps "web" is forbidden: User "nobody" cannot patch resource "deployments" in API group "apps" in the namespace "{ns}""#
        )
    );

    // Rights on ConfigMaps, and to patch but not create Deployments.
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "limited", "namespace": ns},
        "rules": [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]},
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "patch"]},
        ],
    }))?;
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await?;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "limited", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "limited"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "limited"}],
    }))?;
    Api::<RoleBinding>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &binding)
        .await?;
    let limited = cluster.user_client("limited", &[]).await?;
    let applier = Applier::new(limited).await.expect("discovery");
    let work = work(
        "rbac",
        vec![config_map(&ns, "allowed", json!({"a": "b"})), deployment],
    );
    // The authorizer sees new bindings a moment after they are written.
    let deadline = Instant::now() + DEADLINE;
    let outcomes = loop {
        let outcomes = applier.apply_work(&work).await;
        if outcomes[0].result.is_ok() {
            break outcomes;
        }
        if Instant::now() > deadline {
            bail!(
                "the RoleBinding never took effect: {:?}",
                outcomes[0].result
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let err = failed(&outcomes[1]);
    assert_eq!(err.reason, "Forbidden");
    assert_eq!(
        err.message,
        format!(
            r#"deployments.apps "web" is forbidden: User "limited" cannot create resource "deployments" in API group "apps" in the namespace "{ns}""#
        )
    );
    let conditions: Vec<_> = outcomes
        .iter()
        .map(|o| status::manifest_condition(o, &work, None, chrono::Utc::now()))
        .collect();
    let work_conditions = status::work_conditions(
        &conditions,
        1,
        &[],
        Some(err.message.clone()),
        chrono::Utc::now(),
    );
    let applied_condition = api::find_condition(&work_conditions, status::APPLIED).unwrap();
    assert!(
        applied_condition
            .message
            .contains(&format!("Deployment {ns}/web: Forbidden: ")),
        "{}",
        applied_condition.message
    );
    assert_eq!(
        api::find_condition(&work_conditions, status::DEGRADED)
            .unwrap()
            .status,
        "True"
    );
    Ok(())
}

#[tokio::test]
async fn delete_never_touches_an_object_with_another_uid() -> anyhow::Result<()> {
    let client = cluster().await.client();
    let ns = namespace(&client, "delete").await?;
    let applier = Applier::new(client.clone()).await.expect("discovery");
    let work = work(
        "delete",
        vec![config_map(&ns, "mine", json!({"a": "1"})), {
            // Held by someone else's finalizer: deleting, not gone, until it is removed.
            let mut held = config_map(&ns, "slow", json!({"a": "1"}));
            held["metadata"]["finalizers"] = json!(["fleethub.test/hold"]);
            held
        }],
    );
    let outcomes = applier.apply_work(&work).await;
    let reference = outcomes[0].reference.clone().unwrap();
    let uid = applied(&outcomes[0]).metadata.uid.clone().unwrap();

    assert_eq!(
        applier
            .delete(&reference, "00000000-0000-0000-0000-000000000000")
            .await,
        Ok(DeleteOutcome::NotOurs)
    );
    let still = applier.get(&reference).await.unwrap().expect("left alone");
    assert_eq!(still.metadata.uid.as_deref(), Some(uid.as_str()));
    assert_eq!(
        applier.delete(&reference, "").await.unwrap_err().reason,
        "Invalid"
    );
    assert!(applier.get(&reference).await.unwrap().is_some());

    assert_eq!(
        applier.delete(&reference, &uid).await,
        Ok(DeleteOutcome::Gone)
    );
    assert!(applier.get(&reference).await.unwrap().is_none());
    assert_eq!(
        applier.delete(&reference, &uid).await,
        Ok(DeleteOutcome::Gone)
    );

    // Background propagation: on this apiserver-only cluster (no garbage collector) an
    // object without finalizers is gone at once; a foreground deletion would wait forever
    // for a `foregroundDeletion` finalizer only the garbage collector removes.
    let slow = outcomes[1].reference.clone().unwrap();
    let slow_uid = applied(&outcomes[1]).metadata.uid.clone().unwrap();
    assert_eq!(
        applier.delete(&slow, &slow_uid).await,
        Ok(DeleteOutcome::Deleting)
    );
    let deleting = applier.get(&slow).await.unwrap().expect("still there");
    assert!(deleting.metadata.deletion_timestamp.is_some());
    assert_eq!(
        deleting.metadata.finalizers.clone().unwrap_or_default(),
        vec!["fleethub.test/hold".to_string()],
        "no foregroundDeletion finalizer is added"
    );
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    cms.patch(
        "slow",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await?;
    assert_eq!(
        applier.delete(&slow, &slow_uid).await,
        Ok(DeleteOutcome::Gone)
    );
    Ok(())
}

#[tokio::test]
async fn a_deployment_becomes_ready_with_its_well_known_status() -> anyhow::Result<()> {
    // Pods need a controller-manager, a scheduler and a node: a full cluster of its own.
    let cluster = TestCluster::start(ClusterOptions::full()).await?;
    let client = cluster.client();
    let applier = Applier::new(client.clone()).await.expect("discovery");
    let ns = "shop";
    let mut work = work(
        "web",
        vec![
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web", "namespace": ns},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                                 "spec": {"containers": [{"name": "web", "image": "nginx"}]}},
                },
            }),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        ],
    );
    configure(
        &mut work,
        json!({"group": "apps", "resource": "deployments", "name": "web", "namespace": ns}),
        json!({"feedbackRules": [{"type": "WellKnownStatus"}]}),
    );
    let outcomes = applier.apply_work(&work).await;
    applied(&outcomes[1]);
    let first = status::manifest_condition(&outcomes[0], &work, None, chrono::Utc::now());
    assert_eq!(
        api::find_condition(&first.conditions, status::APPLIED)
            .unwrap()
            .status,
        "True"
    );
    let reference = outcomes[0].reference.clone().unwrap();

    let deadline = Instant::now() + DEADLINE;
    let live = loop {
        let live = applier
            .get(&reference)
            .await
            .unwrap()
            .expect("the Deployment exists");
        let (ready, why) = status::readiness(&live);
        if ready {
            break live;
        }
        if Instant::now() > deadline {
            bail!("the Deployment never became ready: {why}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let rules = &work.spec.manifest_configs[0].feedback_rules;
    let values: Vec<(String, Option<i64>)> = status::feedback(&live, rules)
        .into_iter()
        .map(|v| (v.name, v.field_value.integer))
        .collect();
    assert_eq!(
        values,
        [
            ("ReadyReplicas".to_string(), Some(2)),
            ("Replicas".to_string(), Some(2)),
            ("AvailableReplicas".to_string(), Some(2)),
        ]
    );
    let outcome = ManifestOutcome {
        ordinal: 0,
        reference: Some(reference),
        result: Ok(live),
    };
    let now = chrono::Utc::now();
    let manifest = status::manifest_condition(&outcome, &work, Some(&first), now);
    let ready = api::find_condition(&manifest.conditions, status::READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.message.as_str()),
        ("True", "2 of 2 replicas available")
    );
    let namespace = status::manifest_condition(&outcomes[1], &work, None, now);
    let work_conditions = status::work_conditions(&[manifest, namespace], 1, &[], None, now);
    assert_eq!(
        api::find_condition(&work_conditions, status::READY)
            .unwrap()
            .status,
        "True"
    );
    assert_eq!(
        api::find_condition(&work_conditions, status::PROGRESSING)
            .unwrap()
            .status,
        "False"
    );
    Ok(())
}

/// Failures no quick retry mends are reported as such at once (the work turns Degraded in
/// seconds, and `hub wait` fails fast): a missing namespace, and a manifest whose fields do
/// not fit the kind's schema. Each took over a minute to fail a wait before.
#[tokio::test]
async fn permanent_failures_are_not_retried_as_transient() -> anyhow::Result<()> {
    let client = cluster().await.client();
    let ns = namespace(&client, "permanent").await?;
    let applier = Applier::new(client.clone()).await.expect("discovery");
    let work = work(
        "permanent",
        vec![
            config_map("no-such-namespace", "lost", json!({"a": "1"})),
            config_map(&ns, "typed", json!({"a": 1})),
        ],
    );
    let outcomes = applier.apply_work(&work).await;
    let missing = failed(&outcomes[0]);
    assert_eq!(missing.reason, "NotFound");
    assert!(
        missing
            .message
            .contains(r#"namespaces "no-such-namespace" not found"#),
        "{}",
        missing.message
    );
    assert!(!missing.retryable, "{missing:?}");
    let typed = failed(&outcomes[1]);
    assert!(
        typed.message.contains(".data.a"),
        "names the field: {}",
        typed.message
    );
    assert!(!typed.retryable, "{typed:?}");
    Ok(())
}
