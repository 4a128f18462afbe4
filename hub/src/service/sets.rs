//! ManifestWorkReplicaSets: what a user writes (a work template over placements, with our
//! overrides and replica split) and its deletion. The set controller keeps the works (see
//! [`super::set_sync`]).

use api::fleet::{ManifestWorkReplicaSet, SET_API_VERSION};
use api::{FieldError, ManifestWork, WORK_API_VERSION};
use async_trait::async_trait;
use serde_json::json;

use super::Hub;
use super::error::{Error, Result};
use super::executor::check_executor_change;
use super::namespaced::{
    self, Authored, Namespaced, check_meta, not_found, read_object, target, write_object,
};
use super::placement::compile_selector;
use super::secrets::reject_placeholders;
use super::set_render::validate_set_spec;
use super::validate::validate_work;
use super::writer::{Audit, Batch, Caller, WriteOp, Written};
use crate::store::ObjectKind;

impl Namespaced for ManifestWorkReplicaSet {
    const KIND: ObjectKind = ObjectKind::ManifestWorkReplicaSet;
    const NOUN: &'static str = "manifestworkreplicaset";
    const PLURAL: &'static str = "manifestworkreplicasets";
    const PUT_ACTION: &'static str = "manifestworkreplicaset.put";
    fn metadata(&self) -> &api::ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut api::ObjectMeta {
        &mut self.metadata
    }
    fn same_spec(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
    fn keep_status(&mut self, stored: &Self) {
        self.status = stored.status.clone();
    }
    fn validate(&mut self, namespace: &str, name: &str) -> Result<()> {
        validate_set(namespace, name, self)
    }
    /// The set's works are written on its author's behalf: its template's executor is
    /// the author's to set.
    fn check_executor(&self, old: Option<&Self>, may_set_executor: bool) -> Result<()> {
        let executor = |s: &Self| s.spec.manifest_work_template.executor.clone();
        check_executor_change(
            old.and_then(executor).as_ref(),
            executor(self).as_ref(),
            may_set_executor,
            &format!("manifestworkreplicaset {:?}", self.metadata.name),
        )
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
        let Authored { mut object, author } =
            read_object::<ManifestWorkReplicaSet>(batch, ns, name)
                .await?
                .ok_or_else(|| not_found::<ManifestWorkReplicaSet>(ns, name))?;
        if object.metadata.deletion_timestamp.is_none() {
            object.metadata.deletion_timestamp = Some(batch.now);
            write_object(batch, ns, name, &mut object, &author, false).await?;
        }
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
