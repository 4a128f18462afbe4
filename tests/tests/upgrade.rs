//! Upgrades: the current `hub` binary started on a database left at every earlier schema
//! version, on SQLite and Postgres, serves the rows it finds and goes on from their change
//! index; a database whose schema is newer than the binary is refused, by `hub serve` and
//! `hub serve --check-config`, before anything is changed.
//!
//! A database "at schema k" is built with this repository's migrations up to k (sqlx's
//! `run_to`), as the release that ended with migration k left it; the rows are written
//! with SQL into the tables that schema has, in the JSON shape hubs have stored since
//! migration 1.

use std::path::Path;
use std::process::Command;

use anyhow::Context;
use api::{ListOptions, ManagedCluster, ManifestWork};
use serde_json::json;
use sqlx::migrate::Migrator;
use testkit::postgres::TestPostgres;
use testkit::procs::{HubProcess, binary};

static SQLITE: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("../migrations/postgres");

/// The change index the old hub had reached.
const OLD_INDEX: i64 = 41;

fn init() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn versions(migrator: &Migrator) -> Vec<i64> {
    migrator.iter().map(|m| m.version).collect()
}

fn old_cluster() -> ManagedCluster {
    let mut c = ManagedCluster::new("old", [("env".to_string(), "prod".to_string())].into());
    c.metadata.uid = Some("5b0e1f4a-0000-4000-8000-000000000001".into());
    c.metadata.generation = Some(1);
    c.metadata.creation_timestamp = Some("2026-11-01T10:00:00Z".parse().unwrap());
    c
}

