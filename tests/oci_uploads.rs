//! Push sessions against a hostile or careless writer: one identity cannot
//! take the session table from the others, an idle session holds neither
//! memory nor a file, and a body that stalls is cut off without harming what
//! the session had acknowledged.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{MirrorOptions, TestMirror, wait_for};
use mirror_pki::{IssuedCert, Validity};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const UPLOADS: &str = "/v2/team/app/blobs/uploads/";

/// `team/…` maps to no upstream, so it is hosted.
fn options(registry: &str, body_timeout: &'static str) -> MirrorOptions {
    MirrorOptions {
        extra_toml: format!(
            "[registry]\n{registry}\n\n[[registry.upstream]]\nname = \"up.test\"\nurl = \"http://127.0.0.1:9\"\n"
        ),
        body_timeout,
        ..MirrorOptions::default()
    }
}

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn oci_code(response: reqwest::Response) -> String {
    let body: serde_json::Value = response.json().await.expect("OCI error body");
    body["errors"][0]["code"].as_str().unwrap_or("").to_owned()
}

/// Opens a session; its location.
async fn open_session(mirror: &TestMirror, client: &reqwest::Client) -> String {
    let started = client.post(mirror.url(UPLOADS)).send().await.unwrap();
    assert_eq!(started.status(), 202, "opening a session");
    started.headers()["location"].to_str().unwrap().to_owned()
}

async fn patch(
    mirror: &TestMirror,
    client: &reqwest::Client,
    location: &str,
    start: usize,
    chunk: &[u8],
) -> reqwest::Response {
    client
        .patch(mirror.url(location))
        .header(
            "content-range",
            format!("{start}-{}", start + chunk.len() - 1),
        )
        .body(chunk.to_vec())
        .send()
        .await
        .unwrap()
}

async fn acknowledged(mirror: &TestMirror, client: &reqwest::Client, location: &str) -> String {
    let status = client.get(mirror.url(location)).send().await.unwrap();
    assert_eq!(status.status(), 204, "status of {location}");
    status.headers()["range"].to_str().unwrap().to_owned()
}

async fn finish(
    mirror: &TestMirror,
    client: &reqwest::Client,
    location: &str,
    content: &[u8],
) -> reqwest::Response {
    client
        .put(mirror.url(&format!("{location}?digest={}", sha(content))))
        .send()
        .await
        .unwrap()
}

async fn assert_stored(mirror: &TestMirror, client: &reqwest::Client, content: &[u8]) {
    let got = client
        .get(mirror.url(&format!("/v2/team/app/blobs/{}", sha(content))))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert!(got.bytes().await.unwrap() == content, "stored bytes differ");
}

/// A whole chunked push: POST, two PATCHes, PUT, and the blob reads back.
async fn chunked_push(mirror: &TestMirror, client: &reqwest::Client, content: &[u8]) {
    let location = open_session(mirror, client).await;
    let half = content.len() / 2;
    assert_eq!(
        patch(mirror, client, &location, 0, &content[..half])
            .await
            .status(),
        202
    );
    assert_eq!(
        patch(mirror, client, &location, half, &content[half..])
            .await
            .status(),
        202
    );
    assert_eq!(
        finish(mirror, client, &location, content).await.status(),
        201
    );
    assert_stored(mirror, client, content).await;
}

fn id_of(location: &str) -> &str {
    location.rsplit('/').next().unwrap()
}

