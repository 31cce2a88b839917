//! The certificate authority: creating it, opening it, and the operations that
//! need its key (issuing, revoking).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::files::{self, Mode};
use crate::issue::{leaf_params, parse_sans, random_serial};
use crate::ledger::{CertKind, Ledger, Record};
use crate::names::check_common_name;
use crate::{IssuedCert, PkiError, Validity, layout};

/// Options for `mirror pki init`.
#[derive(Clone, Debug)]
pub struct CaOptions {
    pub common_name: String,
    pub days: u32,
    /// Replace an existing CA. Everything it issued stops being trusted.
    pub force: bool,
}

impl Default for CaOptions {
    fn default() -> Self {
        CaOptions {
            common_name: "mirror CA".to_owned(),
            days: 3650,
            force: false,
        }
    }
}

/// A PKI directory with a usable CA in it.
pub struct Pki {
    dir: PathBuf,
    ca_cert_pem: String,
    ca_key_pem: String,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Pki {
    /// Creates `ca.crt`, `ca.key` (0600), an empty ledger and an empty CRL in `dir`.
    pub fn init(dir: &Path, options: &CaOptions) -> Result<Pki, PkiError> {
        check_common_name_for_ca(&options.common_name)?;
        let cert_path = dir.join(layout::CA_CERT);
        let key_path = dir.join(layout::CA_KEY);
        if !options.force && (cert_path.exists() || key_path.exists()) {
            return Err(PkiError::CaExists(dir.to_owned()));
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, options.common_name.as_str());
        dn.push(DnType::OrganizationName, "mirror");
        params.distinguished_name = dn;
        // Path length 0: this CA signs leaves only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.key_identifier_method = KeyIdMethod::Sha256;
        let (not_before, not_after) = Validity::Days(options.days).window();
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
        let cert = params.self_signed(&key)?;

        // Key first: a crash between the two writes leaves a key without a
        // certificate, which `init` simply replaces, rather than a certificate
        // whose key is lost.
        files::write_atomic(&key_path, key.serialize_pem().as_bytes(), Mode::Secret)?;
        files::write_atomic(&cert_path, cert.pem().as_bytes(), Mode::Public)?;
        let pki = Pki {
            dir: dir.to_owned(),
            ca_cert_pem: cert.pem(),
            ca_key_pem: key.serialize_pem(),
        };
        let mut ledger = Ledger::default();
        pki.write_crl(&mut ledger)?;
        ledger.save(&pki.ledger_path())?;
        Ok(pki)
    }

    /// Opens the CA in `dir`.
    pub fn open(dir: &Path) -> Result<Pki, PkiError> {
        let cert_path = dir.join(layout::CA_CERT);
        let key_path = dir.join(layout::CA_KEY);
        if !cert_path.exists() || !key_path.exists() {
            return Err(PkiError::NoCa(dir.to_owned(), dir.display().to_string()));
        }
        let pki = Pki {
            dir: dir.to_owned(),
            ca_cert_pem: files::read_to_string(&cert_path)?,
            ca_key_pem: files::read_to_string(&key_path)?,
        };
        // Fail here, naming the file, rather than at the first signature.
        pki.issuer()?;
        Ok(pki)
    }

    /// Opens the CA in `dir`, creating one first if there is none.
    pub fn open_or_init(dir: &Path, options: &CaOptions) -> Result<(Pki, bool), PkiError> {
        if dir.join(layout::CA_CERT).exists() || dir.join(layout::CA_KEY).exists() {
            return Ok((Pki::open(dir)?, false));
        }
        Ok((Pki::init(dir, options)?, true))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    pub(crate) fn issuer(&self) -> Result<Issuer<'static, KeyPair>, PkiError> {
        let key = KeyPair::from_pem(&self.ca_key_pem).map_err(|e| PkiError::BadFile {
            path: self.path(layout::CA_KEY),
            what: "CA private key",
            reason: e.to_string(),
        })?;
        Issuer::from_ca_cert_pem(&self.ca_cert_pem, key).map_err(|e| PkiError::BadFile {
            path: self.path(layout::CA_CERT),
            what: "CA certificate",
            reason: e.to_string(),
        })
    }

    fn ledger_path(&self) -> PathBuf {
        self.path(layout::LEDGER)
    }

    /// Issues the server certificate for the given DNS names and IP addresses
    /// and writes `server.crt` and `server.key` (0600). EKU serverAuth, and
    /// clientAuth too: replicas of a cluster present it to each other's peer
    /// endpoints, which accept only certificates with both.
    pub fn issue_server(
        &self,
        sans: &[String],
        validity: Validity,
    ) -> Result<IssuedCert, PkiError> {
        let san_types = parse_sans(sans)?;
        let (params, serial) = leaf_params(
            &sans[0],
            san_types,
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            validity,
        )?;
        let issued = self.sign_leaf(CertKind::Server, &sans[0], params, &serial)?;
        files::write_atomic(
            &self.path(layout::SERVER_KEY),
            issued.key_pem.as_bytes(),
            Mode::Secret,
        )?;
        files::write_atomic(
            &self.path(layout::SERVER_CERT),
            issued.cert_pem.as_bytes(),
            Mode::Public,
        )?;
        Ok(issued)
    }

    /// Issues a client certificate (EKU clientAuth, CN = `name`). Nothing is
    /// written but the ledger; the caller decides where the key goes.
    pub fn issue_client(&self, name: &str, validity: Validity) -> Result<IssuedCert, PkiError> {
        check_common_name(name)?;
        let (params, serial) = leaf_params(
            name,
            Vec::new(),
            &[ExtendedKeyUsagePurpose::ClientAuth],
            validity,
        )?;
        self.sign_leaf(CertKind::Client, name, params, &serial)
    }

    pub(crate) fn record(&self, issued: &IssuedCert) -> Result<(), PkiError> {
        let mut ledger = Ledger::load(&self.ledger_path())?;
        ledger.certs.push(Record {
            serial: issued.serial.clone(),
            name: issued.name.clone(),
            kind: issued.kind,
            not_after: issued.not_after,
            revoked_at: None,
        });
        ledger.save(&self.ledger_path())
    }

    /// Every certificate this CA issued, oldest first.
    pub fn list(&self) -> Result<Vec<Record>, PkiError> {
        Ok(Ledger::load(&self.ledger_path())?.certs)
    }

    /// Revokes every live certificate named `name_or_serial`, or the one with that
    /// serial, and rewrites `ca.crl`. Returns what was revoked.
    pub fn revoke(&self, name_or_serial: &str) -> Result<Vec<Record>, PkiError> {
        let mut ledger = Ledger::load(&self.ledger_path())?;
        let now = OffsetDateTime::now_utc();
        let revoked: Vec<Record> = ledger
            .select(name_or_serial)?
            .into_iter()
            .map(|record| {
                record.revoked_at.get_or_insert(now);
                record.clone()
            })
            .collect();
        self.write_crl(&mut ledger)?;
        ledger.save(&self.ledger_path())?;
        Ok(revoked)
    }

    /// Signs a CRL listing every revoked serial in the ledger and writes it to `ca.crl`.
    fn write_crl(&self, ledger: &mut Ledger) -> Result<(), PkiError> {
        ledger.crl_number += 1;
        let now = OffsetDateTime::now_utc();
        let revoked_certs = ledger
            .certs
            .iter()
            .filter_map(|record| {
                let at = record.revoked_at?;
                let bytes = hex_to_bytes(&record.serial)?;
                Some(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&bytes),
                    revocation_time: at,
                    reason_code: Some(RevocationReason::CessationOfOperation),
                    invalidity_date: None,
                })
            })
            .collect();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            // The server accepts a CRL past its nextUpdate; other tools may not,
            // so give them a year before anyone has to re-run `revoke`.
            next_update: now + Duration::days(365),
            crl_number: SerialNumber::from(ledger.crl_number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer()?)?;
        files::write_atomic(&self.path(layout::CRL), crl.pem()?.as_bytes(), Mode::Public)
    }
}

fn check_common_name_for_ca(name: &str) -> Result<(), PkiError> {
    if name.trim().is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(PkiError::BadInput {
            what: "--cn",
            value: name.to_owned(),
            reason: "must be 1 to 64 printable characters",
        });
    }
    Ok(())
}

fn hex_to_bytes(hex: &str) -> Option<Vec<u8>> {
    let padded = if hex.len() % 2 == 1 {
        format!("0{hex}")
    } else {
        hex.to_owned()
    };
    (0..padded.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&padded[i..i + 2], 16).ok())
        .collect()
}
