//! `deleteOption.ttlSecondsAfterFinished`: deletes a work that has been `Complete` (for its
//! current generation) for that long, through the normal deletion path, so its agent cleans
//! up. One hub per database runs it (the lock [`LOCK`]; a single SQLite hub simply holds it).
//!
//! It reads every work once when it starts leading, then follows the change feed: a work
//! written by a user is read again when its change says it has a TTL (each work change
//! records that), and a status write only for a work that has one. It sleeps until the
//! earliest expiry (or the next lock check), never polling the works.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Weak;
use std::time::Duration;

use api::ManifestWork;
use chrono::{DateTime, Utc};

use super::leader::{self, LEASE_CHECK, Lease, Led};
use crate::service::follow::{Change, ChangeKind};
use crate::service::work_ttl::{expiry, has_ttl};
use crate::service::{Hub, WorkQuery};

/// The name of the lock whose holder deletes finished works.
pub const LOCK: &str = "fleethub.ttl-after-finished";

/// How long after a failed deletion it is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// A work, by (cluster, name).
type Key = (String, String);

/// What the controller knows: the works with a TTL, and when each is due.
#[derive(Debug, Default)]
pub struct Schedule {
    /// Works whose spec has a TTL (their status writes matter).
    with_ttl: BTreeSet<Key>,
    /// When each due work expires.
    due: BTreeMap<Key, DateTime<Utc>>,
    /// The same, ordered by time.
    by_time: BTreeSet<(DateTime<Utc>, Key)>,
}

impl Schedule {
    /// Records what a work (or its absence) says now.
    pub fn update(&mut self, key: Key, work: Option<&ManifestWork>) {
        if let Some(at) = self.due.remove(&key) {
            self.by_time.remove(&(at, key.clone()));
        }
        match work {
            Some(w) if has_ttl(w) => {
                if let Some(at) = expiry(w) {
                    self.due.insert(key.clone(), at);
                    self.by_time.insert((at, key.clone()));
                }
                self.with_ttl.insert(key);
            }
            _ => {
                self.with_ttl.remove(&key);
            }
        }
    }

    /// What a run of changes asks of the controller: the works to read again, and the works
    /// known without a read to have no TTL now (their change says so, and none of the run
    /// needs a read, which would show the latest state anyway).
    ///
    /// A user's write is read only when its change says the work has a TTL, or does not say
    /// (recorded by an older hub); an agent's status write only for a work with a TTL. Reading
    /// every written work cost a database read per create.
    pub fn plan(&self, changes: &[Change]) -> Plan {
        let mut plan = Plan::default();
        for c in changes.iter().filter(|c| c.kind == ChangeKind::Work) {
            let key = (c.cluster.clone(), c.name.clone());
            let read = if c.status_only {
                self.with_ttl.contains(&key) || c.has_ttl == Some(true)
            } else {
                c.has_ttl != Some(false)
            };
            if read {
                plan.no_ttl.remove(&key);
                plan.read.insert(key);
            } else if !c.status_only && !plan.read.contains(&key) {
                plan.no_ttl.insert(key);
            }
        }
        plan
    }

    /// The earliest expiry.
    pub fn next(&self) -> Option<DateTime<Utc>> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// The works due at `now`, earliest first.
    pub fn due_at(&self, now: DateTime<Utc>) -> Vec<Key> {
        self.by_time
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, k)| k.clone())
            .collect()
    }

    /// How long to sleep from `now`: until the earliest expiry, at most `cap`.
    pub fn wait(&self, now: DateTime<Utc>, cap: Duration) -> Duration {
        match self.next() {
            Some(at) => (at - now).to_std().unwrap_or(Duration::ZERO).min(cap),
            None => cap,
        }
    }
}

/// What [`Schedule::plan`] found in a run of changes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Works to read again.
    pub read: BTreeSet<Key>,
    /// Works whose latest change says they have no TTL.
    pub no_ttl: BTreeSet<Key>,
}

