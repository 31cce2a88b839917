//! The index's deletion generation: a counter in the index that every path
//! deleting blob rows (eviction, sweeps, `verify --repair`, quarantine) bumps
//! in the deleting transaction. In-memory copies of index rows (the OCI
//! metadata cache, the Go memos) compare it on every lookup, one atomic load,
//! and drop what they hold when it moved. A serving process learns its own
//! deletions at once and another process's (`mirror cache gc` beside it)
//! within a second, by reading the row; on a shared index another replica's
//! at once too, from the notice its deletion sends (`changes`), the poll
//! staying as the backstop. A write that still goes through a stale copy
//! fails on a foreign key and is retried from the index.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::index::BlobIndex;
use super::{Store, StoreError};

/// How often a serving process reads the generation another process may have bumped.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// The deletion generation as this process knows it. Cheap to clone and to read.
#[derive(Clone, Debug, Default)]
pub struct Generation(Arc<AtomicU64>);

impl Generation {
    pub fn current(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    pub(super) fn advance_to(&self, value: i64) {
        self.0.fetch_max(value.max(0) as u64, Ordering::AcqRel);
    }
}

/// Which blob rows a delete may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BlobRows {
    /// Cached content only: pushed content is never evicted.
    Cached,
    /// Any: a row whose file is gone or bad is broken either way.
    Any,
}

impl Store {
    /// The generation every in-memory copy of index rows is checked against.
    pub fn generation(&self) -> Generation {
        self.inner.generation.clone()
    }

    /// Deletes a blob's row (and, by cascade, every row that refers to it)
    /// and bumps the generation in the same transaction. `false` if no row
    /// was deleted.
    pub(crate) async fn delete_blob_row(
        &self,
        digest: &str,
        rows: BlobRows,
    ) -> Result<bool, StoreError> {
        let Some(generation) = self.inner.index.delete_blob(digest, rows).await? else {
            return Ok(false);
        };
        // Only once committed: a copy refilled from the index before then
        // would hold the old row under the new generation.
        self.inner.generation.advance_to(generation);
        Ok(true)
    }

    /// Reads the generation another process may have bumped.
    pub async fn refresh_generation(&self) -> Result<(), StoreError> {
        let value = self.inner.index.generation().await?;
        self.inner.generation.advance_to(value);
        Ok(())
    }

    /// Follows the generation for a serving process.
    pub(crate) fn spawn_generation_watch(&self, stop: CancellationToken) {
        // On a shared index, notices carry the generation at once; the poll stays as the backstop.
        self.spawn_change_listener(stop.clone());
        let store = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(WATCH_EVERY);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                if let Err(error) = store.refresh_generation().await {
                    tracing::warn!(%error, "could not read the index generation");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_delete_in_another_process_moves_the_generation_here() {
        let dir = tempfile::tempdir().unwrap();
        let server = Store::open(dir.path()).await.unwrap();
        let gc = Store::open(dir.path()).await.unwrap();
        let digest = server.put_bytes(b"cached", false).await.unwrap();
        let seen = server.generation();
        let before = seen.current();
        assert!(
            !gc.delete_blob_row("sha256:absent", BlobRows::Any)
                .await
                .unwrap()
        );
        assert!(
            gc.delete_blob_row(digest.as_str(), BlobRows::Cached)
                .await
                .unwrap()
        );
        assert_eq!(
            seen.current(),
            before,
            "not seen before the server reads it"
        );
        server.refresh_generation().await.unwrap();
        assert_eq!(seen.current(), before + 1);
        let hosted = server.put_bytes(b"pushed", true).await.unwrap();
        assert!(
            !server
                .delete_blob_row(hosted.as_str(), BlobRows::Cached)
                .await
                .unwrap()
        );
        assert!(
            server
                .delete_blob_row(hosted.as_str(), BlobRows::Any)
                .await
                .unwrap()
        );
        assert_eq!(seen.current(), before + 2, "its own deletes at once");
    }
}
