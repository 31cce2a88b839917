//! Blobs as objects `blobs/<alg>/<2 hex>/<hex>` in an S3-compatible bucket,
//! bad ones copied to `quarantine/<alg>/<hex>` and removed. A commit uploads
//! a staged file the store has already verified, in parts, and completes the
//! upload only when every part is in (aborting it otherwise), so no partial
//! object is ever visible under a digest. An open object is pinned by its
//! ETag: its reads fail rather than return another object's bytes.

use std::path::Path as LocalPath;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::stream::FuturesOrdered;
use futures_util::{Stream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, MultipartId, ObjectStore, ObjectStoreExt, PutPayload};
use tokio::io::AsyncReadExt;

use super::{BlobObject, BlobStore, ListedBlob, Opened, Quarantined, UploadJournal};
use crate::store::{Digest, StoreError, io_error};

/// Part size of a multipart upload: over S3's 5 MiB minimum, and small
/// enough that the parts in flight keep memory flat.
const PART: usize = 8 * 1024 * 1024;
/// Parts uploaded at once.
const PARTS_IN_FLIGHT: usize = 2;
/// A read is one ranged GET per window, each sent as the reader gets there:
/// a slow reader holds no S3 response open for minutes (servers drop idle
/// ones), and each window checks again that the object is the one opened.
const READ_WINDOW: u64 = 8 * 1024 * 1024;

/// Where the bucket is and how to sign for it. The secret is never logged:
/// `Debug` leaves it out.
#[derive(Clone)]
pub struct S3Settings {
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    /// `https://endpoint/bucket/key` rather than `https://bucket.endpoint/key`.
    pub path_style: bool,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

pub(crate) struct S3Blobs {
    bucket: AmazonS3,
    name: String,
}

/// An object found by `open`: its key, size and the ETag its reads insist on.
pub(crate) struct S3Object {
    bucket: AmazonS3,
    key: Path,
    size: u64,
    e_tag: Option<String>,
}

fn s3_error(context: impl Into<String>) -> impl FnOnce(object_store::Error) -> StoreError {
    let context = context.into();
    move |error| io_error(context)(std::io::Error::from(error))
}

fn blob_key(digest: &Digest) -> Path {
    let hex = digest.hex();
    Path::from(format!(
        "blobs/{}/{}/{hex}",
        digest.algorithm().as_str(),
        &hex[..2]
    ))
}

fn quarantine_key(digest: &Digest) -> Path {
    Path::from(format!(
        "quarantine/{}/{}",
        digest.algorithm().as_str(),
        digest.hex()
    ))
}

impl S3Blobs {
    pub(crate) fn new(settings: &S3Settings) -> Result<S3Blobs, StoreError> {
        let bucket = AmazonS3Builder::new()
            .with_endpoint(&settings.endpoint)
            // Plain http only when the operator wrote an http:// endpoint.
            .with_allow_http(settings.endpoint.starts_with("http://"))
            .with_virtual_hosted_style_request(!settings.path_style)
            .with_region(&settings.region)
            .with_bucket_name(&settings.bucket)
            .with_access_key_id(&settings.access_key_id)
            .with_secret_access_key(&settings.secret_access_key)
            .build()
            .map_err(s3_error(format!(
                "configuring the S3 bucket {} at {}",
                settings.bucket, settings.endpoint
            )))?;
        Ok(S3Blobs {
            bucket,
            name: settings.bucket.clone(),
        })
    }

    /// The object's metadata, `None` if there is none.
    async fn head(&self, key: &Path) -> Result<Option<object_store::ObjectMeta>, StoreError> {
        match self.bucket.head(key).await {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(s3_error(format!("looking up {key}"))(error)),
        }
    }

