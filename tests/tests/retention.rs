//! History retention (issue 20): audit entries older than `--audit-retention` and change-log
//! rows behind `--change-log-retention` are pruned, on SQLite and on Postgres alike, and
//! nothing else goes with them.

use std::sync::Arc;
use std::time::Duration;

use api::ManifestWork;
use hub::service::retention::Retention;
use hub::service::{Caller, Hub, HubSettings};
use serde_json::json;
use testkit::postgres::TestPostgres;

/// A hub with `retention` on a fresh database; the tempdir keeps SQLite alive.
struct Fixture {
    hub: Arc<Hub>,
    url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Fixture {
    /// Stores cluster `name` (works need their cluster).
    async fn cluster(&self, name: &str) {
        self.hub
            .put_cluster(
                name,
                api::ManagedCluster::new(name, Default::default()),
                None,
            )
            .await
            .unwrap();
    }
}

async fn start(url: String, dir: Option<tempfile::TempDir>, retention: Retention) -> Fixture {
    let store = hub::store::connect(&url).await.unwrap();
    let hub = Hub::start_with(
        store,
        HubSettings {
            retention,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    Fixture {
        hub,
        url,
        _dir: dir,
    }
}

async fn sqlite(retention: Retention) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("hub.db").display());
    start(url, Some(dir), retention).await
}

async fn postgres(retention: Retention) -> Fixture {
    let pg = TestPostgres::shared().await.unwrap();
    let url = pg.fresh_database().await.unwrap();
    start(url, None, retention).await
}

fn caller() -> Option<Caller> {
    Some(Caller {
        actor: "api:ci".into(),
        source: "127.0.0.1:9".into(),
    })
}

fn work(name: &str) -> ManifestWork {
    ManifestWork::new(
        "c1",
        name,
        vec![json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": "default"}})],
    )
}

/// Backdates every audit entry of `target` by `age`, as if written that long ago (the
/// store writes the time itself).
async fn backdate(url: &str, target: &str, age: Duration) {
    let at = (chrono::Utc::now() - chrono::Duration::from_std(age).unwrap()).to_rfc3339();
    let sql = "UPDATE audit SET at = $1 WHERE target = $2";
    if url.starts_with("postgres") {
        let db = sqlx::PgPool::connect(url).await.unwrap();
        sqlx::query(sql)
            .bind(at)
            .bind(target)
            .execute(&db)
            .await
            .unwrap();
    } else {
        let db = sqlx::SqlitePool::connect(url).await.unwrap();
        sqlx::query(sql)
            .bind(at)
            .bind(target)
            .execute(&db)
            .await
            .unwrap();
    }
}

/// Entries older than the audit retention go, younger ones stay; a pruned deletion makes
/// the work's 404 a plain one (the agent then waits for its eviction grace: later, never
/// sooner).
async fn old_audit_entries_are_pruned(f: Fixture) {
    f.cluster("c1").await;
    for name in ["old", "new"] {
        f.hub
            .put_work("c1", name, work(name), None, caller())
            .await
            .unwrap();
        f.hub.delete_work("c1", name, caller()).await.unwrap();
    }
    backdate(
        &f.url,
        "clusters/c1/manifestworks/old",
        Duration::from_secs(40 * 24 * 3600),
    )
    .await;
    assert!(f.hub.work_deletion("c1", "old").await.unwrap().is_some());

    let pruned = f.hub.prune_history().await.unwrap();
    assert_eq!(pruned.audit, 2, "the old work's put and delete");
    let log = f.hub.store().list_audit(None, 100).await.unwrap();
    assert!(log.iter().all(|e| !e.target.ends_with("/old")), "{log:?}");
    let new: Vec<&str> = log
        .iter()
        .filter(|e| e.target.ends_with("/new"))
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(new, ["work.delete", "work.put"]);
    assert!(f.hub.work_deletion("c1", "old").await.unwrap().is_none());
    assert!(f.hub.work_deletion("c1", "new").await.unwrap().is_some());
    // Nothing older is left: a second prune deletes nothing.
    assert_eq!(f.hub.prune_history().await.unwrap().audit, 0);
}

/// With the default retention (keep every entry) nothing is pruned, however old.
async fn the_default_keeps_every_entry(f: Fixture) {
    f.cluster("c1").await;
    f.hub
        .put_work("c1", "w", work("w"), None, caller())
        .await
        .unwrap();
    backdate(
        &f.url,
        "clusters/c1/manifestworks/w",
        Duration::from_secs(400 * 24 * 3600),
    )
    .await;
    assert_eq!(f.hub.prune_history().await.unwrap().audit, 0);
    let log = f
        .hub
        .store()
        .list_audit(Some("clusters/c1/manifestworks/w"), 10)
        .await
        .unwrap();
    assert_eq!(log.len(), 1);
}

/// Change-log rows more than the retention behind the latest index go; the works stay.
async fn the_change_log_keeps_its_last_indexes(f: Fixture) {
    f.cluster("c1").await;
    for i in 0..1_100 {
        let name = format!("w{i:04}");
        f.hub
            .put_work("c1", &name, work(&name), None, caller())
            .await
            .unwrap();
    }
    let latest = f.hub.store().current_index().await.unwrap();
    let pruned = f.hub.prune_history().await.unwrap();
    assert_eq!(pruned.changes, latest - 1_000);
    let kept = f.hub.store().changes_since(0, 10_000).await.unwrap();
    assert_eq!(kept.len(), 1_000);
    assert_eq!(kept.first().map(|c| c.index), Some(latest - 999));
    for name in ["w0000", "w1099"] {
        assert!(f.hub.store().get_work("c1", name).await.unwrap().is_some());
    }
}

fn thirty_days() -> Retention {
    Retention::new(Duration::from_secs(30 * 24 * 3600), 200_000).unwrap()
}

fn thousand_indexes() -> Retention {
    Retention::new(Duration::ZERO, 1_000).unwrap()
}

macro_rules! retention {
    ($backend:ident) => {
        mod $backend {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn old_audit_entries_are_pruned() {
                super::old_audit_entries_are_pruned($backend(thirty_days()).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn the_default_keeps_every_entry() {
                super::the_default_keeps_every_entry($backend(Retention::default()).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn the_change_log_keeps_its_last_indexes() {
                super::the_change_log_keeps_its_last_indexes($backend(thousand_indexes()).await)
                    .await;
            }
        }
    };
}

retention!(sqlite);
retention!(postgres);

/// `hub serve --check-config` with the retention flags: a too short audit retention or
/// change log stops it with the reason (exit 1); valid ones are printed.
#[test]
fn retention_flags_are_checked_at_start() {
    let run = |extra: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(testkit::procs::binary("hub").unwrap())
            .args(["serve", "--check-config", "--data-dir"])
            .arg(dir.path())
            .args(extra)
            .env_remove("HUB_DATABASE_URL")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (code, text) = run(&["--audit-retention", "1h"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("--audit-retention must be 0"), "{text}");
    let (code, text) = run(&["--change-log-retention", "10"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("--change-log-retention must be at least 1000"),
        "{text}"
    );
    let (code, text) = run(&[
        "--audit-retention",
        "2160h",
        "--change-log-retention",
        "5000",
    ]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("retention: audit 2160h, change log 5000 indexes"),
        "{text}"
    );
    let (code, text) = run(&[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("retention: audit every entry, change log 200000 indexes"),
        "{text}"
    );
}
