//! Faults, all with real processes: the hub killed with `kill -9` under write load, its
//! Postgres restarted under load, the klusterlet frozen (SIGSTOP) past its lease grace,
//! killed mid-apply, and restarted every way it can be (which must never touch a running
//! workload). Each test prints what it measured
//! (`cargo test -p testkit --test faults -- --nocapture`); docs/testing.md keeps the
//! figures of a run.
//!
//! Two hubs on one Postgres waking each other's waiters is
//! `two_hubs_on_one_postgres_wake_each_other` in `hub_process.rs`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use api::{ClientError, HubClient, ListOptions, ManagedCluster, ManifestWork};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use serde_json::{Value, json};
use testkit::cluster::{ClusterMode, TestCluster};
use testkit::postgres::TestPostgres;
use testkit::procs::HubProcess;

/// How long anything that must become true may take.
const LIMIT: Duration = Duration::from_secs(60);

/// The hub's lease timings for these tests: renewals every second, Unknown after 2 s
/// without one, so lease effects show within seconds.
const LEASE_ARGS: [&str; 4] = ["--lease-interval", "1s", "--lease-grace", "2s"];

/// These tests measure recovery times; run together on a small machine they would mostly
/// measure each other, so each holds this lock for its whole run.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn init() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

async fn managed(mode: ClusterMode) -> &'static TestCluster {
    TestCluster::shared(mode)
        .await
        .expect("start the managed cluster")
}

/// A joined cluster and its `klusterlet run` process.
struct Agent {
    cluster: String,
    /// Where the works of this test put their objects.
    namespace: String,
    data: PathBuf,
    child: Option<tokio::process::Child>,
    managed: &'static TestCluster,
}

impl Agent {
    /// Joins `cluster` to the hub with an auto-accept token (as `klusterlet join` does in a
    /// real install) and starts its agent with ~1 s timings.
    async fn join(hub: &HubProcess, dir: &Path, cluster: &str) -> Agent {
        Self::join_on(hub, dir, cluster, ClusterMode::ApiserverOnly).await
    }

    /// [`join`](Self::join) with a managed cluster of this kind.
    async fn join_on(hub: &HubProcess, dir: &Path, cluster: &str, mode: ClusterMode) -> Agent {
        let managed = managed(mode).await;
        let data = dir.join(format!("agent-{cluster}"));
        hub.join_klusterlet(
            &klusterlet_binary(),
            cluster,
            managed.kubeconfig_path(),
            &data,
            &[],
        )
        .await
        .unwrap();
        let mut agent = Agent {
            cluster: cluster.to_string(),
            namespace: managed.fresh_namespace().await.unwrap(),
            data,
            child: None,
            managed,
        };
        agent.run();
        agent
    }

    fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.with_extension("log"))
            .unwrap();
        let child = tokio::process::Command::new(klusterlet_binary())
            .arg("run")
            .arg("--kubeconfig")
            .arg(self.managed.kubeconfig_path())
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--resync", "1s", "--degraded-after", "2s"])
            .args(["--namespace", &format!("agent-{}", self.cluster)])
            .env("KLUSTERLET_LOG", "info,klusterlet=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Sends SIGSTOP or SIGCONT.
    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().and_then(|c| c.id()).expect("running");
        let ok = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} {pid}");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data.with_extension("log")).unwrap_or_default()
    }

    fn config_map(&self, name: &str, value: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": name, "namespace": self.namespace},
               "data": {"v": value}})
    }

    fn config_maps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.managed.client(), &self.namespace)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // A stopped agent would not die from kill_on_drop's SIGKILL until continued.
        if let Some(pid) = self.child.as_ref().and_then(|c| c.id()) {
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .status();
        }
    }
}

fn klusterlet_binary() -> PathBuf {
    testkit::procs::binary("klusterlet").expect("the klusterlet binary")
}

/// The condition of this type when it describes the work's current generation.
fn current(w: &ManifestWork, type_: &str) -> Option<String> {
    let c = w.condition(type_)?;
    (c.observed_generation == w.metadata.generation).then(|| c.status.clone())
}

