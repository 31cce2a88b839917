//! What a connection's requests are doing, for its two deadlines: the first
//! request must come within `first_request_timeout` of the handshake, and a
//! connection with no request in progress for `idle_timeout` is closed.
//! hyper's HTTP/2 server has no idle timeout of its own (its keep-alive pings
//! keep a silent peer alive forever), and hyper-util's version detection waits
//! for the first bytes without any limit, so both are kept here.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::wire::Body;

pub struct Activity {
    /// The end of the TLS handshake; times below are milliseconds since it.
    epoch: Instant,
    started: AtomicBool,
    /// Wakes the watchdog at the first request: until then it sleeps until the
    /// first-request deadline, and from then on the idle deadline applies.
    first_request: Notify,
    in_flight: AtomicUsize,
    idle_since_ms: AtomicU64,
}

/// A request in progress; held by the response body, so a request counts
/// until its answer has been handed to the connection whole.
pub struct Busy(Arc<Activity>);

/// What the connection's watchdog should do now.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Close(&'static str),
    WakeAt(Instant),
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            epoch: Instant::now(),
            started: AtomicBool::new(false),
            first_request: Notify::new(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        })
    }

    pub fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        if !self.started.load(Ordering::Relaxed) && !self.started.swap(true, Ordering::AcqRel) {
            self.first_request.notify_one();
        }
        Busy(self.clone())
    }

    /// Resolves once the first request has begun (at once if it has).
    pub async fn first_request(&self) {
        if !self.started.load(Ordering::Acquire) {
            self.first_request.notified().await;
        }
    }

    /// Close, or check again at the returned instant. A request that starts
    /// just after a `Close` is not lost: the connection closes gracefully.
    pub fn verdict(&self, now: Instant, first_request: Duration, idle: Duration) -> Verdict {
        if !self.started.load(Ordering::Acquire) {
            let due = self.epoch + first_request;
            return if now >= due {
                Verdict::Close("no request within limits.first_request_timeout")
            } else {
                Verdict::WakeAt(due)
            };
        }
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Verdict::WakeAt(now + idle);
        }
        let due =
            self.epoch + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire)) + idle;
        if now >= due {
            Verdict::Close("no request in progress for limits.idle_timeout")
        } else {
            Verdict::WakeAt(due)
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            let since = self.0.epoch.elapsed().as_millis() as u64;
            self.0.idle_since_ms.store(since, Ordering::Release);
        }
    }
}

/// A response body that keeps its request counted as in progress until it is
/// dropped, and otherwise is its inner body (size hint included: hyper derives
/// Content-Length from it).
pub struct BusyBody {
    inner: Body,
    _busy: Busy,
}

impl BusyBody {
    pub fn new(inner: Body, busy: Busy) -> BusyBody {
        BusyBody { inner, _busy: busy }
    }
}

impl http_body::Body for BusyBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_connection_without_a_request_is_due_at_the_first_request_deadline() {
        let activity = Activity::new();
        let start = activity.epoch;
        assert_eq!(
            activity.verdict(start, SECOND, 60 * SECOND),
            Verdict::WakeAt(start + SECOND)
        );
        assert!(matches!(
            activity.verdict(start + SECOND, SECOND, 60 * SECOND),
            Verdict::Close(_)
        ));
    }

    #[test]
    fn a_request_in_progress_is_never_idle_and_idleness_counts_from_its_end() {
        let activity = Activity::new();
        let busy = activity.begin();
        let later = activity.epoch + 10 * SECOND;
        assert_eq!(
            activity.verdict(later, SECOND, SECOND),
            Verdict::WakeAt(later + SECOND)
        );
        drop(busy);
        let idle_since =
            activity.epoch + Duration::from_millis(activity.idle_since_ms.load(Ordering::Acquire));
        assert_eq!(
            activity.verdict(idle_since, SECOND, SECOND),
            Verdict::WakeAt(idle_since + SECOND)
        );
        assert!(matches!(
            activity.verdict(idle_since + SECOND, SECOND, SECOND),
            Verdict::Close(_)
        ));
    }
}
