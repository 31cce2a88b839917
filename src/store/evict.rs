//! Keeping the store bounded and clean: LRU eviction of cached blobs down to a
//! low-water mark, and the sweep that repairs what a crash can leave behind
//! (temp files, files without rows, rows without files).
//!
//! Rows go before files: a crash between the two leaves an orphan file (swept
//! later), never a row pointing at nothing. Rows of other tables that refer to
//! a blob go with it (`ON DELETE CASCADE`), so a cached manifest or module file
//! whose bytes were evicted is simply a miss again, never served broken.
//! Hosted (pushed) content and blobs being read right now are never evicted.
//! Every delete bumps the index's generation (`generation`), so what a server
//! holds in memory about the deleted rows is dropped, whichever process evicts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::blob_store::{BlobStore, ListedBlob, UploadJournal};
use super::generation::BlobRows;
use super::index::UpkeepIndex;
use super::{Digest, Store, StoreError};
use crate::sync::Unpoisoned;

/// A push session nobody touched for this long is dropped with its file.
pub const UPLOAD_ABANDONED_AFTER: Duration = Duration::from_secs(24 * 3600);

/// On a bucket replicas share, how long an evicted blob's object outlives its
/// row: another replica may be streaming it (a 20 GB layer at 10 MB/s takes
/// 33 minutes). Only then does the sweep delete it.
pub const GC_GRACE: Duration = Duration::from_secs(2 * 3600);

/// A multipart upload to the bucket with no part in for this long was left
/// by a replica that died mid-upload (a part is 8 MiB): the sweep aborts it.
pub const MULTIPART_IDLE_AFTER: Duration = Duration::from_secs(3600);

/// Blobs open for reading in this process, with how many readers each has,
/// keyed by the first 64 bits of the digest: marking a read costs no
/// allocation, and the (astronomically rare) collision only makes eviction
/// spare a blob it could have taken.
#[derive(Default)]
pub(crate) struct InUse {
    readers: Mutex<HashMap<u64, usize>>,
}

fn in_use_key(digest: &Digest) -> u64 {
    let hex = digest.hex();
    u64::from_str_radix(&hex[..16.min(hex.len())], 16).unwrap_or(0)
}

impl InUse {
    fn contains(&self, digest: &Digest) -> bool {
        self.readers
            .lock()
            .unpoisoned()
            .contains_key(&in_use_key(digest))
    }
}

/// Marks a blob as being read until dropped.
pub struct ReadGuard {
    store: Store,
    key: u64,
}

impl Store {
    pub(crate) fn guard_read(&self, digest: &Digest) -> ReadGuard {
        let key = in_use_key(digest);
        *self
            .inner
            .in_use
            .readers
            .lock()
            .unpoisoned()
            .entry(key)
            .or_insert(0) += 1;
        ReadGuard {
            store: self.clone(),
            key,
        }
    }
}

impl ReadGuard {
    /// The store the guarded blob is read from.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }
}

impl Drop for ReadGuard {
    fn drop(&mut self) {
        let mut readers = self.store.inner.in_use.readers.lock().unpoisoned();
        if let Some(count) = readers.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                readers.remove(&self.key);
            }
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct EvictionReport {
    pub size_before: u64,
    pub size_after: u64,
    pub evicted: u64,
    pub freed: u64,
    /// Candidates passed over because a client was reading them.
    pub skipped_in_use: u64,
}

/// What a sweep may do.
#[derive(Clone, Copy, Debug)]
pub struct SweepOptions {
    /// Orphan files younger than this are left alone: one may be a rename whose
    /// row is being written right now. Zero only for the data dir's owner.
    pub min_age: Duration,
    /// Also delete every temp file: only when no fill can be running.
    pub clear_temp: bool,
    /// Report, change nothing.
    pub dry_run: bool,
}

impl SweepOptions {
    /// For the process holding the data-dir lock, at start.
    pub fn owner() -> SweepOptions {
        SweepOptions {
            min_age: Duration::ZERO,
            clear_temp: true,
            dry_run: false,
        }
    }