    /// Uploads the staged file to `key`, in parts when it is larger than one.
    /// A failure aborts the upload; one this process never gets to end
    /// (killed, or the future dropped) stays in `journal` for the sweep.
    async fn upload(
        &self,
        staged: &LocalPath,
        key: &Path,
        journal: &impl UploadJournal,
    ) -> Result<(), StoreError> {
        let mut file = tokio::fs::File::open(staged)
            .await
            .map_err(io_error(format!("opening {}", staged.display())))?;
        let size = file
            .metadata()
            .await
            .map_err(io_error(format!("sizing {}", staged.display())))?
            .len();
        if size <= PART as u64 {
            // One request is as atomic as a multipart upload, and cheaper.
            let mut bytes = Vec::with_capacity(size as usize);
            file.read_to_end(&mut bytes)
                .await
                .map_err(io_error(format!("reading {}", staged.display())))?;
            self.bucket
                .put(key, PutPayload::from(bytes))
                .await
                .map_err(s3_error(format!("uploading {key}")))?;
            return Ok(());
        }
        let id = self
            .bucket
            .create_multipart(key)
            .await
            .map_err(s3_error(format!("starting the upload of {key}")))?;
        let outcome = async {
            journal.begun(&id, key.as_ref()).await?;
            let parts = self
                .upload_parts(&mut file, staged, key, &id, journal)
                .await?;
            self.bucket
                .complete_multipart(key, &id, parts)
                .await
                .map_err(s3_error(format!("completing the upload of {key}")))?;
            Ok(())
        }
        .await;
        // Journaled until it is completed or aborted; an abort that fails
        // leaves the row for the sweep to try again.
        if outcome.is_ok() || self.abort_upload(key.as_ref(), &id).await.is_ok() {
            let _ = journal.ended(&id).await;
        }
        outcome
    }

    /// Aborts multipart upload `id` of `key`, its parts discarded; one
    /// already gone (completed, aborted) is no error.
    pub(crate) async fn abort_upload(&self, key: &str, id: &str) -> Result<(), StoreError> {
        let key = Path::from(key);
        match self.bucket.abort_multipart(&key, &id.to_owned()).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(s3_error(format!("aborting an upload of {key}"))(error)),
        }
    }

    /// Sends the file's parts, `PARTS_IN_FLIGHT` at a time, and returns them
    /// in order for the completion.
    async fn upload_parts(
        &self,
        file: &mut tokio::fs::File,
        staged: &LocalPath,
        key: &Path,
        id: &MultipartId,
        journal: &impl UploadJournal,
    ) -> Result<Vec<PartId>, StoreError> {
        let mut in_flight: FuturesOrdered<BoxFuture<'_, object_store::Result<PartId>>> =
            FuturesOrdered::new();
        let mut parts: Vec<PartId> = Vec::new();
        for index in 0.. {
            let chunk = read_part(file)
                .await
                .map_err(io_error(format!("reading {}", staged.display())))?;
            if chunk.is_empty() {
                break;
            }
            if in_flight.len() == PARTS_IN_FLIGHT
                && let Some(part) = in_flight.next().await
            {
                parts.push(part.map_err(s3_error(format!("uploading {key}")))?);
                journal.progressed(id).await?;
            }
            in_flight.push_back(
                self.bucket
                    .put_part(key, id, index, PutPayload::from(chunk)),
            );
        }
        while let Some(part) = in_flight.next().await {
            parts.push(part.map_err(s3_error(format!("uploading {key}")))?);
            journal.progressed(id).await?;
        }
        Ok(parts)
    }
}

/// The next `PART` bytes of `file`, fewer only at its end.
async fn read_part(file: &mut tokio::fs::File) -> std::io::Result<Vec<u8>> {
    let mut chunk = Vec::with_capacity(PART);
    (&mut *file)
        .take(PART as u64)
        .read_to_end(&mut chunk)
        .await?;
    Ok(chunk)
}

impl BlobObject for S3Object {
    fn size(&self) -> u64 {
        self.size
    }

