//! The conditions of a manifest (`Applied`, `Available`, `Ready`, `StatusFeedbackSynced`,
//! `statusFeedback`; the reasons OCM writes are in [`super::ocm`]) and
//! of a work (`Applied`, `Available`, `Ready`, `Progressing`, `Degraded`), with messages
//! naming the manifests at fault.

use std::borrow::Cow;

use api::{Condition, ManifestCondition, ManifestResourceMeta, ManifestWork, StatusFeedbackResult};
use chrono::{DateTime, Utc};
use kube::api::{DynamicObject, TypeMeta};
use serde_json::Value;

use super::feedback::feedback;
use super::ocm::{self, STATUS_FEEDBACK_SYNCED};
use super::readiness::readiness;
use super::rules;
use crate::apply::{ManifestConfig, ManifestId, ManifestOutcome};

// The condition names have one home, shared with the hub and the CLI that read them.
pub use api::status::{APPLIED, AVAILABLE, DEGRADED, PROGRESSING, READY};
/// How many failing manifests a work condition's message names.
const MAX_NAMED: usize = 5;

/// The status of one manifest after an apply: its conditions (kept transition times from
/// `previous`), its rule-made conditions and its feedback, by the work's `manifestConfigs`.
pub fn manifest_condition(
    outcome: &ManifestOutcome,
    work: &ManifestWork,
    previous: Option<&ManifestCondition>,
    now: DateTime<Utc>,
) -> ManifestCondition {
    let config = outcome
        .reference
        .as_ref()
        .map(|r| crate::apply::manifest_config(work, r))
        .unwrap_or_default();
    manifest_condition_with(outcome, work, config, previous, now)
}

/// [`manifest_condition`] with the manifest's config already found (a pass over a whole
/// work indexes its configs once: [`crate::apply::ManifestConfigs`]).
pub fn manifest_condition_with(
    outcome: &ManifestOutcome,
    work: &ManifestWork,
    config: ManifestConfig<'_>,
    previous: Option<&ManifestCondition>,
    now: DateTime<Utc>,
) -> ManifestCondition {
    let generation = work.metadata.generation;
    let previous_conditions = previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
    let set = |type_: &str, status: &str, reason: &str, message: String| {
        condition(
            type_,
            status,
            reason,
            message,
            generation,
            previous_conditions,
            now,
        )
    };
    let verdict =
        |type_: &str, (status, reason, message): ocm::Verdict| set(type_, status, reason, message);
    let resource_meta = match &outcome.reference {
        Some(r) => r.meta(outcome.ordinal),
        None => unresolved_meta(outcome.ordinal, work),
    };
    let rules = config.feedback_rules;

    let (conditions, values) = match &outcome.result {
        Ok(obj) => {
            let obj = typed(obj, &resource_meta);
            let (ready, why) = readiness(&obj);
            let mut conditions = vec![
                set(
                    APPLIED,
                    "True",
                    "AppliedManifestComplete",
                    "Apply manifest complete".into(),
                ),
                set(
                    AVAILABLE,
                    "True",
                    "ResourceAvailable",
                    "Resource is available".into(),
                ),
                if ready {
                    set(READY, "True", "ResourceReady", why)
                } else {
                    set(READY, "False", "ResourceNotReady", why)
                },
                verdict(
                    STATUS_FEEDBACK_SYNCED,
                    ocm::feedback_synced(!rules.is_empty(), Ok(())),
                ),
            ];
            if !config.condition_rules.is_empty() {
                let live = serde_json::to_value(&*obj).unwrap_or_default();
                conditions.extend(
                    rules::evaluate(&live, config.condition_rules)
                        .into_iter()
                        .map(|c| set(&c.type_, c.status, c.reason, c.message)),
                );
            }
            (conditions, feedback(&obj, rules))
        }
        Err(e) => {
            let not_found = e.reason == "NotFound";
            let mut conditions = vec![
                verdict(APPLIED, ocm::applied_failed(e)),
                verdict(AVAILABLE, ocm::not_available(e)),
                set(
                    READY,
                    "False",
                    if not_found {
                        "ResourceNotAvailable"
                    } else {
                        "ResourceNotApplied"
                    },
                    format!("{}: {}", e.reason, e.message),
                ),
                verdict(
                    STATUS_FEEDBACK_SYNCED,
                    ocm::feedback_synced(!rules.is_empty(), Err(e)),
                ),
            ];
            conditions.extend(rules::carried_over(previous_conditions, generation));
            // A failed apply says nothing new about the status: keep what was read last
            // (the object is gone when it was not found).
            let values = if not_found {
                Vec::new()
            } else {
                previous
                    .and_then(|p| p.status_feedback.as_ref())
                    .map(|f| f.values.clone())
                    .unwrap_or_default()
            };
            (conditions, values)
        }
    };
    ManifestCondition {
        resource_meta,
        conditions,
        // OCM writes `statusFeedback` on every manifest (`{}` when it has no values).
        status_feedback: Some(StatusFeedbackResult { values }),
    }
}

