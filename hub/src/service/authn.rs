//! Who may call: the admin token, API and bootstrap tokens (`ID.SECRET`, stored hashed),
//! agents' short-lived access JWTs (signed by the hub), and a joining agent's own assertion.

use std::sync::Arc;
use std::time::Duration;

use api::auth::{ACCESS_AUDIENCE, ACCESS_ISSUER, ASSERTION_AUDIENCE, AssertionClaims};
use api::selector::Selector;
use api::{Token, TokenKind, Verb};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::cache::ClusterCache;
use super::error::Error;
use super::tokens::{is_safe_id, new_secret, token_hash};
use crate::store::Store;

/// The settings key of the admin token's hash.
const ADMIN_TOKEN_SETTING: &str = "auth.admin_token_sha256";
/// The settings key of the hub's JWT signing keys.
const SIGNING_KEYS_SETTING: &str = "auth.signing_keys";
/// An agent's assertion may live at most this long, and expire at most this far after
/// the hub's now.
const MAX_ASSERTION_LIFETIME: i64 = 600;
/// How far the hub's clock and an agent's may disagree, in seconds.
const ASSERTION_LEEWAY: i64 = 30;
/// How often (seconds) a hub forgets the ids of assertions that expired.
const JTI_PURGE_INTERVAL: i64 = 60;
/// The message of every refused `ID.SECRET` token, so that it tells nobody whether the id
/// exists.
const BAD_TOKEN: &str = "the token is not valid (unknown, revoked or a wrong secret)";

/// Who is calling.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    /// The hub administrator.
    Admin,
    /// A cluster's agent, through its access token.
    Agent {
        /// Its cluster.
        cluster: String,
    },
    /// An API token, limited to its clusters and verbs.
    Api {
        /// The token's id.
        token_id: String,
        /// What it may touch.
        scope: ApiScope,
    },
    /// A bootstrap token: may only ask to join.
    Bootstrap {
        /// The token.
        token: Box<Token>,
    },
    /// A joining agent, through an assertion signed by its key: may only read its request.
    Registrant {
        /// The registration.
        registration_id: String,
    },
}

/// The reach of an API token.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiScope {
    /// Clusters by name.
    pub clusters: Vec<String>,
    /// Clusters by labels.
    pub selector: Option<Selector>,
    /// What it may do.
    pub verbs: Vec<Verb>,
}

impl ApiScope {
    /// Whether a cluster with this name and these labels is in scope.
    pub fn covers(&self, name: &str, labels: &std::collections::BTreeMap<String, String>) -> bool {
        self.clusters.iter().any(|c| c == name)
            || self.selector.as_ref().is_some_and(|s| s.matches(labels))
    }
}

impl Principal {
    /// How the audit log names it.
    pub fn actor(&self) -> String {
        match self {
            Principal::Admin => "admin".into(),
            Principal::Agent { cluster } => format!("cluster:{cluster}"),
            Principal::Api { token_id, .. } => format!("token:{token_id}"),
            Principal::Bootstrap { token } => format!("bootstrap:{}", token.id),
            Principal::Registrant { registration_id } => format!("registration:{registration_id}"),
        }
    }

    /// Admins only.
    pub fn require_admin(&self) -> Result<(), Error> {
        match self {
            Principal::Admin => Ok(()),
            other => Err(Error::Forbidden(format!(
                "{} may not do this: admins only",
                other.actor()
            ))),
        }
    }

    /// Whether reads by this principal see `Secret` data (else it is replaced by a hash).
    pub fn sees_secrets(&self) -> bool {
        match self {
            Principal::Api { scope, .. } => scope.verbs.contains(&Verb::Secrets),
            _ => true,
        }
    }
}

/// Claims of the access tokens the hub issues.
#[derive(Debug, Serialize, Deserialize)]
struct AccessClaims {
    iss: String,
    sub: String,
    aud: String,
    iat: i64,
    exp: i64,
    /// The agent generation it was issued for; revocation bumps it.
    #[serde(rename = "gen")]
    generation: i64,
}

#[derive(Clone, Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    private_pem: String,
    public_pem: String,
    created_at: DateTime<Utc>,
}

