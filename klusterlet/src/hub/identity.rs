//! The agent's identity on disk: its key pair, the assertions it signs with it, and the
//! state `join` leaves for `run`.
//!
//! The data dir holds two files:
//! * `agent.key`: the agent's private key (ECDSA P-256, PKCS#8 PEM, mode 0600). It never
//!   leaves the agent; the hub only ever sees the public half.
//! * `state.yaml`: the hub's URL and pinned CA, the cluster name and the join request id
//!   (mode 0600 too, though it holds no secret).

use std::path::{Path, PathBuf};

pub use api::auth::{ASSERTION_AUDIENCE, AssertionClaims, ca_hash, spki_hash};
use api::config::write_private;
use chrono::Utc;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How long an assertion is valid; the hub refuses longer ones.
pub const ASSERTION_LIFETIME_SECS: i64 = 300;
/// File name of the private key in the data dir.
pub const KEY_FILE: &str = "agent.key";
/// File name of the join state in the data dir.
pub const STATE_FILE: &str = "state.yaml";

/// Failures of the local identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The data dir has no identity.
    #[error("no klusterlet identity in {0} (run `klusterlet join` first)")]
    NotJoined(PathBuf),
    /// A file holds something unusable.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The key is not one the agent can use.
    #[error("agent key: {0}")]
    Key(String),
    /// Key generation, parsing or signing failed in the crypto library.
    #[error("agent key: {0}")]
    Crypto(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl IdentityError {
    fn crypto(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        IdentityError::Crypto(Box::new(source))
    }
}

/// Where the agent keeps its identity unless told otherwise:
/// `$XDG_DATA_HOME/klusterlet` or `~/.local/share/klusterlet`.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("klusterlet");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".local/share/klusterlet")
}

/// The agent's key pair. `Debug` never shows the private half.
pub struct AgentKey {
    pem: String,
    public_pem: String,
    encoding: EncodingKey,
}

impl std::fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentKey")
            .field("public_key_hash", &self.public_key_hash())
            .finish_non_exhaustive()
    }
}

impl AgentKey {
    /// Generates a new ECDSA P-256 key pair.
    pub fn generate() -> Result<Self, IdentityError> {
        let pair = rcgen::KeyPair::generate().map_err(IdentityError::crypto)?;
        Self::from_pem(&pair.serialize_pem())
    }

    /// A key from its PKCS#8 PEM.
    pub fn from_pem(pem: &str) -> Result<Self, IdentityError> {
        let pair = rcgen::KeyPair::from_pem(pem).map_err(IdentityError::crypto)?;
        if !pair.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256) {
            return Err(IdentityError::Key("not an ECDSA P-256 key".into()));
        }
        let encoding = EncodingKey::from_ec_pem(pem.as_bytes()).map_err(IdentityError::crypto)?;
        Ok(AgentKey {
            pem: pem.to_string(),
            public_pem: pair.public_key_pem(),
            encoding,
        })
    }

    /// Reads `agent.key` from the data dir.
    pub fn load(data_dir: &Path) -> Result<Self, IdentityError> {
        let path = data_dir.join(KEY_FILE);
        let pem = std::fs::read_to_string(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                IdentityError::NotJoined(data_dir.to_path_buf())
            } else {
                IdentityError::Io {
                    path: path.clone(),
                    source,
                }
            }
        })?;
        Self::from_pem(&pem).map_err(|e| IdentityError::Invalid {
            path,
            message: e.to_string(),
        })
    }

    /// Writes `agent.key` into the data dir, readable by its owner only.
    pub fn save(&self, data_dir: &Path) -> Result<(), IdentityError> {
        create_private_dir(data_dir)?;
        let path = data_dir.join(KEY_FILE);
        write_private(&path, self.pem.as_bytes())
            .map_err(|source| IdentityError::Io { path, source })
    }

    /// The private key in PKCS#8 PEM, for the Secret of `--print-manifests`.
    pub fn private_pem(&self) -> &str {
        &self.pem
    }

    /// The public key in SubjectPublicKeyInfo PEM, as the registration carries it.
    pub fn public_key_pem(&self) -> &str {
        &self.public_pem
    }

    /// `sha256:<hex>` of the public key's PEM text, as the hub shows it to admins.
    pub fn public_key_hash(&self) -> String {
        format!(
            "sha256:{}",
            hex::encode(Sha256::digest(self.public_pem.as_bytes()))
        )
    }

    /// Signs an assertion (ES256) for this subject, valid for five minutes.
    pub fn assertion(&self, subject: &str) -> Result<String, IdentityError> {
        let now = Utc::now().timestamp();
        let claims = AssertionClaims {
            iss: subject.to_string(),
            sub: subject.to_string(),
            aud: ASSERTION_AUDIENCE.to_string(),
            iat: now,
            exp: now + ASSERTION_LIFETIME_SECS,
            nbf: None,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.encoding)
            .map_err(IdentityError::crypto)
    }

    /// An assertion to read the join request `id`.
    pub fn registration_assertion(&self, id: &str) -> Result<String, IdentityError> {
        self.assertion(&format!("registration:{id}"))
    }

    /// An assertion to get an access token for `cluster`.
    pub fn cluster_assertion(&self, cluster: &str) -> Result<String, IdentityError> {
        self.assertion(&format!("cluster:{cluster}"))
    }
}

