//! What the klusterlet reports about a work: readiness of the applied objects, status
//! feedback, and the manifest and work conditions. Pure functions of their inputs (the
//! clock comes in as `now`), so the same state always gives the same status and the
//! controller pushes only what changed.
//!
//! * [`readiness`]: kstatus-like rules: Deployment, StatefulSet, DaemonSet (replicas
//!   updated and available), Job (succeeded), Pod (Ready), PersistentVolumeClaim (Bound),
//!   CustomResourceDefinition (Established); anything else is ready once it exists.
//! * [`feedback`]: `WellKnownStatus` (OCM's names) and `JSONPaths` rules, with OCM's value
//!   types `Integer`, `String`, `Boolean` and `JsonRaw`.
//! * [`manifest_condition`]: `resourceMeta`, `Applied`, `Available`, `Ready`,
//!   `statusFeedback` of one manifest.
//! * [`work_conditions`]: `Applied`, `Available`, `Ready`, `Progressing`, `Degraded` of the
//!   work, with messages naming the manifests at fault.

use std::borrow::Cow;

use api::{
    Condition, FeedbackRule, FeedbackType, FeedbackValue, FieldValue, ManifestCondition,
    ManifestResourceMeta, ManifestWork, StatusFeedbackResult,
};
use chrono::{DateTime, Utc};
use kube::api::{DynamicObject, TypeMeta};
use serde_json::Value;

use crate::apply::{ManifestId, ManifestOutcome, manifest_config};

/// Condition type: the apply call succeeded.
pub const APPLIED: &str = "Applied";
/// Condition type: the resource exists on the cluster (OCM's meaning).
pub const AVAILABLE: &str = "Available";
/// Condition type: the workload is up (kstatus-like rules).
pub const READY: &str = "Ready";
/// Condition type (work): applied, not all ready yet, or still being retried.
pub const PROGRESSING: &str = "Progressing";
/// Condition type (work): failing without prospect, or for too long.
pub const DEGRADED: &str = "Degraded";

/// OCM drops a `JsonRaw` feedback value longer than this.
pub const MAX_JSON_RAW_LENGTH: usize = 1024;
/// How many failing manifests a work condition's message names.
const MAX_NAMED: usize = 5;

/// Whether the object is up, and why (or why not), by kstatus-like rules:
/// * Deployment: the controller observed its generation, `updatedReplicas`,
///   `availableReplicas` and `replicas` all equal `spec.replicas` (default 1), none
///   unavailable, no progress deadline exceeded;
/// * StatefulSet: `readyReplicas` and `updatedReplicas` equal `spec.replicas` (less a
///   rolling-update partition), `currentRevision == updateRevision` when both are given;
/// * DaemonSet: `numberAvailable` and `updatedNumberScheduled` equal
///   `desiredNumberScheduled`;
/// * Job: `Complete=True` or `succeeded >= completions` (default 1); `Failed=True` is not
///   ready;
/// * Pod: `Ready=True`, or phase `Succeeded`;
/// * PersistentVolumeClaim: phase `Bound`;
/// * CustomResourceDefinition: `Established=True`;
/// * anything else: ready once it exists. An object being deleted is not ready.
pub fn readiness(obj: &DynamicObject) -> (bool, String) {
    let (group, kind) = group_kind(obj);
    if obj.metadata.deletion_timestamp.is_some() {
        return (false, format!("{kind} is being deleted"));
    }
    let data = &obj.data;
    match (group, kind) {
        ("apps", "Deployment") => deployment(obj),
        ("apps", "StatefulSet") => stateful_set(obj),
        ("apps", "DaemonSet") => daemon_set(obj),
        ("batch", "Job") => job(data),
        ("", "Pod") => pod(data),
        ("", "PersistentVolumeClaim") => match text(data, "/status/phase") {
            Some("Bound") => (true, "PersistentVolumeClaim is Bound".into()),
            phase => (
                false,
                format!("PersistentVolumeClaim is {}", phase.unwrap_or("Pending")),
            ),
        },
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            match find_condition(data, "Established") {
                Some(c) if c.status == "True" => {
                    (true, "CustomResourceDefinition is Established".into())
                }
                c => (
                    false,
                    format!(
                        "CustomResourceDefinition is not Established{}",
                        c.map(|c| c.explain()).unwrap_or_default()
                    ),
                ),
            }
        }
        (_, "") => (true, "Resource exists".into()),
        (_, kind) => (true, format!("{kind} exists")),
    }
}

/// `(group, kind)` of the object, from its `apiVersion` and `kind`.
fn group_kind(obj: &DynamicObject) -> (&str, &str) {
    match &obj.types {
        Some(t) => (
            t.api_version
                .split_once('/')
                .map(|(g, _)| g)
                .unwrap_or_default(),
            t.kind.as_str(),
        ),
        None => ("", ""),
    }
}

/// `Some(reason)` when the controller has not seen the object's latest spec yet.
fn not_observed(obj: &DynamicObject) -> Option<String> {
    let generation = obj.metadata.generation?;
    let observed = int(&obj.data, "/status/observedGeneration").unwrap_or(0);
    (observed < generation).then(|| {
        format!("the controller has not observed generation {generation} yet (observed {observed})")
    })
}

fn deployment(obj: &DynamicObject) -> (bool, String) {
    if let Some(why) = not_observed(obj) {
        return (false, why);
    }
    let data = &obj.data;
    if let Some(c) = find_condition(data, "Progressing")
        && c.reason == "ProgressDeadlineExceeded"
    {
        return (false, format!("progress deadline exceeded: {}", c.message));
    }
    let replicas = int(data, "/spec/replicas").unwrap_or(1);
    let total = int(data, "/status/replicas").unwrap_or(0);
    let updated = int(data, "/status/updatedReplicas").unwrap_or(0);
    let available = int(data, "/status/availableReplicas").unwrap_or(0);
    let unavailable = int(data, "/status/unavailableReplicas").unwrap_or(0);
    if updated < replicas {
        return (false, format!("{updated} of {replicas} replicas updated"));
    }
    if total > updated {
        return (
            false,
            format!("{} old replicas pending termination", total - updated),
        );
    }
    if available < replicas || unavailable > 0 {
        return (
            false,
            format!("{available} of {replicas} replicas available"),
        );
    }
    (
        true,
        format!("{available} of {replicas} replicas available"),
    )
}

