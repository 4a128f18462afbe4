//! `manifestConfigs`: which options a manifest gets, and how each update strategy writes
//! it.

use std::collections::HashMap;

use api::{
    ConditionRule, FeedbackRule, ManifestConfigOption, ManifestWork, UpdateStrategy,
    UpdateStrategyType,
};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::Value;

use super::FIELD_MANAGER;
use super::error::{ApplyError, call};
use super::ignore;
use super::resource::ResourceRef;

#[derive(Debug, Clone, Copy, Default)]
pub struct ManifestConfig<'a> {
    /// What to report from the resource's status.
    pub feedback_rules: &'a [FeedbackRule],
    /// How to apply it (`None`: Update).
    pub update_strategy: Option<&'a UpdateStrategy>,
    /// Conditions to set from the live object.
    pub condition_rules: &'a [ConditionRule],
}

/// The `manifestConfigs` options of the resource `r` of `work`. A `resourceIdentifier`
/// matches on group and resource exactly and on name and namespace with `*` wildcards,
/// as in OCM. For many manifests of one work, index its configs once with
/// [`ManifestConfigs`].
pub fn manifest_config<'a>(work: &'a ManifestWork, r: &ResourceRef) -> ManifestConfig<'a> {
    ManifestConfigs::new(work).get(r)
}

/// (group, resource, namespace, name) of a `resourceIdentifier` without wildcards.
type ExactKey<'a> = (&'a str, &'a str, &'a str, &'a str);

/// A work's `manifestConfigs`, indexed: finding the options of each manifest no longer
/// scans every config (a 500-manifest work with a config per manifest made that the
/// agent's largest cost, 250,000 comparisons per pass).
pub struct ManifestConfigs<'a> {
    options: &'a [ManifestConfigOption],
    /// Configs naming one object (no `*`), by the object; positions in config order.
    exact: HashMap<ExactKey<'a>, Vec<usize>>,
    /// Configs with a wildcard, in config order.
    wildcard: Vec<usize>,
}

impl<'a> ManifestConfigs<'a> {
    /// Indexes the configs of `work`.
    pub fn new(work: &'a ManifestWork) -> Self {
        let options = work.spec.manifest_configs.as_slice();
        let mut exact: HashMap<ExactKey<'a>, Vec<usize>> = HashMap::new();
        let mut wildcard = Vec::new();
        for (at, option) in options.iter().enumerate() {
            let id = &option.resource_identifier;
            if id.name.contains('*') || id.namespace.contains('*') {
                wildcard.push(at);
            } else {
                exact
                    .entry((&id.group, &id.resource, &id.namespace, &id.name))
                    .or_default()
                    .push(at);
            }
        }
        ManifestConfigs {
            options,
            exact,
            wildcard,
        }
    }

    /// The options of the resource `r`: for each field, the first config in order that
    /// matches `r` and sets it.
    pub fn get(&self, r: &ResourceRef) -> ManifestConfig<'a> {
        let key = (
            r.group.as_str(),
            r.resource.as_str(),
            r.namespace.as_str(),
            r.name.as_str(),
        );
        let exact = self.exact.get(&key).map(Vec::as_slice).unwrap_or_default();
        let mut config = ManifestConfig::default();
        // Both lists are in config order: merge them to keep "first match wins".
        let (mut e, mut w) = (exact.iter().peekable(), self.wildcard.iter().peekable());
        loop {
            let at = match (e.peek(), w.peek()) {
                (Some(&&a), Some(&&b)) if a < b => e.next(),
                (Some(_), None) => e.next(),
                (_, Some(_)) => w.next(),
                (None, None) => break,
            };
            let Some(option) = at.map(|&at| &self.options[at]) else {
                break;
            };
            if config_matches(option, r) {
                merge(&mut config, option);
            }
        }
        config
    }
}

/// Takes from `option` each field `config` has not got yet.
fn merge<'a>(config: &mut ManifestConfig<'a>, option: &'a ManifestConfigOption) {
    if config.feedback_rules.is_empty() && !option.feedback_rules.is_empty() {
        config.feedback_rules = &option.feedback_rules;
    }
    if config.update_strategy.is_none() {
        config.update_strategy = option.update_strategy.as_ref();
    }
    if config.condition_rules.is_empty() && !option.condition_rules.is_empty() {
        config.condition_rules = &option.condition_rules;
    }
}

fn config_matches(option: &ManifestConfigOption, r: &ResourceRef) -> bool {
    let id = &option.resource_identifier;
    id.group == r.group
        && id.resource == r.resource
        && wildcard_match(&id.namespace, &r.namespace)
        && wildcard_match(&id.name, &r.name)
}

