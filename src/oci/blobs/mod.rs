//! Blobs: served from the store with `Range` support, checked against their
//! digest as the store is set to (a small one is kept in memory once read and
//! checked, see `cache`); a miss becomes one shared fill from upstream
//! (`miss`) that every concurrent client streams from as bytes arrive,
//! verified against the digest before it is indexed.

mod miss;
mod range;

use miss::fill;
use range::{ByteRange, unsatisfiable};

use http::header::{ACCEPT_RANGES, CONTENT_RANGE, HeaderMap, HeaderValue, RANGE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::cache::{BlobMeta, KeptBlob, Stamp};
use super::names::Repo;
use super::route::RepoName;
use super::upstream::Upstream;
use super::{
    Code, DigestHeaders, OciError, Registry, content_response, corrupt, from_upstream, internal,
    named_response, touched,
};
use crate::store::{Digest, OpenedBlob};
use crate::wire::{Action, Body, Outcome, body};

const OCTET_STREAM: &str = "application/octet-stream";
/// Blobs up to this size (configs, small layers) are read whole with the open
/// and sent from memory, then kept there (`cache`) for the next hits.
const READ_WHOLE: u64 = 64 * 1024;

pub(super) fn unknown(repo: &Repo, digest: &Digest) -> OciError {
    OciError::new(
        Code::BlobUnknown,
        format!("blob {digest} unknown in {}", repo.name),
    )
    .with_detail(serde_json::json!({ "digest": digest.to_string() }))
}

pub(super) fn artifact(repo: &Repo, digest: &Digest) -> String {
    [repo.name.as_str(), "@", digest.as_str()].concat()
}

/// The size of a blob this repository holds (memory first, then the index).
pub async fn local_size(
    registry: &Registry,
    repo: &Repo,
    digest: &Digest,
) -> Result<Option<u64>, OciError> {
    if let Some(blob) = registry.cache.blob(repo.key.as_str(), digest) {
        return Ok(Some(blob.size));
    }
    indexed_size(registry, repo, digest, registry.cache.stamp()).await
}

/// The size the index records for a blob of this repository (then kept in
/// memory unless a change was heard since `read`).
async fn indexed_size(
    registry: &Registry,
    repo: &Repo,
    digest: &Digest,
    read: Stamp,
) -> Result<Option<u64>, OciError> {
    let size = registry.store.oci().blob_size(&repo.key, digest).await?;
    if let Some(size) = size {
        registry
            .cache
            .put_blob(repo.key.as_str(), digest, size, read);
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
    let size = match registry.cache.blob(repo.key.as_str(), digest) {
        Some(BlobMeta {
            kept: Some(kept), ..
        }) => return serve_kept(registry, repo, digest, kept, head, range, outcome),
        Some(blob) => Some(blob.size),
        None => None,
    };
    // Not on a hit from memory: this one reads the index or a file anyway.
    let read = registry.cache.stamp();
    let size = match size {
        Some(size) => Some(size),
        None => indexed_size(registry, repo, digest, read).await?,
    };
    if size.is_some() {
        let served = serve_file(registry, repo, digest, head, range, outcome, read).await?;
        if let Some(response) = served {
            return Ok(response);
        }
        registry.cache.forget_blob(repo.key.as_str(), digest);
    }
    // Boxed: the upstream requests in there are kilobytes of future that a
    // hit should not carry (HTTP/2 moves each request's future as it spawns it).
    Box::pin(miss(registry, repo, digest, head, range)).await
}

/// Not in this repository: another's copy (content-addressed, so it is this
/// one's too), else upstream.
async fn miss(
    registry: &Registry,
    repo: &Repo,
    digest: &Digest,
    head: bool,
    range: Option<ByteRange>,
) -> Result<Response<Body>, OciError> {
    let Some((upstream, remote)) = repo.upstream() else {
        // Pushed, then found corrupt: it cannot be fetched again, so say why
        // (to a GET: a push HEADs first and must see it missing).
        if !head && registry.store.blobs().is_quarantined(digest).await {
            return Err(corrupt("blob", repo, digest));
        }
        return Err(unknown(repo, digest));
    };
    if let Some(response) = adopt_stored(registry, repo, digest, head, range).await? {
        return Ok(response);
    }
    if head {
        return head_upstream(repo, upstream, remote, digest).await;
    }
    fill(registry, repo, upstream, remote, digest, range).await
}

pub(super) async fn adopt_stored(
    registry: &Registry,
    repo: &Repo,
    digest: &Digest,
    head: bool,
    range: Option<ByteRange>,
) -> Result<Option<Response<Body>>, OciError> {
    if registry.store.blobs().size(digest).await?.is_none() {
        return Ok(None);
    }
    let read = registry.cache.stamp();
    match registry.store.oci().link_blob(&repo.key, digest).await {
        Ok(()) => {}
        // Evicted since we looked: a miss after all.
        Err(error) if error.is_missing_reference() => return Ok(None),
        Err(error) => return Err(internal(error)),
    }
    serve_file(registry, repo, digest, head, range, Outcome::Hit, read).await
}

pub(super) fn blob_headers(response: &mut Response<Body>) {
    response
        .headers_mut()
        .insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
}

pub(super) fn partial(
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

/// Serves a stored blob, or `None` if its file is gone (or failed its digest
/// check, and is quarantined now). A small one read whole, and so checked,
/// stays in memory for the next hits, unless a change was heard since the
/// repository's link to it was `read`.
pub(super) async fn serve_file(
    registry: &Registry,
    repo: &Repo,
    digest: &Digest,
    head: bool,
    range: Option<ByteRange>,
    outcome: Outcome,
    read: Stamp,
) -> Result<Option<Response<Body>>, OciError> {
    let read_limit = if head { 0 } else { READ_WHOLE };
    let Some(blob) = registry
        .store
        .blobs()
        .open_or_read(digest, read_limit)
        .await?
    else {
        return Ok(None);
    };
    let size = blob.size();
    let (status, start, end) = resolve(range, size)?;
    let names = DigestHeaders::of(digest);
    let body = match blob {
        _ if head => body::empty(),
        OpenedBlob::Read(bytes) => {
            if let Some(names) = &names {
                registry.cache.keep_blob(
                    repo.key.as_str(),
                    digest,
                    bytes.clone(),
                    names.clone(),
                    read,
                );
            }
            body::full(bytes.slice(start as usize..end as usize))
        }
        OpenedBlob::File(blob) => body::stream(blob.stream(start, end - start).await?),
    };
    let served = Served {
        status,
        start,
        end,
        size,
    };
    Ok(Some(blob_response(
        repo,
        digest,
        names.as_ref(),
        body,
        served,
        outcome,
    )))
}

/// A hit on a small blob kept in memory: no file, no formatting.
fn serve_kept(
    registry: &Registry,
    repo: &Repo,
    digest: &Digest,
    kept: KeptBlob,
    head: bool,
    range: Option<ByteRange>,
    outcome: Outcome,
) -> Result<Response<Body>, OciError> {
    registry.store.blobs().touch(digest);
    let size = kept.bytes.len() as u64;
    let (status, start, end) = resolve(range, size)?;
    let body = if head {
        body::empty()
    } else {
        body::full(kept.bytes.slice(start as usize..end as usize))
    };
    let served = Served {
        status,
        start,
        end,
        size,
    };
    Ok(blob_response(
        repo,
        digest,
        Some(&kept.names),
        body,
        served,
        outcome,
    ))
}

/// What part of a blob an answer carries.
struct Served {
    status: StatusCode,
    start: u64,
    end: u64,
    size: u64,
}

/// The status and `start..end` a request gets from a blob of `size` bytes.
fn resolve(range: Option<ByteRange>, size: u64) -> Result<(StatusCode, u64, u64), OciError> {
    match range {
        None => Ok((StatusCode::OK, 0, size)),
        Some(range) => {
            let (start, end) = range.resolve(size).ok_or_else(|| unsatisfiable(size))?;
            Ok((StatusCode::PARTIAL_CONTENT, start, end))
        }
    }
}

fn blob_response(
    repo: &Repo,
    digest: &Digest,
    names: Option<&DigestHeaders>,
    body: Body,
    served: Served,
    outcome: Outcome,
) -> Response<Body> {
    let Served {
        status,
        start,
        end,
        size,
    } = served;
    let content_type = HeaderValue::from_static(OCTET_STREAM);
    let mut response = named_response(status, body, content_type, names, Some(end - start));
    blob_headers(&mut response);
    if status == StatusCode::PARTIAL_CONTENT {
        response = partial(response, start, end, Some(size));
    }
    touched(
        response,
        Action::Read,
        artifact(repo, digest),
        Some(digest),
        outcome,
    )
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

/// `DELETE /v2/<name>/blobs/<digest>` on a hosted repository: unlinks it
/// (the bytes stay until garbage collection finds them unreferenced).
pub async fn delete(
    registry: &Registry,
    repo: &Repo,
    digest: &Digest,
) -> Result<Response<Body>, OciError> {
    super::require_hosted(repo)?;
    registry.cache.forget_blob(repo.key.as_str(), digest);
    if !registry.store.oci().unlink_blob(&repo.key, digest).await? {
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
