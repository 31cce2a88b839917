//! Where one upstream client may connect. The configured upstream's host, the
//! hosts the operator listed beside it (token realms) and the environment's
//! proxies are reached whatever they resolve to; any other host only on a
//! public address or on the same kind of network as the configured upstream.
//!
//! Host names are checked in the resolver, on the addresses the connection is
//! then made to: resolving once to check and letting the connector resolve
//! again would let a name answer a public address first and 127.0.0.1 next
//! (DNS rebinding). IP literals never reach a resolver, so `may_reach` checks
//! them before a request is sent.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::address::{Class, Classes, class_of};

/// Why the mirror will not go where an upstream sent it. Its text names hosts
/// and addresses, never a query string (presigned URLs carry signatures).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

#[derive(Debug)]
pub struct Trust {
    /// The configured upstream's host, lower-case, without a trailing dot.
    origin: String,
    /// Hosts reached whatever they resolve to, without lending their network to others.
    exempt: Vec<String>,
    /// The classes the configured upstream is on: from its literal at once,
    /// from its name's addresses as they resolve.
    classes: AtomicU8,
}

/// A host as compared here: lower-case, no trailing dot, IPv6 without brackets.
pub fn normalize(host: &str) -> String {
    host.trim_end_matches('.')
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

impl Trust {
    /// For the upstream at `origin`, with `exempt` hosts beside it.
    pub fn new(origin: &Url, exempt: &[String]) -> Trust {
        let host = normalize(origin.host_str().unwrap_or_default());
        let classes = match host.parse::<IpAddr>() {
            Ok(ip) => Classes::default().with(class_of(ip)),
            Err(_) => Classes::default(),
        };
        let mut exempt: Vec<String> = exempt.iter().map(|h| normalize(h)).collect();
        exempt.extend(environment_proxies());
        Trust {
            origin: host,
            exempt,
            classes: AtomicU8::new(classes.0),
        }
    }

    pub fn origin_host(&self) -> &str {
        &self.origin
    }

    fn classes(&self) -> Classes {
        Classes(self.classes.load(Ordering::Relaxed))
    }

    /// Whether the configured upstream is on this host and nowhere else.
    pub fn origin_is_loopback(&self) -> bool {
        self.classes() == Classes::default().with(Class::Loopback)
    }

    /// Whether the configured upstream is on a loopback, private or link-local network.
    pub fn origin_is_internal(&self) -> bool {
        let classes = self.classes();
        [Class::Loopback, Class::Private, Class::LinkLocal]
            .into_iter()
            .any(|c| classes.contains(c))
    }

    fn is_trusted_host(&self, host: &str) -> bool {
        host == self.origin || self.exempt.iter().any(|e| e == host)
    }

    fn allows(&self, ip: IpAddr) -> bool {
        let class = class_of(ip);
        class == Class::Public || self.classes().contains(class)
    }

    /// Whether an IP address in a URL (from a redirect or a realm) may be
    /// connected to. Names pass here: the resolver checks what they resolve to.
    pub fn may_reach(&self, url: &Url) -> Result<(), Refusal> {
        let host = normalize(url.host_str().unwrap_or_default());
        match host.parse::<IpAddr>() {
            Ok(ip) if !self.is_trusted_host(&host) && !self.allows(ip) => Err(Refusal(format!(
                "{ip} is a {} address and the upstream {} is not on one",
                class_of(ip),
                self.origin
            ))),
            _ => Ok(()),
        }
    }

    /// Keeps the addresses of `host` the client may connect to.
    fn screen(&self, host: &str, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, Refusal> {
        let host = normalize(host);
        if host == self.origin {
            let learned = addrs
                .iter()
                .fold(self.classes(), |set, a| set.with(class_of(a.ip())));
            self.classes.fetch_or(learned.0, Ordering::Relaxed);
            return Ok(addrs);
        }
        if self.is_trusted_host(&host) {
            return Ok(addrs);
        }
        let (allowed, refused): (Vec<_>, Vec<_>) =
            addrs.into_iter().partition(|a| self.allows(a.ip()));
        if allowed.is_empty() {
            let refused: Vec<String> = refused
                .iter()
                .map(|a| format!("{} ({})", a.ip(), class_of(a.ip())))
                .collect();
            return Err(Refusal(format!(
                "{host} resolves only to addresses the upstream {} is not on: {}",
                self.origin,
                refused.join(", ")
            )));
        }
        Ok(allowed)
    }
}

/// The hosts of the proxies reqwest takes from the environment. Behind one,
/// names are resolved by the proxy, so only IP literals are checked here.
fn environment_proxies() -> Vec<String> {
    [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .into_iter()
    .filter_map(|key| std::env::var(key).ok())
    .filter(|value| !value.trim().is_empty())
    .filter_map(|value| {
        let value = value.trim();
        let full = if value.contains("://") {
            value.to_owned()
        } else {
            format!("http://{value}")
        };
        Url::parse(&full).ok()?.host_str().map(normalize)
    })
    .collect()
}

/// The resolver every upstream client uses: the system's (getaddrinfo, as
/// reqwest's own), then `Trust::screen`.
pub struct Screened(pub Arc<Trust>);

impl Resolve for Screened {
    fn resolve(&self, name: Name) -> Resolving {
        let trust = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed = trust.screen(&host, addrs)?;
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trust(origin: &str, exempt: &[&str]) -> Trust {
        let exempt: Vec<String> = exempt.iter().map(|s| s.to_string()).collect();
        Trust::new(&Url::parse(origin).unwrap(), &exempt)
    }

    fn reach(trust: &Trust, url: &str) -> Result<(), Refusal> {
        trust.may_reach(&Url::parse(url).unwrap())
    }

    fn addr(text: &str) -> SocketAddr {
        SocketAddr::new(text.parse().unwrap(), 443)
    }

    #[test]
    fn a_public_upstream_may_not_send_the_mirror_to_internal_literals() {
        let t = trust("https://203.0.113.10", &[]);
        for url in [
            "https://127.0.0.1/",
            "https://[::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://0.0.0.0/",
            "https://10.1.2.3/",
            "https://172.20.0.1/",
            "https://192.168.0.1/",
            "https://169.254.169.254/latest/meta-data/",
            "https://[fe80::1]/",
            "https://[fd00::1]/",
            "https://2130706433/",
            "https://127.1/",
        ] {
            assert!(reach(&t, url).is_err(), "{url}");
        }
        assert!(reach(&t, "https://198.51.100.7/blob").is_ok());
        assert!(
            reach(&t, "https://storage.example/blob").is_ok(),
            "names go to the resolver"
        );
    }

    #[test]
    fn an_internal_upstream_may_stay_on_its_own_kind_of_network() {
        let t = trust("http://10.0.0.5:5000", &[]);
        assert!(reach(&t, "http://10.9.9.9/").is_ok());
        assert!(reach(&t, "https://198.51.100.7/").is_ok());
        assert!(reach(&t, "http://127.0.0.1/").is_err());
        assert!(reach(&t, "http://169.254.169.254/").is_err());
        let t = trust("http://127.0.0.1:5000", &[]);
        assert!(reach(&t, "http://127.0.0.1:6000/").is_ok());
        assert!(reach(&t, "http://[::1]:6000/").is_ok());
        assert!(reach(&t, "http://10.0.0.1/").is_err());
    }

    #[test]
    fn names_are_screened_on_the_addresses_they_resolve_to() {
        let t = trust("https://registry.example", &["auth.example"]);
        let err = t
            .screen("evil.example", vec![addr("127.0.0.1"), addr("10.0.0.1")])
            .unwrap_err();
        assert!(err.0.contains("127.0.0.1 (loopback)"), "{err}");
        let kept = t
            .screen(
                "mixed.example",
                vec![addr("127.0.0.1"), addr("198.51.100.7")],
            )
            .unwrap();
        assert_eq!(kept, vec![addr("198.51.100.7")]);
        assert!(t.screen("auth.example", vec![addr("10.0.0.1")]).is_ok());
        assert!(!t.origin_is_internal());
    }

    #[test]
    fn the_configured_name_lends_its_network_once_resolved() {
        let t = trust("https://registry.corp", &[]);
        assert!(t.screen("storage.corp", vec![addr("10.0.0.7")]).is_err());
        assert!(reach(&t, "https://10.0.0.7/").is_err());
        t.screen("Registry.Corp.", vec![addr("10.0.0.5")]).unwrap();
        assert!(t.origin_is_internal());
        assert!(t.screen("storage.corp", vec![addr("10.0.0.7")]).is_ok());
        assert!(reach(&t, "https://10.0.0.7/").is_ok());
        assert!(reach(&t, "https://127.0.0.1/").is_err());
    }

    #[test]
    fn exempt_hosts_lend_no_network() {
        let t = trust("https://registry.example", &["10.0.0.9"]);
        assert!(reach(&t, "https://10.0.0.9/token").is_ok());
        assert!(reach(&t, "https://10.0.0.8/").is_err());
    }
}
