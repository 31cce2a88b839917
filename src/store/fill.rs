//! Shared fills: one download from upstream into a temp file, read by any number
//! of clients while it is still being written.
//!
//! The first request for a missing object becomes the producer; later requests
//! for the same key join as readers. Readers read the temp file by position up
//! to what has been written (so a `Range` request or a late joiner never causes
//! a second download) and wait for more. The last byte is held back until the
//! producer has verified the whole file, so a digest mismatch or an invalid zip
//! ends every reader's body early: no client ever receives a complete body of
//! bad bytes; a range that ends before the end of the blob holds back its own
//! last byte the same way, so no `Range` completes with unverified bytes
//! either. The producer runs detached from any client, so a client that
//! hangs up does not waste the download.
//!
//! A fill runs under `FillLimits`: its bytes count against `cache.max_size`
//! while in flight (`budget`), and it is cut off when upstream is too slow or
//! too late (`pump`). Every failure ends every reader's body with an error,
//! removes the temp file and counts in `fills_failed`.

mod budget;
pub(crate) mod lease;
mod pump;
mod relay;
mod wire;

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::watch;

use super::index::{Lease, LeaseIndex};
use super::{Digest, Hasher, Store, StoreError};
use crate::store::digest::Algorithm;
use crate::sync::Unpoisoned;
pub(crate) use budget::Budget;
use budget::Reserved;
pub use budget::{FillLimits, MinRate};
pub use relay::{Cluster, Refetch};

/// Read size for readers.
const CHUNK: usize = 256 * 1024;

/// The producer hands upstream's chunks to the file (one `pwritev`) once this
/// much has arrived: fewer trips to the blocking pool, no copy into a buffer.
const FLUSH_AT: usize = 1024 * 1024;

/// ... or once this many chunks are waiting (the kernel's IOV_MAX), so an
/// upstream trickling tiny chunks cannot pile up bookkeeping.
const MAX_PENDING_CHUNKS: usize = 1024;

/// Why a fill failed, shared by every reader of it.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum FillError {
    /// The upstream does not have it (404/410).
    #[error("not found upstream: {0}")]
    NotFound(UpstreamFailure),
    /// Upstream failed in another way (status, connection, timeout).
    #[error("upstream error: {0}")]
    Upstream(UpstreamFailure),
    #[error("upstream sent content with digest {actual}, expected {expected}")]
    DigestMismatch { expected: String, actual: String },
    /// The content failed a protocol check (e.g. an invalid module zip).
    #[error("invalid content from upstream: {0}")]
    Invalid(String),
    #[error("content larger than the {0}-byte limit")]
    TooLarge(u64),
    /// Fills in flight plus what eviction cannot free would pass `cache.max_size`.
    #[error("no room in the cache (cache.max_size = {max_size} bytes) for this fill")]
    NoRoom { max_size: u64 },
    #[error("upstream did not finish within {}s (cache.fill_timeout)", .0.as_secs())]
    TimedOut(Duration),
    #[error(
        "upstream sent less than {bytes_per_second} bytes/s over {}s (cache.fill_min_rate)",
        .window.as_secs()
    )]
    TooSlow {
        bytes_per_second: u64,
        window: Duration,
    },
    #[error("upstream sent {actual} bytes, announced {announced}")]
    LengthMismatch { announced: u64, actual: u64 },
    #[error("storage error: {0}")]
    Io(StorageFailure),
    #[error("the fill was abandoned")]
    Abandoned,
    /// Another replica took this fill's lease over (this one could not renew
    /// it in time): its copy is not the one the cluster keeps.
    #[error("another replica took over this fill")]
    Fenced,
}

/// What an upstream said or how reaching it failed, in the protocol's words.
/// Every reader of a fill gets a copy, so it is plain data, not a boxed source.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("{message}")]
pub struct UpstreamFailure {
    /// The HTTP status, when upstream answered at all.
    pub status: Option<u16>,
    pub message: String,
}

impl UpstreamFailure {
    pub fn new(status: Option<u16>, message: impl Into<String>) -> UpstreamFailure {
        UpstreamFailure {
            status,
            message: message.into(),
        }
    }
}

/// A local I/O failure during a fill, kept as its kind and text so every
/// reader can hold a copy.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("{message}")]
pub struct StorageFailure {
    pub kind: std::io::ErrorKind,
    pub message: String,
}

impl From<std::io::Error> for FillError {
    fn from(error: std::io::Error) -> Self {
        FillError::Io(StorageFailure {
            kind: error.kind(),
            message: error.to_string(),
        })
    }
}

impl From<tokio::task::JoinError> for FillError {
    fn from(error: tokio::task::JoinError) -> Self {
        std::io::Error::other(error).into()
    }
}

impl From<StoreError> for FillError {
    fn from(error: StoreError) -> Self {
        FillError::Io(StorageFailure {
            kind: match &error {
                StoreError::Io { source, .. } => source.kind(),
                _ => std::io::ErrorKind::Other,
            },
            message: error.to_string(),
        })
    }
}

