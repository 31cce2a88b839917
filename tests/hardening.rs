//! A hostile or broken peer costs the server one connection, never the service:
//! garbage, silence, slow headers and huge headers are cut off, and the next
//! client is served as usual.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{MirrorOptions, TestMirror};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn quick_timeouts() -> MirrorOptions {
    MirrorOptions {
        handshake_timeout: "1s",
        header_timeout: "1s",
        ..MirrorOptions::default()
    }
}

async fn tls_connect(server: &TestMirror) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(server.pki.ca_pem().as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap()
}

/// Reads until the peer closes; how long that took. Fails past `limit`.
async fn time_until_closed(stream: &mut (impl AsyncReadExt + Unpin), limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("connection still open after {limit:?}"),
        }
    }
}

async fn still_serves(server: &TestMirror) {
    let response = server
        .anonymous()
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
}

#[tokio::test]
async fn garbage_instead_of_tls_is_dropped_and_the_server_keeps_serving() {
    let server = TestMirror::start(quick_timeouts()).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: plain-http\r\n\r\n\x00\xff garbage")
        .await
        .unwrap();
    time_until_closed(&mut tcp, Duration::from_secs(5)).await;
    still_serves(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn a_silent_client_is_cut_off_at_the_handshake_timeout() {
    let server = TestMirror::start(quick_timeouts()).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let waited = time_until_closed(&mut tcp, Duration::from_secs(10)).await;
    assert!(
        waited >= Duration::from_millis(900),
        "closed after only {waited:?}"
    );
    still_serves(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn slow_headers_are_cut_off_at_the_header_timeout() {
    let server = TestMirror::start(quick_timeouts()).await;
    let mut tls = tls_connect(&server).await;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    let waited = time_until_closed(&mut tls, Duration::from_secs(10)).await;
    assert!(
        waited >= Duration::from_millis(900),
        "closed after only {waited:?}"
    );
    still_serves(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_at_the_header_timeout() {
    let server = TestMirror::start(quick_timeouts()).await;
    let mut tls = tls_connect(&server).await;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut first = vec![0u8; 1024];
    let n = tls.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    time_until_closed(&mut tls, Duration::from_secs(10)).await;
    server.stop().await;
}

#[tokio::test]
async fn oversized_headers_are_refused_without_harm() {
    let server = TestMirror::start(quick_timeouts()).await;
    let mut tls = tls_connect(&server).await;
    let huge = "a".repeat(200 * 1024);
    let request = format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: {huge}\r\n\r\n");
    // The server may close before reading it all; either way no 200 comes back.
    let _ = tls.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.contains(" 200 "), "{answer}");
    still_serves(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn malformed_http_inside_tls_is_refused_and_closed() {
    let server = TestMirror::start(quick_timeouts()).await;
    let mut tls = tls_connect(&server).await;
    tls.write_all(b"\x00\x01\x02 NOT HTTP AT ALL\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    still_serves(&server).await;
    server.stop().await;
}
