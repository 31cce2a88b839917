//! Listings: `tags/list` and `_catalog` with `n`/`last` pagination and `Link`,
//! and the OCI 1.1 referrers API. Mirrored repositories ask upstream and fall
//! back to what is cached when upstream cannot answer.

use http::header::{CONTENT_TYPE, HeaderValue, LINK};
use http::{Method, Response, StatusCode};

use super::manifest_json::{MAX_MANIFEST, OCI_INDEX};
use super::names::Repo;
use super::route::Query;
use super::upstream::read_limited;
use super::{Code, OciError, Registry, from_upstream, touched};
use crate::store::Digest;
use crate::wire::{Action, Body, Outcome, body};

/// Page size when a client asks for none; large enough for any real repo.
const DEFAULT_PAGE: usize = 10_000;

fn json_response(json: &serde_json::Value, link: Option<String>) -> Response<Body> {
    let mut response = Response::new(body::full(json.to_string()));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        super::API_VERSION_HEADER,
        HeaderValue::from_static(super::API_VERSION),
    );
    if let Some(link) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(LINK, link);
    }
    response
}

/// One page of a sorted listing: `items` was fetched with one extra row to
/// learn whether another page follows.
fn page(mut items: Vec<String>, n: usize, path: &str) -> (Vec<String>, Option<String>) {
    if items.len() <= n {
        return (items, None);
    }
    items.truncate(n);
    let last = items.last().cloned().unwrap_or_default();
    let encoded = percent_encoding::utf8_percent_encode(&last, percent_encoding::NON_ALPHANUMERIC);
    (
        items,
        Some(format!("<{path}?n={n}&last={encoded}>; rel=\"next\"")),
    )
}

/// `GET /v2/_catalog`: every repository with manifests here, hosted or cached.
pub async fn catalog(registry: &Registry, query: &Query) -> Result<Response<Body>, OciError> {
    let n = query.page_size()?.unwrap_or(DEFAULT_PAGE);
    let repos = registry
        .store
        .oci()
        .catalog(query.get("last"), n.saturating_add(1))
        .await?;
    let (repos, link) = page(repos, n, "/v2/_catalog");
    Ok(json_response(
        &serde_json::json!({ "repositories": repos }),
        link,
    ))
}

/// `GET /v2/<name>/tags/list`.
pub async fn tags(
    registry: &Registry,
    repo: &Repo,
    query: &Query,
) -> Result<Response<Body>, OciError> {
    let n = query.page_size()?;
    let last = query.get("last");
    let artifact = format!("{}:*", repo.name);
    if let Some(response) = upstream_tags(repo, n, last).await? {
        return Ok(touched(
            response,
            Action::Read,
            artifact,
            None,
            Outcome::Miss,
        ));
    }
    let response = cached_tags(registry, repo, n.unwrap_or(DEFAULT_PAGE), last).await?;
    let outcome = if repo.is_hosted() {
        Outcome::Hosted
    } else {
        Outcome::Stale
    };
    Ok(touched(response, Action::Read, artifact, None, outcome))
}

/// A mirrored repository's tags as upstream lists them, with upstream's
/// pagination on our path. `None` for a hosted repository, or when upstream
/// cannot answer: the cached tags are listed instead.
async fn upstream_tags(
    repo: &Repo,
    n: Option<usize>,
    last: Option<&str>,
) -> Result<Option<Response<Body>>, OciError> {
    let Some((upstream, remote)) = repo.upstream() else {
        return Ok(None);
    };
    let suffix = tags_suffix(n, last);
    let response = match upstream
        .send(Method::GET, remote, &suffix, Default::default())
        .await
    {
        Ok(response) if response.status() == StatusCode::OK => response,
        Ok(response) if response.status().is_client_error() => {
            return Err(from_upstream(
                upstream.error_from(response).await,
                Code::NameUnknown,
            ));
        }
        Ok(response) => {
            tracing::warn!(upstream = %upstream.name, status = %response.status(), repo = %repo.name,
                "tags/list failed upstream; listing cached tags");
            return Ok(None);
        }
        Err(error) => {
            tracing::warn!(%error, repo = %repo.name, "tags/list failed upstream; listing cached tags");
            return Ok(None);
        }
    };
    let link = response
        .headers()
        .get(LINK)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| l.split_once('?'))
        .map(|(_, rest)| format!("</v2/{}/tags/list?{rest}", repo.name));
    let listed = read_limited(response, MAX_MANIFEST)
        .await
        .map_err(Box::<dyn std::error::Error + Send + Sync>::from)
        .and_then(|body| Ok(serde_json::from_slice::<serde_json::Value>(&body)?));
    match listed {
        Ok(listed) => {
            let tags = listed
                .get("tags")
                .cloned()
                .unwrap_or(serde_json::Value::Array(Vec::new()));
            let json = serde_json::json!({ "name": repo.name.as_str(), "tags": tags });
            Ok(Some(json_response(&json, link)))
        }
        // A cut or garbled list is no reason to claim there are no tags.
        Err(error) => {
            tracing::warn!(upstream = %upstream.name, %error, repo = %repo.name,
                "tags/list from upstream unreadable; listing cached tags");
            Ok(None)
        }
    }
}

