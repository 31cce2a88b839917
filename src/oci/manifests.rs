//! Manifests: served from the store (memory first), fetched from upstream on a
//! miss and verified against their digest before they are indexed; tags
//! revalidated with a HEAD after `tag_ttl` and served stale when upstream
//! fails. Hosted repositories take pushes (PUT) and deletes.

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::cache::{ManifestMeta, TagMeta};
use super::manifest_json::{self, DEFAULT_ACCEPT, MAX_MANIFEST, ManifestInfo};
use super::names::Repo;
use super::route::{Reference, Tag};
use super::upstream::{UpstreamError, read_limited};
use super::{
    Code, DIGEST_HEADER, OciError, Registry, content_response, from_upstream, internal, touched,
};
use crate::http::{Action, Body, Outcome, body};
use crate::store::{Digest, NewManifest};

fn unknown(repo: &Repo, reference: &Reference) -> OciError {
    OciError::new(
        Code::ManifestUnknown,
        format!("manifest {reference} unknown in {}", repo.name),
    )
}

fn artifact(repo: &Repo, reference: &Reference) -> String {
    match reference {
        Reference::Tag(tag) => format!("{}:{tag}", repo.name),
        Reference::Digest(digest) => format!("{}@{digest}", repo.name),
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
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

/// A tag older than its TTL: one HEAD upstream. Same digest: refresh the time
/// only. New digest: fetch it. Upstream failing: serve what we have.
async fn revalidate(
    registry: &Registry,
    repo: &Repo,
    tag: &Tag,
    cached: TagMeta,
    accept: &[String],
    head: bool,
) -> Result<Response<Body>, OciError> {
    let reference = Reference::Tag(tag.clone());
    let Some((upstream, remote)) = repo.upstream() else {
        return Err(unknown(repo, &reference));
    };
    let answer = upstream
        .send(
            Method::HEAD,
            remote,
            &format!("manifests/{tag}"),
            accept_headers(accept),
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
        Ok(response) => {
            tracing::warn!(upstream = %upstream.name, %tag, repo = %repo.name, status = %response.status(),
                "tag revalidation failed; serving the cached manifest");
            return serve(
                registry,
                repo,
                &reference,
                cached.manifest,
                head,
                Outcome::Stale,
            )
            .await;
        }
        Err(error) => {
            tracing::warn!(%error, %tag, repo = %repo.name, "tag revalidation failed; serving the cached manifest");
            return serve(
                registry,
                repo,
                &reference,
                cached.manifest,
                head,
                Outcome::Stale,
            )
            .await;
        }
    };
    if current.as_ref() == Some(&cached.manifest.digest) {
        registry
            .store
            .oci_set_tag(&repo.key, tag.as_str(), &cached.manifest.digest)
            .await
            .map_err(internal)?;
        registry.cache.put_tag(
            &repo.key,
            tag.as_str(),
            TagMeta {
                manifest: cached.manifest.clone(),
                checked_at: now_secs(),
            },
        );
        return serve(
            registry,
            repo,
            &reference,
            cached.manifest,
            head,
            Outcome::Hit,
        )
        .await;
    }
    match fetch(registry, repo, &reference, accept).await {
        Ok(meta) => serve(registry, repo, &reference, meta, head, Outcome::Miss).await,
        Err(error) if error.status.is_server_error() => {
            serve(
                registry,
                repo,
                &reference,
                cached.manifest,
                head,
                Outcome::Stale,
            )
            .await
        }
        Err(error) => Err(error),
    }
}

/// The client's `Accept`, or every manifest type when it named none (curl's
/// `*/*` included: registries answer a bare wildcard with schema 1 or 404).
fn accept_headers(accept: &[String]) -> HeaderMap {
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

/// Fetches a manifest from upstream, verifies it, stores and indexes it (and
/// the tag, when the answer is the tag's true manifest). Concurrent misses
/// for the same manifest share one upstream request.
async fn fetch(
    registry: &Registry,
    repo: &Repo,
    reference: &Reference,
    accept: &[String],
) -> Result<ManifestMeta, OciError> {
    let key = format!("{}\n{reference}\n{}", repo.key, accept.join(","));
    registry
        .manifest_fetches
        .run(&key, fetch_once(registry, repo, reference, accept))
        .await
}

async fn fetch_once(
    registry: &Registry,
    repo: &Repo,
    reference: &Reference,
    accept: &[String],
) -> Result<ManifestMeta, OciError> {
    let Some((upstream, remote)) = repo.upstream() else {
        return Err(unknown(repo, reference));
    };
    let response = upstream
        .send(
            Method::GET,
            remote,
            &format!("manifests/{reference}"),
            accept_headers(accept),
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
                    upstream: upstream.name.clone(),
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
    let meta = store_manifest(registry, repo, &bytes, &digest, &media_type, &info, false).await?;
    if let Reference::Tag(tag) = reference
        && manifest_json::accepts_indexes(accept)
    {
        record_tag(registry, repo, tag, &meta).await?;
    }
    Ok(meta)
}

async fn store_manifest(
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

async fn record_tag(
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
    registry.cache.put_tag(
        &repo.key,
        tag.as_str(),
        TagMeta {
            manifest: meta.clone(),
            checked_at: now_secs(),
        },
    );
    Ok(())
}

async fn local_by_digest(
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

async fn local_by_tag(
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
async fn serve(
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
        let bytes = match meta.body.clone() {
            Some(bytes) => bytes,
            None => {
                let bytes = registry
                    .store
                    .read_small(&meta.digest, MAX_MANIFEST as u64)
                    .await
                    .map_err(internal)?
                    .map(Bytes::from)
                    .ok_or_else(|| {
                        internal(format!(
                            "manifest {} is indexed but its file is missing",
                            meta.digest
                        ))
                    })?;
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

/// `PUT /v2/<name>/manifests/<reference>` on a hosted repository.
pub async fn put(
    registry: &Registry,
    repo: &Repo,
    reference: &Reference,
    request: Request<Incoming>,
) -> Result<Response<Body>, OciError> {
    super::require_hosted(repo)?;
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = super::uploads::read_body(request.into_body(), MAX_MANIFEST).await?;
    let info = ManifestInfo::parse(&bytes)?;
    let media_type = content_type
        .filter(|t| !t.is_empty())
        .or(info.media_type.clone())
        .ok_or_else(|| {
            OciError::new(
                Code::ManifestInvalid,
                "manifest has no media type (set Content-Type)",
            )
        })?;
    let digest = Digest::sha256_of(&bytes);
    if let Reference::Digest(expected) = reference
        && *expected != digest
    {
        return Err(OciError::new(
            Code::DigestInvalid,
            format!("manifest has digest {digest}, not {expected}"),
        ));
    }
    for blob in &info.blobs {
        if super::blobs::local_size(registry, repo, blob)
            .await?
            .is_none()
        {
            return Err(OciError::new(
                Code::ManifestBlobUnknown,
                format!("blob {blob} is not in {}", repo.name),
            )
            .with_detail(serde_json::json!({ "digest": blob.to_string() })));
        }
    }
    for child in &info.children {
        if local_by_digest(registry, repo, child).await?.is_none() {
            return Err(OciError::new(
                Code::ManifestBlobUnknown,
                format!("manifest {child} is not in {}", repo.name),
            )
            .with_detail(serde_json::json!({ "digest": child.to_string() })));
        }
    }
    let meta = store_manifest(registry, repo, &bytes, &digest, &media_type, &info, true).await?;
    if let Reference::Tag(tag) = reference {
        record_tag(registry, repo, tag, &meta).await?;
    }
    let mut response = content_response(
        StatusCode::CREATED,
        body::empty(),
        "text/plain",
        &digest,
        Some(0),
    );
    let headers = response.headers_mut();
    headers.remove(CONTENT_TYPE);
    if let Ok(location) = HeaderValue::from_str(&format!("/v2/{}/manifests/{digest}", repo.name)) {
        headers.insert(LOCATION, location);
    }
    if let Some(subject) = &info.subject
        && let Ok(value) = HeaderValue::from_str(&subject.to_string())
    {
        headers.insert("oci-subject", value);
    }
    Ok(touched(
        response,
        Action::Write,
        artifact(repo, reference),
        Some(&digest),
        Outcome::Hosted,
    ))
}

/// `DELETE /v2/<name>/manifests/<reference>` on a hosted repository: a digest
/// removes the manifest (and its tags), a tag removes the tag.
pub async fn delete(
    registry: &Registry,
    repo: &Repo,
    reference: &Reference,
) -> Result<Response<Body>, OciError> {
    super::require_hosted(repo)?;
    let removed = match reference {
        Reference::Digest(digest) => {
            registry.cache.forget_manifest(&repo.key, digest);
            registry
                .store
                .oci_delete_manifest(&repo.key, digest)
                .await
                .map_err(internal)?
        }
        Reference::Tag(tag) => {
            registry.cache.forget_tag(&repo.key, tag.as_str());
            registry
                .store
                .oci_delete_tag(&repo.key, tag.as_str())
                .await
                .map_err(internal)?
        }
    };
    if !removed {
        return Err(unknown(repo, reference));
    }
    let mut response = http::Response::new(body::empty());
    *response.status_mut() = StatusCode::ACCEPTED;
    let digest = match reference {
        Reference::Digest(digest) => Some(digest),
        Reference::Tag(_) => None,
    };
    Ok(touched(
        response,
        Action::Delete,
        artifact(repo, reference),
        digest,
        Outcome::Hosted,
    ))
}
