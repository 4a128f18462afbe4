//! API and bootstrap tokens: what a token request may ask for, how a token and its secret
//! are made (`ID.SECRET`, the secret kept only as a hash), and the ids the hub hands out.

use api::{Token, TokenKind, TokenRequest, Verb};
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::Hub;
use super::audit::entry;
use super::error::{Error, Result};
use super::validate::check_labels;
use super::writer::Caller;
use crate::store::StoredToken;

/// Hex SHA-256 of a token: what the database keeps instead of the token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new random secret with a readable prefix.
pub fn new_secret(prefix: &str) -> String {
    format!("{prefix}{}", random_hex(24))
}

/// `n` random bytes as hex.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Whether an id from a request (token id, registration id, a JWT's subject) may reach a
/// query: 1 to 128 ASCII letters, digits, `-`, `_`, `.` or `:`. Everything the hub hands
/// out is of this form; anything else (a NUL byte, which Postgres refuses in text, or
/// megabytes of junk) is unknown without asking the database.
pub fn is_safe_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The longest `ttl` a token may ask for. Much longer ones would overflow the expiry time
/// (a panic) or put it past year 9999, which RFC 3339 timestamps cannot hold.
pub const MAX_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86_400);

/// Checks a token request and builds the token and its secret.
pub fn new_token(
    req: &TokenRequest,
    default_bootstrap_ttl: std::time::Duration,
    now: DateTime<Utc>,
) -> Result<(StoredToken, String)> {
    let mut errs = Vec::new();
    let mut bad = |field: String, message: String| errs.push(api::FieldError { field, message });
    let ttl = match req.ttl.as_deref() {
        Some(t) => match api::parse_duration(t) {
            Ok(d) if d.is_zero() => {
                bad("ttl".into(), "must be positive".into());
                None
            }
            Ok(d) if d > MAX_TOKEN_TTL => {
                bad(
                    "ttl".into(),
                    format!(
                        "must be at most {}h (100 years); leave it out for an api token that never expires",
                        MAX_TOKEN_TTL.as_secs() / 3600
                    ),
                );
                None
            }
            Ok(d) => Some(d),
            Err(m) => {
                bad("ttl".into(), m);
                None
            }
        },
        None if req.kind == TokenKind::Bootstrap => Some(default_bootstrap_ttl),
        None => None,
    };
    check_labels("labels", &req.labels, &mut bad);
    for (i, c) in req.clusters.iter().enumerate() {
        if let Err(m) = api::selector::validate_dns_label(c) {
            bad(format!("clusters[{i}]"), m);
        }
    }
    if let Some(s) = &req.cluster_selector
        && let Err(e) = api::selector::Selector::parse(s)
    {
        bad("clusterSelector".into(), e.to_string());
    }
    match req.kind {
        TokenKind::Api => {
            if req.clusters.is_empty() && req.cluster_selector.is_none() {
                bad(
                    "clusters".into(),
                    "an api token needs clusters or a clusterSelector".into(),
                );
            }
            if req.auto_accept || !req.labels.is_empty() || req.max_uses.is_some() {
                bad(
                    "kind".into(),
                    "autoAccept, labels and maxUses are for bootstrap tokens".into(),
                );
            }
        }
        TokenKind::Bootstrap => {
            if !req.clusters.is_empty() || req.cluster_selector.is_some() || !req.verbs.is_empty() {
                bad(
                    "kind".into(),
                    "clusters, clusterSelector and verbs are for api tokens".into(),
                );
            }
        }
    }
    match req.max_uses {
        Some(0) => bad("maxUses".into(), "must be at least 1".into()),
        // The store keeps the count in a signed 64-bit column, where a larger limit would
        // wrap to a negative number, which means "unlimited".
        Some(n) if i64::try_from(n).is_err() => {
            bad("maxUses".into(), format!("must be at most {}", i64::MAX))
        }
        _ => {}
    }
    if !errs.is_empty() {
        return Err(Error::invalid_fields(errs));
    }
    // Checked: `--bootstrap-token-ttl` is not held to MAX_TOKEN_TTL, and `+` panics.
    let expires_at = match ttl {
        None => None,
        Some(d) => Some(
            chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| now.checked_add_signed(d))
                .ok_or_else(|| Error::invalid("ttl", "is too long"))?,
        ),
    };
    let id = random_hex(4);
    let secret = random_hex(16);
    let mut verbs = req.verbs.clone();
    if req.kind == TokenKind::Api && verbs.is_empty() {
        verbs.push(Verb::Read);
    }
    verbs.sort();
    verbs.dedup();
    let token = Token {
        id: id.clone(),
        kind: req.kind,
        expires_at,
        max_uses: req.max_uses,
        uses: 0,
        auto_accept: req.auto_accept,
        labels: req.labels.clone(),
        clusters: req.clusters.clone(),
        cluster_selector: req.cluster_selector.clone(),
        verbs,
        description: req.description.clone(),
        created_at: now,
        token: None,
    };
    let plain = format!("{id}.{secret}");
    Ok((
        StoredToken {
            token,
            secret_sha256: token_hash(&secret),
        },
        plain,
    ))
}

