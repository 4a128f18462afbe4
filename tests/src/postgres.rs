//! A real Postgres server for tests, from Debian's packages.
//!
//! Each [`TestPostgres`] is its own cluster: `initdb` into a fresh temporary directory, then
//! `postgres` listening on a free port of 127.0.0.1 (TCP only on loopback, its unix socket
//! inside the temporary directory), trust authentication, superuser `postgres`. The binaries
//! come from `/usr/lib/postgresql/<highest version>/bin` (override with
//! `FLEETHUB_POSTGRES_BIN_DIR`); `tests/run.sh` installs Debian's `postgresql` when it is
//! missing.
//!
//! Postgres refuses to run as root, so when the test runs as root the harness creates the
//! directory for the `postgres` system user and starts `initdb` and `postgres` with that
//! user's uid and gid (`CommandExt::uid`/`gid`, so the postmaster stays our direct child and
//! we can wait for it). Otherwise they run as the current user.
//!
//! fsync stays on by default: the benchmarks run on this harness and must measure durable
//! commits. [`PostgresOptions`] can turn it off or set any other parameter.
//!
//! # Outages
//! [`TestPostgres::stop`] stops the server and keeps its data; [`TestPostgres::start_again`]
//! brings it back on the same port, for tests of how clients live through a database
//! restart. Use a server of your own for that, never the shared one.
//!
//! # Stopping
//! Dropping a [`TestPostgres`] (also while unwinding from a panic) asks the postmaster for a
//! fast shutdown (SIGINT: open sessions are cut, so a test's pool cannot hold it up), waits
//! for it to exit, and removes the directory.
//!
//! Statics are never dropped, so [`TestPostgres::shared`] cannot rely on `Drop`. Every server
//! therefore gets a watchdog: a small `sh` process whose stdin is a pipe from the test
//! process. The kernel closes that pipe when the test process exits for any reason (normal
//! exit, panic, SIGKILL), the watchdog's `read` sees end-of-file, and it stops the postmaster
//! and removes the directory. `Drop` stops the server itself and then writes a line to the
//! pipe, which tells the watchdog to leave without touching anything. This needs no unsafe code (no `prctl(PR_SET_PDEATHSIG)`),
//! reacts at once (no polling of the test's pid) and cannot hit a reused pid.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::Connection;
use tokio::sync::OnceCell;

/// Overrides where the Postgres binaries (`initdb`, `postgres`, `pgbench`) are looked up.
pub const BIN_DIR_ENV: &str = "FLEETHUB_POSTGRES_BIN_DIR";

/// Where Debian's `postgresql-<v>` packages put their binaries.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// How long a server may take to accept connections after `postgres` starts.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a fast shutdown may take before it is escalated (immediate, then SIGKILL).
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Attempts to start on a fresh port when another process took the chosen one meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// The watchdog described in the module docs. `$1`: postmaster pid, `$2`: directory.
/// It ignores the terminal's signals so that a Ctrl-C cannot kill it before it has cleaned
/// up (the postmaster shares the test's process group and gets the Ctrl-C itself). Once the
/// test process is gone the postmaster is an orphan, and some init processes reap orphans
/// late: a zombie counts as stopped.
const WATCHDOG: &str = r#"
trap '' INT TERM HUP
if read -r _; then exit 0; fi
running() { [ -e "/proc/$1" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
kill -INT "$1" 2>/dev/null
i=0
while running "$1"; do
  i=$((i + 1))
  if [ "$i" -eq 150 ]; then kill -QUIT "$1" 2>/dev/null; fi
  if [ "$i" -ge 300 ]; then kill -KILL "$1" 2>/dev/null; break; fi
  sleep 0.1
done
rm -rf "$2"
"#;

/// Settings for a [`TestPostgres`] beyond the defaults.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    fsync: bool,
    settings: Vec<(String, String)>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            fsync: true,
            // Parallel tests each hold a pool; the stock 100 runs out on many-core machines.
            settings: vec![("max_connections".into(), "300".into())],
        }
    }
}

impl PostgresOptions {
    /// Whether commits are flushed to disk (default: on, as in production).
    pub fn fsync(mut self, on: bool) -> Self {
        self.fsync = on;
        self
    }

    /// Sets a server parameter, as `postgres -c name=value` would.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        self.settings.retain(|(n, _)| *n != name);
        self.settings.push((name, value.into()));
        self
    }
}

/// A running Postgres cluster of its own, stopped and deleted on drop.
#[derive(Debug)]
pub struct TestPostgres {
    port: u16,
    bin_dir: PathBuf,
    /// Kept to start the server again the same way after [`TestPostgres::stop`].
    options: PostgresOptions,
    postmaster: Child,
    watchdog: Option<(Child, ChildStdin)>,
    // Declared last: removed after the server has stopped.
    dir: tempfile::TempDir,
}

