//! The reasons and messages OCM's work agent writes on a manifest, in one place, so a
//! ManifestWork reads the same whichever agent applied it (docs/ocm-compatibility.md):
//!
//! * `Applied=False` is `AppliedManifestFailed`, its message `Failed to apply manifest:
//!   <Kubernetes' reason>: <Kubernetes' message>` (OCM prints only the message; the
//!   reason is kept so `NotFound` and `Forbidden` can still be told apart); a field
//!   conflict of server-side apply stays `Conflict`;
//! * `Available=False` is `ResourceNotAvailable` whenever the apply failed (OCM reads the
//!   object back; an object this agent could not apply is not counted as available), so
//!   the work's `Available` is `False ResourcesNotAvailable`;
//! * `StatusFeedbackSynced` is on every manifest: `True NoStatusFeedbackSynced` without
//!   feedback rules, `True StatusFeedbackSynced` when the rules were read, `False
//!   StatusFeedbackSyncFailed` when there was no object to read them from.

use crate::apply::ApplyError;

/// The manifest condition OCM reports status feedback with.
pub const STATUS_FEEDBACK_SYNCED: &str = "StatusFeedbackSynced";
/// `Applied=False` of a manifest.
pub use api::status::APPLIED_MANIFEST_FAILED;
use api::status::APPLIED_MANIFEST_FAILED_PREFIX;
/// `Available=False` of a manifest.
pub const RESOURCE_NOT_AVAILABLE: &str = "ResourceNotAvailable";

/// `(status, reason, message)` of a condition.
pub type Verdict = (&'static str, &'static str, String);

/// `Applied=False` of a manifest whose apply failed. A field conflict keeps its own
/// reason, `Conflict` (issue 18: reported on the work itself, with its fields and managers).
pub fn applied_failed(error: &ApplyError) -> Verdict {
    if error.reason == "Conflict" {
        return ("False", "Conflict", error.message.clone());
    }
    (
        "False",
        APPLIED_MANIFEST_FAILED,
        format!(
            "{APPLIED_MANIFEST_FAILED_PREFIX}{}: {}",
            error.reason, error.message
        ),
    )
}

/// A failed manifest's condition in Kubernetes' words, for work-level summaries (one home
/// with the CLI's: [`api::status::in_kubernetes_words`]).
pub use api::status::in_kubernetes_words as summary;

/// `Available=False` of a manifest whose apply failed.
pub fn not_available(error: &ApplyError) -> Verdict {
    let message = if error.reason == "NotFound" {
        "Resource is not available".to_string()
    } else {
        format!("Resource is not available: not applied ({})", error.reason)
    };
    ("False", RESOURCE_NOT_AVAILABLE, message)
}

/// `StatusFeedbackSynced` of a manifest: `has_rules` whether it has feedback rules,
/// `read` whether there was an object to read them from.
pub fn feedback_synced(has_rules: bool, read: Result<(), &ApplyError>) -> Verdict {
    match (has_rules, read) {
        (false, _) => ("True", "NoStatusFeedbackSynced", String::new()),
        (true, Ok(())) => ("True", "StatusFeedbackSynced", String::new()),
        (true, Err(e)) => (
            "False",
            "StatusFeedbackSyncFailed",
            format!(
                "Sync status feedback failed with error: the object was not applied: {}: {}",
                e.reason, e.message
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden() -> ApplyError {
        ApplyError::new(
            "Forbidden",
            r#"configmaps "a" is forbidden: User "agent" cannot patch resource "configmaps""#,
            false,
        )
    }

    #[test]
    fn a_failed_apply_reads_as_in_ocm_and_keeps_kubernetes_reason() {
        let (status, reason, message) = applied_failed(&forbidden());
        assert_eq!((status, reason), ("False", "AppliedManifestFailed"));
        assert_eq!(
            message,
            r#"Failed to apply manifest: Forbidden: configmaps "a" is forbidden: User "agent" cannot patch resource "configmaps""#
        );
        let internal = ApplyError::new("InternalError", "webhook failed", true);
        assert_eq!(
            applied_failed(&internal).2,
            "Failed to apply manifest: InternalError: webhook failed"
        );
        let conflict = ApplyError::new("Conflict", "conflict with \"kubectl\": .data.a", false);
        assert_eq!(
            applied_failed(&conflict),
            ("False", "Conflict", conflict.message.clone())
        );
    }

    #[test]
    fn any_failed_apply_is_not_available() {
        let missing = ApplyError::new("NotFound", r#"configmaps "a" not found"#, false);
        assert_eq!(
            not_available(&missing),
            (
                "False",
                "ResourceNotAvailable",
                "Resource is not available".to_string()
            )
        );
        let (status, reason, message) = not_available(&forbidden());
        assert_eq!((status, reason), ("False", "ResourceNotAvailable"));
        assert!(message.contains("(Forbidden)"), "{message}");
    }

    #[test]
    fn feedback_synced_is_said_with_or_without_rules() {
        assert_eq!(
            feedback_synced(false, Ok(())),
            ("True", "NoStatusFeedbackSynced", String::new())
        );
        assert_eq!(
            feedback_synced(false, Err(&forbidden())).1,
            "NoStatusFeedbackSynced"
        );
        assert_eq!(
            feedback_synced(true, Ok(())),
            ("True", "StatusFeedbackSynced", String::new())
        );
        let (status, reason, message) = feedback_synced(true, Err(&forbidden()));
        assert_eq!((status, reason), ("False", "StatusFeedbackSyncFailed"));
        assert!(message.starts_with("Sync status feedback failed with error"));
        assert!(message.contains("Forbidden"), "{message}");
    }

    #[test]
    fn summaries_use_kubernetes_words() {
        let (_, reason, message) =
            applied_failed(&ApplyError::new("Forbidden", "cannot patch", false));
        assert_eq!(summary(reason, &message), "Forbidden: cannot patch");
        assert_eq!(summary("Conflict", ".data.k"), "Conflict: .data.k");
        assert_eq!(
            summary("ResourceNotReady", "0 of 1 ready"),
            "ResourceNotReady: 0 of 1 ready"
        );
    }
}