/// What is known about the object once upstream has answered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FillHead {
    /// Total length, when upstream announced one.
    pub total: Option<u64>,
    /// The upstream's Content-Type, for protocols that must pass it through.
    pub media_type: Option<String>,
}

#[derive(Clone, Debug)]
enum Progress {
    /// Waiting for upstream's answer.
    Waiting,
    Streaming {
        head: Arc<FillHead>,
        written: u64,
    },
    Done {
        head: Arc<FillHead>,
        digest: Digest,
        size: u64,
    },
    Failed(FillError),
}

struct Shared {
    /// Open read+write on the temp file for the whole fill; readers use
    /// positional reads on it, so the rename at the end does not disturb them.
    file: Arc<std::fs::File>,
    progress: watch::Sender<Progress>,
}

/// Fills in progress, by key (`"oci:sha256:…"`, `"go:mod@v.zip"`, …), and
/// what they may take.
#[derive(Default)]
pub struct Fills {
    active: Mutex<HashMap<String, Weak<Shared>>>,
    limits: Mutex<FillLimits>,
    pub(crate) budget: Budget,
    /// Set when this process is one replica of several: fills then take a
    /// lease in the index, and followers relay from the lease's owner.
    cluster: OnceLock<Arc<Cluster>>,
}

impl Fills {
    fn remove(&self, key: &str, shared: &Arc<Shared>) {
        let mut active = self.active.lock().unpoisoned();
        if active
            .get(key)
            .is_some_and(|w| w.as_ptr() == Arc::as_ptr(shared))
        {
            active.remove(key);
        }
    }
}

/// The outcome of asking for a fill slot.
pub enum Slot {
    /// Nobody is fetching this yet: the caller must fetch it, through this.
    Producer(Box<FillProducer>),
    /// Somebody is: read along.
    Joined(FillReader),
}

impl Store {
    /// The limits fills started from now on run under.
    pub fn set_fill_limits(&self, limits: FillLimits) {
        let fills = &self.inner.fills;
        *fills.limits.lock().unpoisoned() = limits;
    }

    /// Bytes that fills in progress have reserved in `tmp/`.
    pub fn fill_bytes_in_flight(&self) -> u64 {
        self.inner.fills.budget.in_flight()
    }

    /// Joins the fill in progress for `key` in this process, or makes the
    /// caller its producer. Fails only when the temp file cannot be made: a
    /// store error, not a fill's.
    pub fn fill(&self, key: &str) -> Result<Slot, StoreError> {
        Ok(match self.local_slot(key)? {
            Local::Joined(reader) => Slot::Joined(reader),
            Local::New(shared, tmp_path) => {
                Slot::Producer(Box::new(self.producer(key, shared, tmp_path)))
            }
        })
    }

    /// Like `fill`, for the whole cluster when this process is a replica: the
    /// replica that wins the fill's lease produces; any other relays the
    /// owner's fill as it arrives. `refetch` fetches from upstream again, for
    /// when this replica takes over from an owner that died.
    pub async fn fill_shared(&self, key: &str, refetch: Refetch) -> Result<Slot, StoreError> {
        let Some(cluster) = self.inner.fills.cluster.get().cloned() else {
            return self.fill(key);
        };
        let (shared, tmp_path) = match self.local_slot(key)? {
            Local::Joined(reader) => return Ok(Slot::Joined(reader)),
            Local::New(shared, tmp_path) => (shared, tmp_path),
        };
        // Dropped on an error below, the producer ends the local slot.
        let mut producer = Box::new(self.producer(key, shared, tmp_path));
        match cluster.claim(self, key).await? {
            relay::Claimed::Won(lease) => {
                producer.lease = Some(lease);
                Ok(Slot::Producer(producer))
            }
            relay::Claimed::Held { owner_url } => {
                let reader = producer.reader();
                tokio::spawn(relay::follow(cluster, producer, owner_url, refetch));
                Ok(Slot::Joined(reader))
            }
        }
    }

    /// Who this process is in leases: its replica name, or the process.
    pub(crate) fn lease_owner(&self) -> String {
        match self.inner.fills.cluster.get() {
            Some(cluster) => cluster.replica.clone(),
            None => format!("process {}", std::process::id()),
        }
    }

    /// The lease on a blob's object in a shared bucket, if free: held while
    /// it is written with its row, or deleted.
    pub(crate) async fn blob_lease(
        &self,
        digest: &Digest,
    ) -> Result<Option<lease::Held>, StoreError> {
        let key = format!("blob:{digest}");
        let owner = self.lease_owner();
        match self
            .inner
            .index
            .claim_fill(&key, &owner, "", lease::TTL)
            .await?
        {
            Lease::Won { epoch } => Ok(Some(lease::Held::start(self, &key, epoch))),
            Lease::Held { .. } => Ok(None),
        }
    }

