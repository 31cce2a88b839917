//! Outbound HTTP: the one client builder every upstream uses (rustls,
//! timeouts, one client per configured upstream so each knows where it may
//! go), redirects followed by our own rules (`follow`: https only, never into
//! a network the upstream is not on, credentials never off their origin),
//! and `Singleflight`, which makes concurrent identical requests share one
//! call. Knows nothing of GOPROXY or OCI.

pub mod address;
mod follow;
mod trust;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use http::Method;
use http::header::{HeaderMap, HeaderValue};
use reqwest::Url;
use tokio::sync::OnceCell;

use crate::sync::Unpoisoned;
pub use follow::{SendError, display};
pub use trust::{Refusal, Trust, normalize as normalize_host};

pub const USER_AGENT: &str = concat!("mirror/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{path}: {reason}")]
    Ca { path: String, reason: String },
    #[error("building the HTTP client: {0}")]
    Build(#[from] reqwest::Error),
    #[error("an upstream URL does not parse: {0}")]
    Url(String),
}

/// `Basic base64(user:password)`, marked sensitive so it is never logged.
/// (Base64 is always a valid header value; `None` cannot happen in practice.)
pub fn basic_authorization(user: &str, password: &str) -> Option<HeaderValue> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// A client for one configured upstream: where it may connect (`Trust`) and
/// the reqwest client whose resolver enforces that.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    trust: Arc<Trust>,
}

impl Client {
    /// For the upstream at `url`; `exempt` hosts (its token realms) are
    /// reached whatever they resolve to. `extra_ca` adds a private CA to the
    /// system roots (for a registry inside the company).
    pub fn new(
        url: &str,
        exempt: &[String],
        extra_ca: Option<&Path>,
    ) -> Result<Client, ClientError> {
        let origin = parse(url)?;
        let trust = Arc::new(Trust::new(&origin, exempt));
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(Duration::from_secs(10))
            // Per read, not per request: a 10 GB layer may take long, a stalled one may not.
            .read_timeout(Duration::from_secs(60))
            .pool_idle_timeout(Duration::from_secs(90))
            // `follow` does it, by rules reqwest's follower cannot express.
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .dns_resolver(Arc::new(trust::Screened(trust.clone())));
        if let Some(path) = extra_ca {
            builder = builder.tls_certs_merge(read_ca(path)?);
        }
        Ok(Client {
            http: builder.build()?,
            trust,
        })
    }

    /// Sends a bodiless request, following redirects by `follow`'s rules;
    /// `credential` (or the URL's own user:password) goes only to `url`'s origin.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        credential: Option<HeaderValue>,
    ) -> Result<reqwest::Response, SendError> {
        let url =
            Url::parse(url).map_err(|e| SendError::Refused(Refusal(format!("not a URL ({e})"))))?;
        follow::send(&self.http, &self.trust, method, url, headers, credential).await
    }

    pub fn trust(&self) -> &Trust {
        &self.trust
    }
}

/// Parses a configured URL; the error never repeats it (it may hold a password).
fn parse(url: &str) -> Result<Url, ClientError> {
    Url::parse(url).map_err(|e| ClientError::Url(e.to_string()))
}

fn read_ca(path: &Path) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let pem = std::fs::read(path).map_err(|e| ClientError::Ca {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ClientError::Ca {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// One `Client` per origin of a list of upstreams (a GOPROXY list and the
/// checksum databases), so each upstream's redirects are judged by its own network.
#[derive(Clone)]
pub struct Clients {
    by_origin: Vec<(Url, Client)>,
}

impl Clients {
    pub fn new<'a>(
        urls: impl IntoIterator<Item = &'a str>,
        extra_ca: Option<&Path>,
    ) -> Result<Clients, ClientError> {
        let mut by_origin: Vec<(Url, Client)> = Vec::new();
        for url in urls {
            let parsed = parse(url)?;
            if !by_origin.iter().any(|(o, _)| o.origin() == parsed.origin()) {
                by_origin.push((parsed, Client::new(url, &[], extra_ca)?));
            }
        }
        Ok(Clients { by_origin })
    }

    /// GETs `url` with the client of its upstream.
    pub async fn get(&self, url: &str) -> Result<reqwest::Response, SendError> {
        let origin = Url::parse(url).map(|u| u.origin());
        let client = self
            .by_origin
            .iter()
            .find(|(o, _)| origin.as_ref().is_ok_and(|origin| *origin == o.origin()))
            .map(|(_, client)| client)
            .ok_or_else(|| {
                SendError::Refused(Refusal(
                    "the URL is not one of a configured upstream".into(),
                ))
            })?;
        client.send(Method::GET, url, HeaderMap::new(), None).await
    }
}

/// An upstream URL for messages and logs: the password of
/// `https://user:pass@host` masked.
pub fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("xxxxx"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Concurrent calls with the same key share the first caller's result.
/// If that caller is cancelled, the next waiter runs its own future instead,
/// so a client hanging up never strands the others.
pub struct Singleflight<V> {
    inflight: Mutex<HashMap<String, Arc<OnceCell<V>>>>,
}

impl<V> Default for Singleflight<V> {
    fn default() -> Self {
        Singleflight {
            inflight: Mutex::new(HashMap::new()),
        }
    }
}

impl<V: Clone> Singleflight<V> {
    pub async fn run<F>(&self, key: &str, call: F) -> V
    where
        F: Future<Output = V>,
    {
        let cell = {
            let mut inflight = self.inflight.lock().unpoisoned();
            inflight
                .entry(key.to_owned())
                .or_insert_with(|| Arc::new(OnceCell::new()))
                .clone()
        };
        let flight = Flight {
            flights: self,
            key,
            cell,
        };
        flight.cell.get_or_init(|| call).await.clone()
    }

    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.inflight.lock().unpoisoned().len()
    }
}

/// One caller's part in a flight. Dropped when the caller finishes or is
/// cancelled (a client hanging up): the entry goes once the value is in, or
/// when nobody else is waiting on it, so unique keys cannot pile up.
struct Flight<'a, V> {
    flights: &'a Singleflight<V>,
    key: &'a str,
    cell: Arc<OnceCell<V>>,
}

impl<V> Drop for Flight<'_, V> {
    fn drop(&mut self) {
        let mut inflight = self.flights.inflight.lock().unpoisoned();
        // Joiners clone the cell under this lock, so the count is exact here:
        // 2 is the map and this caller.
        let finished_or_alone = self.cell.initialized() || Arc::strong_count(&self.cell) == 2;
        if finished_or_alone
            && inflight
                .get(self.key)
                .is_some_and(|current| Arc::ptr_eq(current, &self.cell))
        {
            inflight.remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_calls_with_one_key_run_once() {
        let flights = Arc::new(Singleflight::<usize>::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let flights = flights.clone();
            let calls = calls.clone();
            tasks.push(tokio::spawn(async move {
                flights
                    .run("k", async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        7
                    })
                    .await
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), 7);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_lone_caller_leaves_nothing_behind() {
        let flights = Arc::new(Singleflight::<usize>::default());
        let task = {
            let flights = flights.clone();
            tokio::spawn(async move { flights.run("k", std::future::pending()).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(flights.in_flight(), 1);
        task.abort();
        let _ = task.await;
        assert_eq!(flights.in_flight(), 0);
        // And the key works again afterwards.
        assert_eq!(flights.run("k", async { 3 }).await, 3);
    }
}