static SHARED: OnceCell<TestPostgres> = OnceCell::const_new();

impl TestPostgres {
    /// Starts a new server with the default options (fsync on). Blocks for initdb and
    /// start-up, typically one to three seconds.
    pub fn start() -> anyhow::Result<TestPostgres> {
        Self::start_with(PostgresOptions::default())
    }

    /// Starts a new server with the given options.
    pub fn start_with(options: PostgresOptions) -> anyhow::Result<TestPostgres> {
        let bin_dir = bin_dir()?;
        let run_as = RunAs::detect()?;
        let dir = temp_dir_for(&run_as)?;
        let data = dir.path().join("data");

        let mut initdb = Command::new(bin_dir.join("initdb"));
        initdb
            .arg("--pgdata")
            .arg(&data)
            .args([
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                // Only initdb's own final sync; the server below keeps fsync as configured.
                "--no-sync",
            ])
            .current_dir(dir.path())
            .env("LC_ALL", "C");
        run_as.apply(&mut initdb);
        let out = initdb
            .output()
            .with_context(|| format!("running {}", bin_dir.join("initdb").display()))?;
        if !out.status.success() {
            bail!(
                "initdb failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }

        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            match launch(&bin_dir, &run_as, dir.path(), port, &options) {
                Ok((postmaster, watchdog)) => {
                    return Ok(TestPostgres {
                        port,
                        bin_dir,
                        options,
                        postmaster,
                        watchdog: Some(watchdog),
                        dir,
                    });
                }
                Err(Launch::PortTaken(err)) => last_error = Some(err),
                Err(Launch::Failed(err)) => return Err(err),
            }
        }
        Err(last_error
            .unwrap_or_else(|| anyhow::anyhow!("no attempt made"))
            .context(format!(
                "postgres found no free port in {PORT_ATTEMPTS} attempts"
            )))
    }

    /// Stops the server (fast shutdown: open sessions are cut, as when a database server
    /// goes away) and keeps its data, so that [`start_again`](Self::start_again) brings the
    /// same databases back. For outage tests.
    pub fn stop(&mut self) {
        stop(&mut self.postmaster);
        if let Some(watchdog) = self.watchdog.take() {
            dismiss(watchdog);
        }
    }

    /// Starts a server stopped by [`stop`](Self::stop) again, on the same port and data
    /// directory, and waits until it accepts connections. A no-op while it runs.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        if matches!(self.postmaster.try_wait(), Ok(None)) {
            return Ok(());
        }
        let run_as = RunAs::detect()?;
        let (postmaster, watchdog) = launch(
            &self.bin_dir,
            &run_as,
            self.dir.path(),
            self.port,
            &self.options,
        )
        .map_err(|e| match e {
            Launch::PortTaken(e) | Launch::Failed(e) => {
                e.context(format!("restarting postgres on port {}", self.port))
            }
        })?;
        self.postmaster = postmaster;
        self.watchdog = Some(watchdog);
        Ok(())
    }

    /// The server shared by every test of this test binary, started on first use.
    ///
    /// It is never dropped: its watchdog stops it and removes its directory when the test
    /// process exits. Give each test its own database with [`TestPostgres::fresh_database`].
    pub async fn shared() -> anyhow::Result<&'static TestPostgres> {
        SHARED
            .get_or_try_init(|| async {
                tokio::task::spawn_blocking(TestPostgres::start)
                    .await
                    .context("starting the shared postgres")?
            })
            .await
    }

    /// The URL of the `postgres` database as superuser `postgres`:
    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// The URL of another database on this server.
    pub fn database_url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's process id.
    pub fn pid(&self) -> u32 {
        self.postmaster.id()
    }

    /// The temporary directory holding the data directory, the unix socket and
    /// `postgres.log`; removed when the server stops.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The directory of the Postgres binaries this server runs from.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// Creates an empty database with a unique name and returns its URL, so that tests can
    /// run in parallel on one server without seeing each other's tables.
    pub async fn fresh_database(&self) -> anyhow::Result<String> {
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&self.url())
            .await
            .with_context(|| format!("connecting to {}", self.url()))?;
        // The name is ours (hex digits), so it needs no escaping beyond the quotes.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .execute(&mut conn)
            .await
            .with_context(|| format!("creating database {name}"))?;
        conn.close().await.ok();
        Ok(self.database_url(&name))
    }

    /// A `pgbench` command for this server's `database`, with host, port and user set; add
    /// the benchmark's own arguments.
    pub fn pgbench(&self, database: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join("pgbench"));
        command
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-d", database]);
        command
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        stop(&mut self.postmaster);
        if let Some(watchdog) = self.watchdog.take() {
            dismiss(watchdog);
        }
        // `dir` is removed when the field drops, after this.
    }
}

