//! Blobs: served from the store with `Range` support; a miss becomes one
//! shared fill from upstream that every concurrent client streams from as
//! bytes arrive, verified against the digest before it is indexed.

use std::sync::Arc;

use http::header::{ACCEPT_RANGES, CONTENT_RANGE, HeaderMap, HeaderValue, RANGE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::names::Repo;
use super::route::RepoName;
use super::upstream::Upstream;
use super::{Code, OciError, Registry, content_response, from_upstream, internal, touched};
use crate::http::{Action, Body, Outcome, body};
use crate::store::{Digest, FillError, FillHead, FillProducer, FillReader, Slot, Store};

const OCTET_STREAM: &str = "application/octet-stream";

fn unknown(repo: &Repo, digest: &Digest) -> OciError {
    OciError::new(
        Code::BlobUnknown,
        format!("blob {digest} unknown in {}", repo.name),
    )
    .with_detail(serde_json::json!({ "digest": digest.to_string() }))
}

/// A `Range: bytes=…` request (one range; several are answered whole).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ByteRange {
    /// `start-` or `start-end` (inclusive).
    From(u64, Option<u64>),
    /// `-n`: the last n bytes.
    Suffix(u64),
}

impl ByteRange {
    fn parse(header: Option<&HeaderValue>) -> Option<ByteRange> {
        let spec = header?.to_str().ok()?.trim().strip_prefix("bytes=")?;
        if spec.contains(',') {
            return None;
        }
        let (start, end) = spec.split_once('-')?;
        let (start, end) = (start.trim(), end.trim());
        if start.is_empty() {
            return end.parse().ok().map(ByteRange::Suffix);
        }
        let start = start.parse().ok()?;
        let end = if end.is_empty() {
            None
        } else {
            Some(end.parse().ok()?)
        };
        if end.is_some_and(|end| end < start) {
            return None;
        }
        Some(ByteRange::From(start, end))
    }

    /// `start..end` (exclusive) within `size`, or `None` if unsatisfiable.
    fn resolve(self, size: u64) -> Option<(u64, u64)> {
        match self {
            ByteRange::From(start, _) if start >= size => None,
            ByteRange::From(start, end) => {
                Some((start, end.map_or(size, |e| e.saturating_add(1).min(size))))
            }
            ByteRange::Suffix(0) => None,
            ByteRange::Suffix(n) => Some((size.saturating_sub(n), size)),
        }
    }
}

fn unsatisfiable(size: u64) -> OciError {
    OciError::new(
        Code::RangeInvalid,
        format!("range not satisfiable for a {size}-byte blob"),
    )
    .with_header(
        CONTENT_RANGE,
        HeaderValue::from_str(&format!("bytes */{size}"))
            .unwrap_or(HeaderValue::from_static("bytes */*")),
    )
}

fn artifact(repo: &Repo, digest: &Digest) -> String {
    format!("{}@{digest}", repo.name)
}

/// The size of a blob this repository holds (memory first, then the index).
pub async fn local_size(
    registry: &Registry,
    repo: &Repo,
    digest: &Digest,
) -> Result<Option<u64>, OciError> {
    if let Some(size) = registry.cache.blob(&repo.key, digest) {
        return Ok(Some(size));
    }
    let size = registry
        .store
        .oci_blob(&repo.key, digest)
        .await
        .map_err(internal)?;
    if let Some(size) = size {
        registry.cache.put_blob(&repo.key, digest, size);
    }
    Ok(size)
}

/// `GET|HEAD /v2/<name>/blobs/<digest>`.
pub async fn get(
    registry: &Registry,
    repo: &Repo,
    digest: &Digest,
    request: Request<Incoming>,
) -> Result<Response<Body>, OciError> {
    let head = request.method() == Method::HEAD;
    let range = ByteRange::parse(request.headers().get(RANGE));
    drop(request);
    let outcome = if repo.is_hosted() {
        Outcome::Hosted
    } else {
        Outcome::Hit
    };
    if local_size(registry, repo, digest).await?.is_some() {
        if let Some(response) = serve_file(registry, repo, digest, head, range, outcome).await? {
            return Ok(response);
        }
        registry.cache.forget_blob(&repo.key, digest);
    }
    let Some((upstream, remote)) = repo.upstream() else {
        return Err(unknown(repo, digest));
    };
    // Content-addressed: a layer fetched for another repository is this one too.
    if let Some(response) = adopt_stored(registry, repo, digest, head, range).await? {
        return Ok(response);
    }
    if head {
        return head_upstream(repo, upstream, remote, digest).await;
    }
    fill(registry, repo, upstream, remote, digest, range).await
}

async fn adopt_stored(
    registry: &Registry,
    repo: &Repo,
    digest: &Digest,
    head: bool,
    range: Option<ByteRange>,
) -> Result<Option<Response<Body>>, OciError> {
    if registry
        .store
        .has_blob(digest)
        .await
        .map_err(internal)?
        .is_none()
    {
        return Ok(None);
    }
    registry
        .store
        .oci_link_blob(&repo.key, digest)
        .await
        .map_err(internal)?;
    serve_file(registry, repo, digest, head, range, Outcome::Hit).await
}