fn stateful_set(obj: &DynamicObject) -> (bool, String) {
    if let Some(why) = not_observed(obj) {
        return (false, why);
    }
    let data = &obj.data;
    let replicas = int(data, "/spec/replicas").unwrap_or(1);
    let total = int(data, "/status/replicas").unwrap_or(0);
    let ready = int(data, "/status/readyReplicas").unwrap_or(0);
    let updated = int(data, "/status/updatedReplicas").unwrap_or(0);
    if ready < replicas {
        return (false, format!("{ready} of {replicas} replicas ready"));
    }
    if total > replicas {
        return (
            false,
            format!("{} extra replicas pending termination", total - replicas),
        );
    }
    if text(data, "/spec/updateStrategy/type").unwrap_or("RollingUpdate") == "RollingUpdate" {
        let partition = int(data, "/spec/updateStrategy/rollingUpdate/partition").unwrap_or(0);
        let expected = (replicas - partition).max(0);
        if updated < expected {
            return (false, format!("{updated} of {expected} replicas updated"));
        }
        if partition == 0
            && let (Some(current), Some(update)) = (
                text(data, "/status/currentRevision"),
                text(data, "/status/updateRevision"),
            )
            && current != update
        {
            return (
                false,
                format!("rolling out revision {update} (current {current})"),
            );
        }
    }
    (true, format!("{ready} of {replicas} replicas ready"))
}

fn daemon_set(obj: &DynamicObject) -> (bool, String) {
    if let Some(why) = not_observed(obj) {
        return (false, why);
    }
    let data = &obj.data;
    let Some(desired) = int(data, "/status/desiredNumberScheduled") else {
        return (false, "the controller has not scheduled it yet".into());
    };
    let updated = int(data, "/status/updatedNumberScheduled").unwrap_or(0);
    let available = int(data, "/status/numberAvailable").unwrap_or(0);
    let on_delete = text(data, "/spec/updateStrategy/type") == Some("OnDelete");
    if !on_delete && updated < desired {
        return (false, format!("{updated} of {desired} pods updated"));
    }
    if available < desired {
        return (false, format!("{available} of {desired} pods available"));
    }
    (true, format!("{available} of {desired} pods available"))
}

fn job(data: &Value) -> (bool, String) {
    if let Some(c) = find_condition(data, "Failed")
        && c.status == "True"
    {
        return (false, format!("Job failed{}", c.explain()));
    }
    let succeeded = int(data, "/status/succeeded").unwrap_or(0);
    let completions = int(data, "/spec/completions").unwrap_or(1);
    if find_condition(data, "Complete").is_some_and(|c| c.status == "True") {
        return (true, format!("Job complete: {succeeded} succeeded"));
    }
    if succeeded >= completions {
        return (
            true,
            format!("Job complete: {succeeded} of {completions} succeeded"),
        );
    }
    let active = int(data, "/status/active").unwrap_or(0);
    (
        false,
        format!("Job running: {active} active, {succeeded} of {completions} succeeded"),
    )
}

fn pod(data: &Value) -> (bool, String) {
    let phase = text(data, "/status/phase").unwrap_or("Pending");
    match phase {
        "Succeeded" => return (true, "Pod succeeded".into()),
        "Failed" => {
            let reason = text(data, "/status/reason").unwrap_or_default();
            let message = text(data, "/status/message").unwrap_or_default();
            return (
                false,
                format!("Pod failed: {reason} {message}").trim().to_string(),
            );
        }
        _ => {}
    }
    match find_condition(data, "Ready") {
        Some(c) if c.status == "True" => (true, "Pod is Ready".into()),
        c => (
            false,
            format!(
                "Pod is {phase}, not Ready{}",
                c.map(|c| c.explain()).unwrap_or_default()
            ),
        ),
    }
}

/// A condition of an object's `status.conditions`.
struct ObjectCondition<'a> {
    status: &'a str,
    reason: &'a str,
    message: &'a str,
}

impl ObjectCondition<'_> {
    /// `: reason: message`, or nothing when both are empty.
    fn explain(&self) -> String {
        match (self.reason.is_empty(), self.message.is_empty()) {
            (true, true) => String::new(),
            (false, true) => format!(": {}", self.reason),
            (true, false) => format!(": {}", self.message),
            (false, false) => format!(": {}: {}", self.reason, self.message),
        }
    }
}

fn find_condition<'a>(data: &'a Value, type_: &str) -> Option<ObjectCondition<'a>> {
    let c = data
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))?;
    let field = |key: &str| c.get(key).and_then(Value::as_str).unwrap_or_default();
    Some(ObjectCondition {
        status: field("status"),
        reason: field("reason"),
        message: field("message"),
    })
}

fn int(data: &Value, pointer: &str) -> Option<i64> {
    data.pointer(pointer).and_then(Value::as_i64)
}

fn text<'a>(data: &'a Value, pointer: &str) -> Option<&'a str> {
    data.pointer(pointer).and_then(Value::as_str)
}

/// A named JSON path of a well-known status.
type WellKnown = &'static [(&'static str, &'static str)];

