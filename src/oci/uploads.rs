//! Blob pushes to hosted repositories, as the distribution spec describes
//! them: monolithic (`POST ?digest=`, or `POST` then `PUT`), chunked (`PATCH`
//! with `Content-Range`), and cross-repository mounts. Bytes stream into the
//! store's upload file, hashed as they arrive; the digest is checked before
//! they enter the store as a blob.
//!
//! A session lives in the store, not in this process: its row holds its
//! owner, its acknowledged size and the hash state after those bytes, and its
//! bytes sit in `uploads/<id>`. Each request reads the row, opens the file and
//! closes it again, so an idle session costs no memory and no file descriptor,
//! and a session goes on after a restart as if nothing had happened. A chunk
//! counts once its request has completed: one that fails or stalls midway is
//! cut off again, and the session stays where it was (`GET` says where).
//!
//! The identity that opened a session owns it. Any other is told the session
//! does not exist: its id is all a client needs, and the access log shows it.
//! One identity holds at most `registry.max_upload_sessions_per_identity`.

mod session;

use http::header::{CONTENT_LENGTH, CONTENT_RANGE, HeaderMap, HeaderValue, LOCATION, RANGE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use session::{Session, receive};
pub use session::{Uploads, owner_of};

use super::names::Repo;
use super::route::{Query, parse_digest};
use super::{Code, OciError, Registry, content_response, internal, touched, unsupported};
use crate::store::{Begun, Digest, Pushed, UploadFile, UploadId, UploadOwner};
use crate::wire::{Action, Body, Outcome, body};

fn upload_unknown() -> OciError {
    OciError::new(Code::BlobUploadUnknown, "blob upload unknown to registry")
}

fn new_id() -> Result<UploadId, OciError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| internal("no randomness for an upload id"))?;
    Ok(UploadId::from_random(bytes))
}

fn quota_full(quota: u32) -> OciError {
    OciError::new(
        Code::TooManyRequests,
        format!(
            "{quota} upload sessions are open for this identity, the most allowed: \
             finish or cancel (DELETE) one first"
        ),
    )
}

/// `/v2/<name>/blobs/uploads/[<id>]`, every method.
pub async fn handle(
    registry: &Registry,
    repo: &Repo,
    id: Option<&UploadId>,
    query: &Query,
    request: Request<Incoming>,
    owner: &UploadOwner,
) -> Result<Response<Body>, OciError> {
    super::require_hosted(repo)?;
    let method = request.method().clone();
    let session = |id| Session::named(registry, repo, owner, id);
    match (&method, id) {
        (&Method::POST, None) => start(registry, repo, owner, query, request).await,
        (&Method::PATCH, Some(id)) => patch(&session(id), request).await,
        (&Method::PUT, Some(id)) => finish(&session(id), query, request).await,
        (&Method::GET, Some(id)) => status(&session(id)).await,
        (&Method::DELETE, Some(id)) => cancel(&session(id)).await,
        _ => Err(unsupported(&method)),
    }
}

async fn start(
    registry: &Registry,
    repo: &Repo,
    owner: &UploadOwner,
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
        return monolithic(registry, repo, &parse_digest(digest)?, request).await;
    }
    let id = new_id()?;
    let quota = registry.uploads.quota;
    match registry
        .store
        .uploads()
        .begin(&id, &repo.key, owner, quota)
        .await?
    {
        Begun::Opened => Ok(session_response(repo, &id, 0, StatusCode::ACCEPTED)),
        Begun::QuotaFull => Err(quota_full(quota)),
    }
}

/// `POST ?digest=`: the whole blob in one body, no session.
async fn monolithic(
    registry: &Registry,
    repo: &Repo,
    digest: &Digest,
    request: Request<Incoming>,
) -> Result<Response<Body>, OciError> {
    let mut file = registry
        .store
        .uploads()
        .unsessioned(digest.algorithm())
        .await?;
    let body = registry.body_reader(request.into_body(), Code::BlobUploadInvalid);
    if let Err(error) = receive(&mut file, body).await {
        file.discard().await;
        return Err(error);
    }
    commit(registry, repo, file, digest).await
}

