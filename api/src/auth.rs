//! The agent assertion format, defined once for the hub that checks it and the klusterlet
//! that signs it: its claims, the audiences, and the hash that pins the hub's CA.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `aud` of the assertions agents sign with their own key (RFC 7523 client
/// authentication JWTs).
pub const ASSERTION_AUDIENCE: &str = "fleethub";
/// `aud` of the access tokens the hub issues to agents.
pub const ACCESS_AUDIENCE: &str = "fleethub-agent";
/// `iss` of the access tokens the hub issues.
pub const ACCESS_ISSUER: &str = "fleethub-hub";

/// The claims of an assertion an agent signs with its own key (ES256).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssertionClaims {
    /// Who signs: `cluster:<name>` or `registration:<id>`.
    pub iss: String,
    /// The same as `iss`.
    pub sub: String,
    /// Always [`ASSERTION_AUDIENCE`].
    pub aud: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
    /// Not valid before (Unix seconds), when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// A unique id, so the hub accepts each assertion once.
    #[serde(default)]
    pub jti: String,
}

/// `sha256:<hex>` of a certificate's DER SubjectPublicKeyInfo: how a hub CA is pinned
/// (kubeadm's discovery-token-ca-cert-hash).
pub fn spki_hash(spki_der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(spki_der)))
}

/// [`spki_hash`] of the first certificate in a PEM bundle.
pub fn ca_hash(ca_pem: &str) -> Result<String, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes())
        .map_err(|e| format!("the hub's CA is not a PEM certificate: {e}"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&pem.contents)
        .map_err(|e| format!("the hub's CA certificate cannot be parsed: {e}"))?;
    Ok(spki_hash(cert.tbs_certificate.subject_pki.raw))
}
