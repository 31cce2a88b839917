//! One configured upstream registry: its URL, credentials and tag TTL, and the
//! requests the mirror sends it, authenticated the way it asks (anonymous,
//! Basic, or the Bearer token challenge with tokens cached until expiry; a
//! realm gets asked only as `token::check_realm` allows, and a refused one is
//! logged once). Never sees the client's own `Authorization`; never logs a secret.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::{HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use http::{Method, StatusCode};
use reqwest::Url;

use super::route::RepoName;
use super::token::{Challenge, FetchError, Token, parse_challenge};
use crate::config::{Secret, UpstreamRegistry};
use crate::metrics::{Metrics, UpstreamResult};
use crate::sync::Unpoisoned;
use crate::upstream::{Client, ClientError, Refusal, SendError, Singleflight, display};
use crate::wire::Protocol;

/// Why an upstream request did not produce a usable answer.
#[derive(Clone, Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream {upstream} unreachable: {reason}")]
    Unreachable { upstream: String, reason: String },
    #[error("upstream {upstream} answered {status}: {message}")]
    Status {
        upstream: String,
        status: StatusCode,
        /// The upstream's own OCI error code, when it sent one.
        code: Option<String>,
        message: String,
        retry_after: Option<HeaderValue>,
    },
    #[error("upstream {upstream}: token service: {reason}")]
    Token { upstream: String, reason: String },
    /// The upstream sent the mirror somewhere it does not go (a redirect, an address).
    #[error("upstream {upstream}: {reason}")]
    Refused { upstream: String, reason: String },
    /// The upstream's challenge names a realm the mirror does not ask; logged
    /// once per upstream and realm where it is found.
    #[error("upstream {upstream}: {reason}")]
    Realm { upstream: String, reason: String },
}

impl UpstreamError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            UpstreamError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(StatusCode::NOT_FOUND)
    }
}

/// Distinct refused realms logged per upstream.
const MAX_LOGGED_REALMS: usize = 32;

/// The authentication scheme an upstream asked for, learned from its first 401.
#[derive(Clone, Debug)]
enum Scheme {
    Unknown,
    Basic,
    Bearer(Challenge),
}

pub struct Upstream {
    pub name: String,
    pub default: bool,
    /// Single-component names get `library/` here (Docker Hub's rule).
    pub library_prefix: bool,
    pub tag_ttl: Duration,
    base: String,
    /// `name (scheme://host:port)` when the name is not the URL's host: an
    /// unreachable upstream is reported by where the mirror tried to connect.
    label: String,
    /// `Authorization: Basic …` for the configured credentials (sensitive).
    basic: Option<HeaderValue>,
    /// Hosts besides the upstream's own that its credentials may go to.
    token_realms: Vec<String>,
    client: Client,
    /// Realms already refused and logged (shown without their query).
    refused_realms: Mutex<HashSet<String>>,
    scheme: Mutex<Scheme>,
    /// Bearer tokens by scope (`repository:library/alpine:pull`).
    tokens: Mutex<HashMap<String, Token>>,
    token_fetches: Singleflight<Result<Token, UpstreamError>>,
    metrics: Arc<Metrics>,
}

fn basic_authorization(user: &str, password: Option<&Secret>) -> Option<HeaderValue> {
    crate::upstream::basic_authorization(user, password.map_or("", Secret::expose))
}

impl Upstream {
    pub fn new(config: &UpstreamRegistry, metrics: Arc<Metrics>) -> Result<Upstream, ClientError> {
        let token_realms = config.token_realms();
        let base = config.url.trim_end_matches('/').to_owned();
        // The origin only: no credentials or path reach a client's error message.
        let url = reqwest::Url::parse(&base).ok();
        let label = match url.as_ref().and_then(|url| url.host_str()) {
            Some(host) if host == config.name => config.name.clone(),
            _ => match &url {
                Some(url) => format!("{} ({})", config.name, url.origin().ascii_serialization()),
                None => config.name.clone(),
            },
        };
        Ok(Upstream {
            name: config.name.clone(),
            default: config.default,
            library_prefix: config.adds_library(),
            tag_ttl: config.tag_ttl,
            base,
            label,
            basic: config
                .username
                .as_deref()
                .and_then(|user| basic_authorization(user, config.password.as_ref())),
            client: Client::new(&config.url, &token_realms, config.ca.as_deref())?,
            token_realms,
            refused_realms: Mutex::new(HashSet::new()),
            scheme: Mutex::new(Scheme::Unknown),
            tokens: Mutex::new(HashMap::new()),
            token_fetches: Singleflight::default(),
            metrics,
        })
    }

