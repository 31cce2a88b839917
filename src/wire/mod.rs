//! The request vocabulary every protocol and the dispatcher share: response
//! bodies, what a request touched and how it was served, the protocol it spoke,
//! and the plain-text answer. A leaf: it knows no protocol, no store and no
//! connection, so the protocols never import the dispatcher.

pub mod body;

use http::header::HeaderValue;
use http::{Response, StatusCode};

pub use body::Body;

/// How a content request was served, for metrics, the access log and audit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Served from the store.
    Hit,
    /// Fetched from upstream (and stored).
    Miss,
    /// Upstream failed; an expired copy was served.
    Stale,
    /// Content of a hosted (pushed) repository.
    Hosted,
    NotFound,
    /// A request that was refused as invalid.
    Invalid,
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Stale => "stale",
            Outcome::Hosted => "hosted",
            Outcome::NotFound => "not_found",
            Outcome::Invalid => "invalid",
            Outcome::Error => "error",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Read,
    Write,
    Delete,
}

/// What a content request touched. Protocol handlers put this in the
/// response's extensions; the dispatcher logs, counts and audits it.
#[derive(Clone, Debug)]
pub struct Touched {
    pub action: Action,
    /// `module@version.zip`, `repo:tag`, `repo@sha256:…`, …
    pub artifact: String,
    pub digest: Option<String>,
    pub outcome: Outcome,
}

/// Attaches what a request touched to its response.
pub fn touched(mut response: Response<Body>, touched: Touched) -> Response<Body> {
    response.extensions_mut().insert(touched);
    response
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Go,
    Oci,
    Internal,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Go => "go",
            Protocol::Oci => "oci",
            Protocol::Internal => "internal",
        }
    }
}

pub const BASIC_CHALLENGE: &str = "Basic realm=\"mirror\", charset=\"UTF-8\"";

/// A plain-text answer, the form the `go` command prints.
pub fn plain(status: StatusCode, text: impl Into<bytes::Bytes>) -> Response<Body> {
    let mut response = Response::new(body::full(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
