//! Bytes on disk are not trusted blindly: a stored blob that no longer hashes
//! to its digest is never served complete. A cached one is quarantined and
//! fetched again; a pushed one answers an error that names the corruption.

mod common;

use std::path::{Path, PathBuf};

use common::go::{ModuleVersion, StaticProxy, write_tree};
use common::registry::layout::Layout;
use common::registry::proxy::Proxy;
use common::registry::{Auth, DockerRegistry};
use common::{MirrorOptions, PASSWORD, TestMirror, USER};
use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn blob_file(mirror_root: &Path, digest: &str) -> PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    mirror_root
        .join("data/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
}

fn quarantined(mirror_root: &Path, digest: &str) -> bool {
    let hex = digest.trim_start_matches("sha256:");
    mirror_root
        .join("data/quarantine/sha256")
        .join(hex)
        .is_file()
}

/// Flips one byte in the middle of a stored blob's file.
fn flip_a_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

/// A GET streamed to the end: the status and the body's sha256, or the
/// error that ended the body early.
async fn fetch(request: reqwest::RequestBuilder) -> (u16, Result<String, String>) {
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => return (0, Err(error.to_string())),
    };
    let status = response.status().as_u16();
    let mut stream = response.bytes_stream();
    let mut hasher = Sha256::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => hasher.update(&chunk),
            Err(error) => return (status, Err(error.to_string())),
        }
    }
    (
        status,
        Ok(format!("sha256:{}", hex::encode(hasher.finalize()))),
    )
}

fn metric(page: &str, name: &str) -> u64 {
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{page}"))
}

fn options(registry: &str, go: &str) -> MirrorOptions {
    MirrorOptions {
        extra_toml: format!(
            "[go]\nupstream = \"{go}\"\nsumdb = []\nverify = \"off\"  # about stored digests, not checksum databases\n\n[cache]\nverify_on_read = \"all\"\n\n\
             [[registry.upstream]]\nname = \"up.test\"\nurl = \"{registry}\"\n"
        ),
        ..MirrorOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_cached_blobs_are_quarantined_never_served_and_fetched_again() {
    let registry = DockerRegistry::start(Auth::None);
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(&work.path().join("layout"));
    let image = layout.image("amd64", &[(71, 1000), (72, 300_000), (73, 200_000)]);
    layout.tag("v1", &image);
    layout.push("v1", &format!("{}/team/rot:v1", registry.addr), &[]);
    let proxy = Proxy::start(&registry.url()).await;

    let tree = tempfile::tempdir().unwrap();
    let mut module = ModuleVersion::package("example.com/rot", "v1.0.0", "rot", "rot", &[]);
    module
        .files
        .push(("data.txt".into(), common::noise::text(400_000)));
    write_tree(tree.path(), &[module]);
    let go = StaticProxy::start(tree.path()).await;

    let options = || options(&proxy.url(), &go.url());
    let mirror = TestMirror::start(options()).await;
    let small = image.layers[0].digest.clone();
    let large = image.layers[1].digest.clone();
    let ranged = image.layers[2].digest.clone();
    assert!(image.layers[0].size < 64 * 1024 && image.layers[1].size > 64 * 1024);
    let blob_url = |digest: &str| mirror.url(&format!("/v2/up.test/team/rot/blobs/{digest}"));
    let go_get = |path: &str| {
        mirror
            .anonymous()
            .get(mirror.url(path))
            .basic_auth(USER, Some(PASSWORD))
    };
    let info = "/example.com/rot/@v/v1.0.0.info";
    let zip = "/example.com/rot/@v/v1.0.0.zip";
    for digest in [&small, &large, &ranged] {
        let (status, body) = fetch(mirror.with_cert().get(blob_url(digest))).await;
        assert_eq!((status, body.as_deref()), (200, Ok(digest.as_str())));
    }
    let (status, info_body) = fetch(go_get(info)).await;
    assert_eq!(status, 200);
    let info_digest = info_body.unwrap();
    let (status, zip_body) = fetch(go_get(zip)).await;
    assert_eq!(status, 200);
    let zip_digest = zip_body.unwrap();
    let (root, pki) = mirror.stop().await;

    // Bit rot while the server was down; a restart forgets what memory held.
    for digest in [&small, &large, &ranged, &info_digest, &zip_digest] {
        flip_a_byte(&blob_file(root.path(), digest));
    }
    let mirror = TestMirror::start_with_pki(root, pki, options()).await;
    let root = mirror.root.path().to_owned();
    let blob_url = |digest: &str| mirror.url(&format!("/v2/up.test/team/rot/blobs/{digest}"));
    let go_get = |path: &str| {
        mirror
            .anonymous()
            .get(mirror.url(path))
            .basic_auth(USER, Some(PASSWORD))
    };
    let blob_gets = |digest: &str| proxy.count("GET", &format!("blobs/{digest}"));
    let before = (blob_gets(&small), blob_gets(&large), go.count(".info"));

    // Read whole before answering: caught before the first byte goes out, so
    // this very request is answered from upstream instead.
    let (status, body) = fetch(mirror.with_cert().get(blob_url(&small))).await;
    assert_eq!((status, body.as_deref()), (200, Ok(small.as_str())));
    assert_eq!(blob_gets(&small), before.0 + 1, "refetched from upstream");
    let (status, body) = fetch(go_get(info)).await;
    assert_eq!((status, body.as_deref()), (200, Ok(info_digest.as_str())));
    assert_eq!(go.count(".info"), before.2 + 1, "refetched from upstream");

    // Streamed: the last byte is held back until the digest matches, so the
    // body fails instead of completing with bad bytes.
    let (status, body) = fetch(mirror.with_cert().get(blob_url(&large))).await;
    assert_eq!(status, 200);
    assert!(body.is_err(), "a corrupt streamed blob completed: {body:?}");
    let (status, body) = fetch(go_get(zip)).await;
    assert_eq!(status, 200);
    assert!(body.is_err(), "a corrupt streamed zip completed: {body:?}");
    // A range far from the bad byte is held back too: the whole file is checked.
    let first_bytes = mirror
        .with_cert()
        .get(blob_url(&ranged))
        .header("range", "bytes=0-99");
    let (status, body) = fetch(first_bytes).await;
    assert_eq!(status, 206);
    assert!(
        body.is_err(),
        "a range of a corrupt blob completed: {body:?}"
    );

    for digest in [&small, &large, &ranged, &info_digest, &zip_digest] {
        assert!(quarantined(&root, digest), "{digest} is not in quarantine");
    }
    assert_eq!(
        metric(&mirror.metrics().await, "mirror_quarantined_blobs_total"),
        5
    );
    let (status, body) = fetch(mirror.with_cert().get(blob_url(&large))).await;
    assert_eq!((status, body.as_deref()), (200, Ok(large.as_str())));
    assert_eq!(blob_gets(&large), before.1 + 1, "refetched from upstream");
    // Once good again, a verified range is the right bytes.
    let whole = mirror
        .with_cert()
        .get(blob_url(&large))
        .send()
        .await
        .unwrap();
    let whole = whole.bytes().await.unwrap();
    let part = mirror
        .with_cert()
        .get(blob_url(&large))
        .header("range", "bytes=100000-100099")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap(), whole.slice(100_000..100_100));
    let zips = go.count(".zip");
    let (status, body) = fetch(go_get(zip)).await;
    assert_eq!((status, body.as_deref()), (200, Ok(zip_digest.as_str())));
    assert_eq!(go.count(".zip"), zips + 1, "refetched from upstream");
    let report = mirror.mirror().store().verify(false).await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    mirror.stop().await;
}

async fn push(mirror: &TestMirror, repo: &str, bytes: &[u8]) -> String {
    let digest = sha(bytes);
    let pushed = mirror
        .with_cert()
        .post(mirror.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), 201, "push {digest}");
    digest
}

