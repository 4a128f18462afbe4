//! Business rules of the hub. Handlers call [`Hub`]; SQL stays in [`crate::store`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use api::selector::Selector;
use api::{ClusterDeletion, List, ManagedCluster, ManifestWork, ManifestWorkStatus};
use base64::Engine;
use futures::StreamExt;

use crate::store::{Change, ChangeKind, Store, StoredWork};

pub mod access;
pub mod cache;
pub mod clusters;
pub mod error;
pub mod feed;
pub mod registration;
pub mod summary;
pub mod works;
mod writer;

pub use error::{Error, Result};
use feed::ChangeFeed;
pub use writer::Caller;
use writer::{Op, Outcome, Writer};

/// The longest a blocking query may wait.
pub const MAX_WAIT: Duration = Duration::from_secs(300);
/// The wait of a blocking query that names none.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);
/// Largest page of a list.
pub const MAX_PAGE: u32 = 10_000;

/// A blocking query: return once something changed past `index`, or after `wait`.
#[derive(Debug, Clone, Copy)]
pub struct Block {
    /// The index the caller has seen.
    pub index: u64,
    /// How long to wait at most.
    pub wait: Duration,
}

/// What a list of works asks for.
#[derive(Debug, Clone, Default)]
pub struct WorkQuery {
    /// One cluster, or all.
    pub cluster: Option<String>,
    /// Label selector on works.
    pub selector: Selector,
    /// Label selector on clusters (lists across clusters).
    pub cluster_selector: Selector,
    /// Page size (0: all).
    pub limit: u32,
    /// Continue token.
    pub continue_: Option<String>,
    /// Blocking.
    pub block: Option<Block>,
    /// Status-only changes do not wake this query (the cluster's agent: status is its own
    /// output).
    pub ignore_status_changes: bool,
    /// Only these clusters (the caller's scope); `None`: all.
    pub scope: Option<Vec<String>>,
}

/// One page of works as stored, from [`Hub::list_stored_works`].
#[derive(Debug)]
pub struct StoredWorks {
    /// The works, ordered by (cluster, name).
    pub items: Vec<StoredWork>,
    /// The change index the page is current to.
    pub index: u64,
    /// Where the next page starts, when there is one.
    pub continue_: Option<String>,
}

/// Timings of registration and leases.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// How often agents renew their lease.
    pub lease_interval: Duration,
    /// How long after the last renewal a cluster becomes Unknown.
    pub lease_grace: Duration,
    /// Lifetime of bootstrap tokens created without `ttl`.
    pub bootstrap_token_ttl: Duration,
}

