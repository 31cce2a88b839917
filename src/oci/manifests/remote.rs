//! Manifests from upstream: fetched once however many clients miss at the
//! same moment, verified against their digest, stored and indexed; tags
//! revalidated with a HEAD after `tag_ttl`, served stale when upstream fails.

use super::{accept_all, record_tag, store_manifest, unknown};
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Method, StatusCode};

use crate::oci::cache::{ManifestMeta, TagMeta};
use crate::oci::manifest_json::{self, MAX_MANIFEST, ManifestInfo};
use crate::oci::names::Repo;
use crate::oci::route::{Reference, Tag};
use crate::oci::upstream::{UpstreamError, read_limited};
use crate::oci::{Code, DIGEST_HEADER, OciError, Registry, from_upstream, internal};
use crate::store::{Digest, Origin};
use crate::wire::Outcome;

/// A tag older than its TTL: one HEAD upstream. Same digest: refresh the time
/// only. New digest: fetch it. Upstream failing: serve what we have.
pub(super) async fn revalidate(
    registry: &Registry,
    repo: &Repo,
    tag: &Tag,
    cached: TagMeta,
) -> Result<(ManifestMeta, Outcome), OciError> {
    let reference = Reference::Tag(tag.clone());
    let Some((upstream, remote)) = repo.upstream() else {
        return Err(unknown(repo, &reference));
    };
    let answer = upstream
        .send(
            Method::HEAD,
            remote,
            &format!("manifests/{tag}"),
            accept_all(),
        )
        .await;
    let current = match answer {
        Ok(response) if response.status() == StatusCode::OK => response
            .headers()
            .get(DIGEST_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok()),
        Ok(response) if response.status() == StatusCode::NOT_FOUND => {
            return Err(from_upstream(
                upstream.error_from(response).await,
                Code::ManifestUnknown,
            ));
        }
        failed => {
            let reason = match failed {
                Ok(response) => format!("upstream answered {}", response.status()),
                Err(error) => error.to_string(),
            };
            tracing::warn!(upstream = %upstream.name, %tag, repo = %repo.name, %reason,
                "tag revalidation failed; serving the cached manifest");
            return Ok((cached.manifest, Outcome::Stale));
        }
    };
    // Still current: restart its TTL, unless the manifest was evicted since.
    if current.as_ref() == Some(&cached.manifest.digest)
        && record_tag(registry, repo, tag, &cached.manifest).await?
    {
        return Ok((cached.manifest, Outcome::Hit));
    }
    match fetch(registry, repo, &reference).await {
        Ok(meta) => Ok((meta, Outcome::Miss)),
        Err(error) if error.status.is_server_error() => Ok((cached.manifest, Outcome::Stale)),
        Err(error) => Err(error),
    }
}

/// Fetches a manifest from upstream, verifies it, stores and indexes it (and
/// the tag, whose true manifest it is: it was asked for with every type).
/// Concurrent misses for the same manifest share one upstream request.
pub(super) async fn fetch(
    registry: &Registry,
    repo: &Repo,
    reference: &Reference,
) -> Result<ManifestMeta, OciError> {
    let key = format!("{}\n{reference}", repo.key);
    registry
        .manifest_fetches
        .run(&key, Box::pin(fetch_once(registry, repo, reference)))
        .await
}

async fn fetch_once(
    registry: &Registry,
    repo: &Repo,
    reference: &Reference,
) -> Result<ManifestMeta, OciError> {
    let Some((upstream, remote)) = repo.upstream() else {
        return Err(unknown(repo, reference));
    };
    let response = upstream
        .send(
            Method::GET,
            remote,
            &format!("manifests/{reference}"),
            accept_all(),
        )
        .await
        .map_err(|e| from_upstream(e, Code::ManifestUnknown))?;
    if response.status() != StatusCode::OK {
        return Err(from_upstream(
            upstream.error_from(response).await,
            Code::ManifestUnknown,
        ));
    }
    let announced = response
        .headers()
        .get(DIGEST_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Digest>().ok());
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = read_limited(response, MAX_MANIFEST)
        .await
        .map_err(|reason| {
            from_upstream(
                UpstreamError::Unreachable {
                    upstream: upstream.label().to_owned(),
                    reason: format!("reading manifest {reference} of {remote}: {reason}"),
                },
                Code::ManifestUnknown,
            )
        })?;
    let digest = Digest::sha256_of(&bytes);
    let expected = match reference {
        Reference::Digest(digest) => Some(digest),
        Reference::Tag(_) => announced
            .as_ref()
            .filter(|d| d.algorithm() == digest.algorithm()),
    };
    if let Some(expected) = expected
        && *expected != digest
    {
        tracing::warn!(upstream = %upstream.name, repo = %repo.name, %reference, %expected, actual = %digest,
            "upstream sent a manifest that does not match its digest; not stored");
        return Err(OciError::new(
            Code::Unavailable,
            format!(
                "upstream {} sent manifest bytes that do not match digest {expected}",
                upstream.name
            ),
        ));
    }
    let info = ManifestInfo::parse(&bytes).unwrap_or_default();
    let media_type = content_type
        .filter(|t| !t.is_empty() && t != "application/octet-stream")
        .or(info.media_type.clone())
        .unwrap_or_else(|| manifest_json::OCI_MANIFEST.to_owned());
    let bytes = Bytes::from(bytes);
    let store = || {
        store_manifest(
            registry,
            repo,
            &bytes,
            &digest,
            &media_type,
            &info,
            Origin::Cached,
        )
    };
    let meta = store().await?;
    let Reference::Tag(tag) = reference else {
        return Ok(meta);
    };
    if record_tag(registry, repo, tag, &meta).await? {
        return Ok(meta);
    }
    // Evicted between storing it and recording the tag: once more.
    let meta = store().await?;
    if !record_tag(registry, repo, tag, &meta).await? {
        return Err(internal(format!(
            "manifest {digest} of {} was removed twice while its tag was recorded",
            repo.name
        )));
    }
    Ok(meta)
}
