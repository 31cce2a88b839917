//! The registry token protocol from the client side: parsing a
//! `WWW-Authenticate` challenge and fetching a Bearer token from its realm.
//! Tokens are secrets: never logged, marked sensitive in headers.

use std::time::{Duration, Instant};

use http::header::HeaderValue;

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

/// Asks the challenge's realm for a token for `scope`, with the configured
/// credentials if any (anonymous otherwise).
pub async fn fetch(
    client: &reqwest::Client,
    challenge: &Challenge,
    scope: &str,
    basic: Option<&HeaderValue>,
) -> Result<Token, String> {
    let realm = challenge
        .realm
        .as_deref()
        .ok_or("the challenge names no realm")?;
    let mut url = reqwest::Url::parse(realm).map_err(|e| format!("realm {realm:?}: {e}"))?;
    {
        let mut query = url.query_pairs_mut();
        if let Some(service) = &challenge.service {
            query.append_pair("service", service);
        }
        for scope in scope.split(' ').filter(|s| !s.is_empty()) {
            query.append_pair("scope", scope);
        }
    }
    let mut request = client.get(url);
    if let Some(basic) = basic {
        request = request.header(http::header::AUTHORIZATION, basic.clone());
    }
    let started = Instant::now();
    let response = request.send().await.map_err(|e| format!("{realm}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{realm} answered {}", response.status()));
    }
    let body = super::upstream::read_limited(response, 256 * 1024).await?;
    let parsed: TokenResponse = serde_json::from_slice(&body)
        .map_err(|e| format!("{realm} sent an unreadable token response: {e}"))?;
    let value = parsed
        .token
        .or(parsed.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("{realm} sent no token"))?;
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

    #[test]
    fn basic_challenges_are_not_bearer() {
        let c = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert!(!c.is_bearer());
    }
}
