//! The load of the high-availability tests (`tests/tests/postgres_ha.rs`): writers through
//! the REST API, simulated agents through the real hub protocol and a blocking reader,
//! each keeping what it saw so that a fault's cost can be counted afterwards.
//!
//! * [`Writers`]: `n` clients each creating works, one at a time, at a steady pace, into
//!   one cluster that no agent follows (so every work changes exactly once: its creation,
//!   whose change index is its resourceVersion). A write that fails is never retried
//!   under the same name: whether it committed is unknown, and only acknowledged writes
//!   count.
//! * [`Fleet`]: simulated agents (the registration handshake of [`crate::fleet`]) that
//!   renew their leases and follow their cluster's works with blocking lists, retrying
//!   every half second after a failure, as a klusterlet backs off.
//! * [`Reader`]: one blocking reader of the writers' cluster, recording every answer.
//!
//! [`Verdict::check`] reads every acknowledged work back and compares with the reader;
//! [`KeptLogs`] keeps the logs of the processes under test after the rig is gone.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use api::{ClientConfig, HubClient, LeaseRenewal, ListOptions, TokenRequest};
use futures::StreamExt;
use tokio::sync::watch;

use crate::load::padded_work;

/// One acknowledged write.
#[derive(Debug, Clone)]
pub struct Ack {
    /// The work's name.
    pub name: String,
    /// The index the hub answered with (`X-Hub-Index`).
    pub index: u64,
    /// When the request started and when its answer came.
    pub started: Instant,
    /// When the answer came.
    pub done: Instant,
}

/// One failed write.
#[derive(Debug, Clone)]
struct Failure {
    started: Instant,
    done: Instant,
    /// Which writer (each keeps one connection, so one hub behind the balancer).
    writer: usize,
    error: String,
}

#[derive(Default)]
struct WriteLog {
    acks: Vec<Ack>,
    failures: Vec<Failure>,
    first_error: Option<String>,
}

/// Clients creating works at a steady pace; see the module docs.
pub struct Writers {
    log: Arc<Mutex<WriteLog>>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The cluster written to.
    pub cluster: String,
}

impl Writers {
    /// Starts `n` writers into `cluster` (which must exist), each with a client (so a
    /// connection) of its own to `cfg`'s hub and starting a write every `pace` (or right
    /// after the previous answer, when that came later).
    pub fn start(
        cfg: &ClientConfig,
        cluster: &str,
        n: usize,
        pace: Duration,
    ) -> anyhow::Result<Writers> {
        let log = Arc::new(Mutex::new(WriteLog::default()));
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        for w in 0..n {
            let client = HubClient::new(cfg)?;
            tasks.push({
                let (log, cluster) = (log.clone(), cluster.to_string());
                let mut stopped = stopped.clone();
                tokio::spawn(async move {
                    let mut every = tokio::time::interval(pace);
                    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    for seq in 0u64.. {
                        tokio::select! {
                            _ = every.tick() => {}
                            _ = stopped.changed() => return,
                        }
                        let name = format!("{cluster}-w{w}-{seq:06}");
                        let work = padded_work(&cluster, &name, 300, seq * 64 + w as u64);
                        let started = Instant::now();
                        let answer = tokio::time::timeout(
                            Duration::from_secs(30),
                            client.put_work(&work, None),
                        )
                        .await;
                        let done = Instant::now();
                        let mut log = log.lock().expect("write log");
                        let error = match answer {
                            Ok(Ok(put)) => {
                                log.acks.push(Ack {
                                    name,
                                    index: put.index,
                                    started,
                                    done,
                                });
                                continue;
                            }
                            Ok(Err(e)) => e.to_string(),
                            Err(_) => "timed out after 30 s".to_string(),
                        };
                        log.first_error.get_or_insert_with(|| error.clone());
                        log.failures.push(Failure {
                            started,
                            done,
                            writer: w,
                            error,
                        });
                    }
                })
            });
        }
        Ok(Writers {
            log,
            stop,
            tasks,
            cluster: cluster.to_string(),
        })
    }

