//! `[go] upstream` in GOPROXY syntax, and walking it with Go's semantics: after
//! a proxy, `,` falls through to the next one on 404/410 only, `|` on any
//! error. `off` ends the list (a miss there is "not found"); `direct` is
//! refused, because this server never fetches from version control.
//! Knows nothing of caching; `fetch` only talks HTTP.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};

pub use super::failure::Failure;
use crate::metrics::{Metrics, UpstreamResult};
use crate::upstream::redact;
use crate::wire::Protocol;

/// Bytes that stay as they are in an upstream path; the rest are
/// percent-encoded, as the go command does (`!` → `%21`).
const PATH_KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/')
    .remove(b'+')
    .remove(b'@');

/// The most of a 404/410 body repeated to the client as the reason.
const MAX_REASON: usize = 512;

/// Time allowed for a small answer (list, .info, .mod, sumdb) from one upstream.
const SMALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Hop {
    Proxy {
        /// Without a trailing slash.
        base: String,
        /// `|` after this entry: fall through on any error, not only 404/410.
        on_any_error: bool,
    },
    Off,
}

/// The parsed upstream list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    hops: Vec<Hop>,
}

/// What is wrong with a GOPROXY list; the caller names the key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("{0:?} comes after \"off\" and would never be used")]
    AfterOff(String),
    #[error(
        "\"direct\" is not an upstream of this server (it never fetches from version control): \
         name GOPROXY URLs, or \"off\" to serve only what is cached"
    )]
    Direct,
    #[error("names no upstream (use \"off\" to serve only what is cached)")]
    Empty,
    #[error("{0:?}: a proxy URL has no query or fragment")]
    QueryOrFragment(String),
    #[error("{0:?} is not an http(s) proxy URL")]
    NotHttp(String),
}

impl FromStr for Chain {
    type Err = ChainError;

    /// Parses GOPROXY syntax.
    fn from_str(list: &str) -> Result<Chain, ChainError> {
        let mut hops = Vec::new();
        let mut rest = list;
        while !rest.is_empty() {
            let (entry, on_any_error) = match rest.find([',', '|']) {
                Some(i) => {
                    let entry = &rest[..i];
                    let pipe = rest.as_bytes()[i] == b'|';
                    rest = &rest[i + 1..];
                    (entry, pipe)
                }
                None => (std::mem::take(&mut rest), false),
            };
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            if matches!(hops.last(), Some(Hop::Off)) {
                return Err(ChainError::AfterOff(entry.to_owned()));
            }
            match entry {
                "off" => hops.push(Hop::Off),
                "direct" => {
                    return Err(ChainError::Direct);
                }
                url => hops.push(Hop::Proxy {
                    base: proxy_url(url)?,
                    on_any_error,
                }),
            }
        }
        if hops.is_empty() {
            return Err(ChainError::Empty);
        }
        Ok(Chain { hops })
    }
}

/// As Go: a bare host means https; anything else must be an http(s) URL.
fn proxy_url(entry: &str) -> Result<String, ChainError> {
    let full = if entry.contains(":/") {
        entry.to_owned()
    } else {
        format!("https://{entry}")
    };
    match reqwest::Url::parse(&full) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            if url.query().is_some() || url.fragment().is_some() {
                return Err(ChainError::QueryOrFragment(entry.to_owned()));
            }
            Ok(full.trim_end_matches('/').to_owned())
        }
        _ => Err(ChainError::NotHttp(entry.to_owned())),
    }
}

/// The outbound HTTP clients (one per upstream), and the metrics every
/// upstream request is counted in.
#[derive(Clone)]
pub struct Client {
    pub http: crate::upstream::Clients,
    pub metrics: Arc<Metrics>,
}

/// An upstream as metrics name it: `host:port`, never its credentials or path.
fn upstream_label(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(url) => match (url.host_str(), url.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            _ => "-".into(),
        },
        Err(_) => "-".into(),
    }
}

/// What one upstream said.
#[derive(Clone, Debug)]
pub enum Answer<T> {
    Found(T),
    /// 404 or 410, with the upstream's reason.
    NotFound {
        gone: bool,
        reason: String,
    },
    /// Anything else: a status, a connection error, an oversized body. Never
    /// sent to the client (it may name internal hosts); logged by the caller.
    Failed(Failure),
}

/// Percent-encodes an upstream path built from escaped module paths and versions.
pub fn encode_path(path: &str) -> String {
    percent_encoding::utf8_percent_encode(path, PATH_KEEP).to_string()
}

