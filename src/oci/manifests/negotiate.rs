//! A tag's true manifest to a client whose `Accept` may leave its type out,
//! answered the way CNCF distribution (registry:2 and what is built on it)
//! answers, so a narrow client sees what it would see upstream, only from
//! the cache: an OCI index or manifest it does not accept is 404
//! `MANIFEST_UNKNOWN`; a Docker manifest list it does not accept becomes the
//! list's linux/amd64 image; anything else is served as it is (distribution
//! 3 no longer rewrites Docker schema 2 to schema 1). No `Accept`, or `*/*`,
//! accepts everything here (registries differ there; the mirror is lenient).

use http::Response;

use super::{body_of, fetch, local_by_digest, serve, unknown};
use crate::oci::cache::ManifestMeta;
use crate::oci::manifest_json::{self, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use crate::oci::names::Repo;
use crate::oci::route::Reference;
use crate::oci::{Code, OciError, Registry};
use crate::wire::{Body, Outcome};

/// The platform distribution picks from a manifest list for an old client.
const DEFAULT_OS: &str = "linux";
const DEFAULT_ARCH: &str = "amd64";

/// Answers a GET or HEAD of a tag whose manifest is `meta`.
pub(super) async fn answer(
    registry: &Registry,
    repo: &Repo,
    reference: &Reference,
    meta: ManifestMeta,
    accept: &[String],
    head: bool,
    outcome: Outcome,
) -> Result<Response<Body>, OciError> {
    if manifest_json::accepts(accept, &meta.media_type) {
        return serve(registry, repo, reference, meta, head, outcome).await;
    }
    match meta.media_type.as_str() {
        OCI_INDEX => Err(OciError::new(
            Code::ManifestUnknown,
            "OCI index found, but accept header does not support OCI indexes",
        )),
        OCI_MANIFEST => Err(OciError::new(
            Code::ManifestUnknown,
            "OCI manifest found, but accept header does not support OCI manifests",
        )),
        DOCKER_LIST => {
            let image = default_image(registry, repo, reference, &meta).await?;
            if image.media_type == DOCKER_MANIFEST
                && !manifest_json::accepts(accept, DOCKER_MANIFEST)
            {
                return Err(OciError::new(
                    Code::ManifestInvalid,
                    "Schema 2 manifest not supported by client",
                ));
            }
            serve(registry, repo, reference, image, head, outcome).await
        }
        _ => serve(registry, repo, reference, meta, head, outcome).await,
    }
}

/// The linux/amd64 image of a Docker manifest list (cached like any manifest).
async fn default_image(
    registry: &Registry,
    repo: &Repo,
    reference: &Reference,
    list: &ManifestMeta,
) -> Result<ManifestMeta, OciError> {
    let bytes = body_of(registry, repo, list).await?;
    let Some(digest) = manifest_json::platform_image(&bytes, DEFAULT_OS, DEFAULT_ARCH) else {
        return Err(unknown(repo, reference));
    };
    match local_by_digest(registry, repo, &digest).await? {
        Some(image) => Ok(image),
        None => fetch(registry, repo, &Reference::Digest(digest)).await,
    }
}