const DEPLOYMENT_STATUS: WellKnown = &[
    ("ReadyReplicas", ".status.readyReplicas"),
    ("Replicas", ".status.replicas"),
    ("AvailableReplicas", ".status.availableReplicas"),
];
const DAEMON_SET_STATUS: WellKnown = &[
    ("NumberReady", ".status.numberReady"),
    ("DesiredNumberScheduled", ".status.desiredNumberScheduled"),
    ("NumberAvailable", ".status.numberAvailable"),
];
const JOB_STATUS: WellKnown = &[
    (
        "JobComplete",
        r#".status.conditions[?(@.type=="Complete")].status"#,
    ),
    ("JobSucceeded", ".status.succeeded"),
    ("JobFailed", ".status.failed"),
    ("JobActive", ".status.active"),
];
const POD_STATUS: WellKnown = &[
    (
        "PodReady",
        r#".status.conditions[?(@.type=="Ready")].status"#,
    ),
    ("PodPhase", ".status.phase"),
];

/// The well-known status paths of a kind: OCM's for Deployment, DaemonSet, Job (plus
/// `JobFailed` and `JobActive`) and Pod; a StatefulSet reports what a Deployment does.
pub fn well_known_paths(api_version: &str, kind: &str) -> &'static [(&'static str, &'static str)] {
    match (api_version, kind) {
        ("apps/v1", "Deployment" | "StatefulSet") => DEPLOYMENT_STATUS,
        ("apps/v1", "DaemonSet") => DAEMON_SET_STATUS,
        ("batch/v1", "Job") => JOB_STATUS,
        ("v1", "Pod") => POD_STATUS,
        _ => &[],
    }
}

/// The values the feedback rules read from the object, in rule order. A value that is
/// missing (or null, or a `JsonRaw` longer than [`MAX_JSON_RAW_LENGTH`], or a path that
/// does not parse) is left out, as OCM does; a `JSONPaths` entry whose `version` is not
/// the object's is skipped.
pub fn feedback(obj: &DynamicObject, rules: &[FeedbackRule]) -> Vec<FeedbackValue> {
    let (api_version, kind) = obj
        .types
        .as_ref()
        .map(|t| (t.api_version.as_str(), t.kind.as_str()))
        .unwrap_or_default();
    let version = api_version.rsplit('/').next().unwrap_or_default();
    // The paths run against the whole object, as in OCM (`.metadata.name` works too).
    let whole = whole_object(obj);
    let mut values = Vec::new();
    for rule in rules {
        match rule.type_ {
            FeedbackType::WellKnownStatus => {
                for (name, path) in well_known_paths(api_version, kind) {
                    values.extend(read_value(name, path, &whole));
                }
            }
            FeedbackType::JsonPaths => {
                for path in &rule.json_paths {
                    let wanted = path.extra.get("version").and_then(Value::as_str);
                    if wanted.is_some_and(|v| !v.is_empty() && v != version) {
                        continue;
                    }
                    values.extend(read_value(&path.name, &path.path, &whole));
                }
            }
        }
    }
    values
}

