//! Building the rustls server configuration from files: server certificate and
//! key, client CA, CRL, and the client-auth mode. Every error names the file;
//! a file other users could read (the key) or change (any of them) is refused.
//! Also what a connection keeps of its client certificate so that it can be
//! verified again when the CA or CRL changes, or its notAfter passes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::auth::PeerCert;
use crate::config::{ClientAuth, TlsConfig};
use crate::file_mode::{self, Holds};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key} {path}: {reason}")]
    File {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("tls: {0}")]
    Rustls(String),
}

/// The TLS files as resolved at startup (explicit, or the generated PKI).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    pub crl: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

impl TlsFiles {
    pub fn from_config(tls: &TlsConfig) -> Option<TlsFiles> {
        Some(TlsFiles {
            cert: tls.cert.clone()?,
            key: tls.key.clone()?,
            client_ca: tls.client_ca.clone(),
            crl: tls.crl.clone(),
            client_auth: tls.client_auth,
        })
    }

    /// Every file a reload should watch.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut paths = vec![self.cert.clone(), self.key.clone()];
        paths.extend(self.client_ca.clone());
        paths.extend(self.crl.clone());
        paths
    }
}

fn file_error(key: &'static str, path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        key,
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// Refuses `path` when other users could read its secret or change it.
fn check_mode(key: &'static str, path: &Path, holds: Holds) -> Result<(), TlsError> {
    file_mode::check(path, holds).map_err(|exposed| file_error(key, path, exposed))
}

fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    check_mode(key, path, Holds::TrustAnchor)?;
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(key, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(key, path, e))?;
    if certs.is_empty() {
        return Err(file_error(key, path, "no CERTIFICATE in the file"));
    }
    Ok(certs)
}

/// What the TLS files say: the config new connections are accepted with, and
/// its client verifier, kept to verify the certificates of open connections
/// again. `None` with `client_auth = "off"` (rustls's no-auth verifier must
/// never be asked about a certificate).
pub struct Trust {
    pub config: Arc<ServerConfig>,
    pub clients: Option<Arc<dyn ClientCertVerifier>>,
}

/// Builds a fresh rustls config. Called at startup and on every reload; a
/// failure leaves the caller's current config in place.
pub fn load(files: &TlsFiles) -> Result<Trust, TlsError> {
    let chain = read_certs("tls.cert", &files.cert)?;
    check_mode("tls.key", &files.key, Holds::PrivateKey)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| file_error("tls.key", &files.key, e))?;

    let verifier = match (files.client_auth, &files.client_ca) {
        (ClientAuth::Off, _) => WebPkiClientVerifier::no_client_auth(),
        (_, None) => {
            return Err(TlsError::Rustls(
                "tls.client_ca is needed when client_auth is optional or required".into(),
            ));
        }
        (mode, Some(ca_path)) => {
            let mut roots = RootCertStore::empty();
            for ca in read_certs("tls.client_ca", ca_path)? {
                roots
                    .add(ca)
                    .map_err(|e| file_error("tls.client_ca", ca_path, e))?;
            }
            let mut builder = WebPkiClientVerifier::builder(Arc::new(roots));
            if let Some(crl_path) = &files.crl {
                check_mode("tls.crl", crl_path, Holds::TrustAnchor)?;
                let crls = CertificateRevocationListDer::pem_file_iter(crl_path)
                    .map_err(|e| file_error("tls.crl", crl_path, e))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| file_error("tls.crl", crl_path, e))?;
                if crls.is_empty() {
                    return Err(file_error("tls.crl", crl_path, "no X509 CRL in the file"));
                }
                // Leaves only: the CA is the trust anchor, and an intermediate-free
                // PKI has no other certificate whose status could be unknown.
                builder = builder.with_crls(crls).only_check_end_entity_revocation();
            }
            if mode == ClientAuth::Optional {
                builder = builder.allow_unauthenticated();
            }
            builder
                .build()
                .map_err(|e| file_error("tls.client_ca", ca_path, e))?
        }
    };

    let clients = (files.client_auth != ClientAuth::Off).then(|| verifier.clone());
    let mut config = ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            file_error(
                "tls.key",
                &files.key,
                format!("does not match tls.cert: {e}"),
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(16 * 1024);
    config.ticketer =
        rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| TlsError::Rustls(e.to_string()))?;
    Ok(Trust {
        config: Arc::new(config),
        clients,
    })
}

