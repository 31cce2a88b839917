//! Which upstream a repository name belongs to, or whether it is hosted here:
//! containerd's `?ns=HOST`, else a first path component naming an upstream
//! (`ghcr.io/org/app`), else the default upstream. Whichever way it was
//! reached, an upstream with `library_prefix` (Docker Hub, by default) gets
//! `library/` before a single-component name. Names that map to no upstream,
//! or fall in a configured hosted namespace, are hosted.

use std::sync::Arc;

use super::error::{Code, OciError};
use super::route::RepoName;
use super::upstream::Upstream;
use crate::store::RepoKey;

/// Where a repository's content comes from.
#[derive(Clone)]
pub enum Source {
    Upstream {
        upstream: Arc<Upstream>,
        remote: RepoName,
    },
    Hosted,
}

/// A resolved repository.
#[derive(Clone)]
pub struct Repo {
    /// The name the client used.
    pub name: RepoName,
    /// The store's key: `<upstream>/<remote>` for a mirrored repository, the
    /// name for a hosted one. Stable whichever way a client reached it.
    pub key: RepoKey,
    pub source: Source,
}

impl Repo {
    pub fn upstream(&self) -> Option<(&Upstream, &RepoName)> {
        match &self.source {
            Source::Upstream { upstream, remote } => Some((upstream, remote)),
            Source::Hosted => None,
        }
    }

    pub fn is_hosted(&self) -> bool {
        matches!(self.source, Source::Hosted)
    }
}

pub struct Upstreams {
    all: Vec<Arc<Upstream>>,
    /// Namespaces hosted here even where the default upstream would take them.
    hosted: Vec<String>,
}

impl Upstreams {
    pub fn new(all: Vec<Arc<Upstream>>, hosted: Vec<String>) -> Upstreams {
        Upstreams { all, hosted }
    }