    /// Seconds from `fault` until the first write that started after it was acknowledged.
    pub fn writes_back_after(&self, fault: Instant) -> Option<f64> {
        let log = self.log.lock().expect("write log");
        log.acks
            .iter()
            .filter(|a| a.started >= fault)
            .map(|a| a.done.duration_since(fault).as_secs_f64())
            .reduce(f64::min)
    }

    /// Seconds from `fault` until writes worked again: until the first acknowledged write
    /// that started after the last write that failed or took over a second (of those
    /// answered after `fault`). 0 when none did.
    pub fn back_after(&self, fault: Instant) -> Option<f64> {
        let log = self.log.lock().expect("write log");
        let slow = Duration::from_secs(1);
        let last_bad = log
            .failures
            .iter()
            .filter(|f| f.done >= fault)
            .map(|f| f.started)
            .chain(
                log.acks
                    .iter()
                    .filter(|a| a.done >= fault && a.done.duration_since(a.started) > slow)
                    .map(|a| a.started),
            )
            .max();
        let Some(last_bad) = last_bad else {
            return Some(0.0);
        };
        log.acks
            .iter()
            .filter(|a| a.started > last_bad)
            .map(|a| a.done.saturating_duration_since(fault).as_secs_f64())
            .reduce(f64::min)
    }

    /// When the last failed write was answered.
    pub fn last_failure(&self) -> Option<Instant> {
        let log = self.log.lock().expect("write log");
        log.failures.iter().map(|f| f.done).max()
    }

    /// When writes failed, relative to `fault` (seconds, negative before it): the first
    /// and last failed write's start, how many failed after it, and the slowest
    /// acknowledgement of a write answered after it; then the same per writer, with its
    /// last error. Each writer keeps one connection to one hub behind the balancer, so a
    /// writer failing alone points at one hub.
    pub fn timeline(&self, fault: Instant) -> String {
        let log = self.log.lock().expect("write log");
        let rel = |t: Instant| {
            if t >= fault {
                t.duration_since(fault).as_secs_f64()
            } else {
                -fault.duration_since(t).as_secs_f64()
            }
        };
        let starts: Vec<f64> = log.failures.iter().map(|f| rel(f.started)).collect();
        let first = starts.iter().copied().reduce(f64::min);
        let last = starts.iter().copied().reduce(f64::max);
        let after = log.failures.iter().filter(|f| f.done >= fault).count();
        let mut writers: BTreeMap<usize, Vec<&Failure>> = BTreeMap::new();
        for f in log.failures.iter().filter(|f| f.done >= fault) {
            writers.entry(f.writer).or_default().push(f);
        }
        let per_writer: String = writers
            .iter()
            .map(|(w, fs)| {
                let first = fs.iter().map(|f| rel(f.started)).reduce(f64::min);
                let last = fs.iter().map(|f| rel(f.started)).reduce(f64::max);
                let error = fs.last().map_or("", |f| f.error.as_str());
                format!(
                    "\n  writer {w}: {} failed, started {first:.1?}..{last:.1?} s, last: {error}",
                    fs.len()
                )
            })
            .collect();
        let slowest = log
            .acks
            .iter()
            .filter(|a| a.done >= fault)
            .map(|a| a.done.duration_since(a.started).as_secs_f64())
            .reduce(f64::max)
            .unwrap_or(0.0);
        format!(
            "failed writes started {first:.1?}..{last:.1?} s, {after} answered after the \
             fault; slowest ack after it {slowest:.2} s{per_writer}"
        )
    }

