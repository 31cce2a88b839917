//! `GoError`: how a GOPROXY request fails on the wire. 404/410 carry a short
//! plain-text reason that the `go` command prints and falls back on; a 5xx
//! carries no internal detail (its cause is logged once, where it is built).

use http::header::{ALLOW, HeaderValue};
use http::{Response, StatusCode};

use super::route::Refusal;
use crate::wire::{Body, Outcome, plain};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GoError {
    /// A malformed path or version.
    BadRequest(String),
    /// Not here and not upstream (or not allowed upstream): 404, or 410 when upstream said gone.
    NotFound {
        gone: bool,
        reason: String,
    },
    MethodNotAllowed,
    /// Every upstream failed and nothing stale was kept.
    BadGateway,
    /// A `.mod` or `.zip` the checksum database contradicts, or a database
    /// that does not verify (a bad signature, a fork, a rollback): a 502
    /// whose text names the module, the hashes and the database.
    Refused(String),
    /// The checksum database could not be asked and nothing kept proves the
    /// file: a 502 that says so, never an unverified body.
    Unverified(String),
    Internal,
}

impl GoError {
    pub fn not_found(reason: impl Into<String>) -> GoError {
        GoError::NotFound {
            gone: false,
            reason: reason.into(),
        }
    }

    /// A 502, logging the cause (which may name internal hosts) once, here.
    pub fn upstream(what: &str, cause: &dyn std::fmt::Display) -> GoError {
        tracing::warn!(target: "mirror::go", artifact = what, error = %cause, "every upstream failed");
        GoError::BadGateway
    }

    /// A 500, logging the cause once, here.
    pub fn internal(what: &str, cause: &dyn std::fmt::Display) -> GoError {
        tracing::error!(target: "mirror::go", artifact = what, error = %cause, "internal error");
        GoError::Internal
    }

    pub fn outcome(&self) -> Outcome {
        match self {
            GoError::BadRequest(_) | GoError::MethodNotAllowed => Outcome::Invalid,
            GoError::NotFound { .. } => Outcome::NotFound,
            GoError::Refused(_) => Outcome::Invalid,
            GoError::BadGateway | GoError::Internal | GoError::Unverified(_) => Outcome::Error,
        }
    }

    pub fn into_response(self) -> Response<Body> {
        match self {
            GoError::BadRequest(reason) => {
                plain(StatusCode::BAD_REQUEST, format!("bad request: {reason}\n"))
            }
            GoError::NotFound { gone, reason } => {
                let status = if gone {
                    StatusCode::GONE
                } else {
                    StatusCode::NOT_FOUND
                };
                let mut text = reason;
                if !text.ends_with('\n') {
                    text.push('\n');
                }
                plain(status, text)
            }
            GoError::MethodNotAllowed => {
                let mut response = plain(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method not allowed: the module mirror is read-only (GET, HEAD)\n",
                );
                response
                    .headers_mut()
                    .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
                response
            }
            GoError::BadGateway => plain(
                StatusCode::BAD_GATEWAY,
                "bad gateway: no upstream could answer and nothing is cached\n",
            ),
            GoError::Refused(reason) | GoError::Unverified(reason) => {
                plain(StatusCode::BAD_GATEWAY, format!("bad gateway: {reason}\n"))
            }
            GoError::Internal => plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n"),
        }
    }
}

/// `.or_internal(what)?` on a store call: a 500 whose cause is logged once,
/// by `GoError::internal`, with the artifact it was for.
pub(super) trait OrInternal<T> {
    fn or_internal(self, what: &str) -> Result<T, GoError>;
}

impl<T, E: std::fmt::Display> OrInternal<T> for Result<T, E> {
    fn or_internal(self, what: &str) -> Result<T, GoError> {
        self.map_err(|cause| GoError::internal(what, &cause))
    }
}

impl From<Refusal> for GoError {
    fn from(refusal: Refusal) -> GoError {
        match refusal {
            Refusal::BadRequest(reason) => GoError::BadRequest(reason),
            Refusal::NotFound(reason) => GoError::not_found(reason),
        }
    }
}