    /// Beside a live server.
    pub fn shared() -> SweepOptions {
        SweepOptions {
            min_age: Duration::from_secs(3600),
            clear_temp: false,
            dry_run: false,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SweepReport {
    pub orphan_files: u64,
    pub orphan_bytes: u64,
    pub missing_files: u64,
    pub temp_files: u64,
    /// Push sessions untouched for a day, their leftover files and, on a
    /// shared bucket, chunks in it that no session names.
    pub abandoned_uploads: u64,
    /// Multipart uploads to the bucket that a dead process left unfinished.
    pub abandoned_multipart_uploads: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreTotals {
    pub blobs: u64,
    pub bytes: u64,
    pub hosted_blobs: u64,
    pub hosted_bytes: u64,
}

impl Store {
    pub async fn totals(&self) -> Result<StoreTotals, StoreError> {
        Ok(self.inner.index.totals().await?)
    }

    /// Evicts least-recently-used cached blobs until the store holds at most
    /// `target` bytes. With `dry_run`, only reports what would go.
    pub async fn evict_to(&self, target: u64, dry_run: bool) -> Result<EvictionReport, StoreError> {
        // Access times still in memory decide the order too.
        self.flush_access().await?;
        let size_before = self.totals().await?.bytes;
        let mut report = EvictionReport {
            size_before,
            size_after: size_before,
            ..EvictionReport::default()
        };
        let mut size = size_before;
        let mut after_accessed = i64::MIN;
        let mut after_digest = String::new();
        while size > target {
            let after = (after_accessed, after_digest.as_str());
            let page = self.inner.index.eviction_candidates(after, 256).await?;
            if page.is_empty() {
                break;
            }
            for candidate in page {
                let blob_size = candidate.size;
                after_accessed = candidate.accessed_at;
                after_digest = candidate.digest;
                if size <= target {
                    break;
                }
                let Ok(digest) = after_digest.parse::<Digest>() else {
                    continue;
                };
                if self.inner.in_use.contains(&digest) {
                    report.skipped_in_use += 1;
                    continue;
                }
                // A row gone or pinned since the page was read frees nothing.
                if !dry_run && !self.remove_blob(&digest, blob_size).await? {
                    continue;
                }
                size = size.saturating_sub(blob_size);
                report.evicted += 1;
                report.freed += blob_size;
            }
        }
        report.size_after = size;
        Ok(report)
    }

    /// Deletes a cached blob: its row (and, by cascade, every row that refers
    /// to it), then its file. Hosted blobs are refused.
    async fn remove_blob(&self, digest: &Digest, size: u64) -> Result<bool, StoreError> {
        if !self
            .delete_blob_row(digest.as_str(), BlobRows::Cached)
            .await?
        {
            return Ok(false);
        }
        let counters = &self.inner.counters;
        counters
            .evicted_blobs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        counters
            .evicted_bytes
            .fetch_add(size, std::sync::atomic::Ordering::Relaxed);
        if self.shares_bytes() {
            // Readers on other replicas finish from the object; the sweep
            // deletes it after `GC_GRACE`.
            self.inner
                .index
                .doom_blob(digest.as_str(), super::index::now_secs())
                .await?;
        } else {
            self.inner.blobs.delete(digest).await?;
        }
        Ok(true)
    }

    /// Repairs the store: deletes blob files older than `min_age` that no row
    /// indexes, rows whose file is gone, and (with `clear_temp`) temp files.
    /// `min_age` protects a file renamed into place an instant before its row
    /// is written; a process holding the data-dir lock may pass zero.
    pub async fn sweep(&self, options: SweepOptions) -> Result<SweepReport, StoreError> {
        let SweepOptions {
            min_age,
            clear_temp,
            dry_run,
        } = options;
        let mut report = SweepReport::default();
        if clear_temp {
            report.temp_files = if dry_run {
                std::fs::read_dir(self.inner.root.join("tmp")).map_or(0, |d| d.count() as u64)
            } else {
                self.clear_abandoned_temp_files()? as u64
            };
        }
        report.abandoned_uploads = self
            .sweep_uploads(UPLOAD_ABANDONED_AFTER, min_age, dry_run)
            .await?;
        report.abandoned_multipart_uploads = self.abort_idle_multipart_uploads(dry_run).await?;
        let files = self.inner.blobs.list().await?;
        for (digest, len) in self.orphan_files(&files, min_age).await? {
            if dry_run || self.delete_orphan(&digest).await {
                report.orphan_files += 1;
                report.orphan_bytes += len;
            }
        }
        let listed: std::collections::HashSet<Digest> =
            files.into_iter().map(|file| file.digest).collect();
        report.missing_files = self.sweep_missing_files(&listed, dry_run).await?;
        Ok(report)
    }

    /// Aborts (unless `dry_run`) the bucket's multipart uploads idle for
    /// `MULTIPART_IDLE_AFTER`, whose parts S3 would otherwise keep for good;
    /// how many. One whose abort fails stays journaled for the next sweep.
    async fn abort_idle_multipart_uploads(&self, dry_run: bool) -> Result<u64, StoreError> {
        let Some(bucket) = self.shared_bucket() else {
            return Ok(0);
        };
        let before = super::index::now_secs() - MULTIPART_IDLE_AFTER.as_secs() as i64;
        let idle = self.inner.index.idle_multiparts(before).await?;
        if dry_run {
            return Ok(idle.len() as u64);
        }
        let mut aborted = 0;
        for (upload_id, object_key) in idle {
            match bucket.abort_upload(&object_key, &upload_id).await {
                Ok(()) => {
                    self.inner.index.ended(&upload_id).await?;
                    aborted += 1;
                }
                Err(error) => tracing::warn!(%error, "an abandoned multipart upload stays"),
            }
        }
        Ok(aborted)
    }

    /// Deletes an object no row names. On a shared bucket, under the blob's
    /// lease and only if still no row names it: a fill or push of the same
    /// bytes holds that lease from its commit to its row.
    async fn delete_orphan(&self, digest: &Digest) -> bool {
        if !self.shares_bytes() {
            return self.inner.blobs.delete(digest).await.is_ok();
        }
        let Ok(Some(_lease)) = self.blob_lease(digest).await else {
            return false;
        };
        let still_orphan = self
            .inner
            .index
            .indexed_among(&[digest.as_str()])
            .await
            .is_ok_and(|known| known.is_empty());
        if !still_orphan {
            let _ = self.inner.index.forget_doomed(digest.as_str()).await;
            return false;
        }
        if self.inner.blobs.delete(digest).await.is_err() {
            return false;
        }
        self.inner
            .index
            .forget_doomed(digest.as_str())
            .await
            .is_ok()
    }

    /// The listed files no row indexes, older than `min_age`, with their sizes.
    async fn orphan_files(
        &self,
        files: &[ListedBlob],
        min_age: Duration,
    ) -> Result<Vec<(Digest, u64)>, StoreError> {
        let now = SystemTime::now();
        let mut orphans = Vec::new();
        // A chunk at a time: the set of known digests stays small.
        let graced = super::index::now_secs() - GC_GRACE.as_secs() as i64;
        for chunk in files.chunks(500) {
            let digests: Vec<&str> = chunk.iter().map(|file| file.digest.as_str()).collect();
            let known = self.inner.index.indexed_among(&digests).await?;
            // Evicted a moment ago: another replica may still be reading it.
            let doomed = self.inner.index.doomed_among(&digests).await?;
            orphans.extend(
                chunk
                    .iter()
                    .filter(|file| {
                        !known.contains(file.digest.as_str())
                            && now.duration_since(file.modified).unwrap_or_default() >= min_age
                            && doomed
                                .get(file.digest.as_str())
                                .is_none_or(|&at| at <= graced)
                    })
                    .map(|file| (file.digest.clone(), file.len)),
            );
        }
        Ok(orphans)
    }

    /// Deletes (unless `dry_run`) the rows whose file is gone; how many.
    async fn sweep_missing_files(
        &self,
        listed: &std::collections::HashSet<Digest>,
        dry_run: bool,
    ) -> Result<u64, StoreError> {
        let mut missing_files = 0;
        let mut after = String::new();
        loop {
            let page = self.inner.index.blobs_after(&after, 1000).await?;
            let Some((last, _)) = page.last() else { break };
            after = last.clone();
            // Rows the listing did not see; a file renamed in since then has
            // appeared, so look again before calling one missing.
            let mut missing = Vec::new();
            for (text, _) in page {
                let Ok(digest) = text.parse::<Digest>() else {
                    continue;
                };
                if !listed.contains(&digest) && !self.inner.blobs.contains(&digest).await {
                    missing.push(text);
                }
            }
            for text in missing {
                // Hosted rows too: a row without its file is broken either way.
                if !dry_run {
                    self.delete_blob_row(&text, BlobRows::Any).await?;
                }
                missing_files += 1;
            }
        }
        Ok(missing_files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        (dir, store)
    }

    async fn age(store: &Store, digest: &Digest, accessed_at: i64) {
        store
            .inner
            .index
            .set_accessed_at(digest, accessed_at)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn eviction_removes_least_recently_used_first_and_spares_hosted_and_in_use_blobs() {
        let (_dir, store) = store().await;
        let mut digests = Vec::new();
        for i in 0..6u8 {
            let digest = store.put_bytes(&vec![i; 1000], i == 0).await.unwrap();
            age(&store, &digest, i64::from(i)).await;
            digests.push(digest);
        }
        // 0 is hosted, 1 is being read: both stay although they are the oldest.
        let reading = store.open_blob(&digests[1]).await.unwrap().unwrap();
        // Opening counts as an access; make it old again to test the guard alone.
        store.flush_access().await.unwrap();
        age(&store, &digests[1], 1).await;
        let report = store.evict_to(3000, false).await.unwrap();
        assert_eq!(report.size_before, 6000);
        assert_eq!(report.evicted, 3);
        assert_eq!(report.skipped_in_use, 1);
        assert_eq!(report.size_after, 3000);
        for (i, digest) in digests.iter().enumerate() {
            let kept = store.has_blob(digest).await.unwrap().is_some();
            assert_eq!(kept, [0, 1, 5].contains(&i), "blob {i}");
            assert_eq!(store.blob_path(digest).exists(), kept, "file of blob {i}");
        }
        drop(reading);
        let report = store.evict_to(0, true).await.unwrap();
        assert_eq!(report.evicted, 2, "dry run counts all but the hosted blob");
        assert!(
            store.has_blob(&digests[1]).await.unwrap().is_some(),
            "dry run removes nothing"
        );
    }

    #[tokio::test]
    async fn sweep_removes_orphan_files_missing_rows_and_temp_files() {
        let (dir, store) = store().await;
        let kept = store.put_bytes(b"kept", false).await.unwrap();
        let lost = store.put_bytes(b"file lost", false).await.unwrap();
        std::fs::remove_file(store.blob_path(&lost)).unwrap();
        let orphan = Digest::sha256_of(b"orphan");
        let orphan_path = store.blob_path(&orphan);
        std::fs::create_dir_all(orphan_path.parent().unwrap()).unwrap();
        std::fs::write(&orphan_path, b"orphan").unwrap();
        std::fs::write(dir.path().join("tmp/fill-123"), b"partial").unwrap();

        let young = store.sweep(SweepOptions::shared()).await.unwrap();
        assert_eq!(
            young.orphan_files, 0,
            "a fresh file may be a rename in progress"
        );
        assert_eq!(young.missing_files, 1);

        let dry = store
            .sweep(SweepOptions {
                dry_run: true,
                ..SweepOptions::owner()
            })
            .await
            .unwrap();
        assert_eq!((dry.orphan_files, dry.temp_files), (1, 1));
        assert!(orphan_path.exists(), "a dry run deletes nothing");
        let report = store.sweep(SweepOptions::owner()).await.unwrap();
        assert_eq!(report.orphan_files, 1);
        assert_eq!(report.temp_files, 1);
        assert!(!orphan_path.exists());
        assert!(store.has_blob(&kept).await.unwrap().is_some());
        assert!(store.has_blob(&lost).await.unwrap().is_none());
    }
}
