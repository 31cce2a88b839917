//! Where blob bytes live, behind the one seam a second backend (S3, issue
//! 12) implements again: open and stream a range, a verified write-once
//! commit, delete, list, and taking a bad object out of service. What the
//! bytes mean (digest checks on read, rows, eviction) is the store's; a
//! backend only keeps objects. `LocalBlobs`, files under `blobs/`, is the
//! first, and its fast paths (`openat2`, `preadv2`) stay inside it. The store
//! holds it by type, not behind `dyn`, so a hit costs no extra call.

mod local;
mod nowait;

use std::path::Path;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::Stream;

use super::{Digest, StoreError};

pub(crate) use local::LocalBlobs;

/// One stored object, as a listing sees it.
pub(crate) struct ListedBlob {
    pub(crate) digest: Digest,
    pub(crate) modified: SystemTime,
    pub(crate) len: u64,
}

/// What `BlobStore::open` found.
pub(crate) enum Opened<O> {
    /// An object of at most the asked-for size, read whole, and the open
    /// object it came from (its identity matters if the bytes are bad).
    Whole(Vec<u8>, O),
    /// A larger object, open for streaming.
    Object(O),
}

/// An open object. It stays readable while held, whatever happens to its
/// name meanwhile (eviction, quarantine, a replacement).
pub(crate) trait BlobObject: Send + Sync + 'static {
    fn size(&self) -> u64;

    /// `len` bytes from `start`, in chunks small enough to keep memory flat.
    async fn stream(
        &self,
        start: u64,
        len: u64,
    ) -> std::io::Result<impl Stream<Item = std::io::Result<Bytes>> + Send + use<Self>>;
}

/// Whether `quarantine` moved the object.
pub(crate) enum Quarantined {
    /// Out of service; the operator finds it at the location given.
    Moved(String),
    /// The digest no longer names the object that was read: someone
    /// quarantined it already, and a good copy may have taken its place.
    Replaced,
}

pub(crate) trait BlobStore: Send + Sync {
    type Object: BlobObject;

    /// Opens the object for `digest`, `None` if there is none. One of at most
    /// `read_limit` bytes comes back read whole (an empty one too, unless
    /// `read_limit` is zero), so the caller can check it before use.
    async fn open(
        &self,
        digest: &Digest,
        read_limit: u64,
    ) -> Result<Option<Opened<Self::Object>>, StoreError>;

    /// Makes the complete, verified, fsynced staged file the object for
    /// `digest`. Write-once: if the object exists already (same digest, same
    /// bytes), it stays and the staged file goes. A failed commit leaves no
    /// staged file behind either.
    async fn commit(&self, staged: &Path, digest: &Digest) -> Result<(), StoreError>;

    /// Removes the object for `digest`; one already gone is no error.
    async fn delete(&self, digest: &Digest) -> Result<(), StoreError>;

    /// Whether an object for `digest` exists.
    async fn contains(&self, digest: &Digest) -> bool;

    /// Every stored object. Names that are no digest are logged and left alone.
    async fn list(&self) -> Result<Vec<ListedBlob>, StoreError>;

    /// Takes the object `opened` (read and found bad) out of service, kept
    /// aside for the operator, if `digest` still names it.
    async fn quarantine(
        &self,
        digest: &Digest,
        opened: &Self::Object,
    ) -> Result<Quarantined, StoreError>;

    /// Whether an object for `digest` was found bad and put aside.
    async fn is_quarantined(&self, digest: &Digest) -> bool;
}
