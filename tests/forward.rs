//! `mirror forward`, the real binary, between the real `go` command (1.19 and
//! 1.23) and a mirror with `client_auth = "required"`: go gets the
//! certificate's identity, checksum verification goes through it, the mirror
//! down is a 502 go prints, as is a certificate the mirror refuses, a
//! non-loopback listen address is refused, other users and web pages are
//! refused, a request is sent twice only when it has no body and is
//! idempotent, one connection to the mirror carries every request, and a
//! 100 MiB zip passes in flat memory.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::audit::{Who, rows, wait_for_read};
use common::forward::{self, Forward};
use common::go::{GoEnv, GoVersion, StaticProxy, SumdbServer, standard_modules, write_tree};
use common::process::{run, text, tool};
use common::{MirrorOptions, PASSWORD, TestMirror, USER};
use mirror_pki::layout;
use sha2::Digest;
use tokio::task::block_in_place;

const NAME: &str = "sum.forward.test";

/// `name::go_1_19` and `name::go_1_23`, each running `scenario(version)`.
macro_rules! with_each_go {
    ($name:ident, $scenario:ident) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn go_1_19() {
                $scenario(GoVersion::Go119).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn go_1_23() {
                $scenario(GoVersion::Go123).await;
            }
        }
    };
}

/// A mirror that admits certificates only, in front of `upstream`, with `sumdb`
/// as its one checksum database when given.
async fn certificate_only_mirror(
    upstream: &StaticProxy,
    sumdb: Option<&SumdbServer>,
) -> TestMirror {
    // Without a database the test is about forwarding, not checksums.
    let sumdb = sumdb.map_or("sumdb = []\nverify = \"off\"\n".to_owned(), |db| {
        format!(
            "\n[[go.sumdb]]\nname = \"{NAME}\"\nurl = \"{}\"\nkey = \"{}\"\n",
            db.url, db.vkey
        )
    });
    TestMirror::start(MirrorOptions {
        client_auth: "required",
        extra_toml: format!("[go]\nupstream = \"{}\"\n{sumdb}", upstream.url()),
        ..MirrorOptions::default()
    })
    .await
}

fn forward_to(mirror: &TestMirror) -> Forward {
    block_in_place(|| Forward::start(&mirror.url(""), &mirror.certs_d))
}

const MAIN_GO: &str = r#"package main

import (
	"fmt"

	"example.com/deps"
	"example.com/greet"
)

func main() {
	fmt.Println(greet.Hello(), "|", deps.Hello())
}
"#;

with_each_go!(
    go_downloads_gets_and_builds_through_the_forwarder_as_the_certificate,
    through_the_forwarder
);

