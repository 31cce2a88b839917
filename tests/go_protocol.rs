//! The GOPROXY protocol as seen on the wire (reqwest and curl over real TLS),
//! in front of a real static GOPROXY server whose request log proves what
//! reached upstream.

mod common;

use std::path::Path;
use std::time::Duration;

use common::go::{Mode, ModuleVersion, StaticProxy, get, standard_modules, write_tree};
use common::{MirrorOptions, PASSWORD, TestMirror, USER};
use reqwest::StatusCode;

async fn mirror_for(upstream: &str, extra: &str) -> TestMirror {
    TestMirror::start(MirrorOptions {
        extra_toml: format!("[go]\nupstream = \"{upstream}\"\nsumdb = []\nverify = \"off\"  # the GOPROXY protocol; go_verify.rs proves verification\n{extra}"),
        ..MirrorOptions::default()
    })
    .await
}

fn tree_with(modules: &[ModuleVersion]) -> tempfile::TempDir {
    let tree = tempfile::tempdir().expect("tree");
    write_tree(tree.path(), modules);
    tree
}

fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            if e.path().is_dir() {
                files_under(&e.path())
            } else {
                1
            }
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cold_zip_requests_make_one_upstream_request() {
    let mut big = ModuleVersion::package("example.com/big", "v1.0.0", "big", "big", &[]);
    big.files
        .push(("data.txt".into(), common::noise::text(3 << 20)));
    let tree = tree_with(&[big]);
    let upstream = StaticProxy::start(tree.path()).await;
    upstream.set_delay(Duration::from_millis(300));
    let mirror = mirror_for(&upstream.url(), "").await;
    let expected = std::fs::read(tree.path().join("example.com/big/@v/v1.0.0.zip")).expect("zip");
    for path in [
        "/example.com/big/@v/v1.0.0.zip",
        "/example.com/big/@v/v1.0.0.mod",
    ] {
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let client = mirror.anonymous();
                let url = mirror.url(path);
                tokio::spawn(async move {
                    let response = client
                        .get(url)
                        .basic_auth(USER, Some(PASSWORD))
                        .send()
                        .await
                        .expect("get");
                    (
                        response.status(),
                        response.bytes().await.expect("body").to_vec(),
                    )
                })
            })
            .collect();
        for task in tasks {
            let (status, body) = task.await.expect("task");
            assert_eq!(status, StatusCode::OK);
            if path.ends_with(".zip") {
                assert!(body == expected, "every client gets the whole zip");
            }
        }
        assert_eq!(
            upstream.count(path),
            1,
            "{path}: one upstream request for 16 clients"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_traversal_attempts_are_rejected_without_touching_anything() {
    let tree = tree_with(&standard_modules());
    let upstream = StaticProxy::start(tree.path()).await;
    let mirror = mirror_for(&upstream.url(), "").await;
    let long = format!("/example.com/{}/@v/list", "a".repeat(3000));
    let attempts = [
        "/example.com/../../etc/passwd/@v/list",
        "/example.com/%2e%2e/%2e%2e/etc/@v/list",
        "/example.com/%2E%2E/@v/v1.0.0.zip",
        "/example.com/greet/@v/..%2f..%2f..%2fetc%2fpasswd.info",
        "/example.com/greet/@v/%2e%2e.mod",
        "/example.com/greet/@v/v1.0.0.zip/../../x.zip",
        "/example.com/greet%00/@v/list",
        "/example.com/greet/@v/v1.0.0%00.zip",
        "/example.com/greet/@v/%c0%ae%c0%ae.info",
        "/EXAMPLE.com/greet/@v/list",
        "/example.com//greet/@v/list",
        "/example.com/greet/@v/master.zip",
        "/example.com/greet/@v/v2.0.0.mod",
        "/sumdb/sum.golang.org/../../etc/passwd",
        "/sumdb/nope.example/lookup/example.com/greet@v1.0.0",
        "/etc/passwd",
        long.as_str(),
    ];
    let ca = mirror.pki.ca_cert();
    for path in attempts {
        let output = common::process::run(
            std::process::Command::new(common::process::tool("curl"))
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--path-as-is",
                    "--cacert",
                ])
                .arg(&ca)
                .args(["-u", &format!("{USER}:{PASSWORD}")])
                .arg(format!("https://{}{path}", mirror.host_port())),
            Duration::from_secs(30),
        );
        let code = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(code == "400" || code == "404", "{path}: answered {code}");
    }
    assert_eq!(
        upstream.requests(),
        Vec::<String>::new(),
        "nothing reached upstream"
    );
    let data = mirror.root.path().join("data");
    assert_eq!(files_under(&data.join("blobs")), 0, "nothing was stored");
    assert_eq!(files_under(&data.join("tmp")), 0, "no temp file was made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canonical_files_are_fetched_once_and_served_after_upstream_stops() {
    let tree = tree_with(&standard_modules());
    let upstream = StaticProxy::start(tree.path()).await;
    let mirror = mirror_for(&upstream.url(), "").await;
    let paths = [
        "/example.com/!upper/!mod/@v/v1.0.1.info",
        "/example.com/%21upper/%21mod/@v/v1.0.1.mod",
        "/example.com/!upper/!mod/@v/v1.0.1.zip",
        "/example.com/legacy/@v/v2.0.0+incompatible.zip",
        "/example.com/greet/v2/@v/v2.1.0.mod",
        "/example.com/greet/@v/list",
    ];
    let mut first = Vec::new();
    for path in paths {
        let (status, body) = get(&mirror, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        first.push(body);
        let (_, again) = get(&mirror, path).await;
        assert!(again == *first.last().expect("body"), "{path}: same bytes");
    }
    assert_eq!(
        upstream.requests().len(),
        paths.len(),
        "each once: {:?}",
        upstream.requests()
    );
    let zip =
        std::fs::read(tree.path().join("example.com/!upper/!mod/@v/v1.0.1.zip")).expect("zip");
    assert!(first[2] == zip);

    upstream.stop().await;
    for (path, body) in paths.iter().zip(&first) {
        let (status, again) = get(&mirror, path).await;
        assert_eq!(status, StatusCode::OK, "{path} after upstream stopped");
        assert!(again == *body, "{path}");
    }
    // And after a restart over the same data dir.
    let (root, pki) = mirror.stop().await;
    let mirror = TestMirror::start_with_pki(
        root,
        pki,
        MirrorOptions {
            extra_toml: "[go]\nupstream = \"http://127.0.0.1:1\"\nsumdb = []\nverify = \"off\"  # the GOPROXY protocol; go_verify.rs proves verification\n".into(),
            ..MirrorOptions::default()
        },
    )
    .await;
    for (path, body) in paths.iter().zip(&first).take(5) {
        let (status, again) = get(&mirror, path).await;
        assert_eq!(status, StatusCode::OK, "{path} after restart");
        assert!(again == *body, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_off_upstream_serves_only_what_is_cached() {
    let tree = tree_with(&standard_modules());
    let upstream = StaticProxy::start(tree.path()).await;
    let mirror = mirror_for(&upstream.url(), "").await;
    let (status, zip) = get(&mirror, "/example.com/greet/@v/v1.0.0.zip").await;
    assert_eq!(status, StatusCode::OK);
    let (root, pki) = mirror.stop().await;
    let mirror = TestMirror::start_with_pki(
        root,
        pki,
        MirrorOptions {
            extra_toml: "[go]\nupstream = \"off\"\nsumdb = []\nverify = \"off\"  # the GOPROXY protocol; go_verify.rs proves verification\n".into(),
            ..MirrorOptions::default()
        },
    )
    .await;
    assert_eq!(
        get(&mirror, "/example.com/greet/@v/v1.0.0.zip").await,
        (StatusCode::OK, zip)
    );
    let (status, body) = get(&mirror, "/example.com/greet/@v/v1.1.0.zip").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        String::from_utf8_lossy(&body).contains("go.upstream"),
        "the 404 says why"
    );
    assert_eq!(upstream.count("v1.1.0"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_are_kept_for_their_ttl_and_served_stale_when_upstream_fails() {
    let tree = tree_with(&standard_modules());
    // What a proxy answers for a branch name: the version it resolves to today.
    std::fs::write(
        tree.path().join("example.com/greet/@v/master.info"),
        r#"{"Version":"v1.2.0","Time":"2023-01-02T03:04:05Z"}"#,
    )
    .expect("master.info");
    let upstream = StaticProxy::start(tree.path()).await;
    let fresh = mirror_for(&upstream.url(), "list_ttl = \"1h\"\n").await;
    for _ in 0..3 {
        assert_eq!(
            get(&fresh, "/example.com/greet/@v/list").await.0,
            StatusCode::OK
        );
        let (status, info) = get(&fresh, "/example.com/greet/@v/master.info").await;
        assert_eq!(status, StatusCode::OK);
        assert!(String::from_utf8_lossy(&info).contains("v1.2.0"));
    }
    assert_eq!(
        upstream.count("/example.com/greet/@v/list"),
        1,
        "within the TTL: one request"
    );
    assert_eq!(
        upstream.count("/example.com/greet/@v/master.info"),
        1,
        "queries too"
    );

    let expiring = mirror_for(&upstream.url(), "list_ttl = \"0s\"\n").await;
    let (_, list) = get(&expiring, "/example.com/greet/@v/list").await;
    assert_eq!(String::from_utf8_lossy(&list), "v1.0.0\nv1.1.0\nv1.2.0\n");
    upstream.set_mode(Mode::Fail);
    let before = upstream.count("/example.com/greet/@v/list");
    let (status, stale) = get(&expiring, "/example.com/greet/@v/list").await;
    assert_eq!(status, StatusCode::OK, "stale list served");
    assert_eq!(stale, list);
    assert_eq!(
        upstream.count("/example.com/greet/@v/list"),
        before + 1,
        "it did ask upstream first"
    );
    let (status, _) = get(&expiring, "/example.com/greet/@v/v1.2.0.info").await;
    assert_eq!(
        status,
        StatusCode::BAD_GATEWAY,
        "nothing cached and upstream failing: 502"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_is_a_404_with_the_reason_and_is_cached_briefly() {
    let tree = tree_with(&standard_modules());
    let upstream = StaticProxy::start(tree.path()).await;
    let mirror = mirror_for(&upstream.url(), "negative_ttl = \"1h\"\n").await;
    for path in [
        "/example.com/greet/@v/v1.9.9.info",
        "/example.com/greet/@v/v1.9.9.zip",
        "/example.com/x/@v/list",
    ] {
        for _ in 0..2 {
            let (status, body) = get(&mirror, path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert!(
                String::from_utf8_lossy(&body).contains("not in the test tree"),
                "{path}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        assert_eq!(upstream.count(path), 1, "{path}: the 404 is kept");
    }
    let (status, body) = get(&mirror, "/example.com/greet/@latest").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipe_falls_through_on_errors_and_a_comma_does_not() {
    let empty = tempfile::tempdir().expect("empty");
    let broken = StaticProxy::start(empty.path()).await;
    broken.set_mode(Mode::Fail);
    let tree = tree_with(&standard_modules());
    let good = StaticProxy::start(tree.path()).await;

    let piped = mirror_for(&format!("{}|{}", broken.url(), good.url()), "").await;
    let (status, _) = get(&piped, "/example.com/greet/@v/v1.0.0.zip").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(good.count("v1.0.0.zip"), 1);

    let commaed = mirror_for(&format!("{},{}", broken.url(), good.url()), "").await;
    let (status, body) = get(&commaed, "/example.com/greet/@v/v1.1.0.zip").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(
        !String::from_utf8_lossy(&body).contains("127.0.0.1"),
        "no upstream detail leaks"
    );
    assert_eq!(
        good.count("v1.1.0"),
        0,
        "a 500 does not fall through a comma"
    );
    let (status, _) = get(&commaed, "/example.com/greet/@v/list").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_zip_from_upstream_is_refused_and_never_stored() {
    let tree = tree_with(&[ModuleVersion::package(
        "example.com/evil",
        "v1.0.0",
        "evil",
        "e",
        &[],
    )]);
    // Replace the zip with one whose entry escapes the module prefix.
    let zip_path = tree.path().join("example.com/evil/@v/v1.0.0.zip");
    let mut writer = zip::ZipWriter::new(std::fs::File::create(&zip_path).expect("zip"));
    writer
        .start_file(
            "example.com/evil@v1.0.0/../../../etc/cron.d/x",
            zip::write::SimpleFileOptions::default(),
        )
        .expect("entry");
    std::io::Write::write_all(&mut writer, b"* * * * * root sh\n").expect("write");
    writer.finish().expect("finish");
    let upstream = StaticProxy::start(tree.path()).await;
    let mirror = mirror_for(&upstream.url(), "").await;
    for _ in 0..2 {
        let sent = mirror
            .anonymous()
            .get(mirror.url("/example.com/evil/@v/v1.0.0.zip"))
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await;
        let complete = match sent {
            Ok(response) if response.status() == StatusCode::OK => response.bytes().await.is_ok(),
            Ok(_) => false,
            // The check can fail before the answer's head leaves the server
            // (it goes out with the first bytes): the connection then closes
            // with no answer at all, which is no zip either.
            Err(_) => false,
        };
        assert!(!complete, "no client receives a complete invalid zip");
    }
    assert_eq!(upstream.count("v1.0.0.zip"), 2, "it was not cached");
    let blobs = files_under(&mirror.root.path().join("data/blobs"));
    assert_eq!(blobs, 0, "nothing was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_routes_take_basic_auth_or_a_certificate_and_only_get_and_head() {
    let tree = tree_with(&standard_modules());
    let upstream = StaticProxy::start(tree.path()).await;
    let mirror = mirror_for(&upstream.url(), "").await;
    let path = "/example.com/greet/@v/v1.0.0.zip";
    let anonymous = mirror
        .anonymous()
        .get(mirror.url(path))
        .send()
        .await
        .expect("get");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert!(anonymous.headers().contains_key("www-authenticate"));
    let with_cert = mirror
        .with_cert()
        .get(mirror.url(path))
        .send()
        .await
        .expect("get");
    assert_eq!(with_cert.status(), StatusCode::OK);
    let size = with_cert.bytes().await.expect("body").len();

    let head = mirror
        .anonymous()
        .head(mirror.url(path))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .expect("head");
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.content_length(), Some(size as u64));
    assert_eq!(head.headers()["content-type"], "application/zip");
    let head = mirror
        .anonymous()
        .head(mirror.url("/example.com/greet/@v/v1.0.0.mod"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .expect("head");
    assert_eq!(head.status(), StatusCode::OK);
    assert!(head.content_length().is_some_and(|n| n > 0));

    let post = mirror
        .with_cert()
        .post(mirror.url(path))
        .body("x")
        .send()
        .await
        .expect("post");
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
}

/// An internal GOPROXY behind the company's own CA (here: another mirror, its
/// PKI made by our pki crate) is trusted through `[go] ca`, and only then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_behind_a_private_ca_is_trusted_through_go_ca() {
    let tree = tree_with(&standard_modules());
    let origin = StaticProxy::start(tree.path()).await;
    let internal = TestMirror::start(MirrorOptions {
        extra_toml: format!(
            "[auth]\nread = \"anonymous\"\n[go]\nupstream = \"{}\"\nsumdb = []\nverify = \"off\"  # the GOPROXY protocol; go_verify.rs proves verification\n",
            origin.url()
        ),
        ..MirrorOptions::default()
    })
    .await;
    let internal_url = internal.url("");
    let path = "/example.com/greet/@v/v1.0.0.info";

    let untrusting = mirror_for(&internal_url, "").await;
    let (status, body) = get(&untrusting, path).await;
    assert_eq!(
        status,
        StatusCode::BAD_GATEWAY,
        "an unknown CA is an upstream error: {}",
        String::from_utf8_lossy(&body)
    );
    assert!(origin.requests().is_empty(), "no TLS, no request");

    let ca = internal.pki.ca_cert();
    let trusting = mirror_for(
        &internal_url,
        &format!("ca = {:?}\n", ca.display().to_string()),
    )
    .await;
    let (status, body) = get(&trusting, path).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let expected =
        std::fs::read(tree.path().join("example.com/greet/@v/v1.0.0.info")).expect("info");
    assert!(body == expected, "the origin's bytes, through two mirrors");
    assert_eq!(origin.count("v1.0.0.info"), 1);
}
