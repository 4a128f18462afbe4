//! What a well-formed request body is: names, labels, works and clusters checked before
//! any write, every problem listed rather than the first.

use std::collections::BTreeMap;

use api::selector::{
    validate_dns_label, validate_dns_subdomain, validate_label_key, validate_label_value,
};
use api::{CLUSTER_API_VERSION, FieldError, ManagedCluster, ManifestWork, WORK_API_VERSION};

use super::condition_rules::check_condition_rules;
use super::error::{Error, Result};

mod executor;
mod ignore_fields;
pub use executor::validate_executor;
pub use ignore_fields::check_ignore_fields;

/// Checks a cluster name from a path.
pub fn validate_cluster_name(cluster: &str) -> Result<()> {
    validate_dns_label(cluster).map_err(|m| Error::invalid("cluster", m))
}

/// Checks a work body against the names in its path and fills in the namespace.
/// Every problem is listed, not just the first.
pub fn validate_work(cluster: &str, name: &str, work: &mut ManifestWork) -> Result<()> {
    validate_cluster_name(cluster)?;
    let mut errs = Vec::new();
    let mut bad = |field: String, message: String| errs.push(FieldError { field, message });
    if let Err(m) = validate_dns_subdomain(name) {
        bad("metadata.name".into(), m);
    }
    if work.api_version != WORK_API_VERSION {
        bad(
            "apiVersion".into(),
            format!("must be {WORK_API_VERSION}, not {:?}", work.api_version),
        );
    }
    if work.kind != "ManifestWork" {
        bad(
            "kind".into(),
            format!(
                "must be ManifestWork, not {:?} (plain manifests go inside spec.workload.manifests; `hub apply --name` wraps them)",
                work.kind
            ),
        );
    }
    if !work.metadata.name.is_empty() && work.metadata.name != name {
        bad(
            "metadata.name".into(),
            format!(
                "{:?} does not match the name in the path, {name:?}",
                work.metadata.name
            ),
        );
    }
    match work.metadata.namespace.as_deref() {
        Some(ns) if !ns.is_empty() && ns != cluster => {
            bad(
                "metadata.namespace".into(),
                format!("{ns:?} does not match the cluster in the path, {cluster:?}"),
            );
        }
        _ => {}
    }
    check_labels("metadata.labels", &work.metadata.labels, &mut bad);
    for key in work.metadata.annotations.keys() {
        if let Err(m) = validate_label_key(key) {
            bad(format!("metadata.annotations[{key}]"), m);
        }
    }
    for (i, m) in work.spec.workload.manifests.iter().enumerate() {
        let field = |f: &str| format!("spec.workload.manifests[{i}]{f}");
        let Some(obj) = m.as_object() else {
            bad(field(""), "must be a Kubernetes object".into());
            continue;
        };
        for key in ["apiVersion", "kind"] {
            if obj
                .get(key)
                .and_then(|v| v.as_str())
                .is_none_or(str::is_empty)
            {
                bad(field(&format!(".{key}")), "is required".into());
            }
        }
        let meta_name = obj
            .get("metadata")
            .and_then(|md| md.get("name"))
            .and_then(|n| n.as_str());
        if meta_name.is_none_or(str::is_empty) {
            bad(field(".metadata.name"), "is required".into());
        }
    }
    for (i, c) in work.spec.manifest_configs.iter().enumerate() {
        let id = &c.resource_identifier;
        if id.resource.is_empty() {
            bad(
                format!("spec.manifestConfigs[{i}].resourceIdentifier.resource"),
                "is required".into(),
            );
        }
        if id.name.is_empty() {
            bad(
                format!("spec.manifestConfigs[{i}].resourceIdentifier.name"),
                "is required".into(),
            );
        }
    }
    check_ignore_fields(work, &mut bad);
    errs.extend(check_condition_rules(&work.spec));
    errs.extend(validate_executor(
        work.spec.executor.as_ref(),
        "spec.executor",
    ));
    if !errs.is_empty() {
        return Err(Error::invalid_fields(errs));
    }
    work.metadata.name = name.to_string();
    work.metadata.namespace = Some(cluster.to_string());
    Ok(())
}

/// Checks label keys and values.
pub fn check_labels(
    path: &str,
    labels: &BTreeMap<String, String>,
    bad: &mut impl FnMut(String, String),
) {
    for (k, v) in labels {
        if let Err(m) = validate_label_key(k) {
            bad(format!("{path}[{k}]"), format!("key: {m}"));
        }
        if let Err(m) = validate_label_value(v) {
            bad(format!("{path}[{k}]"), format!("value: {m}"));
        }
    }
}

