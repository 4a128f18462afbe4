//! The status of a work as everyone reads it: the condition names the klusterlet writes,
//! and the one rollup of a work's conditions that the hub's summary, `hub wait`, `hub get`
//! and `hub describe` all use.
//!
//! A condition counts for a work only when it was computed for the work's current
//! generation (`observedGeneration == metadata.generation`); one computed for an older
//! generation is shown as `Unknown`, since the agent has not judged the current spec yet.

use crate::{Condition, ManagedCluster, ManifestCondition, ManifestWork};

/// Work and manifest condition: every manifest was applied (the apply call succeeded).
pub const APPLIED: &str = "Applied";
/// Work and manifest condition: every resource exists on the cluster (OCM's meaning).
pub const AVAILABLE: &str = "Available";
/// Work and manifest condition: every workload is up (kstatus-like rules).
pub const READY: &str = "Ready";
/// Work condition: applied, not all ready yet, or still being retried.
pub const PROGRESSING: &str = "Progressing";
/// Work condition: failing without prospect, or for too long.
pub const DEGRADED: &str = "Degraded";
/// Manifest and work condition set by `conditionRules` (OCM's): the resource finished
/// (a Job or Pod with `WellKnownConditions`); a work is Complete when every manifest that
/// reports it is. The hub deletes a Complete work after `ttlSecondsAfterFinished`.
pub const COMPLETE: &str = "Complete";
/// Work condition the hub sets while a deletion waits for the agent.
pub const DELETING: &str = "Deleting";

/// Work condition the hub sets on a work written for a cluster without a joined agent
/// (`False`, reason `NoAgent`); the agent's first status report replaces it.
pub const AGENT_JOINED: &str = "AgentJoined";

/// Cluster condition: the hub accepted the cluster.
pub const CLUSTER_ACCEPTED: &str = "HubAcceptedManagedCluster";
/// Cluster condition: the agent renews its lease.
pub const CLUSTER_AVAILABLE: &str = "ManagedClusterConditionAvailable";
/// OCM's reason of a manifest's `Applied=False` when its apply failed.
pub const APPLIED_MANIFEST_FAILED: &str = "AppliedManifestFailed";
/// How OCM's `AppliedManifestFailed` message begins; Kubernetes' reason and message follow.
pub const APPLIED_MANIFEST_FAILED_PREFIX: &str = "Failed to apply manifest: ";

/// Kubernetes' reason and message of a manifest condition: OCM's `AppliedManifestFailed`
/// carries them in its message (`Failed to apply manifest: <reason>: <message>`); any other
/// condition is its own reason and message.
pub fn kubernetes_reason<'a>(reason: &'a str, message: &'a str) -> (&'a str, &'a str) {
    match message.strip_prefix(APPLIED_MANIFEST_FAILED_PREFIX) {
        Some(words) if reason == APPLIED_MANIFEST_FAILED => {
            words.split_once(": ").unwrap_or((words, ""))
        }
        _ => (reason, message),
    }
}

/// A manifest condition in Kubernetes' words (`Forbidden: deployments.apps "web" is
/// forbidden: ...`), without the `AppliedManifestFailed` wrapper OCM's reason adds, for
/// lines that already say the manifest failed to apply; any other condition as
/// `reason: message`.
pub fn in_kubernetes_words(reason: &str, message: &str) -> String {
    match kubernetes_reason(reason, message) {
        ("", message) => message.to_string(),
        (reason, "") => reason.to_string(),
        (reason, message) => format!("{reason}: {message}"),
    }
}
/// Cluster condition: an agent has joined.
pub const CLUSTER_JOINED: &str = "ManagedClusterJoined";

/// The work's condition of this type, if it was computed for its current generation.
pub fn current<'a>(work: &'a ManifestWork, type_: &str) -> Option<&'a Condition> {
    work.condition(type_)
        .filter(|c| c.observed_generation == work.metadata.generation)
}

/// Whether the work's condition of this type is `True` at its current generation.
pub fn is_true(work: &ManifestWork, type_: &str) -> bool {
    current(work, type_).is_some_and(Condition::is_true)
}

/// A condition's status as a table shows it: `Unknown` when it was computed for an older
/// generation than `generation`, `-` when there is none.
pub fn shown_status(condition: Option<&Condition>, generation: Option<i64>) -> String {
    let Some(c) = condition else {
        return "-".into();
    };
    match (c.observed_generation, generation) {
        (Some(seen), Some(current)) if seen < current => "Unknown".into(),
        _ => c.status.clone(),
    }
}

/// The work's conditions at its current generation, rolled up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rollup {
    /// The agent reported on the current generation (an `Applied` condition for it).
    pub reported: bool,
    /// `Applied=True` at the current generation.
    pub applied: bool,
    /// `Available=True` at the current generation.
    pub available: bool,
    /// `Ready=True` at the current generation.
    pub ready: bool,
    /// `Degraded=True` at the current generation.
    pub degraded: bool,
    /// `Progressing=True` at the current generation.
    pub progressing: bool,
}

/// Rolls up a work's conditions at its current generation.
pub fn rollup(work: &ManifestWork) -> Rollup {
    Rollup {
        reported: current(work, APPLIED).is_some(),
        applied: is_true(work, APPLIED),
        available: is_true(work, AVAILABLE),
        ready: is_true(work, READY),
        degraded: is_true(work, DEGRADED),
        progressing: is_true(work, PROGRESSING),
    }
}

