//! The immutable files of a canonical version (`.info`, `.mod`, `.zip`):
//! served from the memo or the store when present; otherwise fetched once
//! through the upstream list, checked, stored content-addressed and indexed.
//! A `.zip` miss goes on in `zipfill`.

use bytes::Bytes;
use http::Response;
use http::header::{CONTENT_LENGTH, HeaderValue};

use std::sync::Arc;

use super::chain::{Answer, Failure};
use super::checksum::{H1, SumFile};
use super::error::{GoError, OrInternal};
use super::key::{AnswerKey, FileName, Key, Resource};
use super::module::ModulePath;
use super::route::FileKind;
use super::version::Version;
use super::{GoProxy, Reply, Served, bytes_response};
use crate::store::{Digest, GoFile, Origin, StoreError};
use crate::wire::{Body, Outcome, body};

/// Go's own limits on what it reads: `.mod` 16 MiB; `.info` is a line of JSON.
const MAX_MOD: usize = 16 << 20;
const MAX_INFO: usize = 64 << 10;
/// Files at most this large (every `.info`, most `.mod`, small zips) are kept
/// in memory once read: a hit then costs no I/O at all.
const MEMO_BYTES: usize = 64 << 10;

/// A file known to be in the store.
#[derive(Clone, Debug)]
pub struct Stored {
    pub digest: Digest,
    pub size: u64,
    /// The content, for small files already read.
    pub bytes: Option<Bytes>,
}

fn stored_kind(kind: FileKind) -> GoFile {
    match kind {
        FileKind::Info => GoFile::Info,
        FileKind::Mod => GoFile::Mod,
        FileKind::Zip => GoFile::Zip,
    }
}

/// `module@version.kind`: the audit artifact and the name in logs.
pub fn artifact(module: &ModulePath, version: &Version, kind: FileKind) -> String {
    FileName(module, version, kind).to_string()
}

impl GoProxy {
    pub(super) async fn file(
        &self,
        module: &ModulePath,
        version: &Version,
        kind: FileKind,
        reply: Reply,
    ) -> Result<Served, GoError> {
        let key = AnswerKey::StoredFile(module, version, kind).encode();
        if let Some(served) = self.stored_file(module, version, kind, &key, reply).await? {
            return Ok(served);
        }
        let negative_key = AnswerKey::Answer(Resource::File(module, version, kind)).encode();
        if let Some(cached) = self.fresh(&negative_key).await? {
            return Err(cached.not_found());
        }
        let refused = AnswerKey::Refused(module, version, kind).encode();
        if let Some(cached) = self.fresh(&refused).await? {
            return Err(GoError::Refused(
                String::from_utf8_lossy(&cached.body).into_owned(),
            ));
        }
        match kind {
            // Boxed: a miss's future (upstream, store writes) is kilobytes
            // that every hit's would carry otherwise.
            FileKind::Info | FileKind::Mod => {
                Box::pin(self.small_miss(module, version, kind, &key, &negative_key)).await
            }
            FileKind::Zip => {
                self.zip_miss(module, version, &key, &negative_key, reply)
                    .await
            }
        }
    }

    /// A hit: from the memo (no I/O for small files), else one indexed read.
    pub(super) async fn stored_file(
        &self,
        module: &ModulePath,
        version: &Version,
        kind: FileKind,
        key: &Key,
        reply: Reply,
    ) -> Result<Option<Served>, GoError> {
        let (stored, memoized) = match self.inner.files.get(key.as_str()) {
            Some(stored) => (stored, true),
            None => match self.indexed_file(module, version, kind, key).await? {
                Some(stored) => (stored, false),
                None => return Ok(None),
            },
        };
        let served = match &stored.bytes {
            Some(bytes) => {
                self.inner.store.blobs().touch(&stored.digest);
                Some(Served::new(
                    bytes_response(bytes.clone(), kind.content_type()),
                    Outcome::Hit,
                    Some(stored.digest.clone()),
                ))
            }
            None if stored.size <= MEMO_BYTES as u64 => {
                self.read_and_memoize(&stored, kind, key).await?
            }
            None => {
                self.stream_stored(&stored, kind, key, memoized, reply)
                    .await?
            }
        };
        if served.is_none() {
            self.forget_lost_file(module, version, kind, key, &stored)
                .await?;
        }
        Ok(served)
    }

    /// The index's row for a file not in the memo.
    async fn indexed_file(
        &self,
        module: &ModulePath,
        version: &Version,
        kind: FileKind,
        key: &Key,
    ) -> Result<Option<Stored>, GoError> {
        let found = self
            .inner
            .store
            .go()
            .file(module.key(), version.key(), stored_kind(kind))
            .await
            .or_internal(key.as_str())?;
        Ok(found.map(|(digest, size)| Stored {
            digest,
            size,
            bytes: None,
        }))
    }