async fn through_the_forwarder(version: GoVersion) {
    let tree = tempfile::tempdir().expect("tree");
    write_tree(tree.path(), &standard_modules());
    let upstream = StaticProxy::start(tree.path()).await;
    let work = tempfile::tempdir().expect("work");
    let sumdb = SumdbServer::start(work.path(), NAME, tree.path(), 0).await;
    let mirror = certificate_only_mirror(&upstream, Some(&sumdb)).await;
    let mut go = GoEnv::with_version(&mirror, version);
    go.gosumdb = sumdb.vkey.clone();

    // Straight to the mirror, go has only a password: the handshake wants a certificate.
    let outside = go.work_dir("outside");
    let direct = go
        .run(&outside, &["mod", "download", "example.com/greet@v1.0.0"])
        .await;
    assert!(!direct.status.success(), "{}", text(&direct));

    let forward = forward_to(&mirror);
    go.goproxy = forward.url();
    let downloaded = go
        .ok(
            &outside,
            &[
                "mod",
                "download",
                "-json",
                "example.com/greet@v1.0.0",
                "example.com/Upper/Mod@v1.0.0",
            ],
        )
        .await;
    assert_eq!(downloaded.matches("\"Zip\"").count(), 2, "{downloaded}");

    let app = go.work_dir("app");
    go.ok(&app, &["mod", "init", "example.com/app"]).await;
    std::fs::write(app.join("main.go"), MAIN_GO).expect("main.go");
    go.ok(
        &app,
        &["get", "example.com/greet@v1.2.0", "example.com/deps@v1.0.0"],
    )
    .await;
    go.ok(&app, &["build", "-o", "app", "."]).await;
    let ran = std::process::Command::new(app.join("app"))
        .output()
        .expect("run app");
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout).trim(),
        "hello 1.2 | deps+upper 1.0.1"
    );

    // go checked every module against the database, through the forwarder and the mirror.
    let go_sum = std::fs::read_to_string(app.join("go.sum")).expect("go.sum");
    assert!(go_sum.contains("example.com/greet v1.2.0 h1:"), "{go_sum}");
    let asked = sumdb.requests();
    for lookup in [
        "/lookup/example.com/greet@v1.0.0",
        "/lookup/example.com/greet@v1.2.0",
        "/lookup/example.com/!upper/!mod@v1.0.1",
    ] {
        assert!(asked.iter().any(|p| p == lookup), "{lookup}: {asked:?}");
    }

    let read = wait_for_read(&mirror, "example.com/greet", Who::Cert(USER)).await;
    assert!(
        read.iter().any(|r| r.artifact.contains("v1.2.0")),
        "{read:?}"
    );
    let all = rows(&mirror, "example.com/").await;
    assert!(
        all.iter()
            .all(|r| r.identity == "cert" && r.subject == USER),
        "every read is the certificate's: {all:?}"
    );
    mirror.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_mirror_down_go_prints_the_forwarders_502() {
    let mirror = TestMirror::start(MirrorOptions::default()).await;
    let to = mirror.url("");
    let certs_d = mirror.certs_d.clone();
    let gos: Vec<GoEnv> = GoVersion::ALL
        .iter()
        .map(|version| GoEnv::with_version(&mirror, *version))
        .collect();
    let (root, _pki) = mirror.stop().await;
    let forward = block_in_place(|| Forward::start(&to, &certs_d));
    for mut go in gos {
        go.goproxy = forward.url();
        let outside = go.work_dir("outside");
        let output = go
            .run(&outside, &["mod", "download", "example.com/greet@v1.0.0"])
            .await;
        let version = go.version;
        assert!(!output.status.success(), "{version:?}: {}", text(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("502 Bad Gateway")
                && stderr.contains(&format!("mirror forward: cannot reach the mirror at {to}")),
            "{version:?}: {stderr}"
        );
    }
    drop(root);
}

#[test]
fn a_non_loopback_listen_address_is_refused_unless_asked_for() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = common::TestPki::create(dir.path());
    let registry: mirror_pki::RegistryHost = "127.0.0.1:1".parse().expect("registry");
    let certs = mirror_pki::CertsDir::write(
        &dir.path().join("certs.d"),
        &registry,
        pki.ca_pem(),
        &pki.alice,
    )
    .expect("certs.d");
    for listen in ["0.0.0.0:0", "[::]:0", "10.1.2.3:5080"] {
        let output = run(
            &mut forward::command(&["--listen", listen], "https://127.0.0.1:1", &certs.path),
            Duration::from_secs(30),
        );
        assert!(!output.status.success(), "{listen}: {}", text(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("not a loopback address") && stderr.contains("--allow-non-loopback"),
            "{listen}: {stderr}"
        );
    }
    let allowed = Forward::start_with(
        &["--listen", "0.0.0.0:0", "--allow-non-loopback"],
        "https://127.0.0.1:1",
        &certs.path,
    );
    assert!(allowed.addr.ip().is_unspecified(), "{}", allowed.addr);
    assert!(
        allowed
            .log()
            .contains("anyone who can reach this address acts with the certificate's identity"),
        "{}",
        allowed.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_local_user_is_refused_the_certificate() {
    let tree = tempfile::tempdir().expect("tree");
    write_tree(tree.path(), &standard_modules());
    let upstream = StaticProxy::start(tree.path()).await;
    let mirror = certificate_only_mirror(&upstream, None).await;
    let forward = forward_to(&mirror);
    let url = format!("{}/example.com/greet/@v/list", forward.url());
    let curl = |as_nobody: bool| {
        let mut command = if as_nobody {
            let mut command = std::process::Command::new(tool("setpriv"));
            command.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
            command.arg(tool("curl"));
            command
        } else {
            std::process::Command::new(tool("curl"))
        };
        command.args(["-sS", "-w", "\n%{http_code}", &url]);
        block_in_place(|| run(&mut command, Duration::from_secs(60)))
    };
    let refused = curl(true);
    let body = String::from_utf8_lossy(&refused.stdout);
    assert!(
        body.ends_with("\n403") && body.contains("serves only its own user"),
        "{}",
        text(&refused)
    );
    let served = curl(false);
    assert_eq!(
        String::from_utf8_lossy(&served.stdout),
        "v1.0.0\nv1.1.0\nv1.2.0\n\n200",
        "{}",
        text(&served)
    );
    assert!(upstream.count("/example.com/greet/@v/list") == 1);
    mirror.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_pages_requests_are_refused_the_certificate() {
    let tree = tempfile::tempdir().expect("tree");
    write_tree(tree.path(), &standard_modules());
    let upstream = StaticProxy::start(tree.path()).await;
    let mirror = certificate_only_mirror(&upstream, None).await;
    let forward = forward_to(&mirror);
    let url = format!("{}/example.com/greet/@v/list", forward.url());
    let curl = |headers: &[String]| {
        let mut command = std::process::Command::new(tool("curl"));
        command.args(["-sS", "-w", "\n%{http_code}"]);
        for header in headers {
            command.args(["-H", header]);
        }
        command.arg(&url);
        let output = block_in_place(|| run(&mut command, Duration::from_secs(60)));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let port = forward.addr.port();
    // A page's fetch() to 127.0.0.1: the browser adds Origin and the Sec-Fetch-* metadata.
    let fetched = curl(&[
        "Origin: https://pages.example".into(),
        "Sec-Fetch-Site: cross-site".into(),
        "Sec-Fetch-Mode: cors".into(),
    ]);
    assert!(
        fetched.ends_with("\n403") && fetched.contains("web browser"),
        "{fetched}"
    );
    // DNS rebinding: the page's own name, pointed at 127.0.0.1, so the page may read the answer.
    let rebound = curl(&[format!("Host: rebind.pages.example:{port}")]);
    assert!(
        rebound.ends_with("\n403") && rebound.contains("DNS rebinding"),
        "{rebound}"
    );
    assert_eq!(upstream.count("/example.com/greet"), 0);
    let served = curl(&[format!("Host: localhost:{port}")]);
    assert_eq!(served, "v1.0.0\nv1.1.0\nv1.2.0\n\n200");
    mirror.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_clients_password_is_not_forwarded_beside_the_certificate() {
    let tree = tempfile::tempdir().expect("tree");
    write_tree(tree.path(), &standard_modules());
    let upstream = StaticProxy::start(tree.path()).await;
    let mirror = certificate_only_mirror(&upstream, None).await;
    let forward = forward_to(&mirror);
    // The mirror refuses a wrong password even beside a valid certificate.
    let response = reqwest::Client::new()
        .get(format!("{}/example.com/legacy/@v/list", forward.url()))
        .basic_auth(USER, Some(format!("not-{PASSWORD}")))
        .send()
        .await
        .expect("through the forwarder");
    assert_eq!(response.status(), 200);
    wait_for_read(&mirror, "example.com/legacy", Who::Cert(USER)).await;
    mirror.stop().await;
}

/// A TCP relay in front of the mirror that counts the connections made to it.
async fn counting_relay(to: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind relay");
    let addr = listener.local_addr().expect("relay addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_to_the_mirror_carries_sequential_and_concurrent_requests() {
    let tree = tempfile::tempdir().expect("tree");
    write_tree(tree.path(), &standard_modules());
    let upstream = StaticProxy::start(tree.path()).await;
    let mirror = certificate_only_mirror(&upstream, None).await;
    let (relay, accepted) = counting_relay(mirror.addr).await;
    let forward = block_in_place(|| Forward::start(&format!("https://{relay}"), &mirror.certs_d));
    let local = reqwest::Client::new();
    let get = |path: &'static str| {
        let request = local.get(format!("{}{path}", forward.url()));
        async move {
            let response = request.send().await.expect("through the forwarder");
            assert_eq!(response.status(), 200, "{path}");
            response.bytes().await.expect("body").len()
        }
    };
    for _ in 0..20 {
        assert!(get("/example.com/greet/@v/v1.0.0.mod").await > 0);
    }
    let concurrent: Vec<_> = (0..10)
        .map(|_| tokio::spawn(get("/example.com/greet/@v/v1.1.0.zip")))
        .collect();
    for request in concurrent {
        assert!(request.await.expect("request task") > 0);
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "every request shares one TLS connection to the mirror"
    );
    mirror.stop().await;
}

const BIG: &str = "example.com/big";
const MIB: usize = 1024 * 1024;

/// `example.com/big@v1.0.0`: a go.mod and four 25 MiB files, stored uncompressed.
fn write_big_module(root: &Path) -> Vec<u8> {
    let dir = root.join(BIG).join("@v");
    std::fs::create_dir_all(&dir).expect("module dir");
    std::fs::write(dir.join("list"), "v1.0.0\n").expect("list");
    std::fs::write(
        dir.join("v1.0.0.info"),
        r#"{"Version":"v1.0.0","Time":"2023-01-02T03:04:05Z"}"#,
    )
    .expect("info");
    let go_mod = format!("module {BIG}\n\ngo 1.19\n");
    std::fs::write(dir.join("v1.0.0.mod"), &go_mod).expect("mod");
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let prefix = format!("{BIG}@v1.0.0/");
    zip.start_file(format!("{prefix}go.mod"), stored)
        .expect("entry");
    zip.write_all(go_mod.as_bytes()).expect("go.mod");
    let data = common::noise::bytes(25 * MIB);
    for i in 0..4 {
        zip.start_file(format!("{prefix}data{i}.bin"), stored)
            .expect("entry");
        zip.write_all(&data).expect("data");
    }
    let bytes = zip.finish().expect("zip").into_inner();
    std::fs::write(dir.join("v1.0.0.zip"), &bytes).expect("zip file");
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_zip_streams_through_the_forwarder_in_flat_memory() {
    let tree = tempfile::tempdir().expect("tree");
    let zip = block_in_place(|| write_big_module(tree.path()));
    assert!(zip.len() > 100 * MIB);
    let expected = sha2::Sha256::digest(&zip);
    drop(zip);
    let upstream = StaticProxy::start(tree.path()).await;
    let mirror = certificate_only_mirror(&upstream, None).await;
    let path = format!("/{BIG}/@v/v1.0.0.zip");
    // Filled first, so the mirror answers faster than the client below reads.
    let warm = mirror.with_cert().get(mirror.url(&path)).send().await;
    let mut warm = warm.expect("warm the cache");
    while warm.chunk().await.expect("warm body").is_some() {}

    let forward = forward_to(&mirror);
    let before = forward.peak_rss_kib();
    let mut response = reqwest::Client::new()
        .get(format!("{}{path}", forward.url()))
        .send()
        .await
        .expect("through the forwarder");
    assert_eq!(response.status(), 200);
    let mut hash = sha2::Sha256::new();
    let mut received = 0usize;
    while let Some(chunk) = response.chunk().await.expect("zip body") {
        hash.update(&chunk);
        received += chunk.len();
    }
    assert_eq!(hash.finalize(), expected, "{received} bytes");
    let peak = forward.peak_rss_kib();
    assert!(
        peak < before + 48 * 1024,
        "the forwarder's peak RSS grew from {before} KiB to {peak} KiB for a {} MiB zip",
        received / MIB
    );
    mirror.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_the_mirror_refuses_is_a_502_naming_why() {
    let tree = tempfile::tempdir().expect("tree");
    write_tree(tree.path(), &standard_modules());
    let upstream = StaticProxy::start(tree.path()).await;
    let mirror = certificate_only_mirror(&upstream, None).await;
    // alice's name, from a CA the mirror does not trust.
    let elsewhere = tempfile::tempdir().expect("other CA");
    let foreign = common::TestPki::create(elsewhere.path());
    let registry: mirror_pki::RegistryHost = mirror.host_port().parse().expect("registry");
    let certs = mirror_pki::CertsDir::write(
        &elsewhere.path().join("certs.d"),
        &registry,
        mirror.pki.ca_pem(),
        &foreign.alice,
    )
    .expect("certs.d");
    let forward = block_in_place(|| Forward::start(&mirror.url(""), &certs.path));
    let response = reqwest::Client::new()
        .get(format!("{}/example.com/greet/@v/list", forward.url()))
        .send()
        .await
        .expect("through the forwarder");
    let status = response.status();
    let body = response.text().await.expect("body");
    assert_eq!(status, 502, "{body}");
    // The mirror's TLS alert, not just "connection was not ready" (README: mTLS for go).
    assert!(
        body.starts_with("mirror forward: cannot reach the mirror")
            && body.contains("received fatal alert"),
        "{body}"
    );
    assert_eq!(upstream.count("/example.com/greet"), 0);
    mirror.stop().await;
}

/// A "mirror" with the real server certificate that reads each request's head,
/// records its request line and hangs up without answering: every request sent
/// through the forwarder fails after the mirror got it.
async fn hanging_up_mirror(pki: &common::TestPki) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::AsyncBufReadExt;

    let chain = CertificateDer::pem_file_iter(pki.pki.path(layout::SERVER_CERT))
        .expect("server cert")
        .collect::<Result<Vec<_>, _>>()
        .expect("server cert pem");
    let key = PrivateKeyDer::from_pem_file(pki.pki.path(layout::SERVER_KEY)).expect("server key");
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, recorder) = (acceptor.clone(), recorder.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut lines = tokio::io::BufReader::new(tls).lines();
                let Ok(Some(request_line)) = lines.next_line().await else {
                    return;
                };
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.is_empty() {
                        break;
                    }
                }
                recorder.lock().expect("seen").push(request_line);
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_bodiless_idempotent_request_is_sent_twice_to_a_mirror_that_hung_up() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = common::TestPki::create(dir.path());
    let (addr, seen) = hanging_up_mirror(&pki).await;
    let registry: mirror_pki::RegistryHost = addr.to_string().parse().expect("registry");
    let certs = mirror_pki::CertsDir::write(
        &dir.path().join("certs.d"),
        &registry,
        pki.ca_pem(),
        &pki.alice,
    )
    .expect("certs.d");
    let forward = block_in_place(|| Forward::start(&format!("https://{addr}"), &certs.path));
    let local = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", forward.url());
    let requests = [
        local.get(url("/example.com/greet/@v/list")),
        local.post(url("/v2/app/blobs/uploads/")),
        local
            .put(url("/v2/app/blobs/uploads/1?digest=sha256:00"))
            .body("layer bytes"),
    ];
    for request in requests {
        let response = request.send().await.expect("through the forwarder");
        assert_eq!(response.status(), 502);
    }
    let seen = seen.lock().expect("seen").clone();
    assert_eq!(
        seen,
        [
            "GET /example.com/greet/@v/list HTTP/1.1",
            "GET /example.com/greet/@v/list HTTP/1.1",
            "POST /v2/app/blobs/uploads/ HTTP/1.1",
            "PUT /v2/app/blobs/uploads/1?digest=sha256:00 HTTP/1.1",
        ],
        "a GET is tried again on its own connection; an upload POST may have opened a session, \
         and a streamed body is never sent twice"
    );
}
