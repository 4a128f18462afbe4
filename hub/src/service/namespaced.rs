//! What every namespaced fleet object (Placement, ManifestWorkReplicaSet) shares: its
//! metadata checked and stamped the same way as a work's, and blocking reads of one or a
//! list.

use api::selector::{Selector, validate_dns_label, validate_dns_subdomain, validate_label_key};
use api::{FieldError, ManagedCluster, ObjectMeta, Verb};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use async_trait::async_trait;
use serde_json::json;

use super::Hub;
use super::authn::{ApiScope, Principal};
use super::error::{Error, Result};
use super::preconditions::Preconditions;
use super::query::{self, Block, Indexed, Watch};
use super::validate::check_labels;
use super::writer::{Audit, Batch, Caller, WriteOp, Written};
use crate::store::{ChangeKind, ObjectKind, StoredObject};

/// A namespaced object as the hub stores it.
pub trait Namespaced:
    Serialize + DeserializeOwned + Clone + PartialEq + std::fmt::Debug + Send + Sync + 'static
{
    /// Its row kind.
    const KIND: ObjectKind;
    /// Its name in messages and audit targets (`placement`).
    const NOUN: &'static str;
    /// Its path segment (`placements`).
    const PLURAL: &'static str;
    /// The audit action of a create or replace (`placement.put`).
    const PUT_ACTION: &'static str;
    /// Its metadata.
    fn metadata(&self) -> &ObjectMeta;
    /// Its metadata, to stamp.
    fn metadata_mut(&mut self) -> &mut ObjectMeta;
    /// Whether what users write (the spec) is the same in both.
    fn same_spec(&self, other: &Self) -> bool;
    /// Takes the hub's status from the stored object: users never write it.
    fn keep_status(&mut self, stored: &Self);
    /// Checks a body against its path (every problem listed, with field paths) and fills
    /// in its namespace and name.
    fn validate(&mut self, namespace: &str, name: &str) -> Result<()>;
    /// Refuses a write that sets, changes or removes an executor its writer may not
    /// (see [`super::executor`]); objects without one pass.
    fn check_executor(&self, _old: Option<&Self>, _may_set_executor: bool) -> Result<()> {
        Ok(())
    }
}

/// Who last wrote an object's spec, and the clusters they may write works to: a set's works
/// reach only clusters that the last writer of the set and of each of its placements may
/// write (so a scoped token cannot steer an admin's set to clusters it could not reach by
/// editing the placement the set follows).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Author {
    /// As the audit log names it (`admin`, `token:<id>`).
    pub actor: String,
    /// `None`: every cluster (an admin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<AuthorScope>,
}

/// An API token's reach, captured when it wrote: revoking the token later does not move
/// any work (a revoked CI token must not take production down).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuthorScope {
    /// Clusters by name.
    #[serde(default)]
    pub clusters: Vec<String>,
    /// Clusters by label selector, in kubectl syntax.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Whether it may write works at all.
    pub writes: bool,
}

impl Author {
    /// The author of a write by `who` (admins and API tokens write fleet objects).
    pub fn of(who: &Principal) -> Author {
        let scope = match who {
            Principal::Admin => None,
            Principal::Api { scope, .. } => Some(AuthorScope {
                clusters: scope.clusters.clone(),
                selector: scope.selector.as_ref().map(|s| s.to_string()),
                writes: scope.verbs.contains(&Verb::Write),
            }),
            // Refused before any write; no reach.
            _ => Some(AuthorScope::default()),
        };
        Author {
            actor: who.actor(),
            scope,
        }
    }

    /// The reach as a checkable scope; `None` for every cluster.
    pub fn reach(&self) -> Option<ApiScope> {
        self.scope.as_ref().map(|s| ApiScope {
            clusters: if s.writes {
                s.clusters.clone()
            } else {
                Vec::new()
            },
            selector: s
                .selector
                .as_deref()
                .filter(|_| s.writes)
                .and_then(|t| Selector::parse(t).ok()),
            verbs: vec![Verb::Write],
        })
    }
}

