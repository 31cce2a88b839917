//! Blob pushes to hosted repositories, as the distribution spec describes
//! them: monolithic (`POST ?digest=`, or `POST` then `PUT`), chunked (`PATCH`
//! with `Content-Range`), and cross-repository mounts. Bytes stream into a
//! temp file, hashed as they arrive; the digest is checked before the file
//! enters the store. A session's bytes live in `uploads/<id>` and its
//! acknowledged size in the index, so a chunked push resumes after a restart:
//! the first request for a session this process has not seen rebuilds it
//! (re-hashing the acknowledged bytes, dropping any half-written chunk).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_RANGE, HeaderValue, LOCATION, RANGE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::AsyncWriteExt;

use super::names::Repo;
use super::route::{Query, parse_digest};
use super::{Code, OciError, Registry, content_response, internal, touched, unsupported};
use crate::http::{Action, Body, Outcome, body};
use crate::store::{Algorithm, Digest, Hasher, UPLOAD_ABANDONED_AFTER};

/// Sessions open in this process at once (each holds a file and a hasher).
const MAX_UPLOADS: usize = 1024;

/// Read size when re-hashing a resumed session.
const REHASH_CHUNK: usize = 1024 * 1024;

struct Upload {
    repo_key: String,
    path: PathBuf,
    file: tokio::fs::File,
    size: u64,
    hasher: Hasher,
    touched: Instant,
}

/// An upload session; `None` once finished or cancelled by a concurrent request.
type Slot = Arc<tokio::sync::Mutex<Option<Upload>>>;

#[derive(Default)]
pub struct Uploads {
    open: Mutex<HashMap<String, Slot>>,
    /// One resume at a time: a second rebuild of the same session could
    /// truncate bytes the first one has since accepted.
    resuming: tokio::sync::Mutex<()>,
}

impl Uploads {
    fn get(&self, id: &str) -> Option<Slot> {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    fn remove(&self, id: &str) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    fn insert(&self, id: String, upload: Upload) -> Result<Slot, OciError> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        // Idle sessions leave memory; their rows and files stay for a resume
        // until the store's sweep expires them.
        open.retain(|_, slot| match slot.try_lock() {
            Ok(upload) => upload
                .as_ref()
                .is_some_and(|upload| upload.touched.elapsed() < UPLOAD_ABANDONED_AFTER),
            Err(_) => true,
        });
        if open.len() >= MAX_UPLOADS {
            return Err(OciError::new(
                Code::TooManyRequests,
                "too many uploads in progress",
            ));
        }
        let slot = Arc::new(tokio::sync::Mutex::new(Some(upload)));
        open.insert(id, slot.clone());
        Ok(slot)
    }
}

fn upload_unknown() -> OciError {
    OciError::new(Code::BlobUploadUnknown, "blob upload unknown to registry")
}

fn new_id() -> Result<String, OciError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| internal("no randomness for an upload id"))?;
    Ok(hex::encode(bytes))
}

/// `/v2/<name>/blobs/uploads/[<id>]`, every method.
pub async fn handle(
    registry: &Registry,
    repo: &Repo,
    id: Option<&str>,
    query: &Query,
    request: Request<Incoming>,
) -> Result<Response<Body>, OciError> {
    super::require_hosted(repo)?;
    let method = request.method().clone();
    match (&method, id) {
        (&Method::POST, None) => start(registry, repo, query, request).await,
        (&Method::PATCH, Some(id)) => patch(registry, repo, id, request).await,
        (&Method::PUT, Some(id)) => finish(registry, repo, id, query, request).await,
        (&Method::GET, Some(id)) => status(registry, repo, id).await,
        (&Method::DELETE, Some(id)) => cancel(registry, repo, id).await,
        _ => Err(unsupported(&method)),
    }
}

