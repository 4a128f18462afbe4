//! End to end, with real processes: the `hub` binary (real TLS, its own CA), the
//! `klusterlet` binary, and a real kube-apiserver as the managed cluster the claims come
//! from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use api::{ClientConfig, HubClient, ListOptions, Registration, RegistrationState, TokenRequest};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::discovery::Scope;
use testkit::cluster::{ClusterOptions, TestCluster};
use testkit::procs::HubProcess;
use tokio::sync::OnceCell;

/// One managed cluster for the whole test binary (an apiserver with two Ready nodes whose
/// allocatable resources the claims must add up, and a NotReady one whose must not count).
static MANAGED: OnceCell<TestCluster> = OnceCell::const_new();

async fn managed_cluster() -> &'static TestCluster {
    MANAGED
        .get_or_init(|| async {
            let cluster = TestCluster::start(ClusterOptions::apiserver_only())
                .await
                .expect("start the managed cluster");
            let nodes: Api<Node> = Api::all(cluster.client());
            for (name, cpu, memory, pods, ready) in [
                ("node-a", "2", "4Gi", "110", "True"),
                ("node-b", "1500m", "4096Mi", "20", "True"),
                ("node-c", "64", "1Ti", "500", "False"),
            ] {
                let node: Node = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name},
                }))
                .unwrap();
                nodes.create(&PostParams::default(), &node).await.unwrap();
                let resources = BTreeMap::from([
                    ("cpu".to_string(), Quantity(cpu.into())),
                    ("memory".to_string(), Quantity(memory.into())),
                    ("pods".to_string(), Quantity(pods.into())),
                ]);
                let ready = serde_json::json!([{"type": "Ready", "status": ready}]);
                let status = serde_json::json!({"status": {"allocatable": resources, "capacity": resources, "conditions": ready}});
                nodes
                    .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
                    .await
                    .unwrap();
            }
            cluster
        })
        .await
}

/// A hub of its own for one test.
struct Hub {
    process: HubProcess,
    admin: HubClient,
    url: String,
    ca_hash: String,
    _dir: tempfile::TempDir,
}

impl Hub {
    async fn start(extra: &[&str]) -> Hub {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec!["--lease-interval", "1s"];
        args.extend_from_slice(extra);
        let process = HubProcess::start(&dir.path().join("hub"), &args)
            .await
            .expect("start the hub");
        let config = ClientConfig::load(&process.client_config_path()).unwrap();
        let ca_hash =
            klusterlet::hub::identity::ca_hash(config.ca_data.as_deref().unwrap()).unwrap();
        Hub {
            admin: process.client().unwrap(),
            url: format!("https://127.0.0.1:{}", process.port),
            ca_hash,
            process,
            _dir: dir,
        }
    }

    async fn bootstrap_token(&self, request: TokenRequest) -> String {
        self.admin
            .create_token(&request)
            .await
            .expect("create a bootstrap token")
            .token
            .expect("the new token's secret")
    }

