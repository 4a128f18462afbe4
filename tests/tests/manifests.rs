//! The in-cluster klusterlet manifests (`klusterlet join --print-manifests`), checked
//! against a real kube-apiserver as an operator checks them, and their RBAC shown to be
//! what the agent needs:
//!
//! * `kubectl apply --dry-run=server` of the stream (server-side apply with `dryRun=All`
//!   and strict field validation, what kubectl sends) accepts every object and creates
//!   none;
//! * applied for real, the agent runs with exactly the ServiceAccount's rights (the
//!   apiserver authorizes a client certificate for `system:serviceaccount:NS:klusterlet`
//!   as that ServiceAccount): it keeps its ledger in its namespace and applies a work;
//! * with `klusterlet-work` narrowed as docs/security.md says (here: to ConfigMaps), a
//!   manifest outside it reports Forbidden and is not written, while the work's other
//!   manifest applies: the agent's own roles add no write beyond its ledger.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use api::{ListOptions, ManifestWork, TokenRequest};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::discovery::Scope;
use serde_json::json;
use testkit::cluster::{ClusterOptions, TestCluster};
use testkit::procs::{HubProcess, binary};

fn init() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The documents of a YAML stream, split at its `---` lines (a PEM's dashes are not one).
fn yaml_documents(text: &str) -> Vec<String> {
    let mut docs: Vec<String> = Vec::new();
    for line in text.lines() {
        if line == "---" {
            docs.push(String::new());
        } else if let Some(doc) = docs.last_mut() {
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs
}

/// Server-side apply of every object, as `kubectl apply --server-side` (with `dry_run`:
/// `--dry-run=server`) sends it.
async fn apply_all(client: &kube::Client, objects: &[DynamicObject], dry_run: bool) {
    for object in objects {
        let types = object.types.clone().unwrap();
        let gvk = GroupVersionKind::try_from(&types).unwrap();
        let (resource, caps) = kube::discovery::pinned_kind(client, &gvk).await.unwrap();
        let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
            Api::namespaced_with(
                client.clone(),
                object.metadata.namespace.as_deref().unwrap(),
                &resource,
            )
        } else {
            Api::all_with(client.clone(), &resource)
        };
        let name = object.metadata.name.clone().unwrap();
        let mut params = PatchParams::apply("kubectl").validation_strict();
        if dry_run {
            params = params.dry_run();
        }
        api.patch(&name, &params, &Patch::Apply(object))
            .await
            .unwrap_or_else(|e| panic!("{} {name} (dry run {dry_run}): {e}", types.kind));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_printed_manifests_pass_a_server_dry_run_and_their_rbac_is_what_the_agent_needs() {
    init();
    let cluster = TestCluster::start(ClusterOptions::apiserver_only())
        .await
        .expect("a kube-apiserver");
    let admin_kube = cluster.client();
    let hub_dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(hub_dir.path(), &[]).await.unwrap();
    let admin = hub.client().unwrap();

    // Join as an operator does, printing the manifests.
    let ns = "fleethub-agent";
    let ca = api::ClientConfig::load(&hub.client_config_path())
        .unwrap()
        .ca_data
        .unwrap();
    let ca_hash = klusterlet::hub::identity::ca_hash(&ca).unwrap();
    let token = admin
        .create_token(&TokenRequest {
            auto_accept: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .token
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("agent");
    let out = tokio::process::Command::new(binary("klusterlet").unwrap())
        .args(["join", "--hub", &format!("https://127.0.0.1:{}", hub.port)])
        .args([
            "--token",
            &token,
            "--ca-hash",
            &ca_hash,
            "--cluster-name",
            "incluster",
        ])
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig_path())
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--wait", "--timeout", "60s", "--print-manifests"])
        .args(["--namespace", ns, "--image", "example.com/klusterlet:test"])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let objects: Vec<DynamicObject> = yaml_documents(&String::from_utf8_lossy(&out.stdout))
        .iter()
        .map(|d| serde_saphyr::from_str(d).unwrap())
        .collect();
    let kinds: Vec<String> = objects
        .iter()
        .map(|o| o.types.as_ref().unwrap().kind.clone())
        .collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "ClusterRole",
            "ClusterRoleBinding",
            "Secret",
            "Deployment"
        ]
    );

    // `kubectl apply --dry-run=server`: the namespaced objects need their namespace to
    // exist (a dry run creates nothing), so it comes first, as docs/operations.md says.
    apply_all(&admin_kube, &objects[..1], false).await;
    apply_all(&admin_kube, &objects, true).await;
    let accounts: Api<ServiceAccount> = Api::namespaced(admin_kube.clone(), ns);
    assert!(
        accounts.get_opt("klusterlet").await.unwrap().is_none(),
        "a dry run created the ServiceAccount"
    );

    // For real, then the agent with the ServiceAccount's rights only.
    apply_all(&admin_kube, &objects, false).await;
    let apps = "apps-incluster";
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin_kube.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": apps}})).unwrap(),
        )
        .await
        .unwrap();
    // klusterlet-work narrowed to ConfigMaps (plus the two executor rules to keep).
    let roles: Api<ClusterRole> = Api::all(admin_kube.clone());
    let narrowed = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "klusterlet-work"},
        "rules": [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]},
            {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["impersonate"]},
            {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
        ],
    });
    roles
        .patch(
            "klusterlet-work",
            &PatchParams::apply("kubectl").force(),
            &Patch::Apply(&narrowed),
        )
        .await
        .unwrap();
    let sa_user = format!("system:serviceaccount:{ns}:klusterlet");
    let sa_groups = [
        "system:serviceaccounts".to_string(),
        format!("system:serviceaccounts:{ns}"),
    ];
    let kubeconfig = cluster
        .write_user_kubeconfig(&sa_user, &[&sa_groups[0], &sa_groups[1]])
        .unwrap();
    let log_path = data.path().join("agent.log");
    let _agent = tokio::process::Command::new(binary("klusterlet").unwrap())
        .arg("run")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--data-dir")
        .arg(&data_dir)
        .args([
            "--namespace",
            ns,
            "--resync",
            "1s",
            "--degraded-after",
            "2s",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let work = ManifestWork::new(
        "incluster",
        "app",
        vec![
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "app-config", "namespace": apps}, "data": {"k": "v"}}),
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "app-secret", "namespace": apps},
                   "stringData": {"password": "x"}}),
        ],
    );
    admin.put_work(&work, None).await.unwrap();
    let config_maps: Api<ConfigMap> = Api::namespaced(admin_kube.clone(), apps);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let got = admin
            .get_work("incluster", "app", &ListOptions::default())
            .await
            .unwrap()
            .value;
        let status = serde_json::to_string(&got.status).unwrap();
        if config_maps.get_opt("app-config").await.unwrap().is_some()
            && status.to_lowercase().contains("forbidden")
        {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not apply the ConfigMap and report the Secret forbidden: {status}\n{}",
            agent_log(&log_path)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let secrets: Api<Secret> = Api::namespaced(admin_kube.clone(), apps);
    assert!(
        secrets.get_opt("app-secret").await.unwrap().is_none(),
        "a Secret outside the narrowed role was written: {status}"
    );
    // The ledger, in the agent's namespace, through its Role.
    let ledger: Api<ConfigMap> = Api::namespaced(admin_kube.clone(), ns);
    let records = ledger
        .list(&kube::api::ListParams::default().labels("fleethub.io/ledger"))
        .await
        .unwrap();
    assert!(
        !records.items.is_empty(),
        "no ledger record in {ns}\n{}",
        agent_log(&log_path)
    );
}

fn agent_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
