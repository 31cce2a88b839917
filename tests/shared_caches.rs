//! Two mirrors on one PostgreSQL index and one Garage bucket, each with its
//! hot in-memory copies of index rows (tags, manifests, blobs a repository
//! holds): what one replica changes, the other serves at once, not from a
//! copy it made before. Both run in this test process; they share nothing but
//! the database and the bucket.

mod common;

use std::time::{Duration, Instant};

use common::garage::Garage;
use common::go::{Mode, ModuleVersion, StaticProxy, write_tree};
use common::postgres::Postgres;
use common::{MirrorOptions, TestMirror};
use serde_json::json;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The issue's promise: a tag pushed on one replica is served by another within a second.
const WITHIN: Duration = Duration::from_secs(1);

fn sha(bytes: &[u8]) -> String {
    format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes))
    )
}

/// POST then PUT, as every registry accepts; `origin` is `https://host:port`.
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
async fn push_image(mirror: &TestMirror, repo: &str, tag: &str, layer: &[u8]) -> Vec<u8> {
    let client = mirror.with_cert();
    let origin = mirror.url("");
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    push_blob(&client, &origin, repo, config).await;
    push_blob(&client, &origin, repo, layer).await;
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

async fn get(mirror: &TestMirror, path: &str) -> (u16, Vec<u8>) {
    let response = mirror
        .with_cert()
        .get(mirror.url(path))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

async fn delete(mirror: &TestMirror, path: &str) {
    let response = mirror
        .with_cert()
        .delete(mirror.url(path))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "DELETE {path}");
}

/// GETs `path` until it answers `expected` (status and body), for at most
/// `WITHIN`; how long that took.
async fn served_within(
    mirror: &TestMirror,
    path: &str,
    expected: (u16, &[u8]),
) -> Result<Duration, (u16, Vec<u8>)> {
    let start = Instant::now();
    loop {
        let (status, body) = get(mirror, path).await;
        if status == expected.0 && (status != 200 || body == expected.1) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > WITHIN {
            return Err((status, body));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The first serves `path` as `expected`, so does the second within a second.
async fn both_serve(first: &TestMirror, second: &TestMirror, path: &str, expected: (u16, &[u8])) {
    let (status, body) = get(first, path).await;
    assert_eq!(status, expected.0, "first mirror: {path}");
    if status == 200 {
        assert!(body == expected.1, "first mirror: {path}");
    }
    match served_within(second, path, expected).await {
        Ok(took) => eprintln!("second mirror followed {path} in {took:?}"),
        Err((status, body)) => panic!(
            "second mirror still answers {path} with {status} ({} bytes) after {WITHIN:?}, expected {}",
            body.len(),
            expected.0
        ),
    }
}

struct Cluster {
    postgres: Postgres,
    garage: Garage,
    first: TestMirror,
    second: TestMirror,
}

impl Cluster {
    async fn start() -> Cluster {
        Cluster::start_with("").await
    }

    /// Two replicas configured with `extra` besides the index and the bucket.
    async fn start_with(extra: &str) -> Cluster {
        let postgres = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
        let garage = tokio::task::spawn_blocking(Garage::start).await.unwrap();
        let options = || MirrorOptions {
            extra_toml: format!(
                "[index]\nurl = \"{}\"\n\n{}\n{extra}",
                postgres.url(),
                garage.storage_toml()
            ),
            ..MirrorOptions::default()
        };
        let first = TestMirror::start(options()).await;
        let second = TestMirror::start(options()).await;
        Cluster {
            postgres,
            garage,
            first,
            second,
        }
    }

    async fn stop(self) {
        self.first.stop().await;
        self.second.stop().await;
        self.garage.stop();
        self.postgres.stop();
    }
}

fn layer(seed: u32) -> Vec<u8> {
    (0..20_000u32).map(|i| ((i + seed) % 241) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_pushed_again_on_one_replica_is_served_by_the_other_within_a_second() {
    let cluster = Cluster::start().await;
    let (first, second) = (&cluster.first, &cluster.second);
    let one = push_image(first, "team/app", "v1", &layer(1)).await;
    // The second reads the tag, and from then on answers it from memory.
    for _ in 0..2 {
        assert_eq!(
            get(second, "/v2/team/app/manifests/v1").await,
            (200, one.clone())
        );
    }
    let two = push_image(first, "team/app", "v1", &layer(2)).await;
    assert_ne!(one, two);
    both_serve(first, second, "/v2/team/app/manifests/v1", (200, &two)).await;
    // And back: the second's copy of the first push is not what it serves.
    let three = push_image(first, "team/app", "v1", &layer(1)).await;
    assert_eq!(three, one);
    both_serve(first, second, "/v2/team/app/manifests/v1", (200, &one)).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_tag_or_blob_deleted_on_one_replica_is_gone_on_the_other_within_a_second() {
    let cluster = Cluster::start().await;
    let (first, second) = (&cluster.first, &cluster.second);
    let one = push_image(first, "team/app", "v1", &layer(1)).await;
    let two = push_image(first, "team/app", "v2", &layer(2)).await;
    let by_digest = |m: &[u8]| format!("/v2/team/app/manifests/{}", sha(m));
    let blob = format!("/v2/team/app/blobs/{}", sha(&layer(2)));
    for (path, body) in [
        ("/v2/team/app/manifests/v1".to_owned(), &one),
        ("/v2/team/app/manifests/v2".to_owned(), &two),
        (by_digest(&one), &one),
        (by_digest(&two), &two),
    ] {
        for _ in 0..2 {
            assert_eq!(get(second, &path).await, (200, body.clone()), "{path}");
        }
    }
    for _ in 0..2 {
        assert_eq!(get(second, &blob).await, (200, layer(2)));
    }

    // A tag: the manifest stays.
    delete(first, "/v2/team/app/manifests/v1").await;
    both_serve(first, second, "/v2/team/app/manifests/v1", (404, b"")).await;
    assert_eq!(get(second, &by_digest(&one)).await, (200, one.clone()));

    // A manifest, and the tag that named it with it.
    delete(first, &by_digest(&two)).await;
    both_serve(first, second, &by_digest(&two), (404, b"")).await;
    both_serve(first, second, "/v2/team/app/manifests/v2", (404, b"")).await;

    // A blob the repository held (its bytes stay for gc; the link goes).
    delete(first, &blob).await;
    both_serve(first, second, &blob, (404, b"")).await;
    cluster.stop().await;
}

async fn listeners(admin: &sqlx::PgPool) -> Vec<i32> {
    sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN%' ORDER BY pid")
        .fetch_all(admin)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_listener_reconnects_drops_its_copies_and_follows_again() {
    let cluster = Cluster::start().await;
    let (first, second) = (&cluster.first, &cluster.second);
    let one = push_image(first, "team/app", "v1", &layer(1)).await;
    let two = push_image(first, "team/app", "v2", &layer(2)).await;
    for _ in 0..2 {
        assert_eq!(
            get(second, "/v2/team/app/manifests/v1").await,
            (200, one.clone())
        );
    }
    let admin = sqlx::PgPool::connect(&cluster.postgres.admin_url())
        .await
        .unwrap();
    let killed = listeners(&admin).await;
    assert_eq!(killed.len(), 2, "one listener per replica");

    // A change no replica hears of (written behind their backs), then the
    // listeners' connections killed: once they listen again, what they
    // held is gone and the row is read anew.
    sqlx::query("UPDATE oci_tags SET digest = $1 WHERE repo = 'team/app' AND tag = 'v1'")
        .bind(sha(&two))
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'",
    )
    .execute(&admin)
    .await
    .unwrap();
    common::wait_for(
        "both replicas to listen again",
        Duration::from_secs(5),
        || async {
            let now = listeners(&admin).await;
            now.len() == 2 && now.iter().all(|pid| !killed.contains(pid))
        },
    )
    .await;
    match served_within(second, "/v2/team/app/manifests/v1", (200, &two)).await {
        Ok(took) => eprintln!("second mirror dropped its copy in {took:?}"),
        Err((status, _)) => panic!("second mirror still serves its old copy ({status})"),
    }

    // And notices flow again.
    push_image(first, "team/app", "v1", &layer(1)).await;
    both_serve(first, second, "/v2/team/app/manifests/v1", (200, &one)).await;
    admin.close().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_list_refreshed_on_one_replica_is_what_the_other_serves_with_the_upstream_down() {
    let tree = tempfile::tempdir().unwrap();
    let version = |v: &str| ModuleVersion::package("example.com/greet", v, "greet", v, &[]);
    write_tree(tree.path(), &[version("v1.0.0")]);
    let upstream = StaticProxy::start(tree.path()).await;
    let cluster = Cluster::start_with(&format!(
        "[go]\nupstream = \"{}\"\nsumdb = []\nverify = \"off\"\nlist_ttl = \"1s\"\n",
        upstream.url()
    ))
    .await;
    let (first, second) = (&cluster.first, &cluster.second);
    let list = "/example.com/greet/@v/list";
    let served = |mirror| async move {
        let (status, body) = common::go::get(mirror, list).await;
        (status.as_u16(), String::from_utf8(body).unwrap())
    };
    assert_eq!(served(second).await, (200, "v1.0.0\n".to_owned()));

    // A new version upstream; the first refreshes the list once it is stale.
    write_tree(tree.path(), &[version("v1.1.0")]);
    let refreshed = (200, "v1.0.0\nv1.1.0\n".to_owned());
    common::wait_for(
        "the first to refresh the list",
        Duration::from_secs(10),
        || {
            let refreshed = refreshed.clone();
            async move { served(first).await == refreshed }
        },
    )
    .await;
    // The second serves the first's answer, not its own stale memo: with the
    // upstream failing it would serve that memo otherwise.
    upstream.set_mode(Mode::Fail);
    assert_eq!(served(second).await, refreshed);
    cluster.stop().await;
}
