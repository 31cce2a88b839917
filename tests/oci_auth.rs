//! Upstream authentication: Basic with configured credentials, and the Bearer
//! token challenge against a real token-auth docker-registry, tokens cached.
//! The client's own `Authorization` never reaches upstream.

mod common;

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::process::{run, text, tool};
use common::registry::layout::{Built, Layout};
use common::registry::proxy::Proxy;
use common::registry::token::TokenIssuer;
use common::registry::{Auth, DockerRegistry, UPSTREAM_PASSWORD, UPSTREAM_USER};
use common::{MirrorOptions, PASSWORD, TestMirror, USER};

fn seed(registry: &DockerRegistry, dir: &std::path::Path) -> Built {
    let mut layout = Layout::new(dir);
    let image = layout.image("amd64", &[(51, 5000), (52, 70_000)]);
    layout.tag("img", &image);
    let creds = format!("{UPSTREAM_USER}:{UPSTREAM_PASSWORD}");
    layout.push(
        "img",
        &format!("{}/team/private:v1", registry.addr),
        &["--dest-creds", &creds],
    );
    image
}

fn options(url: &str, password: &str) -> MirrorOptions {
    MirrorOptions {
        extra_toml: format!(
            "[[registry.upstream]]\nname = \"auth.test\"\nurl = \"{url}\"\nusername = \"{UPSTREAM_USER}\"\npassword = \"{password}\"\ntag_ttl = \"0s\"\n"
        ),
        ..MirrorOptions::default()
    }
}

/// skopeo copy through the mirror (client certificate); returns the pulled manifest digest.
fn pull(mirror: &TestMirror, out: &std::path::Path) -> String {
    std::fs::create_dir_all(out).unwrap();
    let certs = mirror.certs_d.display().to_string();
    let mut command = Command::new(tool("skopeo"));
    command
        .args(["--insecure-policy", "copy", "--src-cert-dir", &certs])
        .arg(format!(
            "docker://{}/auth.test/team/private:v1",
            mirror.host_port()
        ))
        .arg(format!("oci:{}:t", out.display()));
    let output = run(&mut command, Duration::from_secs(120));
    assert!(output.status.success(), "pull: {}", text(&output));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"].as_str().unwrap().to_owned()
}

/// What a client that logs in to the mirror sends with every request.
fn client_authorization() -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_htpasswd_upstream_is_pulled_with_the_configured_basic_credentials() {
    let registry = DockerRegistry::start(Auth::Htpasswd);
    let work = tempfile::tempdir().unwrap();
    let image = seed(&registry, &work.path().join("layout"));
    let proxy = Proxy::start(&registry.url()).await;
    let mirror = TestMirror::start(options(&proxy.url(), UPSTREAM_PASSWORD)).await;

    assert_eq!(pull(&mirror, &work.path().join("pull")), image.digest);
    // A client that logged in to the mirror: its credentials stay here.
    let response = mirror
        .anonymous()
        .get(mirror.url(&format!(
            "/v2/auth.test/team/private/blobs/{}",
            image.layers[0].digest
        )))
        .header("authorization", client_authorization())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mirror_basic = {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{UPSTREAM_USER}:{UPSTREAM_PASSWORD}"))
        )
    };
    let seen = proxy.seen();
    assert!(!seen.is_empty());
    for request in &seen {
        assert!(
            request.authorization.is_none()
                || request.authorization.as_deref() == Some(mirror_basic.as_str()),
            "upstream saw {:?} on {}",
            request.authorization,
            request.path
        );
    }
    mirror.stop().await;

    // Wrong credentials: the client hears that upstream refused, in OCI form.
    let mirror = TestMirror::start(options(&registry.url(), "wrong-password")).await;
    let response = mirror
        .with_cert()
        .get(mirror.url("/v2/auth.test/team/private/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED", "{body}");
    mirror.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_auth_upstream_is_pulled_with_bearer_tokens_fetched_once_and_cached() {
    let issuer = TokenIssuer::start(UPSTREAM_USER, UPSTREAM_PASSWORD).await;
    let registry = DockerRegistry::start(Auth::Token(&issuer));
    let work = tempfile::tempdir().unwrap();
    let image = seed(&registry, &work.path().join("layout"));
    let proxy = Proxy::start(&registry.url()).await;
    let mirror = TestMirror::start(options(&proxy.url(), UPSTREAM_PASSWORD)).await;

    let before = issuer.issued.load(Ordering::SeqCst);
    assert_eq!(pull(&mirror, &work.path().join("first")), image.digest);
    assert_eq!(
        issuer.issued.load(Ordering::SeqCst) - before,
        1,
        "one token for the repository's pull scope"
    );
    // Again, with the tag revalidated upstream (tag_ttl = 0s): the cached token is reused.
    proxy.clear();
    assert_eq!(pull(&mirror, &work.path().join("second")), image.digest);
    assert_eq!(issuer.issued.load(Ordering::SeqCst) - before, 1);
    let seen = proxy.seen();
    assert!(!seen.is_empty(), "the tag was revalidated upstream");
    for request in &seen {
        let authorization = request.authorization.as_deref().unwrap_or("");
        assert!(
            authorization.starts_with("Bearer "),
            "{} sent {authorization:?}",
            request.path
        );
    }
    mirror.stop().await;
}
