//! ManifestWork rules: what a create/replace/delete/status write does, the `Deleting`
//! condition readers see, and the reads of one work.
//!
//! The spans of these calls (and of the lists in `work_lists`) are at debug level: nothing
//! inside them logs, and at info, creating one per request cost ~3 % of the hub's CPU
//! under a stream of creates (docs/benchmarks.md). `HUB_LOG=hub=debug` shows them.

use std::borrow::Cow;
use std::collections::BTreeMap;

use api::fleet::SET_LABEL;
use api::{CLEANUP_FINALIZER, Condition, ManifestWork, ManifestWorkStatus};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::Hub;
use super::cluster_status::joined;
use super::error::{Error, Result};
use super::executor::check_executor_change;
use super::preconditions::Preconditions;
pub use super::preconditions::etag;
use super::query::{self, Block, Indexed, Watch};
use super::secrets::{PlaceholderKey, mask_secrets};
use super::validate::{validate_cluster_name, validate_work};
use super::writer::{Audit, Batch, Caller, Reads, WriteOp, Written};
use crate::store::{ChangeKind, StoredWork};

/// The condition the hub sets on a work written for a cluster without a joined agent.
pub use api::status::AGENT_JOINED;
/// Its reason: the cluster has no joined agent.
pub const NO_AGENT: &str = "NoAgent";

/// The result of a work write.
#[derive(Debug, Clone)]
pub struct WorkWrite {
    /// The work as it is now (with `Deleting` when deleting, once presented).
    pub work: ManifestWork,
    /// Whether the write removed it.
    pub gone: bool,
    /// Whether the write created it.
    pub created: bool,
    /// `work`'s JSON as the write stored it, when the write stored `work` (an answer can be
    /// sent without serializing the work again).
    pub stored: Option<std::sync::Arc<str>>,
}

/// What the writer of a work may do besides writing it.
#[derive(Debug, Clone, Copy)]
pub struct WriterRights {
    /// It may read the work: a refusal may name the current version.
    pub reads: bool,
    /// It may set, change or remove `spec.executor`
    /// ([`super::executor::may_set_executor`]).
    pub executor: bool,
}

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
    /// The set writing it (`<namespace>.<name>`, its [`SET_LABEL`] value); `None` for users.
    pub owner: Option<String>,
    /// Whether the writer may set, change or remove `spec.executor`
    /// ([`super::executor::may_set_executor`]; a set's works: checked when the set was written).
    pub may_set_executor: bool,
}

fn target(cluster: &str, name: &str) -> String {
    format!("clusters/{cluster}/manifestworks/{name}")
}

fn work_reads(cluster: &str, name: &str, with_cluster: bool) -> Reads {
    Reads {
        works: vec![(cluster.to_string(), name.to_string())],
        clusters: if with_cluster {
            vec![cluster.to_string()]
        } else {
            Vec::new()
        },
    }
}

#[async_trait]
impl WriteOp for PutWork {
    type Output = WorkWrite;

    fn reads(&self) -> Reads {
        work_reads(&self.cluster, &self.name, true)
    }

    async fn apply(&self, batch: &mut Batch<'_>) -> Result<WorkWrite> {
        put(batch, self).await
    }

    fn audit(&self, w: &WorkWrite) -> Option<Audit> {
        Some(Audit {
            action: "work.put",
            target: target(&self.cluster, &self.name),
            details: json!({
                "generation": w.work.metadata.generation,
                "resourceVersion": w.work.metadata.resource_version,
                "created": w.created,
            }),
        })
    }
}

/// Asks for a work's deletion.
#[derive(Debug, Clone)]
pub struct DeleteWork {
    /// The cluster.
    pub cluster: String,
    /// The work.
    pub name: String,
    /// The set deleting it (`<namespace>.<name>`); `None` for users.
    pub owner: Option<String>,
}

#[async_trait]
impl WriteOp for DeleteWork {
    type Output = WorkWrite;

    fn reads(&self) -> Reads {
        work_reads(&self.cluster, &self.name, false)
    }

    async fn apply(&self, batch: &mut Batch<'_>) -> Result<WorkWrite> {
        delete(batch, &self.cluster, &self.name, self.owner.as_deref()).await
    }

