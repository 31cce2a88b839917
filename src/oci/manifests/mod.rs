//! Manifests: served from the store (memory first), fetched from upstream on a
//! miss and verified against their digest before they are indexed (`remote`);
//! hosted repositories take pushes and deletes (`push`).

mod push;
mod remote;

pub use push::{delete, put};
use remote::{fetch, revalidate};

use bytes::Bytes;
use http::header::{ACCEPT, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::cache::{ManifestMeta, TagMeta};
use super::manifest_json::{self, DEFAULT_ACCEPT, MAX_MANIFEST, ManifestInfo};
use super::names::Repo;
use super::route::{Reference, Tag};
use super::{Code, OciError, Registry, content_response, internal, touched};
use crate::http::{Action, Body, Outcome, body};
use crate::store::{Digest, NewManifest, now_secs};

pub(super) fn unknown(repo: &Repo, reference: &Reference) -> OciError {
    OciError::new(
        Code::ManifestUnknown,
        format!("manifest {reference} unknown in {}", repo.name),
    )
}

pub(super) fn artifact(repo: &Repo, reference: &Reference) -> String {
    match reference {
        Reference::Tag(tag) => format!("{}:{tag}", repo.name),
        Reference::Digest(digest) => format!("{}@{digest}", repo.name),
    }
}

/// `GET|HEAD /v2/<name>/manifests/<reference>`.
pub async fn get(
    registry: &Registry,
    repo: &Repo,
    reference: &Reference,
    request: Request<Incoming>,
) -> Result<Response<Body>, OciError> {
    let head = request.method() == Method::HEAD;
    let accept: Vec<String> = request
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    drop(request);
    let Some((upstream, _)) = repo.upstream() else {
        let meta = match reference {
            Reference::Digest(digest) => local_by_digest(registry, repo, digest).await?,
            Reference::Tag(tag) => local_by_tag(registry, repo, tag).await?.map(|t| t.manifest),
        }
        .ok_or_else(|| unknown(repo, reference))?;
        return serve(registry, repo, reference, meta, head, Outcome::Hosted).await;
    };
    match reference {
        Reference::Digest(digest) => {
            if let Some(meta) = local_by_digest(registry, repo, digest).await? {
                return serve(registry, repo, reference, meta, head, Outcome::Hit).await;
            }
        }
        Reference::Tag(tag) => {
            if let Some(cached) = local_by_tag(registry, repo, tag).await?
                && manifest_json::accepts(&accept, &cached.manifest.media_type)
            {
                let fresh = now_secs() - cached.checked_at < upstream.tag_ttl.as_secs() as i64;
                if fresh {
                    return serve(
                        registry,
                        repo,
                        reference,
                        cached.manifest,
                        head,
                        Outcome::Hit,
                    )
                    .await;
                }
                return revalidate(registry, repo, tag, cached, &accept, head).await;
            }
        }
    }
    // Even for a HEAD: clients HEAD a tag and then GET by digest, so fetching
    // now is what records the tag for later (and offline) pulls.
    let meta = fetch(registry, repo, reference, &accept).await?;
    serve(registry, repo, reference, meta, head, Outcome::Miss).await
}

/// The client's `Accept`, or every manifest type when it named none (curl's
/// `*/*` included: registries answer a bare wildcard with schema 1 or 404).
pub(super) fn accept_headers(accept: &[String]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if !accept.iter().any(|a| a.contains("/vnd.")) {
        headers.insert(ACCEPT, HeaderValue::from_static(DEFAULT_ACCEPT));
        return headers;
    }
    for value in accept {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.append(ACCEPT, value);
        }
    }
    headers
}

pub(super) async fn store_manifest(
    registry: &Registry,
    repo: &Repo,
    bytes: &Bytes,
    digest: &Digest,
    media_type: &str,
    info: &ManifestInfo,
    hosted: bool,
) -> Result<ManifestMeta, OciError> {
    let stored = registry
        .store
        .put_bytes(bytes, hosted)
        .await
        .map_err(internal)?;
    debug_assert_eq!(&stored, digest);
    registry
        .store
        .oci_put_manifest(&NewManifest {
            repo: &repo.key,
            digest,
            media_type,
            size: bytes.len() as u64,
            subject: info.subject.as_ref(),
            artifact_type: info.artifact_type.as_deref(),
            annotations: info.annotations.as_deref(),
            blobs: &info.blob_sizes,
        })
        .await
        .map_err(internal)?;
    let meta = ManifestMeta {
        digest: digest.clone(),
        media_type: media_type.to_owned(),
        size: bytes.len() as u64,
        body: Some(bytes.clone()),
    };
    registry.cache.put_manifest(&repo.key, meta.clone());
    Ok(meta)
}

