//! Reloading what the server trusts, without a restart: open connections keep
//! working, except those whose client certificate the reload no longer trusts.

mod common;

use std::time::Duration;

use common::{MirrorOptions, PASSWORD, TestMirror, USER, process, raw, wait_for};
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

const LOCAL: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// A kept-alive HTTP/1.1 connection that presents `issued`.
async fn h1_with(
    server: &TestMirror,
    issued: &mirror_pki::IssuedCert,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let config = raw::client_config(server.pki.ca_pem(), raw::pems(issued), raw::H1);
    raw::tls_from(LOCAL, server.addr, config).await.unwrap()
}

async fn h2_with(server: &TestMirror, issued: &mirror_pki::IssuedCert) -> raw::H2Conn {
    let config = raw::client_config(server.pki.ca_pem(), raw::pems(issued), raw::H2);
    let tls = raw::tls_from(LOCAL, server.addr, config).await.unwrap();
    raw::h2_handshake(tls, h2::client::Builder::new()).await
}

/// Asserts the refusal a no-longer-trusted certificate gets: 401, OCI JSON on
/// `/v2/`, plain text elsewhere.
fn assert_refused(path: &str, status: u16, body: &[u8]) {
    assert_eq!(status, 401, "{path}: {}", String::from_utf8_lossy(body));
    if path.starts_with("/v2/") {
        let json: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(json["errors"][0]["code"], "UNAUTHORIZED", "{json}");
    } else {
        let text = String::from_utf8_lossy(body);
        assert!(text.contains("certificate"), "{path}: {text}");
    }
}

/// Makes alice's certificate untrusted in one of the ways a reload can.
#[derive(Clone, Copy, Debug)]
enum Distrust {
    Revoke,
    ReplaceCa,
}

fn distrust(server: &TestMirror, how: Distrust) {
    match how {
        Distrust::Revoke => {
            server.pki.pki.revoke(USER).unwrap();
        }
        Distrust::ReplaceCa => {
            let other = tempfile::tempdir().unwrap();
            let foreign =
                mirror_pki::Pki::init(other.path(), &mirror_pki::CaOptions::default()).unwrap();
            std::fs::write(server.pki.ca_cert(), foreign.ca_cert_pem()).unwrap();
        }
    }
    server.mirror().reload().unwrap();
}

#[tokio::test]
async fn after_a_reload_an_open_http1_connection_of_a_distrusted_certificate_is_refused_and_closed()
{
    for how in [Distrust::Revoke, Distrust::ReplaceCa] {
        for path in ["/v2/", "/example.com/m/@v/list"] {
            let server = TestMirror::start(MirrorOptions::default()).await;
            let mut conn = h1_with(&server, &server.pki.alice).await;
            let before = raw::h1_get(&mut conn, "/v2/", "").await.unwrap();
            assert_eq!(before.status, 200, "{how:?}: {}", before.head);

            distrust(&server, how);
            let after = raw::h1_get(&mut conn, path, "").await.unwrap();
            assert_refused(path, after.status, &after.body);
            assert_eq!(after.header("connection"), Some("close"), "{}", after.head);
            assert!(
                raw::closed_within(&mut conn, Duration::from_secs(5)).await,
                "{how:?} {path}: the connection stayed open"
            );
            server.stop().await;
        }
    }
}

#[tokio::test]
async fn after_a_reload_an_open_http2_connection_of_a_distrusted_certificate_is_refused_and_closed()
{
    for how in [Distrust::Revoke, Distrust::ReplaceCa] {
        let server = TestMirror::start(MirrorOptions::default()).await;
        let mut conn = h2_with(&server, &server.pki.alice).await;
        let (status, _) = raw::h2_get(&mut conn.send, "/v2/", None).await.unwrap();
        assert_eq!(status, 200, "{how:?}");

        distrust(&server, how);
        let (status, body) = raw::h2_get(&mut conn.send, "/v2/", None).await.unwrap();
        assert_refused("/v2/", status, &body);
        let ended = tokio::time::timeout(Duration::from_secs(10), &mut conn.driver).await;
        assert!(ended.is_ok(), "{how:?}: the HTTP/2 connection stayed open");
        let again = raw::h2_get(&mut conn.send, "/v2/", None).await;
        assert!(again.is_err(), "{how:?}: served after the close: {again:?}");
        server.stop().await;
    }
}

