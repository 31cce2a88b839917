//! Manifest pushes and deletes on hosted repositories: a pushed manifest must
//! name only blobs and manifests the repository already holds.

use super::{artifact, local_by_digest, record_tag, store_manifest, unknown};
use http::header::{CONTENT_TYPE, HeaderValue, LOCATION};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::oci::manifest_json::{MAX_MANIFEST, ManifestInfo};
use crate::oci::names::Repo;
use crate::oci::route::Reference;
use crate::oci::{Code, OciError, Registry, content_response, internal, touched};
use crate::store::{Digest, Origin};
use crate::wire::{Action, Body, Outcome, body};

/// `PUT /v2/<name>/manifests/<reference>` on a hosted repository.
pub async fn put(
    registry: &Registry,
    repo: &Repo,
    reference: &Reference,
    request: Request<Incoming>,
) -> Result<Response<Body>, OciError> {
    crate::oci::require_hosted(repo)?;
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = registry.body_reader(request.into_body(), Code::ManifestInvalid);
    let bytes = crate::oci::request_body::read_whole(body, MAX_MANIFEST).await?;
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
        if crate::oci::blobs::local_size(registry, repo, blob)
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
    let meta = store_manifest(
        registry,
        repo,
        &bytes,
        &digest,
        &media_type,
        &info,
        Origin::Hosted,
    )
    .await?;
    if let Reference::Tag(tag) = reference
        && !record_tag(registry, repo, tag, &meta).await?
    {
        return Err(internal(format!(
            "manifest {digest} of {} was removed while its tag was recorded",
            repo.name
        )));
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
    crate::oci::require_hosted(repo)?;
    let removed = match reference {
        Reference::Digest(digest) => {
            registry.cache.forget_manifest(repo.key.as_str(), digest);
            registry
                .store
                .oci()
                .delete_manifest(&repo.key, digest)
                .await?
        }
        Reference::Tag(tag) => {
            registry.cache.forget_tag(repo.key.as_str(), tag.as_str());
            registry
                .store
                .oci()
                .delete_tag(&repo.key, tag.key())
                .await?
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
