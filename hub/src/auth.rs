//! Who may call: bearer tokens, stored only as SHA-256 hashes.

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::service::Error;
use crate::store::{Store, StoreError};

/// The settings key of the admin token's hash.
const ADMIN_TOKEN_SETTING: &str = "auth.admin_token_sha256";

/// Who is calling. Registration adds agents and scoped API tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The hub administrator.
    Admin,
}

/// Verifies bearer tokens.
pub struct Auth {
    admin_token_sha256: String,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth { .. }")
    }
}

/// Hex SHA-256 of a token: what the database keeps instead of the token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new random secret with a readable prefix.
pub fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

impl Auth {
    /// Loads the admin token's hash. With `admin_token` given it becomes the admin token;
    /// otherwise the stored one stays, and on a first start one is generated. Returns the
    /// plaintext when this call knows it (given or generated now), so `client.yaml` can
    /// carry it.
    pub async fn init(
        store: &dyn Store,
        admin_token: Option<&str>,
    ) -> Result<(Auth, Option<String>), StoreError> {
        if let Some(t) = admin_token {
            let hash = token_hash(t);
            store.put_setting(ADMIN_TOKEN_SETTING, &hash).await?;
            return Ok((
                Auth {
                    admin_token_sha256: hash,
                },
                Some(t.to_string()),
            ));
        }
        if let Some(hash) = store.get_setting(ADMIN_TOKEN_SETTING).await? {
            return Ok((
                Auth {
                    admin_token_sha256: hash,
                },
                None,
            ));
        }
        let token = new_secret("hubadm_");
        let stored = store
            .init_setting(ADMIN_TOKEN_SETTING, &token_hash(&token))
            .await?;
        // Another hub may have initialised it first; then our token is not the admin's.
        let known = (stored == token_hash(&token)).then_some(token);
        Ok((
            Auth {
                admin_token_sha256: stored,
            },
            known,
        ))
    }

    /// Whether `token` is the admin token.
    pub fn is_admin_token(&self, token: &str) -> bool {
        constant_time_eq(
            token_hash(token).as_bytes(),
            self.admin_token_sha256.as_bytes(),
        )
    }

    /// The principal a bearer token stands for.
    pub fn authenticate(&self, token: &str) -> Result<Principal, Error> {
        if self.is_admin_token(token) {
            return Ok(Principal::Admin);
        }
        Err(Error::Unauthorized("the bearer token is not valid".into()))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