/// Checks a cluster body against the name in its path.
pub fn validate_cluster(name: &str, cluster: &mut ManagedCluster) -> Result<()> {
    validate_cluster_name(name)?;
    let mut errs = Vec::new();
    let mut bad = |field: String, message: String| errs.push(FieldError { field, message });
    if !cluster.metadata.name.is_empty() && cluster.metadata.name != name {
        bad(
            "metadata.name".into(),
            format!(
                "{:?} does not match the name in the path, {name:?}",
                cluster.metadata.name
            ),
        );
    }
    if cluster.api_version != CLUSTER_API_VERSION {
        bad(
            "apiVersion".into(),
            format!(
                "must be {CLUSTER_API_VERSION}, not {:?}",
                cluster.api_version
            ),
        );
    }
    if cluster.kind != "ManagedCluster" {
        bad(
            "kind".into(),
            format!("must be ManagedCluster, not {:?}", cluster.kind),
        );
    }
    check_labels("metadata.labels", &cluster.metadata.labels, &mut bad);
    for key in cluster.metadata.annotations.keys() {
        if let Err(m) = validate_label_key(key) {
            bad(format!("metadata.annotations[{key}]"), m);
        }
    }
    if !errs.is_empty() {
        return Err(Error::invalid_fields(errs));
    }
    cluster.metadata.name = name.to_string();
    cluster.metadata.namespace = None;
    Ok(())
}

/// Checks a label patch.
pub fn validate_label_patch(name: &str, labels: &BTreeMap<String, Option<String>>) -> Result<()> {
    validate_cluster_name(name)?;
    let mut errs = Vec::new();
    let set: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().unwrap_or_default()))
        .collect();
    check_labels("labels", &set, &mut |field, message| {
        errs.push(FieldError { field, message })
    });
    if errs.is_empty() {
        Ok(())
    } else {
        Err(Error::invalid_fields(errs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn work(v: serde_json::Value) -> ManifestWork {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn every_bad_field_is_named() {
        let mut w = work(json!({
            "metadata": {"name": "other", "namespace": "c2", "labels": {"bad key!": "v"}},
            "spec": {"workload": {"manifests": [
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ok"}},
                {"kind": "ConfigMap", "metadata": {"name": "x"}},
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}},
                "not an object"
            ]}}
        }));
        let Err(Error::Invalid { fields, .. }) = validate_work("c1", "w1", &mut w) else {
            panic!("expected 422");
        };
        let names: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            names,
            [
                "metadata.name",
                "metadata.namespace",
                "metadata.labels[bad key!]",
                "spec.workload.manifests[1].apiVersion",
                "spec.workload.manifests[2].metadata.name",
                "spec.workload.manifests[3]",
            ]
        );
    }

    #[test]
    fn bad_names_are_422() {
        let mut w = work(json!({}));
        assert!(matches!(
            validate_work("Bad_Cluster", "w", &mut w),
            Err(Error::Invalid { .. })
        ));
        assert!(matches!(
            validate_work("c1", "UPPER", &mut w),
            Err(Error::Invalid { .. })
        ));
        assert!(matches!(
            validate_work("c1", &"a".repeat(254), &mut w),
            Err(Error::Invalid { .. })
        ));
        assert!(matches!(
            validate_work(&"c".repeat(64), "w", &mut w),
            Err(Error::Invalid { .. })
        ));
        let mut w = work(json!({"apiVersion": "v1", "kind": "ConfigMap"}));
        assert!(matches!(
            validate_work("c1", "w", &mut w),
            Err(Error::Invalid { .. })
        ));
    }

    #[test]
    fn a_good_work_gets_its_namespace() {
        let mut w = work(json!({"spec": {"workload": {"manifests": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}]}}}));
        validate_work("c1", "w1", &mut w).unwrap();
        assert_eq!(w.metadata.namespace.as_deref(), Some("c1"));
        assert_eq!(w.metadata.name, "w1");
    }

    fn refused_fields(cluster: &mut ManagedCluster) -> Vec<String> {
        match validate_cluster("c1", cluster) {
            Err(Error::Invalid { fields, .. }) => fields.into_iter().map(|f| f.field).collect(),
            other => panic!("expected a 422, got {other:?}"),
        }
    }

    /// Found by tests/fuzz/schemathesis.sh (stateful phase): a cluster with any apiVersion, or with
    /// annotation keys no Kubernetes object may carry, was stored and served back.
    #[test]
    fn api_version_and_annotation_keys_are_checked() {
        let mut c = ManagedCluster::new("c1", BTreeMap::new());
        c.api_version = "v1".into();
        assert_eq!(refused_fields(&mut c), ["apiVersion"]);
        let mut c = ManagedCluster::new("c1", BTreeMap::new());
        c.metadata
            .annotations
            .insert("\u{8}bad key".into(), "v".into());
        assert_eq!(
            refused_fields(&mut c),
            ["metadata.annotations[\u{8}bad key]"]
        );
        let mut c = ManagedCluster::new("c1", BTreeMap::new());
        c.metadata
            .annotations
            .insert("example.com/note".into(), "any value at all".into());
        validate_cluster("c1", &mut c).unwrap();
    }
}
