//! The real `hub` binary as a child process, for end-to-end tests and benchmarks.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use api::{ClientConfig, HubClient};

/// The workspace's binaries directory (`target/<profile>`), from this process' own path:
/// `target/<profile>/deps/<test-binary>` for tests, `target/<profile>/<bin>` for the
/// benchmark binaries.
fn target_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("cannot locate the target directory")?;
    if dir.file_name().is_some_and(|d| d == "deps") {
        dir.parent()
            .map(Path::to_path_buf)
            .context("cannot locate the target directory")
    } else {
        Ok(dir.to_path_buf())
    }
}

/// Path of a workspace binary (`hub`, `klusterlet`).
///
/// * With `FLEETHUB_BIN_DIR` set, the binary in that directory, as it is.
/// * In a test, built (or brought up to date) once per test process, so a test never runs
///   a stale binary.
/// * In a benchmark (`bench`, `agentbench`), the binary next to it when there is one,
///   saying so; otherwise built, saying so first (a cold build takes minutes, and a
///   silent one looked hung).
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    if let Some(dir) = std::env::var_os("FLEETHUB_BIN_DIR").filter(|d| !d.is_empty()) {
        let path = PathBuf::from(dir).join(name);
        if !path.exists() {
            bail!("FLEETHUB_BIN_DIR has no {name} binary ({})", path.display());
        }
        return Ok(path);
    }
    let path = target_dir()?.join(name);
    let in_test = std::env::current_exe()?
        .parent()
        .is_some_and(|d| d.file_name().is_some_and(|n| n == "deps"));
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|b| b == name) {
        let release = target_dir()?.file_name().is_some_and(|p| p == "release");
        if !in_test {
            if path.exists() {
                eprintln!(
                    "using {} (rebuild it with `cargo build{} --bin {name}`, or set FLEETHUB_BIN_DIR)",
                    path.display(),
                    if release { " --release" } else { "" }
                );
                built.push(name.to_string());
                return Ok(path);
            }
            eprintln!(
                "building the {name} binary (cargo build{} --bin {name}); a first build takes minutes",
                if release { " --release" } else { "" }
            );
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--bin", name, "--manifest-path"])
            .arg(&manifest);
        // What `cargo test` set for this test process. Build scripts (ring's) declare
        // `rerun-if-env-changed` on some of them, and cargo compares its own environment:
        // inherited, they made this build and the next `cargo test` rebuild rustls, sqlx
        // and everything above them in turn.
        for (key, _) in std::env::vars_os() {
            if let Some(key) = key.to_str()
                && (key.starts_with("CARGO_PKG_")
                    || [
                        "CARGO_MANIFEST_DIR",
                        "CARGO_MANIFEST_PATH",
                        "CARGO_MANIFEST_LINKS",
                    ]
                    .contains(&key)
                    || key == "OUT_DIR")
            {
                cmd.env_remove(key);
            }
        }
        if in_test {
            cmd.arg("--quiet");
        }
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().context("running cargo build")?;
        if !status.success() || !path.exists() {
            bail!(
                "could not build the {name} binary (expected at {})",
                path.display()
            );
        }
        built.push(name.to_string());
    }
    Ok(path)
}

/// A free TCP port on 127.0.0.1 (free when asked; bind it soon).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A running `hub serve` child; killed on drop.
pub struct HubProcess {
    child: Option<Child>,
    /// The data dir (client.yaml, SQLite file).
    pub data_dir: PathBuf,
    /// `127.0.0.1:PORT` it listens on.
    pub port: u16,
    /// The arguments it was started with, to restart it the same way.
    args: Vec<String>,
    log: PathBuf,
    /// `ulimit -n` for the hub, when it must run with few file descriptors.
    fd_limit: Option<u64>,
    /// Another `hub` binary than this workspace's (an earlier release).
    bin: Option<PathBuf>,
}

impl HubProcess {
    /// Starts `hub serve` on a free port with this data dir and extra arguments, and waits
    /// until it answers `/readyz`.
    pub async fn start(data_dir: &Path, extra: &[&str]) -> anyhow::Result<HubProcess> {
        Self::start_on(data_dir, free_port(), extra).await
    }

    /// Like [`start`](Self::start) on a given port (restarts keep their port).
    pub async fn start_on(
        data_dir: &Path,
        port: u16,
        extra: &[&str],
    ) -> anyhow::Result<HubProcess> {
        Self::launch(data_dir, port, extra, None).await
    }

    /// Like [`start`](Self::start), with the open-file limit (soft and hard) set to
    /// `fd_limit` as `ulimit -n` would, so the hub cannot raise it.
    pub async fn start_with_fd_limit(
        data_dir: &Path,
        fd_limit: u64,
        extra: &[&str],
    ) -> anyhow::Result<HubProcess> {
        Self::launch(data_dir, free_port(), extra, Some(fd_limit)).await
    }