/// `pattern` with `*` standing for any run of characters matches all of `value`.
fn wildcard_match(pattern: &str, value: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == value;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !value.starts_with(first) || value.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &value[first.len()..];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// Writes one manifest by its update strategy (see the module docs of `apply`).
pub(super) async fn apply_object(
    client: &kube::Client,
    r: &ResourceRef,
    ar: &ApiResource,
    manifest: &Value,
    strategy: &UpdateStrategy,
) -> Result<DynamicObject, ApplyError> {
    let api: Api<DynamicObject> = if r.is_namespaced() {
        Api::namespaced_with(client.clone(), &r.namespace, ar)
    } else {
        Api::all_with(client.clone(), ar)
    };
    match strategy.type_ {
        UpdateStrategyType::Update => {
            let params = PatchParams::apply(FIELD_MANAGER).force();
            server_side_apply(&api, r, &body(manifest, r), &params).await
        }
        UpdateStrategyType::ServerSideApply => {
            let config = strategy.server_side_apply.clone().unwrap_or_default();
            let manager = config
                .field_manager
                .as_deref()
                .filter(|m| !m.is_empty())
                .unwrap_or(FIELD_MANAGER);
            let mut params = PatchParams::apply(manager);
            if config.force {
                params = params.force();
            }
            let mut body = body(manifest, r);
            // Only ServerSideApply has ignoreFields, as in OCM: `Update` means the work
            // owns every field it names.
            if !config.ignore_fields.is_empty() {
                let live = call(r, "get", api.get_opt(&r.name)).await?;
                let live = live
                    .map(|o| serde_json::to_value(&o))
                    .transpose()
                    .map_err(|e| ApplyError::new("InternalError", format!("{r}: {e}"), true))?;
                ignore::prune(&mut body, live.as_ref(), &config.ignore_fields, manager)?;
            }
            server_side_apply(&api, r, &body, &params)
                .await
                .map_err(|mut e| {
                    // A conflict with another field manager stays until someone
                    // changes the work or the other manager lets go.
                    if !config.force && e.reason == "Conflict" {
                        e.retryable = false;
                    }
                    e
                })
        }
        UpdateStrategyType::CreateOnly => {
            if let Some(existing) = call(r, "get", api.get_opt(&r.name)).await? {
                return Ok(existing);
            }
            let object: DynamicObject = serde_json::from_value(body(manifest, r))
                .map_err(|e| ApplyError::new("Invalid", format!("{r}: {e}"), false))?;
            let params = PostParams {
                dry_run: false,
                field_manager: Some(FIELD_MANAGER.to_string()),
            };
            match call(r, "create", api.create(&params, &object)).await {
                // Created by someone else in between: still never updated.
                Err(e) if e.reason == "AlreadyExists" => call(r, "get", api.get_opt(&r.name))
                    .await?
                    .ok_or_else(|| ApplyError::not_found(r)),
                other => other,
            }
        }
        UpdateStrategyType::ReadOnly => call(r, "get", api.get_opt(&r.name))
            .await?
            .ok_or_else(|| ApplyError::not_found(r)),
    }
}
async fn server_side_apply(
    api: &Api<DynamicObject>,
    r: &ResourceRef,
    body: &Value,
    params: &PatchParams,
) -> Result<DynamicObject, ApplyError> {
    call(r, "apply", api.patch(&r.name, params, &Patch::Apply(body))).await
}
/// The manifest as sent: in the namespace it resolved to (none when cluster-scoped),
/// without the server-set metadata a manifest copied from `kubectl get -o yaml` carries
/// (an apply with `managedFields` or a stale `resourceVersion` would be refused).
fn body(manifest: &Value, r: &ResourceRef) -> Value {
    let mut body = manifest.clone();
    if let Some(metadata) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        for key in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "managedFields",
            "generation",
            "selfLink",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            metadata.remove(key);
        }
        if r.is_namespaced() {
            metadata.insert("namespace".into(), Value::String(r.namespace.clone()));
        } else {
            metadata.remove("namespace");
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reference(group: &str, resource: &str, namespace: &str, name: &str) -> ResourceRef {
        ResourceRef {
            group: group.into(),
            version: "v1".into(),
            kind: "Kind".into(),
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    #[test]
    fn wildcards_match_like_ocm() {
        assert!(wildcard_match("web", "web"));
        assert!(!wildcard_match("web", "web-1"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("*", "anything"));
        assert!(wildcard_match("web-*", "web-1"));
        assert!(!wildcard_match("web-*", "api-1"));
        assert!(wildcard_match("*-1", "web-1"));
        assert!(wildcard_match("a*b*c", "a-x-b-y-c"));
        assert!(!wildcard_match("a*b*c", "a-x-c"));
        assert!(!wildcard_match("ab*ba", "aba"));
        assert!(!wildcard_match("", "x"));
    }

    #[test]
    fn manifest_configs_merge_first_match_per_field() {
        let mut work = ManifestWork::new("c", "w", vec![]);
        work.spec.manifest_configs = serde_json::from_value(json!([
            {"resourceIdentifier": {"group": "apps", "resource": "deployments", "name": "other", "namespace": "ns"},
             "updateStrategy": {"type": "ReadOnly"}},
            {"resourceIdentifier": {"group": "apps", "resource": "deployments", "name": "web", "namespace": "*"},
             "feedbackRules": [{"type": "WellKnownStatus"}]},
            {"resourceIdentifier": {"group": "apps", "resource": "deployments", "name": "w*", "namespace": "ns"},
             "updateStrategy": {"type": "CreateOnly"}, "feedbackRules": [{"type": "JSONPaths", "jsonPaths": [{"name": "x", "path": ".x"}]}]},
        ]))
        .unwrap();
        let config = manifest_config(&work, &reference("apps", "deployments", "ns", "web"));
        assert_eq!(config.feedback_rules.len(), 1);
        assert_eq!(
            config.feedback_rules[0].type_,
            api::FeedbackType::WellKnownStatus
        );
        assert_eq!(
            config.update_strategy.map(|s| s.type_),
            Some(UpdateStrategyType::CreateOnly)
        );
        let none = manifest_config(&work, &reference("", "deployments", "ns", "web"));
        assert!(none.feedback_rules.is_empty() && none.update_strategy.is_none());
    }

    #[test]
    fn indexed_configs_keep_config_order_across_exact_and_wildcard() {
        let mut work = ManifestWork::new("c", "w", vec![]);
        work.spec.manifest_configs = serde_json::from_value(json!([
            {"resourceIdentifier": {"group": "", "resource": "configmaps", "name": "a*", "namespace": "ns"},
             "feedbackRules": [{"type": "WellKnownStatus"}]},
            {"resourceIdentifier": {"group": "", "resource": "configmaps", "name": "a1", "namespace": "ns"},
             "updateStrategy": {"type": "ReadOnly"},
             "feedbackRules": [{"type": "JSONPaths", "jsonPaths": [{"name": "x", "path": ".x"}]}]},
            {"resourceIdentifier": {"group": "", "resource": "configmaps", "name": "*", "namespace": "*"},
             "updateStrategy": {"type": "CreateOnly"}},
            {"resourceIdentifier": {"group": "", "resource": "configmaps", "name": "b1", "namespace": "ns"},
             "updateStrategy": {"type": "ServerSideApply"}, "feedbackRules": [{"type": "WellKnownStatus"}]},
        ]))
        .unwrap();
        let configs = ManifestConfigs::new(&work);
        let a1 = configs.get(&reference("", "configmaps", "ns", "a1"));
        assert_eq!(
            a1.feedback_rules[0].type_,
            api::FeedbackType::WellKnownStatus
        );
        assert_eq!(
            a1.update_strategy.map(|s| s.type_),
            Some(UpdateStrategyType::ReadOnly)
        );
        // The wildcard config before it wins over the exact one after it.
        let b1 = configs.get(&reference("", "configmaps", "ns", "b1"));
        assert_eq!(
            b1.update_strategy.map(|s| s.type_),
            Some(UpdateStrategyType::CreateOnly)
        );
        assert_eq!(
            b1.feedback_rules[0].type_,
            api::FeedbackType::WellKnownStatus
        );
        let elsewhere = configs.get(&reference("", "secrets", "ns", "a1"));
        assert!(elsewhere.update_strategy.is_none() && elsewhere.feedback_rules.is_empty());
    }

    #[test]
    fn bodies_lose_server_fields_and_get_their_namespace() {
        let manifest = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "resourceVersion": "5", "uid": "u", "managedFields": [], "labels": {"x": "y"}},
            "data": {"k": "v"},
        });
        let sent = body(&manifest, &reference("", "configmaps", "default", "a"));
        assert_eq!(
            sent,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "a", "labels": {"x": "y"}, "namespace": "default"},
                   "data": {"k": "v"}})
        );
        let cluster = body(
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a", "namespace": "z"}}),
            &reference("", "namespaces", "", "a"),
        );
        assert_eq!(cluster["metadata"], json!({"name": "a"}));
    }
}
