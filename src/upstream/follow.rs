//! Sending one bodiless request to an upstream and following its redirects
//! here rather than in reqwest, so the rules are ours and explicit:
//!
//! * at most `MAX_REDIRECTS` hops;
//! * https only, never https → http; plain http only inside an http upstream
//!   on an internal network, to its own host or to an IP address on the same
//!   kind of network (`plain_http_allowed`);
//! * no IP address the upstream is not entitled to (`Trust::may_reach`; names
//!   are screened by the resolver when the connection is made);
//! * the credential goes only to the configured upstream's own origin.
//!
//! reqwest's follower strips `Authorization` only when a hop changes origin
//! from the hop just before, and re-sends the original headers on every hop:
//! upstream → other host → same other host again would hand the other host
//! the upstream's credentials. Following here never adds them off-origin.

use http::header::{AUTHORIZATION, HeaderMap, HeaderValue, LOCATION};
use http::{Method, StatusCode};
use reqwest::Url;

use super::address::{Class, class_of};
use super::trust::{Refusal, Trust, normalize};

/// As many hops as object storage behind a CDN needs, and no loop.
pub const MAX_REDIRECTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The upstream sent the mirror somewhere it does not go.
    #[error("{0}")]
    Refused(Refusal),
    /// Connecting or talking to `target` failed.
    #[error("{target}: {reason}")]
    Transport { target: String, reason: String },
}

/// `scheme://host:port/path` of a URL, for messages: no credentials and no
/// query (presigned storage URLs carry their signature there).
pub fn display(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// A URL's credentials become the request's `Authorization` (an explicit one
/// wins), so they can be scoped to the origin like any other credential.
fn split_userinfo(mut url: Url, credential: Option<HeaderValue>) -> (Url, Option<HeaderValue>) {
    let from_url = (!url.username().is_empty()).then(|| {
        let user = percent_encoding::percent_decode_str(url.username()).decode_utf8_lossy();
        let password = url
            .password()
            .map(|p| percent_encoding::percent_decode_str(p).decode_utf8_lossy())
            .unwrap_or_default();
        super::basic_authorization(&user, &password)
    });
    let _ = url.set_username("");
    let _ = url.set_password(None);
    (url, credential.or(from_url.flatten()))
}

/// Plain http is followed only where the operator already chose it for an
/// internal upstream: within its own host, or to an internal IP address on
/// the same kind of network (which `may_reach` then checks).
fn plain_http_allowed(trust: &Trust, current: &Url, next: &Url) -> bool {
    if current.scheme() != "http" || !trust.origin_is_internal() {
        return false;
    }
    let host = normalize(next.host_str().unwrap_or_default());
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => class_of(ip) != Class::Public,
        Err(_) => host == trust.origin_host(),
    }
}

/// Whether the redirect from `current` to `next` may be followed.
pub fn check_hop(trust: &Trust, current: &Url, next: &Url) -> Result<(), Refusal> {
    let refuse = |why: &str| {
        Refusal(format!(
            "refused the redirect from {} to {}: {why}",
            display(current),
            display(next)
        ))
    };
    match next.scheme() {
        "https" => {}
        "http" if plain_http_allowed(trust, current, next) => {}
        "http" if current.scheme() == "https" => {
            return Err(refuse("it would downgrade https to plain http"));
        }
        "http" => {
            return Err(refuse(
                "plain http is followed only within an http upstream on an internal network",
            ));
        }
        _ => return Err(refuse("not an http(s) URL")),
    }
    trust.may_reach(next).map_err(|r| refuse(&r.0))
}

/// The next URL of a redirect answer, or `None` when it is not one.
fn location(current: &Url, response: &reqwest::Response) -> Option<Result<Url, Refusal>> {
    if !is_redirect(response.status()) {
        return None;
    }
    let value = response.headers().get(LOCATION)?;
    let next = value
        .to_str()
        .ok()
        .and_then(|text| current.join(text).ok())
        .ok_or_else(|| {
            Refusal(format!(
                "{} redirected to a Location that is not a URL",
                display(current)
            ))
        });
    Some(next)
}

fn transport(url: &Url, error: reqwest::Error) -> SendError {
    if let Some(refusal) = refusal_in(&error) {
        return SendError::Refused(refusal);
    }
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    let mut reason = error.without_url().to_string();
    for cause in causes {
        reason = format!("{reason}: {cause}");
    }
    SendError::Transport {
        target: display(url),
        reason,
    }
}

/// The resolver's refusal, when that is why the connection failed.
fn refusal_in(error: &reqwest::Error) -> Option<Refusal> {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(refusal) = cause.downcast_ref::<Refusal>() {
            return Some(refusal.clone());
        }
        source = cause.source();
    }
    None
}

