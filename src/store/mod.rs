//! The store: an index of rows (`index`, SQLite or a shared PostgreSQL) plus content-addressed
//! blobs (`blob_store`, files under `data_dir` or an S3 bucket).
//! The one place that does I/O on `data_dir`; protocols never see a pool nor
//! a path. They reach it through typed parts, borrows that cost nothing:
//! `blobs()` (content by digest, with an `Origin`), `oci()` and `go()` (their
//! rows, keyed by `RepoKey`, `TagKey`, `ModuleKey`, `VersionKey`, `AnswerKey`,
//! `TileKey`), `uploads()` (push sessions by `UploadId`; a push writes through
//! the `UploadFile` handle it gives) and `audit()`. The protocols own the
//! grammar of those names; the store only keeps the kinds apart.
//!
//! Layout: `mirror.db` (WAL), `blobs/<alg>/<2 hex>/<hex>` for content, `tmp/`
//! for writes in progress, `uploads/<id>` for push sessions' bytes,
//! `quarantine/<alg>/<hex>` for blobs that failed their digest check when
//! read. A file is written to `tmp/`, verified,
//! fsynced and renamed into `blobs/`, and only then indexed, so a crash at
//! any instant leaves no partial file visible under a digest.

pub mod audit;
mod audit_log;
mod audit_trail;
mod blob_store;
mod blobs;
mod changes;
pub mod digest;
pub mod evict;
pub mod fill;
mod generation;
mod go;
mod go_rows;
mod index;
mod keys;
mod leader;
mod migrate;
mod oci;
mod oci_rows;
mod quarantine;
mod read;
mod ready;
mod stats;
mod upkeep;
mod upload_file;
mod uploads;
mod verify;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use audit::{AuditQuery, AuditRecord};
pub use audit_log::{AuditEntry, AuditLog};
pub use audit_trail::AuditTrail;

use crate::sync::Unpoisoned;
use blob_store::{BlobStore, Blobs};
pub use blob_store::{S3Settings, Storage};
pub use blobs::{Origin, StoredBlobs};
pub use changes::{Change, Watcher};

/// An open object of the blob store the store was opened with.
type BlobObjectOf = <Blobs as BlobStore>::Object;
pub use digest::{Algorithm, Digest, Hasher, InvalidDigest};
pub use evict::{
    EvictionReport, MULTIPART_IDLE_AFTER, ReadGuard, StoreTotals, SweepOptions, SweepReport,
    UPLOAD_ABANDONED_AFTER,
};
pub use fill::{
    Cluster, Committed, FillError, FillHead, FillLimits, FillProducer, FillReader, MinRate,
    Refetch, Slot, StorageFailure, UpstreamFailure, Validator,
};
pub use generation::Generation;
pub use go::{GoFile, StoredAnswer};
pub use go_rows::GoRows;
use index::{AnyIndex, BlobIndex, Index};
pub use index::{IndexChoice, IndexError, now_secs};
pub use keys::{AnswerKey, ModuleKey, RepoKey, TagKey, TileKey, VersionKey};
pub use migrate::{BlobOutcome, MigrateOptions, MigrateProgress, MigrateReport, TableReport};
pub use oci::{ManifestRow, NewManifest, ReferrerRow};
pub use oci_rows::OciRows;
pub use read::{BlobFile, OpenedBlob, VerifyOnRead};
pub use ready::NotReady;
pub use stats::{GroupStats, HOSTED, SHARED, StoreStats, UNREFERENCED};
pub use upload_file::UploadFile;
pub use uploads::{Begun, Pushed, UploadId, UploadOwner, UploadRow, Uploads};
pub use verify::VerifyReport;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("content has digest {actual}, expected {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("{0}")]
    Corrupt(String),
    #[error("blocking task failed: {0}")]
    Blocking(#[from] tokio::task::JoinError),
    /// Another request (on this or another replica) holds what this one needs.
    #[error("{0}")]
    Busy(String),
}

impl StoreError {
    /// A write named a row another path deleted (a blob evicted, a manifest
    /// gone with it): whoever held that row in memory must look again.
    pub fn is_missing_reference(&self) -> bool {
        matches!(self, StoreError::Index(IndexError::MissingReference(_)))
    }
}

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

/// `dir` and any missing parents, readable by the owner only.
pub(crate) fn create_private_dirs(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error(format!("creating {}", dir.display())))
}

/// A data dir made by an older version, or by hand, may be open to others; it
/// is the operator's folder, so it is named rather than changed.
fn warn_if_exposed(data_dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(data_dir)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            data_dir = %data_dir.display(),
            mode = format!("{:04o}", meta.permissions().mode() & 0o7777),
            "other users can enter the data dir (pushed images, upload sessions); run chmod 700 on it"
        );
    }
}