/// What `join` leaves in the data dir for `run`, `token` and `unjoin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinState {
    /// The hub's URL as given to `join --hub`.
    pub server: String,
    /// PEM of the hub's CAs that `--ca-hash` pinned at join: only these are trusted.
    pub certificate_authority_data: String,
    /// `sha256:<hex>` of the SubjectPublicKeyInfo of the CAs pinned (the `--ca-hash`
    /// values given to join, comma-separated when several).
    pub ca_hash: String,
    /// The managed cluster's name on the hub.
    pub cluster_name: String,
    /// The join request's id.
    pub registration_id: String,
    /// When the request was sent.
    pub requested_at: chrono::DateTime<Utc>,
}

impl JoinState {
    /// Reads `state.yaml` from the data dir.
    pub fn load(data_dir: &Path) -> Result<Self, IdentityError> {
        let path = data_dir.join(STATE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(IdentityError::NotJoined(data_dir.to_path_buf()));
            }
            Err(source) => return Err(IdentityError::Io { path, source }),
        };
        Self::parse(&text).map_err(|message| IdentityError::Invalid { path, message })
    }

    /// Parses the text of a `state.yaml`.
    pub fn parse(text: &str) -> Result<Self, String> {
        serde_saphyr::from_str(text).map_err(|e| e.to_string())
    }

    /// The text of `state.yaml`.
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).expect("the join state serializes")
    }

    /// Writes `state.yaml` into the data dir.
    pub fn save(&self, data_dir: &Path) -> Result<(), IdentityError> {
        create_private_dir(data_dir)?;
        let path = data_dir.join(STATE_FILE);
        write_private(&path, self.to_yaml().as_bytes())
            .map_err(|source| IdentityError::Io { path, source })
    }

    /// A client configuration that trusts only the pinned CA, without a token.
    pub fn client_config(&self) -> api::ClientConfig {
        api::ClientConfig {
            server: self.server.clone(),
            ca_data: Some(self.certificate_authority_data.clone()),
            token: None,
        }
    }
}

/// The identity `run` and `token` work with.
#[derive(Debug)]
pub struct Identity {
    /// The join state.
    pub state: JoinState,
    /// The agent's key.
    pub key: AgentKey,
}

impl Identity {
    /// Reads the key and the state from the data dir.
    pub fn load(data_dir: &Path) -> Result<Self, IdentityError> {
        let state = JoinState::load(data_dir)?;
        let key = AgentKey::load(data_dir)?;
        Ok(Identity { state, key })
    }
}

/// Removes the identity files; returns those that existed.
pub fn remove(data_dir: &Path) -> Result<Vec<PathBuf>, IdentityError> {
    let mut removed = Vec::new();
    for name in [KEY_FILE, STATE_FILE] {
        let path = data_dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(IdentityError::Io { path, source }),
        }
    }
    Ok(removed)
}

