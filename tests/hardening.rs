//! A hostile or broken peer costs the server one connection, never the service:
//! garbage, silence, slow headers and huge headers are cut off, idle anonymous
//! connections cannot crowd out real clients, and the next client is served as usual.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{MirrorOptions, TestMirror, TestPki, process, raw};
use futures_util::FutureExt as _;
use mirror_pki::layout;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

fn quick_timeouts() -> MirrorOptions {
    MirrorOptions {
        handshake_timeout: "1s",
        header_timeout: "1s",
        ..MirrorOptions::default()
    }
}

async fn tls_connect(server: &TestMirror) -> TlsStream<TcpStream> {
    tls_to(server.addr, server.pki.ca_pem()).await
}

async fn tls_to(addr: SocketAddr, ca_pem: &str) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap()
}

/// Reads until the peer closes and returns what it sent. Fails past `limit`:
/// a server that hangs must fail the test, not pass it.
async fn answer_until_closed(stream: &mut (impl AsyncReadExt + Unpin), limit: Duration) -> String {
    let until = tokio::time::Instant::now() + limit;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(until, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return String::from_utf8_lossy(&answer).into_owned(),
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "connection still open after {limit:?}; it sent {:?}",
                String::from_utf8_lossy(&answer)
            ),
        }
    }
}

/// Reads until the peer closes; how long that took. Fails past `limit`.
async fn time_until_closed(stream: &mut (impl AsyncReadExt + Unpin), limit: Duration) -> Duration {
    let started = Instant::now();
    answer_until_closed(stream, limit).await;
    started.elapsed()
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

/// Long enough that the header timeout cannot be what closes a connection
/// within `REFUSED_WITHIN`: closing in time means the server refused it.
fn slow_timeouts() -> MirrorOptions {
    MirrorOptions {
        handshake_timeout: "30s",
        header_timeout: "30s",
        ..MirrorOptions::default()
    }
}

const REFUSED_WITHIN: Duration = Duration::from_secs(5);

/// Headers past `max_header_size` get a 431 and a close, in time.
async fn oversized_headers_are_refused(tls: &mut TlsStream<TcpStream>) {
    let huge = "a".repeat(200 * 1024);
    let request = format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: {huge}\r\n\r\n");
    // The server may close before it has read it all, so the write may fail;
    // a server that neither reads nor closes must not hold the test.
    let written = tokio::time::timeout(REFUSED_WITHIN, tls.write_all(request.as_bytes())).await;
    assert!(
        written.is_ok(),
        "the server neither read the headers nor closed"
    );
    let answer = answer_until_closed(tls, REFUSED_WITHIN).await;
    // A close with unread data resets the connection, which may drop the 431 on the way.
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431 "),
        "{answer}"
    );
}

/// Bytes that are not HTTP get a 400 and a close, in time.
async fn malformed_http_is_refused(tls: &mut TlsStream<TcpStream>) {
    tls.write_all(b"\x00\x01\x02 NOT HTTP AT ALL\r\n\r\n")
        .await
        .unwrap();
    let answer = answer_until_closed(tls, REFUSED_WITHIN).await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
}

#[tokio::test]
async fn oversized_headers_are_refused_without_harm() {
    let server = TestMirror::start(slow_timeouts()).await;
    oversized_headers_are_refused(&mut tls_connect(&server).await).await;
    still_serves(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn malformed_http_inside_tls_is_refused_and_closed() {
    let server = TestMirror::start(slow_timeouts()).await;
    malformed_http_is_refused(&mut tls_connect(&server).await).await;
    still_serves(&server).await;
    server.stop().await;
}

/// A TLS listener with the test PKI's server certificate that completes the
/// handshake, reads everything and never answers or closes: a hung server.
async fn hanging_tls_server(pki: &TestPki) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let chain = CertificateDer::pem_file_iter(pki.dir.join(layout::SERVER_CERT))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(pki.dir.join(layout::SERVER_KEY)).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            held.push(tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut sink = [0u8; 4096];
                while matches!(tls.read(&mut sink).await, Ok(n) if n > 0) {}
                // The client left; stay silent rather than close first.
                std::future::pending::<()>().await;
            }));
        }
    });
    (addr, task)
}

