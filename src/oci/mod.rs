//! The OCI distribution API (Docker Registry HTTP API v2) under `/v2/`.
//! Handlers parse the route, then talk to the store and upstreams; they never
//! touch SQL or paths themselves.
//!
//! Pipeline: parse the path into a `Route` (names by the spec's grammar) →
//! resolve the repository to an upstream or to hosting (`names`) → the
//! handler for `(method, route)` → a response with the registry's headers,
//! or an `OciError` in the spec's JSON format.

mod blobs;
mod cache;
pub mod error;
mod listing;
pub(crate) mod manifest_json;
mod manifests;
pub mod names;
mod request_body;
pub mod route;
mod token;
mod uploads;
mod upstream;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::auth::{Denial, Identity};
use crate::config::RegistryConfig;
use crate::metrics::Metrics;
use crate::store::{Digest, Store};
use crate::wire::{Action, Body, Outcome, Touched, body};
use error::internal;
pub use error::{Code, OciError};
use names::{Repo, Upstreams};
use route::{Query, RepoName, Route};
pub use upstream::UpstreamError;

// Header names as values, not strings: a `&str` name is parsed on every insert.
pub const API_VERSION_HEADER: HeaderName =
    HeaderName::from_static("docker-distribution-api-version");
pub const API_VERSION: &str = "registry/2.0";
pub const DIGEST_HEADER: HeaderName = HeaderName::from_static("docker-content-digest");

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "registry.hosted[{index}]: {prefix:?} is not a repository namespace such as \"internal\""
    )]
    Hosted { index: usize, prefix: String },
    #[error("registry.upstream")]
    Client(#[from] crate::upstream::ClientError),
}

/// Checks `registry.hosted` by the distribution spec's name grammar, the one
/// requests are parsed by, so a start can refuse it before it changes anything
/// on disk.
pub fn check(config: &RegistryConfig) -> Result<(), SetupError> {
    match config
        .hosted
        .iter()
        .enumerate()
        .find(|(_, prefix)| prefix.parse::<RepoName>().is_err())
    {
        Some((index, prefix)) => Err(SetupError::Hosted {
            index,
            prefix: prefix.clone(),
        }),
        None => Ok(()),
    }
}

pub struct Registry {
    store: Store,
    upstreams: Upstreams,
    /// Shared with the store, which tells it of other replicas' changes.
    cache: Arc<cache::MetaCache>,
    uploads: uploads::Uploads,
    /// `limits.body_timeout`: how long a push body may send nothing.
    body_timeout: Duration,
    /// Concurrent misses of one manifest share one upstream request.
    manifest_fetches: crate::upstream::Singleflight<Result<cache::ManifestMeta, OciError>>,
    /// `registry.max_blob_size`: a pull-through blob is cut off past it.
    max_blob_size: u64,
}

impl Registry {
    pub fn new(
        config: &RegistryConfig,
        body_timeout: Duration,
        store: Store,
        metrics: Arc<Metrics>,
    ) -> Result<Registry, SetupError> {
        check(config)?;
        let upstreams = config
            .upstream
            .iter()
            .map(|u| upstream::Upstream::new(u, metrics.clone()).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let cache = Arc::new(cache::MetaCache::new(store.generation()));
        store.watch(&cache);
        Ok(Registry {
            cache,
            store,
            upstreams: Upstreams::new(upstreams, config.hosted.clone()),
            uploads: uploads::Uploads::new(config),
            body_timeout,
            manifest_fetches: crate::upstream::Singleflight::default(),
            max_blob_size: config.max_blob_size.as_u64(),
        })
    }

    /// Answers a request from `identity` (whose pushes are its own) at `peer`.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        identity: &Identity,
        peer: IpAddr,
    ) -> Response<Body> {
        self.dispatch(request, identity, peer)
            .await
            .unwrap_or_else(OciError::into_response)
    }

