//! What to prefetch for images: a reference as users write it
//! (`mirror.example.com:5000/org/app:1.2`, `docker.io/library/alpine`,
//! `alpine`, `org/app@sha256:…`), turned into the name the mirror's `/v2/`
//! sees, then walked through its index to every manifest, config and layer.

use crate::config::{Config, DOCKER_HUB_HOSTS};
use crate::oci::OciError;
use crate::oci::manifest_json::ManifestInfo;

/// `NAME[:TAG|@DIGEST]`; a reference without either means `:latest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    pub name: String,
    pub reference: String,
}

/// Why a reference given to prefetch is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    #[error("{0:?} is not an image reference (NAME[:TAG|@DIGEST])")]
    Malformed(String),
    #[error(
        "{host:?} is neither this mirror ({own_names} on port {own_port}) nor an upstream \
         registry ({upstreams}); name an upstream, or leave the host out for the default upstream"
    )]
    UnknownHost {
        host: String,
        own_names: String,
        own_port: u16,
        upstreams: String,
    },
}

impl std::str::FromStr for ImageRef {
    type Err = RefError;

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
            return Err(RefError::Malformed(text.to_owned()));
        }
        Ok(ImageRef {
            name: name.to_owned(),
            reference,
        })
    }
}

/// The registries a reference may name before its repository: this mirror
/// (by a name its certificate carries, with its port or none) and each upstream
/// (by its name, its URL's host, and for Docker Hub, Hub's own names).
#[derive(Debug)]
pub struct Registries {
    own_names: Vec<String>,
    own_port: u16,
    /// Upstream name → the hosts a reference may call it by.
    upstreams: Vec<(String, Vec<String>)>,
}

impl Registries {
    /// `own_names`: host names and addresses clients reach this mirror by.
    pub fn new(config: &Config, own_names: Vec<String>) -> Registries {
        let upstreams = config
            .registry
            .upstream
            .iter()
            .map(|upstream| {
                let mut hosts = url_hosts(&upstream.url);
                if upstream.is_docker_hub() {
                    hosts.extend(DOCKER_HUB_HOSTS.iter().map(|h| (*h).to_owned()));
                }
                (upstream.name.clone(), hosts)
            })
            .collect();
        Registries {
            own_names: own_names.iter().map(|n| n.to_ascii_lowercase()).collect(),
            own_port: config.listen.port(),
            upstreams,
        }
    }

    /// The reference as this mirror's `/v2/` names it: an upstream's host
    /// becomes its name, this mirror's own address goes. A leading registry
    /// host that is neither is refused rather than guessed at.
    pub fn localize(&self, image: ImageRef) -> Result<ImageRef, RefError> {
        let Some((first, rest)) = image.name.split_once('/') else {
            return Ok(image);
        };
        let is_host = first.contains(['.', ':']) || first == "localhost";
        if !is_host || self.upstreams.iter().any(|(name, _)| name == first) {
            return Ok(image);
        }
        let host = first.to_ascii_lowercase();
        if let Some((name, _)) = self
            .upstreams
            .iter()
            .find(|(_, hosts)| hosts.contains(&host))
        {
            return Ok(ImageRef {
                name: format!("{name}/{rest}"),
                ..image
            });
        }
        if self.is_own(&host) {
            return Ok(ImageRef {
                name: rest.to_owned(),
                ..image
            });
        }
        Err(self.unknown(first))
    }

    fn is_own(&self, host: &str) -> bool {
        let (name, port) = split_port(host);
        let port_matches = port.is_none_or(|p| p == self.own_port.to_string());
        port_matches && self.own_names.iter().any(|own| own == name)
    }

    fn unknown(&self, host: &str) -> RefError {
        let upstreams: Vec<&str> = self.upstreams.iter().map(|(n, _)| n.as_str()).collect();
        RefError::UnknownHost {
            host: host.to_owned(),
            own_names: self.own_names.join(", "),
            own_port: self.own_port,
            upstreams: if upstreams.is_empty() {
                "none configured".to_owned()
            } else {
                upstreams.join(", ")
            },
        }
    }
}

