//! Request dispatch, one linear pipeline for every request:
//! route → identify (certificate, Basic, anonymous) → authorize by policy →
//! protocol handler → access log and metrics. A connection whose certificate
//! the listener no longer trusts (`ConnInfo::distrusted`) gets 401 on any path.
//! `/healthz`, `/readyz` and `/metrics` are answered here; `/v2/…` goes to
//! `oci`, and everything else (module paths, `/sumdb/…`) to `goproxy`. A
//! module path's first element always contains a dot, so it never collides
//! with these. A HEAD loses its body here, once, whatever answered it.

pub mod ready;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use http::header::{AUTHORIZATION, CONTENT_LENGTH, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;

pub use ready::Readiness;

use crate::auth::{Authenticator, Denial, Identity, PeerCert, Policy};
use crate::escape::Escaped;
use crate::metrics::Metrics;
use crate::store::{AuditEntry, AuditLog, Store, audit::now_ms};
use crate::wire::{Action, BASIC_CHALLENGE, Body, Protocol, Touched, body, plain};
use crate::{goproxy, oci};

/// What the listener learned about a connection.
#[derive(Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// `peer` as text, written once per connection rather than per audited request.
    pub peer_text: String,
    pub cert: Option<PeerCert>,
    /// Set by the listener when `cert` is trusted no more (revoked or no longer
    /// chaining after a reload, or expired); completes "the client certificate
    /// is …". Every request on the connection is then refused.
    pub distrusted: OnceLock<&'static str>,
    /// Set here when a request on this connection authenticated with a
    /// password; the listener then stops counting the connection as anonymous.
    pub authenticated: AtomicBool,
}

enum Route {
    Healthz,
    Readyz,
    Metrics,
    Oci,
    Go,
    /// Any path, on a connection whose certificate is no longer trusted.
    Distrusted {
        reason: &'static str,
        protocol: Protocol,
    },
}

impl Route {
    fn of(path: &str) -> Route {
        match path {
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            "/metrics" => Route::Metrics,
            "/v2" => Route::Oci,
            p if p.starts_with("/v2/") => Route::Oci,
            _ => Route::Go,
        }
    }
}

/// The policies in force, resolved from the config once.
#[derive(Clone, Copy, Debug)]
pub struct Policies {
    pub go_read: Policy,
    pub registry_read: Policy,
    pub registry_write: Policy,
    pub metrics: Policy,
}

pub struct App {
    auth: Arc<Authenticator>,
    store: Store,
    audit: AuditLog,
    policies: Policies,
    metrics: Arc<Metrics>,
    go: goproxy::GoProxy,
    oci: oci::Registry,
    readiness: Readiness,
}

fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

impl App {
    pub fn new(
        auth: Arc<Authenticator>,
        store: Store,
        audit: AuditLog,
        policies: Policies,
        metrics: Arc<Metrics>,
        go: goproxy::GoProxy,
        oci: oci::Registry,
    ) -> App {
        App {
            auth,
            store,
            audit,
            policies,
            metrics,
            go,
            oci,
            readiness: Readiness::default(),
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// What the listener tells `/readyz`.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    pub async fn handle(&self, request: Request<Incoming>, conn: Arc<ConnInfo>) -> Response<Body> {
        let started = Instant::now();
        let mut route = Route::of(request.uri().path());
        if let Some(reason) = conn.distrusted.get() {
            let protocol = match route {
                Route::Oci => Protocol::Oci,
                Route::Go => Protocol::Go,
                _ => Protocol::Internal,
            };
            route = Route::Distrusted { reason, protocol };
        }
        let method = request.method().clone();
        // For the access log; cloning a parsed URI shares its bytes.
        let uri = request.uri().clone();
        let (protocol, identity, mut response) = match route {
            Route::Healthz => (
                Protocol::Internal,
                Identity::Anonymous,
                plain(StatusCode::OK, "ok\n"),
            ),
            Route::Readyz => (
                Protocol::Internal,
                Identity::Anonymous,
                self.readiness.answer(&self.store).await,
            ),
            Route::Metrics => {
                let (identity, response) =
                    match self.authorize(&request, &conn, self.policies.metrics).await {
                        Ok(identity) => (identity, self.metrics_page().await),
                        Err((identity, denial)) => (identity, plain_denial(denial)),
                    };
                (Protocol::Internal, identity, response)
            }
            Route::Oci => {
                let policy = if is_write(&method) {
                    self.policies.registry_write
                } else {
                    self.policies.registry_read
                };
                match self.authorize(&request, &conn, policy).await {
                    Ok(identity) => {
                        let response = self.oci.handle(request, &identity, conn.peer.ip()).await;
                        (Protocol::Oci, identity, response)
                    }
                    Err((identity, denial)) => (Protocol::Oci, identity, oci::denied(denial)),
                }
            }
            Route::Go => match self.authorize(&request, &conn, self.policies.go_read).await {
                Ok(identity) => (Protocol::Go, identity, self.go.handle(request).await),
                Err((identity, denial)) => (Protocol::Go, identity, plain_denial(denial)),
            },
            Route::Distrusted { reason, protocol } => distrusted(&conn, reason, protocol),
        };
        let status = response.status();
        self.metrics.request(protocol, status);
        let touched = response.extensions_mut().remove::<Touched>();
        tracing::info!(
            target: "mirror::access",
            peer = %conn.peer,
            identity = %identity,
            method = %method,
            path = %Escaped(uri.path()),
            status = status.as_u16(),
            outcome = touched.as_ref().map_or("-", |t| t.outcome.as_str()),
            artifact = touched.as_ref().map_or("-", |t| t.artifact.as_str()),
            micros = started.elapsed().as_micros() as u64,
            "request"
        );
        if let Some(touched) = touched {
            self.metrics.outcome(protocol, touched.outcome);
            if touched.action != Action::Read || method == Method::GET {
                self.audit
                    .record(audit_entry(&identity, &conn, protocol, &touched, status))
                    .await;
            }
        }
        if method == Method::HEAD {
            return without_body(response);
        }
        if protocol == Protocol::Internal {
            return response;
        }
        let metrics = self.metrics.clone();
        response
            .map(|body| body::counted(body, move |bytes| metrics.response_bytes(protocol, bytes)))
    }

    async fn metrics_page(&self) -> Response<Body> {
        let mut response = Response::new(body::full(self.metrics.render(&self.store).await));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        response
    }

    /// Decides who is asking (certificate first, then Basic, else anonymous)
    /// and whether the policy admits them. Wrong credentials are refused
    /// whatever the policy: a `docker login` with a bad password must fail even
    /// where anonymous reads are allowed.
    async fn authorize(
        &self,
        request: &Request<Incoming>,
        conn: &ConnInfo,
        policy: Policy,
    ) -> Result<Identity, (Identity, Denial)> {
        // Credentials that were sent must be right, even beside a certificate:
        // a wrong password is a mistake the user should hear about.
        let user = match request.headers().get(AUTHORIZATION) {
            Some(header) => match self.auth.verify_basic(header.to_str().unwrap_or("")).await {
                Some(user) => Some(user),
                None => return Err((Identity::Anonymous, Denial::Unauthenticated)),
            },
            None => None,
        };
        let identity = match (&conn.cert, user) {
            (Some(cert), _) => cert.identity(),
            (None, Some(user)) => Identity::User(user),
            (None, None) => Identity::Anonymous,
        };
        if matches!(identity, Identity::User(_)) {
            conn.authenticated.store(true, Ordering::Relaxed);
        }
        match policy.check(&identity) {
            Ok(()) => Ok(identity),
            Err(denial) => Err((identity, denial)),
        }
    }
}

/// The 401 for a connection whose certificate was revoked, expired or no longer
/// chains; the listener closes the connection after it.
fn distrusted(
    conn: &ConnInfo,
    reason: &str,
    protocol: Protocol,
) -> (Protocol, Identity, Response<Body>) {
    let identity = conn
        .cert
        .as_ref()
        .map_or(Identity::Anonymous, PeerCert::identity);
    let message = format!("the client certificate is {reason}; this connection is closed");
    if protocol == Protocol::Oci {
        let response = oci::OciError::new(oci::Code::Unauthorized, message).into_response();
        return (protocol, identity, response);
    }
    let mut response = plain(StatusCode::UNAUTHORIZED, format!("{message}\n"));
    response.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        HeaderValue::from_static(BASIC_CHALLENGE),
    );
    (protocol, identity, response)
}