    async fn dispatch(
        &self,
        request: Request<Incoming>,
        identity: &Identity,
        peer: IpAddr,
    ) -> Result<Response<Body>, OciError> {
        let method = request.method().clone();
        let route = Route::parse(request.uri().path(), &method)?;
        let query = Query::parse(request.uri().query());
        let resolve = |name: &RepoName| self.upstreams.resolve(name, query.get("ns"));
        match (route, &method) {
            (Route::Base, _) => Ok(version_check()),
            (Route::Catalog, &Method::GET) => listing::catalog(self, &query).await,
            (Route::Tags(name), &Method::GET) => {
                listing::tags(self, &resolve(&name)?, &query).await
            }
            (Route::Referrers(name, digest), &Method::GET) => {
                listing::referrers(self, &resolve(&name)?, &digest, &query).await
            }
            (Route::Manifest(name, reference), &Method::GET | &Method::HEAD) => {
                manifests::get(self, &resolve(&name)?, &reference, request).await
            }
            (Route::Manifest(name, reference), &Method::PUT) => {
                manifests::put(self, &resolve(&name)?, &reference, request).await
            }
            (Route::Manifest(name, reference), &Method::DELETE) => {
                manifests::delete(self, &resolve(&name)?, &reference).await
            }
            (Route::Blob(name, digest), &Method::GET | &Method::HEAD) => {
                blobs::get(self, &resolve(&name)?, &digest, request).await
            }
            (Route::Blob(name, digest), &Method::DELETE) => {
                blobs::delete(self, &resolve(&name)?, &digest).await
            }
            (Route::Upload(name, id), _) => {
                let repo = resolve(&name)?;
                let owner = uploads::owner_of(identity, peer);
                // Boxed: a push's future is kilobytes that every pull's would
                // carry otherwise (HTTP/2 moves each request's future as it
                // spawns it).
                Box::pin(uploads::handle(
                    self,
                    &repo,
                    id.as_ref(),
                    &query,
                    request,
                    &owner,
                ))
                .await
            }
            _ => Err(unsupported(&method)),
        }
    }
}

impl Registry {
    /// A push body, cut off once it has sent nothing for `limits.body_timeout`.
    fn body_reader(&self, body: Incoming, code: Code) -> request_body::BodyReader {
        request_body::BodyReader::new(body, self.body_timeout, code)
    }
}

fn unsupported(method: &Method) -> OciError {
    OciError::new(
        Code::Unsupported,
        format!("{method} is not supported on this endpoint"),
    )
}

/// Pushes go to hosted repositories only; a mirrored one is read-only.
fn require_hosted(repo: &Repo) -> Result<(), OciError> {
    match repo.upstream() {
        None => Ok(()),
        Some((upstream, _)) => Err(OciError::new(
            Code::Denied,
            format!(
                "{} mirrors upstream {}: it is read-only",
                repo.name, upstream.name
            ),
        )),
    }
}

/// `GET /v2/`: the whole `docker login` handshake once authorization passed.
fn version_check() -> Response<Body> {
    let mut response = Response::new(body::full("{}"));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(API_VERSION_HEADER, HeaderValue::from_static(API_VERSION));
    response
}

/// A refused `/v2/` request in the registry's own error format.
pub fn denied(denial: Denial) -> Response<Body> {
    match denial {
        Denial::Unauthenticated => {
            OciError::new(Code::Unauthorized, "authentication required").into_response()
        }
        Denial::CertificateRequired => {
            OciError::new(Code::Denied, "a client certificate is required").into_response()
        }
    }
}

/// `Docker-Content-Digest` and `ETag` for one digest, built once: content kept
/// in memory keeps these with it, and a clone is a reference count.
#[derive(Clone, Debug)]
pub struct DigestHeaders {
    digest: HeaderValue,
    etag: HeaderValue,
}

impl DigestHeaders {
    /// `None` only for a digest no header can carry (never, by its grammar).
    pub fn of(digest: &Digest) -> Option<DigestHeaders> {
        let text = digest.as_str();
        let mut etag = Vec::with_capacity(text.len() + 2);
        etag.push(b'"');
        etag.extend_from_slice(text.as_bytes());
        etag.push(b'"');
        Some(DigestHeaders {
            digest: HeaderValue::from_str(text).ok()?,
            etag: HeaderValue::from_maybe_shared(bytes::Bytes::from(etag)).ok()?,
        })
    }

