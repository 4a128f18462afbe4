//! The SQLite backend: the embedded default for a single hub.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::{IndexStream, Leadership, StoreError, sql::sql_store};

mod list;

/// ManifestWorks, clusters and settings in one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The database file, beside which backups are staged.
    path: std::path::PathBuf,
}

impl SqliteStore {
    const BACKEND: &'static str = "sqlite";
    /// sqlx runs each SQLite connection on a thread of its own already; a writer apart cost
    /// 2–5 % of the create rate (docs/benchmarks.md).
    const WRITER_APART: bool = false;

    /// Opens (creating when missing) and migrates the database.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        // WAL with synchronous=NORMAL survives a killed process (only an OS crash may lose
        // the last commits), and lets readers run beside the writer.
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // Reads map the file instead of copying each page with read(2): a full list of
            // 10,000 works is 12 MB of pages.
            .pragma("mmap_size", "268435456");
        let path = opts.get_filename().to_path_buf();
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .after_release(|conn, _| Box::pin(super::release_outside_transaction(conn)))
            .connect_with(opts)
            .await?;
        super::schema::migrate(&sqlx::migrate!("../migrations/sqlite"), &pool).await?;
        Ok(SqliteStore { pool, path })
    }

    /// Where the database stands against our migrations, changing nothing: opened
    /// read-only, and a file that does not exist yet is a new database.
    pub async fn inspect(url: &str) -> Result<super::SchemaReport, StoreError> {
        let migrator = sqlx::migrate!("../migrations/sqlite");
        let opts = SqliteConnectOptions::from_str(url)?.read_only(true);
        if !opts.get_filename().exists() {
            return Ok(super::schema::new_database(&migrator));
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await?;
        let (exists,): (bool,) = sqlx::query_as(super::schema::table_exists_sql(Self::BACKEND))
            .fetch_one(&pool)
            .await?;
        let report = if exists {
            super::schema::inspect(&migrator, &pool).await
        } else {
            Ok(super::schema::new_database(&migrator))
        };
        pool.close().await;
        report
    }

    /// `BEGIN IMMEDIATE` takes the database write lock up front, so the index read here
    /// cannot move until commit.
    async fn begin_locked(
        &self,
    ) -> Result<(sqlx::Transaction<'static, sqlx::Sqlite>, u64), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let (v,): (i64,) = sqlx::query_as("SELECT value FROM hub_index WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        Ok((tx, v as u64))
    }

    /// A list's read: a group of works per statement (see [`list`]).
    async fn list_works_impl(
        &self,
        cluster: Option<&str>,
        after: Option<(&str, &str)>,
        limit: u32,
    ) -> Result<Vec<super::StoredWork>, StoreError> {
        list::list_works(&self.pool, cluster, after, limit).await
    }

    async fn listen_impl(&self) -> Result<Option<IndexStream>, StoreError> {
        Ok(None)
    }

    async fn snapshot_impl(&self) -> Result<super::backup::Snapshot, StoreError> {
        super::backup::snapshot(&self.pool, &self.path).await
    }

    /// One hub owns a SQLite file, so it always leads.
    async fn lead_impl(&self, _name: &str) -> Result<Option<Box<dyn Leadership>>, StoreError> {
        Ok(Some(Box::new(SoleHub)))
    }
}

/// The leadership of the only hub of a SQLite file: never lost.
struct SoleHub;

