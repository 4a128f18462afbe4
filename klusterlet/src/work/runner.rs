//! The runner of the work controller, in the shape of kube-runtime's `Controller`: a
//! `reconcile(key) -> Result<Action, E>` and an `error_policy(key, &E) -> Action`, with the
//! queue around them. Works come from the hub, not from a watch of the managed cluster, so
//! this is a small runner of our own rather than `kube::runtime::Controller`.
//!
//! The runner owns everything about *when* a key runs:
//! * dedupe: a key queued twice runs once; a key is never reconciled twice at once, and a
//!   request while it runs re-runs it right after;
//! * per-key backoff: [`Action::retry_within`] doubles the key's delay (with jitter) up to
//!   the cap, and any other answer resets it;
//! * requeue: after the delay the key goes back into the queue;
//! * the gate: nothing is reconciled until `ready` turns true (the controller opens it once
//!   the first complete list of works from the hub arrived).

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use api::retry::Backoff;

/// The first delay of a key's backoff.
const FIRST_RETRY: Duration = Duration::from_millis(500);

/// What to do with a key after a reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action(Next);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    AwaitChange,
    Now,
    Backoff { cap: Duration },
    After(Duration),
}

impl Action {
    /// Nothing pending: run again only when something queues the key.
    pub fn await_change() -> Self {
        Action(Next::AwaitChange)
    }

    /// Run again as soon as this run is done (the reconcile learned something new).
    pub fn requeue_now() -> Self {
        Action(Next::Now)
    }

    /// Run again after `delay` (a deadline the reconcile knows, e.g. an eviction grace
    /// ending); resets the key's backoff.
    pub fn requeue_after(delay: Duration) -> Self {
        Action(Next::After(delay))
    }

    /// Something is still pending (a retryable failure, objects on their way out): run
    /// again after the key's backoff, which doubles from 500 ms up to `cap`.
    pub fn retry_within(cap: Duration) -> Self {
        Action(Next::Backoff { cap })
    }
}

/// The keys waiting to run, each at most once, and those running.
#[derive(Default)]
struct State {
    queued: VecDeque<String>,
    pending: HashSet<String>,
    running: HashSet<String>,
    dirty: HashSet<String>,
    backoff: HashMap<String, Backoff>,
}

/// The queue: anyone may [`enqueue`](Queue::enqueue) a key; [`run`] takes them.
#[derive(Default)]
pub struct Queue {
    state: std::sync::Mutex<State>,
    wake: Notify,
}

impl Queue {
    /// Asks for a reconcile of `key` (once, however often asked before it runs).
    pub fn enqueue(&self, key: &str) {
        let mut s = self.state.lock().expect("queue lock");
        if s.running.contains(key) {
            s.dirty.insert(key.to_string());
        } else if s.pending.insert(key.to_string()) {
            s.queued.push_back(key.to_string());
        }
        crate::telemetry::queue_depth(s.queued.len());
        drop(s);
        self.wake.notify_one();
    }

    /// Whether nothing is queued or running (a retry waiting for its delay is neither).
    pub fn idle(&self) -> bool {
        let s = self.state.lock().expect("queue lock");
        s.queued.is_empty() && s.running.is_empty()
    }

    fn take(&self) -> Option<String> {
        let mut s = self.state.lock().expect("queue lock");
        let key = s.queued.pop_front()?;
        s.pending.remove(&key);
        s.running.insert(key.clone());
        crate::telemetry::queue_depth(s.queued.len());
        let more = !s.queued.is_empty();
        drop(s);
        if more {
            // A burst of enqueues leaves at most one stored wake-up: pass it on.
            self.wake.notify_one();
        }
        Some(key)
    }

    /// Marks `key` done and says when to run it again, from `action` and its backoff.
    fn done(&self, key: &str, action: Action) -> Option<Duration> {
        let mut s = self.state.lock().expect("queue lock");
        s.running.remove(key);
        let again = s.dirty.remove(key);
        let delay = match action.0 {
            Next::AwaitChange => {
                s.backoff.remove(key);
                None
            }
            Next::Now => {
                s.backoff.remove(key);
                Some(Duration::ZERO)
            }
            Next::After(delay) => {
                s.backoff.remove(key);
                // Zero would mean "now": a deadline already passed runs once more soon.
                Some(delay.max(Duration::from_millis(1)))
            }
            Next::Backoff { cap } => Some(
                s.backoff
                    .entry(key.to_string())
                    .or_insert_with(|| Backoff::new(FIRST_RETRY, cap))
                    .next_delay(),
            ),
        };
        drop(s);
        if again || delay == Some(Duration::ZERO) {
            self.enqueue(key);
        }
        delay.filter(|d| !d.is_zero())
    }
}