async fn start(
    registry: &Registry,
    repo: &Repo,
    query: &Query,
    request: Request<Incoming>,
) -> Result<Response<Body>, OciError> {
    if let (Some(mount), Some(from)) = (query.get("mount"), query.get("from")) {
        let digest = parse_digest(mount)?;
        if let Some(response) = mount_from(registry, repo, &digest, from).await? {
            return Ok(response);
        }
        // Not mountable: the spec says to fall back to a plain upload session.
    }
    if let Some(digest) = query.get("digest") {
        let digest = parse_digest(digest)?;
        let mut upload = new_upload(repo, registry.store.new_temp_path("upload")).await?;
        if let Err(error) = append(&mut upload, request.into_body()).await {
            let _ = tokio::fs::remove_file(&upload.path).await;
            return Err(error);
        }
        return commit(registry, repo, upload, &digest).await;
    }
    let id = new_id()?;
    let path = registry
        .store
        .upload_path(&id)
        .ok_or_else(|| internal("malformed upload id"))?;
    // The row first: a file no row names is fair game for the sweep.
    registry
        .store
        .upload_begin(&id, &repo.key)
        .await
        .map_err(internal)?;
    let upload = match new_upload(repo, path).await {
        Ok(upload) => upload,
        Err(error) => {
            end_session(registry, &id, None).await;
            return Err(error);
        }
    };
    if let Err(error) = registry.uploads.insert(id.clone(), upload) {
        end_session(registry, &id, registry.store.upload_path(&id)).await;
        return Err(error);
    }
    Ok(session_response(repo, &id, 0, StatusCode::ACCEPTED))
}

/// Forgets session `id` everywhere, removing its file if one is given.
async fn end_session(registry: &Registry, id: &str, file: Option<PathBuf>) {
    registry.uploads.remove(id);
    if let Some(path) = file {
        let _ = tokio::fs::remove_file(&path).await;
    }
    if let Err(error) = registry.store.upload_end(id).await {
        // The sweep removes the row once its file is gone.
        tracing::warn!(%error, upload = id, "could not forget an upload session");
    }
}

async fn new_upload(repo: &Repo, path: PathBuf) -> Result<Upload, OciError> {
    let file = tokio::fs::File::create(&path)
        .await
        .map_err(|e| internal(format!("creating {}: {e}", path.display())))?;
    Ok(Upload {
        repo_key: repo.key.clone(),
        path,
        file,
        size: 0,
        hasher: Algorithm::Sha256.hasher(),
        touched: Instant::now(),
    })
}

/// Cross-repository mount: the blob is already here, so link it.
async fn mount_from(
    registry: &Registry,
    repo: &Repo,
    digest: &Digest,
    from: &str,
) -> Result<Option<Response<Body>>, OciError> {
    let Ok(from) = from.parse() else {
        return Ok(None);
    };
    let Ok(source) = registry.upstreams.resolve(&from, None) else {
        return Ok(None);
    };
    let size = match super::blobs::local_size(registry, &source, digest).await? {
        Some(size) => size,
        None => return Ok(None),
    };
    // Pushed content is never evicted, even if it came from a mirrored
    // repository. The metadata cache may still name a blob eviction removed:
    // then it is no mount, but a plain upload.
    if !registry.store.mark_hosted(digest).await.map_err(internal)? {
        return Ok(None);
    }
    linked(registry, repo, digest, size).await.map(Some)
}

/// Links a stored blob into `repo` and answers the push.
async fn linked(
    registry: &Registry,
    repo: &Repo,
    digest: &Digest,
    size: u64,
) -> Result<Response<Body>, OciError> {
    registry
        .store
        .oci_link_blob(&repo.key, digest)
        .await
        .map_err(internal)?;
    registry.cache.put_blob(&repo.key, digest, size);
    Ok(created(repo, digest))
}

fn created(repo: &Repo, digest: &Digest) -> Response<Body> {
    let mut response = content_response(
        StatusCode::CREATED,
        body::empty(),
        "text/plain",
        digest,
        Some(0),
    );
    response.headers_mut().remove(http::header::CONTENT_TYPE);
    if let Ok(location) = HeaderValue::from_str(&format!("/v2/{}/blobs/{digest}", repo.name)) {
        response.headers_mut().insert(LOCATION, location);
    }
    touched(
        response,
        Action::Write,
        format!("{}@{digest}", repo.name),
        Some(digest),
        Outcome::Hosted,
    )
}

