//! What the mirror needs to know from inside a manifest: the blobs and child
//! manifests it references (to check a push), its `subject` and artifact type
//! (for the referrers API), the image a list holds for a platform. Reads
//! JSON; stores nothing.

use serde::Deserialize;

use super::error::{Code, OciError};
use crate::store::Digest;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Manifest types a client that names none is assumed to accept.
pub const DEFAULT_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Manifests are small; anything larger is refused rather than buffered.
pub const MAX_MANIFEST: usize = 4 * 1024 * 1024;

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    /// Any JSON: a size that is not a byte count only goes unrecorded.
    size: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
    subject: Option<Descriptor>,
    annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A parsed manifest (image manifest or index, OCI or Docker schema2).
#[derive(Debug, Default)]
pub struct ManifestInfo {
    pub media_type: Option<String>,
    pub artifact_type: Option<String>,
    /// Config and layers: blobs that must exist.
    pub blobs: Vec<Digest>,
    /// Config and layers with the size their descriptors give.
    pub blob_sizes: Vec<(Digest, u64)>,
    /// Children of an index: manifests that must exist.
    pub children: Vec<Digest>,
    pub subject: Option<Digest>,
    /// The annotations object as JSON text.
    pub annotations: Option<String>,
}

fn digest(text: &str) -> Result<Digest, OciError> {
    text.parse::<Digest>()
        .map_err(|e| OciError::new(Code::ManifestInvalid, format!("manifest references {e}")))
}

impl ManifestInfo {
    pub fn parse(bytes: &[u8]) -> Result<ManifestInfo, OciError> {
        let raw: Raw = serde_json::from_slice(bytes).map_err(|e| {
            OciError::new(
                Code::ManifestInvalid,
                format!("manifest is not valid JSON: {e}"),
            )
        })?;
        let mut blobs = Vec::new();
        let mut blob_sizes = Vec::new();
        for descriptor in raw.config.iter().chain(&raw.layers) {
            let blob = digest(&descriptor.digest)?;
            if let Some(size) = descriptor.size.as_ref().and_then(serde_json::Value::as_u64) {
                blob_sizes.push((blob.clone(), size));
            }
            blobs.push(blob);
        }
        let children = raw
            .manifests
            .iter()
            .map(|m| digest(&m.digest))
            .collect::<Result<_, _>>()?;
        let subject = raw
            .subject
            .as_ref()
            .map(|s| digest(&s.digest))
            .transpose()?;
        // The referrers API's rule: artifactType, else the config's media type.
        let artifact_type = raw
            .artifact_type
            .or_else(|| raw.config.as_ref().and_then(|c| c.media_type.clone()));
        Ok(ManifestInfo {
            media_type: raw.media_type,
            artifact_type,
            blobs,
            blob_sizes,
            children,
            subject,
            annotations: raw
                .annotations
                .map(|a| serde_json::Value::Object(a).to_string()),
        })
    }
}

/// Whether an `Accept` header admits `media_type` (no header admits all).
pub fn accepts(accept: &[String], media_type: &str) -> bool {
    accept.is_empty()
        || accept.iter().flat_map(|h| h.split(',')).any(|item| {
            let item = item.split(';').next().unwrap_or("").trim();
            item == "*/*" || item.eq_ignore_ascii_case(media_type)
        })
}

#[derive(Deserialize)]
struct Platform {
    os: Option<String>,
    architecture: Option<String>,
}

#[derive(Deserialize)]
struct Entry {
    digest: String,
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct List {
    #[serde(default)]
    manifests: Vec<Entry>,
}

/// The first image of an index or manifest list built for `os`/`architecture`.
pub fn platform_image(bytes: &[u8], os: &str, architecture: &str) -> Option<Digest> {
    let list: List = serde_json::from_slice(bytes).ok()?;
    list.manifests
        .into_iter()
        .find(|entry| {
            entry.platform.as_ref().is_some_and(|p| {
                p.os.as_deref() == Some(os) && p.architecture.as_deref() == Some(architecture)
            })
        })
        .and_then(|entry| entry.digest.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_sizes_are_read_from_config_and_layer_descriptors() {
        let config = Digest::sha256_of(b"config");
        let layer = Digest::sha256_of(b"layer");
        let odd = Digest::sha256_of(b"odd");
        let json = serde_json::json!({
            "schemaVersion": 2,
            "config": {"digest": config.to_string(), "size": 7},
            "layers": [
                {"digest": layer.to_string(), "size": 12345},
                {"digest": odd.to_string(), "size": -1},
            ],
        });
        let info = ManifestInfo::parse(json.to_string().as_bytes()).unwrap();
        assert_eq!(info.blobs, [config.clone(), layer.clone(), odd]);
        assert_eq!(info.blob_sizes, [(config, 7), (layer, 12345)]);
    }

    #[test]
    fn the_image_for_a_platform_is_the_first_that_matches() {
        let [arm, amd, amd_too] = [1u8, 2, 3].map(|b| Digest::sha256_of(&[b]));
        let list = serde_json::json!({
            "mediaType": DOCKER_LIST,
            "manifests": [
                { "digest": arm.to_string(), "platform": { "os": "linux", "architecture": "arm64" } },
                { "digest": amd.to_string(), "platform": { "os": "linux", "architecture": "amd64" } },
                { "digest": amd_too.to_string(), "platform": { "os": "linux", "architecture": "amd64" } },
            ],
        })
        .to_string();
        assert_eq!(platform_image(list.as_bytes(), "linux", "amd64"), Some(amd));
        assert_eq!(platform_image(list.as_bytes(), "windows", "amd64"), None);
        assert_eq!(platform_image(b"not json", "linux", "amd64"), None);
    }

    #[test]
    fn accept_lists_are_split_and_parameters_ignored() {
        let narrow = vec![format!("{OCI_MANIFEST}; q=0.9, {DOCKER_MANIFEST}")];
        assert!(accepts(&narrow, OCI_MANIFEST));
        assert!(accepts(&narrow, DOCKER_MANIFEST));
        assert!(!accepts(&narrow, OCI_INDEX));
        assert!(accepts(&[], OCI_INDEX), "no Accept takes everything");
        assert!(accepts(&["*/*".to_owned()], OCI_INDEX));
    }
}
