//! Who owns which field, end to end (real `hub serve`, `klusterlet run` and a managed
//! kube-apiserver): `serverSideApply.ignoreFields` leave a field another field manager
//! changes alone while other hand edits are still reverted; a conflict with another
//! manager is reported with the field and the manager; an object two works apply is
//! reported on both and survives the deletion of one of them.

use std::ops::Deref;
use std::time::{Duration, Instant};

use api::{Condition, ManifestCondition, ManifestWork};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use testkit::agent::AgentFleet;
use testkit::cluster::{ClusterOptions, TestCluster};
use tokio::sync::OnceCell;

static MANAGED: OnceCell<TestCluster> = OnceCell::const_new();

async fn managed() -> &'static TestCluster {
    MANAGED
        .get_or_init(|| async {
            TestCluster::start(ClusterOptions::apiserver_only())
                .await
                .expect("start the managed cluster")
        })
        .await
}

const LIMIT: Duration = Duration::from_secs(60);

/// A hub, one joined cluster and its running klusterlet (resync every second).
struct Fleet(AgentFleet);

impl Deref for Fleet {
    type Target = AgentFleet;
    fn deref(&self) -> &AgentFleet {
        &self.0
    }
}

impl Fleet {
    async fn start(cluster: &str) -> Fleet {
        Fleet(AgentFleet::start(managed().await, cluster).await.unwrap())
    }

    async fn put(&self, name: &str, manifests: Vec<Value>, configs: Value) {
        self.0
            .put(name, manifests, |w| {
                w.spec.manifest_configs = serde_json::from_value(configs).unwrap()
            })
            .await;
    }

    async fn wait_for<T>(&self, what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(v) = probe().await {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not happen within {LIMIT:?}\nagent log:\n{}",
                self.agent_log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(MANAGED.get().unwrap().client(), &self.namespace)
    }

    /// The manifestConfigs entry giving one object of this namespace an update strategy.
    fn config(&self, group: &str, resource: &str, name: &str, strategy: Value) -> Value {
        json!({
            "resourceIdentifier": {"group": group, "resource": resource, "name": name, "namespace": self.namespace},
            "updateStrategy": strategy,
        })
    }
}

/// The first manifest's condition of this type, for the work's current generation.
fn manifest_condition(w: Option<&ManifestWork>, type_: &str) -> Option<Condition> {
    let w = w?;
    let m: &ManifestCondition = w.status.resource_status.as_ref()?.manifests.first()?;
    let c = m.conditions.iter().find(|c| c.type_ == type_)?;
    (c.observed_generation == w.metadata.generation).then(|| c.clone())
}

fn work_applied(w: Option<&ManifestWork>) -> bool {
    w.and_then(|w| {
        let c = w.condition("Applied")?;
        Some(c.is_true() && c.observed_generation == w.metadata.generation)
    })
    .unwrap_or(false)
}

fn deployment(namespace: &str, replicas: i64, team: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace, "labels": {"team": team}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "registry.example/app:1",
                                         "env": [{"name": "MODE", "value": "work"}]}]},
            },
        },
    })
}

