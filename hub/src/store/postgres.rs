//! The Postgres backend (production; several hubs may share one database).

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use sha2::Digest;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};

use super::pg_batch::{self, BatchConn, Timeline};
use super::{Change, IndexStream, Leadership, NewAuditEntry, StoreError, sql::sql_store};

/// A pool of at most `max` connections, set for a database that fails over.
fn pool_options(max: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max)
        // Also bounds connecting: a leader that does not answer yet fails the request
        // with 503 after 5 s instead of holding it.
        .acquire_timeout(Duration::from_secs(5))
        // A pooled connection is pinged before use: one that a failover cut is
        // replaced then, instead of failing the request that drew it.
        .test_before_acquire(true)
        .after_release(|conn, _| Box::pin(super::release_outside_transaction(conn)))
}

/// The channel on which hubs announce committed indexes to each other.
const CHANNEL: &str = "hub_changes";

/// This process's tag on its NOTIFYs (`<instance> <index>`), so its listener skips its own:
/// the writer publishes its changes itself, and re-reading them from the database cost a
/// catch-up query for nearly half of all batches under load. Hubs in one process (tests
/// only) share it and so hear each other through the feed's one-second poll instead.
static INSTANCE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| uuid::Uuid::new_v4().simple().to_string());

/// ManifestWorks, clusters and settings in Postgres.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// The writer's pool (see [`PgStore::connect`]).
    writer_pool: PgPool,
    /// The writer's connection between batches (see `pg_batch`).
    writer: pg_batch::Slot,
}

impl PgStore {
    const BACKEND: &'static str = "postgres";
    /// A median 6 % more creates per second with the writer on its own runtime
    /// (docs/benchmarks.md).
    const WRITER_APART: bool = true;

