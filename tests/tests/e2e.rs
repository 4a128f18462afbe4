//! The whole story end to end, as a user lives it, with nothing but real processes: a
//! `hub serve` on Postgres, two managed clusters (kube-apiserver, controller-manager,
//! scheduler and a KWOK node each), and one `klusterlet` per cluster. Every step goes
//! through the `hub` and `klusterlet` command lines:
//!
//! `hub token create` → `klusterlet join --wait` → `hub accept` → `hub apply --wait` to
//! both clusters → update → drop a manifest → `hub delete work` with each delete option →
//! `hub delete cluster`.
//!
//! What is asserted is what a user would notice: exit codes and the CLI's words, the
//! objects present or absent in each managed cluster, and the conditions the hub reports.
//! A second test runs `tests/e2e/demo.sh`, the same story as a script for people, so the
//! script cannot silently go stale.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Resource;
use kube::api::Api;
use serde_json::Value;
use testkit::cluster::{ClusterOptions, TestCluster};
use testkit::postgres::TestPostgres;
use testkit::procs::{HubProcess, binary};

/// A generous bound on anything that must become true (an agent acting, a namespace
/// going away); never a performance assertion.
const DEADLINE: Duration = Duration::from_secs(60);

/// The same bound, as the CLI's `--timeout`.
const TIMEOUT: &str = "60s";

/// The label both clusters join with, so one `--cluster-selector` reaches the fleet.
const FLEET_SELECTOR: &str = "env=e2e";

fn init() {
    // kube's rustls and the hub's both link ring and aws-lc-rs; pick one for the process.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// What one run of a binary did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    command: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} exited {}\n--- stdout\n{}--- stderr\n{}",
            self.command, self.code, self.stdout, self.stderr
        )
    }
}

impl Run {
    /// Asserts exit 0 and returns stdout.
    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "{self}");
        &self.stdout
    }

    fn json(&self) -> Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("not JSON ({e}): {self}"))
    }
}

