//! The audit log: who changed what, from where. Writes through the writer record their
//! entry in their own transaction ([`super::writer::WriteOp::audit`]); this is the rest.

use super::Hub;
use super::error::{Error, Result};
use super::writer::Caller;
use crate::store::NewAuditEntry;

/// The most entries one read of the log returns.
const MAX_AUDIT_ENTRIES: u32 = 10_000;

impl Hub {
    /// Appends an audit entry for a write outside the writer (tokens are not indexed); a
    /// failure is logged, never fails the request it records.
    pub(super) async fn audit_after(
        &self,
        by: &Caller,
        action: &str,
        target: &str,
        details: serde_json::Value,
    ) {
        let entry = NewAuditEntry {
            actor: by.actor.clone(),
            action: action.into(),
            target: target.into(),
            source: by.source.clone(),
            details,
        };
        if let Err(e) = self.store.append_audit(&entry).await {
            tracing::warn!(error = %e, action, target, "could not write the audit log");
        }
    }

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
