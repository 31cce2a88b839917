//! Re-hashing every indexed blob: the proof that the store serves only
//! complete, digest-verified content (`mirror cache verify`, and the crash
//! tests). With `repair`, a bad or missing blob loses its row, and so every
//! row that refers to it: it becomes a miss again instead of a broken answer.

use futures_util::StreamExt;

use super::blob_store::{BlobObject, BlobStore, Opened};
use super::generation::BlobRows;
use super::index::UpkeepIndex;
use super::{Digest, Store, StoreError};

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    pub checked: u64,
    pub bytes: u64,
    /// Digests whose file does not hash to the digest (or has the wrong size).
    pub corrupt: Vec<String>,
    /// Digests whose file is gone.
    pub missing: Vec<String>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty() && self.missing.is_empty()
    }
}

enum Verdict {
    Good,
    Corrupt,
    Missing,
}

impl Store {
    pub async fn verify(&self, repair: bool) -> Result<VerifyReport, StoreError> {
        let mut report = VerifyReport::default();
        let mut after = String::new();
        loop {
            let page = self.inner.index.blobs_after(&after, 256).await?;
            let Some((last, _)) = page.last() else { break };
            after = last.clone();
            for (text, size) in page {
                let verdict = match text.parse::<Digest>() {
                    Ok(digest) => self.check(&digest, size).await?,
                    Err(_) => Verdict::Corrupt,
                };
                report.checked += 1;
                match verdict {
                    Verdict::Good => report.bytes += size,
                    Verdict::Corrupt => report.corrupt.push(text.clone()),
                    Verdict::Missing => report.missing.push(text.clone()),
                }
                if repair && !matches!(verdict, Verdict::Good) {
                    self.delete_blob_row(&text, BlobRows::Any).await?;
                    if let Ok(digest) = text.parse::<Digest>() {
                        self.inner.blobs.delete(&digest).await?;
                    }
                }
            }
        }
        Ok(report)
    }
}

impl Store {
    /// Reads the object for `digest` to its end and hashes it. An unreadable
    /// object is corrupt; only an absent one is missing.
    async fn check(&self, digest: &Digest, size: u64) -> Result<Verdict, StoreError> {
        let object = match self.inner.blobs.open(digest, 0).await {
            Ok(Some(Opened::Object(object) | Opened::Whole(_, object))) => object,
            Ok(None) => return Ok(Verdict::Missing),
            Err(_) => return Ok(Verdict::Corrupt),
        };
        if object.size() != size {
            return Ok(Verdict::Corrupt);
        }
        let Ok(chunks) = object.stream(0, size).await else {
            return Ok(Verdict::Corrupt);
        };
        let mut chunks = std::pin::pin!(chunks);
        let mut hasher = digest.algorithm().hasher();
        let mut total = 0u64;
        while let Some(chunk) = chunks.next().await {
            let Ok(chunk) = chunk else {
                return Ok(Verdict::Corrupt);
            };
            total += chunk.len() as u64;
            // Hashing a whole store is CPU work: off the async workers.
            hasher = tokio::task::spawn_blocking(move || {
                hasher.update(&chunk);
                hasher
            })
            .await?;
        }
        Ok(if total == size && hasher.finish() == *digest {
            Verdict::Good
        } else {
            Verdict::Corrupt
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verify_finds_and_repairs_corrupt_and_missing_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let good = store.put_bytes(b"good", false).await.unwrap();
        let bad = store.put_bytes(b"will be damaged", false).await.unwrap();
        let gone = store.put_bytes(b"will vanish", false).await.unwrap();
        std::fs::write(store.blob_path(&bad), b"will be damageD").unwrap();
        std::fs::remove_file(store.blob_path(&gone)).unwrap();
        let report = store.verify(false).await.unwrap();
        assert_eq!(report.checked, 3);
        assert_eq!(report.corrupt, vec![bad.to_string()]);
        assert_eq!(report.missing, vec![gone.to_string()]);
        store.verify(true).await.unwrap();
        let after = store.verify(false).await.unwrap();
        assert!(after.is_clean());
        assert_eq!(after.checked, 1);
        assert!(store.has_blob(&good).await.unwrap().is_some());
    }
}
