//! Pull-through with real clients: skopeo (mTLS through a certs.d folder) and
//! curl against a real docker-registry upstream, online and then offline.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::process::{run, skopeo, text, tool};
use common::registry::layout::{Built, Layout};
use common::registry::{Auth, DockerRegistry, upstream_digest};
use common::{MirrorOptions, TestMirror};

fn inspect(mirror: &TestMirror, reference: &str, extra: &[&str]) -> serde_json::Value {
    let certs = mirror.certs_d.display().to_string();
    let image = format!("docker://{}/{reference}", mirror.host_port());
    let mut args = extra.to_vec();
    args.extend(["inspect", "--cert-dir", &certs, &image]);
    serde_json::from_str(&skopeo(&args)).expect("inspect JSON")
}

/// Copies through the mirror into an OCI layout; returns the top manifest digest there.
fn copy_to_oci(mirror: &TestMirror, reference: &str, out: &Path, all: bool) -> String {
    let certs = mirror.certs_d.display().to_string();
    let src = format!("docker://{}/{reference}", mirror.host_port());
    let dest = format!("oci:{}:t", out.display());
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let mut args = vec!["copy", "--src-cert-dir", &certs];
    if all {
        args.push("--all");
    }
    args.extend([src.as_str(), dest.as_str()]);
    skopeo(&args);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).expect("index.json"))
            .unwrap();
    index["manifests"][0]["digest"].as_str().unwrap().to_owned()
}

/// Copies through the mirror into a `dir:` (manifest kept byte for byte); returns its digest.
fn copy_to_dir(mirror: &TestMirror, reference: &str, out: &Path) -> String {
    let certs = mirror.certs_d.display().to_string();
    let src = format!("docker://{}/{reference}", mirror.host_port());
    std::fs::create_dir_all(out).unwrap();
    let dest = format!("dir:{}", out.display());
    skopeo(&["copy", "--src-cert-dir", &certs, &src, &dest]);
    let manifest = std::fs::read(out.join("manifest.json")).expect("manifest.json");
    format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&manifest))
    )
}

#[derive(Debug)]
struct Seeded {
    small: Built,
    amd64: Built,
    arm64: Built,
    multi: Built,
}

fn seed(registry: &DockerRegistry, dir: &Path) -> Seeded {
    let mut layout = Layout::new(dir);
    let small = layout.image("amd64", &[(1, 1000), (2, 300_000)]);
    let amd64 = layout.image("amd64", &[(3, 50_000)]);
    let arm64 = layout.image("arm64", &[(4, 60_000)]);
    let multi = layout.index(&[("amd64", &amd64), ("arm64", &arm64)]);
    let docker = layout.image("amd64", &[(5, 20_000)]);
    layout.tag("small", &small);
    layout.tag("multi", &multi);
    layout.tag("docker", &docker);
    layout.push("small", &format!("{}/team/small:v1", registry.addr), &[]);
    layout.push("small", &format!("{}/library/small:v1", registry.addr), &[]);
    layout.push(
        "multi",
        &format!("{}/team/multi:v1", registry.addr),
        &["--all"],
    );
    layout.push(
        "docker",
        &format!("{}/team/docker:v1", registry.addr),
        &["--format", "v2s2"],
    );
    Seeded {
        small,
        amd64,
        arm64,
        multi,
    }
}

