//! The store's content by digest, as the protocols see it: put small objects,
//! open or read what is stored, note reads for eviction. A borrow of the
//! store that delegates; the I/O stays in `read`, `quarantine` and `mod`.

use super::{BlobFile, Digest, OpenedBlob, Store, StoreError};

/// Why a blob is in the store, which decides whether eviction may take it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Pushed here: the only copy, never evicted.
    Hosted,
    /// Fetched from an upstream: may be evicted and fetched again.
    Cached,
}

impl Store {
    /// Blob bytes by digest.
    pub fn blobs(&self) -> StoredBlobs<'_> {
        StoredBlobs { store: self }
    }
}

/// What a protocol may do with stored content; no path leaves it.
#[derive(Clone, Copy)]
pub struct StoredBlobs<'a> {
    store: &'a Store,
}

impl StoredBlobs<'_> {
    /// Stores a small object held in memory (a manifest, a `.info`) and
    /// returns its sha256 digest.
    pub async fn put(&self, bytes: &[u8], origin: Origin) -> Result<Digest, StoreError> {
        self.store.put_bytes(bytes, origin == Origin::Hosted).await
    }

    /// The size of a stored blob; `None` when the store does not have it.
    pub async fn size(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        self.store.has_blob(digest).await
    }

    /// Pins an indexed blob against eviction (pushed content, a mount).
    /// `false` when no row indexes it, e.g. eviction removed it a moment ago.
    pub async fn pin_hosted(&self, digest: &Digest) -> Result<bool, StoreError> {
        self.store.mark_hosted(digest).await
    }

    /// Notes a read for LRU eviction; written to the index by `flush_access`.
    pub fn touch(&self, digest: &Digest) {
        self.store.touch(digest);
    }

    /// Writes the noted reads to the index in one transaction.
    pub async fn flush_access(&self) -> Result<usize, StoreError> {
        self.store.flush_access().await
    }

    /// Opens a stored blob, or `None` if the store does not have it.
    pub async fn open(&self, digest: &Digest) -> Result<Option<BlobFile>, StoreError> {
        self.store.open_blob(digest).await
    }

    /// Opens a stored blob; one of at most `read_limit` bytes is read whole
    /// and checked against its digest (one that fails is quarantined and
    /// reported absent).
    pub async fn open_or_read(
        &self,
        digest: &Digest,
        read_limit: u64,
    ) -> Result<Option<OpenedBlob>, StoreError> {
        self.store.open_or_read_blob(digest, read_limit).await
    }

    /// Reads a small stored blob whole (manifests, `.info`, `.mod`), checked
    /// against its digest; one over `limit` bytes is an error.
    pub async fn read_small(
        &self,
        digest: &Digest,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.read_small(digest, limit).await
    }

    /// Whether a blob was found corrupt and quarantined.
    pub async fn is_quarantined(&self, digest: &Digest) -> bool {
        self.store.is_quarantined(digest).await
    }
}
