//! What the dispatcher promises for every route: a HEAD answers as a GET
//! would, without a body, over HTTP/1.1 and HTTP/2 alike; `/readyz` tells a
//! load balancer whether this instance can serve, anonymously.

mod common;

use std::time::Duration;

use common::process::{run, text, tool};
use common::{MirrorOptions, TestMirror, client_builder};
use reqwest::{Method, StatusCode, Version};

const ZERO: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// Routes whose HEAD is an error (or a page with a body), as
/// (path, with alice's certificate, expected status).
fn error_routes() -> Vec<(String, bool, u16)> {
    let mut routes: Vec<(String, bool, u16)> = vec![
        // Go: unauthenticated, malformed, private, upstream down, unknown sumdb.
        ("/example.com/m/@v/list".into(), false, 401),
        ("/example.com/m/@v/v1.0.0.info".into(), false, 401),
        ("/example.com/M/@v/list".into(), true, 400),
        ("/example.com/m/@v/not-a-version.zip".into(), true, 404),
        ("/private.example/m/@v/list".into(), true, 404),
        ("/example.com/m/@v/list".into(), true, 502),
        ("/example.com/m/@latest".into(), true, 502),
        ("/sumdb/sum.golang.org/supported".into(), false, 401),
        ("/sumdb/unknown.example/supported".into(), true, 404),
        // OCI: unauthenticated, unsupported, unknown, malformed, upstream down.
        ("/v2/".into(), false, 401),
        ("/v2/hosted/x/manifests/v1".into(), false, 401),
        ("/v2/_catalog".into(), true, 405),
        ("/v2/hosted/x/manifests/v1".into(), true, 404),
        ("/v2/UPPER/manifests/v1".into(), true, 400),
        (format!("/v2/hosted/x/blobs/{ZERO}"), true, 404),
        ("/v2/hosted/x/blobs/sha256:zz".into(), true, 400),
        ("/v2/hosted/x/tags/list".into(), true, 405),
        (format!("/v2/hosted/x/referrers/{ZERO}"), true, 405),
        ("/v2/down.test/x/manifests/v1".into(), true, 503),
        (format!("/v2/down.test/x/blobs/{ZERO}"), true, 503),
        ("/v2/unknown-endpoint".into(), true, 404),
        // Internal pages.
        ("/metrics".into(), false, 401),
        ("/metrics".into(), true, 200),
        ("/healthz".into(), false, 200),
    ];
    routes.push(("/readyz".into(), false, 200));
    routes
}

async fn start() -> TestMirror {
    TestMirror::start(MirrorOptions {
        extra_toml: "[go]\nupstream = \"http://127.0.0.1:9\"\nprivate = [\"private.example\"]\n\
                     verify = \"off\"  # about dispatch, not checksums\n\n\
                     [[registry.upstream]]\nname = \"down.test\"\nurl = \"http://127.0.0.1:9\"\n"
            .into(),
        ..MirrorOptions::default()
    })
    .await
}