    /// Connects and applies migrations (sqlx serialises concurrent migrators with an
    /// advisory lock, so hubs may start together).
    ///
    /// The pool is set for a database that fails over (Patroni behind HAProxy, a cloud
    /// database's endpoint): see "High availability" in docs/operations.md.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url.parse()?;
        let options = options.application_name("fleethub").options([
            // Server side: the session of a hub whose machine or network died is ended
            // (and the change-index row lock its open write held is freed) within about
            // ten seconds instead of the kernel's two hours. sqlx has no client-side
            // keepalive; a balancer that cuts sessions of a failed server
            // (`on-marked-down shutdown-sessions`) covers that side.
            ("tcp_keepalives_idle", "5"),
            ("tcp_keepalives_interval", "2"),
            ("tcp_keepalives_count", "3"),
        ]);
        // The writer's own (`pg_batch`): it runs on a thread and runtime of its own, and a
        // connection's socket is served by the runtime that opened it, so the writer's are
        // opened by the writer, as it first needs them. (The readiness probe's write, run
        // only while writes fail, may open one elsewhere; it works all the same.) Named
        // apart in `pg_stat_activity`. Each prepares the batch's lock and reads as it opens.
        let writer_pool = pool_options(2)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::raw_sql(pg_batch::PREPARE).execute(conn).await?;
                    Ok(())
                })
            })
            .connect_lazy_with(options.clone().application_name("fleethub writer"));
        let pool = pool_options(16).connect_with(options).await?;
        super::schema::migrate(&sqlx::migrate!("../migrations/postgres"), &pool).await?;
        Ok(PgStore {
            pool,
            writer_pool,
            writer: Default::default(),
        })
    }

    /// Where the database stands against our migrations, changing nothing.
    pub async fn inspect(url: &str) -> Result<super::SchemaReport, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        let (exists,): (bool,) = sqlx::query_as(super::schema::table_exists_sql(Self::BACKEND))
            .fetch_one(&pool)
            .await?;
        let migrator = sqlx::migrate!("../migrations/postgres");
        let report = if exists {
            super::schema::inspect(&migrator, &pool).await
        } else {
            Ok(super::schema::new_database(&migrator))
        };
        pool.close().await;
        report
    }

    /// Begins a write batch: one round trip begins the transaction, takes the index row
    /// lock (every hub's writer queues here, which is what makes indexes follow commit
    /// order) and, in a statement of its own so that it sees what the previous holder
    /// committed, reads the index with the batch's works and clusters (`pg_batch`).
    async fn begin_batch(
        &self,
        works: &[(String, String)],
        clusters: &[String],
    ) -> Result<PgTx, StoreError> {
        let works: BTreeSet<(&str, &str)> = works
            .iter()
            .map(|(c, n)| (c.as_str(), n.as_str()))
            .collect();
        let clusters: BTreeSet<&str> = clusters.iter().map(String::as_str).collect();
        let works: Vec<(&str, &str)> = works.into_iter().collect();
        let clusters: Vec<&str> = clusters.into_iter().collect();
        let sql = pg_batch::begin_sql(&works, &clusters)?;
        let (conn, rows) = BatchConn::begin(&self.writer_pool, &self.writer, &sql).await?;
        let rows = pg_batch::begin_rows(rows)?;
        let mut tx = PgTx::new(conn, 0);
        for (c, n) in works {
            tx.works.insert((c.to_string(), n.to_string()), None);
        }
        for c in clusters {
            tx.clusters.insert(c.to_string(), None);
        }
        let mut timeline = Timeline::Same;
        for (kind, a, b, object) in rows {
            match kind.as_str() {
                "0" => {
                    tx.base = object.parse().map_err(|_| StoreError::Corrupt {
                        what: "hub_index".into(),
                        source: serde::de::Error::custom(format!("index {object:?}")),
                    })?;
                    timeline = Timeline::of(a, &b);
                }
                "1" => {
                    let w = super::decode(&format!("work {a}/{b}"), &object)?;
                    tx.works
                        .insert((a, b), Some(super::CachedWork::Read(Box::new(w))));
                }
                _ => {
                    let c = super::decode(&format!("cluster {a}"), &object)?;
                    tx.clusters.insert(a, Some(c));
                }
            }
        }
        tx.absent = (tx.works.iter())
            .filter(|(_, w)| w.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        let (gap, current) = match timeline {
            Timeline::Same => return Ok(tx),
            Timeline::Unrecorded(t) => (0, t),
            Timeline::Changed(t) => {
                tracing::warn!(
                    timeline = %t,
                    gap = pg_batch::TIMELINE_GAP,
                    "the database was promoted since the last write; the index moves past what the old primary may have shown"
                );
                (pg_batch::TIMELINE_GAP, t)
            }
        };
        let (moved,): (i64,) = sqlx::query_as(pg_batch::MOVE_TO_TIMELINE)
            .bind(gap as i64)
            .bind(current)
            .fetch_one(&mut *tx.tx)
            .await?;
        tx.base = u64::try_from(moved).unwrap_or_default();
        Ok(tx)
    }

    /// The connection a list reads through: a read-only transaction in which the planner
    /// may not sort. A list asks for rows in the primary key's order, which the key's
    /// index gives as it is scanned, but without statistics (a cluster's works written in
    /// the last minute, before autovacuum analyzed them), and with them once one cluster
    /// holds most of the table, the planner chose to collect the rows and sort them
    /// instead: for 10,000 works of 1.4 KB an on-disk sort of 14 MB, 22–42 ms against
    /// 3.5–5.2 ms for the index scan (`EXPLAIN ANALYZE`, docs/benchmarks.md). `SET LOCAL`
    /// ends with the transaction, so no other query on the connection is affected.
    async fn key_order_reader(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        Ok(self
            .pool
            .begin_with("BEGIN READ ONLY; SET LOCAL enable_sort = off")
            .await?)
    }

    /// A list's read (see [`Store::list_works`](super::Store::list_works)), through
    /// [`PgStore::key_order_reader`].
    async fn list_works_impl(
        &self,
        cluster: Option<&str>,
        after: Option<(&str, &str)>,
        limit: u32,
    ) -> Result<Vec<super::StoredWork>, StoreError> {
        let mut reader = self.key_order_reader().await?;
        let works = fetch_works_after(&mut *reader, cluster, after, limit).await?;
        reader.commit().await?;
        Ok(works)
    }

    async fn listen_impl(&self) -> Result<Option<IndexStream>, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANNEL).await?;
        let stream = listener.into_stream().filter_map(|n| async move {
            match n {
                Err(e) => Some(Err(e.into())),
                Ok(n) => match n.payload().split_once(' ') {
                    Some((from, _)) if from == INSTANCE.as_str() => None,
                    Some((_, index)) => Some(Ok(index.parse::<u64>().unwrap_or(0))),
                    // A hub of an older version: a bare index.
                    None => Some(Ok(n.payload().parse::<u64>().unwrap_or(0))),
                },
            }
        });
        Ok(Some(stream.boxed()))
    }

    /// Takes the advisory lock of `name` on a connection of its own: a pooled one would go
    /// back to the pool (and to other queries) still holding it, and the lock must die with
    /// this hub's session, which is what lets another hub take over.
    /// Postgres is backed up with its own tools.
    async fn snapshot_impl(&self) -> Result<super::backup::Snapshot, StoreError> {
        Err(StoreError::BackupUnsupported {
            backend: Self::BACKEND,
        })
    }

    async fn lead_impl(&self, name: &str) -> Result<Option<Box<dyn Leadership>>, StoreError> {
        let options = (*self.pool.connect_options())
            .clone()
            .application_name(&format!("fleethub lead {name}"))
            // Server side: a statement that hangs fails instead of holding the check up,
            // and a hub whose machine or network died is dropped (and its lock freed)
            // within about ten seconds instead of the kernel's two hours.
            .options([
                ("statement_timeout", "5s"),
                ("tcp_keepalives_idle", "5"),
                ("tcp_keepalives_interval", "2"),
                ("tcp_keepalives_count", "3"),
            ]);
        let mut conn = PgConnection::connect_with(&options).await?;
        let (held,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(lock_key(name))
            .fetch_one(&mut conn)
            .await?;
        if !held {
            // Another session leads; this one is of no further use.
            let _ = conn.close().await;
            return Ok(None);
        }
        Ok(Some(Box::new(PgLeadership { conn: Some(conn) })))
    }
}

