//! Load against a real hub, and the yardsticks it is measured by: the `bench` binary's
//! library, meant to grow into the load generator with simulated agents.
//!
//! * [`padded_work`]: a ManifestWork of a chosen size (one ConfigMap padded out).
//! * [`create_works`]: many clients creating works through the REST API as fast as the hub
//!   answers, with per-request latencies ([`Latencies`]).
//! * [`PgbenchInserts`]: `pgbench` inserting an equivalent row on the same Postgres, the
//!   ceiling a Postgres-backed hub is compared with.
//! * [`CpuTime`] and [`metric_summary`]: where the time went (CPU of each process from
//!   `/proc`, the hub's own Prometheus figures).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use api::{ClientConfig, HubClient, ManifestWork};
use serde::Serialize;
use serde_json::json;

use crate::postgres::TestPostgres;

/// A work named `name` for `cluster` whose JSON is about `bytes` long: one ConfigMap
/// whose data entry pads it out. `seed` varies the padding so no two works are equal.
pub fn padded_work(cluster: &str, name: &str, bytes: usize, seed: u64) -> ManifestWork {
    let with = |pad: String| {
        ManifestWork::new(
            cluster,
            name,
            vec![json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "default"},
                "data": {"payload": pad},
            })],
        )
    };
    let bare = serde_json::to_vec(&with(String::new())).map_or(0, |v| v.len());
    let pad_len = bytes.saturating_sub(bare);
    // A cheap xorshift over hex digits: incompressible enough, and deterministic.
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let pad = (0..pad_len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b"0123456789abcdef"[(state & 15) as usize])
        })
        .collect();
    with(pad)
}

/// How the load's clients reach the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Connections {
    /// One `HubClient` (one reqwest pool) shared by every task: with HTTP/2, which the
    /// hub offers and the client speaks, every request shares one connection.
    Shared,
    /// A `HubClient` of its own per task, so one connection per task.
    PerClient,
}

/// A run of work creations.
#[derive(Debug, Clone)]
pub struct CreateLoad {
    /// The (existing) cluster the works go to.
    pub cluster: String,
    /// How many works to create.
    pub works: usize,
    /// Concurrent clients, each with one request in flight.
    pub clients: usize,
    /// Approximate JSON size of each work.
    pub work_bytes: usize,
    /// Connection sharing.
    pub connections: Connections,
    /// No new request is started after this much time; the run then reports what it did.
    pub time_limit: Duration,
    /// HTTP/1.1 only, instead of HTTP/2 (one connection per request in flight).
    pub http1: bool,
}

/// What a run of work creations did.
#[derive(Debug, Clone)]
pub struct CreateReport {
    /// Works the hub acknowledged.
    pub created: usize,
    /// Requests that failed.
    pub failed: usize,
    /// The first failure, for the log.
    pub first_error: Option<String>,
    /// From the first request to the last answer.
    pub elapsed: Duration,
    /// Latency of every acknowledged request.
    pub latencies: Latencies,
    /// Whether the time limit stopped the run before all works were sent.
    pub timed_out: bool,
}

