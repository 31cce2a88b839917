//! Where blob bytes live, behind the one seam a second backend (S3, issue
//! 12) implements again: open and stream a range, a verified write-once
//! commit, delete, list, and taking a bad object out of service. What the
//! bytes mean (digest checks on read, rows, eviction) is the store's; a
//! backend only keeps objects. `LocalBlobs`, files under `blobs/`, is the
//! default, and its fast paths (`openat2`, `preadv2`) stay inside it;
//! `S3Blobs` keeps objects in an S3-compatible bucket. The store holds
//! `Blobs`, an enum of the two rather than a `dyn`, so a hit costs a match,
//! not an indirect call.

mod local;
mod nowait;
mod s3;

use std::path::Path;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::Stream;

use super::{Digest, StoreError};

pub(crate) use local::LocalBlobs;
pub(crate) use s3::S3Blobs;
pub use s3::S3Settings;

/// Where a store keeps blob bytes (`[storage] backend`).
#[derive(Clone, Debug, Default)]
pub enum Storage {
    /// Files under `data_dir/blobs`.
    #[default]
    Files,
    S3(S3Settings),
}

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

/// Where a backend notes the multipart uploads it has begun and not ended,
/// so that one its process never finished (killed mid-upload) is found and
/// aborted by a sweep, in any process. Local files need none.
pub(crate) trait UploadJournal: Sync {
    /// Upload `upload_id` of `object_key` is begun.
    fn begun(
        &self,
        upload_id: &str,
        object_key: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// A part of `upload_id` went in: it is alive.
    fn progressed(&self, upload_id: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// `upload_id` is completed or aborted.
    fn ended(&self, upload_id: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
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
    /// staged file behind either. A backend that uploads in parts notes its
    /// uploads in `journal`.
    async fn commit(
        &self,
        staged: &Path,
        digest: &Digest,
        journal: &impl UploadJournal,
    ) -> Result<(), StoreError>;

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

/// The blob store a `Store` was opened with.
pub(crate) enum Blobs {
    Local(LocalBlobs),
    S3(S3Blobs),
}

/// An open object of either backend.
pub(crate) enum AnyObject {
    Local(local::LocalObject),
    S3(s3::S3Object),
}

impl Blobs {
    pub(crate) fn new(data_dir: &Path, storage: &Storage) -> Result<Blobs, StoreError> {
        Ok(match storage {
            Storage::Files => Blobs::Local(LocalBlobs::new(data_dir)),
            Storage::S3(settings) => Blobs::S3(S3Blobs::new(settings)?),
        })
    }

    /// Where push sessions keep their chunks when replicas share them: the
    /// bucket; `None` on files, where each session is one local file.
    pub(crate) fn session_parts(&self) -> Option<&S3Blobs> {
        match self {
            Blobs::S3(bucket) => Some(bucket),
            Blobs::Local(_) => None,
        }
    }

    /// Whether other processes read these bytes too (a bucket replicas
    /// share), so one process's delete may cut another's read short.
    pub(crate) fn is_shared(&self) -> bool {
        matches!(self, Blobs::S3(_))
    }

    /// The local file of a blob, for tests that damage or remove it.
    #[cfg(test)]
    pub(crate) fn path(&self, digest: &Digest) -> std::path::PathBuf {
        match self {
            Blobs::Local(local) => local.path(digest),
            Blobs::S3(_) => std::path::PathBuf::from("/nonexistent/s3-object"),
        }
    }
}

fn opened<O>(opened: Option<Opened<O>>, wrap: fn(O) -> AnyObject) -> Option<Opened<AnyObject>> {
    opened.map(|opened| match opened {
        Opened::Whole(bytes, object) => Opened::Whole(bytes, wrap(object)),
        Opened::Object(object) => Opened::Object(wrap(object)),
    })
}

impl BlobObject for AnyObject {
    fn size(&self) -> u64 {
        match self {
            AnyObject::Local(object) => object.size(),
            AnyObject::S3(object) => object.size(),
        }
    }

    async fn stream(
        &self,
        start: u64,
        len: u64,
    ) -> std::io::Result<impl Stream<Item = std::io::Result<Bytes>> + Send + use<>> {
        Ok(match self {
            AnyObject::Local(object) => {
                futures_util::future::Either::Left(object.stream(start, len).await?)
            }
            AnyObject::S3(object) => {
                futures_util::future::Either::Right(object.stream(start, len).await?)
            }
        })
    }
}

impl BlobStore for Blobs {
    type Object = AnyObject;

    async fn open(
        &self,
        digest: &Digest,
        read_limit: u64,
    ) -> Result<Option<Opened<AnyObject>>, StoreError> {
        Ok(match self {
            Blobs::Local(local) => opened(local.open(digest, read_limit).await?, AnyObject::Local),
            Blobs::S3(s3) => opened(s3.open(digest, read_limit).await?, AnyObject::S3),
        })
    }

    async fn commit(
        &self,
        staged: &Path,
        digest: &Digest,
        journal: &impl UploadJournal,
    ) -> Result<(), StoreError> {
        match self {
            Blobs::Local(local) => local.commit(staged, digest, journal).await,
            Blobs::S3(s3) => s3.commit(staged, digest, journal).await,
        }
    }

    async fn delete(&self, digest: &Digest) -> Result<(), StoreError> {
        match self {
            Blobs::Local(local) => local.delete(digest).await,
            Blobs::S3(s3) => s3.delete(digest).await,
        }
    }

    async fn contains(&self, digest: &Digest) -> bool {
        match self {
            Blobs::Local(local) => local.contains(digest).await,
            Blobs::S3(s3) => s3.contains(digest).await,
        }
    }

    async fn list(&self) -> Result<Vec<ListedBlob>, StoreError> {
        match self {
            Blobs::Local(local) => local.list().await,
            Blobs::S3(s3) => s3.list().await,
        }
    }

    async fn quarantine(
        &self,
        digest: &Digest,
        opened: &AnyObject,
    ) -> Result<Quarantined, StoreError> {
        match (self, opened) {
            (Blobs::Local(local), AnyObject::Local(object)) => {
                local.quarantine(digest, object).await
            }
            (Blobs::S3(s3), AnyObject::S3(object)) => s3.quarantine(digest, object).await,
            // An object opened from one backend cannot be in the other.
            _ => Ok(Quarantined::Replaced),
        }
    }

    async fn is_quarantined(&self, digest: &Digest) -> bool {
        match self {
            Blobs::Local(local) => local.is_quarantined(digest).await,
            Blobs::S3(s3) => s3.is_quarantined(digest).await,
        }
    }
}
