//! ManagedCluster rules: create/update by admins, labels, joining, deletion of a cluster
//! and its works, and the reads of clusters (with their live lease, in the caller's scope).

use std::collections::BTreeMap;

use api::selector::Selector;
use api::{ClusterDeletion, List, ManagedCluster};
use async_trait::async_trait;
use serde_json::json;

use super::Hub;
use super::authn::Principal;
use super::cluster_status::{ACCEPTED, JOINED, set_condition};
use super::error::{Error, Result};
use super::leases::with_lease;
use super::query::{self, Block, Indexed, Watch};
use super::validate::{validate_cluster, validate_cluster_name, validate_label_patch};
use super::works;
use super::writer::{Audit, Batch, Caller, Reads, WriteOp, Written};
use crate::store::ChangeKind;

/// A cluster after a create-or-update, and whether it was created.
#[derive(Debug, Clone)]
pub struct ClusterWrite {
    /// The cluster as stored.
    pub cluster: ManagedCluster,
    /// Whether the write created it.
    pub created: bool,
}

fn not_found(name: &str) -> Error {
    Error::NotFound(format!("cluster {name:?} not found"))
}

fn reads(name: &str) -> Reads {
    Reads {
        clusters: vec![name.to_string()],
        ..Default::default()
    }
}

fn target(name: &str) -> String {
    format!("clusters/{name}")
}

/// An admin creates or updates a cluster record (body checked).
#[derive(Debug, Clone)]
pub struct PutCluster(pub ManagedCluster);

#[async_trait]
impl WriteOp for PutCluster {
    type Output = ClusterWrite;

    fn reads(&self) -> Reads {
        reads(&self.0.metadata.name)
    }

    async fn apply(&self, batch: &mut Batch<'_>) -> Result<ClusterWrite> {
        put(batch, &self.0).await
    }

    fn audit(&self, w: &ClusterWrite) -> Option<Audit> {
        Some(Audit {
            action: "cluster.put",
            target: target(&self.0.metadata.name),
            details: json!({"labels": w.cluster.metadata.labels}),
        })
    }
}

/// A label change: `Some` sets, `None` removes.
#[derive(Debug, Clone)]
pub struct SetLabels {
    /// The cluster.
    pub name: String,
    /// The labels to set or remove.
    pub labels: BTreeMap<String, Option<String>>,
}

#[async_trait]
impl WriteOp for SetLabels {
    type Output = ManagedCluster;

    fn reads(&self) -> Reads {
        reads(&self.name)
    }

    async fn apply(&self, batch: &mut Batch<'_>) -> Result<ManagedCluster> {
        set_labels(batch, self).await
    }

    fn audit(&self, _: &ManagedCluster) -> Option<Audit> {
        Some(Audit {
            action: "cluster.label",
            target: target(&self.name),
            details: json!({"labels": self.labels}),
        })
    }
}

/// Marks a cluster as having a joined agent.
#[derive(Debug, Clone)]
pub struct MarkJoined(pub String);

#[async_trait]
impl WriteOp for MarkJoined {
    type Output = ManagedCluster;

    fn reads(&self) -> Reads {
        reads(&self.0)
    }

    async fn apply(&self, batch: &mut Batch<'_>) -> Result<ManagedCluster> {
        mark_joined(batch, &self.0).await
    }
}

/// An admin deletes a cluster (see [`delete`]).
#[derive(Debug, Clone)]
pub struct DeleteCluster {
    /// The cluster.
    pub name: String,
    /// Remove everything now, whatever the agent did.
    pub force: bool,
}

#[async_trait]
impl WriteOp for DeleteCluster {
    type Output = ClusterDeletion;

    fn reads(&self) -> Reads {
        reads(&self.name)
    }

    async fn apply(&self, batch: &mut Batch<'_>) -> Result<ClusterDeletion> {
        delete(batch, &self.name, self.force).await
    }

    fn audit(&self, d: &ClusterDeletion) -> Option<Audit> {
        Some(Audit {
            action: "cluster.delete",
            target: target(&self.name),
            details: json!({"force": self.force, "removed": d.removed, "worksLeft": d.works_left}),
        })
    }
}

async fn write(
    batch: &mut Batch<'_>,
    old: Option<&ManagedCluster>,
    mut new: ManagedCluster,
) -> Result<ManagedCluster> {
    new.metadata.resource_version = Some(batch.next_index().to_string());
    batch.tx.put_cluster(&new, batch.next_index()).await?;
    batch.record_cluster(&new.metadata.name.clone(), old, Some(&new));
    Ok(new)
}

/// Creates or updates a cluster record. Status stays the hub's.
async fn put(batch: &mut Batch<'_>, body: &ManagedCluster) -> Result<ClusterWrite> {
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
                return Ok(ClusterWrite {
                    cluster: new,
                    created: false,
                });
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
    Ok(ClusterWrite {
        created: old.is_none(),
        cluster: write(batch, old.as_ref(), new).await?,
    })
}

/// Sets or removes labels.
async fn set_labels(batch: &mut Batch<'_>, patch: &SetLabels) -> Result<ManagedCluster> {
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
        return Ok(old);
    }
    write(batch, Some(&old), new).await
}

/// Marks the cluster as joined by an agent: works created from now on get its finalizer.
async fn mark_joined(batch: &mut Batch<'_>, name: &str) -> Result<ManagedCluster> {
    let old = batch
        .tx
        .get_cluster(name)
        .await?
        .ok_or_else(|| not_found(name))?;
    let mut new = old.clone();
    let now = batch.now;
    set_condition(
        &mut new.status.conditions,
        JOINED,
        "True",
        "AgentJoined",
        "the cluster's agent joined",
        now,
    );
    set_condition(
        &mut new.status.conditions,
        ACCEPTED,
        "True",
        "HubClusterAdminAccepted",
        "accepted by the hub",
        now,
    );
    new.spec.hub_accepts_client = true;
    if new == old {
        return Ok(old);
    }
    write(batch, Some(&old), new).await
}