impl CreateReport {
    /// Acknowledged works per second of wall time.
    pub fn rate(&self) -> f64 {
        self.created as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Creates `load.works` works named `bench-NNNNNN` through `PUT` from `load.clients`
/// concurrent tasks. Every task first reads the cluster once, untimed, so the
/// connections exist and are warm when the clock starts; then the tasks take the next
/// work number from a shared counter until none is left.
pub async fn create_works(
    config: &ClientConfig,
    load: &CreateLoad,
) -> anyhow::Result<CreateReport> {
    if load.clients == 0 {
        bail!("need at least one client");
    }
    let client_for = |config: &ClientConfig| -> anyhow::Result<HubClient> {
        Ok(if load.http1 {
            HubClient::new_http1(config)?
        } else {
            HubClient::new(config)?
        })
    };
    let shared = client_for(config)?;
    let next = Arc::new(AtomicUsize::new(0));
    let ready = Arc::new(tokio::sync::Barrier::new(load.clients + 1));
    let mut tasks = Vec::with_capacity(load.clients);
    for _ in 0..load.clients {
        let client = match load.connections {
            Connections::Shared => shared.clone(),
            Connections::PerClient => client_for(config)?,
        };
        let (next, ready, load) = (next.clone(), ready.clone(), load.clone());
        tasks.push(tokio::spawn(async move {
            let warm = client.get_cluster(&load.cluster).await;
            ready.wait().await;
            warm.with_context(|| format!("reading cluster {} before the run", load.cluster))?;
            let started = Instant::now();
            let mut latencies = Vec::with_capacity(load.works / load.clients + 1);
            let (mut failed, mut first_error, mut timed_out) = (0, None, false);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= load.works {
                    break;
                }
                if started.elapsed() > load.time_limit {
                    timed_out = true;
                    break;
                }
                let name = format!("bench-{i:06}");
                let work = padded_work(&load.cluster, &name, load.work_bytes, i as u64);
                let sent = Instant::now();
                match client.put_work(&work, None).await {
                    Ok(_) => latencies.push(sent.elapsed()),
                    Err(e) => {
                        failed += 1;
                        first_error.get_or_insert_with(|| format!("{name}: {e}"));
                    }
                }
            }
            anyhow::Ok((latencies, failed, first_error, timed_out, Instant::now()))
        }));
    }
    ready.wait().await;
    let started = Instant::now();
    let mut report = CreateReport {
        created: 0,
        failed: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        latencies: Latencies::default(),
        timed_out: false,
    };
    let mut all = Vec::with_capacity(load.works);
    let mut last_answer = started;
    for task in tasks {
        let (latencies, failed, first_error, timed_out, finished) = task.await??;
        all.extend(latencies);
        report.failed += failed;
        report.timed_out |= timed_out;
        if report.first_error.is_none() {
            report.first_error = first_error;
        }
        last_answer = last_answer.max(finished);
    }
    report.created = all.len();
    report.elapsed = last_answer - started;
    report.latencies = Latencies::new(all);
    Ok(report)
}

/// Request latencies, sorted.
#[derive(Debug, Clone, Default)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    /// Sorts the samples.
    pub fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        Latencies(samples)
    }

    /// The `q`-quantile (0.5 for the median), nearest rank; zero without samples.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let rank = (q.clamp(0.0, 1.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }

    /// The slowest sample.
    pub fn max(&self) -> Duration {
        self.0.last().copied().unwrap_or_default()
    }

    /// The mean.
    pub fn mean(&self) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        self.0.iter().sum::<Duration>() / self.0.len() as u32
    }

    /// How many samples.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A pgbench run inserting rows like the hub's works.
#[derive(Debug, Clone)]
pub struct PgbenchLoad {
    /// `-c`: client connections.
    pub clients: usize,
    /// `-j`: pgbench threads.
    pub jobs: usize,
    /// `-T`: how long it runs.
    pub duration: Duration,
    /// The size of the jsonb document each row holds.
    pub row_bytes: usize,
}

/// What pgbench reported.
#[derive(Debug, Clone)]
pub struct PgbenchReport {
    /// Transactions per second without the initial connection time.
    pub tps: f64,
    /// Transactions processed.
    pub transactions: u64,
    /// Per-transaction latencies from pgbench's transaction log.
    pub latencies: Latencies,
    /// The exact command line.
    pub command: String,
    /// The script it ran (without the document literal).
    pub script: String,
}

/// A pgbench run prepared on a fresh database: each transaction inserts one row with a
/// unique key (`cluster`, `name` from a sequence: the primary key, as in the hub's `works`
/// table) and a `row_bytes` jsonb document, in autocommit; `-n` (no vacuum, the table is
/// our own), `-T` bounded.
pub struct PgbenchInserts {
    command: std::process::Command,
    dir: tempfile::TempDir,
    script: String,
}

impl PgbenchInserts {
    /// Creates the database, the table and the script.
    pub async fn prepare(postgres: &TestPostgres, load: &PgbenchLoad) -> anyhow::Result<Self> {
        use sqlx::Connection;
        let url = postgres.fresh_database().await?;
        let database = url.rsplit('/').next().context("database name")?.to_string();
        let mut conn = sqlx::PgConnection::connect(&url).await?;
        sqlx::raw_sql(
            "CREATE TABLE bench_works (cluster TEXT NOT NULL, name TEXT NOT NULL, \
             object JSONB NOT NULL, PRIMARY KEY (cluster, name)); \
             CREATE SEQUENCE bench_work_names;",
        )
        .execute(&mut conn)
        .await
        .context("creating the pgbench table")?;
        conn.close().await.ok();

        let document = serde_json::to_string(&padded_work("bench", "pgbench", load.row_bytes, 7))?;
        let statement = "INSERT INTO bench_works (cluster, name, object) VALUES \
                         ('bench', 'work-' || nextval('bench_work_names'), 'DOC'::jsonb);";
        let dir = tempfile::tempdir()?;
        let script_path = dir.path().join("insert-work.sql");
        std::fs::write(
            &script_path,
            statement.replace("DOC", &document.replace('\'', "''")),
        )?;
        let mut command = postgres.pgbench(&database);
        command
            .arg("-n")
            .arg("-f")
            .arg(&script_path)
            .args(["-c", &load.clients.to_string()])
            .args(["-j", &load.jobs.to_string()])
            .args(["-T", &load.duration.as_secs().max(1).to_string()])
            .arg("-l")
            .arg(format!("--log-prefix={}", dir.path().join("tx").display()))
            .current_dir(dir.path());
        Ok(PgbenchInserts {
            command,
            dir,
            script: statement.replace("DOC", &format!("<{}-byte work JSON>", document.len())),
        })
    }