    fn is_hosted_namespace(&self, name: &RepoName) -> bool {
        let name = name.as_str();
        self.hosted.iter().any(|prefix| {
            name.strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }

    fn named(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.all.iter().find(|u| u.name == name)
    }

    pub fn resolve(&self, name: &RepoName, ns: Option<&str>) -> Result<Repo, OciError> {
        let mirrored = |upstream: &Arc<Upstream>, remote: RepoName| {
            let remote = if upstream.library_prefix && remote.is_single_component() {
                remote.in_library()
            } else {
                remote
            };
            Repo {
                name: name.clone(),
                key: RepoKey::new([upstream.name.as_str(), "/", remote.as_str()].concat()),
                source: Source::Upstream {
                    upstream: upstream.clone(),
                    remote,
                },
            }
        };
        if let Some(ns) = ns.filter(|ns| !ns.is_empty()) {
            let upstream = self.named(ns).ok_or_else(|| {
                OciError::new(
                    Code::NameUnknown,
                    format!("no upstream registry named {ns:?} is configured"),
                )
            })?;
            return Ok(mirrored(upstream, name.clone()));
        }
        if let Some((first, rest)) = name.split_first()
            && let Some(upstream) = self.named(first)
        {
            return Ok(mirrored(upstream, rest));
        }
        let hosted = Repo {
            name: name.clone(),
            key: RepoKey::new(name.to_string()),
            source: Source::Hosted,
        };
        if self.is_hosted_namespace(name) {
            return Ok(hosted);
        }
        if let Some(upstream) = self.all.iter().find(|u| u.default) {
            return Ok(mirrored(upstream, name.clone()));
        }
        Ok(hosted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamRegistry;

    /// A default upstream at `url`, with `library_prefix` as configured.
    fn default_upstream(name: &str, url: &str, library_prefix: Option<bool>) -> Upstreams {
        let config = UpstreamRegistry {
            name: name.to_owned(),
            url: url.to_owned(),
            library_prefix,
            ..crate::Config::default().registry.upstream[0].clone()
        };
        let upstream = Upstream::new(&config, Arc::new(crate::metrics::Metrics::new())).unwrap();
        Upstreams::new(vec![Arc::new(upstream)], Vec::new())
    }

    fn upstreams() -> Upstreams {
        let upstream = |name: &str, default: bool| {
            Arc::new(
                Upstream::new(
                    &UpstreamRegistry {
                        name: name.to_owned(),
                        url: format!("https://{name}"),
                        default,
                        library_prefix: None,
                        username: None,
                        password: None,
                        ca: None,
                        tag_ttl: std::time::Duration::from_secs(1),
                        token_realms: None,
                    },
                    Arc::new(crate::metrics::Metrics::new()),
                )
                .unwrap(),
            )
        };
        Upstreams::new(
            vec![upstream("docker.io", true), upstream("ghcr.io", false)],
            vec!["internal".to_owned()],
        )
    }

    #[test]
    fn library_is_added_only_for_docker_hub_unless_configured() {
        let corp = default_upstream("corp", "https://registry.corp.example", None);
        assert_eq!(resolve(&corp, "alpine", None).1, "alpine");
        assert_eq!(resolve(&corp, "alpine", Some("corp")).1, "alpine");
        let hub = default_upstream("hub", "https://registry-1.docker.io/", None);
        assert_eq!(resolve(&hub, "alpine", None).1, "library/alpine");
        assert_eq!(resolve(&hub, "alpine", Some("hub")).1, "library/alpine");
        assert_eq!(resolve(&hub, "hub/alpine", None).1, "library/alpine");
        assert_eq!(resolve(&hub, "org/app", None).1, "org/app");
        let asked = default_upstream("corp", "https://registry.corp.example", Some(true));
        assert_eq!(resolve(&asked, "alpine", None).1, "library/alpine");
        let refused = default_upstream("hub", "https://registry-1.docker.io", Some(false));
        assert_eq!(resolve(&refused, "alpine", None).1, "alpine");
    }

    fn resolve(all: &Upstreams, name: &str, ns: Option<&str>) -> (Option<String>, String, String) {
        let repo = all.resolve(&name.parse().unwrap(), ns).unwrap();
        let upstream = repo
            .upstream()
            .map(|(u, r)| (u.name.clone(), r.to_string()));
        (
            upstream.as_ref().map(|u| u.0.clone()),
            upstream.map_or(String::new(), |u| u.1),
            repo.key.to_string(),
        )
    }

    #[test]
    fn names_map_by_ns_then_first_component_then_the_default_with_library() {
        let all = upstreams();
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(
            resolve(&all, "org/app", Some("ghcr.io")),
            (some("ghcr.io"), "org/app".into(), "ghcr.io/org/app".into())
        );
        assert_eq!(
            resolve(&all, "ghcr.io/org/app", None),
            (some("ghcr.io"), "org/app".into(), "ghcr.io/org/app".into())
        );
        assert_eq!(
            resolve(&all, "alpine", None),
            (
                some("docker.io"),
                "library/alpine".into(),
                "docker.io/library/alpine".into()
            )
        );
        assert_eq!(
            resolve(&all, "alpine", Some("docker.io")).1,
            "library/alpine"
        );
        assert_eq!(
            resolve(&all, "library/alpine", None).2,
            "docker.io/library/alpine"
        );
        assert_eq!(
            resolve(&all, "docker.io/library/alpine", None).2,
            "docker.io/library/alpine"
        );
        assert!(all.resolve(&"x".parse().unwrap(), Some("quay.io")).is_err());
    }

    #[test]
    fn names_of_no_upstream_are_hosted() {
        let all = Upstreams::new(Vec::new(), Vec::new());
        let repo = all.resolve(&"team/app".parse().unwrap(), None).unwrap();
        assert!(repo.is_hosted());
        assert_eq!(repo.key.as_str(), "team/app");
        // A hosted namespace wins over the default upstream, and only as a whole component.
        let all = upstreams();
        assert!(
            all.resolve(&"internal/app".parse().unwrap(), None)
                .unwrap()
                .is_hosted()
        );
        assert!(
            all.resolve(&"internal".parse().unwrap(), None)
                .unwrap()
                .is_hosted()
        );
        assert!(
            !all.resolve(&"internals/app".parse().unwrap(), None)
                .unwrap()
                .is_hosted()
        );
    }
}
