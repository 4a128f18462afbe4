//! Backups through the running hub (`GET /api/v1/backup`, `hub backup`), and the index
//! epoch every response carries (`X-Hub-Epoch`).
//!
//! A backup is admin-only and audited: it holds every work (Secret data included), the
//! hashes of tokens and the hub's key material.

use super::Hub;
use super::authn::Principal;
use super::error::{Error, Result};
use super::writer::{Audit, Batch, Caller, WriteOp};
use crate::store::Store;
use crate::store::backup::{EPOCH_SETTING, Snapshot, is_epoch, new_epoch};

/// The audit action of a backup.
pub const BACKUP_ACTION: &str = "hub.backup";

/// The database's epoch, created on the first start of a hub on it.
pub(super) async fn load_or_create_epoch(store: &dyn Store) -> Result<String> {
    let epoch = store.init_setting(EPOCH_SETTING, &new_epoch()).await?;
    if !is_epoch(&epoch) {
        return Err(Error::Internal(format!(
            "setting {EPOCH_SETTING} is not an epoch: {epoch:?}"
        )));
    }
    Ok(epoch)
}

/// Whether an epoch a client sent back has the shape of one (a query parameter: a bad one
/// is a 400, not a silent mismatch).
pub fn check_epoch(text: &str) -> Result<()> {
    if is_epoch(text) {
        Ok(())
    } else {
        Err(Error::Malformed(format!(
            "epoch must be 1 to 64 lowercase hex digits (as X-Hub-Epoch sends it), not {text:?}"
        )))
    }
}

/// Records that a backup was taken: an audit entry, no change.
struct RecordBackup {
    bytes: u64,
    index: u64,
    schema: i64,
}

#[async_trait::async_trait]
impl WriteOp for RecordBackup {
    type Output = ();

    async fn apply(&self, _batch: &mut Batch<'_>) -> Result<()> {
        Ok(())
    }

    fn audit(&self, _: &()) -> Option<Audit> {
        Some(Audit {
            action: BACKUP_ACTION,
            target: "database".into(),
            details: serde_json::json!({
                "bytes": self.bytes,
                "index": self.index,
                "schema": self.schema,
            }),
        })
    }
}

impl Hub {
    /// The index epoch of this hub's database.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// A consistent copy of the database, taken while serving; admins only. Audited once
    /// the copy is made (a refused or failed backup copies nothing).
    #[tracing::instrument(skip_all, fields(actor = %who.actor()))]
    pub async fn backup(&self, who: &Principal, by: Caller) -> Result<Snapshot> {
        if !matches!(who, Principal::Admin) {
            return Err(Error::Forbidden(format!(
                "{} may not back up the hub: a backup holds every secret; admins only",
                who.actor()
            )));
        }
        let started = std::time::Instant::now();
        let snapshot = self.store.snapshot().await.map_err(|e| match e {
            e @ crate::store::StoreError::BackupUnsupported { .. } => {
                Error::Conflict(e.to_string())
            }
            other => other.into(),
        })?;
        self.writer
            .write_by(
                RecordBackup {
                    bytes: snapshot.bytes,
                    index: snapshot.index,
                    schema: snapshot.schema,
                },
                Some(by),
            )
            .await?;
        tracing::info!(
            bytes = snapshot.bytes,
            index = snapshot.index,
            took_ms = started.elapsed().as_millis() as u64,
            "backup taken"
        );
        Ok(snapshot)
    }
}
