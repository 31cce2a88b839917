//! Blob misses share one streaming fill: one upstream request however many
//! clients ask, bytes verified before they are stored, memory flat for any size.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::process::{run, text, tool};
use common::registry::layout::Layout;
use common::registry::proxy::Proxy;
use common::registry::{Auth, DockerRegistry};
use common::{MirrorOptions, TestMirror};
use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};

fn options(upstream: &str) -> MirrorOptions {
    MirrorOptions {
        extra_toml: format!("[[registry.upstream]]\nname = \"up.test\"\nurl = \"{upstream}\"\n"),
        ..MirrorOptions::default()
    }
}

/// Streams a GET, returning (status, sha256 of the body or the body error).
async fn fetch(
    client: &reqwest::Client,
    url: &str,
    range: Option<&str>,
) -> (u16, Result<(String, u64), String>) {
    let mut request = client.get(url);
    if let Some(range) = range {
        request = request.header("range", range);
    }
    // A fill that fails early may reset the stream before the client sees headers.
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => return (0, Err(error.to_string())),
    };
    let status = response.status().as_u16();
    let mut stream = response.bytes_stream();
    let mut hasher = Sha256::new();
    let mut len = 0;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                hasher.update(&chunk);
                len += chunk.len() as u64;
            }
            Err(error) => return (status, Err(error.to_string())),
        }
    }
    (
        status,
        Ok((format!("sha256:{}", hex::encode(hasher.finalize())), len)),
    )
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cold_requests_for_a_blob_make_exactly_one_upstream_request() {
    let registry = DockerRegistry::start(Auth::None);
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(work.path());
    let image = layout.image("amd64", &[(21, 24 << 20)]);
    layout.tag("big", &image);
    layout.push("big", &format!("{}/team/fill:v1", registry.addr), &[]);
    let proxy = Proxy::start(&registry.url()).await;
    let mirror = TestMirror::start(options(&proxy.url())).await;
    let layer = image.layers[0].clone();
    let url = mirror.url(&format!("/v2/up.test/team/fill/blobs/{}", layer.digest));

    let client = mirror.with_cert();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(
            async move { fetch(&client, &url, None).await },
        ));
    }
    let (client2, url2) = (client.clone(), url.clone());
    let ranged =
        tokio::spawn(async move { fetch(&client2, &url2, Some("bytes=1000000-1000099")).await });
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body.unwrap(), (layer.digest.clone(), layer.size));
    }
    let (status, body) = ranged.await.unwrap();
    assert_eq!(status, 206);
    assert_eq!(body.unwrap().1, 100);
    assert_eq!(
        proxy.count("GET", &format!("/blobs/{}", layer.digest)),
        1,
        "one upstream GET for 9 concurrent clients: {:?}",
        proxy.seen()
    );
    // Later requests are hits: no upstream contact at all.
    proxy.clear();
    let (status, body) = fetch(&client, &url, None).await;
    assert_eq!((status, body.unwrap().0), (200, layer.digest.clone()));
    assert!(proxy.seen().is_empty(), "{:?}", proxy.seen());
    let metrics = mirror.metrics().await;
    assert!(
        metrics.contains(
            r#"mirror_upstream_requests_total{protocol="oci",upstream="up.test",result="ok"}"#
        ),
        "upstream requests are counted per upstream:\n{metrics}"
    );
    mirror.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_corrupted_upstream_is_refused_and_never_stored() {
    let registry = DockerRegistry::start(Auth::None);
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(work.path());
    let image = layout.image("amd64", &[(31, 2 << 20), (32, 1000)]);
    layout.tag("x", &image);
    layout.push("x", &format!("{}/team/bad:v1", registry.addr), &[]);
    let proxy = Proxy::start(&registry.url()).await;
    let mirror = TestMirror::start(options(&proxy.url())).await;
    let client = mirror.with_cert();
    for layer in &image.layers {
        proxy.corrupt_blob(&layer.digest);
        let url = mirror.url(&format!("/v2/up.test/team/bad/blobs/{}", layer.digest));
        let (_, body) = fetch(&client, &url, None).await;
        assert!(
            body.is_err(),
            "a corrupted {}-byte blob must not arrive complete: {body:?}",
            layer.size
        );
        let digest = layer.digest.parse().unwrap();
        assert_eq!(
            mirror.mirror().store().blobs().size(&digest).await.unwrap(),
            None
        );
        // Nothing bad was kept: once upstream is honest, the right bytes come.
        proxy.stop_corrupting();
        let (status, body) = fetch(&client, &url, None).await;
        assert_eq!((status, body.unwrap().0), (200, layer.digest.clone()));
    }
    let leftovers = std::fs::read_dir(mirror.root.path().join("data/tmp"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 0, "no temp files remain");
    mirror.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_layer_streams_with_flat_memory_and_pulls_offline() {
    let mut registry = DockerRegistry::start(Auth::None);
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(&work.path().join("layout"));
    let image = layout.image("amd64", &[(41, 100 << 20), (42, 4096)]);
    layout.tag("huge", &image);
    layout.push("huge", &format!("{}/team/huge:v1", registry.addr), &[]);
    let mirror = TestMirror::start(options(&registry.url())).await;
    let layer = image.layers[0].clone();
    assert!(layer.size >= 100 << 20);

    let baseline = rss_kib();
    let url = mirror.url(&format!("/v2/up.test/team/huge/blobs/{}", layer.digest));
    let client = mirror.with_cert();
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampled = peak.clone();
    let sampler = tokio::spawn(async move {
        for _ in 0..2400 {
            sampled.fetch_max(rss_kib(), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    });
    let (status, body) = fetch(&client, &url, None).await;
    assert_eq!(
        (status, body.unwrap()),
        (200, (layer.digest.clone(), layer.size))
    );
    let (status, body) = fetch(&client, &url, None).await;
    assert_eq!((status, body.unwrap().0), (200, layer.digest.clone()));
    sampler.abort();
    let grown_mib = (peak.load(Ordering::Relaxed).max(rss_kib()) - baseline) / 1024;
    assert!(
        grown_mib < 48,
        "memory grew by {grown_mib} MiB while streaming a 100 MiB blob"
    );

    let certs = mirror.certs_d.display().to_string();
    for round in ["online", "offline"] {
        if round == "offline" {
            registry.stop();
        }
        let out = work.path().join(round);
        std::fs::create_dir_all(&out).unwrap();
        let mut command = Command::new(tool("skopeo"));
        command
            .args(["--insecure-policy", "copy", "--src-cert-dir", &certs])
            .arg(format!(
                "docker://{}/up.test/team/huge:v1",
                mirror.host_port()
            ));
        command.arg(format!("oci:{}:t", out.display()));
        let output = run(&mut command, Duration::from_secs(300));
        assert!(output.status.success(), "{round} pull: {}", text(&output));
        let copied = out
            .join("blobs/sha256")
            .join(layer.digest.trim_start_matches("sha256:"));
        assert_eq!(std::fs::metadata(copied).unwrap().len(), layer.size);
    }
    mirror.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_content_is_fetched_again_not_served_from_stale_metadata() {
    let registry = DockerRegistry::start(Auth::None);
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(work.path());
    let image = layout.image("amd64", &[(81, 50_000)]);
    layout.tag("x", &image);
    layout.push("x", &format!("{}/team/evict:v1", registry.addr), &[]);
    let proxy = Proxy::start(&registry.url()).await;
    let mirror = TestMirror::start(options(&proxy.url())).await;
    let client = mirror.with_cert();
    let layer = mirror.url(&format!(
        "/v2/up.test/team/evict/blobs/{}",
        image.layers[0].digest
    ));
    let manifest = mirror.url(&format!(
        "/v2/up.test/team/evict/manifests/{}",
        image.digest
    ));
    for round in 0..2 {
        let (status, body) = fetch(&client, &manifest, None).await;
        assert_eq!(
            (status, body.unwrap().0),
            (200, image.digest.clone()),
            "round {round}"
        );
        let (status, body) = fetch(&client, &layer, None).await;
        assert_eq!(
            (status, body.unwrap().0),
            (200, image.layers[0].digest.clone()),
            "round {round}"
        );
        mirror.mirror().store().evict_to(0, false).await.unwrap();
    }
    assert_eq!(
        proxy.count("GET", &format!("/blobs/{}", image.layers[0].digest)),
        2
    );
    mirror.stop().await;
}
