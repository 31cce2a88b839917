//! Why the forwarder does not serve a connection or a request: a plain-text
//! 403 the go command prints, never relayed to the mirror.

use std::fmt;

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};

#[derive(Debug)]
pub struct Refusal(String);

impl Refusal {
    /// `text` is sent as it is: a full line, safe to print.
    pub fn new(text: String) -> Refusal {
        Refusal(text)
    }

    pub fn response(&self) -> Response<reqwest::Body> {
        let mut response = Response::new(reqwest::Body::from(self.0.clone()));
        *response.status_mut() = StatusCode::FORBIDDEN;
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.trim_end())
    }
}