fn blob_headers(response: &mut Response<Body>) {
    response
        .headers_mut()
        .insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
}

fn partial(
    mut response: Response<Body>,
    start: u64,
    end: u64,
    total: Option<u64>,
) -> Response<Body> {
    let total = total.map_or("*".to_owned(), |t| t.to_string());
    if let Ok(value) =
        HeaderValue::from_str(&format!("bytes {start}-{}/{total}", end.saturating_sub(1)))
    {
        response.headers_mut().insert(CONTENT_RANGE, value);
    }
    response
}

/// Serves a stored blob, or `None` if its file is gone.
async fn serve_file(
    registry: &Registry,
    repo: &Repo,
    digest: &Digest,
    head: bool,
    range: Option<ByteRange>,
    outcome: Outcome,
) -> Result<Option<Response<Body>>, OciError> {
    let Some(blob) = registry.store.open_blob(digest).await.map_err(internal)? else {
        return Ok(None);
    };
    let size = blob.size;
    let (status, start, end) = match range {
        None => (StatusCode::OK, 0, size),
        Some(range) => {
            let (start, end) = range.resolve(size).ok_or_else(|| unsatisfiable(size))?;
            (StatusCode::PARTIAL_CONTENT, start, end)
        }
    };
    let body = if head {
        body::empty()
    } else {
        body::file(blob.file, start, end - start)
            .await
            .map_err(internal)?
    };
    let mut response = content_response(status, body, OCTET_STREAM, digest, Some(end - start));
    blob_headers(&mut response);
    if status == StatusCode::PARTIAL_CONTENT {
        response = partial(response, start, end, Some(size));
    }
    Ok(Some(touched(
        response,
        Action::Read,
        artifact(repo, digest),
        Some(digest),
        outcome,
    )))
}

/// HEAD of a blob we do not have: ask upstream, store nothing.
async fn head_upstream(
    repo: &Repo,
    upstream: &Upstream,
    remote: &RepoName,
    digest: &Digest,
) -> Result<Response<Body>, OciError> {
    let response = upstream
        .send(
            Method::HEAD,
            remote,
            &format!("blobs/{digest}"),
            HeaderMap::new(),
        )
        .await
        .map_err(|e| from_upstream(e, Code::BlobUnknown))?;
    if response.status() != StatusCode::OK {
        return Err(from_upstream(
            upstream.error_from(response).await,
            Code::BlobUnknown,
        ));
    }
    let length = super::upstream::announced_length(&response);
    let mut response =
        content_response(StatusCode::OK, body::empty(), OCTET_STREAM, digest, length);
    blob_headers(&mut response);
    Ok(touched(
        response,
        Action::Read,
        artifact(repo, digest),
        Some(digest),
        Outcome::Miss,
    ))
}

/// A miss: join the fill in progress for this digest, or start it.
async fn fill(
    registry: &Registry,
    repo: &Repo,
    upstream: &Upstream,
    remote: &RepoName,
    digest: &Digest,
    range: Option<ByteRange>,
) -> Result<Response<Body>, OciError> {
    let key = format!("oci:{digest}");
    // A fill abandoned by a producer that found the blob already stored
    // sends its joiners back here; a few rounds settle it.
    for _ in 0..3 {
        let mut reader = match registry.store.fill(&key).map_err(internal)? {
            Slot::Joined(reader) => reader,
            Slot::Producer(producer) => {
                // Someone may have finished this fill between our miss and now.
                if let Some(response) = adopt_stored(registry, repo, digest, false, range).await? {
                    return Ok(response);
                }
                start_fill(registry, repo, upstream, remote, digest, producer).await?
            }
        };
        match reader.head().await {
            Ok(head) => {
                return respond_from_fill(registry, repo, digest, reader, head, range).await;
            }
            Err(FillError::Abandoned) => {
                if let Some(response) = adopt_stored(registry, repo, digest, false, range).await? {
                    return Ok(response);
                }
            }
            Err(error) => return Err(fill_error(error, repo, digest)),
        }
    }
    Err(OciError::new(
        Code::Unavailable,
        format!("could not fetch blob {digest}"),
    ))
}

fn fill_error(error: FillError, repo: &Repo, digest: &Digest) -> OciError {
    match error {
        FillError::NotFound(_) => unknown(repo, digest),
        error => {
            tracing::warn!(%error, %digest, repo = %repo.name, "blob fill failed");
            OciError::new(
                Code::Unavailable,
                format!("fetching blob {digest} from upstream failed"),
            )
        }
    }
}