fn mirror_options(upstream: &str) -> MirrorOptions {
    MirrorOptions {
        extra_toml: format!(
            r#"
[[registry.upstream]]
name = "plain.test"
url = "{upstream}"
tag_ttl = "0s"

[[registry.upstream]]
name = "hub.test"
url = "{upstream}"
default = true
library_prefix = true
"#
        ),
        ..MirrorOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pulls_every_image_through_the_mirror_online_and_offline() {
    let mut registry = DockerRegistry::start(Auth::None);
    let work = tempfile::tempdir().unwrap();
    let seeded = seed(&registry, &work.path().join("layout"));
    let up = registry.url();
    let docker_digest = upstream_digest(&up, "team/docker", "v1", None).await;
    assert_eq!(
        upstream_digest(&up, "team/small", "v1", None).await,
        seeded.small.digest
    );
    assert_eq!(
        upstream_digest(&up, "team/multi", "v1", None).await,
        seeded.multi.digest
    );

    let mirror = TestMirror::start(mirror_options(&up)).await;

    let small = inspect(&mirror, "plain.test/team/small:v1", &[]);
    assert_eq!(small["Digest"], seeded.small.digest);
    let arm = inspect(
        &mirror,
        "plain.test/team/multi:v1",
        &["--override-arch", "arm64"],
    );
    // skopeo names the index's digest and the chosen instance's layers.
    assert_eq!(arm["Digest"], seeded.multi.digest, "{arm}");
    assert_eq!(arm["Architecture"], "arm64");
    assert_eq!(
        arm["Layers"],
        serde_json::json!([seeded.arm64.layers[0].digest])
    );
    let amd = inspect(
        &mirror,
        "plain.test/team/multi:v1",
        &["--override-arch", "amd64"],
    );
    assert_eq!(
        amd["Layers"],
        serde_json::json!([seeded.amd64.layers[0].digest])
    );
    // Docker Hub style (library_prefix): a single-component name goes to library/.
    assert_eq!(
        inspect(&mirror, "small:v1", &[])["Digest"],
        seeded.small.digest
    );

    let pulls = |round: &str| {
        let out = work.path().join(round);
        let by_digest = format!("plain.test/team/small@{}", seeded.small.digest);
        [
            (
                copy_to_oci(
                    &mirror,
                    "plain.test/team/small:v1",
                    &out.join("small"),
                    false,
                ),
                seeded.small.digest.clone(),
            ),
            (
                copy_to_oci(
                    &mirror,
                    "plain.test/team/multi:v1",
                    &out.join("multi"),
                    true,
                ),
                seeded.multi.digest.clone(),
            ),
            (
                copy_to_dir(&mirror, "plain.test/team/docker:v1", &out.join("docker")),
                docker_digest.clone(),
            ),
            (
                copy_to_oci(&mirror, &by_digest, &out.join("by-digest"), false),
                seeded.small.digest.clone(),
            ),
            (
                copy_to_oci(
                    &mirror,
                    "hub.test/library/small:v1",
                    &out.join("hub"),
                    false,
                ),
                seeded.small.digest.clone(),
            ),
        ]
    };
    for (got, want) in pulls("online") {
        assert_eq!(got, want);
    }
    let certs = mirror.certs_d.display().to_string();
    let list_tags = || -> serde_json::Value {
        let image = format!("docker://{}/plain.test/team/multi", mirror.host_port());
        serde_json::from_str(&skopeo(&["list-tags", "--cert-dir", &certs, &image])).unwrap()
    };
    assert_eq!(list_tags()["Tags"], serde_json::json!(["v1"]));

    registry.stop();
    for (got, want) in pulls("offline") {
        assert_eq!(got, want, "offline pulls serve what was cached");
    }
    let arm = inspect(
        &mirror,
        "plain.test/team/multi:v1",
        &["--override-arch", "arm64"],
    );
    assert_eq!(
        arm["Layers"],
        serde_json::json!([seeded.arm64.layers[0].digest])
    );
    assert_eq!(
        list_tags()["Tags"],
        serde_json::json!(["v1"]),
        "tags seen before are listed offline"
    );
    mirror.stop().await;
}

fn curl(mirror: &TestMirror, args: &[&str]) -> (String, String) {
    let escape = |p: &Path| p.display().to_string().replace(':', "\\:");
    let mut command = Command::new(tool("curl"));
    command
        .args(["-sS", "--cacert"])
        .arg(mirror.certs_d.join("ca.crt"))
        .arg("--cert")
        .arg(escape(&mirror.certs_d.join("client.cert")))
        .arg("--key")
        .arg(mirror.certs_d.join("client.key"))
        .args(["-D", "-", "-o", "-"])
        .args(args);
    let output = run(&mut command, Duration::from_secs(60));
    assert!(output.status.success(), "curl {args:?}:\n{}", text(&output));
    let all = String::from_utf8_lossy(&output.stdout).into_owned();
    let (headers, body) = all.split_once("\r\n\r\n").unwrap_or((&all, ""));
    (headers.to_ascii_lowercase(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_sees_registry_headers_head_before_any_get_and_ranges_of_cold_blobs() {
    let registry = DockerRegistry::start(Auth::None);
    let work = tempfile::tempdir().unwrap();
    let seeded = seed(&registry, &work.path().join("layout"));
    let mirror = TestMirror::start(mirror_options(&registry.url())).await;
    let url = |p: &str| mirror.url(&format!("/v2/plain.test/team/{p}"));

    // A cold HEAD asks upstream instead of answering 404.
    let (headers, _) = curl(
        &mirror,
        &[
            "-I",
            "-H",
            "Accept: application/vnd.oci.image.index.v1+json",
            &url("multi/manifests/v1"),
        ],
    );
    assert!(headers.starts_with("http/2 200"), "{headers}");
    assert!(
        headers.contains(&format!("docker-content-digest: {}", seeded.multi.digest)),
        "{headers}"
    );
    assert!(
        headers.contains("content-type: application/vnd.oci.image.index.v1+json"),
        "{headers}"
    );
    let layer = &seeded.small.layers[1];
    let (headers, _) = curl(
        &mirror,
        &["-I", &url(&format!("small/blobs/{}", layer.digest))],
    );
    assert!(headers.starts_with("http/2 200"), "{headers}");
    assert!(
        headers.contains(&format!("content-length: {}", layer.size)),
        "{headers}"
    );

    let (headers, body) = curl(&mirror, &[&url("small/manifests/v1")]);
    assert!(
        headers.contains("content-type: application/vnd.oci.image.manifest.v1+json"),
        "{headers}"
    );
    assert!(headers.contains(&format!("docker-content-digest: {}", seeded.small.digest)));
    assert!(headers.contains(&format!("etag: \"{}\"", seeded.small.digest)));
    assert!(headers.contains(&format!("content-length: {}", seeded.small.size)));
    assert!(headers.contains("docker-distribution-api-version: registry/2.0"));
    assert!(body.contains(&layer.digest));

    // A Range request on a cold blob: 206 from the fill.
    let (headers, _) = curl(
        &mirror,
        &[
            "-r",
            "10-19",
            &url(&format!("small/blobs/{}", layer.digest)),
        ],
    );
    assert!(headers.starts_with("http/2 206"), "{headers}");
    assert!(
        headers.contains(&format!("content-range: bytes 10-19/{}", layer.size)),
        "{headers}"
    );
    assert!(headers.contains("content-length: 10"), "{headers}");
    // And from the store once complete.
    common::wait_for("the blob to be stored", Duration::from_secs(20), || async {
        let digest = layer.digest.parse().unwrap();
        mirror
            .mirror()
            .store()
            .blobs()
            .size(&digest)
            .await
            .unwrap()
            .is_some()
    })
    .await;
    let (headers, _) = curl(
        &mirror,
        &["-r", "-5", &url(&format!("small/blobs/{}", layer.digest))],
    );
    assert!(
        headers.contains(&format!(
            "content-range: bytes {}-{}/{}",
            layer.size - 5,
            layer.size - 1,
            layer.size
        )),
        "{headers}"
    );

    // A Docker schema2 manifest keeps its own Content-Type.
    let v2s2 = "application/vnd.docker.distribution.manifest.v2+json";
    let (headers, body) = curl(
        &mirror,
        &[
            "-H",
            &format!("Accept: {v2s2}"),
            &url("docker/manifests/v1"),
        ],
    );
    assert!(
        headers.contains(&format!("content-type: {v2s2}")),
        "{headers}"
    );
    assert!(
        body.contains("application/vnd.docker.container.image.v1+json"),
        "{body}"
    );

    // containerd's hosts.toml mirrors name the upstream with ?ns=.
    let (headers, _) = curl(
        &mirror,
        &[
            "-I",
            &mirror.url("/v2/team/small/manifests/v1?ns=plain.test"),
        ],
    );
    assert!(
        headers.contains(&format!("docker-content-digest: {}", seeded.small.digest)),
        "{headers}"
    );
    mirror.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_tag_is_seen_after_its_ttl_and_the_stale_copy_serves_when_upstream_is_down() {
    let mut registry = DockerRegistry::start(Auth::None);
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(&work.path().join("layout"));
    let first = layout.image("amd64", &[(10, 1000)]);
    let second = layout.image("amd64", &[(11, 1000)]);
    layout.tag("first", &first);
    layout.tag("second", &second);
    layout.push(
        "first",
        &format!("{}/team/moving:latest", registry.addr),
        &[],
    );
    let mirror = TestMirror::start(mirror_options(&registry.url())).await;
    let pulled = copy_to_oci(
        &mirror,
        "plain.test/team/moving:latest",
        &work.path().join("first"),
        false,
    );
    assert_eq!(pulled, first.digest);
    layout.push(
        "second",
        &format!("{}/team/moving:latest", registry.addr),
        &[],
    );
    assert_eq!(
        inspect(&mirror, "plain.test/team/moving:latest", &[])["Digest"],
        second.digest
    );
    registry.stop();
    assert_eq!(
        inspect(&mirror, "plain.test/team/moving:latest", &[])["Digest"],
        second.digest
    );
    // The older manifest, pulled by digest, is a hit too.
    let by_digest = format!("plain.test/team/moving@{}", first.digest);
    assert_eq!(
        copy_to_oci(&mirror, &by_digest, &work.path().join("old"), false),
        first.digest
    );
    mirror.stop().await;
}
