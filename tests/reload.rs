//! Reloading what the server trusts, without a restart and without dropping
//! the connections that are open.

mod common;

use std::time::Duration;

use common::{MirrorOptions, PASSWORD, TestMirror, USER, wait_for};
use mirror_pki::{Validity, layout};
use reqwest::StatusCode;

/// The serial of the certificate the server presented on this response's connection.
fn served_serial(response: &reqwest::Response) -> String {
    let info = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .expect("tls info");
    let der = info.peer_certificate().expect("server certificate");
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64_lines(der)
    );
    mirror_pki::inspect_pem(pem.as_bytes()).unwrap()[0]
        .serial
        .clone()
}

fn base64_lines(der: &[u8]) -> String {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    text.as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

fn keep_alive_client(server: &TestMirror) -> reqwest::Client {
    common::client_builder(server.pki.ca_pem())
        .pool_max_idle_per_host(4)
        .http1_only()
        .tls_info(true)
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_rotated_server_certificate_reaches_new_connections_while_open_ones_continue() {
    let server = TestMirror::start(MirrorOptions::default()).await;
    let kept = keep_alive_client(&server);
    let before = kept.get(server.url("/healthz")).send().await.unwrap();
    let old_serial = served_serial(&before);
    before.bytes().await.unwrap();

    let rotated = server
        .pki
        .pki
        .issue_server(&["127.0.0.1".into(), "localhost".into()], Validity::Days(1))
        .unwrap();
    server.mirror().reload().unwrap();

    // The kept-alive connection still works (and still shows the old certificate).
    let again = kept.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(
        served_serial(&again),
        old_serial,
        "the open connection was not replaced"
    );

    let fresh = keep_alive_client(&server)
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(served_serial(&fresh), rotated.serial);
    server.stop().await;
}

#[tokio::test]
async fn a_failed_reload_keeps_the_previous_configuration() {
    let server = TestMirror::start(MirrorOptions::default()).await;
    let key = server.pki.pki.path(layout::SERVER_KEY);
    let good_key = std::fs::read(&key).unwrap();
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let error = server.mirror().reload().unwrap_err().to_string();
    assert!(
        error.contains("server.key"),
        "the error names the file: {error}"
    );
    let response = server
        .with_cert()
        .get(server.url("/v2/"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    std::fs::write(&key, good_key).unwrap();
    server.mirror().reload().unwrap();
    server.stop().await;
}

#[tokio::test]
async fn htpasswd_changes_apply_on_reload_and_clear_cached_passwords() {
    let server = TestMirror::start(MirrorOptions::default()).await;
    let status = |user: &'static str, password: &'static str| {
        let client = server.anonymous();
        let url = server.url("/v2/");
        async move {
            client
                .get(url)
                .basic_auth(user, Some(password))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(status(USER, PASSWORD).await, StatusCode::OK);
    assert_eq!(status("bob", "bob-pw").await, StatusCode::UNAUTHORIZED);
    let hash = bcrypt::hash("bob-pw", 4).unwrap();
    std::fs::write(&server.pki.htpasswd, format!("bob:{hash}\n")).unwrap();
    server.mirror().reload().unwrap();
    assert_eq!(status("bob", "bob-pw").await, StatusCode::OK);
    assert_eq!(
        status(USER, PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "alice's cached login is gone"
    );
    server.stop().await;
}

#[tokio::test]
async fn changed_files_are_picked_up_without_a_signal() {
    let server = TestMirror::start(MirrorOptions {
        reload_poll: "100ms",
        ..MirrorOptions::default()
    })
    .await;
    assert_eq!(
        server
            .with_cert()
            .get(server.url("/v2/"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    server.pki.pki.revoke(USER).unwrap();
    wait_for(
        "the new CRL to be enforced",
        Duration::from_secs(10),
        || {
            let request = server.with_cert().get(server.url("/v2/")).send();
            async move { request.await.is_err() }
        },
    )
    .await;
    server.stop().await;
}
