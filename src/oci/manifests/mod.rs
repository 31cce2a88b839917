//! Manifests: served from the store (memory first), fetched from upstream on a
//! miss and verified against their digest before they are indexed (`remote`);
//! a tag is always resolved to its true manifest, and a client that does not
//! accept its type is answered as the upstream registry would (`negotiate`);
//! hosted repositories take pushes and deletes (`push`).

mod negotiate;
mod push;
mod remote;

pub use push::{delete, put};
use remote::{fetch, revalidate};

use bytes::Bytes;
use http::header::{ACCEPT, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::cache::{ManifestMeta, TagMeta};
use super::manifest_json::{DEFAULT_ACCEPT, MAX_MANIFEST, ManifestInfo};
use super::names::Repo;
use super::route::{Reference, Tag};
use super::{Code, OciError, Registry, content_response, corrupt, internal, touched};
use crate::store::{Digest, NewManifest, Origin, now_secs};
use crate::wire::{Action, Body, Outcome, body};

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
        };
        let Some(meta) = meta else {
            return Err(missing_hosted(registry, repo, reference, head).await);
        };
        return serve(registry, repo, reference, meta, head, Outcome::Hosted).await;
    };
    let (meta, outcome) = match reference {
        Reference::Digest(digest) => match local_by_digest(registry, repo, digest).await? {
            Some(meta) => (meta, Outcome::Hit),
            None => (fetch(registry, repo, reference).await?, Outcome::Miss),
        },
        Reference::Tag(tag) => resolve_tag(registry, repo, upstream.tag_ttl, tag).await?,
    };
    match reference {
        Reference::Tag(_) => {
            negotiate::answer(registry, repo, reference, meta, &accept, head, outcome).await
        }
        Reference::Digest(_) => serve(registry, repo, reference, meta, head, outcome).await,
    }
}

/// The tag's true manifest: from the cache while fresh, revalidated after
/// `tag_ttl`, fetched on a miss. Even for a HEAD: clients HEAD a tag and
/// then GET by digest, so fetching now is what records the tag for later
/// (and offline) pulls.
async fn resolve_tag(
    registry: &Registry,
    repo: &Repo,
    tag_ttl: std::time::Duration,
    tag: &Tag,
) -> Result<(ManifestMeta, Outcome), OciError> {
    let Some(cached) = local_by_tag(registry, repo, tag).await? else {
        let meta = fetch(registry, repo, &Reference::Tag(tag.clone())).await?;
        return Ok((meta, Outcome::Miss));
    };
    if now_secs() - cached.checked_at < tag_ttl.as_secs() as i64 {
        return Ok((cached.manifest, Outcome::Hit));
    }
    revalidate(registry, repo, tag, cached).await
}

/// Every manifest type the mirror knows: tags are resolved upstream with
/// all of them, so that the answer is the tag's true manifest, cacheable
/// for every client whatever it accepts.
pub(super) fn accept_all() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT, HeaderValue::from_static(DEFAULT_ACCEPT));
    headers
}

/// A hosted manifest that is not there: unknown, or, for a GET by digest of
/// one found corrupt in the store (it cannot be fetched again), why.
async fn missing_hosted(
    registry: &Registry,
    repo: &Repo,
    reference: &Reference,
    head: bool,
) -> OciError {
    match reference {
        Reference::Digest(digest)
            if !head && registry.store.blobs().is_quarantined(digest).await =>
        {
            corrupt("manifest", repo, digest)
        }
        _ => unknown(repo, reference),
    }
}

/// Stores and indexes a manifest's bytes. A blob row evicted between the
/// two writes fails the second on its foreign key: then both again, once.
pub(super) async fn store_manifest(
    registry: &Registry,
    repo: &Repo,
    bytes: &Bytes,
    digest: &Digest,
    media_type: &str,
    info: &ManifestInfo,
    origin: Origin,
) -> Result<ManifestMeta, OciError> {
    let manifest = NewManifest {
        repo: &repo.key,
        digest,
        media_type,
        size: bytes.len() as u64,
        subject: info.subject.as_ref(),
        artifact_type: info.artifact_type.as_deref(),
        annotations: info.annotations.as_deref(),
        blobs: &info.blob_sizes,
    };
    let read = registry.cache.stamp();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let stored = registry.store.blobs().put(bytes, origin).await?;
        debug_assert_eq!(&stored, digest);
        match registry.store.oci().put_manifest(&manifest).await {
            Ok(()) => break,
            Err(error) if error.is_missing_reference() && attempts < 2 => continue,
            Err(error) => return Err(internal(error)),
        }
    }
    let meta = ManifestMeta {
        digest: digest.clone(),
        media_type: media_type.to_owned(),
        size: bytes.len() as u64,
        body: Some(bytes.clone()),
    };
    registry
        .cache
        .put_manifest(repo.key.as_str(), meta.clone(), read);
    Ok(meta)
}