/// Sends `method url` with `headers`, following redirects by the rules above;
/// `credential` (or the URL's own user:password) goes only to `url`'s origin.
pub async fn send(
    client: &reqwest::Client,
    trust: &Trust,
    method: Method,
    url: Url,
    mut headers: HeaderMap,
    credential: Option<HeaderValue>,
) -> Result<reqwest::Response, SendError> {
    headers.remove(AUTHORIZATION);
    let (mut current, credential) = split_userinfo(url, credential);
    let origin = current.origin();
    let mut hops = 0;
    loop {
        let mut request = client
            .request(method.clone(), current.clone())
            .headers(headers.clone());
        if let Some(value) = credential.as_ref().filter(|_| current.origin() == origin) {
            request = request.header(AUTHORIZATION, value.clone());
        }
        let response = request.send().await.map_err(|e| transport(&current, e))?;
        let next = match location(&current, &response) {
            None => return Ok(response),
            Some(next) => next.map_err(SendError::Refused)?,
        };
        hops += 1;
        if hops > MAX_REDIRECTS {
            return Err(SendError::Refused(Refusal(format!(
                "{} redirected more than {MAX_REDIRECTS} times",
                display(&current)
            ))));
        }
        check_hop(trust, &current, &next).map_err(SendError::Refused)?;
        current = next;
        let _ = current.set_username("");
        let _ = current.set_password(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    fn hop(origin: &str, current: &str, next: &str) -> Result<(), Refusal> {
        let trust = Trust::new(&url(origin), &[]);
        check_hop(&trust, &url(current), &url(next))
    }

    #[test]
    fn https_is_never_downgraded() {
        let err = hop(
            "https://127.0.0.1:5000",
            "https://127.0.0.1:5000/v2/x",
            "http://127.0.0.1:5000/v2/y",
        )
        .unwrap_err();
        assert!(err.0.contains("downgrade"), "{err}");
        let err = hop(
            "http://127.0.0.1:5000",
            "https://127.0.0.1:6000/a",
            "http://127.0.0.1:5000/b",
        )
        .unwrap_err();
        assert!(err.0.contains("downgrade"), "{err}");
        assert!(
            hop(
                "https://r.example",
                "https://r.example/a",
                "http://s.example/"
            )
            .is_err()
        );
    }

    #[test]
    fn plain_http_stays_inside_an_internal_http_upstream() {
        assert!(
            hop(
                "http://127.0.0.1:5000",
                "http://127.0.0.1:5000/a",
                "http://127.0.0.1:7000/b"
            )
            .is_ok()
        );
        assert!(
            hop(
                "http://localhost:5000",
                "http://localhost:5000/a",
                "http://localhost:7000/b"
            )
            .is_err(),
            "the class of a name is known only once it resolved"
        );
        assert!(hop("http://10.0.0.5", "http://10.0.0.5/a", "http://10.0.0.6/b").is_ok());
        assert!(hop("http://10.0.0.5", "http://10.0.0.5/a", "http://127.0.0.1/b").is_err());
        assert!(
            hop(
                "http://10.0.0.5",
                "http://10.0.0.5/a",
                "http://minio.corp/b"
            )
            .is_err()
        );
        assert!(
            hop(
                "http://10.0.0.5",
                "http://10.0.0.5/a",
                "http://198.51.100.7/b"
            )
            .is_err(),
            "plain http to the internet is refused even from a plain http upstream"
        );
        assert!(
            hop(
                "http://198.51.100.9",
                "http://198.51.100.9/a",
                "http://198.51.100.9/b"
            )
            .is_err()
        );
        assert!(
            hop(
                "http://10.0.0.5",
                "http://10.0.0.5/a",
                "https://198.51.100.7/b"
            )
            .is_ok()
        );
    }

    #[test]
    fn only_http_and_https_are_followed() {
        assert!(
            hop(
                "https://r.example",
                "https://r.example/a",
                "file:///etc/passwd"
            )
            .is_err()
        );
        assert!(
            hop(
                "https://r.example",
                "https://r.example/a",
                "ftp://r.example/a"
            )
            .is_err()
        );
    }

    #[test]
    fn refusals_never_show_a_query() {
        let err = hop(
            "https://r.example",
            "https://r.example/a?token=secret1",
            "http://s.example/b?X-Amz-Signature=secret2",
        )
        .unwrap_err();
        assert!(!err.0.contains("secret"), "{err}");
        assert!(err.0.contains("http://s.example/b"), "{err}");
    }

    #[test]
    fn url_credentials_become_an_authorization_for_the_origin() {
        let (url, credential) = split_userinfo(url("https://u:p%40ss@h.example/x"), None);
        assert_eq!(url.as_str(), "https://h.example/x");
        let expected = super::super::basic_authorization("u", "p@ss").unwrap();
        assert_eq!(credential, Some(expected));
        let explicit = HeaderValue::from_static("Bearer t");
        let (_, credential) = split_userinfo(url.clone(), Some(explicit.clone()));
        assert_eq!(credential, Some(explicit));
    }
}
