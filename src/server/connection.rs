//! One connection's life: plain-HTTP check, TLS handshake, admission into the
//! anonymous or authenticated share, then hyper-util's auto HTTP/1.1 + HTTP/2
//! under a watchdog that closes it gracefully when a deadline passes, its
//! certificate is trusted no more, or the server drains.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::header::{CONNECTION, HeaderValue};
use http::{Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use super::activity::{Activity, BusyBody, Verdict};
use super::admission::Slot;
use super::plain_http::{self, Opening};
use super::reload::Reloader;
use super::tls::{ClientCert, Untrusted};
use crate::config::LimitsConfig;
use crate::http::{App, ConnInfo};
use crate::metrics::HandshakeFailure;
use crate::wire::Body;

/// How long a connection the server decided to close may take to close
/// gracefully (the answer in flight, HTTP/2's GOAWAY exchange) before it is
/// dropped; a peer that does not finish in this time is not a client.
const CLOSING_GRACE: Duration = Duration::from_secs(5);

pub struct Connection {
    pub reloader: Arc<Reloader>,
    pub app: Arc<App>,
    pub http: Arc<auto::Builder<TokioExecutor>>,
    pub limits: LimitsConfig,
    /// Cancelled when the server shuts down: every connection closes gracefully.
    pub draining: CancellationToken,
}

/// What the request handler of one connection shares with its watchdog.
struct Served {
    app: Arc<App>,
    reloader: Arc<Reloader>,
    info: Arc<ConnInfo>,
    cert: Option<ClientCert>,
    slot: Slot,
    activity: Arc<Activity>,
    /// Cancelled to have the watchdog close the connection gracefully.
    close: CancellationToken,
}

impl Connection {
    pub async fn serve(self, tcp: TcpStream, peer: SocketAddr, slot: Slot) {
        let Some((tls, generation)) = self.handshake(tcp, peer).await else {
            return;
        };
        let (_, session) = tls.get_ref();
        let cert = ClientCert::verified(session.peer_certificates(), generation);
        if let Err(refusal) = slot.handshake_done(cert.is_some()) {
            self.app.metrics().connection_refused(refusal.as_str());
            tracing::debug!(%peer, limit = refusal.as_str(), "anonymous share full; closing");
            return;
        }
        let info = Arc::new(ConnInfo {
            peer,
            peer_text: peer.to_string(),
            cert: cert.as_ref().map(|cert| cert.identity.clone()),
            distrusted: Default::default(),
            authenticated: AtomicBool::new(false),
        });
        let served = Arc::new(Served {
            app: self.app.clone(),
            reloader: self.reloader.clone(),
            info,
            cert,
            slot,
            activity: Activity::new(),
            close: CancellationToken::new(),
        });
        self.drive(tls, served, peer).await;
    }

    /// The TLS handshake (or the plain-HTTP answer), all within `handshake_timeout`.
    async fn handshake(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> Option<(TlsStream<TcpStream>, u64)> {
        let metrics = self.app.metrics();
        let (generation, config) = self.reloader.tls();
        let accept = async {
            if plain_http::opening(&tcp).await? == Opening::PlainHttp {
                metrics.handshake_failed(HandshakeFailure::PlainHttp);
                tracing::info!(%peer, "plain HTTP on the TLS port; answered 400");
                plain_http::answer(tcp).await?;
                return Ok(None);
            }
            tokio_rustls::TlsAcceptor::from(config)
                .accept(tcp)
                .await
                .map(Some)
        };
        match tokio::time::timeout(self.limits.handshake_timeout, accept).await {
            Ok(Ok(tls)) => Some((tls?, generation)),
            Ok(Err(error)) => {
                let reason = HandshakeFailure::classify(&error);
                metrics.handshake_failed(reason);
                tracing::info!(%peer, reason = reason.as_str(), %error, "TLS handshake failed");
                None
            }
            Err(_) => {
                metrics.handshake_failed(HandshakeFailure::Timeout);
                tracing::info!(%peer, "TLS handshake timed out");
                None
            }
        }
    }

    /// Serves HTTP until the peer leaves or the watchdog closes the connection.
    async fn drive(&self, tls: TlsStream<TcpStream>, served: Arc<Served>, peer: SocketAddr) {
        let handler = served.clone();
        let service = service_fn(move |request| {
            let handler = handler.clone();
            async move { Ok::<_, std::convert::Infallible>(handler.answer(request).await) }
        });
        let connection = self.http.serve_connection(TokioIo::new(tls), service);
        tokio::pin!(connection);
        let mut closing = Closing::No;
        let mut waiting_for_first = true;
        loop {
            let wake = match closing {
                Closing::By(dropped_at) => Some(dropped_at),
                // The server owns the one drain deadline: it stops every
                // connection when its grace period is over, and says so.
                Closing::Draining => None,
                Closing::No => match served.activity.verdict(
                    Instant::now(),
                    self.limits.first_request_timeout,
                    self.limits.idle_timeout,
                ) {
                    Verdict::WakeAt(at) => Some(at),
                    Verdict::Close(why) => {
                        tracing::debug!(%peer, why, "closing the connection");
                        connection.as_mut().graceful_shutdown();
                        closing = Closing::By(Instant::now() + CLOSING_GRACE);
                        continue;
                    }
                },
            };
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                    return;
                }
                () = self.draining.cancelled(), if closing == Closing::No => {
                    connection.as_mut().graceful_shutdown();
                    closing = Closing::Draining;
                }
                () = served.close.cancelled(), if !matches!(closing, Closing::By(_)) => {
                    if closing == Closing::No {
                        connection.as_mut().graceful_shutdown();
                    }
                    closing = Closing::By(Instant::now() + CLOSING_GRACE);
                }
                () = served.activity.first_request(), if waiting_for_first => {
                    waiting_for_first = false;
                }
                () = sleep_until_some(wake) => {
                    if closing != Closing::No {
                        tracing::debug!(%peer, "connection did not close in time; dropped");
                        return;
                    }
                }
            }
        }
    }
}

/// Where a connection is on its way out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Closing {
    No,
    /// Shut down gracefully because the server drains; the server ends it at
    /// its own deadline.
    Draining,
    /// Shut down gracefully by this connection's watchdog; dropped at this instant.
    By(Instant),
}

async fn sleep_until_some(wake: Option<Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Served {
    /// Every request: re-check the client certificate, hand the request to the
    /// HTTP layer, then act on what it learned about the connection.
    async fn answer(self: Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        let busy = self.activity.begin();
        let version = request.version();
        if let Some(cert) = &self.cert
            && let Err(why) = self.reloader.check_client(cert)
        {
            self.distrust(cert, why);
        }
        let mut response = self.app.handle(request, self.info.clone()).await;
        if self.info.distrusted.get().is_some() {
            // HTTP/2 has no Connection header; there the watchdog's graceful
            // shutdown sends GOAWAY after this answer.
            if version < Version::HTTP_2 {
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            self.close.cancel();
        } else if self.info.authenticated.load(Ordering::Relaxed) {
            self.slot.authenticated();
        }
        response.map(|body| BusyBody::new(body, busy).boxed_unsync())
    }

    fn distrust(&self, cert: &ClientCert, why: Untrusted) {
        if self.info.distrusted.set(why.as_str()).is_ok() {
            tracing::info!(
                peer = %self.info.peer,
                cn = ?cert.identity.cn,
                serial = %cert.identity.serial,
                reason = why.as_str(),
                "client certificate trusted no more; refusing its requests and closing the connection"
            );
        }
    }
}