/// How a reference may write the host of `url`: with its port, and without
/// one where the port is the scheme's own.
fn url_hosts(url: &str) -> Vec<String> {
    let Ok(url) = reqwest::Url::parse(url) else {
        return Vec::new();
    };
    let Some(host) = url.host_str() else {
        return Vec::new();
    };
    let host = host.to_ascii_lowercase();
    match (url.port(), url.port_or_known_default()) {
        (Some(port), _) => vec![format!("{host}:{port}")],
        (None, Some(port)) => vec![format!("{host}:{port}"), host],
        (None, None) => vec![host],
    }
}

/// `host:port` → (`host`, `port`); `[::1]:5000` → (`::1`, `5000`).
fn split_port(host: &str) -> (&str, Option<&str>) {
    if let Some(bracketed) = host.strip_prefix('[') {
        return match bracketed.split_once(']') {
            Some((ip, rest)) => (ip, rest.strip_prefix(':')),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
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
pub fn children(manifest: &[u8]) -> Result<Children, OciError> {
    let info = ManifestInfo::parse(manifest)?;
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

    fn registries() -> Registries {
        let config = Config::parse(
            "listen = \"0.0.0.0:5000\"\n\
             [[registry.upstream]]\nname = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\ndefault = true\n\
             [[registry.upstream]]\nname = \"ghcr.io\"\nurl = \"https://ghcr.io\"\n\
             [[registry.upstream]]\nname = \"corp\"\nurl = \"http://10.0.0.7:5001\"\n",
            std::path::Path::new("."),
            "test",
        )
        .unwrap();
        Registries::new(&config, vec!["mirror.example.com".into(), "::1".into()])
    }

    fn localized(text: &str) -> Result<(String, String), RefError> {
        let image = registries().localize(text.parse::<ImageRef>()?)?;
        Ok((image.name, image.reference))
    }

    #[test]
    fn references_are_taken_as_users_write_them() {
        let ok = |name: &str, reference: &str| Ok((name.to_owned(), reference.to_owned()));
        assert_eq!(
            localized("mirror.example.com:5000/org/app:1.2"),
            ok("org/app", "1.2")
        );
        assert_eq!(
            localized("MIRROR.example.com/org/app:1.2"),
            ok("org/app", "1.2")
        );
        assert_eq!(
            localized("[::1]:5000/ghcr.io/org/app:1"),
            ok("ghcr.io/org/app", "1")
        );
        assert_eq!(
            localized("docker.io/library/alpine"),
            ok("docker.io/library/alpine", "latest")
        );
        assert_eq!(localized("alpine"), ok("alpine", "latest"));
        assert_eq!(
            localized("registry-1.docker.io/library/alpine:3.20"),
            ok("docker.io/library/alpine", "3.20")
        );
        assert_eq!(
            localized("index.docker.io/org/app:1"),
            ok("docker.io/org/app", "1")
        );
        assert_eq!(
            localized("10.0.0.7:5001/team/app:1"),
            ok("corp/team/app", "1")
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            localized(&format!("org/app@{digest}")),
            ok("org/app", &digest)
        );
    }

    #[test]
    fn a_registry_host_that_is_neither_the_mirror_nor_an_upstream_is_refused() {
        for text in [
            "quay.io/org/app:1",
            "mirror.example.com:5001/org/app:1",
            "10.0.0.7/team/app",
            "localhost/app",
        ] {
            let error = localized(text).unwrap_err();
            assert!(
                matches!(error, RefError::UnknownHost { .. }),
                "{text}: {error}"
            );
            let error = error.to_string();
            assert!(
                error.contains("ghcr.io") && error.contains("mirror.example.com"),
                "{text}: {error}"
            );
        }
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
