//! What one cluster's work of a ManifestWorkReplicaSet holds: the set's template, the
//! `overrides` whose selectors accepted the cluster (RFC 7386 merge patches, in the order
//! the set lists them), then the cluster's share of `replicaSplit` in the workload's
//! `spec.replicas`. Also the checks of a set's spec, except its cluster selectors.
//!
//! Overrides and the split name manifests as the template writes them, so one override
//! renaming a manifest does not change what the next one, or the split, applies to.
//!
//! Pure: the caller matches cluster selectors and computes the shares
//! ([`super::replica_split`]).

use std::collections::HashSet;

use api::FieldError;
use api::fleet::{ManifestRef, ManifestWorkReplicaSetSpec, SetOverride};
use api::selector::validate_dns_label;
use api::types::ManifestWorkSpec;
use serde_json::Value;

/// Most replicas a `replicaSplit` may divide.
pub const MAX_TOTAL_REPLICAS: i32 = 100_000;
/// Largest weight of a `replicaSplit.weights` entry.
pub const MAX_WEIGHT: i32 = 1000;
/// Rollout strategy types (OCM's).
pub const ROLLOUT_TYPES: [&str; 3] = ["All", "Progressive", "ProgressivePerGroup"];
/// Cascade deletion policies: OCM's two and our `Orphan`.
pub const CASCADE_POLICIES: [&str; 3] = ["Background", "Foreground", "Orphan"];
/// Replica split strategies; the first is the default.
pub const SPLIT_STRATEGIES: [&str; 3] = ["Equal", "Weighted", "AllocatableCPU"];
/// Kinds whose `spec.replicas` a split may set even when the template leaves it out.
pub const REPLICATED_KINDS: [&str; 3] = ["Deployment", "StatefulSet", "ReplicaSet"];

/// Why a cluster's work cannot be made from its set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A merge patch that is not an object would replace the manifest whole.
    #[error("the override of {target} has a patch that is {found}, not an object")]
    PatchNotObject {
        /// The override's manifest reference, as text.
        target: String,
        /// What the patch is (`an array`, `a string`, ...).
        found: &'static str,
    },
    /// An override left a manifest that no agent could apply.
    #[error("the override of {target} leaves manifest {index} ({manifest}) {problem}")]
    BrokenManifest {
        /// The override's manifest reference, as text.
        target: String,
        /// The manifest's index in the template.
        index: usize,
        /// The manifest as the template names it.
        manifest: String,
        /// What is wrong after the patch.
        problem: String,
    },
    /// The split workload is not in the template.
    #[error("replicaSplit.workload {target} names no manifest of the template")]
    WorkloadMissing {
        /// The workload reference, as text.
        target: String,
    },
    /// The split workload names several manifests.
    #[error(
        "replicaSplit.workload {target} names {} manifests of the template (indexes {indexes:?}); it must name exactly one",
        indexes.len()
    )]
    WorkloadAmbiguous {
        /// The workload reference, as text.
        target: String,
        /// The manifests it names.
        indexes: Vec<usize>,
    },
    /// The workload's `spec` is there but not an object, so it has no `replicas` to set.
    #[error("replicaSplit.workload {target}: its spec is {found}, not an object")]
    WorkloadSpecNotObject {
        /// The workload reference, as text.
        target: String,
        /// What the spec is.
        found: &'static str,
    },
}

/// RFC 7386 JSON merge patch (null removes, objects merge recursively, anything else replaces).
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.as_str()).or_insert(Value::Null), value);
            }
        }
    }
}

/// Whether a template manifest is named by a ManifestRef (empty parts match anything;
/// apiVersion compares whole `group/version`, or only the group when the ref has no `/`).
/// A ref `v1` without `/` also matches the core group's `v1`, the only way to write it.
pub fn names(r: &ManifestRef, manifest: &Value) -> bool {
    let text = |pointer: &str| manifest.pointer(pointer).and_then(Value::as_str);
    let api_version = text("/apiVersion").unwrap_or_default();
    let api_version_matches = if r.api_version.is_empty() {
        true
    } else if r.api_version.contains('/') {
        api_version == r.api_version
    } else {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        group == r.api_version || api_version == r.api_version
    };
    let part = |wanted: &str, pointer: &str| {
        wanted.is_empty() || text(pointer).is_some_and(|got| got == wanted)
    };
    api_version_matches
        && part(&r.kind, "/kind")
        && part(&r.name, "/metadata/name")
        && part(&r.namespace, "/metadata/namespace")
}

/// One cluster's work spec: the set's template with these overrides applied in order to the
/// manifests they name, then `spec.replicas` of the split workload set to `replicas`.
pub fn render(
    template: &ManifestWorkSpec,
    overrides: &[&SetOverride],
    split: Option<(&ManifestRef, i32)>,
) -> Result<ManifestWorkSpec, RenderError> {
    let manifests = &template.workload.manifests;
    let workload = match split {
        Some((workload, replicas)) => {
            Some((workload, workload_index(workload, manifests)?, replicas))
        }
        None => None,
    };
    let mut rendered = template.clone();
    for o in overrides {
        apply_override(o, manifests, &mut rendered.workload.manifests)?;
    }
    if let Some((workload, index, replicas)) = workload
        && let Some(manifest) = rendered.workload.manifests.get_mut(index)
    {
        set_replicas(workload, manifest, replicas)?;
    }
    Ok(rendered)
}