    /// Waits for a pending request for `cluster` and returns it.
    async fn pending_registration(&self, cluster: &str) -> Registration {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let list = self
                .admin
                .list_registrations(&ListOptions::default())
                .await
                .unwrap()
                .value;
            if let Some(r) = list
                .items
                .into_iter()
                .find(|r| r.cluster_name == cluster && r.state == RegistrationState::Pending)
            {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no pending registration for {cluster}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// What a finished klusterlet process left.
#[derive(Debug)]
struct Finished {
    code: i32,
    stdout: String,
    stderr: String,
}

fn klusterlet_command(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_klusterlet"));
    cmd.args(args)
        .env_remove("KUBECONFIG")
        .env_remove("KLUSTERLET_DATA_DIR")
        .env_remove("KLUSTERLET_HUB")
        .env_remove("KLUSTERLET_TOKEN")
        .env_remove("KLUSTERLET_CA_HASH")
        .env_remove("KLUSTERLET_CLUSTER_NAME")
        .env("KLUSTERLET_LOG", "info,klusterlet=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn finish(child: tokio::process::Child) -> Finished {
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("klusterlet finished within 120 s")
        .unwrap();
    Finished {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn klusterlet(args: &[&str]) -> Finished {
    finish(klusterlet_command(args).spawn().unwrap()).await
}

/// `klusterlet join` arguments for this hub, token and cluster.
fn join_args(hub: &Hub, token: &str, ca_hash: &str, name: &str, data_dir: &Path) -> Vec<String> {
    let kubeconfig = MANAGED.get().unwrap().kubeconfig_path();
    [
        "join",
        "--hub",
        &hub.url,
        "--token",
        token,
        "--ca-hash",
        ca_hash,
        "--cluster-name",
        name,
        "--kubeconfig",
        &kubeconfig.display().to_string(),
        "--data-dir",
        &data_dir.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn claim<'a>(claims: &'a [api::Claim], name: &str) -> &'a str {
    claims
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.value.as_str())
        .unwrap_or_else(|| panic!("no claim {name} in {claims:?}"))
}

/// Asserts that nothing secret reached a log or a message: the bootstrap token's secret,
/// the agent's private key, or any JWT (assertion or access token).
fn assert_no_secrets(what: &str, text: &str, token: &str, data_dir: &Path) {
    let secret = token.split_once('.').map(|(_, s)| s).unwrap_or(token);
    assert!(
        !text.contains(secret),
        "{what} shows the bootstrap token's secret:\n{text}"
    );
    assert!(!text.contains("eyJ"), "{what} shows a JWT:\n{text}");
    assert!(
        !text.contains("PRIVATE KEY"),
        "{what} shows a private key:\n{text}"
    );
    if let Ok(key) = std::fs::read_to_string(data_dir.join("agent.key")) {
        for line in key
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() > 16)
        {
            assert!(
                !text.contains(line),
                "{what} shows the agent's key:\n{text}"
            );
        }
    }
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn data_dir(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("klusterlet")
}

#[tokio::test]
async fn full_handshake_with_an_admin_accepting_while_join_waits() {
    let _ = managed_cluster().await;
    let hub = Hub::start(&[]).await;
    let token = hub
        .bootstrap_token(TokenRequest {
            labels: BTreeMap::from([("fleet".to_string(), "edge".to_string())]),
            ..TokenRequest::default()
        })
        .await;
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(&dir);
    let mut args = join_args(&hub, &token, &hub.ca_hash, "edge-1", &data);
    args.extend(["--label", "env=ci", "--wait", "--timeout", "60s"].map(String::from));
    let join = klusterlet_command(&strs(&args)).spawn().unwrap();

    let pending = hub.pending_registration("edge-1").await;
    // The claims were read from the managed cluster: three nodes, of which the two Ready
    // ones add up to 2 + 1.5 cores, 4Gi + 4096Mi and 110 + 20 pods.
    assert_eq!(claim(&pending.claims, "nodes.fleethub.io"), "3");
    assert_eq!(
        claim(&pending.claims, "allocatable-pods.fleethub.io"),
        "130"
    );
    assert_eq!(claim(&pending.claims, "capacity-cpu.fleethub.io"), "3500m");
    assert_eq!(
        claim(&pending.claims, "allocatable-cpu.fleethub.io"),
        "3500m"
    );
    assert_eq!(
        claim(&pending.claims, "allocatable-memory.fleethub.io"),
        "8Gi"
    );
    assert!(claim(&pending.claims, "kubeversion.open-cluster-management.io").starts_with("v1."));
    assert!(claim(&pending.claims, "platform.open-cluster-management.io").contains('/'));
    assert_eq!(pending.labels.get("env").map(String::as_str), Some("ci"));
    // The public key is the one whose private half is in the data dir, private to its owner.
    let key = std::fs::read_to_string(data.join("agent.key")).unwrap();
    let key = klusterlet::hub::identity::AgentKey::from_pem(&key).unwrap();
    assert_eq!(pending.public_key.trim(), key.public_key_pem().trim());
    assert_eq!(mode(&data.join("agent.key")), 0o600);

    hub.admin.accept_registration(&pending.id).await.unwrap();
    let joined = finish(join).await;
    assert_eq!(joined.code, 0, "{joined:?}");
    assert!(
        joined.stderr.contains(&format!(
            "waiting for the hub to accept cluster edge-1 (request {}); run: hub accept edge-1",
            pending.id
        )),
        "{joined:?}"
    );
    assert!(
        joined.stdout.contains("cluster edge-1 joined"),
        "{joined:?}"
    );
    let cluster = hub.admin.get_cluster("edge-1").await.unwrap().value;
    assert_eq!(
        cluster.metadata.labels.get("env").map(String::as_str),
        Some("ci")
    );
    assert_eq!(
        cluster.metadata.labels.get("fleet").map(String::as_str),
        Some("edge")
    );

    // `klusterlet token` prints an access JWT that works as a bearer for its own cluster.
    let data_arg = data.display().to_string();
    let printed = klusterlet(&["token", "--data-dir", &data_arg]).await;
    assert_eq!(printed.code, 0, "{printed:?}");
    let access = printed.stdout.trim();
    assert_eq!(access.split('.').count(), 3, "not a JWT: {access}");
    let agent = hub.admin.with_token(Some(access.to_string()));
    let own = agent.get_cluster("edge-1").await.unwrap().value;
    assert_eq!(own.metadata.name, "edge-1");
    // ... and for nothing an admin may do.
    let err = agent
        .list_registrations(&ListOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(403), "{err}");

    for (what, text) in [
        ("join's stdout", &joined.stdout),
        ("join's stderr", &joined.stderr),
        ("token's stderr", &printed.stderr),
        ("the hub's log", &hub.process.log_text()),
    ] {
        assert_no_secrets(what, text, &token, &data);
    }
    assert!(
        !hub.process.log_text().contains(access),
        "the hub logged an access token"
    );

    // A second join into the same data dir for another cluster is refused; the identity stays.
    let again = klusterlet(&strs(&join_args(
        &hub,
        &token,
        &hub.ca_hash,
        "edge-2",
        &data,
    )))
    .await;
    assert_eq!(again.code, 1, "{again:?}");
    assert!(again.stderr.contains("klusterlet unjoin"), "{again:?}");
    assert!(data.join("agent.key").exists());

    // Unjoin removes the local identity only, and says where the hub's record goes.
    let unjoined = klusterlet(&["unjoin", "--data-dir", &data_arg, "--yes"]).await;
    assert_eq!(unjoined.code, 0, "{unjoined:?}");
    assert!(
        unjoined.stdout.contains("hub delete cluster edge-1"),
        "{unjoined:?}"
    );
    assert!(!data.join("agent.key").exists() && !data.join("state.yaml").exists());
    hub.admin
        .get_cluster("edge-1")
        .await
        .expect("the hub keeps the cluster");
    let gone = klusterlet(&["token", "--data-dir", &data_arg]).await;
    assert_eq!(gone.code, 1, "{gone:?}");
}

#[tokio::test]
async fn an_auto_accept_token_joins_at_once_and_prints_the_in_cluster_manifests() {
    let _ = managed_cluster().await;
    let hub = Hub::start(&[]).await;
    let token = hub
        .bootstrap_token(TokenRequest {
            auto_accept: true,
            ..TokenRequest::default()
        })
        .await;
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(&dir);
    let mut args = join_args(&hub, &token, &hub.ca_hash, "auto-1", &data);
    args.extend(
        [
            "--wait",
            "--timeout",
            "30s",
            "--print-manifests",
            "--image",
            "example.com/k:1",
        ]
        .map(String::from),
    );
    let started = Instant::now();
    let joined = klusterlet(&strs(&args)).await;
    assert_eq!(joined.code, 0, "{joined:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "auto-accept took {:?}",
        started.elapsed()
    );
    assert!(!joined.stderr.contains("waiting for the hub"), "{joined:?}");
    // stdout is only the manifests; their Secret carries this data dir's identity.
    assert!(joined.stdout.starts_with("---\n"), "{}", joined.stdout);
    assert!(joined.stdout.contains("kind: Deployment"));
    assert!(joined.stdout.contains("example.com/k:1"));
    assert!(joined.stdout.contains("name: klusterlet-work"));
    let key = std::fs::read_to_string(data.join("agent.key")).unwrap();
    let body = key.lines().nth(1).unwrap();
    assert!(
        joined.stdout.contains(body),
        "the Secret lacks the agent's key"
    );
    assert!(joined.stderr.contains("joined"), "{joined:?}");

    let cluster = hub.admin.get_cluster("auto-1").await.unwrap().value;
    assert_eq!(cluster.metadata.name, "auto-1");
    assert_no_secrets("join's stderr", &joined.stderr, &token, &data);

    // A real apiserver takes every printed object, with strict field validation.
    let client = managed_cluster().await.client();
    for doc in yaml_documents(&joined.stdout) {
        let object: DynamicObject = serde_saphyr::from_str(&doc).unwrap();
        let types = object.types.clone().unwrap();
        let gvk = GroupVersionKind::try_from(&types).unwrap();
        let (resource, caps) = kube::discovery::pinned_kind(&client, &gvk).await.unwrap();
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
        let params = PatchParams::apply("join-test").validation_strict();
        api.patch(&name, &params, &Patch::Apply(&object))
            .await
            .unwrap_or_else(|e| panic!("{} {name}: {e}", types.kind));
    }
}

/// The documents of a YAML stream, split at its `---` lines.
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

#[tokio::test]
async fn a_denied_join_exits_1() {
    let _ = managed_cluster().await;
    let hub = Hub::start(&[]).await;
    let token = hub.bootstrap_token(TokenRequest::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(&dir);
    let mut args = join_args(&hub, &token, &hub.ca_hash, "denied-1", &data);
    args.extend(["--wait", "--timeout", "60s"].map(String::from));
    let join = klusterlet_command(&strs(&args)).spawn().unwrap();
    let pending = hub.pending_registration("denied-1").await;
    hub.admin.deny_registration(&pending.id).await.unwrap();
    let denied = finish(join).await;
    assert_eq!(denied.code, 1, "{denied:?}");
    assert!(denied.stderr.contains("denied"), "{denied:?}");
    let err = hub.admin.get_cluster("denied-1").await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test]
async fn a_man_in_the_middle_is_refused_before_anything_is_sent() {
    let _ = managed_cluster().await;
    // The real hub, whose CA the join line pins, and an impostor at the address used.
    let real = Hub::start(&[]).await;
    let impostor = Hub::start(&[]).await;
    assert_ne!(real.ca_hash, impostor.ca_hash);
    let token = impostor.bootstrap_token(TokenRequest::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(&dir);
    let args = join_args(&impostor, &token, &real.ca_hash, "mitm-1", &data);
    let refused = klusterlet(&strs(&args)).await;
    assert_eq!(refused.code, 4, "{refused:?}");
    assert!(refused.stderr.contains(&real.ca_hash), "{refused:?}");
    assert!(refused.stderr.contains(&impostor.ca_hash), "{refused:?}");
    let seen = impostor
        .admin
        .list_registrations(&ListOptions::default())
        .await
        .unwrap()
        .value;
    assert!(
        seen.items.is_empty(),
        "the impostor got a request: {:?}",
        seen.items
    );
    assert!(
        !data.join("agent.key").exists(),
        "a key was made for an unverified hub"
    );

    // A malformed hash is a usage error.
    let args = join_args(&real, &token, "sha256:abc", "mitm-1", &data);
    assert_eq!(klusterlet(&strs(&args)).await.code, 2);
}

#[tokio::test]
async fn acceptance_after_the_bootstrap_token_expired_still_completes() {
    let _ = managed_cluster().await;
    let hub = Hub::start(&[]).await;
    let token = hub
        .bootstrap_token(TokenRequest {
            ttl: Some("3s".into()),
            ..TokenRequest::default()
        })
        .await;
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(&dir);
    let mut args = join_args(&hub, &token, &hub.ca_hash, "late-1", &data);
    args.extend(["--wait", "--timeout", "60s"].map(String::from));
    let join = klusterlet_command(&strs(&args)).spawn().unwrap();
    let pending = hub.pending_registration("late-1").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // The token is expired now: it joins nothing more.
    let other = tempfile::tempdir().unwrap();
    let late = klusterlet(&strs(&join_args(
        &hub,
        &token,
        &hub.ca_hash,
        "late-2",
        &data_dir(&other),
    )))
    .await;
    assert_eq!(
        late.code, 4,
        "an expired token must be refused with 401: {late:?}"
    );

    hub.admin.accept_registration(&pending.id).await.unwrap();
    let joined = finish(join).await;
    assert_eq!(joined.code, 0, "{joined:?}");
}

#[tokio::test]
async fn a_wait_that_runs_out_exits_3_and_join_resumes_the_request() {
    let _ = managed_cluster().await;
    let hub = Hub::start(&[]).await;
    let token = hub.bootstrap_token(TokenRequest::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(&dir);
    let mut args = join_args(&hub, &token, &hub.ca_hash, "slow-1", &data);
    args.extend(["--wait", "--timeout", "2s"].map(String::from));
    let timed_out = klusterlet(&strs(&args)).await;
    assert_eq!(timed_out.code, 3, "{timed_out:?}");

    // Joining again resumes the same request rather than making a second one.
    let resumed = klusterlet(&strs(&join_args(
        &hub,
        &token,
        &hub.ca_hash,
        "slow-1",
        &data,
    )))
    .await;
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert!(resumed.stderr.contains("resuming"), "{resumed:?}");
    assert!(resumed.stdout.contains("hub accept slow-1"), "{resumed:?}");
    let requests = hub
        .admin
        .list_registrations(&ListOptions::default())
        .await
        .unwrap()
        .value
        .items;
    assert_eq!(requests.len(), 1, "{requests:?}");
}

/// The cluster's last lease time, as the hub shows it.
async fn lease_time(admin: &HubClient, name: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    admin
        .get_cluster(name)
        .await
        .ok()
        .and_then(|c| c.value.status.last_lease_time)
}

async fn wait_for_lease_after(
    admin: &HubClient,
    name: &str,
    after: Option<chrono::DateTime<chrono::Utc>>,
    within: Duration,
) -> chrono::DateTime<chrono::Utc> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(t) = lease_time(admin, name).await
            && after.is_none_or(|a| t > a)
        {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "the lease of {name} did not advance past {after:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn run_keeps_the_lease_fresh_across_token_renewals_and_a_hub_restart() {
    let _ = managed_cluster().await;
    // Access tokens live 3 s, so the agent renews them several times during this test.
    let mut hub = Hub::start(&["--access-token-ttl", "3s"]).await;
    let token = hub
        .bootstrap_token(TokenRequest {
            auto_accept: true,
            ..TokenRequest::default()
        })
        .await;
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(&dir);
    let mut args = join_args(&hub, &token, &hub.ca_hash, "run-1", &data);
    args.extend(["--wait", "--timeout", "30s"].map(String::from));
    let joined = klusterlet(&strs(&args)).await;
    assert_eq!(joined.code, 0, "{joined:?}");

    let kubeconfig = managed_cluster()
        .await
        .kubeconfig_path()
        .display()
        .to_string();
    let data_arg = data.display().to_string();
    let agent = klusterlet_command(&["run", "--data-dir", &data_arg, "--kubeconfig", &kubeconfig])
        .spawn()
        .unwrap();
    let pid = agent.id().unwrap();

    let first = wait_for_lease_after(&hub.admin, "run-1", None, Duration::from_secs(30)).await;
    // Past two token lifetimes, the lease still advances.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let later =
        wait_for_lease_after(&hub.admin, "run-1", Some(first), Duration::from_secs(10)).await;
    let status = hub.admin.get_cluster("run-1").await.unwrap().value.status;
    assert_eq!(claim(&status.claims, "nodes.fleethub.io"), "3");
    // OCM's status fields for placement, from the Ready nodes only.
    let resources = |pairs: [(&str, &str); 3]| {
        pairs
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into_iter()
            .collect::<BTreeMap<_, _>>()
    };
    let expected = resources([("cpu", "3500m"), ("memory", "8Gi"), ("pods", "130")]);
    assert_eq!(status.allocatable, expected);
    assert_eq!(status.capacity, expected);
    assert!(status.version.unwrap().kubernetes.starts_with("v1."));

    // The hub goes away for a while and comes back on the same address: the agent carries on.
    hub.process.signal("KILL").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    hub.process.kill_and_restart().await.unwrap();
    hub.admin = hub.process.client().unwrap();
    wait_for_lease_after(&hub.admin, "run-1", Some(later), Duration::from_secs(45)).await;

    // SIGTERM stops it cleanly.
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let ran = finish(agent).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(ran.stderr.contains("got an access token"), "{}", ran.stderr);
    assert_no_secrets("run's log", &ran.stderr, &token, &data);
}

/// A CA made in the test, and serving certificates it signs.
struct TestCa {
    cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        let issuer = rcgen::Issuer::new(params, key);
        TestCa { cert, issuer }
    }

    fn hash(&self) -> String {
        klusterlet::hub::identity::ca_hash(&self.cert.pem()).unwrap()
    }

    /// A serving certificate for 127.0.0.1 and its key, in PEM.
    fn serving(&self) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A TLS server speaking just enough of the hub's API for `join`: `cluster-info` with a CA
/// bundle of its choice, and `registrations`, recording every bearer token it receives
/// and answering with a pending request.
struct FakeHub {
    url: String,
    tokens: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    handle: axum_server::Handle<std::net::SocketAddr>,
}

impl FakeHub {
    async fn start(bundle: String, serving: (String, String)) -> FakeHub {
        use axum::routing::{get, post};
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let tokens = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let info = api::ClusterInfo {
            server: url.clone(),
            certificate_authority_data: bundle,
            ca_hash: String::new(),
        };
        let seen = tokens.clone();
        let app = axum::Router::new()
            .route(
                "/api/v1/cluster-info",
                get(move || {
                    let info = info.clone();
                    async move { axum::Json(info) }
                }),
            )
            .route(
                "/api/v1/registrations",
                post(
                    move |headers: axum::http::HeaderMap,
                          axum::Json(req): axum::Json<api::RegistrationRequest>| {
                        let seen = seen.clone();
                        async move {
                            let bearer = headers
                                .get("authorization")
                                .and_then(|h| h.to_str().ok())
                                .unwrap_or_default()
                                .to_string();
                            seen.lock().unwrap().push(bearer);
                            let reg = Registration {
                                id: "fake-request".into(),
                                cluster_name: req.cluster_name,
                                public_key: req.public_key,
                                public_key_hash: "sha256:00".into(),
                                token_id: "fake".into(),
                                created_at: chrono::Utc::now(),
                                ..Default::default()
                            };
                            (axum::http::StatusCode::CREATED, axum::Json(reg))
                        }
                    },
                ),
            );
        let config = axum_server::tls_rustls::RustlsConfig::from_pem(
            serving.0.into_bytes(),
            serving.1.into_bytes(),
        )
        .await
        .unwrap();
        let handle = axum_server::Handle::new();
        let server = axum_server::from_tcp_rustls(listener, config)
            .unwrap()
            .handle(handle.clone());
        tokio::spawn(server.serve(app.into_make_service()));
        FakeHub {
            url,
            tokens,
            handle,
        }
    }

    fn tokens(&self) -> Vec<String> {
        self.tokens.lock().unwrap().clone()
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

fn fake_join_args(hub: &FakeHub, token: &str, pins: &[&str], data_dir: &Path) -> Vec<String> {
    let kubeconfig = MANAGED.get().unwrap().kubeconfig_path();
    let mut args: Vec<String> = [
        "join",
        "--hub",
        &hub.url,
        "--token",
        token,
        "--cluster-name",
        "pinned-1",
        "--kubeconfig",
        &kubeconfig.display().to_string(),
        "--data-dir",
        &data_dir.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for pin in pins {
        args.extend(["--ca-hash".to_string(), pin.to_string()]);
    }
    args
}

/// A man in the middle serves the real hub's CA first in its bundle, next to its own CA,
/// and a serving certificate from its own CA. The pin matches the real CA; join used to
/// trust the whole bundle then and hand the bootstrap token over.
#[tokio::test]
async fn a_man_in_the_middle_with_the_real_ca_in_its_bundle_gets_no_token() {
    let _ = managed_cluster().await;
    let real = Hub::start(&[]).await;
    let real_ca = ClientConfig::load(&real.process.client_config_path())
        .unwrap()
        .ca_data
        .unwrap();
    let attacker = TestCa::new("attacker");
    let mitm = FakeHub::start(
        format!("{real_ca}{}", attacker.cert.pem()),
        attacker.serving(),
    )
    .await;
    let token = real.bootstrap_token(TokenRequest::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(&dir);
    let refused = klusterlet(&strs(&fake_join_args(
        &mitm,
        &token,
        &[&real.ca_hash],
        &data,
    )))
    .await;
    assert_eq!(refused.code, 4, "{refused:?}");
    assert!(refused.stderr.contains(&real.ca_hash), "{refused:?}");
    assert!(
        mitm.tokens().is_empty(),
        "the man in the middle received a bootstrap token: {:?}",
        mitm.tokens()
    );
    assert!(
        !data.join("agent.key").exists(),
        "a key was made for an unverified hub"
    );
    assert_no_secrets("join's stderr", &refused.stderr, &token, &data);
}

/// During a CA rotation the hub's bundle holds the old and the new CA: join pins both
/// with two `--ca-hash` flags and trusts exactly those; one that is not pinned is never
/// trusted, even though the bundle carries it.
#[tokio::test]
async fn two_ca_hashes_pin_a_rotating_hub() {
    let _ = managed_cluster().await;
    let (old, new) = (TestCa::new("hub-ca-old"), TestCa::new("hub-ca-new"));
    let bundle = format!("{}{}", old.cert.pem(), new.cert.pem());
    let hub = FakeHub::start(bundle, new.serving()).await;

    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(&dir);
    let joined = klusterlet(&strs(&fake_join_args(
        &hub,
        "abcdef.0123456789abcdef",
        &[&old.hash(), &new.hash()],
        &data,
    )))
    .await;
    assert_eq!(joined.code, 0, "{joined:?}");
    assert_eq!(hub.tokens(), ["Bearer abcdef.0123456789abcdef"]);
    let state = klusterlet::hub::identity::JoinState::load(&data).unwrap();
    let trusted: Vec<String> =
        klusterlet::hub::identity::bundle_certificates(&state.certificate_authority_data)
            .into_iter()
            .map(|(hash, _)| hash)
            .collect();
    assert_eq!(trusted, [old.hash(), new.hash()], "exactly the pinned CAs");

    // The same with the hashes in one comma-separated value, in the other order.
    let other = tempfile::tempdir().unwrap();
    let both = format!("{},{}", new.hash(), old.hash());
    let joined = klusterlet(&strs(&fake_join_args(
        &hub,
        "abcdef.0123456789abcdef",
        &[&both],
        &data_dir(&other),
    )))
    .await;
    assert_eq!(joined.code, 0, "{joined:?}");

    // Pinning only the old CA: the new one signs the serving certificate, untrusted.
    let third = tempfile::tempdir().unwrap();
    let refused = klusterlet(&strs(&fake_join_args(
        &hub,
        "abcdef.0123456789abcdef",
        &[&old.hash()],
        &data_dir(&third),
    )))
    .await;
    assert_eq!(refused.code, 4, "{refused:?}");
    assert_eq!(
        hub.tokens().len(),
        2,
        "no token sent to an unpinned CA's server"
    );
}