/// Which fields of the object a field manager owns (its `fieldsV1`, as text).
fn owned_by(d: &Deployment, manager: &str) -> String {
    d.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() == Some(manager))
        .filter_map(|m| m.fields_v1.as_ref())
        .map(|f| f.0.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_autoscaler_keeps_its_replicas_while_hand_edits_are_reverted() {
    let fleet = Fleet::start("ignore").await;
    let ns = fleet.namespace.clone();
    let strategy = json!({"type": "ServerSideApply", "serverSideApply": {"force": true, "ignoreFields": [
        {"condition": "OnSpokePresent", "jsonPaths": [".spec.replicas"]}]}});
    let configs = json!([fleet.config("apps", "deployments", "web", strategy)]);
    fleet
        .put("scaled", vec![deployment(&ns, 2, "a")], configs.clone())
        .await;
    fleet.wait_work("scaled", LIMIT, work_applied).await;
    let d = fleet.deployments().get("web").await.unwrap();
    assert_eq!(
        d.spec.as_ref().unwrap().replicas,
        Some(2),
        "set on creation"
    );

    // An autoscaler, as its own field manager, takes the replicas.
    let scale = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": ns}, "spec": {"replicas": 5}});
    fleet
        .deployments()
        .patch(
            "web",
            &PatchParams::apply("hpa").force(),
            &Patch::Apply(&scale),
        )
        .await
        .unwrap();
    // A person edits a label and an env var the work sets.
    let edit = json!({"metadata": {"labels": {"team": "by-hand"}}});
    fleet
        .deployments()
        .patch("web", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .unwrap();
    let env = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "app", "env": [{"name": "MODE", "value": "by-hand"}]}]}}}});
    fleet
        .deployments()
        .patch("web", &PatchParams::default(), &Patch::Strategic(&env))
        .await
        .unwrap();

    // The hand edits are reverted; the autoscaler's replicas stay.
    let reverted = fleet
        .wait_for("the hand edits reverted", async || {
            let d = fleet.deployments().get("web").await.ok()?;
            let team = d.metadata.labels.as_ref()?.get("team")?.clone();
            let spec = d.spec.as_ref()?;
            let env = spec.template.spec.as_ref()?.containers[0].env.clone()?;
            let mode = env.iter().find(|e| e.name == "MODE")?.value.clone()?;
            (team == "a" && mode == "work").then_some(d)
        })
        .await;
    assert_eq!(reverted.spec.as_ref().unwrap().replicas, Some(5));

    // Several resyncs later (one a second) nothing moved: the agent does not fight over
    // the replicas, does not take them back, and reports no change.
    // (The status of the revert's own reconcile lands first.)
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled = fleet
        .wait_work("scaled", LIMIT, work_applied)
        .await
        .unwrap();
    let before = fleet.deployments().get("web").await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = fleet.deployments().get("web").await.unwrap();
    assert_eq!(after.spec.as_ref().unwrap().replicas, Some(5));
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "the Deployment was written again by resyncs"
    );
    assert!(owned_by(&after, "hpa").contains("f:replicas"));
    assert!(
        !owned_by(&after, "klusterlet").contains("f:replicas"),
        "the agent took the replicas back: {}",
        owned_by(&after, "klusterlet")
    );
    let later = fleet
        .wait_work("scaled", LIMIT, |w| w.is_some())
        .await
        .unwrap();
    assert_eq!(
        later.metadata.resource_version, settled.metadata.resource_version,
        "the work's status changed: {:?}",
        later.status
    );
    assert!(work_applied(Some(&later)));

    // A new value in the work for another field still wins.
    fleet
        .put("scaled", vec![deployment(&ns, 2, "b")], configs)
        .await;
    fleet
        .wait_for("the work's new label applied", async || {
            let d = fleet.deployments().get("web").await.ok()?;
            (d.metadata.labels.as_ref()?.get("team")? == "b").then_some(())
        })
        .await;
    let d = fleet.deployments().get("web").await.unwrap();
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_kubectl_owns_is_a_conflict_naming_field_and_manager() {
    let fleet = Fleet::start("conflict").await;
    let ns = fleet.namespace.clone();
    let theirs = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "owned", "namespace": ns}, "data": {"k": "theirs"}});
    fleet
        .configmaps()
        .patch(
            "owned",
            &PatchParams::apply("kubectl"),
            &Patch::Apply(&theirs),
        )
        .await
        .unwrap();
    let ours = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "owned", "namespace": ns}, "data": {"k": "ours"}});
    let strategy = json!({"type": "ServerSideApply", "serverSideApply": {"force": false}});
    fleet
        .put(
            "taker",
            vec![ours],
            json!([fleet.config("", "configmaps", "owned", strategy)]),
        )
        .await;
    let w = fleet
        .wait_work("taker", LIMIT, |w| {
            manifest_condition(w, "Applied").is_some_and(|c| c.status == "False")
        })
        .await;
    let applied = manifest_condition(w.as_ref(), "Applied").unwrap();
    assert_eq!(applied.reason, "Conflict", "{applied:?}");
    assert!(
        applied.message.contains(".data.k") && applied.message.contains("\"kubectl\""),
        "{}",
        applied.message
    );
    let cm = fleet.configmaps().get("owned").await.unwrap();
    assert_eq!(
        cm.data.unwrap()["k"],
        "theirs",
        "not taken over without force"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_of_two_works_is_reported_on_both_and_outlives_one() {
    let fleet = Fleet::start("shared").await;
    let ns = fleet.namespace.clone();
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "both", "namespace": ns}, "data": {"v": "1"}});
    fleet.put("first", vec![cm.clone()], json!([])).await;
    fleet.wait_work("first", LIMIT, work_applied).await;
    fleet.put("second", vec![cm], json!([])).await;
    let shared_with = |other: &'static str| {
        move |w: Option<&ManifestWork>| {
            manifest_condition(w, "SharedWithOtherWorks")
                .is_some_and(|c| c.status == "True" && c.message.contains(&format!("\"{other}\"")))
        }
    };
    fleet.wait_work("second", LIMIT, shared_with("first")).await;
    fleet.wait_work("first", LIMIT, shared_with("second")).await;

    // Deleting one work leaves the object the other still applies.
    fleet
        .admin
        .delete_work(&fleet.cluster, "first")
        .await
        .unwrap();
    fleet.wait_work("first", LIMIT, |w| w.is_none()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kept = fleet.configmaps().get_opt("both").await.unwrap();
    assert!(
        kept.is_some(),
        "deleting one work deleted the object of another\nagent log:\n{}",
        fleet.agent_log()
    );
    fleet
        .wait_work("second", LIMIT, |w| {
            work_applied(w) && manifest_condition(w, "SharedWithOtherWorks").is_none()
        })
        .await;

    // The last work to go takes it.
    fleet
        .admin
        .delete_work(&fleet.cluster, "second")
        .await
        .unwrap();
    fleet.wait_work("second", LIMIT, |w| w.is_none()).await;
    fleet
        .wait_for(
            "the object deleted with its last work",
            async || match fleet.configmaps().get_opt("both").await {
                Ok(None) => Some(()),
                _ => None,
            },
        )
        .await;
}
