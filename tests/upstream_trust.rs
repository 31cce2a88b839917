//! What an upstream may make the mirror do, tried with hostile upstreams
//! written here (`hostile`): redirects are followed only to https (plain http
//! only inside a plain-http loopback upstream), never carry the upstream's
//! credentials to another host, and never lead into a network the upstream is
//! not on (`netns`: a network namespace with public, private and loopback
//! addresses and names); token realms get the configured credentials only on
//! the upstream's own host or a host in `token_realms`, over https.

mod common;
#[path = "upstream_trust/hostile.rs"]
mod hostile;
#[path = "upstream_trust/namespace.rs"]
mod namespace;
#[path = "upstream_trust/netns.rs"]
mod netns;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use common::{MirrorOptions, TestMirror};
use hostile::{Content, Hostile, Reply, TestCa, handler};
use reqwest::StatusCode;

pub const SUMDB: &str = "sum.hostile.test";
const UPSTREAM_USER: &str = "mirror-bot";
const UPSTREAM_PASSWORD: &str = "hostile-upstream-pw";

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// The config for the Go upstream `go_url`, a checksum database at
/// `url`/sumdb and the registry upstream `up.test` at `url`, all trusting `ca`.
pub fn upstream_toml(go_url: &str, url: &str, ca: Option<&Path>, registry_extra: &str) -> String {
    let ca_line = ca.map_or(String::new(), |ca| format!("ca = \"{}\"\n", ca.display()));
    format!(
        "[go]\nupstream = \"{go_url}\"\nverify = \"off\"  # about upstream trust, not checksums\n{ca_line}\n[[go.sumdb]]\nname = \"{SUMDB}\"\nurl = \"{url}/sumdb\"\n\n\
         [[registry.upstream]]\nname = \"up.test\"\nurl = \"{url}\"\n{ca_line}{registry_extra}\n"
    )
}

/// Every kind of upstream request the mirror makes: Go list/info/mod/zip, a
/// sumdb lookup, an OCI manifest and both blobs.
pub fn every_path(content: &Content) -> Vec<String> {
    let go = format!("/{}/@v", hostile::MODULE);
    let v = hostile::VERSION;
    let oci = format!("/v2/up.test/{}", hostile::REPO);
    vec![
        format!("{go}/list"),
        format!("{go}/{v}.info"),
        format!("{go}/{v}.mod"),
        format!("{go}/{v}.zip"),
        format!("/sumdb/{SUMDB}/lookup/{}@{v}", hostile::MODULE),
        format!("{oci}/manifests/{}", hostile::TAG),
        format!("{oci}/blobs/{}", hostile::sha256(&content.config)),
        format!("{oci}/blobs/{}", hostile::sha256(&content.layer)),
    ]
}

/// GETs `path` from the mirror as its clients do: Go paths with Basic auth,
/// `/v2/` with alice's certificate.
pub async fn get(mirror: &TestMirror, path: &str) -> (StatusCode, Bytes) {
    let request = if path.starts_with("/v2/") {
        mirror
            .with_cert()
            .get(mirror.url(path))
            .header("accept", hostile::OCI_MANIFEST)
    } else {
        mirror
            .anonymous()
            .get(mirror.url(path))
            .basic_auth(common::USER, Some(common::PASSWORD))
    };
    let response = request.send().await.expect("request to the mirror");
    let status = response.status();
    (status, response.bytes().await.unwrap_or_default())
}

/// The bytes an honest upstream has for a mirror path.
pub fn expected(content: &Content, path: &str) -> Bytes {
    match content.serve(path.trim_start_matches("/v2/up.test")) {
        Some(Reply::Content(_, bytes)) => bytes,
        _ => panic!("no content for {path}"),
    }
}

pub fn temp_ca() -> (TestCa, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new();
    let path = dir.path().join("hostile-ca.pem");
    ca.write_pem(&path);
    (ca, dir, path)
}

