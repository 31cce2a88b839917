//! Building the rustls server configuration from files: server certificate and
//! key, client CA, CRL, and the client-auth mode. Every error names the file;
//! a file other users could read (the key) or change (any of them) is refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

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

/// Builds a fresh rustls config. Called at startup and on every reload; a
/// failure leaves the caller's current config in place.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
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
    Ok(Arc::new(config))
}

/// The verified client certificate's CN and serial, as the HTTP layer sees them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCert {
    pub cn: String,
    pub serial: String,
}

/// Reads the identity out of a certificate that rustls has already verified.
///
/// A CN holding control characters or bidi marks is escaped here, not refused
/// at the handshake: the CA vouched for the certificate (an enterprise CA may
/// copy a display name verbatim), and refusing it would lock out a person for
/// a formatting quirk, while escaped text can forge no log line or audit row.
/// Every later writer escapes again; the escape is idempotent.
pub fn peer_cert(chain: Option<&[CertificateDer<'_>]>) -> Option<PeerCert> {
    let leaf = chain?.first()?;
    let (_, cert) = X509Certificate::from_der(leaf).ok()?;
    let cn = crate::escape::escape(cert.subject().iter_common_name().next()?.as_str().ok()?)
        .into_owned();
    let serial = mirror_pki::serial_hex(cert.raw_serial());
    Some(PeerCert { cn, serial })
}