impl Default for HubSettings {
    fn default() -> Self {
        HubSettings {
            lease_interval: Duration::from_secs(10),
            lease_grace: Duration::from_secs(50),
            bootstrap_token_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// The result of a work write.
#[derive(Debug, Clone)]
pub struct WorkWrite {
    /// The work as it is now (with `Deleting` when deleting).
    pub work: ManifestWork,
    /// Whether the write removed it.
    pub gone: bool,
    /// Whether the write created it.
    pub created: bool,
}

/// The setting that readiness overwrites to see whether writes commit.
const WRITE_PROBE_SETTING: &str = "readyz.write_probe";

/// The hub's service: store, change feed and writer.
pub struct Hub {
    store: Arc<dyn Store>,
    feed: Arc<ChangeFeed>,
    writer: Writer,
    settings: HubSettings,
    /// Lease renewals not yet in the store: heartbeats are written in one statement a
    /// flush period instead of one commit each (1,000 agents renewing together made every
    /// other write wait ~1 s). Losing them in a crash costs at most one flush period of a
    /// lease, far inside the grace.
    pending_leases:
        std::sync::Mutex<std::collections::HashMap<String, chrono::DateTime<chrono::Utc>>>,
    /// What the lease check knows of each cluster, by resource version.
    lease_facts: std::sync::Mutex<std::collections::HashMap<String, registration::LeaseFacts>>,
    /// Clusters and agents as their heartbeats read them.
    cache: Arc<cache::ClusterCache>,
    /// The key of the placeholders that stand for secret data in masked reads.
    placeholder_key: access::PlaceholderKey,
}

impl Hub {
    /// Starts with default timings.
    pub async fn start(store: Arc<dyn Store>) -> Result<Arc<Hub>> {
        Self::start_with(store, HubSettings::default()).await
    }

    /// Starts the writer, the feed's followers of other hubs' writes, and the lease monitor.
    pub async fn start_with(store: Arc<dyn Store>, settings: HubSettings) -> Result<Arc<Hub>> {
        let feed = ChangeFeed::new(store.current_index().await?);
        let placeholder_key = access::PlaceholderKey::load_or_create(&*store).await?;
        let writer = Writer::start(store.clone(), feed.clone());
        tokio::spawn(follow(store.clone(), feed.clone()));
        let hub = Arc::new(Hub {
            cache: Arc::new(cache::ClusterCache::new(store.clone(), feed.clone())),
            store,
            feed,
            writer,
            settings,
            pending_leases: Default::default(),
            lease_facts: Default::default(),
            placeholder_key,
        });
        tokio::spawn(monitor_leases(Arc::downgrade(&hub)));
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
    pub fn placeholder_key(&self) -> &access::PlaceholderKey {
        &self.placeholder_key
    }

    /// The store, for settings and health.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
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

    fn expect_work(outcome: Outcome) -> Result<WorkWrite> {
        match outcome {
            Outcome::Work {
                work,
                gone,
                created,
            } => Ok(WorkWrite {
                work: works::present(*work),
                gone,
                created,
            }),
            other => Err(Error::Internal(format!(
                "unexpected write outcome {other:?}"
            ))),
        }
    }

    fn expect_cluster(outcome: Outcome) -> Result<ManagedCluster> {
        match outcome {
            Outcome::Cluster(c) => Ok(*c),
            other => Err(Error::Internal(format!(
                "unexpected write outcome {other:?}"
            ))),
        }
    }

    /// Checks a work as [`put_work`](Self::put_work) would (against the path, namespace
    /// filled in) without storing it: a dry run.
    pub fn check_work(
        &self,
        cluster: &str,
        name: &str,
        mut work: ManifestWork,
    ) -> Result<ManifestWork> {
        works::validate_work(cluster, name, &mut work)?;
        Ok(work)
    }

    /// Creates or replaces a work (body validated against the path first); with `by`, its
    /// audit entry commits with it.
    pub async fn put_work(
        &self,
        cluster: &str,
        name: &str,
        work: ManifestWork,
        if_match: Option<String>,
        by: Option<Caller>,
    ) -> Result<WorkWrite> {
        self.put_work_for(cluster, name, work, if_match, true, by)
            .await
    }

    /// [`put_work`](Self::put_work) for a caller who may or may not read the work:
    /// `caller_reads` says whether a refusal may name the current version.
    #[tracing::instrument(skip(self, work, by), fields(cluster, name))]
    pub async fn put_work_for(
        &self,
        cluster: &str,
        name: &str,
        mut work: ManifestWork,
        if_match: Option<String>,
        caller_reads: bool,
        by: Option<Caller>,
    ) -> Result<WorkWrite> {
        works::validate_work(cluster, name, &mut work)?;
        let put = works::PutWork {
            cluster: cluster.into(),
            name: name.into(),
            work,
            if_match,
            caller_reads,
        };
        Self::expect_work(self.writer.write_by(Op::PutWork(Box::new(put)), by).await?)
    }

    /// Asks for a work's deletion; with `by`, its audit entry commits with it.
    #[tracing::instrument(skip(self, by))]
    pub async fn delete_work(
        &self,
        cluster: &str,
        name: &str,
        by: Option<Caller>,
    ) -> Result<WorkWrite> {
        works::validate_cluster_name(cluster)?;
        let op = Op::DeleteWork {
            cluster: cluster.into(),
            name: name.into(),
        };
        Self::expect_work(self.writer.write_by(op, by).await?)
    }

    /// Writes a work's status (the cluster's agent).
    #[tracing::instrument(skip(self, status))]
    pub async fn put_work_status(
        &self,
        cluster: &str,
        name: &str,
        status: ManifestWorkStatus,
    ) -> Result<ManifestWork> {
        works::validate_cluster_name(cluster)?;
        let op = Op::PutWorkStatus(Box::new(works::PutStatus {
            cluster: cluster.into(),
            name: name.into(),
            status,
        }));
        Ok(Self::expect_work(self.writer.write(op).await?)?.work)
    }

    /// Removes a finalizer (the cluster's agent, after cleaning up).
    #[tracing::instrument(skip(self))]
    pub async fn remove_work_finalizer(
        &self,
        cluster: &str,
        name: &str,
        finalizer: &str,
    ) -> Result<WorkWrite> {
        works::validate_cluster_name(cluster)?;
        let op = Op::RemoveFinalizer {
            cluster: cluster.into(),
            name: name.into(),
            finalizer: finalizer.into(),
        };
        Self::expect_work(self.writer.write(op).await?)
    }

    /// Reads one work; with `block`, first waits until it changed past the index.
    pub async fn get_work(
        &self,
        cluster: &str,
        name: &str,
        block: Option<Block>,
    ) -> Result<(Option<ManifestWork>, u64)> {
        works::validate_cluster_name(cluster)?;
        if let Some(b) = block {
            let (c, n) = (cluster.to_string(), name.to_string());
            let filter: feed::ChangeFilter = Box::new(move |ch: &Change| {
                ch.kind == ChangeKind::Work && ch.cluster == c && ch.name == n
            });
            self.feed.wait(b.index, Some(cluster), filter, b.wait).await;
        }
        let index = self.feed.latest();
        let work = self
            .store
            .get_work(cluster, name)
            .await?
            .map(works::present);
        Ok((work, index))
    }

    /// Lists works of one cluster or across clusters, a page at a time; with `block`, the
    /// first page waits until something it would return changed past the index.
    pub async fn list_works(&self, q: WorkQuery) -> Result<List<ManifestWork>> {
        let page = self.list_stored_works(q).await?;
        let items = page
            .items
            .iter()
            .map(|w| w.decode().map(works::present))
            .collect::<Result<_, _>>()?;
        Ok(List::new(
            "ManifestWorkList",
            items,
            page.index,
            page.continue_,
        ))
    }

    /// The same list as [`Hub::list_works`], with each work as stored: a large list is served
    /// without parsing and serializing every document again (see [`works::listed_json`]).
    pub async fn list_stored_works(&self, q: WorkQuery) -> Result<StoredWorks> {
        if let Some(c) = &q.cluster {
            works::validate_cluster_name(c)?;
        }
        let after = q.continue_.as_deref().map(decode_continue).transpose()?;
        if let (Some(b), None) = (q.block, &after) {
            let (cluster, sel, ignore_status, scope) = (
                q.cluster.clone(),
                q.selector.clone(),
                q.ignore_status_changes,
                q.scope.clone(),
            );
            let cross_cluster = q.cluster.is_none() && !q.cluster_selector.is_empty();
            let filter: feed::ChangeFilter = Box::new(move |ch: &Change| match ch.kind {
                ChangeKind::Registration => false,
                ChangeKind::Cluster => cross_cluster,
                ChangeKind::Work => {
                    !(ignore_status && ch.status_only)
                        && cluster.as_deref().is_none_or(|c| c == ch.cluster)
                        && scope.as_ref().is_none_or(|s| s.contains(&ch.cluster))
                        && (sel.matches(&ch.labels)
                            || ch.prev_labels.as_ref().is_some_and(|l| sel.matches(l)))
                }
            });
            self.feed
                .wait(b.index, q.cluster.as_deref(), filter, b.wait)
                .await;
        }
        let index = self.feed.latest();
        let clusters: Option<Vec<String>> = if q.cluster.is_none() && !q.cluster_selector.is_empty()
        {
            Some(
                self.store
                    .list_clusters()
                    .await?
                    .into_iter()
                    .filter(|c| q.cluster_selector.matches(&c.metadata.labels))
                    .map(|c| c.metadata.name)
                    .collect(),
            )
        } else {
            None
        };
        let limit = if q.limit == 0 {
            u32::MAX
        } else {
            q.limit.min(MAX_PAGE)
        };
        let mut items = Vec::new();
        let mut cursor = after;
        let mut more = false;
        'pages: loop {
            let chunk = limit
                .saturating_sub(items.len() as u32)
                .saturating_mul(2)
                .clamp(100, 5000);
            let page = self
                .store
                .list_works(
                    q.cluster.as_deref(),
                    cursor.as_ref().map(|(c, n)| (c.as_str(), n.as_str())),
                    chunk,
                )
                .await?;
            let exhausted = (page.len() as u32) < chunk;
            for w in page {
                let in_scope = clusters.as_ref().is_none_or(|cs| cs.contains(&w.cluster))
                    && q.scope.as_ref().is_none_or(|cs| cs.contains(&w.cluster));
                // Only a selector needs the labels, so only then is the document parsed.
                if in_scope && (q.selector.is_empty() || q.selector.matches(&works::labels(&w)?)) {
                    if items.len() as u32 >= limit {
                        more = true;
                        break 'pages;
                    }
                    cursor = Some((w.cluster.clone(), w.name.clone()));
                    items.push(w);
                } else {
                    cursor = Some((w.cluster, w.name));
                }
            }
            if exhausted {
                break;
            }
        }
        let continue_ = if more {
            items
                .last()
                .map(|w: &StoredWork| encode_continue(&w.cluster, &w.name))
        } else {
            None
        };
        Ok(StoredWorks {
            items,
            index,
            continue_,
        })
    }

    /// Creates or updates a cluster record (admin).
    pub async fn put_cluster(
        &self,
        name: &str,
        mut cluster: ManagedCluster,
    ) -> Result<ManagedCluster> {
        clusters::validate_cluster(name, &mut cluster)?;
        Self::expect_cluster(self.writer.write(Op::PutCluster(Box::new(cluster))).await?)
    }

    /// Sets (`Some`) or removes (`None`) cluster labels (admin).
    pub async fn set_cluster_labels(
        &self,
        name: &str,
        labels: BTreeMap<String, Option<String>>,
    ) -> Result<ManagedCluster> {
        let patch = clusters::SetLabels {
            name: name.into(),
            labels,
        };
        clusters::validate_label_patch(&patch)?;
        Self::expect_cluster(self.writer.write(Op::SetClusterLabels(patch)).await?)
    }

    /// Marks a cluster as having a joined agent (registration).
    pub async fn mark_cluster_joined(&self, name: &str) -> Result<ManagedCluster> {
        Self::expect_cluster(
            self.writer
                .write(Op::MarkClusterJoined { name: name.into() })
                .await?,
        )
    }

    /// Deletes a cluster (see [`clusters::delete`]).
    pub async fn delete_cluster(&self, name: &str, force: bool) -> Result<ClusterDeletion> {
        works::validate_cluster_name(name)?;
        match self
            .writer
            .write(Op::DeleteCluster {
                name: name.into(),
                force,
            })
            .await?
        {
            Outcome::ClusterDeletion(d) => Ok(d),
            other => Err(Error::Internal(format!(
                "unexpected write outcome {other:?}"
            ))),
        }
    }

    /// Reads one cluster.
    pub async fn get_cluster(
        &self,
        name: &str,
        block: Option<Block>,
    ) -> Result<(Option<ManagedCluster>, u64)> {
        works::validate_cluster_name(name)?;
        if let Some(b) = block {
            let n = name.to_string();
            self.feed
                .wait(
                    b.index,
                    None,
                    Box::new(move |ch: &Change| ch.kind == ChangeKind::Cluster && ch.name == n),
                    b.wait,
                )
                .await;
        }
        let index = self.feed.latest();
        Ok((self.store.get_cluster(name).await?, index))
    }

    /// Lists clusters matching a selector.
    pub async fn list_clusters(
        &self,
        selector: &Selector,
        block: Option<Block>,
    ) -> Result<List<ManagedCluster>> {
        if let Some(b) = block {
            let sel = selector.clone();
            let filter: feed::ChangeFilter = Box::new(move |ch: &Change| {
                ch.kind == ChangeKind::Cluster
                    && (sel.matches(&ch.labels)
                        || ch.prev_labels.as_ref().is_some_and(|l| sel.matches(l)))
            });
            self.feed.wait(b.index, None, filter, b.wait).await;
        }
        let index = self.feed.latest();
        let items = self
            .store
            .list_clusters()
            .await?
            .into_iter()
            .filter(|c| selector.matches(&c.metadata.labels))
            .collect();
        Ok(List::new("ManagedClusterList", items, index, None))
    }
}

/// While the hub lives: writes the renewals received every quarter interval, and checks
/// leases every half interval (both at most a second apart).
async fn monitor_leases(hub: std::sync::Weak<Hub>) {
    let Some(interval) = hub.upgrade().map(|h| h.settings.lease_interval) else {
        return;
    };
    let mut flush = tokio::time::interval(
        (interval / 4).clamp(Duration::from_millis(50), Duration::from_secs(1)),
    );
    let mut check = tokio::time::interval((interval / 2).min(Duration::from_secs(1)));
    for t in [&mut flush, &mut check] {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    loop {
        tokio::select! {
            _ = flush.tick() => {
                let Some(h) = hub.upgrade() else { return };
                if let Err(e) = h.flush_leases().await {
                    tracing::warn!(error = %e, "writing lease renewals failed; will retry");
                }
            }
            _ = check.tick() => {
                let Some(h) = hub.upgrade() else { return };
                if let Err(e) = h.check_leases().await {
                    tracing::debug!(error = %e, "lease check failed; will retry");
                }
            }
        }
    }
}

fn encode_continue(cluster: &str, name: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{cluster}/{name}"))
}

fn decode_continue(token: &str) -> Result<(String, String)> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| {
            Error::Malformed(format!(
                "continue token {token:?} is not one this hub issued"
            ))
        })?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::Malformed("continue token is not valid".into()))?;
    let (c, n) = text
        .split_once('/')
        .ok_or_else(|| Error::Malformed("continue token is not valid".into()))?;
    Ok((c.to_string(), n.to_string()))
}

/// Keeps the feed in step with writes by other hubs on the same database: database
/// notifications where there are any, and a slow poll as a safety net (a notification can be
/// lost while the listening connection reconnects). Also prunes the change log.
async fn follow(store: Arc<dyn Store>, feed: Arc<ChangeFeed>) {
    let mut listener: Option<crate::store::IndexStream> = None;
    // `Ok(None)` from `listen` means the backend has nothing to listen to (SQLite: one hub
    // per file); an error means the database cannot be reached right now.
    let mut can_listen = true;
    let mut lost = false;
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    let mut prune = tokio::time::interval(Duration::from_secs(60));
    loop {
        if listener.is_none() && can_listen {
            // Set up again on every round until it works: sqlx's listener reconnects on its
            // own only until the pool's acquire timeout, so a Postgres outage longer than
            // that ended it, and without this the hub stayed deaf to other hubs' writes
            // (their waiters here woke only by the poll, up to a second late) until restart.
            match store.listen().await {
                Ok(Some(l)) => {
                    if lost {
                        tracing::info!("listening for other hubs' writes again");
                    }
                    listener = Some(l);
                }
                Ok(None) => can_listen = false,
                Err(e) => {
                    if !lost {
                        tracing::warn!(error = %e, "cannot listen for other hubs' writes; polling until it works");
                    }
                    lost = true;
                }
            }
        }
        let target = tokio::select! {
            n = async { match listener.as_mut() { Some(l) => l.next().await, None => std::future::pending().await } } => match n {
                Some(Ok(i)) => Some(i),
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "change listener error");
                    None
                }
                None => {
                    listener = None;
                    lost = true;
                    None
                }
            },
            _ = poll.tick() => store.current_index().await.ok(),
            _ = prune.tick() => {
                // Keep a generous window of history for waiters that fell behind.
                let latest = feed.latest();
                if latest > 200_000 {
                    let _ = store.prune_changes(latest - 200_000).await;
                }
                None
            }
        };
        if let Some(t) = target
            && t > feed.latest()
            && let Err(e) = feed.catch_up(&*store, t).await
        {
            tracing::debug!(error = %e, "feed catch-up failed; will retry");
        }
    }
}
