//! The ledger: what the klusterlet applied for each work, with uids, kept in the managed
//! cluster (one ConfigMap per work in the agent's namespace, like OCM's
//! AppliedManifestWork), so garbage collection survives a restart and never touches an
//! object the agent did not create.

use std::collections::BTreeMap;

use api::DeleteOption;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::apply::ResourceRef;

/// The label on every ledger ConfigMap.
const LEDGER_LABEL: &str = "fleethub.io/ledger";
/// The annotation naming the work of a ledger ConfigMap.
const WORK_ANNOTATION: &str = "fleethub.io/work";
/// The field manager of ledger writes.
const MANAGER: &str = "klusterlet-ledger";

/// One resource the klusterlet applied for a work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Where it lives.
    #[serde(rename = "ref")]
    pub reference: ResourceRef,
    /// The uid it had when applied: deletion is conditional on it.
    pub uid: String,
}

/// What the ledger remembers of one work.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// The resources applied.
    pub entries: Vec<Entry>,
    /// The work's delete option when last seen, for a work that vanished from the hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_option: Option<DeleteOption>,
    /// The work's `creationTimestamp` when last applied: a deletion the hub recorded
    /// before it was of another work of that name ([`super::eviction`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_created: Option<chrono::DateTime<chrono::Utc>>,
    /// When the agent first found the work missing from the hub: its eviction grace
    /// counts from then, across restarts ([`super::eviction`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vanished_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The work's executor when last seen: its objects are deleted as it, also after the
    /// work vanished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<api::ManifestWorkExecutor>,
}

/// Ledger failures: the managed cluster's API answered with an error.
#[derive(Debug, thiserror::Error)]
#[error("the agent's ledger: {source}")]
pub struct LedgerError {
    #[source]
    source: crate::KubeError,
}

/// The ledger of one klusterlet.
#[derive(Clone)]
pub struct Ledger {
    namespace: String,
    api: Api<ConfigMap>,
}

fn config_map_name(work: &str) -> String {
    // Work names may be 253 characters; keep the ConfigMap name within bounds and unique.
    let hash = hex::encode(&Sha256::digest(work.as_bytes())[..6]);
    let readable: String = work.chars().take(200).collect();
    format!("applied-{}-{hash}", readable.trim_end_matches(['.', '-']))
}

