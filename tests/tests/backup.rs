//! Backup and restore (issue 19), with real processes: `hub backup` while the hub takes a
//! steady write load, `hub restore` into a fresh data dir, a hub started on it where the
//! old one listened, and a real klusterlet that had applied later works converging to the
//! restored hub: nothing deleted before its eviction grace, works deleted after the backup
//! applied again, unchanged works not applied again. The index epoch change is seen by the
//! agent and by `hub wait`. Then the refusals: an existing or unwritable `--to`, a
//! non-admin token, a Postgres hub, a file that is no hub database, a newer schema, a
//! restore while the hub serves.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use api::{HubClient, ListOptions, ManagedCluster, ManifestWork};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use serde_json::json;
use testkit::cluster::{ClusterMode, TestCluster};
use testkit::postgres::TestPostgres;
use testkit::procs::HubProcess;

/// How long anything that must become true may take.
const LIMIT: Duration = Duration::from_secs(90);

fn init() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn klusterlet_binary() -> PathBuf {
    testkit::procs::binary("klusterlet").expect("the klusterlet binary")
}

/// Runs the `hub` binary with these arguments (client verbs use the hub's client.yaml).
async fn hub_cli(args: &[&str], config: Option<&Path>) -> Output {
    let mut cmd = tokio::process::Command::new(testkit::procs::binary("hub").unwrap());
    cmd.args(args)
        .env_remove("HUB_SERVER")
        .env_remove("HUB_TOKEN")
        .env_remove("HUB_DATABASE_URL")
        .env_remove("HUB_DATA_DIR")
        .stdin(Stdio::null());
    if let Some(c) = config {
        cmd.env("HUB_CONFIG", c);
    }
    tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("hub CLI hung")
        .expect("run hub")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The epoch the hub sends; every list also says it in `metadata.epoch`, the same.
async fn epoch_of(client: &HubClient) -> String {
    let mut epoch = None;
    for list in ["/api/v1/clusters", "/api/v1/manifestworks"] {
        let resp = client
            .request(reqwest::Method::GET, list)
            .send()
            .await
            .unwrap();
        let header = resp
            .headers()
            .get("x-hub-epoch")
            .and_then(|v| v.to_str().ok())
            .expect("X-Hub-Epoch on every answer")
            .to_string();
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["metadata"]["epoch"], header.as_str(), "{list}: {body}");
        assert!(
            epoch.as_ref().is_none_or(|e| *e == header),
            "one epoch per hub"
        );
        epoch = Some(header);
    }
    epoch.unwrap()
}

fn config_map_work(cluster: &str, namespace: &str, name: &str, value: &str) -> ManifestWork {
    ManifestWork::new(
        cluster,
        name,
        vec![json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": namespace},
                    "data": {"v": value}})],
    )
}

fn applied_at_current(w: &ManifestWork) -> bool {
    w.condition("Applied")
        .is_some_and(|c| c.status == "True" && c.observed_generation == w.metadata.generation)
}