struct SigningKey {
    kid: String,
    created_at: DateTime<Utc>,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// Verifies bearer tokens and issues agents' access tokens.
pub struct Auth {
    store: Arc<dyn Store>,
    /// Where agents are read from when set (see [`Auth::with_cluster_cache`]); else the store.
    agents: Option<Arc<ClusterCache>>,
    admin_token_sha256: String,
    /// Newest last; the newest signs, all verify.
    keys: std::sync::RwLock<Vec<Arc<SigningKey>>>,
    access_ttl: Duration,
    /// When (Unix seconds) this hub last purged expired assertion ids.
    jti_purged_at: std::sync::atomic::AtomicI64,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth { .. }")
    }
}

/// `sha256:<hex>` of a PEM text, to compare keys by eye.
pub fn pem_hash(pem: &str) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(pem.trim().as_bytes()))
    )
}

fn unauthorized(message: &str) -> Error {
    Error::Unauthorized(message.to_string())
}

fn generate_key() -> Result<StoredKey, Error> {
    let key = rcgen::KeyPair::generate()
        .map_err(|e| Error::Internal(format!("generating a signing key: {e}")))?;
    let public_pem = key.public_key_pem();
    Ok(StoredKey {
        kid: token_hash(&public_pem)[..16].to_string(),
        private_pem: key.serialize_pem(),
        public_pem,
        created_at: Utc::now(),
    })
}

fn load_key(k: &StoredKey) -> Result<SigningKey, Error> {
    Ok(SigningKey {
        kid: k.kid.clone(),
        created_at: k.created_at,
        encoding: EncodingKey::from_ec_pem(k.private_pem.as_bytes())
            .map_err(|e| Error::Internal(format!("signing key {}: {e}", k.kid)))?,
        decoding: DecodingKey::from_ec_pem(k.public_pem.as_bytes())
            .map_err(|e| Error::Internal(format!("signing key {}: {e}", k.kid)))?,
    })
}

/// Checks an assertion signed by an agent's own key (public key in PEM) for `subject`
/// against the hub's clock `now` (Unix seconds), without recording its `jti`: the
/// signature (ES256), `aud`, `iss` = `sub` = `subject`, `nbf`, and an `exp` that has not
/// passed and lies at most 10 minutes after `now` and after `iat` (30 s leeway each).
pub fn check_assertion(
    public_key_pem: &str,
    assertion: &str,
    subject: &str,
    now: i64,
) -> Result<AssertionClaims, Error> {
    let key = DecodingKey::from_ec_pem(public_key_pem.as_bytes())
        .map_err(|_| unauthorized("the agent's stored key is unusable"))?;
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&[ASSERTION_AUDIENCE]);
    v.set_issuer(&[subject]);
    v.set_required_spec_claims(&["exp", "sub", "aud", "iat", "iss"]);
    v.sub = Some(subject.to_string());
    v.validate_nbf = true;
    v.leeway = ASSERTION_LEEWAY as u64;
    let claims = jsonwebtoken::decode::<AssertionClaims>(assertion, &key, &v)
        .map_err(|e| unauthorized(&format!("the assertion is not valid for {subject}: {e}")))?
        .claims;
    // `exp` is measured from the hub's clock, not from the `iat` the agent chose: a future
    // `iat` must not stretch the assertion's life.
    if claims.exp - claims.iat > MAX_ASSERTION_LIFETIME
        || claims.exp > now + MAX_ASSERTION_LIFETIME + ASSERTION_LEEWAY
    {
        return Err(unauthorized(
            "the assertion lives too long: it must expire within 10 minutes of now",
        ));
    }
    if claims.iat > now + ASSERTION_LEEWAY {
        return Err(unauthorized(
            "the assertion is issued in the future (check the agent's clock)",
        ));
    }
    // Stored as sent: held to what an id may be (the klusterlet sends a UUID).
    if !is_safe_id(&claims.jti) {
        return Err(unauthorized(
            "the assertion needs a jti of 1 to 128 letters, digits, '-', '_', '.' or ':'",
        ));
    }
    Ok(claims)
}

