//! A fleet of simulated agents against a real hub, on loopback: the load generator of
//! `bench fleet`.
//!
//! Each simulated agent does what a `klusterlet run` does on the wire, minus Kubernetes:
//! it joins through the real registration (an auto-accept bootstrap token, its own P-256
//! key, `POST /registrations`, then `POST /clusters/{c}/credentials` with a JWT signed by
//! that key), renews its lease every lease interval, follows its cluster's works with
//! blocking lists, and reports each new generation `Applied` through `PUT .../status`.
//! Writers meanwhile create works at a target rate, spread over the agents' clusters.
//!
//! Measured: the create rate reached, hub-write → status-received latency (from the start
//! of the writer's PUT to the end of the agent's status PUT, both in this process), the
//! hub's RSS and CPU, and (on Postgres) the database bytes per work.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use api::{
    ClientConfig, HubClient, LeaseRenewal, ListOptions, ManifestWork, ManifestWorkStatus,
    RegistrationRequest, TokenRequest,
};
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;
use tokio::sync::{Mutex, Semaphore, watch};

use crate::load::{CpuTime, Latencies, padded_work};

/// What `bench fleet` runs.
#[derive(Debug, Clone)]
pub struct FleetLoad {
    /// Simulated agents (each its own cluster, key and HTTPS connections).
    pub agents: usize,
    /// Joins in flight at once while the fleet assembles.
    pub join_concurrency: usize,
    /// Work creates per second, spread round-robin over the agents' clusters.
    pub rate: f64,
    /// How long the writers write.
    pub duration: Duration,
    /// Stop after this many creates, even if time remains (OCM's scenario: 5 per cluster).
    pub max_works: Option<usize>,
    /// Approximate JSON size of each work.
    pub work_bytes: usize,
    /// How often each agent renews its lease (the hub's `--lease-interval`).
    pub lease_interval: Duration,
    /// Whether every agent renews in the same phase instead of a random one.
    pub aligned_leases: bool,
    /// The hub's Postgres, to measure how much the database grows while works are
    /// written (the fleet's own rows, written while it joins, are left out).
    pub postgres_url: Option<String>,
    /// How long to wait, after the writers stop, for the last statuses.
    pub drain: Duration,
    /// After the drain, how long the fleet stays joined and renewing, writing nothing,
    /// before the hub's settled RSS is read (the median of samples over its last 5 s).
    pub settle: Duration,
}

/// What one `bench fleet` run measured.
#[derive(Debug, Serialize)]
pub struct FleetReport {
    /// Agents asked to join.
    pub agents: usize,
    /// Agents that joined and followed their works.
    pub joined: usize,
    /// Seconds from the first join to the last.
    pub join_seconds: f64,
    /// The first join error, if any.
    pub first_join_error: Option<String>,
    /// Works the writers created (2xx).
    pub works_created: usize,
    /// Creates the hub refused or that failed.
    pub create_failures: usize,
    /// The first create error, if any.
    pub first_create_error: Option<String>,
    /// The rate asked for, and the rate reached, in creates per second.
    pub target_rate: f64,
    pub achieved_rate: f64,
    /// Statuses the agents delivered for created works.
    pub statuses: usize,
    /// Created works whose status never arrived before the drain ran out.
    pub missing_statuses: usize,
    /// Hub write (PUT start) → the agent's status PUT acknowledged, in ms.
    pub write_to_status_ms: LatencyMs,
    /// The p99 of the writes started in each 5 s of the write phase, in ms.
    pub write_to_status_p99_ms_by_5s: Vec<f64>,
    /// From the start of the first write to the last status received, in seconds.
    pub last_status_after_seconds: f64,
    /// Lease renewals the agents made during the write phase, and how many failed.
    pub lease_renewals: u64,
    pub lease_failures: u64,
    /// The hub's resident memory: at the start of the write phase, its peak, and at the
    /// end, in MiB.
    pub hub_rss_mib_idle_fleet: f64,
    pub hub_rss_mib_peak: f64,
    /// The hub's resident memory once the fleet has stayed joined and renewing, with no
    /// writes, for `settle`: the median of samples over its last 5 s, in MiB. The idle
    /// figure comes 2 s after the last join and moves with the joins' garbage.
    pub hub_rss_mib_settled: f64,
    /// The hub's CPU during the write phase, in seconds and in millicores.
    pub hub_cpu_seconds: f64,
    pub hub_millicores: f64,
    /// This process's CPU (the simulated fleet and the writers), in seconds.
    pub load_cpu_seconds: f64,
    /// Postgres: the database's growth during the write phase over the works created.
    pub postgres_bytes_per_work: Option<f64>,
    /// Postgres: each table's growth (with indexes and TOAST) over the works created.
    pub postgres_table_bytes_per_work: std::collections::BTreeMap<String, f64>,
    /// Postgres: the growth of each table's heap, each index and each TOAST table apart,
    /// over the works created (where the bytes of a table go).
    pub postgres_relation_bytes_per_work: std::collections::BTreeMap<String, f64>,
}