/// Runs a finished command and records what it did; a bound keeps a hung CLI from hanging
/// the test.
async fn run(mut cmd: tokio::process::Command, command: String) -> Run {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{command} still running after 300 s"))
        .unwrap_or_else(|e| panic!("cannot run {command}: {e}"));
    Run {
        code: out.status.code().expect("exited, not killed by a signal"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        command,
    }
}

/// One managed cluster: the cluster itself, the agent's data dir and its running
/// `klusterlet run`.
struct Managed {
    name: &'static str,
    cluster: TestCluster,
    data: PathBuf,
    agent: Option<tokio::process::Child>,
}

impl Managed {
    fn kubeconfig(&self) -> String {
        self.cluster.kubeconfig_path().display().to_string()
    }

    fn agent_log_path(&self) -> PathBuf {
        self.data.with_extension("log")
    }

    fn agent_log(&self) -> String {
        std::fs::read_to_string(self.agent_log_path()).unwrap_or_default()
    }

    /// `klusterlet join` with the hub's join line, this cluster's name and the fleet label,
    /// waiting (as a child process) for an admin's decision.
    fn join(&self, join_args: &[String]) -> tokio::process::Child {
        tokio::process::Command::new(binary("klusterlet").unwrap())
            .arg("join")
            .args(join_args)
            .args([
                "--cluster-name",
                self.name,
                "--kubeconfig",
                &self.kubeconfig(),
            ])
            .args(["--data-dir", &self.data.display().to_string()])
            .args(["--label", FLEET_SELECTOR])
            .args(["--wait", "--timeout", TIMEOUT])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("klusterlet join starts")
    }

    /// `klusterlet run` with ~1 s timings; its log goes to a file next to its data dir.
    fn run_agent(&mut self) {
        let log = std::fs::File::create(self.agent_log_path()).unwrap();
        let child = tokio::process::Command::new(binary("klusterlet").unwrap())
            .args(["run", "--kubeconfig", &self.kubeconfig()])
            .args(["--data-dir", &self.data.display().to_string()])
            .args(["--resync", "1s", "--degraded-after", "2s"])
            .env("KLUSTERLET_LOG", "info,klusterlet=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("klusterlet run starts");
        self.agent = Some(child);
    }

    fn config_maps(&self, namespace: &str) -> Api<ConfigMap> {
        Api::namespaced(self.cluster.client(), namespace)
    }

    /// A ConfigMap's `data[key]`, or None when the ConfigMap does not exist.
    async fn config_value(&self, namespace: &str, name: &str, key: &str) -> Option<String> {
        let cm = self
            .config_maps(namespace)
            .get_opt(name)
            .await
            .unwrap_or_else(|e| {
                panic!("{}: reading configmap {namespace}/{name}: {e}", self.name)
            })?;
        Some(
            cm.data
                .and_then(|d| d.get(key).cloned())
                .unwrap_or_default(),
        )
    }

    /// Whether the ConfigMap exists (and is not being deleted).
    async fn has_config_map(&self, namespace: &str, name: &str) -> bool {
        self.config_maps(namespace)
            .get_opt(name)
            .await
            .unwrap()
            .is_some_and(|cm| cm.meta().deletion_timestamp.is_none())
    }

    /// Waits until the object is gone or being deleted (a Deployment or Namespace may keep
    /// a deletionTimestamp while its dependents go).
    async fn wait_gone<K>(&self, api: Api<K>, name: &str)
    where
        K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match api.get_opt(name).await.unwrap() {
                None => return,
                Some(o) if o.meta().deletion_timestamp.is_some() => return,
                Some(_) => {}
            }
            assert!(
                Instant::now() < deadline,
                "{}: {name} still there after {DEADLINE:?}; agent log:\n{}",
                self.name,
                self.agent_log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The hub, its clusters and the files the user writes.
struct Story {
    hub: HubProcess,
    clusters: Vec<Managed>,
    dir: tempfile::TempDir,
}

impl Story {
    /// `hub ARGS...` with the admin `client.yaml` the hub wrote, stdout not a terminal (as
    /// in CI).
    async fn hub(&self, args: &[&str]) -> Run {
        let mut cmd = tokio::process::Command::new(binary("hub").unwrap());
        cmd.args(args);
        for key in ["HUB_SERVER", "HUB_TOKEN", "HUB_CA_FILE", "HUB_LOG"] {
            cmd.env_remove(key);
        }
        cmd.env("HUB_CONFIG", self.hub.client_config_path());
        let run = run(cmd, format!("hub {}", args.join(" "))).await;
        // A Rust debug dump on stderr is a message no user should ever read.
        for dump in ["panicked", "Error {", "Api {", "Transport {"] {
            assert!(!run.stderr.contains(dump), "{run}");
        }
        run
    }

    /// Writes a file the user would keep in their repository, and returns its path.
    fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    fn cluster(&self, name: &str) -> &Managed {
        self.clusters.iter().find(|c| c.name == name).unwrap()
    }

    /// The works on every cluster as the hub reports them (`hub get works -A -o json`).
    async fn works(&self) -> Vec<Value> {
        let list = self.hub(&["get", "works", "-A", "-o", "json"]).await.json();
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// Asserts that work `name` exists on every cluster at `generation` and that each
    /// of `conditions` is True at that generation (fresh status, not a stale one).
    async fn assert_conditions(&self, name: &str, generation: i64, conditions: &[&str]) {
        let works = self.works().await;
        for managed in &self.clusters {
            let work = works
                .iter()
                .find(|w| {
                    w["metadata"]["name"] == name && w["metadata"]["namespace"] == managed.name
                })
                .unwrap_or_else(|| panic!("no work {name} on {}: {works:#?}", managed.name));
            assert_eq!(work["metadata"]["generation"], generation, "{work:#}");
            for wanted in conditions {
                assert!(
                    work["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["type"] == *wanted
                            && c["status"] == "True"
                            && c["observedGeneration"] == generation),
                    "{name} on {} is not {wanted} at generation {generation}: {work:#}",
                    managed.name
                );
            }
        }
    }

    /// Waits until every cluster's agent renews its lease, so the hub calls it available.
    async fn wait_available(&self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let list = self.hub(&["get", "clusters", "-o", "json"]).await.json();
            let available = |name: &str| {
                list["items"].as_array().into_iter().flatten().any(|c| {
                    c["metadata"]["name"] == name
                        && c["status"]["conditions"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|c| {
                                c["type"] == "ManagedClusterConditionAvailable"
                                    && c["status"] == "True"
                            })
                })
            };
            if self.clusters.iter().all(|c| available(c.name)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "clusters not available after {DEADLINE:?}: {list:#}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The application: its own namespace, a setting, an extra ConfigMap dropped later, and a
/// Deployment that KWOK's node runs, so Ready means the pods are up.
fn app(greeting: &str, with_extra: bool) -> String {
    let extra = if with_extra {
        "---
apiVersion: v1
kind: ConfigMap
metadata: {name: extra, namespace: demo}
data: {note: dropped later}
"
    } else {
        ""
    };
    format!(
        "apiVersion: v1
kind: Namespace
metadata: {{name: demo}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings, namespace: demo}}
data: {{greeting: {greeting:?}}}
{extra}---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: demo}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: web, image: nginx}}]
      tolerations: [{{key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}}]
"
    )
}

/// Two ManifestWork documents with delete options: `keep-all` orphans everything,
/// `some` orphans only `sel-keep`. In `default`, so they do not depend on the app's
/// namespace.
const ORPHANS: &str = "apiVersion: work.open-cluster-management.io/v1
kind: ManifestWork
metadata: {name: keep-all}
spec:
  deleteOption: {propagationPolicy: Orphan}
  workload:
    manifests:
    - {apiVersion: v1, kind: ConfigMap, metadata: {name: kept, namespace: default}, data: {v: '1'}}
---
apiVersion: work.open-cluster-management.io/v1
kind: ManifestWork
metadata: {name: some}
spec:
  deleteOption:
    propagationPolicy: SelectivelyOrphan
    selectivelyOrphans:
      orphaningRules:
      - {group: '', resource: configmaps, name: sel-keep, namespace: default}
  workload:
    manifests:
    - {apiVersion: v1, kind: ConfigMap, metadata: {name: sel-keep, namespace: default}, data: {v: '1'}}
    - {apiVersion: v1, kind: ConfigMap, metadata: {name: sel-drop, namespace: default}, data: {v: '1'}}
";

/// The arguments of the join line `hub token create` prints, without its
/// `--cluster-name <name>` placeholder (each cluster fills in its own).
fn join_args(line: &str) -> Vec<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words.get(..2), Some(&["klusterlet", "join"][..]), "{line}");
    assert_eq!(
        words.get(words.len().saturating_sub(2)..),
        Some(&["--cluster-name", "<name>"][..]),
        "{line}"
    );
    words[2..words.len() - 2]
        .iter()
        .map(|w| w.to_string())
        .collect()
}

/// Prints how far the story got and when (with `--nocapture`), so a slow run shows its
/// slow step.
fn step(started: Instant, what: &str) {
    println!("[{:>6.1?}] {what}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_story_on_postgres_with_two_clusters() {
    init();
    let started = Instant::now();
    let postgres = TestPostgres::shared().await.expect("start postgres");
    let database_url = postgres.fresh_database().await.unwrap();
    let (east, west) = tokio::join!(
        TestCluster::start(ClusterOptions::full()),
        TestCluster::start(ClusterOptions::full())
    );
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(
        &dir.path().join("hub"),
        &[
            "--database-url",
            &database_url,
            "--lease-interval",
            "1s",
            "--lease-grace",
            "2s",
        ],
    )
    .await
    .expect("hub serve starts on postgres");
    let clusters = [("east", east), ("west", west)]
        .into_iter()
        .map(|(name, cluster)| Managed {
            name,
            cluster: cluster.expect("start a managed cluster"),
            data: dir.path().join(format!("agent-{name}")),
            agent: None,
        })
        .collect();
    let mut story = Story { hub, clusters, dir };
    step(started, "hub, postgres and two clusters up; joining");
    // 1. A bootstrap token; its join line is all a cluster's operator needs.
    let token = story.hub(&["token", "create", "--ttl", "10m"]).await;
    let line = token.ok().trim().to_string();
    assert_eq!(
        line.lines().count(),
        1,
        "stdout is only the join line: {token}"
    );
    let args = join_args(&line);

    // 2. Both clusters ask to join and wait; the admin accepts them by name.
    let joins: Vec<_> = story.clusters.iter().map(|c| c.join(&args)).collect();
    story
        .hub(&["accept", "east", "west", "--wait", "--timeout", TIMEOUT])
        .await
        .ok();
    for (join, managed) in joins.into_iter().zip(&story.clusters) {
        let out = join.wait_with_output().await.unwrap();
        assert!(
            out.status.success(),
            "klusterlet join for {} exited {}: {}",
            managed.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for managed in &mut story.clusters {
        managed.run_agent();
    }
    story.wait_available().await;
    let clusters = story.hub(&["get", "clusters", "-l", FLEET_SELECTOR]).await;
    for name in ["east", "west"] {
        assert!(clusters.ok().contains(name), "{clusters}");
    }

    step(started, "apply");
    // 3. The app goes to the whole fleet, and the CLI waits until it is Ready everywhere.
    let file = story.write("app.yaml", &app("hello", true));
    let apply = story
        .hub(&[
            "apply",
            "-f",
            &file,
            "--cluster-selector",
            FLEET_SELECTOR,
            "--name",
            "app",
            "--wait",
            "--for",
            "Ready",
            "--timeout",
            TIMEOUT,
        ])
        .await;
    let out = apply.ok();
    for name in ["east", "west"] {
        assert!(
            out.contains(&format!(
                "manifestwork.work.open-cluster-management.io/app created (cluster {name})"
            )),
            "{apply}"
        );
    }
    assert!(
        out.contains("manifestwork \"app\" Ready on 2 of 2 clusters"),
        "{apply}"
    );
    story
        .assert_conditions("app", 1, &["Applied", "Available", "Ready"])
        .await;
    for managed in &story.clusters {
        assert_eq!(
            managed
                .config_value("demo", "settings", "greeting")
                .await
                .as_deref(),
            Some("hello"),
            "{}",
            managed.name
        );
        assert!(
            managed.has_config_map("demo", "extra").await,
            "{}",
            managed.name
        );
        let web = Api::<Deployment>::namespaced(managed.cluster.client(), "demo")
            .get("web")
            .await
            .unwrap();
        assert_eq!(
            web.status.and_then(|s| s.available_replicas),
            Some(1),
            "{}: Ready means the pod is up",
            managed.name
        );
    }
    let table = story.hub(&["get", "works", "-A"]).await;
    assert_eq!(
        table.ok().lines().filter(|l| l.contains(" app ")).count(),
        2,
        "one row per cluster: {table}"
    );

    step(started, "update");
    // 4. A changed value reaches both clusters.
    let file = story.write("app.yaml", &app("hello again", true));
    let apply = story
        .hub(&[
            "apply",
            "-f",
            &file,
            "--cluster-selector",
            FLEET_SELECTOR,
            "--name",
            "app",
            "--wait",
            "--for",
            "Applied",
            "--timeout",
            TIMEOUT,
        ])
        .await;
    assert!(
        apply
            .ok()
            .contains("manifestwork.work.open-cluster-management.io/app configured (cluster east)"),
        "{apply}"
    );
    story.assert_conditions("app", 2, &["Applied"]).await;
    for managed in &story.clusters {
        assert_eq!(
            managed
                .config_value("demo", "settings", "greeting")
                .await
                .as_deref(),
            Some("hello again"),
            "{}: Applied at the new generation means the new value is there",
            managed.name
        );
    }

    step(started, "drop");
    // 5. A manifest dropped from the work is removed from the clusters.
    let file = story.write("app.yaml", &app("hello again", false));
    story
        .hub(&[
            "apply",
            "-f",
            &file,
            "--cluster-selector",
            FLEET_SELECTOR,
            "--name",
            "app",
            "--wait",
            "--for",
            "Applied",
            "--timeout",
            TIMEOUT,
        ])
        .await
        .ok();
    story.assert_conditions("app", 3, &["Applied"]).await;
    for managed in &story.clusters {
        managed
            .wait_gone(managed.config_maps("demo"), "extra")
            .await;
        assert!(
            managed.has_config_map("demo", "settings").await,
            "{}",
            managed.name
        );
    }

    step(started, "delete works");
    // 6. Delete options. Orphan leaves everything, SelectivelyOrphan only what its
    // rules name. `hub delete` waits until the agent has cleaned up and released the
    // work, so the clusters are already in their final state when it returns.
    let file = story.write("orphans.yaml", ORPHANS);
    story
        .hub(&[
            "apply",
            "-f",
            &file,
            "--cluster-selector",
            FLEET_SELECTOR,
            "--wait",
            "--for",
            "Applied",
            "--timeout",
            TIMEOUT,
        ])
        .await
        .ok();
    for managed in &story.clusters {
        for name in ["kept", "sel-keep", "sel-drop"] {
            assert!(
                managed.has_config_map("default", name).await,
                "{}: {name}",
                managed.name
            );
        }
    }
    for work in ["keep-all", "some"] {
        story
            .hub(&[
                "delete",
                "work",
                work,
                "--cluster-selector",
                FLEET_SELECTOR,
                "--timeout",
                TIMEOUT,
            ])
            .await
            .ok();
    }
    for managed in &story.clusters {
        assert!(
            managed.has_config_map("default", "kept").await,
            "{}: Orphan leaves the object",
            managed.name
        );
        assert!(
            managed.has_config_map("default", "sel-keep").await,
            "{}: SelectivelyOrphan leaves what its rules name",
            managed.name
        );
        assert!(
            !managed.has_config_map("default", "sel-drop").await,
            "{}: SelectivelyOrphan deletes the rest",
            managed.name
        );
    }

    // The default, Foreground: everything the work created goes, its namespace too.
    story
        .hub(&[
            "delete",
            "work",
            "app",
            "--cluster-selector",
            FLEET_SELECTOR,
            "--timeout",
            TIMEOUT,
        ])
        .await
        .ok();
    for managed in &story.clusters {
        assert!(
            !managed.has_config_map("demo", "settings").await,
            "{}: the work's ConfigMap is deleted",
            managed.name
        );
        managed
            .wait_gone(
                Api::<Deployment>::namespaced(managed.cluster.client(), "demo"),
                "web",
            )
            .await;
        managed
            .wait_gone(Api::<Namespace>::all(managed.cluster.client()), "demo")
            .await;
    }
    let works = story.works().await;
    assert!(works.is_empty(), "no work left on the hub: {works:#?}");

    step(started, "delete cluster");
    // 7. Deleting a cluster: its agent removes what its works created, then the hub drops
    // the record. The other cluster is untouched.
    let farewell = story.write(
        "farewell.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: farewell, namespace: default}\ndata: {v: bye}\n",
    );
    story
        .hub(&[
            "apply",
            "-f",
            &farewell,
            "--cluster",
            "west",
            "--name",
            "farewell",
            "--wait",
            "--for",
            "Applied",
            "--timeout",
            TIMEOUT,
        ])
        .await
        .ok();
    assert!(
        story
            .cluster("west")
            .has_config_map("default", "farewell")
            .await
    );
    story
        .hub(&["delete", "cluster", "west", "--timeout", TIMEOUT])
        .await
        .ok();
    let west = story.cluster("west");
    assert!(
        !west.has_config_map("default", "farewell").await,
        "the agent cleans up before the record goes; agent log:\n{}",
        west.agent_log()
    );
    let gone = story.hub(&["get", "clusters", "west"]).await;
    assert_eq!(gone.code, 1, "the record is gone: {gone}");
    let list = story.hub(&["get", "clusters", "-o", "json"]).await.json();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["east"], "{list:#}");
    // Orphans are the user's now: deleting the cluster on the hub leaves them.
    assert!(west.has_config_map("default", "kept").await);

    let log = story.hub.log_text()
        + &story
            .clusters
            .iter()
            .map(Managed::agent_log)
            .collect::<String>();
    assert!(
        !log.contains("PRIVATE KEY") && !log.contains(line.split_whitespace().nth(5).unwrap()),
        "a secret reached a log"
    );
    step(started, "done");
}

/// The repository's root, where `tests/e2e/demo.sh` lives.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Builds the cluster launcher `tests/cluster/start.sh` runs, so that the script's own
/// `cargo run` only finds it up to date (building it is not the script's story).
fn build_cluster_example() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--quiet", "-p", "testkit", "--example", "cluster"])
        .arg("--manifest-path")
        .arg(repo_root().join("Cargo.toml"))
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build --example cluster failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_script_tells_the_same_story() {
    // The script builds release binaries when given none; the test hands it the ones this
    // test run built, which saves a second, optimised build of the workspace.
    let bin_dir = binary("hub").unwrap().parent().unwrap().to_path_buf();
    binary("klusterlet").unwrap();
    build_cluster_example();
    let script = repo_root().join("tests/e2e/demo.sh");
    // Its own TMPDIR, so that what it leaves running can be found afterwards.
    let tmp = tempfile::tempdir().unwrap();
    let child = tokio::process::Command::new("bash")
        .arg(&script)
        .env("FLEETHUB_BIN_DIR", &bin_dir)
        .env("TMPDIR", tmp.path())
        // SQLite: the other test covers Postgres.
        .env_remove("DATABASE_URL")
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("bash starts");
    // A bound on the whole script. SIGTERM, not SIGKILL, when it runs out: the script's
    // trap then stops the clusters, the hub and the agents it started.
    let pid = child.id().expect("running").to_string();
    let bound = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(600)).await;
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await;
    });
    let out = child.wait_with_output().await.expect("bash finishes");
    bound.abort();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        command: format!("bash {}", script.display()),
    };
    let out = run.ok();
    for want in [
        "east: greeting = hello again",
        "west: greeting = hello again",
        "east: configmap extra is gone",
        "west: kept (Orphan) is still there",
        "west: farewell is gone",
        "demo finished",
    ] {
        assert!(out.contains(want), "missing {want:?}: {run}");
    }
    // Nothing the script started outlives it. (Agents started through a shell function
    // once did, retrying a dead hub several times a second.)
    let dir = tmp.path().display().to_string();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&dir))
        .collect();
    assert!(left.is_empty(), "processes left running: {left:?}");
}