#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    root: PathBuf,
    /// Blob bytes; an enum, not `dyn`, so a hit pays no indirection.
    blobs: Blobs,
    /// The rows; by type, not `dyn`, for the same reason.
    index: AnyIndex,
    pub(crate) fills: fill::Fills,
    /// Digests read since the last flush; written to `accessed_at` in one
    /// transaction now and then instead of one UPDATE per hit.
    accessed: Mutex<HashSet<Digest>>,
    temp_counter: AtomicU64,
    pub(crate) in_use: evict::InUse,
    /// Pinged when a blob is added, so eviction can run soon after the store grows.
    grew: tokio::sync::Notify,
    pub(crate) counters: Counters,
    /// `cache.verify_on_read = "all"`: streamed reads are verified too.
    verify_all: AtomicBool,
    /// The index's deletion generation as this process last saw it.
    generation: Generation,
    /// Whether this process runs upkeep, when several share the index.
    leader: leader::Leader,
    /// `[cluster] replica`, named in the audit rows this process writes.
    replica: std::sync::OnceLock<String>,
    /// The in-memory copies of rows told of other processes' changes.
    watchers: changes::Watchers,
}

/// What the store counts for `/metrics`.
#[derive(Default)]
pub struct Counters {
    pub fills_completed: AtomicU64,
    pub fills_failed: AtomicU64,
    pub bytes_filled: AtomicU64,
    pub evicted_blobs: AtomicU64,
    pub evicted_bytes: AtomicU64,
    /// Stored blobs that failed their digest check when read.
    pub quarantined_blobs: AtomicU64,
}

impl Store {
    /// Opens (creating if needed) the store in `data_dir`. Everything is
    /// created private: the index holds the audit trail (who pulled what),
    /// `uploads/` and `blobs/` hold pushed, possibly private, images.
    pub async fn open(data_dir: &Path) -> Result<Store, StoreError> {
        Store::open_with(data_dir, &Storage::Files, &IndexChoice::Sqlite).await
    }

    /// Opens the store in `data_dir` with blob bytes kept in `storage` and
    /// rows in `index`; staged writes and upload sessions stay in `data_dir`
    /// either way.
    pub async fn open_with(
        data_dir: &Path,
        storage: &Storage,
        index: &IndexChoice,
    ) -> Result<Store, StoreError> {
        for dir in [
            data_dir.to_owned(),
            data_dir.join("blobs"),
            data_dir.join("tmp"),
            data_dir.join("uploads"),
        ] {
            create_private_dirs(&dir)?;
        }
        warn_if_exposed(data_dir);
        let index = AnyIndex::open(data_dir, index).await?;
        let leader = leader::Leader::new(index.is_shared());
        let store = Store {
            inner: Arc::new(Inner {
                root: data_dir.to_owned(),
                blobs: Blobs::new(data_dir, storage)?,
                index,
                fills: fill::Fills::default(),
                accessed: Mutex::new(HashSet::new()),
                temp_counter: AtomicU64::new(0),
                in_use: evict::InUse::default(),
                grew: tokio::sync::Notify::new(),
                counters: Counters::default(),
                verify_all: AtomicBool::new(false),
                generation: Generation::default(),
                leader,
                replica: std::sync::OnceLock::new(),
                watchers: changes::Watchers::default(),
            }),
        };
        store.refresh_generation().await?;
        Ok(store)
    }

    /// Opens the store of an existing data dir (for CLI commands, which must
    /// not create one where an operator mistyped a path).
    pub async fn open_existing(data_dir: &Path) -> Result<Store, StoreError> {
        Store::open_existing_with(data_dir, &Storage::Files, &IndexChoice::Sqlite).await
    }

    /// `open_existing` on the rows and bytes a config names. On a shared
    /// index the rows are the cluster's, wherever this runs, and the data dir
    /// only stages: it need not exist yet.
    pub async fn open_existing_with(
        data_dir: &Path,
        storage: &Storage,
        index: &IndexChoice,
    ) -> Result<Store, StoreError> {
        if matches!(index, IndexChoice::Sqlite) && !data_dir.join("mirror.db").is_file() {
            return Err(StoreError::Corrupt(format!(
                "{} has no mirror.db: not a mirror data dir (use --data-dir or --config)",
                data_dir.display()
            )));
        }
        Store::open_with(data_dir, storage, index).await
    }

