//! Taking a stored blob whose bytes no longer match its digest out of
//! service: its row goes (and with it every row that refers to it, so it is a
//! miss from now on), the blob store puts the object aside for the operator
//! to inspect (locally `quarantine/<alg>/<hex>`), and it is logged at error
//! level and counted. The
//! quarantine is also the record that lets pushed content, which cannot be
//! fetched again, answer with the reason instead of "unknown".

use super::blob_store::{BlobStore, Quarantined};
use super::generation::BlobRows;
use super::{BlobObjectOf, Digest, Store};

impl Store {
    /// Quarantines the blob whose object `opened` was read and found bad
    /// (`actual` is what it hashed to, if it was read to the end). Does
    /// nothing if the digest no longer names that object: someone
    /// quarantined it already, and a good copy may have taken its place since.
    pub(crate) async fn quarantine(
        &self,
        digest: &Digest,
        opened: &BlobObjectOf,
        actual: Option<&Digest>,
    ) {
        let actual = actual.map_or("(unreadable)".to_owned(), Digest::to_string);
        let moved = self.inner.blobs.quarantine(digest, opened).await;
        if matches!(moved, Ok(Quarantined::Replaced)) {
            return;
        }
        // The bytes are bad even if they could not be moved: no row may point at them.
        if let Err(error) = self.delete_blob_row(digest.as_str(), BlobRows::Any).await {
            tracing::error!(%digest, %error, "stored blob failed its digest check and its row could not be dropped");
        }
        match moved {
            Ok(Quarantined::Moved(location)) => {
                self.inner
                    .counters
                    .quarantined_blobs
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(%digest, %actual, quarantined = %location,
                    "stored blob failed its digest check: not served, its rows dropped, file quarantined");
            }
            Ok(Quarantined::Replaced) => {}
            Err(error) => {
                tracing::error!(%digest, %actual, %error, "stored blob failed its digest check and could not be quarantined")
            }
        }
    }

    /// Whether a blob was found corrupt and quarantined (for the rare path
    /// where pushed content is missing).
    pub(super) async fn is_quarantined(&self, digest: &Digest) -> bool {
        self.inner.blobs.is_quarantined(digest).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_blob_read_back_wrong_is_quarantined_and_reads_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let good = store.put_bytes(b"stays good", false).await.unwrap();
        let bad = store.put_bytes(b"will rot", false).await.unwrap();
        std::fs::write(store.blob_path(&bad), b"will r0t").unwrap();
        let generation = store.generation().current();
        assert!(store.read_small(&bad, 1024).await.unwrap().is_none());
        assert!(store.is_quarantined(&bad).await);
        assert!(!store.is_quarantined(&good).await);
        let kept = dir.path().join("quarantine/sha256").join(bad.hex());
        assert_eq!(std::fs::read(kept).unwrap(), b"will r0t");
        assert!(!store.blob_path(&bad).exists());
        assert!(store.has_blob(&bad).await.unwrap().is_none());
        assert_eq!(store.generation().current(), generation + 1);
        let counted = &store.counters().quarantined_blobs;
        assert_eq!(counted.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(
            store.read_small(&good, 1024).await.unwrap().as_deref(),
            Some(&b"stays good"[..])
        );
    }
}