impl Hub {
    /// Creates a token; the answer carries `ID.SECRET` once, nothing else ever does. The
    /// token and its audit entry commit together.
    #[tracing::instrument(skip(self, req, by), fields(kind = ?req.kind, actor = %by.actor))]
    pub async fn create_token(&self, req: &TokenRequest, by: &Caller) -> Result<Token> {
        let (stored, plain) = new_token(req, self.settings.bootstrap_token_ttl, Utc::now())?;
        let t = &stored.token;
        let details = serde_json::json!({"kind": t.kind, "expiresAt": t.expires_at, "autoAccept": t.auto_accept, "clusters": t.clusters, "verbs": t.verbs});
        let audit = entry(by, "token.create", &format!("tokens/{}", t.id), details);
        self.store.insert_token(&stored, &audit).await?;
        let mut token = stored.token;
        token.token = Some(plain);
        Ok(token)
    }

    /// Every token, without secrets.
    pub async fn list_tokens(&self) -> Result<api::List<Token>> {
        let items = self
            .store
            .list_tokens()
            .await?
            .into_iter()
            .map(|t| t.token)
            .collect();
        Ok(api::List::new("TokenList", items, self.index(), None))
    }

    /// Revokes a token at once; the removal and its audit entry commit together.
    #[tracing::instrument(skip(self, by), fields(actor = %by.actor))]
    pub async fn revoke_token(&self, id: &str, by: &Caller) -> Result<()> {
        let audit = entry(
            by,
            "token.revoke",
            &format!("tokens/{id}"),
            serde_json::json!({}),
        );
        if !(is_safe_id(id) && self.store.delete_token(id, &audit).await?) {
            return Err(Error::NotFound(format!("token {id:?} not found")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_field(req: TokenRequest) -> String {
        match new_token(&req, std::time::Duration::from_secs(3600), Utc::now()) {
            Err(Error::Invalid { fields, .. }) => fields[0].field.clone(),
            other => panic!("expected a 422, got {:?}", other.map(|(t, _)| t.token)),
        }
    }

    /// Nine parts of 10^12 s each used to overflow the expiry time and panic (a 500); one
    /// part put it past year 9999.
    #[test]
    fn absurd_ttls_are_422_not_a_panic() {
        for ttl in [
            "1000000000000s".repeat(9),
            "1000000000000s".to_string(),
            "876001h".to_string(),
        ] {
            let req = TokenRequest {
                ttl: Some(ttl),
                ..Default::default()
            };
            assert_eq!(refused_field(req), "ttl");
        }
        let ok = TokenRequest {
            ttl: Some("876000h".into()),
            ..Default::default()
        };
        assert!(new_token(&ok, std::time::Duration::from_secs(1), Utc::now()).is_ok());
    }

    /// A limit past i64::MAX used to wrap to a negative number in the store: unlimited.
    #[test]
    fn max_uses_past_i64_is_422() {
        let req = TokenRequest {
            max_uses: Some(i64::MAX as u64 + 1),
            ..Default::default()
        };
        assert_eq!(refused_field(req), "maxUses");
    }
}
