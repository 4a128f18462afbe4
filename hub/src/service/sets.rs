//! ManifestWorkReplicaSets: what a user writes (a work template over placements, with our
//! overrides and replica split) and its deletion. The set controller keeps the works (see
//! [`super::set_sync`]).

use api::fleet::{ManifestWorkReplicaSet, SET_API_VERSION};
use api::{FieldError, ManifestWork, WORK_API_VERSION};
use async_trait::async_trait;
use serde_json::json;

use super::Hub;
use super::authn::Principal;
use super::error::{Error, Result};
use super::namespaced::{
    self, Author, Authored, Namespaced, check_meta, decode, encode, not_found, stamp, target,
};
use super::placement::compile_selector;
use super::preconditions::Preconditions;
use super::secrets::reject_placeholders;
use super::set_render::validate_set_spec;
use super::validate::validate_work;
use super::writer::{Audit, Batch, Caller, WriteOp, Written};
use crate::store::ObjectKind;

impl Namespaced for ManifestWorkReplicaSet {
    const KIND: ObjectKind = ObjectKind::ManifestWorkReplicaSet;
    const NOUN: &'static str = "manifestworkreplicaset";
    const PLURAL: &'static str = "manifestworkreplicasets";
    fn metadata(&self) -> &api::ObjectMeta {
        &self.metadata
    }
}

/// The value of [`api::fleet::SET_LABEL`] on a set's works: `<namespace>.<name>`.
pub fn set_key(namespace: &str, name: &str) -> String {
    format!("{namespace}.{name}")
}

/// The work a set's template makes, named after the set, for checks.
pub fn template_work(name: &str, set: &ManifestWorkReplicaSet) -> ManifestWork {
    ManifestWork {
        api_version: WORK_API_VERSION.into(),
        kind: "ManifestWork".into(),
        metadata: api::ObjectMeta {
            name: name.to_string(),
            ..Default::default()
        },
        spec: set.spec.manifest_work_template.clone(),
        status: Default::default(),
        extra: Default::default(),
    }
}