/// How many of this process's file descriptors are open on files under `dir`
/// (the test and the server share the process).
fn open_fds_under(dir: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_identity_at_its_session_quota_is_refused_while_another_pushes() {
    let quota = "max_upload_sessions_per_identity = 3";
    let mirror = TestMirror::start(options(quota, "60s")).await;
    let alice = mirror.with_cert();
    let bob_cert = mirror
        .pki
        .pki
        .issue_client("bob", Validity::Days(2))
        .unwrap();
    let bob = mirror.with_identity(&bob_cert);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(open_session(&mirror, &alice).await);
    }

    let refused = alice.post(mirror.url(UPLOADS)).send().await.unwrap();
    assert_eq!(refused.status(), 429, "a session past the quota");
    assert_eq!(oci_code(refused).await, "TOOMANYREQUESTS");
    // A monolithic push needs no session, so the quota does not stop it.
    let small = pattern(5_000, 1);
    let monolithic = alice
        .post(mirror.url(&format!("{UPLOADS}?digest={}", sha(&small))))
        .body(small.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(monolithic.status(), 201);

    chunked_push(&mirror, &bob, &pattern(300_000, 2)).await;

    // Only the identity that opened a session may see, continue or end it.
    let theirs = &held[0];
    let peek = bob.get(mirror.url(theirs)).send().await.unwrap();
    assert_eq!(peek.status(), 404);
    assert_eq!(oci_code(peek).await, "BLOB_UPLOAD_UNKNOWN");
    let push_in = patch(&mirror, &bob, theirs, 0, b"not yours").await;
    assert_eq!(push_in.status(), 404);
    let end = bob.delete(mirror.url(theirs)).send().await.unwrap();
    assert_eq!(end.status(), 404);
    assert_eq!(acknowledged(&mirror, &alice, theirs).await, "0-0");

    // Ending a session frees its place in the quota.
    let ended = alice
        .delete(mirror.url(&held.pop().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), 204);
    held.push(open_session(&mirror, &alice).await);

    // The quota counts the index, so a restart does not reset it.
    let (root, pki) = mirror.stop().await;
    let mirror = TestMirror::start_with_pki(root, pki, options(quota, "60s")).await;
    let alice = mirror.with_cert();
    let refused = alice.post(mirror.url(UPLOADS)).send().await.unwrap();
    assert_eq!(refused.status(), 429, "the quota after a restart");
    let content = pattern(1_000, 3);
    assert_eq!(
        patch(&mirror, &alice, &held[0], 0, &content).await.status(),
        202
    );
    assert_eq!(
        finish(&mirror, &alice, &held[0], &content).await.status(),
        201
    );
    let bob = mirror.with_identity(&bob_cert);
    chunked_push(&mirror, &bob, &pattern(10_000, 4)).await;
    mirror.stop().await;
}

/// Nothing of a session stays open between its requests: twenty half-pushed
/// sessions hold no file descriptor, and each goes on from what the index
/// acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_hold_no_file_and_go_on_from_what_was_acknowledged() {
    let mirror = TestMirror::start(options("", "60s")).await;
    let alice = mirror.with_cert();
    let uploads = mirror.root.path().join("data/uploads");
    let mut sessions = Vec::new();
    for seed in 0..20u8 {
        let location = open_session(&mirror, &alice).await;
        let content = pattern(4_000, seed);
        let patched = patch(&mirror, &alice, &location, 0, &content[..2_000]).await;
        assert_eq!(patched.status(), 202);
        sessions.push((location, content));
    }
    wait_for(
        "no file descriptor on an idle session",
        Duration::from_secs(5),
        || async { open_fds_under(&uploads) == 0 },
    )
    .await;

    for (location, content) in &sessions {
        assert_eq!(acknowledged(&mirror, &alice, location).await, "0-1999");
        let patched = patch(&mirror, &alice, location, 2_000, &content[2_000..]).await;
        assert_eq!(patched.status(), 202);
        assert_eq!(
            finish(&mirror, &alice, location, content).await.status(),
            201
        );
        assert_stored(&mirror, &alice, content).await;
    }
    assert_eq!(open_fds_under(&uploads), 0);
    assert!(std::fs::read_dir(&uploads).unwrap().next().is_none());
    mirror.stop().await;
}

/// A TLS connection speaking HTTP/1.1 with `issued`'s certificate.
async fn tls_connect(
    mirror: &TestMirror,
    issued: &IssuedCert,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(mirror.pki.ca_pem().as_bytes()).unwrap())
        .unwrap();
    let chain = CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(mirror.addr).await.unwrap();
    connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap()
}

/// Everything the server sends until it closes, within `limit`.
async fn read_until_closed(
    stream: &mut (impl AsyncReadExt + Unpin),
    limit: Duration,
    what: &str,
) -> String {
    let mut received = Vec::new();
    let read = tokio::time::timeout(limit, stream.read_to_end(&mut received)).await;
    assert!(
        read.is_ok(),
        "{what}: the server neither answered nor closed within {limit:?} (got {:?})",
        String::from_utf8_lossy(&received)
    );
    String::from_utf8_lossy(&received).into_owned()
}

