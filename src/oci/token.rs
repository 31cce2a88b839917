//! The registry token protocol from the client side: parsing a
//! `WWW-Authenticate` challenge, deciding whether its realm may be asked
//! (`check_realm`), and fetching a Bearer token from it.
//! Tokens are secrets: never logged, marked sensitive in headers.

use std::time::{Duration, Instant};

use http::Method;
use http::header::{HeaderMap, HeaderValue};
use reqwest::Url;

use crate::upstream::{Client, Refusal, SendError, Trust, display};

/// A `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// `bearer` or `basic`, lower-cased.
    pub scheme: String,
    pub realm: Option<String>,
    pub service: Option<String>,
    pub scope: Option<String>,
}

impl Challenge {
    pub fn is_bearer(&self) -> bool {
        self.scheme == "bearer" && self.realm.is_some()
    }
}

/// Parses `Bearer realm="…",service="…",scope="…"` (or `Basic realm="…"`).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
    let mut challenge = Challenge {
        scheme: scheme.to_ascii_lowercase(),
        realm: None,
        service: None,
        scope: None,
    };
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            after.split_once(',').map_or((after, ""), |(v, r)| (v, r))
        };
        let value = value.trim().to_owned();
        match key.as_str() {
            "realm" => challenge.realm = Some(value),
            "service" => challenge.service = Some(value),
            "scope" => challenge.scope = Some(value),
            _ => {}
        }
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    Some(challenge)
}

/// A Bearer token and when to stop using it.
#[derive(Clone)]
pub struct Token {
    value: String,
    pub expires: Instant,
}

impl Token {
    /// The `Authorization` value; `None` if the token is not a valid header value.
    pub fn header(&self) -> Option<HeaderValue> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.value)).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// The spec's default lifetime when the token service names none.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);
/// Longest a token is kept, whatever the token service says.
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Whether the realm a challenge names may be asked for a token, and with
/// the configured credentials when `with_credentials`:
///
/// * https, or plain http to the upstream's own host when that is a loopback
///   address (a test registry and its token service on one machine);
/// * credentials only to the upstream's own host or a host in `token_realms`
///   (Docker Hub's `auth.docker.io`); an anonymous request carries nothing
///   secret, so it may go to any host;
/// * never to an IP address on a network the upstream is not on (names are
///   screened by the client's resolver when it connects).
pub fn check_realm(
    realm: &Url,
    trust: &Trust,
    token_realms: &[String],
    with_credentials: bool,
) -> Result<(), Refusal> {
    let host = crate::upstream::normalize_host(realm.host_str().unwrap_or_default());
    let own_host = host == trust.origin_host();
    match realm.scheme() {
        "https" => {}
        "http" if own_host && trust.origin_is_loopback() => {}
        _ => {
            return Err(Refusal(format!(
                "the token realm {} is not https",
                display(realm)
            )));
        }
    }
    if with_credentials
        && !own_host
        && !token_realms
            .iter()
            .any(|r| crate::upstream::normalize_host(r) == host)
    {
        return Err(Refusal(format!(
            "the token realm {} is neither the upstream's host {} nor in its token_realms, \
             and the configured credentials go nowhere else",
            display(realm),
            trust.origin_host()
        )));
    }
    trust.may_reach(realm)
}

/// Why no token came.
#[derive(Debug)]
pub enum FetchError {
    /// The realm sent the mirror somewhere it does not go (a redirect, an address).
    Refused(Refusal),
    Failed(String),
}