/// The object with its apiVersion and kind, taken from the resource when missing.
fn typed<'a>(obj: &'a DynamicObject, meta: &ManifestResourceMeta) -> Cow<'a, DynamicObject> {
    if obj.types.is_some() || meta.kind.is_empty() {
        return Cow::Borrowed(obj);
    }
    let mut obj = obj.clone();
    obj.types = Some(TypeMeta {
        api_version: if meta.group.is_empty() {
            meta.version.clone()
        } else {
            format!("{}/{}", meta.group, meta.version)
        },
        kind: meta.kind.clone(),
    });
    Cow::Owned(obj)
}

/// `resourceMeta` of a manifest whose kind did not resolve: what the manifest says.
fn unresolved_meta(ordinal: i32, work: &ManifestWork) -> ManifestResourceMeta {
    let manifest = usize::try_from(ordinal)
        .ok()
        .and_then(|i| work.spec.workload.manifests.get(i));
    let mut meta = ManifestResourceMeta {
        ordinal,
        ..Default::default()
    };
    let Some(manifest) = manifest else {
        return meta;
    };
    if let Ok(id) = ManifestId::parse(ordinal, manifest) {
        meta.group = id.group;
        meta.version = id.version;
        meta.kind = id.kind;
        meta.name = id.name;
        meta.namespace = id.namespace.unwrap_or_default();
    } else {
        // As much as there is.
        let text = |p: &str| {
            manifest
                .pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
        };
        let api_version = text("/apiVersion");
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        meta.group = group.to_string();
        meta.version = version.to_string();
        meta.kind = text("/kind").to_string();
        meta.name = text("/metadata/name").to_string();
        meta.namespace = text("/metadata/namespace").to_string();
    }
    meta
}