    /// `blob_lease`, waiting a little for another holder (a sweep deleting,
    /// another commit of the same bytes) to finish.
    pub(crate) async fn blob_lease_waiting(
        &self,
        digest: &Digest,
    ) -> Result<lease::Held, StoreError> {
        for _ in 0..300 {
            if let Some(held) = self.blob_lease(digest).await? {
                return Ok(held);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(StoreError::Busy(format!(
            "blob {digest} is being written or deleted elsewhere; try again"
        )))
    }

    /// Makes this store a replica of a cluster; once, at start.
    pub fn join_cluster(&self, cluster: Cluster) {
        let _ = self.inner.fills.cluster.set(Arc::new(cluster));
    }

    fn local_slot(&self, key: &str) -> Result<Local, StoreError> {
        let fills = &self.inner.fills;
        let mut active = fills.active.lock().unpoisoned();
        if let Some(shared) = active.get(key).and_then(Weak::upgrade) {
            return Ok(Local::Joined(FillReader::new(shared)));
        }
        let tmp_path = self.new_temp_path("fill");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp_path)
            .map_err(|source| {
                self.inner
                    .counters
                    .fills_failed
                    .fetch_add(1, Ordering::Relaxed);
                StoreError::Io {
                    context: format!("creating {}", tmp_path.display()),
                    source,
                }
            })?;
        let (progress, _) = watch::channel(Progress::Waiting);
        let shared = Arc::new(Shared {
            file: Arc::new(file),
            progress,
        });
        active.insert(key.to_owned(), Arc::downgrade(&shared));
        Ok(Local::New(shared, tmp_path))
    }

    fn producer(&self, key: &str, shared: Arc<Shared>, tmp_path: PathBuf) -> FillProducer {
        let limits = *self.inner.fills.limits.lock().unpoisoned();
        FillProducer {
            key: key.to_owned(),
            shared,
            store: self.clone(),
            tmp_path: Some(tmp_path),
            hasher: Some(Algorithm::Sha256.hasher()),
            pending: Vec::new(),
            pending_len: 0,
            written: 0,
            prefix: 0,
            limit: None,
            head: None,
            limits,
            started: tokio::time::Instant::now(),
            reserved: 0,
            lease: None,
        }
    }

    /// The fill in progress for `key` in this process, for another replica
    /// that relays it, as frames from byte `from` on; `None` when there is none.
    pub fn fill_for_peer(
        &self,
        key: &str,
        from: u64,
    ) -> Option<impl Stream<Item = std::io::Result<Bytes>> + Send + 'static> {
        let fills = &self.inner.fills;
        let shared = fills.active.lock().unpoisoned().get(key)?.upgrade()?;
        Some(wire::frames(FillReader::new(shared), from))
    }
}

enum Local {
    Joined(FillReader),
    New(Arc<Shared>, PathBuf),
}

/// The one writer of a fill.
pub struct FillProducer {
    key: String,
    shared: Arc<Shared>,
    store: Store,
    /// `None` once renamed into the store or removed.
    tmp_path: Option<PathBuf>,
    hasher: Option<Hasher>,
    /// Chunks received and not yet written, `pending_len` bytes in all.
    pending: Vec<Bytes>,
    pending_len: usize,
    /// Bytes handed to the file (readers may read this far).
    written: u64,
    /// Bytes an earlier writer of this fill (a relay, a dead owner's) left in
    /// the file and readers may have been sent: they are compared with what
    /// arrives, never overwritten, so no reader gets a mix of two downloads.
    prefix: u64,
    limit: Option<u64>,
    head: Option<Arc<FillHead>>,
    limits: FillLimits,
    /// When the fill began: `limits.timeout` counts from here.
    started: tokio::time::Instant,
    /// Bytes held in the store's budget for this fill.
    reserved: u64,
    /// The cluster-wide lease, when this process is a replica.
    lease: Option<lease::Held>,
}

impl FillProducer {
    /// A reader of this fill, for the client whose request started it.
    pub fn reader(&self) -> FillReader {
        FillReader::new(self.shared.clone())
    }

    /// Hash with this algorithm instead of sha256 (a sha512-addressed blob).
    pub fn use_algorithm(&mut self, algorithm: Algorithm) {
        self.hasher = Some(algorithm.hasher());
    }

    /// Refuse content beyond `limit` bytes (the tightest of several calls wins).
    pub fn limit(&mut self, limit: u64) {
        self.limit = Some(self.limit.map_or(limit, |l| l.min(limit)));
    }

    /// Holds `total` bytes of the budget for this fill (more as it grows).
    fn reserve_to(&mut self, total: u64) -> Result<(), FillError> {
        if total <= self.reserved {
            return Ok(());
        }
        let budget = &self.store.inner.fills.budget;
        if budget.reserve(total - self.reserved, self.limits.max_size)? == Reserved::NeedsEviction {
            self.store.inner.grew.notify_one();
        }
        self.reserved = total;
        Ok(())
    }

