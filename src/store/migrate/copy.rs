//! The blobs of a migration: each one streamed from the source into a staged
//! file of the target, hashed on the way, and committed to the target's blob
//! store only when the digest and size hold. Memory stays at one chunk.

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{BlobOutcome, MigrateOptions, MigrateProgress, MigrateReport};
use crate::store::blob_store::{BlobObject, BlobStore, Opened};
use crate::store::index::UpkeepIndex;
use crate::store::{BlobObjectOf, Digest, Store, StoreError, io_error};

/// Blob rows read from the source index at a time.
const PAGE: u32 = 256;

/// How staging a source object ended.
enum Staged {
    Verified,
    /// The bytes read are not the blob's (or could not be read).
    Bad,
}

impl Store {
    pub(super) async fn copy_blobs(
        &self,
        target: &Store,
        options: MigrateOptions,
        progress: &dyn MigrateProgress,
        report: &mut MigrateReport,
    ) -> Result<(), StoreError> {
        let mut after = String::new();
        loop {
            let page = self.inner.index.blobs_after(&after, PAGE).await?;
            let Some((last, _)) = page.last() else {
                return Ok(());
            };
            after = last.clone();
            for (text, size) in page {
                if options
                    .blob_limit
                    .is_some_and(|limit| report.copied >= limit)
                {
                    report.stopped = true;
                    return Ok(());
                }
                let outcome = match Store::parse_digest(&text) {
                    Some(digest) => {
                        self.copy_blob(target, &digest, size, options, progress)
                            .await?
                    }
                    None => BlobOutcome::Corrupt,
                };
                match outcome {
                    BlobOutcome::Copied => {
                        report.copied += 1;
                        report.copied_bytes += size;
                    }
                    BlobOutcome::Present => report.present += 1,
                    BlobOutcome::WouldCopy => report.would_copy += 1,
                    BlobOutcome::Corrupt => report.corrupt.push(text.clone()),
                    BlobOutcome::Missing => report.missing.push(text.clone()),
                }
                progress.blob(&text, size, outcome);
            }
        }
    }

    async fn copy_blob(
        &self,
        target: &Store,
        digest: &Digest,
        size: u64,
        options: MigrateOptions,
        progress: &dyn MigrateProgress,
    ) -> Result<BlobOutcome, StoreError> {
        // Content-addressed and committed only once verified: an object
        // under this digest is this blob.
        if target.inner.blobs.contains(digest).await {
            return Ok(BlobOutcome::Present);
        }
        let object = match self.inner.blobs.open(digest, 0).await {
            Ok(Some(Opened::Object(object) | Opened::Whole(_, object))) => object,
            Ok(None) => return Ok(BlobOutcome::Missing),
            Err(_) => return Ok(BlobOutcome::Corrupt),
        };
        if object.size() != size {
            return Ok(BlobOutcome::Corrupt);
        }
        if options.dry_run {
            return Ok(BlobOutcome::WouldCopy);
        }
        let staged = target.new_temp_path(super::staging::STAGED);
        let outcome = stage(&object, digest, size, &staged, progress).await;
        match outcome {
            Ok(Staged::Verified) => {
                target
                    .inner
                    .blobs
                    .commit(&staged, digest, &target.inner.index)
                    .await?;
                Ok(BlobOutcome::Copied)
            }
            Ok(Staged::Bad) => {
                let _ = tokio::fs::remove_file(&staged).await;
                Ok(BlobOutcome::Corrupt)
            }
            Err(error) => {
                let _ = tokio::fs::remove_file(&staged).await;
                Err(error)
            }
        }
    }
}

/// Writes `object` to `staged`, hashing as it goes, and fsyncs it. A read
/// failure is the source's fault (`Bad`); a write failure is an error.
async fn stage(
    object: &BlobObjectOf,
    digest: &Digest,
    size: u64,
    staged: &std::path::Path,
    progress: &dyn MigrateProgress,
) -> Result<Staged, StoreError> {
    let context = || format!("writing {}", staged.display());
    let mut file = tokio::fs::File::create(staged)
        .await
        .map_err(io_error(context()))?;
    let Ok(chunks) = object.stream(0, size).await else {
        return Ok(Staged::Bad);
    };
    let mut chunks = std::pin::pin!(chunks);
    let mut hasher = digest.algorithm().hasher();
    let mut total = 0u64;
    while let Some(chunk) = chunks.next().await {
        let Ok(chunk) = chunk else {
            return Ok(Staged::Bad);
        };
        let len = chunk.len() as u64;
        total += len;
        file.write_all(&chunk).await.map_err(io_error(context()))?;
        // Hashing a whole store is CPU work: off the async workers.
        hasher = tokio::task::spawn_blocking(move || {
            hasher.update(&chunk);
            hasher
        })
        .await?;
        progress.read(len);
    }
    file.sync_all().await.map_err(io_error(context()))?;
    Ok(if total == size && hasher.finish() == *digest {
        Staged::Verified
    } else {
        Staged::Bad
    })
}