/// GOPROXY syntax again, with passwords masked: for the startup log.
impl std::fmt::Display for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, hop) in self.hops.iter().enumerate() {
            let after_previous = match self.hops[..i].last() {
                None => "",
                Some(Hop::Proxy {
                    on_any_error: true, ..
                }) => "|",
                Some(_) => ",",
            };
            f.write_str(after_previous)?;
            match hop {
                Hop::Proxy { base, .. } => f.write_str(&redact(base))?,
                Hop::Off => f.write_str("off")?,
            }
        }
        Ok(())
    }
}

impl Chain {
    /// The base URL of every proxy in the list.
    pub fn proxies(&self) -> impl Iterator<Item = &str> {
        self.hops.iter().filter_map(|hop| match hop {
            Hop::Proxy { base, .. } => Some(base.as_str()),
            Hop::Off => None,
        })
    }

    /// Walks the list for `path` (already escaped and encoded, no leading
    /// slash), calling `one` on each proxy, and returns the first hit or the
    /// most telling failure: an error outranks "not found", and a later
    /// answer of the same rank a former one, as in Go's `TryProxies`.
    pub async fn walk<T, F, Fut>(&self, path: &str, mut one: F) -> Answer<T>
    where
        F: FnMut(String) -> Fut,
        Fut: Future<Output = Answer<T>>,
    {
        let mut best: Option<Answer<T>> = None;
        for hop in &self.hops {
            let (base, on_any_error) = match hop {
                Hop::Proxy { base, on_any_error } => (base, *on_any_error),
                Hop::Off => {
                    if !matches!(best, Some(Answer::Failed(_))) {
                        best = Some(Answer::NotFound {
                            gone: false,
                            reason: "not found: fetching from upstream is off (go.upstream)".into(),
                        });
                    }
                    break;
                }
            };
            let url = format!("{base}/{path}");
            // Boxed: an upstream request is kilobytes of future, which every
            // caller's (hits included) would carry otherwise.
            match Box::pin(one(url)).await {
                Answer::Found(value) => return Answer::Found(value),
                Answer::Failed(cause) => {
                    best = Some(Answer::Failed(Failure::At {
                        at: format!("{}/{path}", redact(base)),
                        cause: Box::new(cause),
                    }));
                    if !on_any_error {
                        break;
                    }
                }
                not_found @ Answer::NotFound { .. } => {
                    if !matches!(best, Some(Answer::Failed(_))) {
                        best = Some(not_found);
                    }
                }
            }
        }
        best.unwrap_or(Answer::Failed(Failure::NoUpstream))
    }

    /// A small answer (at most `limit` bytes) through the list.
    pub async fn fetch(&self, client: &Client, path: &str, limit: usize) -> Answer<Bytes> {
        self.walk(path, |url| fetch_one(client, url, limit)).await
    }

    /// The first upstream response for a large file, body unread, through the list.
    pub async fn open(&self, client: &Client, path: &str) -> Answer<reqwest::Response> {
        self.walk(path, |url| open_one(client, url)).await
    }
}

/// GETs `url`: 200 is found, 404/410 not found (with its text), the rest
/// failures. Counted in the metrics with the time to the response headers.
pub async fn open_one(client: &Client, url: String) -> Answer<reqwest::Response> {
    let started = Instant::now();
    let sent = client.http.get(&url).await;
    let result = match &sent {
        Ok(response) if response.status().as_u16() == 200 => UpstreamResult::Ok,
        Ok(response) if matches!(response.status().as_u16(), 404 | 410) => UpstreamResult::NotFound,
        _ => UpstreamResult::Error,
    };
    client.metrics.upstream(
        Protocol::Go,
        &upstream_label(&url),
        result,
        started.elapsed(),
    );
    let response = match sent {
        Ok(response) => response,
        // Never shows the URL's password or a query.
        Err(error) => return Answer::Failed(Failure::request(error)),
    };
    let status = response.status();
    match status.as_u16() {
        200 => Answer::Found(response),
        404 | 410 => Answer::NotFound {
            gone: status.as_u16() == 410,
            reason: reason(response).await,
        },
        _ => Answer::Failed(Failure::Status(status)),
    }
}

