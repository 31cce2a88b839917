//! The listener: accepts TCP, admits or refuses each connection (limits in
//! `admission`), completes the TLS handshake (with client certificate
//! verification), and hands each connection to hyper-util's auto HTTP/1.1 +
//! HTTP/2 server with the request handler (`connection`). Owns the connection
//! limits and timeouts; knows nothing about routes or protocols.

pub mod activity;
pub mod admission;
pub mod bootstrap;
pub mod connection;
pub mod peer;
pub mod plain_http;
pub mod reload;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::LimitsConfig;
use crate::http::App;
use admission::{Admission, AdmissionLimits, Refusal};
use connection::Connection;
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

    fn http(&self) -> auto::Builder<TokioExecutor> {
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
        http
    }

    /// Serves until `shutdown` resolves, then stops accepting and gives open
    /// requests `limits.shutdown_grace` to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let http = Arc::new(self.http());
        let admission = Admission::new(AdmissionLimits {
            max_connections: self.limits.max_connections,
            max_anonymous: self.limits.max_anonymous(),
            max_anonymous_per_peer: self.limits.max_anonymous_per_peer,
        });
        let connections = TaskTracker::new();
        let draining = CancellationToken::new();
        let stop_connections = CancellationToken::new();
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
            let slot = match admission.admit(peer.ip()) {
                Ok(slot) => slot,
                Err(refusal) => {
                    self.refused(peer, refusal);
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let connection = Connection {
                reloader: self.reloader.clone(),
                app: self.app.clone(),
                http: http.clone(),
                limits: self.limits.clone(),
                draining: draining.clone(),
            };
            let stopped = stop_connections.clone();
            connections.spawn(async move {
                tokio::select! {
                    _ = connection.serve(tcp, peer, slot) => {}
                    _ = stopped.cancelled() => {}
                }
            });
        }

        self.app.readiness().set_accepting(false);
        drop(self.listener);
        tracing::info!("shutting down: waiting for open requests");
        draining.cancel();
        connections.close();
        if tokio::time::timeout(self.limits.shutdown_grace, connections.wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown grace period over; closing remaining connections");
        }
        stop_connections.cancel();
    }

    fn refused(&self, peer: SocketAddr, refusal: Refusal) {
        self.app.metrics().connection_refused(refusal.as_str());
        // One line per refusal would let a flood write the log; the counter
        // tells the operator, and a full server is worth a warning.
        if refusal == Refusal::MaxConnections {
            tracing::warn!(%peer, limit = self.limits.max_connections, "connection limit reached; closing");
        } else {
            tracing::debug!(%peer, limit = refusal.as_str(), "connection refused");
        }
    }
}
