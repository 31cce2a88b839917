//! `/readyz`: whether this instance can serve now, for a load balancer or an
//! orchestrator. Ready means the index answers a query, `data_dir` takes a new
//! file (both asked of the store) and the listener's accept loop takes
//! connections (told by the server through `set_accepting`, so `http` never
//! reaches up into `server`). `/healthz` stays plain liveness.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::header::{CACHE_CONTROL, HeaderValue};
use http::{Response, StatusCode};

use super::{Body, plain};
use crate::store::{NotReady, Store};

/// How long a store verdict is reused. The endpoint is anonymous: a flood of
/// probes costs one index query and one probe file per second, not per request.
const VERDICT_TTL: Duration = Duration::from_secs(1);

struct Verdict {
    at: Instant,
    problems: Vec<NotReady>,
}

/// The readiness state the server and the dispatcher share.
pub struct Readiness {
    accepting: AtomicBool,
    /// The last store verdict. A tokio mutex, held across the check, so that
    /// concurrent probes share one check instead of each running their own.
    last: tokio::sync::Mutex<Option<Verdict>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            accepting: AtomicBool::new(false),
            last: tokio::sync::Mutex::new(None),
        }
    }
}

impl Readiness {
    /// Called by the listener: whether its accept loop takes connections
    /// (false before it starts, while `accept` fails, and once it stops).
    pub fn set_accepting(&self, accepting: bool) {
        self.accepting.store(accepting, Ordering::Relaxed);
    }

    pub(super) async fn answer(&self, store: &Store) -> Response<Body> {
        let mut problems = Vec::new();
        if !self.accepting.load(Ordering::Relaxed) {
            problems.push("the listener is not accepting connections".to_owned());
        }
        problems.extend(self.store_problems(store).await);
        let mut response = if problems.is_empty() {
            plain(StatusCode::OK, "ready\n")
        } else {
            plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {}\n", problems.join("; ")),
            )
        };
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    /// The store's problems, checked at most once per `VERDICT_TTL`; a change
    /// of verdict is logged once.
    async fn store_problems(&self, store: &Store) -> Vec<String> {
        let mut last = self.last.lock().await;
        let fresh = last.as_ref().is_some_and(|v| v.at.elapsed() < VERDICT_TTL);
        if !fresh {
            let problems = store.readiness().await;
            let was_ready = last.as_ref().is_none_or(|v| v.problems.is_empty());
            match (was_ready, problems.is_empty()) {
                (true, false) => tracing::warn!(problems = ?problems, "not ready"),
                (false, true) => tracing::info!("ready again"),
                _ => {}
            }
            *last = Some(Verdict {
                at: Instant::now(),
                problems,
            });
        }
        last.as_ref()
            .map(|v| v.problems.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    }
}