/// `tags/list` with the client's `n` and `last`, for upstream.
fn tags_suffix(n: Option<usize>, last: Option<&str>) -> String {
    let params: Vec<String> = [
        ("n", n.map(|n| n.to_string())),
        ("last", last.map(str::to_owned)),
    ]
    .into_iter()
    .filter_map(|(k, v)| {
        v.map(|v| {
            format!(
                "{k}={}",
                percent_encoding::utf8_percent_encode(&v, percent_encoding::NON_ALPHANUMERIC)
            )
        })
    })
    .collect();
    if params.is_empty() {
        "tags/list".to_owned()
    } else {
        format!("tags/list?{}", params.join("&"))
    }
}

/// One page of the tags kept here; a repository never seen is unknown.
async fn cached_tags(
    registry: &Registry,
    repo: &Repo,
    limit: usize,
    last: Option<&str>,
) -> Result<Response<Body>, OciError> {
    let tags = registry
        .store
        .oci()
        .tags(&repo.key, last, limit.saturating_add(1))
        .await?;
    if tags.is_empty() && last.is_none() && !registry.store.oci().has_repo(&repo.key).await? {
        return Err(OciError::new(
            Code::NameUnknown,
            format!("repository {} is not known", repo.name),
        ));
    }
    let (tags, link) = page(tags, limit, &format!("/v2/{}/tags/list", repo.name));
    let json = serde_json::json!({ "name": repo.name.as_str(), "tags": tags });
    Ok(json_response(&json, link))
}

/// `GET /v2/<name>/referrers/<digest>`: an image index of the manifests whose
/// `subject` is `digest`, filtered by `artifactType` if asked.
pub async fn referrers(
    registry: &Registry,
    repo: &Repo,
    digest: &Digest,
    query: &Query,
) -> Result<Response<Body>, OciError> {
    let artifact_type = query.get("artifactType").filter(|t| !t.is_empty());
    let artifact = format!("{}@{digest}", repo.name);
    if let Some(response) = upstream_referrers(repo, digest, artifact_type).await {
        return Ok(touched(
            response,
            Action::Read,
            artifact,
            Some(digest),
            Outcome::Miss,
        ));
    }
    let response = cached_referrers(registry, repo, digest, artifact_type).await?;
    let outcome = if repo.is_hosted() {
        Outcome::Hosted
    } else {
        Outcome::Hit
    };
    Ok(touched(
        response,
        Action::Read,
        artifact,
        Some(digest),
        outcome,
    ))
}

/// Upstream's referrers index, as upstream sent it. `None` for a hosted
/// repository, or when upstream cannot answer or has no referrers API: the
/// cached referrers are listed instead.
async fn upstream_referrers(
    repo: &Repo,
    digest: &Digest,
    artifact_type: Option<&str>,
) -> Option<Response<Body>> {
    let (upstream, remote) = repo.upstream()?;
    let mut suffix = format!("referrers/{digest}");
    if let Some(wanted) = artifact_type {
        let encoded =
            percent_encoding::utf8_percent_encode(wanted, percent_encoding::NON_ALPHANUMERIC);
        suffix = format!("{suffix}?artifactType={encoded}");
    }
    let response = match upstream
        .send(Method::GET, remote, &suffix, Default::default())
        .await
    {
        Ok(response) if response.status() == StatusCode::OK => response,
        // An upstream without the API (registry:2 answers 404) has no referrers to tell of.
        Ok(response) => {
            tracing::debug!(status = %response.status(), "upstream has no referrers API");
            return None;
        }
        Err(error) => {
            tracing::warn!(%error, repo = %repo.name, "referrers failed upstream; listing cached ones");
            return None;
        }
    };
    let filtered = response.headers().get("oci-filters-applied").cloned();
    let content_type = response.headers().get(CONTENT_TYPE).cloned();
    let bytes = read_limited(response, MAX_MANIFEST).await.ok()?;
    let mut reply = Response::new(body::full(bytes));
    let headers = reply.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        content_type.unwrap_or(HeaderValue::from_static(OCI_INDEX)),
    );
    if let Some(filtered) = filtered {
        headers.insert("oci-filters-applied", filtered);
    }
    Some(reply)
}

/// An image index of the referrers kept here.
async fn cached_referrers(
    registry: &Registry,
    repo: &Repo,
    digest: &Digest,
    artifact_type: Option<&str>,
) -> Result<Response<Body>, OciError> {
    let rows = registry.store.oci().referrers(&repo.key, digest).await?;
    let manifests: Vec<serde_json::Value> = rows
        .into_iter()
        .filter(|row| {
            artifact_type.is_none_or(|wanted| row.artifact_type.as_deref() == Some(wanted))
        })
        .map(descriptor)
        .collect();
    let index =
        serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    let mut response = json_response(&index, None);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(OCI_INDEX));
    if artifact_type.is_some() {
        response.headers_mut().insert(
            "oci-filters-applied",
            HeaderValue::from_static("artifactType"),
        );
    }
    Ok(response)
}

/// A referrer as the index lists it.
fn descriptor(row: crate::store::ReferrerRow) -> serde_json::Value {
    let mut descriptor = serde_json::json!({
        "mediaType": row.media_type,
        "digest": row.digest.to_string(),
        "size": row.size,
    });
    if let Some(artifact_type) = row.artifact_type {
        descriptor["artifactType"] = artifact_type.into();
    }
    if let Some(annotations) = row
        .annotations
        .and_then(|a| serde_json::from_str::<serde_json::Value>(&a).ok())
    {
        descriptor["annotations"] = annotations;
    }
    descriptor
}