/// The database's size and each table's (with indexes and TOAST), in bytes.
async fn database_sizes(db: &sqlx::PgPool) -> anyhow::Result<(i64, HashMap<String, i64>)> {
    let (total,): (i64,) = sqlx::query_as("SELECT pg_database_size(current_database())")
        .fetch_one(db)
        .await?;
    let tables: Vec<(String, i64)> = sqlx::query_as(
        "SELECT relname::text, pg_total_relation_size(relid) FROM pg_catalog.pg_statio_user_tables",
    )
    .fetch_all(db)
    .await?;
    Ok((total, tables.into_iter().collect()))
}

/// The size of every table heap, index and TOAST table of the hub's schema, by name (a
/// TOAST table by its table's name with `(toast)`).
async fn relation_sizes(db: &sqlx::PgPool) -> anyhow::Result<HashMap<String, i64>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT c.relname::text, pg_relation_size(c.oid) FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'i') \
         UNION ALL \
         SELECT c.relname::text || ' (toast)', pg_total_relation_size(c.reltoastrelid) \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.reltoastrelid <> 0",
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Latency quantiles in milliseconds.
#[derive(Debug, Serialize)]
pub struct LatencyMs {
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl From<&Latencies> for LatencyMs {
    fn from(l: &Latencies) -> Self {
        let ms = |d: Duration| (d.as_secs_f64() * 1e5).round() / 100.0;
        LatencyMs {
            n: l.len(),
            p50: ms(l.quantile(0.5)),
            p90: ms(l.quantile(0.9)),
            p99: ms(l.quantile(0.99)),
            max: ms(l.max()),
        }
    }
}

/// When each work's create started, and the latencies measured so far.
#[derive(Default)]
pub(crate) struct Ledger {
    started: HashMap<(String, String), Instant>,
    /// (when the write started, its latency).
    latencies: Vec<(Instant, Duration)>,
    reported: usize,
    /// Agents whose first list has returned: they are following their works.
    listed: usize,
    /// When the agent's `Applied` status of each (cluster, work)'s latest generation was
    /// acknowledged, whoever wrote the work (`bench placement`: the hub's set controller).
    pub(crate) applied: HashMap<(String, String), Instant>,
}

/// Counters shared by the agents.
#[derive(Default)]
pub(crate) struct Leases {
    renewals: std::sync::atomic::AtomicU64,
    failures: std::sync::atomic::AtomicU64,
}

/// Raises this process's open-file limit to its hard limit: every agent holds a few
/// HTTPS connections, and the default soft limit (1,024) runs out near 300 agents.
pub fn raise_open_file_limit() -> anyhow::Result<u64> {
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    rlimit::setrlimit(rlimit::Resource::NOFILE, hard, hard)?;
    Ok(hard)
}

/// The resident set of a process, in MiB.
/// The median of `pid`'s RSS sampled every 250 ms over the last 5 s (at most) of `settle`.
async fn settled_rss_mib(pid: u32, settle: Duration) -> anyhow::Result<f64> {
    let window = settle.min(Duration::from_secs(5));
    tokio::time::sleep(settle - window).await;
    let mut samples = vec![rss_mib(pid)?];
    let until = Instant::now() + window;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(250)).await;
        samples.push(rss_mib(pid)?);
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

pub fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .context("no VmRSS")?
        .parse()?;
    Ok(kib / 1024.0)
}