/// Deletes a cluster: every work is marked deleting (removed at once when no agent holds
/// it), and the record goes when its last work does. `force` removes everything now and
/// lists the works whose resources may still be on the cluster.
async fn delete(batch: &mut Batch<'_>, name: &str, force: bool) -> Result<ClusterDeletion> {
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
        if !works::mark_deleting(batch, &w, marked).await?.gone {
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
    Ok(ClusterDeletion {
        cluster: name.to_string(),
        removed,
        works_left: left,
    })
}

impl Hub {
    /// Creates or updates a cluster record (admin); with `by`, audited in its transaction.
    #[tracing::instrument(skip(self, cluster, by))]
    pub async fn put_cluster(
        &self,
        name: &str,
        mut cluster: ManagedCluster,
        by: Option<Caller>,
    ) -> Result<Written<ClusterWrite>> {
        validate_cluster(name, &mut cluster)?;
        self.writer.write_by(PutCluster(cluster), by).await
    }

    /// Sets (`Some`) or removes (`None`) cluster labels (admin).
    #[tracing::instrument(skip(self, labels, by))]
    pub async fn set_cluster_labels(
        &self,
        name: &str,
        labels: BTreeMap<String, Option<String>>,
        by: Option<Caller>,
    ) -> Result<Written<ManagedCluster>> {
        validate_label_patch(name, &labels)?;
        let patch = SetLabels {
            name: name.into(),
            labels,
        };
        self.writer.write_by(patch, by).await
    }

    /// Marks a cluster as having a joined agent (registration).
    #[tracing::instrument(skip(self))]
    pub async fn mark_cluster_joined(&self, name: &str) -> Result<ManagedCluster> {
        Ok(self.writer.write(MarkJoined(name.into())).await?.value)
    }

    /// Deletes a cluster (see [`delete`]).
    #[tracing::instrument(skip(self, by))]
    pub async fn delete_cluster(
        &self,
        name: &str,
        force: bool,
        by: Option<Caller>,
    ) -> Result<Written<ClusterDeletion>> {
        validate_cluster_name(name)?;
        let op = DeleteCluster {
            name: name.into(),
            force,
        };
        self.writer.write_by(op, by).await
    }

    /// Reads one cluster as stored; with `block`, first waits until it changed past the
    /// index.
    pub async fn get_cluster(
        &self,
        name: &str,
        block: Option<Block>,
    ) -> Result<Indexed<Option<ManagedCluster>>> {
        validate_cluster_name(name)?;
        let watch = || {
            let n = name.to_string();
            Watch::changes(move |ch| ch.kind == ChangeKind::Cluster && ch.name == n)
        };
        query::run(&self.feed, block, watch, || async {
            Ok(self.store.get_cluster(name).await?)
        })
        .await
    }

    /// One cluster as its readers see it: with its last lease.
    #[tracing::instrument(skip(self))]
    pub async fn read_cluster(
        &self,
        name: &str,
        block: Option<Block>,
    ) -> Result<Indexed<Option<ManagedCluster>>> {
        let mut read = self.get_cluster(name, block).await?;
        if let Some(c) = read.data.take() {
            read.data = Some(with_lease(c, &self.leases().await?));
        }
        Ok(read)
    }

    /// How many clusters are Available `True`, `False` and `Unknown` (no condition yet
    /// counts as Unknown), for metrics and alerts.
    pub async fn count_clusters_by_availability(&self) -> Result<[(&'static str, u64); 3]> {
        let mut counts = [("True", 0), ("False", 0), ("Unknown", 0)];
        for c in self.store.list_clusters().await? {
            let status = c
                .condition(api::status::CLUSTER_AVAILABLE)
                .map(|c| c.status.as_str())
                .unwrap_or("Unknown");
            if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == status) {
                slot.1 += 1;
            }
        }
        Ok(counts)
    }

    /// Lists clusters matching a selector, as stored.
    pub async fn list_clusters(
        &self,
        selector: &Selector,
        block: Option<Block>,
    ) -> Result<List<ManagedCluster>> {
        let watch = || {
            let sel = selector.clone();
            Watch::changes(move |ch| {
                ch.kind == ChangeKind::Cluster
                    && (sel.matches(&ch.labels)
                        || ch.prev_labels.as_ref().is_some_and(|l| sel.matches(l)))
            })
        };
        let read = || async {
            let all = self.store.list_clusters().await?;
            Ok(all
                .into_iter()
                .filter(|c| selector.matches(&c.metadata.labels))
                .collect())
        };
        let Indexed { data, index } = query::run(&self.feed, block, watch, read).await?;
        Ok(List::new("ManagedClusterList", data, index, None))
    }

    /// The clusters matching a selector that `who` may read, with their last lease.
    #[tracing::instrument(skip(self, who), fields(actor = %who.actor(), selector = ?selector))]
    pub async fn list_clusters_for(
        &self,
        who: &Principal,
        selector: &Selector,
        block: Option<Block>,
    ) -> Result<List<ManagedCluster>> {
        let scope = self.readable_clusters(who).await?;
        let mut list = self.list_clusters(selector, block).await?;
        if let Some(scope) = scope {
            list.items.retain(|c| scope.contains(&c.metadata.name));
        }
        let leases = self.leases().await?;
        list.items = list
            .items
            .into_iter()
            .map(|c| with_lease(c, &leases))
            .collect();
        Ok(list)
    }
}