async fn oci_error(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.expect("OCI error body");
    (
        status,
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_pushed_blobs_answer_an_error_naming_the_corruption() {
    let mirror = TestMirror::start(MirrorOptions {
        extra_toml: "[cache]\nverify_on_read = \"all\"\n\n[[registry.upstream]]\nname = \"up.test\"\nurl = \"http://127.0.0.1:9\"\n".into(),
        ..MirrorOptions::default()
    })
    .await;
    let small: Vec<u8> = (0..5_000u32).map(|i| (i % 253) as u8).collect();
    let large: Vec<u8> = (0..400_000u32).map(|i| (i % 241) as u8).collect();
    let small = push(&mirror, "team/app", &small).await;
    let large = push(&mirror, "team/app", &large).await;
    let root = mirror.root.path().to_owned();
    flip_a_byte(&blob_file(&root, &small));
    flip_a_byte(&blob_file(&root, &large));
    let get = |digest: &str| {
        mirror
            .with_cert()
            .get(mirror.url(&format!("/v2/team/app/blobs/{digest}")))
    };

    let (status, message) = oci_error(get(&small).send().await.unwrap()).await;
    assert_eq!(status, 500);
    assert!(message.contains("corrupt"), "{message}");
    let (status, body) = fetch(get(&large)).await;
    assert_eq!(status, 200);
    assert!(body.is_err(), "a corrupt streamed blob completed: {body:?}");
    for digest in [&small, &large] {
        assert!(quarantined(&root, digest), "{digest} is not in quarantine");
        // It cannot be fetched again: every later request says why.
        let (status, message) = oci_error(get(digest).send().await.unwrap()).await;
        assert_eq!(status, 500, "{message}");
        assert!(message.contains("corrupt"), "{message}");
    }
    assert_eq!(
        metric(&mirror.metrics().await, "mirror_quarantined_blobs_total"),
        2
    );
    // Pushing it again repairs it.
    let pushed = push(
        &mirror,
        "team/app",
        &(0..5_000u32).map(|i| (i % 253) as u8).collect::<Vec<_>>(),
    )
    .await;
    let (status, body) = fetch(get(&pushed)).await;
    assert_eq!((status, body.as_deref()), (200, Ok(small.as_str())));
    mirror.stop().await;
}
