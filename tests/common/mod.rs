//! Shared test harness: a real `mirror` on a pre-bound `127.0.0.1:0` listener,
//! real TLS with a PKI made by `mirror-pki` in a temp dir, and clients that
//! verify the server's certificate for real.
//!
//! Each test binary uses a different subset of this module.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

pub mod audit;
pub mod balancer;
pub mod cluster;
pub mod containerd;
pub mod docker;
pub mod forward;
pub mod garage;
pub mod go;
pub mod netns;
pub mod noise;
pub mod onboarding;
pub mod postgres;
pub mod process;
pub mod raw;
pub mod raw_tls;
pub mod registry;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mirror::Config;
use mirror::instance::{Mirror, StartOptions};
use mirror_pki::{CaOptions, CertsDir, IssuedCert, Pki, RegistryHost, Validity, layout};

pub const USER: &str = "alice";
pub const PASSWORD: &str = "alice-secret-pw";

/// A CA with a server certificate for 127.0.0.1/localhost, a client
/// certificate for alice, and an htpasswd file with alice's password.
pub struct TestPki {
    pub dir: PathBuf,
    pub pki: Pki,
    pub alice: IssuedCert,
    pub htpasswd: PathBuf,
}

impl TestPki {
    pub fn create(dir: &Path) -> TestPki {
        let pki_dir = dir.join("pki");
        let pki = Pki::init(&pki_dir, &CaOptions::default()).expect("init CA");
        pki.issue_server(&["127.0.0.1".into(), "localhost".into()], Validity::Days(2))
            .expect("server cert");
        let alice = pki
            .issue_client(USER, Validity::Days(2))
            .expect("client cert");
        let htpasswd = dir.join("htpasswd");
        // Cost 4 keeps tests fast; `htpasswd -B` files are tested separately.
        let hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt");
        std::fs::write(&htpasswd, format!("{USER}:{hash}\n")).expect("write htpasswd");
        TestPki {
            dir: pki_dir,
            pki,
            alice,
            htpasswd,
        }
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.pki.path(layout::CA_CERT)
    }

    pub fn ca_pem(&self) -> &str {
        self.pki.ca_cert_pem()
    }

    pub fn crl(&self) -> PathBuf {
        self.pki.path(layout::CRL)
    }
}

/// How to start a test mirror.
pub struct MirrorOptions {
    pub client_auth: &'static str,
    /// TOML appended to the generated config (policies, upstreams, …).
    pub extra_toml: String,
    pub handshake_timeout: &'static str,
    pub header_timeout: &'static str,
    /// How often the server checks its TLS and htpasswd files for changes.
    pub reload_poll: &'static str,
    /// How long a request body may send nothing.
    pub body_timeout: &'static str,
    /// More `[limits]` lines (`key = value`, one a line).
    pub limits: &'static str,
}

impl Default for MirrorOptions {
    fn default() -> Self {
        MirrorOptions {
            client_auth: "optional",
            extra_toml: String::new(),
            handshake_timeout: "10s",
            header_timeout: "30s",
            reload_poll: "1h",
            body_timeout: "60s",
            limits: "",
        }
    }
}

/// A running mirror and everything a test needs to talk to it.
pub struct TestMirror {
    pub mirror: Option<Mirror>,
    pub addr: SocketAddr,
    pub root: tempfile::TempDir,
    pub pki: TestPki,
    pub config_path: PathBuf,
    /// `certs.d/127.0.0.1:PORT` with ca.crt, client.cert, client.key for alice.
    pub certs_d: PathBuf,
}

impl TestMirror {
    pub async fn start(options: MirrorOptions) -> TestMirror {
        let root = tempfile::tempdir().expect("tempdir");
        let pki = TestPki::create(root.path());
        TestMirror::start_with_pki(root, pki, options).await
    }

