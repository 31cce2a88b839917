//! Real upstream registries for the OCI tests: `docker-registry` (CNCF
//! distribution 2.8) processes on loopback with generated configs (no auth,
//! htpasswd, or token auth with the issuer in `token`), a recording and
//! corrupting proxy (`proxy`), and OCI layouts pushed with skopeo (`layout`).

pub mod layout;
pub mod proxy;
pub mod token;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::process::{Guard, free_port, tool};

pub const UPSTREAM_USER: &str = "mirror-bot";
pub const UPSTREAM_PASSWORD: &str = "upstream-secret-pw";

pub enum Auth<'a> {
    None,
    /// htpasswd with `UPSTREAM_USER` / `UPSTREAM_PASSWORD`.
    Htpasswd,
    Token(&'a token::TokenIssuer),
}

/// A running `docker-registry`.
pub struct DockerRegistry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    pub dir: tempfile::TempDir,
    guard: Option<Guard>,
    config: PathBuf,
}

impl DockerRegistry {
    pub fn start(auth: Auth<'_>) -> DockerRegistry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let auth_yaml = match auth {
            Auth::None => String::new(),
            Auth::Htpasswd => {
                let path = dir.path().join("htpasswd");
                let hash = bcrypt::hash(UPSTREAM_PASSWORD, 5).expect("bcrypt");
                std::fs::write(&path, format!("{UPSTREAM_USER}:{hash}\n")).expect("htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: upstream-realm\n    path: {}\n",
                    path.display()
                )
            }
            Auth::Token(issuer) => {
                let path = dir.path().join("token-ca.crt");
                std::fs::write(&path, &issuer.cert_pem).expect("token cert");
                format!(
                    "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                    issuer.realm(),
                    token::SERVICE,
                    token::ISSUER,
                    path.display()
                )
            }
        };
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{auth_yaml}",
                dir.path().join("data").display()
            ),
        )
        .expect("registry config");
        let mut registry = DockerRegistry {
            addr,
            dir,
            guard: None,
            config,
        };
        registry.spawn();
        registry
    }

    fn spawn(&mut self) {
        let mut guard = Guard::spawn(
            "docker-registry",
            Command::new(tool("docker-registry"))
                .arg("serve")
                .arg(&self.config)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        guard.wait_for_port(&self.addr, Duration::from_secs(20));
        self.guard = Some(guard);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Kills the process (by its PID); its data stays for `restart`.
    pub fn stop(&mut self) {
        self.guard.take();
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

/// The digest upstream serves for `repo:reference` (HEAD with every manifest type accepted).
pub async fn upstream_digest(
    base: &str,
    repo: &str,
    reference: &str,
    auth: Option<(&str, &str)>,
) -> String {
    let mut request = reqwest::Client::new()
        .head(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("accept", ACCEPT_ALL);
    if let Some((user, password)) = auth {
        request = request.basic_auth(user, Some(password));
    }
    let response = request.send().await.expect("HEAD upstream");
    assert_eq!(response.status(), 200, "HEAD {repo}:{reference} upstream");
    response.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned()
}

pub const ACCEPT_ALL: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";