fn client(server: &TestMirror, cert: bool, version: Version) -> reqwest::Client {
    let mut builder = client_builder(server.pki.ca_pem());
    if cert {
        let pem = format!("{}{}", server.pki.alice.cert_pem, server.pki.alice.key_pem);
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    match version {
        Version::HTTP_2 => builder.http2_prior_knowledge(),
        _ => builder.http1_only(),
    }
    .build()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_head_without_a_body_over_http1_and_http2() {
    let server = start().await;
    for version in [Version::HTTP_11, Version::HTTP_2] {
        let clients = [
            client(&server, false, version),
            client(&server, true, version),
        ];
        for (path, cert, status) in error_routes() {
            let client = &clients[usize::from(cert)];
            let what = format!("HEAD {path} ({version:?}, cert: {cert})");
            let head = client
                .request(Method::HEAD, server.url(&path))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{what}: {e:?}"));
            assert_eq!(head.version(), version, "{what}");
            assert_eq!(head.status().as_u16(), status, "{what}");
            let length = head
                .headers()
                .get("content-length")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = head
                .bytes()
                .await
                .unwrap_or_else(|e| panic!("{what}: the body failed: {e:?}"));
            assert!(body.is_empty(), "{what}: a body of {} bytes", body.len());

            // The length a HEAD announces is the GET's, where the GET answers alike.
            let get = client.get(server.url(&path)).send().await.unwrap();
            if get.status().as_u16() == status && path != "/metrics" {
                let got = get.bytes().await.unwrap();
                assert_eq!(
                    length.as_deref(),
                    Some(got.len().to_string().as_str()),
                    "{what}: Content-Length against the GET's body"
                );
            }
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_over_http2_accepts_every_error_head() {
    let server = start().await;
    let ca = server.pki.ca_cert().display().to_string();
    let cert = server
        .certs_d
        .join("client.cert")
        .display()
        .to_string()
        .replace(':', "\\:");
    let key = server.certs_d.join("client.key").display().to_string();
    for (path, with_cert, status) in error_routes() {
        let mut command = std::process::Command::new(tool("curl"));
        command.args(["-sS", "--max-time", "20", "--http2", "-I", "--cacert", &ca]);
        if with_cert {
            command.args(["--cert", &cert, "--key", &key]);
        }
        let out = run(command.arg(server.url(&path)), Duration::from_secs(60));
        assert!(
            out.status.success(),
            "curl --http2 -I {path}: {}",
            text(&out)
        );
        let first = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(first.trim_end(), format!("HTTP/2 {status}"), "{path}");
    }
    server.stop().await;
}

async fn readyz(server: &TestMirror) -> (StatusCode, String) {
    let response = server
        .anonymous()
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.text().await.unwrap())
}

/// The body of the first `/readyz` answer with `status` (its verdict may be
/// cached for a moment).
async fn readyz_until(server: &TestMirror, status: StatusCode) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (now, body) = readyz(server).await;
        if now == status {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz still answers {now}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_anonymous_and_names_a_data_dir_it_cannot_write() {
    let server = TestMirror::start(MirrorOptions::default()).await;
    assert_eq!(readyz(&server).await, (StatusCode::OK, "ready\n".into()));

    // As root no mode bit stops a write; a file where tmp/ should be does.
    let tmp = server.root.path().join("data/tmp");
    let moved = server.root.path().join("tmp-moved");
    std::fs::rename(&tmp, &moved).unwrap();
    std::fs::write(&tmp, "not a folder").unwrap();
    let seen = readyz_until(&server, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        seen.starts_with("not ready: ") && seen.contains("data_dir") && seen.contains("tmp"),
        "{seen}"
    );
    std::fs::remove_file(&tmp).unwrap();
    std::fs::rename(&moved, &tmp).unwrap();
    assert_eq!(readyz_until(&server, StatusCode::OK).await, "ready\n");
    let healthz = server
        .anonymous()
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), StatusCode::OK, "/healthz stays liveness");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_an_index_that_does_not_answer() {
    let server = TestMirror::start(MirrorOptions::default()).await;
    assert_eq!(readyz(&server).await.0, StatusCode::OK);
    server.mirror().store().close().await;
    let seen = readyz_until(&server, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(seen.contains("index"), "{seen}");
    let healthz = server
        .anonymous()
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), StatusCode::OK, "/healthz stays liveness");
    server.stop().await;
}

/// The accept loop is what `/readyz` asks about the listener. The real binary
/// is run so its file limit can be lowered (`prlimit`) without touching the
/// test process: new connections then fail in `accept` with EMFILE, while a
/// connection opened before keeps asking.
#[test]
fn readyz_names_a_listener_that_cannot_accept() {
    use common::process::{Guard, free_port, mirror_bin};
    use common::raw_tls::RawH1;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let mut server = Guard::spawn(
        "mirror serve",
        std::process::Command::new(mirror_bin())
            .current_dir(dir.path())
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(log),
    );
    server.wait_for_port(&format!("127.0.0.1:{port}"), Duration::from_secs(60));
    let mut kept = RawH1::connect(port, &dir.path().join("mirror-data/pki/ca.crt"));
    assert_eq!(kept.get("/readyz", &[]), (200, "ready\n".into()));

    let limit = |soft: &str| {
        let out = run(
            std::process::Command::new(tool("prlimit")).args([
                "--pid",
                &server.pid().to_string(),
                &format!("--nofile={soft}:"),
            ]),
            Duration::from_secs(20),
        );
        assert!(out.status.success(), "{}", text(&out));
    };
    // Descriptors 0-2 are taken, so no new one can be made.
    limit("3");
    let _waiting = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let answer = loop {
        let (status, body) = kept.get("/readyz", &[]);
        if status == 503 && body.contains("listener") {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "{status} {body}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(answer.starts_with("not ready: "), "{answer}");
    limit("4096");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while kept.get("/readyz", &[]).0 != 200 {
        assert!(std::time::Instant::now() < deadline, "not ready again");
        std::thread::sleep(Duration::from_millis(50));
    }
}
