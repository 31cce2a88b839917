//! Reading stored blobs, never trusting the bytes on disk blindly: a blob read
//! whole (the small-blob path) is hashed before it is handed out; a streamed
//! one is hashed as it goes, with its last byte held back until the digest
//! matches, when `cache.verify_on_read = "all"`. A blob that fails its check
//! is quarantined (`quarantine`) and reads as absent from then on, so the
//! caller treats it as a miss (or, for pushed content, names the corruption).

use std::io::SeekFrom;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::Either;
use futures_util::{Stream, TryStreamExt};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::evict::ReadGuard;
use super::{Digest, Hasher, Store, StoreError, io_error, nowait};

/// Read size when streaming a file: large enough that the per-read cost of a
/// blocking-pool hop vanishes next to TLS, small enough to keep memory flat.
const FILE_CHUNK: usize = 256 * 1024;

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

enum Opened {
    /// The bytes, and the file they came from (its identity matters if they are bad).
    Read(Vec<u8>, std::fs::File),
    File(std::fs::File, u64),
}

/// Sizes an open blob file and, if it is at most `read_limit` bytes, reads
/// it whole (an empty one too, unless `read_limit` is zero: nothing to
/// hold back when streaming it, so it is checked here). With `nowait`, a
/// read that would wait for the disk hands the file back (`Err(file)`).
fn open_read(
    file: std::fs::File,
    read_limit: u64,
    nowait: bool,
) -> std::io::Result<Result<Opened, std::fs::File>> {
    use std::io::Read;
    let size = file.metadata()?.len();
    if read_limit == 0 || size > read_limit {
        return Ok(Ok(Opened::File(file, size)));
    }
    let mut bytes = vec![0; size as usize];
    if nowait {
        return Ok(match nowait::read_exact_at(&file, &mut bytes, 0)? {
            Some(()) => Ok(Opened::Read(bytes, file)),
            None => Err(file),
        });
    }
    (&file).read_exact(&mut bytes)?;
    Ok(Ok(Opened::Read(bytes, file)))
}

/// An open, complete blob. While it (or a stream made from it) lives, the
/// blob is marked in use and eviction passes it over.
pub struct BlobFile {
    file: std::fs::File,
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
            return Ok(Either::Left(Verifier::new(self, start, len).into_stream()));
        }
        let BlobFile {
            file,
            guard,
            digest: self_digest,
            ..
        } = self;
        let mut file = tokio::fs::File::from_std(file);
        if start > 0 {
            file.seek(SeekFrom::Start(start))
                .await
                .map_err(io_error(format!("seeking blob {} to {start}", self_digest)))?;
        }
        let chunks = tokio_util::io::ReaderStream::with_capacity(file.take(len), FILE_CHUNK);
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
    blob: Arc<BlobFile>,
    hasher: Option<Hasher>,
    /// Bytes read and hashed so far.
    read: u64,
    start: u64,
    end: u64,
    held: Option<Bytes>,
    done: bool,
}

impl Verifier {
    fn new(blob: BlobFile, start: u64, len: u64) -> Verifier {
        Verifier {
            hasher: Some(blob.digest.algorithm().hasher()),
            read: 0,
            start,
            end: start.saturating_add(len).min(blob.size),
            held: None,
            done: false,
            blob: Arc::new(blob),
        }
    }

    fn into_stream(self) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        futures_util::stream::unfold(self, |verifier| verifier.next())
    }

    async fn next(mut self) -> Option<(std::io::Result<Bytes>, Verifier)> {
        while !self.done {
            if self.read == self.blob.size {
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

    /// Reads and hashes the next chunk on the blocking pool.
    async fn read_chunk(&mut self) -> std::io::Result<Bytes> {
        let want = (self.blob.size - self.read).min(FILE_CHUNK as u64) as usize;
        let offset = self.read;
        let blob = self.blob.clone();
        let mut hasher = self
            .hasher
            .take()
            .ok_or_else(|| std::io::Error::other("read after the end of a verified blob"))?;
        let (bytes, hasher) = tokio::task::spawn_blocking(move || {
            let mut bytes = vec![0; want];
            blob.file.read_exact_at(&mut bytes, offset)?;
            hasher.update(&bytes);
            Ok::<_, std::io::Error>((bytes, hasher))
        })
        .await
        .map_err(std::io::Error::other)??;
        self.hasher = Some(hasher);
        Ok(Bytes::from(bytes))
    }

    /// At the end of the file: the held byte if the digest matched, else the
    /// blob goes to quarantine and the body fails.
    async fn finish(mut self) -> Option<(std::io::Result<Bytes>, Verifier)> {
        self.done = true;
        let actual = self.hasher.take()?.finish();
        if actual == self.blob.digest {
            let held = self.held.take()?;
            return Some((Ok(held), self));
        }
        let blob = &self.blob;
        blob.guard
            .store()
            .quarantine(&blob.digest, &blob.file, Some(&actual))
            .await;
        let error = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("stored blob {} failed its digest check", blob.digest),
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
    pub async fn open_blob(&self, digest: &Digest) -> Result<Option<BlobFile>, StoreError> {
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
    pub async fn open_or_read_blob(
        &self,
        digest: &Digest,
        read_limit: u64,
    ) -> Result<Option<OpenedBlob>, StoreError> {
        let path = self.blob_path(digest);
        // Marked in use before the open, so an eviction cannot slip in between.
        let guard = self.guard_read(digest);
        let context = || format!("reading blob {digest}");
        let cached = match nowait::open(&path) {
            Ok(Some(file)) => open_read(file, read_limit, true)
                .map_err(io_error(context()))?
                .map_err(Some),
            Ok(None) => Err(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(context())(e)),
        };
        let opened = match cached {
            Ok(opened) => opened,
            Err(open) => {
                let read = tokio::task::spawn_blocking(move || {
                    let file = match open {
                        Some(file) => file,
                        None => match std::fs::File::open(&path) {
                            Ok(file) => file,
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                            Err(e) => return Err(e),
                        },
                    };
                    Ok(open_read(file, read_limit, false)?.ok())
                });
                match read.await?.map_err(io_error(context()))? {
                    Some(opened) => opened,
                    None => return Ok(None),
                }
            }
        };
        let opened = match opened {
            Opened::File(file, size) => OpenedBlob::File(BlobFile {
                file,
                size,
                digest: digest.clone(),
                guard,
            }),
            Opened::Read(bytes, file) => {
                let mut hasher = digest.algorithm().hasher();
                hasher.update(&bytes);
                let actual = hasher.finish();
                if actual != *digest {
                    drop(guard);
                    self.quarantine(digest, &file, Some(&actual)).await;
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
    pub async fn read_small(
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