/// The two claims above against a server that hangs: each must fail, not pass.
#[tokio::test]
async fn the_refusal_claims_fail_against_a_server_that_hangs() {
    let root = tempfile::tempdir().unwrap();
    let pki = TestPki::create(root.path());
    let (addr, task) = hanging_tls_server(&pki).await;
    let oversized = AssertUnwindSafe(async {
        oversized_headers_are_refused(&mut tls_to(addr, pki.ca_pem()).await).await
    });
    let malformed = AssertUnwindSafe(async {
        malformed_http_is_refused(&mut tls_to(addr, pki.ca_pem()).await).await
    });
    for (name, failed) in [
        (
            "oversized headers",
            panic_message(oversized.catch_unwind().await),
        ),
        (
            "malformed HTTP",
            panic_message(malformed.catch_unwind().await),
        ),
    ] {
        let failed = failed.unwrap_or_else(|| panic!("{name}: passed against a hung server"));
        assert!(
            failed.contains("still open after") || failed.contains("neither read"),
            "{name} failed for another reason: {failed}"
        );
    }
    task.abort();
}

fn panic_message(outcome: std::thread::Result<()>) -> Option<String> {
    let payload = outcome.err()?;
    Some(
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default(),
    )
}

const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A connection a flood holds open without ever sending a request.
enum Held {
    /// TLS done, then silence: not even the HTTP/2 preface.
    Silent(Box<TlsStream<TcpStream>>),
    /// The HTTP/2 preface and SETTINGS, then no stream.
    Preface(raw::H2Conn),
}

impl Held {
    /// Whether the server closed it within `limit`.
    async fn closed_within(self, limit: Duration) -> bool {
        match self {
            Held::Silent(mut tls) => raw::closed_within(&mut *tls, limit).await,
            Held::Preface(conn) => tokio::time::timeout(limit, conn.driver).await.is_ok(),
        }
    }
}

/// Opens `count` anonymous connections from `from`, alternating silent TLS and a
/// bare HTTP/2 preface; returns those whose TLS handshake completed.
async fn idle_flood(server: &TestMirror, from: IpAddr, count: usize) -> Vec<Held> {
    let mut held = Vec::new();
    for i in 0..count {
        let alpn = if i % 2 == 0 { raw::H1 } else { raw::H2 };
        let config = raw::client_config(server.pki.ca_pem(), None, alpn);
        let Ok(tls) = raw::tls_from(from, server.addr, config).await else {
            continue;
        };
        if alpn == raw::H1 {
            held.push(Held::Silent(Box::new(tls)));
        } else {
            held.push(Held::Preface(
                raw::h2_handshake(tls, h2::client::Builder::new()).await,
            ));
        }
    }
    held
}

async fn all_closed_within(held: Vec<Held>, limit: Duration) -> usize {
    let closed = futures_util::future::join_all(held.into_iter().map(|h| h.closed_within(limit)));
    closed.await.into_iter().filter(|closed| !closed).count()
}