/// Checks a set body against its path: metadata, the spec (our extensions included), the
/// template as a work would be checked, and every cluster selector.
pub fn validate_set(namespace: &str, name: &str, set: &mut ManifestWorkReplicaSet) -> Result<()> {
    let mut errs = check_meta(
        namespace,
        name,
        (&set.api_version, SET_API_VERSION),
        (&set.kind, "ManifestWorkReplicaSet"),
        &mut set.metadata,
    );
    errs.extend(validate_set_spec(&set.spec));
    let mut work = template_work(name, set);
    // The template is checked as the work it becomes; its errors name the template's fields.
    if let Err(Error::Invalid { fields, .. }) = validate_work("template", name, &mut work) {
        errs.extend(fields.into_iter().filter_map(|f| {
            f.field.strip_prefix("spec.").map(|rest| FieldError {
                field: format!("spec.manifestWorkTemplate.{rest}"),
                message: f.message,
            })
        }));
    }
    if let Err(e) = reject_placeholders(&work) {
        errs.push(FieldError {
            field: "spec.manifestWorkTemplate.workload.manifests".into(),
            message: e.to_string(),
        });
    }
    for (i, o) in set.spec.overrides.iter().enumerate() {
        let path = format!("spec.overrides[{i}].clusterSelector");
        if let Err(e) = compile_selector(&o.cluster_selector, &path) {
            errs.extend(e);
        }
    }
    if let Some(split) = &set.spec.replica_split {
        for (i, w) in split.weights.iter().enumerate() {
            let path = format!("spec.replicaSplit.weights[{i}].clusterSelector");
            if let Err(e) = compile_selector(&w.cluster_selector, &path) {
                errs.extend(e);
            }
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(Error::invalid_fields(errs))
    }
}

/// A create-or-replace of a set.
#[derive(Debug)]
pub struct PutSet {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The body, validated.
    pub set: ManifestWorkReplicaSet,
    /// `If-Match`, if any.
    pub if_match: Option<String>,
    /// Who writes it: its works reach only what they may write.
    pub author: Author,
}

/// The result of a set write.
#[derive(Debug, Clone)]
pub struct SetWrite {
    /// The set as stored now.
    pub set: ManifestWorkReplicaSet,
    /// Whether the write created it.
    pub created: bool,
}

#[async_trait]
impl WriteOp for PutSet {
    type Output = SetWrite;

    async fn apply(&self, batch: &mut Batch<'_>) -> Result<SetWrite> {
        let (ns, name) = (self.namespace.as_str(), self.name.as_str());
        let what = format!("manifestworkreplicaset {name:?}");
        let pre = Preconditions {
            what: &what,
            if_match: self.if_match.as_deref(),
            body_rv: self.set.metadata.resource_version.as_deref(),
            caller_reads: true,
        };
        let old = match batch
            .tx
            .get_object(ObjectKind::ManifestWorkReplicaSet, ns, name)
            .await?
        {
            Some(o) => Some(decode::<ManifestWorkReplicaSet>(&o)?),
            None => None,
        };
        let old_author = old.as_ref().map(|o| o.author.clone());
        let old = old.map(|o| o.object);
        match &old {
            None => pre.for_create()?,
            Some(old) => {
                if old.metadata.deletion_timestamp.is_some() {
                    return Err(Error::Deleting(format!(
                        "manifestworkreplicaset {name:?} is being deleted"
                    )));
                }
                pre.for_replace(old.metadata.resource_version.as_deref().unwrap_or(""))?
            }
        }
        let mut set = self.set.clone();
        let spec_changed = old.as_ref().is_none_or(|o| o.spec != set.spec);
        stamp(
            &mut set.metadata,
            old.as_ref().map(|o| &o.metadata),
            spec_changed,
            batch.now,
        );
        set.status = old.as_ref().map(|o| o.status.clone()).unwrap_or_default();
        if old.as_ref() == Some(&set) && old_author.as_ref() == Some(&self.author) {
            return Ok(SetWrite {
                set,
                created: false,
            });
        }
        set.metadata.resource_version = Some(batch.next_index().to_string());
        let stored = encode(&Authored {
            object: &set,
            author: self.author.clone(),
        })?;
        batch
            .tx
            .put_object(
                ObjectKind::ManifestWorkReplicaSet,
                ns,
                name,
                &stored,
                batch.next_index(),
            )
            .await?;
        batch.record_object(
            ObjectKind::ManifestWorkReplicaSet,
            ns,
            name,
            set.metadata.labels.clone(),
            false,
        );
        Ok(SetWrite {
            set,
            created: old.is_none(),
        })
    }

    fn audit(&self, w: &SetWrite) -> Option<Audit> {
        Some(Audit {
            action: "manifestworkreplicaset.put",
            target: target::<ManifestWorkReplicaSet>(&self.namespace, &self.name),
            details: json!({
                "generation": w.set.metadata.generation,
                "resourceVersion": w.set.metadata.resource_version,
                "created": w.created,
            }),
        })
    }
}

/// Asks for a set's deletion: it is marked, and the set controller removes (or, with
/// `cascadeDeletionPolicy: Orphan`, releases) its works, then the set.
#[derive(Debug)]
pub struct DeleteSet {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

#[async_trait]
impl WriteOp for DeleteSet {
    type Output = ManifestWorkReplicaSet;

    async fn apply(&self, batch: &mut Batch<'_>) -> Result<ManifestWorkReplicaSet> {
        let (ns, name) = (self.namespace.as_str(), self.name.as_str());
        let stored = batch
            .tx
            .get_object(ObjectKind::ManifestWorkReplicaSet, ns, name)
            .await?
            .ok_or_else(|| not_found::<ManifestWorkReplicaSet>(ns, name))?;
        let Authored { mut object, author } = decode::<ManifestWorkReplicaSet>(&stored)?;
        if object.metadata.deletion_timestamp.is_some() {
            return Ok(object);
        }
        object.metadata.deletion_timestamp = Some(batch.now);
        object.metadata.resource_version = Some(batch.next_index().to_string());
        let text = encode(&Authored {
            object: &object,
            author,
        })?;
        batch
            .tx
            .put_object(
                ObjectKind::ManifestWorkReplicaSet,
                ns,
                name,
                &text,
                batch.next_index(),
            )
            .await?;
        batch.record_object(
            ObjectKind::ManifestWorkReplicaSet,
            ns,
            name,
            object.metadata.labels.clone(),
            false,
        );
        Ok(object)
    }

    fn audit(&self, _: &ManifestWorkReplicaSet) -> Option<Audit> {
        Some(Audit {
            action: "manifestworkreplicaset.delete",
            target: target::<ManifestWorkReplicaSet>(&self.namespace, &self.name),
            details: json!({}),
        })
    }
}

impl Hub {
    /// Creates or replaces a set; its works will reach only clusters `who` may write.
    pub async fn put_set(
        &self,
        namespace: &str,
        name: &str,
        mut set: ManifestWorkReplicaSet,
        if_match: Option<String>,
        who: &Principal,
        by: Option<Caller>,
    ) -> Result<Written<SetWrite>> {
        validate_set(namespace, name, &mut set)?;
        let op = PutSet {
            namespace: namespace.into(),
            name: name.into(),
            set,
            if_match,
            author: Author::of(who),
        };
        self.writer.write_by(op, by).await
    }

    /// Asks for a set's deletion.
    pub async fn delete_set(
        &self,
        namespace: &str,
        name: &str,
        by: Option<Caller>,
    ) -> Result<Written<ManifestWorkReplicaSet>> {
        namespaced::validate_namespace(namespace)?;
        let op = DeleteSet {
            namespace: namespace.into(),
            name: name.into(),
        };
        self.writer.write_by(op, by).await
    }
}
