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

/// How long a blocking query waits for `wait`: a random part of its last sixteenth less
/// (as Consul spreads its own, though Consul adds the part). Agents that began their
/// queries together, as a fleet does after the hub restarts, would otherwise all be answered
/// at the same instant every `wait` for as long as nothing changes for them, and all list
/// again at once: with 10,000 agents, a status write then waited up to 1.2 s
/// (docs/benchmarks.md). Never longer than asked, so a client's timeout for `wait` holds.
fn spread(wait: Duration) -> Duration {
    let part = wait / 16;
    wait - part.mul_f64(rand::random::<f64>())
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
        feed.wait(b.index, cluster.as_deref(), filter, spread(b.wait))
            .await;
    }
    // Taken before the read: a change racing the read is then past the index reported,
    // and the caller's next blocking query sees it.
    let index = feed.latest();
    let data = read().await?;
    Ok(Indexed { data, index })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_is_spread_over_its_last_sixteenth_and_never_longer() {
        let wait = Duration::from_secs(32);
        let waits: Vec<Duration> = (0..200).map(|_| spread(wait)).collect();
        assert!(
            waits
                .iter()
                .all(|w| *w <= wait && *w >= Duration::from_secs(30))
        );
        let (min, max) = (waits.iter().min().unwrap(), waits.iter().max().unwrap());
        assert!(
            *max - *min > Duration::from_secs(1),
            "200 waits spread over 2 s, not {min:?}..{max:?}"
        );
        assert_eq!(spread(Duration::ZERO), Duration::ZERO);
    }
}