/// A reqwest client from `from` (a loopback address), with alice's certificate if `cert`.
fn client_from(server: &TestMirror, from: IpAddr, cert: bool) -> reqwest::Client {
    let mut builder = common::client_builder(server.pki.ca_pem()).local_address(from);
    if cert {
        let alice = &server.pki.alice;
        let pem = format!("{}{}", alice.cert_pem, alice.key_pem);
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

async fn status_from(server: &TestMirror, from: IpAddr, cert: bool) -> reqwest::Result<u16> {
    let mut request = client_from(server, from, cert).get(server.url("/v2/"));
    if !cert {
        request = request.basic_auth(common::USER, Some(common::PASSWORD));
    }
    Ok(request.send().await?.status().as_u16())
}

#[tokio::test]
async fn idle_anonymous_connections_from_one_host_do_not_lock_out_real_clients() {
    let server = TestMirror::start(MirrorOptions {
        limits: "max_connections = 48\nauthenticated_reserve = 0.25\n\
                 max_anonymous_per_peer = 16\nfirst_request_timeout = \"8s\"\nidle_timeout = \"8s\"",
        ..MirrorOptions::default()
    })
    .await;
    let held = idle_flood(&server, ATTACKER, 300).await;
    assert_eq!(held.len(), 16, "the per-peer cap let more in");

    let neighbour = loopback(2);
    assert_eq!(status_from(&server, neighbour, true).await.unwrap(), 200);
    assert_eq!(status_from(&server, neighbour, false).await.unwrap(), 200);

    let still_open = all_closed_within(held, Duration::from_secs(20)).await;
    assert_eq!(
        still_open, 0,
        "idle connections outlived the first-request deadline"
    );
    assert_eq!(
        status_from(&server, ATTACKER, false).await.unwrap(),
        200,
        "the attacker's address is served again once its idle connections are gone"
    );
    server.stop().await;
}

#[tokio::test]
async fn anonymous_hosts_together_cannot_take_the_share_reserved_for_authenticated_peers() {
    let server = TestMirror::start(MirrorOptions {
        limits: "max_connections = 24\nauthenticated_reserve = 0.25\n\
                 max_anonymous_per_peer = 8\nfirst_request_timeout = \"8s\"",
        ..MirrorOptions::default()
    })
    .await;
    // A password user who connected before the flood: authenticated by its request,
    // its connection leaves the anonymous share.
    let config = raw::client_config(server.pki.ca_pem(), None, raw::H1);
    let mut kept = raw::tls_from(loopback(9), server.addr, config)
        .await
        .unwrap();
    let auth = format!("Authorization: {}\r\n", raw::basic_alice());
    assert_eq!(
        raw::h1_get(&mut kept, "/v2/", &auth).await.unwrap().status,
        200
    );

    let mut held = Vec::new();
    for host in [1, 3, 4, 5] {
        held.extend(idle_flood(&server, loopback(host), 8).await);
    }
    // 6 of 24 are reserved: 18 anonymous connections stay, 14 were closed after the handshake.
    let metrics = client_from(&server, loopback(10), true)
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("mirror_connections_refused_total{reason=\"anonymous_share\"} 14"),
        "{metrics}"
    );
    assert_eq!(status_from(&server, loopback(10), true).await.unwrap(), 200);
    assert!(
        status_from(&server, loopback(11), false).await.is_err(),
        "a new anonymous connection got past a full anonymous share"
    );
    assert_eq!(
        raw::h1_get(&mut kept, "/v2/", &auth).await.unwrap().status,
        200
    );

    assert_eq!(all_closed_within(held, Duration::from_secs(20)).await, 0);
    assert_eq!(
        status_from(&server, loopback(11), false).await.unwrap(),
        200
    );
    server.stop().await;
}

#[tokio::test]
async fn a_connection_that_never_sends_a_request_is_closed_at_the_first_request_deadline() {
    let server = TestMirror::start(MirrorOptions {
        limits: "first_request_timeout = \"1s\"\nidle_timeout = \"30s\"",
        ..MirrorOptions::default()
    })
    .await;
    let started = Instant::now();
    let held = idle_flood(&server, ATTACKER, 4).await;
    assert_eq!(held.len(), 4);
    assert_eq!(all_closed_within(held, Duration::from_secs(10)).await, 0);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed after only {waited:?}"
    );
    still_serves(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn an_http2_connection_with_no_open_stream_is_closed_at_the_idle_timeout() {
    let server = TestMirror::start(MirrorOptions {
        limits: "idle_timeout = \"1s\"\nfirst_request_timeout = \"30s\"",
        ..MirrorOptions::default()
    })
    .await;
    let config = raw::client_config(server.pki.ca_pem(), None, raw::H2);
    let tls = raw::tls_from(ATTACKER, server.addr, config).await.unwrap();
    let mut conn = raw::h2_handshake(tls, h2::client::Builder::new()).await;
    let (status, _) = raw::h2_get(&mut conn.send, "/healthz", None).await.unwrap();
    assert_eq!(status, 200);
    let idle_since = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), conn.driver).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection stayed open");
    let waited = idle_since.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed after only {waited:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_request_in_progress_keeps_its_connection_past_the_idle_timeout() {
    let server = TestMirror::start(MirrorOptions {
        limits: "idle_timeout = \"1s\"",
        extra_toml: "[registry]\nhosted = [\"team\"]\n".into(),
        ..MirrorOptions::default()
    })
    .await;
    let config = raw::client_config(server.pki.ca_pem(), raw::pems(&server.pki.alice), raw::H2);
    let tls = raw::tls_from(ATTACKER, server.addr, config).await.unwrap();
    let mut conn = raw::h2_handshake(tls, h2::client::Builder::new()).await;
    let ready = conn.send.clone().ready().await.unwrap();
    conn.send = ready;
    let start = http::Request::post("https://127.0.0.1/v2/team/app/blobs/uploads/")
        .body(())
        .unwrap();
    let (response, _) = conn.send.send_request(start, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();

    conn.send = conn.send.clone().ready().await.unwrap();
    let patch = http::Request::patch(format!("https://127.0.0.1{location}"))
        .body(())
        .unwrap();
    let (response, mut body) = conn.send.send_request(patch, false).unwrap();
    body.send_data(bytes::Bytes::from_static(b"first "), false)
        .unwrap();
    // Deliberately longer than idle_timeout: the claim is that nothing happens
    // while the request's body is still arriving.
    tokio::time::sleep(Duration::from_secs(3)).await;
    body.send_data(bytes::Bytes::from_static(b"second"), true)
        .unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 202);
    let (status, _) = raw::h2_get(&mut conn.send, "/v2/", None).await.unwrap();
    assert_eq!(status, 200, "the connection is still open and serving");
    server.stop().await;
}

#[tokio::test]
async fn plain_http_on_the_tls_port_gets_a_400_with_the_https_url() {
    let server = TestMirror::start(quick_timeouts()).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let request = format!("GET /v2/ HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr);
    tcp.write_all(request.as_bytes()).await.unwrap();
    let response = raw::read_response(&mut tcp).await.unwrap();
    assert_eq!(response.status, 400, "{}", response.head);
    let url = format!("https://{}/v2/", server.addr);
    assert!(
        response.body_text().contains(&url),
        "{}",
        response.body_text()
    );
    assert!(
        response.body_text().contains("TLS"),
        "{}",
        response.body_text()
    );
    assert!(raw::closed_within(&mut tcp, Duration::from_secs(5)).await);

    let plain_url = format!("http://{}/v2/", server.addr);
    let curl = tokio::task::spawn_blocking(move || {
        process::run(
            std::process::Command::new(process::tool("curl")).args([
                "-sS",
                "--max-time",
                "20",
                "-w",
                "\n%{http_code}",
                &plain_url,
            ]),
            Duration::from_secs(30),
        )
    })
    .await
    .unwrap();
    let output = String::from_utf8_lossy(&curl.stdout);
    assert!(output.ends_with("\n400"), "{}", process::text(&curl));
    assert!(output.contains(&url), "{}", process::text(&curl));
    still_serves(&server).await;
    server.stop().await;
}

/// A TLS connection with alice's certificate that got a 200 for `/v2/`, or why not.
async fn admitted(server: &TestMirror) -> Result<TlsStream<TcpStream>, String> {
    let config = raw::client_config(server.pki.ca_pem(), raw::pems(&server.pki.alice), raw::H1);
    let mut tls = raw::tls_from(ATTACKER, server.addr, config)
        .await
        .map_err(|e| e.to_string())?;
    let response = raw::h1_get(&mut tls, "/v2/", "")
        .await
        .map_err(|e| e.to_string())?;
    match response.status {
        200 => Ok(tls),
        status => Err(format!("status {status}")),
    }
}

#[tokio::test]
async fn connections_past_max_connections_are_closed_and_a_slot_frees_when_one_closes() {
    let server = TestMirror::start(MirrorOptions {
        limits: "max_connections = 3",
        ..MirrorOptions::default()
    })
    .await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(admitted(&server).await.unwrap());
    }
    assert!(
        admitted(&server).await.is_err(),
        "a fourth connection got in past max_connections = 3"
    );
    for tls in &mut open {
        let response = raw::h1_get(tls, "/v2/", "").await.unwrap();
        assert_eq!(response.status, 200, "an open connection stopped working");
    }

    drop(open.pop());
    let until = Instant::now() + Duration::from_secs(10);
    let mut replacement = loop {
        match admitted(&server).await {
            Ok(tls) => break tls,
            Err(why) => assert!(
                Instant::now() < until,
                "no slot freed after a connection closed: {why}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let metrics = raw::h1_get(&mut replacement, "/metrics", "").await.unwrap();
    let refused: u64 = metrics
        .body_text()
        .lines()
        .find_map(|l| {
            l.strip_prefix("mirror_connections_refused_total{reason=\"max_connections\"} ")
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(refused >= 1, "{}", metrics.body_text());
    for tls in &mut open {
        assert_eq!(raw::h1_get(tls, "/v2/", "").await.unwrap().status, 200);
    }
    server.stop().await;
}
