//! Helpers shared by the status tests.

use kube::api::DynamicObject;
use serde_json::{Value, json};

use api::FeedbackValue;

pub fn object(value: Value) -> DynamicObject {
    serde_json::from_value(value).unwrap()
}

pub fn deployment(spec_replicas: Option<i64>, status: Value) -> Value {
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

pub fn values(list: &[FeedbackValue]) -> Vec<(String, Value)> {
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

pub fn pairs(list: &[(&str, Value)]) -> Vec<(String, Value)> {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.clone()))
        .collect()
}