/// A HEAD transfers no content, so only GETs and writes are audited.
fn audit_entry<'a>(
    identity: &'a Identity,
    conn: &'a ConnInfo,
    protocol: Protocol,
    touched: &'a Touched,
    status: StatusCode,
) -> AuditEntry<'a> {
    let (kind, serial) = match identity {
        Identity::Cert { serial, .. } => ("cert", Some(serial.as_str())),
        Identity::User(_) => ("user", None),
        Identity::Anonymous => ("anonymous", None),
    };
    AuditEntry {
        at_ms: now_ms(),
        identity: kind,
        subject: identity.name(),
        serial,
        peer: &conn.peer_text,
        protocol: protocol.as_str(),
        action: match touched.action {
            Action::Read => "read",
            Action::Write => "write",
            Action::Delete => "delete",
        },
        artifact: &touched.artifact,
        digest: touched.digest.as_deref(),
        outcome: touched.outcome.as_str(),
        status: status.as_u16(),
    }
}

/// A HEAD answer: the GET's status and headers, and the length the GET's body
/// would have had, but no body. Done here for every route: over HTTP/2 hyper
/// sends whatever body it is given, and DATA on a HEAD is a protocol error to
/// curl and Go (`received DATA on a HEAD request`), which every error page and
/// 401 would otherwise send.
fn without_body(mut response: Response<Body>) -> Response<Body> {
    if let Some(length) = response.body().size_hint().exact()
        && !response.headers().contains_key(CONTENT_LENGTH)
    {
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(length));
    }
    *response.body_mut() = body::empty();
    response
}

/// A plain-text refusal, the form the `go` command prints.
pub fn plain_denial(denial: Denial) -> Response<Body> {
    let (status, text) = match denial {
        Denial::Unauthenticated => (
            StatusCode::UNAUTHORIZED,
            "authentication required: a client certificate, or a user and password from the mirror's htpasswd\n",
        ),
        Denial::CertificateRequired => {
            (StatusCode::FORBIDDEN, "a client certificate is required\n")
        }
    };
    let mut response = plain(status, text);
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static(BASIC_CHALLENGE),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `start` returns, without making one.
    fn future_size<A, F: Future>(_start: impl FnOnce(A) -> F) -> usize {
        size_of::<F>()
    }

    /// HTTP/2 moves every request's future (twice) as it spawns the stream,
    /// and a future is as large as its largest path: an upstream request or
    /// a store write inlined anywhere below `handle` makes every hit pay for
    /// it. Cold paths are boxed where they start; this keeps them so (it was
    /// 22 KiB, and every hit copied 44 KiB).
    #[test]
    fn a_request_future_stays_small() {
        let size = future_size(
            |(app, request, conn): (&'static App, Request<Incoming>, Arc<ConnInfo>)| {
                app.handle(request, conn)
            },
        );
        assert!(
            size <= 8 * 1024,
            "App::handle's future is {size} bytes: box the cold path that grew it"
        );
    }
}