fn create_private_dir(dir: &Path) -> Result<(), IdentityError> {
    let io = |source| IdentityError::Io {
        path: dir.to_path_buf(),
        source,
    };
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io)
}

/// The `sha256:<hex>` SubjectPublicKeyInfo hash of each certificate in a PEM bundle, with
/// its DER, in bundle order; blocks that are not certificates or do not parse are left out.
pub fn bundle_certificates(bundle_pem: &str) -> Vec<(String, Vec<u8>)> {
    x509_parser::pem::Pem::iter_from_buffer(bundle_pem.as_bytes())
        .filter_map(Result::ok)
        .filter(|pem| pem.label == "CERTIFICATE")
        .filter_map(|pem| {
            let (_, cert) = x509_parser::parse_x509_certificate(&pem.contents).ok()?;
            let hash = spki_hash(cert.tbs_certificate.subject_pki.raw);
            Some((hash, pem.contents.clone()))
        })
        .collect()
}

/// Exactly the certificates of a CA bundle whose SubjectPublicKeyInfo hash is pinned, as
/// PEM: the only ones to trust. A bundle is the hub's word, so a certificate the pins do
/// not name (an attacker's CA next to the real one) must never be trusted. Errs with the
/// hashes the bundle does hold when none is pinned.
pub fn pinned_certificates(bundle_pem: &str, pinned: &[String]) -> Result<String, Vec<String>> {
    use base64::Engine;
    let certs = bundle_certificates(bundle_pem);
    let mut out = String::new();
    for (hash, der) in &certs {
        if !pinned.contains(hash) {
            continue;
        }
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    if out.is_empty() {
        return Err(certs.into_iter().map(|(hash, _)| hash).collect());
    }
    Ok(out)
}

/// Normalizes a `--ca-hash` value to `sha256:<lowercase hex>`; kubeadm's form and a bare
/// hex digest are accepted.
pub fn normalize_ca_hash(text: &str) -> Result<String, String> {
    let hex_part = text.strip_prefix("sha256:").unwrap_or(text);
    if hex_part.len() != 64 || !hex_part.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "--ca-hash {text:?} is not sha256:<64 hex digits> (the join line `hub token create` prints has it)"
        ));
    }
    Ok(format!("sha256:{}", hex_part.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    #[test]
    fn assertions_verify_with_the_public_key_and_carry_the_protocol_claims() {
        let key = AgentKey::generate().unwrap();
        let jwt = key.cluster_assertion("c1").unwrap();
        let decoding = DecodingKey::from_ec_pem(key.public_key_pem().as_bytes()).unwrap();
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&[ASSERTION_AUDIENCE]);
        let data = jsonwebtoken::decode::<AssertionClaims>(&jwt, &decoding, &validation).unwrap();
        let c = data.claims;
        assert_eq!(c.iss, "cluster:c1");
        assert_eq!(c.sub, "cluster:c1");
        assert_eq!(c.aud, "fleethub");
        assert_eq!(c.exp - c.iat, 300);
        assert!((c.iat - Utc::now().timestamp()).abs() < 5);
        assert_eq!(data.header.alg, Algorithm::ES256);
        // Two assertions never share a jti.
        let other = key.registration_assertion("r1").unwrap();
        let o = jsonwebtoken::decode::<AssertionClaims>(&other, &decoding, &validation)
            .unwrap()
            .claims;
        assert_eq!(o.sub, "registration:r1");
        assert_ne!(o.jti, c.jti);
    }

    #[test]
    fn another_key_does_not_verify() {
        let key = AgentKey::generate().unwrap();
        let other = AgentKey::generate().unwrap();
        let jwt = key.cluster_assertion("c1").unwrap();
        let decoding = DecodingKey::from_ec_pem(other.public_key_pem().as_bytes()).unwrap();
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&[ASSERTION_AUDIENCE]);
        assert!(jsonwebtoken::decode::<AssertionClaims>(&jwt, &decoding, &validation).is_err());
    }

    #[test]
    fn key_and_state_round_trip_privately() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("nested/klusterlet");
        assert!(matches!(
            Identity::load(&data_dir),
            Err(IdentityError::NotJoined(_))
        ));
        let key = AgentKey::generate().unwrap();
        key.save(&data_dir).unwrap();
        let state = JoinState {
            server: "https://127.0.0.1:8443".into(),
            certificate_authority_data:
                "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n".into(),
            ca_hash: format!("sha256:{}", "a".repeat(64)),
            cluster_name: "c1".into(),
            registration_id: "r-1".into(),
            requested_at: Utc::now(),
        };
        state.save(&data_dir).unwrap();
        let loaded = Identity::load(&data_dir).unwrap();
        assert_eq!(loaded.state, state);
        assert_eq!(loaded.key.public_key_pem(), key.public_key_pem());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in [KEY_FILE, STATE_FILE] {
                let mode = std::fs::metadata(data_dir.join(f))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{f}");
            }
            let mode = std::fs::metadata(&data_dir).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        let removed = remove(&data_dir).unwrap();
        assert_eq!(removed.len(), 2);
        assert!(matches!(
            Identity::load(&data_dir),
            Err(IdentityError::NotJoined(_))
        ));
    }

    #[test]
    fn debug_never_shows_the_private_key() {
        let key = AgentKey::generate().unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains("PRIVATE"));
        assert!(shown.contains("sha256:"));
    }

    #[test]
    fn non_p256_keys_are_refused() {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        assert!(AgentKey::from_pem(&pair.serialize_pem()).is_err());
    }

    #[test]
    fn ca_hash_is_the_spki_digest() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        use rcgen::PublicKeyData;
        let expected = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(key.subject_public_key_info()))
        );
        assert_eq!(ca_hash(&cert.pem()).unwrap(), expected);
        // A certificate under another key hashes differently.
        let other_key = rcgen::KeyPair::generate().unwrap();
        let other = params.self_signed(&other_key).unwrap();
        assert_ne!(ca_hash(&other.pem()).unwrap(), expected);
        assert!(ca_hash("not a certificate").is_err());
    }

    #[test]
    fn only_pinned_certificates_of_a_bundle_are_kept() {
        let ca = |_: u8| {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.self_signed(&key).unwrap().pem()
        };
        let (real, attacker) = (ca(1), ca(2));
        let (real_hash, attacker_hash) = (ca_hash(&real).unwrap(), ca_hash(&attacker).unwrap());
        // The attacker's CA first or last: either way only the pinned one is kept.
        for bundle in [format!("{real}{attacker}"), format!("{attacker}\n{real}")] {
            let kept = pinned_certificates(&bundle, std::slice::from_ref(&real_hash)).unwrap();
            let hashes: Vec<String> = bundle_certificates(&kept)
                .into_iter()
                .map(|(h, _)| h)
                .collect();
            assert_eq!(hashes, std::slice::from_ref(&real_hash));
            assert_eq!(ca_hash(&kept).unwrap(), real_hash);
        }
        let both = pinned_certificates(
            &format!("{real}{attacker}"),
            &[attacker_hash.clone(), real_hash.clone()],
        )
        .unwrap();
        assert_eq!(bundle_certificates(&both).len(), 2);
        let other = ca_hash(&ca(3)).unwrap();
        assert_eq!(
            pinned_certificates(&format!("{real}{attacker}"), &[other]).unwrap_err(),
            [real_hash, attacker_hash],
            "a mismatch names what the bundle holds"
        );
        assert!(pinned_certificates("junk", &[]).unwrap_err().is_empty());
    }

    #[test]
    fn ca_hash_flag_forms() {
        let hex = "AB".repeat(32);
        assert_eq!(
            normalize_ca_hash(&format!("sha256:{hex}")).unwrap(),
            format!("sha256:{}", hex.to_lowercase())
        );
        assert_eq!(
            normalize_ca_hash(&hex).unwrap(),
            format!("sha256:{}", hex.to_lowercase())
        );
        for bad in ["", "sha256:", "sha256:abc", "md5:abcd", &"g".repeat(64)] {
            assert!(normalize_ca_hash(bad).is_err(), "{bad}");
        }
    }
}
