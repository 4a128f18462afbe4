//! The CI commands end to end, as a pipeline runs them: the real `hub` CLI against a real
//! `hub serve`, real `klusterlet run` agents and a real managed cluster (kube-apiserver,
//! controller-manager, scheduler and a KWOK node, so Deployments become available).
//! Asserted: exit codes, what stdout and stderr say, and how long a wait takes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use api::HubClient;
use serde_json::{Value, json};
use testkit::cluster::{ClusterMode, TestCluster};
use testkit::procs::HubProcess;

fn init() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

async fn managed() -> &'static TestCluster {
    TestCluster::shared(ClusterMode::Full)
        .await
        .expect("start the managed cluster")
}

/// A hub (leases every second, unavailable after 2 s without one) and the clusters
/// joined to it.
struct Fleet {
    hub: HubProcess,
    admin: HubClient,
    dir: tempfile::TempDir,
}

/// A joined cluster: its running `klusterlet run` and the namespace its works use.
struct Agent {
    cluster: String,
    namespace: String,
    kubeconfig: String,
    data: PathBuf,
    child: Option<tokio::process::Child>,
}

impl Fleet {
    async fn start() -> Fleet {
        init();
        managed().await;
        let dir = tempfile::tempdir().unwrap();
        let hub = HubProcess::start(
            &dir.path().join("hub"),
            &["--lease-interval", "1s", "--lease-grace", "2s"],
        )
        .await
        .unwrap();
        let admin = hub.client().unwrap();
        Fleet { hub, admin, dir }
    }

    /// Joins `cluster` (auto-accepted, with these labels) and runs its agent with ~1 s
    /// timings, its ledger in its own namespace, its works' objects in another.
    async fn join(&self, cluster: &str, labels: &[&str]) -> Agent {
        let managed = managed().await;
        let data = self.dir.path().join(format!("agent-{cluster}"));
        let kubeconfig = managed.kubeconfig_path().display().to_string();
        self.hub
            .join_klusterlet(
                Path::new(env!("CARGO_BIN_EXE_klusterlet")),
                cluster,
                managed.kubeconfig_path(),
                &data,
                labels,
            )
            .await
            .unwrap();
        let namespace = managed.fresh_namespace().await.unwrap();
        let mut agent = Agent {
            cluster: cluster.to_string(),
            namespace,
            kubeconfig,
            data,
            child: None,
        };
        agent.run();
        agent
    }

    /// Runs the CLI with this hub's admin `client.yaml`.
    async fn cli(&self, args: &[&str]) -> Run {
        self.cli_env(args, &[]).await
    }

    async fn cli_env(&self, args: &[&str], envs: &[(&str, &str)]) -> Run {
        let config = self.hub.client_config_path();
        let mut all = vec![("HUB_CONFIG", config.to_str().unwrap())];
        all.extend_from_slice(envs);
        cli(args, &all).await
    }

    /// A file in the test's directory.
    fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    fn hub_log(&self) -> String {
        self.hub.log_text()
    }
}

impl Agent {
    fn run(&mut self) {
        let ledger = format!("agent-{}", self.cluster);
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_klusterlet"))
            .args(["run", "--kubeconfig", &self.kubeconfig])
            .args(["--data-dir", &self.data.display().to_string()])
            .args([
                "--resync",
                "1s",
                "--degraded-after",
                "2s",
                "--namespace",
                &ledger,
            ])
            .env("KLUSTERLET_LOG", "info,klusterlet=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.data.with_extension("log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().await.unwrap();
        }
    }

    /// Sends SIGSTOP or SIGCONT: a stopped agent renews no lease but keeps its process.
    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().and_then(|c| c.id()).expect("running");
        let ok = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} {pid}");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data.with_extension("log")).unwrap_or_default()
    }

    fn config_map(&self, name: &str, value: &str) -> String {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {}}}\ndata: {{v: {value:?}}}\n",
            self.namespace
        )
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // A stopped agent would not die from SIGKILL's kill_on_drop until continued.
        if let Some(pid) = self.child.as_ref().and_then(|c| c.id()) {
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .status();
        }
    }
}

