//! ManagedCluster rules: create/update by admins, labels, deletion of a cluster and its works.

use std::collections::BTreeMap;

use api::selector::validate_label_key;
use api::{CLUSTER_API_VERSION, ClusterDeletion, Condition, FieldError, ManagedCluster};

use super::error::{Error, Result};
use super::works::{self, check_labels};
use super::writer::{Batch, Outcome};

/// A label change: `Some` sets, `None` removes.
#[derive(Debug, Clone)]
pub struct SetLabels {
    /// The cluster.
    pub name: String,
    /// The labels to set or remove.
    pub labels: BTreeMap<String, Option<String>>,
}

/// Checks a cluster body against the name in its path.
pub fn validate_cluster(name: &str, cluster: &mut ManagedCluster) -> Result<()> {
    works::validate_cluster_name(name)?;
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
pub fn validate_label_patch(patch: &SetLabels) -> Result<()> {
    works::validate_cluster_name(&patch.name)?;
    let mut errs = Vec::new();
    let set: BTreeMap<String, String> = patch
        .labels
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

fn not_found(name: &str) -> Error {
    Error::NotFound(format!("cluster {name:?} not found"))
}

fn cluster_outcome(c: ManagedCluster) -> Result<Outcome> {
    Ok(Outcome::Cluster(Box::new(c)))
}

async fn write(
    batch: &mut Batch<'_>,
    old: Option<&ManagedCluster>,
    mut new: ManagedCluster,
) -> Result<Outcome> {
    new.metadata.resource_version = Some(batch.next_index().to_string());
    batch.tx.put_cluster(&new, batch.next_index()).await?;
    batch.record_cluster(&new.metadata.name.clone(), old, Some(&new));
    cluster_outcome(new)
}

/// Creates or updates a cluster record. Status stays the hub's.
pub(crate) async fn put(batch: &mut Batch<'_>, body: &ManagedCluster) -> Result<Outcome> {
    let name = body.metadata.name.clone();
    let old = batch.tx.get_cluster(&name).await?;
    let mut new = body.clone();
    match &old {
        Some(old) => {
            if old.metadata.deletion_timestamp.is_some() {
                return Err(Error::Deleting(format!(
                    "cluster {name:?} is being deleted"
                )));
            }
            let m = &mut new.metadata;
            m.uid = old.metadata.uid.clone();
            m.creation_timestamp = old.metadata.creation_timestamp;
            m.deletion_timestamp = None;
            m.finalizers = old.metadata.finalizers.clone();
            m.generation = old.metadata.generation;
            m.resource_version = old.metadata.resource_version.clone();
            new.status = old.status.clone();
            if new == *old {
                return cluster_outcome(new);
            }
        }
        None => {
            let m = &mut new.metadata;
            m.uid = Some(uuid::Uuid::new_v4().to_string());
            m.creation_timestamp = Some(batch.now);
            m.deletion_timestamp = None;
            m.finalizers = Vec::new();
            m.generation = Some(1);
            new.status = Default::default();
        }
    }
    write(batch, old.as_ref(), new).await
}

/// Sets or removes labels.
pub(crate) async fn set_labels(batch: &mut Batch<'_>, patch: &SetLabels) -> Result<Outcome> {
    let old = batch
        .tx
        .get_cluster(&patch.name)
        .await?
        .ok_or_else(|| not_found(&patch.name))?;
    let mut new = old.clone();
    for (k, v) in &patch.labels {
        match v {
            Some(v) => new.metadata.labels.insert(k.clone(), v.clone()),
            None => new.metadata.labels.remove(k),
        };
    }
    if new == old {
        return cluster_outcome(old);
    }
    write(batch, Some(&old), new).await
}

/// Marks the cluster as joined by an agent: works created from now on get its finalizer.
pub(crate) async fn mark_joined(batch: &mut Batch<'_>, name: &str) -> Result<Outcome> {
    let old = batch
        .tx
        .get_cluster(name)
        .await?
        .ok_or_else(|| not_found(name))?;
    let mut new = old.clone();
    let now = batch.now;
    set_condition(
        &mut new.status.conditions,
        "ManagedClusterJoined",
        "True",
        "AgentJoined",
        "the cluster's agent joined",
        now,
    );
    set_condition(
        &mut new.status.conditions,
        "HubAcceptedManagedCluster",
        "True",
        "HubClusterAdminAccepted",
        "accepted by the hub",
        now,
    );
    new.spec.hub_accepts_client = true;
    if new == old {
        return cluster_outcome(old);
    }
    write(batch, Some(&old), new).await
}

/// Sets a condition, keeping its transition time when the status did not change.
pub fn set_condition(
    conds: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: chrono::DateTime<chrono::Utc>,
) {
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.last_transition_time = Some(now);
        }
        c.status = status.into();
        c.reason = reason.into();
        c.message = message.into();
    } else {
        conds.push(Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: None,
            last_transition_time: Some(now),
        });
    }
}

/// Deletes a cluster: every work is marked deleting (removed at once when no agent holds
/// it), and the record goes when its last work does. `force` removes everything now and
/// lists the works whose resources may still be on the cluster.
pub(crate) async fn delete(batch: &mut Batch<'_>, name: &str, force: bool) -> Result<Outcome> {
    let old = batch
        .tx
        .get_cluster(name)
        .await?
        .ok_or_else(|| not_found(name))?;
    let mut left = Vec::new();
    for work_name in batch.tx.work_names(name).await? {
        let Some(w) = batch.tx.get_work(name, &work_name).await? else {
            continue;
        };
        if force {
            if !w.metadata.finalizers.is_empty() {
                left.push(work_name.clone());
            }
            batch.tx.delete_work(name, &work_name).await?;
            batch.record_work(name, &work_name, Some(&w), None, false);
            continue;
        }
        if w.metadata.deletion_timestamp.is_some() {
            left.push(work_name);
            continue;
        }
        let mut marked = w.clone();
        marked.metadata.deletion_timestamp = Some(batch.now);
        if let Outcome::Work { gone: false, .. } = works::mark_deleting(batch, &w, marked).await? {
            left.push(work_name);
        }
    }
    let removed = force || left.is_empty();
    if removed {
        batch.tx.delete_cluster(name).await?;
        batch.record_cluster(name, Some(&old), None);
    } else if old.metadata.deletion_timestamp.is_none() {
        let mut new = old.clone();
        new.metadata.deletion_timestamp = Some(batch.now);
        write(batch, Some(&old), new).await?;
    }
    Ok(Outcome::ClusterDeletion(ClusterDeletion {
        cluster: name.to_string(),
        removed,
        works_left: left,
    }))
}

/// Removes a deleting cluster once its last work is gone.
pub(crate) async fn remove_if_drained(batch: &mut Batch<'_>, name: &str) -> Result<()> {
    let Some(cluster) = batch.tx.get_cluster(name).await? else {
        return Ok(());
    };
    if cluster.metadata.deletion_timestamp.is_some() && batch.tx.work_names(name).await?.is_empty()
    {
        batch.tx.delete_cluster(name).await?;
        batch.record_cluster(name, Some(&cluster), None);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
