//! `conditionRules` and `ttlSecondsAfterFinished` end to end, all real processes: `hub
//! serve`, `klusterlet join` and `run`, and a managed cluster with controller-manager,
//! scheduler and a KWOK node. KWOK's default pod stages finish a Job's pods (phase
//! Succeeded) and the Job controller then marks the Job Complete, as on a real cluster.

use std::ops::Deref;
use std::time::{Duration, Instant};

use api::{Condition, ListOptions, ManifestCondition, ManifestWork};
use k8s_openapi::api::batch::v1::Job;
use kube::api::Api;
use serde_json::{Value, json};
use testkit::agent::AgentFleet;
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

const LIMIT: Duration = Duration::from_secs(90);

/// A hub, one joined cluster and its running klusterlet.
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

    async fn put(&self, name: &str, manifests: Vec<Value>, configs: Value, delete: Value) {
        self.0
            .put(name, manifests, |w| {
                w.spec.manifest_configs = serde_json::from_value(configs).unwrap();
                w.spec.delete_option = serde_json::from_value(delete).unwrap();
            })
            .await;
    }

    /// Blocks on the work until `done` holds, or fails after [`LIMIT`] with the last state.
    async fn wait_work(
        &self,
        name: &str,
        done: impl Fn(Option<&ManifestWork>) -> bool,
    ) -> Option<ManifestWork> {
        self.0.wait_work(name, LIMIT, done).await
    }
}

/// The work condition of this type, for the work's current generation.
fn condition(w: Option<&ManifestWork>, type_: &str) -> Option<Condition> {
    let w = w?;
    let c = w.condition(type_)?.clone();
    (c.observed_generation == w.metadata.generation).then_some(c)
}

fn is(w: Option<&ManifestWork>, type_: &str, status: &str) -> bool {
    condition(w, type_).is_some_and(|c| c.status == status)
}

fn manifest(w: &ManifestWork, ordinal: i32) -> &ManifestCondition {
    w.status
        .resource_status
        .as_ref()
        .and_then(|r| {
            r.manifests
                .iter()
                .find(|m| m.resource_meta.ordinal == ordinal)
        })
        .expect("the manifest's status")
}

fn manifest_condition(w: &ManifestWork, ordinal: i32, type_: &str) -> Option<Condition> {
    api::find_condition(&manifest(w, ordinal).conditions, type_).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_is_complete_and_its_work_deleted_after_the_ttl() {
    let fleet = Fleet::start("jobs").await;
    let ns = &fleet.namespace;
    let job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "once", "namespace": ns},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "run", "image": "busybox", "command": ["true"]}]
        }}}
    });
    let configs = json!([{
        "resourceIdentifier": {"group": "batch", "resource": "jobs", "name": "once", "namespace": ns},
        "conditionRules": [{"type": "WellKnownConditions", "condition": "Complete"}]
    }]);
    fleet
        .put(
            "batch",
            vec![job],
            configs,
            json!({"propagationPolicy": "Foreground", "ttlSecondsAfterFinished": 2}),
        )
        .await;

    let done = fleet
        .wait_work("batch", |w| is(w, "Complete", "True"))
        .await
        .expect("the work");
    let c = manifest_condition(&done, 0, "Complete").expect("the Job's Complete condition");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str(), c.message.as_str()),
        ("True", "ConditionRuleEvaluated", "Job is finished")
    );
    let completed_at = condition(Some(&done), "Complete")
        .and_then(|c| c.last_transition_time)
        .expect("when it completed");

    // Two seconds after it completed, the hub deletes the work, and the agent the Job.
    let gone = fleet.wait_work("batch", |w| w.is_none()).await;
    assert!(gone.is_none());
    let waited = chrono::Utc::now() - completed_at;
    assert!(
        waited >= chrono::TimeDelta::seconds(2),
        "deleted {waited} after completion, before its TTL"
    );
    let jobs: Api<Job> = Api::namespaced(managed().await.client(), ns);
    let deadline = Instant::now() + LIMIT;
    while jobs.get_opt("once").await.unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "the Job is still on the cluster\nagent log:\n{}",
            fleet.agent_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The audit log says who deleted it and why.
    let audit = fleet
        .admin
        .list_audit(
            Some(&format!("clusters/{}/manifestworks/batch", fleet.cluster)),
            None,
        )
        .await
        .unwrap();
    let deletion = audit
        .items
        .iter()
        .find(|e| e.action == "work.delete")
        .expect("a deletion in the audit log");
    assert_eq!(deletion.actor, "controller:ttl-after-finished");
    assert_eq!(deletion.details["reason"], "ttlSecondsAfterFinished");
    assert_eq!(deletion.details["ttlSecondsAfterFinished"], 2);
    drop(fleet);
}

