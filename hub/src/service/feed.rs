//! The change feed behind blocking queries.
//!
//! The feed holds the last committed index and a ring of recent changes. It only ever
//! publishes a gap-free run of indexes: when a batch arrives that does not start right after
//! what it has (another hub wrote in between), it reads the missing changes from the
//! database first. A waiter therefore never sees an index without having seen every change
//! at or below it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

use crate::store::{Change, ChangeKind, IndexStream, Store, StoreError};

/// How many recent changes are kept in memory for waiters to check.
const RING: usize = 100_000;

/// Decides whether a change is one a waiter cares about.
pub type ChangeFilter = Box<dyn Fn(&Change) -> bool + Send + Sync>;

struct Inner {
    ring: VecDeque<Change>,
    /// Per-cluster wake-ups, so an agent's wait is not woken by other clusters' writes.
    clusters: HashMap<String, watch::Sender<u64>>,
    /// Per cluster, the index of the last change to anything but its works: its record,
    /// its registrations, its agent (which changes only with its record).
    cluster_marks: HashMap<String, u64>,
    /// Changes at or below this index may have been skipped (a jump).
    floor: u64,
}

/// Publishes committed changes and wakes the blocking queries they concern.
pub struct ChangeFeed {
    latest: watch::Sender<u64>,
    inner: Mutex<Inner>,
    /// Serialises catch-up reads, so two publishers never race past a gap.
    publish: tokio::sync::Mutex<()>,
    /// Whether this hub is its database's only writer (SQLite: one hub per file). Then an
    /// index past the feed's can only come from another history (a database restored by
    /// copying its files back), never from a hub a notification ahead, and is answered at
    /// once rather than after [`CATCH_UP`].
    sole_writer: std::sync::atomic::AtomicBool,
}

