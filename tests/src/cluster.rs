//! Real Kubernetes clusters for tests, benchmarks and demos.
//!
//! A [`TestCluster`] is a real `etcd` and `kube-apiserver` (and, with
//! [`ClusterOptions::full`], a real `kube-controller-manager`, `kube-scheduler` and a
//! [KWOK](https://kwok.sigs.k8s.io/) controller that plays the kubelet of one fake node), run
//! as child processes of the test. The binaries are built from their Go modules by
//! `tests/cluster/build.sh` into `~/.cache/fleethub/k8s/<version>/` the first time they are
//! needed (about eight minutes on two cores, instant afterwards); `FLEETHUB_K8S_BIN_DIR`
//! points at another directory holding the same five binaries.
//!
//! Each cluster gets a temporary directory holding its own CA, the apiserver's serving
//! certificate, a service-account signing key, an admin client certificate (group
//! `system:masters`) with its kubeconfig, etcd's data and one log file per process. Every
//! process listens on 127.0.0.1 only, on ports picked free at start, so any number of
//! clusters can run at once. Authorization is real RBAC (plus the Node authorizer in full
//! mode) and the admission plugins are the apiserver's defaults; what is trimmed is what
//! a test cannot notice: priority and fairness (plain max-in-flight limits instead),
//! leader election, profiling, the controllers' HTTPS endpoints, etcd's fsync (unless
//! [`ClusterOptions::etcd_fsync`]) and the `kubernetes` Service's endpoints, which
//! could not point at a loopback address anyway.
//!
//! # Stopping
//! Dropping a [`TestCluster`] (also while unwinding from a panic) sends SIGTERM to every
//! process it started, by pid (etcd last, once its clients are gone), SIGKILL to those
//! still running after [`STOP_GRACE`], reaps them and removes the directory; that takes
//! about a second. As in [`crate::postgres`], a watchdog (a small `sh` reading a pipe from
//! the test process) does the same when the test process dies without dropping the
//! cluster: on SIGKILL, or for the clusters of [`TestCluster::shared`], which live in
//! statics.

use std::fmt;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use serde_json::json;
use tokio::sync::OnceCell;

/// Overrides where the cluster binaries are looked up (instead of running
/// `tests/cluster/build.sh`).
pub const BIN_DIR_ENV: &str = "FLEETHUB_K8S_BIN_DIR";

/// The binaries a cluster runs, all expected in [`bin_dir`].
pub const BINARIES: [&str; 5] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
];

/// The fake node of a full cluster.
pub const NODE_NAME: &str = "kwok-node-0";

/// The annotation KWOK selects the nodes it plays by (the one kwokctl uses).
const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";

/// How long each step of the start-up may take (etcd, the apiserver, the node). Generous:
/// CI runs several clusters at once on two cores.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// How long the processes get to exit after SIGTERM before they are killed.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Attempts to start etcd or the apiserver on fresh ports when another process took the
/// chosen ones between our check and their bind.
const PORT_ATTEMPTS: usize = 5;

/// The range Service IPs come from; its first address is the `kubernetes` Service's.
const SERVICE_CIDR: &str = "10.96.0.0/16";
const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";

/// The watchdog described in the module docs. `$1`: the directory to remove. It reads
/// `pid N` lines (processes to stop), `done` (leave quietly) or end-of-file (the test
/// process is gone: stop the processes, remove the directory). It ignores the terminal's
/// signals so that a Ctrl-C cannot kill it before it has cleaned up. Once the test process
/// is gone its children are orphans, which some init processes reap late: a zombie counts
/// as stopped.
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
stop() {
  for p in "$@"; do kill -TERM "$p" 2>/dev/null; done
  i=0
  while :; do
    alive=
    for p in "$@"; do if running "$p"; then alive="$alive $p"; fi; done
    [ -z "$alive" ] && return
    i=$((i + 1))
    if [ "$i" -ge 50 ]; then
      for p in $alive; do kill -KILL "$p" 2>/dev/null; done
      sleep 0.2
      return
    fi
    sleep 0.1
  done
}
# Newest first; etcd, registered first, is last and stops after its clients.
etcd=
others=
for p in $pids; do
  [ -n "$etcd" ] && others="$others $etcd"
  etcd=$p
