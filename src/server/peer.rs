//! The peer endpoint (`cluster.peer_listen`): where the other replicas relay
//! this replica's fills in progress from. mTLS only: the client must present
//! a certificate from `tls.client_ca` that is a server certificate (one with
//! the serverAuth purpose, which `mirror pki issue-server` gives every
//! replica), so a user's client certificate, good on the main port, opens
//! nothing here. One route: `GET /fills/{hex of the fill key}`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::tls::{self, TlsFiles};
use crate::config::ClientAuth;
use crate::store::Store;
use crate::wire::{Body, body};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct PeerServer {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    store: Store,
}

impl PeerServer {
    pub async fn bind(
        addr: SocketAddr,
        files: &TlsFiles,
        store: Store,
    ) -> anyhow::Result<PeerServer> {
        if files.client_ca.is_none() {
            anyhow::bail!(
                "[cluster] needs tls.client_ca: replicas prove themselves to each other \
                 with server certificates from it"
            );
        }
        let files = TlsFiles {
            client_auth: ClientAuth::Required,
            ..files.clone()
        };
        let trust = tls::load(&files)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cluster.peer_listen: cannot bind {addr}: {e}"))?;
        Ok(PeerServer {
            listener,
            acceptor: TlsAcceptor::from(trust.config),
            store,
        })
    }

    pub async fn run(self, stop: CancellationToken) {
        let http = Arc::new(auto::Builder::new(TokioExecutor::new()));
        loop {
            let (tcp, peer) = tokio::select! {
                () = stop.cancelled() => return,
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        tracing::warn!(%error, "peer endpoint: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let (acceptor, store, http, stop) = (
                self.acceptor.clone(),
                self.store.clone(),
                http.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                tokio::select! {
                    () = serve(acceptor, tcp, peer, store, http) => {}
                    () = stop.cancelled() => {}
                }
            });
        }
    }
}

async fn serve(
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    store: Store,
    http: Arc<auto::Builder<TokioExecutor>>,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::info!(%peer, %error, "peer endpoint: TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let is_replica = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .is_some_and(|leaf| is_server_certificate(leaf));
    if !is_replica {
        tracing::warn!(%peer, "peer endpoint: refused a client certificate that is not a replica's server certificate");
        return;
    }
    let service = service_fn(move |request| {
        let store = store.clone();
        async move { Ok::<_, std::convert::Infallible>(answer(&store, &request)) }
    });
    if let Err(error) = http.serve_connection(TokioIo::new(tls), service).await {
        tracing::debug!(%peer, %error, "peer connection ended with an error");
    }
}

/// Whether the certificate may act as a server: replicas use their server
/// certificates to reach each other; users' client certificates may not.
fn is_server_certificate(der: &[u8]) -> bool {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return false;
    };
    matches!(cert.extended_key_usage(), Ok(Some(eku)) if eku.value.server_auth && eku.value.client_auth)
}

fn answer(store: &Store, request: &Request<Incoming>) -> Response<Body> {
    let plain = |status: StatusCode| {
        let mut response = Response::new(body::empty());
        *response.status_mut() = status;
        response
    };
    if request.method() != Method::GET {
        return plain(StatusCode::METHOD_NOT_ALLOWED);
    }
    let key = request
        .uri()
        .path()
        .strip_prefix("/fills/")
        .and_then(|hex_key| hex::decode(hex_key).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok());
    let Some(key) = key else {
        return plain(StatusCode::NOT_FOUND);
    };
    match store.fill_for_peer(&key, 0) {
        Some(frames) => Response::new(body::stream(frames)),
        // Finished (a claim now finds it stored) or never started here.
        None => plain(StatusCode::NOT_FOUND),
    }
}

/// The client a replica reaches the others' peer endpoints with: it presents
/// this replica's server certificate and trusts only `tls.client_ca`.
pub fn peer_client(files: &TlsFiles) -> anyhow::Result<reqwest::Client> {
    use anyhow::Context;
    let Some(ca_path) = &files.client_ca else {
        anyhow::bail!(
            "[cluster] needs tls.client_ca: replicas prove themselves to each other \
             with server certificates from it"
        );
    };
    let read = |key: &str, path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("{key}: reading {}", path.display()))
    };
    let mut pem = read("tls.cert", &files.cert)?;
    pem.push(b'\n');
    pem.extend(read("tls.key", &files.key)?);
    let identity =
        reqwest::Identity::from_pem(&pem).context("tls.cert and tls.key as a peer identity")?;
    let ca = reqwest::Certificate::from_pem(&read("tls.client_ca", ca_path)?)
        .context("tls.client_ca")?;
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .identity(identity)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .context("building the peer client")
}
