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
