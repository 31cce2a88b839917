//! What to prefetch for images: a reference as a user writes it after the
//! mirror's host (`alpine:3.20`, `ghcr.io/org/app@sha256:…`), walked through
//! its index to every manifest, config and layer.

use serde_json::Value;

/// `NAME[:TAG|@DIGEST]`; a reference without either means `:latest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    pub name: String,
    pub reference: String,
}

impl std::str::FromStr for ImageRef {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (name, reference) = if let Some((name, digest)) = text.split_once('@') {
            (name, digest.to_owned())
        } else {
            // A `:` after the last `/` is a tag; one before it is a registry's port.
            let last_slash = text.rfind('/').map_or(0, |i| i + 1);
            match text[last_slash..].rfind(':') {
                Some(i) => (
                    &text[..last_slash + i],
                    text[last_slash + i + 1..].to_owned(),
                ),
                None => (text, "latest".to_owned()),
            }
        };
        if name.is_empty() || reference.is_empty() || name.contains(char::is_whitespace) {
            return Err(format!(
                "{text:?} is not an image reference (NAME[:TAG|@DIGEST])"
            ));
        }
        Ok(ImageRef {
            name: name.to_owned(),
            reference,
        })
    }
}

pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// What a manifest points at: child manifests (of an index) and blobs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Children {
    pub manifests: Vec<String>,
    pub blobs: Vec<String>,
}

pub fn children(manifest: &[u8]) -> Result<Children, String> {
    let json: Value =
        serde_json::from_slice(manifest).map_err(|e| format!("manifest is not JSON: {e}"))?;
    let digests = |key: &str| -> Vec<String> {
        json[key]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| item["digest"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut blobs = digests("layers");
    if let Some(config) = json["config"]["digest"].as_str() {
        blobs.insert(0, config.to_owned());
    }
    Ok(Children {
        manifests: digests("manifests"),
        blobs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_name_and_tag_or_digest() {
        let parse = |t: &str| t.parse::<ImageRef>().unwrap();
        assert_eq!(parse("alpine").reference, "latest");
        assert_eq!(parse("alpine:3.20").name, "alpine");
        let with_port = parse("registry.local:5000/team/app:v1");
        assert_eq!(
            (with_port.name.as_str(), with_port.reference.as_str()),
            ("registry.local:5000/team/app", "v1")
        );
        let by_digest = parse("ghcr.io/org/app@sha256:abc");
        assert_eq!(by_digest.reference, "sha256:abc");
        assert!("".parse::<ImageRef>().is_err());
    }

    #[test]
    fn an_index_lists_manifests_and_an_image_lists_config_then_layers() {
        let index = br#"{"manifests":[{"digest":"sha256:a"},{"digest":"sha256:b"}]}"#;
        assert_eq!(children(index).unwrap().manifests, ["sha256:a", "sha256:b"]);
        let image = br#"{"config":{"digest":"sha256:c"},"layers":[{"digest":"sha256:l1"},{"digest":"sha256:l2"}]}"#;
        assert_eq!(
            children(image).unwrap().blobs,
            ["sha256:c", "sha256:l1", "sha256:l2"]
        );
    }
}