/// Whether a reach (from [`Author::reach`]) covers a cluster.
pub fn reaches(reach: &Option<ApiScope>, cluster: &ManagedCluster) -> bool {
    reach
        .as_ref()
        .is_none_or(|s| s.covers(&cluster.metadata.name, &cluster.metadata.labels))
}

/// A stored object with its author.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Authored<T> {
    /// The object as served.
    pub object: T,
    /// Who last wrote its spec.
    #[serde(default)]
    pub author: Author,
}

/// A create-or-replace of a namespaced object's spec by a user.
#[derive(Debug)]
pub struct PutObject<T> {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The body, validated.
    pub object: T,
    /// `If-Match`, if any.
    pub if_match: Option<String>,
    /// Who writes it.
    pub author: Author,
    /// Whether the writer may set, change or remove an executor.
    pub may_set_executor: bool,
}

/// The result of a write of a namespaced object.
#[derive(Debug, Clone)]
pub struct ObjectWrite<T> {
    /// The object as stored now.
    pub object: T,
    /// Whether the write created it.
    pub created: bool,
}

#[async_trait]
impl<T: Namespaced> WriteOp for PutObject<T> {
    type Output = ObjectWrite<T>;

    async fn apply(&self, batch: &mut Batch<'_>) -> Result<ObjectWrite<T>> {
        let (ns, name) = (self.namespace.as_str(), self.name.as_str());
        let what = format!("{} {name:?}", T::NOUN);
        let pre = Preconditions {
            what: &what,
            if_match: self.if_match.as_deref(),
            body_rv: self.object.metadata().resource_version.as_deref(),
            caller_reads: true,
        };
        let old = read_object::<T>(batch, ns, name).await?;
        self.object
            .check_executor(old.as_ref().map(|o| &o.object), self.may_set_executor)?;
        match &old {
            None => pre.for_create()?,
            Some(old) => {
                if old.object.metadata().deletion_timestamp.is_some() {
                    return Err(Error::Deleting(format!("{what} is being deleted")));
                }
                pre.for_replace(
                    old.object
                        .metadata()
                        .resource_version
                        .as_deref()
                        .unwrap_or(""),
                )?
            }
        }
        let mut object = self.object.clone();
        let spec_changed = old.as_ref().is_none_or(|o| !o.object.same_spec(&object));
        stamp(
            object.metadata_mut(),
            old.as_ref().map(|o| o.object.metadata()),
            spec_changed,
            batch.now,
        );
        if let Some(old) = &old {
            object.keep_status(&old.object);
            if old.object == object && old.author == self.author {
                return Ok(ObjectWrite {
                    object,
                    created: false,
                });
            }
        }
        write_object(batch, ns, name, &mut object, &self.author, false).await?;
        Ok(ObjectWrite {
            object,
            created: old.is_none(),
        })
    }

    fn audit(&self, w: &ObjectWrite<T>) -> Option<Audit> {
        Some(Audit {
            action: T::PUT_ACTION,
            target: target::<T>(&self.namespace, &self.name),
            details: json!({
                "generation": w.object.metadata().generation,
                "resourceVersion": w.object.metadata().resource_version,
                "created": w.created,
            }),
        })
    }
}

/// An object with its author, as this batch sees it.
pub async fn read_object<T: Namespaced>(
    batch: &mut Batch<'_>,
    namespace: &str,
    name: &str,
) -> Result<Option<Authored<T>>> {
    batch
        .tx
        .get_object(T::KIND, namespace, name)
        .await?
        .map(|o| decode::<T>(&o))
        .transpose()
}