    fn audit(&self, w: &WorkWrite) -> Option<Audit> {
        Some(Audit {
            action: "work.delete",
            target: target(&self.cluster, &self.name),
            details: json!({"removed": w.gone}),
        })
    }
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

#[async_trait]
impl WriteOp for PutStatus {
    type Output = WorkWrite;

    fn reads(&self) -> Reads {
        work_reads(&self.cluster, &self.name, false)
    }

    async fn apply(&self, batch: &mut Batch<'_>) -> Result<WorkWrite> {
        put_status(batch, self).await
    }
}

/// The agent removes a finalizer after cleaning up.
#[derive(Debug, Clone)]
pub struct RemoveFinalizer {
    /// The cluster.
    pub cluster: String,
    /// The work.
    pub name: String,
    /// The finalizer.
    pub finalizer: String,
}

#[async_trait]
impl WriteOp for RemoveFinalizer {
    type Output = WorkWrite;

    fn reads(&self) -> Reads {
        work_reads(&self.cluster, &self.name, false)
    }

    async fn apply(&self, batch: &mut Batch<'_>) -> Result<WorkWrite> {
        remove_finalizer(batch, &self.cluster, &self.name, &self.finalizer).await
    }
}

/// Adds what readers see but nobody stores: the hub's `Deleting` condition.
pub fn present(mut work: ManifestWork) -> ManifestWork {
    if let Some(ts) = work.metadata.deletion_timestamp {
        work.status
            .conditions
            .retain(|c| c.type_ != api::status::DELETING);
        work.status.conditions.push(Condition {
            type_: api::status::DELETING.into(),
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

fn outcome(work: ManifestWork, gone: bool) -> Result<WorkWrite> {
    Ok(WorkWrite {
        work,
        gone,
        created: false,
        stored: None,
    })
}

/// The set that keeps a work: its [`SET_LABEL`] value, `<namespace>.<name>`.
pub fn owning_set(work: &ManifestWork) -> Option<&str> {
    work.metadata.labels.get(SET_LABEL).map(String::as_str)
}

/// A work a set keeps is written only by that set, and only a set may label a work as its
/// own (a user's label would hand the work to the set, or hide it from its user).
fn check_owner(
    old: Option<&ManifestWork>,
    owner: Option<&str>,
    new: &ManifestWork,
    name: &str,
) -> Result<()> {
    let kept_by = old.and_then(owning_set);
    if let Some(set) = kept_by
        && Some(set) != owner
    {
        let set = set.replacen('.', "/", 1);
        return Err(Error::Owned {
            message: format!(
                "manifestwork {name:?} is kept by ManifestWorkReplicaSet {set}: change it through the set"
            ),
            set,
        });
    }
    match owner {
        None if owning_set(new).is_some() => Err(Error::invalid(
            format!("metadata.labels[{SET_LABEL}]"),
            "is set by the hub on the works a ManifestWorkReplicaSet keeps; remove it",
        )),
        Some(set) if old.is_some() && kept_by.is_none() => Err(Error::Conflict(format!(
            "a manifestwork named {name:?} that ManifestWorkReplicaSet {} does not keep is in the way",
            set.replacen('.', "/", 1)
        ))),
        _ => Ok(()),
    }
}

/// Creates or replaces a work. Users never change finalizers or status.
pub(super) async fn put(batch: &mut Batch<'_>, put: &PutWork) -> Result<WorkWrite> {
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
    let what = format!("manifestwork {name:?}");
    let pre = Preconditions {
        what: &what,
        if_match: put.if_match.as_deref(),
        body_rv: put.work.metadata.resource_version.as_deref(),
        caller_reads: put.caller_reads,
    };
    let old = batch.tx.get_work(cluster_name, name).await?;
    check_executor_change(
        old.as_ref().and_then(|o| o.spec.executor.as_ref()),
        put.work.spec.executor.as_ref(),
        put.may_set_executor,
        &what,
    )?;
    let Some(old) = old else {
        pre.for_create()?;
        check_owner(None, put.owner.as_deref(), &put.work, name)?;
        let mut work = put.work.clone();
        let joined = joined(&cluster);
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
        if !joined {
            mark_no_agent(&mut work, cluster_name, batch.now);
        }
        let stored = batch.tx.put_work(&work, batch.next_index()).await?;
        batch.record_work(cluster_name, name, None, Some(&work), false);
        return Ok(WorkWrite {
            work,
            gone: false,
            created: true,
            stored: Some(stored),
        });
    };
    if old.metadata.deletion_timestamp.is_some() {
        return Err(Error::Deleting(format!(
            "manifestwork {name:?} is being deleted"
        )));
    }
    pre.for_replace(rv(&old))?;
    check_owner(Some(&old), put.owner.as_deref(), &put.work, name)?;
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
    if spec_changed && !joined(&cluster) {
        mark_no_agent(&mut work, cluster_name, batch.now);
    }
    if work == old {
        // Nothing changed: no new index, like a no-op update in Kubernetes.
        return outcome(old, false);
    }
    work.metadata.resource_version = Some(batch.next_index().to_string());
    let stored = batch.tx.put_work(&work, batch.next_index()).await?;
    batch.record_work(cluster_name, name, Some(&old), Some(&work), false);
    Ok(WorkWrite {
        stored: Some(stored),
        ..outcome(work, false)?
    })
}

/// Says on a work written for a cluster without a joined agent that nothing applies it
/// yet (and how that changes); the agent's first status report replaces it.
fn mark_no_agent(work: &mut ManifestWork, cluster: &str, now: DateTime<Utc>) {
    let conditions = &mut work.status.conditions;
    conditions.retain(|c| c.type_ != AGENT_JOINED);
    conditions.push(Condition {
        type_: AGENT_JOINED.into(),
        status: "False".into(),
        reason: NO_AGENT.into(),
        message: format!(
            "cluster {cluster:?} has no joined agent: nothing applies this work until one joins (`klusterlet join` on the cluster, then `hub accept {cluster}`)"
        ),
        observed_generation: work.metadata.generation,
        last_transition_time: Some(now),
    });
}

/// Asks for a work's deletion: gone at once without finalizers, else marked deleting.
pub(super) async fn delete(
    batch: &mut Batch<'_>,
    cluster: &str,
    name: &str,
    owner: Option<&str>,
) -> Result<WorkWrite> {
    let old = batch
        .tx
        .get_work(cluster, name)
        .await?
        .ok_or_else(|| not_found(cluster, name))?;
    check_owner(Some(&old), owner, &old, name)?;
    if old.metadata.deletion_timestamp.is_some() {
        return outcome(old, false);
    }
    let mut work = old.clone();
    work.metadata.deletion_timestamp = Some(batch.now);
    mark_deleting(batch, &old, work).await
}

/// Marks a work deleting, or removes it when no finalizer holds it.
pub(super) async fn mark_deleting(
    batch: &mut Batch<'_>,
    old: &ManifestWork,
    mut work: ManifestWork,
) -> Result<WorkWrite> {
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
async fn put_status(batch: &mut Batch<'_>, put: &PutStatus) -> Result<WorkWrite> {
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
    status
        .conditions
        .retain(|c| c.type_ != api::status::DELETING);
    if status == old.status {
        return outcome(old, false);
    }
    // Only the status changes, so the work is moved, not cloned (a copy of a 500-manifest
    // work's spec and status per report), and its labels are the old ones too.
    let mut work = old;
    work.status = status;
    work.metadata.resource_version = Some(batch.next_index().to_string());
    batch.tx.put_work(&work, batch.next_index()).await?;
    batch.record_work(&put.cluster, &put.name, Some(&work), Some(&work), true);
    outcome(work, false)
}

/// Removes a finalizer; a deleting work whose last finalizer goes is removed, and so is a
/// deleting cluster whose last work goes.
async fn remove_finalizer(
    batch: &mut Batch<'_>,
    cluster: &str,
    name: &str,
    finalizer: &str,
) -> Result<WorkWrite> {
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
        remove_if_drained(batch, cluster).await?;
        return outcome(work, true);
    }
    work.metadata.resource_version = Some(batch.next_index().to_string());
    batch.tx.put_work(&work, batch.next_index()).await?;
    batch.record_work(cluster, name, Some(&old), Some(&work), false);
    outcome(work, false)
}

/// Removes a deleting cluster once its last work is gone.
async fn remove_if_drained(batch: &mut Batch<'_>, name: &str) -> Result<()> {
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

impl Hub {
    /// Checks a work as [`put_work`](Self::put_work) would (against the path, namespace
    /// filled in) without storing it: a dry run.
    pub fn check_work(
        &self,
        cluster: &str,
        name: &str,
        mut work: ManifestWork,
    ) -> Result<ManifestWork> {
        validate_work(cluster, name, &mut work)?;
        Ok(work)
    }

    /// Creates or replaces a work (body validated against the path first); with `by`, its
    /// audit entry commits with it.
    pub async fn put_work(
        &self,
        cluster: &str,
        name: &str,
        work: ManifestWork,
        if_match: Option<String>,
        by: Option<Caller>,
    ) -> Result<Written<WorkWrite>> {
        let rights = WriterRights {
            reads: true,
            executor: true,
        };
        self.put_work_for(cluster, name, work, if_match, rights, by)
            .await
    }

    /// [`put_work`](Self::put_work) for a caller who may or may not read the work:
    /// `rights` say whether a refusal may name the current version and whether it may set,
    /// change or remove `spec.executor` (else 403).
    #[tracing::instrument(level = "debug", skip(self, work, if_match, by), fields(actor = by.as_ref().map(|b| b.actor.as_str())))]
    pub async fn put_work_for(
        &self,
        cluster: &str,
        name: &str,
        mut work: ManifestWork,
        if_match: Option<String>,
        rights: WriterRights,
        by: Option<Caller>,
    ) -> Result<Written<WorkWrite>> {
        validate_work(cluster, name, &mut work)?;
        let put = PutWork {
            cluster: cluster.into(),
            name: name.into(),
            work,
            if_match,
            caller_reads: rights.reads,
            owner: None,
            may_set_executor: rights.executor,
        };
        presented(self.writer.write_by(put, by).await?)
    }

    /// Asks for a work's deletion; with `by`, its audit entry commits with it.
    #[tracing::instrument(level = "debug", skip(self, by), fields(actor = by.as_ref().map(|b| b.actor.as_str())))]
    pub async fn delete_work(
        &self,
        cluster: &str,
        name: &str,
        by: Option<Caller>,
    ) -> Result<Written<WorkWrite>> {
        validate_cluster_name(cluster)?;
        let op = DeleteWork {
            cluster: cluster.into(),
            name: name.into(),
            owner: None,
        };
        presented(self.writer.write_by(op, by).await?)
    }

    /// Writes a work's status (the cluster's agent).
    #[tracing::instrument(level = "debug", skip(self, status))]
    pub async fn put_work_status(
        &self,
        cluster: &str,
        name: &str,
        status: ManifestWorkStatus,
    ) -> Result<Written<WorkWrite>> {
        validate_cluster_name(cluster)?;
        let op = PutStatus {
            cluster: cluster.into(),
            name: name.into(),
            status,
        };
        presented(self.writer.write(op).await?)
    }

    /// Removes a finalizer (the cluster's agent, after cleaning up).
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn remove_work_finalizer(
        &self,
        cluster: &str,
        name: &str,
        finalizer: &str,
    ) -> Result<Written<WorkWrite>> {
        validate_cluster_name(cluster)?;
        let op = RemoveFinalizer {
            cluster: cluster.into(),
            name: name.into(),
            finalizer: finalizer.into(),
        };
        presented(self.writer.write(op).await?)
    }

    /// Reads one work; with `block`, first waits until it changed past the index.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn get_work(
        &self,
        cluster: &str,
        name: &str,
        block: Option<Block>,
    ) -> Result<Indexed<Option<ManifestWork>>> {
        validate_cluster_name(cluster)?;
        let watch = || {
            let (c, n) = (cluster.to_string(), name.to_string());
            Watch::changes(move |ch| ch.kind == ChangeKind::Work && ch.cluster == c && ch.name == n)
                .of_cluster(Some(cluster))
        };
        query::run(&self.feed, block, watch, || async {
            Ok(self.store.get_work(cluster, name).await?.map(present))
        })
        .await
    }
}

/// A work write as readers see its work.
fn presented(mut w: Written<WorkWrite>) -> Result<Written<WorkWrite>> {
    w.value.work = present(w.value.work);
    Ok(w)
}