/// GETs a small body, refusing more than `limit` bytes.
pub async fn fetch_one(client: &Client, url: String, limit: usize) -> Answer<Bytes> {
    let response = match tokio::time::timeout(SMALL_TIMEOUT, open_one(client, url)).await {
        Ok(Answer::Found(response)) => response,
        Ok(Answer::NotFound { gone, reason }) => return Answer::NotFound { gone, reason },
        Ok(Answer::Failed(error)) => return Answer::Failed(error),
        Err(_) => return Answer::Failed(Failure::NoAnswer(SMALL_TIMEOUT)),
    };
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Answer::Failed(Failure::TooLarge(limit));
    }
    let mut body = BytesMut::new();
    let mut stream = response.bytes_stream();
    let read = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Failure::request(e.without_url()))?;
            if body.len() + chunk.len() > limit {
                return Err(Failure::TooLarge(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(())
    };
    match tokio::time::timeout(SMALL_TIMEOUT, read).await {
        Ok(Ok(())) => Answer::Found(body.freeze()),
        Ok(Err(error)) => Answer::Failed(error),
        Err(_) => Answer::Failed(Failure::BodyTimeout(SMALL_TIMEOUT)),
    }
}

/// The first line or so of a 404/410 body: what the `go` command prints.
async fn reason(response: reqwest::Response) -> String {
    let status = response.status();
    let mut text = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        text.extend_from_slice(&chunk);
        if text.len() >= MAX_REASON {
            break;
        }
    }
    let text: String = String::from_utf8_lossy(&text)
        .chars()
        .filter(|c| !c.is_control() || *c == '\n')
        .take(MAX_REASON)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        format!("not found: upstream answered {status}")
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goproxy_syntax_parses_with_separators() {
        let chain: Chain = "https://a.example, b.example|http://c.example/sub/,off"
            .parse()
            .unwrap();
        assert_eq!(
            chain.hops,
            vec![
                Hop::Proxy {
                    base: "https://a.example".into(),
                    on_any_error: false
                },
                Hop::Proxy {
                    base: "https://b.example".into(),
                    on_any_error: true
                },
                Hop::Proxy {
                    base: "http://c.example/sub".into(),
                    on_any_error: false
                },
                Hop::Off,
            ]
        );
    }

    #[test]
    fn direct_and_unusable_lists_are_refused() {
        let err = "https://a.example,direct".parse::<Chain>().unwrap_err();
        assert_eq!(err, ChainError::Direct);
        assert!(err.to_string().contains("direct"), "{err}");
        assert_eq!(
            "off,https://a.example".parse::<Chain>().unwrap_err(),
            ChainError::AfterOff("https://a.example".into())
        );
        assert_eq!(" , ".parse::<Chain>().unwrap_err(), ChainError::Empty);
        assert_eq!(
            "ftp://x.example".parse::<Chain>().unwrap_err(),
            ChainError::NotHttp("ftp://x.example".into())
        );
        assert!("off".parse::<Chain>().is_ok());
    }

    #[test]
    fn paths_are_encoded_as_the_go_command_does() {
        assert_eq!(
            encode_path("example.com/!upper/@v/v2.0.0+incompatible.info"),
            "example.com/%21upper/@v/v2.0.0+incompatible.info"
        );
        assert_eq!(encode_path("m/@v/a b#c.info"), "m/@v/a%20b%23c.info");
    }

    #[test]
    fn passwords_in_upstream_urls_are_masked() {
        assert_eq!(
            redact("https://u:secret@h.example/p"),
            "https://u:xxxxx@h.example/p"
        );
        assert_eq!(
            upstream_label("https://u:secret@h.example/p"),
            "h.example:443"
        );
        let chain: Chain = "https://u:secret@a.example|b.example,off".parse().unwrap();
        assert_eq!(
            chain.to_string(),
            "https://u:xxxxx@a.example/|https://b.example,off"
        );
    }

    #[tokio::test]
    async fn errors_outrank_not_found_and_stop_at_a_comma() {
        let chain: Chain = "https://a.example|https://b.example,https://c.example"
            .parse()
            .unwrap();
        let mut asked = Vec::new();
        let answer: Answer<()> = chain
            .walk("m/@v/list", |url| {
                asked.push(url.clone());
                async move {
                    if url.starts_with("https://a.") {
                        Answer::Failed(Failure::Status(http::StatusCode::INTERNAL_SERVER_ERROR))
                    } else if url.starts_with("https://b.") {
                        Answer::Failed(Failure::Status(http::StatusCode::BAD_GATEWAY))
                    } else {
                        Answer::NotFound {
                            gone: false,
                            reason: "nope".into(),
                        }
                    }
                }
            })
            .await;
        assert_eq!(
            asked.len(),
            2,
            "b failed and is followed by a comma: c is not asked"
        );
        assert!(matches!(answer, Answer::Failed(e) if e.status() == Some(502)));
    }
}