    /// Like [`start_on`](Self::start_on) with another `hub` binary (an earlier release,
    /// see [`crate::releases`]), which must take the same `serve` flags.
    pub async fn start_binary(
        bin: &Path,
        data_dir: &Path,
        port: u16,
        extra: &[&str],
    ) -> anyhow::Result<HubProcess> {
        Self::launch_binary(data_dir, port, extra, None, Some(bin.to_path_buf())).await
    }

    async fn launch(
        data_dir: &Path,
        port: u16,
        extra: &[&str],
        fd_limit: Option<u64>,
    ) -> anyhow::Result<HubProcess> {
        Self::launch_binary(data_dir, port, extra, fd_limit, None).await
    }

    async fn launch_binary(
        data_dir: &Path,
        port: u16,
        extra: &[&str],
        fd_limit: Option<u64>,
        bin: Option<PathBuf>,
    ) -> anyhow::Result<HubProcess> {
        let mut args = vec![
            "serve".to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--shutdown-grace".into(),
            "5s".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut p = HubProcess {
            child: None,
            data_dir: data_dir.to_path_buf(),
            port,
            args,
            log: data_dir.join("hub.log"),
            fd_limit,
            bin,
        };
        p.spawn().await?;
        Ok(p)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.data_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let hub = match &self.bin {
            Some(bin) => bin.clone(),
            None => binary("hub")?,
        };
        let mut cmd = match self.fd_limit {
            // `exec` keeps the pid, so signals and kills reach the hub itself.
            Some(n) => {
                let mut sh = Command::new("sh");
                sh.args(["-c", "ulimit -n \"$0\" && exec \"$@\"", &n.to_string()])
                    .arg(&hub);
                sh
            }
            None => Command::new(&hub),
        };
        let child = cmd
            .args(&self.args)
            .env_remove("HUB_DATABASE_URL")
            .env("HUB_LOG", "info,sqlx=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting hub serve")?;
        self.child = Some(child);
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "hub exited with {status} while starting; log:\n{}",
                    self.log_text()
                );
            }
            if let Ok(cfg) = ClientConfig::load(&self.client_config_path())
                && let Ok(client) = HubClient::new(&cfg)
                && let Ok(resp) = client.request(reqwest::Method::GET, "/readyz").send().await
                && resp.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("hub not ready within 60 s; log:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The hub's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Where it wrote its client config.
    pub fn client_config_path(&self) -> PathBuf {
        self.data_dir.join("client.yaml")
    }

    /// An admin client from its client config.
    pub fn client(&self) -> anyhow::Result<HubClient> {
        Ok(HubClient::new(&ClientConfig::load(
            &self.client_config_path(),
        )?)?)
    }

    /// Joins `cluster` as an operator would: an auto-accept bootstrap token carrying
    /// `labels` (`k=v`; an auto-accepted cluster gets its token's labels, never labels of
    /// its own choosing), then `klusterlet join --wait` (the `klusterlet` binary given) with
    /// this hub's CA pinned by hash, the managed cluster's `kubeconfig` and `data_dir` for
    /// the agent's key. Fails with the join's stderr.
    pub async fn join_klusterlet(
        &self,
        klusterlet: &Path,
        cluster: &str,
        kubeconfig: &Path,
        data_dir: &Path,
        labels: &[&str],
    ) -> anyhow::Result<()> {
        let cfg = ClientConfig::load(&self.client_config_path())?;
        let ca = cfg
            .ca_data
            .as_deref()
            .context("the hub's client.yaml has no CA")?;
        let ca_hash = klusterlet::hub::identity::ca_hash(ca).map_err(anyhow::Error::msg)?;
        let token = self
            .client()?
            .create_token(&api::TokenRequest {
                auto_accept: true,
                labels: labels
                    .iter()
                    .filter_map(|l| l.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            })
            .await?
            .token
            .context("no token secret in the answer")?;
        let url = format!("https://127.0.0.1:{}", self.port);
        let mut cmd = tokio::process::Command::new(klusterlet);
        cmd.args([
            "join",
            "--hub",
            &url,
            "--token",
            &token,
            "--ca-hash",
            &ca_hash,
        ])
        .args(["--cluster-name", cluster, "--kubeconfig"])
        .arg(kubeconfig)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--wait", "--timeout", "60s"])
        .stdin(Stdio::null());
        let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
            .await
            .context("klusterlet join hung")??;
        if !out.status.success() {
            bail!("join failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// The child's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends a signal (`TERM`, `KILL`, `STOP`, `CONT`) to the hub.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self.pid().context("hub not running")?;
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()?
            .success();
        if !ok {
            bail!("kill -{signal} {pid} failed");
        }
        Ok(())
    }

    /// Waits for the process to exit and returns whether it exited successfully.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<bool> {
        let child = self.child.as_mut().context("hub not running")?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status.success());
            }
            if Instant::now() > deadline {
                bail!("hub did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9`, then start again with the same arguments and port.
    pub async fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn().await
    }

    /// `kill -9` and leave it down; [`start_again`](Self::start_again) brings it back.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts a stopped hub again with the same arguments and port, and waits until it is
    /// ready.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("the hub is still running");
        }
        self.spawn().await
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
