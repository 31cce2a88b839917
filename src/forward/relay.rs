//! One request's trip: the local request becomes a request to the mirror with
//! the same method, path, query, end-to-end headers and body (streamed), and
//! the mirror's status, headers and body (streamed) go back. Hop-by-hop
//! headers stay on their hop. The local client's `Authorization` is dropped:
//! the certificate is the identity, and a password the mirror would check
//! beside it (a `.netrc` entry for 127.0.0.1, a GOPROXY with userinfo) could
//! only get a certified request refused, or leak a password meant elsewhere.

use http::header::{self, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Body as _;
use http_body_util::BodyDataStream;
use hyper::body::Incoming;
use reqwest::Url;

use super::certs::Clients;
use crate::escape::escape;

/// The mirror's origin and the clients that reach it.
pub struct Relay {
    clients: Clients,
    origin: String,
}

/// `https://HOST[:PORT]` from `--to`, or why not: the forwarder adds paths to
/// an origin, and its identity is the certificate, never a URL's password.
pub fn origin(to: &str) -> Result<String, &'static str> {
    let url = Url::parse(to).map_err(|_| "not a URL")?;
    if url.scheme() != "https" {
        return Err("the mirror is reached over https only");
    }
    if url.host_str().is_none() {
        return Err("no host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the certificate is the identity: no user or password in the URL");
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err("the mirror serves at its root: no path or query");
    }
    Ok(url.origin().ascii_serialization())
}

impl Relay {
    pub fn new(clients: Clients, origin: String) -> Relay {
        Relay { clients, origin }
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Sends `request` to the mirror and streams its answer back; a mirror
    /// that cannot be reached is a 502 whose text the go command prints.
    pub async fn forward(&self, request: Request<Incoming>) -> Response<reqwest::Body> {
        let Some(url) = self.target(request.uri()) else {
            return plain(
                StatusCode::BAD_REQUEST,
                "mirror forward: the request target must be a path\n".into(),
            );
        };
        let (parts, body) = request.into_parts();
        let headers = end_to_end(&parts.headers, REQUEST_ONLY);
        let outgoing = |client: &reqwest::Client| {
            client
                .request(parts.method.clone(), url.clone())
                .headers(headers.clone())
        };
        let sent = if body.is_end_stream() {
            let first = outgoing(&self.clients.pooled).send().await;
            match first {
                Err(error) if retryable(&parts.method, &error) => {
                    outgoing(&self.clients.once).send().await
                }
                sent => sent,
            }
        } else {
            // Sent once: the body streams from the local client and is never held, so
            // once the mirror has read part of it there is nothing to send again.
            let body = reqwest::Body::wrap_stream(BodyDataStream::new(body));
            outgoing(&self.clients.pooled).body(body).send().await
        };
        match sent {
            Ok(answer) => back(answer),
            Err(error) => {
                let reason = causes(&error);
                tracing::warn!(
                    method = %parts.method,
                    path = %escape(parts.uri.path()),
                    %reason,
                    "the mirror could not be reached"
                );
                plain(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "mirror forward: cannot reach the mirror at {}: {reason}\n",
                        self.origin
                    ),
                )
            }
        }
    }

    /// The mirror's URL for the local request's path and query, kept as sent
    /// (go's `%21` case-encoding included); `None` for a target that is not a path.
    fn target(&self, uri: &Uri) -> Option<Url> {
        let path_and_query = uri.path_and_query()?.as_str();
        if !path_and_query.starts_with('/') {
            return None;
        }
        Url::parse(&format!("{}{path_and_query}", self.origin)).ok()
    }
}

/// Whether a body-less request the pool failed gets a second try on its own
/// HTTP/1.1 connection, whose error says why the mirror refused (see
/// `Clients::once`). Only an idempotent method: the mirror may have acted on the
/// first before failing (an upload `POST` would open two sessions). Not after a
/// connect error or a timeout either: the second try would only say it again, later.
fn retryable(method: &Method, error: &reqwest::Error) -> bool {
    method.is_idempotent() && !error.is_connect() && !error.is_timeout()
}