/// The directory holding `initdb`, `postgres` and `pgbench`: `$FLEETHUB_POSTGRES_BIN_DIR`,
/// else `/usr/lib/postgresql/<highest version>/bin`.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        let dir = PathBuf::from(dir);
        if !dir.join("postgres").is_file() {
            bail!("{BIN_DIR_ENV}={} holds no postgres binary", dir.display());
        }
        return Ok(dir);
    }
    let entries = fs::read_dir(DEBIAN_ROOT).with_context(|| {
        format!("{DEBIAN_ROOT} is missing: install Debian's postgresql (tests/run.sh does)")
    })?;
    entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let version: Vec<u32> = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<_>>()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
        .with_context(|| {
            format!("no {DEBIAN_ROOT}/<version>/bin/postgres: install Debian's postgresql")
        })
}

/// The `pgbench` next to the server binaries [`bin_dir`] finds.
pub fn pgbench_path() -> anyhow::Result<PathBuf> {
    let path = bin_dir()?.join("pgbench");
    if !path.is_file() {
        bail!("{} is missing", path.display());
    }
    Ok(path)
}

/// Who runs `initdb` and `postgres` (also Patroni, in [`crate::patroni`]).
pub(crate) enum RunAs {
    CurrentUser,
    /// The `postgres` system user, because we are root.
    Postgres {
        uid: u32,
        gid: u32,
    },
}

impl RunAs {
    pub(crate) fn detect() -> anyhow::Result<RunAs> {
        if effective_uid()? != 0 {
            return Ok(RunAs::CurrentUser);
        }
        let id = |flag: &str| -> anyhow::Result<u32> {
            let out = Command::new("id")
                .args([flag, "postgres"])
                .output()
                .context("running id")?;
            if !out.status.success() {
                bail!(
                    "running as root needs the postgres system user (Debian's postgresql \
                     package creates it): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
        };
        Ok(RunAs::Postgres {
            uid: id("-u")?,
            gid: id("-g")?,
        })
    }

    pub(crate) fn apply(&self, command: &mut Command) {
        if let RunAs::Postgres { uid, gid } = self {
            // std drops supplementary groups when root sets a uid.
            command.uid(*uid).gid(*gid);
        }
    }
}

/// The effective uid of this process, from /proc (no libc call, no unsafe).
fn effective_uid() -> anyhow::Result<u32> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .context("no effective uid in /proc/self/status")
}

/// A temporary directory the server's user owns. As root it lives in the system temp dir
/// only if the `postgres` user can reach it there, else in /tmp.
pub(crate) fn temp_dir_for(run_as: &RunAs) -> anyhow::Result<tempfile::TempDir> {
    let builder = || {
        let mut builder = tempfile::Builder::new();
        builder.prefix("fleethub-pg-");
        builder
    };
    match run_as {
        RunAs::CurrentUser => builder().tempdir().context("creating a temp dir"),
        RunAs::Postgres { uid, gid } => {
            let parent = std::env::temp_dir();
            let parent = if world_searchable(&parent) {
                parent
            } else {
                PathBuf::from("/tmp")
            };
            let dir = builder()
                .tempdir_in(&parent)
                .with_context(|| format!("creating a temp dir in {}", parent.display()))?;
            std::os::unix::fs::chown(dir.path(), Some(*uid), Some(*gid))
                .with_context(|| format!("chown postgres {}", dir.path().display()))?;
            Ok(dir)
        }
    }
}

/// Whether every directory from `/` down to `path` lets other users through.
pub(crate) fn world_searchable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.ancestors().all(|dir| {
        dir.as_os_str().is_empty()
            || fs::metadata(dir).is_ok_and(|meta| meta.permissions().mode() & 0o001 != 0)
    })
}

/// A port on 127.0.0.1 nobody listens on right now. Another process may take it before
/// postgres binds it; the caller retries then.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn setting_arg(name: &str, value: &Path) -> OsString {
    let mut arg = OsString::from(format!("{name}="));
    arg.push(value);
    arg
}

/// Why [`launch`] failed: the port was taken meanwhile (try another) or anything else.
enum Launch {
    PortTaken(anyhow::Error),
    Failed(anyhow::Error),
}

