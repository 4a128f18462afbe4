//! A Postgres write batch in three round trips, on a connection the writer keeps.
//!
//! Each of the writer's serial round trips waits for the other process to be scheduled on
//! a busy machine (issue 20's first profile: ~1.7 ms of statements in a ~4.3 ms batch), and
//! each statement Postgres parses and plans is CPU the request tasks need too. A batch
//! cost five round trips: the pool's ping on acquire, `BEGIN` with the index lock, the
//! prefetch, the batch's writes, `COMMIT`. Now:
//!
//! 1. one simple query: `BEGIN`, the index row lock, and (a statement of its own, so that
//!    it sees what the lock's previous holder committed) the index with the batch's works
//!    and clusters, the lock and the reads prepared once per connection ([`begin_sql`],
//!    [`PREPARE`]);
//! 2. the batch's writes, one prepared statement with bound parameters (`PgTx::finish`);
//! 3. `COMMIT`.
//!
//! The simple-query protocol takes no bind parameters, so the first query carries the
//! keys it reads as literals: names only (validated cluster and work names), never a
//! document, because statement text reaches logs (sqlx's slow-statement warning, the
//! server's log of a failed statement) where bound values do not. Each value is
//! dollar-quoted ([`quote`]), which Postgres takes verbatim whatever the session's
//! settings; a value holding the quote's own tag gets another tag, and a NUL byte (which
//! no Postgres text can hold) is refused.
//!
//! The connection stays with the writer between batches, saving the pool's acquire and
//! ping, as long as the last batch committed less than [`KEEP`] ago; an older one goes back
//! to the pool and the next batch draws a tested one. A kept connection found cut by the
//! first query (a failover, a restart) is replaced and the query sent again: nothing in it
//! could have committed. A batch that does not commit closes its connection: the server
//! rolls the transaction back and the index lock is freed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool, PgRow};
use sqlx::{AssertSqlSafe, Postgres, Row};

use super::StoreError;

/// How long a connection the writer kept may sit unused and still be used without the
/// pool's test: under load batches follow each other within milliseconds.
pub(super) const KEEP: Duration = Duration::from_secs(1);

/// The writer's kept connection and when its last batch committed.
pub(super) type Slot = Arc<Mutex<Option<(PoolConnection<Postgres>, Instant)>>>;

/// A batch's connection, inside the transaction its first query began.
pub(super) struct BatchConn {
    conn: Option<PoolConnection<Postgres>>,
    slot: Slot,
    /// Whether it is the connection the writer kept (untested since its last batch).
    kept: bool,
}

impl BatchConn {
    /// Begins a batch with `sql` ([`begin_sql`]) on the kept connection when it was used
    /// within [`KEEP`], else on one from the pool (which tests it first); its rows.
    ///
    /// A kept connection that turns out to be cut (a failover, a restart of the server) has
    /// run nothing that could commit, so the batch begins again on a tested one: as before
    /// the writer kept connections, a write after the database came back does not fail.
    pub(super) async fn begin(
        pool: &PgPool,
        slot: &Slot,
        sql: &str,
    ) -> Result<(Self, Vec<PgRow>), StoreError> {
        let kept = slot.lock().ok().and_then(|mut s| s.take());
        let mut conn = match kept {
            Some((conn, at)) if at.elapsed() < KEEP => BatchConn {
                conn: Some(conn),
                slot: slot.clone(),
                kept: true,
            },
            // Back to the pool (dropped outside the lock), which tests it before lending it.
            _ => Self::from_pool(pool, slot).await?,
        };
        match conn.query(sql).await {
            Ok(rows) => Ok((conn, rows)),
            Err(e) if conn.kept && e.is_unreachable() => {
                tracing::info!(error = %e, "the writer's kept connection was cut; beginning on a new one");
                drop(conn);
                let mut conn = Self::from_pool(pool, slot).await?;
                let rows = conn.query(sql).await?;
                Ok((conn, rows))
            }
            Err(e) => Err(e),
        }
    }

    async fn from_pool(pool: &PgPool, slot: &Slot) -> Result<Self, StoreError> {
        Ok(BatchConn {
            conn: Some(pool.acquire().await?),
            slot: slot.clone(),
            kept: false,
        })
    }

    async fn query(&mut self, sql: &str) -> Result<Vec<PgRow>, StoreError> {
        Ok(sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
            .fetch_all(&mut **self)
            .await?)
    }

    /// Commits, and keeps the connection for the next batch.
    pub(super) async fn commit(mut self) -> Result<(), StoreError> {
        sqlx::raw_sql("COMMIT").execute(&mut *self).await?;
        if let (Some(conn), Ok(mut slot)) = (self.conn.take(), self.slot.lock()) {
            *slot = Some((conn, Instant::now()));
        }
        Ok(())
    }
}