/// Stores an object with its author at the batch's next index (its new resourceVersion)
/// and records the change; `status_only` when only the hub's status of it changed.
pub async fn write_object<T: Namespaced>(
    batch: &mut Batch<'_>,
    namespace: &str,
    name: &str,
    object: &mut T,
    author: &Author,
    status_only: bool,
) -> Result<()> {
    let index = batch.next_index();
    object.metadata_mut().resource_version = Some(index.to_string());
    let text = encode(&Authored {
        object: &*object,
        author: author.clone(),
    })?;
    batch
        .tx
        .put_object(T::KIND, namespace, name, &text, index)
        .await?;
    let labels = object.metadata().labels.clone();
    batch.record_object(T::KIND, namespace, name, labels, status_only);
    Ok(())
}

/// Removes an object and records the change.
pub async fn remove_object<T: Namespaced>(
    batch: &mut Batch<'_>,
    namespace: &str,
    name: &str,
) -> Result<()> {
    batch.tx.delete_object(T::KIND, namespace, name).await?;
    batch.record_object(T::KIND, namespace, name, Default::default(), false);
    Ok(())
}

/// The audit target of an object: `namespaces/{ns}/{plural}/{name}`.
pub fn target<T: Namespaced>(namespace: &str, name: &str) -> String {
    format!("namespaces/{namespace}/{}/{name}", T::PLURAL)
}

/// A 404 for an object.
pub fn not_found<T: Namespaced>(namespace: &str, name: &str) -> Error {
    Error::NotFound(format!(
        "{} {name:?} not found in namespace {namespace:?}",
        T::NOUN
    ))
}

/// Checks a namespace from a path.
pub fn validate_namespace(namespace: &str) -> Result<()> {
    validate_dns_label(namespace).map_err(|m| Error::invalid("namespace", m))
}

/// Checks `apiVersion`, `kind` and metadata of a body against its path; every problem is
/// listed. The namespace and name are filled in.
pub fn check_meta(
    namespace: &str,
    name: &str,
    (api_version, want_api_version): (&str, &str),
    (kind, want_kind): (&str, &str),
    meta: &mut ObjectMeta,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut bad = |field: String, message: String| errs.push(FieldError { field, message });
    if let Err(m) = validate_dns_label(namespace) {
        bad("metadata.namespace".into(), m);
    }
    if let Err(m) = validate_dns_subdomain(name) {
        bad("metadata.name".into(), m);
    }
    if api_version != want_api_version {
        bad(
            "apiVersion".into(),
            format!("must be {want_api_version}, not {api_version:?}"),
        );
    }
    if kind != want_kind {
        bad("kind".into(), format!("must be {want_kind}, not {kind:?}"));
    }
    if !meta.name.is_empty() && meta.name != name {
        bad(
            "metadata.name".into(),
            format!(
                "{:?} does not match the name in the path, {name:?}",
                meta.name
            ),
        );
    }
    if let Some(ns) = meta.namespace.as_deref().filter(|ns| !ns.is_empty())
        && ns != namespace
    {
        bad(
            "metadata.namespace".into(),
            format!("{ns:?} does not match the namespace in the path, {namespace:?}"),
        );
    }
    check_labels("metadata.labels", &meta.labels, &mut bad);
    for key in meta.annotations.keys() {
        if let Err(m) = validate_label_key(key) {
            bad(format!("metadata.annotations[{key}]"), m);
        }
    }
    meta.name = name.to_string();
    meta.namespace = Some(namespace.to_string());
    errs
}

/// Stamps the metadata of a write: a new object gets its uid, creation time and generation
/// 1; a replacement keeps them (and a deletion mark) and bumps the generation when its spec
/// changed. Finalizers are the hub's.
pub fn stamp(
    meta: &mut ObjectMeta,
    old: Option<&ObjectMeta>,
    spec_changed: bool,
    now: DateTime<Utc>,
) {
    match old {
        None => {
            meta.uid = Some(uuid::Uuid::new_v4().to_string());
            meta.creation_timestamp = Some(now);
            meta.deletion_timestamp = None;
            meta.generation = Some(1);
            meta.finalizers = Vec::new();
            meta.resource_version = None;
        }
        Some(old) => {
            meta.uid = old.uid.clone();
            meta.creation_timestamp = old.creation_timestamp;
            meta.deletion_timestamp = old.deletion_timestamp;
            meta.finalizers = old.finalizers.clone();
            meta.generation = Some(old.generation.unwrap_or(1) + i64::from(spec_changed));
            meta.resource_version = old.resource_version.clone();
        }
    }
}