async fn patch(
    session: &Session<'_>,
    request: Request<Incoming>,
) -> Result<Response<Body>, OciError> {
    let registry = session.registry;
    let _turn = registry.uploads.turn(session.id)?;
    let row = session.row().await?;
    check_chunk_start(request.headers(), row.size)?;
    let mut file = session.open(&row).await?;
    let body = registry.body_reader(request.into_body(), Code::BlobUploadInvalid);
    if let Err(error) = receive(&mut file, body).await {
        file.cut_back(row.size).await;
        return Err(error);
    }
    let size = file.size();
    match registry
        .store
        .uploads()
        .progress(session.id, &mut file)
        .await
    {
        Ok(true) => Ok(session_response(
            session.repo,
            session.id,
            size,
            StatusCode::ACCEPTED,
        )),
        // Swept while this chunk was arriving, its file with it.
        Ok(false) => Err(upload_unknown()),
        Err(error) => {
            file.cut_back(row.size).await;
            Err(internal(error))
        }
    }
}

/// A chunk must start where the acknowledged bytes end. `Content-Range` is
/// optional; without it the chunk simply follows them.
fn check_chunk_start(headers: &HeaderMap, acknowledged: u64) -> Result<(), OciError> {
    let Some(range) = headers.get(CONTENT_RANGE) else {
        return Ok(());
    };
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
    if start == Some(acknowledged) {
        return Ok(());
    }
    let error = OciError::new(
        Code::RangeInvalid,
        format!("chunk must start at byte {acknowledged}"),
    );
    let last = acknowledged.saturating_sub(1);
    Err(match HeaderValue::from_str(&format!("0-{last}")) {
        Ok(value) => error.with_header(RANGE, value),
        Err(_) => error,
    })
}

async fn finish(
    session: &Session<'_>,
    query: &Query,
    request: Request<Incoming>,
) -> Result<Response<Body>, OciError> {
    let registry = session.registry;
    let digest = parse_digest(query.get("digest").unwrap_or(""))?;
    let _turn = registry.uploads.turn(session.id)?;
    let row = session.row().await?;
    let mut file = session.open(&row).await?;
    let body = registry.body_reader(request.into_body(), Code::BlobUploadInvalid);
    if let Err(error) = receive(&mut file, body).await {
        file.cut_back(row.size).await;
        return Err(error);
    }
    let result = commit(registry, session.repo, file, &digest).await;
    // Committed or refused, the session is over: commit moved its file into
    // the store or removed it. A row left behind (logged) names no file, so
    // the sweep drops it.
    let _ = session.end().await;
    result
}

/// Verifies a complete upload against `digest` and moves it into the store.
async fn commit(
    registry: &Registry,
    repo: &Repo,
    file: UploadFile,
    digest: &Digest,
) -> Result<Response<Body>, OciError> {
    match registry.store.uploads().commit(file, digest).await? {
        Pushed::Stored { size } => linked(registry, repo, digest, size).await,
        Pushed::WrongDigest { actual } => Err(OciError::new(
            Code::DigestInvalid,
            format!("uploaded content has digest {actual}, not {digest}"),
        )),
    }
}

async fn status(session: &Session<'_>) -> Result<Response<Body>, OciError> {
    let row = session.row().await?;
    Ok(session_response(
        session.repo,
        session.id,
        row.size,
        StatusCode::NO_CONTENT,
    ))
}

async fn cancel(session: &Session<'_>) -> Result<Response<Body>, OciError> {
    let _turn = session.registry.uploads.turn(session.id)?;
    session.row().await?;
    session.end().await?;
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
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
    if !registry.store.blobs().pin_hosted(digest).await? {
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
    let stamp = registry.cache.stamp();
    registry.store.oci().link_blob(&repo.key, digest).await?;
    registry
        .cache
        .put_blob(repo.key.as_str(), digest, size, stamp);
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

fn session_response(repo: &Repo, id: &UploadId, size: u64, status: StatusCode) -> Response<Body> {
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
    if let Ok(uuid) = HeaderValue::from_str(id.as_str()) {
        headers.insert("docker-upload-uuid", uuid);
    }
    headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    headers.insert(
        super::API_VERSION_HEADER,
        HeaderValue::from_static(super::API_VERSION),
    );
    response
}