impl Ledger {
    /// A ledger in `namespace` (created when missing). An agent that may not create or
    /// patch namespaces (least privilege) uses the namespace as it is, when it exists and
    /// the agent may read its ConfigMaps there.
    pub async fn new(client: kube::Client, namespace: &str) -> Result<Self, LedgerError> {
        let err = |verb, source| LedgerError {
            source: crate::KubeError::new(verb, format!("namespaces/{namespace}"), source),
        };
        // The label marks the namespace as the agent's own, for `unjoin --remove-ledger`
        // (an apply that sets no field leaves no managedFields to tell by).
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(namespace.to_string()),
                labels: Some([(LEDGER_LABEL.to_string(), "true".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let ledger = Ledger {
            namespace: namespace.to_string(),
            api: Api::namespaced(client.clone(), namespace),
        };
        match Api::<Namespace>::all(client)
            .patch(namespace, &PatchParams::apply(MANAGER), &Patch::Apply(&ns))
            .await
        {
            Ok(_) => Ok(ledger),
            Err(kube::Error::Api(status)) if status.code == 403 => {
                let denied = err("patch", kube::Error::Api(status));
                ledger
                    .api
                    .list_metadata(&ListParams::default().limit(1))
                    .await
                    .map_err(|_| denied)?;
                tracing::info!(
                    namespace,
                    "may not patch the ledger's namespace; using it as it is"
                );
                Ok(ledger)
            }
            Err(e) => Err(err("patch", e)),
        }
    }

    /// The ledger in `namespace` as it is, for removing it (nothing is created).
    pub fn existing(client: kube::Client, namespace: &str) -> Self {
        Ledger {
            namespace: namespace.to_string(),
            api: Api::namespaced(client, namespace),
        }
    }

    /// Removes every record, then the namespace when this agent created it (it carries
    /// the ledger label) and no other ConfigMap is left in it; says what it did.
    pub async fn remove_all(&self) -> Result<String, LedgerError> {
        let labelled = ListParams::default().labels(&format!("{LEDGER_LABEL}=true"));
        let records = self
            .api
            .list_metadata(&labelled)
            .await
            .map_err(|e| self.err("list", e))?;
        for cm in &records.items {
            let name = cm.metadata.name.clone().unwrap_or_default();
            match self.api.delete(&name, &Default::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(self.err("delete", e)),
            }
        }
        let ns_err = |verb, source| LedgerError {
            source: crate::KubeError::new(verb, format!("namespaces/{}", self.namespace), source),
        };
        let namespaces: Api<Namespace> = Api::all(self.api.clone().into_client());
        let ours = namespaces
            .get_opt(&self.namespace)
            .await
            .map_err(|e| ns_err("get", e))?
            .is_some_and(|ns| {
                ns.metadata
                    .labels
                    .as_ref()
                    .is_some_and(|l| l.get(LEDGER_LABEL).is_some_and(|v| v == "true"))
            });
        // kube-root-ca.crt is put in every namespace by the controller-manager.
        let others = self
            .api
            .list_metadata(&ListParams::default())
            .await
            .map_err(|e| self.err("list", e))?
            .items
            .into_iter()
            .filter(|c| c.metadata.name.as_deref() != Some("kube-root-ca.crt"))
            .count();
        let count = records.items.len();
        if ours && others == 0 {
            namespaces
                .delete(&self.namespace, &Default::default())
                .await
                .map_err(|e| ns_err("delete", e))?;
            Ok(format!(
                "removed the ledger ({count} records) and its namespace {}",
                self.namespace
            ))
        } else {
            Ok(format!(
                "removed the ledger ({count} records); namespace {} stays ({})",
                self.namespace,
                if ours {
                    "other ConfigMaps are in it"
                } else {
                    "the agent did not create it"
                }
            ))
        }
    }

    fn err(&self, verb: &'static str, source: kube::Error) -> LedgerError {
        LedgerError {
            source: crate::KubeError::new(
                verb,
                format!("configmaps in namespace {}", self.namespace),
                source,
            ),
        }
    }

    /// Every work's record.
    pub async fn load_all(&self) -> Result<BTreeMap<String, Record>, LedgerError> {
        let list = self
            .api
            .list(&ListParams::default().labels(&format!("{LEDGER_LABEL}=true")))
            .await
            .map_err(|e| self.err("list", e))?;
        let mut out = BTreeMap::new();
        for cm in list.items {
            let Some(work) = cm
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(WORK_ANNOTATION))
                .cloned()
            else {
                continue;
            };
            let record = cm
                .data
                .as_ref()
                .and_then(|d| d.get("record"))
                .and_then(|r| serde_json::from_str(r).ok())
                .unwrap_or_default();
            out.insert(work, record);
        }
        Ok(out)
    }

    /// Stores a work's record.
    pub async fn save(&self, work: &str, record: &Record) -> Result<(), LedgerError> {
        let name = config_map_name(work);
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some([(LEDGER_LABEL.to_string(), "true".to_string())].into()),
                annotations: Some([(WORK_ANNOTATION.to_string(), work.to_string())].into()),
                ..Default::default()
            },
            data: Some(
                [(
                    "record".to_string(),
                    serde_json::to_string(record).unwrap_or_default(),
                )]
                .into(),
            ),
            ..Default::default()
        };
        self.api
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&cm),
            )
            .await
            .map_err(|e| self.err("patch", e))?;
        Ok(())
    }

    /// Forgets a work.
    pub async fn remove(&self, work: &str) -> Result<(), LedgerError> {
        match self
            .api
            .delete(&config_map_name(work), &Default::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(self.err("delete", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_valid_and_distinct() {
        let long = "a".repeat(253);
        let n = config_map_name(&long);
        assert!(n.len() <= 253, "{}", n.len());
        assert_ne!(config_map_name("web"), config_map_name("web2"));
        assert!(config_map_name("my.work").starts_with("applied-my.work-"));
    }
}