/// A body that sends `first` and then nothing, forever.
fn stalling_body(first: Vec<u8>) -> reqwest::Body {
    use futures_util::StreamExt;
    let first = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(first))]);
    reqwest::Body::wrap_stream(first.chain(futures_util::stream::pending()))
}

/// Sends `request` (whose body stalls) and expects the server to cut it off
/// with 408 within the body timeout and a margin.
async fn cut_off(request: reqwest::RequestBuilder, what: &str) {
    let limit = Duration::from_secs(1) + Duration::from_secs(10);
    let response = tokio::time::timeout(limit, request.send())
        .await
        .unwrap_or_else(|_| panic!("{what}: a stalled body was not cut off within {limit:?}"))
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2, "{what}");
    assert_eq!(response.status(), 408, "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_chunk_is_cut_off_and_the_session_keeps_what_was_acknowledged() {
    let mirror = TestMirror::start(options("", "1s")).await;
    let alice = mirror.with_cert();
    let content = pattern(3_000, 7);
    let location = open_session(&mirror, &alice).await;
    assert_eq!(
        patch(&mirror, &alice, &location, 0, &content[..1_000])
            .await
            .status(),
        202
    );

    // HTTP/1.1: headers announce 1000 bytes, 300 come, then nothing.
    let mut tls = tls_connect(&mirror, &mirror.pki.alice).await;
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\n\
         Content-Range: 1000-1999\r\nContent-Length: 1000\r\n\r\n",
        mirror.host_port()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&content[1_000..1_300]).await.unwrap();
    tls.flush().await.unwrap();
    let started = Instant::now();
    let answer = read_until_closed(&mut tls, Duration::from_secs(11), "a stalled PATCH").await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "cut off before the body timeout"
    );
    let file = mirror
        .root
        .path()
        .join("data/uploads")
        .join(id_of(&location));
    assert_eq!(
        std::fs::metadata(&file).unwrap().len(),
        1_000,
        "the stalled chunk's bytes are dropped"
    );
    assert_eq!(acknowledged(&mirror, &alice, &location).await, "0-999");

    // HTTP/2: a chunk, and a closing PUT with a body, each stalled.
    cut_off(
        alice
            .patch(mirror.url(&location))
            .header("content-range", "1000-1999")
            .body(stalling_body(content[1_000..1_500].to_vec())),
        "a stalled PATCH over HTTP/2",
    )
    .await;
    assert_eq!(acknowledged(&mirror, &alice, &location).await, "0-999");
    cut_off(
        alice
            .put(mirror.url(&format!("{location}?digest={}", sha(&content[..2_000]))))
            .body(stalling_body(content[1_000..1_500].to_vec())),
        "a stalled closing PUT",
    )
    .await;
    assert_eq!(acknowledged(&mirror, &alice, &location).await, "0-999");

    // The session goes on from what it had acknowledged.
    let patched = patch(&mirror, &alice, &location, 1_000, &content[1_000..]).await;
    assert_eq!(patched.status(), 202);
    assert_eq!(patched.headers()["range"], "0-2999");
    assert_eq!(
        finish(&mirror, &alice, &location, &content).await.status(),
        201
    );
    assert_stored(&mirror, &alice, &content).await;
    mirror.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_monolithic_and_manifest_pushes_are_cut_off_and_store_nothing() {
    let mirror = TestMirror::start(options("", "1s")).await;
    let alice = mirror.with_cert();
    let blob = pattern(2_000, 11);
    cut_off(
        alice
            .post(mirror.url(&format!("{UPLOADS}?digest={}", sha(&blob))))
            .body(stalling_body(blob[..500].to_vec())),
        "a stalled monolithic POST",
    )
    .await;
    let missing = alice
        .head(mirror.url(&format!("/v2/team/app/blobs/{}", sha(&blob))))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let tmp = mirror.root.path().join("data/tmp");
    wait_for(
        "the stalled push's temp file to go",
        Duration::from_secs(5),
        || async { std::fs::read_dir(&tmp).unwrap().next().is_none() },
    )
    .await;

    let manifest =
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","#;
    cut_off(
        alice
            .put(mirror.url("/v2/team/app/manifests/v1"))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(stalling_body(manifest.to_vec())),
        "a stalled manifest PUT",
    )
    .await;
    let tag = alice
        .get(mirror.url("/v2/team/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(tag.status(), 404);
    mirror.stop().await;
}
