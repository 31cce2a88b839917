//! Reading stored blobs, never trusting the bytes on disk blindly: a blob read
//! whole (the small-blob path) is hashed before it is handed out; a streamed
//! one is hashed as it goes, with its last byte held back until the digest
//! matches, when `cache.verify_on_read = "all"`. A blob that fails its check
//! is quarantined (`quarantine`) and reads as absent from then on, so the
//! caller treats it as a miss (or, for pushed content, names the corruption).

use std::pin::Pin;

use bytes::Bytes;
use futures_util::future::Either;
use futures_util::{Stream, StreamExt, TryStreamExt};

use super::blob_store::{BlobObject, BlobStore, Opened};
use super::evict::ReadGuard;
use super::{BlobObjectOf, Digest, Hasher, Store, StoreError, io_error};

/// Which reads re-hash what they serve (`cache.verify_on_read`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyOnRead {
    /// Blobs read whole into memory (at most 64 KiB: configs, manifests,
    /// `.info`/`.mod`, small layers); streamed ones are served as stored.
    #[default]
    Small,
    /// Streamed blobs too, Range requests included (which then read the whole file).
    All,
}

/// What `open_or_read_blob` found: a small blob's bytes, or the open file.
pub enum OpenedBlob {
    Read(Bytes),
    File(BlobFile),
}

impl OpenedBlob {
    pub fn size(&self) -> u64 {
        match self {
            OpenedBlob::Read(bytes) => bytes.len() as u64,
            OpenedBlob::File(file) => file.size,
        }
    }
}

/// An open, complete blob. While it (or a stream made from it) lives, the
/// blob is marked in use and eviction passes it over.
pub struct BlobFile {
    object: BlobObjectOf,
    pub size: u64,
    digest: Digest,
    guard: ReadGuard,
}

impl BlobFile {
    /// `len` bytes from `start`, streamed; verified against the digest when
    /// the store is set to (`VerifyOnRead::All`).
    pub async fn stream(
        self,
        start: u64,
        len: u64,
    ) -> Result<impl Stream<Item = std::io::Result<Bytes>> + Send + 'static, StoreError> {
        if self.guard.store().verify_on_read() == VerifyOnRead::All {
            let verifier = Verifier::new(self, start, len).await?;
            return Ok(Either::Left(verifier.into_stream()));
        }
        let BlobFile {
            object,
            guard,
            digest,
            ..
        } = self;
        let chunks = object
            .stream(start, len)
            .await
            .map_err(io_error(format!("reading blob {digest} from {start}")))?;
        Ok(Either::Right(chunks.map_ok(move |bytes| {
            let _held_while_streaming = &guard;
            bytes
        })))
    }
}

/// A streamed read that hashes the whole file (bytes outside the range are
/// read but not sent) and sends the range's last byte only once the digest
/// has matched, so a client never gets a complete body of bad bytes.
struct Verifier {
    /// The whole object, from its first byte.
    chunks: Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>,
    /// Kept to name what to quarantine if the bytes are bad.
    object: BlobObjectOf,
    digest: Digest,
    size: u64,
    guard: ReadGuard,
    hasher: Option<Hasher>,
    /// Bytes read and hashed so far.
    read: u64,
    start: u64,
    end: u64,
    held: Option<Bytes>,
    done: bool,
}

impl Verifier {
    async fn new(blob: BlobFile, start: u64, len: u64) -> Result<Verifier, StoreError> {
        let BlobFile {
            object,
            size,
            digest,
            guard,
        } = blob;
        let chunks = object
            .stream(0, size)
            .await
            .map_err(io_error(format!("reading blob {digest}")))?;
        Ok(Verifier {
            chunks: Box::pin(chunks),
            hasher: Some(digest.algorithm().hasher()),
            read: 0,
            start,
            end: start.saturating_add(len).min(size),
            held: None,
            done: false,
            object,
            size,
            digest,
            guard,
        })
    }