/// Checks that a PEM is an ECDSA P-256 public key we can verify with.
pub fn check_public_key(pem: &str) -> Result<(), String> {
    DecodingKey::from_ec_pem(pem.as_bytes())
        .map(|_| ())
        .map_err(|e| format!("not an ECDSA P-256 public key in PEM: {e}"))
}

impl Auth {
    /// Loads the admin token's hash and the signing keys. With `admin_token` given it
    /// becomes the admin token; otherwise the stored one stays, and on a first start one is
    /// generated. Returns the plaintext when this call knows it (given or generated now), so
    /// `client.yaml` can carry it.
    pub async fn init(
        store: Arc<dyn Store>,
        admin_token: Option<&str>,
        access_ttl: Duration,
    ) -> Result<(Auth, Option<String>), Error> {
        let (admin_token_sha256, known) = match admin_token {
            Some(t) => {
                let hash = token_hash(t);
                store.put_setting(ADMIN_TOKEN_SETTING, &hash).await?;
                (hash, Some(t.to_string()))
            }
            None => match store.get_setting(ADMIN_TOKEN_SETTING).await? {
                Some(hash) => (hash, None),
                None => {
                    let token = new_secret("hubadm_");
                    let stored = store
                        .init_setting(ADMIN_TOKEN_SETTING, &token_hash(&token))
                        .await?;
                    // Another hub may have initialised it first; then our token is not the admin's.
                    let known = (stored == token_hash(&token)).then_some(token);
                    (stored, known)
                }
            },
        };
        let auth = Auth {
            store,
            agents: None,
            admin_token_sha256,
            keys: std::sync::RwLock::new(Vec::new()),
            access_ttl,
            jti_purged_at: std::sync::atomic::AtomicI64::new(0),
        };
        auth.load_keys().await?;
        Ok((auth, known))
    }

    /// Reads agents through the hub's cache, so an agent's requests do not each read its
    /// generation from the database; a revocation reaches the cache through the change feed.
    pub fn with_cluster_cache(mut self, cache: Arc<ClusterCache>) -> Self {
        self.agents = Some(cache);
        self
    }

    async fn load_keys(&self) -> Result<(), Error> {
        let candidate = generate_key()?;
        let text = serde_json::to_string(&vec![candidate]).unwrap_or_default();
        let stored = self.store.init_setting(SIGNING_KEYS_SETTING, &text).await?;
        let keys: Vec<StoredKey> = serde_json::from_str(&stored).unwrap_or_default();
        let loaded: Vec<Arc<SigningKey>> = keys
            .iter()
            .filter_map(|k| load_key(k).ok())
            .map(Arc::new)
            .collect();
        *self.keys.write().expect("keys lock") = loaded;
        Ok(())
    }

    /// Adds a new signing key, which signs from now on; older keys keep verifying the tokens
    /// they signed until `keep` has passed since the newer key came (at least the access
    /// token lifetime). Other hubs pick the new key up when they next reload.
    #[tracing::instrument(skip(self))]
    pub async fn rotate_signing_key(&self, keep: Duration) -> Result<String, Error> {
        let stored = self
            .store
            .get_setting(SIGNING_KEYS_SETTING)
            .await?
            .unwrap_or_else(|| "[]".into());
        let mut keys: Vec<StoredKey> = serde_json::from_str(&stored).unwrap_or_default();
        let new = generate_key()?;
        let kid = new.kid.clone();
        let cutoff =
            Utc::now() - chrono::Duration::from_std(keep.max(self.access_ttl)).unwrap_or_default();
        // A key is dropped once its successor has been signing for longer than `keep`.
        let successors: Vec<DateTime<Utc>> = keys.iter().skip(1).map(|k| k.created_at).collect();
        let mut i = 0;
        keys.retain(|_| {
            let keep_it = successors.get(i).is_none_or(|next| *next > cutoff);
            i += 1;
            keep_it
        });
        keys.push(new);
        self.store
            .put_setting(
                SIGNING_KEYS_SETTING,
                &serde_json::to_string(&keys).unwrap_or_default(),
            )
            .await?;
        self.load_keys().await?;
        Ok(kid)
    }