    /// Runs pgbench and reads its figures.
    pub async fn run(self) -> anyhow::Result<PgbenchReport> {
        let PgbenchInserts {
            mut command,
            dir,
            script,
        } = self;
        let shown = format!("{command:?}");
        let out = tokio::task::spawn_blocking(move || command.output())
            .await?
            .context("running pgbench")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "pgbench failed ({}):\n{stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let tps = stdout
            .lines()
            .find(|l| l.starts_with("tps = ") && l.contains("without initial connection time"))
            .and_then(|l| l["tps = ".len()..].split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("no tps line in pgbench's output:\n{stdout}"))?;
        let transactions = stdout
            .lines()
            .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
            .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok(PgbenchReport {
            tps,
            transactions,
            latencies: pgbench_log_latencies(dir.path())?,
            command: shown,
            script,
        })
    }
}

/// Reads pgbench's per-transaction logs (`-l`): the third field is the latency in µs.
fn pgbench_log_latencies(dir: &Path) -> anyhow::Result<Latencies> {
    let mut samples = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if !path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("tx."))
        {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        samples.extend(
            text.lines()
                .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
                .map(Duration::from_micros),
        );
    }
    Ok(Latencies::new(samples))
}

/// What Postgres did during a run, from counters readable on any server.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PgActivity {
    /// Transactions that wrote (each takes a transaction id; read-only ones do not).
    pub write_transactions: u64,
    /// WAL written.
    pub wal_bytes: u64,
    /// The statements that took the most execution time, when `pg_stat_statements` is
    /// loaded (`shared_preload_libraries`); empty otherwise.
    pub statements: Vec<StatementStat>,
}

/// One row of `pg_stat_statements`.
#[derive(Debug, Clone, Serialize)]
pub struct StatementStat {
    /// Times executed.
    pub calls: u64,
    /// Total execution time, ms (for COMMIT this includes waiting for the WAL flush).
    pub total_ms: f64,
    /// Rows returned or affected.
    pub rows: u64,
    /// The normalized statement.
    pub query: String,
}

/// Counters of a Postgres server read before a run, to diff after it.
pub struct PgProbe {
    url: String,
    xid: i64,
    lsn: String,
    statements: bool,
}

impl PgProbe {
    /// Reads the counters now. With `statements`, also resets `pg_stat_statements`
    /// (the server must preload it).
    pub async fn start(postgres: &TestPostgres, statements: bool) -> anyhow::Result<PgProbe> {
        use sqlx::Connection;
        let url = postgres.url();
        let mut conn = sqlx::PgConnection::connect(&url).await?;
        if statements {
            sqlx::raw_sql(
                "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; \
                 SELECT pg_stat_statements_reset();",
            )
            .execute(&mut conn)
            .await
            .context("resetting pg_stat_statements (is it in shared_preload_libraries?)")?;
        }
        let (xid, lsn): (i64, String) =
            sqlx::query_as("SELECT pg_current_xact_id()::text::bigint, pg_current_wal_lsn()::text")
                .fetch_one(&mut conn)
                .await?;
        conn.close().await.ok();
        Ok(PgProbe {
            url,
            xid,
            lsn,
            statements,
        })
    }

