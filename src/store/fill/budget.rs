//! What fills in progress may take: bytes in `tmp/` count against
//! `cache.max_size` while they are written, and a fill that would need more
//! than eviction can ever free is refused. Holds counters; does no I/O.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::FillError;

/// The limits every fill runs under (from `[cache]`); `None` is no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FillLimits {
    /// `cache.max_size`: bytes in flight plus what eviction cannot free must fit.
    pub max_size: Option<u64>,
    /// A fill must be complete this long after it started (`cache.fill_timeout`).
    pub timeout: Option<Duration>,
    /// Upstream must send at least `bytes_per_second × window` in every window
    /// (`cache.fill_min_rate`, `cache.fill_rate_window`).
    pub min_rate: Option<MinRate>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MinRate {
    pub bytes_per_second: u64,
    pub window: Duration,
}

impl MinRate {
    /// The least a window must bring.
    pub fn per_window(&self) -> u64 {
        (self.bytes_per_second as f64 * self.window.as_secs_f64()) as u64
    }
}

/// Bytes reserved by fills in progress, and what the last measurement of the
/// store found that eviction cannot free.
#[derive(Default)]
pub(crate) struct Budget {
    in_flight: AtomicU64,
    /// Bytes of hosted (pushed) content: never evicted, so never room for a fill.
    pinned: AtomicU64,
    /// Bytes stored, as last measured plus what fills have added since.
    stored: AtomicU64,
}

/// What `reserve` found beyond the bytes it granted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reserved {
    /// Stored plus in flight stays under the limit.
    Fits,
    /// Granted, but eviction must make room now.
    NeedsEviction,
}

impl Budget {
    /// Reserves `n` more bytes for a fill, or refuses them when the fills in
    /// flight and the content eviction cannot free would pass `max_size`.
    pub(crate) fn reserve(&self, n: u64, max_size: Option<u64>) -> Result<Reserved, FillError> {
        let in_flight = self.in_flight.fetch_add(n, Ordering::Relaxed) + n;
        let Some(max) = max_size else {
            return Ok(Reserved::Fits);
        };
        if in_flight.saturating_add(self.pinned.load(Ordering::Relaxed)) > max {
            self.release(n);
            return Err(FillError::NoRoom { max_size: max });
        }
        if in_flight.saturating_add(self.stored.load(Ordering::Relaxed)) > max {
            return Ok(Reserved::NeedsEviction);
        }
        Ok(Reserved::Fits)
    }

    pub(crate) fn release(&self, n: u64) {
        self.in_flight.fetch_sub(n, Ordering::Relaxed);
    }

    /// `n` reserved bytes were stored: no longer in flight, now in the store.
    pub(crate) fn settle(&self, n: u64) {
        self.stored.fetch_add(n, Ordering::Relaxed);
        self.release(n);
    }

    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// What a measurement of the store (or an eviction) found.
    pub(crate) fn measured(&self, stored: u64, pinned: u64) {
        self.stored.store(stored, Ordering::Relaxed);
        self.pinned.store(pinned, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_fit_beside_evictable_content_but_never_beside_pinned_content() {
        let budget = Budget::default();
        budget.measured(900, 300);
        assert_eq!(budget.reserve(50, Some(1000)), Ok(Reserved::Fits));
        assert_eq!(budget.reserve(100, Some(1000)), Ok(Reserved::NeedsEviction));
        assert_eq!(
            budget.reserve(600, Some(1000)),
            Err(FillError::NoRoom { max_size: 1000 }),
            "300 pinned + 150 in flight + 600 > 1000"
        );
        assert_eq!(
            budget.in_flight(),
            150,
            "a refused reservation holds nothing"
        );
        budget.settle(150);
        assert_eq!(budget.in_flight(), 0);
        assert_eq!(budget.reserve(700, Some(1000)), Ok(Reserved::NeedsEviction));
        assert_eq!(budget.reserve(u64::MAX / 2, None), Ok(Reserved::Fits));
    }
}