/// Asks `realm` (checked by `check_realm`) for a token for `scope`, with the
/// configured credentials if any (anonymous otherwise).
pub async fn fetch(
    client: &Client,
    mut realm: Url,
    challenge: &Challenge,
    scope: &str,
    basic: Option<&HeaderValue>,
) -> Result<Token, FetchError> {
    let shown = display(&realm);
    {
        let mut query = realm.query_pairs_mut();
        if let Some(service) = &challenge.service {
            query.append_pair("service", service);
        }
        for scope in scope.split(' ').filter(|s| !s.is_empty()) {
            query.append_pair("scope", scope);
        }
    }
    let started = Instant::now();
    let response = client
        .send(
            Method::GET,
            realm.as_str(),
            HeaderMap::new(),
            basic.cloned(),
        )
        .await
        .map_err(|e| match e {
            SendError::Refused(refusal) => FetchError::Refused(refusal),
            other => FetchError::Failed(other.to_string()),
        })?;
    if !response.status().is_success() {
        return Err(FetchError::Failed(format!(
            "{shown} answered {}",
            response.status()
        )));
    }
    let body = super::upstream::read_limited(response, 256 * 1024)
        .await
        .map_err(|e| FetchError::Failed(e.to_string()))?;
    let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
        FetchError::Failed(format!("{shown} sent an unreadable token response: {e}"))
    })?;
    let value = parsed
        .token
        .or(parsed.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| FetchError::Failed(format!("{shown} sent no token")))?;
    // Capped: the value comes from outside, and `Instant` arithmetic panics
    // on overflow.
    let lifetime = parsed
        .expires_in
        .map_or(DEFAULT_LIFETIME, Duration::from_secs)
        .min(MAX_LIFETIME);
    // Renew a little early so a token never expires between check and use.
    let margin = (lifetime / 10).min(Duration::from_secs(30));
    Ok(Token {
        value,
        expires: started + lifetime - margin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_parse_with_quoted_commas() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push""#,
        )
        .unwrap();
        assert!(c.is_bearer());
        assert_eq!(c.realm.as_deref(), Some("https://auth.docker.io/token"));
        assert_eq!(c.service.as_deref(), Some("registry.docker.io"));
        assert_eq!(
            c.scope.as_deref(),
            Some("repository:library/alpine:pull,push")
        );
    }

    fn realm(
        upstream: &str,
        realm: &str,
        token_realms: &[&str],
        with_credentials: bool,
    ) -> Result<(), Refusal> {
        let trust = Trust::new(&Url::parse(upstream).unwrap(), &[]);
        let token_realms: Vec<String> = token_realms.iter().map(|s| s.to_string()).collect();
        check_realm(
            &Url::parse(realm).unwrap(),
            &trust,
            &token_realms,
            with_credentials,
        )
    }

    #[test]
    fn credentials_go_only_to_the_upstreams_host_or_a_listed_realm() {
        let hub = "https://registry-1.docker.io";
        assert!(realm(hub, "https://registry-1.docker.io/token", &[], true).is_ok());
        assert!(
            realm(
                hub,
                "https://auth.docker.io/token",
                &["auth.docker.io"],
                true
            )
            .is_ok()
        );
        let err = realm(hub, "https://auth.docker.io/token", &[], true).unwrap_err();
        assert!(err.0.contains("token_realms"), "{err}");
        assert!(realm(hub, "https://evil.example/token", &["auth.docker.io"], true).is_err());
        assert!(
            realm(hub, "https://evil.example/token", &[], false).is_ok(),
            "an anonymous token request carries nothing secret"
        );
    }

    #[test]
    fn realms_are_https_but_for_a_loopback_upstreams_own_host() {
        let hub = "https://registry-1.docker.io";
        let err = realm(hub, "http://registry-1.docker.io/token", &[], true).unwrap_err();
        assert!(err.0.contains("not https"), "{err}");
        assert!(
            realm(
                hub,
                "http://auth.docker.io/token",
                &["auth.docker.io"],
                false
            )
            .is_err()
        );
        let local = "http://127.0.0.1:5000";
        assert!(realm(local, "http://127.0.0.1:5001/token", &[], true).is_ok());
        assert!(realm(local, "http://127.0.0.2:5001/token", &["127.0.0.2"], true).is_err());
        assert!(realm(local, "https://127.0.0.2:5001/token", &["127.0.0.2"], true).is_ok());
        let internal = "http://10.0.0.5:5000";
        assert!(realm(internal, "http://10.0.0.5:5001/token", &[], true).is_err());
    }

    #[test]
    fn realms_never_point_into_a_network_the_upstream_is_not_on() {
        let hub = "https://registry-1.docker.io";
        for target in [
            "https://169.254.169.254/token",
            "https://127.0.0.1/token",
            "https://10.0.0.1/token",
        ] {
            assert!(realm(hub, target, &[], false).is_err(), "{target}");
        }
    }

    #[test]
    fn basic_challenges_are_not_bearer() {
        let c = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert!(!c.is_bearer());
    }
}
