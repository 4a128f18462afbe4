//! `spec.executor` end to end, all real processes: `hub serve`, `klusterlet join` and
//! `klusterlet run` (as the cluster's admin, so it could do everything itself), and a real
//! kube-apiserver with RBAC authorization.
//!
//! What a user notices: a manifest its executor ServiceAccount may not write fails alone
//! with "not allowed to", and is not written although the agent could have; granting the
//! rights makes it apply; objects made through an executor carry the ServiceAccount as
//! their creator where Kubernetes records one (a CertificateSigningRequest's
//! `spec.username`; `managedFields` name only the field manager, ours, not the user); the
//! work's deletion removes its objects as the ServiceAccount.

use std::ops::Deref;
use std::time::Duration;

use api::{ManifestCondition, ManifestWork, ManifestWorkExecutor};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, DynamicObject, GroupVersionKind, PostParams};
use kube::core::ApiResource;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use testkit::agent::AgentFleet;
use testkit::cluster::{ClusterOptions, TestCluster};

const LIMIT: Duration = Duration::from_secs(90);
const SA_NAMESPACE: &str = "x-ops";
const SA_NAME: &str = "deployer";
const SA_USER: &str = "system:serviceaccount:x-ops:deployer";
/// A certificate request for `CN=executor-proof` (an EC key thrown away), base64 of its PEM.
const CSR_REQUEST: &str = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0KTUlIVU1Ic0NBUUF3R1RFWE1CVUdBMVVFQXd3T1pYaGxZM1YwYjNJdGNISnZiMll3V1RBVEJnY3Foa2pPUFFJQgpCZ2dxaGtqT1BRTUJCd05DQUFSMWZNVTlRVTdWZm1COEF1b21KYkkzcFRzbWpvMkJXSzIySVBDTVJkbXg2QWZBClpjSnJKcWwza1FhT1ltRnNkamUwSGIwRWtYOFFabk1yUHMyS2xyTytvQUF3Q2dZSUtvWkl6ajBFQXdJRFNRQXcKUmdJaEFPeGhvZW0xS2pKQUdoc09RMDJjRjJqaGdKY1hibHo5dFhhRy9NSVVkZTdKQWlFQXphUEFQNWJyb2JicgprNW1NclNGNUFiTWZieW5HSXNROW9MTitadjg0cGVvPQotLS0tLUVORCBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0K";

fn init() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Creates an object of the managed cluster (an existing one is fine).
async fn create<K>(api: Api<K>, body: Value)
where
    K: kube::Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(body).unwrap();
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("creating {object:?}: {e}"),
    }
}

