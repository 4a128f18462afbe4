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

pub mod backup;
mod pg_batch;
mod postgres;
mod schema;
mod sql;
mod sql_fetch;
mod sql_objects;
mod sql_retention;
mod sqlite;

pub use postgres::PgStore;
pub use schema::SchemaReport;
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
    /// The database has a migration this binary does not know: a newer hub wrote it.
    #[error(
        "the database's schema is newer than this hub: it has migration {found}, this hub knows migrations up to {known}; run the newer hub that migrated it (nothing was changed)"
    )]
    SchemaNewer {
        /// The first unknown migration found.
        found: i64,
        /// The newest migration this binary knows.
        known: i64,
    },
    /// An applied migration differs from this binary's file of the same number.
    #[error(
        "the database's migration {version} differs from this hub's migration {version}: the schema was changed by another build; refusing to start (nothing was changed)"
    )]
    SchemaModified {
        /// The migration that differs.
        version: i64,
    },
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
    /// A leadership's connection stopped answering in time, or was lost before.
    #[error("leadership lost: {0}")]
    LeadershipLost(&'static str),
    /// This backend is backed up with its own tools, not by the hub.
    #[error(
        "this hub stores its data in {backend}: back it up with pg_dump or pg_basebackup (docs/operations.md, \"Backup and restore\")"
    )]
    BackupUnsupported {
        /// The backend.
        backend: &'static str,
    },
    /// Committing failed, so whether the transaction committed is unknown: the connection
    /// may have died after the server committed (or, under synchronous replication, after
    /// it committed locally but before a standby confirmed it, and a failover to that
    /// standby then drops it). Its writes must be answered as failed, never retried.
    #[error("commit outcome unknown: {0}")]
    CommitUnknown(#[source] Box<StoreError>),
}

impl StoreError {
    /// Whether the database could not be reached at all (down, restarting, our sessions
    /// cut), as opposed to refusing one statement: then every write fails alike.
    pub fn is_unreachable(&self) -> bool {
        match self {
            StoreError::Database(e) => match e {
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::WorkerCrashed => true,
                // SQLSTATE class 08 (connection exception), 57P (admin, crash shutdown,
                // cannot connect now) and 25006 (read-only transaction: behind a balancer
                // during a failover the connection reached a standby, or a demoted
                // primary, which refuses every write alike).
                sqlx::Error::Database(db) => db
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57P") || c == "25006"),
                _ => false,
            },
            _ => false,
        }
    }

    /// The same failure for another caller (sqlx errors cannot be cloned): an I/O error
    /// with this one's message.
    pub fn unreachable_copy(&self) -> StoreError {
        StoreError::Database(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::NotConnected,
            self.to_string(),
        )))
    }
}

/// What a change touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A ManifestWork.
    Work = 1,
    /// A ManagedCluster.
    Cluster = 2,
    /// A registration (join request); `cluster` is the cluster it asks for, `name` its id.
    Registration = 3,
    /// A Placement; `cluster` is its namespace.
    Placement = 4,
    /// A Placement's decisions; `cluster` is the namespace, `name` the placement's.
    PlacementDecisions = 5,
    /// A ManifestWorkReplicaSet; `cluster` is its namespace.
    ManifestWorkReplicaSet = 6,
}

impl ChangeKind {
    /// The kind stored as `code` in the change log. A code this hub does not know (written
    /// by a newer hub) reads as a work change, the one every reader re-checks.
    fn from_stored(code: i32) -> ChangeKind {
        match code {
            2 => ChangeKind::Cluster,
            3 => ChangeKind::Registration,
            4 => ChangeKind::Placement,
            5 => ChangeKind::PlacementDecisions,
            6 => ChangeKind::ManifestWorkReplicaSet,
            _ => ChangeKind::Work,
        }
    }
}

/// Kinds of namespaced fleet objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// A Placement (`cluster.open-cluster-management.io/v1beta1`).
    Placement = 1,
    /// The decisions of the Placement of the same namespace and name.
    PlacementDecisions = 2,
    /// A ManifestWorkReplicaSet (`work.open-cluster-management.io/v1alpha1`).
    ManifestWorkReplicaSet = 3,
}

