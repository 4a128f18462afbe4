//! Persistence: one [`Store`] trait, a Postgres and a SQLite implementation.
//!
//! All writes go through a [`WriteTx`], which holds the change-index lock for its whole
//! life (a row lock on Postgres, the database write lock on SQLite). The service layer's
//! writer groups many requests into one such transaction, so indexes are handed out in
//! commit order and the lock is paid once per batch.

use std::collections::BTreeMap;

use api::{ManagedCluster, ManifestWork};
use async_trait::async_trait;
use futures::stream::BoxStream;

mod postgres;
mod sql;
mod sqlite;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// A storage failure. Client mistakes never reach this layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored document could not be decoded.
    #[error("stored {what} is corrupt: {source}")]
    Corrupt {
        /// Which record.
        what: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The database URL is not one we serve.
    #[error("unsupported database URL {0:?}: use postgres://... or sqlite://...")]
    UnsupportedUrl(String),
}

/// What a change touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A ManifestWork.
    Work = 1,
    /// A ManagedCluster.
    Cluster = 2,
}

/// One entry of the change log: an object that changed at `index`.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The change index; consecutive and commit-ordered.
    pub index: u64,
    /// What kind of object.
    pub kind: ChangeKind,
    /// The cluster (the object's name, for clusters).
    pub cluster: String,
    /// The object's name.
    pub name: String,
    /// Labels after the change (empty when deleted).
    pub labels: BTreeMap<String, String>,
    /// Labels before the change, when they differ, so selectors see objects leave.
    pub prev_labels: Option<BTreeMap<String, String>>,
    /// Only the status changed (the agent's own writes; does not wake the agent).
    pub status_only: bool,
}

/// A stream of indexes committed by other hubs sharing the database.
pub type IndexStream = BoxStream<'static, Result<u64, StoreError>>;

/// The storage interface of the hub.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Opens a write transaction holding the change-index lock.
    async fn begin_write(&self) -> Result<Box<dyn WriteTx>, StoreError>;
    /// The last committed change index.
    async fn current_index(&self) -> Result<u64, StoreError>;
    /// Changes after `index`, oldest first, at most `limit`.
    async fn changes_since(&self, index: u64, limit: u32) -> Result<Vec<Change>, StoreError>;
    /// Drops change-log entries at or below `index`.
    async fn prune_changes(&self, below: u64) -> Result<u64, StoreError>;
    /// One work.
    async fn get_work(&self, cluster: &str, name: &str)
    -> Result<Option<ManifestWork>, StoreError>;
    /// Works ordered by (cluster, name), after `after`, at most `limit`; one cluster or all.
    async fn list_works(
        &self,
        cluster: Option<&str>,
        after: Option<(&str, &str)>,
        limit: u32,
    ) -> Result<Vec<ManifestWork>, StoreError>;
    /// Number of works stored.
    async fn count_works(&self) -> Result<u64, StoreError>;
    /// One cluster.
    async fn get_cluster(&self, name: &str) -> Result<Option<ManagedCluster>, StoreError>;
    /// All clusters ordered by name.
    async fn list_clusters(&self) -> Result<Vec<ManagedCluster>, StoreError>;
    /// A shared setting (CA, key material, token hashes).
    async fn get_setting(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Stores `value` unless the key exists; returns what is stored (first writer wins, so
    /// hubs starting together agree on one CA).
    async fn init_setting(&self, key: &str, value: &str) -> Result<String, StoreError>;
    /// Overwrites a setting.
    async fn put_setting(&self, key: &str, value: &str) -> Result<(), StoreError>;
    /// Whether the database answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Indexes committed by any hub on this database, pushed by the database
    /// (`LISTEN/NOTIFY` on Postgres); `None` where only one hub can write (SQLite).
    async fn listen(&self) -> Result<Option<IndexStream>, StoreError>;
    /// Which backend this is, for logs and metrics.
    fn backend(&self) -> &'static str;
}

/// A write transaction holding the change-index lock.
#[async_trait]
pub trait WriteTx: Send {
    /// The index of the last committed change (the lock is held, so it cannot move).
    fn base_index(&self) -> u64;
    /// One work, as this transaction sees it.
    async fn get_work(
        &mut self,
        cluster: &str,
        name: &str,
    ) -> Result<Option<ManifestWork>, StoreError>;
    /// The names of every work of a cluster.
    async fn work_names(&mut self, cluster: &str) -> Result<Vec<String>, StoreError>;
    /// Inserts or replaces a work (its resourceVersion is the index of this change).
    async fn put_work(&mut self, work: &ManifestWork, index: u64) -> Result<(), StoreError>;
    /// Removes a work.
    async fn delete_work(&mut self, cluster: &str, name: &str) -> Result<(), StoreError>;
    /// One cluster, as this transaction sees it.
    async fn get_cluster(&mut self, name: &str) -> Result<Option<ManagedCluster>, StoreError>;
    /// Inserts or replaces a cluster.
    async fn put_cluster(&mut self, cluster: &ManagedCluster, index: u64)
    -> Result<(), StoreError>;
    /// Removes a cluster.
    async fn delete_cluster(&mut self, name: &str) -> Result<(), StoreError>;
    /// Records the changes, advances the index to the last one, tells other hubs, commits.
    async fn commit(self: Box<Self>, changes: &[Change]) -> Result<(), StoreError>;
}

/// Opens the store for a database URL (`postgres://...` or `sqlite://...`), creating the
/// SQLite file when missing, and applies migrations.
pub async fn connect(url: &str) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(PgStore::connect(url).await?))
    } else if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(SqliteStore::connect(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl(url.to_string()))
    }
}

fn labels_json(labels: &BTreeMap<String, String>) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "{}".into())
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    serde_json::from_str(text).unwrap_or_default()
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Corrupt {
        what: what.to_string(),
        source,
    })
}