/// Every manifest's status in the work.
pub fn manifests(work: &ManifestWork) -> impl Iterator<Item = &ManifestCondition> {
    work.status
        .resource_status
        .iter()
        .flat_map(|r| &r.manifests)
}

/// A manifest's condition of this type, if computed for `generation`.
pub fn manifest_condition<'a>(
    manifest: &'a ManifestCondition,
    type_: &str,
    generation: Option<i64>,
) -> Option<&'a Condition> {
    manifest
        .conditions
        .iter()
        .find(|c| c.type_ == type_ && c.observed_generation == generation)
}

/// Why a manifest failed, if it did: its `Applied=False`, else its `Ready=False` (the
/// first says Kubernetes refused it, the second that its workload is not coming up).
pub fn manifest_failure(manifest: &ManifestCondition) -> Option<&Condition> {
    [APPLIED, READY].into_iter().find_map(|t| {
        manifest
            .conditions
            .iter()
            .find(|c| c.type_ == t && c.status == "False")
    })
}

/// Whether a cluster's agent renews its lease: `None` when no agent ever joined (no
/// availability condition), else whether it is `True`.
pub fn cluster_available(cluster: &ManagedCluster) -> Option<bool> {
    cluster.condition(CLUSTER_AVAILABLE).map(Condition::is_true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn work(generation: i64, conds: &[(&str, &str, i64)]) -> ManifestWork {
        let conditions: Vec<_> = conds
            .iter()
            .map(|(t, s, g)| json!({"type": t, "status": s, "observedGeneration": g}))
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "c1", "generation": generation},
            "status": {"conditions": conditions}
        }))
        .unwrap()
    }

    #[test]
    fn counts_only_conditions_of_the_current_generation() {
        let w = work(
            2,
            &[
                ("Applied", "True", 2),
                ("Available", "True", 2),
                ("Ready", "True", 1),
                ("Progressing", "True", 2),
            ],
        );
        assert_eq!(
            rollup(&w),
            Rollup {
                reported: true,
                applied: true,
                available: true,
                ready: false,
                degraded: false,
                progressing: true,
            }
        );
        // Applied for an older generation only: the agent has not reported yet.
        let w = work(3, &[("Applied", "True", 2), ("Degraded", "True", 3)]);
        let r = rollup(&w);
        assert!(!r.reported && !r.applied && r.degraded, "{r:?}");
        assert_eq!(rollup(&work(1, &[])), Rollup::default());
    }

    #[test]
    fn a_stale_condition_shows_as_unknown() {
        let w = work(3, &[("Applied", "True", 2), ("Ready", "False", 3)]);
        let g = w.metadata.generation;
        assert_eq!(shown_status(w.condition(APPLIED), g), "Unknown");
        assert_eq!(shown_status(w.condition(READY), g), "False");
        assert_eq!(shown_status(w.condition(AVAILABLE), g), "-");
    }

    #[test]
    fn a_manifest_fails_by_applied_before_ready() {
        let m: ManifestCondition = serde_json::from_value(json!({
            "resourceMeta": {"ordinal": 0, "kind": "Deployment", "name": "api"},
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "NotReady", "observedGeneration": 2},
                {"type": "Applied", "status": "False", "reason": "Forbidden", "observedGeneration": 2},
            ]
        }))
        .unwrap();
        assert_eq!(manifest_failure(&m).unwrap().reason, "Forbidden");
        assert!(manifest_condition(&m, READY, Some(2)).is_some());
        assert!(manifest_condition(&m, READY, Some(3)).is_none());
        let ok: ManifestCondition = serde_json::from_value(json!({
            "resourceMeta": {"ordinal": 0},
            "conditions": [{"type": "Applied", "status": "True"}]
        }))
        .unwrap();
        assert!(manifest_failure(&ok).is_none());
    }

    #[test]
    fn cluster_availability_tells_no_agent_from_a_lost_one() {
        let mut c = ManagedCluster::new("c1", Default::default());
        assert_eq!(cluster_available(&c), None);
        c.status.conditions.push(Condition {
            type_: CLUSTER_AVAILABLE.into(),
            status: "Unknown".into(),
            ..Default::default()
        });
        assert_eq!(cluster_available(&c), Some(false));
        c.status.conditions[0].status = "True".into();
        assert_eq!(cluster_available(&c), Some(true));
    }

    #[test]
    fn failures_read_in_kubernetes_words() {
        let ocm = format!("{APPLIED_MANIFEST_FAILED_PREFIX}Forbidden: cannot patch");
        assert_eq!(
            in_kubernetes_words(APPLIED_MANIFEST_FAILED, &ocm),
            "Forbidden: cannot patch"
        );
        assert_eq!(
            in_kubernetes_words("Conflict", ".data.k"),
            "Conflict: .data.k"
        );
        assert_eq!(in_kubernetes_words("Forbidden", ""), "Forbidden");
        assert_eq!(in_kubernetes_words("", "gone"), "gone");
        assert_eq!(
            kubernetes_reason(APPLIED_MANIFEST_FAILED, &ocm),
            ("Forbidden", "cannot patch")
        );
        assert_eq!(
            kubernetes_reason("Conflict", ".data.k"),
            ("Conflict", ".data.k")
        );
    }
}