    fn unreachable(&self, error: SendError) -> UpstreamError {
        match error {
            SendError::Refused(Refusal(reason)) => UpstreamError::Refused {
                upstream: self.name.clone(),
                reason,
            },
            transport => UpstreamError::Unreachable {
                upstream: self.label.clone(),
                reason: transport.to_string(),
            },
        }
    }

    /// The name, and the URL where it differs from it, for messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Sends `method /v2/<remote>/<suffix>` with `headers`, authenticating as
    /// the upstream demands. Returns any HTTP answer (the caller reads the
    /// status); only transport and token failures are errors.
    pub async fn send(
        &self,
        method: Method,
        remote: &RepoName,
        suffix: &str,
        headers: HeaderMap,
    ) -> Result<reqwest::Response, UpstreamError> {
        let started = Instant::now();
        // Boxed: every caller's future (hits included) would carry it otherwise.
        let answer = Box::pin(self.send_authenticated(method, remote, suffix, headers)).await;
        let result = match &answer {
            Ok(response) if response.status() == StatusCode::NOT_FOUND => UpstreamResult::NotFound,
            Ok(response) if response.status().is_success() => UpstreamResult::Ok,
            _ => UpstreamResult::Error,
        };
        self.metrics
            .upstream(Protocol::Oci, &self.name, result, started.elapsed());
        answer
    }

    async fn send_authenticated(
        &self,
        method: Method,
        remote: &RepoName,
        suffix: &str,
        headers: HeaderMap,
    ) -> Result<reqwest::Response, UpstreamError> {
        let url = format!("{}/v2/{remote}/{suffix}", self.base);
        let scope = format!("repository:{remote}:pull");
        let mut authorization = self.preemptive_authorization(&scope).await?;
        let mut retried = false;
        loop {
            let response = self
                .client
                .send(method.clone(), &url, headers.clone(), authorization.clone())
                .await
                .map_err(|e| self.unreachable(e))?;
            if response.status() != StatusCode::UNAUTHORIZED || retried {
                return Ok(response);
            }
            retried = true;
            let challenge = response
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(parse_challenge);
            authorization = match challenge {
                Some(Some(challenge)) if challenge.is_bearer() => {
                    let scope = challenge.scope.clone().unwrap_or_else(|| scope.clone());
                    self.forget_token(&scope);
                    let value = self.bearer(&challenge, &scope).await?;
                    // Only a realm that gave a token is asked up front next
                    // time, so a refused one is seen afresh on the next 401.
                    self.set_scheme(Scheme::Bearer(challenge));
                    Some(value)
                }
                Some(Some(_basic)) if self.basic.is_some() && authorization.is_none() => {
                    self.set_scheme(Scheme::Basic);
                    self.basic.clone()
                }
                _ => return Ok(response),
            };
        }
    }

    fn set_scheme(&self, scheme: Scheme) {
        *self.scheme.lock().unpoisoned() = scheme;
    }

    /// What to send on the first try, from what the upstream asked last time,
    /// so a warm upstream costs one round trip per request.
    async fn preemptive_authorization(
        &self,
        scope: &str,
    ) -> Result<Option<HeaderValue>, UpstreamError> {
        let scheme = self.scheme.lock().unpoisoned().clone();
        match scheme {
            Scheme::Unknown => Ok(None),
            Scheme::Basic => Ok(self.basic.clone()),
            Scheme::Bearer(challenge) => Ok(Some(self.bearer(&challenge, scope).await?)),
        }
    }

    fn forget_token(&self, scope: &str) {
        self.tokens.lock().unpoisoned().remove(scope);
    }

    async fn bearer(
        &self,
        challenge: &Challenge,
        scope: &str,
    ) -> Result<HeaderValue, UpstreamError> {
        self.token(challenge, scope)
            .await?
            .header()
            .ok_or_else(|| UpstreamError::Token {
                upstream: self.name.clone(),
                reason: "the token service returned a token that is not a valid header value"
                    .into(),
            })
    }

    /// A valid token for `scope`: cached, or fetched once however many
    /// requests want it at the same moment.
    async fn token(&self, challenge: &Challenge, scope: &str) -> Result<Token, UpstreamError> {
        if let Some(token) = self.tokens.lock().unpoisoned().get(scope)
            && token.expires > Instant::now()
        {
            return Ok(token.clone());
        }
        let realm = self.allowed_realm(challenge)?;
        let token = self
            .token_fetches
            .run(scope, async {
                let token = super::token::fetch(
                    &self.client,
                    realm.clone(),
                    challenge,
                    scope,
                    self.basic.as_ref(),
                )
                .await
                .map_err(|e| match e {
                    FetchError::Refused(Refusal(reason)) => UpstreamError::Refused {
                        upstream: self.name.clone(),
                        reason,
                    },
                    FetchError::Failed(reason) => UpstreamError::Token {
                        upstream: self.name.clone(),
                        reason,
                    },
                })?;
                self.tokens
                    .lock()
                    .unpoisoned()
                    .insert(scope.to_owned(), token.clone());
                Ok(token)
            })
            .await?;
        Ok(token)
    }

