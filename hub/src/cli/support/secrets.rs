//! Secret data as the CLI shows it: keyed hashes (`hmac-sha256:<hex>`), never in clear.

use serde_json::Value;

pub use api::secrets::is_placeholder;
use api::secrets::{LAST_APPLIED, PlaceholderKey, is_secret};

/// The key of this run's own placeholders, for Secret data the hub showed in clear (or
/// that is only local): random, so equal values still compare and print equal within the
/// run, while a diff kept in a CI log gives nobody a hash to test guesses against.
static RUN_KEY: std::sync::LazyLock<PlaceholderKey> = std::sync::LazyLock::new(|| {
    let mut key = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
    PlaceholderKey::from_bytes(key)
});

/// The placeholder this run shows for a secret value.
pub fn placeholder(value: &Value) -> Value {
    RUN_KEY.placeholder(value)
}

/// Replaces the values of a v1 Secret's `data` and `stringData`, and its `last-applied-configuration`
/// annotation, with placeholders (keeping those that are placeholders already).
pub fn hash_secret_data(manifest: &mut Value) {
    if !is_secret(manifest) {
        return;
    }
    for field in ["data", "stringData"] {
        if let Some(Value::Object(map)) = manifest.get_mut(field) {
            for v in map.values_mut() {
                if !is_placeholder(v) {
                    *v = placeholder(v);
                }
            }
        }
    }
    // kubectl's copy of the whole Secret, data included.
    if let Some(v) = manifest
        .pointer_mut("/metadata/annotations")
        .and_then(|a| a.get_mut(LAST_APPLIED))
        && !is_placeholder(v)
    {
        *v = placeholder(v);
    }
}