impl std::ops::Deref for BatchConn {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn
            .as_ref()
            .expect("a batch's connection is taken only by commit")
    }
}

impl std::ops::DerefMut for BatchConn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn
            .as_mut()
            .expect("a batch's connection is taken only by commit")
    }
}

impl Drop for BatchConn {
    fn drop(&mut self) {
        // Not committed: the transaction (begun by our own `BEGIN`, which sqlx's pool does
        // not know of) must not reach another user. Closing ends it on the server.
        if let Some(conn) = &mut self.conn {
            conn.close_on_drop();
        }
    }
}

/// Appends `value` as a dollar-quoted literal: `$f$value$f$`, or with a tag that `value`
/// does not contain.
pub(super) fn quote(out: &mut String, value: &str) -> Result<(), StoreError> {
    if value.contains('\0') {
        return Err(StoreError::Database(sqlx::Error::Encode(
            "a text value holds a NUL byte, which Postgres text cannot store".into(),
        )));
    }
    // The literal ends at the first tag after the opening one, which may begin inside the
    // value (`a$f` + `$f$`): the tag must first occur where we put it.
    let closes_early = |tag: &str| {
        let text = [value, tag].concat();
        text.find(tag) != Some(value.len())
    };
    let mut tag = String::from("$f$");
    let mut n = 0u32;
    while closes_early(&tag) {
        n += 1;
        tag = format!("$f{n}$");
    }
    out.push_str(&tag);
    out.push_str(value);
    out.push_str(&tag);
    Ok(())
}

/// `ARRAY[...]::text[]` of the values.
fn text_array<'a>(
    out: &mut String,
    values: impl IntoIterator<Item = &'a str>,
) -> Result<(), StoreError> {
    out.push_str("ARRAY[");
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        quote(out, v)?;
    }
    out.push_str("]::text[]");
    Ok(())
}

/// The batch's lock and reads, prepared on each of the writer's connections as it opens
/// (its pool's `after_connect`): the lock of the index row; then the index, the works named
/// by the first two arrays (clusters and names, pairwise) and the clusters named by the
/// third, as rows of four text columns: `0`, the server's timeline and the one the index
/// last moved on ([`Timeline`]) and the index; `1`, cluster, name and the work; or `2`, the
/// name and the cluster.
///
/// Written out in every batch's text, the reads were parsed, analyzed and planned again
/// each time: 27 % of Postgres's CPU under a stream of creates (docs/benchmarks.md).
/// Prepared, they run plans kept for the session, which [`begin_sql`] makes generic and
/// free of sequential scans: left to itself Postgres planned every run afresh (a generic
/// plan, costed for ten keys per array, looked dearer than a custom one for the batch's
/// few), and a plan made while a table was small, or analyzed when it was, scanned the
/// whole table for each key long after it had grown. Each key is a lookup by primary key
/// (the `LIMIT 1` subquery keeps it one: a join could still hash a scanned table).
pub(super) const PREPARE: &str = "PREPARE fleethub_index_lock AS \
         SELECT 1 FROM hub_index WHERE id = 1 FOR UPDATE; \
     PREPARE fleethub_batch_reads (text[], text[], text[]) AS \
     SELECT '0'::text, left(pg_walfile_name(pg_current_wal_lsn()), 8), \
         COALESCE((SELECT value FROM settings WHERE key = 'wal_timeline'), ''), value::text \
         FROM hub_index WHERE id = 1 \
     UNION ALL SELECT '1', k.cluster, k.name, w.object \
         FROM UNNEST($1, $2) AS k (cluster, name), LATERAL (SELECT object FROM works \
             WHERE cluster = k.cluster AND name = k.name LIMIT 1) AS w \
     UNION ALL SELECT '2', k.name, '', c.object \
         FROM UNNEST($3) AS k (name), LATERAL (SELECT object FROM clusters \
             WHERE name = k.name LIMIT 1) AS c";

/// The batch's first query: `BEGIN`, the index lock, then (a statement of its own, so that
/// it sees what the lock's previous holder committed) the index, the works and the clusters
/// ([`PREPARE`]); the lock's own row has one column.
///
/// The planner settings hold only around the `EXECUTE`s (`SET LOCAL`, then back to their
/// defaults), so the batch's other statements are planned as usual.
pub(super) fn begin_sql(works: &[(&str, &str)], clusters: &[&str]) -> Result<String, StoreError> {
    let mut sql = String::with_capacity(512 + 40 * (works.len() + clusters.len()));
    sql.push_str(
        "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan; \
         SET LOCAL enable_seqscan = off; EXECUTE fleethub_index_lock; \
         EXECUTE fleethub_batch_reads (",
    );
    text_array(&mut sql, works.iter().map(|(c, _)| *c))?;
    sql.push_str(", ");
    text_array(&mut sql, works.iter().map(|(_, n)| *n))?;
    sql.push_str(", ");
    text_array(&mut sql, clusters.iter().copied())?;
    sql.push_str("); SET LOCAL plan_cache_mode TO DEFAULT; SET LOCAL enable_seqscan TO DEFAULT");
    Ok(sql)
}