    /// Rotates the signing key when the newest is older than `max_age`; returns the new kid.
    pub async fn rotate_if_older_than(&self, max_age: Duration) -> Result<Option<String>, Error> {
        // Other hubs may have rotated: look at what the database holds.
        self.load_keys().await?;
        let newest = self
            .keys
            .read()
            .expect("keys lock")
            .last()
            .map(|k| k.created_at);
        let age = newest.map(|t| {
            Utc::now()
                .signed_duration_since(t)
                .to_std()
                .unwrap_or_default()
        });
        if age.is_some_and(|a| a > max_age) {
            return Ok(Some(self.rotate_signing_key(self.access_ttl * 2).await?));
        }
        Ok(None)
    }

    /// Verifies an agent's assertion for `subject` (see [`check_assertion`]) and spends
    /// its `jti`: the same assertion is refused the second time, on this hub or any other
    /// sharing the database, until it has expired anyway.
    #[tracing::instrument(skip(self, public_key_pem, assertion))]
    pub async fn verify_assertion(
        &self,
        public_key_pem: &str,
        assertion: &str,
        subject: &str,
    ) -> Result<(), Error> {
        let now = Utc::now().timestamp();
        let claims = check_assertion(public_key_pem, assertion, subject, now)?;
        self.purge_spent_assertions(now).await;
        // Kept as long as the assertion could pass the expiry check (its leeway included).
        let keep_until = claims.exp + ASSERTION_LEEWAY;
        if !self
            .store
            .use_assertion_id(&claims.iss, &claims.jti, keep_until, now)
            .await?
        {
            return Err(unauthorized(
                "the assertion was used before: sign a new one (with a new jti) for each request",
            ));
        }
        Ok(())
    }

    /// Forgets spent assertion ids past their expiry, at most once a minute per hub: they
    /// would be refused as expired anyway, and the table must not grow forever.
    async fn purge_spent_assertions(&self, now: i64) {
        use std::sync::atomic::Ordering;
        let last = self.jti_purged_at.load(Ordering::Relaxed);
        if now - last < JTI_PURGE_INTERVAL
            || self
                .jti_purged_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        match self.store.purge_assertion_ids(now).await {
            Ok(n) if n > 0 => tracing::debug!(purged = n, "forgot expired assertion ids"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not purge expired assertion ids"),
        }
    }

    /// Whether `token` is the admin token.
    pub fn is_admin_token(&self, token: &str) -> bool {
        constant_time_eq(
            token_hash(token).as_bytes(),
            self.admin_token_sha256.as_bytes(),
        )
    }

    /// Issues an access token for a cluster's agent at this agent generation.
    pub fn issue_access_token(
        &self,
        cluster: &str,
        generation: i64,
    ) -> Result<(String, DateTime<Utc>), Error> {
        let key = self
            .keys
            .read()
            .expect("keys lock")
            .last()
            .cloned()
            .ok_or_else(|| Error::Internal("no signing key".into()))?;
        let now = Utc::now();
        let exp =
            now + chrono::Duration::from_std(self.access_ttl).unwrap_or(chrono::Duration::hours(1));
        let claims = AccessClaims {
            iss: ACCESS_ISSUER.into(),
            sub: format!("cluster:{cluster}"),
            aud: ACCESS_AUDIENCE.into(),
            iat: now.timestamp(),
            exp: exp.timestamp(),
            generation,
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key.kid.clone());
        let jwt = jsonwebtoken::encode(&header, &claims, &key.encoding)
            .map_err(|e| Error::Internal(format!("signing an access token: {e}")))?;
        Ok((jwt, exp))
    }

    /// Trades an assertion signed by the cluster agent's own key for an access token; the
    /// agent renews its lease every `lease_interval`.
    #[tracing::instrument(skip(self, assertion))]
    pub async fn issue_credentials(
        &self,
        cluster: &str,
        assertion: &str,
        lease_interval: Duration,
    ) -> Result<api::AccessToken, Error> {
        super::validate::validate_cluster_name(cluster)?;
        let agent = self.store.get_agent(cluster).await?.ok_or_else(|| {
            Error::Unauthorized(format!("cluster {cluster:?} has no accepted agent"))
        })?;
        if agent.revoked {
            return Err(Error::Unauthorized(format!(
                "the agent of cluster {cluster:?} was revoked; join again"
            )));
        }
        self.verify_assertion(&agent.public_key, assertion, &format!("cluster:{cluster}"))
            .await?;
        let (access_token, expires_at) = self.issue_access_token(cluster, agent.generation)?;
        Ok(api::AccessToken {
            access_token,
            expires_at,
            lease_interval_seconds: lease_interval.as_secs().max(1),
        })
    }

    /// The principal a bearer token stands for.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, Error> {
        if self.is_admin_token(token) {
            return Ok(Principal::Admin);
        }
        match token.matches('.').count() {
            2 => self.authenticate_jwt(token).await,
            1 => self.authenticate_token(token).await,
            _ => Err(unauthorized("the bearer token is not valid")),
        }
    }

