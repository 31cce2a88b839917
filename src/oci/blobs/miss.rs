//! A blob miss: one upstream GET into a shared fill, run detached from any
//! client; every client (Range requests included) streams from the fill as
//! bytes arrive, and the fill is verified against the digest at commit. The
//! fill is cut off past `registry.max_blob_size` and past the size the
//! repository's manifests give the blob.

use super::{
    ByteRange, OCTET_STREAM, adopt_stored, artifact, blob_headers, partial, serve_file, unknown,
    unsatisfiable,
};
use std::sync::Arc;

use http::header::HeaderMap;
use http::{Method, Response, StatusCode};

use crate::oci::names::Repo;
use crate::oci::route::RepoName;
use crate::oci::upstream::Upstream;
use crate::oci::{Code, OciError, Registry, content_response, from_upstream, touched};
use crate::store::{
    Digest, FillError, FillHead, FillProducer, FillReader, Refetch, RepoKey, Slot, Store,
    UpstreamFailure,
};
use crate::wire::{Action, Body, Outcome, body};

/// A miss: join the fill in progress for this digest, or start it.
pub(super) async fn fill(
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
        let mut reader = match registry
            .store
            .fill_shared(&key, refetch(registry, repo, digest))
            .await?
        {
            Slot::Joined(reader) => reader,
            Slot::Producer(producer) => {
                // Someone may have finished this fill between our miss and now.
                if let Some(response) = adopt_stored(registry, repo, digest, false, range).await? {
                    producer.withdraw();
                    return Ok(response);
                }
                let target = FillTarget {
                    store: &registry.store,
                    max_blob_size: registry.max_blob_size,
                    repo,
                    upstream,
                    remote,
                    digest,
                };
                start_fill(&target, producer).await?
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
    if let FillError::NotFound(_) = error {
        return unknown(repo, digest);
    }
    tracing::warn!(%error, %digest, repo = %repo.name, "blob fill failed");
    match error {
        // The mirror's own limits: the client may know why, and that a retry
        // will not help.
        FillError::TooLarge(_)
        | FillError::NoRoom { .. }
        | FillError::TimedOut(_)
        | FillError::TooSlow { .. } => OciError::new(
            Code::Unavailable,
            format!("fetching blob {digest} from upstream failed: {error}"),
        ),
        _ => OciError::new(
            Code::Unavailable,
            format!("fetching blob {digest} from upstream failed"),
        ),
    }
}

/// What one blob fill fetches, from where, and how large it may be.
struct FillTarget<'a> {
    store: &'a Store,
    max_blob_size: u64,
    repo: &'a Repo,
    upstream: &'a Upstream,
    remote: &'a RepoName,
    digest: &'a Digest,
}

/// How a replica that takes this fill over from a dead one fetches it again.
fn refetch(registry: &Registry, repo: &Repo, digest: &Digest) -> Refetch {
    let (store, max_blob_size) = (registry.store.clone(), registry.max_blob_size);
    let (repo, digest) = (repo.clone(), digest.clone());
    Arc::new(move |producer| {
        let (store, repo, digest) = (store.clone(), repo.clone(), digest.clone());
        tokio::spawn(async move {
            let Some((upstream, remote)) = repo.upstream() else {
                return;
            };
            let target = FillTarget {
                store: &store,
                max_blob_size,
                repo: &repo,
                upstream,
                remote,
                digest: &digest,
            };
            // A failure reaches the fill's readers through the producer.
            let _ = start_fill(&target, producer).await;
        });
    })
}

/// Bounds the fill: the configured maximum, and the largest size any of the
/// repository's manifests gives this blob.
async fn limit_size(target: &FillTarget<'_>, producer: &mut FillProducer) -> Result<(), OciError> {
    let FillTarget {
        store,
        repo,
        digest,
        ..
    } = target;
    producer.limit(target.max_blob_size);
    let described = store.oci().described_size(&repo.key, digest).await?;
    if let Some(size) = described {
        producer.limit(size);
    }
    Ok(())
}

/// Asks upstream for the blob; on success hands the body to a detached task
/// that writes the fill, and returns a reader for this client.
async fn start_fill(
    target: &FillTarget<'_>,
    mut producer: Box<FillProducer>,
) -> Result<FillReader, OciError> {
    let FillTarget {
        store,
        repo,
        upstream,
        remote,
        digest,
        ..
    } = *target;
    limit_size(target, &mut producer).await?;
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
            let failure =
                UpstreamFailure::new(error.status().map(|s| s.as_u16()), error.to_string());
            producer.fail(if error.is_not_found() {
                FillError::NotFound(failure)
            } else {
                FillError::Upstream(failure)
            });
            return Err(from_upstream(error, Code::BlobUnknown));
        }
        Err(error) => {
            producer.fail(FillError::Upstream(UpstreamFailure::new(
                None,
                error.to_string(),
            )));
            return Err(from_upstream(error, Code::BlobUnknown));
        }
    };
    producer.use_algorithm(digest.algorithm());
    let head = FillHead {
        total: crate::oci::upstream::announced_length(&response),
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
        store.clone(),
        repo.key.clone(),
    ));
    Ok(reader)
}

/// Copies upstream's body into the fill, then verifies and indexes it. Runs
/// detached, so a client hanging up does not waste the download.
async fn run_fill(
    mut producer: Box<FillProducer>,
    response: reqwest::Response,
    digest: Digest,
    store: Store,
    repo_key: RepoKey,
) {
    if let Err(error) = producer.pump(response.bytes_stream()).await {
        tracing::warn!(%error, %digest, repo = %repo_key, "blob fill cut off");
        producer.fail(error);
        return;
    }
    match producer.commit(Some(&digest), None).await {
        Ok(committed) => {
            if let Err(error) = store.oci().link_blob(&repo_key, &digest).await {
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
            let read = registry.cache.stamp();
            return serve_file(registry, repo, digest, false, range, Outcome::Miss, read)
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
