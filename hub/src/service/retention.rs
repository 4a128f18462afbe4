//! How long the hub keeps history: audit entries (by age) and change-log rows (by index),
//! and the pruning that enforces it.
//!
//! Neither kind of row is needed for a work to be served: the change log lets blocking
//! queries and other hubs follow writes (a reader that fell behind the pruned log re-reads
//! the store, as after any jump), and the audit log records who did what. One audit use
//! touches agents: the 404 of a work the hub deleted says so (its newest audit entry is
//! the deletion), so the agent cleans up at once; once that entry is pruned the 404 is a
//! plain one and the agent keeps the work's objects for its eviction grace instead. Pruning
//! therefore never deletes anything on a cluster sooner, only later.

use std::time::Duration;

use super::Hub;
use super::error::Result;

/// The shortest audit retention `hub serve` takes (besides keeping every entry).
pub const MIN_AUDIT_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// The fewest change-log indexes `hub serve` keeps.
pub const MIN_CHANGE_LOG_INDEXES: u64 = 1_000;

/// The change-log indexes kept by default (what the hub always kept before it was a
/// setting).
pub const DEFAULT_CHANGE_LOG_INDEXES: u64 = 200_000;

/// Status writes after which the works table's replaced versions are reclaimed
/// ([`Hub::reclaim_work_space`]). Each leaves a dead version of its work (~1.4 KB for a
/// 1 KiB work) that no insert can reuse until a vacuum: 200 bound that to ~280 KB. Frequent
/// vacuums stay cheap on a big table: Postgres (14+) scans only the pages changed since the
/// last one and skips the index pass when under 2 % of pages hold dead rows.
pub const RECLAIM_AFTER_STATUS_WRITES: usize = 200;

/// Rows one prune statement deletes at most, so a first prune of a large log does not
/// hold one long transaction.
const PRUNE_BATCH: u32 = 10_000;

/// How much history the hub keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Audit entries older than this are deleted; `None` keeps every entry.
    pub audit: Option<Duration>,
    /// Change-log rows more than this many indexes behind the latest are deleted.
    pub change_log_indexes: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            audit: None,
            change_log_indexes: DEFAULT_CHANGE_LOG_INDEXES,
        }
    }
}

/// Why a retention setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetentionError {
    /// An audit retention shorter than [`MIN_AUDIT_RETENTION`].
    #[error(
        "--audit-retention must be 0 (keep every entry) or at least 24h, not {0:?}: a shorter log loses who changed what before anyone looks"
    )]
    AuditTooShort(Duration),
    /// A change-log retention below [`MIN_CHANGE_LOG_INDEXES`].
    #[error(
        "--change-log-retention must be at least {MIN_CHANGE_LOG_INDEXES} indexes, not {0}: blocking queries and other hubs read the recent log"
    )]
    ChangeLogTooShort(u64),
}

impl Retention {
    /// The retention of `hub serve`'s flags: `audit` zero keeps every entry.
    pub fn new(audit: Duration, change_log_indexes: u64) -> Result<Self, RetentionError> {
        if !audit.is_zero() && audit < MIN_AUDIT_RETENTION {
            return Err(RetentionError::AuditTooShort(audit));
        }
        if change_log_indexes < MIN_CHANGE_LOG_INDEXES {
            return Err(RetentionError::ChangeLogTooShort(change_log_indexes));
        }
        Ok(Retention {
            audit: (!audit.is_zero()).then_some(audit),
            change_log_indexes,
        })
    }
}

/// What one prune deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Audit entries.
    pub audit: u64,
    /// Change-log rows.
    pub changes: u64,
}

impl Hub {
    /// Deletes the history older than the hub's retention: change-log rows more than
    /// `change_log_indexes` behind the latest index, audit entries older than `audit`.
    pub async fn prune_history(&self) -> Result<Pruned> {
        let retention = self.settings.retention;
        let mut pruned = Pruned::default();
        let latest = self.feed.latest();
        if latest > retention.change_log_indexes {
            pruned.changes = self
                .store
                .prune_changes(latest - retention.change_log_indexes)
                .await?;
        }
        if let Some(keep) = retention.audit {
            let cutoff = chrono::Utc::now()
                - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
            loop {
                let n = self.store.prune_audit(cutoff, PRUNE_BATCH).await?;
                pruned.audit += n;
                if n < u64::from(PRUNE_BATCH) {
                    break;
                }
            }
        }
        Ok(pruned)
    }
}

/// The status writes counted towards the next reclaim of the works' space: how many, up
/// to which index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusWrites {
    counted_to: u64,
    writes: usize,
}

impl StatusWrites {
    /// None yet, counting from after `index`.
    pub fn after(index: u64) -> Self {
        StatusWrites {
            counted_to: index,
            writes: 0,
        }
    }
}

impl Hub {
    /// Reclaims the space of the works' replaced versions once
    /// [`RECLAIM_AFTER_STATUS_WRITES`] status writes were published since `count` began,
    /// and then counts afresh.
    ///
    /// Each status write leaves the work's previous version behind (Postgres keeps old
    /// row versions until a vacuum); an agent reports right after each apply, so half of
    /// what a new work costs the database was such a version until autovacuum came round.
    /// Creates leave nothing behind and do not count. Each check counts only the changes
    /// published since the last one: copying every change since the last reclaim, every
    /// two seconds, cost a stream of creates (which never reclaim) ~3 % of the hub's CPU,
    /// and held the feed's lock while it copied up to its whole ring.
    pub async fn reclaim_work_space(&self, count: &mut StatusWrites) -> Result<()> {
        let latest = self.feed.latest();
        let new = self
            .feed
            .count_between(count.counted_to, latest, |c| {
                c.kind == crate::store::ChangeKind::Work && c.status_only
            })
            // The ring no longer reaches back: more than it holds happened.
            .unwrap_or(usize::MAX);
        count.writes = count.writes.saturating_add(new);
        count.counted_to = latest;
        if count.writes < RECLAIM_AFTER_STATUS_WRITES {
            return Ok(());
        }
        self.store.reclaim_work_space().await?;
        *count = StatusWrites::after(latest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_is_validated() {
        assert_eq!(
            Retention::new(Duration::ZERO, DEFAULT_CHANGE_LOG_INDEXES).unwrap(),
            Retention::default()
        );
        let r = Retention::new(Duration::from_secs(30 * 24 * 3600), 5_000).unwrap();
        assert_eq!(r.audit, Some(Duration::from_secs(30 * 24 * 3600)));
        assert_eq!(r.change_log_indexes, 5_000);
        assert_eq!(
            Retention::new(Duration::from_secs(3600), 5_000),
            Err(RetentionError::AuditTooShort(Duration::from_secs(3600)))
        );
        assert_eq!(
            Retention::new(Duration::ZERO, 999),
            Err(RetentionError::ChangeLogTooShort(999))
        );
    }
}