/// Runs `concurrency` workers over the queue until `stop` turns true, once `ready` has
/// turned true. Each key is reconciled with `reconcile`; an error goes through
/// `error_policy`. `observe` sees every run (key, how long, the error if any), for metrics.
pub async fn run<R, Fut, E, P, O>(
    queue: Arc<Queue>,
    concurrency: usize,
    ready: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
    reconcile: R,
    error_policy: P,
    observe: O,
) where
    R: Fn(String) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, E>> + Send + 'static,
    E: Send + 'static,
    P: Fn(&str, &E) -> Action + Clone + Send + Sync + 'static,
    O: Fn(&str, Duration, Option<&E>) + Clone + Send + Sync + 'static,
{
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        workers.spawn(worker(
            queue.clone(),
            ready.clone(),
            stop.clone(),
            reconcile.clone(),
            error_policy.clone(),
            observe.clone(),
        ));
    }
    while workers.join_next().await.is_some() {}
}

async fn worker<R, Fut, E, P, O>(
    queue: Arc<Queue>,
    mut ready: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
    reconcile: R,
    error_policy: P,
    observe: O,
) where
    R: Fn(String) -> Fut,
    Fut: Future<Output = Result<Action, E>>,
    P: Fn(&str, &E) -> Action,
    O: Fn(&str, Duration, Option<&E>),
{
    // Nothing is reconciled before the gate opens: keys queued meanwhile wait.
    tokio::select! {
        r = ready.wait_for(|r| *r) => if r.is_err() { return },
        _ = stop.wait_for(|s| *s) => return,
    }
    loop {
        if *stop.borrow() {
            return;
        }
        let Some(key) = queue.take() else {
            // No timer here: an idle agent's workers must not wake up for nothing. A
            // notification sent before this wait stays stored in the `Notify`, and stopping
            // wakes every waiter.
            let notified = queue.wake.notified();
            tokio::select! {
                _ = notified => {},
                changed = stop.changed() => if changed.is_err() { return },
            }
            continue;
        };
        let started = Instant::now();
        let result = reconcile(key.clone()).await;
        observe(&key, started.elapsed(), result.as_ref().err());
        let action = match &result {
            Ok(action) => *action,
            Err(e) => error_policy(&key, e),
        };
        let retry = queue.done(&key, action);
        tracing::debug!(work = %key, ?retry, "reconciled");
        if let Some(delay) = retry {
            let queue = queue.clone();
            let mut stop = stop.clone();
            tokio::spawn(async move {
                if !crate::sleep_or_stop(delay, &mut stop).await {
                    queue.enqueue(&key);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_queued_twice_runs_once_and_a_request_while_running_runs_it_again() {
        let q = Queue::default();
        q.enqueue("a");
        q.enqueue("a");
        assert_eq!(q.take().as_deref(), Some("a"));
        assert_eq!(q.take(), None);
        q.enqueue("a");
        assert_eq!(q.take(), None, "not twice at once");
        assert_eq!(q.done("a", Action::await_change()), None);
        assert_eq!(q.take().as_deref(), Some("a"), "dirty: runs again after");
    }

    #[test]
    fn retries_back_off_per_key_and_reset_on_success() {
        let q = Queue::default();
        let cap = Duration::from_secs(5);
        let mut last = Duration::ZERO;
        for _ in 0..6 {
            q.enqueue("a");
            q.take();
            last = q.done("a", Action::retry_within(cap)).unwrap();
            assert!(last <= cap);
        }
        assert!(last >= cap / 2, "{last:?}");
        q.enqueue("b");
        q.take();
        let b = q.done("b", Action::retry_within(cap)).unwrap();
        assert!(b <= FIRST_RETRY, "another key's backoff is its own: {b:?}");
        q.enqueue("a");
        q.take();
        assert_eq!(q.done("a", Action::await_change()), None);
        q.enqueue("a");
        q.take();
        let after_reset = q.done("a", Action::retry_within(cap)).unwrap();
        assert!(after_reset <= FIRST_RETRY, "{after_reset:?}");
    }

    #[test]
    fn requeue_after_waits_that_long_and_resets_the_backoff() {
        let q = Queue::default();
        let cap = Duration::from_secs(5);
        for _ in 0..4 {
            q.enqueue("a");
            q.take();
            q.done("a", Action::retry_within(cap));
        }
        q.enqueue("a");
        q.take();
        let later = Duration::from_secs(42);
        assert_eq!(q.done("a", Action::requeue_after(later)), Some(later));
        q.enqueue("a");
        q.take();
        let next = q.done("a", Action::retry_within(cap)).unwrap();
        assert!(next <= FIRST_RETRY, "{next:?}");
    }

    #[test]
    fn requeue_now_queues_the_key_again() {
        let q = Queue::default();
        q.enqueue("a");
        q.take();
        assert_eq!(q.done("a", Action::requeue_now()), None);
        assert_eq!(q.take().as_deref(), Some("a"));
    }
}
