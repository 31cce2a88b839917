//! The GOPROXY protocol at the URL root: module paths, versions, and `/sumdb/`.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::http::{Body, Caller, plain};

pub struct GoProxy {}

impl GoProxy {
    pub fn new() -> GoProxy {
        GoProxy {}
    }

    pub async fn handle(&self, _request: Request<Incoming>, _caller: &Caller) -> Response<Body> {
        plain(StatusCode::NOT_FOUND, "not found\n")
    }
}

impl Default for GoProxy {
    fn default() -> Self {
        GoProxy::new()
    }
}
