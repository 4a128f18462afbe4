//! The hub's own CA and serving certificates (used when no `--tls-cert` is given).
//!
//! The CA lives in the database, so every hub sharing it serves under the same CA, and
//! agents pin it by the SHA-256 of its SubjectPublicKeyInfo (kubeadm's
//! discovery-token-ca-cert-hash).

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

/// The settings key of the CA (certificate and key, one JSON value so both come from the
/// same hub when several start at once).
const CA_SETTING: &str = "tls.ca";

/// Failures creating or loading certificates.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Certificate generation or parsing failed.
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored or given PEM is unusable.
    #[error("{0}")]
    Invalid(String),
}

/// A CA certificate and its key, in PEM.
#[derive(Clone, Serialize, Deserialize)]
pub struct CaBundle {
    /// The CA certificate.
    pub cert_pem: String,
    /// The CA private key; never logged.
    key_pem: String,
}

impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaBundle")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// A serving certificate chain and key, in PEM.
pub struct ServingCert {
    /// Leaf then CA.
    pub chain_pem: String,
    /// The leaf's private key.
    pub key_pem: String,
}

impl CaBundle {
    /// Creates a new self-signed CA.
    pub fn generate() -> Result<Self, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "fleethub-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = time_from_now(-3600);
        params.not_after = time_from_now(10 * 365 * 24 * 3600);
        let cert = params.self_signed(&key)?;
        Ok(CaBundle {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The CA shared by every hub on this database, created by whichever hub came first.
    pub async fn load_or_create(store: &dyn Store) -> Result<Self, TlsError> {
        let candidate = serde_json::to_string(&Self::generate()?)
            .map_err(|e| TlsError::Invalid(e.to_string()))?;
        let stored = store.init_setting(CA_SETTING, &candidate).await?;
        serde_json::from_str(&stored).map_err(|e| TlsError::Invalid(format!("stored CA: {e}")))
    }

    /// Issues a serving certificate for these names and addresses.
    pub fn issue_serving_cert(&self, hosts: &[String]) -> Result<ServingCert, TlsError> {
        let ca_key = KeyPair::from_pem(&self.key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, ca_key)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "fleethub");
        for h in hosts {
            let san = match h.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(h.clone().try_into()?),
            };
            if !params.subject_alt_names.contains(&san) {
                params.subject_alt_names.push(san);
            }
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.not_before = time_from_now(-3600);
        params.not_after = time_from_now(365 * 24 * 3600);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(ServingCert {
            chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
        })
    }
}

fn time_from_now(secs: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() + time::Duration::seconds(secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::auth::ca_hash;
    use sha2::{Digest, Sha256};

    #[test]
    fn ca_hash_pins_the_first_certificate_of_a_bundle() {
        let ca = CaBundle::generate().unwrap();
        let key = KeyPair::from_pem(&ca.key_pem).unwrap();
        let spki = Sha256::digest(rcgen::PublicKeyData::subject_public_key_info(&key));
        let expected = format!("sha256:{}", hex::encode(spki));
        assert_eq!(ca_hash(&ca.cert_pem).unwrap(), expected);
        // A key before it and a leaf after it change nothing.
        let bundle = format!("{}{}", ca.key_pem, ca.cert_pem);
        assert_eq!(ca_hash(&bundle).unwrap(), expected);
        let serving = ca.issue_serving_cert(&["localhost".into()]).unwrap();
        assert_ne!(ca_hash(&serving.chain_pem).unwrap(), expected);
    }

    #[test]
    fn unusable_pem_is_refused_with_what_is_wrong() {
        let message = |pem: &str| ca_hash(pem).unwrap_err().to_string();
        assert_eq!(message("not a certificate"), "no PEM certificate found");
        assert_eq!(
            message("-----BEGIN CERTIFICATE-----\nMIIB\n"),
            "unterminated PEM certificate"
        );
        assert!(
            message("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n")
                .starts_with("PEM certificate: "),
        );
    }
}