/// How far the index moves when the database's timeline changed: past any index a hub may
/// have seen on the old timeline and that the new one does not hold.
///
/// When a primary dies, a transaction that committed on it but had not reached the
/// synchronous standby yet can be visible there for a moment: Postgres makes a commit
/// visible when the commit's wait for the standby ends, and a backend ends that wait when
/// its postmaster dies (or when its query is cancelled). A hub that read it then (its
/// poll of the index, its catch-up of another hub's writes) published an index that the
/// promoted standby never had. The new primary would hand the same numbers out again to
/// other writes, and that hub would answer "current to index N" without the write that
/// now bears N (`postgres_ha`'s reader caught it once). With synchronous replication such
/// a tail is at most the batch each hub had committing (up to 256 writes; a cluster's
/// deletion adds a change per work it marks), and without it Patroni's default
/// `maximum_lag_on_failover` (1 MiB of WAL, a few hundred writes).
pub(super) const TIMELINE_GAP: u64 = 1_000_000;

/// The timeline part of the server's WAL position against the one the index last moved on.
///
/// A promotion (failover, switchover, point-in-time recovery) starts a new timeline, and
/// `pg_walfile_name` names the current one from the promotion on. The first batch that
/// sees a timeline other than the recorded one moves the index by [`TIMELINE_GAP`] and
/// records the new one, in its own transaction: both commit or neither.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Timeline {
    /// The index last moved on this timeline.
    Same,
    /// Nothing recorded (a new database, or one written by an older hub): record it.
    Unrecorded(String),
    /// A promotion since the index last moved: move it past the gap and record this one.
    Changed(String),
}

impl Timeline {
    /// From the `0` row's two timeline columns: the server's and the recorded one.
    pub(super) fn of(current: String, recorded: &str) -> Self {
        if recorded.is_empty() {
            Timeline::Unrecorded(current)
        } else if current == recorded {
            Timeline::Same
        } else {
            Timeline::Changed(current)
        }
    }
}

/// Moves the index by `$1` (0 or [`TIMELINE_GAP`]) and records the timeline `$2`; the new
/// index. Run inside the batch, after [`begin_sql`]'s query, only when the timeline is not
/// [`Timeline::Same`].
pub(super) const MOVE_TO_TIMELINE: &str = "WITH moved AS ( \
         UPDATE hub_index SET value = value + $1 WHERE id = 1 RETURNING value \
     ), recorded AS ( \
         INSERT INTO settings (key, value) VALUES ('wal_timeline', $2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value \
     ) \
     SELECT value FROM moved";

/// The rows of [`begin_sql`]'s query as (kind, a, b, text); the lock's row left out.
pub(super) fn begin_rows(
    rows: Vec<PgRow>,
) -> Result<Vec<(String, String, String, String)>, StoreError> {
    rows.into_iter()
        .filter(|r| r.len() == 4)
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quoted(v: &str) -> String {
        let mut s = String::new();
        quote(&mut s, v).unwrap();
        s
    }

    #[test]
    fn values_are_quoted_with_a_tag_they_do_not_hold() {
        assert_eq!(quoted("it's"), "$f$it's$f$");
        assert_eq!(quoted(r"a\b"), r"$f$a\b$f$");
        assert_eq!(quoted("x$f$y"), "$f1$x$f$y$f1$");
        assert_eq!(quoted("$f$$f1$"), "$f2$$f$$f1$$f2$");
        assert_eq!(quoted("a$f"), "$f1$a$f$f1$");
        assert_eq!(quoted("a$"), "$f$a$$f$");
        assert_eq!(quoted(""), "$f$$f$");
    }

    #[test]
    fn only_another_recorded_timeline_moves_the_index() {
        assert_eq!(Timeline::of("00000002".into(), "00000002"), Timeline::Same);
        assert_eq!(
            Timeline::of("00000002".into(), "00000001"),
            Timeline::Changed("00000002".into())
        );
        assert_eq!(
            Timeline::of("00000001".into(), ""),
            Timeline::Unrecorded("00000001".into())
        );
    }

    #[test]
    fn a_nul_byte_is_refused() {
        let mut s = String::new();
        assert!(quote(&mut s, "a\0b").is_err());
    }
}
