//! Business rules of the hub. Handlers call [`Hub`]; SQL stays in [`crate::store`].
//!
//! The layers, lowest first: [`error`], [`feed`] (the change index), [`cache`], [`writer`]
//! (group commit of typed ops) and [`query`] (the one blocking read); [`validate`] (with
//! [`condition_rules`]),
//! [`cluster_status`], [`secrets`], [`tokens`] and [`authn`]; then the rules of each
//! resource ([`works`], [`work_lists`], [`clusters`], [`registration`], [`leases`],
//! [`access`], [`audit`], [`work_ttl`]), each adding its methods to [`Hub`]. A module
//! only uses modules listed before it.

use std::sync::Arc;
use std::time::Duration;

use crate::store::Store;

pub mod access;
pub mod audit;
pub mod authn;
pub mod backup;
pub mod cache;
pub mod cluster_status;
pub mod clusters;
pub mod condition_rules;
pub mod error;
pub mod executor;
pub mod feed;
pub mod follow;
pub mod leases;
pub mod namespaced;
pub mod placement;
pub mod placements;
pub mod preconditions;
pub mod query;
pub mod registration;
pub mod replica_split;
pub mod retention;
pub mod secrets;
pub mod set_render;
pub mod set_sync;
pub mod sets;
pub mod summary;
pub mod tokens;
pub mod validate;
pub mod work_lists;
pub mod work_ttl;
pub mod works;
pub mod writer;

pub use crate::store::StoredWork;
pub use error::{Error, Result};
use feed::ChangeFeed;
pub use query::{Block, DEFAULT_WAIT, Indexed, MAX_WAIT};
pub use work_lists::{MAX_PAGE, StoredWorks, WorkQuery};
pub use works::WorkWrite;
use writer::Writer;
pub use writer::{Caller, WriteOp, Written};

/// Timings of registration and leases.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// How often agents renew their lease.
    pub lease_interval: Duration,
    /// How long after the last renewal a cluster becomes Unknown.
    pub lease_grace: Duration,
    /// Lifetime of bootstrap tokens created without `ttl`.
    pub bootstrap_token_ttl: Duration,
    /// How much history (audit entries, change-log rows) is kept.
    pub retention: retention::Retention,
}

impl Default for HubSettings {
    fn default() -> Self {
        HubSettings {
            lease_interval: Duration::from_secs(10),
            lease_grace: Duration::from_secs(50),
            bootstrap_token_ttl: Duration::from_secs(24 * 3600),
            retention: retention::Retention::default(),
        }
    }
}

/// The setting that readiness overwrites to see whether writes commit.
const WRITE_PROBE_SETTING: &str = "readyz.write_probe";

/// The hub's service: store, change feed and writer.
pub struct Hub {
    store: Arc<dyn Store>,
    feed: Arc<ChangeFeed>,
    writer: Writer,
    settings: HubSettings,
    /// Lease renewals not yet stored, and what the lease check knows.
    lease_book: leases::LeaseBook,
    /// Clusters and agents as their heartbeats read them.
    cache: Arc<cache::ClusterCache>,
    /// The key of the placeholders that stand for secret data in masked reads.
    placeholder_key: secrets::PlaceholderKey,
    /// The database's index epoch ([`backup`]), read once: a restore happens with the
    /// hubs stopped.
    epoch: String,
}

impl Hub {
    /// Starts with default timings.
    pub async fn start(store: Arc<dyn Store>) -> Result<Arc<Hub>> {
        Self::start_with(store, HubSettings::default()).await
    }

    /// Starts the writer and the feed's follower of other hubs' writes. The controllers
    /// (lease expiry) are started by their owner: see [`crate::controllers`].
    pub async fn start_with(store: Arc<dyn Store>, settings: HubSettings) -> Result<Arc<Hub>> {
        let feed = ChangeFeed::new(store.current_index().await?);
        let placeholder_key = secrets::load_or_create_key(&*store).await?;
        let epoch = backup::load_or_create_epoch(&*store).await?;
        let writer = Writer::start(store.clone(), feed.clone())
            .map_err(|e| Error::Internal(format!("could not start the writer's thread: {e}")))?;
        tokio::spawn(feed::follow(store.clone(), feed.clone()));
        let hub = Arc::new(Hub {
            cache: Arc::new(cache::ClusterCache::new(store.clone(), feed.clone())),
            store,
            feed,
            writer,
            settings,
            lease_book: Default::default(),
            placeholder_key,
            epoch,
        });
        Ok(hub)
    }

    /// The timings in force.
    pub fn settings(&self) -> &HubSettings {
        &self.settings
    }

    /// The cache of clusters and agents, for authenticating agents.
    pub fn cluster_cache(&self) -> Arc<cache::ClusterCache> {
        self.cache.clone()
    }

    /// The key under which masked reads show secret data.
    pub fn placeholder_key(&self) -> &secrets::PlaceholderKey {
        &self.placeholder_key
    }

    /// The store, for settings and health.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Queues a write and waits for it to commit: the way every write reaches the store,
    /// for the service and the controllers alike.
    pub async fn write<O: WriteOp>(&self, op: O) -> Result<Written<O::Output>> {
        self.writer.write(op).await
    }

    /// Number of works stored (metrics).
    pub async fn count_works(&self) -> Result<u64> {
        Ok(self.store.count_works().await?)
    }

    /// Whether the hub can serve: the database answers, and, when the last write failed to
    /// commit (a full disk, a lost database), a probe write commits now. A hub that only
    /// answered reads would otherwise stay "ready" while every write got a 503.
    #[tracing::instrument(skip(self))]
    pub async fn ready(&self) -> Result<()> {
        self.store.ping().await?;
        if self.writer.failing() {
            // A transaction as the writer opens one, then a write that needs new pages: a
            // no-op commit alone would pass on a full disk.
            self.store
                .begin_write(&[], &[])
                .await?
                .commit(&[], &[])
                .await?;
            let filler = "probe ".repeat(2048);
            let probe = format!("{} {filler}", chrono::Utc::now().to_rfc3339());
            self.store.put_setting(WRITE_PROBE_SETTING, &probe).await?;
            tracing::info!("a probe write committed; writes work again");
            self.writer.recovered();
        }
        Ok(())
    }

    /// The last published change index.
    pub fn index(&self) -> u64 {
        self.feed.latest()
    }

    /// Blocking queries waiting now.
    pub fn waiters(&self) -> usize {
        self.feed.waiters()
    }
}
