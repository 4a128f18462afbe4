//! The one blocking query (as Consul's `blockingquery.Query`): every read that can block
//! waits on the change feed for a change it cares about past the caller's index, then runs
//! its read and answers it with the index the read is current to.

use std::future::Future;
use std::time::Duration;

use super::error::Result;
use super::feed::{ChangeFeed, ChangeFilter};

/// The longest a blocking query may wait.
pub const MAX_WAIT: Duration = Duration::from_secs(300);
/// The wait of a blocking query that names none.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// A blocking query: return once something changed past `index`, or after `wait`.
#[derive(Debug, Clone, Copy)]
pub struct Block {
    /// The index the caller has seen.
    pub index: u64,
    /// How long to wait at most.
    pub wait: Duration,
}

/// What a blocking read watches: the changes that wake it, and the one cluster whose
/// writes alone can (an agent's watch of its own works), if so.
pub struct Watch {
    /// The changes that wake the read.
    pub filter: ChangeFilter,
    /// Only this cluster's writes wake it.
    pub cluster: Option<String>,
}

impl Watch {
    /// Changes passing `filter`, of any cluster.
    pub fn changes(filter: impl Fn(&crate::store::Change) -> bool + Send + Sync + 'static) -> Self {
        Watch {
            filter: Box::new(filter),
            cluster: None,
        }
    }

    /// Narrows the wake-ups to one cluster's writes.
    pub fn of_cluster(mut self, cluster: Option<&str>) -> Self {
        self.cluster = cluster.map(str::to_string);
        self
    }
}

/// An answer and the index it is current to (`X-Hub-Index`).
#[derive(Debug, Clone)]
pub struct Indexed<T> {
    /// The data read.
    pub data: T,
    /// The feed's index taken before the read: every change at or below it is in `data`.
    pub index: u64,
}

/// Runs a read: with `block`, first waits until a change `watch` cares about comes past
/// the caller's index (or the wait runs out); then reads. `watch` is built only when the
/// query blocks.
pub async fn run<T, F, Fut>(
    feed: &ChangeFeed,
    block: Option<Block>,
    watch: impl FnOnce() -> Watch,
    read: F,
) -> Result<Indexed<T>>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    if let Some(b) = block {
        let Watch { filter, cluster } = watch();
        feed.wait(b.index, cluster.as_deref(), filter, b.wait).await;
    }
    // Taken before the read: a change racing the read is then past the index reported,
    // and the caller's next blocking query sees it.
    let index = feed.latest();
    let data = read().await?;
    Ok(Indexed { data, index })
}