/// Why an open connection's certificate is trusted no more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Untrusted {
    Expired,
    Revoked,
    /// It no longer chains to the client CA, or fails verification otherwise.
    NotTrusted,
}

impl Untrusted {
    /// Completes "the client certificate is …".
    pub fn as_str(self) -> &'static str {
        match self {
            Untrusted::Expired => "expired",
            Untrusted::Revoked => "revoked",
            Untrusted::NotTrusted => "no longer trusted",
        }
    }

    fn of(error: &rustls::Error) -> Untrusted {
        match error {
            rustls::Error::InvalidCertificate(CertificateError::Revoked) => Untrusted::Revoked,
            rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            ) => Untrusted::Expired,
            _ => Untrusted::NotTrusted,
        }
    }
}

/// A verified client certificate as its connection keeps it: the identity the
/// HTTP layer sees, and what it takes to verify the chain again.
pub struct ClientCert {
    pub identity: PeerCert,
    chain: Vec<CertificateDer<'static>>,
    /// notAfter in seconds since the epoch, compared on every request: cheaper
    /// than a verification, and expiry needs no reload to happen.
    not_after: i64,
    /// The reload generation the chain was last verified against.
    verified_in: AtomicU64,
    /// Set by the first failed check: a connection is never trusted again.
    refused: OnceLock<Untrusted>,
}

impl ClientCert {
    /// Reads a chain that rustls has just verified, with the generation of the
    /// configuration that verified it. A resumed session counts as verified by
    /// that generation too: its ticket key and session cache belong to the
    /// `ServerConfig`, which every reload replaces, so no session outlives the
    /// trust that verified it.
    ///
    /// A CN holding control characters or bidi marks is escaped here, not refused
    /// at the handshake: the CA vouched for the certificate (an enterprise CA may
    /// copy a display name verbatim), and refusing it would lock out a person for
    /// a formatting quirk, while escaped text can forge no log line or audit row.
    /// Every later writer escapes again; the escape is idempotent.
    pub fn verified(chain: Option<&[CertificateDer<'_>]>, generation: u64) -> Option<ClientCert> {
        let chain = chain?;
        let (_, cert) = X509Certificate::from_der(chain.first()?).ok()?;
        let cn = crate::escape::escape(cert.subject().iter_common_name().next()?.as_str().ok()?)
            .into_owned();
        let serial = mirror_pki::serial_hex(cert.raw_serial());
        Some(ClientCert {
            identity: PeerCert { cn, serial },
            not_after: cert.validity().not_after.timestamp(),
            chain: chain.iter().map(|c| c.clone().into_owned()).collect(),
            verified_in: AtomicU64::new(generation),
            refused: OnceLock::new(),
        })
    }

    /// Whether the certificate still holds: refused before, expired now, or
    /// (only when the trust changed since it was last verified) rejected by
    /// `current`, the verifier of `generation`.
    pub fn check(
        &self,
        generation: u64,
        current: impl FnOnce() -> (u64, Option<Arc<dyn ClientCertVerifier>>),
    ) -> Result<(), Untrusted> {
        if let Some(refused) = self.refused.get() {
            return Err(*refused);
        }
        if UnixTime::now().as_secs() as i64 > self.not_after {
            return Err(self.refuse(Untrusted::Expired));
        }
        if self.verified_in.load(Ordering::Acquire) == generation {
            return Ok(());
        }
        let (generation, verifier) = current();
        let Some(verifier) = verifier else {
            return Err(self.refuse(Untrusted::NotTrusted));
        };
        let (leaf, intermediates) = self.chain.split_first().ok_or(Untrusted::NotTrusted)?;
        match verifier.verify_client_cert(leaf, intermediates, UnixTime::now()) {
            Ok(_) => {
                self.verified_in.store(generation, Ordering::Release);
                Ok(())
            }
            Err(error) => Err(self.refuse(Untrusted::of(&error))),
        }
    }

    fn refuse(&self, why: Untrusted) -> Untrusted {
        *self.refused.get_or_init(|| why)
    }
}