fn old_work(name: &str, rv: i64) -> ManifestWork {
    let mut w = ManifestWork::new(
        "old",
        name,
        vec![json!({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": name, "namespace": "default"}, "data": {"from": "old"}})],
    );
    w.metadata.labels.insert("app".into(), "legacy".into());
    w.metadata.uid = Some(format!("5b0e1f4a-0000-4000-8000-0000000001{rv:02}"));
    w.metadata.generation = Some(1);
    w.metadata.resource_version = Some(rv.to_string());
    w.metadata.creation_timestamp = Some("2026-11-01T10:00:00Z".parse().unwrap());
    w
}

/// The rows an old hub left: a cluster, two works and the index, written into `$pool`
/// (a macro: the same statements on both backends' pools, `$n` placeholders on both).
macro_rules! write_old_rows {
    ($pool:expr) => {{
        let pool = $pool;
        sqlx::query("INSERT INTO clusters (name, resource_version, object) VALUES ($1, $2, $3)")
            .bind("old")
            .bind(39_i64)
            .bind(serde_json::to_string(&old_cluster()).unwrap())
            .execute(pool)
            .await
            .unwrap();
        for (name, rv) in [("w1", 40_i64), ("w2", OLD_INDEX)] {
            sqlx::query(
                "INSERT INTO works (cluster, name, resource_version, object) VALUES ($1, $2, $3, $4)",
            )
            .bind("old")
            .bind(name)
            .bind(rv)
            .bind(serde_json::to_string(&old_work(name, rv)).unwrap())
            .execute(pool)
            .await
            .unwrap();
        }
        sqlx::query("UPDATE hub_index SET value = $1 WHERE id = 1")
            .bind(OLD_INDEX)
            .execute(pool)
            .await
            .unwrap();
    }};
}

/// Marks the database in `$pool` as migrated by a newer hub to `$version` (the row its
/// migration would leave).
macro_rules! newer_schema {
    ($pool:expr, $version:expr) => {{
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind($version)
        .bind("from a newer hub")
        .bind(true)
        .bind(vec![0u8; 48])
        .bind(1_i64)
        .execute($pool)
        .await
        .unwrap();
    }};
}

/// `hub serve --check-config` on this database: exit code and output.
fn check_config(data_dir: &Path, url: &str) -> anyhow::Result<(i32, String)> {
    let out = Command::new(binary("hub")?)
        .args(["serve", "--check-config", "--data-dir"])
        .arg(data_dir)
        .args(["--database-url", url])
        .env_remove("HUB_DATABASE_URL")
        .output()
        .context("running hub serve --check-config")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.code().unwrap_or(-1), text))
}

/// Starts the current hub on a database at an old schema and checks what it serves.
async fn current_hub_serves_old_rows(
    data_dir: &Path,
    url: &str,
    at: i64,
    latest: i64,
) -> anyhow::Result<()> {
    let (code, text) = check_config(data_dir, url)?;
    anyhow::ensure!(code == 0, "check-config at schema {at}: {text}");
    anyhow::ensure!(
        text.contains(&format!("schema at migration {at}: migrations"))
            && text.contains(&format!("{latest}]")),
        "check-config should name the pending migrations at schema {at}: {text}"
    );
    let hub = HubProcess::start(data_dir, &["--database-url", url]).await?;
    let client = hub.client()?;
    let works = client
        .list_works(Some("old"), &ListOptions::default())
        .await?;
    anyhow::ensure!(
        works.index >= OLD_INDEX as u64,
        "the index went back from {OLD_INDEX} to {} after the upgrade from schema {at}",
        works.index
    );
    let names: Vec<_> = works
        .value
        .items
        .iter()
        .map(|w| w.metadata.name.clone())
        .collect();
    anyhow::ensure!(names == ["w1", "w2"], "works after upgrade: {names:?}");
    for w in &works.value.items {
        let old = old_work(&w.metadata.name, 0);
        anyhow::ensure!(
            w.spec.workload.manifests == old.spec.workload.manifests
                && w.metadata.labels == old.metadata.labels
                && w.metadata.uid.is_some()
                && w.metadata.generation == Some(1),
            "work {} changed by the upgrade from schema {at}: {w:?}",
            w.metadata.name
        );
    }
    let cluster = client.get_cluster("old").await?.value;
    anyhow::ensure!(cluster.metadata.labels.get("env").map(String::as_str) == Some("prod"));
    // A write after the upgrade goes on from the old index, so a waiter that saw the old
    // hub's index is woken by it, and a blocking reader sees no index twice.
    let mut w3 = old_work("w3", 0);
    w3.metadata = api::ObjectMeta {
        name: "w3".into(),
        namespace: Some("old".into()),
        ..Default::default()
    };
    let written = client.put_work(&w3, None).await?;
    anyhow::ensure!(
        written.index > OLD_INDEX as u64,
        "a write after the upgrade from schema {at} got index {}, not past {OLD_INDEX}",
        written.index
    );
    let (code, text) = check_config(data_dir, url)?;
    anyhow::ensure!(
        code == 0 && text.contains(&format!("schema at migration {latest}, up to date")),
        "after start: {text}"
    );
    Ok(())
}

/// `hub serve` and `--check-config` refuse a newer schema, saying so, and change nothing.
async fn newer_schema_is_refused(data_dir: &Path, url: &str, known: i64) -> anyhow::Result<()> {
    let (code, text) = check_config(data_dir, url)?;
    anyhow::ensure!(
        code == 1 && text.contains("schema is newer than this hub"),
        "check-config on a newer schema: exit {code}: {text}"
    );
    anyhow::ensure!(
        text.contains(&format!("migration {}", known + 1))
            && text.contains(&format!("up to {known}")),
        "{text}"
    );
    let out = Command::new(binary("hub")?)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(["--database-url", url])
        .env_remove("HUB_DATABASE_URL")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(
        out.status.code() == Some(1)
            && stderr.contains("schema is newer than this hub")
            && stderr.contains("nothing was changed"),
        "hub serve on a newer schema: {:?}: {stderr}",
        out.status
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_upgrades_from_every_earlier_schema_and_refuses_a_newer_one() {
    init();
    let all = versions(&SQLITE);
    let latest = *all.last().unwrap();
    for &at in &all[..all.len() - 1] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hub.db");
        let url = format!("sqlite://{}", file.display());
        let pool = sqlx::SqlitePool::connect(&format!("{url}?mode=rwc"))
            .await
            .unwrap();
        SQLITE.run_to(at, &pool).await.unwrap();
        write_old_rows!(&pool);
        pool.close().await;
        current_hub_serves_old_rows(dir.path(), &url, at, latest)
            .await
            .unwrap_or_else(|e| panic!("SQLite from schema {at}: {e:#}"));
    }

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("hub.db").display());
    let pool = sqlx::SqlitePool::connect(&format!("{url}?mode=rwc"))
        .await
        .unwrap();
    SQLITE.run(&pool).await.unwrap();
    newer_schema!(&pool, latest + 1);
    let tables = |pool: sqlx::SqlitePool| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM sqlite_master")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let before = tables(pool.clone()).await;
    pool.close().await;
    newer_schema_is_refused(dir.path(), &url, latest)
        .await
        .unwrap();
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    assert_eq!(
        tables(pool).await,
        before,
        "the refused start changed the schema"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_upgrades_from_every_earlier_schema_and_refuses_a_newer_one() {
    init();
    let pg = TestPostgres::shared().await.unwrap();
    let all = versions(&POSTGRES);
    let latest = *all.last().unwrap();
    for &at in &all[..all.len() - 1] {
        let url = pg.fresh_database().await.unwrap();
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        POSTGRES.run_to(at, &pool).await.unwrap();
        write_old_rows!(&pool);
        pool.close().await;
        let dir = tempfile::tempdir().unwrap();
        current_hub_serves_old_rows(dir.path(), &url, at, latest)
            .await
            .unwrap_or_else(|e| panic!("Postgres from schema {at}: {e:#}"));
    }

    let url = pg.fresh_database().await.unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    POSTGRES.run(&pool).await.unwrap();
    newer_schema!(&pool, latest + 1);
    let tables = "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'";
    let before: i64 = sqlx::query_scalar(tables).fetch_one(&pool).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    newer_schema_is_refused(dir.path(), &url, latest)
        .await
        .unwrap();
    let after: i64 = sqlx::query_scalar(tables).fetch_one(&pool).await.unwrap();
    assert_eq!(after, before, "the refused start changed the schema");
    pool.close().await;
}
