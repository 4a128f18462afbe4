//! The audit log: who changed what, from where. Every entry commits in the transaction of
//! the change it records: writes through the writer with their batch
//! ([`super::writer::WriteOp::audit`]), token changes (not indexed) with their row
//! ([`entry`] passed to the store). An acknowledged change always has its entry.

use super::Hub;
use super::error::{Error, Result};
use super::writer::Caller;
use crate::store::NewAuditEntry;

/// The entry recording `action` on `target` by `by`.
pub(super) fn entry(
    by: &Caller,
    action: &str,
    target: &str,
    details: serde_json::Value,
) -> NewAuditEntry {
    NewAuditEntry {
        actor: by.actor.clone(),
        action: action.into(),
        target: target.into(),
        source: by.source.clone(),
        details,
    }
}

/// The most entries one read of the log returns.
const MAX_AUDIT_ENTRIES: u32 = 10_000;

impl Hub {
    /// The audit entries of `target` and below (all when absent), newest first; `limit` is
    /// the query parameter as given (default 100, at most 10,000).
    pub async fn list_audit(
        &self,
        target: Option<&str>,
        limit: Option<&str>,
    ) -> Result<api::List<api::AuditEntry>> {
        let limit = match limit {
            None | Some("") => 100,
            Some(l) => l
                .parse::<u32>()
                .map_err(|_| {
                    Error::Malformed(format!("limit must be a non-negative integer, not {l:?}"))
                })?
                .min(MAX_AUDIT_ENTRIES),
        };
        let index = self.index();
        let items = self
            .store
            .list_audit(target.filter(|t| !t.is_empty()), limit)
            .await?;
        Ok(api::List::new("AuditList", items, index, None))
    }
}

impl Hub {
    /// When the hub deleted this work, if it did: the newest audit entry of the work is a
    /// `work.delete` (by a user, a token or its set). The log outlives the work, so a
    /// missing work can be told apart from one the hub never had (a database restored
    /// from an older backup, another database): agents clean up the first at once and
    /// keep the second's objects for their eviction grace (docs/ocm-compatibility.md).
    pub async fn work_deletion(
        &self,
        cluster: &str,
        name: &str,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        let target = format!("clusters/{cluster}/manifestworks/{name}");
        let newest = self.store.list_audit(Some(&target), 1).await?;
        Ok(newest
            .into_iter()
            .next()
            .filter(|e| e.target == target && e.action == WORK_DELETE)
            .map(|e| e.at))
    }
}

/// The audit action of a work's deletion.
pub const WORK_DELETE: &str = "work.delete";
