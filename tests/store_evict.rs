//! Eviction never breaks a tag: after the server's own LRU eviction, and after
//! `mirror cache gc` run in another process beside the running server, every
//! tag and digest pulls again with real clients (skopeo, curl over HTTP/2),
//! and what memory held about the removed rows is not trusted.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::go::{ModuleVersion, StaticProxy, write_tree};
use common::process::{mirror_bin, run, text, tool};
use common::registry::layout::{Built, Layout};
use common::registry::{Auth, DockerRegistry};
use common::{MirrorOptions, PASSWORD, TestMirror, USER};
use mirror::store::{ModuleKey, RepoKey, TagKey, VersionKey};
use sha2::{Digest as _, Sha256};

struct Seeded {
    image: Built,
    multi: Built,
}

fn seed(registry: &DockerRegistry, dir: &Path) -> Seeded {
    let mut layout = Layout::new(dir);
    let image = layout.image("amd64", &[(81, 2000), (82, 150_000)]);
    let amd64 = layout.image("amd64", &[(83, 40_000)]);
    let arm64 = layout.image("arm64", &[(84, 50_000)]);
    let multi = layout.index(&[("amd64", &amd64), ("arm64", &arm64)]);
    layout.tag("image", &image);
    layout.tag("multi", &multi);
    layout.push("image", &format!("{}/team/app:v1", registry.addr), &[]);
    layout.push(
        "multi",
        &format!("{}/team/multi:v1", registry.addr),
        &["--all"],
    );
    Seeded { image, multi }
}

/// `tag_ttl = 0s`: every pull by tag revalidates upstream and rewrites the
/// tag's row, which is where a stale in-memory record used to fail.
fn options(registry: &str, go: &str) -> MirrorOptions {
    MirrorOptions {
        extra_toml: format!(
            "[go]\nupstream = \"{go}\"\nsumdb = []\nverify = \"off\"  # about eviction, not checksums\n\n\
             [[registry.upstream]]\nname = \"up.test\"\nurl = \"{registry}\"\ntag_ttl = \"0s\"\n"
        ),
        ..MirrorOptions::default()
    }
}

fn skopeo_copy(mirror: &TestMirror, reference: &str, out: &Path, all: bool) -> String {
    let src = format!("docker://{}/up.test/{reference}", mirror.host_port());
    let dest = format!("oci:{}:t", out.display());
    std::fs::create_dir_all(out.parent().expect("parent")).expect("output dir");
    let mut command = Command::new(tool("skopeo"));
    command
        .args(["--insecure-policy", "copy", "--src-cert-dir"])
        .arg(&mirror.certs_d);
    if all {
        command.arg("--all");
    }
    command.args([&src, &dest]);
    let output = run(&mut command, Duration::from_secs(300));
    assert!(
        output.status.success(),
        "skopeo copy {reference} to {} failed:\n{}",
        out.display(),
        text(&output)
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).expect("index.json"))
            .unwrap();
    index["manifests"][0]["digest"].as_str().unwrap().to_owned()
}

/// `curl --http2` GET; returns the status line and the body's sha256.
fn curl_h2(mirror: &TestMirror, path: &str, accept: Option<&str>) -> (String, String) {
    let escape = |p: &Path| p.display().to_string().replace(':', "\\:");
    // The body goes to a file: `run` collects a pipe only once curl exits.
    let body = tempfile::NamedTempFile::new().expect("body file");
    let mut command = Command::new(tool("curl"));
    command
        .args(["-sS", "--http2", "--cacert"])
        .arg(mirror.certs_d.join("ca.crt"))
        .arg("--cert")
        .arg(escape(&mirror.certs_d.join("client.cert")))
        .arg("--key")
        .arg(mirror.certs_d.join("client.key"))
        .args(["-D", "-", "-o"])
        .arg(body.path());
    if let Some(accept) = accept {
        command.args(["-H", &format!("Accept: {accept}")]);
    }
    command.arg(mirror.url(path));
    let output = run(&mut command, Duration::from_secs(60));
    assert!(output.status.success(), "curl {path}:\n{}", text(&output));
    let status = String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_owned();
    let body = std::fs::read(body.path()).expect("body");
    (
        status,
        format!("sha256:{}", hex::encode(Sha256::digest(&body))),
    )
}

/// Every way a client pulls the seeded images: skopeo by tag (an image and
/// a multi-arch index), by digest, and curl over HTTP/2 for manifests and a blob.
fn pull_everything(mirror: &TestMirror, seeded: &Seeded, out: &Path) {
    let image = &seeded.image;
    assert_eq!(
        skopeo_copy(mirror, "team/app:v1", &out.join("tag"), false),
        image.digest
    );
    let by_digest = format!("team/app@{}", image.digest);
    assert_eq!(
        skopeo_copy(mirror, &by_digest, &out.join("digest"), false),
        image.digest
    );
    assert_eq!(
        skopeo_copy(mirror, "team/multi:v1", &out.join("multi"), true),
        seeded.multi.digest
    );
    let oci = "application/vnd.oci.image.manifest.v1+json";
    for reference in ["v1", image.digest.as_str()] {
        let path = format!("/v2/up.test/team/app/manifests/{reference}");
        assert_eq!(
            curl_h2(mirror, &path, Some(oci)),
            ("HTTP/2 200".to_owned(), image.digest.clone()),
            "{path}"
        );
    }
    let layer = &image.layers[1].digest;
    let path = format!("/v2/up.test/team/app/blobs/{layer}");
    assert_eq!(
        curl_h2(mirror, &path, None),
        ("HTTP/2 200".to_owned(), layer.clone())
    );
}

