//! Which process runs upkeep (eviction, sweeps, audit retention) when several
//! share one index: the one the index grants leadership (`UpkeepIndex::try_lead`,
//! a PostgreSQL advisory lock). The others keep trying; when the leader's
//! session dies, one of them takes over. On SQLite the process always leads.
//! This module only decides who leads; the timers in `upkeep` and `audit` ask
//! it before each pass.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Store;
use super::index::{LeaderGuard, UpkeepIndex};

/// This process's leadership.
pub(crate) struct Leader {
    /// As last checked, for `/metrics`; the timers check the guard itself.
    leads: AtomicBool,
    /// Held while this process leads. An async mutex: checking it is a query.
    guard: tokio::sync::Mutex<Option<LeaderGuard>>,
    /// Cancelled when the store closes: a closed store never leads again.
    closed: CancellationToken,
}

impl Leader {
    /// A process alone on its index leads from the start.
    pub(crate) fn new(shared: bool) -> Leader {
        Leader {
            leads: AtomicBool::new(!shared),
            guard: tokio::sync::Mutex::new(None),
            closed: CancellationToken::new(),
        }
    }
}

impl Store {
    /// Whether this process leads upkeep, as last checked.
    pub fn is_upkeep_leader(&self) -> bool {
        self.inner.leader.leads.load(Ordering::Relaxed)
    }

    /// On a shared index, tries for leadership every `every` while another
    /// process holds it, and checks its own as often while it leads, until
    /// `stop` or the store closes. On SQLite there is nothing to win.
    pub fn spawn_leadership(&self, every: Duration, stop: CancellationToken) {
        if !self.inner.index.is_shared() {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            let closed = store.inner.leader.closed.clone();
            loop {
                store.campaign().await;
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = closed.cancelled() => break,
                    _ = tokio::time::sleep(every) => {}
                }
            }
            store.resign().await;
        });
    }

    /// Whether this process may run an upkeep pass now. On a shared index the
    /// session is asked, so a leader whose session died stops at once rather
    /// than at the next campaign.
    pub(crate) async fn leads_upkeep(&self) -> bool {
        if !self.inner.index.is_shared() {
            return true;
        }
        let mut guard = self.inner.leader.guard.lock().await;
        self.still_leads(&mut guard).await
    }

    /// Takes leadership if it is free, else checks that it still holds.
    async fn campaign(&self) {
        let mut guard = self.inner.leader.guard.lock().await;
        if guard.is_some() {
            self.still_leads(&mut guard).await;
            return;
        }
        if self.inner.leader.closed.is_cancelled() {
            return;
        }
        match self.inner.index.try_lead().await {
            Ok(Some(won)) => {
                *guard = Some(won);
                self.inner.leader.leads.store(true, Ordering::Relaxed);
                tracing::info!("this process leads upkeep (eviction, sweeps, audit retention)");
                // Whatever the last leader left over-full is ours to evict now.
                self.inner.grew.notify_one();
            }
            Ok(None) => {}
            // Retried at the next campaign; the outage shows in every request's errors.
            Err(error) => tracing::debug!(%error, "could not try for upkeep leadership"),
        }
    }

    async fn still_leads(&self, guard: &mut Option<LeaderGuard>) -> bool {
        let Some(held) = guard.as_mut() else {
            return false;
        };
        if held.holds().await {
            return true;
        }
        *guard = None;
        self.inner.leader.leads.store(false, Ordering::Relaxed);
        tracing::warn!(
            "lost upkeep leadership: its database session ended; another process may take it"
        );
        false
    }

    /// Hands leadership back (the store is closing); it is never taken again.
    /// The campaign task resigns too when it sees the store close: the guard
    /// stays locked until the session is released, so whichever call comes
    /// second returns only once leadership is gone.
    pub(crate) async fn resign(&self) {
        self.inner.leader.closed.cancel();
        let mut guard = self.inner.leader.guard.lock().await;
        if let Some(held) = guard.take() {
            self.inner.leader.leads.store(false, Ordering::Relaxed);
            held.release().await;
            tracing::info!("handed back upkeep leadership");
        }
    }
}
