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

/// [`spki_hash`] of the first `CERTIFICATE` block of a PEM bundle (blocks of other
/// labels, such as a key kept in the same file, are skipped): the value
/// `klusterlet join --ca-hash` pins.
pub fn ca_hash(ca_pem: &str) -> Result<String, String> {
    use x509_parser::error::PEMError;
    for block in x509_parser::pem::Pem::iter_from_buffer(ca_pem.as_bytes()) {
        let block = block.map_err(|e| match e {
            PEMError::IncompletePEM => "unterminated PEM certificate".to_string(),
            e => format!("PEM certificate: {e}"),
        })?;
        if block.label == "CERTIFICATE" {
            let (_, cert) = x509_parser::parse_x509_certificate(&block.contents)
                .map_err(|e| format!("CA certificate: {e}"))?;
            return Ok(spki_hash(cert.tbs_certificate.subject_pki.raw));
        }
    }
    Err("no PEM certificate found".to_string())
}
