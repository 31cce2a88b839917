//! Requests a web browser sends for a page. A page the user visits can make
//! the browser send requests to 127.0.0.1 as that user, so the same-user check
//! (`peer`) admits them; and through DNS rebinding (a name of the page's own
//! that it points at 127.0.0.1) the page can read the answers: whatever the
//! certificate may read. The clients the forwarder is for (cmd/go, curl)
//! send neither `Origin` nor `Sec-Fetch-*`, and name the forwarder by its
//! address or `localhost`; a request that does otherwise is refused.

use std::net::IpAddr;

use http::Request;
use http::header::{HOST, HeaderMap};
use http::uri::Authority;

use super::refusal::Refusal;
use crate::escape::escape;

/// Which names a request may give the forwarder in its `Host`.
#[derive(Clone, Copy, Debug)]
pub enum Hosts {
    /// On loopback: an IP address or `localhost`, never a name whose DNS
    /// someone else controls.
    Local,
    /// Off loopback (`--allow-non-loopback`): whoever reaches the port is
    /// served anyway, by whatever name they reach it.
    Any,
}

/// `Ok` unless `request` comes from a browser or names the forwarder by a
/// name that is not its own.
pub fn check<B>(request: &Request<B>, hosts: Hosts) -> Result<(), Refusal> {
    if sent_by_browser(request.headers()) {
        return Err(Refusal::new(
            "mirror forward: this request is a web browser's (it has Origin or Sec-Fetch-* \
             headers); a web page could act with the certificate through it, so browsers are \
             not served\n"
                .into(),
        ));
    }
    if let Hosts::Local = hosts
        && let Some(host) = named_host(request)
        && !is_local_name(&host)
    {
        return Err(Refusal::new(format!(
            "mirror forward: the request names this forwarder {}, not by an IP address or \
             localhost; a web page can point a name of its own here (DNS rebinding), so such \
             names are not served\n",
            escape(&host)
        )));
    }
    Ok(())
}

/// Browsers send `Origin` on every cross-origin request that is not a plain
/// GET, and the `Sec-Fetch-*` metadata on every request to a loopback address.
fn sent_by_browser(headers: &HeaderMap) -> bool {
    headers
        .keys()
        .any(|name| name == "origin" || name.as_str().starts_with("sec-fetch-"))
}

/// `Host` (HTTP/1.1) or the request target's authority (HTTP/2); `None` when
/// neither names one, which no browser sends.
fn named_host<B>(request: &Request<B>) -> Option<String> {
    match request.headers().get(HOST) {
        Some(value) => Some(String::from_utf8_lossy(value.as_bytes()).into_owned()),
        None => request.uri().authority().map(|a| a.as_str().to_owned()),
    }
}

/// An IP address (`127.0.0.1:5080`, `[::1]:5080`) or `localhost`, port or not.
fn is_local_name(host: &str) -> bool {
    let Ok(authority) = host.parse::<Authority>() else {
        return false;
    };
    let name = authority.host();
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    !host.contains('@')
        && (bare.parse::<IpAddr>().is_ok() || name.eq_ignore_ascii_case("localhost"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::get("/example.com/greet/@v/list");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn go_and_curl_requests_are_served() {
        for host in [
            "127.0.0.1:5080",
            "[::1]:5080",
            "localhost:5080",
            "LOCALHOST",
            "127.0.0.1",
        ] {
            let go = request(&[
                ("host", host),
                ("user-agent", "Go-http-client/1.1"),
                ("accept-encoding", "gzip"),
            ]);
            assert!(check(&go, Hosts::Local).is_ok(), "{host}");
        }
        assert!(check(&request(&[]), Hosts::Local).is_ok(), "no Host at all");
    }

    #[test]
    fn a_browsers_request_is_refused_wherever_the_forwarder_listens() {
        for header in [
            ("origin", "https://pages.example"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "no-cors"),
        ] {
            let sent = request(&[("host", "127.0.0.1:5080"), header]);
            for hosts in [Hosts::Local, Hosts::Any] {
                let refused = check(&sent, hosts).expect_err("a browser's request");
                assert!(refused.to_string().contains("web browser"), "{refused}");
            }
        }
    }

    #[test]
    fn a_name_other_than_localhost_is_refused_on_loopback_only() {
        for host in [
            "rebind.pages.example:5080",
            "localhost.pages.example",
            "user@127.0.0.1:5080",
            "",
        ] {
            let sent = request(&[("host", host)]);
            let refused = check(&sent, Hosts::Local).expect_err(host);
            assert!(refused.to_string().contains("DNS rebinding"), "{refused}");
        }
        let sent = request(&[("host", "devbox.lan:5080")]);
        assert!(check(&sent, Hosts::Any).is_ok());
    }
}