/// Checks a set's spec except its cluster selectors: field paths from `spec.`, all collected.
pub fn validate_set_spec(spec: &ManifestWorkReplicaSetSpec) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut bad = |field: String, message: String| errs.push(FieldError { field, message });

    if spec.placement_refs.is_empty() {
        bad(
            "spec.placementRefs".into(),
            "must name at least one placement".into(),
        );
    }
    let mut seen = HashSet::new();
    for (i, p) in spec.placement_refs.iter().enumerate() {
        let field = format!("spec.placementRefs[{i}]");
        if let Err(m) = validate_dns_label(&p.name) {
            bad(format!("{field}.name"), m);
        } else if !seen.insert(p.name.as_str()) {
            bad(
                format!("{field}.name"),
                format!("placement {:?} is listed twice", p.name),
            );
        }
        if let Some(strategy) = &p.rollout_strategy {
            check_rollout_strategy(&format!("{field}.rolloutStrategy"), strategy, &mut bad);
        }
    }

    if let Some(policy) = &spec.cascade_deletion_policy
        && !CASCADE_POLICIES.contains(&policy.as_str())
    {
        bad(
            "spec.cascadeDeletionPolicy".into(),
            format!("must be one of {CASCADE_POLICIES:?}, not {policy:?}"),
        );
    }

    let manifests = &spec.manifest_work_template.workload.manifests;
    let workload = spec.replica_split.as_ref().and_then(|split| {
        workload_index(&split.workload, manifests)
            .is_ok()
            .then_some((&split.workload, 0))
    });
    for (i, o) in spec.overrides.iter().enumerate() {
        let field = format!("spec.overrides[{i}]");
        if !manifests.iter().any(|m| names(&o.manifest, m)) {
            bad(
                format!("{field}.manifest"),
                format!(
                    "{} names no manifest of the template",
                    describe_ref(&o.manifest)
                ),
            );
        }
        // Alone on the template (with the split, whose replicas it must leave settable): a
        // patch that breaks a manifest breaks it on any cluster whose selectors pick it.
        match render(&spec.manifest_work_template, &[o], workload) {
            Err(RenderError::PatchNotObject { found, .. }) => bad(
                format!("{field}.patch"),
                format!("must be an object (a JSON merge patch), not {found}"),
            ),
            Err(
                e
                @ (RenderError::BrokenManifest { .. } | RenderError::WorkloadSpecNotObject { .. }),
            ) => bad(format!("{field}.patch"), e.to_string()),
            // A workload that is missing or ambiguous is reported once, below.
            _ => {}
        }
    }

    if let Some(split) = &spec.replica_split {
        let field = "spec.replicaSplit";
        if !(0..=MAX_TOTAL_REPLICAS).contains(&split.total_replicas) {
            bad(
                format!("{field}.totalReplicas"),
                format!(
                    "must be 0 to {MAX_TOTAL_REPLICAS}, not {}",
                    split.total_replicas
                ),
            );
        }
        let strategy = split.strategy.as_deref().unwrap_or(SPLIT_STRATEGIES[0]);
        if !SPLIT_STRATEGIES.contains(&strategy) {
            bad(
                format!("{field}.strategy"),
                format!("must be one of {SPLIT_STRATEGIES:?}, not {strategy:?}"),
            );
        } else if strategy == "Weighted" && split.weights.is_empty() {
            bad(
                format!("{field}.weights"),
                "Weighted needs at least one weight".into(),
            );
        } else if strategy != "Weighted" && !split.weights.is_empty() {
            bad(
                format!("{field}.weights"),
                format!("only the Weighted strategy takes weights, not {strategy}"),
            );
        }
        for (i, w) in split.weights.iter().enumerate() {
            if !(0..=MAX_WEIGHT).contains(&w.weight) {
                bad(
                    format!("{field}.weights[{i}].weight"),
                    format!("must be 0 to {MAX_WEIGHT}, not {}", w.weight),
                );
            }
        }
        match workload_index(&split.workload, manifests) {
            Err(e) => bad(format!("{field}.workload"), e.to_string()),
            Ok(index) => {
                if let Some(problem) = manifests.get(index).and_then(not_replicated) {
                    bad(format!("{field}.workload"), problem);
                }
            }
        }
    }
    errs
}

