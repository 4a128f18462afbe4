//! `bench backup` (issue 19): a release hub on SQLite holding `--works` works answers a
//! steady, paced write load; the same load is measured without a backup (the baseline)
//! and while `GET /api/v1/backup` copies and streams the whole database. Reports write
//! latencies of both windows, the backup's duration and size.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use api::{ClientConfig, HubClient, ManagedCluster};
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::load::{Connections, CreateLoad, Latencies, create_works, padded_work};
use crate::procs::HubProcess;

/// What to run.
#[derive(Debug, Clone)]
pub struct BackupBench {
    /// Works stored before measuring.
    pub works: usize,
    /// Their approximate JSON size.
    pub work_bytes: usize,
    /// Writes per second of the steady load.
    pub rate: u32,
    /// Concurrent writers of the steady load.
    pub writers: u32,
    /// How long the baseline window lasts.
    pub baseline: Duration,
}

/// Latencies of one window.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    /// Writes acknowledged.
    pub writes: usize,
    /// Writes that failed.
    pub failed: usize,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
}

/// What `bench backup` measured.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    /// Works stored.
    pub works: usize,
    /// Seconds seeding them took.
    pub seed_seconds: f64,
    /// The steady load without a backup.
    pub baseline: Window,
    /// The same load while the backup ran.
    pub during_backup: Window,
    /// Seconds from asking to the last byte written to the file.
    pub backup_seconds: f64,
    /// Size of the backup.
    pub backup_bytes: u64,
    /// `during_backup.p99_ms / baseline.p99_ms`.
    pub p99_ratio: f64,
}

/// A paced load of `rate` writes/s from `writers` tasks on cluster `steady`, until `stop`.
fn steady_load(
    client: &HubClient,
    bench: &BackupBench,
    stop: Arc<AtomicBool>,
    tag: &'static str,
) -> Vec<tokio::task::JoinHandle<(Vec<Duration>, usize)>> {
    let interval = Duration::from_secs_f64(bench.writers as f64 / bench.rate.max(1) as f64);
    (0..bench.writers)
        .map(|w| {
            let (client, stop) = (client.clone(), stop.clone());
            let bytes = bench.work_bytes;
            tokio::spawn(async move {
                let (mut latencies, mut failed) = (Vec::new(), 0);
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    // A few hundred names rewritten over and over: the store stays the size
                    // the bench asked for.
                    let name = format!("{tag}-{w}-{}", i % 200);
                    let work = padded_work("steady", &name, bytes, i);
                    let sent = Instant::now();
                    match client.put_work(&work, None).await {
                        Ok(_) => latencies.push(sent.elapsed()),
                        Err(_) => failed += 1,
                    }
                    i += 1;
                }
                (latencies, failed)
            })
        })
        .collect()
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<(Vec<Duration>, usize)>>) -> Window {
    let (mut all, mut failed) = (Vec::new(), 0);
    for t in tasks {
        if let Ok((l, f)) = t.await {
            all.extend(l);
            failed += f;
        }
    }
    let l = Latencies::new(all);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Window {
        writes: l.len(),
        failed,
        p50_ms: ms(l.quantile(0.5)),
        p99_ms: ms(l.quantile(0.99)),
        max_ms: ms(l.max()),
    }
}

/// Runs the bench on a fresh SQLite hub.
pub async fn run(bench: &BackupBench) -> anyhow::Result<BackupReport> {
    let dir = tempfile::tempdir()?;
    let hub = HubProcess::start(&dir.path().join("hub"), &[]).await?;
    let config = ClientConfig::load(&hub.client_config_path())?;
    let client = HubClient::new(&config)?;
    for c in ["seed", "steady"] {
        client
            .put_cluster(&ManagedCluster::new(c, Default::default()))
            .await?;
    }
    let seeded = Instant::now();
    let seed = create_works(
        &config,
        &CreateLoad {
            cluster: "seed".into(),
            works: bench.works,
            clients: 32,
            work_bytes: bench.work_bytes,
            connections: Connections::Shared,
            time_limit: Duration::from_secs(3600),
            http1: false,
        },
    )
    .await?;
    if seed.created < bench.works {
        bail!(
            "seeding created {} of {} works: {:?}",
            seed.created,
            bench.works,
            seed.first_error
        );
    }
    let seed_seconds = seeded.elapsed().as_secs_f64();
    eprintln!("seeded {} works in {seed_seconds:.1} s", seed.created);

    let stop = Arc::new(AtomicBool::new(false));
    let tasks = steady_load(&client, bench, stop.clone(), "base");
    tokio::time::sleep(bench.baseline).await;
    stop.store(true, Ordering::Relaxed);
    let baseline = collect(tasks).await;

    let stop = Arc::new(AtomicBool::new(false));
    let tasks = steady_load(&client, bench, stop.clone(), "during");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let file = dir.path().join("backup.db");
    let started = Instant::now();
    let mut resp = client
        .request(reqwest::Method::GET, "/api/v1/backup")
        .send()
        .await
        .context("asking for the backup")?;
    if !resp.status().is_success() {
        bail!("backup: HTTP {}: {}", resp.status(), resp.text().await?);
    }
    let mut out = tokio::fs::File::create(&file).await?;
    let mut backup_bytes = 0u64;
    while let Some(chunk) = resp.chunk().await? {
        out.write_all(&chunk).await?;
        backup_bytes += chunk.len() as u64;
    }
    out.flush().await?;
    let backup_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let during_backup = collect(tasks).await;
    drop(hub);
    Ok(BackupReport {
        works: seed.created,
        seed_seconds,
        p99_ratio: during_backup.p99_ms / baseline.p99_ms.max(1e-9),
        baseline,
        during_backup,
        backup_seconds,
        backup_bytes,
    })
}