    /// The challenge's realm if `check_realm` lets it be asked; a refusal is
    /// logged the first time this upstream names that realm.
    fn allowed_realm(&self, challenge: &Challenge) -> Result<Url, UpstreamError> {
        let text = challenge.realm.as_deref().unwrap_or_default();
        let (shown, checked) = match Url::parse(text) {
            Ok(realm) => (
                display(&realm),
                super::token::check_realm(
                    &realm,
                    self.client.trust(),
                    &self.token_realms,
                    self.basic.is_some(),
                )
                .map(|()| realm),
            ),
            Err(e) => (
                "<not a URL>".to_owned(),
                Err(Refusal(format!("a token realm that is not a URL ({e})"))),
            ),
        };
        let reason = match checked {
            Ok(realm) => return Ok(realm),
            Err(Refusal(reason)) => reason,
        };
        let mut logged = self.refused_realms.lock().unpoisoned();
        // Bounded: an upstream naming a new realm on every answer gets a few
        // lines, not one per request and not unbounded memory.
        if logged.len() < MAX_LOGGED_REALMS && logged.insert(shown) {
            tracing::warn!(upstream = %self.name, %reason, "refusing the upstream's token realm");
            if logged.len() == MAX_LOGGED_REALMS {
                tracing::warn!(upstream = %self.name, "this upstream's further refused token realms are not logged");
            }
        }
        Err(UpstreamError::Realm {
            upstream: self.name.clone(),
            reason,
        })
    }

    /// Reads an error answer into an `UpstreamError` (body bounded).
    pub async fn error_from(&self, response: reqwest::Response) -> UpstreamError {
        let status = response.status();
        let retry_after = response.headers().get(http::header::RETRY_AFTER).cloned();
        let body = read_limited(response, 64 * 1024).await.unwrap_or_default();
        let (code, message) = parse_error_body(&body);
        UpstreamError::Status {
            upstream: self.name.clone(),
            status,
            code,
            message: message
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned()),
            retry_after,
        }
    }
}

/// The first error of an OCI error body: its code and message, escaped: an
/// upstream may lie, and its message is logged and passed on to clients.
fn parse_error_body(body: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (None, None);
    };
    let first = &json["errors"][0];
    let text = |v: &serde_json::Value| v.as_str().map(|s| crate::escape::escape(s).into_owned());
    (text(&first["code"]), text(&first["message"]))
}

/// Why an upstream's body was not read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Read(#[from] reqwest::Error),
}

/// Reads a whole response body, refusing more than `limit` bytes.
pub async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(BodyError::TooLarge(limit));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The Content-Length upstream announced (reqwest's own answer is 0 for a HEAD).
pub fn announced_length(response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstream_error_message_cannot_break_a_log_line() {
        let body = br#"{"errors":[{"code":"UNKNOWN","message":"boom\n2026-01-01 INFO forged\u001b[31m"}]}"#;
        let (code, message) = parse_error_body(body);
        assert_eq!(code.as_deref(), Some("UNKNOWN"));
        assert_eq!(
            message.as_deref(),
            Some("boom\\n2026-01-01 INFO forged\\u{1b}[31m")
        );
    }

    fn label(name: &str, url: &str) -> String {
        let config = UpstreamRegistry {
            name: name.to_owned(),
            url: url.to_owned(),
            ..crate::Config::default().registry.upstream[0].clone()
        };
        Upstream::new(&config, Arc::new(Metrics::new()))
            .unwrap()
            .label()
            .to_owned()
    }

    #[test]
    fn an_upstream_is_named_by_where_it_is_reached_and_never_by_its_credentials() {
        assert_eq!(
            label("docker.io", "https://registry-1.docker.io"),
            "docker.io (https://registry-1.docker.io)"
        );
        assert_eq!(label("ghcr.io", "https://ghcr.io/"), "ghcr.io");
        assert_eq!(
            label(
                "corp",
                "https://bot:hunter2@registry.corp.example:5001/mirror"
            ),
            "corp (https://registry.corp.example:5001)"
        );
    }
}