impl From<ObjectKind> for ChangeKind {
    fn from(kind: ObjectKind) -> ChangeKind {
        match kind {
            ObjectKind::Placement => ChangeKind::Placement,
            ObjectKind::PlacementDecisions => ChangeKind::PlacementDecisions,
            ObjectKind::ManifestWorkReplicaSet => ChangeKind::ManifestWorkReplicaSet,
        }
    }
}

/// A fleet object as stored: its key, its version and its JSON document, not parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// What it is.
    pub kind: ObjectKind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The change index of its last write.
    pub resource_version: u64,
    /// The document, as the hub serialized it when it wrote the object.
    pub object: String,
}

impl StoredObject {
    /// The document parsed as `T` (the kind's API type, or a struct of the fields a caller
    /// needs).
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, StoreError> {
        decode(
            &format!("{:?} {}/{}", self.kind, self.namespace, self.name),
            &self.object,
        )
    }
}

/// Leadership of the fleet controllers, held while the guard lives; dropping it lets go.
#[async_trait]
pub trait Leadership: Send {
    /// Whether leadership is still held: an error means it was lost (on Postgres, the
    /// session holding the lock died or stopped answering) and the caller must stop
    /// leading; every later check fails too.
    async fn check(&mut self) -> Result<(), StoreError>;
}

/// A token as stored: its public record and the hash of its secret.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredToken {
    /// The public record (`uses` is the stored counter).
    pub token: api::Token,
    /// Hex SHA-256 of the secret.
    pub secret_sha256: String,
}

/// The accepted agent of a cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    /// The cluster.
    pub cluster: String,
    /// PEM public key the agent signs its assertions with.
    pub public_key: String,
    /// The registration that was accepted.
    pub registration_id: String,
    /// Bumped on revocation and re-acceptance: access tokens carry it.
    pub generation: i64,
    /// Cut off by `hub revoke cluster`.
    pub revoked: bool,
}

/// An audit entry to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEntry {
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub target: String,
    /// From where.
    pub source: String,
    /// Extra facts, never secrets.
    pub details: serde_json::Value,
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
    /// For a work: whether its spec, as written, has a `ttlSecondsAfterFinished` (false once
    /// it is gone), so that the TTL controller reads again only the works that do. `None`:
    /// not a work, or not known (a change recorded by a hub older than this field).
    pub has_ttl: Option<bool>,
}

/// A stream of indexes committed by other hubs sharing the database.
pub type IndexStream = BoxStream<'static, Result<u64, StoreError>>;

/// A work as stored: its key and its JSON document, not parsed.
#[derive(Debug, Clone)]
pub struct StoredWork {
    /// The cluster (namespace) of the work.
    pub cluster: String,
    /// The work's name.
    pub name: String,
    /// The document, as the hub serialized it when it wrote the work.
    pub object: String,
}

/// Where a list of works starts (see [`Store::list_works`]): after `after`; in one
/// cluster's list, at its first work when `after` is another cluster's key.
fn list_start<'a>(
    cluster: Option<&'a str>,
    after: Option<(&'a str, &'a str)>,
) -> (&'a str, &'a str) {
    match (cluster, after) {
        (Some(c), Some((ac, an))) if ac == c => (c, an),
        (Some(c), _) => (c, ""),
        (None, after) => after.unwrap_or(("", "")),
    }
}

impl StoredWork {
    /// The document parsed as `T`: a [`ManifestWork`], or a struct of just the fields a
    /// caller needs (serde then skips the rest without building it).
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, StoreError> {
        decode(
            &format!("work {}/{}", self.cluster, self.name),
            &self.object,
        )
    }
}