/// What one CLI run did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    args: String,
    elapsed: Duration,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "hub {} exited {} after {:?}\n--- stdout\n{}--- stderr\n{}",
            self.args, self.code, self.elapsed, self.stdout, self.stderr
        )
    }
}

impl Run {
    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "{self}");
        &self.stdout
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self}"))
    }
}

fn hub_binary() -> PathBuf {
    testkit::procs::binary("hub").expect("the hub binary")
}

/// Runs the `hub` CLI with only these connection variables, stdout not a terminal (as
/// in CI).
async fn cli(args: &[&str], envs: &[(&str, &str)]) -> Run {
    let mut cmd = tokio::process::Command::new(hub_binary());
    cmd.args(args);
    for key in [
        "HUB_SERVER",
        "HUB_TOKEN",
        "HUB_CA_FILE",
        "HUB_CONFIG",
        "HUB_LOG",
    ] {
        cmd.env_remove(key);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .expect("the CLI finished within 300 s")
        .unwrap();
    let run = Run {
        code: out.status.code().expect("the CLI exited, not killed"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
        args: args.join(" "),
        elapsed: started.elapsed(),
    };
    for dump in ["panicked", "Error {", "Api {", "Transport {"] {
        assert!(!run.stderr.contains(dump), "{run}");
    }
    run
}

const LIMIT: &str = "120s";

fn deployment(namespace: &str, name: &str, node_selector: Option<&str>) -> String {
    let selector = node_selector
        .map(|s| format!("      nodeSelector: {{{s}}}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
{selector}      containers: [{{name: app, image: nginx}}]
      tolerations: [{{key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}}]
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_wait_then_wait_describe_and_diff() {
    let fleet = Fleet::start().await;
    let agent = fleet.join("ready", &[]).await;
    let ns = &agent.namespace;
    let file = fleet.write(
        "app.yaml",
        &format!(
            "{}---\n{}",
            agent.config_map("cfg", "1"),
            deployment(ns, "web", None)
        ),
    );
    let run = fleet
        .cli(&[
            "apply",
            "-f",
            &file,
            "--cluster",
            "ready",
            "--name",
            "app",
            "--wait",
            "--timeout",
            LIMIT,
        ])
        .await;
    let out = run.ok();
    assert!(
        out.starts_with(
            "manifestwork.work.open-cluster-management.io/app created (cluster ready)\n"
        ),
        "{run}"
    );
    assert!(
        out.lines()
            .last()
            .unwrap()
            .starts_with("manifestwork \"app\" Ready on 1 of 1 cluster after "),
        "{run}"
    );
    // Not a terminal: plain lines, no escape sequences.
    assert!(!out.contains('\x1b'), "{run}");

    // The same, as `hub wait` with kubectl's --for form, as JSON.
    let run = fleet
        .cli(&[
            "wait",
            "work",
            "app",
            "--cluster",
            "ready",
            "--for",
            "condition=Ready",
            "-o",
            "json",
        ])
        .await;
    run.ok();
    let doc = run.json();
    assert_eq!(doc["kind"], "WaitResult", "{run}");
    assert_eq!(doc["for"], "Ready");
    assert_eq!(doc["status"], "done");
    let r = &doc["results"][0];
    assert_eq!(
        (
            r["cluster"].as_str(),
            r["work"].as_str(),
            r["status"].as_str()
        ),
        (Some("ready"), Some("app"), Some("done")),
        "{run}"
    );
    assert!(
        r["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Ready"
                && c["status"] == "True"
                && c["observedGeneration"] == r["generation"])
    );
    assert_eq!(r["pending"], json!([]));

    // describe: conditions, resources with feedback-less status, recent changes.
    let run = fleet
        .cli(&["describe", "work", "app", "--cluster", "ready"])
        .await;
    let text = run.ok();
    for want in [
        "Name:             app",
        "Conditions:",
        "Ready",
        "Deployment",
        &format!("{ns}/web"),
        "Recent changes:",
        "work.put",
    ] {
        assert!(text.contains(want), "missing {want:?}: {run}");
    }
    let run = fleet.cli(&["describe", "cluster", "ready"]).await;
    let text = run.ok();
    for want in [
        "Last lease:",
        "ManagedClusterConditionAvailable",
        "Works:            1 (1 applied, 1 ready, 0 degraded)",
        "kubeversion",
    ] {
        assert!(text.contains(want), "missing {want:?}: {run}");
    }

    // diff: nothing to change, then a changed value and a dropped manifest.
    let run = fleet
        .cli(&["diff", "-f", &file, "--cluster", "ready", "--name", "app"])
        .await;
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.stdout, "", "{run}");
    let changed = fleet.write("changed.yaml", &agent.config_map("cfg", "2"));
    let run = fleet
        .cli(&[
            "diff",
            "-f",
            &changed,
            "--cluster",
            "ready",
            "--name",
            "app",
        ])
        .await;
    assert_eq!(run.code, 1, "{run}");
    // The value's line, removed and added (however YAML quotes it).
    let changed_line = |sign: char, value: &str| {
        run.stdout.lines().any(|l| {
            let body = l.trim_start_matches(sign).trim();
            l.starts_with(sign) && body.starts_with("v:") && body.contains(value)
        })
    };
    assert!(changed_line('-', "1") && changed_line('+', "2"), "{run}");
    assert!(
        run.stdout
            .contains(&format!("~ changed  v1/ConfigMap {ns}/cfg")),
        "{run}"
    );
    assert!(
        run.stdout
            .contains(&format!("- removed  apps/v1/Deployment {ns}/web")),
        "{run}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_kubernetes_rejects_fails_with_exit_1_naming_resource_and_reason() {
    let fleet = Fleet::start().await;
    let agent = fleet.join("rejects", &[]).await;
    let ns = &agent.namespace;
    let bad = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: bad, namespace: {ns}}}\n\
         spec: {{type: Bogus, ports: [{{port: 80}}]}}\n---\n{}",
        agent.config_map("fine", "1")
    );
    let file = fleet.write("bad.yaml", &bad);
    let run = fleet
        .cli(&[
            "apply",
            "-f",
            &file,
            "--cluster",
            "rejects",
            "--name",
            "bad",
            "--wait",
            "--timeout",
            LIMIT,
            "-o",
            "json",
        ])
        .await;
    assert_eq!(run.code, 1, "{run}\nagent log:\n{}", agent.log());
    let err = run.stderr.lines().last().unwrap_or_default();
    assert!(
        err.starts_with("error: manifestwork \"bad\" failed on cluster rejects: "),
        "{run}"
    );
    assert!(
        err.contains(&format!("Service {ns}/bad: Invalid: ")),
        "{run}"
    );
    assert!(err.contains("Unsupported value: \"Bogus\""), "{run}");
    // Degraded is reported as soon as the agent gives up, long before the timeout.
    assert!(run.elapsed < Duration::from_secs(60), "{run}");
    let doc = run.json();
    assert_eq!(doc["status"], "failed");
    let r = &doc["results"][0];
    assert_eq!(r["status"], "failed");
    assert_eq!(r["failed"][0]["kind"], "Service");
    assert_eq!(r["failed"][0]["reason"], "Invalid");
    assert_eq!(r["failed"][0]["condition"], "Applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_that_never_becomes_ready_times_out_with_exit_3() {
    let fleet = Fleet::start().await;
    let agent = fleet.join("stuck", &[]).await;
    let ns = &agent.namespace;
    let file = fleet.write(
        "stuck.yaml",
        &deployment(ns, "stuck", Some("no-such-label: anywhere")),
    );
    let timeout = Duration::from_secs(8);
    let run = fleet
        .cli(&[
            "apply",
            "-f",
            &file,
            "--cluster",
            "stuck",
            "--name",
            "stuck",
            "--wait",
            "--timeout",
            "8s",
        ])
        .await;
    assert_eq!(run.code, 3, "{run}");
    assert!(
        run.elapsed < timeout + Duration::from_secs(5),
        "took {:?}: {run}",
        run.elapsed
    );
    let err = run.stderr.trim();
    assert!(
        err.starts_with(
            "error: timed out after 8s waiting for manifestwork \"stuck\" to be Ready; still pending: cluster stuck: "
        ),
        "{run}"
    );
    assert!(
        err.contains(&format!(
            "Deployment {ns}/stuck: Ready=False: 0 of 1 replicas available"
        )),
        "{run}"
    );
    // The progress said the same while waiting, and ended with a summary.
    assert!(
        run.stdout
            .contains(&format!("  Deployment {ns}/stuck: Ready=False")),
        "{run}"
    );
    assert!(
        run.stdout
            .ends_with("timed out after 8s: manifestwork \"stuck\" Ready on 0 of 1 cluster\n"),
        "{run}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_survives_a_hub_restart() {
    let mut fleet = Fleet::start().await;
    let mut agent = fleet.join("restart", &[]).await;
    // With the agent down, the wait has to outlast the hub's restart.
    agent.kill().await;
    let file = fleet.write("cm.yaml", &agent.config_map("survivor", "1"));
    let config = fleet.hub.client_config_path();
    let waiting = tokio::spawn({
        let file = file.clone();
        async move {
            let args = [
                "apply",
                "-f",
                &file,
                "--cluster",
                "restart",
                "--name",
                "survivor",
                "--wait",
                "--for",
                "Applied",
                "--timeout",
                LIMIT,
            ];
            cli(&args, &[("HUB_CONFIG", config.to_str().unwrap())]).await
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!waiting.is_finished());
    fleet.hub.kill_and_restart().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    agent.run();
    let run = waiting.await.unwrap();
    assert_eq!(
        run.code,
        0,
        "{run}\nhub log:\n{}\nagent log:\n{}",
        fleet.hub_log(),
        agent.log()
    );
    assert!(
        run.stdout
            .contains("retrying with backoff until the timeout"),
        "the progress did not say the hub was being retried: {run}"
    );
    assert!(
        run.stdout
            .contains("manifestwork \"survivor\" Applied on 1 of 1 cluster"),
        "{run}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selector_waits_for_every_matching_cluster() {
    let fleet = Fleet::start().await;
    let east = fleet.join("east", &["env=sel"]).await;
    let mut west = fleet.join("west", &["env=sel"]).await;
    let _other = fleet.join("other", &["env=elsewhere"]).await;
    // One work of each name per cluster, each in its cluster's namespace.
    let east_file = fleet.write("east.yaml", &east.config_map("shared", "east"));
    fleet
        .cli(&[
            "apply",
            "-f",
            &east_file,
            "--cluster",
            "east",
            "--name",
            "shared",
            "--wait",
        ])
        .await
        .ok();
    west.kill().await;
    let west_file = fleet.write("west.yaml", &west.config_map("shared", "west"));
    fleet
        .cli(&[
            "apply",
            "-f",
            &west_file,
            "--cluster",
            "west",
            "--name",
            "shared",
        ])
        .await
        .ok();
    let config = fleet.hub.client_config_path();
    let waiting = tokio::spawn(async move {
        let args = [
            "wait",
            "work",
            "shared",
            "--cluster-selector",
            "env=sel",
            "--for",
            "Applied",
            "--timeout",
            LIMIT,
            "-o",
            "json",
        ];
        cli(&args, &[("HUB_CONFIG", config.to_str().unwrap())]).await
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !waiting.is_finished(),
        "the wait ended while west had not applied its work"
    );
    west.run();
    let run = waiting.await.unwrap();
    run.ok();
    let doc = run.json();
    let done: Vec<(&str, &str)> = doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["cluster"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(done, [("east", "done"), ("west", "done")], "{run}");
    // The progress (on stderr with -o) showed west waiting while east was done.
    assert!(run.stderr.contains("cluster east: Applied"), "{run}");
    assert!(run.stderr.contains("cluster west: "), "{run}");
    assert!(
        run.stderr
            .contains("manifestwork \"shared\" Applied on 2 of 2 clusters"),
        "{run}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_reported_as_unavailable() {
    let fleet = Fleet::start().await;
    let agent = fleet.join("frozen", &[]).await;
    let file = fleet.write("cm.yaml", &agent.config_map("frozen", "1"));
    fleet
        .cli(&[
            "apply",
            "-f",
            &file,
            "--cluster",
            "frozen",
            "--name",
            "frozen",
            "--wait",
        ])
        .await
        .ok();
    // The agent stops renewing its lease; the hub marks the cluster after 2 s.
    agent.signal("STOP");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = fleet.admin.get_cluster("frozen").await.unwrap().value;
        if c.condition("ManagedClusterConditionAvailable")
            .is_some_and(|a| a.status != "True")
        {
            break;
        }
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Even though the work is Applied, an unavailable cluster does not count.
    let run = fleet
        .cli(&[
            "wait",
            "work",
            "frozen",
            "--cluster",
            "frozen",
            "--for",
            "Applied",
            "--timeout",
            "3s",
        ])
        .await;
    agent.signal("CONT");
    assert_eq!(run.code, 3, "{run}");
    let err = run.stderr.trim();
    assert!(
        err.contains("cluster frozen: unavailable (ManagedClusterLeaseUpdateStopped; last lease "),
        "{run}"
    );
    assert!(err.contains("s ago)"), "{run}");
    assert!(
        run.stdout
            .contains("cluster frozen: unavailable (ManagedClusterLeaseUpdateStopped; last lease "),
        "{run}"
    );
    assert!(run.stdout.contains("not counted as Applied"), "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_data_is_never_printed() {
    let fleet = Fleet::start().await;
    let agent = fleet.join("secrets", &[]).await;
    let ns = &agent.namespace;
    let value = format!("pw-{}", uuid_like());
    let secret = |v: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: creds, namespace: {ns}}}\n\
             stringData: {{password: {v}}}\n"
        )
    };
    let file = fleet.write("secret.yaml", &secret(&value));
    let run = fleet
        .cli(&[
            "apply",
            "-f",
            &file,
            "--cluster",
            "secrets",
            "--name",
            "creds",
            "--wait",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(run.json()["status"], "done", "{run}");
    let mut printed = run.stdout.clone() + &run.stderr;
    let run = fleet
        .cli(&[
            "diff",
            "-f",
            &file,
            "--cluster",
            "secrets",
            "--name",
            "creds",
        ])
        .await;
    assert_eq!(run.code, 0, "{run}");
    printed += &(run.stdout.clone() + &run.stderr);
    let changed = fleet.write("changed.yaml", &secret(&format!("{value}-rotated")));
    for extra in [&[][..], &["-o", "json"][..], &["-o", "yaml"][..]] {
        let mut args = vec![
            "diff",
            "-f",
            &changed,
            "--cluster",
            "secrets",
            "--name",
            "creds",
        ];
        args.extend_from_slice(extra);
        let run = fleet.cli(&args).await;
        assert_eq!(run.code, 1, "{run}");
        assert!(run.stdout.contains("sha256:"), "{run}");
        printed += &(run.stdout.clone() + &run.stderr);
    }
    let run = fleet
        .cli(&[
            "describe",
            "work",
            "creds",
            "--cluster",
            "secrets",
            "-o",
            "yaml",
        ])
        .await;
    run.ok();
    printed += &(run.stdout.clone() + &run.stderr);
    assert!(
        !printed.contains(&value),
        "the secret value was printed:\n{printed}"
    );
    let b64 = base64_of(&value);
    assert!(
        !printed.contains(&b64),
        "the secret value was printed in base64"
    );
}

fn uuid_like() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// The curl + jq job of docs/ci.md, run as written against a real hub with an api token
/// scoped to the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_curl_and_jq_example_of_the_docs_works() {
    let fleet = Fleet::start().await;
    let agent = fleet.join("curl", &["env=curl"]).await;
    let script = docs_block("curl-jq");
    // The token a CI job would hold.
    let run = fleet
        .cli(&[
            "token",
            "create",
            "--kind",
            "api",
            "--cluster-selector",
            "env=curl",
            "--verbs",
            "read,write",
        ])
        .await;
    let token = run.ok().trim().to_string();
    let cfg = api::ClientConfig::load(&fleet.hub.client_config_path()).unwrap();
    let ca = fleet.write("ca.pem", cfg.ca_data.as_deref().unwrap());
    let work = fleet.write(
        "work.json",
        &serde_json::to_string(&json!({
            "apiVersion": "work.open-cluster-management.io/v1",
            "kind": "ManifestWork",
            "metadata": {"name": "from-curl"},
            "spec": {"workload": {"manifests": [{
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "from-curl", "namespace": agent.namespace},
                "data": {"v": "1"}
            }]}}
        }))
        .unwrap(),
    );
    let run_script = |work: String, cluster: &'static str| {
        let script = script.clone();
        let (server, token, ca) = (cfg.server.clone(), token.clone(), ca.clone());
        async move {
            let out = tokio::process::Command::new("bash")
                .args(["-euo", "pipefail", "-c", &script])
                .env("HUB_SERVER", server)
                .env("HUB_TOKEN", token)
                .env("HUB_CA_FILE", ca)
                .env("CLUSTER", cluster)
                .env("WORK", "from-curl")
                .env("WORK_FILE", work)
                .stdin(Stdio::null())
                .output()
                .await
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).to_string()
                    + &String::from_utf8_lossy(&out.stderr),
            )
        }
    };
    let (code, out) = run_script(work.clone(), "curl").await;
    assert_eq!(code, Some(0), "{out}\nagent log:\n{}", agent.log());
    assert!(out.contains("ready on 1 of 1"), "{out}");

    // A manifest Kubernetes rejects: the script fails, naming it.
    let bad = fleet.write(
        "bad.json",
        &serde_json::to_string(&json!({
            "apiVersion": "work.open-cluster-management.io/v1",
            "kind": "ManifestWork",
            "metadata": {"name": "from-curl"},
            "spec": {"workload": {"manifests": [{
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "bad", "namespace": agent.namespace},
                "spec": {"type": "Bogus", "ports": [{"port": 80}]}
            }]}}
        }))
        .unwrap(),
    );
    let (code, out) = run_script(bad, "curl").await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("Invalid"), "{out}");

    // A cluster outside the token's scope: the hub's 403 and its reason are shown, with
    // the CLI's exit code for 401/403.
    let (code, out) = run_script(work, "elsewhere").await;
    assert_eq!(code, Some(4), "{out}");
    assert!(out.contains("hub answered 403"), "{out}");
    assert!(
        out.contains("elsewhere"),
        "the hub's message names the cluster: {out}"
    );
}

/// The text of the fenced block after `<!-- test: NAME -->` in docs/ci.md.
fn docs_block(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/ci.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let marker = format!("<!-- test: {name} -->");
    let after = &text[text.find(&marker).expect("the marked block") + marker.len()..];
    let start = after.find("```").unwrap();
    let body = &after[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    body[..body.find("```").unwrap()].to_string()
}