    fn into_stream(self) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        futures_util::stream::unfold(self, |verifier| verifier.next())
    }

    async fn next(mut self) -> Option<(std::io::Result<Bytes>, Verifier)> {
        while !self.done {
            if self.read == self.size {
                return self.finish().await;
            }
            let offset = self.read;
            let chunk = match self.read_chunk().await {
                Ok(chunk) => chunk,
                Err(error) => {
                    self.done = true;
                    return Some((Err(error), self));
                }
            };
            self.read += chunk.len() as u64;
            // The part of this chunk inside the range, its last byte kept back.
            let from = self.start.max(offset);
            let to = self.end.min(self.read);
            if from >= to {
                continue;
            }
            let mut part = chunk.slice((from - offset) as usize..(to - offset) as usize);
            if to == self.end {
                self.held = Some(part.split_off(part.len() - 1));
            }
            if !part.is_empty() {
                return Some((Ok(part), self));
            }
        }
        None
    }

    /// The next chunk, hashed on the blocking pool (a 256 KiB hash is too
    /// long a stretch for an async worker other requests wait on).
    async fn read_chunk(&mut self) -> std::io::Result<Bytes> {
        let chunk = match self.chunks.next().await {
            Some(chunk) => chunk?,
            None => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "stored blob {} ended after {} of {} bytes",
                        self.digest, self.read, self.size
                    ),
                ));
            }
        };
        let mut hasher = self
            .hasher
            .take()
            .ok_or_else(|| std::io::Error::other("read after the end of a verified blob"))?;
        let (chunk, hasher) = tokio::task::spawn_blocking(move || {
            hasher.update(&chunk);
            (chunk, hasher)
        })
        .await
        .map_err(std::io::Error::other)?;
        self.hasher = Some(hasher);
        Ok(chunk)
    }

    /// At the end of the object: the held byte if the digest matched, else
    /// the blob goes to quarantine and the body fails.
    async fn finish(mut self) -> Option<(std::io::Result<Bytes>, Verifier)> {
        self.done = true;
        let actual = self.hasher.take()?.finish();
        if actual == self.digest {
            let held = self.held.take()?;
            return Some((Ok(held), self));
        }
        self.guard
            .store()
            .quarantine(&self.digest, &self.object, Some(&actual))
            .await;
        let error = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("stored blob {} failed its digest check", self.digest),
        );
        Some((Err(error), self))
    }
}

impl Store {
    /// Sets which reads re-hash what they serve.
    pub fn set_verify_on_read(&self, mode: VerifyOnRead) {
        self.inner.verify_all.store(
            mode == VerifyOnRead::All,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    fn verify_on_read(&self) -> VerifyOnRead {
        if self
            .inner
            .verify_all
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            VerifyOnRead::All
        } else {
            VerifyOnRead::Small
        }
    }

    /// Opens a stored blob, or `None` if the store does not have it.
    pub(super) async fn open_blob(&self, digest: &Digest) -> Result<Option<BlobFile>, StoreError> {
        match self.open_or_read_blob(digest, 0).await? {
            Some(OpenedBlob::File(file)) => Ok(Some(file)),
            Some(OpenedBlob::Read(_)) => Err(StoreError::Corrupt(format!(
                "{digest} was read whole where only an open was asked for"
            ))),
            None => Ok(None),
        }
    }

    /// Opens a stored blob; one of at most `read_limit` bytes is read whole
    /// and checked against its digest (one that fails is quarantined and
    /// reported absent). Both happen on the calling thread when the kernel
    /// has the path and the bytes cached (the usual hit), otherwise in one
    /// trip to the blocking pool.
    pub(super) async fn open_or_read_blob(
        &self,
        digest: &Digest,
        read_limit: u64,
    ) -> Result<Option<OpenedBlob>, StoreError> {
        // Marked in use before the open, so an eviction cannot slip in between.
        let guard = self.guard_read(digest);
        let opened = match self.inner.blobs.open(digest, read_limit).await? {
            None => return Ok(None),
            Some(Opened::Object(object)) => OpenedBlob::File(BlobFile {
                size: object.size(),
                object,
                digest: digest.clone(),
                guard,
            }),
            Some(Opened::Whole(bytes, object)) => {
                let mut hasher = digest.algorithm().hasher();
                hasher.update(&bytes);
                let actual = hasher.finish();
                if actual != *digest {
                    drop(guard);
                    self.quarantine(digest, &object, Some(&actual)).await;
                    return Ok(None);
                }
                OpenedBlob::Read(Bytes::from(bytes))
            }
        };
        self.touch(digest);
        Ok(Some(opened))
    }

    /// Reads a small stored blob whole (manifests, `.info`, `.mod`), checked
    /// against its digest. Callers bound the size: this is never used for
    /// layers or zips.
    pub(super) async fn read_small(
        &self,
        digest: &Digest,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        // A limit of zero would mean "open only".
        match self.open_or_read_blob(digest, limit.max(1)).await? {
            None => Ok(None),
            Some(OpenedBlob::Read(bytes)) => Ok(Some(bytes.into())),
            Some(OpenedBlob::File(blob)) => Err(StoreError::Corrupt(format!(
                "{digest} is {} bytes, over the {limit}-byte limit",
                blob.size
            ))),
        }
    }
}
