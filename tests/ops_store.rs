//! Operating the store: a bounded cache that evicts least-recently-used
//! content (never hosted content, never what is being read) and re-fetches
//! what it evicted; `cache gc` (`--dry-run`, `--target`); a full disk that
//! costs one fill and nothing else.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::process::{run, text, tool};
use common::registry::layout::{Built, Layout};
use common::registry::{Auth, DockerRegistry};
use common::{MirrorOptions, TestMirror, TestPki, wait_for};
use sha2::{Digest as _, Sha256};

const MIB: u64 = 1024 * 1024;

fn upstream_toml(upstream: &str, cache: &str) -> String {
    format!(
        "[auth]\nread = \"anonymous\"\nwrite = \"anonymous\"\n\n[registry]\nhosted = [\"internal\"]\n\n\
         [[registry.upstream]]\nname = \"up.test\"\nurl = \"{upstream}\"\n\n[cache]\n{cache}\n"
    )
}

async fn get(client: &reqwest::Client, url: String) -> Result<(u16, String), String> {
    let response = client.get(url).send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let bytes = response.bytes().await.map_err(|e| e.to_string())?;
    Ok((
        status,
        format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
    ))
}

async fn store_bytes(server: &TestMirror) -> u64 {
    server.mirror().store().totals().await.unwrap().bytes
}