/// Polls the work until `done` holds, or fails after [`LIMIT`] with its last state.
async fn wait_work(
    admin: &HubClient,
    agent: &Agent,
    name: &str,
    done: impl Fn(Option<&ManifestWork>) -> bool,
) -> Option<ManifestWork> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let work = match admin
            .get_work(&agent.cluster, name, &ListOptions::default())
            .await
        {
            Ok(r) => Some(r.value),
            Err(e) if e.is_not_found() => None,
            // The hub may be restarting; the deadline bounds how long that may take.
            Err(_) => {
                assert!(Instant::now() < deadline, "work {name} unreadable");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if done(work.as_ref()) {
            return work;
        }
        assert!(
            Instant::now() < deadline,
            "work {name} did not get there within {LIMIT:?}: {work:#?}\nagent log:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn applied(w: Option<&ManifestWork>) -> bool {
    w.is_some_and(|w| current(w, "Applied").as_deref() == Some("True"))
}

/// A work of one ConfigMap whose data is `content`, for the write-load tests.
fn bulk_work(cluster: &str, name: &str, content: &str) -> ManifestWork {
    ManifestWork::new(
        cluster,
        name,
        vec![json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": "default"},
                    "data": {"content": content}})],
    )
}

fn content_of(w: &ManifestWork) -> Option<&str> {
    w.spec.workload.manifests.first()?["data"]["content"].as_str()
}