/// How long a leader's check waits for its connection: past it, leadership counts as lost
/// (the client side has no keepalive, so a dead network path shows only as silence).
const LEAD_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The advisory lock key of a leadership name: the first 8 bytes of its SHA-256, so every
/// hub of every version derives the same key.
fn lock_key(name: &str) -> i64 {
    let digest = sha2::Sha256::digest(name.as_bytes());
    let mut key = [0u8; 8];
    key.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(key)
}

/// A held advisory lock: the session of `conn` holds it. `None` once lost: the connection
/// is dropped at the first failure, so a lock that might still be held is let go rather
/// than kept by a hub that no longer acts on it.
struct PgLeadership {
    conn: Option<PgConnection>,
}

#[async_trait::async_trait]
impl Leadership for PgLeadership {
    async fn check(&mut self) -> Result<(), StoreError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(StoreError::LeadershipLost("its connection failed earlier"));
        };
        let answer =
            tokio::time::timeout(LEAD_CHECK_TIMEOUT, sqlx::query("SELECT 1").execute(conn)).await;
        match answer {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e.into())
            }
            Err(_) => {
                self.conn = None;
                Err(StoreError::LeadershipLost(
                    "its connection stopped answering",
                ))
            }
        }
    }
}

impl Drop for PgLeadership {
    fn drop(&mut self) {
        // Closing politely ends the session (and the lock) without an "unexpected EOF" in
        // the server's log; outside a runtime, dropping the socket ends it all the same.
        if let Some(conn) = self.conn.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = conn.close().await;
            });
        }
    }
}