done
[ -n "$others" ] && stop $others
[ -n "$etcd" ] && stop "$etcd"
rm -rf "$dir"
"#;

/// Which processes a [`TestCluster`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterMode {
    /// etcd and kube-apiserver: the whole API (CRDs, RBAC, server-side apply, watches),
    /// but nothing acts on what is stored. Starts in about three seconds.
    ApiserverOnly,
    /// Also kube-controller-manager, kube-scheduler and one KWOK node ([`NODE_NAME`]):
    /// Deployments get ReplicaSets and Pods, Pods get scheduled and marked Running, so
    /// workloads become Available; namespaces are finalized, garbage is collected.
    Full,
}

/// How to start a [`TestCluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    mode: ClusterMode,
    etcd_fsync: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self::apiserver_only()
    }
}

impl ClusterOptions {
    /// etcd and kube-apiserver only ([`ClusterMode::ApiserverOnly`]).
    pub fn apiserver_only() -> Self {
        Self {
            mode: ClusterMode::ApiserverOnly,
            etcd_fsync: false,
        }
    }

    /// With controller-manager, scheduler and a KWOK node ([`ClusterMode::Full`]).
    pub fn full() -> Self {
        Self {
            mode: ClusterMode::Full,
            ..Self::apiserver_only()
        }
    }

    /// Whether etcd syncs its writes to disk (default: off; the cluster's data is thrown
    /// away, and fsync makes every API write wait for the disk).
    pub fn etcd_fsync(mut self, on: bool) -> Self {
        self.etcd_fsync = on;
        self
    }

    /// The processes this cluster runs.
    pub fn mode(&self) -> ClusterMode {
        self.mode
    }
}

/// The cluster's certificate authority: it signs the apiserver's serving certificate and
/// every client certificate, and the apiserver trusts client certificates it signed.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_path: PathBuf,
    key_path: PathBuf,
}

/// A process the cluster started.
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Whether it has exited (and been reaped); the exit status as text if so.
    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(err) => Some(format!("unknown status ({err})")),
        }
    }
}

/// A running Kubernetes cluster of its own, stopped and deleted on drop. See the module
/// docs.
pub struct TestCluster {
    options: ClusterOptions,
    bin_dir: PathBuf,
    server_url: String,
    kubeconfig: PathBuf,
    config: kube::Config,
    ca: Ca,
    processes: Vec<Process>,
    watchdog: Option<(Child, ChildStdin)>,
    users: AtomicUsize,
    startup: Duration,
    // Declared last: removed after the processes have stopped.
    dir: tempfile::TempDir,
}

impl fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCluster")
            .field("mode", &self.options.mode)
            .field("server_url", &self.server_url)
            .field("kubeconfig", &self.kubeconfig)
            .field("processes", &self.pids())
            .finish_non_exhaustive()
    }
}

impl TestCluster {
    /// Starts a new cluster and waits until it is usable: the apiserver's `/readyz` answers
    /// `ok`, and in full mode the node is Ready and schedulable. Builds the binaries first
    /// if they are missing (see [`bin_dir`]).
    pub async fn start(options: ClusterOptions) -> anyhow::Result<TestCluster> {
        let started = Instant::now();
        install_crypto_provider();
        let bin_dir = tokio::task::spawn_blocking(bin_dir)
            .await
            .context("locating the cluster binaries")??;
        let dir = tempfile::Builder::new()
            .prefix("fleethub-k8s-")
            .tempdir()
            .context("creating the cluster's temporary directory")?;
        let watchdog = spawn_watchdog(dir.path())?;
        fs::create_dir_all(dir.path().join("logs"))?;
        fs::create_dir_all(dir.path().join("users"))?;
        let ca = generate_pki(dir.path())?;
        let kubeconfig = dir.path().join("admin.kubeconfig");

        // Placeholders until the apiserver has its port; nothing reads them before that.
        let mut cluster = TestCluster {
            options,
            bin_dir,
            server_url: String::new(),
            kubeconfig,
            config: kube::Config::new("https://127.0.0.1".parse()?),
            ca,
            processes: Vec::new(),
            watchdog: Some(watchdog),
            users: AtomicUsize::new(0),
            startup: Duration::ZERO,
            dir,
        };
        // On any error below, dropping `cluster` stops what was started.
        let etcd_url = cluster.start_etcd().await?;
        cluster.start_apiserver(&etcd_url).await?;
        if cluster.options.mode == ClusterMode::Full {
            cluster.start_node_components().await?;
        }
        cluster.startup = started.elapsed();
        Ok(cluster)
    }