    async fn authenticate_token(&self, token: &str) -> Result<Principal, Error> {
        let (id, secret) = token.split_once('.').unwrap_or((token, ""));
        let stored = if is_safe_id(id) {
            self.store.get_token(id).await?
        } else {
            None
        };
        // Hashed either way, so an unknown id takes as long as a wrong secret.
        let hash = token_hash(secret);
        let Some(stored) = stored else {
            return Err(unauthorized(BAD_TOKEN));
        };
        if !constant_time_eq(hash.as_bytes(), stored.secret_sha256.as_bytes()) {
            return Err(unauthorized(BAD_TOKEN));
        }
        if stored.token.expires_at.is_some_and(|e| e <= Utc::now()) {
            return Err(unauthorized("the token has expired"));
        }
        let t = stored.token;
        match t.kind {
            TokenKind::Bootstrap => Ok(Principal::Bootstrap { token: Box::new(t) }),
            TokenKind::Api => {
                let selector = match &t.cluster_selector {
                    Some(s) => Some(Selector::parse(s).map_err(|e| {
                        Error::Internal(format!("stored selector of token {}: {e}", t.id))
                    })?),
                    None => None,
                };
                Ok(Principal::Api {
                    token_id: t.id,
                    scope: ApiScope {
                        clusters: t.clusters,
                        selector,
                        verbs: t.verbs,
                    },
                })
            }
        }
    }