fn whole_object(obj: &DynamicObject) -> Value {
    let mut whole = match &obj.data {
        Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    if let Some(t) = &obj.types {
        whole.insert("apiVersion".into(), Value::String(t.api_version.clone()));
        whole.insert("kind".into(), Value::String(t.kind.clone()));
    }
    if let Ok(metadata) = serde_json::to_value(&obj.metadata) {
        whole.insert("metadata".into(), metadata);
    }
    Value::Object(whole)
}

/// One typed value, OCM's way: one result is Integer, String or Boolean (anything else,
/// floats included, is JsonRaw), several results are a JsonRaw array.
fn read_value(name: &str, path: &str, object: &Value) -> Option<FeedbackValue> {
    let results = match jsonpath::evaluate(path, object) {
        Ok(results) => results,
        Err(e) => {
            tracing::debug!(name, path, error = %e, "a feedback JSON path does not parse");
            return None;
        }
    };
    let field_value = match results.as_slice() {
        [] | [Value::Null] => return None,
        [Value::Bool(b)] => FieldValue {
            boolean: Some(*b),
            ..field("Boolean")
        },
        [Value::String(s)] => FieldValue {
            string: Some(s.clone()),
            ..field("String")
        },
        [Value::Number(n)] if n.as_i64().is_some() => FieldValue {
            integer: n.as_i64(),
            ..field("Integer")
        },
        [one] => json_raw(one)?,
        many => json_raw(&Value::Array(many.iter().map(|v| (*v).clone()).collect()))?,
    };
    Some(FeedbackValue {
        name: name.to_string(),
        field_value,
    })
}

fn field(type_: &str) -> FieldValue {
    FieldValue {
        type_: type_.to_string(),
        integer: None,
        string: None,
        boolean: None,
        json_raw: None,
    }
}

fn json_raw(value: &Value) -> Option<FieldValue> {
    let text = serde_json::to_string(value).ok()?;
    (text.len() <= MAX_JSON_RAW_LENGTH).then(|| FieldValue {
        json_raw: Some(text),
        ..field("JsonRaw")
    })
}

/// The status of one manifest: `resourceMeta` (from the resolved resource, else from the
/// manifest itself), `Applied` (False with Kubernetes' reason and message), `Available`
/// (the object exists: True after an apply or read; False when it was not found; Unknown
/// when the apply failed otherwise), `Ready` ([`readiness`]), and the values of its
/// feedback rules. Every condition carries the work's generation; a condition whose status
/// did not change keeps its `lastTransitionTime` from `previous`.
pub fn manifest_condition(
    outcome: &ManifestOutcome,
    work: &ManifestWork,
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
    let resource_meta = match &outcome.reference {
        Some(r) => r.meta(outcome.ordinal),
        None => unresolved_meta(outcome.ordinal, work),
    };
    let rules = outcome
        .reference
        .as_ref()
        .map(|r| manifest_config(work, r).feedback_rules)
        .unwrap_or_default();

    let (conditions, values) = match &outcome.result {
        Ok(obj) => {
            let obj = typed(obj, &resource_meta);
            let (ready, why) = readiness(&obj);
            let conditions = vec![
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
            ];
            (conditions, feedback(&obj, rules))
        }
        Err(e) => {
            let not_found = e.reason == "NotFound";
            let available = if not_found {
                set(
                    AVAILABLE,
                    "False",
                    "ResourceNotAvailable",
                    "Resource is not available".into(),
                )
            } else {
                set(
                    AVAILABLE,
                    "Unknown",
                    "ResourceStatusUnknown",
                    format!("not applied: {}", e.reason),
                )
            };
            let conditions = vec![
                set(APPLIED, "False", &e.reason, e.message.clone()),
                available,
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
            ];
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
        status_feedback: (!rules.is_empty()).then_some(StatusFeedbackResult { values }),
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
///   decides: a non-retryable failure, or failing for longer than `--degraded-after`).
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
    vec![applied, available, ready, progressing, degraded]
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
                    format!("{what}: {}: {}", c.reason, c.message)
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

/// A JSONPath evaluator for the Kubernetes dialect that feedback rules use (as `kubectl
/// -o jsonpath` and OCM read them): `.a.b`, `['a']`, `[0]`, `[-1]`, `[1:3]`, `[*]`, `.*`,
/// `..a` (recursive descent) and filters `[?(@.type=="Ready")]` with `==`, `!=`, `<`,
/// `<=`, `>`, `>=` or plain existence (`[?(@.x)]`). Optional `{...}` and a leading `$`.
/// Missing keys and indexes give no result rather than an error.
pub mod jsonpath {
    use serde_json::Value;

    /// One step of a path.
    #[derive(Debug, Clone, PartialEq)]
    enum Segment {
        Child(String),
        Descendant(String),
        Wildcard,
        Index(i64),
        Slice(Option<i64>, Option<i64>),
        Filter(Filter),
    }

    #[derive(Debug, Clone, PartialEq)]
    struct Filter {
        path: Vec<Segment>,
        test: Option<(Op, Value)>,
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Op {
        Eq,
        Ne,
        Lt,
        Le,
        Gt,
        Ge,
    }

    /// The values `path` selects in `root`, in document order.
    pub fn evaluate<'a>(path: &str, root: &'a Value) -> Result<Vec<&'a Value>, String> {
        let segments = parse(path)?;
        Ok(apply(&segments, vec![root]))
    }

    fn parse(path: &str) -> Result<Vec<Segment>, String> {
        let mut text = path.trim();
        if let Some(inner) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
            text = inner.trim();
        }
        text = text.strip_prefix('$').unwrap_or(text);
        let mut parser = Parser {
            chars: text.chars().collect(),
            at: 0,
        };
        let segments = parser.segments(false)?;
        if parser.at < parser.chars.len() {
            return Err(format!(
                "unexpected {:?} at {} in {path:?}",
                parser.chars[parser.at], parser.at
            ));
        }
        Ok(segments)
    }

    struct Parser {
        chars: Vec<char>,
        at: usize,
    }

    impl Parser {
        fn peek(&self) -> Option<char> {
            self.chars.get(self.at).copied()
        }

        fn eat(&mut self, s: &str) -> bool {
            let n = s.chars().count();
            if self.chars.len() >= self.at + n
                && self.chars[self.at..self.at + n]
                    .iter()
                    .copied()
                    .eq(s.chars())
            {
                self.at += n;
                true
            } else {
                false
            }
        }

        fn skip_spaces(&mut self) {
            while self.peek().is_some_and(char::is_whitespace) {
                self.at += 1;
            }
        }

        /// Segments until the end, or (`in_filter`) until an operator or `)`.
        fn segments(&mut self, in_filter: bool) -> Result<Vec<Segment>, String> {
            let mut segments = Vec::new();
            while let Some(c) = self.peek() {
                match c {
                    '.' if self.eat("..") => {
                        let name = self.name();
                        if name.is_empty() || name == "*" {
                            return Err("`..` needs a field name".into());
                        }
                        segments.push(Segment::Descendant(name));
                    }
                    '.' => {
                        self.at += 1;
                        let name = self.name();
                        match name.as_str() {
                            "" if self.peek() == Some('[') || self.peek().is_none() => {}
                            "" => return Err(format!("empty field name at {}", self.at)),
                            "*" => segments.push(Segment::Wildcard),
                            _ => segments.push(Segment::Child(name)),
                        }
                    }
                    '[' => {
                        self.at += 1;
                        segments.push(self.bracket()?);
                    }
                    _ if in_filter => break,
                    _ => return Err(format!("unexpected {c:?} at {}", self.at)),
                }
            }
            Ok(segments)
        }

        fn name(&mut self) -> String {
            let start = self.at;
            while let Some(c) = self.peek() {
                if c == '.' || c == '[' || c.is_whitespace() || "=!<>)".contains(c) {
                    break;
                }
                self.at += 1;
            }
            self.chars[start..self.at].iter().collect()
        }

        /// After `[`, through `]`.
        fn bracket(&mut self) -> Result<Segment, String> {
            self.skip_spaces();
            let segment = match self.peek() {
                Some('\'' | '"') => Segment::Child(self.quoted()?),
                Some('*') => {
                    self.at += 1;
                    Segment::Wildcard
                }
                Some('?') => {
                    self.at += 1;
                    self.skip_spaces();
                    let parenthesized = self.eat("(");
                    let filter = self.filter()?;
                    if parenthesized {
                        self.skip_spaces();
                        if !self.eat(")") {
                            return Err("filter without its `)`".into());
                        }
                    }
                    Segment::Filter(filter)
                }
                _ => {
                    let start = self.at;
                    while self.peek().is_some_and(|c| c != ']') {
                        self.at += 1;
                    }
                    let inner: String = self.chars[start..self.at].iter().collect();
                    index_or_slice(inner.trim())?
                }
            };
            self.skip_spaces();
            if !self.eat("]") {
                return Err(format!("expected `]` at {}", self.at));
            }
            Ok(segment)
        }

        fn quoted(&mut self) -> Result<String, String> {
            let quote = self.peek().ok_or("expected a quote")?;
            self.at += 1;
            let mut out = String::new();
            while let Some(c) = self.peek() {
                self.at += 1;
                match c {
                    '\\' => {
                        if let Some(next) = self.peek() {
                            out.push(next);
                            self.at += 1;
                        }
                    }
                    c if c == quote => return Ok(out),
                    c => out.push(c),
                }
            }
            Err("unterminated string".into())
        }

        fn filter(&mut self) -> Result<Filter, String> {
            self.skip_spaces();
            if !self.eat("@") {
                return Err("a filter starts with `@`".into());
            }
            let path = self.segments(true)?;
            self.skip_spaces();
            let op = [
                ("==", Op::Eq),
                ("!=", Op::Ne),
                ("<=", Op::Le),
                (">=", Op::Ge),
                ("<", Op::Lt),
                (">", Op::Gt),
            ]
            .into_iter()
            .find(|(s, _)| self.eat(s))
            .map(|(_, op)| op);
            let Some(op) = op else {
                return Ok(Filter { path, test: None });
            };
            self.skip_spaces();
            let literal = match self.peek() {
                Some('\'' | '"') => Value::String(self.quoted()?),
                _ => {
                    let start = self.at;
                    while self
                        .peek()
                        .is_some_and(|c| c != ')' && c != ']' && !c.is_whitespace())
                    {
                        self.at += 1;
                    }
                    let raw: String = self.chars[start..self.at].iter().collect();
                    serde_json::from_str(&raw)
                        .map_err(|_| format!("cannot compare with {raw:?}"))?
                }
            };
            Ok(Filter {
                path,
                test: Some((op, literal)),
            })
        }
    }

    fn index_or_slice(inner: &str) -> Result<Segment, String> {
        let number = |s: &str| -> Result<Option<i64>, String> {
            let s = s.trim();
            if s.is_empty() {
                Ok(None)
            } else {
                s.parse().map(Some).map_err(|_| format!("bad index {s:?}"))
            }
        };
        match inner.split_once(':') {
            Some((start, end)) => {
                // A step (`[a:b:c]`) is not supported.
                if end.contains(':') {
                    return Err(format!("unsupported slice {inner:?}"));
                }
                Ok(Segment::Slice(number(start)?, number(end)?))
            }
            None => number(inner)?
                .map(Segment::Index)
                .ok_or_else(|| "empty `[]`".to_string()),
        }
    }

    fn apply<'a>(segments: &[Segment], mut current: Vec<&'a Value>) -> Vec<&'a Value> {
        for segment in segments {
            let mut next = Vec::new();
            for value in current {
                step(segment, value, &mut next);
            }
            current = next;
        }
        current
    }

    fn step<'a>(segment: &Segment, value: &'a Value, out: &mut Vec<&'a Value>) {
        match segment {
            Segment::Child(name) => out.extend(value.get(name.as_str())),
            Segment::Descendant(name) => descend(name, value, out),
            Segment::Wildcard => match value {
                Value::Object(map) => out.extend(map.values()),
                Value::Array(items) => out.extend(items),
                _ => {}
            },
            Segment::Index(i) => {
                if let Value::Array(items) = value
                    && let Some(at) = position(*i, items.len())
                    && at < items.len()
                {
                    out.push(&items[at]);
                }
            }
            Segment::Slice(start, end) => {
                if let Value::Array(items) = value {
                    let len = items.len();
                    let start = start.map_or(0, |s| position(s, len).unwrap_or(0)).min(len);
                    let end = end.map_or(len, |e| position(e, len).unwrap_or(0)).min(len);
                    if start < end {
                        out.extend(&items[start..end]);
                    }
                }
            }
            Segment::Filter(filter) => {
                if let Value::Array(items) = value {
                    out.extend(items.iter().filter(|item| matches(filter, item)));
                }
            }
        }
    }

    /// An index from the start, or (negative) from the end.
    fn position(i: i64, len: usize) -> Option<usize> {
        if i >= 0 {
            usize::try_from(i).ok()
        } else {
            len.checked_sub(usize::try_from(i.unsigned_abs()).ok()?)
        }
    }

    fn descend<'a>(name: &str, value: &'a Value, out: &mut Vec<&'a Value>) {
        match value {
            Value::Object(map) => {
                out.extend(map.get(name));
                for child in map.values() {
                    descend(name, child, out);
                }
            }
            Value::Array(items) => {
                for child in items {
                    descend(name, child, out);
                }
            }
            _ => {}
        }
    }

    fn matches(filter: &Filter, item: &Value) -> bool {
        let found = apply(&filter.path, vec![item]);
        let Some((op, literal)) = &filter.test else {
            return found.iter().any(|v| !v.is_null());
        };
        let Some(left) = found.first() else {
            return false;
        };
        let ordering = match (left, literal) {
            (Value::Number(a), Value::Number(b)) => a
                .as_f64()
                .zip(b.as_f64())
                .and_then(|(a, b)| a.partial_cmp(&b)),
            (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
            (a, b) if a == &b => Some(std::cmp::Ordering::Equal),
            _ => None,
        };
        use std::cmp::Ordering::*;
        match op {
            Op::Eq => ordering == Some(Equal),
            Op::Ne => ordering != Some(Equal),
            Op::Lt => ordering == Some(Less),
            Op::Le => matches!(ordering, Some(Less | Equal)),
            Op::Gt => ordering == Some(Greater),
            Op::Ge => matches!(ordering, Some(Greater | Equal)),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use serde_json::json;

        fn eval(path: &str, root: &Value) -> Vec<Value> {
            evaluate(path, root)
                .unwrap_or_else(|e| panic!("{path}: {e}"))
                .into_iter()
                .cloned()
                .collect()
        }

        #[test]
        fn paths_select_like_kubectl() {
            let doc = json!({
                "status": {
                    "replicas": 3,
                    "conditions": [
                        {"type": "Available", "status": "True", "n": 1},
                        {"type": "Progressing", "status": "False", "n": 2},
                    ],
                    "a.b": {"c": true},
                },
                "spec": {"containers": [{"name": "x", "image": "i1"}, {"name": "y", "image": "i2"}]},
            });
            assert_eq!(eval(".status.replicas", &doc), [json!(3)]);
            assert_eq!(eval("{.status.replicas}", &doc), [json!(3)]);
            assert_eq!(eval("$.status.replicas", &doc), [json!(3)]);
            assert_eq!(eval(".status.missing", &doc), Vec::<Value>::new());
            assert_eq!(eval(".status.replicas.deeper", &doc), Vec::<Value>::new());
            assert_eq!(
                eval(r#".status.conditions[?(@.type=="Available")].status"#, &doc),
                [json!("True")]
            );
            assert_eq!(
                eval(
                    ".status.conditions[?(@.type == 'Progressing')].status",
                    &doc
                ),
                [json!("False")]
            );
            assert_eq!(
                eval(".status.conditions[?(@.n > 1)].type", &doc),
                [json!("Progressing")]
            );
            assert_eq!(eval(".status.conditions[?(@.n != 1)].n", &doc), [json!(2)]);
            assert_eq!(
                eval(".status.conditions[?(@.missing)].n", &doc),
                Vec::<Value>::new()
            );
            assert_eq!(
                eval(".status.conditions[?(@.n)].n", &doc),
                [json!(1), json!(2)]
            );
            assert_eq!(
                eval(".status.conditions[0].type", &doc),
                [json!("Available")]
            );
            assert_eq!(
                eval(".status.conditions[-1].type", &doc),
                [json!("Progressing")]
            );
            assert_eq!(
                eval(".status.conditions[5].type", &doc),
                Vec::<Value>::new()
            );
            assert_eq!(eval(".status.conditions[0:1].n", &doc), [json!(1)]);
            assert_eq!(
                eval(".spec.containers[*].image", &doc),
                [json!("i1"), json!("i2")]
            );
            assert_eq!(
                eval(".spec.containers.*.name", &doc),
                [json!("x"), json!("y")]
            );
            assert_eq!(eval("..image", &doc), [json!("i1"), json!("i2")]);
            assert_eq!(eval(".status['a.b'].c", &doc), [json!(true)]);
            assert_eq!(eval(r#".status["a.b"]["c"]"#, &doc), [json!(true)]);
            assert_eq!(eval("", &doc), std::slice::from_ref(&doc));
        }

        #[test]
        fn malformed_paths_are_errors() {
            for bad in [
                ".a[",
                ".a[x]",
                ".a[?(@.b==)]",
                ".a[?(b==1)]",
                "a b",
                ".a..",
                ".a[1:2:3]",
            ] {
                assert!(evaluate(bad, &json!({})).is_err(), "{bad}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::{ApplyError, ResourceRef};
    use api::JsonPath;
    use serde_json::json;

    fn object(value: Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    fn ready(value: Value) -> (bool, String) {
        readiness(&object(value))
    }

    fn deployment(spec_replicas: Option<i64>, status: Value) -> Value {
        let mut spec = json!({"selector": {}});
        if let Some(r) = spec_replicas {
            spec["replicas"] = json!(r);
        }
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "ns", "generation": 2},
            "spec": spec, "status": status,
        })
    }

    #[test]
    fn deployments_are_ready_when_all_replicas_are_updated_and_available() {
        let (ok, why) = ready(deployment(
            Some(3),
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3}),
        ));
        assert!(ok, "{why}");
        assert_eq!(why, "3 of 3 replicas available");
        // spec.replicas defaults to 1.
        assert!(ready(deployment(None, json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}))).0);
        // Scaled to zero is ready at once.
        assert!(ready(deployment(Some(0), json!({"observedGeneration": 2}))).0);

        let cases = [
            (
                json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}),
                "not observed generation 2",
            ),
            (
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 3}),
                "2 of 3 replicas updated",
            ),
            (
                json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3, "availableReplicas": 3}),
                "1 old replicas pending termination",
            ),
            (
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 1, "unavailableReplicas": 2}),
                "1 of 3 replicas available",
            ),
            (
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3, "unavailableReplicas": 1}),
                "3 of 3 replicas available",
            ),
            (
                json!({"observedGeneration": 2, "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"web-1\" has timed out progressing."}]}),
                "progress deadline exceeded: ReplicaSet",
            ),
            (json!({}), "not observed"),
        ];
        for (status, expected) in cases {
            let (ok, why) = ready(deployment(Some(3), status.clone()));
            assert!(!ok, "{status}");
            assert!(why.contains(expected), "{status}: {why}");
        }
    }

    #[test]
    fn stateful_sets_need_ready_updated_replicas_at_the_update_revision() {
        let sts = |spec: Value, status: Value| {
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                   "metadata": {"name": "db", "namespace": "ns", "generation": 1},
                   "spec": spec, "status": status})
        };
        let done = json!({"observedGeneration": 1, "replicas": 2, "readyReplicas": 2, "updatedReplicas": 2, "currentRevision": "db-1", "updateRevision": "db-1"});
        assert!(ready(sts(json!({"replicas": 2}), done.clone())).0);
        let (ok, why) = ready(sts(
            json!({"replicas": 2}),
            json!({"observedGeneration": 1, "replicas": 2, "readyReplicas": 1, "updatedReplicas": 2}),
        ));
        assert!(!ok);
        assert_eq!(why, "1 of 2 replicas ready");
        let (ok, why) = ready(sts(
            json!({"replicas": 2}),
            json!({"observedGeneration": 1, "replicas": 2, "readyReplicas": 2, "updatedReplicas": 1}),
        ));
        assert!(!ok);
        assert_eq!(why, "1 of 2 replicas updated");
        let mut rolling = done.clone();
        rolling["updateRevision"] = json!("db-2");
        let (ok, why) = ready(sts(json!({"replicas": 2}), rolling.clone()));
        assert!(!ok);
        assert!(why.contains("db-2"), "{why}");
        // A partition holds some replicas back on purpose.
        let partitioned = json!({"replicas": 2, "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}});
        let mut status = rolling;
        status["updatedReplicas"] = json!(1);
        assert!(ready(sts(partitioned, status)).0);
        // Default replicas 1; OnDelete does not wait for updates.
        assert!(
            ready(sts(
                json!({"updateStrategy": {"type": "OnDelete"}}),
                json!({"observedGeneration": 1, "replicas": 1, "readyReplicas": 1})
            ))
            .0
        );
        assert!(!ready(sts(json!({}), json!({"observedGeneration": 0}))).0);
    }

    #[test]
    fn daemon_sets_need_every_scheduled_pod_updated_and_available() {
        let ds = |status: Value| {
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
                   "metadata": {"name": "agent", "namespace": "ns", "generation": 3},
                   "spec": {}, "status": status})
        };
        assert!(ready(ds(json!({"observedGeneration": 3, "desiredNumberScheduled": 2, "numberAvailable": 2, "updatedNumberScheduled": 2, "numberReady": 2}))).0);
        let (ok, why) = ready(ds(
            json!({"observedGeneration": 3, "desiredNumberScheduled": 2, "numberAvailable": 1, "updatedNumberScheduled": 2}),
        ));
        assert!(!ok);
        assert_eq!(why, "1 of 2 pods available");
        let (ok, why) = ready(ds(
            json!({"observedGeneration": 3, "desiredNumberScheduled": 2, "numberAvailable": 2, "updatedNumberScheduled": 1}),
        ));
        assert!(!ok);
        assert_eq!(why, "1 of 2 pods updated");
        assert!(!ready(ds(json!({"observedGeneration": 3}))).0);
        assert!(
            !ready(ds(
                json!({"observedGeneration": 2, "desiredNumberScheduled": 0})
            ))
            .0
        );
        assert!(
            ready(ds(
                json!({"observedGeneration": 3, "desiredNumberScheduled": 0})
            ))
            .0
        );
    }

    #[test]
    fn jobs_are_ready_when_complete_and_never_when_failed() {
        let job = |spec: Value, status: Value| {
            json!({"apiVersion": "batch/v1", "kind": "Job",
                   "metadata": {"name": "migrate", "namespace": "ns"},
                   "spec": spec, "status": status})
        };
        assert!(ready(job(json!({}), json!({"succeeded": 1}))).0);
        assert!(
            !ready(job(
                json!({"completions": 3}),
                json!({"succeeded": 2, "active": 1})
            ))
            .0
        );
        assert!(ready(job(json!({"completions": 3}), json!({"succeeded": 3}))).0);
        assert!(
            ready(job(
                json!({"completions": 3}),
                json!({"conditions": [{"type": "Complete", "status": "True"}]})
            ))
            .0
        );
        let (ok, why) = ready(job(json!({}), json!({"active": 1})));
        assert!(!ok);
        assert_eq!(why, "Job running: 1 active, 0 of 1 succeeded");
        let (ok, why) = ready(job(
            json!({}),
            json!({"failed": 6, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}),
        ));
        assert!(!ok);
        assert_eq!(
            why,
            "Job failed: BackoffLimitExceeded: Job has reached the specified backoff limit"
        );
    }

    #[test]
    fn pods_claims_crds_and_the_rest() {
        let pod = |status: Value| json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "status": status});
        assert!(
            ready(pod(
                json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]})
            ))
            .0
        );
        assert!(ready(pod(json!({"phase": "Succeeded"}))).0);
        let (ok, why) = ready(pod(
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady", "message": "containers with unready status: [app]"}]}),
        ));
        assert!(!ok);
        assert_eq!(
            why,
            "Pod is Running, not Ready: ContainersNotReady: containers with unready status: [app]"
        );
        let (ok, why) = ready(pod(json!({"phase": "Failed", "reason": "Evicted"})));
        assert!(!ok);
        assert_eq!(why, "Pod failed: Evicted");
        assert!(!ready(pod(json!({}))).0);

        let pvc = |phase: &str| json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"}, "status": {"phase": phase}});
        assert!(ready(pvc("Bound")).0);
        assert_eq!(
            ready(pvc("Pending")),
            (false, "PersistentVolumeClaim is Pending".into())
        );

        let crd = |conditions: Value| json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "a.b"}, "status": {"conditions": conditions}});
        assert!(ready(crd(json!([{"type": "Established", "status": "True"}]))).0);
        assert!(!ready(crd(json!([{"type": "NamesAccepted", "status": "False"}]))).0);

        let (ok, why) = ready(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}}),
        );
        assert!(ok);
        assert_eq!(why, "ConfigMap exists");
        // Whatever is being deleted is not ready.
        let (ok, why) = ready(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "deletionTimestamp": "2025-01-01T00:00:00Z"}}),
        );
        assert!(!ok);
        assert_eq!(why, "ConfigMap is being deleted");
    }

    fn well_known() -> Vec<FeedbackRule> {
        vec![FeedbackRule {
            type_: FeedbackType::WellKnownStatus,
            json_paths: vec![],
        }]
    }

    fn values(list: &[FeedbackValue]) -> Vec<(String, Value)> {
        list.iter()
            .map(|v| {
                let f = &v.field_value;
                let value = match f.type_.as_str() {
                    "Integer" => json!(f.integer.unwrap()),
                    "String" => json!(f.string.clone().unwrap()),
                    "Boolean" => json!(f.boolean.unwrap()),
                    "JsonRaw" => json!({"raw": f.json_raw.clone().unwrap()}),
                    other => panic!("type {other}"),
                };
                (v.name.clone(), value)
            })
            .collect()
    }

    fn pairs(list: &[(&str, Value)]) -> Vec<(String, Value)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn well_known_status_uses_ocm_names() {
        let dep = object(deployment(
            Some(3),
            json!({"replicas": 3, "readyReplicas": 2, "availableReplicas": 2}),
        ));
        assert_eq!(
            values(&feedback(&dep, &well_known())),
            pairs(&[
                ("ReadyReplicas", json!(2)),
                ("Replicas", json!(3)),
                ("AvailableReplicas", json!(2))
            ])
        );
        // Missing values are left out.
        let fresh = object(deployment(Some(3), json!({"replicas": 3})));
        assert_eq!(
            values(&feedback(&fresh, &well_known())),
            pairs(&[("Replicas", json!(3))])
        );

        let sts = object(
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "s"},
                                "status": {"replicas": 2, "readyReplicas": 2, "availableReplicas": 1}}),
        );
        assert_eq!(
            values(&feedback(&sts, &well_known())),
            pairs(&[
                ("ReadyReplicas", json!(2)),
                ("Replicas", json!(2)),
                ("AvailableReplicas", json!(1))
            ])
        );
        let ds = object(
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "d"},
                               "status": {"numberReady": 1, "desiredNumberScheduled": 2, "numberAvailable": 1}}),
        );
        assert_eq!(
            values(&feedback(&ds, &well_known())),
            pairs(&[
                ("NumberReady", json!(1)),
                ("DesiredNumberScheduled", json!(2)),
                ("NumberAvailable", json!(1))
            ])
        );
        let job = object(
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
                                "status": {"succeeded": 1, "failed": 2, "active": 0,
                                           "conditions": [{"type": "Complete", "status": "True"}]}}),
        );
        assert_eq!(
            values(&feedback(&job, &well_known())),
            pairs(&[
                ("JobComplete", json!("True")),
                ("JobSucceeded", json!(1)),
                ("JobFailed", json!(2)),
                ("JobActive", json!(0))
            ])
        );
        let pod = object(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}),
        );
        assert_eq!(
            values(&feedback(&pod, &well_known())),
            pairs(&[("PodReady", json!("True")), ("PodPhase", json!("Running"))])
        );
        // Kinds without well-known status report nothing.
        let cm =
            object(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}));
        assert!(feedback(&cm, &well_known()).is_empty());
    }

    #[test]
    fn json_paths_report_ocm_value_types() {
        let obj = object(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "ns", "labels": {"tier": "front"}},
            "spec": {"paused": false, "replicas": 2, "strategy": {"type": "RollingUpdate"}},
            "status": {"ratio": 0.5, "conditions": [{"type": "Available", "status": "True"}, {"type": "Progressing", "status": "True"}],
                       "huge": "x".repeat(2000), "nothing": null},
        }));
        let path = |name: &str, path: &str| JsonPath {
            name: name.into(),
            path: path.into(),
            extra: Default::default(),
        };
        let mut versioned = path("Versioned", ".spec.replicas");
        versioned.extra.insert("version".into(), json!("v1beta1"));
        let rules = vec![FeedbackRule {
            type_: FeedbackType::JsonPaths,
            json_paths: vec![
                path("Replicas", ".spec.replicas"),
                path("Paused", ".spec.paused"),
                path("Name", ".metadata.name"),
                path(
                    "Available",
                    r#".status.conditions[?(@.type=="Available")].status"#,
                ),
                path("Strategy", ".spec.strategy"),
                path("Types", ".status.conditions[*].type"),
                path("Ratio", ".status.ratio"),
                path("Missing", ".status.missing"),
                path("Null", ".status.nothing"),
                path("TooLong", ".status.huge"),
                path("Broken", ".status[?"),
                versioned,
            ],
        }];
        let got = feedback(&obj, &rules);
        assert_eq!(
            values(&got),
            pairs(&[
                ("Replicas", json!(2)),
                ("Paused", json!(false)),
                ("Name", json!("web")),
                ("Available", json!("True")),
                ("Strategy", json!({"raw": r#"{"type":"RollingUpdate"}"#})),
                ("Types", json!({"raw": r#"["Available","Progressing"]"#})),
                ("Ratio", json!({"raw": "0.5"})),
                ("TooLong", json!("x".repeat(2000))),
            ])
        );
        // The wire shape is OCM's.
        assert_eq!(
            serde_json::to_value(&got[0]).unwrap(),
            json!({"name": "Replicas", "fieldValue": {"type": "Integer", "integer": 2}})
        );
        assert_eq!(
            serde_json::to_value(&got[4]).unwrap(),
            json!({"name": "Strategy", "fieldValue": {"type": "JsonRaw", "jsonRaw": "{\"type\":\"RollingUpdate\"}"}})
        );
        // A long object is dropped as JsonRaw, a long string is not.
        let long = object(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "y".repeat(2000)}}),
        );
        let rules = vec![FeedbackRule {
            type_: FeedbackType::JsonPaths,
            json_paths: vec![path("Data", ".data")],
        }];
        assert!(feedback(&long, &rules).is_empty());
    }

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
            ("False", "Forbidden")
        );
        assert!(
            a.message
                .contains(r#"cannot patch resource "deployments" in API group "apps""#)
        );
        assert_eq!(status(&failed, AVAILABLE).status, "Unknown");
        assert_eq!(status(&failed, READY).status, "False");
        assert_eq!(failed.status_feedback, second.status_feedback);

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
        assert_eq!(status(&m, APPLIED).reason, "UnknownKind");
        assert!(m.status_feedback.is_none());
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
        assert_eq!(get(&retrying, AVAILABLE).status, "Unknown");
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
