//! `spec.executor` of a ManifestWork (OCM's `ManifestWorkExecutor`): the identity the
//! klusterlet applies the work's manifests as, instead of its own.
//!
//! The subject's `type` is kept as text rather than an enum so a wrong value is answered
//! with a 422 naming `spec.executor.subject.type`, not a parse error of the whole body.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Fields not modelled, kept verbatim (as `types::Extra`, named here so this module
/// depends on nothing else of the crate).
type Extra = serde_json::Map<String, serde_json::Value>;

/// The only executor subject type (as in OCM).
pub const EXECUTOR_SERVICE_ACCOUNT: &str = "ServiceAccount";

/// `spec.executor`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestWorkExecutor {
    /// Who applies the manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<ExecutorSubject>,
    /// Fields we do not model.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `spec.executor.subject`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutorSubject {
    /// `ServiceAccount`, the only type.
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub type_: String,
    /// The ServiceAccount on the managed cluster (required with `type: ServiceAccount`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<ExecutorServiceAccount>,
    /// Fields we do not model.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `spec.executor.subject.serviceAccount`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutorServiceAccount {
    /// Its namespace on the managed cluster.
    #[serde(default)]
    pub namespace: String,
    /// Its name.
    #[serde(default)]
    pub name: String,
}

impl ManifestWorkExecutor {
    /// An executor naming the ServiceAccount `namespace/name`.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        ManifestWorkExecutor {
            subject: Some(ExecutorSubject {
                type_: EXECUTOR_SERVICE_ACCOUNT.into(),
                service_account: Some(ExecutorServiceAccount {
                    namespace: namespace.into(),
                    name: name.into(),
                }),
                extra: Extra::new(),
            }),
            extra: Extra::new(),
        }
    }

    /// The ServiceAccount it names, when it is a well-formed ServiceAccount subject.
    pub fn account(&self) -> Option<&ExecutorServiceAccount> {
        let subject = self.subject.as_ref()?;
        if subject.type_ != EXECUTOR_SERVICE_ACCOUNT {
            return None;
        }
        subject
            .service_account
            .as_ref()
            .filter(|sa| !sa.namespace.is_empty() && !sa.name.is_empty())
    }
}

impl ExecutorServiceAccount {
    /// The user name Kubernetes gives it: `system:serviceaccount:<namespace>:<name>`.
    pub fn username(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }

    /// The groups Kubernetes puts it in: `system:serviceaccounts`,
    /// `system:serviceaccounts:<namespace>` and `system:authenticated`.
    pub fn groups(&self) -> Vec<String> {
        vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{}", self.namespace),
            "system:authenticated".into(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_ocm_shape_round_trips() {
        let doc = json!({"subject": {"type": "ServiceAccount",
            "serviceAccount": {"namespace": "ops", "name": "deployer"}}});
        let e: ManifestWorkExecutor = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(e, ManifestWorkExecutor::service_account("ops", "deployer"));
        assert_eq!(serde_json::to_value(&e).unwrap(), doc);
        let sa = e.account().unwrap();
        assert_eq!(sa.username(), "system:serviceaccount:ops:deployer");
        assert_eq!(
            sa.groups(),
            [
                "system:serviceaccounts",
                "system:serviceaccounts:ops",
                "system:authenticated"
            ]
        );
    }

    #[test]
    fn only_a_complete_service_account_is_an_account() {
        let mut e = ManifestWorkExecutor::service_account("ops", "");
        assert!(e.account().is_none());
        e = ManifestWorkExecutor::service_account("ops", "x");
        e.subject.as_mut().unwrap().type_ = "User".into();
        assert!(e.account().is_none());
        assert!(ManifestWorkExecutor::default().account().is_none());
    }
}
