//! The work loop end to end, all real processes: `hub serve`, `klusterlet join` and
//! `klusterlet run`, and a real managed cluster (kube-apiserver, controller-manager,
//! scheduler and a KWOK node, so Deployments become available).

use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use api::{
    Condition, DeleteOption, ManifestWork, PropagationPolicy, ResourceIdentifier, SelectivelyOrphan,
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use testkit::agent::{self, AgentFleet};
use testkit::cluster::{ClusterOptions, TestCluster};
use tokio::sync::OnceCell;

static MANAGED: OnceCell<TestCluster> = OnceCell::const_new();

async fn managed() -> &'static TestCluster {
    MANAGED
        .get_or_init(|| async {
            TestCluster::start(ClusterOptions::full())
                .await
                .expect("start the managed cluster")
        })
        .await
}

/// A hub, one joined cluster and its running klusterlet.
struct Fleet(AgentFleet);

impl Deref for Fleet {
    type Target = AgentFleet;
    fn deref(&self) -> &AgentFleet {
        &self.0
    }
}

impl DerefMut for Fleet {
    fn deref_mut(&mut self) -> &mut AgentFleet {
        &mut self.0
    }
}

impl Fleet {
    /// Starts a hub, joins `cluster` with an auto-accept token, creates a namespace for the
    /// test in the managed cluster, and runs the klusterlet with ~1 s timings.
    async fn start(cluster: &str) -> Fleet {
        Fleet(AgentFleet::start(managed().await, cluster).await.unwrap())
    }

    /// [`start`](Self::start) with the agent using this kubeconfig for join and run; the
    /// test namespace may exist already.
    async fn start_as(cluster: &str, kubeconfig: std::path::PathBuf) -> Fleet {
        let mut fleet = AgentFleet::hub_only(managed().await, cluster, Some(kubeconfig))
            .await
            .unwrap();
        fleet.join().await.unwrap();
        fleet.run_agent(&[]).unwrap();
        Fleet(fleet)
    }

    /// `GET` of the agent's metrics port: status and body.
    async fn scrape(&self, path: &str) -> (u16, String) {
        self.0
            .scrape(path)
            .await
            .expect("the agent's metrics port answers")
    }