/// Asks upstream for the blob; on success hands the body to a detached task
/// that writes the fill, and returns a reader for this client.
async fn start_fill(
    registry: &Registry,
    repo: &Repo,
    upstream: &Upstream,
    remote: &RepoName,
    digest: &Digest,
    mut producer: Box<FillProducer>,
) -> Result<FillReader, OciError> {
    let answer = upstream
        .send(
            Method::GET,
            remote,
            &format!("blobs/{digest}"),
            HeaderMap::new(),
        )
        .await;
    let response = match answer {
        Ok(response) if response.status() == StatusCode::OK => response,
        Ok(response) => {
            let error = upstream.error_from(response).await;
            producer.fail(if error.is_not_found() {
                FillError::NotFound(error.to_string())
            } else {
                FillError::Upstream(error.to_string())
            });
            return Err(from_upstream(error, Code::BlobUnknown));
        }
        Err(error) => {
            producer.fail(FillError::Upstream(error.to_string()));
            return Err(from_upstream(error, Code::BlobUnknown));
        }
    };
    producer.use_algorithm(digest.algorithm());
    let head = FillHead {
        total: super::upstream::announced_length(&response),
        media_type: None,
    };
    if let Err(error) = producer.start(head) {
        producer.fail(error.clone());
        return Err(fill_error(error, repo, digest));
    }
    let reader = producer.reader();
    tokio::spawn(run_fill(
        producer,
        response,
        digest.clone(),
        registry.store.clone(),
        repo.key.clone(),
    ));
    Ok(reader)
}

/// Copies upstream's body into the fill, then verifies and indexes it. Runs
/// detached, so a client hanging up does not waste the download.
async fn run_fill(
    mut producer: Box<FillProducer>,
    mut response: reqwest::Response,
    digest: Digest,
    store: Store,
    repo_key: String,
) {
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if let Err(error) = producer.write(&chunk).await {
                    tracing::warn!(%error, %digest, "blob fill failed while writing");
                    producer.fail(error);
                    return;
                }
            }
            Ok(None) => break,
            Err(error) => {
                tracing::warn!(%error, %digest, "upstream body failed mid-blob");
                producer.fail(FillError::Upstream(error.to_string()));
                return;
            }
        }
    }
    match producer.commit(Some(&digest), None).await {
        Ok(committed) => {
            if let Err(error) = store.oci_link_blob(&repo_key, &digest).await {
                tracing::warn!(%error, %digest, "could not link a fetched blob to its repository");
            }
            committed.publish();
        }
        Err(error) => {
            tracing::warn!(%error, %digest, repo = %repo_key, "fetched blob refused; not stored")
        }
    }
}

async fn respond_from_fill(
    registry: &Registry,
    repo: &Repo,
    digest: &Digest,
    mut reader: FillReader,
    head: Arc<FillHead>,
    range: Option<ByteRange>,
) -> Result<Response<Body>, OciError> {
    let (status, start, end, total) = match (range, head.total) {
        (None, total) => (StatusCode::OK, 0, total, total),
        (Some(range), Some(total)) => {
            let (start, end) = range.resolve(total).ok_or_else(|| unsatisfiable(total))?;
            (StatusCode::PARTIAL_CONTENT, start, Some(end), Some(total))
        }
        // A range of a blob of unknown length: wait for the fill, serve the file.
        (Some(_), None) => {
            reader
                .finished()
                .await
                .map_err(|e| fill_error(e, repo, digest))?;
            return serve_file(registry, repo, digest, false, range, Outcome::Miss)
                .await?
                .ok_or_else(|| unknown(repo, digest));
        }
    };
    let length = end.map(|end| end - start);
    let body = body::stream(reader.stream(start, end));
    let mut response = content_response(status, body, OCTET_STREAM, digest, length);
    blob_headers(&mut response);
    if let (StatusCode::PARTIAL_CONTENT, Some(end)) = (status, end) {
        response = partial(response, start, end, total);
    }
    Ok(touched(
        response,
        Action::Read,
        artifact(repo, digest),
        Some(digest),
        Outcome::Miss,
    ))
}

/// `DELETE /v2/<name>/blobs/<digest>` on a hosted repository: unlinks it
/// (the bytes stay until garbage collection finds them unreferenced).
pub async fn delete(
    registry: &Registry,
    repo: &Repo,
    digest: &Digest,
) -> Result<Response<Body>, OciError> {
    super::require_hosted(repo)?;
    registry.cache.forget_blob(&repo.key, digest);
    if !registry
        .store
        .oci_unlink_blob(&repo.key, digest)
        .await
        .map_err(internal)?
    {
        return Err(unknown(repo, digest));
    }
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::ACCEPTED;
    Ok(touched(
        response,
        Action::Delete,
        artifact(repo, digest),
        Some(digest),
        Outcome::Hosted,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_resolve_like_http_says() {
        let parse = |s: &str| ByteRange::parse(Some(&HeaderValue::from_str(s).unwrap()));
        assert_eq!(parse("bytes=0-99").unwrap().resolve(1000), Some((0, 100)));
        assert_eq!(
            parse("bytes=900-").unwrap().resolve(1000),
            Some((900, 1000))
        );
        assert_eq!(
            parse("bytes=990-2000").unwrap().resolve(1000),
            Some((990, 1000))
        );
        assert_eq!(parse("bytes=-10").unwrap().resolve(1000), Some((990, 1000)));
        assert_eq!(parse("bytes=1000-").unwrap().resolve(1000), None);
        assert_eq!(parse("bytes=5-1"), None);
        assert_eq!(parse("bytes=0-1,5-6"), None);
        assert_eq!(parse("items=0-1"), None);
    }
}
