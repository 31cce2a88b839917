//! Outbound HTTP: the one reqwest client builder every upstream uses (rustls,
//! timeouts, no redirects into private networks by surprise), and
//! `Singleflight`, which makes concurrent identical requests share one call.
//! Knows nothing of GOPROXY or OCI.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;

pub const USER_AGENT: &str = concat!("mirror/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{path}: {reason}")]
    Ca { path: String, reason: String },
    #[error("building the HTTP client: {0}")]
    Build(#[from] reqwest::Error),
}

/// A client for upstream servers. `extra_ca` adds a private CA to the system
/// roots (for a registry inside the company).
pub fn client(extra_ca: Option<&Path>) -> Result<reqwest::Client, ClientError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(Duration::from_secs(10))
        // Per read, not per request: a 10 GB layer may take long, a stalled one may not.
        .read_timeout(Duration::from_secs(60))
        .pool_idle_timeout(Duration::from_secs(90))
        .redirect(reqwest::redirect::Policy::limited(5));
    if let Some(path) = extra_ca {
        let pem = std::fs::read(path).map_err(|e| ClientError::Ca {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ClientError::Ca {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        builder = builder.tls_certs_merge(certs);
    }
    Ok(builder.build()?)
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
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
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
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
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
        let mut inflight = self
            .flights
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
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
