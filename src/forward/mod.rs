//! `mirror forward`: a plain-HTTP listener on loopback that relays every
//! request to a mirror over TLS with the client certificate of a certs.d
//! folder, so a client that cannot present one (cmd/go: golang/go#30119) gets
//! that certificate's identity. Speaks HTTP only: knows nothing of GOPROXY,
//! OCI or the store, buffers no body, and is independent of the server.
//!
//! Whoever can connect acts with the certificate, so the listener is on
//! loopback unless the operator insists, and there it serves only the user
//! who runs it (`peer`) and never a web browser (`browser`).

mod browser;
mod certs;
mod notify;
mod peer;
mod refusal;
mod relay;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};

pub use certs::Identity;
pub use notify::ready as notify_ready;

use browser::Hosts;
use peer::Admission;
use relay::Relay;

/// How a forwarder is set up: `mirror forward`'s arguments.
#[derive(Clone, Debug)]
pub struct Options {
    pub listen: SocketAddr,
    /// The mirror's origin, `https://HOST:PORT`.
    pub to: String,
    /// `certs.d/HOST:PORT`: ca.crt, client.cert, client.key.
    pub cert_dir: PathBuf,
    /// Listen off loopback too, where anyone who reaches the port acts with
    /// the certificate and the same-user check cannot apply.
    pub allow_non_loopback: bool,
}

/// Why a forwarder cannot start. Each names what to change.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(
        "--listen {0}: not a loopback address; anyone who can reach it would act with this \
         certificate's identity (pass --allow-non-loopback to do it anyway)"
    )]
    NotLoopback(SocketAddr),
    #[error("--to {to}: {reason} (expected https://HOST:PORT)")]
    Target { to: String, reason: &'static str },
    #[error("--cert-dir: {0}")]
    Certs(#[from] certs::CertsError),
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A bound forwarder, ready to `run`.
pub struct Forwarder {
    listener: TcpListener,
    relay: Arc<Relay>,
    admission: Arc<Admission>,
    hosts: Hosts,
    identity: Identity,
}

/// How long a local client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long open requests may finish after a stop signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

impl Forwarder {
    /// Checks the options, loads the certificate and binds the listener.
    pub async fn bind(options: &Options) -> Result<Forwarder, ForwardError> {
        if !options.listen.ip().is_loopback() && !options.allow_non_loopback {
            return Err(ForwardError::NotLoopback(options.listen));
        }
        let origin = relay::origin(&options.to).map_err(|reason| ForwardError::Target {
            to: crate::escape::escape(&options.to).into_owned(),
            reason,
        })?;
        let (clients, identity) = certs::clients(&options.cert_dir)?;
        let listener =
            TcpListener::bind(options.listen)
                .await
                .map_err(|source| ForwardError::Bind {
                    addr: options.listen,
                    source,
                })?;
        let (admission, hosts) = if options.listen.ip().is_loopback() {
            (Admission::same_user(&identity), Hosts::Local)
        } else {
            (Admission::anyone(), Hosts::Any)
        };
        Ok(Forwarder {
            listener,
            relay: Arc::new(Relay::new(clients, origin)),
            admission: Arc::new(admission),
            hosts,
            identity,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The certificate the forwarder presents.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The mirror it forwards to.
    pub fn origin(&self) -> &str {
        self.relay.origin()
    }

    /// Serves until `shutdown` resolves, then gives open requests a few
    /// seconds to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT);
        let http = Arc::new(http);
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let connection = Connection {
                relay: self.relay.clone(),
                admission: self.admission.clone(),
                hosts: self.hosts,
                http: http.clone(),
            };
            let watcher = graceful.watcher();
            tokio::spawn(connection.serve(tcp, peer, watcher));
        }
        drop(self.listener);
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("shutdown grace period over; closing remaining connections");
        }
    }
}

struct Connection {
    relay: Arc<Relay>,
    admission: Arc<Admission>,
    hosts: Hosts,
    http: Arc<auto::Builder<TokioExecutor>>,
}

impl Connection {
    /// Serves one local connection: relayed if its user may act with the
    /// certificate, else every request on it gets the refusal; a browser's
    /// request is refused on any connection.
    async fn serve(
        self,
        tcp: TcpStream,
        peer: SocketAddr,
        watcher: hyper_util::server::graceful::Watcher,
    ) {
        let _ = tcp.set_nodelay(true);
        let local = tcp.local_addr().ok();
        let refusal = match local {
            Some(local) => self.admission.check(peer, local).await.err(),
            None => Some(peer::unplaced()),
        };
        if let Some(refusal) = &refusal {
            tracing::warn!(%peer, reason = %refusal, "connection refused");
        }
        let refusal = refusal.map(Arc::new);
        let (relay, hosts) = (self.relay, self.hosts);
        let service = service_fn(move |request: Request<Incoming>| {
            let relay = relay.clone();
            let refusal = refusal.clone();
            async move {
                if let Some(refusal) = refusal {
                    return Ok(refusal.response());
                }
                if let Err(refusal) = browser::check(&request, hosts) {
                    tracing::warn!(%peer, reason = %refusal, "request refused");
                    return Ok(refusal.response());
                }
                Ok::<Response<reqwest::Body>, std::convert::Infallible>(
                    relay.forward(request).await,
                )
            }
        });
        let connection = self.http.serve_connection(TokioIo::new(tcp), service);
        if let Err(error) = watcher.watch(connection.into_owned()).await {
            tracing::debug!(%peer, %error, "local connection ended with an error");
        }
    }
}