    async fn wait_cm(
        &self,
        name: &str,
        limit: Duration,
        done: impl Fn(Option<&ConfigMap>) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        loop {
            let cm = self.configmaps().get_opt(name).await.unwrap();
            if done(cm.as_ref()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "configmap {name} did not get there: {cm:?}\nagent log:\n{}",
                self.agent_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Creates a namespace of the managed cluster, if it does not exist yet.
async fn create_namespace(name: &str) {
    agent::create_namespace(&managed().await.client(), name)
        .await
        .unwrap();
}

fn condition(w: Option<&ManifestWork>, type_: &str) -> Option<Condition> {
    let w = w?;
    let c = w.condition(type_)?.clone();
    (c.observed_generation == w.metadata.generation).then_some(c)
}

fn is(w: Option<&ManifestWork>, type_: &str, status: &str) -> bool {
    condition(w, type_).is_some_and(|c| c.status == status)
}

fn data(cm: Option<&ConfigMap>) -> Option<String> {
    cm?.data.as_ref()?.get("v").cloned()
}

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_update_drop_and_delete() {
    let fleet = Fleet::start("apply").await;
    fleet
        .put(
            "app",
            vec![fleet.cm("one", "1"), fleet.cm("two", "2")],
            |_| {},
        )
        .await;
    let w = fleet
        .wait_work("app", LIMIT, |w| {
            is(w, "Applied", "True") && is(w, "Ready", "True")
        })
        .await
        .unwrap();
    let manifests = &w.status.resource_status.as_ref().unwrap().manifests;
    assert_eq!(manifests.len(), 2);
    assert_eq!(manifests[1].resource_meta.name, "two");
    assert_eq!(manifests[1].resource_meta.resource, "configmaps");
    assert_eq!(w.metadata.finalizers, [api::CLEANUP_FINALIZER]);
    fleet
        .wait_cm("one", LIMIT, |c| data(c).as_deref() == Some("1"))
        .await;

    // Update one, drop the other: the dropped one is deleted.
    fleet
        .put("app", vec![fleet.cm("one", "changed")], |_| {})
        .await;
    fleet
        .wait_cm("one", LIMIT, |c| data(c).as_deref() == Some("changed"))
        .await;
    fleet.wait_cm("two", LIMIT, |c| c.is_none()).await;
    fleet
        .wait_work("app", LIMIT, |w| is(w, "Applied", "True"))
        .await;

    // Resyncs (every second here) of a work that did not change write no status: the
    // work's resourceVersion on the hub stays put. (They once did, each time, because the
    // agent compared with a stale copy and reset every lastTransitionTime.)
    let settled = fleet
        .wait_work("app", LIMIT, |w| {
            is(w, "Applied", "True") && is(w, "Ready", "True")
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let later = fleet
        .wait_work("app", LIMIT, |w| w.is_some())
        .await
        .unwrap();
    assert_eq!(
        later.metadata.resource_version, settled.metadata.resource_version,
        "an unchanged work's status was rewritten by a resync: {:?}",
        later.status.conditions
    );

    // A hand edit is reverted within the resync period.
    let patch = json!({"data": {"v": "by hand"}});
    fleet
        .configmaps()
        .patch("one", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    fleet
        .wait_cm("one", LIMIT, |c| data(c).as_deref() == Some("changed"))
        .await;

    // So is a deletion by hand: the resync sees the object gone and applies it again.
    fleet
        .configmaps()
        .delete("one", &Default::default())
        .await
        .unwrap();
    fleet
        .wait_cm("one", LIMIT, |c| data(c).as_deref() == Some("changed"))
        .await;

    // Deleting the work deletes what it applied, then the work goes.
    fleet
        .admin
        .delete_work(&fleet.cluster, "app")
        .await
        .unwrap();
    fleet.wait_work("app", LIMIT, |w| w.is_none()).await;
    fleet.wait_cm("one", LIMIT, |c| c.is_none()).await;
}

/// The value of an unlabelled sample in Prometheus text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_are_served_while_running() {
    let fleet = Fleet::start("metrics").await;
    fleet.put("app", vec![fleet.cm("one", "1")], |_| {}).await;
    fleet
        .wait_work("app", LIMIT, |w| is(w, "Applied", "True"))
        .await
        .unwrap();
    // The status reaches the hub from inside the reconcile, which is counted when it
    // returns: scrape until the count has caught up.
    let deadline = Instant::now() + LIMIT;
    let (status, text) = loop {
        let (status, text) = fleet.scrape("/metrics").await;
        let counted = sample(&text, "klusterlet_reconciles_total").unwrap_or_default() >= 1.0
            && sample(&text, "klusterlet_works") == Some(1.0);
        if (status == 200 && counted) || Instant::now() > deadline {
            break (status, text);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, 200, "{text}");
    let reconciles = sample(&text, "klusterlet_reconciles_total").unwrap_or_default();
    assert!(reconciles >= 1.0, "a reconcile is counted: {text}");
    assert_eq!(sample(&text, "klusterlet_works"), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, "klusterlet_hub_connected"),
        Some(1.0),
        "{text}"
    );
    assert!(
        text.contains("klusterlet_reconcile_duration_seconds_bucket"),
        "{text}"
    );
    let (status, body) = fleet.scrape("/healthz").await;
    assert_eq!((status, body.trim()), (200, "ok"));
    assert_eq!(fleet.scrape("/livez").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_options_orphan_and_selectively_orphan() {
    let fleet = Fleet::start("orphans").await;
    let orphan = DeleteOption {
        propagation_policy: PropagationPolicy::Orphan,
        ..Default::default()
    };
    fleet
        .put("keep-all", vec![fleet.cm("kept", "1")], |w| {
            w.spec.delete_option = Some(orphan.clone())
        })
        .await;
    let rules = vec![ResourceIdentifier {
        group: String::new(),
        resource: "configmaps".into(),
        name: "sel-keep".into(),
        namespace: fleet.namespace.clone(),
    }];
    let selective = DeleteOption {
        propagation_policy: PropagationPolicy::SelectivelyOrphan,
        selectively_orphans: Some(SelectivelyOrphan {
            orphaning_rules: rules,
        }),
        ..Default::default()
    };
    fleet
        .put(
            "some",
            vec![fleet.cm("sel-keep", "1"), fleet.cm("sel-drop", "1")],
            |w| w.spec.delete_option = Some(selective.clone()),
        )
        .await;
    for w in ["keep-all", "some"] {
        fleet
            .wait_work(w, LIMIT, |w| is(w, "Applied", "True"))
            .await;
    }
    for w in ["keep-all", "some"] {
        fleet.admin.delete_work(&fleet.cluster, w).await.unwrap();
        fleet.wait_work(w, LIMIT, |w| w.is_none()).await;
    }
    fleet.wait_cm("sel-drop", LIMIT, |c| c.is_none()).await;
    assert!(
        fleet.configmaps().get_opt("kept").await.unwrap().is_some(),
        "Orphan left it"
    );
    assert!(
        fleet
            .configmaps()
            .get_opt("sel-keep")
            .await
            .unwrap()
            .is_some(),
        "SelectivelyOrphan left the listed one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_survives_kill_9_and_spares_objects_it_did_not_create() {
    let mut fleet = Fleet::start("gc").await;
    fleet
        .put(
            "gc",
            vec![fleet.cm("a", "1"), fleet.cm("b", "1"), fleet.cm("c", "1")],
            |_| {},
        )
        .await;
    fleet
        .wait_work("gc", LIMIT, |w| is(w, "Applied", "True"))
        .await;
    fleet.kill_agent().await;
    // While the agent is down: someone replaces "c" with an object of their own, and the
    // work drops "b" and "c".
    fleet
        .configmaps()
        .delete("c", &DeleteParams::default())
        .await
        .unwrap();
    let theirs: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"v": "theirs"}}))
            .unwrap();
    fleet
        .configmaps()
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();
    fleet.put("gc", vec![fleet.cm("a", "1")], |_| {}).await;
    fleet.run_agent(&[]).unwrap();
    fleet.wait_cm("b", LIMIT, |c| c.is_none()).await;
    fleet
        .wait_work("gc", LIMIT, |w| is(w, "Applied", "True"))
        .await;
    let c = fleet.configmaps().get_opt("c").await.unwrap();
    assert_eq!(
        data(c.as_ref()).as_deref(),
        Some("theirs"),
        "an object with another uid is never deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_becomes_ready_with_well_known_feedback() {
    let fleet = Fleet::start("deploy").await;
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": fleet.namespace},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{"name": "web", "image": "nginx"}],
                    "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}]
                }
            }
        }
    });
    let config = json!({
        "resourceIdentifier": {"group": "apps", "resource": "deployments", "name": "web", "namespace": fleet.namespace},
        "feedbackRules": [{"type": "WellKnownStatus"}]
    });
    fleet
        .put("web", vec![deployment], |w| {
            w.spec.manifest_configs = vec![serde_json::from_value(config).unwrap()]
        })
        .await;
    let w = fleet
        .wait_work("web", Duration::from_secs(120), |w| is(w, "Ready", "True"))
        .await
        .unwrap();
    let m = &w.status.resource_status.as_ref().unwrap().manifests[0];
    let values = &m.status_feedback.as_ref().expect("feedback").values;
    let get = |n: &str| {
        values
            .iter()
            .find(|v| v.name == n)
            .and_then(|v| v.field_value.integer)
    };
    assert_eq!(get("AvailableReplicas"), Some(2), "{values:?}");
    assert_eq!(get("Replicas"), Some(2), "{values:?}");
    assert_eq!(get("ReadyReplicas"), Some(2), "{values:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kind_fails_only_itself() {
    let fleet = Fleet::start("unknown").await;
    let bogus = json!({"apiVersion": "example.com/v1", "kind": "Nothing", "metadata": {"name": "x", "namespace": fleet.namespace}});
    fleet
        .put("mixed", vec![bogus, fleet.cm("fine", "1")], |_| {})
        .await;
    fleet.wait_cm("fine", LIMIT, |c| c.is_some()).await;
    let w = fleet
        .wait_work("mixed", LIMIT, |w| {
            w.and_then(|w| w.status.resource_status.as_ref())
                .is_some_and(|r| r.manifests.len() == 2)
                && is(w, "Applied", "False")
        })
        .await
        .unwrap();
    let ms = &w.status.resource_status.as_ref().unwrap().manifests;
    let applied = |i: usize| {
        ms[i]
            .conditions
            .iter()
            .find(|c| c.type_ == "Applied")
            .unwrap()
            .status
            .clone()
    };
    assert_eq!(applied(0), "False");
    assert_eq!(applied(1), "True");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_cluster_cleans_up_then_removes_it() {
    let fleet = Fleet::start("bye").await;
    fleet.put("w", vec![fleet.cm("bye-cm", "1")], |_| {}).await;
    fleet
        .wait_work("w", LIMIT, |w| is(w, "Applied", "True"))
        .await;
    let d = fleet
        .admin
        .delete_cluster(&fleet.cluster, false)
        .await
        .unwrap()
        .value;
    assert!(!d.removed);
    fleet.wait_cm("bye-cm", LIMIT, |c| c.is_none()).await;
    let deadline = Instant::now() + LIMIT;
    while fleet.admin.get_cluster(&fleet.cluster).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the cluster record stayed; agent log:\n{}",
            fleet.agent_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = fleet.hub.log_text() + &fleet.agent_log();
    assert!(
        !log.contains("PRIVATE KEY") && !log.contains("eyJ"),
        "a secret reached a log"
    );
}

/// The least privilege an agent needs: its ledger's ConfigMaps in a namespace that exists,
/// and what its works deploy. No nodes (node claims are skipped with one warning), no
/// namespaces (the ledger's is used as it is): join and run both worked only as an admin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_least_privilege_agent_joins_runs_and_applies() {
    let managed = managed().await;
    let cluster = "least";
    let ledger = format!("agent-{cluster}");
    let apps = format!("t-{cluster}");
    let user = "least-privilege-agent";
    for ns in [&ledger, &apps] {
        create_namespace(ns).await;
        let role: k8s_openapi::api::rbac::v1::Role = serde_json::from_value(json!({
            "metadata": {"name": "klusterlet", "namespace": ns},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}]
        }))
        .unwrap();
        Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(managed.client(), ns)
            .create(&PostParams::default(), &role)
            .await
            .unwrap();
        let binding: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": "klusterlet", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "klusterlet"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
        }))
        .unwrap();
        Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(managed.client(), ns)
            .create(&PostParams::default(), &binding)
            .await
            .unwrap();
    }
    let kubeconfig = managed.write_user_kubeconfig(user, &[]).unwrap();
    let fleet = Fleet::start_as(cluster, kubeconfig).await;
    fleet.put("cm", vec![fleet.cm("one", "1")], |_| {}).await;
    fleet
        .wait_work("cm", LIMIT, |w| is(w, "Applied", "True"))
        .await;
    fleet
        .wait_cm("one", LIMIT, |c| data(c).as_deref() == Some("1"))
        .await;
    // The warning comes from the agent's claim reporter, which runs beside the apply: a
    // release build can have the work Applied before it is written.
    let deadline = std::time::Instant::now() + LIMIT;
    let mut log = fleet.agent_log();
    while !log.contains("not reporting node claims") && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        log = fleet.agent_log();
    }
    assert!(
        log.contains("not reporting node claims"),
        "one warning says why node claims are missing:\n{log}"
    );
    assert!(
        !log.contains("ErrorResponse") && !log.contains("Status {"),
        "no debug dumps of Kubernetes errors:\n{log}"
    );
}
