//! `mirror cache prefetch`: warms the store through the mirror's own request
//! path, so prefetched content is fetched, verified, stored and audited exactly
//! as a client's pull would be.
//!
//! It starts a private instance on the data dir, listening on 127.0.0.1 with
//! a throwaway CA: only this process holds a certificate it accepts. Beside a
//! running server (the data dir is locked) the instance shares the store
//! instead of owning it: fills are atomic and SQLite serializes the writers.

pub mod go;
pub mod oci;

use std::path::{Path, PathBuf};

use anyhow::Context;
use futures_util::StreamExt;
use mirror_pki::{CaOptions, Pki, Validity, layout};

use crate::auth::Policy;
use crate::config::{ClientAuth, Config, TlsConfig};
use crate::instance::{Mirror, StartOptions};

/// What a prefetch did.
#[derive(Debug, Default)]
pub struct Report {
    pub files: u64,
    pub bytes: u64,
    pub failures: Vec<FetchError>,
}

/// One path that could not be prefetched, and why.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {cause}")]
pub struct FetchError {
    pub path: String,
    pub cause: FetchCause,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchCause {
    #[error("{0}")]
    Request(#[from] reqwest::Error),
    /// The mirror refused it; `reason` is its body, trimmed.
    #[error("{status} {reason}")]
    Status {
        status: http::StatusCode,
        reason: String,
    },
    #[error("{0}")]
    Manifest(crate::oci::OciError),
}

impl FetchError {
    fn new(path: &str, cause: impl Into<FetchCause>) -> FetchError {
        FetchError {
            path: path.to_owned(),
            cause: cause.into(),
        }
    }

    /// The mirror's refusal of `path`, with what its body says.
    async fn refused(path: &str, response: reqwest::Response) -> FetchError {
        let status = response.status();
        let reason = response.text().await.unwrap_or_default();
        let reason = reason.trim().to_owned();
        FetchError::new(path, FetchCause::Status { status, reason })
    }
}

/// A throwaway PKI directory, removed when dropped.
struct EphemeralPki(PathBuf);

impl Drop for EphemeralPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Prefetcher {
    mirror: Mirror,
    client: reqwest::Client,
    base: String,
    jobs: usize,
    _pki: EphemeralPki,
}

impl Prefetcher {
    /// Starts the private instance for `config`'s data dir and upstreams.
    pub async fn start(mut config: Config, jobs: usize) -> anyhow::Result<Prefetcher> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("mirror-prefetch-{}-{nanos}", std::process::id()));
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        let pki_dir = EphemeralPki(dir);
        let pki = Pki::init(
            &pki_dir.0,
            &CaOptions {
                common_name: "mirror prefetch (ephemeral)".into(),
                days: 2,
                force: false,
            },
        )?;
        pki.issue_server(&["127.0.0.1".into()], Validity::Days(2))?;
        let client_cert = pki.issue_client("mirror-prefetch", Validity::Days(2))?;

        config.tls = TlsConfig {
            cert: Some(pki.path(layout::SERVER_CERT)),
            key: Some(pki.path(layout::SERVER_KEY)),
            client_ca: Some(pki.path(layout::CA_CERT)),
            client_auth: ClientAuth::Required,
            crl: None,
        };
        config.auth.htpasswd = None;
        config.auth.read = Policy::Cert;
        config.auth.write = Policy::Cert;
        config.go.read = Some(Policy::Cert);
        config.registry.read = Some(Policy::Cert);
        // A guest beside the cluster's replicas on a shared index: the
        // upkeep is the leader's, and what is in flight may be theirs.
        let shared = config.index.is_shared() || crate::store::Store::is_locked(&config.data_dir);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
        let mirror = Mirror::start(
            config,
            Some(listener),
            StartOptions {
                sighup: false,
                shared,
            },
        )
        .await?;

        let identity = format!("{}{}", client_cert.cert_pem, client_cert.key_pem);
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(
                pki.ca_cert_pem().as_bytes(),
            )?])
            .identity(reqwest::Identity::from_pem(identity.as_bytes())?)
            .build()?;
        Ok(Prefetcher {
            base: format!("https://{}", mirror.addr()),
            mirror,
            client,
            jobs: jobs.max(1),
            _pki: pki_dir,
        })
    }

    pub async fn stop(self) {
        self.mirror.shutdown().await;
    }

    /// GETs `path`, discarding the body; how many bytes came.
    async fn fetch(&self, path: &str, accept: Option<&str>) -> Result<u64, FetchError> {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(accept) = accept {
            request = request.header(http::header::ACCEPT, accept);
        }
        let failed = |e: reqwest::Error| FetchError::new(path, e);
        let response = request.send().await.map_err(failed)?;
        if !response.status().is_success() {
            return Err(FetchError::refused(path, response).await);
        }
        let mut body = response.bytes_stream();
        let mut bytes = 0u64;
        while let Some(chunk) = body.next().await {
            bytes += chunk.map_err(failed)?.len() as u64;
        }
        Ok(bytes)
    }

    /// Fetches every path, `jobs` at a time, ticking `progress` per file.
    async fn fetch_all(
        &self,
        paths: Vec<String>,
        accept: Option<&str>,
        progress: &indicatif::ProgressBar,
    ) -> Report {
        let mut report = Report::default();
        let results: Vec<Result<u64, FetchError>> = futures_util::stream::iter(paths)
            .map(|path| async move {
                let result = self.fetch(&path, accept).await;
                progress.inc(1);
                result
            })
            .buffer_unordered(self.jobs)
            .collect()
            .await;
        for result in results {
            match result {
                Ok(bytes) => {
                    report.files += 1;
                    report.bytes += bytes;
                }
                Err(failure) => report.failures.push(failure),
            }
        }
        report
    }

    /// `.info`, `.mod` and (where needed) `.zip` of every module version.
    pub async fn go(
        &self,
        modules: &[go::ModuleVersion],
        progress: &indicatif::ProgressBar,
    ) -> Report {
        let paths: Vec<String> = modules.iter().flat_map(go::ModuleVersion::paths).collect();
        progress.set_length(paths.len() as u64);
        self.fetch_all(paths, None, progress).await
    }

    /// Every manifest (all platforms of an index), config and layer of each image.
    pub async fn images(
        &self,
        images: &[oci::ImageRef],
        progress: &indicatif::ProgressBar,
    ) -> Report {
        let mut report = Report::default();
        let mut blobs = Vec::new();
        progress.set_length(images.len() as u64);
        for image in images {
            let mut pending = vec![image.reference.clone()];
            while let Some(reference) = pending.pop() {
                let path = format!("/v2/{}/manifests/{reference}", image.name);
                match self.manifest(&path).await {
                    Ok((body, children)) => {
                        report.files += 1;
                        report.bytes += body;
                        progress.inc_length(
                            children.manifests.len() as u64 + children.blobs.len() as u64,
                        );
                        pending.extend(children.manifests);
                        blobs.extend(
                            children
                                .blobs
                                .into_iter()
                                .map(|d| format!("/v2/{}/blobs/{d}", image.name)),
                        );
                    }
                    Err(failure) => report.failures.push(failure),
                }
                progress.inc(1);
            }
        }
        blobs.sort();
        blobs.dedup();
        let fetched = self.fetch_all(blobs, None, progress).await;
        report.files += fetched.files;
        report.bytes += fetched.bytes;
        report.failures.extend(fetched.failures);
        report
    }

    async fn manifest(&self, path: &str) -> Result<(u64, oci::Children), FetchError> {
        let failed = |e: reqwest::Error| FetchError::new(path, e);
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .header(
                http::header::ACCEPT,
                crate::oci::manifest_json::DEFAULT_ACCEPT,
            )
            .send()
            .await
            .map_err(failed)?;
        if !response.status().is_success() {
            return Err(FetchError::refused(path, response).await);
        }
        let body = response.bytes().await.map_err(failed)?;
        let children =
            oci::children(&body).map_err(|e| FetchError::new(path, FetchCause::Manifest(e)))?;
        Ok((body.len() as u64, children))
    }
}

