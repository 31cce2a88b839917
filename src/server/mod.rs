//! The listener: accepts TCP, completes the TLS handshake (with client
//! certificate verification), and hands each connection to hyper-util's auto
//! HTTP/1.1 + HTTP/2 server with the request handler. Owns the connection
//! limits and timeouts; knows nothing about routes or protocols.

pub mod bootstrap;
pub mod reload;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::LimitsConfig;
use crate::http::{App, ConnInfo};
use crate::metrics::HandshakeFailure;
use reload::Reloader;

/// A running server's shared parts.
pub struct Server {
    listener: TcpListener,
    reloader: Arc<Reloader>,
    app: Arc<App>,
    limits: LimitsConfig,
}

impl Server {
    pub fn new(
        listener: TcpListener,
        reloader: Arc<Reloader>,
        app: Arc<App>,
        limits: LimitsConfig,
    ) -> Server {
        Server {
            listener,
            reloader,
            app,
            limits,
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then stops accepting and gives open
    /// requests `limits.shutdown_grace` to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_timeout)
            .max_buf_size(self.limits.max_header_size.as_u64() as usize);
        http.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(self.limits.max_header_size.as_u64() as u32)
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20))
            .max_concurrent_streams(256)
            .initial_stream_window_size(1024 * 1024)
            .initial_connection_window_size(4 * 1024 * 1024);
        let http = Arc::new(http);
        let graceful = GracefulShutdown::new();
        let slots = Arc::new(Semaphore::new(self.limits.max_connections));
        let stop_handshakes = CancellationToken::new();
        tokio::pin!(shutdown);

        // `/readyz` reports whether this loop takes connections.
        self.app.readiness().set_accepting(true);
        loop {
            let (tcp, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => {
                        self.app.readiness().set_accepting(true);
                        pair
                    }
                    Err(error) => {
                        // EMFILE and friends: back off instead of spinning.
                        self.app.readiness().set_accepting(false);
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                tracing::warn!(%peer, limit = self.limits.max_connections, "connection limit reached; closing");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let connection = Connection {
                reloader: self.reloader.clone(),
                app: self.app.clone(),
                http: http.clone(),
                handshake_timeout: self.limits.handshake_timeout,
            };
            let watcher = graceful.watcher();
            let cancelled = stop_handshakes.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = connection.serve(tcp, peer, watcher) => {}
                    _ = cancelled.cancelled() => {}
                }
                drop(permit);
            });
        }

        self.app.readiness().set_accepting(false);
        drop(self.listener);
        tracing::info!("shutting down: waiting for open requests");
        if tokio::time::timeout(self.limits.shutdown_grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("shutdown grace period over; closing remaining connections");
        }
        stop_handshakes.cancel();
    }
}

struct Connection {
    reloader: Arc<Reloader>,
    app: Arc<App>,
    http: Arc<auto::Builder<TokioExecutor>>,
    handshake_timeout: Duration,
}

impl Connection {
    async fn serve(
        self,
        tcp: TcpStream,
        peer: SocketAddr,
        watcher: hyper_util::server::graceful::Watcher,
    ) {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.reloader.tls());
        let tls = match tokio::time::timeout(self.handshake_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                let reason = HandshakeFailure::classify(&error);
                self.app.metrics().handshake_failed(reason);
                tracing::info!(%peer, reason = reason.as_str(), %error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                self.app
                    .metrics()
                    .handshake_failed(HandshakeFailure::Timeout);
                tracing::info!(%peer, "TLS handshake timed out");
                return;
            }
        };
        let (_, session) = tls.get_ref();
        let info = Arc::new(ConnInfo {
            peer,
            peer_text: peer.to_string(),
            cert: tls::peer_cert(session.peer_certificates()),
        });
        let app = self.app;
        let service = service_fn(move |request| {
            let app = app.clone();
            let info = info.clone();
            async move { Ok::<_, std::convert::Infallible>(app.handle(request, info).await) }
        });
        let connection = self.http.serve_connection(TokioIo::new(tls), service);
        if let Err(error) = watcher.watch(connection.into_owned()).await {
            tracing::debug!(%peer, %error, "connection ended with an error");
        }
    }
}