    async fn authenticate_jwt(&self, token: &str) -> Result<Principal, Error> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| unauthorized("the bearer token is not a valid JWT"))?;
        let key = header.kid.as_deref().and_then(|kid| {
            self.keys
                .read()
                .expect("keys lock")
                .iter()
                .find(|k| k.kid == kid)
                .cloned()
        });
        if let Some(key) = key {
            return self.authenticate_access(token, &key).await;
        }
        // Not ours: a joining agent's assertion, signed with the key in its registration.
        let claims: AssertionClaims = jsonwebtoken::dangerous::insecure_decode(token)
            .map(|d| d.claims)
            .map_err(|_| unauthorized("the bearer token is not a valid JWT"))?;
        // The subject is the attacker's choice until the signature is checked: only a
        // well-formed id reaches the database.
        let id = claims
            .sub
            .strip_prefix("registration:")
            .filter(|id| is_safe_id(id))
            .ok_or_else(|| unauthorized("the JWT is signed by an unknown key"))?;
        let registration = self
            .store
            .get_registration(id)
            .await?
            .ok_or_else(|| unauthorized("the JWT names an unknown registration"))?;
        self.verify_assertion(&registration.public_key, token, &claims.sub)
            .await?;
        Ok(Principal::Registrant {
            registration_id: id.to_string(),
        })
    }

    async fn authenticate_access(&self, token: &str, key: &SigningKey) -> Result<Principal, Error> {
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&[ACCESS_AUDIENCE]);
        v.set_required_spec_claims(&["exp", "sub", "aud"]);
        // The hub checks its own tokens (hubs on one database share a clock closely enough).
        v.leeway = 0;
        let data = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &v)
            .map_err(|e| unauthorized(&format!("the access token is not valid: {e}")))?;
        let cluster = data
            .claims
            .sub
            .strip_prefix("cluster:")
            .ok_or_else(|| unauthorized("the access token names no cluster"))?;
        let agent = match &self.agents {
            Some(cache) => cache.agent(cluster).await?,
            None => self.store.get_agent(cluster).await?,
        }
        .ok_or_else(|| unauthorized("the cluster has no accepted agent"))?;
        if agent.revoked || agent.generation != data.claims.generation {
            return Err(unauthorized(
                "the agent's credentials were revoked; join again",
            ));
        }
        Ok(Principal::Agent {
            cluster: cluster.to_string(),
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn auth() -> (Auth, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store =
            crate::store::connect(&format!("sqlite://{}", dir.path().join("hub.db").display()))
                .await
                .unwrap();
        let (auth, _) = Auth::init(store, Some("admin"), Duration::from_secs(3600))
            .await
            .unwrap();
        (auth, dir)
    }

    #[tokio::test]
    async fn a_rotated_key_keeps_verifying_what_it_signed() {
        let (auth, _dir) = auth().await;
        let (old, _) = auth.issue_access_token("c1", 1).unwrap();
        let old_kid = jsonwebtoken::decode_header(&old).unwrap().kid.unwrap();
        let new_kid = auth
            .rotate_signing_key(Duration::from_secs(3600))
            .await
            .unwrap();
        assert_ne!(old_kid, new_kid);
        let (new, _) = auth.issue_access_token("c1", 1).unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&new).unwrap().kid.unwrap(),
            new_kid,
            "the newest key signs"
        );
        // Both verify (the agent lookup fails afterwards: no agent in this store, so 401 with
        // that reason, not a signature error).
        for token in [&old, &new] {
            let Err(Error::Unauthorized(m)) = auth.authenticate(token).await else {
                panic!("expected 401")
            };
            assert!(m.contains("no accepted agent"), "{m}");
        }
    }

    #[test]
    fn assertions_are_held_to_the_hubs_clock() {
        let key = rcgen::KeyPair::generate().unwrap();
        let encoding = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
        let sign = |claims: serde_json::Value| {
            jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &encoding).unwrap()
        };
        let now = Utc::now().timestamp();
        let s = "cluster:c1";
        let claims = |iss: &str, iat: i64, exp: i64, nbf: Option<i64>, jti: &str| {
            let mut c = serde_json::json!({"iss": iss, "sub": s, "aud": "fleethub", "iat": iat, "exp": exp, "jti": jti});
            if let Some(nbf) = nbf {
                c["nbf"] = nbf.into();
            }
            c
        };
        let check = |c| check_assertion(&key.public_key_pem(), &sign(c), s, now);
        assert!(check(claims(s, now, now + 600, None, "j")).is_ok());
        assert!(
            check(claims(s, now + 25, now + 625, Some(now + 20), "j")).is_ok(),
            "leeway"
        );
        for (what, c) in [
            ("future iat", claims(s, now + 3000, now + 3600, None, "j")),
            ("exp too far", claims(s, now + 300, now + 900, None, "j")),
            ("lifetime", claims(s, now - 100, now + 600, None, "j")),
            ("nbf ahead", claims(s, now, now + 500, Some(now + 300), "j")),
            ("iss", claims("cluster:c2", now, now + 60, None, "j")),
            ("no jti", claims(s, now, now + 60, None, "")),
            ("bad jti", claims(s, now, now + 60, None, "a\u{0}b")),
            ("expired", claims(s, now - 200, now - 100, None, "j")),
        ] {
            assert!(
                matches!(check(c), Err(Error::Unauthorized(_))),
                "{what} must be refused"
            );
        }
    }

    #[tokio::test]
    async fn forged_tokens_are_refused() {
        let (auth, _dir) = auth().await;
        let (good, _) = auth.issue_access_token("c1", 1).unwrap();
        let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
        parts[2] = parts[2].chars().rev().collect();
        for bad in [
            parts.join("."),
            "a.b.c".into(),
            "x.y".into(),
            "plain".into(),
            String::new(),
        ] {
            assert!(
                matches!(auth.authenticate(&bad).await, Err(Error::Unauthorized(_))),
                "{bad}"
            );
        }
    }
}
