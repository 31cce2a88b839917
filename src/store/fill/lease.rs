//! A fill's cluster-wide lease while this replica holds it: renewed in the
//! background well before it expires, released when the fill ends. A renewal
//! that finds a newer epoch marks the lease fenced: another replica took the
//! fill over, and this one must not commit as if it were the owner.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::Store;
use crate::store::index::LeaseIndex;

/// How long a lease lasts unless renewed: how long the cluster waits for a
/// replica that died mid-fill before another takes over.
pub(crate) const TTL: Duration = Duration::from_secs(10);

/// Renewed this often, so two missed renewals still leave it held.
const RENEW_EVERY: Duration = Duration::from_secs(3);

pub(crate) struct Held {
    key: String,
    epoch: i64,
    store: Store,
    fenced: Arc<AtomicBool>,
    stop: CancellationToken,
}

impl Held {
    pub(crate) fn start(store: &Store, key: &str, epoch: i64) -> Held {
        let held = Held {
            key: key.to_owned(),
            epoch,
            store: store.clone(),
            fenced: Arc::new(AtomicBool::new(false)),
            stop: CancellationToken::new(),
        };
        tokio::spawn(renew(
            store.clone(),
            held.key.clone(),
            epoch,
            held.fenced.clone(),
            held.stop.clone(),
        ));
        held
    }

    pub(crate) fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }

    /// Gives the lease up before returning: for a holder whose client may
    /// claim it again with its very next request, which a release left to
    /// `Drop` (a spawned task) could still find held.
    pub(crate) async fn release(mut self) {
        self.stop.cancel();
        // An empty key tells `Drop` there is nothing left to release.
        let key = std::mem::take(&mut self.key);
        if !self.is_fenced() {
            release(&self.store, &key, self.epoch).await;
        }
    }
}

async fn release(store: &Store, key: &str, epoch: i64) {
    if let Err(error) = store.inner.index.release_fill(key, epoch).await {
        // It expires by itself within the TTL.
        tracing::warn!(%error, "could not release a fill lease");
    }
}

async fn renew(
    store: Store,
    key: String,
    epoch: i64,
    fenced: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RENEW_EVERY) => {}
        }
        match store.inner.index.renew_fill(&key, epoch, TTL).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(key = %key.escape_debug(), epoch, "fill lease taken over by another replica");
                fenced.store(true, Ordering::Release);
                return;
            }
            // The database is away: keep trying; if it stays away past the
            // TTL another replica may take over, and the renewal then says so.
            Err(error) => tracing::warn!(%error, "could not renew a fill lease"),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.stop.cancel();
        if self.is_fenced() || self.key.is_empty() {
            return;
        }
        let (store, key, epoch) = (
            self.store.clone(),
            std::mem::take(&mut self.key),
            self.epoch,
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { release(&store, &key, epoch).await });
        }
    }
}
