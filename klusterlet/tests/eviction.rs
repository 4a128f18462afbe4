//! Issue 18, end to end with real processes (`hub serve`, `klusterlet join`/`run`, a
//! harness managed cluster): the eviction grace of a work that vanished from the hub, the
//! status as OCM's work agent writes it, and the agent's `/metrics` and `/readyz`.

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use api::{ListOptions, ManagedCluster, ManifestWork};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use serde_json::{Value, json};
use testkit::agent::AgentFleet;
use testkit::cluster::{ClusterOptions, TestCluster};
use tokio::sync::OnceCell;

static MANAGED: OnceCell<TestCluster> = OnceCell::const_new();

async fn managed() -> &'static TestCluster {
    MANAGED
        .get_or_init(|| async {
            TestCluster::start(ClusterOptions::full())
                .await
                .expect("start the managed cluster")
        })
        .await
}

const LIMIT: Duration = Duration::from_secs(60);
/// What the restore tests look for in the agent's log.
const KEEPING: &str = "keeping its objects until the eviction grace ends";

/// A hub, one joined cluster, and its klusterlet (started by the test).
struct Fleet(AgentFleet);

impl Deref for Fleet {
    type Target = AgentFleet;
    fn deref(&self) -> &AgentFleet {
        &self.0
    }
}

impl DerefMut for Fleet {
    fn deref_mut(&mut self) -> &mut AgentFleet {
        &mut self.0
    }
}

impl Fleet {
    /// A hub and a test namespace, the cluster joined; `pre_joined` works are written
    /// before it joins (the cluster record exists then).
    async fn start(cluster: &str, pre_joined: Option<&[Value]>) -> Fleet {
        let fleet = AgentFleet::hub_only(managed().await, cluster, None)
            .await
            .unwrap();
        let fleet = Fleet(fleet);
        if let Some(manifests) = pre_joined {
            // A work written before the cluster has an agent carries no finalizer: its
            // deletion removes it from the hub at once, unseen by the agent.
            fleet
                .admin
                .put_cluster(&ManagedCluster::new(cluster, Default::default()))
                .await
                .unwrap();
            fleet.put("early", manifests.to_vec()).await;
        }
        fleet.join().await.unwrap();
        fleet
    }

    /// Runs the agent (its log appends to one file across restarts).
    fn run_agent(&mut self, extra: &[&str]) {
        self.0.run_agent(extra).unwrap();
    }

    fn cm(&self, name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": self.namespace}, "data": {"v": "1"}})
    }

    async fn put(&self, name: &str, manifests: Vec<Value>) -> ManifestWork {
        self.0.put(name, manifests, |_| {}).await
    }

    async fn cm_exists(&self, name: &str) -> bool {
        self.configmaps().get_opt(name).await.unwrap().is_some()
    }

