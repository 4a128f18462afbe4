//! Postgres high availability for tests: Patroni, etcd and HAProxy as real processes.
//!
//! A [`PatroniCluster`] is one `etcd` (the binary the cluster harness builds, in
//! `$FLEETHUB_K8S_BIN_DIR`), two or three Debian Postgres instances each managed by its own
//! Patroni (from PyPI, in the project's venv `~/.cache/fleethub/venv`, which `tests/run.sh`
//! fills) with `synchronous_mode: true`, and an [`HaProxy`] in front that sends every
//! connection to the leader by Patroni's REST health check (`OPTIONS /primary`), as
//! Patroni's own `haproxy.cfg` does. Clients use [`PatroniCluster::url`] and know nothing of
//! Patroni, as a hub in production would.
//!
//! Patroni's timings are the smallest it accepts (`ttl: 20`, `loop_wait: 2`,
//! `retry_timeout: 5`; it enforces `loop_wait + 2 * retry_timeout <= ttl` and `ttl >= 20`),
//! so a dead leader's lock expires within 20 s; HAProxy's checks are Patroni's documented
//! ones made faster ([`HAPROXY_CHECKS`]), so a new leader gets connections within half a
//! second of its promotion.
//!
//! Postgres refuses to run as root: as root, Patroni (and so Postgres) runs as the `postgres`
//! system user, like [`crate::postgres::TestPostgres`]. That user cannot read a venv under
//! root's home directory, so the rig then copies the venv's `site-packages` into its own
//! directory and runs the system's Python of the venv's version on it.
//!
//! # Faults
//! [`PatroniCluster::kill_postgres`] (`kill -9` of a node's postmaster: Patroni restarts it),
//! [`PatroniCluster::kill_node`] (`kill -9` of the node's Patroni and Postgres: the lock
//! expires and a replica takes over), [`PatroniCluster::restart_node`] (the node rejoins as a
//! replica) and [`PatroniCluster::switchover`] (`patronictl switchover --force`).
//!
//! # Stopping
//! Dropping the cluster stops HAProxy, every Patroni (SIGTERM: each stops its Postgres),
//! whatever Postgres is left, then etcd, and removes the directory. A watchdog (a small `sh`
//! reading a pipe from the test process, as in [`crate::cluster`]) does the same when the
//! test process dies without dropping it.

use std::fs::{self, File};
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::postgres::{RunAs, temp_dir_for, world_searchable};

/// Overrides the venv holding Patroni (default `~/.cache/fleethub/venv`).
pub const VENV_ENV: &str = "FLEETHUB_VENV";

/// HAProxy's health-check timing in front of Patroni. Patroni's documented example is
/// `inter 3s fall 3 rise 2`: a new leader then waits up to `rise 2 × inter 3s` = 6 s for
/// its first connection after Patroni promoted it, which alone breaks the goal of writes
/// back within Patroni's failover time + 2 s. `/primary` answers 200 on one node only and
/// only while it holds the leader lock, so one good answer is enough to mark it up
/// (`rise 1`); down servers (the replicas, a new leader-to-be) are checked every 500 ms
/// (`downinter`), and a leader whose check fails is checked again 500 ms later
/// (`fastinter`) and marked down, its sessions cut, at the second failure (`fall 2`). The
/// cost: up to two checks a second per node on Patroni's REST API, which answers them from
/// memory.
pub const HAPROXY_CHECKS: &str =
    "inter 1s fastinter 500ms downinter 500ms fall 2 rise 1 on-marked-down shutdown-sessions";

/// How long the cluster may take to elect a leader with a synchronous standby.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The watchdog. `$1`: the directory. Reads `pid N` lines; on end-of-file (the test process
/// is gone) it stops those processes (newest first, etcd, registered first, last), then any
/// postmaster left in the directory, and removes the directory; `done` makes it leave.
const WATCHDOG: &str = r#"
trap '' INT TERM HUP
dir=$1
pids=
while read -r word pid; do
  case "$word" in
    pid) pids="$pid $pids" ;;
    done) exit 0 ;;
  esac