    fn insert_into(&self, headers: &mut http::HeaderMap) {
        headers.insert(DIGEST_HEADER, self.digest.clone());
        headers.insert(ETAG, self.etag.clone());
    }
}

/// A response for content: the registry's headers around `body`.
fn content_response(
    status: StatusCode,
    body: Body,
    media_type: &str,
    digest: &Digest,
    length: Option<u64>,
) -> Response<Body> {
    let content_type = HeaderValue::from_str(media_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    named_response(
        status,
        body,
        content_type,
        DigestHeaders::of(digest).as_ref(),
        length,
    )
}

/// `content_response` with the headers already built.
fn named_response(
    status: StatusCode,
    body: Body,
    content_type: HeaderValue,
    names: Option<&DigestHeaders>,
    length: Option<u64>,
) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, content_type);
    if let Some(names) = names {
        names.insert_into(headers);
    }
    if let Some(length) = length {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    }
    headers.insert(API_VERSION_HEADER, HeaderValue::from_static(API_VERSION));
    response
}

fn touched(
    response: Response<Body>,
    action: Action,
    artifact: String,
    digest: Option<&Digest>,
    outcome: Outcome,
) -> Response<Body> {
    crate::wire::touched(
        response,
        Touched {
            action,
            artifact,
            digest: digest.map(|d| d.as_str().to_owned()),
            outcome,
        },
    )
}

/// The client-facing error for an upstream failure. 5xx causes are logged
/// here, once; 4xx answers from upstream are the client's business.
fn from_upstream(error: UpstreamError, not_found: Code) -> OciError {
    match &error {
        UpstreamError::Status {
            status,
            code,
            message,
            retry_after,
            upstream,
        } => match *status {
            StatusCode::NOT_FOUND => {
                let code = match code.as_deref() {
                    Some("NAME_UNKNOWN") => Code::NameUnknown,
                    _ => not_found,
                };
                OciError::new(code, format!("upstream {upstream}: {message}"))
            }
            StatusCode::UNAUTHORIZED => OciError::new(
                Code::Unauthorized,
                format!("upstream {upstream} refused the mirror's credentials: {message}"),
            ),
            StatusCode::FORBIDDEN => {
                OciError::new(Code::Denied, format!("upstream {upstream}: {message}"))
            }
            StatusCode::TOO_MANY_REQUESTS => {
                let error = OciError::new(
                    Code::TooManyRequests,
                    format!("upstream {upstream}: {message}"),
                );
                match retry_after {
                    Some(value) => error.with_header(http::header::RETRY_AFTER, value.clone()),
                    None => error,
                }
            }
            _ => {
                tracing::warn!(%error, "upstream request failed");
                OciError::new(
                    Code::Unavailable,
                    format!("upstream {upstream} failed ({status})"),
                )
            }
        },
        UpstreamError::Unreachable { upstream, .. } | UpstreamError::Token { upstream, .. } => {
            tracing::warn!(%error, "upstream request failed");
            OciError::new(
                Code::Unavailable,
                format!("upstream {upstream} is unreachable and the content is not cached"),
            )
            .with_status(StatusCode::SERVICE_UNAVAILABLE)
        }
        // 502: the upstream answered, with somewhere the mirror does not go.
        UpstreamError::Refused { upstream, .. } => {
            tracing::warn!(%error, "upstream request refused");
            OciError::new(
                Code::Unavailable,
                format!("upstream {upstream} sent the mirror where it does not go (see its log)"),
            )
        }
        // Logged once per realm where it was refused.
        UpstreamError::Realm { upstream, .. } => OciError::new(
            Code::Unavailable,
            format!(
                "upstream {upstream} asks for a token from a realm the mirror does not use (see its log)"
            ),
        ),
    }
}

/// Pushed content found corrupt in the store: it cannot be fetched again, so
/// the client learns why instead of "unknown" (the log has the details).
fn corrupt(what: &str, repo: &Repo, digest: &Digest) -> OciError {
    OciError::new(
        Code::Unavailable,
        format!(
            "{what} {digest} in {} is corrupt in the store (it failed its digest check and was \
             quarantined); push it again",
            repo.name
        ),
    )
    .with_status(StatusCode::INTERNAL_SERVER_ERROR)
}
