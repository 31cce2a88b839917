//! The record of what this CA issued (`issued.json`), so `list` and `revoke`
//! work by name or serial and the CRL can be rebuilt from it.

use std::path::Path;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::PkiError;
use crate::files::{self, Mode};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertKind {
    Server,
    Client,
}

impl std::fmt::Display for CertKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CertKind::Server => "server",
            CertKind::Client => "client",
        })
    }
}

/// One issued certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Lower-case hex, no separators: the form the server logs and audits.
    pub serial: String,
    pub name: String,
    pub kind: CertKind,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Ledger {
    /// RFC 5280 wants CRL numbers to increase with every CRL issued.
    pub crl_number: u64,
    pub certs: Vec<Record>,
}

impl Ledger {
    pub fn load(path: &Path) -> Result<Ledger, PkiError> {
        if !path.exists() {
            return Ok(Ledger::default());
        }
        let text = files::read_to_string(path)?;
        serde_json::from_str(&text).map_err(|e| PkiError::BadFile {
            path: path.to_owned(),
            what: "ledger of issued certificates",
            reason: e.to_string(),
        })
    }

    pub fn save(&self, path: &Path) -> Result<(), PkiError> {
        // Serializing plain owned data cannot fail; the fallback keeps that a
        // visible error instead of a panic if the types ever change.
        let text = serde_json::to_string_pretty(self).map_err(|e| PkiError::BadFile {
            path: path.to_owned(),
            what: "ledger of issued certificates",
            reason: e.to_string(),
        })?;
        files::write_atomic(path, text.as_bytes(), Mode::Public)
    }

    /// Certificates that `revoke NAME|SERIAL` means: every live certificate of
    /// that name (a person who leaves loses all their certificates at once), or
    /// the one with that serial.
    pub fn select(&mut self, name_or_serial: &str) -> Result<Vec<&mut Record>, PkiError> {
        let serial = normalize_serial(name_or_serial);
        let by_serial = self.certs.iter().position(|r| r.serial == serial);
        if let Some(index) = by_serial {
            return Ok(vec![&mut self.certs[index]]);
        }
        let matches: Vec<&mut Record> = self
            .certs
            .iter_mut()
            .filter(|r| r.name == name_or_serial && r.revoked_at.is_none())
            .collect();
        if matches.is_empty() {
            return Err(PkiError::NotFound(name_or_serial.to_owned()));
        }
        Ok(matches)
    }
}

/// Accepts `0A:1B:…`, `0a1b…` and `0x0a1b…` alike.
pub(crate) fn normalize_serial(input: &str) -> String {
    let hex: String = input
        .trim()
        .trim_start_matches("0x")
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// Serial bytes as the ledger spells them (leading zero bytes dropped, since DER
/// adds one to keep a serial positive).
pub fn serial_hex(bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    normalize_serial(&hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_spellings_normalize_to_one_form() {
        assert_eq!(normalize_serial("0A:1B:FF"), "a1bff");
        assert_eq!(normalize_serial("0x0a1bff"), "a1bff");
        assert_eq!(serial_hex(&[0x00, 0x0a, 0x1b, 0xff]), "a1bff");
    }
}