/// The work's conditions from its manifests' (always in this order):
/// * `Applied`: every manifest applied;
/// * `Available`: every resource exists (Unknown when some could not be told);
/// * `Ready`: every resource ready;
/// * `Progressing`: True while not all are ready and the agent is still at it (all applied
///   and waiting for readiness, or retrying failures that are not `degraded`);
/// * `Degraded`: True with the caller's message when `degraded` is `Some` (the controller
///   decides: a non-retryable failure, or failing for longer than `--degraded-after`);
/// * then each condition set by `conditionRules`, aggregated ([`rules::aggregate`]).
///
/// False conditions name the manifests at fault (`Kind namespace/name: reason: message`,
/// the first few of them). A condition whose status did not change keeps its
/// `lastTransitionTime` from `previous`.
pub fn work_conditions(
    manifests: &[ManifestCondition],
    generation: i64,
    previous: &[Condition],
    degraded: Option<String>,
    now: DateTime<Utc>,
) -> Vec<Condition> {
    let set = |type_: &str, status: &str, reason: &str, message: String| {
        condition(
            type_,
            status,
            reason,
            message,
            Some(generation),
            previous,
            now,
        )
    };
    let total = manifests.len();
    let status_of = |m: &ManifestCondition, type_: &str| {
        api::find_condition(&m.conditions, type_)
            .map(|c| c.status.as_str())
            .unwrap_or("Unknown")
            .to_string()
    };
    let failing = |type_: &str, status: &str| -> Vec<&ManifestCondition> {
        manifests
            .iter()
            .filter(|m| status_of(m, type_) == status)
            .collect()
    };
    let not_applied: Vec<&ManifestCondition> = manifests
        .iter()
        .filter(|m| status_of(m, APPLIED) != "True")
        .collect();
    let not_ready: Vec<&ManifestCondition> = manifests
        .iter()
        .filter(|m| status_of(m, READY) != "True")
        .collect();

    let applied = if not_applied.is_empty() {
        set(
            APPLIED,
            "True",
            "AppliedManifestWorkComplete",
            "Apply manifest work complete".into(),
        )
    } else {
        set(
            APPLIED,
            "False",
            "AppliedManifestWorkFailed",
            format!(
                "{} of {total} manifests failed to apply: {}",
                not_applied.len(),
                name_all(&not_applied, APPLIED, true)
            ),
        )
    };

    let unavailable = failing(AVAILABLE, "False");
    let unknown: Vec<&ManifestCondition> = manifests
        .iter()
        .filter(|m| !matches!(status_of(m, AVAILABLE).as_str(), "True" | "False"))
        .collect();
    let available = if !unavailable.is_empty() {
        set(
            AVAILABLE,
            "False",
            "ResourcesNotAvailable",
            format!(
                "{} of {total} resources are not available: {}",
                unavailable.len(),
                name_all(&unavailable, AVAILABLE, false)
            ),
        )
    } else if !unknown.is_empty() {
        set(
            AVAILABLE,
            "Unknown",
            "ResourcesStatusUnknown",
            format!(
                "{} of {total} resources have unknown status: {}",
                unknown.len(),
                name_all(&unknown, AVAILABLE, true)
            ),
        )
    } else {
        set(
            AVAILABLE,
            "True",
            "ResourcesAvailable",
            "All resources are available".into(),
        )
    };

    let ready = if not_ready.is_empty() {
        set(
            READY,
            "True",
            "ResourcesReady",
            "All resources are ready".into(),
        )
    } else {
        set(
            READY,
            "False",
            "ResourcesNotReady",
            format!(
                "{} of {total} resources are not ready: {}",
                not_ready.len(),
                name_all(&not_ready, READY, true)
            ),
        )
    };

    let progressing = if not_ready.is_empty() && not_applied.is_empty() {
        set(
            PROGRESSING,
            "False",
            "ResourcesReady",
            "All resources are ready".into(),
        )
    } else if not_applied.is_empty() {
        set(
            PROGRESSING,
            "True",
            "WaitingForReadiness",
            format!(
                "waiting for {} of {total} resources to become ready: {}",
                not_ready.len(),
                name_all(&not_ready, READY, true)
            ),
        )
    } else if degraded.is_none() {
        set(
            PROGRESSING,
            "True",
            "RetryingApply",
            format!(
                "retrying {} of {total} manifests: {}",
                not_applied.len(),
                name_all(&not_applied, APPLIED, true)
            ),
        )
    } else {
        set(
            PROGRESSING,
            "False",
            "ApplyFailed",
            format!(
                "{} of {total} manifests failed to apply: {}",
                not_applied.len(),
                name_all(&not_applied, APPLIED, true)
            ),
        )
    };

    let degraded = match degraded {
        Some(message) => set(DEGRADED, "True", "ManifestsFailing", message),
        None => set(
            DEGRADED,
            "False",
            "AsExpected",
            "No manifest is failing".into(),
        ),
    };
    let mut conditions = vec![applied, available, ready, progressing, degraded];
    conditions.extend(
        rules::aggregate(manifests)
            .into_iter()
            .map(|c| set(&c.type_, c.status, c.reason, c.message)),
    );
    conditions
}

/// `Kind namespace/name`, `Kind name`, or `manifest N` when nothing else is known.
pub fn describe(meta: &ManifestResourceMeta) -> String {
    match (
        meta.kind.is_empty(),
        meta.namespace.is_empty(),
        meta.name.is_empty(),
    ) {
        (true, _, _) | (_, _, true) => format!("manifest {}", meta.ordinal),
        (false, true, false) => format!("{} {}", meta.kind, meta.name),
        (false, false, false) => format!("{} {}/{}", meta.kind, meta.namespace, meta.name),
    }
}