    /// Upstream has answered: readers may start their responses.
    pub fn start(&mut self, head: FillHead) -> Result<(), FillError> {
        if let (Some(total), Some(limit)) = (head.total, self.limit)
            && total > limit
        {
            return Err(FillError::TooLarge(limit));
        }
        // An announced length is held at once: a fill that cannot fit fails now.
        if let Some(total) = head.total {
            self.reserve_to(total)?;
        }
        let head = Arc::new(head);
        self.head = Some(head.clone());
        self.shared.progress.send_replace(Progress::Streaming {
            head,
            written: self.prefix,
        });
        Ok(())
    }

    /// Appends a chunk from upstream.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), FillError> {
        let received = self.written + self.pending_len as u64 + chunk.len() as u64;
        if let Some(limit) = self.limit
            && received > limit
        {
            return Err(FillError::TooLarge(limit));
        }
        if let Some(total) = self.head.as_ref().and_then(|h| h.total)
            && received > total
        {
            return Err(FillError::LengthMismatch {
                announced: total,
                actual: received,
            });
        }
        if chunk.is_empty() {
            return Ok(());
        }
        self.reserve_to(received)?;
        self.pending_len += chunk.len();
        self.pending.push(chunk);
        if self.pending_len >= FLUSH_AT || self.pending.len() >= MAX_PENDING_CHUNKS {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), FillError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let chunks = std::mem::take(&mut self.pending);
        let len = std::mem::take(&mut self.pending_len) as u64;
        let file = self.shared.file.clone();
        let offset = self.written;
        let known = self.prefix.saturating_sub(offset).min(len) as usize;
        let mut hasher = self.hasher.take().ok_or(FillError::Abandoned)?;
        let (hasher, result) = tokio::task::spawn_blocking(move || {
            for chunk in &chunks {
                hasher.update(chunk);
            }
            let (seen, new) = split_at(&chunks, known);
            let result = compare_at(&file, &seen, offset)
                .and_then(|()| write_all_at(&file, &new, offset + known as u64));
            (hasher, result)
        })
        .await?;
        self.hasher = Some(hasher);
        result?;
        self.written = offset + len;
        let head = match &self.head {
            Some(head) => head.clone(),
            None => {
                let head = Arc::new(FillHead::default());
                self.head = Some(head.clone());
                head
            }
        };
        self.shared.progress.send_replace(Progress::Streaming {
            head,
            written: self.written.max(self.prefix),
        });
        Ok(())
    }

    /// Bytes received so far (written or compared).
    pub fn received(&self) -> u64 {
        self.written + self.pending_len as u64
    }

    /// Starts the content over from byte 0, for a new download of it: what is
    /// in the file stays and is compared with what comes.
    pub(crate) fn restart(&mut self) {
        self.prefix = self.prefix.max(self.written);
        self.written = 0;
        self.pending.clear();
        self.pending_len = 0;
        self.hasher = Some(Algorithm::Sha256.hasher());
        self.started = tokio::time::Instant::now();
    }

    /// Verifies what was written (`expected` digest, then `validate` on the
    /// file), makes it durable, moves it into the store and indexes it.
    /// Readers are released by `Committed::publish` (or its drop), after the
    /// caller has indexed whatever else refers to the blob.
    pub async fn commit(
        mut self,
        expected: Option<&Digest>,
        validate: Option<Validator>,
    ) -> Result<Committed, FillError> {
        let result = self.commit_inner(expected, validate).await;
        if let Err(error) = &result {
            self.fail(error.clone());
        }
        result
    }

    async fn commit_inner(
        &mut self,
        expected: Option<&Digest>,
        validate: Option<Validator>,
    ) -> Result<Committed, FillError> {
        self.flush().await?;
        let size = self.written;
        if size < self.prefix {
            // Readers have been sent more than this download brought.
            return Err(FillError::LengthMismatch {
                announced: self.prefix,
                actual: size,
            });
        }
        if let Some(total) = self.head.as_ref().and_then(|h| h.total)
            && total != size
        {
            return Err(FillError::LengthMismatch {
                announced: total,
                actual: size,
            });
        }
        let digest = self.hasher.take().ok_or(FillError::Abandoned)?.finish();
        if let Some(expected) = expected
            && *expected != digest
        {
            return Err(FillError::DigestMismatch {
                expected: expected.to_string(),
                actual: digest.to_string(),
            });
        }
        if self.lease.as_ref().is_some_and(lease::Held::is_fenced) {
            return Err(FillError::Fenced);
        }
        let tmp_path = self.tmp_path.clone().ok_or(FillError::Abandoned)?;
        let file = self.shared.file.clone();
        let check_path = tmp_path.clone();
        tokio::task::spawn_blocking(move || -> Result<(), FillError> {
            if let Some(validate) = validate {
                validate(&check_path).map_err(|e| FillError::Invalid(e.to_string()))?;
            }
            file.sync_all()?;
            Ok(())
        })
        .await??;
        self.store
            .adopt_file(&tmp_path, &digest, size, false)
            .await?;
        self.tmp_path = None;
        let budget = &self.store.inner.fills.budget;
        budget.settle(size);
        budget.release(std::mem::take(&mut self.reserved).saturating_sub(size));
        let counters = &self.store.inner.counters;
        counters.fills_completed.fetch_add(1, Ordering::Relaxed);
        counters.bytes_filled.fetch_add(size, Ordering::Relaxed);
        let head = self.head.clone().unwrap_or_default();
        Ok(Committed {
            digest,
            size,
            head,
            shared: self.shared.clone(),
            store: self.store.clone(),
            key: std::mem::take(&mut self.key),
            published: false,
            lease: self.lease.take(),
        })
    }

    /// Ends the fill with an error every reader sees; removes the temp file.
    pub fn fail(&mut self, error: FillError) {
        self.store
            .inner
            .counters
            .fills_failed
            .fetch_add(1, Ordering::Relaxed);
        self.end(error);
    }

    /// Ends a fill that turned out not to be needed (what it would fetch is
    /// already stored): its readers look again, and no failure is counted.
    pub fn withdraw(mut self) {
        self.end(FillError::Abandoned);
    }

    /// Ends a relayed fill: the owner stored the object; this replica's copy
    /// only served its own readers, released once it is all here and hashes
    /// to the owner's digest.
    pub(crate) async fn finish_relayed(mut self, digest: Digest, size: u64) {
        if let Err(error) = self.check_relayed(&digest, size).await {
            self.fail(error);
            return;
        }
        let head = self.head.clone().unwrap_or_default();
        self.shared
            .progress
            .send_replace(Progress::Done { head, digest, size });
        if let Some(path) = self.tmp_path.take() {
            // Readers hold the open file; the name is no longer needed.
            let _ = std::fs::remove_file(path);
        }
        let budget = &self.store.inner.fills.budget;
        budget.release(std::mem::take(&mut self.reserved));
        self.store.inner.fills.remove(&self.key, &self.shared);
    }

    async fn check_relayed(&mut self, digest: &Digest, size: u64) -> Result<(), FillError> {
        self.flush().await?;
        if self.written != size || size < self.prefix {
            return Err(FillError::LengthMismatch {
                announced: size,
                actual: self.written,
            });
        }
        let hasher = self.hasher.take().ok_or(FillError::Abandoned)?;
        let ours = if digest.algorithm() == Algorithm::Sha256 {
            hasher.finish()
        } else {
            let file = self.shared.file.clone();
            let algorithm = digest.algorithm();
            tokio::task::spawn_blocking(move || hash_file(&file, size, algorithm)).await??
        };
        if ours != *digest {
            return Err(FillError::DigestMismatch {
                expected: digest.to_string(),
                actual: ours.to_string(),
            });
        }
        Ok(())
    }

    fn end(&mut self, error: FillError) {
        self.lease = None;
        self.shared.progress.send_replace(Progress::Failed(error));
        if let Some(path) = self.tmp_path.take() {
            let _ = std::fs::remove_file(path);
        }
        let budget = &self.store.inner.fills.budget;
        budget.release(std::mem::take(&mut self.reserved));
        self.store.inner.fills.remove(&self.key, &self.shared);
    }
}