fn session_response(repo: &Repo, id: &str, size: u64, status: StatusCode) -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(&format!("/v2/{}/blobs/uploads/{id}", repo.name)) {
        headers.insert(LOCATION, location);
    }
    // The spec's inclusive range of bytes received; `0-0` before any.
    let last = size.saturating_sub(1);
    if let Ok(range) = HeaderValue::from_str(&format!("0-{last}")) {
        headers.insert(RANGE, range);
    }
    if let Ok(uuid) = HeaderValue::from_str(id) {
        headers.insert("docker-upload-uuid", uuid);
    }
    headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    headers.insert(
        super::API_VERSION_HEADER,
        HeaderValue::from_static(super::API_VERSION),
    );
    response
}

/// The session `id` of this repository, from memory or resumed from the store.
async fn session(registry: &Registry, repo: &Repo, id: &str) -> Result<Slot, OciError> {
    let slot = match registry.uploads.get(id) {
        Some(slot) => slot,
        None => resume(registry, id).await?,
    };
    if slot
        .lock()
        .await
        .as_ref()
        .is_none_or(|upload| upload.repo_key != repo.key)
    {
        return Err(upload_unknown());
    }
    Ok(slot)
}

/// Rebuilds a session another process (or an earlier life of this one)
/// acknowledged: its file cut back to the acknowledged size, that much
/// re-hashed.
async fn resume(registry: &Registry, id: &str) -> Result<Slot, OciError> {
    let path = registry.store.upload_path(id).ok_or_else(upload_unknown)?;
    let _one_at_a_time = registry.uploads.resuming.lock().await;
    if let Some(slot) = registry.uploads.get(id) {
        return Ok(slot);
    }
    let row = registry
        .store
        .upload_find(id)
        .await
        .map_err(internal)?
        .ok_or_else(upload_unknown)?;
    let reopen = path.clone();
    let rebuilt = tokio::task::spawn_blocking(move || rehash(&reopen, row.size))
        .await
        .map_err(|e| internal(format!("resuming an upload: {e}")))?;
    let (file, hasher) = match rebuilt {
        Ok(rebuilt) => rebuilt,
        Err(error) => {
            tracing::warn!(%error, upload = id, "an upload session could not be resumed; dropping it");
            end_session(registry, id, Some(path)).await;
            return Err(upload_unknown());
        }
    };
    let upload = Upload {
        repo_key: row.repo_key,
        path,
        file: tokio::fs::File::from_std(file),
        size: row.size,
        hasher,
        touched: Instant::now(),
    };
    registry.uploads.insert(id.to_owned(), upload)
}

/// Opens an upload file at its acknowledged `size` (dropping any chunk the
/// process died writing), positioned at the end, with those bytes hashed.
fn rehash(path: &std::path::Path, size: u64) -> std::io::Result<(std::fs::File, Hasher)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let on_disk = file.metadata()?.len();
    if on_disk < size {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "{} holds {on_disk} bytes, {size} were acknowledged",
                path.display()
            ),
        ));
    }
    file.set_len(size)?;
    let mut hasher = Algorithm::Sha256.hasher();
    let mut buffer = vec![0u8; REHASH_CHUNK];
    let mut left = size;
    while left > 0 {
        let want = left.min(REHASH_CHUNK as u64) as usize;
        file.read_exact(&mut buffer[..want])?;
        hasher.update(&buffer[..want]);
        left -= want as u64;
    }
    file.seek(SeekFrom::Start(size))?;
    Ok((file, hasher))
}

async fn patch(
    registry: &Registry,
    repo: &Repo,
    id: &str,
    request: Request<Incoming>,
) -> Result<Response<Body>, OciError> {
    let shared = session(registry, repo, id).await?;
    let mut guard = shared.lock().await;
    let upload = guard.as_mut().ok_or_else(upload_unknown)?;
    if let Some(range) = request.headers().get(CONTENT_RANGE) {
        let start = range
            .to_str()
            .ok()
            .map(|r| {
                r.trim()
                    .trim_start_matches("bytes")
                    .trim_start_matches([' ', '='])
            })
            .and_then(|r| r.split('-').next())
            .and_then(|s| s.trim().parse::<u64>().ok());
        if start != Some(upload.size) {
            let error = OciError::new(
                Code::RangeInvalid,
                format!("chunk must start at byte {}", upload.size),
            );
            let last = upload.size.saturating_sub(1);
            return Err(match HeaderValue::from_str(&format!("0-{last}")) {
                Ok(value) => error.with_header(RANGE, value),
                Err(_) => error,
            });
        }
    }
    if let Err(error) = append(upload, request.into_body()).await {
        let path = upload.path.clone();
        *guard = None;
        end_session(registry, id, Some(path)).await;
        return Err(error);
    }
    if let Err(error) = registry.store.upload_progress(id, upload.size).await {
        // The bytes are in and this process knows; only a resume after a
        // restart would fall back to the previous chunk (and say so in `Range`).
        tracing::warn!(%error, upload = id, "could not record upload progress");
    }
    Ok(session_response(
        repo,
        id,
        upload.size,
        StatusCode::ACCEPTED,
    ))
}