    /// Waits until a write that started after `fault` was acknowledged, or `timeout`.
    pub async fn wait_writes_back(&self, fault: Instant, timeout: Duration) -> Option<f64> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.writes_back_after(fault) {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the writers (each finishes its write in flight) and returns what they saw.
    pub async fn stop(self) -> WriteSummary {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let log = std::mem::take(&mut *self.log.lock().expect("write log"));
        WriteSummary {
            cluster: self.cluster.clone(),
            acks: log.acks,
            failures: log.failures.len(),
            first_error: log.first_error,
        }
    }
}

/// What the writers did.
#[derive(Debug)]
pub struct WriteSummary {
    /// The cluster written to.
    pub cluster: String,
    /// Every acknowledged write.
    pub acks: Vec<Ack>,
    /// Writes answered with an error (or not at all within 30 s).
    pub failures: usize,
    /// The first of those errors.
    pub first_error: Option<String>,
}

/// One answer of the blocking reader: its index and the works it listed (name →
/// resourceVersion).
struct Seen {
    index: u64,
    works: HashMap<String, String>,
}

/// A blocking reader of one cluster's works; see the module docs.
pub struct Reader {
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Reader {
    /// Starts following `cluster`'s works from the current index.
    pub fn start(client: &HubClient, cluster: &str) -> Reader {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = watch::channel(false);
        let (client, cluster, log) = (client.clone(), cluster.to_string(), seen.clone());
        let task = tokio::spawn(async move {
            let mut index = None;
            loop {
                let opts = ListOptions {
                    index,
                    wait: Some(Duration::from_secs(10)),
                    ..Default::default()
                };
                let list = tokio::select! {
                    l = client.list_works(Some(&cluster), &opts) => l,
                    _ = stopped.changed() => return,
                };
                match list {
                    Ok(list) => {
                        let at = list.index.max(list.value.metadata.index);
                        let works = list
                            .value
                            .items
                            .iter()
                            .map(|w| {
                                (
                                    w.metadata.name.clone(),
                                    w.metadata.resource_version.clone().unwrap_or_default(),
                                )
                            })
                            .collect();
                        log.lock()
                            .expect("reader log")
                            .push(Seen { index: at, works });
                        index = Some(at);
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        Reader { seen, stop, task }
    }

    async fn stop(self) -> Vec<Seen> {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        std::mem::take(&mut *self.seen.lock().expect("reader log"))
    }
}

/// What a fault cost, counted after the load stopped.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Acknowledged writes.
    pub acked: usize,
    /// Writes answered with an error.
    pub failed: usize,
    /// Acknowledged works not found when read back.
    pub lost: Vec<String>,
    /// Works the reader saw with two different resourceVersions (a write applied twice).
    pub duplicates: Vec<String>,
    /// Acknowledged works the reader's answer at an index at or past theirs did not list.
    pub missing: Vec<String>,
    /// Times the reader's index went backwards.
    pub index_regressions: usize,
    /// The first write error.
    pub first_error: Option<String>,
}

impl Verdict {
    /// Stops the reader and counts: reads every acknowledged work back (one get each) and
    /// checks every answer of the reader against the acknowledgements.
    pub async fn check(
        client: &HubClient,
        writes: WriteSummary,
        reader: Reader,
    ) -> anyhow::Result<Verdict> {
        // Let the reader see the last writes.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let seen = reader.stop().await;
        let mut verdict = Verdict {
            acked: writes.acks.len(),
            failed: writes.failures,
            first_error: writes.first_error,
            ..Default::default()
        };
        {
            let cluster = &writes.cluster;
            let lost: Vec<Option<String>> = futures::stream::iter(writes.acks.iter())
                .map(|a| async move {
                    // A transient failure is asked again; only "not there" counts as lost.
                    let mut last = String::new();
                    for _ in 0..10 {
                        match client
                            .get_work(cluster, &a.name, &ListOptions::default())
                            .await
                        {
                            Ok(_) => return None,
                            Err(e) if api::retry::is_transient(&e) => last = e.to_string(),
                            Err(e) => return Some(format!("{}: {e}", a.name)),
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Some(format!("{}: {last}", a.name))
                })
                .buffer_unordered(16)
                .collect()
                .await;
            verdict.lost = lost.into_iter().flatten().collect();
        }
        let mut versions: BTreeMap<&str, &str> = BTreeMap::new();
        let mut last = 0;
        for s in &seen {
            if s.index < last {
                verdict.index_regressions += 1;
            }
            last = last.max(s.index);
            for (name, rv) in &s.works {
                match versions.get(name.as_str()) {
                    Some(v) if *v != rv.as_str() => {
                        if !verdict.duplicates.contains(name) {
                            verdict.duplicates.push(name.clone());
                        }
                    }
                    _ => {
                        versions.insert(name, rv);
                    }
                }
            }
        }
        for a in &writes.acks {
            // Every answer at or past the write's index must list it.
            if seen
                .iter()
                .any(|s| s.index >= a.index && !s.works.contains_key(&a.name))
            {
                verdict.missing.push(a.name.clone());
            }
        }
        Ok(verdict)
    }

    /// Whether nothing was lost, duplicated or missed.
    pub fn clean(&self) -> bool {
        self.lost.is_empty()
            && self.duplicates.is_empty()
            && self.missing.is_empty()
            && self.index_regressions == 0
    }
}

/// Simulated agents; see the module docs.
pub struct Fleet {
    /// Per agent, when its lease was last renewed.
    renewed: Arc<Vec<Mutex<Option<Instant>>>>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Fleet {
    /// Joins `agents` simulated agents (clusters `{prefix}-NNN`) through `cfg`'s hub with an
    /// auto-accept token made by `admin`, then starts each agent's lease renewal (every
    /// `lease_interval`) and blocking follow of its works.
    pub async fn join(
        admin: &HubClient,
        cfg: &ClientConfig,
        prefix: &str,
        agents: usize,
        lease_interval: Duration,
    ) -> anyhow::Result<Fleet> {
        let token = admin
            .create_token(&TokenRequest {
                auto_accept: true,
                description: "ha fleet".into(),
                ..Default::default()
            })
            .await?
            .token
            .context("no token secret")?;
        let mut bootstrap = cfg.clone();
        bootstrap.token = Some(token);
        let keys = tokio::task::spawn_blocking(move || {
            (0..agents)
                .map(|_| klusterlet::hub::identity::AgentKey::generate())
                .collect::<Result<Vec<_>, _>>()
        })
        .await??;
        let joined: Vec<anyhow::Result<(String, HubClient)>> =
            futures::stream::iter(keys.into_iter().enumerate().map(|(i, key)| {
                let cfg = bootstrap.clone();
                let name = format!("{prefix}-{i:03}");
                async move {
                    let client = crate::fleet::join(&cfg, &name, &key).await?;
                    Ok((name, client))
                }
            }))
            .buffer_unordered(8)
            .collect()
            .await;
        let renewed: Arc<Vec<Mutex<Option<Instant>>>> =
            Arc::new((0..agents).map(|_| Mutex::new(None)).collect());
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        for (i, j) in joined.into_iter().enumerate() {
            let (name, client) = j?;
            let (renewed, mut stopped_r) = (renewed.clone(), stopped.clone());
            let (c, n) = (client.clone(), name.clone());
            tasks.push(tokio::spawn(async move {
                // A random phase, as agents that joined at different times renew.
                let phase = lease_interval.mul_f64(rand::random::<f64>());
                tokio::time::sleep(phase).await;
                loop {
                    let wait = match c.renew_lease(&n, &LeaseRenewal::default()).await {
                        Ok(_) => {
                            *renewed[i].lock().expect("lease log") = Some(Instant::now());
                            lease_interval
                        }
                        Err(_) => Duration::from_millis(500),
                    };
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stopped_r.changed() => return,
                    }
                }
            }));
            let mut stopped_f = stopped.clone();
            tasks.push(tokio::spawn(async move {
                let mut index = None;
                loop {
                    let opts = ListOptions {
                        index,
                        wait: Some(Duration::from_secs(30)),
                        ..Default::default()
                    };
                    let list = tokio::select! {
                        l = client.list_works(Some(&name), &opts) => l,
                        _ = stopped_f.changed() => return,
                    };
                    match list {
                        Ok(l) => index = Some(l.index.max(l.value.metadata.index)),
                        Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                    }
                }
            }));
        }
        Ok(Fleet {
            renewed,
            stop,
            tasks,
        })
    }

    /// Seconds from `fault` until every agent had renewed its lease after it; `None` while
    /// some has not.
    pub fn all_renewed_after(&self, fault: Instant) -> Option<f64> {
        let mut latest: f64 = 0.0;
        for r in self.renewed.iter() {
            match *r.lock().expect("lease log") {
                Some(t) if t > fault => latest = latest.max(t.duration_since(fault).as_secs_f64()),
                _ => return None,
            }
        }
        Some(latest)
    }

    /// Agents that have not renewed since `fault`.
    pub fn not_renewed_since(&self, fault: Instant) -> usize {
        self.renewed
            .iter()
            .filter(|r| !r.lock().expect("lease log").is_some_and(|t| t > fault))
            .count()
    }

    /// Waits until every agent renewed after `fault`, or `timeout`.
    pub async fn wait_all_renewed(&self, fault: Instant, timeout: Duration) -> Option<f64> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.all_renewed_after(fault) {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops every agent.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

/// Names the directory into which [`KeptLogs`] copies the rig's logs after every run.
pub const LOG_DIR_ENV: &str = "FLEETHUB_HA_LOG_DIR";

/// The logs of a rig's processes (hubs, HAProxy, Patroni), copied out before the rig
/// removes its directories: into `$FLEETHUB_HA_LOG_DIR` after every run when it is set,
/// else, only when the test fails, into a directory of the system's temporary directory.
/// Either way the test's output says where, since the cause of a slow or failed run is
/// in them and the rig deletes the originals.
///
/// Declare it after the rig's processes: it copies when dropped, so it must be dropped
/// (unwinding included) before they are.
#[derive(Debug, Default)]
pub struct KeptLogs {
    files: Vec<(String, PathBuf)>,
}

impl KeptLogs {
    /// Nothing kept yet.
    pub fn new() -> KeptLogs {
        KeptLogs::default()
    }

    /// Keeps the file `path` as `name` (a file name, such as `hub0.log`).
    pub fn add(&mut self, name: impl Into<String>, path: impl AsRef<Path>) {
        self.files.push((name.into(), path.as_ref().to_path_buf()));
    }

    /// Copies every file into `dir` (created if needed); a file that does not exist (a
    /// process that never logged) is skipped.
    pub fn copy_to(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        for (name, path) in &self.files {
            if path.exists() {
                std::fs::copy(path, dir.join(name))?;
            }
        }
        Ok(())
    }

    /// Where the logs go at drop, if anywhere: `$FLEETHUB_HA_LOG_DIR`, else (only while
    /// a test fails) `fleethub-ha-logs-<pid>` in the temporary directory.
    fn destination() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os(LOG_DIR_ENV).filter(|d| !d.is_empty()) {
            return Some(PathBuf::from(dir));
        }
        std::thread::panicking()
            .then(|| std::env::temp_dir().join(format!("fleethub-ha-logs-{}", std::process::id())))
    }
}

impl Drop for KeptLogs {
    fn drop(&mut self) {
        let Some(dir) = Self::destination() else {
            return;
        };
        match self.copy_to(&dir) {
            Ok(()) => eprintln!("the rig's logs are kept in {}", dir.display()),
            Err(e) => eprintln!("keeping the rig's logs in {} failed: {e}", dir.display()),
        }
    }
}
