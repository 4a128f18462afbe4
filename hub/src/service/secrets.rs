//! `Secret` data hidden from API tokens without the `secrets` verb: keyed placeholders in
//! masked reads, and writes that would store a placeholder refused.

use api::ManifestWork;
use serde_json::Value;

pub use api::secrets::{LAST_APPLIED, PlaceholderKey, is_placeholder, is_secret};

use super::error::{Error, Result};

/// The setting that holds the key of the secret placeholders (hex), made by the first hub
/// that starts on a database and read by every other.
const PLACEHOLDER_KEY_SETTING: &str = "secret_placeholder_key";

/// Reads the key of the secret placeholders from the database, creating it on first use
/// (the first writer wins, so hubs starting together agree).
pub async fn load_or_create_key(store: &dyn crate::store::Store) -> Result<PlaceholderKey> {
    let mut fresh = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut fresh);
    let text = store
        .init_setting(PLACEHOLDER_KEY_SETTING, &hex::encode(fresh))
        .await?;
    let bytes = hex::decode(text.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| {
            Error::Internal(format!(
                "setting {PLACEHOLDER_KEY_SETTING} is not 32 bytes of hex"
            ))
        })?;
    Ok(PlaceholderKey::from_bytes(bytes))
}

/// Replaces, in every v1 `Secret` manifest, the values of `data` and `stringData` and the
/// `last-applied-configuration` annotation (a copy of them), and every status feedback
/// value read from a Secret, with placeholders under `key`.
pub fn mask_secrets(key: &PlaceholderKey, work: &mut ManifestWork) {
    let mut secret_ordinals = Vec::new();
    for (i, m) in work.spec.workload.manifests.iter_mut().enumerate() {
        if !is_secret(m) {
            continue;
        }
        secret_ordinals.push(i as i32);
        for field in ["data", "stringData"] {
            if let Some(Value::Object(map)) = m.get_mut(field) {
                for v in map.values_mut() {
                    *v = key.placeholder(v);
                }
            }
        }
        if let Some(v) = m
            .pointer_mut("/metadata/annotations")
            .and_then(|a| a.get_mut(LAST_APPLIED))
        {
            *v = key.placeholder(v);
        }
    }
    let Some(resources) = work.status.resource_status.as_mut() else {
        return;
    };
    for m in resources.manifests.iter_mut() {
        let meta = &m.resource_meta;
        // By what the agent says it read, and by the manifest it says it came from: a
        // report naming a Secret's ordinal is the Secret's, whatever kind it claims.
        let from_secret = (meta.kind == "Secret" && meta.group.is_empty())
            || secret_ordinals.contains(&meta.ordinal);
        let Some(feedback) = m.status_feedback.as_mut().filter(|_| from_secret) else {
            continue;
        };
        for v in feedback.values.iter_mut() {
            let f = &v.field_value;
            let value = serde_json::to_value(f).unwrap_or(Value::Null);
            let masked = key.placeholder(&value);
            v.field_value = api::FieldValue {
                type_: "String".into(),
                integer: None,
                string: masked.as_str().map(str::to_string),
                boolean: None,
                json_raw: None,
            };
        }
    }
}

/// Refuses a work that carries a placeholder where secret data belongs: writing back what
/// a masked read returned would silently replace the secret.
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
                    if is_placeholder(v) {
                        return Err(Error::invalid(
                            format!("spec.workload.manifests[{i}].{field}.{k}"),
                            "is a placeholder from a masked read, not secret data; send the real value",
                        ));
                    }
                }
            }
        }
        if m.pointer("/metadata/annotations")
            .and_then(|a| a.get(LAST_APPLIED))
            .is_some_and(is_placeholder)
        {
            return Err(Error::invalid(
                format!("spec.workload.manifests[{i}].metadata.annotations.{LAST_APPLIED}"),
                "is a placeholder from a masked read; send the real value or drop the annotation",
            ));
        }
    }
    Ok(())
}
