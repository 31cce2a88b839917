//! Taking a stored blob whose bytes no longer match its digest out of
//! service: its row goes (and with it every row that refers to it, so it is a
//! miss from now on), its file moves to `quarantine/<alg>/<hex>` for the
//! operator to inspect, and it is logged at error level and counted. The
//! quarantine is also the record that lets pushed content, which cannot be
//! fetched again, answer with the reason instead of "unknown".

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::generation::BlobRows;
use super::{Digest, Store};

impl Store {
    fn quarantine_path(&self, digest: &Digest) -> PathBuf {
        self.inner
            .root
            .join("quarantine")
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    /// Quarantines the blob whose file `opened` was read and found bad
    /// (`actual` is what it hashed to, if it was read to the end). Does
    /// nothing if the path no longer names that file: someone quarantined
    /// it already, and a good copy may have taken its place since.
    pub(crate) async fn quarantine(
        &self,
        digest: &Digest,
        opened: &std::fs::File,
        actual: Option<&Digest>,
    ) {
        let path = self.blob_path(digest);
        let opened = opened.metadata().map(|m| (m.dev(), m.ino()));
        let current = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || std::fs::metadata(path).map(|m| (m.dev(), m.ino())))
                .await
        };
        match (opened, current) {
            (Ok(opened), Ok(Ok(current))) if opened == current => {}
            _ => return,
        }
        let actual = actual.map_or("(unreadable)".to_owned(), Digest::to_string);
        if let Err(error) = self.delete_blob_row(digest.as_str(), BlobRows::Any).await {
            tracing::error!(%digest, %error, "stored blob failed its digest check and its row could not be dropped");
        }
        let target = self.quarantine_path(digest);
        let moved = {
            let target = target.clone();
            tokio::task::spawn_blocking(move || move_aside(&path, &target)).await
        };
        match moved {
            Ok(Ok(())) => {
                self.inner
                    .counters
                    .quarantined_blobs
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(%digest, %actual, quarantined = %target.display(),
                    "stored blob failed its digest check: not served, its rows dropped, file quarantined");
            }
            Ok(Err(error)) => {
                tracing::error!(%digest, %actual, %error, "stored blob failed its digest check and could not be quarantined")
            }
            Err(error) => {
                tracing::error!(%digest, %actual, %error, "stored blob failed its digest check and could not be quarantined")
            }
        }
    }

    /// Whether a blob was found corrupt and quarantined (one stat; for the
    /// rare path where pushed content is missing).
    pub async fn is_quarantined(&self, digest: &Digest) -> bool {
        tokio::fs::try_exists(self.quarantine_path(digest))
            .await
            .unwrap_or(false)
    }
}

/// Renames `path` to `target` (same file system), replacing an older
/// quarantined copy of the same digest; the folder is private, as `blobs/` is.
fn move_aside(path: &Path, target: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(parent) = target.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    std::fs::rename(path, target)
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
        assert_eq!(
            std::fs::read(store.quarantine_path(&bad)).unwrap(),
            b"will r0t"
        );
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