async fn eventually<F, Fut>(what: &str, log: impl Fn() -> String, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + LIMIT;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {LIMIT:?}\nagent log:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn config_map_value(api: &Api<ConfigMap>, name: &str) -> Option<String> {
    let cm = api.get_opt(name).await.ok()??;
    cm.data?.get("v").cloned()
}

/// Metric `hub_http_requests_total` of the one-work GET route, all statuses.
async fn work_gets(client: &HubClient) -> u64 {
    let body = client
        .request(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    body.lines()
        .filter(|l| {
            l.starts_with("hub_http_requests_total")
                && l.contains(r#"route="/api/v1/clusters/{cluster}/manifestworks/{name}""#)
                && l.contains(r#"method="GET""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_write_load_restores_every_acknowledged_work_and_the_agent_converges() {
    init();
    let managed = TestCluster::shared(ClusterMode::ApiserverOnly)
        .await
        .expect("start the managed cluster");
    let dir = tempfile::tempdir().unwrap();
    let (d1, d2) = (dir.path().join("hub1"), dir.path().join("hub2"));
    let mut hub = HubProcess::start(&d1, &["--lease-interval", "1s", "--lease-grace", "3s"])
        .await
        .unwrap();
    let port = hub.port;
    let admin = hub.client().unwrap();
    // The CLI and the agents keep the first hub's client config (server, CA, admin token):
    // the restored database carries the same CA and token hashes.
    let config = dir.path().join("client.yaml");
    std::fs::copy(hub.client_config_path(), &config).unwrap();

    // An agent with the default eviction grace (60 min), and three works it applied.
    let agent_data = dir.path().join("agent");
    hub.join_klusterlet(
        &klusterlet_binary(),
        "c1",
        managed.kubeconfig_path(),
        &agent_data,
        &[],
    )
    .await
    .unwrap();
    let ns = managed.fresh_namespace().await.unwrap();
    let agent_log = dir.path().join("agent.log");
    let _agent = tokio::process::Command::new(klusterlet_binary())
        .arg("run")
        .arg("--kubeconfig")
        .arg(managed.kubeconfig_path())
        .arg("--data-dir")
        .arg(&agent_data)
        .args(["--resync", "2s"])
        .args(["--namespace", "agent-backup-c1"])
        .env("KLUSTERLET_LOG", "info,klusterlet=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&agent_log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&agent_log).unwrap_or_default();
    for (name, v) in [
        ("keep", "k1"),
        ("gone-later", "g1"),
        ("changed-later", "m1"),
    ] {
        admin
            .put_work(&config_map_work("c1", &ns, name, v), None)
            .await
            .unwrap();
    }
    let cms: Api<ConfigMap> = Api::namespaced(managed.client(), &ns);
    for name in ["keep", "gone-later", "changed-later"] {
        eventually(&format!("{name} applied"), log, || async {
            admin
                .get_work("c1", name, &ListOptions::default())
                .await
                .is_ok_and(|w| applied_at_current(&w.value))
        })
        .await;
    }

    // A steady write load on another cluster, every acknowledgement timed.
    admin
        .put_cluster(&ManagedCluster::new("load", Default::default()))
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (client, stop) = (admin.clone(), stop.clone());
            tokio::spawn(async move {
                let mut acked: Vec<(String, Instant)> = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("w{w}-{i}");
                    let work = ManifestWork::new(
                        "load",
                        &name,
                        vec![json!({"apiVersion": "v1", "kind": "ConfigMap",
                                    "metadata": {"name": name, "namespace": "default"},
                                    "data": {"i": i.to_string()}})],
                    );
                    if client.put_work(&work, None).await.is_ok() {
                        acked.push((name, Instant::now()));
                    }
                    i += 1;
                }
                acked
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The backup, while the writers write.
    let file = dir.path().join("hub-backup.db");
    let started = Instant::now();
    let out = hub_cli(&["backup", "--to", file.to_str().unwrap()], Some(&config)).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("bytes written to"),
        "{}",
        text(&out)
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "a backup holds secrets");
    }
    let old_epoch = epoch_of(&admin).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // After the backup: one work deleted, one changed, one created; all on the cluster.
    admin.delete_work("c1", "gone-later").await.unwrap();
    let mut changed = config_map_work("c1", &ns, "changed-later", "m2");
    changed.metadata.resource_version = None;
    admin.put_work(&changed, None).await.unwrap();
    admin
        .put_work(&config_map_work("c1", &ns, "created-later", "n1"), None)
        .await
        .unwrap();
    eventually("gone-later removed from the cluster", log, || async {
        config_map_value(&cms, "gone-later").await.is_none()
    })
    .await;
    eventually("changed-later at m2", log, || async {
        config_map_value(&cms, "changed-later").await.as_deref() == Some("m2")
    })
    .await;
    eventually("created-later applied", log, || async {
        config_map_value(&cms, "created-later").await.as_deref() == Some("n1")
    })
    .await;
    let keep_version = cms.get("keep").await.unwrap().metadata.resource_version;

    // Restoring into the serving hub's data dir is refused, and changes nothing.
    let refused = hub_cli(
        &[
            "restore",
            "--from",
            file.to_str().unwrap(),
            "--data-dir",
            d1.to_str().unwrap(),
        ],
        None,
    )
    .await;
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("a hub is serving"),
        "{}",
        text(&refused)
    );

    stop.store(true, Ordering::Relaxed);
    let mut acked_before = Vec::new();
    let mut acked_total = 0;
    for w in writers {
        let acked = w.await.unwrap();
        acked_total += acked.len();
        acked_before.extend(
            acked
                .into_iter()
                .filter(|(_, at)| *at < started)
                .map(|(n, _)| n),
        );
    }
    assert!(!acked_before.is_empty(), "the load wrote before the backup");

    // `hub wait` for the deletion of changed-later, started against the old hub: it must
    // come through the restore and see the deletion made on the restored hub.
    let wait_config = config.clone();
    let waiter = tokio::spawn(async move {
        hub_cli(
            &[
                "wait",
                "work",
                "changed-later",
                "--cluster",
                "c1",
                "--for",
                "delete",
                "--timeout",
                "120s",
            ],
            Some(&wait_config),
        )
        .await
    });
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The old hub goes; the backup is restored into a fresh data dir; a hub starts on it
    // where the old one listened.
    hub.stop();
    let restored = hub_cli(
        &[
            "restore",
            "--from",
            file.to_str().unwrap(),
            "--data-dir",
            d2.to_str().unwrap(),
        ],
        None,
    )
    .await;
    assert!(restored.status.success(), "{}", text(&restored));
    let hub2 = HubProcess::start_on(
        &d2,
        port,
        &["--lease-interval", "1s", "--lease-grace", "3s"],
    )
    .await
    .unwrap();
    let admin2 = api::HubClient::new(&api::ClientConfig::load(&config).unwrap()).unwrap();
    let new_epoch = epoch_of(&admin2).await;
    assert_ne!(new_epoch, old_epoch, "a restore starts a new epoch");

    // Every work acknowledged before the backup started is there.
    let listed = admin2
        .list_works(Some("load"), &ListOptions::default())
        .await
        .unwrap()
        .value
        .items;
    let names: std::collections::HashSet<&str> =
        listed.iter().map(|w| w.metadata.name.as_str()).collect();
    let missing: Vec<&String> = acked_before
        .iter()
        .filter(|n| !names.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} works acknowledged before the backup are missing: {missing:?}",
        missing.len(),
        acked_before.len()
    );
    println!(
        "backup under load: {} works acknowledged before it, {acked_total} in all, {} in the backup",
        acked_before.len(),
        listed.len()
    );

    // The agent converges: the deleted work is back and applied again, the changed one is
    // back at its old content, the one created later stays on the cluster (the restored
    // hub does not say it deleted it: eviction grace), the unchanged one is not touched.
    eventually("gone-later applied again", log, || async {
        config_map_value(&cms, "gone-later").await.as_deref() == Some("g1")
    })
    .await;
    eventually("changed-later back at m1", log, || async {
        config_map_value(&cms, "changed-later").await.as_deref() == Some("m1")
    })
    .await;
    for name in ["gone-later", "changed-later"] {
        eventually(&format!("{name} reported applied"), log, || async {
            admin2
                .get_work("c1", name, &ListOptions::default())
                .await
                .is_ok_and(|w| applied_at_current(&w.value))
        })
        .await;
    }
    let agent_text = log();
    assert!(
        agent_text.contains("the hub's database was restored"),
        "the agent saw the epoch change:\n{agent_text}"
    );
    assert!(
        agent_text.contains("reapply=2"),
        "only the two works that differ are applied again:\n{agent_text}"
    );
    assert_eq!(
        config_map_value(&cms, "created-later").await.as_deref(),
        Some("n1"),
        "a work missing from the restored hub keeps its objects for the eviction grace"
    );
    assert_eq!(
        cms.get("keep").await.unwrap().metadata.resource_version,
        keep_version,
        "an unchanged work's object is not touched"
    );
    eventually("the agent says why created-later stays", log, || async {
        log().contains("keeping its objects until the eviction grace ends")
    })
    .await;

    // `hub wait` sees the deletion made on the restored hub without spinning on the old
    // epoch's index.
    let gets_before = work_gets(&admin2).await;
    admin2.delete_work("c1", "changed-later").await.unwrap();
    let waited = tokio::time::timeout(LIMIT, waiter)
        .await
        .expect("hub wait ends")
        .unwrap();
    assert!(waited.status.success(), "{}", text(&waited));
    let gets = work_gets(&admin2).await.saturating_sub(gets_before);
    assert!(
        gets < 50,
        "hub wait asked {gets} times: it spun on an index of the old epoch"
    );
    drop(hub2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_backups_and_restores_are_refused_with_clear_messages() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let d1 = dir.path().join("hub");
    let hub = HubProcess::start(&d1, &[]).await.unwrap();
    let config = hub.client_config_path();
    let admin = hub.client().unwrap();

    // An existing file is not overwritten without --force.
    let existing = dir.path().join("existing.db");
    std::fs::write(&existing, b"keep me").unwrap();
    let out = hub_cli(
        &["backup", "--to", existing.to_str().unwrap()],
        Some(&config),
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--force"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");
    let out = hub_cli(
        &["backup", "--to", existing.to_str().unwrap(), "--force"],
        Some(&config),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        std::fs::read(&existing)
            .unwrap()
            .starts_with(b"SQLite format 3\0")
    );

    // An unwritable place: exit 2, and the hub made no copy (no audit entry for it).
    let audits_before = admin
        .list_audit(Some("database"), None)
        .await
        .unwrap()
        .items
        .len();
    let out = hub_cli(
        &["backup", "--to", "/nonexistent-dir/hub.db"],
        Some(&config),
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot write"),
        "{}",
        text(&out)
    );
    let audits = admin
        .list_audit(Some("database"), None)
        .await
        .unwrap()
        .items;
    assert_eq!(
        audits.len(),
        audits_before,
        "no copy for an unwritable place"
    );
    assert!(
        audits
            .iter()
            .any(|e| e.action == "hub.backup" && e.actor == "admin"),
        "backups are audited: {audits:?}"
    );

    // Not an admin: 403, exit 4.
    admin
        .put_cluster(&ManagedCluster::new("c1", Default::default()))
        .await
        .unwrap();
    let token = admin
        .create_token(&api::TokenRequest {
            kind: api::TokenKind::Api,
            clusters: vec!["c1".into()],
            verbs: vec![api::Verb::Read, api::Verb::Write],
            ..Default::default()
        })
        .await
        .unwrap()
        .token
        .unwrap();
    let scoped = dir.path().join("scoped.db");
    let mut cmd = tokio::process::Command::new(testkit::procs::binary("hub").unwrap());
    let out = cmd
        .args([
            "backup",
            "--to",
            scoped.to_str().unwrap(),
            "--token",
            &token,
        ])
        .env("HUB_CONFIG", &config)
        .env_remove("HUB_TOKEN")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("admins only"),
        "{}",
        text(&out)
    );
    assert!(!scoped.exists(), "nothing written for a refused backup");

    // Restores: a file that is no database, a SQLite file that is no hub's, a newer
    // schema, a missing file: exit 2, nothing changed.
    let target = dir.path().join("target");
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, b"this is not a database").unwrap();
    let restore = |from: PathBuf| {
        let target = target.clone();
        async move {
            hub_cli(
                &[
                    "restore",
                    "--from",
                    from.to_str().unwrap(),
                    "--data-dir",
                    target.to_str().unwrap(),
                ],
                None,
            )
            .await
        }
    };
    let out = restore(junk).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a fleethub backup"),
        "{}",
        text(&out)
    );
    let other = dir.path().join("other.db");
    {
        use sqlx::ConnectOptions;
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&other)
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Delete)
            .connect()
            .await
            .unwrap();
        sqlx::query("CREATE TABLE notes (t TEXT)")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::Connection::close(conn).await.unwrap();
    }
    let out = restore(other).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("without the hub's tables"),
        "{}",
        text(&out)
    );
    let newer = dir.path().join("newer.db");
    std::fs::copy(&existing, &newer).unwrap();
    {
        use sqlx::ConnectOptions;
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&newer)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Delete)
            .connect()
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (9999, 'from the future', 1, x'00', 0)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::Connection::close(conn).await.unwrap();
    }
    let out = restore(newer).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("newer than this hub"),
        "{}",
        text(&out)
    );
    let out = restore(dir.path().join("absent.db")).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(!target.join("hub.db").exists(), "nothing restored");

    // A good one works, and keeps nothing aside when there was nothing.
    let out = restore(existing.clone()).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("new index epoch"),
        "{}",
        text(&out)
    );

    // A hub on Postgres says to use Postgres's tools.
    let pg = TestPostgres::shared().await.unwrap();
    let url = pg.fresh_database().await.unwrap();
    let pg_hub = HubProcess::start(&dir.path().join("pg"), &["--database-url", url.as_str()])
        .await
        .unwrap();
    let pg_file = dir.path().join("pg.db");
    let out = hub_cli(
        &["backup", "--to", pg_file.to_str().unwrap()],
        Some(&pg_hub.client_config_path()),
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pg_dump"),
        "{}",
        text(&out)
    );
    assert!(!pg_file.exists());
    // ... and `hub restore --new-epoch` renews its epoch after a pg_restore.
    let before = epoch_of(&pg_hub.client().unwrap()).await;
    drop(pg_hub);
    let out = hub_cli(
        &["restore", "--new-epoch", "--database-url", url.as_str()],
        None,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let pg_hub = HubProcess::start(&dir.path().join("pg"), &["--database-url", url.as_str()])
        .await
        .unwrap();
    assert_ne!(epoch_of(&pg_hub.client().unwrap()).await, before);
    drop(hub);
}
