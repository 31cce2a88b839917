//! The OCI distribution API (Docker Registry HTTP API v2) under `/v2/`.
//! Handlers parse the route, then talk to the store and upstreams; they never
//! touch SQL or paths themselves.

pub mod error;

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;

use crate::auth::Denial;
use crate::http::{Body, Caller, body};
pub use error::{Code, OciError};

pub const API_VERSION_HEADER: &str = "docker-distribution-api-version";
pub const API_VERSION: &str = "registry/2.0";

pub struct Registry {}

impl Registry {
    pub fn new() -> Registry {
        Registry {}
    }

    pub async fn handle(&self, request: Request<Incoming>, _caller: &Caller) -> Response<Body> {
        match request.uri().path() {
            "/v2" | "/v2/" => version_check(),
            _ => OciError::new(Code::NameUnknown, "repository name not known to registry")
                .into_response(),
        }
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
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
