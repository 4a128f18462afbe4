//! A hub whose database was restored from a backup: its index epoch changed, or its index
//! went below the one this agent last saw. Indexes and generations of the two histories
//! are not comparable (a work changed after the restore can carry the generation of a
//! different change this agent applied before it), so the follower compares what it can
//! see instead:
//!
//! * a work whose spec, uid or deletion differs from the view before is applied again
//!   (works deleted after the backup reappear here and are applied again);
//! * a work whose status on the hub is not what this agent last pushed gets it pushed
//!   again at its next reconcile (the restored status is older);
//! * a work the same in both is not touched: nothing is applied twice;
//! * works missing from the restored hub are the follower's usual vanished works: their
//!   objects stay for the eviction grace ([`super::eviction`]), since the restored hub's
//!   audit log does not say it deleted them.

use std::collections::{BTreeMap, HashMap};

use api::ManifestWork;

use super::reconcile::WorkMemory;

/// What a restore changed for this agent.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Requeue {
    /// Works to apply again: new, or changed in a way the generation may not show.
    pub reapply: Vec<String>,
    /// Works whose hub status is older than what this agent pushed.
    pub repush: Vec<String>,
}

/// Compares the works before and after a restore; forgets the pushed status of the works
/// in `repush`, so their next reconcile pushes it again.
pub fn compare(
    before: &BTreeMap<String, ManifestWork>,
    fresh: &BTreeMap<String, ManifestWork>,
    memory: &mut HashMap<String, WorkMemory>,
) -> Requeue {
    let mut out = Requeue::default();
    for (name, w) in fresh {
        let same = before.get(name).is_some_and(|b| {
            b.metadata.uid == w.metadata.uid
                && b.metadata.deletion_timestamp == w.metadata.deletion_timestamp
                && b.spec == w.spec
        });
        if !same {
            out.reapply.push(name.clone());
        } else if memory
            .get_mut(name)
            .is_some_and(|m| m.forget_stale_push(&w.status))
        {
            out.repush.push(name.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use api::{Condition, ManifestWorkStatus};
    use chrono::{DateTime, Utc};
    use serde_json::json;

    use super::*;
    use crate::work::eviction::{self, Decision, HubAnswer};

    /// A work as the hub lists it: `uid`, one ConfigMap holding `data`, applied at
    /// `generation`.
    fn work(name: &str, uid: &str, data: &str, generation: i64) -> ManifestWork {
        let mut w = ManifestWork::new(
            "c1",
            name,
            vec![json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "default"},
                "data": {"k": data}
            })],
        );
        w.metadata.uid = Some(uid.into());
        w.metadata.generation = Some(generation);
        w
    }

    fn views(works: &[ManifestWork]) -> BTreeMap<String, ManifestWork> {
        works
            .iter()
            .map(|w| (w.metadata.name.clone(), w.clone()))
            .collect()
    }

    fn applied(generation: i64) -> ManifestWorkStatus {
        ManifestWorkStatus {
            conditions: vec![Condition {
                type_: "Applied".into(),
                status: "True".into(),
                reason: "AppliedManifestWorkComplete".into(),
                observed_generation: Some(generation),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_work_the_same_in_both_histories_is_not_applied_again() {
        let before = views(&[work("a", "u-a", "1", 3)]);
        // The restored hub's index and generation are another history's: a generation
        // that differs does not make a work differ.
        let mut fresh = views(&[work("a", "u-a", "1", 2)]);
        fresh.get_mut("a").unwrap().metadata.resource_version = Some("17".into());
        let mut memory = HashMap::new();
        assert_eq!(compare(&before, &fresh, &mut memory), Requeue::default());
    }

    #[test]
    fn each_difference_is_applied_again() {
        let before = views(&[
            work("spec", "u-spec", "1", 1),
            work("uid", "u-old", "1", 1),
            work("deleting", "u-del", "1", 1),
            work("kept", "u-kept", "1", 1),
        ]);
        let mut deleting = work("deleting", "u-del", "1", 1);
        deleting.metadata.deletion_timestamp = Some(t("2026-01-01T10:00:00Z"));
        let fresh = views(&[
            // Another spec (the backup holds an older one).
            work("spec", "u-spec", "2", 1),
            // Another work of the same name (deleted and created again since the backup).
            work("uid", "u-new", "1", 1),
            // Being deleted in one history and not in the other.
            deleting,
            work("kept", "u-kept", "1", 1),
            // Deleted after the backup: it reappears, and is applied again.
            work("reappeared", "u-re", "1", 1),
        ]);
        let mut memory = HashMap::new();
        let again = compare(&before, &fresh, &mut memory);
        assert_eq!(
            again.reapply,
            ["deleting", "reappeared", "spec", "uid"].map(String::from)
        );
        assert!(again.repush.is_empty());

        // A deletion the restored hub no longer has is a difference too.
        let fresh = views(&[work("deleting", "u-del", "1", 1)]);
        let mut before = views(&[work("deleting", "u-del", "1", 1)]);
        before
            .get_mut("deleting")
            .unwrap()
            .metadata
            .deletion_timestamp = Some(t("2026-01-01T10:00:00Z"));
        assert_eq!(compare(&before, &fresh, &mut memory).reapply, ["deleting"]);
    }

    #[test]
    fn a_stale_status_is_pushed_again_and_a_current_one_is_not() {
        let before = views(&[work("stale", "u-s", "1", 2), work("current", "u-c", "1", 2)]);
        let mut fresh = before.clone();
        // The backup holds the status of generation 1; the agent last pushed generation 2's.
        fresh.get_mut("stale").unwrap().status = applied(1);
        fresh.get_mut("current").unwrap().status = applied(2);
        let mut memory = HashMap::from([
            ("stale".to_string(), WorkMemory::pushed(applied(2))),
            ("current".to_string(), WorkMemory::pushed(applied(2))),
        ]);
        let again = compare(&before, &fresh, &mut memory);
        assert_eq!(
            again,
            Requeue {
                reapply: vec![],
                repush: vec!["stale".into()],
            }
        );
        // The push was forgotten, so the next comparison with the same hub finds nothing.
        assert_eq!(compare(&before, &fresh, &mut memory), Requeue::default());
    }

    #[test]
    fn a_work_missing_from_the_restored_hub_is_kept_for_the_eviction_grace() {
        let before = views(&[work("gone", "u-g", "1", 1), work("here", "u-h", "1", 1)]);
        let fresh = views(&[work("here", "u-h", "1", 1)]);
        let mut memory = HashMap::from([("gone".to_string(), WorkMemory::pushed(applied(1)))]);
        // Neither applied again nor pushed: the restore itself does nothing to it.
        assert_eq!(compare(&before, &fresh, &mut memory), Requeue::default());
        // The follower then treats it as any vanished work: the restored hub has no record
        // of deleting it, so its objects stay for the grace.
        let vanished = t("2026-01-01T10:00:00Z");
        let decision = eviction::decide(
            HubAnswer::NoSuchWork,
            Some(t("2025-12-01T00:00:00Z")),
            vanished,
            Duration::from_secs(3600),
            t("2026-01-01T10:30:00Z"),
        );
        assert_eq!(
            decision,
            Decision::Keep {
                until: t("2026-01-01T11:00:00Z")
            }
        );
    }
}