fn skopeo_copy(server: &TestMirror, from: &str, to: &str) -> std::process::Output {
    run(
        Command::new(tool("skopeo"))
            .args(["--insecure-policy", "copy", "--src-cert-dir"])
            .arg(&server.certs_d)
            .arg("--dest-cert-dir")
            .arg(&server.certs_d)
            .args([from, to]),
        Duration::from_secs(300),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bounded_cache_evicts_least_recently_used_content_and_refetches_it() {
    let root = tempfile::tempdir().unwrap();
    let registry = DockerRegistry::start(Auth::None);
    let mut layout = Layout::new(&root.path().join("layout"));
    let images: Vec<Built> = (0..8u64)
        .map(|i| {
            let image = layout.image("amd64", &[(100 + i, 4 * MIB)]);
            layout.tag(&format!("v{i}"), &image);
            image
        })
        .collect();
    let hosted_image = layout.image("amd64", &[(999, 6 * MIB)]);
    layout.tag("hosted", &hosted_image);
    tokio::task::block_in_place(|| {
        for i in 0..images.len() {
            layout.push(
                &format!("v{i}"),
                &format!("{}/lru/app:v{i}", registry.addr),
                &[],
            );
        }
    });

    let max = 14 * MIB;
    let server = TestMirror::start(MirrorOptions {
        extra_toml: upstream_toml(&registry.url(), "max_size = \"14MiB\"\nlow_water = 0.75"),
        ..MirrorOptions::default()
    })
    .await;
    // Hosted content first: it must survive every eviction below.
    let pushed = tokio::task::block_in_place(|| {
        skopeo_copy(
            &server,
            &format!("oci:{}:hosted", layout.dir.display()),
            &format!("docker://{}/internal/base:1", server.host_port()),
        )
    });
    assert!(pushed.status.success(), "{}", text(&pushed));
    let hosted_bytes = store_bytes(&server).await;

    let client = server.anonymous();
    // Sample the store's size all along: eviction runs after the store grows,
    // so the peak may pass the limit by at most the blob that pushed it over.
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let store = server.mirror().store().clone();
        let peak = peak.clone();
        tokio::spawn(async move {
            for _ in 0..5_000 {
                let size = store.totals().await.map_or(0, |t| t.bytes);
                peak.fetch_max(size, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let mut series = Vec::new();
    for (i, image) in images.iter().enumerate() {
        let layer = &image.layers[0].digest;
        let (status, digest) = get(
            &client,
            server.url(&format!("/v2/up.test/lru/app/blobs/{layer}")),
        )
        .await
        .unwrap();
        assert_eq!((status, &digest), (200, layer));
        wait_for(
            "eviction to bring the store under the limit",
            Duration::from_secs(30),
            || async { store_bytes(&server).await <= max },
        )
        .await;
        let size = store_bytes(&server).await;
        series.push(size);
        println!(
            "after pulling layer {i}: store {:.1} MiB (limit {} MiB)",
            size as f64 / MIB as f64,
            max / MIB
        );
    }
    assert!(series.iter().all(|&s| s <= max), "{series:?}");
    sampler.abort();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        peak <= max + 4 * MIB + MIB / 2,
        "peak {peak} passed the limit by more than one blob"
    );
    assert!(
        store_bytes(&server).await >= hosted_bytes,
        "hosted content was evicted"
    );
    let totals = server.mirror().store().totals().await.unwrap();
    assert_eq!(totals.hosted_bytes, hosted_bytes);

    // The oldest layer went first; asking again fetches it again, correctly.
    let first = &images[0].layers[0].digest;
    assert!(
        server
            .mirror()
            .store()
            .blobs()
            .size(&first.parse().unwrap())
            .await
            .unwrap()
            .is_none()
    );
    let newest = &images[7].layers[0].digest;
    assert!(
        server
            .mirror()
            .store()
            .blobs()
            .size(&newest.parse().unwrap())
            .await
            .unwrap()
            .is_some()
    );
    let out = root.path().join("refetched");
    let copied = tokio::task::block_in_place(|| {
        skopeo_copy(
            &server,
            &format!("docker://{}/up.test/lru/app:v0", server.host_port()),
            &format!("oci:{}:v0", out.display()),
        )
    });
    assert!(copied.status.success(), "{}", text(&copied));
    let metrics = server.metrics().await;
    let evictions: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("mirror_evictions_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(evictions >= 4, "{metrics}");
    println!(
        "eviction: limit {} MiB, peak {:.1} MiB, low water {:.1} MiB, {evictions} blobs evicted, settled sizes (MiB) {:?}",
        max / MIB,
        peak as f64 / MIB as f64,
        max as f64 * 0.75 / MIB as f64,
        series
            .iter()
            .map(|s| format!("{:.1}", *s as f64 / MIB as f64))
            .collect::<Vec<_>>()
    );
    server.stop().await;
}

/// Mounts a tmpfs of `size` at `dir`; unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let output = run(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir),
            Duration::from_secs(30),
        );
        assert!(
            output.status.success(),
            "this test mounts a small tmpfs to fill the disk and needs root (scripts/test.sh runs as root in CI): {}",
            text(&output)
        );
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_fails_one_fill_cleanly_and_hits_keep_being_served() {
    let root = tempfile::tempdir().unwrap();
    let registry = DockerRegistry::start(Auth::None);
    let mut layout = Layout::new(&root.path().join("layout"));
    let image = layout.image("amd64", &[(7, 200 * 1024), (8, 48 * MIB)]);
    layout.tag("1", &image);
    tokio::task::block_in_place(|| layout.push("1", &format!("{}/full/app:1", registry.addr), &[]));

    let _disk = Tmpfs::mount(&root.path().join("data"), "24m");
    let pki = TestPki::create(root.path());
    let server = TestMirror::start_with_pki(
        root,
        pki,
        MirrorOptions {
            extra_toml: upstream_toml(&registry.url(), ""),
            ..MirrorOptions::default()
        },
    )
    .await;
    let client = server.anonymous();
    let small = &image.layers[0].digest;
    let big = &image.layers[1].digest;
    let url = |digest: &str| server.url(&format!("/v2/up.test/full/app/blobs/{digest}"));
    assert_eq!(
        get(&client, url(small)).await.unwrap(),
        (200, small.clone())
    );

    // Either an error status or a body cut off before its end: never a 200 with the blob.
    if let Ok((status, digest)) = get(&client, url(big)).await {
        assert!(
            status != 200 || &digest != big,
            "a 48 MiB blob fit in 24 MiB?"
        );
    }
    let data = server.root.path().join("data");
    wait_for(
        "the partial file to be removed",
        Duration::from_secs(30),
        || {
            let tmp = data.join("tmp");
            async move { std::fs::read_dir(tmp).map_or(0, |d| d.count()) == 0 }
        },
    )
    .await;
    assert!(
        server
            .mirror()
            .store()
            .blobs()
            .size(&big.parse().unwrap())
            .await
            .unwrap()
            .is_none()
    );

    // Hits still work, and so does everything else that fits.
    assert_eq!(
        get(&client, url(small)).await.unwrap(),
        (200, small.clone())
    );
    let manifest = client
        .get(server.url("/v2/up.test/full/app/manifests/1"))
        .header("accept", common::registry::ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(manifest.status(), 200);
    let report = server.mirror().store().verify(false).await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    server.stop().await;
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Reads a cached blob through the mirror and has its access time written,
/// then waits for the clock's next second: access times are kept in seconds,
/// so each read is strictly more recent than the one before.
async fn read_in_turn(server: &TestMirror, digest: &str) {
    let url = server.url(&format!("/v2/up.test/gc/app/blobs/{digest}"));
    let (status, got) = get(&server.anonymous(), url).await.unwrap();
    assert_eq!((status, got.as_str()), (200, digest));
    server
        .mirror()
        .store()
        .blobs()
        .flush_access()
        .await
        .unwrap();
    let read_at = unix_secs();
    wait_for("the next second", Duration::from_secs(3), || async {
        unix_secs() > read_at
    })
    .await;
}

fn blob_file(data_dir: &Path, digest: &str) -> std::path::PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    data_dir.join("blobs/sha256").join(&hex[..2]).join(hex)
}

/// `mirror cache gc` as the operator runs it, on a stopped server's data dir.
fn cache_gc(server_root: &Path, args: &[&str]) -> String {
    let out = tokio::task::block_in_place(|| {
        run(
            Command::new(common::process::mirror_bin())
                .args(["cache", "gc", "--config"])
                .arg(server_root.join("mirror.toml"))
                .args(args)
                .env("RUST_LOG", "warn"),
            Duration::from_secs(120),
        )
    });
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cache_gc_dry_run_deletes_nothing_and_target_evicts_least_recently_used_first() {
    let root = tempfile::tempdir().unwrap();
    let registry = DockerRegistry::start(Auth::None);
    let mut layout = Layout::new(&root.path().join("layout"));
    let blobs: Vec<(String, u64)> = (0..4u64)
        .map(|i| {
            let image = layout.image("amd64", &[(300 + i, MIB)]);
            layout.tag(&format!("v{i}"), &image);
            (image.layers[0].digest.clone(), image.layers[0].size)
        })
        .collect();
    let layers: Vec<&String> = blobs.iter().map(|(digest, _)| digest).collect();
    tokio::task::block_in_place(|| {
        for i in 0..layers.len() {
            let dest = format!("{}/gc/app:v{i}", registry.addr);
            layout.push(&format!("v{i}"), &dest, &[]);
        }
    });
    let server = TestMirror::start(MirrorOptions {
        extra_toml: upstream_toml(&registry.url(), ""),
        ..MirrorOptions::default()
    })
    .await;
    // Least recently used first: 1, 2, 3, then 0, read again last.
    for digest in layers.iter().chain([&layers[0]]) {
        read_in_turn(&server, digest).await;
    }
    let totals = server.mirror().store().totals().await.unwrap();
    assert_eq!(totals.blobs, 4, "only the four layers are stored");
    assert_eq!(
        totals.bytes,
        blobs.iter().map(|(_, size)| size).sum::<u64>()
    );
    // Room for two layers: layers 1 and 2 must go, 3 and 0 stay.
    let target = (totals.bytes - blobs[1].1 - blobs[2].1).to_string();
    let (root, _pki) = server.stop().await;
    let data_dir = root.path().join("data");
    let leftover = data_dir.join("tmp/left-by-a-crash");
    std::fs::write(&leftover, b"partial fill").unwrap();

    let report = cache_gc(root.path(), &["--dry-run", "--target", &target]);
    assert!(
        report.contains("sweep: would remove") && report.contains(", 1 temp files"),
        "{report}"
    );
    assert!(report.contains("evict: would remove 2 blobs"), "{report}");
    for digest in &layers {
        assert!(
            blob_file(&data_dir, digest).is_file(),
            "dry run deleted {digest}"
        );
    }
    assert!(leftover.is_file(), "dry run deleted a temp file");

    let report = cache_gc(root.path(), &["--target", &target]);
    assert!(report.contains("evict: removed 2 blobs"), "{report}");
    assert!(!leftover.exists(), "{report}");
    for (i, digest) in layers.iter().enumerate() {
        let kept = blob_file(&data_dir, digest).is_file();
        assert_eq!(
            kept,
            i == 0 || i == 3,
            "layer {i} ({digest}): kept {kept}\n{report}"
        );
    }
    let after = cache_gc(root.path(), &["--dry-run", "--target", &target]);
    assert!(after.contains("evict: would remove 0 blobs"), "{after}");
}