/// Runs the fleet against a hub whose admin client is `admin`, whose client config (CA,
/// server) is `cfg` and whose process is `hub_pid`.
pub async fn run_fleet(
    admin: &HubClient,
    cfg: &ClientConfig,
    hub_pid: u32,
    load: &FleetLoad,
) -> anyhow::Result<FleetReport> {
    let token = admin
        .create_token(&TokenRequest {
            auto_accept: true,
            description: "bench fleet".into(),
            ..Default::default()
        })
        .await?
        .token
        .context("no token secret")?;
    let mut bootstrap_cfg = cfg.clone();
    bootstrap_cfg.token = Some(token);

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let leases = Arc::new(Leases::default());
    let (stop_tx, stop) = watch::channel(false);

    // Assemble the fleet: every agent joins, then follows its works in its own task.
    eprintln!("fleet: {} agents joining", load.agents);
    let keys = {
        let n = load.agents;
        tokio::task::spawn_blocking(move || {
            (0..n)
                .map(|_| klusterlet::hub::identity::AgentKey::generate())
                .collect::<Result<Vec<_>, _>>()
        })
        .await??
    };
    let join_started = Instant::now();
    let joins: Vec<anyhow::Result<(String, HubClient)>> =
        futures::stream::iter(keys.into_iter().enumerate().map(|(i, key)| {
            let cfg = bootstrap_cfg.clone();
            async move {
                let name = format!("sim-{i:05}");
                let client = join(&cfg, &name, &key).await?;
                Ok((name, client))
            }
        }))
        .buffer_unordered(load.join_concurrency.max(1))
        .collect()
        .await;
    let join_seconds = join_started.elapsed().as_secs_f64();
    let mut clusters = Vec::new();
    let mut agents = Vec::new();
    let mut first_join_error = None;
    for j in joins {
        match j {
            Ok((name, client)) => {
                agents.push(tokio::spawn(follow(
                    client.clone(),
                    name.clone(),
                    ledger.clone(),
                    stop.clone(),
                )));
                agents.push(tokio::spawn(renew(
                    client,
                    name.clone(),
                    load.lease_interval,
                    load.aligned_leases,
                    leases.clone(),
                    stop.clone(),
                )));
                clusters.push(name);
            }
            Err(e) => {
                first_join_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    if clusters.is_empty() {
        bail!("no agent joined: {}", first_join_error.unwrap_or_default());
    }
    eprintln!(
        "fleet: {} joined in {join_seconds:.1} s; writing {:.0} works/s for {:?}",
        clusters.len(),
        load.rate,
        load.duration
    );
    // Let every follower's first list return and its blocking list settle before timing
    // anything: 10,000 first lists take the hub longer than the 2 s this used to wait, and
    // the writes of the first seconds timed the fleet's start, not its steady state.
    let following = Instant::now();
    while ledger.lock().await.listed < clusters.len()
        && following.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "fleet: {} of {} agents following {:.1} s after the last join",
        ledger.lock().await.listed,
        clusters.len(),
        following.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The write phase.
    let db = match &load.postgres_url {
        Some(url) => Some(sqlx::PgPool::connect(url).await?),
        None => None,
    };
    let sizes_before = match &db {
        Some(db) => Some((database_sizes(db).await?, relation_sizes(db).await?)),
        None => None,
    };
    let rss_idle = rss_mib(hub_pid)?;
    let peak = Arc::new(std::sync::Mutex::new(rss_idle));
    let sampler = {
        let peak = peak.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(250));
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = stop.changed() => return,
                }
                if let Ok(r) = rss_mib(hub_pid)
                    && let Ok(mut p) = peak.lock()
                {
                    *p = p.max(r);
                }
            }
        })
    };
    let leases_before = (
        leases.renewals.load(std::sync::atomic::Ordering::Relaxed),
        leases.failures.load(std::sync::atomic::Ordering::Relaxed),
    );
    let hub_cpu0 = CpuTime::of(hub_pid)?.total().total();
    let own_cpu0 = CpuTime::current()?.total().total();
    let write_started = Instant::now();
    let in_flight = Arc::new(Semaphore::new(256));
    let mut writes = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / load.rate.max(0.001)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut i = 0usize;
    while write_started.elapsed() < load.duration && load.max_works.is_none_or(|m| i < m) {
        tick.tick().await;
        let permit = in_flight.clone().acquire_owned().await?;
        let cluster = clusters[i % clusters.len()].clone();
        let name = format!("w-{i:07}");
        let work = padded_work(&cluster, &name, load.work_bytes, i as u64);
        let admin = admin.clone();
        let ledger = ledger.clone();
        writes.push(tokio::spawn(async move {
            let _permit = permit;
            // Recorded before the PUT: the agent may report before the PUT returns.
            ledger
                .lock()
                .await
                .started
                .insert((cluster, name), Instant::now());
            admin.put_work(&work, None).await.map(|_| ())
        }));
        i += 1;
    }
    let mut works_created = 0;
    let mut create_failures = 0;
    let mut first_create_error = None;
    for w in writes {
        match w.await? {
            Ok(()) => works_created += 1,
            Err(e) => {
                create_failures += 1;
                first_create_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let write_seconds = write_started.elapsed().as_secs_f64();
    let hub_cpu = CpuTime::of(hub_pid)?.total().total() - hub_cpu0;
    let own_cpu = CpuTime::current()?.total().total() - own_cpu0;
    let renewals = leases.renewals.load(std::sync::atomic::Ordering::Relaxed) - leases_before.0;
    let lease_failures =
        leases.failures.load(std::sync::atomic::Ordering::Relaxed) - leases_before.1;

    // Drain: wait for the statuses still on their way.
    let drain_until = Instant::now() + load.drain;
    while Instant::now() < drain_until {
        if ledger.lock().await.reported >= works_created {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Still joined and renewing (the agents stop below), writing nothing.
    let rss_settled = settled_rss_mib(hub_pid, load.settle).await?;
    let _ = stop_tx.send(true);
    sampler.abort();
    for a in agents {
        a.abort();
    }
    let mut postgres_bytes_per_work = None;
    let mut postgres_table_bytes_per_work = std::collections::BTreeMap::new();
    let mut postgres_relation_bytes_per_work = std::collections::BTreeMap::new();
    if let (Some(db), Some(((total0, tables0), relations0))) = (&db, &sizes_before) {
        let (total, tables) = database_sizes(db).await?;
        let per_work = |b: i64| b as f64 / works_created.max(1) as f64;
        postgres_bytes_per_work = Some(per_work(total - total0));
        for (table, size) in tables {
            let grown = size - tables0.get(&table).copied().unwrap_or(0);
            if grown != 0 {
                postgres_table_bytes_per_work.insert(table, per_work(grown).round());
            }
        }
        for (relation, size) in relation_sizes(db).await? {
            let grown = size - relations0.get(&relation).copied().unwrap_or(0);
            if grown != 0 {
                postgres_relation_bytes_per_work.insert(relation, per_work(grown).round());
            }
        }
    }
    let ledger = ledger.lock().await;
    let latencies = Latencies::new(ledger.latencies.iter().map(|(_, l)| *l).collect());
    // The p99 of each 5 s of the write phase: bursts (lease renewals, blocking queries
    // expiring together) show as slices, not as a p99 of the whole run.
    let mut slices: Vec<Vec<Duration>> = Vec::new();
    for (started, latency) in &ledger.latencies {
        let slice = (started.saturating_duration_since(write_started).as_secs() / 5) as usize;
        if slices.len() <= slice {
            slices.resize(slice + 1, Vec::new());
        }
        slices[slice].push(*latency);
    }
    // From the first write to the last status: OCM's perf scenario ("until all Applied").
    let last_status_after = ledger
        .latencies
        .iter()
        .map(|(started, latency)| started.saturating_duration_since(write_started) + *latency)
        .max()
        .unwrap_or_default();
    let p99_by_5s: Vec<f64> = slices
        .into_iter()
        .map(|l| LatencyMs::from(&Latencies::new(l)).p99)
        .collect();
    let peak = *peak
        .lock()
        .map_err(|_| anyhow::anyhow!("sampler panicked"))?;
    Ok(FleetReport {
        agents: load.agents,
        joined: clusters.len(),
        join_seconds,
        first_join_error,
        works_created,
        create_failures,
        first_create_error,
        target_rate: load.rate,
        achieved_rate: works_created as f64 / write_seconds,
        statuses: ledger.reported,
        missing_statuses: works_created.saturating_sub(ledger.reported),
        write_to_status_ms: (&latencies).into(),
        write_to_status_p99_ms_by_5s: p99_by_5s,
        last_status_after_seconds: last_status_after.as_secs_f64(),
        lease_renewals: renewals,
        lease_failures,
        hub_rss_mib_idle_fleet: (rss_idle * 10.0).round() / 10.0,
        hub_rss_mib_peak: (peak * 10.0).round() / 10.0,
        hub_rss_mib_settled: (rss_settled * 10.0).round() / 10.0,
        hub_cpu_seconds: hub_cpu,
        hub_millicores: hub_cpu * 1000.0 / write_seconds,
        load_cpu_seconds: own_cpu,
        postgres_bytes_per_work,
        postgres_table_bytes_per_work,
        postgres_relation_bytes_per_work,
    })
}

/// Joins as `name` with `key` through the real handshake; returns the agent's client,
/// authenticated with its access token.
pub(crate) async fn join(
    cfg: &ClientConfig,
    name: &str,
    key: &klusterlet::hub::identity::AgentKey,
) -> anyhow::Result<HubClient> {
    let bootstrap = HubClient::new(cfg)?;
    let reg = bootstrap
        .register(&RegistrationRequest {
            cluster_name: name.to_string(),
            public_key: key.public_key_pem().to_string(),
            ..Default::default()
        })
        .await?;
    if reg.state != api::RegistrationState::Accepted {
        bail!("{name}: registration {:?}, not Accepted", reg.state);
    }
    let assertion = key.cluster_assertion(name)?;
    let access = bootstrap
        .with_token(None)
        .credentials(name, &assertion)
        .await?;
    Ok(bootstrap.with_token(Some(access.access_token)))
}

/// Renews the lease every `interval` until stopped, as `klusterlet run` does.
pub(crate) async fn renew(
    client: HubClient,
    name: String,
    interval: Duration,
    aligned: bool,
    leases: Arc<Leases>,
    mut stop: watch::Receiver<bool>,
) {
    // Real agents joined at different times, so their renewals are spread over the
    // interval; agents that all joined in the same few seconds would renew in step, a
    // burst every interval that no real fleet sends. Each starts at a random phase.
    let phase = if aligned {
        Duration::ZERO
    } else {
        interval.mul_f64(rand::random::<f64>())
    };
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + phase, interval);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => return,
        }
        let counter = match client.renew_lease(&name, &LeaseRenewal::default()).await {
            Ok(_) => &leases.renewals,
            Err(_) => &leases.failures,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Follows the cluster's works with blocking lists and reports every new generation
/// Applied, as `klusterlet run` does once it has applied a work.
pub(crate) async fn follow(
    client: HubClient,
    name: String,
    ledger: Arc<Mutex<Ledger>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut index = None;
    loop {
        let opts = ListOptions {
            index,
            wait: Some(Duration::from_secs(30)),
            ..Default::default()
        };
        let list = tokio::select! {
            l = client.list_works(Some(&name), &opts) => l,
            _ = stop.changed() => return,
        };
        let list = match list {
            Ok(l) => l,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if index.is_none() {
            ledger.lock().await.listed += 1;
        }
        for w in &list.value.items {
            if reported(w) {
                continue;
            }
            if client
                .put_work_status(&name, &w.metadata.name, &applied(w))
                .await
                .is_ok()
            {
                let mut l = ledger.lock().await;
                l.applied
                    .insert((name.clone(), w.metadata.name.clone()), Instant::now());
                if let Some(started) = l.started.remove(&(name.clone(), w.metadata.name.clone())) {
                    l.latencies.push((started, started.elapsed()));
                    l.reported += 1;
                }
            }
        }
        index = Some(list.index.max(list.value.metadata.index));
    }
}

/// Whether the work's status already answers its current generation.
fn reported(w: &ManifestWork) -> bool {
    w.condition("Applied")
        .is_some_and(|c| c.observed_generation == w.metadata.generation)
}

/// The status a real agent writes after applying every manifest of the work.
fn applied(w: &ManifestWork) -> ManifestWorkStatus {
    let generation = w.metadata.generation;
    serde_json::from_value(json!({
        "conditions": [{
            "type": "Applied",
            "status": "True",
            "reason": "AppliedManifestWorkComplete",
            "message": "simulated agent",
            "observedGeneration": generation,
            "lastTransitionTime": chrono::Utc::now(),
        }]
    }))
    .unwrap_or_default()
}