async fn go_info(mirror: &TestMirror) -> u16 {
    mirror
        .anonymous()
        .get(mirror.url("/example.com/kept/@v/v1.0.0.info"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .expect("GET .info")
        .status()
        .as_u16()
}

async fn indexed(mirror: &TestMirror, seeded: &Seeded) -> (bool, bool) {
    let store = mirror.mirror().store();
    let digest = seeded.image.digest.parse().unwrap();
    let tag = store
        .oci()
        .tag(&RepoKey::new("up.test/team/app".into()), TagKey::new("v1"))
        .await
        .unwrap()
        .is_some();
    (tag, store.blobs().size(&digest).await.unwrap().is_some())
}

fn go_tree() -> tempfile::TempDir {
    let tree = tempfile::tempdir().unwrap();
    write_tree(
        tree.path(),
        &[ModuleVersion::package(
            "example.com/kept",
            "v1.0.0",
            "kept",
            "kept",
            &[],
        )],
    );
    tree
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tag_and_digest_pulls_again_after_the_servers_own_eviction() {
    let registry = DockerRegistry::start(Auth::None);
    let work = tempfile::tempdir().unwrap();
    let seeded = seed(&registry, &work.path().join("layout"));
    let tree = go_tree();
    let go = StaticProxy::start(tree.path()).await;
    let mirror = TestMirror::start(options(&registry.url(), &go.url())).await;
    tokio::task::block_in_place(|| pull_everything(&mirror, &seeded, &work.path().join("1")));
    assert_eq!(go_info(&mirror).await, 200);
    for round in ["2", "3"] {
        // The running server's own LRU eviction (what `cache.max_size` runs),
        // down to nothing, so every row the pulls made goes.
        let evicted = mirror.mirror().store().evict_to(0, false).await.unwrap();
        assert!(evicted.evicted > 0, "{evicted:?}");
        assert_eq!(indexed(&mirror, &seeded).await, (false, false));
        tokio::task::block_in_place(|| pull_everything(&mirror, &seeded, &work.path().join(round)));
        assert_eq!(go_info(&mirror).await, 200);
        assert_eq!(indexed(&mirror, &seeded).await, (true, true));
    }
    mirror.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tag_and_digest_pulls_again_after_cache_gc_beside_the_running_server() {
    let registry = DockerRegistry::start(Auth::None);
    let work = tempfile::tempdir().unwrap();
    let seeded = seed(&registry, &work.path().join("layout"));
    let tree = go_tree();
    let go = StaticProxy::start(tree.path()).await;
    let mirror = TestMirror::start(options(&registry.url(), &go.url())).await;
    tokio::task::block_in_place(|| pull_everything(&mirror, &seeded, &work.path().join("1")));
    assert_eq!(go_info(&mirror).await, 200);
    assert_eq!(indexed(&mirror, &seeded).await, (true, true));
    let generation = mirror.mirror().store().generation();
    let before_gc = generation.current();

    let gc = run(
        Command::new(mirror_bin())
            .arg("cache")
            .arg("gc")
            .arg("--config")
            .arg(&mirror.config_path)
            .args(["--target", "0B"]),
        Duration::from_secs(60),
    );
    assert!(gc.status.success(), "{}", text(&gc));
    assert!(
        String::from_utf8_lossy(&gc.stdout).contains("a server is running"),
        "{}",
        text(&gc)
    );
    assert_eq!(
        indexed(&mirror, &seeded).await,
        (false, false),
        "gc emptied the index"
    );
    // The server learns of another process's deletions within a second; a
    // pull inside that second may still be answered from memory (correctly)
    // without writing its rows again, which the assertions below count on.
    let noticed_by = std::time::Instant::now() + Duration::from_secs(30);
    while generation.current() == before_gc {
        assert!(
            std::time::Instant::now() < noticed_by,
            "the server never saw the index generation move after gc"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    tokio::task::block_in_place(|| pull_everything(&mirror, &seeded, &work.path().join("2")));
    assert_eq!(go_info(&mirror).await, 200);
    // What the server held in memory was dropped, so the pulls above
    // recorded everything again: a restart or an offline pull finds it.
    assert_eq!(indexed(&mirror, &seeded).await, (true, true));
    let stored = mirror
        .mirror()
        .store()
        .go()
        .file(
            ModuleKey::new("example.com/kept"),
            VersionKey::new("v1.0.0"),
            mirror::store::GoFile::Info,
        )
        .await
        .unwrap();
    assert!(stored.is_some(), "the .info was served from memory only");
    mirror.stop().await;
}