/// As OCM: once its rules say the work is Complete, the agent stops applying it, so a
/// finished Job that someone cleans up is not run again by the next resync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_work_is_not_applied_again() {
    let fleet = Fleet::start("finished").await;
    let ns = &fleet.namespace;
    let job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "once", "namespace": ns},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "run", "image": "busybox", "command": ["true"]}]
        }}}
    });
    let configs = json!([{
        "resourceIdentifier": {"group": "batch", "resource": "jobs", "name": "once", "namespace": ns},
        "conditionRules": [{"type": "WellKnownConditions", "condition": "Complete"}]
    }]);
    fleet.put("batch", vec![job], configs, Value::Null).await;
    fleet
        .wait_work("batch", |w| is(w, "Complete", "True"))
        .await;

    let jobs: Api<Job> = Api::namespaced(managed().await.client(), ns);
    jobs.delete("once", &kube::api::DeleteParams::background())
        .await
        .unwrap();
    let deadline = Instant::now() + LIMIT;
    while jobs.get_opt("once").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the Job was not deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Several resyncs (1 s here) later, the Job is still gone and the work still Complete.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        jobs.get_opt("once").await.unwrap().is_none(),
        "the finished Job was created again\nagent log:\n{}",
        fleet.agent_log()
    );
    let w = fleet.wait_work("batch", |w| w.is_some()).await;
    assert!(is(w.as_ref(), "Complete", "True"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cel_rules_on_a_deployment_and_a_run_time_error() {
    let fleet = Fleet::start("cel").await;
    let ns = &fleet.namespace;
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}
    });
    let configs = json!([{
        "resourceIdentifier": {"group": "apps", "resource": "deployments", "name": "web", "namespace": ns},
        "conditionRules": [
            {"type": "CEL", "condition": "Up",
             "celExpressions": ["object.status.availableReplicas >= 1"],
             "messageExpression": "result ? string(object.status.availableReplicas) + ' available' : 'none available'"},
            {"type": "CEL", "condition": "Tuned",
             "celExpressions": ["object.status.noSuchField > 0"]}
        ]
    }]);
    fleet
        .put("web", vec![deployment], configs, Value::Null)
        .await;
    let w = fleet
        .wait_work("web", |w| is(w, "Up", "True"))
        .await
        .expect("the work");
    let up = manifest_condition(&w, 0, "Up").expect("Up on the Deployment");
    assert_eq!(
        (up.status.as_str(), up.reason.as_str(), up.message.as_str()),
        ("True", "ConditionRuleEvaluated", "1 available")
    );
    assert_eq!(up.observed_generation, w.metadata.generation);
    let tuned = manifest_condition(&w, 0, "Tuned").expect("Tuned on the Deployment");
    assert_eq!(
        (tuned.status.as_str(), tuned.reason.as_str()),
        ("False", "ConditionRuleExpressionError")
    );
    assert!(tuned.message.contains("noSuchField"), "{}", tuned.message);
    assert!(is(Some(&w), "Tuned", "False"), "{:#?}", w.status.conditions);
    // The rules add conditions; the agent's own stay as they were.
    assert!(is(Some(&w), "Applied", "True"));
    assert!(w.condition("Complete").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cel_syntax_error_is_refused_with_its_position() {
    let fleet = Fleet::start("syntax").await;
    let mut w = ManifestWork::new(
        &fleet.cluster,
        "bad",
        vec![
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": fleet.namespace}}),
        ],
    );
    w.spec.manifest_configs = serde_json::from_value(json!([{
        "resourceIdentifier": {"resource": "configmaps", "name": "c", "namespace": fleet.namespace},
        "conditionRules": [{"type": "CEL", "condition": "Ok",
                            "celExpressions": ["true", "object.data.(x"]}]
    }]))
    .unwrap();
    let Err(api::ClientError::Api { status, body }) = fleet.admin.put_work(&w, None).await else {
        panic!("a work with CEL that does not compile was accepted");
    };
    assert_eq!(status.as_u16(), 422);
    let fields: Vec<api::FieldError> =
        serde_json::from_value(body.details.expect("field errors")).unwrap();
    assert_eq!(fields.len(), 1, "{fields:?}");
    assert_eq!(
        fields[0].field,
        "spec.manifestConfigs[0].conditionRules[0].celExpressions[1]"
    );
    assert!(
        fields[0].message.contains("line 1, column "),
        "{}",
        fields[0].message
    );
    assert!(
        fleet
            .admin
            .get_work(&fleet.cluster, "bad", &ListOptions::default())
            .await
            .unwrap_err()
            .is_not_found()
    );
}
