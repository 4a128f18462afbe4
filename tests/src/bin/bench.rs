//! `bench`: measures a real release `hub serve` on loopback, and the database under it.
//!
//! `bench creates` starts a real Postgres (fsync on) and a hub on it, and/or a hub on
//! SQLite in a temporary data dir, creates one cluster, then creates `--works` works of
//! `--work-bytes` through `PUT` over HTTPS with keep-alive from `--clients` concurrent
//! clients. On the same Postgres it then runs `pgbench` inserting an equivalent row, and
//! prints works/s, latencies, the ratio to pgbench and where the CPU went, as markdown
//! table rows or (`--json`) as JSON. Run it on the release build:
//!
//! ```text
//! cargo run --release -p testkit --bin bench -- creates --backend both
//! ```
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use anyhow::Context;
use api::{ClientConfig, HubClient, ManagedCluster, ManifestWork};
use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;
use testkit::load::{
    Connections, Cpu, CpuTime, CreateLoad, CreateReport, Latencies, MetricSummary, PgActivity,
    PgProbe, PgbenchInserts, PgbenchLoad, PgbenchReport, create_works, machine_cpu, metric_summary,
    minor_faults, scrape_metrics,
};
use testkit::postgres::{PostgresOptions, TestPostgres};
use testkit::procs::HubProcess;

// The allocator of the `hub` binary, so the client side of a list costs what `hub get` does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Benchmarks of a real hub process on loopback.
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create works through the REST API as fast as the hub acknowledges them, and compare
    /// with pgbench inserting an equivalent row on the same Postgres.
    Creates(CreatesArgs),
    /// Simulated agents that join through the real registration, renew leases, follow
    /// their works with blocking lists and report status, while writers create works at a
    /// target rate: write → status latency, hub RSS and CPU, Postgres bytes per work.
    Fleet(FleetArgs),
    /// Fleet placement (issue 17): one ManifestWorkReplicaSet over simulated clusters
    /// against creating the same works directly, re-deciding placements after a label
    /// change, and failover when a chosen cluster's agent falls silent.
    Placement(PlacementArgs),
    /// Backup while serving (issue 19): a SQLite hub holding --works works answers a
    /// paced write load without, then during, `GET /api/v1/backup`; write latencies of
    /// both windows, the backup's time and size.
    Backup(BackupArgs),
}

#[derive(Debug, clap::Args)]
struct BackupArgs {
    /// Works stored before measuring.
    #[arg(long, default_value_t = 100_000)]
    works: usize,
    /// Approximate JSON size of each work.
    #[arg(long, default_value_t = 1024)]
    work_bytes: usize,
    /// Writes per second of the steady load.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Concurrent writers of the steady load.
    #[arg(long, default_value_t = 8)]
    writers: u32,
    /// Length of the baseline window.
    #[arg(long, default_value = "10s", value_parser = api::parse_duration)]
    baseline: Duration,
}

/// The measures of `bench placement`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PlacementMeasure {
    /// One set over --clusters simulated clusters, and the direct baseline.
    Set,
    /// Re-deciding after one cluster's label changes.
    Redecide,
    /// Failover with each --failover-lease-interval.
    Failover,
}