async fn finish(
    registry: &Registry,
    repo: &Repo,
    id: &str,
    query: &Query,
    request: Request<Incoming>,
) -> Result<Response<Body>, OciError> {
    let digest = parse_digest(query.get("digest").unwrap_or(""))?;
    let shared = session(registry, repo, id).await?;
    let mut upload = shared.lock().await.take().ok_or_else(upload_unknown)?;
    let path = upload.path.clone();
    let result = match append(&mut upload, request.into_body()).await {
        Ok(()) => commit(registry, repo, upload, &digest).await,
        Err(error) => Err(error),
    };
    // Committed or failed, the session is over (commit moved or removed the
    // file; a failed append leaves it for removal here).
    end_session(registry, id, result.is_err().then_some(path)).await;
    result
}

/// Verifies a complete upload against `digest` and moves it into the store.
async fn commit(
    registry: &Registry,
    repo: &Repo,
    mut upload: Upload,
    digest: &Digest,
) -> Result<Response<Body>, OciError> {
    let actual = upload.hasher.clone().finish();
    if actual != *digest {
        let _ = tokio::fs::remove_file(&upload.path).await;
        return Err(OciError::new(
            Code::DigestInvalid,
            format!("uploaded content has digest {actual}, not {digest}"),
        ));
    }
    let synced = async {
        upload.file.flush().await?;
        upload.file.sync_all().await
    };
    if let Err(error) = synced.await {
        let _ = tokio::fs::remove_file(&upload.path).await;
        return Err(internal(format!("syncing upload: {error}")));
    }
    registry
        .store
        .adopt_file(&upload.path, digest, upload.size, true)
        .await
        .map_err(internal)?;
    linked(registry, repo, digest, upload.size).await
}

async fn status(registry: &Registry, repo: &Repo, id: &str) -> Result<Response<Body>, OciError> {
    let shared = session(registry, repo, id).await?;
    let size = shared.lock().await.as_ref().map_or(0, |upload| upload.size);
    Ok(session_response(repo, id, size, StatusCode::NO_CONTENT))
}

async fn cancel(registry: &Registry, repo: &Repo, id: &str) -> Result<Response<Body>, OciError> {
    let shared = session(registry, repo, id).await?;
    let path = shared.lock().await.take().map(|upload| upload.path);
    end_session(registry, id, path).await;
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

/// Streams a request body onto the end of an upload, hashing as it goes.
async fn append(upload: &mut Upload, mut body: Incoming) -> Result<(), OciError> {
    upload.touched = Instant::now();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            OciError::new(Code::BlobUploadInvalid, format!("reading the upload: {e}"))
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        upload.hasher.update(&data);
        upload
            .file
            .write_all(&data)
            .await
            .map_err(|e| internal(format!("writing {}: {e}", upload.path.display())))?;
        upload.size += data.len() as u64;
    }
    Ok(())
}

/// Reads a small request body whole (a manifest), refusing more than `limit`.
pub async fn read_body(mut body: Incoming, limit: usize) -> Result<Bytes, OciError> {
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            OciError::new(Code::ManifestInvalid, format!("reading the request: {e}"))
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if bytes.len() + data.len() > limit {
            return Err(OciError::new(
                Code::SizeInvalid,
                format!("manifest larger than {limit} bytes"),
            )
            .with_status(StatusCode::PAYLOAD_TOO_LARGE));
        }
        bytes.extend_from_slice(&data);
    }
    Ok(Bytes::from(bytes))
}
