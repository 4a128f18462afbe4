//! The index epoch as a client sees it (`X-Hub-Epoch`): change indexes of two epochs are
//! not comparable (the hub's database was restored from a backup in between, and its
//! index went back), so after seeing the epoch change a client must not wait for changes
//! past an index of the old epoch.
//!
//! Every clone of a [`super::HubClient`] shares one [`EpochTracker`]. It sends the epoch
//! it last saw with each blocking read, so the hub answers at once, from scratch, when
//! its epoch differs; and once it has seen the epoch change, it lowers an `index` above
//! the highest it saw in the new epoch to that one: such an index can only come from the
//! old epoch, and callers that "never go back" (`max` of the indexes they saw) would
//! otherwise wait for a change past an index the restored hub reaches much later, or ask
//! again at once for ever.

use std::sync::{Arc, Mutex};

/// What one client has seen of the hub's epochs.
#[derive(Debug, Default)]
struct Seen {
    /// The epoch of the last answer.
    epoch: Option<String>,
    /// Whether the epoch ever changed under this client.
    changed: bool,
    /// The highest index answered in the current epoch.
    highest: u64,
}

/// The epoch state shared by a client's clones.
#[derive(Debug, Clone, Default)]
pub struct EpochTracker(Arc<Mutex<Seen>>);

impl EpochTracker {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes an answer's epoch and index; whether the epoch changed with it.
    pub fn observe(&self, epoch: Option<&str>, index: u64) -> bool {
        let mut seen = self.seen();
        let Some(epoch) = epoch else {
            // A hub without epochs (older release): nothing to compare.
            return false;
        };
        let switched = seen.epoch.as_deref().is_some_and(|e| e != epoch);
        if switched || seen.epoch.is_none() {
            seen.epoch = Some(epoch.to_string());
            seen.highest = index;
        } else {
            seen.highest = seen.highest.max(index);
        }
        seen.changed |= switched;
        switched
    }

    /// The `index` and `epoch` query parameters of a blocking read from `index`.
    pub fn blocking_params(&self, index: u64) -> (u64, Option<String>) {
        let seen = self.seen();
        let index = if seen.changed && index > seen.highest {
            seen.highest
        } else {
            index
        };
        (index, seen.epoch.clone())
    }

    /// The epoch of the last answer.
    pub fn current(&self) -> Option<String> {
        self.seen().epoch.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_epochs_index_is_lowered_once_the_epoch_changed() {
        let t = EpochTracker::default();
        assert!(!t.observe(Some("aa"), 100));
        // Before any change, an index is sent as given, with the epoch.
        assert_eq!(t.blocking_params(120), (120, Some("aa".into())));
        assert!(t.observe(Some("bb"), 40));
        assert_eq!(t.blocking_params(100), (40, Some("bb".into())));
        assert!(!t.observe(Some("bb"), 45));
        assert_eq!(t.blocking_params(100), (45, Some("bb".into())));
        assert_eq!(t.blocking_params(42), (42, Some("bb".into())));
        // Without the header nothing changes.
        assert!(!t.observe(None, 3));
        assert_eq!(t.current().as_deref(), Some("bb"));
    }
}