/// Reads every acknowledged work back and returns those missing or with other content.
async fn lost_writes(client: &HubClient, cluster: &str, acked: &[(String, String)]) -> Vec<String> {
    let mut lost = Vec::new();
    for (name, content) in acked {
        match client
            .get_work(cluster, name, &ListOptions::default())
            .await
        {
            Ok(w) if content_of(&w.value) == Some(content.as_str()) => {}
            Ok(w) => lost.push(format!("{name}: content {:?}", content_of(&w.value))),
            Err(e) => lost.push(format!("{name}: {e}")),
        }
    }
    lost
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_kill_9_on_postgres_under_1000_writes_loses_nothing_and_the_agent_resumes() {
    let _serial = SERIAL.lock().await;
    init();
    let pg = TestPostgres::shared().await.unwrap();
    let url = pg.fresh_database().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--database-url", url.as_str()];
    args.extend(LEASE_ARGS);
    let mut hub = HubProcess::start(&dir.path().join("hub"), &args)
        .await
        .unwrap();
    let admin = hub.client().unwrap();
    let agent = Agent::join(&hub, dir.path(), "killed-hub").await;
    // The write load goes to a cluster of its own, so the agent is not busy applying it.
    admin
        .put_cluster(&ManagedCluster::new("bulk", Default::default()))
        .await
        .unwrap();

    // 8 writers, 125 works each. A write that fails (the hub is gone or restarting) is
    // retried until it is acknowledged: only acknowledged writes are promised to stay.
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 125;
    let acked_count = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for t in 0..WRITERS {
        let (client, acked_count, failures) =
            (admin.clone(), acked_count.clone(), failures.clone());
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            for i in 0..PER_WRITER {
                let name = format!("w-{t}-{i}");
                let content = format!("{t}/{i}/{}", uuid::Uuid::new_v4());
                let work = bulk_work("bulk", &name, &content);
                loop {
                    match client.put_work(&work, None).await {
                        Ok(_) => break,
                        Err(_) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            assert!(Instant::now() < deadline, "writer {t} never got through");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                acked.push((name, content));
                acked_count.fetch_add(1, Ordering::Relaxed);
            }
            acked
        }));
    }
    // Kill when about a third is written, so writes are in flight at the kill.
    let deadline = Instant::now() + LIMIT;
    while acked_count.load(Ordering::Relaxed) < 300 {
        assert!(Instant::now() < deadline, "the writers are stuck");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let acked_at_kill = acked_count.load(Ordering::Relaxed);
    let killed_at = chrono::Utc::now();
    let killed = Instant::now();
    hub.kill_and_restart().await.unwrap();
    let restarted = Instant::now();
    let restart_took = restarted - killed;

    // A work written after the restart, for the agent to apply.
    let after = ManifestWork::new(
        &agent.cluster,
        "after-restart",
        vec![agent.config_map("after-restart", "1")],
    );
    admin.put_work(&after, None).await.unwrap();
    // The next lease renewal the restarted hub received.
    let lease_renewed = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let c = admin.get_cluster(&agent.cluster).await.unwrap().value;
            if c.status.last_lease_time.is_some_and(|t| t > killed_at) {
                break restarted.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "no lease renewal within 30 s of the restart; agent log:\n{}",
                agent.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    wait_work(&admin, &agent, "after-restart", applied).await;
    let work_applied = restarted.elapsed();
    assert!(
        work_applied < Duration::from_secs(30),
        "the work written after the restart took {work_applied:?} to be Applied"
    );

    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert_eq!(acked.len(), WRITERS * PER_WRITER);
    let lost = lost_writes(&admin, "bulk", &acked).await;
    assert!(
        lost.is_empty(),
        "acknowledged writes lost or changed after kill -9: {lost:?}"
    );
    println!(
        "hub kill -9 on Postgres: {} of {} works acknowledged at the kill, {} failed attempts \
         retried, all {} acknowledged writes present with their content; kill to ready \
         {restart_took:?}; restart to the agent's next lease renewal {lease_renewed:?}, to \
         a new work Applied {work_applied:?}",
        acked_at_kill,
        WRITERS * PER_WRITER,
        failures.load(Ordering::Relaxed),
        acked.len()
    );
}

/// What one write attempt during the Postgres outage test got.
enum Attempt {
    Acked(String, String),
    /// An error the hub answered, with its status and code.
    Refused(u16, String),
    /// No answer: the connection broke or could not be made.
    Unanswered(String),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_recovers_by_itself_from_a_postgres_restart_under_load() {
    let _serial = SERIAL.lock().await;
    init();
    // A server of our own: this test stops it.
    let mut pg = tokio::task::spawn_blocking(TestPostgres::start)
        .await
        .unwrap()
        .unwrap();
    let url = pg.fresh_database().await.unwrap();
    let database = url.rsplit('/').next().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path(), &["--database-url", url.as_str()])
        .await
        .unwrap();
    let admin = hub.client().unwrap();
    admin
        .put_cluster(&ManagedCluster::new("c1", Default::default()))
        .await
        .unwrap();

    // 4 writers write new works until told to stop; every attempt is bounded, so a write
    // that hangs fails the test instead of holding it up.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for t in 0..4 {
        let (client, stop) = (admin.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut attempts = Vec::new();
            let mut slowest_failure = Duration::ZERO;
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("w-{t}-{i}");
                let content = format!("{t}/{i}/{}", uuid::Uuid::new_v4());
                i += 1;
                let started = Instant::now();
                let Ok(r) = tokio::time::timeout(
                    Duration::from_secs(30),
                    client.put_work(&bulk_work("c1", &name, &content), None),
                )
                .await
                else {
                    panic!("a write hung for 30 s: {name}");
                };
                attempts.push(match r {
                    Ok(_) => Attempt::Acked(name, content),
                    Err(ClientError::Api { status, body }) => {
                        slowest_failure = slowest_failure.max(started.elapsed());
                        Attempt::Refused(status.as_u16(), body.code)
                    }
                    Err(e) => Attempt::Unanswered(e.to_string()),
                });
                if !matches!(attempts.last(), Some(Attempt::Acked(..))) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            (attempts, slowest_failure)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let down = Instant::now();
    tokio::task::block_in_place(|| pg.stop());
    // Down: /readyz says 503 with the JSON error body.
    let not_ready = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let resp = admin
                .request(reqwest::Method::GET, "/readyz")
                .send()
                .await
                .unwrap();
            if resp.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                let body: Value = resp.json().await.expect("a JSON error body");
                assert_eq!(body["code"], "unavailable", "{body}");
                break down.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "/readyz still {} 30 s into the outage",
                resp.status()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    // A write gets the same clean answer, in bounded time.
    let started = Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        admin.put_work(&bulk_work("c1", "during-outage", "x"), None),
    )
    .await
    .expect("a write during the outage hung")
    .expect_err("a write succeeded without a database");
    let refused_in = started.elapsed();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(503), "{err}");
    assert_eq!(err.code(), Some("unavailable"), "{err}");
    // Longer than the pool's 5 s acquire timeout, so every reconnect attempt the hub makes
    // meanwhile fails, its change listener's included.
    let outage = Duration::from_secs(8);
    tokio::time::sleep(outage.saturating_sub(down.elapsed())).await;

    tokio::task::block_in_place(|| pg.start_again()).unwrap();
    let up = Instant::now();
    let downtime = up - down;
    // Up again: ready and writing, without a restart of the hub.
    let recovered = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = admin
                .request(reqwest::Method::GET, "/readyz")
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready
                && admin
                    .put_work(&bulk_work("c1", "after-outage", "y"), None)
                    .await
                    .is_ok()
            {
                break up.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "the hub did not recover within 30 s of Postgres coming back; log:\n{}",
                hub.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    // Other hubs' writes reach this hub's waiters through LISTEN: its listening session
    // must be back too, not only the pool (polling would hide a lost listener behind a
    // second of latency).
    let listening = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&pg.url())
                .await
                .unwrap();
            let (n,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query ILIKE 'LISTEN%'",
            )
            .bind(&database)
            .fetch_one(&mut conn)
            .await
            .unwrap();
            if n > 0 {
                break up.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "the hub did not LISTEN again within 30 s of Postgres coming back; log:\n{}",
                hub.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);

    let (mut acked, mut refused, mut unanswered) = (Vec::new(), Vec::new(), Vec::new());
    let mut slowest_failure = refused_in;
    for w in writers {
        let (attempts, slowest) = w.await.unwrap();
        slowest_failure = slowest_failure.max(slowest);
        for a in attempts {
            match a {
                Attempt::Acked(name, content) => acked.push((name, content)),
                Attempt::Refused(status, code) => refused.push((status, code)),
                Attempt::Unanswered(e) => unanswered.push(e),
            }
        }
    }
    assert!(
        unanswered.is_empty(),
        "the hub left writes without an answer: {unanswered:?}"
    );
    assert!(
        refused
            .iter()
            .all(|(status, code)| *status == 503 && code == "unavailable"),
        "writes refused otherwise than 503 unavailable: {refused:?}"
    );
    let lost = lost_writes(&admin, "c1", &acked).await;
    assert!(
        lost.is_empty(),
        "acknowledged writes lost across the outage: {lost:?}"
    );
    assert!(
        !hub.log_text().contains("panicked"),
        "the hub panicked:\n{}",
        hub.log_text()
    );
    println!(
        "Postgres restart under 4 writers: down {downtime:?}; /readyz 503 after \
         {not_ready:?}; writes refused with 503 unavailable ({} refused, slowest refusal \
         {slowest_failure:?}); recovered (ready and writing) {recovered:?} after Postgres \
         was back, listening again after {listening:?}; all {} acknowledged writes present",
        refused.len() + 1,
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_agent_turns_unknown_then_converges_after_sigcont() {
    let _serial = SERIAL.lock().await;
    init();
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(&dir.path().join("hub"), &LEASE_ARGS)
        .await
        .unwrap();
    let admin = hub.client().unwrap();
    let agent = Agent::join(&hub, dir.path(), "frozen").await;
    let put = |value: &str| {
        ManifestWork::new(&agent.cluster, "app", vec![agent.config_map("app", value)])
    };
    admin.put_work(&put("1"), None).await.unwrap();
    wait_work(&admin, &agent, "app", applied).await;
    let available = |c: &ManagedCluster| {
        c.condition("ManagedClusterConditionAvailable")
            .map(|a| a.status.clone())
    };

    agent.signal("STOP");
    let frozen = Instant::now();
    let to_unknown = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let c = admin.get_cluster(&agent.cluster).await.unwrap().value;
            if available(&c).as_deref() == Some("Unknown") {
                break frozen.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "still {:?} 30 s after the agent froze",
                available(&c)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    // Changed while nobody can apply it: the status says it is stale.
    let generation = admin
        .put_work(&put("2"), None)
        .await
        .unwrap()
        .value
        .metadata
        .generation;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let w = admin
        .get_work(&agent.cluster, "app", &ListOptions::default())
        .await
        .unwrap()
        .value;
    assert_eq!(
        current(&w, "Applied"),
        None,
        "a frozen agent's status claims the new generation: {w:#?}"
    );

    agent.signal("CONT");
    let thawed = Instant::now();
    let w = wait_work(&admin, &agent, "app", |w| {
        applied(w) && w.is_some_and(|w| w.metadata.generation == generation)
    })
    .await
    .unwrap();
    assert_eq!(
        w.condition("Applied").unwrap().observed_generation,
        generation
    );
    let deadline = Instant::now() + LIMIT;
    loop {
        let c = admin.get_cluster(&agent.cluster).await.unwrap().value;
        if available(&c).as_deref() == Some("True") {
            break;
        }
        assert!(Instant::now() < deadline, "the cluster stayed {c:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cm = agent.config_maps().get("app").await.unwrap();
    assert_eq!(
        cm.data.unwrap_or_default().get("v").map(String::as_str),
        Some("2"),
        "the change made while frozen is on the cluster"
    );
    let converged = thawed.elapsed();
    println!(
        "agent SIGSTOP with lease grace 2 s: Available Unknown after {to_unknown:?}; after \
         SIGCONT, the work changed meanwhile Applied at its generation and the cluster \
         Available again within {converged:?}"
    );
}

/// The ConfigMaps of the mid-apply test's work in the agent's namespace.
async fn ours(agent: &Agent) -> Vec<ConfigMap> {
    let all = agent.config_maps().list(&Default::default()).await.unwrap();
    all.items
        .into_iter()
        .filter(|c| {
            c.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("cm-"))
        })
        .collect()
}

/// The uids the agent's ledger holds for a work (one ConfigMap per work in its namespace).
async fn ledger_uids(agent: &Agent, work: &str) -> Vec<String> {
    let ledger: Api<ConfigMap> =
        Api::namespaced(agent.managed.client(), &format!("agent-{}", agent.cluster));
    let list = ledger
        .list(&kube::api::ListParams::default().labels("fleethub.io/ledger=true"))
        .await
        .unwrap();
    list.items
        .iter()
        .filter(|cm| {
            cm.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("fleethub.io/work"))
                .is_some_and(|w| w == work)
        })
        .filter_map(|cm| cm.data.as_ref()?.get("record").cloned())
        .filter_map(|r| serde_json::from_str::<Value>(&r).ok())
        .flat_map(|r| {
            r["entries"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|e| e["uid"].as_str().map(str::to_string))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_klusterlet_killed_mid_apply_converges_without_duplicates_or_orphans() {
    let _serial = SERIAL.lock().await;
    init();
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(&dir.path().join("hub"), &LEASE_ARGS)
        .await
        .unwrap();
    let admin = hub.client().unwrap();
    // A full cluster: the work's deletion deletes in the foreground, which only the
    // garbage collector of kube-controller-manager completes.
    let mut agent = Agent::join_on(&hub, dir.path(), "midapply", ClusterMode::Full).await;
    const COUNT: usize = 200;
    let names: Vec<String> = (0..COUNT).map(|i| format!("cm-{i:04}")).collect();
    let work = ManifestWork::new(
        &agent.cluster,
        "bulk",
        names.iter().map(|n| agent.config_map(n, "1")).collect(),
    );
    admin.put_work(&work, None).await.unwrap();

    // Kill it as soon as the first objects exist and before the last one does.
    let deadline = Instant::now() + LIMIT;
    let existing = loop {
        let n = ours(&agent).await.len();
        if n > 0 {
            break n;
        }
        assert!(
            Instant::now() < deadline,
            "nothing applied within {LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let mut child = agent.child.take().unwrap();
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let at_kill = ours(&agent).await.len();
    assert!(
        at_kill < COUNT,
        "the agent finished the apply before the kill ({existing} objects when it was sent); \
         the test needs a bigger work"
    );

    let restarted = Instant::now();
    agent.run();
    wait_work(&admin, &agent, "bulk", applied).await;
    let converged = restarted.elapsed();
    let live = ours(&agent).await;
    let mut live_names: Vec<String> = live
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    live_names.sort();
    assert_eq!(live_names, names, "exactly the work's objects, once each");
    let mut live_uids: Vec<String> = live.iter().filter_map(|c| c.metadata.uid.clone()).collect();
    live_uids.sort();
    let deadline = Instant::now() + LIMIT;
    let recorded = loop {
        let mut recorded = ledger_uids(&agent, "bulk").await;
        recorded.sort();
        if recorded == live_uids || Instant::now() > deadline {
            break recorded;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        recorded, live_uids,
        "every object on the cluster is in the ledger (no orphans)"
    );

    // And the ledger is good enough to clean up with.
    let deleting = Instant::now();
    admin.delete_work(&agent.cluster, "bulk").await.unwrap();
    wait_work(&admin, &agent, "bulk", |w| w.is_none()).await;
    let cleaned = deleting.elapsed();
    let left = ours(&agent).await.len();
    assert_eq!(left, 0, "objects left after the work's deletion");
    println!(
        "klusterlet kill -9 with {at_kill} of {COUNT} ConfigMaps applied: after restart the work \
         was Applied in {converged:?} with every object once and in the ledger; deleting it \
         removed all {COUNT} and the work in {cleaned:?}"
    );
}

/// A Deployment, a Service and a ConfigMap: what a restart must leave running.
fn app_work(agent: &Agent) -> ManifestWork {
    let ns = &agent.namespace;
    ManifestWork::new(
        &agent.cluster,
        "app",
        vec![
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "web", "namespace": ns},
                   "spec": {"replicas": 1,
                            "selector": {"matchLabels": {"app": "web"}},
                            "template": {"metadata": {"labels": {"app": "web"}},
                                         "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}),
            json!({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "web", "namespace": ns},
                   "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
            agent.config_map("web-config", "1"),
        ],
    )
}

/// (kind, uid) of the app's three objects; an object being deleted counts as gone.
async fn app_uids(agent: &Agent) -> Vec<(String, Option<String>)> {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Service;
    let client = agent.managed.client();
    let ns = &agent.namespace;
    fn live(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<String> {
        m.deletion_timestamp
            .is_none()
            .then(|| m.uid.clone())
            .flatten()
    }
    let deployment = Api::<Deployment>::namespaced(client.clone(), ns)
        .get_opt("web")
        .await
        .unwrap();
    let service = Api::<Service>::namespaced(client.clone(), ns)
        .get_opt("web")
        .await
        .unwrap();
    let config = agent.config_maps().get_opt("web-config").await.unwrap();
    vec![
        (
            "Deployment".into(),
            deployment.and_then(|o| live(&o.metadata)),
        ),
        ("Service".into(), service.and_then(|o| live(&o.metadata))),
        ("ConfigMap".into(), config.and_then(|o| live(&o.metadata))),
    ]
}

/// Waits until the agent's log past byte `from` shows it reconciled the work `app`
/// (after the first complete list of the works from the hub), then gives it three more
/// resync periods (1 s each) to do anything it would do to the objects.
async fn wait_reconciled_after(agent: &Agent, from: usize) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let log = agent.log();
        if log.get(from..).is_some_and(|l| {
            l.lines()
                .any(|l| l.contains("reconciled") && l.contains("app"))
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted agent did not reconcile the work within {LIMIT:?}; log:\n{}",
            log.get(from..).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
}

async fn stop_agent(agent: &mut Agent, signal: &str) {
    agent.signal(signal);
    let mut child = agent.child.take().unwrap();
    tokio::time::timeout(LIMIT, child.wait())
        .await
        .expect("the agent stops")
        .unwrap();
}

/// The worst bug this project can have: a restarted agent deleting what its works run.
/// Before the agent waited for the hub's list, watchers on Deployments queued the work at
/// start, the empty view said "gone", and every object was deleted and re-created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restart_never_touches_running_workloads() {
    use k8s_openapi::api::apps::v1::Deployment;
    let _serial = SERIAL.lock().await;
    init();
    let dir = tempfile::tempdir().unwrap();
    let mut hub = HubProcess::start(&dir.path().join("hub"), &LEASE_ARGS)
        .await
        .unwrap();
    let admin = hub.client().unwrap();
    // A full cluster: controllers write the Deployment's status, which its watcher sees.
    let mut agent = Agent::join_on(&hub, dir.path(), "restart", ClusterMode::Full).await;
    admin.put_work(&app_work(&agent), None).await.unwrap();
    wait_work(&admin, &agent, "app", applied).await;
    let deployments: Api<Deployment> = Api::namespaced(agent.managed.client(), &agent.namespace);
    let deadline = Instant::now() + LIMIT;
    while deployments
        .get("web")
        .await
        .unwrap()
        .status
        .and_then(|s| s.available_replicas)
        != Some(1)
    {
        assert!(
            Instant::now() < deadline,
            "the Deployment never became available"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = app_uids(&agent).await;
    assert!(before.iter().all(|(_, uid)| uid.is_some()), "{before:?}");

    for (how, signal) in [("kill -9", "KILL"), ("SIGTERM", "TERM")] {
        stop_agent(&mut agent, signal).await;
        let from = agent.log().len();
        agent.run();
        wait_reconciled_after(&agent, from).await;
        assert_eq!(
            app_uids(&agent).await,
            before,
            "after a {how} restart; agent log:\n{}",
            agent.log().get(from..).unwrap_or_default()
        );
    }

    // Started while the hub is down: it must wait for the hub, not clean up.
    stop_agent(&mut agent, "KILL").await;
    hub.stop();
    let from = agent.log().len();
    agent.run();
    let deadline = Instant::now() + LIMIT;
    while !agent
        .log()
        .get(from..)
        .is_some_and(|l| l.contains("following the works failed"))
    {
        assert!(Instant::now() < deadline, "the agent never tried the hub");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its watchers have listed the Deployment by now; give them the resyncs too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(app_uids(&agent).await, before, "while the hub is down");
    let from = agent.log().len();
    hub.start_again().await.unwrap();
    wait_reconciled_after(&agent, from).await;
    assert_eq!(
        app_uids(&agent).await,
        before,
        "after the hub came back; agent log:\n{}",
        agent.log().get(from..).unwrap_or_default()
    );
    wait_work(&admin, &agent, "app", applied).await;
    println!("klusterlet restarts (kill -9, SIGTERM, hub down at start): every uid unchanged");
}

/// A revoked or deleted cluster's agent stops with exit code 1 and says why, instead of
/// retrying 401 forever; the workloads it applied stay (revoking deletes nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_agent_stops_with_exit_1_and_says_why() {
    let _serial = SERIAL.lock().await;
    init();
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(&dir.path().join("hub"), &LEASE_ARGS)
        .await
        .unwrap();
    let admin = hub.client().unwrap();
    for (cluster, revoke) in [("revoked", true), ("deleted", false)] {
        let mut agent = Agent::join(&hub, dir.path(), cluster).await;
        let work = ManifestWork::new(cluster, "keep", vec![agent.config_map("keep", "1")]);
        admin.put_work(&work, None).await.unwrap();
        wait_work(&admin, &agent, "keep", applied).await;
        if revoke {
            admin.revoke_cluster(cluster).await.unwrap();
        } else {
            admin.delete_cluster(cluster, true).await.unwrap();
        }
        let mut child = agent.child.take().unwrap();
        let status = tokio::time::timeout(LIMIT, child.wait())
            .await
            .unwrap_or_else(|_| panic!("the {cluster} agent kept running; log:\n{}", agent.log()))
            .unwrap();
        let log = agent.log();
        assert_eq!(status.code(), Some(1), "{cluster}: {status}; log:\n{log}");
        let last = log.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("error: the hub refuses this agent's key for cluster"),
            "{cluster}: {last}"
        );
        assert!(last.contains("klusterlet join"), "says what to do: {last}");
        if revoke {
            assert!(
                agent.config_maps().get_opt("keep").await.unwrap().is_some(),
                "revoking deletes nothing"
            );
            // As `clusteradm unjoin`: the identity and what the agent installed for itself
            // go; what its works applied stays.
            let out = tokio::process::Command::new(klusterlet_binary())
                .args(["unjoin", "--yes", "--remove-ledger", "--data-dir"])
                .arg(&agent.data)
                .arg("--kubeconfig")
                .arg(agent.managed.kubeconfig_path())
                .args(["--namespace", &format!("agent-{cluster}")])
                .stdin(Stdio::null())
                .output()
                .await
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                stdout.contains("removed the ledger (1 records) and its namespace agent-revoked"),
                "{stdout}"
            );
            let ns = Api::<k8s_openapi::api::core::v1::Namespace>::all(agent.managed.client())
                .get_opt(&format!("agent-{cluster}"))
                .await
                .unwrap();
            assert!(
                ns.is_none_or(|n| n.metadata.deletion_timestamp.is_some()),
                "the ledger's namespace is going"
            );
            assert!(
                agent.config_maps().get_opt("keep").await.unwrap().is_some(),
                "unjoin leaves what the works applied"
            );
        }
    }
}