#[derive(Debug, clap::Args)]
struct PlacementArgs {
    /// Which store the hub runs on (`both` runs Postgres, then SQLite).
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    backend: Backend,
    /// Which measures to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',',
          default_values_t = [PlacementMeasure::Set, PlacementMeasure::Redecide, PlacementMeasure::Failover])]
    measure: Vec<PlacementMeasure>,
    /// Clusters of `set` (simulated agents) and of `redecide` (records only).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(2..=20_000))]
    clusters: u32,
    /// Joins in flight at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=512))]
    join_concurrency: u32,
    /// The baseline's PUTs in flight at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    direct_in_flight: u32,
    /// `set`: how long to wait for every work to be Applied, each phase.
    #[arg(long, default_value = "120s", value_parser = api::parse_duration)]
    set_timeout: Duration,
    /// `redecide`: placements.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    placements: u32,
    /// `redecide`: values of the `zone` label (at most --placements).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(2..=1000))]
    zones: u32,
    /// `redecide`: label changes.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    relabels: u32,
    /// `failover`: simulated agents.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(2..=20_000))]
    failover_agents: u32,
    /// `failover`: the hub's --lease-interval, one failover each (the grace is the hub's
    /// default, 5 intervals).
    #[arg(long, value_delimiter = ',', default_values = ["10s", "1s"], value_parser = api::parse_duration)]
    failover_lease_interval: Vec<Duration>,
    /// Print the reports as JSON on stdout (the summary goes to stderr then).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct FleetArgs {
    /// Which store the hub runs on (`both` runs Postgres, then SQLite).
    #[arg(long, value_enum, default_value_t = Backend::Postgres)]
    backend: Backend,
    /// Simulated agents.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    agents: u32,
    /// Joins in flight at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=512))]
    join_concurrency: u32,
    /// Work creates per second.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// How long the writers write.
    #[arg(long, default_value = "30s", value_parser = api::parse_duration)]
    duration: Duration,
    /// Stop writing after this many works (with a high --rate: OCM's perf scenario,
    /// `--agents 1000 --works 5000 --rate 100000`, 5 works per cluster as fast as the hub
    /// takes them, timed until the last status).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    works: Option<u64>,
    /// Approximate JSON size of each work.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=400_000))]
    work_bytes: u32,
    /// The hub's --lease-interval, which every agent renews at.
    #[arg(long, default_value = "10s", value_parser = api::parse_duration)]
    lease_interval: Duration,
    /// Every agent renews in the same phase (they joined within seconds of each other and
    /// renew in step: a burst each interval). By default each starts at a random phase, as
    /// agents that joined at different times do.
    #[arg(long)]
    aligned_leases: bool,
    /// After the writers stop, how long to wait for the last statuses.
    #[arg(long, default_value = "30s", value_parser = api::parse_duration)]
    drain: Duration,
    /// After the drain, how long the fleet stays joined and renewing, writing nothing,
    /// before the hub's settled RSS is read (the median over the last 5 s of it).
    #[arg(long, default_value = "15s", value_parser = api::parse_duration)]
    settle: Duration,
    /// Print the report as JSON on stdout (the summary goes to stderr then).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct CreatesArgs {
    /// Which store the hub runs on.
    #[arg(long, value_enum, default_value_t = Backend::Both)]
    backend: Backend,
    /// How many works to create (per backend).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    works: u32,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    clients: u32,
    /// Approximate JSON size of each work (one ConfigMap padded out).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=400_000))]
    work_bytes: u32,
    /// Whether the clients share one connection pool or each have their own client.
    #[arg(long, value_enum, default_value_t = Connections::Shared)]
    connections: Connections,
    /// Stop starting requests after this long (per backend), e.g. 5m.
    #[arg(long, default_value = "10m", value_parser = api::parse_duration)]
    time_limit: Duration,
    /// How long pgbench runs (`-T`), e.g. 15s.
    #[arg(long, default_value = "15s", value_parser = api::parse_duration)]
    pgbench_duration: Duration,
    /// pgbench threads (`-j`); its clients (`-c`) are --clients.
    #[arg(long, default_value_t = 2)]
    pgbench_jobs: u32,
    /// Skip the pgbench comparison.
    #[arg(long)]
    no_pgbench: bool,
    /// Load pg_stat_statements into Postgres and report the statements that took the most
    /// time (costs Postgres a little CPU; for finding where the time goes).
    #[arg(long)]
    profile: bool,
    /// Print the report as JSON on stdout (the markdown rows go to stderr then).
    #[arg(long)]
    json: bool,
    /// Speak HTTP/1.1 to the hub instead of HTTP/2 (with `shared`, a pool of one
    /// connection per request in flight, as before HTTP/2).
    #[arg(long)]
    http1: bool,
    /// After creating, list every work of the cluster (one `GET`, no limit) this many
    /// times and report the time to the last byte, parsed.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1000))]
    lists: u32,
    /// Before the lists, `ANALYZE` the works table (Postgres), as autovacuum does within a
    /// minute of a bulk load: right after the creates the planner has no statistics for
    /// the new rows and sorts each page of the list on disk.
    #[arg(long, requires = "lists")]
    analyze: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Postgres,
    Sqlite,
    Both,
}

/// Everything one `bench creates` run measured.
#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    hub: Vec<HubRun>,
    pgbench: Option<PgbenchRun>,
    /// Hub works/s on Postgres over pgbench's tps.
    hub_postgres_over_pgbench: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Machine {
    cpus: usize,
    memory_gib: f64,
}

#[derive(Debug, Serialize)]
struct HubRun {
    backend: &'static str,
    connections: Connections,
    /// HTTP/1.1 only (else HTTP/2).
    http1: bool,
    works: usize,
    clients: usize,
    work_bytes: usize,
    created: usize,
    failed: usize,
    first_error: Option<String>,
    timed_out: bool,
    seconds: f64,
    works_per_second: f64,
    latency_ms: LatencyMs,
    cpu_seconds: CpuSeconds,
    /// Write transactions the hub's writer committed during the run.
    write_batches: f64,
    mean_write_batch: f64,
    /// What Postgres did (absent on SQLite).
    postgres: Option<PgActivity>,
    /// Full lists of the cluster's works after the creates (`--lists`).
    list: Option<ListRun>,
}

/// Full lists of one cluster's works.
#[derive(Debug, Serialize)]
struct ListRun {
    lists: usize,
    works_listed: usize,
    response_bytes: usize,
    /// Request to the whole body received, before the client parses it.
    body_ms: LatencyMs,
    /// Request to the parsed list.
    latency_ms: LatencyMs,
    /// Each list's latency to the parsed list, in the order they ran: says whether a slow
    /// one was a one-off (an autovacuum, a checkpoint) or a trend.
    each_ms: Vec<f64>,
    /// Each list's time to the whole body received (before the client's parse), in the
    /// same order: a slow list whose body was quick was slow in the client.
    each_body_ms: Vec<f64>,
    /// The hub's CPU time per list (user and kernel, ms), over the timed lists: unlike the
    /// latency, it hardly moves with what else the machine runs.
    hub_cpu_ms_per_list: f64,
    /// Postgres's CPU time per list (ms; 0 on SQLite, which runs inside the hub).
    postgres_cpu_ms_per_list: f64,
    /// The hub's minor page faults per list: pages it had to map again (a list's buffers
    /// given back to the kernel between lists show here).
    hub_minor_faults_per_list: f64,
}

