//! ManifestWork rules: validation, what a create/replace/delete/status write does, and the
//! `Deleting` condition readers see.

use api::selector::{
    validate_dns_label, validate_dns_subdomain, validate_label_key, validate_label_value,
};
use api::{
    CLEANUP_FINALIZER, Condition, FieldError, ManifestWork, ManifestWorkStatus, WORK_API_VERSION,
};

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;

use super::access::{PlaceholderKey, mask_secrets};
use super::error::{Error, Result};
use super::writer::{Batch, Outcome};
use crate::store::StoredWork;

/// A create-or-replace of a work.
#[derive(Debug, Clone)]
pub struct PutWork {
    /// The cluster from the path.
    pub cluster: String,
    /// The name from the path.
    pub name: String,
    /// The body, validated.
    pub work: ManifestWork,
    /// The `If-Match` header, if any.
    pub if_match: Option<String>,
    /// Whether the caller may read the work: a refusal tells a write-only caller that its
    /// precondition is stale, never the current version.
    pub caller_reads: bool,
}

/// A status write by the cluster's agent.
#[derive(Debug, Clone)]
pub struct PutStatus {
    /// The cluster from the path.
    pub cluster: String,
    /// The work's name.
    pub name: String,
    /// The new status.
    pub status: ManifestWorkStatus,
}

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
    labels: &std::collections::BTreeMap<String, String>,
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

/// The ETag of an object at this resourceVersion.
pub fn etag(resource_version: &str) -> String {
    format!("\"{resource_version}\"")
}

/// Adds what readers see but nobody stores: the hub's `Deleting` condition.
pub fn present(mut work: ManifestWork) -> ManifestWork {
    if let Some(ts) = work.metadata.deletion_timestamp {
        work.status.conditions.retain(|c| c.type_ != "Deleting");
        work.status.conditions.push(Condition {
            type_: "Deleting".into(),
            status: "True".into(),
            reason: if work.metadata.finalizers.is_empty() {
                "Deleted".into()
            } else {
                "AwaitingCleanup".into()
            },
            message: if work.metadata.finalizers.is_empty() {
                "deletion requested; no finalizers left".to_string()
            } else {
                format!(
                    "deletion requested; waiting for finalizers: {}",
                    work.metadata.finalizers.join(", ")
                )
            },
            observed_generation: work.metadata.generation,
            last_transition_time: Some(ts),
        });
    }
    work
}

/// A stored work's labels; serde skips over the rest of the document without building it.
pub fn labels(work: &StoredWork) -> Result<BTreeMap<String, String>> {
    #[derive(Deserialize)]
    struct Doc {
        metadata: Meta,
    }
    #[derive(Deserialize)]
    struct Meta {
        #[serde(default)]
        labels: BTreeMap<String, String>,
    }
    Ok(work.decode::<Doc>()?.metadata.labels)
}

/// A stored work as a reader sees it (with the `Deleting` condition of [`present`], and with
/// secret data masked under the key when `mask` is given), as JSON text.
///
/// The stored text is returned as it is unless it needs changing, which a substring test
/// rules out for most works: the hub wrote that text with serde_json, which never escapes
/// ASCII letters, so a work without the text `"deletionTimestamp"` is not being deleted and
/// one without `"Secret"` has no Secret to mask. Only the rest are parsed and re-encoded.
pub fn listed_json<'a>(
    work: &'a StoredWork,
    mask: Option<&PlaceholderKey>,
) -> Result<Cow<'a, str>> {
    let text = work.object.as_str();
    let deleting = text.contains("\"deletionTimestamp\"");
    let secret = mask.is_some() && text.contains("\"Secret\"");
    if !deleting && !secret {
        return Ok(Cow::Borrowed(text));
    }
    let mut parsed = present(work.decode()?);
    if let Some(key) = mask {
        mask_secrets(key, &mut parsed);
    }
    let text = serde_json::to_string(&parsed).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(Cow::Owned(text))
}

fn not_found(cluster: &str, name: &str) -> Error {
    Error::NotFound(format!(
        "manifestwork {name:?} not found in cluster {cluster:?}"
    ))
}

fn rv(work: &ManifestWork) -> &str {
    work.metadata.resource_version.as_deref().unwrap_or("")
}