    /// Pins an indexed blob against eviction (pushed content, a mount).
    /// `false` when no row indexes it, e.g. eviction removed it a moment ago:
    /// eviction deletes only unpinned rows on the same write connection, so
    /// a blob pinned here stays.
    async fn mark_hosted(&self, digest: &Digest) -> Result<bool, StoreError> {
        Ok(self.inner.index.mark_hosted(digest).await?)
    }

    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// Removes temp files left by a process that died mid-write. Only for the
    /// process that owns the data dir (see `lock_exclusive`), never for a CLI
    /// command that may run beside a live server.
    fn clear_abandoned_temp_files(&self) -> Result<usize, StoreError> {
        let tmp = self.inner.root.join("tmp");
        let mut removed = 0;
        for entry in
            std::fs::read_dir(&tmp).map_err(io_error(format!("listing {}", tmp.display())))?
        {
            let entry = entry.map_err(io_error("listing tmp"))?;
            if std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Holds an exclusive lock on the data dir for as long as the returned file
    /// lives, so two servers never share (and corrupt) one store.
    pub fn lock_exclusive(&self) -> Result<std::fs::File, StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.inner.root.join("mirror.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_error(format!("opening {}", path.display())))?;
        file.try_lock().map_err(|_| {
            StoreError::Corrupt(format!(
                "{} is in use by another mirror process (lock {})",
                self.inner.root.display(),
                path.display()
            ))
        })?;
        Ok(file)
    }

    /// Whether a process holds the data dir's lock (a server is running on it).
    pub fn is_locked(data_dir: &Path) -> bool {
        match std::fs::OpenOptions::new()
            .write(true)
            .open(data_dir.join("mirror.lock"))
        {
            Ok(file) => file.try_lock().is_err(),
            Err(_) => false,
        }
    }

    /// The local file of a blob, for tests that damage or remove it.
    #[cfg(test)]
    pub(crate) fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.inner.blobs.path(digest)
    }

    /// Whether other processes read and write these bytes and rows too (a
    /// bucket with a PostgreSQL index): deletes are then deferred, writes of
    /// a blob take its lease, and push sessions keep their chunks in the bucket.
    pub(crate) fn shares_bytes(&self) -> bool {
        self.inner.blobs.is_shared() && self.inner.index.is_shared()
    }

    /// The bucket, when `shares_bytes`.
    pub(crate) fn shared_bucket(&self) -> Option<&blob_store::S3Blobs> {
        match self.inner.index.is_shared() {
            true => self.inner.blobs.session_parts(),
            false => None,
        }
    }

    /// A fresh path under `tmp/`; nothing else will ever use the same name.
    fn new_temp_path(&self, purpose: &str) -> PathBuf {
        let n = self.inner.temp_counter.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        self.inner
            .root
            .join("tmp")
            .join(format!("{purpose}-{}-{nanos}-{n}", std::process::id()))
    }

    /// Moves a complete, verified, fsynced temp file into the store under
    /// `digest` and indexes it. The caller vouches for the digest.
    async fn adopt_file(
        &self,
        tmp: &Path,
        digest: &Digest,
        size: u64,
        hosted: bool,
    ) -> Result<(), StoreError> {
        // On a shared bucket the sweep may be deleting an object of these
        // bytes whose row went: the blob's lease keeps the two apart.
        let _lease = match self.shares_bytes() {
            true => Some(self.blob_lease_waiting(digest).await?),
            false => None,
        };
        self.inner
            .blobs
            .commit(tmp, digest, &self.inner.index)
            .await?;
        self.inner.index.insert_blob(digest, size, hosted).await?;
        self.inner.grew.notify_one();
        Ok(())
    }

    /// Stores a small object held in memory (a manifest, a `.info`) and
    /// returns its sha256 digest.
    async fn put_bytes(&self, bytes: &[u8], hosted: bool) -> Result<Digest, StoreError> {
        let digest = Digest::sha256_of(bytes);
        let indexed = if hosted {
            self.mark_hosted(&digest).await?
        } else {
            self.inner.index.blob_size(&digest).await?.is_some()
        };
        if indexed && self.inner.blobs.contains(&digest).await {
            return Ok(digest);
        }
        let tmp = self.new_temp_path("put");
        let data = bytes.to_vec();
        let path = tmp.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let mut file = std::fs::File::create(&path)?;
            file.write_all(&data)?;
            file.sync_all()
        })
        .await?
        .map_err(io_error(format!("writing {}", tmp.display())))?;
        self.adopt_file(&tmp, &digest, bytes.len() as u64, hosted)
            .await?;
        Ok(digest)
    }

    async fn has_blob(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        if !self.inner.blobs.contains(digest).await {
            return Ok(None);
        }
        Ok(self.inner.index.blob_size(digest).await?)
    }

    /// Notes a read for LRU eviction; written to the index by `flush_access`.
    fn touch(&self, digest: &Digest) {
        let mut accessed = self.inner.accessed.lock().unpoisoned();
        if accessed.len() < 1_000_000 && !accessed.contains(digest) {
            accessed.insert(digest.clone());
        }
    }

    /// Writes the noted reads to the index in one transaction.
    async fn flush_access(&self) -> Result<usize, StoreError> {
        let digests: Vec<Digest> = {
            let mut accessed = self.inner.accessed.lock().unpoisoned();
            accessed.drain().collect()
        };
        if digests.is_empty() {
            return Ok(0);
        }
        self.inner.index.record_access(&digests, now_secs()).await?;
        Ok(digests.len())
    }

    pub async fn close(&self) {
        self.resign().await;
        let _ = self.flush_access().await;
        self.inner.index.close().await;
    }
}