/// The mirror's answer as the local client's.
fn back(answer: reqwest::Response) -> Response<reqwest::Body> {
    let status = answer.status();
    let headers = end_to_end(answer.headers(), &[]);
    let mut response = Response::new(reqwest::Body::from(answer));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Connection-scoped headers (RFC 9110 §7.6.1) and those HTTP/2 forbids.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Headers of the local request the mirror's request sets itself (`Host`,
/// `Expect`) or must not get (`Authorization`: see the module comment).
const REQUEST_ONLY: &[HeaderName] = &[header::HOST, header::EXPECT, header::AUTHORIZATION];

/// `headers` without the hop-by-hop ones (also those `Connection` names,
/// `Keep-Alive` and `Proxy-Connection`) and without `drop`.
fn end_to_end(headers: &HeaderMap, drop: &[HeaderName]) -> HeaderMap {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    let mut kept = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let hop = HOP_BY_HOP.contains(name)
            || drop.contains(name)
            || matches!(name.as_str(), "keep-alive" | "proxy-connection")
            || named.iter().any(|n| n == name.as_str());
        if !hop {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

/// The error and its causes, as one line: reqwest's own text says only
/// "error sending request"; the reason (refused, a TLS alert) is underneath.
fn causes(error: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut next: Option<&dyn std::error::Error> = Some(error);
    while let Some(cause) = next {
        let text = cause.to_string();
        // hyper-util's "client error (Connect)" only says which step the next cause is from.
        let step = text.starts_with("client error (");
        if !step && !parts.iter().any(|p: &String| p.contains(&text)) {
            parts.push(text);
        }
        next = cause.source();
    }
    // The first is reqwest's "error sending request for url (…)": the path is in go's own message.
    if parts.len() > 1 {
        parts.remove(0);
    }
    escape(&parts.join(": ")).into_owned()
}

fn plain(status: StatusCode, text: String) -> Response<reqwest::Body> {
    let mut response = Response::new(reqwest::Body::from(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn hop_by_hop_headers_and_the_local_authorization_stay_behind() {
        let local = headers(&[
            ("host", "127.0.0.1:5080"),
            ("authorization", "Basic YWxpY2U6cHc="),
            ("connection", "keep-alive, X-Hop"),
            ("keep-alive", "timeout=5"),
            ("x-hop", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic eA=="),
            ("user-agent", "Go-http-client/1.1"),
            ("accept-encoding", "gzip"),
            ("range", "bytes=0-9"),
            ("disable-module-fetch", "true"),
        ]);
        let sent = end_to_end(&local, REQUEST_ONLY);
        let names: Vec<&str> = sent.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "user-agent",
                "accept-encoding",
                "range",
                "disable-module-fetch"
            ]
        );
    }

    #[test]
    fn an_answer_keeps_its_end_to_end_headers() {
        let answer = headers(&[
            ("content-type", "application/zip"),
            ("content-length", "42"),
            ("docker-content-digest", "sha256:00"),
            ("www-authenticate", "Basic realm=\"mirror\""),
            ("connection", "close"),
            ("transfer-encoding", "chunked"),
        ]);
        let names: Vec<String> = end_to_end(&answer, &[])
            .keys()
            .map(|k| k.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "content-type",
                "content-length",
                "docker-content-digest",
                "www-authenticate"
            ]
        );
    }

    #[test]
    fn the_mirror_is_named_by_an_https_origin_only() {
        assert_eq!(
            origin("https://mirror.example.com:5000").as_deref(),
            Ok("https://mirror.example.com:5000")
        );
        assert_eq!(
            origin("https://mirror.example.com:5000/").as_deref(),
            Ok("https://mirror.example.com:5000")
        );
        for refused in [
            "http://mirror:5000",
            "https://alice:pw@mirror:5000",
            "https://mirror:5000/go",
            "https://mirror:5000/?x=1",
            "mirror:5000",
        ] {
            assert!(origin(refused).is_err(), "{refused}");
        }
    }
}