fn outcome(work: ManifestWork, gone: bool) -> Result<Outcome> {
    Ok(Outcome::Work {
        work: Box::new(work),
        gone,
        created: false,
    })
}

/// Creates or replaces a work. Users never change finalizers or status.
pub(crate) async fn put(batch: &mut Batch<'_>, put: &PutWork) -> Result<Outcome> {
    let (cluster_name, name) = (put.cluster.as_str(), put.name.as_str());
    let cluster = batch
        .tx
        .get_cluster(cluster_name)
        .await?
        .ok_or_else(|| Error::NotFound(format!("cluster {cluster_name:?} does not exist; create it first (hub accept, or PUT /api/v1/clusters/{cluster_name})")))?;
    if cluster.metadata.deletion_timestamp.is_some() {
        return Err(Error::Deleting(format!(
            "cluster {cluster_name:?} is being deleted"
        )));
    }
    let body_rv = put
        .work
        .metadata
        .resource_version
        .as_deref()
        .filter(|v| !v.is_empty());
    let old = batch.tx.get_work(cluster_name, name).await?;
    let Some(old) = old else {
        if put.if_match.is_some() {
            return Err(Error::PreconditionFailed(format!(
                "If-Match given but manifestwork {name:?} does not exist"
            )));
        }
        if body_rv.is_some() {
            return Err(Error::NotFound(format!(
                "manifestwork {name:?} does not exist; drop metadata.resourceVersion to create it"
            )));
        }
        let mut work = put.work.clone();
        let joined = cluster
            .condition("ManagedClusterJoined")
            .is_some_and(Condition::is_true);
        let m = &mut work.metadata;
        m.uid = Some(uuid::Uuid::new_v4().to_string());
        m.creation_timestamp = Some(batch.now);
        m.deletion_timestamp = None;
        m.generation = Some(1);
        m.finalizers = if joined {
            vec![CLEANUP_FINALIZER.to_string()]
        } else {
            Vec::new()
        };
        m.resource_version = Some(batch.next_index().to_string());
        work.status = ManifestWorkStatus::default();
        batch.tx.put_work(&work, batch.next_index()).await?;
        batch.record_work(cluster_name, name, None, Some(&work), false);
        return Ok(Outcome::Work {
            work: Box::new(work),
            gone: false,
            created: true,
        });
    };
    if old.metadata.deletion_timestamp.is_some() {
        return Err(Error::Deleting(format!(
            "manifestwork {name:?} is being deleted"
        )));
    }
    if let Some(tag) = &put.if_match
        && tag.trim() != "*"
        && tag.trim() != etag(rv(&old))
    {
        return Err(Error::PreconditionFailed(if put.caller_reads {
            format!(
                "If-Match {tag} does not match the current ETag {}",
                etag(rv(&old))
            )
        } else {
            format!("If-Match {tag} does not match the current ETag")
        }));
    }
    if let Some(v) = body_rv
        && v != rv(&old)
    {
        return Err(Error::Conflict(if put.caller_reads {
            format!(
                "manifestwork {name:?} was changed: metadata.resourceVersion {v} is stale, the current one is {}; read it again and retry",
                rv(&old)
            )
        } else {
            format!("manifestwork {name:?} was changed: metadata.resourceVersion {v} is stale")
        }));
    }
    let mut work = put.work.clone();
    let spec_changed = work.spec != old.spec;
    let m = &mut work.metadata;
    m.uid = old.metadata.uid.clone();
    m.creation_timestamp = old.metadata.creation_timestamp;
    m.deletion_timestamp = None;
    m.finalizers = old.metadata.finalizers.clone();
    m.generation = Some(old.metadata.generation.unwrap_or(1) + i64::from(spec_changed));
    m.resource_version = old.metadata.resource_version.clone();
    work.status = old.status.clone();
    if work == old {
        // Nothing changed: no new index, like a no-op update in Kubernetes.
        return outcome(old, false);
    }
    work.metadata.resource_version = Some(batch.next_index().to_string());
    batch.tx.put_work(&work, batch.next_index()).await?;
    batch.record_work(cluster_name, name, Some(&old), Some(&work), false);
    outcome(work, false)
}