/// While the hub lives: waits for the lock, then deletes finished works until it is lost.
pub async fn run(hub: Weak<Hub>) {
    let led = Led {
        lock: LOCK,
        does: "deletes works after ttlSecondsAfterFinished",
        gauge: None,
    };
    leader::run(hub, led, lead).await;
}

async fn lead(hub: Weak<Hub>, mut lease: Lease) {
    let mut schedule = Schedule::default();
    let mut seen = 0;
    let mut loaded = false;
    loop {
        let Some(h) = hub.upgrade() else { return };
        if !loaded {
            seen = h.index();
            match load(&h).await {
                Ok(s) => {
                    schedule = s;
                    loaded = true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the works for their TTL failed; will retry");
                    drop(h);
                    tokio::time::sleep(LEASE_CHECK).await;
                    if !lease.still_held().await {
                        return;
                    }
                    continue;
                }
            }
        }
        let mut retry = false;
        for (cluster, name) in schedule.due_at(Utc::now()) {
            match h.expire_work(&cluster, &name).await {
                Ok(Some(_)) => {
                    tracing::info!(%cluster, work = %name, "deleted: Complete for ttlSecondsAfterFinished");
                    metrics::counter!("hub_works_expired_total").increment(1);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%cluster, work = %name, error = %e, "deleting a finished work failed; will retry");
                    retry = true;
                    continue;
                }
            }
            // Whatever it did, the deletion's own change (or the next status) says what
            // the work is now; until then it is not due again.
            schedule.update((cluster, name), None);
        }
        let mut wait = schedule.wait(Utc::now(), LEASE_CHECK);
        if retry {
            wait = wait.min(RETRY);
        }
        // Only work changes are read; the filter runs on the feed's thread and cannot see
        // the schedule, so status writes are sorted out below.
        let upto = h
            .wait_for_changes(seen, Box::new(|c| c.kind == ChangeKind::Work), wait)
            .await;
        if !lease.still_held().await {
            tracing::warn!("this hub no longer deletes works after their TTL");
            return;
        }
        let Some(changes) = h.changes_between(seen, upto) else {
            tracing::info!("the change feed moved past the TTL controller; reloading");
            loaded = false;
            continue;
        };
        seen = upto;
        let Plan { read, no_ttl } = schedule.plan(&changes);
        for key in no_ttl {
            schedule.update(key, None);
        }
        for key in read {
            match h.get_work(&key.0, &key.1, None).await {
                Ok(w) => schedule.update(key, w.data.as_ref()),
                Err(e) => {
                    tracing::warn!(error = %e, "reading a changed work failed; reloading");
                    loaded = false;
                    break;
                }
            }
        }
    }
}