#[async_trait::async_trait]
impl Leadership for SoleHub {
    async fn check(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

impl SqliteStore {
    /// `BEGIN IMMEDIATE` and the batch's reads: statements on an in-process database cost
    /// no round trip, so one each is fine.
    async fn begin_batch(
        &self,
        works: &[(String, String)],
        clusters: &[String],
    ) -> Result<SqliteTx, StoreError> {
        let (tx, base) = self.begin_locked().await?;
        let mut tx = SqliteTx::new(tx, base);
        tx.prefetch(works, clusters).await?;
        Ok(tx)
    }
}

impl SqliteTx {
    /// Reads these works and clusters with one query each (those not read yet).
    async fn prefetch(
        &mut self,
        works: &[(String, String)],
        clusters: &[String],
    ) -> Result<(), StoreError> {
        let works: std::collections::BTreeSet<&(String, String)> = works
            .iter()
            .filter(|k| !self.works.contains_key(*k))
            .collect();
        if !works.is_empty() {
            let mut qb: sqlx::QueryBuilder<sqlx::Sqlite> = sqlx::QueryBuilder::new(
                "SELECT cluster, name, object FROM works WHERE (cluster, name) IN ",
            );
            qb.push_tuples(works.iter(), |mut b, (c, n)| {
                b.push_bind(c.clone()).push_bind(n.clone());
            });
            let rows: Vec<(String, String, String)> =
                qb.build_query_as().fetch_all(&mut *self.tx).await?;
            for k in works {
                self.works.insert(k.clone(), None);
            }
            for (c, n, o) in rows {
                let w = super::decode(&format!("work {c}/{n}"), &o)?;
                self.works
                    .insert((c, n), Some(super::CachedWork::Read(Box::new(w))));
            }
        }
        let clusters: std::collections::BTreeSet<&String> = clusters
            .iter()
            .filter(|c| !self.clusters.contains_key(*c))
            .collect();
        if !clusters.is_empty() {
            let mut qb: sqlx::QueryBuilder<sqlx::Sqlite> =
                sqlx::QueryBuilder::new("SELECT name, object FROM clusters WHERE name IN (");
            let mut list = qb.separated(", ");
            for c in &clusters {
                list.push_bind((*c).clone());
            }
            qb.push(")");
            let rows: Vec<(String, String)> = qb.build_query_as().fetch_all(&mut *self.tx).await?;
            for c in clusters {
                self.clusters.insert(c.clone(), None);
            }
            for (n, o) in rows {
                let c = super::decode(&format!("cluster {n}"), &o)?;
                self.clusters.insert(n, Some(c));
            }
        }
        Ok(())
    }

    /// The batch's held-back work upserts, audit entries and change-log rows, one
    /// statement each, then the index. One process owns a SQLite database, so there is
    /// nobody else to tell.
    async fn finish(
        &mut self,
        changes: &[super::Change],
        audit: &[super::NewAuditEntry],
    ) -> Result<(), StoreError> {
        self.flush_works().await?;
        if !audit.is_empty() {
            let at = chrono::Utc::now().to_rfc3339();
            let mut qb: sqlx::QueryBuilder<sqlx::Sqlite> = sqlx::QueryBuilder::new(
                "INSERT INTO audit (at, actor, action, target, source, details) ",
            );
            qb.push_values(audit, |mut b, e| {
                b.push_bind(at.clone())
                    .push_bind(e.actor.clone())
                    .push_bind(e.action.clone())
                    .push_bind(e.target.clone())
                    .push_bind(e.source.clone())
                    .push_bind(e.details.to_string());
            });
            qb.build().execute(&mut *self.tx).await?;
        }
        if let Some(last) = changes.last() {
            // One multi-row insert per batch keeps the round trips per write low.
            let mut qb: sqlx::QueryBuilder<sqlx::Sqlite> = sqlx::QueryBuilder::new(
                "INSERT INTO changes (idx, kind, cluster, name, labels, prev_labels, status_only, has_ttl) ",
            );
            qb.push_values(changes, |mut b, c| {
                b.push_bind(c.index as i64)
                    .push_bind(c.kind as i16 as i32)
                    .push_bind(c.cluster.clone())
                    .push_bind(c.name.clone())
                    .push_bind(super::labels_json(&c.labels))
                    .push_bind(c.prev_labels.as_ref().map(super::labels_json))
                    .push_bind(c.status_only)
                    .push_bind(c.has_ttl);
            });
            qb.build().execute(&mut *self.tx).await?;
            sqlx::query("UPDATE hub_index SET value = $1 WHERE id = 1")
                .bind(last.index as i64)
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(())
    }
}

impl SqliteTx {
    async fn finish_and_commit(
        mut self: Box<Self>,
        changes: &[super::Change],
        audit: &[super::NewAuditEntry],
    ) -> Result<(), StoreError> {
        self.finish(changes, audit).await?;
        (self.tx.commit().await).map_err(|e| StoreError::CommitUnknown(Box::new(e.into())))
    }
}

sql_store!(store: SqliteStore, tx: SqliteTx, conn: sqlx::Transaction<'static, sqlx::Sqlite>, db: sqlx::Sqlite);
