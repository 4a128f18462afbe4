//! Secret data shown without its values: keyed placeholders (`hmac-sha256:<hex>`), one
//! definition for the hub's masked reads and the CLI's diffs and descriptions.

use serde_json::Value;
use sha2::Sha256;

/// The annotation in which `kubectl apply` keeps a copy of the whole object, Secret data
/// included.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What a keyed placeholder starts with.
pub const PLACEHOLDER_PREFIX: &str = "hmac-sha256:";

/// A key for secret placeholders: `hmac-sha256:<hex>` is HMAC-SHA256 of the value under
/// it. Without the key (the hub's never leaves its database) a placeholder cannot be
/// checked against guesses offline, as an unkeyed `sha256:` of a PIN could in
/// milliseconds; with one key per database, hubs sharing it show the same placeholder for
/// the same value.
#[derive(Clone)]
pub struct PlaceholderKey([u8; 32]);

impl std::fmt::Debug for PlaceholderKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlaceholderKey(..)")
    }
}

impl PlaceholderKey {
    /// A key of these bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PlaceholderKey(bytes)
    }

    /// The placeholder that stands for a secret value: `hmac-sha256:<hex>` of its text (a
    /// string as it is, anything else as JSON).
    pub fn placeholder(&self, value: &Value) -> Value {
        use hmac::{KeyInit, Mac};
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let mut mac =
            hmac::Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(text.as_bytes());
        Value::String(format!(
            "{PLACEHOLDER_PREFIX}{}",
            hex::encode(mac.finalize().into_bytes())
        ))
    }
}

/// Whether a manifest is a v1 `Secret`.
pub fn is_secret(manifest: &Value) -> bool {
    manifest.get("kind").and_then(Value::as_str) == Some("Secret")
        && manifest.get("apiVersion").and_then(Value::as_str) == Some("v1")
}

/// Whether a value is a placeholder from a masked read: keyed (`hmac-sha256:<hex>`) or the
/// unkeyed `sha256:<hex>` of older hubs.
pub fn is_placeholder(value: &Value) -> bool {
    value.as_str().is_some_and(|s| {
        let hex = s
            .strip_prefix(PLACEHOLDER_PREFIX)
            .or_else(|| s.strip_prefix("sha256:"));
        hex.is_some_and(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn placeholders_are_keyed_and_recognised() {
        let a = PlaceholderKey::from_bytes([1; 32]);
        let b = PlaceholderKey::from_bytes([2; 32]);
        let value = json!("hunter2");
        assert_eq!(a.placeholder(&value), a.placeholder(&value));
        assert_ne!(a.placeholder(&value), b.placeholder(&value));
        assert!(is_placeholder(&a.placeholder(&value)));
        assert!(is_placeholder(&json!(format!("sha256:{}", "0".repeat(64)))));
        for not in [json!("hunter2"), json!("hmac-sha256:xyz"), json!(7)] {
            assert!(!is_placeholder(&not), "{not}");
        }
        assert!(format!("{a:?}").contains(".."), "the key is never printed");
    }
}