/// Every work's TTL state, a page at a time.
async fn load(hub: &Hub) -> crate::service::Result<Schedule> {
    let mut schedule = Schedule::default();
    let mut continue_ = None;
    loop {
        let page = hub
            .list_works(WorkQuery {
                limit: 1000,
                continue_,
                ..Default::default()
            })
            .await?;
        for w in &page.items {
            let key = (
                w.metadata.namespace.clone().unwrap_or_default(),
                w.metadata.name.clone(),
            );
            schedule.update(key, Some(w));
        }
        continue_ = page.metadata.continue_;
        if continue_.is_none() {
            return Ok(schedule);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::Condition;
    use chrono::TimeDelta;
    use serde_json::json;

    fn t0() -> DateTime<Utc> {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    fn work(name: &str, ttl: Option<i64>, completed: Option<DateTime<Utc>>) -> ManifestWork {
        let mut w: ManifestWork = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "c1", "generation": 1},
            "spec": {"deleteOption": {"propagationPolicy": "Foreground", "ttlSecondsAfterFinished": ttl}}
        }))
        .unwrap();
        if let Some(at) = completed {
            w.status.conditions.push(Condition {
                type_: "Complete".into(),
                status: "True".into(),
                observed_generation: Some(1),
                last_transition_time: Some(at),
                ..Default::default()
            });
        }
        w
    }

    fn key(name: &str) -> Key {
        ("c1".into(), name.into())
    }

    fn change(name: &str, status_only: bool, has_ttl: Option<bool>) -> Change {
        Change {
            index: 1,
            kind: ChangeKind::Work,
            cluster: "c1".into(),
            name: name.into(),
            labels: Default::default(),
            prev_labels: None,
            status_only,
            has_ttl,
        }
    }

    fn keys(names: &[&str]) -> BTreeSet<Key> {
        names.iter().map(|n| key(n)).collect()
    }

    #[test]
    fn the_timer_is_armed_to_the_earliest_expiry() {
        let mut s = Schedule::default();
        let cap = Duration::from_secs(2);
        assert_eq!(s.wait(t0(), cap), cap, "nothing due: only the lock check");
        s.update(key("slow"), Some(&work("slow", Some(60), Some(t0()))));
        s.update(key("fast"), Some(&work("fast", Some(1), Some(t0()))));
        s.update(key("running"), Some(&work("running", Some(1), None)));
        assert_eq!(s.next(), Some(t0() + TimeDelta::seconds(1)));
        assert_eq!(s.wait(t0(), cap), Duration::from_secs(1));
        assert_eq!(
            s.wait(t0() + TimeDelta::seconds(5), cap),
            Duration::ZERO,
            "overdue: at once"
        );
        assert_eq!(s.due_at(t0()), Vec::<Key>::new());
        assert_eq!(s.due_at(t0() + TimeDelta::seconds(1)), [key("fast")]);
        assert_eq!(
            s.due_at(t0() + TimeDelta::seconds(61)),
            [key("fast"), key("slow")]
        );

        // The work was changed back to running, then deleted: no longer due.
        s.update(key("fast"), Some(&work("fast", Some(1), None)));
        assert_eq!(s.next(), Some(t0() + TimeDelta::seconds(60)));
        s.update(key("slow"), None);
        assert_eq!(s.next(), None);
    }

    #[test]
    fn status_writes_are_read_only_for_works_with_a_ttl() {
        let mut s = Schedule::default();
        s.update(key("ttl"), Some(&work("ttl", Some(5), None)));
        s.update(key("plain"), Some(&work("plain", None, None)));
        // Recorded by an older hub (`None`): the schedule alone says which to read.
        let plan = s.plan(&[change("ttl", true, None), change("plain", true, None)]);
        assert_eq!(plan.read, keys(&["ttl"]));
        assert_eq!(plan.no_ttl, keys(&[]), "a status write says nothing new");
        let plan = s.plan(&[
            change("plain", true, Some(false)),
            change("unseen", true, Some(true)),
        ]);
        assert_eq!(plan.read, keys(&["unseen"]), "its change says it has a TTL");
        let mut cluster = change("c1", false, None);
        cluster.kind = ChangeKind::Cluster;
        assert_eq!(s.plan(&[cluster]), Plan::default());
    }

    #[test]
    fn a_users_write_is_read_only_when_its_change_says_ttl_or_does_not_say() {
        let mut s = Schedule::default();
        s.update(key("had"), Some(&work("had", Some(5), None)));
        let plan = s.plan(&[
            change("plain", false, Some(false)),
            change("added", false, Some(true)),
            change("old-hub", false, None),
            change("had", false, Some(false)),
        ]);
        assert_eq!(plan.read, keys(&["added", "old-hub"]));
        assert_eq!(
            plan.no_ttl,
            keys(&["had", "plain"]),
            "a TTL removed (or the work deleted) is known without a read"
        );
        for key in plan.no_ttl {
            s.update(key, None);
        }
        assert!(
            s.plan(&[change("had", true, None)]).read.is_empty(),
            "its status writes are no longer read"
        );
    }

    #[test]
    fn a_read_wins_over_an_earlier_or_later_no_ttl_of_the_same_work() {
        let s = Schedule::default();
        for run in [
            [
                change("w", false, Some(false)),
                change("w", false, Some(true)),
            ],
            [
                change("w", false, Some(true)),
                change("w", false, Some(false)),
            ],
        ] {
            let plan = s.plan(&run);
            assert_eq!(plan.read, keys(&["w"]), "the read shows the latest state");
            assert!(plan.no_ttl.is_empty());
        }
    }
}