async fn mirror_with(toml: String) -> TestMirror {
    TestMirror::start(MirrorOptions {
        extra_toml: toml,
        ..MirrorOptions::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_is_never_followed_to_plain_http() {
    let content = Arc::new(Content::new());
    let served = content.clone();
    let sink = Hostile::http(
        "127.0.0.1:0",
        handler(move |seen| served.serve(&seen.path).unwrap_or(Reply::Status(404))),
    )
    .await;
    let (ca, _dir, ca_file) = temp_ca();
    let sink_url = sink.url();
    let upstream = Hostile::https(
        "127.0.0.1:0",
        ca.server_config(&["127.0.0.1"]),
        handler(move |seen| Reply::Redirect(format!("{sink_url}{}", seen.path))),
    )
    .await;
    let url = upstream.url();
    let mirror = mirror_with(upstream_toml(&url, &url, Some(&ca_file), "")).await;

    for path in every_path(&content) {
        let (status, _) = get(&mirror, &path).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{path}");
    }
    assert!(
        upstream.seen().len() >= every_path(&content).len(),
        "every path asked the upstream: {:?}",
        upstream.seen()
    );
    assert!(
        sink.seen().is_empty(),
        "plain http got requests: {:?}",
        sink.seen()
    );
}

/// An upstream that demands Basic credentials and sends blob and zip GETs to
/// `storage` (`/first/…`), which bounces them once more on its own host
/// (`/second/…`) before serving: the shape that leaks credentials when a
/// redirect follower re-sends the original headers.
async fn storage_pair(content: Arc<Content>) -> (Hostile, Hostile) {
    let served = content.clone();
    let storage_url = Arc::new(Mutex::new(String::new()));
    let bounce = storage_url.clone();
    let storage = Hostile::http(
        "127.0.0.1:0",
        handler(move |seen| match seen.path.strip_prefix("/first") {
            Some(rest) => Reply::Redirect(format!("{}/second{rest}", bounce.lock().unwrap())),
            None => served
                .serve(seen.path.trim_start_matches("/second"))
                .unwrap_or(Reply::Status(404)),
        }),
    )
    .await;
    *storage_url.lock().unwrap() = storage.url();
    let to_storage = storage.url();
    let expected = basic(UPSTREAM_USER, UPSTREAM_PASSWORD);
    let upstream = Hostile::http(
        "127.0.0.1:0",
        handler(move |seen| {
            if seen.authorization.as_deref() != Some(expected.as_str()) {
                return Reply::Challenge("Basic realm=\"hostile\"".into());
            }
            let big = seen.path.contains("/blobs/") || seen.path.ends_with(".zip");
            match content.serve(&seen.path) {
                Some(_) if big => Reply::Redirect(format!("{to_storage}/first{}", seen.path)),
                Some(reply) => reply,
                None => Reply::Status(404),
            }
        }),
    )
    .await;
    (upstream, storage)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_follow_a_redirect_to_another_host_and_storage_redirects_still_work() {
    let content = Arc::new(Content::new());
    let (upstream, storage) = storage_pair(content.clone()).await;
    let go_url = upstream.url().replace(
        "http://",
        &format!("http://{UPSTREAM_USER}:{UPSTREAM_PASSWORD}@"),
    );
    let toml = format!(
        "[go]\nupstream = \"{go_url}\"\nverify = \"off\"  # about upstream trust, not checksums\n\n[[registry.upstream]]\nname = \"up.test\"\nurl = \"{}\"\n\
         username = \"{UPSTREAM_USER}\"\npassword = \"{UPSTREAM_PASSWORD}\"\n",
        upstream.url()
    );
    let mirror = mirror_with(toml).await;

    let zip = format!("/{}/@v/{}.zip", hostile::MODULE, hostile::VERSION);
    let oci = format!("/v2/up.test/{}/blobs", hostile::REPO);
    let layer = format!("{oci}/{}", hostile::sha256(&content.layer));
    let config = format!("{oci}/{}", hostile::sha256(&content.config));
    for path in [&zip, &layer, &config] {
        let (status, body) = get(&mirror, path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body:?}");
        assert_eq!(body, expected(&content, path), "{path}");
    }
    let at_storage = storage.seen();
    assert_eq!(
        at_storage.len(),
        6,
        "two hops for each of three files: {at_storage:?}"
    );
    for seen in &at_storage {
        assert_eq!(
            seen.authorization, None,
            "storage got a credential: {seen:?}"
        );
    }
    let credentialed = upstream
        .seen()
        .iter()
        .filter(|s| s.authorization.is_some())
        .count();
    assert!(credentialed >= 3, "the upstream itself got the credentials");
}

/// Everything the mirror logs at WARN and above, for the whole test binary.
fn logs() -> &'static Capture {
    static LOGS: OnceLock<Capture> = OnceLock::new();
    LOGS.get_or_init(|| {
        let capture = Capture::default();
        let _ = tracing_subscriber::fmt()
            .with_writer(capture.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .try_init();
        capture
    })
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn lines_with(&self, needles: &[&str]) -> usize {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        text.lines()
            .filter(|line| needles.iter().all(|n| line.contains(n)))
            .count()
    }
}

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

/// A token service that hands out `TOKEN` to anyone, recording who asked.
async fn issuer(tls: Option<Arc<rustls::ServerConfig>>) -> Hostile {
    let token = handler(|_| {
        Reply::Content(
            "application/json",
            Bytes::from_static(br#"{"token":"hostile-token","expires_in":300}"#),
        )
    });
    match tls {
        Some(tls) => Hostile::https("127.0.0.1:0", tls, token).await,
        None => Hostile::http("127.0.0.1:0", token).await,
    }
}

/// A registry on 127.0.0.1 that serves `Content` to `Bearer hostile-token`
/// and challenges everyone else with `realm`.
async fn challenging_registry(content: Arc<Content>, realm: String) -> Hostile {
    Hostile::http(
        "127.0.0.1:0",
        handler(move |seen| {
            if seen.authorization.as_deref() == Some("Bearer hostile-token") {
                content.serve(&seen.path).unwrap_or(Reply::Status(404))
            } else {
                Reply::Challenge(format!(
                    "Bearer realm=\"{realm}\",service=\"hostile\",scope=\"repository:{}:pull\"",
                    hostile::REPO
                ))
            }
        }),
    )
    .await
}

fn registry_toml(name: &str, url: &str, extra: &str) -> String {
    format!("[[registry.upstream]]\nname = \"{name}\"\nurl = \"{url}\"\n{extra}\n")
}

fn credentials_toml(extra: &str) -> String {
    format!("username = \"{UPSTREAM_USER}\"\npassword = \"{UPSTREAM_PASSWORD}\"\n{extra}")
}

fn manifest_path(upstream: &str) -> String {
    format!(
        "/v2/{upstream}/{}/manifests/{}",
        hostile::REPO,
        hostile::TAG
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_credentials_never_go_to_a_realm_elsewhere_or_over_plain_http() {
    let logs = logs();
    let content = Arc::new(Content::new());
    let (ca, _dir, ca_file) = temp_ca();
    // "localhost" is another host than the registries' 127.0.0.1.
    let tls_issuer = issuer(Some(ca.server_config(&["localhost"]))).await;
    let plain_issuer = issuer(None).await;
    let elsewhere = format!("{}/token", tls_issuer.url_as("localhost"));
    let cleartext = format!("{}/token", plain_issuer.url_as("localhost"));
    let to_elsewhere = challenging_registry(content.clone(), elsewhere.clone()).await;
    let to_cleartext = challenging_registry(content.clone(), cleartext).await;
    let ca_line = format!("ca = \"{}\"\n", ca_file.display());
    let toml = registry_toml(
        "elsewhere.test",
        &to_elsewhere.url(),
        &credentials_toml(&ca_line),
    ) + &registry_toml("cleartext.test", &to_cleartext.url(), &credentials_toml(""));
    let mirror = mirror_with(toml).await;

    for _ in 0..3 {
        for upstream in ["elsewhere.test", "cleartext.test"] {
            let (status, body) = get(&mirror, &manifest_path(upstream)).await;
            assert_eq!(status, StatusCode::BAD_GATEWAY, "{upstream}: {body:?}");
        }
    }
    assert!(
        tls_issuer.seen().is_empty(),
        "a realm on another host got a request: {:?}",
        tls_issuer.seen()
    );
    assert!(
        plain_issuer.seen().is_empty(),
        "a plain-http realm got a request: {:?}",
        plain_issuer.seen()
    );
    let refusal = "refusing the upstream's token realm";
    let port = format!(":{}/token", tls_issuer.addr.port());
    assert_eq!(
        logs.lines_with(&[refusal, "elsewhere.test", &port]),
        1,
        "logged once per upstream and realm, not per request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_realm_host_in_token_realms_gets_the_credentials_over_https() {
    let content = Arc::new(Content::new());
    let (ca, _dir, ca_file) = temp_ca();
    let tls_issuer = issuer(Some(ca.server_config(&["localhost"]))).await;
    let realm = format!("{}/token", tls_issuer.url_as("localhost"));
    let registry = challenging_registry(content.clone(), realm).await;
    let extra = format!(
        "ca = \"{}\"\ntoken_realms = [\"localhost\"]\n",
        ca_file.display()
    );
    let mirror = mirror_with(registry_toml(
        "listed.test",
        &registry.url(),
        &credentials_toml(&extra),
    ))
    .await;

    let path = manifest_path("listed.test");
    let (status, body) = get(&mirror, &path).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    assert_eq!(body, content.manifest);
    let asked = tls_issuer.seen();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(
        asked[0].authorization.as_deref(),
        Some(basic(UPSTREAM_USER, UPSTREAM_PASSWORD).as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_token_requests_go_to_any_https_realm_but_never_to_plain_http_elsewhere() {
    let content = Arc::new(Content::new());
    let (ca, _dir, ca_file) = temp_ca();
    let tls_issuer = issuer(Some(ca.server_config(&["localhost"]))).await;
    let plain_issuer = issuer(None).await;
    let https_realm = format!("{}/token", tls_issuer.url_as("localhost"));
    let http_realm = format!("{}/token", plain_issuer.url_as("localhost"));
    let to_https = challenging_registry(content.clone(), https_realm).await;
    let to_http = challenging_registry(content.clone(), http_realm).await;
    let ca_line = format!("ca = \"{}\"\n", ca_file.display());
    let toml = registry_toml("anon-https.test", &to_https.url(), &ca_line)
        + &registry_toml("anon-http.test", &to_http.url(), "");
    let mirror = mirror_with(toml).await;

    let (status, body) = get(&mirror, &manifest_path("anon-https.test")).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    assert_eq!(tls_issuer.seen().len(), 1);
    assert_eq!(tls_issuer.seen()[0].authorization, None);
    let (status, body) = get(&mirror, &manifest_path("anon-http.test")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body:?}");
    assert!(plain_issuer.seen().is_empty(), "{:?}", plain_issuer.seen());
}