/// Decodes a stored object with its author.
pub fn decode<T: Namespaced>(stored: &StoredObject) -> Result<Authored<T>> {
    serde_json::from_str(&stored.object).map_err(|e| {
        Error::Internal(format!(
            "stored {} {}/{} is corrupt: {e}",
            T::NOUN,
            stored.namespace,
            stored.name
        ))
    })
}

/// Every object of a kind with its author (the controllers' full read).
pub async fn list_authored<T: Namespaced>(hub: &Hub) -> Result<Vec<Authored<T>>> {
    let mut out = Vec::new();
    for stored in hub.store.list_objects(T::KIND, None).await? {
        out.push(decode::<T>(&stored)?);
    }
    Ok(out)
}

/// One object with its author.
pub async fn get_authored<T: Namespaced>(
    hub: &Hub,
    namespace: &str,
    name: &str,
) -> Result<Option<Authored<T>>> {
    hub.store
        .get_object(T::KIND, namespace, name)
        .await?
        .map(|o| decode::<T>(&o))
        .transpose()
}

/// Encodes an object for the store.
pub fn encode<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Internal(e.to_string()))
}

impl Hub {
    /// Creates or replaces an object's spec (checked first); its author is `who`.
    pub async fn put_namespaced<T: Namespaced>(
        &self,
        namespace: &str,
        name: &str,
        mut object: T,
        if_match: Option<String>,
        who: &Principal,
        by: Option<Caller>,
    ) -> Result<Written<ObjectWrite<T>>> {
        object.validate(namespace, name)?;
        let op = PutObject {
            namespace: namespace.into(),
            name: name.into(),
            object,
            if_match,
            author: Author::of(who),
            may_set_executor: super::executor::may_set_executor(who),
        };
        self.writer.write_by(op, by).await
    }

    /// One object, blocking with `block` until it changes past the caller's index.
    pub async fn get_namespaced<T: Namespaced>(
        &self,
        namespace: &str,
        name: &str,
        block: Option<Block>,
    ) -> Result<Indexed<Option<T>>> {
        validate_namespace(namespace)?;
        let kind: ChangeKind = T::KIND.into();
        let watch = || {
            let (ns, n) = (namespace.to_string(), name.to_string());
            Watch::changes(move |c| c.kind == kind && c.cluster == ns && c.name == n)
        };
        query::run(&self.feed, block, watch, || async {
            self.store
                .get_object(T::KIND, namespace, name)
                .await?
                .map(|o| decode::<T>(&o).map(|a| a.object))
                .transpose()
        })
        .await
    }

    /// Every object of a namespace (or all namespaces) whose labels `selector` matches,
    /// ordered by namespace and name, blocking with `block`.
    pub async fn list_namespaced<T: Namespaced>(
        &self,
        namespace: Option<&str>,
        selector: &Selector,
        block: Option<Block>,
    ) -> Result<Indexed<Vec<T>>> {
        if let Some(ns) = namespace {
            validate_namespace(ns)?;
        }
        let kind: ChangeKind = T::KIND.into();
        let watch = || {
            let ns = namespace.map(str::to_string);
            Watch::changes(move |c| c.kind == kind && ns.as_ref().is_none_or(|n| *n == c.cluster))
        };
        query::run(&self.feed, block, watch, || async {
            let mut out = Vec::new();
            for stored in self.store.list_objects(T::KIND, namespace).await? {
                let object = decode::<T>(&stored)?.object;
                if selector.matches(&object.metadata().labels) {
                    out.push(object);
                }
            }
            Ok(out)
        })
        .await
    }
}