/// Starts `postgres` on the initialised data directory in `dir` and this port, guarded by a
/// watchdog, and waits until it accepts connections.
fn launch(
    bin_dir: &Path,
    run_as: &RunAs,
    dir: &Path,
    port: u16,
    options: &PostgresOptions,
) -> Result<(Child, (Child, ChildStdin)), Launch> {
    let failed = Launch::Failed;
    let data = dir.join("data");
    let log_path = dir.join("postgres.log");
    let mut postgres = Command::new(bin_dir.join("postgres"));
    postgres
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string()])
        .args(["-c", "listen_addresses=127.0.0.1"])
        .arg("-c")
        .arg(setting_arg("unix_socket_directories", dir))
        .args([
            "-c",
            if options.fsync {
                "fsync=on"
            } else {
                "fsync=off"
            },
        ]);
    for (name, value) in &options.settings {
        postgres.arg("-c").arg(format!("{name}={value}"));
    }
    // A file, not a pipe: nobody would drain a pipe and a chatty server would block.
    let log = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))
        .map_err(failed)?;
    let log_start = log.metadata().map_err(|e| failed(e.into()))?.len();
    let stdout = log.try_clone().map_err(|e| failed(e.into()))?;
    postgres
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(log)
        .current_dir(dir)
        .env("LC_ALL", "C");
    run_as.apply(&mut postgres);
    let mut postmaster = postgres
        .spawn()
        .with_context(|| format!("starting {}", bin_dir.join("postgres").display()))
        .map_err(failed)?;
    // Guarded from here on, even if this process dies while the server starts.
    let watchdog = match spawn_watchdog(postmaster.id(), dir) {
        Ok(watchdog) => watchdog,
        Err(err) => {
            stop(&mut postmaster);
            return Err(failed(err));
        }
    };
    match wait_until_ready(&mut postmaster, &data) {
        Ok(()) => Ok((postmaster, watchdog)),
        Err(err) => {
            // Stops it if it is still starting; a no-op when it already exited.
            stop(&mut postmaster);
            dismiss(watchdog);
            let log = read_from(&log_path, log_start);
            if log.contains("could not bind") || log.contains("Address already in use") {
                Err(Launch::PortTaken(err.context(log)))
            } else {
                Err(failed(err.context(format!("postgres log:\n{log}"))))
            }
        }
    }
}

/// Waits until the postmaster reports "ready" in `postmaster.pid`, as `pg_ctl -w` does.
fn wait_until_ready(postmaster: &mut Child, data: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    let pid_file = data.join("postmaster.pid");
    loop {
        if let Some(status) = postmaster.try_wait()? {
            bail!("postgres exited during start-up ({status})");
        }
        if let Ok(contents) = fs::read_to_string(&pid_file) {
            let lines: Vec<&str> = contents.lines().collect();
            // Line 1: the pid; line 8: the status, "ready" once it accepts connections.
            if lines.first().map(|l| l.trim()) == Some(&postmaster.id().to_string())
                && lines.get(7).is_some_and(|l| l.trim() == "ready")
            {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("postgres did not get ready within {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Fast shutdown, escalated to immediate shutdown and then SIGKILL if it hangs; returns
/// once the postmaster has exited (it is our child, so waiting on it is exact).
fn stop(postmaster: &mut Child) {
    for (signal, timeout) in [("-INT", STOP_TIMEOUT), ("-QUIT", STOP_TIMEOUT)] {
        if matches!(postmaster.try_wait(), Ok(Some(_))) {
            return;
        }
        signal_pid(postmaster.id(), signal);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match postmaster.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
    let _ = postmaster.kill();
    let _ = postmaster.wait();
}

/// Sends a signal with the shell's `kill` builtin: minimal Debian images lack /bin/kill
/// (procps), and libc's `kill` would need unsafe code.
fn signal_pid(pid: u32, signal: &str) {
    let _ = Command::new("sh")
        .args(["-c", r#"kill "$1" "$2""#, "kill", signal, &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn spawn_watchdog(pid: u32, dir: &Path) -> anyhow::Result<(Child, ChildStdin)> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(WATCHDOG)
        .arg("fleethub-pg-watchdog")
        .arg(pid.to_string())
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the postgres watchdog")?;
    let stdin = child.stdin.take().context("watchdog stdin")?;
    Ok((child, stdin))
}

/// Tells a watchdog the server is already down: a line, not end-of-file, makes it exit
/// without touching anything.
fn dismiss((mut watchdog, mut stdin): (Child, ChildStdin)) {
    let _ = stdin.write_all(b"stopped\n");
    drop(stdin);
    let _ = watchdog.wait();
}

/// The log written since `offset`, for error messages.
fn read_from(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path)
        && file.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = file.read_to_string(&mut text);
    }
    text
}