/// The storage interface of the hub.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Opens a write transaction holding the change-index lock, with these works and
    /// clusters read already (the batch's reads of them then need no round trip).
    async fn begin_write(
        &self,
        works: &[(String, String)],
        clusters: &[String],
    ) -> Result<Box<dyn WriteTx>, StoreError>;
    /// Whether the writer should run on a thread and runtime of its own: yes where its round
    /// trips are sockets (Postgres), whose replies would otherwise wait behind request
    /// tasks; no where the driver's own threads do the I/O (SQLite): there it would only
    /// add a hop.
    fn writer_apart(&self) -> bool;
    /// The last committed change index.
    async fn current_index(&self) -> Result<u64, StoreError>;
    /// Changes after `index`, oldest first, at most `limit`.
    async fn changes_since(&self, index: u64, limit: u32) -> Result<Vec<Change>, StoreError>;
    /// Drops change-log entries at or below `index`.
    async fn prune_changes(&self, below: u64) -> Result<u64, StoreError>;
    /// Drops audit entries written before `before`, looking at the oldest `limit` entries
    /// only (one bounded statement; call again while it returns `limit`).
    async fn prune_audit(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        limit: u32,
    ) -> Result<u64, StoreError>;
    /// Makes the space of the works' replaced row versions reusable now (Postgres: a
    /// `VACUUM` of the works table; SQLite reuses freed pages by itself).
    async fn reclaim_work_space(&self) -> Result<(), StoreError>;
    /// One work.
    async fn get_work(&self, cluster: &str, name: &str)
    -> Result<Option<ManifestWork>, StoreError>;
    /// Works ordered by (cluster, name), after `after`, at most `limit`; one cluster or all.
    /// They come as the stored JSON text, so a list can serve them without parsing.
    async fn list_works(
        &self,
        cluster: Option<&str>,
        after: Option<(&str, &str)>,
        limit: u32,
    ) -> Result<Vec<StoredWork>, StoreError>;
    /// Number of works stored.
    async fn count_works(&self) -> Result<u64, StoreError>;
    /// One cluster.
    async fn get_cluster(&self, name: &str) -> Result<Option<ManagedCluster>, StoreError>;
    /// All clusters ordered by name.
    async fn list_clusters(&self) -> Result<Vec<ManagedCluster>, StoreError>;
    /// Every cluster's name and resource version, without reading the documents (so a
    /// periodic scan can re-read only the clusters that changed).
    async fn cluster_versions(&self) -> Result<Vec<(String, u64)>, StoreError>;
    /// A shared setting (CA, key material, token hashes).
    async fn get_setting(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Stores `value` unless the key exists; returns what is stored (first writer wins, so
    /// hubs starting together agree on one CA).
    async fn init_setting(&self, key: &str, value: &str) -> Result<String, StoreError>;
    /// Overwrites a setting.
    async fn put_setting(&self, key: &str, value: &str) -> Result<(), StoreError>;
    /// Whether the database answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Stores a new token with its audit entry, in one transaction.
    async fn insert_token(
        &self,
        token: &StoredToken,
        audit: &NewAuditEntry,
    ) -> Result<(), StoreError>;
    /// One token.
    async fn get_token(&self, id: &str) -> Result<Option<StoredToken>, StoreError>;
    /// All tokens, oldest first.
    async fn list_tokens(&self) -> Result<Vec<StoredToken>, StoreError>;
    /// Removes a token, with its audit entry in the same transaction; whether it existed
    /// (no entry when it did not).
    async fn delete_token(&self, id: &str, audit: &NewAuditEntry) -> Result<bool, StoreError>;
    /// Counts one use of a token unless `max_uses` is reached; whether it was counted.
    async fn use_token(&self, id: &str, max_uses: Option<u64>) -> Result<bool, StoreError>;
    /// One registration.
    async fn get_registration(&self, id: &str) -> Result<Option<api::Registration>, StoreError>;
    /// All registrations, oldest first.
    async fn list_registrations(&self) -> Result<Vec<api::Registration>, StoreError>;
    /// The accepted agent of a cluster.
    async fn get_agent(&self, cluster: &str) -> Result<Option<Agent>, StoreError>;
    /// Records lease renewals (not indexed); a renewal older than the one stored is
    /// ignored, so hubs flushing out of order never move a lease back.
    async fn renew_leases(
        &self,
        leases: &[(String, chrono::DateTime<chrono::Utc>)],
    ) -> Result<(), StoreError>;
    /// Every cluster's last lease renewal.
    async fn leases(&self) -> Result<BTreeMap<String, chrono::DateTime<chrono::Utc>>, StoreError>;
    /// The newest audit entries, optionally for one target prefix.
    async fn list_audit(
        &self,
        target_prefix: Option<&str>,
        limit: u32,
    ) -> Result<Vec<api::AuditEntry>, StoreError>;
    /// Spends an assertion id (`jti`) of `issuer`, kept until `expires_at` (Unix seconds);
    /// whether this was its first use. An id whose row expired before `now` counts as new
    /// (the assertion it came in is refused as expired anyway). One statement, so two hubs
    /// cannot both accept the same assertion.
    async fn use_assertion_id(
        &self,
        issuer: &str,
        jti: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// Forgets the assertion ids that expired before `now`; how many.
    async fn purge_assertion_ids(&self, now: i64) -> Result<u64, StoreError>;
    /// Indexes committed by any hub on this database, pushed by the database
    /// (`LISTEN/NOTIFY` on Postgres); `None` where only one hub can write (SQLite).
    async fn listen(&self) -> Result<Option<IndexStream>, StoreError>;
    /// One fleet object.
    async fn get_object(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<StoredObject>, StoreError>;
    /// The fleet objects of a kind, ordered by (namespace, name); one namespace or all.
    async fn list_objects(
        &self,
        kind: ObjectKind,
        namespace: Option<&str>,
    ) -> Result<Vec<StoredObject>, StoreError>;
    /// Tries to become the one leader called `name` among the hubs of this database:
    /// `None` while another hub leads. On Postgres an advisory lock held by a connection of
    /// its own (not pooled), so it dies with this hub's session; on SQLite, where one hub
    /// owns the file, always granted.
    async fn lead(&self, name: &str) -> Result<Option<Box<dyn Leadership>>, StoreError>;
    /// A consistent copy of the whole database, taken while serving ([`backup`]); only
    /// the embedded SQLite backend makes one.
    async fn snapshot(&self) -> Result<backup::Snapshot, StoreError>;
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
    /// Inserts or replaces a work (its resourceVersion is the index of this change); its
    /// JSON as stored, which is what a read of it answers before any masking.
    async fn put_work(
        &mut self,
        work: &ManifestWork,
        index: u64,
    ) -> Result<std::sync::Arc<str>, StoreError>;
    /// Removes a work.
    async fn delete_work(&mut self, cluster: &str, name: &str) -> Result<(), StoreError>;
    /// One cluster, as this transaction sees it.
    async fn get_cluster(&mut self, name: &str) -> Result<Option<ManagedCluster>, StoreError>;
    /// Inserts or replaces a cluster.
    async fn put_cluster(&mut self, cluster: &ManagedCluster, index: u64)
    -> Result<(), StoreError>;
    /// Removes a cluster (and its agent and lease).
    async fn delete_cluster(&mut self, name: &str) -> Result<(), StoreError>;
    /// One registration, as this transaction sees it.
    async fn get_registration(&mut self, id: &str)
    -> Result<Option<api::Registration>, StoreError>;
    /// Inserts or replaces a registration.
    async fn put_registration(
        &mut self,
        registration: &api::Registration,
        index: u64,
    ) -> Result<(), StoreError>;
    /// The accepted agent of a cluster, as this transaction sees it.
    async fn get_agent(&mut self, cluster: &str) -> Result<Option<Agent>, StoreError>;
    /// Inserts or replaces a cluster's agent.
    async fn put_agent(&mut self, agent: &Agent) -> Result<(), StoreError>;
    /// One fleet object, as this transaction sees it.
    async fn get_object(
        &mut self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<StoredObject>, StoreError>;
    /// Inserts or replaces a fleet object's JSON text; its resource version is `index`,
    /// the index of this change.
    async fn put_object(
        &mut self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
        object: &str,
        index: u64,
    ) -> Result<(), StoreError>;
    /// Removes a fleet object (nothing when it does not exist).
    async fn delete_object(
        &mut self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
    ) -> Result<(), StoreError>;
    /// Begins one op of the batch: what it writes until [`end_op`](Self::end_op) can be
    /// undone alone by [`undo_op`](Self::undo_op) (a SAVEPOINT, opened before its first
    /// statement that writes, and this transaction's caches journaled).
    fn begin_op(&mut self);
    /// Keeps what the op wrote.
    async fn end_op(&mut self) -> Result<(), StoreError>;
    /// Undoes everything the op wrote and cached: the rest of the batch still commits.
    async fn undo_op(&mut self) -> Result<(), StoreError>;
    /// Records the changes and the audit entries of the writes, advances the index to the
    /// last change, tells other hubs, commits. An error of `COMMIT` itself is
    /// [`StoreError::CommitUnknown`] (the server may have committed); any other error
    /// came before `COMMIT` was sent, and nothing of the batch committed.
    async fn commit(
        self: Box<Self>,
        changes: &[Change],
        audit: &[NewAuditEntry],
    ) -> Result<(), StoreError>;
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

/// Where the database at `url` stands against this binary's migrations, creating and
/// changing nothing (`hub serve --check-config`). A SQLite file that does not exist yet is
/// reported as a new database.
pub async fn inspect(url: &str) -> Result<SchemaReport, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        PgStore::inspect(url).await
    } else if url.starts_with("sqlite:") {
        SqliteStore::inspect(url).await
    } else {
        Err(StoreError::UnsupportedUrl(url.to_string()))
    }
}

/// The pools' check on a connection coming back: keep it only outside a transaction.
///
/// A failed COMMIT or ROLLBACK leaves the driver's transaction depth where it was: SQLite
/// rolls a transaction back by itself on a full disk, so the ROLLBACK queued when the
/// transaction is dropped fails too. Such a connection, pooled again, refused every later
/// `BEGIN` ("begin_with at non-zero transaction depth") until a restart, long after space
/// returned. The rollback a dropped transaction queues is let through (a ping) before
/// looking; a connection still inside a transaction is closed, and the pool opens a fresh
/// one.
async fn release_outside_transaction<C: sqlx::Connection>(
    conn: &mut C,
) -> Result<bool, sqlx::Error> {
    if conn.is_in_transaction() {
        conn.ping().await?;
    }
    let clean = !conn.is_in_transaction();
    if !clean {
        tracing::warn!("closing a database connection left inside a failed transaction");
    }
    Ok(clean)
}

/// How to undo one op of a write transaction: whether its SAVEPOINT was sent, and each
/// cache entry it touched as it was before (`None`: absent), oldest first.
#[derive(Default)]
struct Undo {
    sent: bool,
    works: Vec<(WorkKey, Option<Option<CachedWork>>)>,
    clusters: Vec<(String, Option<Option<ManagedCluster>>)>,
    pending: Vec<(WorkKey, Option<Upsert>)>,
}

impl Undo {
    /// Puts each journaled cache entry back, newest first, so each key ends as it was
    /// when the op began.
    fn restore(
        self,
        works: &mut std::collections::HashMap<WorkKey, Option<CachedWork>>,
        clusters: &mut std::collections::HashMap<String, Option<ManagedCluster>>,
        pending: &mut BTreeMap<WorkKey, Upsert>,
    ) {
        for (key, old) in self.works.into_iter().rev() {
            match old {
                Some(w) => works.insert(key, w),
                None => works.remove(&key),
            };
        }
        for (name, old) in self.clusters.into_iter().rev() {
            match old {
                Some(c) => clusters.insert(name, c),
                None => clusters.remove(&name),
            };
        }
        for (key, old) in self.pending.into_iter().rev() {
            match old {
                Some(v) => pending.insert(key, v),
                None => pending.remove(&key),
            };
        }
    }
}

/// A work's key: (cluster, name).
type WorkKey = (String, String);

/// A work as a write transaction holds it: as it read it, or as the JSON it wrote, decoded
/// only should the batch read it again. Most never do, and keeping a copy of each written
/// work cost the writer a deep clone per write (docs/benchmarks.md).
#[derive(Clone)]
enum CachedWork {
    Read(Box<ManifestWork>),
    Written(std::sync::Arc<str>),
}

impl CachedWork {
    /// The work of `key`.
    fn work(&self, (cluster, name): &WorkKey) -> Result<ManifestWork, StoreError> {
        match self {
            CachedWork::Read(w) => Ok((**w).clone()),
            CachedWork::Written(json) => decode(&format!("work {cluster}/{name}"), json),
        }
    }
}

/// A held-back work upsert: (resourceVersion, JSON).
type Upsert = (i64, std::sync::Arc<str>);

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

fn encode<T: serde::Serialize>(what: &str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|source| StoreError::Corrupt {
        what: what.to_string(),
        source,
    })
}

fn agent_from_row(
    (cluster, public_key, registration_id, generation, revoked): (
        String,
        String,
        String,
        i64,
        bool,
    ),
) -> Agent {
    Agent {
        cluster,
        public_key,
        registration_id,
        generation,
        revoked,
    }
}

fn token_from_row(
    (secret_sha256, uses, object): (String, i64, String),
) -> Result<StoredToken, StoreError> {
    let mut token: api::Token = decode("token", &object)?;
    token.uses = uses.max(0) as u64;
    Ok(StoredToken {
        token,
        secret_sha256,
    })
}