done
running() { [ -e "/proc/$1" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
for p in $pids; do
  kill -TERM "$p" 2>/dev/null
  i=0
  while running "$p" && [ "$i" -lt 100 ]; do i=$((i + 1)); sleep 0.1; done
  kill -KILL "$p" 2>/dev/null
done
for f in "$dir"/*/data/postmaster.pid; do
  [ -f "$f" ] && kill -KILL "$(head -n 1 "$f")" 2>/dev/null
done
sleep 0.5
rm -rf "$dir"
"#;

/// A free port on 127.0.0.1 (free when asked).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Sends `signal` (`TERM`, `KILL`) to `pid` with the shell's `kill` builtin (minimal images
/// lack /bin/kill; libc's would need unsafe code).
fn signal(pid: u32, signal: &str) {
    let _ = Command::new("sh")
        .args(["-c", r#"kill -"$1" "$2""#, "kill", signal, &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Whether `pid` runs (a zombie counts as gone).
fn running(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        !s.lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'))
    })
}

/// The children of `pid`, from /proc.
fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|stat| {
                // Field 4, after the parenthesised command name (which may hold spaces).
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}

/// The venv holding Patroni: `$FLEETHUB_VENV`, else `~/.cache/fleethub/venv`.
pub fn venv() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(VENV_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .context("neither XDG_CACHE_HOME nor HOME is set")?;
    Ok(cache.join("fleethub/venv"))
}

/// A process started by a rig: its child handle and log.
#[derive(Debug)]
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn stop(&mut self, grace: Duration) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_)) | Err(_)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HAProxy in TCP mode on a free loopback port, stopped on drop.
#[derive(Debug)]
pub struct HaProxy {
    port: u16,
    daemon: Daemon,
    _dir: Option<tempfile::TempDir>,
}

impl HaProxy {
    /// Starts `haproxy` with a config whose single `listen` section is `listen` (its
    /// `bind` line is added), in `dir` (a temporary directory of its own when `None`).
    /// Waits until the port accepts connections.
    pub fn start(listen: &str, dir: Option<&Path>) -> anyhow::Result<HaProxy> {
        Self::start_bind("", listen, dir)
    }

    /// Like [`start`](Self::start), with options after the `bind` line's address (`ssl
    /// crt FILE alpn h2` to terminate TLS).
    pub fn start_bind(
        bind_options: &str,
        listen: &str,
        dir: Option<&Path>,
    ) -> anyhow::Result<HaProxy> {
        let own = match dir {
            Some(_) => None,
            None => Some(
                tempfile::Builder::new()
                    .prefix("fleethub-haproxy-")
                    .tempdir()?,
            ),
        };
        let dir = dir
            .map(Path::to_path_buf)
            .or_else(|| own.as_ref().map(|d| d.path().to_path_buf()))
            .context("no directory")?;
        let port = free_port()?;
        let config = dir.join("haproxy.cfg");
        fs::write(
            &config,
            format!(
                "global\n    maxconn 4000\n    log stderr format iso local0 info\n\
                 defaults\n    mode tcp\n    log global\n    option log-health-checks\n    \
                 retries 2\n    option redispatch\n    \
                 timeout client 30m\n    timeout connect 4s\n    timeout server 30m\n    \
                 timeout check 5s\n\
                 listen balancer\n    bind 127.0.0.1:{port} {bind_options}\n{listen}"
            ),
        )?;
        let check = Command::new("haproxy")
            .args(["-c", "-q", "-f"])
            .arg(&config)
            .output()
            .context("running haproxy -c (install Debian's haproxy: tests/run.sh does)")?;
        if !check.status.success() {
            bail!(
                "haproxy rejects {}: {}",
                config.display(),
                String::from_utf8_lossy(&check.stderr)
            );
        }
        let log = dir.join("haproxy.log");
        let out = File::create(&log)?;
        let child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .context("starting haproxy")?;
        let mut daemon = Daemon { child, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                bail!(
                    "haproxy exited ({status}): {}",
                    fs::read_to_string(&daemon.log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                daemon.stop(Duration::from_secs(1));
                bail!("haproxy did not listen on {port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(HaProxy {
            port,
            daemon,
            _dir: own,
        })
    }

    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.daemon.child.id()
    }

    /// Its log file: connections and health-check changes, with timestamps.
    pub fn log_path(&self) -> &Path {
        &self.daemon.log
    }

    /// What it logged (servers going up and down).
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.daemon.log).unwrap_or_default()
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        self.daemon.stop(Duration::from_secs(2));
    }
}

/// One Patroni-managed Postgres.
#[derive(Debug)]
struct Node {
    name: String,
    dir: PathBuf,
    pg_port: u16,
    api_port: u16,
    patroni: Option<Daemon>,
}

/// Etcd, two or three Patroni-managed Postgres and HAProxy in front; see the module docs.
pub struct PatroniCluster {
    haproxy: Option<HaProxy>,
    nodes: Vec<Node>,
    etcd: Option<Daemon>,
    run_as: RunAs,
    python: PathBuf,
    python_path: Option<PathBuf>,
    venv: PathBuf,
    etcd_port: u16,
    watchdog: Option<(Child, ChildStdin)>,
    http: reqwest::Client,
    // Declared last: removed once everything has stopped.
    dir: tempfile::TempDir,
}

impl PatroniCluster {
    /// Starts etcd, `nodes` (2 or 3) Patroni nodes and HAProxy, and waits until a leader
    /// with a synchronous standby serves through HAProxy (typically 15 to 30 s).
    pub async fn start(nodes: usize) -> anyhow::Result<PatroniCluster> {
        if !(2..=3).contains(&nodes) {
            bail!("a Patroni cluster here has 2 or 3 nodes, not {nodes}");
        }
        let venv = venv()?;
        if !venv.join("bin/patroni").is_file() {
            bail!(
                "no Patroni in {} (tests/run.sh installs it: pip install 'patroni[etcd3]' \
                 psycopg2-binary)",
                venv.display()
            );
        }
        let run_as = RunAs::detect()?;
        let dir = temp_dir_for(&run_as)?;
        let (python, python_path) = python_for(&run_as, &venv, dir.path())?;
        let watchdog = {
            let mut child = Command::new("sh")
                .arg("-c")
                .arg(WATCHDOG)
                .arg("fleethub-patroni-watchdog")
                .arg(dir.path())
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .context("starting the watchdog")?;
            let stdin = child.stdin.take().context("watchdog stdin")?;
            (child, stdin)
        };
        let mut cluster = PatroniCluster {
            haproxy: None,
            nodes: Vec::new(),
            etcd: None,
            run_as,
            python,
            python_path,
            venv,
            etcd_port: 0,
            watchdog: Some(watchdog),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()?,
            dir,
        };
        cluster.start_etcd().await?;
        for i in 0..nodes {
            cluster.add_node(i)?;
        }
        // HAProxy, as Patroni's docs configure it (only the node answering 200 to
        // `OPTIONS /primary` gets connections, and its sessions are cut when it stops),
        // with the checks tuned as [`HAPROXY_CHECKS`] says.
        let servers: String = cluster
            .nodes
            .iter()
            .map(|n| {
                format!(
                    "    server {} 127.0.0.1:{} maxconn 300 check port {}\n",
                    n.name, n.pg_port, n.api_port
                )
            })
            .collect();
        let listen = format!(
            "    option httpchk OPTIONS /primary\n    http-check expect status 200\n    \
             default-server {HAPROXY_CHECKS}\n{servers}"
        );
        let haproxy_dir = cluster.dir.path().join("haproxy");
        fs::create_dir_all(&haproxy_dir)?;
        let haproxy = HaProxy::start(&listen, Some(&haproxy_dir))?;
        cluster.register(haproxy.pid())?;
        cluster.haproxy = Some(haproxy);
        cluster.wait_started(START_TIMEOUT).await?;
        Ok(cluster)
    }

    /// Waits until the new cluster is healthy ([`PatroniCluster::wait_healthy`]), starting
    /// again, as a supervisor would, a node whose Patroni exited meanwhile. A node whose
    /// bootstrap fails (its `post_bootstrap` did not finish on a machine busy compiling:
    /// seen in CI, `PatroniFatalException: Failed to bootstrap cluster`) removes its data
    /// and exits, as Patroni does; started again, it joins the other node's cluster as a
    /// replica. Otherwise the cluster never got its synchronous standby.
    async fn wait_started(&mut self, timeout: Duration) -> anyhow::Result<()> {
        const MAX_RESTARTS: usize = 3;
        let deadline = Instant::now() + timeout;
        let mut restarts = 0;
        loop {
            for i in 0..self.nodes.len() {
                let exited = (self.nodes[i].patroni.as_mut())
                    .is_some_and(|d| matches!(d.child.try_wait(), Ok(Some(_))));
                if exited && restarts < MAX_RESTARTS {
                    eprintln!(
                        "patroni: node{i} exited while the cluster started (see its log); starting it again"
                    );
                    self.nodes[i].patroni = None;
                    self.spawn_patroni(i)?;
                    restarts += 1;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let healthy = self.wait_healthy(left.min(Duration::from_secs(5))).await;
            if healthy.is_ok() || left.is_zero() {
                return healthy;
            }
        }
    }

    fn register(&mut self, pid: u32) -> anyhow::Result<()> {
        let (_, stdin) = self.watchdog.as_mut().context("the watchdog is gone")?;
        writeln!(stdin, "pid {pid}").context("registering a process with the watchdog")
    }

    async fn start_etcd(&mut self) -> anyhow::Result<()> {
        let etcd = crate::cluster::bin_dir()?.join("etcd");
        let (client, peer) = (free_port()?, free_port()?);
        let data = self.dir.path().join("etcd");
        let log = self.dir.path().join("etcd.log");
        let out = File::create(&log)?;
        let child = Command::new(&etcd)
            .args([
                "--name=patroni".to_string(),
                format!("--data-dir={}", data.display()),
                format!("--listen-client-urls=http://127.0.0.1:{client}"),
                format!("--advertise-client-urls=http://127.0.0.1:{client}"),
                format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
                format!("--initial-cluster=patroni=http://127.0.0.1:{peer}"),
                "--log-level=warn".to_string(),
                "--unsafe-no-fsync".to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", etcd.display()))?;
        self.register(child.id())?;
        let mut daemon = Daemon { child, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(("127.0.0.1", client))
            .await
            .is_err()
        {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                bail!(
                    "etcd exited ({status}): {}",
                    fs::read_to_string(&daemon.log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                daemon.stop(Duration::from_secs(1));
                bail!("etcd did not listen within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.etcd = Some(daemon);
        self.etcd_port = client;
        Ok(())
    }

    /// Writes node `i`'s config and starts its Patroni.
    fn add_node(&mut self, i: usize) -> anyhow::Result<()> {
        let name = format!("node{i}");
        let dir = self.dir.path().join(&name);
        fs::create_dir_all(&dir)?;
        if let RunAs::Postgres { uid, gid } = self.run_as {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
        }
        let (pg_port, api_port) = (free_port()?, free_port()?);
        let bin_dir = crate::postgres::bin_dir()?;
        let d = dir.display();
        let config = format!(
            r#"scope: fleethub
namespace: /fleethub/
name: {name}
restapi:
  listen: 127.0.0.1:{api_port}
  connect_address: 127.0.0.1:{api_port}
etcd3:
  hosts: 127.0.0.1:{etcd}
bootstrap:
  dcs:
    ttl: 20
    loop_wait: 2
    retry_timeout: 5
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    postgresql:
      use_pg_rewind: true
      parameters:
        max_connections: 300
        wal_log_hints: "on"
  initdb:
    - encoding: UTF8
    - locale: C
    - auth: trust
postgresql:
  listen: 127.0.0.1:{pg_port}
  connect_address: 127.0.0.1:{pg_port}
  data_dir: {d}/data
  bin_dir: {bin}
  pgpass: {d}/pgpass
  authentication:
    superuser: {{username: postgres, password: postgres}}
    replication: {{username: replicator, password: replicator}}
    rewind: {{username: postgres, password: postgres}}
  pg_hba:
    - local all all trust
    - host replication replicator 127.0.0.1/32 trust
    - host all all 127.0.0.1/32 trust
  parameters:
    unix_socket_directories: {d}
"#,
            etcd = self.etcd_port,
            bin = bin_dir.display(),
        );
        fs::write(dir.join("patroni.yml"), config)?;
        self.nodes.push(Node {
            name,
            dir,
            pg_port,
            api_port,
            patroni: None,
        });
        self.spawn_patroni(i)
    }

    fn spawn_patroni(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &self.nodes[i];
        let log = node.dir.join("patroni.log");
        let out = File::options().create(true).append(true).open(&log)?;
        let mut command = Command::new(&self.python);
        command
            .args(["-s", "-m", "patroni"])
            .arg(node.dir.join("patroni.yml"))
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &node.dir)
            .env("LC_ALL", "C.UTF-8")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .current_dir(&node.dir)
            .process_group(0);
        if let Some(path) = &self.python_path {
            command.env("PYTHONPATH", path);
        }
        self.run_as.apply(&mut command);
        let child = command.spawn().context("starting patroni")?;
        let pid = child.id();
        self.nodes[i].patroni = Some(Daemon { child, log });
        self.register(pid)
    }

    /// The URL of the `postgres` database through HAProxy (always the leader).
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.haproxy.as_ref().map_or(0, HaProxy::port)
        )
    }

    /// The URL of another database through HAProxy.
    pub fn database_url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{database}",
            self.haproxy.as_ref().map_or(0, HaProxy::port)
        )
    }

    /// The index of the node whose Patroni says it is the primary, if any.
    pub async fn leader(&self) -> Option<usize> {
        for (i, n) in self.nodes.iter().enumerate() {
            let url = format!("http://127.0.0.1:{}/primary", n.api_port);
            if let Ok(r) = self.http.get(&url).send().await
                && r.status().is_success()
            {
                return Some(i);
            }
        }
        None
    }

    /// Waits until one node is primary with a synchronous standby and a write through
    /// HAProxy commits.
    pub async fn wait_healthy(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut sync = false;
            if self.leader().await.is_some() {
                for n in &self.nodes {
                    let url = format!("http://127.0.0.1:{}/sync", n.api_port);
                    if let Ok(r) = self.http.get(&url).send().await
                        && r.status().is_success()
                    {
                        sync = true;
                    }
                }
            }
            if sync && self.write_through_haproxy().await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "no primary with a synchronous standby within {timeout:?}:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn write_through_haproxy(&self) -> anyhow::Result<()> {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.url()).await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS rig_probe (at timestamptz)")
            .execute(&mut conn)
            .await?;
        sqlx::query("INSERT INTO rig_probe VALUES (now())")
            .execute(&mut conn)
            .await?;
        conn.close().await.ok();
        Ok(())
    }

    fn postmaster_pid(&self, i: usize) -> Option<u32> {
        fs::read_to_string(self.nodes[i].dir.join("data/postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// `kill -9` of node `i`'s postmaster (its backends exit on their own when they see it
    /// gone, as after a crash; Patroni then restarts or fails over).
    pub fn kill_postgres(&self, i: usize) -> anyhow::Result<()> {
        let pid = self
            .postmaster_pid(i)
            .with_context(|| format!("node{i} has no postmaster.pid"))?;
        signal(pid, "KILL");
        Ok(())
    }

    /// `kill -9` of node `i`'s Patroni, its postmaster and every Postgres process of it, as
    /// when the machine dies (its leader lock then expires after the TTL).
    pub fn kill_node(&mut self, i: usize) -> anyhow::Result<()> {
        let postmaster = self.postmaster_pid(i);
        let mut patroni = self.nodes[i]
            .patroni
            .take()
            .with_context(|| format!("node{i} is not running"))?;
        let _ = patroni.child.kill();
        if let Some(pm) = postmaster {
            let backends = children(pm);
            signal(pm, "KILL");
            for b in backends {
                signal(b, "KILL");
            }
        }
        let _ = patroni.child.wait();
        Ok(())
    }

    /// Starts a killed node's Patroni again: it rejoins as a replica (rewinding if needed).
    pub fn restart_node(&mut self, i: usize) -> anyhow::Result<()> {
        if self.nodes[i].patroni.is_some() {
            bail!("node{i} still runs");
        }
        self.spawn_patroni(i)
    }

    /// `patronictl switchover --force`: the leader hands over to a synchronous standby.
    pub async fn switchover(&self) -> anyhow::Result<String> {
        self.patronictl(&["switchover", "--force"]).await
    }

    /// `patronictl list`, for logs.
    pub async fn members(&self) -> String {
        self.patronictl(&["list"])
            .await
            .unwrap_or_else(|e| format!("{e:#}"))
    }

    async fn patronictl(&self, args: &[&str]) -> anyhow::Result<String> {
        let config = self.dir.path().join("patronictl.yml");
        fs::write(
            &config,
            format!(
                "scope: fleethub\nnamespace: /fleethub/\netcd3:\n  hosts: 127.0.0.1:{}\n",
                self.etcd_port
            ),
        )?;
        let out = tokio::process::Command::new(self.venv.join("bin/patronictl"))
            .arg("-c")
            .arg(&config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .context("running patronictl")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            bail!(
                "patronictl {} failed ({}): {text}",
                args.join(" "),
                out.status
            );
        }
        Ok(text)
    }

    /// Every log file of the rig, each with a file name to keep it under (for
    /// [`crate::ha::KeptLogs`]): each node's Patroni (with its Postgres' output), the
    /// HAProxy in front and etcd.
    pub fn log_files(&self) -> Vec<(String, PathBuf)> {
        let mut files: Vec<(String, PathBuf)> = self
            .nodes
            .iter()
            .map(|n| (format!("patroni-{}.log", n.name), n.dir.join("patroni.log")))
            .collect();
        if let Some(h) = &self.haproxy {
            files.push(("haproxy-postgres.log".into(), h.daemon.log.clone()));
        }
        if let Some(etcd) = &self.etcd {
            files.push(("etcd.log".into(), etcd.log.clone()));
        }
        files
    }

    /// The last lines of every node's Patroni log and of HAProxy's, for failure messages.
    pub fn logs(&self) -> String {
        // The last 30 lines, and the 30 before a node's first traceback: a Patroni that
        // failed prints its traceback last, and what failed is logged before it.
        let tail = |p: &Path| {
            let text = fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let last = lines.len().saturating_sub(30);
            match lines.iter().position(|l| l.starts_with("Traceback")) {
                Some(t) if t < last => format!(
                    "{}\n[...]\n{}",
                    lines[t.saturating_sub(30)..t].join("\n"),
                    lines[last..].join("\n")
                ),
                _ => lines[last..].join("\n"),
            }
        };
        let mut out = String::new();
        for n in &self.nodes {
            out += &format!("--- {} ---\n{}\n", n.name, tail(&n.dir.join("patroni.log")));
        }
        if let Some(h) = &self.haproxy {
            out += &format!("--- haproxy ---\n{}\n", tail(&h.daemon.log));
        }
        out
    }
}

impl Drop for PatroniCluster {
    fn drop(&mut self) {
        self.haproxy.take();
        for node in &mut self.nodes {
            if let Some(mut p) = node.patroni.take() {
                // Patroni stops its Postgres on SIGTERM.
                p.stop(Duration::from_secs(15));
            }
        }
        for i in 0..self.nodes.len() {
            // A postmaster left behind (its Patroni was killed, or hung).
            if let Some(pm) = self.postmaster_pid(i)
                && running(pm)
            {
                signal(pm, "KILL");
            }
        }
        if let Some(mut etcd) = self.etcd.take() {
            etcd.stop(Duration::from_secs(5));
        }
        if let Some((mut watchdog, mut stdin)) = self.watchdog.take() {
            let _ = stdin.write_all(b"done\n");
            drop(stdin);
            let _ = watchdog.wait();
        }
    }
}

/// The Python that runs Patroni and the `PYTHONPATH` it needs. As the current user: the
/// venv's own. As the `postgres` user (when we are root), whose cannot read a venv under a
/// home directory closed to others: the system's Python of the venv's version on a copy of
/// the venv's `site-packages` in `dir`.
fn python_for(
    run_as: &RunAs,
    venv: &Path,
    dir: &Path,
) -> anyhow::Result<(PathBuf, Option<PathBuf>)> {
    let own = venv.join("bin/python");
    if matches!(run_as, RunAs::CurrentUser) || world_searchable(&venv.join("lib")) {
        let real = fs::canonicalize(&own)?;
        if matches!(run_as, RunAs::CurrentUser) || world_searchable(&real) {
            return Ok((own, None));
        }
    }
    let cfg = fs::read_to_string(venv.join("pyvenv.cfg"))
        .with_context(|| format!("reading {}/pyvenv.cfg", venv.display()))?;
    let version = cfg
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "version" || k.trim() == "version_info").then(|| v.trim().to_string())
        })
        .context("no version in pyvenv.cfg")?;
    let minor: Vec<&str> = version.split('.').take(2).collect();
    let python = PathBuf::from(format!("/usr/bin/python{}", minor.join(".")));
    if !python.is_file() {
        bail!(
            "the venv is Python {version}, but {} (for the postgres user) is missing",
            python.display()
        );
    }
    let site = venv
        .join("lib")
        .join(format!("python{}", minor.join(".")))
        .join("site-packages");
    let copy = dir.join("site-packages");
    let status = Command::new("cp")
        .arg("-r")
        .arg(&site)
        .arg(&copy)
        .status()
        .context("running cp")?;
    if !status.success() {
        bail!("copying {} failed", site.display());
    }
    Ok((python, Some(copy)))
}
