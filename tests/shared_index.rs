//! Two mirrors on one PostgreSQL index and one Garage bucket, configured with
//! exactly the `[index]` and `[storage]` keys operators write: what one
//! fetched through is served by the other with the upstream gone, and what
//! one was pushed is pulled from the other. Both run in this test process,
//! each with its own data dir, PKI and store; they share nothing but the
//! database and the bucket.

mod common;

use common::garage::Garage;
use common::postgres::Postgres;
use common::registry::{Auth, DockerRegistry};
use common::{MirrorOptions, TestMirror};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde_json::json;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn sha(bytes: &[u8]) -> String {
    format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes))
    )
}

/// POST then PUT, as every registry accepts; `origin` is `http(s)://host:port`.
async fn push_blob(client: &reqwest::Client, origin: &str, repo: &str, bytes: &[u8]) {
    let started = client
        .post(format!("{origin}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202, "POST upload to {origin}");
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    let location = if location.starts_with("http") {
        location
    } else {
        format!("{origin}{location}")
    };
    let separator = if location.contains('?') { '&' } else { '?' };
    let put = client
        .put(format!("{location}{separator}digest={}", sha(bytes)))
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201, "PUT upload to {origin}");
}

/// An image (a config and one layer) pushed to `repo:tag`; its manifest.
async fn push_image(
    client: &reqwest::Client,
    origin: &str,
    repo: &str,
    tag: &str,
    layer: &[u8],
) -> Vec<u8> {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    push_blob(client, origin, repo, config).await;
    push_blob(client, origin, repo, layer).await;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config), "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(layer), "size": layer.len() }],
    }))
    .unwrap();
    let put = client
        .put(format!("{origin}/v2/{repo}/manifests/{tag}"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201, "PUT manifest to {origin}");
    manifest
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, Vec<u8>) {
    let response = client
        .get(url)
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_mirrors_on_one_database_and_bucket_serve_each_others_fills_and_pushes() {
    let postgres = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let garage = tokio::task::spawn_blocking(Garage::start).await.unwrap();
    let mut upstream = DockerRegistry::start(Auth::None);
    let layer: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let manifest = push_image(
        &reqwest::Client::new(),
        &upstream.url(),
        "team/small",
        "v1",
        &layer,
    )
    .await;

    let options = || MirrorOptions {
        extra_toml: format!(
            "[index]\nurl = \"{}\"\n\n{}\n\
             [[registry.upstream]]\nname = \"up.test\"\nurl = \"{}\"\n",
            postgres.url(),
            garage.storage_toml(),
            upstream.url()
        ),
        ..MirrorOptions::default()
    };
    let first = TestMirror::start(options()).await;
    let second = TestMirror::start(options()).await;

    // Pull-through on the first.
    let (status, body) = get(
        &first.with_cert(),
        &first.url("/v2/up.test/team/small/manifests/v1"),
    )
    .await;
    assert_eq!((status, body.as_slice()), (200, manifest.as_slice()));
    let layer_path = format!("/v2/up.test/team/small/blobs/{}", sha(&layer));
    let (status, body) = get(&first.with_cert(), &first.url(&layer_path)).await;
    assert_eq!(status, 200);
    assert!(body == layer, "the first mirror serves the layer");

    // With the upstream gone, the second serves what the first fetched.
    upstream.stop();
    let by_digest = format!("/v2/up.test/team/small/manifests/{}", sha(&manifest));
    let (status, body) = get(&second.with_cert(), &second.url(&by_digest)).await;
    assert_eq!((status, body.as_slice()), (200, manifest.as_slice()));
    let (status, body) = get(&second.with_cert(), &second.url(&layer_path)).await;
    assert_eq!(status, 200);
    assert!(body == layer, "the second mirror serves the first's fill");

    // A push to the first is pulled from the second, by tag and by digest.
    let pushed_layer: Vec<u8> = (0..70_000u32).map(|i| (i % 239) as u8).collect();
    let pushed = push_image(
        &first.with_cert(),
        &first.url(""),
        "hosted/app",
        "1.0",
        &pushed_layer,
    )
    .await;
    let (status, body) = get(
        &second.with_cert(),
        &second.url("/v2/hosted/app/manifests/1.0"),
    )
    .await;
    assert_eq!((status, body.as_slice()), (200, pushed.as_slice()));
    let pushed_path = format!("/v2/hosted/app/blobs/{}", sha(&pushed_layer));
    let (status, body) = get(&second.with_cert(), &second.url(&pushed_path)).await;
    assert_eq!(status, 200);
    assert!(body == pushed_layer, "the second mirror serves the push");
    let (status, tags) = get(&second.with_cert(), &second.url("/v2/hosted/app/tags/list")).await;
    assert_eq!(status, 200);
    let tags: serde_json::Value = serde_json::from_slice(&tags).unwrap();
    assert_eq!(tags["tags"], json!(["1.0"]));

    // The rows are in PostgreSQL and the bytes in the bucket, not in a data dir.
    for mirror in [&first, &second] {
        let data = mirror.root.path().join("data");
        assert!(!data.join("mirror.db").exists());
    }
    let bucket = garage.client();
    for bytes in [&layer, &pushed_layer] {
        let digest = sha(bytes);
        let hex = &digest["sha256:".len()..];
        let key = Path::from(format!("blobs/sha256/{}/{hex}", &hex[..2]));
        let object = bucket.head(&key).await.expect("the object in the bucket");
        assert_eq!(object.size as usize, bytes.len());
    }
    let pool = sqlx::PgPool::connect(&postgres.url()).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM blobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 5, "two manifests, two layers, the pushed config");
    pool.close().await;

    first.stop().await;
    second.stop().await;
    garage.stop();
    postgres.stop();
}