/// Checks a complete temp file before it enters the store (runs on a blocking thread).
pub type Validator = Box<
    dyn FnOnce(&std::path::Path) -> Result<(), Box<dyn std::error::Error + Send + Sync>> + Send,
>;

impl Drop for FillProducer {
    fn drop(&mut self) {
        if self.tmp_path.is_some() {
            self.fail(FillError::Abandoned);
        }
    }
}

/// A fill that is stored and indexed; readers are released when this is
/// published or dropped.
pub struct Committed {
    pub digest: Digest,
    pub size: u64,
    pub head: Arc<FillHead>,
    shared: Arc<Shared>,
    store: Store,
    key: String,
    published: bool,
    /// Released once readers are: a replica that claims the fill after that
    /// finds it stored.
    lease: Option<lease::Held>,
}

impl Committed {
    pub fn publish(mut self) {
        self.release();
    }

    fn release(&mut self) {
        if self.published {
            return;
        }
        self.published = true;
        self.shared.progress.send_replace(Progress::Done {
            head: self.head.clone(),
            digest: self.digest.clone(),
            size: self.size,
        });
        self.store.inner.fills.remove(&self.key, &self.shared);
        self.lease = None;
    }
}

impl Drop for Committed {
    fn drop(&mut self) {
        self.release();
    }
}

/// One client's view of a fill.
pub struct FillReader {
    shared: Arc<Shared>,
    progress: watch::Receiver<Progress>,
}

impl FillReader {
    fn new(shared: Arc<Shared>) -> FillReader {
        let progress = shared.progress.subscribe();
        FillReader { shared, progress }
    }

    /// Waits until upstream has answered (or the fill failed).
    pub async fn head(&mut self) -> Result<Arc<FillHead>, FillError> {
        loop {
            match &*self.progress.borrow_and_update() {
                Progress::Waiting => {}
                Progress::Streaming { head, .. } | Progress::Done { head, .. } => {
                    return Ok(head.clone());
                }
                Progress::Failed(error) => return Err(error.clone()),
            }
            if self.progress.changed().await.is_err() {
                return Err(FillError::Abandoned);
            }
        }
    }