impl ChangeFeed {
    /// A feed starting at the store's current index.
    pub fn new(start: u64) -> Arc<Self> {
        Arc::new(ChangeFeed {
            latest: watch::Sender::new(start),
            inner: Mutex::new(Inner {
                ring: VecDeque::new(),
                clusters: HashMap::new(),
                cluster_marks: HashMap::new(),
                floor: start,
            }),
            publish: tokio::sync::Mutex::new(()),
            sole_writer: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Marks this hub as its database's only writer (see [`Self::wait`]).
    pub fn set_sole_writer(&self) {
        self.sole_writer
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The last index published: every change at or below it is visible in the store.
    pub fn latest(&self) -> u64 {
        *self.latest.borrow()
    }

    /// Number of blocking queries waiting now.
    pub fn waiters(&self) -> usize {
        let inner = self.inner.lock().expect("feed lock");
        self.latest.receiver_count()
            + inner
                .clusters
                .values()
                .map(|s| s.receiver_count())
                .sum::<usize>()
    }

    /// Publishes a batch this hub committed. If it does not follow on from what the feed has,
    /// the missing changes (written by other hubs) are read from the store first.
    pub async fn publish_local(
        &self,
        store: &dyn Store,
        batch: Vec<Change>,
    ) -> Result<(), StoreError> {
        let Some(first) = batch.first().map(|c| c.index) else {
            return Ok(());
        };
        let _guard = self.publish.lock().await;
        let latest = self.latest();
        if first == latest + 1 {
            self.push(batch);
            Ok(())
        } else if first > latest + 1 {
            self.catch_up_locked(store, batch.last().map(|c| c.index).unwrap_or(first))
                .await
        } else {
            // Already published through a notification from the database.
            let fresh: Vec<Change> = batch.into_iter().filter(|c| c.index > latest).collect();
            self.push(fresh);
            Ok(())
        }
    }

    /// Reads and publishes every change up to at least `target` (another hub's commit).
    pub async fn catch_up(&self, store: &dyn Store, target: u64) -> Result<(), StoreError> {
        let _guard = self.publish.lock().await;
        self.catch_up_locked(store, target).await
    }

    async fn catch_up_locked(&self, store: &dyn Store, target: u64) -> Result<(), StoreError> {
        loop {
            let latest = self.latest();
            if latest >= target {
                return Ok(());
            }
            let changes = store.changes_since(latest, 10_000).await?;
            if changes.is_empty() {
                // The log was pruned past us; jump ahead so waiters re-read the store.
                let current = store.current_index().await?;
                if current > latest {
                    self.jump(current);
                }
                return Ok(());
            }
            if changes[0].index != latest + 1 {
                self.jump(changes[0].index - 1);
            }
            self.push(changes);
        }
    }

    /// Moves the index forward without the changes in between: every waiter wakes.
    fn jump(&self, index: u64) {
        let mut inner = self.inner.lock().expect("feed lock");
        inner.ring.clear();
        inner.floor = index;
        // `latest` first: a waiter woken by its cluster's channel reads it next.
        self.latest.send_replace(index);
        for tx in inner.clusters.values() {
            tx.send_replace(index);
        }
    }

    fn push(&self, batch: Vec<Change>) {
        let Some(last) = batch.last().map(|c| c.index) else {
            return;
        };
        let mut inner = self.inner.lock().expect("feed lock");
        let mut touched: Vec<String> = Vec::new();
        for c in batch {
            if !touched.contains(&c.cluster) {
                touched.push(c.cluster.clone());
            }
            if matches!(c.kind, ChangeKind::Cluster | ChangeKind::Registration) {
                inner.cluster_marks.insert(c.cluster.clone(), c.index);
            }
            inner.ring.push_back(c);
        }
        while inner.ring.len() > RING {
            inner.ring.pop_front();
        }
        // `latest` before the per-cluster channels: a waiter woken by its cluster's channel
        // reads `latest` next, and must find the change there (it would otherwise go back
        // to sleep on a channel it has already seen, until its wait runs out).
        self.latest.send_replace(last);
        for cluster in touched {
            if let Some(tx) = inner.clusters.get(&cluster) {
                tx.send_replace(last);
            }
        }
        // Forget per-cluster channels nobody waits on any more.
        if inner.clusters.len() > 1024 {
            inner.clusters.retain(|_, tx| tx.receiver_count() > 0);
        }
    }

    /// Whether anything of `cluster` but its works (its record, registrations or agent) may
    /// have changed after `index`: what was read of them at `index` is current if not.
    pub fn cluster_changed_after(&self, cluster: &str, index: u64) -> bool {
        let inner = self.inner.lock().expect("feed lock");
        index < inner.floor || inner.cluster_marks.get(cluster).is_some_and(|&i| i > index)
    }

    /// Whether a change after `after` and at or below `upto` passes `filter`. Returns true
    /// too when the ring no longer reaches back to `after` (the caller must re-read).
    fn any_since(&self, after: u64, upto: u64, filter: &ChangeFilter) -> bool {
        let inner = self.inner.lock().expect("feed lock");
        match inner.ring.front() {
            Some(first) if first.index <= after + 1 => {}
            _ => return true,
        }
        // Indexes in the ring are consecutive, so the start position is arithmetic.
        let first = inner.ring.front().map(|c| c.index).unwrap_or(0);
        let skip = (after + 1).saturating_sub(first) as usize;
        inner
            .ring
            .iter()
            .skip(skip)
            .take_while(|c| c.index <= upto)
            .any(filter)
    }

    /// The changes after `after` and at or below `upto`, oldest first; `None` when the ring
    /// no longer reaches back to `after` (the caller must re-read what it follows).
    pub fn changes_between(&self, after: u64, upto: u64) -> Option<Vec<Change>> {
        self.walk_between(after, upto, |changes| changes.cloned().collect())
    }

    /// How many of the changes after `after` and at or below `upto` pass `filter`; `None`
    /// when the ring no longer reaches back to `after`. Nothing is copied: a count over
    /// the whole ring holds the feed's lock (and so the writer's publish) for microseconds.
    pub fn count_between(
        &self,
        after: u64,
        upto: u64,
        filter: impl Fn(&Change) -> bool,
    ) -> Option<usize> {
        self.walk_between(after, upto, |changes| changes.filter(|c| filter(c)).count())
    }

    /// `f` of the changes after `after` and at or below `upto`, under the feed's lock.
    fn walk_between<R>(
        &self,
        after: u64,
        upto: u64,
        f: impl FnOnce(&mut dyn Iterator<Item = &Change>) -> R,
    ) -> Option<R> {
        let inner = self.inner.lock().expect("feed lock");
        if after >= upto {
            return Some(f(&mut std::iter::empty()));
        }
        let first = inner.ring.front().map(|c| c.index)?;
        if first > after + 1 || after < inner.floor {
            return None;
        }
        let skip = (after + 1).saturating_sub(first) as usize;
        let mut changes = inner.ring.iter().skip(skip).take_while(|c| c.index <= upto);
        Some(f(&mut changes))
    }

    /// Waits until a change after `after` passes `filter`, or `wait` runs out. Returns the
    /// index to report: the caller reads the store after this returns.
    ///
    /// `cluster` narrows the wake-ups to one cluster's writes (an agent's watch).
    pub async fn wait(
        &self,
        after: u64,
        cluster: Option<&str>,
        filter: ChangeFilter,
        wait: Duration,
    ) -> u64 {
        let deadline = tokio::time::Instant::now() + wait;
        let mut rx = match cluster {
            Some(c) => {
                let mut inner = self.inner.lock().expect("feed lock");
                let latest = self.latest();
                inner
                    .clusters
                    .entry(c.to_string())
                    .or_insert_with(|| watch::Sender::new(latest))
                    .subscribe()
            }
            None => self.latest.subscribe(),
        };
        let mut checked = after;
        let mut catch_up = None;
        loop {
            // What woke us counts even if `latest` has not caught up with it yet.
            let notified = *rx.borrow_and_update();
            let latest = self.latest().max(notified);
            // An index this feed has not reached: first give the feed [`CATCH_UP`] to get
            // there (another hub on the database answered it), then answer (a restored
            // database, whose history is behind). A sole writer answers at once: nobody
            // else can have answered it, and while it waited its own writes (an agent's
            // lease) could reach that index in the other history, so that the client never
            // saw its index go back and never listed again.
            if after > latest {
                if self.sole_writer.load(std::sync::atomic::Ordering::Relaxed) {
                    return latest;
                }
                let until = *catch_up
                    .get_or_insert_with(|| (tokio::time::Instant::now() + CATCH_UP).min(deadline));
                if tokio::time::Instant::now() >= until {
                    return latest;
                }
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return self.latest() },
                    _ = tokio::time::sleep_until(until) => {}
                }
                continue;
            }
            if latest > checked {
                if self.any_since(checked, latest, &filter) {
                    return latest;
                }
                checked = latest;
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return self.latest() },
                _ = tokio::time::sleep_until(deadline) => return self.latest(),
            }
        }
    }
}

/// How long a wait for an index past this feed's gives the feed to reach it. Behind a
/// balancer that routes each request anew (HAProxy in `mode http`), a client's next
/// blocking query can reach a hub whose feed is a notification behind the hub that
/// answered the last one: answered at once, the client saw its index go backwards. The
/// feed polls the store every second, so this also covers a lost notification; an index
/// that is really ahead (a restored database, asked without the client's epoch) is
/// answered after it.
const CATCH_UP: Duration = Duration::from_secs(2);

/// Keeps the feed in step with writes by other hubs on the same database: database
/// notifications where there are any, and a slow poll as a safety net (a notification can be
/// lost while the listening connection reconnects). The change log is pruned by the
/// retention controller (`controllers::retention`).
pub async fn follow(store: Arc<dyn Store>, feed: Arc<ChangeFeed>) {
    let mut listener: Option<IndexStream> = None;
    // `Ok(None)` from `listen` means the backend has nothing to listen to (SQLite: one hub
    // per file); an error means the database cannot be reached right now.
    let mut can_listen = true;
    let mut lost = false;
    let mut poll = tokio::time::interval(Duration::from_secs(1));
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
                Ok(None) => {
                    can_listen = false;
                    feed.set_sole_writer();
                }
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
            _ = poll.tick() => {
                let index = store.current_index().await.ok();
                if let Some(i) = index {
                    // What the poll finds unpublished after notifications had their chance;
                    // caught up just below, so it stays above zero only while catching up
                    // keeps failing (the `hub_feed_lag_indexes` alert).
                    let lag = i.saturating_sub(feed.latest());
                    let caught_up = lag == 0 || feed.catch_up(&*store, i).await.is_ok();
                    metrics::gauge!("hub_feed_lag_indexes")
                        .set(if caught_up { 0.0 } else { lag as f64 });
                }
                index
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ChangeKind;

    fn change(index: u64, cluster: &str) -> Change {
        Change {
            index,
            kind: ChangeKind::Work,
            cluster: cluster.into(),
            name: "w".into(),
            labels: Default::default(),
            prev_labels: None,
            status_only: false,
            has_ttl: None,
        }
    }

    #[test]
    fn changes_are_counted_between_two_indexes_without_the_ring_behind_them() {
        let feed = ChangeFeed::new(0);
        feed.push(
            (1..=10)
                .map(|i| Change {
                    status_only: i % 3 == 0,
                    ..change(i, "c1")
                })
                .collect(),
        );
        let status = |c: &Change| c.status_only;
        assert_eq!(feed.count_between(0, 10, status), Some(3));
        assert_eq!(feed.count_between(3, 9, status), Some(2), "6 and 9");
        assert_eq!(feed.count_between(9, 9, status), Some(0));
        assert_eq!(
            feed.changes_between(3, 6).map(|c| c.len()),
            Some(3),
            "the same walk copies"
        );
    }

    #[tokio::test]
    async fn a_waiter_wakes_only_for_its_cluster() {
        let feed = ChangeFeed::new(0);
        let f2 = feed.clone();
        let waiter = tokio::spawn(async move {
            f2.wait(
                0,
                Some("c1"),
                Box::new(|c: &Change| c.cluster == "c1"),
                Duration::from_secs(5),
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        feed.push(vec![change(1, "c2")]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "a write to c2 must not wake c1's waiter"
        );
        feed.push(vec![change(2, "c1")]);
        assert_eq!(waiter.await.unwrap(), 2);
    }

    #[tokio::test]
    async fn a_cluster_waiter_wakes_even_if_latest_lags_its_channel() {
        let feed = ChangeFeed::new(0);
        let f2 = feed.clone();
        let waiter = tokio::spawn(async move {
            f2.wait(
                0,
                Some("c1"),
                Box::new(|c: &Change| c.cluster == "c1"),
                Duration::from_secs(30),
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The change is in the ring and the cluster's channel says so, but `latest` has not
        // moved yet (another publisher's moment in between).
        {
            let mut inner = feed.inner.lock().unwrap();
            inner.ring.push_back(change(1, "c1"));
            inner.clusters.get("c1").unwrap().send_replace(1);
        }
        let woke = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert_eq!(woke.expect("woken at once").unwrap(), 1);
    }

    #[tokio::test]
    async fn an_index_another_hub_reached_waits_for_the_feed_to_get_there() {
        let feed = ChangeFeed::new(5);
        let f2 = feed.clone();
        // The caller saw index 6 from another hub; this one's feed is at 5.
        let waiter = tokio::spawn(async move {
            f2.wait(
                6,
                None,
                Box::new(|_: &Change| true),
                Duration::from_secs(30),
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "answered below the caller's index");
        feed.push(vec![change(6, "c1")]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "index 6 is what the caller saw: it waits for a change past it"
        );
        feed.push(vec![change(7, "c1")]);
        let woke = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert_eq!(woke.expect("woken by the change past 6").unwrap(), 7);
    }

    #[tokio::test]
    async fn an_index_no_hub_reaches_is_answered_after_the_catch_up() {
        // A restored database: its history is behind the caller's index.
        let feed = ChangeFeed::new(5);
        let started = tokio::time::Instant::now();
        let got = feed
            .wait(
                100,
                None,
                Box::new(|_: &Change| true),
                Duration::from_secs(60),
            )
            .await;
        assert_eq!(got, 5);
        let took = started.elapsed();
        assert!(took >= CATCH_UP && took < CATCH_UP * 3, "{took:?}");
    }

    #[tokio::test]
    async fn a_sole_writer_answers_an_index_from_another_history_at_once() {
        // SQLite, its files copied back from a backup: only another history has index 100.
        let feed = ChangeFeed::new(5);
        feed.set_sole_writer();
        let got = tokio::time::timeout(
            CATCH_UP / 4,
            feed.wait(
                100,
                None,
                Box::new(|_: &Change| true),
                Duration::from_secs(60),
            ),
        )
        .await
        .expect("answered before any catch-up");
        assert_eq!(got, 5, "the client sees its index go back and lists again");
    }

    #[tokio::test]
    async fn a_wait_times_out_with_the_same_index() {
        let feed = ChangeFeed::new(7);
        let got = feed
            .wait(
                7,
                None,
                Box::new(|_: &Change| true),
                Duration::from_millis(50),
            )
            .await;
        assert_eq!(got, 7);
    }

    #[tokio::test]
    async fn an_old_index_outside_the_ring_returns_at_once() {
        let feed = ChangeFeed::new(100);
        feed.push(vec![change(101, "c1")]);
        let got = feed
            .wait(
                3,
                None,
                Box::new(|_: &Change| false),
                Duration::from_secs(5),
            )
            .await;
        assert_eq!(got, 101);
    }
}
