//! Waiting on blocking queries: how long one may block, backoff, which errors pass by
//! themselves, and how a wait's trouble and timeout read.

use std::time::{Duration, Instant};

use api::ClientError;

use super::error::describe_client_error;

/// The longest one blocking query asks the hub to wait; shorter than the hub's maximum so
/// that a connection silently lost (a NAT dropping it) is noticed within a minute.
pub const MAX_BLOCK: Duration = Duration::from_secs(60);

/// The CLI's waits retry as the klusterlet does: one rule for which errors pass by
/// themselves (`api::retry::is_transient`) and one backoff policy.
pub use api::retry::is_transient as transient;

/// The backoff between retries of a wait: 250 ms doubling to 4 s, jittered.
pub fn backoff() -> api::retry::Backoff {
    api::retry::Backoff::new(Duration::from_millis(250), Duration::from_secs(4))
}

/// How long the next blocking query may wait, or `None` when the deadline has passed.
pub fn block_for(deadline: Instant) -> Option<Duration> {
    let left = deadline.checked_duration_since(Instant::now())?;
    (left >= Duration::from_millis(1)).then(|| left.min(MAX_BLOCK))
}

/// The hub's trouble in one line; the same for every request (no path or query), so that
/// it is printed once per change, not once per watcher.
pub fn trouble_text(e: &ClientError) -> String {
    let text = describe_client_error(e, None);
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    match e {
        ClientError::Transport { url, .. } => {
            let base = url.split("/api/").next().unwrap_or(url);
            text.replace(url.as_str(), base)
        }
        _ => text.to_string(),
    }
}

/// `90s` → `1m30s`, the way durations are written on the command line.
pub fn humantime(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_written() {
        assert_eq!(humantime(Duration::from_secs(60)), "1m");
        assert_eq!(humantime(Duration::from_secs(90)), "1m30s");
        assert_eq!(humantime(Duration::from_secs(3605)), "1h5s");
        assert_eq!(humantime(Duration::from_millis(1500)), "1500ms");
        assert_eq!(humantime(Duration::ZERO), "0s");
    }
}
