//! Status feedback: `WellKnownStatus` (OCM's names) and `JSONPaths` rules, with OCM's
//! value types `Integer`, `String`, `Boolean` and `JsonRaw`.

use api::{FeedbackRule, FeedbackType, FeedbackValue, FieldValue};
use kube::api::DynamicObject;
use serde_json::Value;

use super::jsonpath;

/// OCM drops a `JsonRaw` feedback value longer than this.
pub const MAX_JSON_RAW_LENGTH: usize = 1024;

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
#[cfg(test)]
mod tests {
    use super::super::testing::{deployment, object, pairs, values};
    use super::*;
    use api::JsonPath;
    use serde_json::json;

    fn well_known() -> Vec<FeedbackRule> {
        vec![FeedbackRule {
            type_: FeedbackType::WellKnownStatus,
            json_paths: vec![],
        }]
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
}
