//! Background upkeep of a serving process: access times, eviction, sweeps.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Store, SweepOptions, SweepReport};

impl Store {
    /// Keeps the store under `max` bytes: checks after it grows (at most every
    /// few seconds) and once a minute, evicting down to `max * low_water`.
    pub fn spawn_eviction(&self, max: u64, low_water: f64, stop: CancellationToken) {
        let store = self.clone();
        let target = (max as f64 * low_water) as u64;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = store.inner.grew.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                }
                match store.totals().await {
                    Ok(totals) if totals.bytes > max => match store.evict_to(target, false).await {
                        Ok(report) => tracing::info!(
                            evicted = report.evicted,
                            freed = report.freed,
                            size = report.size_after,
                            "evicted least-recently-used content"
                        ),
                        Err(error) => tracing::error!(%error, "eviction failed"),
                    },
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "could not measure the store"),
                }
                // Coalesce bursts of fills into one check.
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
    }

    /// Periodic repair while serving: orphans older than an hour (a younger
    /// one may be a rename whose row is being written right now).
    pub fn spawn_sweeps(&self, every: Duration, stop: CancellationToken) {
        let store = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
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

    /// Background upkeep for a serving process: flushes access times.
    pub fn spawn_upkeep(&self, stop: CancellationToken) {
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