#[tokio::test]
async fn other_open_connections_are_unaffected_by_a_revocation() {
    let server = TestMirror::start(MirrorOptions::default()).await;
    let bob = server
        .pki
        .pki
        .issue_client("bob", Validity::Days(1))
        .unwrap();
    let mut bobs = h1_with(&server, &bob).await;
    assert_eq!(
        raw::h1_get(&mut bobs, "/v2/", "").await.unwrap().status,
        200
    );
    distrust(&server, Distrust::Revoke);
    for _ in 0..3 {
        let response = raw::h1_get(&mut bobs, "/v2/", "").await.unwrap();
        assert_eq!(response.status, 200, "{}", response.head);
        assert_eq!(response.header("connection"), None, "{}", response.head);
    }
    server.stop().await;
}

/// Runs `mirror` (the real binary) in `dir` and asserts it succeeded.
fn mirror_cli(dir: &std::path::Path, args: &[&str]) {
    let output = process::run(
        std::process::Command::new(process::mirror_bin())
            .current_dir(dir)
            .args(args),
        Duration::from_secs(60),
    );
    assert!(output.status.success(), "{}", process::text(&output));
}

#[tokio::test]
async fn pki_revoke_and_sighup_refuse_the_next_request_on_an_open_connection() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = process::free_port();
    let registry = format!("127.0.0.1:{port}");
    mirror_cli(d, &["pki", "init", "--dir", "pki"]);
    mirror_cli(
        d,
        &["pki", "issue-server", "--dir", "pki", "--san", "127.0.0.1"],
    );
    mirror_cli(
        d,
        &[
            "pki",
            "issue-client",
            USER,
            "--dir",
            "pki",
            "--registry",
            &registry,
            "--out",
            "certs",
        ],
    );
    std::fs::write(
        d.join("mirror.toml"),
        format!(
            "listen = \"{registry}\"\ndata_dir = \"data\"\n\n[tls]\ncert = \"pki/server.crt\"\n\
             key = \"pki/server.key\"\nclient_ca = \"pki/ca.crt\"\ncrl = \"pki/ca.crl\"\n\
             client_auth = \"required\"\n\n[limits]\nreload_poll = \"1h\"\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(d.join("serve.log")).unwrap();
    let mut server = process::Guard::spawn(
        "mirror serve",
        std::process::Command::new(process::mirror_bin())
            .current_dir(d)
            .args(["serve", "--config", "mirror.toml"])
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(log),
    );
    server.wait_for_port(&registry, Duration::from_secs(60));

    let certs = d.join("certs").join(&registry);
    let read = |name: &str| std::fs::read_to_string(certs.join(name)).unwrap();
    let (ca, cert, key) = (read("ca.crt"), read("client.cert"), read("client.key"));
    let config = raw::client_config(&ca, Some((&cert, &key)), raw::H1);
    let mut conn = raw::tls_from(LOCAL, registry.parse().unwrap(), config)
        .await
        .unwrap();
    assert_eq!(
        raw::h1_get(&mut conn, "/v2/", "").await.unwrap().status,
        200
    );

    mirror_cli(d, &["pki", "revoke", USER, "--dir", "pki"]);
    server.signal("HUP");
    let log_path = d.join("serve.log");
    wait_for("the SIGHUP reload", Duration::from_secs(30), || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        async move { log.contains("reloaded") && log.contains("SIGHUP") }
    })
    .await;

    let after = raw::h1_get(&mut conn, "/v2/", "").await.unwrap();
    assert_refused("/v2/", after.status, &after.body);
    assert!(
        raw::closed_within(&mut conn, Duration::from_secs(5)).await,
        "the connection stayed open"
    );
    drop(server);
}