#[derive(Debug, Serialize)]
struct PgbenchRun {
    clients: usize,
    jobs: usize,
    seconds: f64,
    transactions: u64,
    tps: f64,
    latency_ms: LatencyMs,
    cpu_seconds: CpuSeconds,
    postgres: PgActivity,
    command: String,
    script: String,
}

#[derive(Debug, Serialize)]
struct LatencyMs {
    p50: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

impl From<&Latencies> for LatencyMs {
    fn from(l: &Latencies) -> Self {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        LatencyMs {
            p50: ms(l.quantile(0.5)),
            p99: ms(l.quantile(0.99)),
            max: ms(l.max()),
            mean: ms(l.mean()),
        }
    }
}

/// CPU used during a measurement, per process, in seconds.
#[derive(Debug, Default, Serialize)]
struct CpuSeconds {
    /// The hub process (absent for pgbench).
    hub: f64,
    /// The postmaster and its backends (zero on SQLite).
    postgres: f64,
    /// This process, or pgbench for the pgbench run.
    client: f64,
    /// User time of every other process on the machine: other work running meanwhile,
    /// which disturbs the figures (near zero is a clean run).
    others_user: f64,
    /// Kernel time not charged to the processes above: kernel threads (softirq, disk
    /// writeback, journal) working for the run, and other processes' kernel time.
    others_kernel: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args = match Cli::parse().command {
        Command::Creates(args) => args,
        Command::Fleet(args) => return fleet(&args).await,
        Command::Placement(args) => return placement(&args).await,
        Command::Backup(args) => {
            let report = testkit::backup_bench::run(&testkit::backup_bench::BackupBench {
                works: args.works,
                work_bytes: args.work_bytes,
                rate: args.rate,
                writers: args.writers,
                baseline: args.baseline,
            })
            .await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            return Ok(());
        }
    };
    let report = creates(&args).await?;
    let table = markdown(&report);
    if args.json {
        eprint!("{table}");
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{table}");
    }
    if report
        .hub
        .iter()
        .any(|r| r.failed > 0 || r.timed_out || r.created < r.works)
    {
        anyhow::bail!("some works were not created; see first_error");
    }
    Ok(())
}

/// One `bench fleet` run per backend asked for.
#[derive(Debug, Serialize)]
struct FleetRun {
    backend: &'static str,
    open_file_limit: u64,
    #[serde(flatten)]
    report: testkit::fleet::FleetReport,
    /// Growth of the whole database over the run, per work created (Postgres only).
    postgres_bytes_per_work: Option<f64>,
    /// The `works` table with its indexes and TOAST, per stored work (Postgres only).
    works_table_bytes_per_work: Option<f64>,
}

async fn fleet(args: &FleetArgs) -> anyhow::Result<()> {
    let open_file_limit = testkit::fleet::raise_open_file_limit()?;
    let load = testkit::fleet::FleetLoad {
        agents: args.agents as usize,
        join_concurrency: args.join_concurrency as usize,
        rate: args.rate,
        duration: args.duration,
        max_works: args.works.map(|w| w as usize),
        work_bytes: args.work_bytes as usize,
        lease_interval: args.lease_interval,
        aligned_leases: args.aligned_leases,
        postgres_url: None,
        drain: args.drain,
        settle: args.settle,
    };
    let lease = format!("{}ms", args.lease_interval.as_millis());
    let hub_args = ["--lease-interval", lease.as_str()];
    let mut runs = Vec::new();
    if matches!(args.backend, Backend::Postgres | Backend::Both) {
        eprintln!("starting postgres (fsync on)");
        let postgres = tokio::task::spawn_blocking(TestPostgres::start).await??;
        let url = postgres.fresh_database().await?;
        let db = sqlx::PgPool::connect(&url).await?;
        let dir = tempfile::tempdir()?;
        let mut with_db = hub_args.to_vec();
        with_db.extend(["--database-url", url.as_str()]);
        let hub = HubProcess::start(dir.path(), &with_db).await?;
        let load = testkit::fleet::FleetLoad {
            postgres_url: Some(url.clone()),
            ..load.clone()
        };
        let report = run_fleet_on(&hub, &load).await?;
        let (works, table): (i64, i64) =
            sqlx::query_as("SELECT (SELECT COUNT(*) FROM works), pg_total_relation_size('works')")
                .fetch_one(&db)
                .await?;
        runs.push(FleetRun {
            backend: "postgres",
            open_file_limit,
            postgres_bytes_per_work: report.postgres_bytes_per_work,
            works_table_bytes_per_work: Some(table as f64 / works.max(1) as f64),
            report,
        });
    }
    if matches!(args.backend, Backend::Sqlite | Backend::Both) {
        let dir = tempfile::tempdir()?;
        let hub = HubProcess::start(dir.path(), &hub_args).await?;
        runs.push(FleetRun {
            backend: "sqlite",
            open_file_limit,
            report: run_fleet_on(&hub, &load).await?,
            postgres_bytes_per_work: None,
            works_table_bytes_per_work: None,
        });
    }
    let mut summary = String::new();
    for r in &runs {
        let f = &r.report;
        let l = &f.write_to_status_ms;
        summary += &format!(
            "fleet on {}: {}/{} agents joined in {:.1} s; {} works at {:.1}/s (asked {:.0}/s), {} failed; \
             write → status p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n={}, {} missing); \
             leases {} ok, {} failed; hub RSS {:.1} MiB with the fleet idle, peak {:.1} MiB, settled {:.1} MiB; \
             hub CPU {:.0} millicores; load generator CPU {:.1} s; p99 per 5 s of writes (ms): {:?}; last status {:.2} s after the first write",
            r.backend,
            f.joined,
            f.agents,
            f.join_seconds,
            f.works_created,
            f.achieved_rate,
            f.target_rate,
            f.create_failures,
            l.p50,
            l.p90,
            l.p99,
            l.max,
            l.n,
            f.missing_statuses,
            f.lease_renewals,
            f.lease_failures,
            f.hub_rss_mib_idle_fleet,
            f.hub_rss_mib_peak,
            f.hub_rss_mib_settled,
            f.hub_millicores,
            f.load_cpu_seconds,
            f.write_to_status_p99_ms_by_5s,
            f.last_status_after_seconds,
        );
        if let (Some(db), Some(t)) = (r.postgres_bytes_per_work, r.works_table_bytes_per_work) {
            summary += &format!(
                "; Postgres {db:.0} B/work (database growth while writing), works table {t:.0} B/work; growth by table (B/work): {:?}; by heap, index and TOAST (B/work): {:?}",
                f.postgres_table_bytes_per_work, f.postgres_relation_bytes_per_work
            );
        }
        summary += "\n";
        for e in [&f.first_join_error, &f.first_create_error]
            .into_iter()
            .flatten()
        {
            summary += &format!("  first error: {e}\n");
        }
    }
    if args.json {
        eprint!("{summary}");
        println!("{}", serde_json::to_string_pretty(&runs)?);
    } else {
        print!("{summary}");
    }
    if runs
        .iter()
        .any(|r| r.report.joined < r.report.agents || r.report.missing_statuses > 0)
    {
        anyhow::bail!("some agents did not join or some statuses never arrived");
    }
    Ok(())
}

/// Everything one `bench placement` run measured on one backend.
#[derive(Debug, Default, Serialize)]
struct PlacementRun {
    backend: &'static str,
    /// `uptime` when the backend's first hub started.
    uptime: String,
    set: Option<testkit::placement_bench::SetReport>,
    redecide: Option<testkit::placement_bench::RedecideReport>,
    failover: Vec<testkit::placement_bench::FailoverReport>,
    /// The hub's fleet metrics after each measure (`/metrics` lines, buckets left out).
    metrics: Vec<String>,
}

/// A figure in seconds, or that it never came.
fn seconds(v: Option<f64>) -> String {
    v.map_or_else(|| "never (timed out)".to_string(), |v| format!("{v:.3}"))
}

/// Appends the hub's fleet metrics after `measure` to `into`; says what its decide passes cost.
async fn fleet_metrics(client: &HubClient, measure: &str, into: &mut Vec<String>) -> String {
    let Ok(page) = scrape_metrics(client).await else {
        return "no metrics".into();
    };
    into.push(format!("# after {measure}"));
    into.extend(
        page.lines()
            .filter(|l| {
                ["hub_placement_", "hub_set_", "hub_fleet_"]
                    .iter()
                    .any(|p| l.starts_with(p))
                    && !l.contains("_bucket")
            })
            .map(str::to_string),
    );
    match metric_summary(&page, "hub_placement_decide_seconds") {
        Some(m) => format!(
            "hub: {:.0} decide passes, mean {:.2} ms",
            m.count,
            m.mean() * 1e3
        ),
        None => "hub: no decide pass recorded".into(),
    }
}

async fn placement(args: &PlacementArgs) -> anyhow::Result<()> {
    use testkit::placement_bench as pb;
    testkit::fleet::raise_open_file_limit()?;
    let postgres = match args.backend {
        Backend::Postgres | Backend::Both => {
            eprintln!("starting postgres (fsync on)");
            Some(tokio::task::spawn_blocking(TestPostgres::start).await??)
        }
        Backend::Sqlite => None,
    };
    let mut backends = Vec::new();
    if let Some(p) = &postgres {
        backends.push(("postgres", Some(p)));
    }
    if matches!(args.backend, Backend::Sqlite | Backend::Both) {
        backends.push(("sqlite", None));
    }
    let default_lease = Duration::from_secs(10);
    let mut runs = Vec::new();
    let mut summary = String::new();
    for (backend, postgres) in backends {
        let mut run = PlacementRun {
            backend,
            uptime: uptime(),
            ..Default::default()
        };
        // A fresh hub (and database) per measure, started with these --lease-interval.
        let hub = |lease: Duration| async move {
            let dir = tempfile::tempdir()?;
            let mut hub_args = vec![
                "--lease-interval".to_string(),
                format!("{}ms", lease.as_millis()),
            ];
            if let Some(p) = postgres {
                hub_args.extend(["--database-url".to_string(), p.fresh_database().await?]);
            }
            let refs: Vec<&str> = hub_args.iter().map(String::as_str).collect();
            let hub = HubProcess::start(dir.path(), &refs).await?;
            let cfg = ClientConfig::load(&hub.client_config_path())?;
            let pid = hub.pid().context("hub not running")?;
            anyhow::Ok((dir, hub, cfg, pid))
        };
        if args.measure.contains(&PlacementMeasure::Set) {
            let (_dir, hub, cfg, pid) = hub(default_lease).await?;
            let load = pb::SetLoad {
                clusters: args.clusters as usize,
                join_concurrency: args.join_concurrency as usize,
                lease_interval: default_lease,
                direct_in_flight: args.direct_in_flight as usize,
                timeout: args.set_timeout,
            };
            let r = pb::one_set(&hub.client()?, &cfg, pid, &load).await?;
            summary += &format!(
                "placement on {backend}, set over {} clusters: all Applied {} s after the set's PUT, \
                 summary.applied={} after {} s (missing {}); direct PUTs ({} in flight): all Applied after {} s \
                 (PUTs took {:.2} s, missing {}); set / direct {}; hub CPU {:.2} s (set), {:.2} s (direct); \
                 placement decided {} s after its PUT; {}\n",
                r.clusters,
                seconds(r.set_applied_seconds),
                r.set_summary.applied,
                seconds(r.set_summary_seconds),
                r.set_missing,
                args.direct_in_flight,
                seconds(r.direct_applied_seconds),
                r.direct_put_seconds,
                r.direct_missing,
                seconds(r.set_over_direct),
                r.set_hub_cpu_seconds,
                r.direct_hub_cpu_seconds,
                seconds(r.placement_decided_seconds),
                fleet_metrics(&hub.client()?, "set", &mut run.metrics).await,
            );
            run.set = Some(r);
        }
        if args.measure.contains(&PlacementMeasure::Redecide) {
            let (_dir, hub, _, pid) = hub(default_lease).await?;
            let load = pb::RedecideLoad {
                clusters: args.clusters as usize,
                zones: args.zones as usize,
                placements: args.placements as usize,
                relabels: args.relabels as usize,
                timeout: Duration::from_secs(30),
            };
            let r = pb::redecide(&hub.client()?, pid, &load).await?;
            let l = &r.latency_ms;
            summary += &format!(
                "placement on {backend}, re-decide ({} clusters, {} placements): p50 {:.1} ms, p99 {:.1} ms, \
                 max {:.1} ms (n={}, {} missed), of which the label PUT p50 {:.1} ms, p99 {:.1} ms; \
                 hub CPU {:.0} millicores over {:.1} s; {}\n",
                r.clusters,
                r.placements,
                l.p50,
                l.p99,
                l.max,
                l.n,
                r.missed,
                r.label_put_ms.p50,
                r.label_put_ms.p99,
                r.hub_millicores,
                r.wall_seconds,
                fleet_metrics(&hub.client()?, "redecide", &mut run.metrics).await,
            );
            run.redecide = Some(r);
        }
        if args.measure.contains(&PlacementMeasure::Failover) {
            for &lease in &args.failover_lease_interval {
                let (_dir, hub, cfg, _) = hub(lease).await?;
                let load = pb::FailoverLoad {
                    agents: args.failover_agents as usize,
                    lease_interval: lease,
                    lease_grace: lease * 5,
                };
                let r = pb::failover(&hub.client()?, &cfg, &load).await?;
                summary += &format!(
                    "placement on {backend}, failover (lease interval {} s, grace {} s, {} agents): \
                     from the last renewal: tainted {} s, re-decided {} s ({} → {}), Applied {} s; goal ≤ {} s; {}\n",
                    r.lease_interval_seconds,
                    r.lease_grace_seconds,
                    r.agents,
                    seconds(r.tainted_after),
                    seconds(r.decided_after),
                    r.chosen,
                    r.replacement.as_deref().unwrap_or("none"),
                    seconds(r.applied_after),
                    r.goal_seconds,
                    fleet_metrics(
                        &hub.client()?,
                        &format!("failover {lease:?}"),
                        &mut run.metrics
                    )
                    .await,
                );
                run.failover.push(r);
            }
        }
        runs.push(run);
    }
    if args.json {
        eprint!("{summary}");
        println!("{}", serde_json::to_string_pretty(&runs)?);
    } else {
        print!("{summary}");
    }
    Ok(())
}

/// `uptime`'s line (the machine's load when a run starts).
fn uptime() -> String {
    std::process::Command::new("uptime")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

async fn run_fleet_on(
    hub: &HubProcess,
    load: &testkit::fleet::FleetLoad,
) -> anyhow::Result<testkit::fleet::FleetReport> {
    let cfg = ClientConfig::load(&hub.client_config_path())?;
    let admin = hub.client()?;
    let pid = hub.pid().context("hub not running")?;
    testkit::fleet::run_fleet(&admin, &cfg, pid, load).await
}

async fn creates(args: &CreatesArgs) -> anyhow::Result<Report> {
    let CreatesArgs {
        backend,
        works,
        clients,
        work_bytes,
        connections,
        time_limit,
        pgbench_duration,
        pgbench_jobs,
        no_pgbench,
        profile,
        json: _,
        lists,
        analyze,
        http1,
    } = *args;
    let load = CreateLoad {
        cluster: "bench".into(),
        works: works as usize,
        clients: clients as usize,
        work_bytes: work_bytes as usize,
        connections,
        time_limit,
        http1,
    };
    let mut report = Report {
        machine: machine(),
        hub: Vec::new(),
        pgbench: None,
        hub_postgres_over_pgbench: None,
    };

    if matches!(backend, Backend::Postgres | Backend::Both) {
        eprintln!("starting postgres (fsync on)");
        let mut options = PostgresOptions::default();
        if profile {
            options = options.setting("shared_preload_libraries", "pg_stat_statements");
        }
        let postgres =
            tokio::task::spawn_blocking(move || TestPostgres::start_with(options)).await??;
        let url = postgres.fresh_database().await?;
        let dir = tempfile::tempdir()?;
        let hub = HubProcess::start(dir.path(), &["--database-url", &url]).await?;
        report.hub.push(
            run_hub(
                "postgres",
                &hub,
                Some((&postgres, profile)),
                &load,
                lists,
                analyze.then_some(url.as_str()),
            )
            .await?,
        );
        drop(hub);
        if !no_pgbench {
            let pgbench = PgbenchLoad {
                clients: clients as usize,
                jobs: pgbench_jobs as usize,
                duration: pgbench_duration,
                row_bytes: work_bytes as usize,
            };
            eprintln!(
                "pgbench: {} clients, {} threads, {:?}",
                pgbench.clients, pgbench.jobs, pgbench.duration
            );
            let run = run_pgbench(&postgres, profile, &pgbench).await?;
            report.hub_postgres_over_pgbench =
                report.hub.first().map(|hub| hub.works_per_second / run.tps);
            report.pgbench = Some(run);
        }
    }
    if matches!(backend, Backend::Sqlite | Backend::Both) {
        let dir = tempfile::tempdir()?;
        let hub = HubProcess::start(dir.path(), &[]).await?;
        report
            .hub
            .push(run_hub("sqlite", &hub, None, &load, lists, None).await?);
    }
    Ok(report)
}

/// One create run against a started hub, with the CPU and write batches it cost.
async fn run_hub(
    backend: &'static str,
    hub: &HubProcess,
    postgres: Option<(&TestPostgres, bool)>,
    load: &CreateLoad,
    lists: u32,
    analyze: Option<&str>,
) -> anyhow::Result<HubRun> {
    let postmaster = postgres.map(|(p, _)| p.pid());
    let hub_pid = hub.pid().context("hub not running")?;
    let config = ClientConfig::load(&hub.client_config_path())?;
    let client = hub.client()?;
    client
        .put_cluster(&ManagedCluster::new(&load.cluster, Default::default()))
        .await
        .context("creating the bench cluster")?;
    eprintln!(
        "hub on {backend} (pid {hub_pid}, {}): creating {} works of {} bytes from {} clients ({:?} connections)",
        client.base_url(),
        load.works,
        load.work_bytes,
        load.clients,
        load.connections
    );

    let batches_before = write_batches(&client).await?;
    let probe = match postgres {
        Some((p, statements)) => Some(PgProbe::start(p, statements).await?),
        None => None,
    };
    let cpu_before = cpu_snapshot(hub_pid, postmaster)?;
    let created = create_works(&config, load).await?;
    let cpu = cpu_snapshot(hub_pid, postmaster)?.since(&cpu_before);
    let activity = match probe {
        Some(probe) => Some(probe.finish().await?),
        None => None,
    };
    let cpu = cpu.seconds(cpu.client);
    let batches = write_batches(&client).await?.since(&batches_before);
    if let Some(e) = &created.first_error {
        eprintln!("first failure: {e}");
    }
    let mut run = hub_run(backend, load, &created, cpu, batches, activity);
    if let Some(url) = analyze {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(url).await?;
        sqlx::raw_sql("ANALYZE works").execute(&mut conn).await?;
        conn.close().await.ok();
    }
    if lists > 0 {
        run.list = Some(
            list_works(
                &client,
                &load.cluster,
                lists as usize,
                (hub_pid, postmaster),
            )
            .await?,
        );
    }
    Ok(run)
}

/// Lists every work of `cluster` in one request, `n` times (after one untimed warm-up):
/// the latency to the parsed list, as `hub get works` sees it, and to the body alone.
/// `pids` are the hub's and the postmaster's, whose CPU and page faults the lists cost.
async fn list_works(
    client: &HubClient,
    cluster: &str,
    n: usize,
    (hub_pid, postmaster): (u32, Option<u32>),
) -> anyhow::Result<ListRun> {
    let path = format!("/api/v1/clusters/{cluster}/manifestworks");
    let fetch = || async {
        let started = Instant::now();
        let body = client
            .request(reqwest::Method::GET, &path)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        let received = started.elapsed();
        let list: api::List<ManifestWork> = serde_json::from_slice(&body)?;
        anyhow::Ok((list.items.len(), body.len(), received, started.elapsed()))
    };
    let (works_listed, response_bytes, ..) = fetch().await?;
    let (mut bodies, mut parsed) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (cpu_before, faults_before) = (cpu_snapshot(hub_pid, postmaster)?, minor_faults(hub_pid)?);
    for _ in 0..n {
        let (listed, _, received, done) = fetch().await?;
        bodies.push(received);
        parsed.push(done);
        anyhow::ensure!(
            listed == works_listed,
            "a list returned {listed} works, not {works_listed}"
        );
    }
    let cpu = cpu_snapshot(hub_pid, postmaster)?.since(&cpu_before);
    let per_list = |v: f64| v / n.max(1) as f64;
    let hub_cpu_ms_per_list = per_list(cpu.hub.total() * 1e3);
    let postgres_cpu_ms_per_list = per_list(cpu.postgres.total() * 1e3);
    let hub_minor_faults_per_list = per_list((minor_faults(hub_pid)? - faults_before) as f64);
    let ms_each = |v: &[Duration]| v.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    let (each_ms, each_body_ms) = (ms_each(&parsed), ms_each(&bodies));
    let (body, latency) = (Latencies::new(bodies), Latencies::new(parsed));
    let ms = |l: &Latencies, q: f64| l.quantile(q).as_secs_f64() * 1e3;
    eprintln!(
        "  list of {works_listed} works ({response_bytes} bytes) x{n}: p50 {:.1} ms, p99 {:.1} ms \
         (body received: p50 {:.1} ms, p99 {:.1} ms); per list: hub CPU {hub_cpu_ms_per_list:.1} ms, \
         Postgres CPU {postgres_cpu_ms_per_list:.1} ms, hub minor faults {hub_minor_faults_per_list:.0}",
        ms(&latency, 0.5),
        ms(&latency, 0.99),
        ms(&body, 0.5),
        ms(&body, 0.99),
    );
    Ok(ListRun {
        lists: n,
        works_listed,
        response_bytes,
        body_ms: (&body).into(),
        latency_ms: (&latency).into(),
        each_ms,
        each_body_ms,
        hub_cpu_ms_per_list,
        postgres_cpu_ms_per_list,
        hub_minor_faults_per_list,
    })
}

fn hub_run(
    backend: &'static str,
    load: &CreateLoad,
    created: &CreateReport,
    cpu: CpuSeconds,
    batches: MetricSummary,
    postgres: Option<PgActivity>,
) -> HubRun {
    HubRun {
        backend,
        connections: load.connections,
        http1: load.http1,
        works: load.works,
        clients: load.clients,
        work_bytes: load.work_bytes,
        created: created.created,
        failed: created.failed,
        first_error: created.first_error.clone(),
        timed_out: created.timed_out,
        seconds: created.elapsed.as_secs_f64(),
        works_per_second: created.rate(),
        latency_ms: (&created.latencies).into(),
        cpu_seconds: cpu,
        write_batches: batches.count,
        mean_write_batch: batches.mean(),
        postgres,
        list: None,
    }
}

async fn run_pgbench(
    postgres: &TestPostgres,
    profile: bool,
    load: &PgbenchLoad,
) -> anyhow::Result<PgbenchRun> {
    let pgbench = PgbenchInserts::prepare(postgres, load).await?;
    let probe = PgProbe::start(postgres, profile).await?;
    let before = cpu_snapshot(0, Some(postgres.pid()))?;
    let run: PgbenchReport = pgbench.run().await?;
    let cpu = cpu_snapshot(0, Some(postgres.pid()))?.since(&before);
    let activity = probe.finish().await?;
    Ok(PgbenchRun {
        clients: load.clients,
        jobs: load.jobs,
        seconds: load.duration.as_secs_f64(),
        transactions: run.transactions,
        tps: run.tps,
        latency_ms: (&run.latencies).into(),
        // pgbench is our child, waited for: it counts in our children's time.
        cpu_seconds: cpu.seconds(cpu.client_children),
        postgres: activity,
        command: run.command,
        script: run.script,
    })
}

/// CPU times of the machine, the hub (`pid` 0: none), the Postgres tree and this process.
struct CpuSnapshot {
    machine: Cpu,
    hub: Cpu,
    postgres: Cpu,
    client: Cpu,
    client_children: Cpu,
}

fn cpu_snapshot(hub_pid: u32, postmaster: Option<u32>) -> anyhow::Result<CpuSnapshot> {
    let me = CpuTime::current()?;
    Ok(CpuSnapshot {
        machine: machine_cpu()?,
        hub: if hub_pid == 0 {
            Cpu::default()
        } else {
            CpuTime::of(hub_pid)?.own
        },
        postgres: match postmaster {
            Some(pid) => CpuTime::of_tree(pid)?.total(),
            None => Cpu::default(),
        },
        client: me.own,
        client_children: me.waited_children,
    })
}

impl CpuSnapshot {
    fn since(self, earlier: &CpuSnapshot) -> CpuSnapshot {
        CpuSnapshot {
            machine: self.machine - earlier.machine,
            hub: self.hub - earlier.hub,
            postgres: self.postgres - earlier.postgres,
            client: self.client - earlier.client,
            client_children: self.client_children - earlier.client_children,
        }
    }

    /// The figures of a difference, with `client` as the load's client.
    fn seconds(&self, client: Cpu) -> CpuSeconds {
        let ours = self.hub + self.postgres + self.client + self.client_children;
        let others = self.machine - ours;
        CpuSeconds {
            hub: self.hub.total(),
            postgres: self.postgres.total(),
            client: client.total(),
            others_user: others.user.max(0.0),
            others_kernel: others.system.max(0.0),
        }
    }
}

async fn write_batches(client: &api::HubClient) -> anyhow::Result<MetricSummary> {
    let page = scrape_metrics(client).await?;
    // Absent until the first write; the bench cluster is one.
    Ok(metric_summary(&page, "hub_write_batch_size").unwrap_or_default())
}

fn machine() -> Machine {
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    Machine {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_gib: (memory_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
    }
}

/// The report as markdown: one row per measured figure, then where the time went.
fn markdown(report: &Report) -> String {
    let mut figures = Vec::new();
    for r in &report.hub {
        figures.push(vec![
            format!(
                "hub on {} ({:?}, HTTP/{})",
                r.backend,
                r.connections,
                if r.http1 { "1.1" } else { "2" }
            )
            .to_lowercase(),
            r.created.to_string(),
            r.clients.to_string(),
            r.work_bytes.to_string(),
            format!("{:.0}", r.works_per_second),
            format!("{:.2}", r.latency_ms.p50),
            format!("{:.2}", r.latency_ms.p99),
            format!("{:.2}", r.latency_ms.max),
            r.failed.to_string(),
        ]);
    }
    if let Some(p) = &report.pgbench {
        figures.push(vec![
            "pgbench insert".into(),
            p.transactions.to_string(),
            p.clients.to_string(),
            report
                .hub
                .first()
                .map_or(String::new(), |h| h.work_bytes.to_string()),
            format!("{:.0}", p.tps),
            format!("{:.2}", p.latency_ms.p50),
            format!("{:.2}", p.latency_ms.p99),
            format!("{:.2}", p.latency_ms.max),
            "0".into(),
        ]);
    }
    if let Some(ratio) = report.hub_postgres_over_pgbench {
        let mut row = vec![String::new(); 9];
        row[0] = "hub on postgres / pgbench".into();
        row[4] = format!("{ratio:.2}");
        figures.push(row);
    }
    let mut out = table(
        &[
            "run", "works/tx", "clients", "bytes", "rate /s", "p50 ms", "p99 ms", "max ms",
            "failed",
        ],
        &figures,
    );

    let pg_cells = |pg: Option<&PgActivity>, n: f64| match pg {
        Some(pg) => [
            format!("{:.2}", pg.write_transactions as f64 / n),
            format!("{:.0}", pg.wal_bytes as f64 / n),
        ],
        None => ["-".into(), "-".into()],
    };
    let mut costs = Vec::new();
    for r in &report.hub {
        let n = r.created.max(1) as f64;
        let c = &r.cpu_seconds;
        let [tx, wal] = pg_cells(r.postgres.as_ref(), n);
        costs.push(vec![
            format!("hub on {}", r.backend),
            format!("{:.2}", r.seconds),
            format!("{:.2} / {:.2} / {:.2}", c.hub, c.postgres, c.client),
            format!("{:.2} / {:.2}", c.others_user, c.others_kernel),
            format!(
                "{:.0} / {:.0} / {:.0}",
                c.hub * 1e6 / n,
                c.postgres * 1e6 / n,
                c.client * 1e6 / n
            ),
            format!("{:.0}", r.write_batches),
            format!("{:.1}", r.mean_write_batch),
            tx,
            wal,
        ]);
    }
    if let Some(p) = &report.pgbench {
        let n = p.transactions.max(1) as f64;
        let c = &p.cpu_seconds;
        let [tx, wal] = pg_cells(Some(&p.postgres), n);
        costs.push(vec![
            "pgbench insert".into(),
            format!("{:.2}", p.seconds),
            format!("- / {:.2} / {:.2}", c.postgres, c.client),
            format!("{:.2} / {:.2}", c.others_user, c.others_kernel),
            format!(
                "- / {:.0} / {:.0}",
                c.postgres * 1e6 / n,
                c.client * 1e6 / n
            ),
            p.transactions.to_string(),
            "1.0".into(),
            tx,
            wal,
        ]);
    }
    out.push('\n');
    out.push_str(&table(
        &[
            "run",
            "wall s",
            "CPU s hub / postgres / client",
            "other CPU s user / kernel",
            "CPU µs per work",
            "write batches",
            "mean batch",
            "pg write tx per work",
            "WAL bytes per work",
        ],
        &costs,
    ));

    let runs = report
        .hub
        .iter()
        .filter_map(|r| Some((format!("hub on {}", r.backend), r.postgres.as_ref()?)))
        .chain(
            report
                .pgbench
                .iter()
                .map(|p| ("pgbench insert".to_string(), &p.postgres)),
        );
    for (run, pg) in runs {
        if pg.statements.is_empty() {
            continue;
        }
        let rows: Vec<Vec<String>> = pg
            .statements
            .iter()
            .map(|s| {
                let mut query: String = s.query.chars().take(100).collect();
                if query.len() < s.query.len() {
                    query.push('…');
                }
                vec![
                    s.calls.to_string(),
                    format!("{:.0}", s.total_ms),
                    format!("{:.3}", s.total_ms / s.calls.max(1) as f64),
                    format!("`{}`", query.replace('|', "\\|")),
                ]
            })
            .collect();
        out.push_str(&format!("\nStatements of {run} (pg_stat_statements):\n\n"));
        out.push_str(&table(
            &["calls", "total ms", "mean ms", "statement"],
            &rows,
        ));
    }
    out
}

/// A markdown table.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
    let mut out = line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    out.push_str(&line(&vec!["---".to_string(); header.len()]));
    for row in rows {
        out.push_str(&line(row));
    }
    out
}
