//! Background upkeep of a serving process: access times, eviction, sweeps,
//! and following the index generation.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Store, SweepOptions, SweepReport};

impl Store {
    /// Keeps the store under `max` bytes, fills in flight included: checks at
    /// once, after it grows or a fill needs room (at most every few seconds),
    /// and once a minute, evicting down to `max * low_water`.
    pub fn spawn_eviction(&self, max: u64, low_water: f64, stop: CancellationToken) {
        let store = self.clone();
        let target = (max as f64 * low_water) as u64;
        tokio::spawn(async move {
            loop {
                store.keep_under(max, target).await;
                // Coalesce bursts of fills into one check.
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = store.inner.grew.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                }
            }
        });
    }

    /// One eviction check. Bytes in flight are content the store is about to
    /// hold, so they count; what is measured tells fills what eviction can
    /// never free (hosted content).
    pub(crate) async fn keep_under(&self, max: u64, target: u64) {
        let totals = match self.totals().await {
            Ok(totals) => totals,
            Err(error) => return tracing::warn!(%error, "could not measure the store"),
        };
        let budget = &self.inner.fills.budget;
        budget.measured(totals.bytes, totals.hosted_bytes);
        let in_flight = budget.in_flight();
        if totals.bytes.saturating_add(in_flight) <= max {
            return;
        }
        // Measured on every replica (fills need the budget), evicted by one.
        if !self.leads_upkeep().await {
            return;
        }
        match self.evict_to(target.saturating_sub(in_flight), false).await {
            Ok(report) => {
                budget.measured(report.size_after, totals.hosted_bytes);
                tracing::info!(
                    evicted = report.evicted,
                    freed = report.freed,
                    size = report.size_after,
                    in_flight,
                    "evicted least-recently-used content"
                )
            }
            Err(error) => tracing::error!(%error, "eviction failed"),
        }
    }

    /// Periodic repair while serving: orphans older than an hour (a younger
    /// one may be a rename whose row is being written right now), by the
    /// upkeep leader only.
    pub fn spawn_sweeps(&self, every: Duration, stop: CancellationToken) {
        let store = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                if !store.leads_upkeep().await {
                    continue;
                }
                match store.sweep(SweepOptions::shared()).await {
                    Ok(report) if report != SweepReport::default() => {
                        tracing::info!(?report, "swept orphaned files and rows")
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "sweep failed"),
                }
            }
        });
    }

    /// Background upkeep for a serving process: flushes access times and
    /// follows the index generation other processes may bump.
    pub fn spawn_upkeep(&self, stop: CancellationToken) {
        self.spawn_generation_watch(stop.clone());
        let store = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(10));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = ticker.tick() => {}
                }
                if let Err(error) = store.flush_access().await {
                    tracing::warn!(%error, "could not record access times");
                }
            }
            let _ = store.flush_access().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{FillHead, FillLimits, Slot};

    #[tokio::test]
    async fn eviction_makes_room_for_the_bytes_fills_have_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        for i in 0..6u8 {
            store.put_bytes(&[i; 1000], false).await.unwrap();
        }
        store.put_bytes(&[9; 500], true).await.unwrap();
        store.set_fill_limits(FillLimits {
            max_size: Some(7500),
            ..FillLimits::default()
        });
        let Slot::Producer(mut producer) = store.fill("k").unwrap() else {
            panic!("no fill is running")
        };
        producer
            .start(FillHead {
                total: Some(2500),
                media_type: None,
            })
            .unwrap();
        // 6500 stored + 2500 in flight > 7500: down to 6500 - 2500, hosted kept.
        store.keep_under(7500, 6500).await;
        let totals = store.totals().await.unwrap();
        assert_eq!((totals.bytes, totals.blobs), (3500, 4));
        // What eviction cannot free (500 hosted) now bounds the next fill.
        let Slot::Producer(mut big) = store.fill("big").unwrap() else {
            panic!("no fill is running")
        };
        let refused = big.start(FillHead {
            total: Some(4501),
            media_type: None,
        });
        assert!(refused.is_err(), "500 pinned + 2500 + 4501 > 7500");
        drop(producer);
        assert_eq!(store.fill_bytes_in_flight(), 0);
    }
}