    /// A small stored file, read whole and kept in the memo; `None` when its
    /// blob is missing or bad.
    async fn read_and_memoize(
        &self,
        stored: &Stored,
        kind: FileKind,
        key: &Key,
    ) -> Result<Option<Served>, GoError> {
        let read = self
            .inner
            .store
            .blobs()
            .read_small(&stored.digest, MEMO_BYTES as u64)
            .await
            .or_internal(key.as_str())?;
        let Some(bytes) = read else {
            return Ok(None);
        };
        let bytes = Bytes::from(bytes);
        let weight = bytes.len();
        let entry = Stored {
            bytes: Some(bytes.clone()),
            ..stored.clone()
        };
        self.inner
            .files
            .insert(key.as_str().to_owned(), entry, weight);
        Ok(Some(Served::new(
            bytes_response(bytes, kind.content_type()),
            Outcome::Hit,
            Some(stored.digest.clone()),
        )))
    }

    /// A large stored file, streamed from its blob (its location memoized);
    /// `None` when the blob is missing or bad.
    async fn stream_stored(
        &self,
        stored: &Stored,
        kind: FileKind,
        key: &Key,
        memoized: bool,
        reply: Reply,
    ) -> Result<Option<Served>, GoError> {
        let blob = self
            .inner
            .store
            .blobs()
            .open(&stored.digest)
            .await
            .or_internal(key.as_str())?;
        let Some(blob) = blob else {
            return Ok(None);
        };
        if !memoized {
            self.inner
                .files
                .insert(key.as_str().to_owned(), stored.clone(), 0);
        }
        let size = blob.size;
        let mut response = match reply {
            Reply::HeadOnly => Response::new(body::empty()),
            Reply::Full => {
                let stream = blob.stream(0, size).await.or_internal(key.as_str())?;
                Response::new(body::stream(stream))
            }
        };
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(size));
        Ok(Some(Served::new(
            with_type(response, kind),
            Outcome::Hit,
            Some(stored.digest.clone()),
        )))
    }

    /// Indexed but the file is gone (deleted by hand, a lost disk) or failed
    /// its digest check (quarantined, logged by the store): forgotten, so the
    /// caller fetches it again.
    async fn forget_lost_file(
        &self,
        module: &ModulePath,
        version: &Version,
        kind: FileKind,
        key: &Key,
        stored: &Stored,
    ) -> Result<(), GoError> {
        tracing::warn!(target: "mirror::go", artifact = key.as_str(), digest = %stored.digest, "stored file missing or bad; fetching again");
        self.inner.files.remove(key.as_str());
        self.inner
            .store
            .go()
            .forget_file(module.key(), version.key(), stored_kind(kind))
            .await
            .or_internal(key.as_str())
    }

    async fn small_miss(
        &self,
        module: &ModulePath,
        version: &Version,
        kind: FileKind,
        key: &Key,
        negative_key: &Key,
    ) -> Result<Served, GoError> {
        let flight_key = AnswerKey::FileFetch(module, version, kind).encode();
        let fetched = self
            .inner
            .file_flights
            .run(
                flight_key.as_str(),
                self.fetch_small(module, version, kind, key, negative_key),
            )
            .await;
        match fetched {
            FileFetch::Fetched(digest, bytes) => {
                let memo_bytes = (bytes.len() <= MEMO_BYTES).then(|| bytes.clone());
                // Weighed by the bytes it keeps, not by the file's size.
                let weight = memo_bytes.as_ref().map_or(0, Bytes::len);
                let entry = Stored {
                    digest: digest.clone(),
                    size: bytes.len() as u64,
                    bytes: memo_bytes,
                };
                self.inner
                    .files
                    .insert(key.as_str().to_owned(), entry, weight);
                Ok(Served::new(
                    bytes_response(bytes, kind.content_type()),
                    Outcome::Miss,
                    Some(digest),
                ))
            }
            FileFetch::Stored => self
                .stored_file(module, version, kind, key, Reply::Full)
                .await?
                .ok_or_else(|| GoError::internal(key.as_str(), &"stored file vanished")),
            FileFetch::NotFound { gone, reason } => Err(GoError::NotFound { gone, reason }),
            FileFetch::Failed(error) => self.stale_negative_or(negative_key, &error).await,
            FileFetch::Internal(error) => Err(GoError::internal(key.as_str(), &error)),
            FileFetch::Refused(error) => Err(error),
        }
    }

    /// The one upstream fetch of a small file, run for every caller waiting
    /// on it: checked, stored and indexed, or its 404/410 kept.
    async fn fetch_small(
        &self,
        module: &ModulePath,
        version: &Version,
        kind: FileKind,
        key: &Key,
        negative_key: &Key,
    ) -> FileFetch {
        // Another request may have stored it while this one waited.
        if let Ok(Some(_)) = self
            .stored_file(module, version, kind, key, Reply::Full)
            .await
        {
            return FileFetch::Stored;
        }
        let limit = if kind == FileKind::Info {
            MAX_INFO
        } else {
            MAX_MOD
        };
        let path = Resource::File(module, version, kind).upstream_path();
        match self
            .inner
            .chain
            .fetch(&self.inner.client, &path, limit)
            .await
        {
            Answer::Found(bytes) => {
                if kind == FileKind::Info
                    && let Err(reason) = check_info(&bytes, version)
                {
                    return FileFetch::Failed(reason.into());
                }
                if kind == FileKind::Mod
                    && let Err(refusal) = self.verify_mod(module, version, &bytes).await
                {
                    return FileFetch::Refused(refusal);
                }
                self.store_small(module, version, kind, key, bytes).await
            }
            Answer::NotFound { gone, reason } => {
                let status = if gone { 410 } else { 404 };
                self.keep(negative_key, status, Bytes::from(reason.clone()))
                    .await;
                FileFetch::NotFound { gone, reason }
            }
            Answer::Failed(error) => FileFetch::Failed(error),
        }
    }

    /// A `.mod` is stored only once the checksum database has its hash.
    async fn verify_mod(
        &self,
        module: &ModulePath,
        version: &Version,
        bytes: &[u8],
    ) -> Result<(), GoError> {
        match self.verification(module, version).await? {
            Some(verified) => self.check_hash(&verified, SumFile::GoMod, H1::go_mod(bytes)),
            None => Ok(()),
        }
    }

    /// Stores a fetched small file and indexes it; a failed index write is
    /// logged and the file served all the same.
    async fn store_small(
        &self,
        module: &ModulePath,
        version: &Version,
        kind: FileKind,
        key: &Key,
        bytes: Bytes,
    ) -> FileFetch {
        let digest = match self.inner.store.blobs().put(&bytes, Origin::Cached).await {
            Ok(digest) => digest,
            Err(error) => return FileFetch::Internal(Arc::new(error)),
        };
        let indexed = self
            .inner
            .store
            .go()
            .put_file(
                module.key(),
                version.key(),
                stored_kind(kind),
                &digest,
                bytes.len() as u64,
            )
            .await;
        if let Err(error) = indexed {
            tracing::error!(target: "mirror::go", artifact = key.as_str(), %error, "could not index");
        }
        FileFetch::Fetched(digest, bytes)
    }

    /// When upstream fails, an expired "not found" is still the best answer.
    pub(super) async fn stale_negative_or(
        &self,
        negative_key: &Key,
        error: &(dyn std::fmt::Display + Sync),
    ) -> Result<Served, GoError> {
        match self.kept(negative_key).await? {
            Some(stale) => Err(stale.not_found()),
            None => Err(GoError::upstream(negative_key.as_str(), error)),
        }
    }
}

