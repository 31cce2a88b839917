//! The immutable files of a canonical version (`.info`, `.mod`, `.zip`):
//! served from the memo or the store when present; otherwise fetched once
//! through the upstream list, checked, stored content-addressed and indexed.
//! A `.zip` miss goes on in `zipfill`.

use bytes::Bytes;
use http::Response;
use http::header::{CONTENT_LENGTH, HeaderValue};

use super::chain::Answer;
use super::error::GoError;
use super::key::{AnswerKey, FileName, Key, Resource};
use super::module::ModulePath;
use super::route::FileKind;
use super::version::Version;
use super::{GoProxy, Served, bytes_response};
use crate::http::{Body, Outcome, body};
use crate::store::{Digest, GoFile};

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
        head_only: bool,
    ) -> Result<Served, GoError> {
        let key = AnswerKey::StoredFile(module, version, kind).encode();
        if let Some(served) = self
            .stored_file(module, version, kind, &key, head_only)
            .await?
        {
            return Ok(served);
        }
        let negative_key = AnswerKey::Answer(Resource::File(module, version, kind)).encode();
        if let Some(cached) = self.fresh(&negative_key).await? {
            return Err(cached.not_found());
        }
        match kind {
            // Boxed: a miss's future (upstream, store writes) is kilobytes
            // that every hit's would carry otherwise.
            FileKind::Info | FileKind::Mod => {
                Box::pin(self.small_miss(module, version, kind, &key, &negative_key)).await
            }
            FileKind::Zip => {
                self.zip_miss(module, version, &key, &negative_key, head_only)
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
        head_only: bool,
    ) -> Result<Option<Served>, GoError> {
        let (stored, memoized) = match self.inner.files.get(key.as_str()) {
            Some(stored) => (stored, true),
            None => {
                let found = self
                    .inner
                    .store
                    .go_file(module.as_str(), version.as_str(), stored_kind(kind))
                    .await
                    .map_err(|e| GoError::internal(key.as_str(), &e))?;
                let Some((digest, size)) = found else {
                    return Ok(None);
                };
                (
                    Stored {
                        digest,
                        size,
                        bytes: None,
                    },
                    false,
                )
            }
        };
        if let Some(bytes) = &stored.bytes {
            self.inner.store.touch(&stored.digest);
            return Ok(Some(Served::new(
                bytes_response(bytes.clone(), kind.content_type()),
                Outcome::Hit,
                Some(stored.digest),
            )));
        }
        if stored.size <= MEMO_BYTES as u64 {
            let read = self
                .inner
                .store
                .read_small(&stored.digest, MEMO_BYTES as u64)
                .await
                .map_err(|e| GoError::internal(key.as_str(), &e))?;
            if let Some(bytes) = read {
                let bytes = Bytes::from(bytes);
                let weight = bytes.len();
                let entry = Stored {
                    bytes: Some(bytes.clone()),
                    ..stored.clone()
                };
                self.inner
                    .files
                    .insert(key.as_str().to_owned(), entry, weight);
                return Ok(Some(Served::new(
                    bytes_response(bytes, kind.content_type()),
                    Outcome::Hit,
                    Some(stored.digest),
                )));
            }
        } else {
            let blob = self
                .inner
                .store
                .open_blob(&stored.digest)
                .await
                .map_err(|e| GoError::internal(key.as_str(), &e))?;
            if let Some(blob) = blob {
                if !memoized {
                    self.inner
                        .files
                        .insert(key.as_str().to_owned(), stored.clone(), 0);
                }
                let size = blob.size;
                let mut response = if head_only {
                    Response::new(body::empty())
                } else {
                    let stream = body::blob(blob, 0, size)
                        .await
                        .map_err(|e| GoError::internal(key.as_str(), &e))?;
                    Response::new(stream)
                };
                response
                    .headers_mut()
                    .insert(CONTENT_LENGTH, HeaderValue::from(size));
                return Ok(Some(Served::new(
                    with_type(response, kind),
                    Outcome::Hit,
                    Some(stored.digest),
                )));
            }
        }
        // Indexed but the file is gone (deleted by hand, a lost disk) or
        // failed its digest check (quarantined, logged by the store): fetch it again.
        tracing::warn!(target: "mirror::go", artifact = key.as_str(), digest = %stored.digest, "stored file missing or bad; fetching again");
        self.inner.files.remove(key.as_str());
        self.inner
            .store
            .forget_go_file(module.as_str(), version.as_str(), stored_kind(kind))
            .await
            .map_err(|e| GoError::internal(key.as_str(), &e))?;
        Ok(None)
    }

    async fn small_miss(
        &self,
        module: &ModulePath,
        version: &Version,
        kind: FileKind,
        key: &Key,
        negative_key: &Key,
    ) -> Result<Served, GoError> {
        let limit = if kind == FileKind::Info {
            MAX_INFO
        } else {
            MAX_MOD
        };
        let path = Resource::File(module, version, kind).upstream_path();
        let flight_key = AnswerKey::FileFetch(module, version, kind).encode();
        let fetched = self
            .inner
            .file_flights
            .run(flight_key.as_str(), async {
                // Another request may have stored it while this one waited.
                if let Ok(Some(_)) = self.stored_file(module, version, kind, key, false).await {
                    return FileFetch::Stored;
                }
                match self.inner.chain.fetch(&self.inner.client, &path, limit).await {
                    Answer::Found(bytes) => {
                        if kind == FileKind::Info
                            && let Err(reason) = check_info(&bytes, version)
                        {
                            return FileFetch::Failed(reason);
                        }
                        match self.inner.store.put_bytes(&bytes, false).await {
                            Ok(digest) => {
                                let indexed = self
                                    .inner
                                    .store
                                    .put_go_file(
                                        module.as_str(),
                                        version.as_str(),
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
                            Err(error) => FileFetch::Internal(error.to_string()),
                        }
                    }
                    Answer::NotFound { gone, reason } => {
                        let status = if gone { 410 } else { 404 };
                        self.keep(negative_key, status, Bytes::from(reason.clone())).await;
                        FileFetch::NotFound { gone, reason }
                    }
                    Answer::Failed(error) => FileFetch::Failed(error),
                }
            })
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
                .stored_file(module, version, kind, key, false)
                .await?
                .ok_or_else(|| GoError::internal(key.as_str(), &"stored file vanished")),
            FileFetch::NotFound { gone, reason } => Err(GoError::NotFound { gone, reason }),
            FileFetch::Failed(error) => self.stale_negative_or(negative_key, &error).await,
            FileFetch::Internal(error) => Err(GoError::internal(key.as_str(), &error)),
        }
    }

    /// When upstream fails, an expired "not found" is still the best answer.
    pub(super) async fn stale_negative_or(
        &self,
        negative_key: &Key,
        error: &str,
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
    Failed(String),
    Internal(String),
}

/// A `.info` must be JSON naming the version asked for, or it would be kept forever wrong.
fn check_info(bytes: &[u8], version: &Version) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    struct Info {
        #[serde(rename = "Version")]
        version: String,
    }
    let info: Info =
        serde_json::from_slice(bytes).map_err(|e| format!("upstream .info is not valid: {e}"))?;
    if info.version != version.as_str() {
        return Err(format!(
            "upstream .info names version {:?}, not {version}",
            info.version
        ));
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
