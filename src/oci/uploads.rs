//! Blob pushes to hosted repositories, as the distribution spec describes
//! them: monolithic (`POST ?digest=`, or `POST` then `PUT`), chunked (`PATCH`
//! with `Content-Range`), and cross-repository mounts. Bytes stream into a
//! temp file, hashed as they arrive; the digest is checked before the file
//! enters the store. Upload sessions live in memory.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
use crate::store::{Algorithm, Digest, Hasher};

/// An upload nobody touched for this long is dropped with its temp file.
const ABANDONED_AFTER: Duration = Duration::from_secs(24 * 3600);
const MAX_UPLOADS: usize = 1024;

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

    fn insert(&self, id: String, upload: Upload) -> Result<(), OciError> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|_, slot| match slot.try_lock() {
            Ok(upload) => match &*upload {
                Some(upload) if upload.touched.elapsed() > ABANDONED_AFTER => {
                    let _ = std::fs::remove_file(&upload.path);
                    false
                }
                Some(_) => true,
                None => false,
            },
            Err(_) => true,
        });
        if open.len() >= MAX_UPLOADS {
            return Err(OciError::new(
                Code::TooManyRequests,
                "too many uploads in progress",
            ));
        }
        open.insert(id, Arc::new(tokio::sync::Mutex::new(Some(upload))));
        Ok(())
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
    let mut upload = new_upload(registry, repo).await?;
    if let Some(digest) = query.get("digest") {
        let digest = parse_digest(digest)?;
        append(&mut upload, request.into_body()).await?;
        return commit(registry, repo, upload, &digest).await;
    }
    let id = new_id()?;
    registry.uploads.insert(id.clone(), upload)?;
    Ok(session_response(repo, &id, 0, StatusCode::ACCEPTED))
}

async fn new_upload(registry: &Registry, repo: &Repo) -> Result<Upload, OciError> {
    let path = registry.store.new_temp_path("upload");
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
    // Pushed content is never evicted, even if it came from a mirrored repository.
    registry
        .store
        .db()
        .insert_blob(digest, size, true)
        .await
        .map_err(internal)?;
    registry
        .store
        .oci_link_blob(&repo.key, digest)
        .await
        .map_err(internal)?;
    registry.cache.put_blob(&repo.key, digest, size);
    Ok(Some(created(repo, digest)))
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

/// The session `id` of this repository, locked.
async fn session(registry: &Registry, repo: &Repo, id: &str) -> Result<Slot, OciError> {
    let slot = registry.uploads.get(id).ok_or_else(upload_unknown)?;
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
        registry.uploads.remove(id);
        let _ = tokio::fs::remove_file(&upload.path).await;
        *guard = None;
        return Err(error);
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
    registry.uploads.remove(id);
    let mut upload = shared.lock().await.take().ok_or_else(upload_unknown)?;
    if let Err(error) = append(&mut upload, request.into_body()).await {
        let _ = tokio::fs::remove_file(&upload.path).await;
        return Err(error);
    }
    commit(registry, repo, upload, &digest).await
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
    registry
        .store
        .oci_link_blob(&repo.key, digest)
        .await
        .map_err(internal)?;
    registry.cache.put_blob(&repo.key, digest, upload.size);
    Ok(created(repo, digest))
}

async fn status(registry: &Registry, repo: &Repo, id: &str) -> Result<Response<Body>, OciError> {
    let shared = session(registry, repo, id).await?;
    let size = shared.lock().await.as_ref().map_or(0, |upload| upload.size);
    Ok(session_response(repo, id, size, StatusCode::NO_CONTENT))
}

async fn cancel(registry: &Registry, repo: &Repo, id: &str) -> Result<Response<Body>, OciError> {
    let shared = session(registry, repo, id).await?;
    registry.uploads.remove(id);
    if let Some(upload) = shared.lock().await.take() {
        let _ = tokio::fs::remove_file(&upload.path).await;
    }
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
