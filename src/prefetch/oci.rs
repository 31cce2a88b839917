//! What to prefetch for images: a reference as a user writes it after the
//! mirror's host (`alpine:3.20`, `ghcr.io/org/app@sha256:…`), walked through
//! its index to every manifest, config and layer.

use crate::oci::manifest_json::ManifestInfo;

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

/// What a manifest points at: child manifests (of an index) and blobs
/// (config, then layers).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Children {
    pub manifests: Vec<String>,
    pub blobs: Vec<String>,
}

/// Parsed by the server's own manifest reader, so prefetch follows exactly
/// what a pull would.
pub fn children(manifest: &[u8]) -> Result<Children, String> {
    let info = ManifestInfo::parse(manifest).map_err(|e| e.to_string())?;
    let texts =
        |digests: Vec<crate::store::Digest>| digests.iter().map(|d| d.to_string()).collect();
    Ok(Children {
        manifests: texts(info.children),
        blobs: texts(info.blobs),
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
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let (a, b, c, l1, l2) = (d('a'), d('b'), d('c'), d('1'), d('2'));
        let index = format!(r#"{{"manifests":[{{"digest":"{a}"}},{{"digest":"{b}"}}]}}"#);
        assert_eq!(children(index.as_bytes()).unwrap().manifests, [a, b]);
        let image = format!(
            r#"{{"config":{{"digest":"{c}"}},"layers":[{{"digest":"{l1}"}},{{"digest":"{l2}"}}]}}"#
        );
        assert_eq!(children(image.as_bytes()).unwrap().blobs, [c, l1, l2]);
    }
}
