//! The set controller's writes: a set's works put on the clusters it decided and removed
//! from the rest (in one transaction, each work audited as written by the set on behalf of
//! its author), its status, and its removal once deleted.

use std::collections::BTreeMap;

use api::fleet::{ManifestWorkReplicaSet, ManifestWorkReplicaSetStatus, SET_LABEL};
use api::{ManifestWork, ManifestWorkSpec, ObjectMeta, WORK_API_VERSION};
use async_trait::async_trait;
use serde_json::json;

use super::Hub;
use super::error::{Error, Result};
use super::namespaced::{Authored, read_object, remove_object, target, write_object};
use super::placements::stamp_conditions;
use super::sets::set_key;
use super::works::{self, DeleteWork, PutWork, owning_set};
use super::writer::{Batch, Reads, WriteOp, Written};
use crate::store::NewAuditEntry;

/// One cluster's work of a set, rendered.
#[derive(Debug, Clone)]
pub struct Placed {
    /// The cluster.
    pub cluster: String,
    /// The work's spec (template, overrides, replica share).
    pub spec: ManifestWorkSpec,
}

/// Puts a set's works and removes those of clusters it no longer decides.
#[derive(Debug)]
pub struct SyncSet {
    /// The set's namespace.
    pub namespace: String,
    /// The set's name (and its works' name).
    pub name: String,
    /// The generation this plan was made for: a newer spec waits for its own plan.
    pub generation: Option<i64>,
    /// Works to put.
    pub place: Vec<Placed>,
    /// Clusters to take the set's work from.
    pub remove: Vec<String>,
    /// Release the removed works (drop the set's label) instead of deleting them.
    pub orphan: bool,
    /// The set's author, for the audit log.
    pub author: String,
}

/// What a sync did, per cluster: the work as it is now, or why it could not be written.
#[derive(Debug, Default)]
pub struct Synced {
    /// The set was changed or is gone since the plan: nothing was done.
    pub stale: bool,
    /// Per cluster put: the work, or the refusal.
    pub placed: BTreeMap<String, std::result::Result<ManifestWork, String>>,
    /// Per cluster removed: the work left (deleting) or `None` when gone, or the refusal.
    pub removed: BTreeMap<String, std::result::Result<Option<ManifestWork>, String>>,
}

fn work_for(namespace: &str, name: &str, p: &Placed) -> ManifestWork {
    ManifestWork {
        api_version: WORK_API_VERSION.into(),
        kind: "ManifestWork".into(),
        metadata: ObjectMeta {
            name: name.to_string(),
            namespace: Some(p.cluster.clone()),
            labels: [(SET_LABEL.to_string(), set_key(namespace, name))].into(),
            ..Default::default()
        },
        spec: p.spec.clone(),
        status: Default::default(),
        extra: Default::default(),
    }
}

/// A refusal for one cluster becomes its message; a database failure fails the batch.
fn per_cluster<T>(r: Result<T>) -> Result<std::result::Result<T, String>> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(Error::Unavailable(e)) => Err(Error::Unavailable(e)),
        Err(e) => Ok(Err(e.to_string())),
    }
}

impl SyncSet {
    fn audit(&self, batch: &mut Batch<'_>, action: &str, cluster: &str) {
        batch.audit(NewAuditEntry {
            actor: format!("manifestworkreplicaset:{}/{}", self.namespace, self.name),
            action: action.into(),
            target: format!("clusters/{cluster}/manifestworks/{}", self.name),
            source: "controller".into(),
            details: json!({"onBehalfOf": self.author}),
        });
    }
}

#[async_trait]
impl WriteOp for SyncSet {
    type Output = Synced;

    fn reads(&self) -> Reads {
        let clusters = self.place.iter().map(|p| p.cluster.clone());
        Reads {
            works: clusters
                .clone()
                .chain(self.remove.iter().cloned())
                .map(|c| (c, self.name.clone()))
                .collect(),
            clusters: clusters.collect(),
        }
    }

