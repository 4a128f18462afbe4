//! The pruning statements of the change log and the audit log, the same on both backends:
//! stamped into [`sql_store`](super::sql::sql_store).

/// Deletes the change-log rows at or below the index `$below`; evaluates to the number
/// deleted.
macro_rules! prune_changes {
    ($executor:expr, $below:expr) => {{
        let r = sqlx::query("DELETE FROM changes WHERE idx <= $1")
            .bind($below as i64)
            .execute($executor)
            .await?;
        Ok(r.rows_affected())
    }};
}

/// Deletes, among the oldest `$limit` audit entries, those written before `$before`;
/// evaluates to the number deleted.
///
/// Entries are numbered in the order they were written, so the oldest ones are found by
/// the primary key without an index on the time. Times are stored as RFC 3339 text in
/// UTC, all the same shape up to the seconds, so comparing the text compares the times
/// (to the second, which is all a retention of days needs).
macro_rules! prune_audit {
    ($executor:expr, $before:expr, $limit:expr) => {{
        let cutoff = $before.to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
        let r = sqlx::query(
            "DELETE FROM audit WHERE id IN ( \
                 SELECT id FROM (SELECT id, at FROM audit ORDER BY id LIMIT $2) oldest \
                 WHERE at < $1)",
        )
        .bind(cutoff)
        .bind(i64::from($limit))
        .execute($executor)
        .await?;
        Ok(r.rows_affected())
    }};
}

/// Postgres: `VACUUM` of the works table, so the space of the versions that status writes
/// replaced is reused by the next rows instead of the table growing until autovacuum's
/// next round (a minute or more). `SKIP_LOCKED`: when another hub is vacuuming it, this
/// one does nothing. Not the table's owner: Postgres warns and skips it, no error. SQLite:
/// nothing to do (freed pages go to its free list at once).
macro_rules! reclaim_work_space {
    ($executor:expr, $backend:expr) => {{
        if $backend == "postgres" {
            sqlx::query("VACUUM (SKIP_LOCKED) works")
                .execute($executor)
                .await?;
        }
        Ok(())
    }};
}

pub(crate) use prune_audit;
pub(crate) use prune_changes;
pub(crate) use reclaim_work_space;