/// The first few manifests with the reason and message of their `type_` condition.
fn name_all(manifests: &[&ManifestCondition], type_: &str, explain: bool) -> String {
    let mut parts: Vec<String> = manifests
        .iter()
        .take(MAX_NAMED)
        .map(|m| {
            let what = describe(&m.resource_meta);
            match api::find_condition(&m.conditions, type_) {
                Some(c) if explain && !c.message.is_empty() => {
                    format!("{what}: {}", ocm::summary(&c.reason, &c.message))
                }
                Some(c) if !c.reason.is_empty() => format!("{what} ({})", c.reason),
                _ => what,
            }
        })
        .collect();
    if manifests.len() > MAX_NAMED {
        parts.push(format!("and {} more", manifests.len() - MAX_NAMED));
    }
    parts.join("; ")
}

/// A condition; its `lastTransitionTime` is the previous one's when the status is the same.
fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    observed_generation: Option<i64>,
    previous: &[Condition],
    now: DateTime<Utc>,
) -> Condition {
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time)
        .unwrap_or(now);
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation,
        last_transition_time: Some(last_transition_time),
    }
}
#[cfg(test)]
mod tests {
    use super::super::testing::{deployment, object, pairs, values};
    use super::*;

    use crate::apply::{ApplyError, ResourceRef};
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        "2025-06-01T12:00:00Z".parse().unwrap()
    }

    fn later() -> DateTime<Utc> {
        "2025-06-01T12:05:00Z".parse().unwrap()
    }

    fn work() -> ManifestWork {
        let mut work = ManifestWork::new(
            "edge-1",
            "web",
            vec![
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"}, "spec": {"replicas": 2}}),
                json!({"apiVersion": "example.com/v1", "kind": "Gizmo", "metadata": {"name": "g"}}),
            ],
        );
        work.metadata.generation = Some(4);
        work.spec.manifest_configs = serde_json::from_value(json!([
            {"resourceIdentifier": {"group": "apps", "resource": "deployments", "name": "web", "namespace": "shop"},
             "feedbackRules": [{"type": "WellKnownStatus"}]}
        ]))
        .unwrap();
        work
    }

    fn web() -> ResourceRef {
        ResourceRef {
            group: "apps".into(),
            version: "v1".into(),
            kind: "Deployment".into(),
            resource: "deployments".into(),
            namespace: "shop".into(),
            name: "web".into(),
        }
    }

    fn live_web(available: i64) -> DynamicObject {
        // As a list or a watch may give it: without apiVersion and kind.
        let mut obj = object(deployment(
            Some(2),
            json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "readyReplicas": available, "availableReplicas": available}),
        ));
        obj.types = None;
        obj
    }

    fn status<'a>(m: &'a ManifestCondition, type_: &str) -> &'a Condition {
        api::find_condition(&m.conditions, type_).unwrap_or_else(|| panic!("no {type_}"))
    }

    #[test]
    fn manifest_conditions_follow_the_outcome() {
        let work = work();
        let applied = ManifestOutcome {
            ordinal: 0,
            reference: Some(web()),
            result: Ok(live_web(1)),
        };
        let first = manifest_condition(&applied, &work, None, now());
        assert_eq!(first.resource_meta, web().meta(0));
        assert_eq!(status(&first, APPLIED).status, "True");
        assert_eq!(status(&first, AVAILABLE).status, "True");
        let ready = status(&first, READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "ResourceNotReady")
        );
        assert_eq!(ready.message, "1 of 2 replicas available");
        assert!(
            first
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(4) && c.last_transition_time == Some(now()))
        );
        assert_eq!(
            values(&first.status_feedback.as_ref().unwrap().values),
            pairs(&[
                ("ReadyReplicas", json!(1)),
                ("Replicas", json!(2)),
                ("AvailableReplicas", json!(1))
            ])
        );

        // Same state later: identical, times kept.
        let again = manifest_condition(&applied, &work, Some(&first), later());
        assert_eq!(again, first);

        // Ready flips: only Ready's time moves.
        let up = ManifestOutcome {
            result: Ok(live_web(2)),
            ..applied.clone()
        };
        let second = manifest_condition(&up, &work, Some(&first), later());
        assert_eq!(status(&second, READY).status, "True");
        assert_eq!(status(&second, READY).last_transition_time, Some(later()));
        assert_eq!(status(&second, APPLIED).last_transition_time, Some(now()));

        // A failure keeps Kubernetes' words and the last feedback.
        let forbidden = ManifestOutcome {
            result: Err(ApplyError::new(
                "Forbidden",
                r#"deployments.apps "web" is forbidden: User "agent" cannot patch resource "deployments" in API group "apps" in the namespace "shop""#,
                false,
            )),
            ..applied.clone()
        };
        let failed = manifest_condition(&forbidden, &work, Some(&second), later());
        let a = status(&failed, APPLIED);
        assert_eq!(
            (a.status.as_str(), a.reason.as_str()),
            ("False", "AppliedManifestFailed")
        );
        assert!(
            a.message
                .starts_with("Failed to apply manifest: Forbidden: ")
                && a.message
                    .contains(r#"cannot patch resource "deployments" in API group "apps""#),
            "{}",
            a.message
        );
        let av = status(&failed, AVAILABLE);
        assert_eq!(
            (av.status.as_str(), av.reason.as_str()),
            ("False", "ResourceNotAvailable")
        );
        assert_eq!(status(&failed, READY).status, "False");
        assert_eq!(failed.status_feedback, second.status_feedback);
        let synced = status(&failed, STATUS_FEEDBACK_SYNCED);
        assert_eq!(
            (synced.status.as_str(), synced.reason.as_str()),
            ("False", "StatusFeedbackSyncFailed")
        );
        let synced = status(&second, STATUS_FEEDBACK_SYNCED);
        assert_eq!(
            (synced.status.as_str(), synced.reason.as_str()),
            ("True", "StatusFeedbackSynced")
        );

        // Not found (ReadOnly): not available, no feedback.
        let gone = ManifestOutcome {
            result: Err(ApplyError::not_found(&web())),
            ..applied
        };
        let missing = manifest_condition(&gone, &work, Some(&second), later());
        assert_eq!(status(&missing, AVAILABLE).status, "False");
        assert_eq!(
            missing.status_feedback,
            Some(StatusFeedbackResult { values: vec![] })
        );
    }

    #[test]
    fn unresolved_manifests_are_described_from_the_manifest() {
        let work = work();
        let unknown = ManifestOutcome {
            ordinal: 1,
            reference: None,
            result: Err(ApplyError::new(
                "UnknownKind",
                "no matches for kind \"Gizmo\" in version \"example.com/v1\"",
                true,
            )),
        };
        let m = manifest_condition(&unknown, &work, None, now());
        assert_eq!(
            m.resource_meta,
            ManifestResourceMeta {
                ordinal: 1,
                group: "example.com".into(),
                version: "v1".into(),
                kind: "Gizmo".into(),
                resource: String::new(),
                name: "g".into(),
                namespace: String::new(),
            }
        );
        assert_eq!(status(&m, APPLIED).reason, "AppliedManifestFailed");
        assert!(status(&m, APPLIED).message.contains("UnknownKind"));
        // No feedback rules: OCM's `NoStatusFeedbackSynced`, and `statusFeedback: {}`.
        assert_eq!(
            status(&m, STATUS_FEEDBACK_SYNCED).reason,
            "NoStatusFeedbackSynced"
        );
        assert_eq!(
            serde_json::to_value(&m).unwrap()["statusFeedback"],
            json!({})
        );
    }

    #[test]
    fn work_conditions_summarize_and_name_the_failures() {
        let work = work();
        let ok = manifest_condition(
            &ManifestOutcome {
                ordinal: 0,
                reference: Some(web()),
                result: Ok(live_web(2)),
            },
            &work,
            None,
            now(),
        );
        let waiting = manifest_condition(
            &ManifestOutcome {
                ordinal: 0,
                reference: Some(web()),
                result: Ok(live_web(1)),
            },
            &work,
            None,
            now(),
        );
        let unknown = manifest_condition(
            &ManifestOutcome {
                ordinal: 1,
                reference: None,
                result: Err(ApplyError::new(
                    "UnknownKind",
                    "no matches for kind \"Gizmo\"",
                    true,
                )),
            },
            &work,
            None,
            now(),
        );
        let get = |conditions: &[Condition], type_: &str| {
            api::find_condition(conditions, type_).unwrap().clone()
        };

        let all_good = work_conditions(std::slice::from_ref(&ok), 4, &[], None, now());
        let types: Vec<&str> = all_good.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, [APPLIED, AVAILABLE, READY, PROGRESSING, DEGRADED]);
        let statuses: Vec<&str> = all_good.iter().map(|c| c.status.as_str()).collect();
        assert_eq!(statuses, ["True", "True", "True", "False", "False"]);
        assert!(all_good.iter().all(|c| c.observed_generation == Some(4)));

        let rolling = work_conditions(std::slice::from_ref(&waiting), 4, &all_good, None, later());
        assert_eq!(get(&rolling, READY).status, "False");
        assert_eq!(
            get(&rolling, READY).message,
            "1 of 1 resources are not ready: Deployment shop/web: ResourceNotReady: 1 of 2 replicas available"
        );
        assert_eq!(get(&rolling, PROGRESSING).status, "True");
        assert_eq!(get(&rolling, PROGRESSING).reason, "WaitingForReadiness");
        // Unchanged conditions keep their time; changed ones take `now`.
        assert_eq!(get(&rolling, APPLIED).last_transition_time, Some(now()));
        assert_eq!(get(&rolling, READY).last_transition_time, Some(later()));

        let failing = [ok.clone(), unknown.clone()];
        let retrying = work_conditions(&failing, 4, &[], None, now());
        let applied = get(&retrying, APPLIED);
        assert_eq!(
            (applied.status.as_str(), applied.reason.as_str()),
            ("False", "AppliedManifestWorkFailed")
        );
        assert_eq!(
            applied.message,
            "1 of 2 manifests failed to apply: Gizmo g: UnknownKind: no matches for kind \"Gizmo\""
        );
        let available = get(&retrying, AVAILABLE);
        assert_eq!(
            (available.status.as_str(), available.reason.as_str()),
            ("False", "ResourcesNotAvailable")
        );
        assert_eq!(get(&retrying, PROGRESSING).reason, "RetryingApply");
        assert_eq!(get(&retrying, DEGRADED).status, "False");

        let degraded = work_conditions(
            &failing,
            4,
            &retrying,
            Some("Gizmo g: UnknownKind: for 2m".into()),
            later(),
        );
        let d = get(&degraded, DEGRADED);
        assert_eq!(
            (d.status.as_str(), d.message.as_str()),
            ("True", "Gizmo g: UnknownKind: for 2m")
        );
        assert_eq!(d.last_transition_time, Some(later()));
        assert_eq!(get(&degraded, PROGRESSING).status, "False");
        assert_eq!(get(&degraded, APPLIED).last_transition_time, Some(now()));

        // Messages name a few manifests, then count the rest.
        let many: Vec<ManifestCondition> = (0..8)
            .map(|i| {
                let mut m = unknown.clone();
                m.resource_meta.ordinal = i;
                m.resource_meta.name = format!("g{i}");
                m
            })
            .collect();
        let crowded = work_conditions(&many, 4, &[], None, now());
        let message = &get(&crowded, APPLIED).message;
        assert!(
            message.starts_with("8 of 8 manifests failed to apply: Gizmo g0: "),
            "{message}"
        );
        assert!(message.ends_with("; and 3 more"), "{message}");

        // An empty work is trivially done.
        let empty = work_conditions(&[], 1, &[], None, now());
        assert!(empty.iter().take(3).all(|c| c.status == "True"));
    }
}
