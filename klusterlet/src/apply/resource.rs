//! Where a manifest lives on the cluster, what its apply came to.

use std::fmt;

use api::ManifestResourceMeta;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::ApplyError;

/// Where a manifest lives on the cluster: enough to read, watch or delete it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResourceRef {
    /// API group ("" for core).
    pub group: String,
    /// API version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Plural resource.
    pub resource: String,
    /// Namespace ("" when cluster-scoped).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ResourceRef {
    /// The `resourceMeta` of a manifest status.
    pub fn meta(&self, ordinal: i32) -> ManifestResourceMeta {
        ManifestResourceMeta {
            ordinal,
            group: self.group.clone(),
            version: self.version.clone(),
            kind: self.kind.clone(),
            resource: self.resource.clone(),
            name: self.name.clone(),
            namespace: self.namespace.clone(),
        }
    }

    /// The `ApiResource` to build an `Api<DynamicObject>` (or a watcher) for this resource.
    pub fn api_resource(&self) -> ApiResource {
        let gvk = GroupVersionKind::gvk(&self.group, &self.version, &self.kind);
        ApiResource::from_gvk_with_plural(&gvk, &self.resource)
    }

    /// `apiVersion` of the resource (`v1`, `apps/v1`).
    pub fn api_version(&self) -> String {
        api_version(&self.group, &self.version)
    }

    /// Namespaced iff the namespace is not empty.
    pub fn is_namespaced(&self) -> bool {
        !self.namespace.is_empty()
    }

    /// `Api<DynamicObject>` for this resource's namespace (or the cluster).
    pub fn api(&self, client: kube::Client) -> Api<DynamicObject> {
        let ar = self.api_resource();
        if self.is_namespaced() {
            Api::namespaced_with(client, &self.namespace, &ar)
        } else {
            Api::all_with(client, &ar)
        }
    }
}

impl fmt::Display for ResourceRef {
    /// `Kind namespace/name`, or `Kind name` when cluster-scoped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// What became of one manifest of a work.
#[derive(Debug, Clone)]
pub struct ManifestOutcome {
    /// Its index in `spec.workload.manifests`.
    pub ordinal: i32,
    /// Where it lives, when its kind could be resolved.
    pub reference: Option<ResourceRef>,
    /// The live object after the apply (or as found, for ReadOnly and an existing
    /// CreateOnly object), or why not.
    pub result: Result<DynamicObject, ApplyError>,
}

/// What a deletion found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The object is gone (or was never there).
    Gone,
    /// Deletion was asked for; the object still exists (finalizers, foreground).
    Deleting,
    /// An object with that name exists but with another uid: not ours, left alone.
    NotOurs,
}

/// The options of one manifest from `spec.manifestConfigs`, merged OCM's way: the first
/// matching entry that has feedback rules gives them, the first that has an update
/// strategy gives it.
/// The apiVersion and kind of a manifest, and the metadata it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestId {
    /// API group ("" for core).
    pub group: String,
    /// API version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`, when given.
    pub namespace: Option<String>,
}

impl ManifestId {
    /// Reads `apiVersion`, `kind`, `metadata.name` and `metadata.namespace`; fails (reason
    /// `Invalid`) on anything that cannot be applied.
    pub fn parse(ordinal: i32, manifest: &Value) -> Result<ManifestId, ApplyError> {
        let Some(object) = manifest.as_object() else {
            return Err(ApplyError::invalid(ordinal, "is not a JSON object"));
        };
        let text = |key: &str| object.get(key).and_then(Value::as_str).unwrap_or_default();
        let api_version = text("apiVersion");
        let kind = text("kind");
        if api_version.is_empty() || kind.is_empty() {
            return Err(ApplyError::invalid(
                ordinal,
                "apiVersion and kind are required",
            ));
        }
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        if version.is_empty()
            || version.contains('/')
            || (group.is_empty() && api_version.contains('/'))
        {
            return Err(ApplyError::invalid(
                ordinal,
                format!("apiVersion {api_version:?} is not GROUP/VERSION or VERSION"),
            ));
        }
        let metadata = object.get("metadata").and_then(Value::as_object);
        let meta_text = |key: &str| {
            metadata
                .and_then(|m| m.get(key))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let Some(name) = meta_text("name") else {
            return Err(ApplyError::invalid(
                ordinal,
                format!("{kind} has no metadata.name (generateName cannot be applied)"),
            ));
        };
        Ok(ManifestId {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
            name: name.to_string(),
            namespace: meta_text("namespace").map(str::to_string),
        })
    }

    /// `apiVersion` as written.
    pub fn api_version(&self) -> String {
        api_version(&self.group, &self.version)
    }

    pub(super) fn gvk(&self) -> GroupVersionKind {
        GroupVersionKind::gvk(&self.group, &self.version, &self.kind)
    }
}

pub(super) fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// `deployments.apps`, `configmaps`: how the apiserver names a resource in messages.
fn qualified_resource(r: &ResourceRef) -> String {
    if r.group.is_empty() {
        r.resource.clone()
    } else {
        format!("{}.{}", r.resource, r.group)
    }
}

impl ApplyError {
    /// `NotFound`, worded as the apiserver words it (`deployments.apps "x" not found`);
    /// retryable, since the object may yet appear.
    pub fn not_found(r: &ResourceRef) -> Self {
        ApplyError::new(
            "NotFound",
            format!("{} \"{}\" not found", qualified_resource(r), r.name),
            true,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_is_worded_as_the_apiserver_words_it() {
        let r = ResourceRef {
            group: "apps".into(),
            version: "v1".into(),
            kind: "Deployment".into(),
            resource: "deployments".into(),
            namespace: "n".into(),
            name: "web".into(),
        };
        let nf = ApplyError::not_found(&r);
        assert_eq!(nf.message, "deployments.apps \"web\" not found");
    }
}
