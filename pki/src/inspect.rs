//! Reading certificates and revocation lists back with x509-parser, for
//! `mirror pki inspect` and for anything else that wants to show what they say.

use std::fmt;
use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use crate::PkiError;
use crate::ledger::serial_hex;

/// What a certificate says, in the terms an operator checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
    pub expired: bool,
    pub is_ca: bool,
    pub sans: Vec<String>,
    pub extended_key_usage: Vec<String>,
    pub key_usage: String,
}

/// Every certificate in a PEM file.
pub fn inspect_file(path: &Path) -> Result<Vec<CertInfo>, PkiError> {
    let pem = std::fs::read(path).map_err(PkiError::io(path))?;
    inspect_pem(&pem).map_err(|reason| PkiError::BadFile {
        path: path.to_owned(),
        what: "PEM certificate file",
        reason,
    })
}

/// Every certificate in PEM text.
pub fn inspect_pem(pem: &[u8]) -> Result<Vec<CertInfo>, String> {
    let ders: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if ders.is_empty() {
        return Err("no CERTIFICATE block found".to_owned());
    }
    ders.iter().map(|der| describe(der)).collect()
}

fn describe(der: &[u8]) -> Result<CertInfo, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            sans.push(match name {
                GeneralName::DNSName(dns) => format!("DNS:{dns}"),
                GeneralName::IPAddress(bytes) => format!("IP:{}", ip_to_string(bytes)),
                GeneralName::RFC822Name(mail) => format!("email:{mail}"),
                GeneralName::URI(uri) => format!("URI:{uri}"),
                other => format!("{other:?}"),
            });
        }
    }
    let mut extended_key_usage = Vec::new();
    if let Ok(Some(ext)) = cert.extended_key_usage() {
        let eku = ext.value;
        let flags = [
            (eku.server_auth, "serverAuth"),
            (eku.client_auth, "clientAuth"),
            (eku.code_signing, "codeSigning"),
            (eku.email_protection, "emailProtection"),
            (eku.time_stamping, "timeStamping"),
            (eku.ocsp_signing, "OCSPSigning"),
            (eku.any, "any"),
        ];
        extended_key_usage.extend(
            flags
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, n)| (*n).to_owned()),
        );
    }
    let key_usage = match cert.key_usage() {
        Ok(Some(ext)) => ext.value.to_string(),
        _ => String::new(),
    };
    let validity = cert.validity();
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial: serial_hex(cert.raw_serial()),
        not_before: validity.not_before.to_string(),
        not_after: validity.not_after.to_string(),
        expired: !validity.is_valid(),
        is_ca: cert.is_ca(),
        sans,
        extended_key_usage,
        key_usage,
    })
}

fn ip_to_string(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => std::net::Ipv4Addr::from([bytes[0], bytes[1], bytes[2], bytes[3]]).to_string(),
        16 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(bytes);
            std::net::Ipv6Addr::from(octets).to_string()
        }
        _ => format!("{bytes:02x?}"),
    }
}

impl fmt::Display for CertInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let none = |v: &[String]| {
            if v.is_empty() {
                "-".to_owned()
            } else {
                v.join(", ")
            }
        };
        writeln!(f, "subject:      {}", self.subject)?;
        writeln!(f, "issuer:       {}", self.issuer)?;
        writeln!(f, "serial:       {}", self.serial)?;
        writeln!(f, "not before:   {}", self.not_before)?;
        writeln!(
            f,
            "not after:    {}{}",
            self.not_after,
            if self.expired {
                "  (NOT VALID NOW)"
            } else {
                ""
            }
        )?;
        writeln!(f, "CA:           {}", if self.is_ca { "yes" } else { "no" })?;
        writeln!(f, "SANs:         {}", none(&self.sans))?;
        writeln!(
            f,
            "key usage:    {}",
            if self.key_usage.is_empty() {
                "-"
            } else {
                &self.key_usage
            }
        )?;
        write!(f, "ext key use:  {}", none(&self.extended_key_usage))
    }
}

/// What a revocation list says: who signed it, when it was made and when the
/// next one is due, and every serial it revokes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlInfo {
    pub issuer: String,
    pub this_update: String,
    pub next_update: Option<String>,
    /// Past `next_update`: strict clients refuse such a list.
    pub overdue: bool,
    pub number: Option<String>,
    pub revoked: Vec<RevokedEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedEntry {
    /// Lower-case hex, as `pki list` and the server's logs show serials.
    pub serial: String,
    pub revoked_at: String,
    pub reason: Option<String>,
}

/// Whether PEM text holds a revocation list (`-----BEGIN X509 CRL-----`).
pub fn holds_crl(pem: &[u8]) -> bool {
    CertificateRevocationListDer::pem_slice_iter(pem)
        .next()
        .is_some()
}

/// The first revocation list in a PEM file.
pub fn inspect_crl_file(path: &Path) -> Result<CrlInfo, PkiError> {
    let pem = std::fs::read(path).map_err(PkiError::io(path))?;
    inspect_crl_pem(&pem).map_err(|reason| PkiError::BadFile {
        path: path.to_owned(),
        what: "PEM revocation list",
        reason,
    })
}

/// The first revocation list in PEM text.
pub fn inspect_crl_pem(pem: &[u8]) -> Result<CrlInfo, String> {
    let der = CertificateRevocationListDer::pem_slice_iter(pem)
        .next()
        .ok_or_else(|| "no X509 CRL block found".to_owned())?
        .map_err(|e| e.to_string())?;
    let (_, crl) = CertificateRevocationList::from_der(&der).map_err(|e| e.to_string())?;
    let revoked = crl
        .iter_revoked_certificates()
        .map(|entry| RevokedEntry {
            serial: serial_hex(entry.raw_serial()),
            revoked_at: entry.revocation_date.to_string(),
            reason: entry.reason_code().map(|(_, code)| code.to_string()),
        })
        .collect();
    let next_update = crl.next_update();
    Ok(CrlInfo {
        issuer: crl.issuer().to_string(),
        this_update: crl.last_update().to_string(),
        overdue: next_update.is_some_and(|next| next < x509_parser::time::ASN1Time::now()),
        next_update: next_update.map(|t| t.to_string()),
        number: crl.crl_number().map(|n| n.to_string()),
        revoked,
    })
}

impl fmt::Display for CrlInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "revocation list (CRL)")?;
        writeln!(f, "issuer:       {}", self.issuer)?;
        writeln!(f, "this update:  {}", self.this_update)?;
        writeln!(
            f,
            "next update:  {}{}",
            self.next_update.as_deref().unwrap_or("-"),
            if self.overdue { "  (OVERDUE)" } else { "" }
        )?;
        writeln!(f, "number:       {}", self.number.as_deref().unwrap_or("-"))?;
        write!(f, "revoked:      {}", self.revoked.len())?;
        let width = self
            .revoked
            .iter()
            .map(|r| r.serial.len())
            .max()
            .unwrap_or(0);
        for entry in &self.revoked {
            write!(f, "\n  {:<width$}  {}", entry.serial, entry.revoked_at)?;
            if let Some(reason) = &entry.reason {
                write!(f, "  {reason}")?;
            }
        }
        Ok(())
    }
}