/// The registries an image reference may start with, for `config`: its
/// upstreams, and this mirror by the names in its server certificate (the
/// names clients can reach it by) or by loopback.
pub fn registries(config: &Config) -> oci::Registries {
    let cert = config
        .tls
        .cert
        .clone()
        .unwrap_or_else(|| config.data_dir.join("pki").join(layout::SERVER_CERT));
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .map(str::to_owned)
        .to_vec();
    if !config.listen.ip().is_unspecified() {
        names.push(config.listen.ip().to_string());
    }
    // No certificate yet (never served): loopback is all it can be reached by.
    let sans = mirror_pki::inspect_file(&cert)
        .ok()
        .and_then(|infos| infos.into_iter().next())
        .map(|info| info.sans)
        .unwrap_or_default();
    names.extend(sans.iter().filter_map(|san| {
        san.strip_prefix("DNS:")
            .or_else(|| san.strip_prefix("IP:"))
            .map(str::to_owned)
    }));
    oci::Registries::new(config, names)
}

/// Reads a prefetch list: one image reference per line (`#` comments allowed).
pub fn read_image_list(path: &Path) -> anyhow::Result<Vec<oci::ImageRef>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|line| !line.is_empty())
        .map(|line| {
            line.parse()
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
        })
        .collect()
}
