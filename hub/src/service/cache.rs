//! A cluster's record and agent as every request of its agent reads them, kept until the
//! change feed says they changed.
//!
//! Each lease renewal authenticates the agent (its generation, which revocation bumps) and
//! checks the cluster's availability: two database reads per heartbeat. 1,000 agents
//! renewing in step (after a hub restart) queued behind those reads for ~0.5 s. Every write
//! to a cluster's record or agent goes through the change index, so an entry read at index
//! `i` stays current until the feed publishes a change of that cluster after `i`; another
//! hub's write is seen once this hub's feed has it (a NOTIFY, or the one-second poll), as
//! blocking queries see it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use api::ManagedCluster;

use super::feed::ChangeFeed;
use crate::store::{Agent, Store, StoreError};

/// Entries by cluster name: the index they were read at and what was read.
type Entries<T> = Mutex<HashMap<String, (u64, Option<T>)>>;

/// Read-through cache of clusters and agents, invalidated by the change feed.
pub struct ClusterCache {
    store: Arc<dyn Store>,
    feed: Arc<ChangeFeed>,
    agents: Entries<Agent>,
    clusters: Entries<ManagedCluster>,
}

impl std::fmt::Debug for ClusterCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterCache { .. }")
    }
}

impl ClusterCache {
    /// An empty cache over this store and feed.
    pub fn new(store: Arc<dyn Store>, feed: Arc<ChangeFeed>) -> Self {
        ClusterCache {
            store,
            feed,
            agents: Default::default(),
            clusters: Default::default(),
        }
    }

    /// The cluster's accepted agent, as of the feed's latest index.
    pub async fn agent(&self, cluster: &str) -> Result<Option<Agent>, StoreError> {
        self.read_through(&self.agents, cluster, self.store.get_agent(cluster))
            .await
    }

    /// The cluster's record, as of the feed's latest index.
    pub async fn cluster(&self, name: &str) -> Result<Option<ManagedCluster>, StoreError> {
        self.read_through(&self.clusters, name, self.store.get_cluster(name))
            .await
    }

    /// The entry of `cluster` unless the feed has a change of it after the entry's index;
    /// else what `read` gets, remembered at the index taken before the read (so a change
    /// racing the read has a later index and invalidates it).
    async fn read_through<T: Clone>(
        &self,
        entries: &Entries<T>,
        cluster: &str,
        read: impl Future<Output = Result<Option<T>, StoreError>>,
    ) -> Result<Option<T>, StoreError> {
        let cached = entries.lock().expect("cache lock").get(cluster).cloned();
        if let Some((at, value)) = cached
            && !self.feed.cluster_changed_after(cluster, at)
        {
            return Ok(value);
        }
        let at = self.feed.latest();
        let value = read.await?;
        entries
            .lock()
            .expect("cache lock")
            .insert(cluster.to_string(), (at, value.clone()));
        Ok(value)
    }
}