/// Checks a `rolloutStrategy`: an object whose `type` (or OCM's older `rolloutType`) is
/// one of [`ROLLOUT_TYPES`]; neither given means `All`, OCM's default.
fn check_rollout_strategy(field: &str, strategy: &Value, bad: &mut impl FnMut(String, String)) {
    let Some(object) = strategy.as_object() else {
        bad(
            field.into(),
            format!("must be an object, not {}", json_kind(strategy)),
        );
        return;
    };
    let mut types = Vec::new();
    for key in ["type", "rolloutType"] {
        let Some(value) = object.get(key) else {
            continue;
        };
        match value.as_str() {
            Some(t) if ROLLOUT_TYPES.contains(&t) => types.push(t),
            _ => bad(
                format!("{field}.{key}"),
                format!("must be one of {ROLLOUT_TYPES:?}, not {value}"),
            ),
        }
    }
    if let [a, b] = types[..]
        && a != b
    {
        bad(
            format!("{field}.rolloutType"),
            format!("says {b:?} but type says {a:?}; give one"),
        );
    }
}

/// Patches `manifests` (a copy of `template` being rendered) where the override names the
/// template's manifest at the same index.
fn apply_override(
    o: &SetOverride,
    template: &[Value],
    manifests: &mut [Value],
) -> Result<(), RenderError> {
    if !o.patch.is_object() {
        return Err(RenderError::PatchNotObject {
            target: describe_ref(&o.manifest),
            found: json_kind(&o.patch),
        });
    }
    for (index, (original, manifest)) in template.iter().zip(manifests.iter_mut()).enumerate() {
        if !names(&o.manifest, original) {
            continue;
        }
        merge_patch(manifest, &o.patch);
        if let Some(problem) = unappliable(manifest) {
            return Err(RenderError::BrokenManifest {
                target: describe_ref(&o.manifest),
                index,
                manifest: describe_manifest(original),
                problem,
            });
        }
    }
    Ok(())
}

/// What an agent would refuse in a patched manifest, if anything.
fn unappliable(manifest: &Value) -> Option<String> {
    if !manifest.is_object() {
        return Some(format!("{}, not an object", json_kind(manifest)));
    }
    let missing: Vec<&str> = [
        ("/kind", "kind"),
        ("/apiVersion", "apiVersion"),
        ("/metadata/name", "metadata.name"),
    ]
    .into_iter()
    .filter(|(pointer, _)| {
        manifest
            .pointer(pointer)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    })
    .map(|(_, field)| field)
    .collect();
    (!missing.is_empty()).then(|| format!("without {}", missing.join(", ")))
}

/// The index of the one template manifest `workload` names.
fn workload_index(workload: &ManifestRef, manifests: &[Value]) -> Result<usize, RenderError> {
    let indexes: Vec<usize> = manifests
        .iter()
        .enumerate()
        .filter(|(_, m)| names(workload, m))
        .map(|(i, _)| i)
        .collect();
    match indexes[..] {
        [index] => Ok(index),
        [] => Err(RenderError::WorkloadMissing {
            target: describe_ref(workload),
        }),
        _ => Err(RenderError::WorkloadAmbiguous {
            target: describe_ref(workload),
            indexes,
        }),
    }
}

/// Why a split cannot set this manifest's replicas, if it cannot: neither a kind known to
/// have `spec.replicas` nor a manifest that already has it.
fn not_replicated(manifest: &Value) -> Option<String> {
    let kind = manifest
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let has_replicas = manifest.pointer("/spec/replicas").is_some();
    (!REPLICATED_KINDS.contains(&kind) && !has_replicas).then(|| {
        format!(
            "names {}, which has no spec.replicas (kinds {REPLICATED_KINDS:?} have it; others need it in the template)",
            describe_manifest(manifest)
        )
    })
}

/// Sets `spec.replicas`, adding `spec` when the template left it out.
fn set_replicas(
    workload: &ManifestRef,
    manifest: &mut Value,
    replicas: i32,
) -> Result<(), RenderError> {
    let Some(object) = manifest.as_object_mut() else {
        // An override broke it, and said so already.
        return Ok(());
    };
    let spec = object
        .entry("spec")
        .or_insert_with(|| Value::Object(Default::default()));
    match spec.as_object_mut() {
        Some(spec) => {
            spec.insert("replicas".into(), Value::from(replicas));
            Ok(())
        }
        None => Err(RenderError::WorkloadSpecNotObject {
            target: describe_ref(workload),
            found: json_kind(spec),
        }),
    }
}

/// A ManifestRef as a user would recognise it: `Deployment web in apps (apps/v1)`, `any
/// manifest`.
fn describe_ref(r: &ManifestRef) -> String {
    let mut text = if r.kind.is_empty() {
        "any manifest".to_string()
    } else {
        r.kind.clone()
    };
    if !r.name.is_empty() {
        text = format!("{text} {:?}", r.name);
    }
    if !r.namespace.is_empty() {
        text = format!("{text} in {:?}", r.namespace);
    }
    if !r.api_version.is_empty() {
        text = format!("{text} ({})", r.api_version);
    }
    text
}

/// A manifest as `Deployment "web"`.
fn describe_manifest(m: &Value) -> String {
    let text = |pointer: &str| m.pointer(pointer).and_then(Value::as_str).unwrap_or("?");
    format!("{} {:?}", text("/kind"), text("/metadata/name"))
}

/// A JSON value's kind, with its article, for messages.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