/// Lets the executor ServiceAccount write ConfigMaps in `namespace`.
async fn grant_configmaps(client: &kube::Client, namespace: &str) {
    create(
        Api::<Role>::namespaced(client.clone(), namespace),
        json!({"metadata": {"name": "deployer", "namespace": namespace},
               "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                          "verbs": ["get", "create", "patch", "delete"]}]}),
    )
    .await;
    create(
        Api::<RoleBinding>::namespaced(client.clone(), namespace),
        json!({"metadata": {"name": "deployer", "namespace": namespace},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "deployer"},
               "subjects": [{"kind": "ServiceAccount", "namespace": SA_NAMESPACE, "name": SA_NAME}]}),
    )
    .await;
}

/// A hub, one joined cluster and its klusterlet, running as the managed cluster's admin.
struct Fleet(AgentFleet);

impl Deref for Fleet {
    type Target = AgentFleet;
    fn deref(&self) -> &AgentFleet {
        &self.0
    }
}

impl Fleet {
    async fn start(managed: &TestCluster, cluster: &str) -> Fleet {
        init();
        Fleet(AgentFleet::start(managed, cluster).await.unwrap())
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

/// The `Applied` condition of the manifest with this name, at the work's generation.
fn applied(w: Option<&ManifestWork>, name: &str) -> Option<(String, String)> {
    let w = w?;
    let manifests: &[ManifestCondition] = &w.status.resource_status.as_ref()?.manifests;
    let m = manifests.iter().find(|m| m.resource_meta.name == name)?;
    let c = m.conditions.iter().find(|c| c.type_ == "Applied")?;
    (c.observed_generation == w.metadata.generation).then(|| (c.status.clone(), c.message.clone()))
}

fn is_applied(w: Option<&ManifestWork>, name: &str) -> bool {
    applied(w, name).is_some_and(|(status, _)| status == "True")
}

fn cm(namespace: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": namespace}, "data": {"v": "1"}})
}

async fn configmap(client: &kube::Client, namespace: &str, name: &str) -> Option<ConfigMap> {
    Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_applies_only_what_its_service_account_may() {
    let managed = TestCluster::start(ClusterOptions::apiserver_only())
        .await
        .expect("start the managed cluster");
    let kube = managed.client();
    let (a, b) = ("x-a", "x-b");
    for ns in [SA_NAMESPACE, a, b] {
        create(
            Api::<Namespace>::all(kube.clone()),
            json!({"metadata": {"name": ns}}),
        )
        .await;
    }
    create(
        Api::<ServiceAccount>::namespaced(kube.clone(), SA_NAMESPACE),
        json!({"metadata": {"name": SA_NAME, "namespace": SA_NAMESPACE}}),
    )
    .await;
    // Rights in `a` and on CertificateSigningRequests; none in `b`.
    grant_configmaps(&kube, a).await;
    create(
        Api::<ClusterRole>::all(kube.clone()),
        json!({"metadata": {"name": "x-deployer-csr"},
               "rules": [{"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests"],
                          "verbs": ["get", "create", "patch", "delete"]}]}),
    )
    .await;
    create(
        Api::<ClusterRoleBinding>::all(kube.clone()),
        json!({"metadata": {"name": "x-deployer-csr"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "x-deployer-csr"},
               "subjects": [{"kind": "ServiceAccount", "namespace": SA_NAMESPACE, "name": SA_NAME}]}),
    )
    .await;

    let fleet = Fleet::start(&managed, "exec").await;
    let csr = json!({
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": "x-executor-proof"},
        "spec": {"request": CSR_REQUEST, "signerName": "example.com/executor-proof",
                 "usages": ["digital signature"]},
    });
    let mut work = ManifestWork::new(&fleet.cluster, "w", vec![cm(a, "in-a"), cm(b, "in-b"), csr]);
    work.spec.executor = Some(ManifestWorkExecutor::service_account(SA_NAMESPACE, SA_NAME));
    fleet.admin.put_work(&work, None).await.unwrap();

    // The manifest in `b` fails alone; the others apply.
    let w = fleet
        .wait_work("w", |w| {
            is_applied(w, "in-a")
                && is_applied(w, "x-executor-proof")
                && applied(w, "in-b").is_some_and(|(status, _)| status == "False")
        })
        .await;
    let (_, message) = applied(w.as_ref(), "in-b").unwrap();
    assert!(
        message.contains("not allowed to") && message.contains(SA_USER),
        "the refusal names the executor: {message}"
    );
    assert!(message.contains("\"x-b\""), "and the namespace: {message}");
    assert!(configmap(&kube, a, "in-a").await.is_some());
    // The agent itself (the cluster's admin) could have written it: it did not.
    assert!(configmap(&kube, b, "in-b").await.is_none());

    // The apiserver saw the ServiceAccount, not the agent (the cluster's admin): it
    // recorded it as the requester of the CertificateSigningRequest.
    let csrs: Api<DynamicObject> = Api::all_with(
        kube.clone(),
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "certificates.k8s.io",
            "v1",
            "CertificateSigningRequest",
        )),
    );
    let made = csrs.get("x-executor-proof").await.unwrap();
    assert_eq!(made.data["spec"]["username"], SA_USER);

    // Granting the rights makes it apply, without touching the work.
    grant_configmaps(&kube, b).await;
    fleet.wait_work("w", |w| is_applied(w, "in-b")).await;
    assert!(configmap(&kube, b, "in-b").await.is_some());

    // Deleting the work removes its objects, as the ServiceAccount.
    fleet.admin.delete_work(&fleet.cluster, "w").await.unwrap();
    fleet.wait_work("w", |w| w.is_none()).await;
    assert!(configmap(&kube, a, "in-a").await.is_none());
    assert!(configmap(&kube, b, "in-b").await.is_none());
    assert!(csrs.get_opt("x-executor-proof").await.unwrap().is_none());
    let log = fleet.agent_log();
    assert!(
        log.contains("SubjectAccessReview") && log.contains("verb=\"delete\""),
        "the deletions were checked for the executor:\n{log}"
    );
}

/// Without a named executor the agent writes as itself, and it does not ask any
/// SubjectAccessReview.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_work_without_an_executor_is_applied_by_the_agent() {
    let managed = TestCluster::start(ClusterOptions::apiserver_only())
        .await
        .expect("start the managed cluster");
    let kube = managed.client();
    create(
        Api::<Namespace>::all(kube.clone()),
        json!({"metadata": {"name": "x-b"}}),
    )
    .await;
    let fleet = Fleet::start(&managed, "plain").await;
    let work = ManifestWork::new(&fleet.cluster, "w", vec![cm("x-b", "plain")]);
    fleet.admin.put_work(&work, None).await.unwrap();
    fleet.wait_work("w", |w| is_applied(w, "plain")).await;
    assert!(configmap(&kube, "x-b", "plain").await.is_some());
    assert!(!fleet.agent_log().contains("SubjectAccessReview"));
}