/// Asks for a work's deletion: gone at once without finalizers, else marked deleting.
pub(crate) async fn delete(batch: &mut Batch<'_>, cluster: &str, name: &str) -> Result<Outcome> {
    let old = batch
        .tx
        .get_work(cluster, name)
        .await?
        .ok_or_else(|| not_found(cluster, name))?;
    if old.metadata.deletion_timestamp.is_some() {
        return outcome(old, false);
    }
    let mut work = old.clone();
    work.metadata.deletion_timestamp = Some(batch.now);
    mark_deleting(batch, &old, work).await
}

/// Marks a work deleting, or removes it when no finalizer holds it.
pub(crate) async fn mark_deleting(
    batch: &mut Batch<'_>,
    old: &ManifestWork,
    mut work: ManifestWork,
) -> Result<Outcome> {
    let (cluster, name) = (
        old.metadata.namespace.clone().unwrap_or_default(),
        old.metadata.name.clone(),
    );
    if work.metadata.finalizers.is_empty() {
        batch.tx.delete_work(&cluster, &name).await?;
        batch.record_work(&cluster, &name, Some(old), None, false);
        return outcome(work, true);
    }
    work.metadata.resource_version = Some(batch.next_index().to_string());
    batch.tx.put_work(&work, batch.next_index()).await?;
    batch.record_work(&cluster, &name, Some(old), Some(&work), false);
    outcome(work, false)
}

/// The generation a status was computed for: the newest of its work conditions.
fn observed_generation(status: &ManifestWorkStatus) -> Option<i64> {
    status
        .conditions
        .iter()
        .filter_map(|c| c.observed_generation)
        .max()
}

/// Writes a work's status. A status computed for an older generation than the one stored
/// is ignored, so a slow agent cannot roll status back.
pub(crate) async fn put_status(batch: &mut Batch<'_>, put: &PutStatus) -> Result<Outcome> {
    let old = batch
        .tx
        .get_work(&put.cluster, &put.name)
        .await?
        .ok_or_else(|| not_found(&put.cluster, &put.name))?;
    for (i, c) in put.status.conditions.iter().enumerate() {
        if !matches!(c.status.as_str(), "True" | "False" | "Unknown") {
            return Err(Error::invalid(
                format!("status.conditions[{i}].status"),
                format!("must be True, False or Unknown, not {:?}", c.status),
            ));
        }
        if c.type_.is_empty() {
            return Err(Error::invalid(
                format!("status.conditions[{i}].type"),
                "is required",
            ));
        }
    }
    if let (Some(new), Some(held)) = (
        observed_generation(&put.status),
        observed_generation(&old.status),
    ) && new < held
    {
        return outcome(old, false);
    }
    let mut status = put.status.clone();
    // `Deleting` is the hub's, derived from deletionTimestamp; an agent cannot set it.
    status.conditions.retain(|c| c.type_ != "Deleting");
    if status == old.status {
        return outcome(old, false);
    }
    let mut work = old.clone();
    work.status = status;
    work.metadata.resource_version = Some(batch.next_index().to_string());
    batch.tx.put_work(&work, batch.next_index()).await?;
    batch.record_work(&put.cluster, &put.name, Some(&old), Some(&work), true);
    outcome(work, false)
}

/// Removes a finalizer; a deleting work whose last finalizer goes is removed, and so is a
/// deleting cluster whose last work goes.
pub(crate) async fn remove_finalizer(
    batch: &mut Batch<'_>,
    cluster: &str,
    name: &str,
    finalizer: &str,
) -> Result<Outcome> {
    let old = batch
        .tx
        .get_work(cluster, name)
        .await?
        .ok_or_else(|| not_found(cluster, name))?;
    if !old.metadata.finalizers.iter().any(|f| f == finalizer) {
        return outcome(old, false);
    }
    let mut work = old.clone();
    work.metadata.finalizers.retain(|f| f != finalizer);
    if work.metadata.deletion_timestamp.is_some() && work.metadata.finalizers.is_empty() {
        batch.tx.delete_work(cluster, name).await?;
        batch.record_work(cluster, name, Some(&old), None, false);
        super::clusters::remove_if_drained(batch, cluster).await?;
        return outcome(work, true);
    }
    work.metadata.resource_version = Some(batch.next_index().to_string());
    batch.tx.put_work(&work, batch.next_index()).await?;
    batch.record_work(cluster, name, Some(&old), Some(&work), false);
    outcome(work, false)
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
}