    /// The cluster of this mode shared by every test of this test binary, started on first
    /// use with that mode's default options. Give each test its own namespace with
    /// [`TestCluster::fresh_namespace`].
    ///
    /// It is never dropped: its watchdog stops it and removes its directory when the test
    /// process exits.
    pub async fn shared(mode: ClusterMode) -> anyhow::Result<&'static TestCluster> {
        static APISERVER_ONLY: OnceCell<TestCluster> = OnceCell::const_new();
        static FULL: OnceCell<TestCluster> = OnceCell::const_new();
        let (cell, options) = match mode {
            ClusterMode::ApiserverOnly => (&APISERVER_ONLY, ClusterOptions::apiserver_only()),
            ClusterMode::Full => (&FULL, ClusterOptions::full()),
        };
        cell.get_or_try_init(|| TestCluster::start(options))
            .await
            .with_context(|| format!("starting the shared {mode:?} cluster"))
    }

    /// Creates a namespace with a unique name (`test-<hex>`) and returns the name, so that
    /// tests sharing a cluster do not see each other's objects.
    pub async fn fresh_namespace(&self) -> anyhow::Result<String> {
        let name = format!("test-{}", uuid::Uuid::new_v4().simple());
        let namespace: Namespace = serde_json::from_value(json!({ "metadata": { "name": name } }))?;
        Api::<Namespace>::all(self.client())
            .create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        Ok(name)
    }

    /// The apiserver's URL, `https://127.0.0.1:PORT`.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// The admin kubeconfig (user `fleethub-admin`, group `system:masters`), usable with
    /// `kubectl --kubeconfig` while the cluster runs.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// A client with the admin's rights. Each call builds a new client, so a client never
    /// outlives the tokio runtime it was made in.
    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.config.clone())
            .expect("the admin client config was already used to wait for readiness")
    }

    /// The admin client's configuration.
    pub fn config(&self) -> &kube::Config {
        &self.config
    }

    /// Issues a client certificate for `user` in `groups` (at most two: the certificate
    /// library keeps one value per subject attribute type) and writes a kubeconfig for it.
    /// The identity has exactly the rights RBAC grants it, so with no bindings it gets
    /// 403 Forbidden for everything but discovery and `/healthz`-like paths.
    pub fn write_user_kubeconfig(&self, user: &str, groups: &[&str]) -> anyhow::Result<PathBuf> {
        let n = self.users.fetch_add(1, Ordering::Relaxed);
        let base = self.dir.path().join("users").join(format!("user-{n}"));
        let (cert, key) = issue_client_cert(&self.ca, user, groups)?;
        let cert_path = base.with_extension("crt");
        let key_path = base.with_extension("key");
        write_private(&cert_path, &cert)?;
        write_private(&key_path, &key)?;
        let kubeconfig = base.with_extension("kubeconfig");
        write_kubeconfig(
            &kubeconfig,
            &self.server_url,
            &self.ca.cert_path,
            user,
            &cert_path,
            &key_path,
        )?;
        Ok(kubeconfig)
    }

    /// A client for `user` in `groups`, through [`TestCluster::write_user_kubeconfig`].
    pub async fn user_client(&self, user: &str, groups: &[&str]) -> anyhow::Result<kube::Client> {
        let path = self.write_user_kubeconfig(user, groups)?;
        Ok(kube::Client::try_from(load_config(&path).await?)?)
    }

    /// The processes this cluster started: name and pid, in start order.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        self.processes
            .iter()
            .map(|p| (p.name, p.child.id()))
            .collect()
    }

    /// The resident memory of the cluster's processes, summed, in KiB (`VmRSS` from
    /// `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let mut total = 0;
        for (name, pid) in self.pids() {
            total += rss_kib(pid).with_context(|| format!("reading {name}'s memory"))?;
        }
        Ok(total)
    }

    /// How long [`TestCluster::start`] took, binaries lookup included.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The processes this cluster runs.
    pub fn mode(&self) -> ClusterMode {
        self.options.mode
    }

    /// The temporary directory (certificates, kubeconfigs, etcd data, `logs/`); removed
    /// when the cluster stops.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The log of one process (`etcd`, `kube-apiserver`, `kube-controller-manager`,
    /// `kube-scheduler`, `kwok`) so far; empty if it never ran.
    pub fn log(&self, process: &str) -> String {
        fs::read_to_string(self.log_path(process)).unwrap_or_default()
    }

    /// The directory of the binaries this cluster runs from.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    fn log_path(&self, process: &str) -> PathBuf {
        self.dir.path().join("logs").join(format!("{process}.log"))
    }

    /// Starts `name` from the binaries directory with its output appended to its log,
    /// registers it with the watchdog and returns its index in `processes` and the log's
    /// length before it started.
    fn spawn(
        &mut self,
        name: &'static str,
        args: &[String],
        env: &[(&str, &Path)],
    ) -> anyhow::Result<(usize, u64)> {
        let program = self.bin_dir.join(name);
        let log_path = self.log_path(name);
        // A file, not a pipe: nobody would drain a pipe and a chatty process would block.
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let log_start = log.metadata()?.len();
        let mut command = Command::new(&program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .current_dir(self.dir.path())
            // A process group of its own: a Ctrl-C at the terminal goes to the test, whose
            // drop (or watchdog) then stops the cluster in order, instead of to every
            // process at once.
            .process_group(0);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let pid = child.id();
        self.processes.push(Process {
            name,
            child,
            log: log_path,
        });
        let (_, stdin) = self.watchdog.as_mut().context("the watchdog is gone")?;
        writeln!(stdin, "pid {pid}").context("registering a process with the watchdog")?;
        Ok((self.processes.len() - 1, log_start))
    }

    /// An error saying process `index` stopped or did not get ready, with its log.
    fn failure(&mut self, index: usize, log_start: u64, what: &str) -> anyhow::Error {
        let process = &mut self.processes[index];
        let status = process
            .exited()
            .map(|status| format!(" (it exited: {status})"))
            .unwrap_or_default();
        anyhow::anyhow!(
            "{} {what}{status}; its log ({}):\n{}",
            process.name,
            process.log.display(),
            tail(&read_from(&process.log, log_start), 80)
        )
    }

    /// Stops process `index` (a failed attempt) and forgets it.
    fn discard(&mut self, index: usize) {
        let mut process = self.processes.remove(index);
        terminate(&mut process);
        wait_or_kill(&mut process, Instant::now() + STOP_GRACE);
    }

    /// Starts etcd on free ports and waits until it accepts connections. Returns its
    /// client URL.
    async fn start_etcd(&mut self) -> anyhow::Result<String> {
        let data = self.dir.path().join("etcd");
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let (client_port, peer_port) = (free_port()?, free_port()?);
            let client_url = format!("http://127.0.0.1:{client_port}");
            let peer_url = format!("http://127.0.0.1:{peer_port}");
            let mut args = vec![
                "--name=fleethub".to_string(),
                format!("--data-dir={}", data.display()),
                format!("--listen-client-urls={client_url}"),
                format!("--advertise-client-urls={client_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=fleethub={peer_url}"),
                "--log-level=warn".to_string(),
            ];
            if !self.options.etcd_fsync {
                args.push("--unsafe-no-fsync".to_string());
            }
            let (index, log_start) = self.spawn("etcd", &args, &[])?;
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                if self.processes[index].exited().is_some() {
                    let err = self.failure(index, log_start, "stopped while starting");
                    self.discard(index);
                    if format!("{err}").contains("address already in use") {
                        // A previous attempt may have left its data behind.
                        fs::remove_dir_all(&data).ok();
                        last_error = Some(err);
                        break;
                    }
                    return Err(err);
                }
                if tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, client_port))
                    .await
                    .is_ok()
                {
                    // Ours must still run once the port answered: the answer may come
                    // from another process (a port found free can be taken before this
                    // etcd binds it; it then exits with "address already in use", which
                    // the check above retries on fresh ports), or this etcd may die at
                    // once (a full disk). Seen in CI: two apiservers then found no etcd.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    if self.processes[index].exited().is_none() {
                        return Ok(client_url);
                    }
                    continue;
                }
                if Instant::now() > deadline {
                    return Err(self.failure(
                        index,
                        log_start,
                        &format!("did not accept connections within {START_TIMEOUT:?}"),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Err(last_error
            .unwrap_or_else(|| anyhow::anyhow!("no attempt made"))
            .context(format!(
                "etcd found no free ports in {PORT_ATTEMPTS} attempts"
            )))
    }

    /// Starts kube-apiserver on a free port, writes the admin kubeconfig for it and waits
    /// until `/readyz` says `ok`.
    async fn start_apiserver(&mut self, etcd_url: &str) -> anyhow::Result<()> {
        let pki = self.dir.path().join("pki");
        let path = |file: &str| pki.join(file).display().to_string();
        let authorization = match self.options.mode {
            ClusterMode::ApiserverOnly => "RBAC",
            ClusterMode::Full => "Node,RBAC",
        };
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            self.server_url = format!("https://127.0.0.1:{port}");
            write_kubeconfig(
                &self.kubeconfig,
                &self.server_url,
                &self.ca.cert_path,
                "fleethub-admin",
                &pki.join("admin.crt"),
                &pki.join("admin.key"),
            )?;
            self.config = load_config(&self.kubeconfig).await?;
            let client = kube::Client::try_from(self.config.clone())?;
            let args = vec![
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".to_string(),
                format!("--secure-port={port}"),
                "--advertise-address=127.0.0.1".to_string(),
                format!("--tls-cert-file={}", path("apiserver.crt")),
                format!("--tls-private-key-file={}", path("apiserver.key")),
                format!("--client-ca-file={}", path("ca.crt")),
                format!("--service-account-key-file={}", path("sa.pub")),
                format!("--service-account-signing-key-file={}", path("sa.key")),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_string(),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                format!("--authorization-mode={authorization}"),
                "--allow-privileged=true".to_string(),
                // Plain max-in-flight limits: APF's configuration objects and its
                // controllers cost start-up time and memory, and tests never saturate.
                "--enable-priority-and-fairness=false".to_string(),
                // Endpoints may not be loopback addresses; without this the apiserver
                // keeps failing to publish the `kubernetes` Service's endpoints.
                "--endpoint-reconciler-type=none".to_string(),
                "--profiling=false".to_string(),
                // Only used when no serving certificate is given; keep it out of /var.
                format!("--cert-dir={}", path("generated")),
            ];
            let (index, log_start) = self.spawn("kube-apiserver", &args, &[])?;
            let deadline = Instant::now() + START_TIMEOUT;
            let mut last_answer: String;
            loop {
                if self.processes[index].exited().is_some() {
                    let err = self.failure(index, log_start, "stopped while starting");
                    self.discard(index);
                    if format!("{err}").contains("address already in use") {
                        last_error = Some(err);
                        break;
                    }
                    return Err(err);
                }
                let request = http::Request::get("/readyz").body(Vec::new())?;
                match client.request_text(request).await {
                    Ok(body) if body.trim() == "ok" => return Ok(()),
                    Ok(body) => last_answer = body,
                    Err(err) => last_answer = err.to_string(),
                }
                if Instant::now() > deadline {
                    return Err(self.failure(
                        index,
                        log_start,
                        &format!(
                            "was not ready within {START_TIMEOUT:?} (last answer from \
                             /readyz: {last_answer})"
                        ),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Err(last_error
            .unwrap_or_else(|| anyhow::anyhow!("no attempt made"))
            .context(format!(
                "kube-apiserver found no free port in {PORT_ATTEMPTS} attempts"
            )))
    }

    /// Starts kube-controller-manager, kube-scheduler and KWOK, registers the fake node
    /// and waits until it is Ready and schedulable.
    async fn start_node_components(&mut self) -> anyhow::Result<()> {
        let pki = self.dir.path().join("pki");
        let path = |file: &str| pki.join(file).display().to_string();
        let kubeconfig = format!("--kubeconfig={}", self.kubeconfig.display());
        // They all use the admin identity, as kwokctl does: the controller-manager then
        // needs no per-controller service account tokens to start working.
        let controller_manager = vec![
            kubeconfig.clone(),
            "--leader-elect=false".to_string(),
            // No HTTPS endpoint: nothing scrapes it, and it would need a port and
            // delegated authentication.
            "--secure-port=0".to_string(),
            "--use-service-account-credentials=false".to_string(),
            format!("--service-account-private-key-file={}", path("sa.key")),
            format!("--root-ca-file={}", path("ca.crt")),
            // CSRs get signed by the cluster's CA, as in a kubeadm cluster.
            format!("--cluster-signing-cert-file={}", path("ca.crt")),
            format!("--cluster-signing-key-file={}", path("ca.key")),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            // The default is under /usr/libexec, which it would create.
            format!(
                "--flex-volume-plugin-dir={}",
                self.dir.path().join("flexvolume").display()
            ),
            "--profiling=false".to_string(),
        ];
        let scheduler = vec![
            kubeconfig.clone(),
            "--leader-elect=false".to_string(),
            "--secure-port=0".to_string(),
            "--profiling=false".to_string(),
        ];
        let kwok = vec![
            kubeconfig,
            // Only the node we register below, like kwokctl.
            "--manage-all-nodes=false".to_string(),
            format!("--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake"),
            // Heartbeats through a Lease, as a kubelet does (KWOK's default is status
            // updates).
            "--node-lease-duration-seconds=40".to_string(),
            "--cidr=10.244.0.1/16".to_string(),
        ];
        // KWOK always reads ~/.kwok/kwok.yaml when it exists; give it a home of its own.
        let kwok_home = self.dir.path().join("kwok-home");
        fs::create_dir_all(&kwok_home)?;

        let started = [
            self.spawn("kube-controller-manager", &controller_manager, &[])?,
            self.spawn("kube-scheduler", &scheduler, &[])?,
            self.spawn("kwok", &kwok, &[("HOME", &kwok_home)])?,
        ];

        let nodes: Api<Node> = Api::all(self.client());
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "annotations": { KWOK_NODE_ANNOTATION: "fake" },
                "labels": {
                    "kubernetes.io/hostname": NODE_NAME,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                },
            },
        }))?;
        nodes
            .create(&PostParams::default(), &node)
            .await
            .context("registering the KWOK node")?;

        // Ready (KWOK's node stage) and without the not-ready taint (the node lifecycle
        // controller removes it): then the scheduler places pods on it.
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last_state: String;
        loop {
            for &(index, log_start) in &started {
                if self.processes[index].exited().is_some() {
                    return Err(self.failure(index, log_start, "stopped while starting"));
                }
            }
            match nodes.get(NODE_NAME).await {
                Ok(node) => {
                    let ready = node
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .into_iter()
                        .flatten()
                        .any(|c| c.type_ == "Ready" && c.status == "True");
                    let taints: Vec<String> = node
                        .spec
                        .as_ref()
                        .and_then(|s| s.taints.as_ref())
                        .into_iter()
                        .flatten()
                        .map(|t| format!("{}:{}", t.key, t.effect))
                        .collect();
                    if ready && taints.is_empty() {
                        return Ok(());
                    }
                    last_state = format!("ready: {ready}, taints: {taints:?}");
                }
                Err(err) => last_state = err.to_string(),
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = ["kwok", "kube-controller-manager"]
                    .iter()
                    .map(|name| format!("{name} log:\n{}", tail(&self.log(name), 40)))
                    .collect();
                bail!(
                    "node {NODE_NAME} not Ready and schedulable within {START_TIMEOUT:?} \
                     ({last_state})\n{}",
                    logs.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // etcd last: its graceful stop waits for its clients' watch streams, and the
        // apiserver's own stop waits on etcd, so stopping both at once can stall them
        // until the grace period ends. The others go all at once.
        let (etcd, others): (Vec<_>, Vec<_>) = self
            .processes
            .iter_mut()
            .partition(|process| process.name == "etcd");
        for mut group in [others, etcd] {
            for process in &mut group {
                terminate(process);
            }
            let deadline = Instant::now() + STOP_GRACE;
            for process in &mut group {
                wait_or_kill(process, deadline);
            }
        }
        if let Some((mut watchdog, mut stdin)) = self.watchdog.take() {
            let _ = writeln!(stdin, "done");
            drop(stdin);
            let _ = watchdog.wait();
        }
        // `dir` is removed when the field drops, after this.
    }
}

/// Sends SIGTERM to a process that has not been reaped yet (so its pid cannot have been
/// reused).
fn terminate(process: &mut Process) {
    if process.exited().is_none() {
        let _ = Command::new("kill")
            .args(["-TERM", &process.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Waits for a process to exit until `deadline`, then kills it; reaps it either way.
fn wait_or_kill(process: &mut Process, deadline: Instant) {
    while process.exited().is_none() {
        if Instant::now() >= deadline {
            // Worth knowing when a test run is slow to finish.
            eprintln!(
                "test cluster: {} (pid {}) still running {STOP_GRACE:?} after SIGTERM; killing it",
                process.name,
                process.child.id()
            );
            let _ = process.child.kill();
            let _ = process.child.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The directory holding [`BINARIES`]: `$FLEETHUB_K8S_BIN_DIR`, else what
/// `tests/cluster/build.sh` prints (it builds them first when missing or stale). Runs the
/// script once per process.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    static BIN_DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN_DIR
        .get_or_init(|| find_bin_dir().map_err(|err| format!("{err:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn find_bin_dir() -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os(BIN_DIR_ENV) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster/build.sh");
            // The build's progress goes to our stderr; only the directory to stdout.
            let out = Command::new("bash")
                .arg(&script)
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .with_context(|| format!("running {}", script.display()))?;
            if !out.status.success() {
                bail!(
                    "{} failed ({}); its output is above",
                    script.display(),
                    out.status
                );
            }
            let stdout = String::from_utf8(out.stdout)?;
            PathBuf::from(
                stdout
                    .lines()
                    .last()
                    .context("build.sh printed no directory")?,
            )
        }
    };
    for binary in BINARIES {
        if !dir.join(binary).is_file() {
            bail!("{} holds no {binary} binary", dir.display());
        }
    }
    Ok(dir)
}

/// kube's rustls and the hub's both link ring and aws-lc-rs, so rustls cannot pick a
/// provider by itself; the hub uses aws-lc-rs.
fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Writes the CA, the apiserver's serving certificate, the admin client certificate and
/// the service-account key pair into `dir/pki`.
fn generate_pki(dir: &Path) -> anyhow::Result<Ca> {
    let pki = dir.join("pki");
    fs::create_dir_all(&pki)?;

    let ca_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = distinguished_name("fleethub-test-ca", &[])?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = params.self_signed(&ca_key)?;
    let ca = Ca {
        cert_path: pki.join("ca.crt"),
        key_path: pki.join("ca.key"),
        issuer: Issuer::new(params, ca_key),
    };
    write_private(&ca.cert_path, &ca_cert.pem())?;
    write_private(&ca.key_path, &ca.issuer.key().serialize_pem())?;

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        "kubernetes.default.svc.cluster.local".to_string(),
        KUBERNETES_SERVICE_IP.to_string(),
    ])?;
    params.distinguished_name = distinguished_name("kube-apiserver", &[])?;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &ca.issuer)?;
    write_private(&pki.join("apiserver.crt"), &cert.pem())?;
    write_private(&pki.join("apiserver.key"), &key.serialize_pem())?;

    let (cert, key) = issue_client_cert(&ca, "fleethub-admin", &["system:masters"])?;
    write_private(&pki.join("admin.crt"), &cert)?;
    write_private(&pki.join("admin.key"), &key)?;

    // The apiserver signs service-account tokens with the private key and verifies them
    // with the public one (it reads no public key out of a PKCS#8 private key file).
    let sa = KeyPair::generate()?;
    write_private(&pki.join("sa.key"), &sa.serialize_pem())?;
    write_private(&pki.join("sa.pub"), &sa.public_key_pem())?;
    Ok(ca)
}

/// A client certificate (PEM) and its key (PEM, PKCS#8) for `user` in `groups`: the
/// apiserver takes the user from the subject's CN and the groups from its O attributes.
fn issue_client_cert(ca: &Ca, user: &str, groups: &[&str]) -> anyhow::Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = distinguished_name(user, groups)?;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &ca.issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// CN = `common_name`, one O per group. rcgen keeps one value per attribute type, so the
/// second group goes in as a custom attribute with O's own OID.
fn distinguished_name(common_name: &str, groups: &[&str]) -> anyhow::Result<DistinguishedName> {
    const ORGANIZATION_OID: [u64; 4] = [2, 5, 4, 10];
    let mut name = DistinguishedName::new();
    match groups {
        [] => {}
        [one] => name.push(DnType::OrganizationName, *one),
        [one, two] => {
            name.push(DnType::OrganizationName, *one);
            name.push(DnType::CustomDnType(ORGANIZATION_OID.to_vec()), *two);
        }
        _ => bail!("a test client certificate can carry at most two groups, not {groups:?}"),
    }
    name.push(DnType::CommonName, common_name);
    Ok(name)
}

/// Writes a kubeconfig with one cluster, one user (client certificate files) and one
/// current context.
fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca: &Path,
    user: &str,
    cert: &Path,
    key: &Path,
) -> anyhow::Result<()> {
    let kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "fleethub-test",
            "cluster": { "server": server, "certificate-authority": ca },
        }],
        "users": [{
            "name": user,
            "user": { "client-certificate": cert, "client-key": key },
        }],
        "contexts": [{
            "name": "fleethub-test",
            "context": { "cluster": "fleethub-test", "user": user },
        }],
        "current-context": "fleethub-test",
    });
    write_private(path, &serde_saphyr::to_string(&kubeconfig)?)
}

async fn load_config(kubeconfig: &Path) -> anyhow::Result<kube::Config> {
    let parsed = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    kube::Config::from_custom_kubeconfig(parsed, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading {}", kubeconfig.display()))
}

/// Writes a file readable by its owner only (keys and kubeconfigs among them).
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

/// Starts the watchdog of the module docs for `dir`.
fn spawn_watchdog(dir: &Path) -> anyhow::Result<(Child, ChildStdin)> {
    let mut child = Command::new("sh")
        .args(["-c", WATCHDOG, "fleethub-cluster-watchdog"])
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the cluster watchdog (sh)")?;
    let stdin = child.stdin.take().context("watchdog stdin")?;
    Ok((child, stdin))
}

/// A free TCP port on 127.0.0.1 (free when asked; the caller retries if it is taken by the
/// time the server binds it).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// `VmRSS` of a process, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    Ok(line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?)
}

/// A log file from byte `start` on (what one attempt wrote).
fn read_from(path: &Path, start: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path)
        && file.seek(SeekFrom::Start(start)).is_ok()
    {
        let mut bytes = Vec::new();
        let _ = file.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    text
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
