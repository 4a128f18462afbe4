//! Authorization: who may do what to which cluster, lists filtered to a caller's scope, and
//! `Secret` data hidden from API tokens without the `secrets` verb.

use api::{ManifestWork, Verb};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Error, Hub, Result};
use crate::auth::Principal;

/// What a caller wants to do to a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read the cluster record and its works.
    Read,
    /// Create, replace, delete works.
    WriteWorks,
    /// The agent's own writes: status, finalizers, lease.
    AgentWrite,
}

fn forbidden(who: &Principal, action: Action, cluster: &str) -> Error {
    let what = match action {
        Action::Read => "read",
        Action::WriteWorks => "write the works of",
        Action::AgentWrite => "write status, finalizers or the lease of",
    };
    Error::Forbidden(format!(
        "{} may not {what} cluster {cluster:?}",
        who.actor()
    ))
}

impl Hub {
    /// Allows or refuses `action` on `cluster` for `who`.
    pub async fn authorize(&self, who: &Principal, cluster: &str, action: Action) -> Result<()> {
        let allowed = match who {
            Principal::Admin => action != Action::AgentWrite,
            Principal::Agent { cluster: own } => own == cluster && action != Action::WriteWorks,
            Principal::Api { scope, .. } => {
                let verb = match action {
                    Action::Read => Verb::Read,
                    Action::WriteWorks => Verb::Write,
                    Action::AgentWrite => return Err(forbidden(who, action, cluster)),
                };
                let in_scope = scope.clusters.iter().any(|c| c == cluster)
                    || match &scope.selector {
                        Some(sel) => self
                            .store()
                            .get_cluster(cluster)
                            .await?
                            .is_some_and(|c| sel.matches(&c.metadata.labels)),
                        None => false,
                    };
                in_scope && scope.verbs.contains(&verb)
            }
            Principal::Bootstrap { .. } | Principal::Registrant { .. } => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(forbidden(who, action, cluster))
        }
    }

    /// The clusters a caller may read, or `None` for all of them. Lists across clusters are
    /// filtered to this, never refused.
    pub async fn readable_clusters(&self, who: &Principal) -> Result<Option<Vec<String>>> {
        match who {
            Principal::Admin => Ok(None),
            Principal::Agent { cluster } => Ok(Some(vec![cluster.clone()])),
            Principal::Api { scope, .. } if scope.verbs.contains(&Verb::Read) => {
                let clusters = self.store().list_clusters().await?;
                Ok(Some(
                    clusters
                        .into_iter()
                        .filter(|c| scope.covers(&c.metadata.name, &c.metadata.labels))
                        .map(|c| c.metadata.name)
                        .collect(),
                ))
            }
            other => Err(Error::Forbidden(format!(
                "{} may not read works or clusters",
                other.actor()
            ))),
        }
    }
}

/// What a write answers a caller that may write a cluster's works but not read them: the
/// work's identity and versions, none of its content (spec, status, labels, annotations),
/// which the caller could not GET either.
pub fn write_receipt(work: ManifestWork) -> ManifestWork {
    let m = work.metadata;
    ManifestWork {
        metadata: api::ObjectMeta {
            name: m.name,
            namespace: m.namespace,
            uid: m.uid,
            generation: m.generation,
            resource_version: m.resource_version,
            creation_timestamp: m.creation_timestamp,
            deletion_timestamp: m.deletion_timestamp,
            finalizers: m.finalizers,
            ..Default::default()
        },
        spec: Default::default(),
        status: Default::default(),
        ..work
    }
}

/// The placeholder that stands for a secret value: `sha256:<hex>`.
fn placeholder(value: &Value) -> Value {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    Value::String(format!(
        "sha256:{}",
        hex::encode(Sha256::digest(text.as_bytes()))
    ))
}

fn is_secret(manifest: &Value) -> bool {
    manifest.get("kind").and_then(Value::as_str) == Some("Secret")
        && manifest.get("apiVersion").and_then(Value::as_str) == Some("v1")
}

/// Replaces the values of `Secret` manifests' `data` and `stringData` with their hashes.
pub fn mask_secrets(work: &mut ManifestWork) {
    for m in work
        .spec
        .workload
        .manifests
        .iter_mut()
        .filter(|m| is_secret(m))
    {
        for field in ["data", "stringData"] {
            if let Some(Value::Object(map)) = m.get_mut(field) {
                for v in map.values_mut() {
                    *v = placeholder(v);
                }
            }
        }
    }
}

/// Refuses a work that carries a hash placeholder where secret data belongs: writing back
/// what a masked read returned would silently replace the secret.
pub fn reject_placeholders(work: &ManifestWork) -> Result<()> {
    for (i, m) in work
        .spec
        .workload
        .manifests
        .iter()
        .enumerate()
        .filter(|(_, m)| is_secret(m))
    {
        for field in ["data", "stringData"] {
            if let Some(Value::Object(map)) = m.get(field) {
                for (k, v) in map {
                    if v.as_str().is_some_and(|s| {
                        s.len() == 71
                            && s.starts_with("sha256:")
                            && s[7..].chars().all(|c| c.is_ascii_hexdigit())
                    }) {
                        return Err(Error::invalid(
                            format!("spec.workload.manifests[{i}].{field}.{k}"),
                            "is a sha256 placeholder from a masked read, not secret data; send the real value",
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}
