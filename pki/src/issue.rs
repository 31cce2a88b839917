//! Issuing leaf certificates: the server's, and one per client.

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::ledger::{CertKind, serial_hex};
use crate::{Pki, PkiError};

/// How long a certificate is valid.
#[derive(Clone, Copy, Debug)]
pub enum Validity {
    /// From an hour ago (tolerating clock skew) for this many days.
    Days(u32),
    /// An explicit window; tests use it to make certificates that already expired.
    Between(OffsetDateTime, OffsetDateTime),
}

impl Validity {
    pub(crate) fn window(self) -> (OffsetDateTime, OffsetDateTime) {
        match self {
            Validity::Days(days) => {
                let now = OffsetDateTime::now_utc();
                (
                    now - Duration::hours(1),
                    now + Duration::days(i64::from(days)),
                )
            }
            Validity::Between(from, until) => (from, until),
        }
    }
}

/// A freshly issued certificate and its private key, both PEM.
pub struct IssuedCert {
    pub name: String,
    pub serial: String,
    pub kind: CertKind,
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: OffsetDateTime,
}

impl std::fmt::Debug for IssuedCert {
    /// Keeps the private key out of any debug output or log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("name", &self.name)
            .field("serial", &self.serial)
            .field("kind", &self.kind)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// 16 random bytes, positive and without a leading zero, so the DER serial is
/// exactly these bytes and the ledger's hex matches what other tools print.
pub(crate) fn random_serial() -> Result<Vec<u8>, PkiError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| PkiError::Rcgen(rcgen::Error::RingUnspecified))?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(bytes.to_vec())
}

pub(crate) fn leaf_params(
    common_name: &str,
    sans: Vec<SanType>,
    eku: &[ExtendedKeyUsagePurpose],
    validity: Validity,
) -> Result<(CertificateParams, Vec<u8>), PkiError> {
    let serial = random_serial()?;
    let (not_before, not_after) = validity.window();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = eku.to_vec();
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.use_authority_key_identifier_extension = true;
    Ok((params, serial))
}

pub(crate) fn parse_sans(names: &[String]) -> Result<Vec<SanType>, PkiError> {
    if names.is_empty() {
        return Err(PkiError::BadInput {
            what: "--san",
            value: String::new(),
            reason: "a server certificate needs at least one DNS name or IP address",
        });
    }
    names
        .iter()
        .map(|name| match name.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => {
                let valid = !name.is_empty()
                    && name.len() <= 253
                    && name
                        .split('.')
                        .enumerate()
                        .all(|(i, label)| valid_dns_label(label, i == 0));
                if !valid {
                    return Err(PkiError::BadInput {
                        what: "--san",
                        value: name.clone(),
                        reason: "not a DNS name or IP address",
                    });
                }
                Ok(SanType::DnsName(name.as_str().try_into()?))
            }
        })
        .collect()
}

fn valid_dns_label(label: &str, first: bool) -> bool {
    if first && label == "*" {
        return true;
    }
    !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

impl Pki {
    /// Signs a new leaf with the CA and records it in the ledger.
    pub(crate) fn sign_leaf(
        &self,
        kind: CertKind,
        name: &str,
        params: CertificateParams,
        serial: &[u8],
    ) -> Result<IssuedCert, PkiError> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer()?)?;
        let issued = IssuedCert {
            name: name.to_owned(),
            serial: serial_hex(serial),
            kind,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_after: params.not_after,
        };
        self.record(&issued)?;
        Ok(issued)
    }
}