    /// Waits for the fill to finish; the digest and size of what was stored.
    pub async fn finished(&mut self) -> Result<(Digest, u64), FillError> {
        loop {
            match &*self.progress.borrow_and_update() {
                Progress::Done { digest, size, .. } => return Ok((digest.clone(), *size)),
                Progress::Failed(error) => return Err(error.clone()),
                _ => {}
            }
            if self.progress.changed().await.is_err() {
                return Err(FillError::Abandoned);
            }
        }
    }

    /// Bytes `start..end` (end exclusive, `None` = to the end) as they arrive.
    /// Ends with an error if the fill fails, before the body is complete.
    pub fn stream(
        self,
        start: u64,
        end: Option<u64>,
    ) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        futures_util::stream::unfold((self, start), move |(mut reader, position)| async move {
            match reader.next_chunk(position, end).await {
                Ok(Some(bytes)) => {
                    let next = position + bytes.len() as u64;
                    Some((Ok(bytes), (reader, next)))
                }
                Ok(None) => None,
                Err(error) => {
                    // Poison the position so the stream ends after the error.
                    Some((Err(std::io::Error::other(error)), (reader, u64::MAX)))
                }
            }
        })
    }

    pub(crate) async fn next_chunk(
        &mut self,
        position: u64,
        end: Option<u64>,
    ) -> Result<Option<Bytes>, FillError> {
        if position == u64::MAX {
            return Ok(None);
        }
        loop {
            let (readable, complete) = match &*self.progress.borrow_and_update() {
                Progress::Waiting => (0, false),
                // Hold back the last byte written until the whole file verifies.
                Progress::Streaming { written, .. } => (written.saturating_sub(1), false),
                Progress::Done { size, .. } => (*size, true),
                Progress::Failed(error) => return Err(error.clone()),
            };
            // A range's own last byte waits for the verdict on the whole file
            // too: otherwise a range that ends early completes unverified.
            let end = if complete {
                end
            } else {
                end.map(|end| end.saturating_sub(1))
            };
            let stop = end.map_or(readable, |end| end.min(readable));
            if position < stop {
                let len = (stop - position).min(CHUNK as u64) as usize;
                let file = self.shared.file.clone();
                let bytes = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; len];
                    file.read_exact_at(&mut buf, position)
                        .map(|()| Bytes::from(buf))
                })
                .await??;
                return Ok(Some(bytes));
            }
            if complete {
                return Ok(None);
            }
            if self.progress.changed().await.is_err() {
                return Err(FillError::Abandoned);
            }
        }
    }
}

/// The digest of the first `size` bytes of `file`.
fn hash_file(file: &std::fs::File, size: u64, algorithm: Algorithm) -> std::io::Result<Digest> {
    let mut hasher = algorithm.hasher();
    let mut buf = vec![0u8; CHUNK];
    let mut position = 0;
    while position < size {
        let len = (size - position).min(CHUNK as u64) as usize;
        file.read_exact_at(&mut buf[..len], position)?;
        hasher.update(&buf[..len]);
        position += len as u64;
    }
    Ok(hasher.finish())
}

/// `chunks` cut after `at` bytes: the part before and the part after.
fn split_at(chunks: &[Bytes], at: usize) -> (Vec<Bytes>, Vec<Bytes>) {
    let (mut before, mut after) = (Vec::new(), Vec::new());
    let mut left = at;
    for chunk in chunks {
        if left >= chunk.len() {
            left -= chunk.len();
            before.push(chunk.clone());
        } else if left > 0 {
            before.push(chunk.slice(..left));
            after.push(chunk.slice(left..));
            left = 0;
        } else {
            after.push(chunk.clone());
        }
    }
    (before, after)
}

/// Checks that the file holds `chunks` at `offset`: bytes a reader may have
/// been sent already, which a new download must repeat exactly.
fn compare_at(file: &std::fs::File, chunks: &[Bytes], offset: u64) -> std::io::Result<()> {
    let mut position = offset;
    for chunk in chunks {
        let mut held = vec![0u8; chunk.len()];
        file.read_exact_at(&mut held, position)?;
        if held != chunk[..] {
            return Err(std::io::Error::other(format!(
                "a new download differs from the bytes already sent, near byte {position}"
            )));
        }
        position += chunk.len() as u64;
    }
    Ok(())
}

/// Writes `chunks` back to back at `offset`, in as few `pwritev` calls as the
/// kernel allows.
#[cfg(target_os = "linux")]
fn write_all_at(file: &std::fs::File, chunks: &[Bytes], offset: u64) -> std::io::Result<()> {
    let mut slices: Vec<std::io::IoSlice<'_>> =
        chunks.iter().map(|c| std::io::IoSlice::new(c)).collect();
    let mut slices = &mut slices[..];
    let mut offset = offset;
    while !slices.is_empty() {
        let batch = slices.len().min(MAX_PENDING_CHUNKS);
        let written = match rustix::io::pwritev(file, &slices[..batch], offset) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(errno) => return Err(errno.into()),
        };
        offset += written as u64;
        std::io::IoSlice::advance_slices(&mut slices, written);
    }
    Ok(())
}

