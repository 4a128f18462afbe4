//! What the controllers follow: the change feed, read change by change, and the lock that
//! makes one hub per database run them.

use std::time::Duration;

use super::Hub;
use super::error::Result;
use super::feed::ChangeFilter;
pub use crate::store::{Change, ChangeKind, Leadership, ObjectKind};

impl Hub {
    /// Waits until a change after `after` passes `filter`, or `wait` runs out; the index to
    /// read up to.
    pub async fn wait_for_changes(&self, after: u64, filter: ChangeFilter, wait: Duration) -> u64 {
        self.feed.wait(after, None, filter, wait).await
    }

    /// The changes after `after` up to `upto`, oldest first; `None` when they are no longer
    /// held (the caller re-reads everything).
    pub fn changes_between(&self, after: u64, upto: u64) -> Option<Vec<Change>> {
        self.feed.changes_between(after, upto)
    }

    /// Takes the lock `name` for this hub if no other hub of the database holds it.
    pub async fn lead(&self, name: &str) -> Result<Option<Box<dyn Leadership>>> {
        Ok(self.store.lead(name).await?)
    }
}