    /// Waits until the agent's log has `text` (at least `count` times).
    async fn wait_log(&self, text: &str, count: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.agent_log().matches(text).count() < count {
            assert!(
                Instant::now() < deadline,
                "the agent did not log {text:?} ({count}x) within {limit:?}:\n{}",
                self.agent_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_cm_gone(&self, name: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.cm_exists(name).await {
            assert!(
                Instant::now() < deadline,
                "configmap {name} still there after {limit:?}; agent log:\n{}",
                self.agent_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls the work until `done` holds.
    async fn wait_work(
        &self,
        name: &str,
        done: impl Fn(Option<&ManifestWork>) -> bool,
    ) -> Option<ManifestWork> {
        let deadline = Instant::now() + LIMIT;
        loop {
            let work = match self
                .admin
                .get_work(&self.cluster, name, &ListOptions::default())
                .await
            {
                Ok(r) => Some(r.value),
                Err(e) if e.is_not_found() => None,
                Err(e) => panic!("reading {name}: {e}"),
            };
            if done(work.as_ref()) {
                return work;
            }
            assert!(
                Instant::now() < deadline,
                "work {name} did not get there: {work:#?}\nagent log:\n{}",
                self.agent_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_applied(&self, name: &str) -> ManifestWork {
        self.wait_work(name, |w| is(w, "Applied", "True"))
            .await
            .unwrap()
    }

    /// The hub's database files, copied aside (the hub is stopped meanwhile).
    async fn back_up_hub(&mut self) -> PathBuf {
        let backup = self.dir.path().join("backup");
        std::fs::create_dir_all(&backup).unwrap();
        self.hub.stop();
        for f in db_files(&self.hub.data_dir) {
            std::fs::copy(&f, backup.join(f.file_name().unwrap())).unwrap();
        }
        self.hub.start_again().await.unwrap();
        backup
    }

    /// Restores the hub's database from `backup`, as an operator restoring last night's
    /// backup would: the works written since are gone, without any deletion.
    async fn restore_hub(&mut self, backup: &Path) {
        self.hub.stop();
        for f in db_files(&self.hub.data_dir) {
            std::fs::remove_file(f).unwrap();
        }
        for f in db_files(backup) {
            std::fs::copy(&f, self.hub.data_dir.join(f.file_name().unwrap())).unwrap();
        }
        self.hub.start_again().await.unwrap();
    }

    /// The agent's ledger record of a work, as stored in its ConfigMap.
    async fn ledger_record(&self, work: &str) -> Option<Value> {
        let cms: Api<ConfigMap> =
            Api::namespaced(MANAGED.get().unwrap().client(), &self.ledger_namespace());
        let list = cms.list(&Default::default()).await.unwrap();
        list.items.into_iter().find_map(|cm| {
            let named = cm.metadata.annotations.as_ref()?.get("fleethub.io/work")? == work;
            let record = cm.data.as_ref()?.get("record")?;
            named.then(|| serde_json::from_str(record).unwrap())
        })
    }

    async fn wait_scrape(&self, path: &str, status: u16) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            match self.scrape(path).await {
                Some((s, body)) if s == status => return body,
                other => assert!(
                    Instant::now() < deadline,
                    "{path} did not answer {status}: {other:?}\nagent log:\n{}",
                    self.agent_log()
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn db_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("hub.db"))
        })
        .collect()
}

fn is(w: Option<&ManifestWork>, type_: &str, status: &str) -> bool {
    w.and_then(|w| {
        let c = w.condition(type_)?;
        (c.observed_generation == w.metadata.generation).then_some(c.status == status)
    })
    .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_work_lost_by_a_hub_restore_stays_for_the_grace_then_goes() {
    let mut fleet = Fleet::start("grace", None).await;
    fleet.run_agent(&["--eviction-grace", "3s"]);
    let backup = fleet.back_up_hub().await;
    fleet.put("lost", vec![fleet.cm("lost-1")]).await;
    fleet.wait_applied("lost").await;
    assert!(fleet.cm_exists("lost-1").await);

    fleet.restore_hub(&backup).await;
    fleet.wait_log(KEEPING, 1, LIMIT).await;
    let seen = Instant::now();
    assert!(fleet.cm_exists("lost-1").await, "kept during the grace");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(fleet.cm_exists("lost-1").await, "still kept 1.5 s in");
    fleet.wait_cm_gone("lost-1", Duration::from_secs(20)).await;
    let took = seen.elapsed();
    assert!(
        took >= Duration::from_millis(2000),
        "deleted {took:?} after the agent said it keeps it for 3 s"
    );
    let log = fleet.agent_log();
    assert!(
        log.contains("the eviction grace of 3s ended"),
        "the log says why: {log}"
    );
    assert!(
        fleet.ledger_record("lost").await.is_none(),
        "the record goes with the objects"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restart_after_a_work_vanished_deletes_nothing() {
    let mut fleet = Fleet::start("restart", None).await;
    fleet.run_agent(&[]);
    let backup = fleet.back_up_hub().await;
    fleet.put("lost", vec![fleet.cm("kept-1")]).await;
    fleet.wait_applied("lost").await;

    fleet.restore_hub(&backup).await;
    fleet.wait_log(KEEPING, 1, LIMIT).await;
    let record = fleet.ledger_record("lost").await.unwrap();
    let vanished_at = record["vanishedAt"].as_str().unwrap().to_string();

    // Restart: the grace (60 min) goes on from the first sighting; nothing is deleted.
    fleet.kill_agent().await;
    fleet.run_agent(&[]);
    fleet.wait_log(KEEPING, 2, LIMIT).await;
    fleet.wait_scrape("/readyz", 200).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(fleet.cm_exists("kept-1").await, "a restart deleted nothing");
    let record = fleet.ledger_record("lost").await.unwrap();
    assert_eq!(
        record["vanishedAt"].as_str(),
        Some(vanished_at.as_str()),
        "the grace did not start over"
    );
    let log = fleet.agent_log();
    let announced = log.lines().rfind(|l| l.contains(KEEPING)).unwrap();
    assert!(announced.contains("grace_ends"), "{announced}");

    // The work comes back (put again): applied, and its grace is forgotten.
    fleet.put("lost", vec![fleet.cm("kept-1")]).await;
    fleet.wait_applied("lost").await;
    let deadline = Instant::now() + LIMIT;
    while fleet.ledger_record("lost").await.unwrap()["vanishedAt"].is_string() {
        assert!(Instant::now() < deadline, "the grace was not forgotten");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(fleet.cm_exists("kept-1").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_work_the_hub_deleted_is_cleaned_up_at_once() {
    let namespace = "t-deleted";
    let early = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "early-1", "namespace": namespace}, "data": {"v": "1"}});
    let mut fleet = Fleet::start("deleted", Some(&[early])).await;
    fleet.run_agent(&[]);
    let w = fleet.wait_applied("early").await;
    assert!(w.metadata.finalizers.is_empty(), "{:?}", w.metadata);
    assert!(fleet.cm_exists("early-1").await);

    // Deleted while the agent is down: without a finalizer it is gone from the hub at
    // once; the hub's 404 says it deleted it, so no grace (60 min by default) applies.
    fleet.kill_agent().await;
    fleet
        .admin
        .delete_work(&fleet.cluster, "early")
        .await
        .unwrap();
    let raw = fleet
        .admin
        .request(
            reqwest::Method::GET,
            &format!("/api/v1/clusters/{}/manifestworks/early", fleet.cluster),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 404);
    let body: Value = raw.json().await.unwrap();
    assert_eq!(body["details"]["deleted"], json!(true), "{body}");
    assert!(body["details"]["deletedAt"].is_string(), "{body}");

    fleet.run_agent(&[]);
    fleet.wait_cm_gone("early-1", Duration::from_secs(30)).await;
    assert!(
        fleet.agent_log().contains("the hub deleted the work at"),
        "{}",
        fleet.agent_log()
    );

    // A normal deletion of a work with the agent's finalizer goes at once too.
    fleet.put("normal", vec![fleet.cm("normal-1")]).await;
    fleet.wait_applied("normal").await;
    let started = Instant::now();
    fleet
        .admin
        .delete_work(&fleet.cluster, "normal")
        .await
        .unwrap();
    fleet.wait_work("normal", |w| w.is_none()).await;
    fleet
        .wait_cm_gone("normal-1", Duration::from_secs(30))
        .await;
    assert!(started.elapsed() < Duration::from_secs(30));

    // A work that never was on the hub: a plain 404, no details.
    let err = fleet
        .admin
        .get_work(&fleet.cluster, "never", &ListOptions::default())
        .await
        .unwrap_err();
    match err {
        api::ClientError::Api { status, body } => {
            assert_eq!(status.as_u16(), 404);
            assert_eq!(body.details, None);
        }
        other => panic!("{other}"),
    }
}

/// The value of a sample in Prometheus text: `name` with its labels as written.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reads_as_ocm_writes_it_and_metrics_tell_what_the_agent_did() {
    let mut fleet = Fleet::start("parity", None).await;

    // Not ready before it has read and reconciled its works: start it with the hub down.
    fleet.hub.stop();
    fleet.run_agent(&[]);
    let why = fleet.wait_scrape("/readyz", 503).await;
    assert!(why.contains("hub"), "{why}");
    assert_eq!(fleet.scrape("/livez").await.unwrap().0, 200);
    fleet.hub.start_again().await.unwrap();
    fleet.wait_scrape("/readyz", 200).await;

    // One manifest applies, one cannot (its namespace does not exist).
    let missing_ns = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "no-such-namespace"}, "data": {"v": "1"}});
    fleet
        .put("mixed", vec![fleet.cm("fine"), missing_ns.clone()])
        .await;
    let w = fleet
        .wait_work("mixed", |w| is(w, "Applied", "False"))
        .await
        .unwrap();
    let manifests = &w.status.resource_status.as_ref().unwrap().manifests;
    assert_eq!(manifests.len(), 2);
    let cond = |i: usize, t: &str| {
        let c = api::find_condition(&manifests[i].conditions, t)
            .unwrap_or_else(|| panic!("manifest {i} has no {t}: {manifests:#?}"));
        (c.status.clone(), c.reason.clone(), c.message.clone())
    };
    let (status, reason, message) = cond(1, "Applied");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "AppliedManifestFailed")
    );
    assert!(
        message.starts_with("Failed to apply manifest: NotFound: "),
        "Kubernetes' reason kept in the message: {message}"
    );
    let (status, reason, _) = cond(1, "Available");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ResourceNotAvailable")
    );
    for i in 0..2 {
        let (status, reason, _) = cond(i, "StatusFeedbackSynced");
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("True", "NoStatusFeedbackSynced"),
            "manifest {i}"
        );
    }
    assert_eq!(cond(0, "Applied").1, "AppliedManifestComplete");
    let available = w.condition("Available").unwrap();
    assert_eq!(
        (available.status.as_str(), available.reason.as_str()),
        ("False", "ResourcesNotAvailable")
    );
    assert_eq!(
        w.condition("Applied").unwrap().reason,
        "AppliedManifestWorkFailed"
    );
    // Our own conditions stay.
    for extra in ["Ready", "Progressing", "Degraded"] {
        assert!(w.condition(extra).is_some(), "{extra}");
    }
    // `statusFeedback` is `{}` on the wire, as OCM writes it.
    let raw: Value = fleet
        .admin
        .request(
            reqwest::Method::GET,
            &format!("/api/v1/clusters/{}/manifestworks/mixed", fleet.cluster),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for m in raw["status"]["resourceStatus"]["manifests"]
        .as_array()
        .unwrap()
    {
        assert_eq!(m["statusFeedback"], json!({}), "{m}");
    }

    // The metrics say what happened, once the agent has renewed its lease at least once
    // (it renews every lease interval; a fast first status can come before that).
    let deadline = Instant::now() + LIMIT;
    let text = loop {
        let text = fleet.wait_scrape("/metrics", 200).await;
        if text.contains(r#"operation="renew_lease",outcome="ok""#) || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let at_least = |series: &str, min: f64| {
        let v = sample(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
        assert!(v >= min, "{series} = {v}");
        v
    };
    at_least(
        r#"klusterlet_manifest_failures_total{reason="NotFound"}"#,
        1.0,
    );
    at_least("klusterlet_apply_duration_seconds_count", 2.0);
    at_least(
        r#"klusterlet_hub_requests_total{operation="list_works",outcome="ok"}"#,
        1.0,
    );
    at_least(
        r#"klusterlet_hub_requests_total{operation="put_status",outcome="ok"}"#,
        1.0,
    );
    at_least(
        r#"klusterlet_hub_requests_total{operation="renew_lease",outcome="ok"}"#,
        1.0,
    );
    at_least(
        r#"klusterlet_hub_request_duration_seconds_count{operation="list_works"}"#,
        1.0,
    );
    let depth = at_least("klusterlet_queue_depth", 0.0);
    assert!(depth < 10.0, "queue depth {depth}");
    let lease = at_least("klusterlet_last_lease_renewal_timestamp_seconds", 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - lease).abs() < 60.0,
        "last lease {lease} is recent (now {now})"
    );
    at_least(r#"klusterlet_reconcile_duration_seconds_count"#, 1.0);
    assert!(
        text.contains("klusterlet_apply_duration_seconds_bucket"),
        "{text}"
    );
}