/// Writes `chunks` back to back at `offset` (rustix is a Linux dependency
/// here; elsewhere one positioned write per chunk).
#[cfg(not(target_os = "linux"))]
fn write_all_at(file: &std::fs::File, chunks: &[Bytes], offset: u64) -> std::io::Result<()> {
    let mut offset = offset;
    for chunk in chunks {
        file.write_all_at(chunk, offset)?;
        offset += chunk.len() as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    async fn collect(
        reader: FillReader,
        start: u64,
        end: Option<u64>,
    ) -> (Vec<u8>, Option<String>) {
        let mut stream = Box::pin(reader.stream(start, end));
        let mut bytes = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(error) => return (bytes, Some(error.to_string())),
            }
        }
        (bytes, None)
    }

    fn content(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn readers_that_join_at_any_time_get_every_byte_and_one_fill_runs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let data = content(3 * CHUNK + 123);
        let digest = Digest::sha256_of(&data);
        let Slot::Producer(mut producer) = store.fill("k").unwrap() else {
            panic!("first caller produces")
        };
        let early = producer.reader();
        let Slot::Joined(joined) = store.fill("k").unwrap() else {
            panic!("second caller joins")
        };
        let readers = vec![
            tokio::spawn(collect(early, 0, None)),
            tokio::spawn(collect(joined, 0, None)),
        ];
        producer
            .start(FillHead {
                total: Some(data.len() as u64),
                media_type: None,
            })
            .unwrap();
        let mut ranged = None;
        for (i, piece) in data.chunks(10_000).enumerate() {
            producer.write(Bytes::copy_from_slice(piece)).await.unwrap();
            if i == 40 {
                let Slot::Joined(late) = store.fill("k").unwrap() else {
                    panic!("late caller joins")
                };
                ranged = Some(tokio::spawn(collect(late, 5000, Some(700_000))));
            }
        }
        let committed = producer.commit(Some(&digest), None).await.unwrap();
        committed.publish();
        for reader in readers {
            let (bytes, error) = reader.await.unwrap();
            assert_eq!(error, None);
            assert!(bytes == data, "a reader got different bytes");
        }
        let (bytes, error) = ranged.unwrap().await.unwrap();
        assert_eq!(error, None);
        assert!(bytes == data[5000..700_000]);
        assert!(
            matches!(store.fill("k").unwrap(), Slot::Producer(_)),
            "finished fills leave the table"
        );
        assert_eq!(
            store.has_blob(&digest).await.unwrap(),
            Some(data.len() as u64)
        );
    }

    #[tokio::test]
    async fn a_digest_mismatch_never_completes_a_body_and_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let data = content(100_000);
        let wrong = Digest::sha256_of(b"something else");
        let Slot::Producer(mut producer) = store.fill("bad").unwrap() else {
            panic!()
        };
        let reader = tokio::spawn(collect(producer.reader(), 0, None));
        producer
            .start(FillHead {
                total: Some(data.len() as u64),
                media_type: None,
            })
            .unwrap();
        producer.write(Bytes::from(data.clone())).await.unwrap();
        let error = producer.commit(Some(&wrong), None).await.err().unwrap();
        assert!(matches!(error, FillError::DigestMismatch { .. }));
        let (bytes, error) = reader.await.unwrap();
        assert!(error.is_some(), "the body must end in an error");
        assert!(bytes.len() < data.len(), "the last byte is held back");
        assert_eq!(
            store.has_blob(&Digest::sha256_of(&data)).await.unwrap(),
            None
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0,
            "temp file removed"
        );
    }

    #[tokio::test]
    async fn a_dropped_producer_fails_its_readers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let Slot::Producer(mut producer) = store.fill("x").unwrap() else {
            panic!()
        };
        let mut reader = producer.reader();
        producer.start(FillHead::default()).unwrap();
        producer
            .write(Bytes::from_static(b"partial"))
            .await
            .unwrap();
        drop(producer);
        assert_eq!(reader.finished().await.err(), Some(FillError::Abandoned));
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    #[tokio::test]
    async fn content_over_the_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let Slot::Producer(mut producer) = store.fill("big").unwrap() else {
            panic!()
        };
        producer.limit(10);
        assert_eq!(
            producer.start(FillHead {
                total: Some(11),
                media_type: None
            }),
            Err(FillError::TooLarge(10))
        );
        producer.start(FillHead::default()).unwrap();
        assert_eq!(
            producer.write(Bytes::from_static(&[0; 11])).await,
            Err(FillError::TooLarge(10))
        );
    }

    fn failures(store: &Store) -> u64 {
        store.counters().fills_failed.load(Ordering::Relaxed)
    }

    #[tokio::test]
    async fn a_range_that_ends_early_waits_for_the_verdict_on_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        // Past FLUSH_AT: the whole range is on disk before the commit.
        let data = content(2 * FLUSH_AT + 5);
        let honest = Digest::sha256_of(&data);
        for expected in [Digest::sha256_of(b"not this"), honest.clone()] {
            let Slot::Producer(mut producer) = store.fill("ranged").unwrap() else {
                panic!("no fill is running")
            };
            let mut ranged = Box::pin(producer.reader().stream(10, Some(1000)));
            producer.start(FillHead::default()).unwrap();
            producer.write(Bytes::from(data.clone())).await.unwrap();
            let mut bytes = Vec::new();
            while bytes.len() < 989 {
                bytes.extend_from_slice(&ranged.next().await.unwrap().unwrap());
            }
            assert_eq!(
                bytes.len(),
                989,
                "all but the range's last byte, before the verdict"
            );
            if let Ok(committed) = producer.commit(Some(&expected), None).await {
                committed.publish();
            }
            let mut error = None;
            while let Some(item) = ranged.next().await {
                match item {
                    Ok(chunk) => bytes.extend_from_slice(&chunk),
                    Err(e) => error = Some(e.to_string()),
                }
            }
            if expected == honest {
                assert_eq!(error, None);
                assert!(bytes == data[10..1000]);
            } else {
                assert!(error.is_some(), "a range of unverified bytes must fail");
                assert_eq!(bytes.len(), 989, "and never get its last byte");
            }
        }
    }

    #[tokio::test]
    async fn a_withdrawn_fill_sends_readers_back_and_counts_no_failure() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let Slot::Producer(producer) = store.fill("w").unwrap() else {
            panic!()
        };
        let mut reader = producer.reader();
        producer.withdraw();
        assert_eq!(reader.head().await.err(), Some(FillError::Abandoned));
        assert_eq!(failures(&store), 0);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        assert!(matches!(store.fill("w").unwrap(), Slot::Producer(_)));
    }

    #[tokio::test]
    async fn a_fill_past_max_size_is_refused_and_gives_back_what_it_held() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        store.set_fill_limits(FillLimits {
            max_size: Some(FLUSH_AT as u64 + 100),
            ..FillLimits::default()
        });
        let Slot::Producer(mut announced) = store.fill("a").unwrap() else {
            panic!()
        };
        let total = Some(FLUSH_AT as u64 + 101);
        let error = announced.start(FillHead {
            total,
            media_type: None,
        });
        assert!(matches!(error, Err(FillError::NoRoom { .. })), "{error:?}");
        announced.fail(error.unwrap_err());

        let Slot::Producer(mut endless) = store.fill("e").unwrap() else {
            panic!()
        };
        let reader = tokio::spawn(collect(endless.reader(), 0, None));
        endless.start(FillHead::default()).unwrap();
        let chunk = Bytes::from(vec![0u8; FLUSH_AT / 2]);
        endless.write(chunk.clone()).await.unwrap();
        assert_eq!(store.fill_bytes_in_flight(), FLUSH_AT as u64 / 2);
        endless.write(chunk.clone()).await.unwrap();
        let error = endless.write(chunk).await.unwrap_err();
        assert!(matches!(error, FillError::NoRoom { .. }), "{error:?}");
        endless.fail(error);
        let (_, error) = reader.await.unwrap();
        assert!(error.unwrap().contains("cache.max_size"));
        assert_eq!(store.fill_bytes_in_flight(), 0);
        assert_eq!(failures(&store), 2);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    #[tokio::test]
    async fn pump_cuts_off_a_body_that_is_too_slow_or_too_late() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let timeout = Duration::from_millis(1500);
        let window = Duration::from_secs(1);
        // Twenty bytes a second: under a hundred, over one.
        let drip = || {
            futures_util::stream::unfold((), |()| async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), ()))
            })
        };
        let cases = [
            (
                100,
                FillError::TooSlow {
                    bytes_per_second: 100,
                    window,
                },
            ),
            (1, FillError::TimedOut(timeout)),
        ];
        for (i, (bytes_per_second, expected)) in cases.into_iter().enumerate() {
            store.set_fill_limits(FillLimits {
                timeout: Some(timeout),
                min_rate: Some(MinRate {
                    bytes_per_second,
                    window,
                }),
                ..FillLimits::default()
            });
            let Slot::Producer(mut producer) = store.fill(&format!("p{i}")).unwrap() else {
                panic!()
            };
            producer.start(FillHead::default()).unwrap();
            let started = tokio::time::Instant::now();
            assert_eq!(producer.pump(drip()).await, Err(expected.clone()));
            let took = started.elapsed();
            let earliest = match expected {
                FillError::TooSlow { .. } => window,
                _ => timeout,
            };
            assert!(
                took >= earliest && took < earliest + Duration::from_secs(5),
                "{took:?}"
            );
        }
        let honest =
            futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"ok"))]);
        let Slot::Producer(mut producer) = store.fill("honest").unwrap() else {
            panic!()
        };
        producer.start(FillHead::default()).unwrap();
        assert_eq!(producer.pump(honest).await, Ok(()));
    }
}