/// Points a tag at an indexed manifest, confirmed now. `false` when the
/// manifest's row is gone (evicted since `meta` was read, perhaps by another
/// process): nothing is recorded and the manifest is forgotten here too, so
/// the caller stores it again rather than failing on every later request.
pub(super) async fn record_tag(
    registry: &Registry,
    repo: &Repo,
    tag: &Tag,
    meta: &ManifestMeta,
) -> Result<bool, OciError> {
    let read = registry.cache.stamp();
    match registry
        .store
        .oci()
        .set_tag(&repo.key, tag.key(), &meta.digest)
        .await
    {
        Ok(()) => {}
        Err(error) if error.is_missing_reference() => {
            registry
                .cache
                .forget_manifest(repo.key.as_str(), &meta.digest);
            return Ok(false);
        }
        Err(error) => return Err(internal(error)),
    }
    // Bodies live in the manifest map alone, where their budget is counted.
    registry.cache.put_tag(
        repo.key.as_str(),
        tag.as_str(),
        TagMeta {
            manifest: ManifestMeta {
                body: None,
                ..meta.clone()
            },
            checked_at: now_secs(),
        },
        read,
    );
    Ok(true)
}

pub(super) async fn local_by_digest(
    registry: &Registry,
    repo: &Repo,
    digest: &Digest,
) -> Result<Option<ManifestMeta>, OciError> {
    if let Some(meta) = registry.cache.manifest(repo.key.as_str(), digest) {
        return Ok(Some(meta));
    }
    let read = registry.cache.stamp();
    let Some(row) = registry.store.oci().manifest(&repo.key, digest).await? else {
        return Ok(None);
    };
    let meta = ManifestMeta {
        digest: row.digest,
        media_type: row.media_type,
        size: row.size,
        body: None,
    };
    registry
        .cache
        .put_manifest(repo.key.as_str(), meta.clone(), read);
    Ok(Some(meta))
}

pub(super) async fn local_by_tag(
    registry: &Registry,
    repo: &Repo,
    tag: &Tag,
) -> Result<Option<TagMeta>, OciError> {
    if let Some(meta) = registry.cache.tag(repo.key.as_str(), tag.as_str()) {
        return Ok(Some(meta));
    }
    let read = registry.cache.stamp();
    let Some((row, checked_at)) = registry.store.oci().tag(&repo.key, tag.key()).await? else {
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
        .put_tag(repo.key.as_str(), tag.as_str(), meta.clone(), read);
    Ok(Some(meta))
}

/// Answers with a stored manifest; its bytes come from memory when small.
pub(super) async fn serve(
    registry: &Registry,
    repo: &Repo,
    reference: &Reference,
    meta: ManifestMeta,
    head: bool,
    outcome: Outcome,
) -> Result<Response<Body>, OciError> {
    registry.store.blobs().touch(&meta.digest);
    let body = if head {
        body::empty()
    } else {
        body::full(body_of(registry, repo, &meta).await?)
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

/// A stored manifest's bytes: from memory, else from the store (checked
/// against the digest there), else, for a mirrored repository, from
/// upstream again.
pub(super) async fn body_of(
    registry: &Registry,
    repo: &Repo,
    meta: &ManifestMeta,
) -> Result<Bytes, OciError> {
    // A tag's entry carries no body: the manifest map may have it.
    let kept = meta.body.clone().or_else(|| {
        registry
            .cache
            .manifest(repo.key.as_str(), &meta.digest)
            .and_then(|cached| cached.body)
    });
    if let Some(bytes) = kept {
        return Ok(bytes);
    }
    let read = registry.cache.stamp();
    let stored = registry
        .store
        .blobs()
        .read_small(&meta.digest, MAX_MANIFEST as u64)
        .await?;
    let bytes = match stored {
        Some(bytes) => Bytes::from(bytes),
        // Evicted or quarantined since we looked it up: fetch it again (a
        // hosted repository's is gone; say why if it was corrupt).
        None => {
            registry
                .cache
                .forget_manifest(repo.key.as_str(), &meta.digest);
            if repo.is_hosted() {
                let digest = Reference::Digest(meta.digest.clone());
                return Err(missing_hosted(registry, repo, &digest, false).await);
            }
            let again = Reference::Digest(meta.digest.clone());
            let fetched = fetch(registry, repo, &again).await?;
            return Ok(fetched.body.unwrap_or_default());
        }
    };
    registry.cache.put_manifest(
        repo.key.as_str(),
        ManifestMeta {
            body: Some(bytes.clone()),
            ..meta.clone()
        },
        read,
    );
    Ok(bytes)
}