    /// What happened since [`start`](Self::start).
    pub async fn finish(self) -> anyhow::Result<PgActivity> {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.url).await?;
        let (xid, wal_bytes): (i64, i64) = sqlx::query_as(
            "SELECT pg_current_xact_id()::text::bigint, \
             pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint",
        )
        .bind(&self.lsn)
        .fetch_one(&mut conn)
        .await?;
        let mut statements = Vec::new();
        if self.statements {
            // Our own probes run in the `postgres` database; the load never does.
            let rows: Vec<(i64, f64, i64, String)> = sqlx::query_as(
                "SELECT calls, total_exec_time, rows, query FROM pg_stat_statements \
                 WHERE dbid <> (SELECT oid FROM pg_database WHERE datname = current_database()) \
                 ORDER BY total_exec_time DESC LIMIT 12",
            )
            .fetch_all(&mut conn)
            .await?;
            statements = rows
                .into_iter()
                .map(|(calls, total_ms, rows, query)| StatementStat {
                    calls: calls as u64,
                    total_ms,
                    rows: rows as u64,
                    query: query.split_whitespace().collect::<Vec<_>>().join(" "),
                })
                .collect();
        }
        conn.close().await.ok();
        Ok(PgActivity {
            // Less the probe's own transaction id at the end.
            write_transactions: (xid - self.xid - 1).max(0) as u64,
            wal_bytes: wal_bytes.max(0) as u64,
            statements,
        })
    }
}

/// CPU time, split into user and kernel time, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Cpu {
    /// User time.
    pub user: f64,
    /// Kernel time.
    pub system: f64,
}

impl Cpu {
    /// User and kernel time together.
    pub fn total(&self) -> f64 {
        self.user + self.system
    }
}

impl std::ops::Add for Cpu {
    type Output = Cpu;
    fn add(self, other: Cpu) -> Cpu {
        Cpu {
            user: self.user + other.user,
            system: self.system + other.system,
        }
    }
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;
    fn sub(self, other: Cpu) -> Cpu {
        Cpu {
            user: self.user - other.user,
            system: self.system - other.system,
        }
    }
}

/// CPU time a process has used, from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CpuTime {
    /// Its own threads.
    pub own: Cpu,
    /// Its children that it has waited for (pgbench for us, exited backends for the
    /// postmaster).
    pub waited_children: Cpu,
}

impl CpuTime {
    /// Reads a process's CPU times.
    pub fn of(pid: u32) -> anyhow::Result<CpuTime> {
        let fields = stat_fields(pid)?;
        let ticks = |i: usize| -> anyhow::Result<f64> {
            Ok(fields
                .get(i)
                .with_context(|| format!("/proc/{pid}/stat is short"))?
                .parse::<u64>()? as f64
                / clock_ticks())
        };
        // Counting from the state field (3): utime 14, stime 15, cutime 16, cstime 17.
        Ok(CpuTime {
            own: Cpu {
                user: ticks(14 - 3)?,
                system: ticks(15 - 3)?,
            },
            waited_children: Cpu {
                user: ticks(16 - 3)?,
                system: ticks(17 - 3)?,
            },
        })
    }

    /// This process.
    pub fn current() -> anyhow::Result<CpuTime> {
        CpuTime::of(std::process::id())
    }

    /// Its own time and its waited-for children's.
    pub fn total(&self) -> Cpu {
        self.own + self.waited_children
    }

    /// A process and its live children together, e.g. a postmaster and its backends:
    /// the children still running count their own time; those that exited count in the
    /// parent's `waited_children`.
    pub fn of_tree(pid: u32) -> anyhow::Result<CpuTime> {
        let mut sum = CpuTime::of(pid)?;
        for entry in std::fs::read_dir("/proc")? {
            let Some(child) = entry?
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            // Processes come and go while we look; those gone are skipped.
            let Ok(fields) = stat_fields(child) else {
                continue;
            };
            if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid)
                && let Ok(cpu) = CpuTime::of(child)
            {
                sum.own = sum.own + cpu.own;
            }
        }
        Ok(sum)
    }
}

/// The page faults a process has taken that read nothing from disk (`minflt` in
/// `/proc/<pid>/stat`): each is a page the kernel mapped (and zeroed) on first touch, e.g.
/// again after the allocator gave it back.
pub fn minor_faults(pid: u32) -> anyhow::Result<u64> {
    let fields = stat_fields(pid)?;
    // Counting from the state field (3): minflt is 10.
    Ok(fields
        .get(10 - 3)
        .with_context(|| format!("/proc/{pid}/stat is short"))?
        .parse()?)
}