    async fn apply(&self, batch: &mut Batch<'_>) -> Result<Synced> {
        let (ns, name) = (self.namespace.as_str(), self.name.as_str());
        let current = read_object::<ManifestWorkReplicaSet>(batch, ns, name).await?;
        // A gone set does nothing, nor a changed one that would put works (its new spec
        // gets a plan of its own); removing is always right.
        let stale = match &current {
            None => true,
            Some(o) => o.object.metadata.generation != self.generation && !self.place.is_empty(),
        };
        if stale {
            return Ok(Synced {
                stale: true,
                ..Default::default()
            });
        }
        let key = set_key(ns, name);
        let mut out = Synced::default();
        for p in &self.place {
            let before = batch.next_index();
            let put = PutWork {
                cluster: p.cluster.clone(),
                name: name.to_string(),
                work: work_for(ns, name, p),
                if_match: None,
                caller_reads: true,
                owner: Some(key.clone()),
                // The set's author was checked when the set was written.
                may_set_executor: true,
            };
            let r = per_cluster(works::put(batch, &put).await)?;
            if batch.next_index() != before {
                self.audit(batch, "work.put", &p.cluster);
            }
            out.placed.insert(p.cluster.clone(), r.map(|w| w.work));
        }
        for cluster in &self.remove {
            let Some(old) = batch.tx.get_work(cluster, name).await? else {
                out.removed.insert(cluster.clone(), Ok(None));
                continue;
            };
            if owning_set(&old) != Some(key.as_str()) || old.metadata.deletion_timestamp.is_some() {
                let left = (owning_set(&old) == Some(key.as_str())).then_some(old);
                out.removed.insert(cluster.clone(), Ok(left));
                continue;
            }
            let r = if self.orphan {
                let mut released = old.clone();
                released.metadata.labels.remove(SET_LABEL);
                released.metadata.resource_version = None;
                let put = PutWork {
                    cluster: cluster.clone(),
                    name: name.to_string(),
                    work: released,
                    if_match: None,
                    caller_reads: true,
                    owner: Some(key.clone()),
                    may_set_executor: true,
                };
                per_cluster(works::put(batch, &put).await)?.map(|_| None)
            } else {
                let del = DeleteWork {
                    cluster: cluster.clone(),
                    name: name.to_string(),
                    owner: Some(key.clone()),
                };
                per_cluster(works::delete(batch, &del.cluster, name, del.owner.as_deref()).await)?
                    .map(|w| (!w.gone).then_some(w.work))
            };
            self.audit(
                batch,
                if self.orphan {
                    "work.release"
                } else {
                    "work.delete"
                },
                cluster,
            );
            out.removed.insert(cluster.clone(), r);
        }
        Ok(out)
    }
}

/// Writes a set's status when it changed.
#[derive(Debug)]
pub struct PutSetStatus {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The new status.
    pub status: ManifestWorkReplicaSetStatus,
}

#[async_trait]
impl WriteOp for PutSetStatus {
    type Output = bool;

    async fn apply(&self, batch: &mut Batch<'_>) -> Result<bool> {
        let (ns, name) = (self.namespace.as_str(), self.name.as_str());
        let Some(Authored { mut object, author }) =
            read_object::<ManifestWorkReplicaSet>(batch, ns, name).await?
        else {
            return Ok(false);
        };
        let mut status = self.status.clone();
        stamp_conditions(
            &mut status.conditions,
            &object.status.conditions,
            object.metadata.generation,
            batch.now,
        );
        if status == object.status {
            return Ok(false);
        }
        object.status = status;
        write_object(batch, ns, name, &mut object, &author, true).await?;
        Ok(true)
    }
}

/// Removes a deleted set whose works are taken care of.
#[derive(Debug)]
pub struct RemoveSet {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

#[async_trait]
impl WriteOp for RemoveSet {
    type Output = bool;

    async fn apply(&self, batch: &mut Batch<'_>) -> Result<bool> {
        let (ns, name) = (self.namespace.as_str(), self.name.as_str());
        let deleting = read_object::<ManifestWorkReplicaSet>(batch, ns, name)
            .await?
            .is_some_and(|s| s.object.metadata.deletion_timestamp.is_some());
        if !deleting {
            return Ok(false);
        }
        remove_object::<ManifestWorkReplicaSet>(batch, ns, name).await?;
        batch.audit(NewAuditEntry {
            actor: "controller:manifestworkreplicaset".into(),
            action: "manifestworkreplicaset.remove".into(),
            target: target::<ManifestWorkReplicaSet>(ns, name),
            source: "controller".into(),
            details: json!({}),
        });
        Ok(true)
    }
}

impl Hub {
    /// Runs a set's sync.
    pub async fn sync_set(&self, op: SyncSet) -> Result<Written<Synced>> {
        self.writer.write(op).await
    }

    /// Writes a set's status; whether it changed.
    pub async fn write_set_status(&self, op: PutSetStatus) -> Result<Written<bool>> {
        self.writer.write(op).await
    }

    /// Removes a deleted set; whether it was removed.
    pub async fn remove_set(&self, namespace: &str, name: &str) -> Result<Written<bool>> {
        let op = RemoveSet {
            namespace: namespace.into(),
            name: name.into(),
        };
        self.writer.write(op).await
    }
}