    async fn stream(
        &self,
        start: u64,
        len: u64,
    ) -> std::io::Result<impl Stream<Item = std::io::Result<Bytes>> + Send + use<>> {
        let end = start.saturating_add(len).min(self.size);
        if start >= end {
            // S3 refuses an empty range; there is nothing to fetch.
            return Ok(futures_util::stream::empty().left_stream());
        }
        // The first window's GET now, so that a missing or replaced object
        // is an error before any byte is sent; the rest as the reader pulls.
        let first = start..end.min(start + READ_WINDOW);
        let head = get_range(&self.bucket, &self.key, self.e_tag.clone(), first.clone()).await?;
        let object = (self.bucket.clone(), self.key.clone(), self.e_tag.clone());
        let rest = futures_util::stream::iter((first.end..end).step_by(READ_WINDOW as usize))
            .then(move |from| {
                let (bucket, key, e_tag) = object.clone();
                async move {
                    let range = from..end.min(from + READ_WINDOW);
                    get_range(&bucket, &key, e_tag, range).await
                }
            })
            .try_flatten();
        Ok(head.chain(rest).right_stream())
    }
}

/// One ranged GET of the object `key`, refused if it is no longer the one
/// with `e_tag`.
async fn get_range(
    bucket: &AmazonS3,
    key: &Path,
    e_tag: Option<String>,
    range: std::ops::Range<u64>,
) -> std::io::Result<BoxStream<'static, std::io::Result<Bytes>>> {
    let options = GetOptions {
        range: Some(GetRange::Bounded(range)),
        if_match: e_tag,
        ..GetOptions::default()
    };
    let got = bucket.get_opts(key, options).await?;
    Ok(got.into_stream().map_err(std::io::Error::from).boxed())
}

impl BlobStore for S3Blobs {
    type Object = S3Object;

    async fn open(
        &self,
        digest: &Digest,
        read_limit: u64,
    ) -> Result<Option<Opened<S3Object>>, StoreError> {
        let key = blob_key(digest);
        let Some(meta) = self.head(&key).await? else {
            return Ok(None);
        };
        let object = S3Object {
            bucket: self.bucket.clone(),
            key,
            size: meta.size,
            e_tag: meta.e_tag,
        };
        if read_limit == 0 || object.size > read_limit {
            return Ok(Some(Opened::Object(object)));
        }
        let mut whole = Vec::with_capacity(object.size as usize);
        let mut chunks = std::pin::pin!(
            object
                .stream(0, object.size)
                .await
                .map_err(io_error(format!("reading blob {digest}")))?
        );
        while let Some(chunk) = chunks.next().await {
            whole.extend_from_slice(&chunk.map_err(io_error(format!("reading blob {digest}")))?);
        }
        Ok(Some(Opened::Whole(whole, object)))
    }

    async fn commit(
        &self,
        staged: &LocalPath,
        digest: &Digest,
        journal: &impl UploadJournal,
    ) -> Result<(), StoreError> {
        let key = blob_key(digest);
        let uploaded = match self.head(&key).await {
            // Same digest, same bytes: the object readers may hold stays.
            Ok(Some(_)) => Ok(()),
            Ok(None) => self.upload(staged, &key, journal).await,
            Err(error) => Err(error),
        };
        // Uploaded or not, the staged copy is done with.
        let _ = tokio::fs::remove_file(staged).await;
        uploaded
    }

    async fn delete(&self, digest: &Digest) -> Result<(), StoreError> {
        self.delete_key(&blob_key(digest)).await
    }

    async fn contains(&self, digest: &Digest) -> bool {
        matches!(self.head(&blob_key(digest)).await, Ok(Some(_)))
    }