/// CPU time the whole machine has spent busy (all CPUs), from `/proc/stat`: user (with
/// nice) and kernel (with interrupts and steal). Over a run, its difference less the
/// time of the processes measured is what other processes and kernel threads took.
pub fn machine_cpu() -> anyhow::Result<Cpu> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let ticks: Vec<f64> = stat
        .lines()
        .find_map(|l| l.strip_prefix("cpu "))
        .context("no cpu line in /proc/stat")?
        .split_whitespace()
        .map(|v| v.parse::<f64>().unwrap_or(0.0) / clock_ticks())
        .collect();
    let at = |i: usize| ticks.get(i).copied().unwrap_or(0.0);
    // user nice system idle iowait irq softirq steal; guest time is already in user.
    Ok(Cpu {
        user: at(0) + at(1),
        system: at(2) + at(5) + at(6) + at(7),
    })
}

/// The fields of `/proc/<pid>/stat` from the state on (the command name before it may
/// hold spaces and parentheses).
fn stat_fields(pid: u32) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = text
        .rsplit_once(')')
        .with_context(|| format!("/proc/{pid}/stat unreadable"))?
        .1;
    Ok(rest.split_whitespace().map(str::to_string).collect())
}

/// USER_HZ, the unit of `/proc/<pid>/stat` times: `getconf CLK_TCK`, else Linux's 100.
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A summary (or histogram) metric as the hub's `/metrics` renders it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct MetricSummary {
    /// `<name>_sum`.
    pub sum: f64,
    /// `<name>_count`.
    pub count: f64,
}

impl MetricSummary {
    /// Sum over count; zero when nothing was recorded.
    pub fn mean(&self) -> f64 {
        if self.count > 0.0 {
            self.sum / self.count
        } else {
            0.0
        }
    }

    /// What was recorded since `earlier`.
    pub fn since(&self, earlier: &MetricSummary) -> MetricSummary {
        MetricSummary {
            sum: self.sum - earlier.sum,
            count: self.count - earlier.count,
        }
    }
}

/// Finds `<name>_sum` and `<name>_count` (without labels) in a Prometheus text page.
pub fn metric_summary(page: &str, name: &str) -> Option<MetricSummary> {
    let value = |suffix: &str| {
        let key = format!("{name}{suffix}");
        page.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse::<f64>().ok()).flatten()
        })
    };
    Some(MetricSummary {
        sum: value("_sum")?,
        count: value("_count")?,
    })
}

/// The hub's `/metrics` page.
pub async fn scrape_metrics(client: &HubClient) -> anyhow::Result<String> {
    let resp = client
        .request(reqwest::Method::GET, "/metrics")
        .send()
        .await?
        .error_for_status()?;
    Ok(resp.text().await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_work_has_the_asked_size_and_differs_by_seed() {
        let a = serde_json::to_vec(&padded_work("c", "bench-000001", 1024, 1)).unwrap();
        let b = serde_json::to_vec(&padded_work("c", "bench-000001", 1024, 2)).unwrap();
        assert_eq!(a.len(), 1024);
        assert_eq!(b.len(), 1024);
        assert_ne!(a, b);
        // Asked for less than the bare work: no padding, no panic.
        assert!(
            serde_json::to_vec(&padded_work("c", "w", 10, 1))
                .unwrap()
                .len()
                > 10
        );
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let l = Latencies::new((1..=100).rev().map(Duration::from_millis).collect());
        assert_eq!(l.quantile(0.5), Duration::from_millis(50));
        assert_eq!(l.quantile(0.99), Duration::from_millis(99));
        assert_eq!(l.quantile(1.0), Duration::from_millis(100));
        assert_eq!(l.max(), Duration::from_millis(100));
        assert_eq!(Latencies::default().quantile(0.5), Duration::ZERO);
    }

    #[test]
    fn summaries_are_found_without_labels() {
        let page = "# TYPE hub_write_batch_size summary\n\
                    hub_write_batch_size{quantile=\"0.5\"} 12\n\
                    hub_write_batch_size_sum 300\n\
                    hub_write_batch_size_count 25\n";
        let s = metric_summary(page, "hub_write_batch_size").unwrap();
        assert_eq!(s.mean(), 12.0);
        assert!(metric_summary(page, "other").is_none());
    }

    #[test]
    fn own_cpu_time_is_readable() {
        // Burn a few clock ticks first: a process that just started may show none yet.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let cpu = CpuTime::current().unwrap();
        assert!(cpu.own.total() > 0.0 && cpu.waited_children.total() >= 0.0);
        assert!(machine_cpu().unwrap().total() >= cpu.own.total());
    }
}