pub(super) async fn record_tag(
    registry: &Registry,
    repo: &Repo,
    tag: &Tag,
    meta: &ManifestMeta,
) -> Result<(), OciError> {
    registry
        .store
        .oci_set_tag(&repo.key, tag.as_str(), &meta.digest)
        .await
        .map_err(internal)?;
    // Bodies live in the manifest map alone, where their budget is counted.
    registry.cache.put_tag(
        &repo.key,
        tag.as_str(),
        TagMeta {
            manifest: ManifestMeta {
                body: None,
                ..meta.clone()
            },
            checked_at: now_secs(),
        },
    );
    Ok(())
}

pub(super) async fn local_by_digest(
    registry: &Registry,
    repo: &Repo,
    digest: &Digest,
) -> Result<Option<ManifestMeta>, OciError> {
    if let Some(meta) = registry.cache.manifest(&repo.key, digest) {
        return Ok(Some(meta));
    }
    let Some(row) = registry
        .store
        .oci_manifest(&repo.key, digest)
        .await
        .map_err(internal)?
    else {
        return Ok(None);
    };
    let meta = ManifestMeta {
        digest: row.digest,
        media_type: row.media_type,
        size: row.size,
        body: None,
    };
    registry.cache.put_manifest(&repo.key, meta.clone());
    Ok(Some(meta))
}

pub(super) async fn local_by_tag(
    registry: &Registry,
    repo: &Repo,
    tag: &Tag,
) -> Result<Option<TagMeta>, OciError> {
    if let Some(meta) = registry.cache.tag(&repo.key, tag.as_str()) {
        return Ok(Some(meta));
    }
    let Some((row, checked_at)) = registry
        .store
        .oci_tag(&repo.key, tag.as_str())
        .await
        .map_err(internal)?
    else {
        return Ok(None);
    };
    let meta = TagMeta {
        manifest: ManifestMeta {
            digest: row.digest,
            media_type: row.media_type,
            size: row.size,
            body: None,
        },
        checked_at,
    };
    registry
        .cache
        .put_tag(&repo.key, tag.as_str(), meta.clone());
    Ok(Some(meta))
}

/// Answers with a stored manifest; its bytes come from memory when small.
pub(super) async fn serve(
    registry: &Registry,
    repo: &Repo,
    reference: &Reference,
    mut meta: ManifestMeta,
    head: bool,
    outcome: Outcome,
) -> Result<Response<Body>, OciError> {
    registry.store.touch(&meta.digest);
    let body = if head {
        body::empty()
    } else {
        // A tag's entry carries no body: the manifest map may have it.
        let kept = meta.body.clone().or_else(|| {
            registry
                .cache
                .manifest(&repo.key, &meta.digest)
                .and_then(|cached| cached.body)
        });
        let bytes = match kept {
            Some(bytes) => bytes,
            None => {
                let stored = registry
                    .store
                    .read_small(&meta.digest, MAX_MANIFEST as u64)
                    .await
                    .map_err(internal)?;
                let bytes = match stored {
                    Some(bytes) => Bytes::from(bytes),
                    // Evicted since we looked it up: fetch it again (or, for a
                    // hosted repository, which is never evicted, it is gone).
                    None => {
                        registry.cache.forget_manifest(&repo.key, &meta.digest);
                        if repo.is_hosted() {
                            return Err(unknown(repo, reference));
                        }
                        let again = Reference::Digest(meta.digest.clone());
                        let fetched = fetch(registry, repo, &again, &[]).await?;
                        fetched.body.unwrap_or_default()
                    }
                };
                meta.body = Some(bytes.clone());
                registry.cache.put_manifest(&repo.key, meta.clone());
                bytes
            }
        };
        body::full(bytes)
    };
    let response = content_response(
        StatusCode::OK,
        body,
        &meta.media_type,
        &meta.digest,
        Some(meta.size),
    );
    Ok(touched(
        response,
        Action::Read,
        artifact(repo, reference),
        Some(&meta.digest),
        outcome,
    ))
}