    async fn list(&self) -> Result<Vec<ListedBlob>, StoreError> {
        let mut listing = self.bucket.list(Some(&Path::from("blobs")));
        let mut blobs = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(s3_error(format!("listing bucket {}", self.name)))?;
            let mut parts = meta.location.parts();
            let (_, algorithm, _, hex) = (parts.next(), parts.next(), parts.next(), parts.next());
            let digest = match (algorithm, hex, parts.next()) {
                (Some(algorithm), Some(hex), None) => {
                    format!("{}:{}", algorithm.as_ref(), hex.as_ref()).parse::<Digest>()
                }
                _ => "not a digest".parse::<Digest>(),
            };
            match digest {
                Ok(digest) => blobs.push(ListedBlob {
                    digest,
                    modified: SystemTime::from(meta.last_modified),
                    len: meta.size,
                }),
                // Not a key we wrote; leave it alone.
                Err(_) => tracing::warn!(key = %crate::escape::Escaped(meta.location.as_ref()),
                    "unexpected object under blobs/"),
            }
        }
        Ok(blobs)
    }

    async fn quarantine(
        &self,
        digest: &Digest,
        opened: &S3Object,
    ) -> Result<Quarantined, StoreError> {
        let current = self.head(&opened.key).await?;
        if current.is_none_or(|meta| meta.e_tag != opened.e_tag) {
            return Ok(Quarantined::Replaced);
        }
        let target = quarantine_key(digest);
        self.bucket
            .copy(&opened.key, &target)
            .await
            .map_err(s3_error(format!("copying {} aside", opened.key)))?;
        self.delete(digest).await?;
        Ok(Quarantined::Moved(format!("s3://{}/{target}", self.name)))
    }

    async fn is_quarantined(&self, digest: &Digest) -> bool {
        matches!(self.head(&quarantine_key(digest)).await, Ok(Some(_)))
    }
}

/// A push session's chunk, apart from the content-addressed blobs: a chunk
/// may hash to a blob's digest (a blob pushed in one PATCH), and removing the
/// session's parts must never remove that blob.
fn part_key(id: &str, start: u64) -> Path {
    Path::from(format!("uploads/{id}/{start:020}"))
}

/// Push sessions' chunks, so that any replica can go on with a session.
impl S3Blobs {
    /// Uploads the staged chunk of session `id` that starts at byte `start`;
    /// the staged file is gone afterwards.
    pub(crate) async fn put_part(
        &self,
        staged: &LocalPath,
        id: &str,
        start: u64,
        journal: &impl UploadJournal,
    ) -> Result<(), StoreError> {
        let uploaded = self.upload(staged, &part_key(id, start), journal).await;
        let _ = tokio::fs::remove_file(staged).await;
        uploaded
    }

    /// Appends the chunk at `start` to `out`, streamed.
    pub(crate) async fn copy_part(
        &self,
        id: &str,
        start: u64,
        out: &mut tokio::fs::File,
    ) -> Result<u64, StoreError> {
        use tokio::io::AsyncWriteExt;
        let key = part_key(id, start);
        let got = self
            .bucket
            .get(&key)
            .await
            .map_err(s3_error(format!("reading {key}")))?;
        let mut chunks = got.into_stream();
        let mut copied = 0;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(s3_error(format!("reading {key}")))?;
            out.write_all(&chunk)
                .await
                .map_err(io_error(format!("copying {key}")))?;
            copied += chunk.len() as u64;
        }
        Ok(copied)
    }

    /// Every session chunk in the bucket, as (session id, key, last
    /// modified); keys not of that shape are left out.
    pub(crate) async fn list_parts(&self) -> Result<Vec<(String, Path, SystemTime)>, StoreError> {
        let mut listing = self.bucket.list(Some(&Path::from("uploads")));
        let mut parts = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(s3_error(format!("listing bucket {}", self.name)))?;
            let id = meta.location.parts().nth(1);
            if let Some(id) = id {
                let id = id.as_ref().to_owned();
                parts.push((id, meta.location, SystemTime::from(meta.last_modified)));
            }
        }
        Ok(parts)
    }

    /// Removes the object at `key`; one already gone is no error.
    pub(crate) async fn delete_key(&self, key: &Path) -> Result<(), StoreError> {
        match self.bucket.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(s3_error(format!("deleting {key}"))(error)),
        }
    }

    /// Removes the session's chunks; ones already gone are no error.
    pub(crate) async fn delete_parts(&self, id: &str, starts: &[u64]) -> Result<(), StoreError> {
        for &start in starts {
            self.delete_key(&part_key(id, start)).await?;
        }
        Ok(())
    }
}
