//! The harness `cli.rs` and `cli_registration.rs` share: a real `hub serve` child process
//! with its own data dir, and the `hub` CLI run as a process against it.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

pub mod router;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use api::{ClientConfig, HubClient, ManagedCluster};
use serde_json::Value;

/// The `hub` binary under test.
pub const HUB: &str = env!("CARGO_BIN_EXE_hub");
/// What kubectl calls a ManifestWork in its output.
pub const WORK: &str = "manifestwork.work.open-cluster-management.io";
/// What kubectl calls a ManagedCluster in its output.
pub const CLUSTER: &str = "managedcluster.cluster.open-cluster-management.io";

/// Installs the process's TLS provider (once; later calls do nothing).
pub fn init() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A `hub serve` child process, killed when dropped (also when a test panics).
pub struct HubServe {
    child: Child,
    /// The test's directory: the hub's data dir (`data/`), its log, the test's files.
    pub dir: tempfile::TempDir,
}

impl Drop for HubServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl HubServe {
    /// Starts `hub serve` on a free loopback port and waits for its `client.yaml` and
    /// `/healthz`.
    pub async fn start() -> HubServe {
        init();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let log = std::fs::File::create(dir.path().join("hub.log")).unwrap();
        let child = std::process::Command::new(HUB)
            .args(["serve", "--listen"])
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--data-dir")
            .arg(&data)
            .env_remove("HUB_DATABASE_URL")
            .env_remove("HUB_ADMIN_TOKEN")
            .env("HUB_LOG", "info,sqlx=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting hub serve");
        let mut hub = HubServe { child, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = hub.child.try_wait().unwrap() {
                panic!("hub serve exited with {status}; log:\n{}", hub.log());
            }
            if let Ok(client) = hub.try_client()
                && let Ok(resp) = client
                    .request(reqwest::Method::GET, "/healthz")
                    .send()
                    .await
                && resp.status().is_success()
            {
                return hub;
            }
            assert!(
                Instant::now() < deadline,
                "hub not healthy within 60 s; log:\n{}",
                hub.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The hub's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("hub.log")).unwrap_or_default()
    }

    /// The hub's data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The `client.yaml` the hub wrote.
    pub fn config_path(&self) -> PathBuf {
        self.data_dir().join("client.yaml")
    }

    /// The client config the hub wrote.
    pub fn config(&self) -> ClientConfig {
        ClientConfig::load(&self.config_path()).unwrap()
    }

    fn try_client(&self) -> anyhow::Result<HubClient> {
        Ok(HubClient::new(&ClientConfig::load(&self.config_path())?)?)
    }

    /// The admin's typed client, for setting up what the test is not about.
    pub fn client(&self) -> HubClient {
        self.try_client().unwrap()
    }

    /// What a klusterlet would hold: the hub's URL and CA, and a bootstrap token.
    pub fn agent_client(&self, server: &str, bootstrap_token: &str) -> HubClient {
        HubClient::new(&ClientConfig {
            server: server.to_string(),
            ca_data: self.config().ca_data,
            token: Some(bootstrap_token.to_string()),
        })
        .unwrap()
    }

    /// Runs the CLI with `HUB_CONFIG` pointing at this hub's `client.yaml`.
    pub async fn cli(&self, args: &[&str]) -> Run {
        self.cli_env(args, &[]).await
    }

    /// The same with more environment variables.
    pub async fn cli_env(&self, args: &[&str], envs: &[(&str, &str)]) -> Run {
        let config = self.config_path();
        let mut cli = Cli::new(args).env("HUB_CONFIG", config.to_str().unwrap());
        for (k, v) in envs {
            cli = cli.env(k, v);
        }
        cli.run().await
    }

    /// A file in the test's directory.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Registers a cluster with these labels (no agent).
    pub async fn add_cluster(&self, name: &str, labels: &[(&str, &str)]) {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.client()
            .put_cluster(&ManagedCluster::new(name, labels))
            .await
            .unwrap();
    }

    /// A raw API GET, to compare with what `-o json` prints.
    pub async fn api_get(&self, path: &str) -> Value {
        let client = self.client();
        client
            .send::<Value>(client.request(reqwest::Method::GET, path))
            .await
            .unwrap()
            .value
    }
}

/// One CLI run to make: arguments, environment, stdin. The connection variables of the
/// test's own environment never leak in, and the default data dir is an empty one.
pub struct Cli {
    args: Vec<String>,
    envs: Vec<(String, String)>,
    stdin: Option<String>,
    empty_data_dir: tempfile::TempDir,
}

impl Cli {
    /// A run with these arguments.
    pub fn new(args: &[&str]) -> Self {
        Cli {
            args: args.iter().map(|s| s.to_string()).collect(),
            envs: Vec::new(),
            stdin: None,
            empty_data_dir: tempfile::tempdir().unwrap(),
        }
    }

    /// With this environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// With this text on stdin.
    pub fn stdin(mut self, text: &str) -> Self {
        self.stdin = Some(text.into());
        self
    }

    /// Runs it (at most 120 s) and checks stderr never shows a panic or a Debug dump.
    pub async fn run(self) -> Run {
        use tokio::io::AsyncWriteExt;
        let mut cmd = tokio::process::Command::new(HUB);
        cmd.args(&self.args);
        for key in [
            "HUB_SERVER",
            "HUB_TOKEN",
            "HUB_CA_FILE",
            "HUB_CONFIG",
            "HUB_CONTEXT",
            "HUB_LOG",
        ] {
            cmd.env_remove(key);
        }
        cmd.env("HUB_DATA_DIR", self.empty_data_dir.path());
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
        let started = Instant::now();
        let mut child = cmd.spawn().expect("running the hub CLI");
        if let Some(text) = &self.stdin {
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(text.as_bytes()).await.unwrap();
        }
        let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .expect("the CLI finished within 120 s")
            .unwrap();
        let run = Run {
            code: out.status.code().expect("the CLI exited, not killed"),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
            args: self.args.join(" "),
            took: started.elapsed(),
        };
        // Whatever went wrong, never a panic or a Rust Debug dump.
        for dump in ["panicked", "Error {", "Api {", "Transport {", "Some("] {
            assert!(!run.stderr.contains(dump), "{run}");
        }
        run
    }
}

/// What a CLI run did.
pub struct Run {
    /// The exit code.
    pub code: i32,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
    /// Its arguments, for messages.
    pub args: String,
    /// How long it ran.
    pub took: Duration,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "hub {} exited {} after {:?}\n--- stdout\n{}--- stderr\n{}",
            self.args, self.code, self.took, self.stdout, self.stderr
        )
    }
}

impl Run {
    /// Asserts exit code 0 and returns stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "{self}");
        &self.stdout
    }

    /// Asserts this exit code and an error message on stderr, and returns stderr.
    pub fn fails(&self, code: i32) -> &str {
        assert_eq!(self.code, code, "{self}");
        assert!(!self.stderr.trim().is_empty(), "no error message: {self}");
        self.stderr.trim()
    }

    /// Stdout as JSON (asserting exit code 0).
    pub fn json(&self) -> Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("not JSON ({e}): {self}"))
    }

    /// Stdout as JSON, whatever the exit code (`-o json` of a failed wait).
    pub fn document(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self}"))
    }

    /// The table as rows of cells (header first).
    pub fn table(&self) -> Vec<Vec<String>> {
        self.ok()
            .lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .collect()
    }

    /// The table's row whose first cell is `first`.
    pub fn row(&self, first: &str) -> Vec<String> {
        self.table()
            .into_iter()
            .find(|r| r.first().map(String::as_str) == Some(first))
            .unwrap_or_else(|| panic!("no row {first:?}: {self}"))
    }
}
