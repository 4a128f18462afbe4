//! The eviction grace (`klusterlet run --eviction-grace`, default 60 min, as OCM's
//! `appliedManifestWorkEvictionGracePeriod`): when a work the ledger holds is missing from
//! the hub, are its objects deleted now or later?
//!
//! * The hub says it deleted the work (the 404 of `GET .../manifestworks/{name}` carries
//!   `details.deletedAt`, from its audit log): deleted at once. A deletion older than the
//!   work the agent applied is an earlier work of the same name, and does not count.
//! * The hub says nothing of it (a database restored from an older backup, another
//!   database behind the same address): the objects stay for the grace, counted from when
//!   the agent first found the work missing. That time is in the work's ledger record (a
//!   ConfigMap), so an agent restart neither restarts the grace nor deletes at once.
//!
//! A work that comes back meanwhile is applied again and its record forgets the time.

use std::time::Duration;

use api::ClientError;
use chrono::{DateTime, Utc};

/// The default grace: OCM's default `appliedManifestWorkEvictionGracePeriod`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60 * 60);

/// What the hub said of a work it does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubAnswer {
    /// It deleted the work then.
    Deleted {
        /// When (the audit log's time).
        at: DateTime<Utc>,
    },
    /// It knows of no deletion.
    NoSuchWork,
}

impl HubAnswer {
    /// Reads the hub's 404: `details.deletedAt` when the hub deleted the work.
    pub fn of(error: &ClientError) -> HubAnswer {
        let ClientError::Api { body, .. } = error else {
            return HubAnswer::NoSuchWork;
        };
        body.details
            .as_ref()
            .and_then(|d| d.get("deletedAt"))
            .and_then(|v| v.as_str())
            .and_then(|t| t.parse::<DateTime<Utc>>().ok())
            .map_or(HubAnswer::NoSuchWork, |at| HubAnswer::Deleted { at })
    }
}

/// What to do with the objects of a vanished work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Delete them now; the reason goes to the log.
    Delete(String),
    /// Keep them until then.
    Keep {
        /// When the grace ends.
        until: DateTime<Utc>,
    },
}

/// Decides for a work first found missing at `vanished_at`, created at `created` (when the
/// ledger knows), with `grace`, at `now`.
pub fn decide(
    answer: HubAnswer,
    created: Option<DateTime<Utc>>,
    vanished_at: DateTime<Utc>,
    grace: Duration,
    now: DateTime<Utc>,
) -> Decision {
    if let HubAnswer::Deleted { at } = answer
        && created.is_none_or(|c| at >= c)
    {
        return Decision::Delete(format!("the hub deleted the work at {at}"));
    }
    // A grace too large for the calendar never ends.
    let until = chrono::Duration::from_std(grace)
        .ok()
        .and_then(|g| vanished_at.checked_add_signed(g))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    if now >= until {
        Decision::Delete(format!(
            "the work is gone from the hub, which does not say it deleted it, since {vanished_at}; the eviction grace of {} ended at {until}",
            seconds(grace)
        ))
    } else {
        Decision::Keep { until }
    }
}

/// `90s`, `1h`, `1h30m`: how the flag is written.
fn seconds(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (h, m, 0) if h > 0 && m == 0 => format!("{h}h"),
        (h, m, 0) if h > 0 => format!("{h}h{m}m"),
        (0, m, 0) => format!("{m}m"),
        _ => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::ErrorBody;
    use reqwest::StatusCode;
    use serde_json::json;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    const G: Duration = Duration::from_secs(60 * 60);

    #[test]
    fn without_a_deletion_the_objects_stay_for_the_grace() {
        let vanished = t("2026-01-01T10:00:00Z");
        let keep = decide(
            HubAnswer::NoSuchWork,
            None,
            vanished,
            G,
            t("2026-01-01T10:59:59Z"),
        );
        assert_eq!(
            keep,
            Decision::Keep {
                until: t("2026-01-01T11:00:00Z")
            }
        );
        let Decision::Delete(why) = decide(
            HubAnswer::NoSuchWork,
            None,
            vanished,
            G,
            t("2026-01-01T11:00:00Z"),
        ) else {
            panic!("the grace ended");
        };
        assert!(why.contains("eviction grace of 1h "), "{why}");
        assert_eq!(seconds(Duration::from_secs(3)), "3s");
        assert_eq!(seconds(Duration::from_secs(5400)), "1h30m");
        // A clock behind the vanishing (or a restart right after it) keeps them too.
        assert!(matches!(
            decide(
                HubAnswer::NoSuchWork,
                None,
                vanished,
                G,
                t("2026-01-01T09:00:00Z")
            ),
            Decision::Keep { .. }
        ));
        // A grace of zero is the old behaviour: at once.
        assert!(matches!(
            decide(
                HubAnswer::NoSuchWork,
                None,
                vanished,
                Duration::ZERO,
                vanished
            ),
            Decision::Delete(_)
        ));
        // An absurd grace never ends, and does not overflow.
        assert!(matches!(
            decide(
                HubAnswer::NoSuchWork,
                None,
                vanished,
                Duration::MAX,
                t("2999-01-01T00:00:00Z")
            ),
            Decision::Keep { .. }
        ));
    }

    #[test]
    fn a_deletion_by_the_hub_goes_at_once_unless_it_was_of_an_older_work() {
        let vanished = t("2026-01-01T10:00:00Z");
        let deleted = HubAnswer::Deleted {
            at: t("2026-01-01T09:59:00Z"),
        };
        let Decision::Delete(why) = decide(
            deleted,
            Some(t("2026-01-01T09:00:00Z")),
            vanished,
            G,
            vanished,
        ) else {
            panic!("the hub deleted it");
        };
        assert!(why.contains("the hub deleted the work"), "{why}");
        assert!(matches!(
            decide(deleted, None, vanished, G, vanished),
            Decision::Delete(_)
        ));
        // Deleted before the work this agent applied was created: another work of that
        // name (a backup restored from before it was re-created). The grace applies.
        assert!(matches!(
            decide(
                deleted,
                Some(t("2026-01-01T09:59:30Z")),
                vanished,
                G,
                vanished
            ),
            Decision::Keep { .. }
        ));
    }

    #[test]
    fn the_hub_answer_is_read_from_the_404() {
        let not_found = |details| ClientError::Api {
            status: StatusCode::NOT_FOUND,
            body: ErrorBody {
                code: "not_found".into(),
                message: "manifestwork \"web\" not found".into(),
                details,
            },
        };
        assert_eq!(HubAnswer::of(&not_found(None)), HubAnswer::NoSuchWork);
        assert_eq!(
            HubAnswer::of(&not_found(Some(
                json!({"deleted": true, "deletedAt": "2026-01-01T09:59:00Z"})
            ))),
            HubAnswer::Deleted {
                at: t("2026-01-01T09:59:00Z")
            }
        );
        assert_eq!(
            HubAnswer::of(&not_found(Some(json!({"deletedAt": "yesterday"})))),
            HubAnswer::NoSuchWork
        );
    }
}
