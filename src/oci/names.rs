//! Which upstream a repository name belongs to, or whether it is hosted here:
//! containerd's `?ns=HOST`, else a first path component naming an upstream
//! (`ghcr.io/org/app`), else the default upstream with Docker Hub's `library/`
//! for single-component names. Names that map to no upstream are hosted.

use std::sync::Arc;

use super::error::{Code, OciError};
use super::route::RepoName;
use super::upstream::Upstream;

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
    pub key: String,
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
}

impl Upstreams {
    pub fn new(all: Vec<Arc<Upstream>>) -> Upstreams {
        Upstreams { all }
    }

    fn named(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.all.iter().find(|u| u.name == name)
    }

    pub fn resolve(&self, name: &RepoName, ns: Option<&str>) -> Result<Repo, OciError> {
        let mirrored = |upstream: &Arc<Upstream>, remote: RepoName| Repo {
            name: name.clone(),
            key: format!("{}/{remote}", upstream.name),
            source: Source::Upstream {
                upstream: upstream.clone(),
                remote,
            },
        };
        if let Some(ns) = ns.filter(|ns| !ns.is_empty()) {
            let upstream = self.named(ns).ok_or_else(|| {
                OciError::new(
                    Code::NameUnknown,
                    format!("no upstream registry named {ns:?} is configured"),
                )
            })?;
            let remote = if upstream.default && name.is_single_component() {
                name.in_library()
            } else {
                name.clone()
            };
            return Ok(mirrored(upstream, remote));
        }
        if let Some((first, rest)) = name.split_first()
            && let Some(upstream) = self.named(first)
        {
            return Ok(mirrored(upstream, rest));
        }
        if let Some(upstream) = self.all.iter().find(|u| u.default) {
            let remote = if name.is_single_component() {
                name.in_library()
            } else {
                name.clone()
            };
            return Ok(mirrored(upstream, remote));
        }
        Ok(Repo {
            name: name.clone(),
            key: name.to_string(),
            source: Source::Hosted,
        })
    }
}