    /// Starts on an existing temp dir and PKI (to restart over the same data).
    pub async fn start_with_pki(
        root: tempfile::TempDir,
        pki: TestPki,
        options: MirrorOptions,
    ) -> TestMirror {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let config_path = root.path().join("mirror.toml");
        let toml = format!(
            r#"listen = "{addr}"
data_dir = "data"

[tls]
cert = "pki/server.crt"
key = "pki/server.key"
client_ca = "pki/ca.crt"
crl = "pki/ca.crl"
client_auth = "{client_auth}"

[limits]
handshake_timeout = "{handshake}"
header_timeout = "{header}"
reload_poll = "{reload_poll}"
body_timeout = "{body_timeout}"
{limits}

{extra}
"#,
            client_auth = options.client_auth,
            handshake = options.handshake_timeout,
            header = options.header_timeout,
            reload_poll = options.reload_poll,
            body_timeout = options.body_timeout,
            limits = options.limits,
            extra = with_auth_section(&without_default_upstream(&options.extra_toml)),
        );
        std::fs::write(&config_path, toml).expect("write config");
        let config = Config::load(&config_path).expect("test config loads");
        let mirror = Mirror::start(config, Some(listener), StartOptions::default())
            .await
            .expect("mirror starts");
        let registry: RegistryHost = addr.to_string().parse().expect("registry host");
        let certs_d_root = root.path().join("certs.d");
        let written =
            CertsDir::write(&certs_d_root, &registry, pki.ca_pem(), &pki.alice).expect("certs.d");
        TestMirror {
            mirror: Some(mirror),
            addr,
            root,
            pki,
            config_path,
            certs_d: written.path,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    pub fn mirror(&self) -> &Mirror {
        self.mirror.as_ref().expect("mirror running")
    }

    /// A client that trusts only the test CA and presents no certificate.
    pub fn anonymous(&self) -> reqwest::Client {
        client_builder(self.pki.ca_pem()).build().expect("client")
    }

    /// A client that presents alice's certificate.
    pub fn with_cert(&self) -> reqwest::Client {
        self.with_identity(&self.pki.alice)
    }

    pub fn with_identity(&self, issued: &IssuedCert) -> reqwest::Client {
        let pem = format!("{}{}", issued.cert_pem, issued.key_pem);
        client_builder(self.pki.ca_pem())
            .identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("identity"))
            .build()
            .expect("client")
    }

    /// The `/metrics` page, fetched with alice's certificate.
    pub async fn metrics(&self) -> String {
        let response = self
            .with_cert()
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(response.status(), 200, "GET /metrics");
        response.text().await.expect("metrics body")
    }

    pub async fn stop(mut self) -> (tempfile::TempDir, TestPki) {
        if let Some(mirror) = self.mirror.take() {
            mirror.shutdown().await;
        }
        (self.root, self.pki)
    }
}

/// A test names the upstreams it uses: without any, it gets none (every
/// repository hosted) rather than the built-in Docker Hub, which is not there.
fn without_default_upstream(extra: &str) -> String {
    if extra.contains("[[registry.upstream]]") {
        extra.to_owned()
    } else if extra.contains("[registry]") {
        extra.replacen("[registry]", "[registry]\nupstream = []", 1)
    } else {
        format!("{extra}\n[registry]\nupstream = []\n")
    }
}

/// Puts `[auth] htpasswd` into the config unless the test wrote its own `[auth]`.
fn with_auth_section(extra: &str) -> String {
    if extra.contains("[auth]") {
        extra.replace("[auth]", "[auth]\nhtpasswd = \"htpasswd\"")
    } else {
        format!("[auth]\nhtpasswd = \"htpasswd\"\n\n{extra}")
    }
}

pub fn client_builder(ca_pem: &str) -> reqwest::ClientBuilder {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA pem");
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(0)
}

/// Polls `condition` until it holds or `deadline` passes; no bare sleeps.
pub async fn wait_for<F, Fut>(what: &str, deadline: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if condition().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
