//! When to try a call to the hub again, and how long to wait: one answer for every
//! client of the hub (the klusterlet's loops; the CLI's waits).
//!
//! * [`is_transient`]: whether an error of [`HubClient`](crate::HubClient) may go away
//!   by retrying.
//! * [`policy`]: the backoff (a `backon` builder): doubling, capped, with equal jitter.
//! * [`Backoff`]: that policy as a delay source that starts over after a success, for
//!   loops that retry forever.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

use crate::ClientError;

/// Whether an error talking to the hub may go away by retrying: the hub was unreachable,
/// timed out, answered 5xx, 429 (too many requests) or 408 (request timeout). A refusal
/// (401, 403, 404, 409, 422...) and an answer that cannot be read do not.
pub fn is_transient(err: &ClientError) -> bool {
    match err {
        ClientError::Transport { .. } => true,
        ClientError::Api { status, .. } => {
            status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408
        }
        ClientError::Config(_) | ClientError::Decode(_) => false,
    }
}

/// The backoff policy: delays double from `initial` up to `max`, each drawn from the upper
/// half of its step (`[step/2, step)`, "equal jitter"), so many agents cut off by one hub
/// outage do not all come back in the same instant; never gives up.
pub fn policy(initial: Duration, max: Duration) -> ExponentialBuilder {
    // backon's jitter adds up to one step to the step: halving both ends gives
    // [step/2, step) for steps from `initial` to `max`.
    ExponentialBuilder::default()
        .with_min_delay(initial / 2)
        .with_max_delay(max / 2)
        .with_jitter()
        .without_max_times()
}

/// [`policy`] as a source of delays for a loop that retries until it succeeds, then
/// starts over from the first step.
#[derive(Debug)]
pub struct Backoff {
    policy: ExponentialBuilder,
    delays: ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    /// A backoff starting at `initial` and never waiting longer than `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let policy = policy(initial, max);
        Backoff {
            policy,
            delays: policy.build(),
            max,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        // The policy never runs out; `max` only guards against that changing.
        self.delays.next().unwrap_or(self.max).min(self.max)
    }

    /// Back to the first step, after a success.
    pub fn reset(&mut self) {
        self.delays = self.policy.build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(status: u16) -> ClientError {
        ClientError::Api {
            status: reqwest::StatusCode::from_u16(status).unwrap(),
            body: crate::ErrorBody {
                code: "x".into(),
                message: "m".into(),
                details: None,
            },
        }
    }

    #[test]
    fn transient_errors() {
        for status in [500, 502, 503, 504, 429, 408] {
            assert!(is_transient(&api_error(status)), "{status}");
        }
        for status in [400, 401, 403, 404, 409, 422] {
            assert!(!is_transient(&api_error(status)), "{status}");
        }
        assert!(!is_transient(&ClientError::Config("bad".into())));
    }

    #[test]
    fn grows_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        let second = b.next_delay();
        assert!(second >= Duration::from_millis(100) && second <= Duration::from_millis(200));
        for _ in 0..10 {
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(1), "{d:?}");
        }
        let capped = b.next_delay();
        assert!(capped >= Duration::from_millis(500));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
