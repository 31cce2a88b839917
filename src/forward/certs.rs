//! The certs.d folder a forwarder presents, and the clients built from it:
//! `ca.crt` is the only trust anchor (the mirror's CA, never the system
//! roots), `client.cert` + `client.key` the identity. The key is refused when
//! other users could read it, as the server refuses its own.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mirror_pki::layout;

use crate::escape::escape;
use crate::file_mode::{self, Holds};

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("{path}: {reason}", path = path.display())]
    Read { path: PathBuf, reason: String },
    #[error(transparent)]
    Exposed(#[from] file_mode::Exposed),
    #[error("building the TLS client from {dir}: {source}", dir = dir.display())]
    Client {
        dir: PathBuf,
        source: reqwest::Error,
    },
}

/// Who the forwarder is to the mirror: the client certificate's subject, as
/// an operator finds it in the mirror's audit.
#[derive(Clone, Debug)]
pub struct Identity {
    pub subject: String,
    pub serial: String,
    pub not_after: String,
    pub expired: bool,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (serial {}, valid until {})",
            escape(&self.subject),
            self.serial,
            self.not_after
        )
    }
}

/// The two clients a relay uses, with one identity.
pub struct Clients {
    /// Every request: one pool, HTTP/2 when the mirror offers it (every
    /// request multiplexed on one TLS connection), keep-alive otherwise.
    pub pooled: reqwest::Client,
    /// One HTTP/1.1 connection per request, kept for none: for the second
    /// try of a request the pool failed. HTTP/2 loses why a TLS 1.3 server
    /// refused the certificate (the alert comes after the handshake and the
    /// request sees only "connection was not ready"); HTTP/1.1 reports it.
    pub once: reqwest::Client,
}

/// The clients for `dir` and the identity they present.
pub fn clients(dir: &Path) -> Result<(Clients, Identity), CertsError> {
    let ca_path = dir.join(layout::CERTS_D_CA);
    let cert_path = dir.join(layout::CERTS_D_CERT);
    let key_path = dir.join(layout::CERTS_D_KEY);
    file_mode::check(&key_path, Holds::PrivateKey)?;
    file_mode::check(&ca_path, Holds::TrustAnchor)?;
    let ca = read(&ca_path)?;
    let cert = read(&cert_path)?;
    let key = read(&key_path)?;
    let identity = describe(&cert_path, &cert)?;
    let anchors = reqwest::Certificate::from_pem_bundle(&ca).map_err(|e| CertsError::Read {
        path: ca_path.clone(),
        reason: e.to_string(),
    })?;
    if anchors.is_empty() {
        return Err(CertsError::Read {
            path: ca_path,
            reason: "no CERTIFICATE block found".into(),
        });
    }
    let pair = [cert.as_slice(), b"\n", key.as_slice()].concat();
    let tls_identity = reqwest::Identity::from_pem(&pair).map_err(|e| CertsError::Read {
        path: key_path,
        reason: format!("not a key for {}: {e}", layout::CERTS_D_CERT),
    })?;
    let build = |builder: reqwest::ClientBuilder| {
        builder
            .tls_certs_only(anchors.clone())
            .identity(tls_identity.clone())
            .build()
            .map_err(|source| CertsError::Client {
                dir: dir.to_owned(),
                source,
            })
    };
    let clients = Clients {
        pooled: build(builder())?,
        once: build(builder().http1_only().pool_max_idle_per_host(0))?,
    };
    Ok((clients, identity))
}

fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .https_only(true)
        // A redirect is the client's to follow (or not), as without the forwarder.
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        .connect_timeout(Duration::from_secs(10))
        // Per read, not per request: a 500 MB zip may take long, a stalled one may not.
        .read_timeout(Duration::from_secs(60))
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_keepalive(Duration::from_secs(60))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .http2_keep_alive_timeout(Duration::from_secs(20))
}

fn read(path: &Path) -> Result<Vec<u8>, CertsError> {
    std::fs::read(path).map_err(|e| CertsError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

fn describe(path: &Path, pem: &[u8]) -> Result<Identity, CertsError> {
    let infos = mirror_pki::inspect_pem(pem).map_err(|reason| CertsError::Read {
        path: path.to_owned(),
        reason,
    })?;
    let Some(leaf) = infos.into_iter().next() else {
        return Err(CertsError::Read {
            path: path.to_owned(),
            reason: "no certificate".into(),
        });
    };
    Ok(Identity {
        subject: leaf.subject,
        serial: leaf.serial,
        not_after: leaf.not_after,
        expired: leaf.expired,
    })
}