impl PgTx {
    /// The batch's held-back work upserts, its audit entries and change-log rows, the new
    /// index and the NOTIFY to other hubs (delivered at commit, so no hub hears of an
    /// uncommitted index), all in one statement: one round trip instead of five.
    ///
    /// A work the batch read as absent is a plain insert: `ON CONFLICT` inserts each row
    /// speculatively (an index probe first, a second WAL record to confirm it after), ~5 %
    /// of Postgres's CPU under a stream of creates. Should one exist after all, the
    /// insert fails, and with it the batch, whose writes are then retried one by one.
    async fn finish(
        &mut self,
        changes: &[Change],
        audit: &[NewAuditEntry],
    ) -> Result<(), StoreError> {
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() && audit.is_empty() && changes.is_empty() {
            return Ok(());
        }
        let mut works = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (key, (rv, object)) in pending {
            works.4.push(self.absent.contains(&key));
            works.0.push(key.0);
            works.1.push(key.1);
            works.2.push(rv);
            works.3.push(object);
        }
        let mut entries = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for e in audit {
            entries.0.push(e.actor.as_str());
            entries.1.push(e.action.as_str());
            entries.2.push(e.target.as_str());
            entries.3.push(e.source.as_str());
            entries.4.push(e.details.to_string());
        }
        let mut log = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for c in changes {
            log.0.push(c.index as i64);
            log.1.push(c.kind as i16);
            log.2.push(c.cluster.as_str());
            log.3.push(c.name.as_str());
            log.4.push(super::labels_json(&c.labels));
            log.5.push(c.prev_labels.as_ref().map(super::labels_json));
            log.6.push(c.status_only);
            log.7.push(c.has_ttl);
        }
        let last = changes.last().map(|c| c.index as i64);
        sqlx::query(
            "WITH works_given AS ( \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[], $22::bool[]) \
                     AS w (cluster, name, resource_version, object, new) \
             ), works_created AS ( \
                 INSERT INTO works (cluster, name, resource_version, object) \
                 SELECT cluster, name, resource_version, object FROM works_given WHERE new \
             ), works_written AS ( \
                 INSERT INTO works (cluster, name, resource_version, object) \
                 SELECT cluster, name, resource_version, object FROM works_given WHERE NOT new \
                 ON CONFLICT (cluster, name) DO UPDATE \
                 SET resource_version = excluded.resource_version, object = excluded.object \
             ), audit_written AS ( \
                 INSERT INTO audit (at, actor, action, target, source, details) \
                 SELECT $5, * FROM UNNEST($6::text[], $7::text[], $8::text[], $9::text[], $10::text[]) \
             ), changes_written AS ( \
                 INSERT INTO changes (idx, kind, cluster, name, labels, prev_labels, status_only, \
                                      has_ttl) \
                 SELECT * FROM UNNEST($11::int8[], $12::int2[], $13::text[], $14::text[], \
                                      $15::text[], $16::text[], $17::bool[], $18::bool[]) \
             ), index_moved AS ( \
                 UPDATE hub_index SET value = $19 WHERE id = 1 AND $19::int8 IS NOT NULL \
             ) \
             SELECT pg_notify($20, $21) WHERE $19::int8 IS NOT NULL",
        )
        .bind(works.0)
        .bind(works.1)
        .bind(works.2)
        .bind(works.3.iter().map(|o| &**o).collect::<Vec<&str>>())
        .bind(chrono::Utc::now().to_rfc3339())
        .bind(entries.0)
        .bind(entries.1)
        .bind(entries.2)
        .bind(entries.3)
        .bind(entries.4)
        .bind(log.0)
        .bind(log.1)
        .bind(log.2)
        .bind(log.3)
        .bind(log.4)
        .bind(log.5)
        .bind(log.6)
        .bind(log.7)
        .bind(last)
        .bind(CHANNEL)
        .bind(format!("{} {}", *INSTANCE, last.unwrap_or_default()))
        .bind(works.4)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// [`Self::finish`], then `COMMIT`, which leaves the connection to the writer's next
    /// batch (`pg_batch`).
    async fn finish_and_commit(
        mut self: Box<Self>,
        changes: &[Change],
        audit: &[NewAuditEntry],
    ) -> Result<(), StoreError> {
        self.finish(changes, audit).await?;
        (self.tx.commit().await).map_err(|e| StoreError::CommitUnknown(Box::new(e)))
    }
}

sql_store!(store: PgStore, tx: PgTx, conn: BatchConn, db: sqlx::Postgres);
