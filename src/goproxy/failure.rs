//! `Failure`: why no upstream gave a usable answer. Logged by whoever turns it
//! into a 502 or serves stale instead; never sent to the client, since its
//! text may name internal hosts.

use std::sync::Arc;
use std::time::Duration;

/// Shared by every caller that waited on one upstream request, hence `Clone`.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Failure {
    /// The list holds no proxy to ask.
    #[error("no upstream")]
    NoUpstream,
    /// The request itself failed (connection, TLS, a broken body); reqwest's
    /// text, which never shows the URL's password or query.
    #[error("{0}")]
    Request(Arc<dyn std::error::Error + Send + Sync>),
    #[error("status {0}")]
    Status(http::StatusCode),
    #[error("no answer within {0:?}")]
    NoAnswer(Duration),
    #[error("body not complete within {0:?}")]
    BodyTimeout(Duration),
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    /// The answer came, but is not what was asked for.
    #[error(transparent)]
    Info(#[from] super::files::InfoError),
    /// A failure at one proxy of the list, named by its redacted URL.
    #[error("{at}: {cause}")]
    At { at: String, cause: Box<Failure> },
}

impl Failure {
    /// The upstream's HTTP status, when it answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Failure::Status(status) => Some(status.as_u16()),
            Failure::At { cause, .. } => cause.status(),
            _ => None,
        }
    }

    pub fn request(error: impl std::error::Error + Send + Sync + 'static) -> Failure {
        Failure::Request(Arc::new(error))
    }
}