/// What one upstream fetch of a small file came to, shared by concurrent callers.
#[derive(Clone, Debug)]
pub enum FileFetch {
    Fetched(Digest, Bytes),
    /// It was already in the store.
    Stored,
    NotFound {
        gone: bool,
        reason: String,
    },
    Failed(Failure),
    Internal(Arc<StoreError>),
    /// Checked against the checksum database and refused (never stored).
    Refused(GoError),
}

/// Why an upstream `.info` is refused.
#[derive(Clone, Debug, thiserror::Error)]
pub enum InfoError {
    #[error("upstream .info is not valid: {0}")]
    NotJson(Arc<serde_json::Error>),
    #[error("upstream .info names version {named:?}, not {asked}")]
    WrongVersion { named: String, asked: String },
}

/// A `.info` must be JSON naming the version asked for, or it would be kept forever wrong.
fn check_info(bytes: &[u8], version: &Version) -> Result<(), InfoError> {
    #[derive(serde::Deserialize)]
    struct Info {
        #[serde(rename = "Version")]
        version: String,
    }
    let info: Info = serde_json::from_slice(bytes).map_err(|e| InfoError::NotJson(Arc::new(e)))?;
    if info.version != version.as_str() {
        return Err(InfoError::WrongVersion {
            named: info.version,
            asked: version.to_string(),
        });
    }
    Ok(())
}

pub(super) fn with_type(mut response: Response<Body>, kind: FileKind) -> Response<Body> {
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(kind.content_type()),
    );
    response
}
