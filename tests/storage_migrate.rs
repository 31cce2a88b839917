//! `mirror storage migrate` with the real binary: a single node filled
//! through its own HTTP API (Go files pulled through, an image and a
//! referrer pushed, the audit rows they leave) is copied into a real
//! PostgreSQL and Garage, interrupted once and run again, then served by a
//! mirror on the cluster config; a corrupt source blob is named and never
//! copied; a running node and a target that is the source are refused.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::garage::Garage;
use common::go::{ModuleVersion, StaticProxy, write_tree};
use common::postgres::Postgres;
use common::process::{Guard, mirror_bin, run, text};
use common::{MirrorOptions, PASSWORD, TestMirror, USER};
use futures_util::StreamExt;
use object_store::ObjectStore;
use serde_json::json;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const LIMIT: Duration = Duration::from_secs(120);

fn sha(bytes: &[u8]) -> String {
    format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes))
    )
}

/// `mirror storage migrate --config mirror.toml --to cluster.toml ARGS` in `root`.
fn migrate(root: &Path, args: &[&str]) -> std::process::Output {
    run(
        Command::new(mirror_bin())
            .current_dir(root)
            .args(["storage", "migrate", "--config", "mirror.toml"])
            .args(["--to", "cluster.toml"])
            .args(args)
            .env("MIRROR_SYSTEM_CONFIG", root.join("no-system-config.toml")),
        LIMIT,
    )
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// POST then PUT, monolithic.
async fn push_blob(client: &reqwest::Client, mirror: &TestMirror, repo: &str, bytes: &[u8]) {
    let put = client
        .post(mirror.url(&format!("/v2/{repo}/blobs/uploads/?digest={}", sha(bytes))))
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201, "push of a blob to {repo}");
}

async fn put_manifest(
    client: &reqwest::Client,
    mirror: &TestMirror,
    repo: &str,
    reference: &str,
    manifest: &[u8],
) {
    let put = client
        .put(mirror.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201, "PUT manifest {repo}:{reference}");
}

/// An image (config and `layers`) pushed to `repo:tag`; its manifest.
async fn push_image(mirror: &TestMirror, repo: &str, tag: &str, layers: &[&[u8]]) -> Vec<u8> {
    let client = mirror.with_cert();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    push_blob(&client, mirror, repo, config).await;
    for layer in layers {
        push_blob(&client, mirror, repo, layer).await;
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config), "size": config.len() },
        "layers": layers.iter().map(|layer| json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(layer), "size": layer.len()
        })).collect::<Vec<_>>(),
    }))
    .unwrap();
    put_manifest(&client, mirror, repo, tag, &manifest).await;
    manifest
}

/// An artifact whose subject is `subject` (for the referrers API); its manifest.
async fn push_referrer(mirror: &TestMirror, repo: &str, subject: &[u8]) -> Vec<u8> {
    let client = mirror.with_cert();
    let empty = b"{}";
    push_blob(&client, mirror, repo, empty).await;
    let artifact = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.sbom",
        "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": sha(empty), "size": 2 },
        "layers": [{ "mediaType": "application/vnd.oci.empty.v1+json", "digest": sha(empty), "size": 2 }],
        "subject": { "mediaType": OCI_MANIFEST, "digest": sha(subject), "size": subject.len() },
    }))
    .unwrap();
    put_manifest(&client, mirror, repo, &sha(&artifact), &artifact).await;
    artifact
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, Vec<u8>) {
    let response = client
        .get(url)
        .header("accept", OCI_MANIFEST)
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

/// Digests of the objects under `blobs/` in the bucket.
async fn objects(garage: &Garage) -> Vec<String> {
    let bucket = garage.client();
    let mut listing = bucket.list(Some(&object_store::path::Path::from("blobs")));
    let mut digests = Vec::new();
    while let Some(meta) = listing.next().await {
        let location = meta.unwrap().location.to_string();
        let hex = location.rsplit('/').next().unwrap().to_owned();
        digests.push(format!("sha256:{hex}"));
    }
    digests.sort();
    digests
}

async fn count(pool: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// `mirror.toml` with `data_dir` and `[index]`/`[storage]` for the cluster.
fn write_cluster_config(root: &Path, data_dir: &str, postgres: &Postgres, garage: &Garage) {
    let single = std::fs::read_to_string(root.join("mirror.toml")).unwrap();
    let cluster = single.replacen(
        "data_dir = \"data\"",
        &format!("data_dir = \"{data_dir}\""),
        1,
    );
    let cluster = format!(
        "{cluster}\n[index]\nurl = \"{}\"\n\n{}",
        postgres.url(),
        garage.storage_toml()
    );
    std::fs::write(root.join("cluster.toml"), cluster).unwrap();
}

fn go_options(upstream: &str) -> MirrorOptions {
    MirrorOptions {
        extra_toml: format!("[go]\nupstream = \"{upstream}\"\nsumdb = []\nverify = \"off\"\n"),
        ..MirrorOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_migrated_into_postgres_and_garage_serves_the_same_bytes_and_a_second_run_copies_nothing()
 {
    let postgres = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let garage = tokio::task::spawn_blocking(Garage::start).await.unwrap();
    let tree = tempfile::tempdir().unwrap();
    write_tree(
        tree.path(),
        &[ModuleVersion::package(
            "example.com/greet",
            "v1.0.0",
            "greet",
            "hello",
            &[],
        )],
    );
    let proxy = StaticProxy::start(tree.path()).await;

    // A single node, filled through its own API.
    let node = TestMirror::start(go_options(&proxy.url())).await;
    let mut go_files = Vec::new();
    for path in [
        "/example.com/greet/@v/v1.0.0.info",
        "/example.com/greet/@v/v1.0.0.mod",
        "/example.com/greet/@v/v1.0.0.zip",
        "/example.com/greet/@v/list",
    ] {
        let (status, body) = get(&node.anonymous(), &node.url(path)).await;
        assert_eq!(status, 200, "GET {path} from the single node");
        go_files.push((path, body));
    }
    // Over the S3 part size: the target upload is a multipart one.
    let big: Vec<u8> = (0..9_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let small: Vec<u8> = (0..70_000u32).map(|i| (i % 239) as u8).collect();
    let manifest = push_image(&node, "team/app", "1.0", &[&big, &small]).await;
    let referrer = push_referrer(&node, "team/app", &manifest).await;
    let (root, pki) = node.stop().await;
    write_cluster_config(root.path(), "cluster-data", &postgres, &garage);
    let pool = sqlx::PgPool::connect(&postgres.url()).await.unwrap();

    // Interrupted after two blobs: two objects, no rows yet.
    let first = migrate(root.path(), &["--limit", "2"]);
    assert!(!first.status.success(), "{}", text(&first));
    assert!(
        stdout(&first).contains("stopped after 2 blobs"),
        "{}",
        text(&first)
    );
    assert_eq!(objects(&garage).await.len(), 2);
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM blobs").await, 0);

    // Run again: the rest is copied, nothing twice, and all of it verified.
    let dry = migrate(root.path(), &["--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry));
    // 3 Go files, 2 manifests, the config, 2 layers, the empty blob.
    assert!(
        stdout(&dry).contains("blobs: 9 in the source")
            && stdout(&dry).contains("2 already in the target, 7 would be copied"),
        "{}",
        text(&dry)
    );
    let second = migrate(root.path(), &[]);
    assert!(second.status.success(), "{}", text(&second));
    let out = stdout(&second);
    println!("{out}");
    assert!(
        out.contains("7 copied") && out.contains("2 already in the target"),
        "{}",
        text(&second)
    );
    assert!(
        out.contains("verified: the target holds every blob and row"),
        "{}",
        text(&second)
    );
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("migrate: 9/9 blobs"),
        "a progress line on stderr: {}",
        text(&second)
    );
    let third = migrate(root.path(), &[]);
    assert!(third.status.success(), "{}", text(&third));
    assert!(
        stdout(&third).contains("0 copied (0 B), 9 already in the target"),
        "{}",
        text(&third)
    );

    // The rows are in PostgreSQL.
    for (table, rows) in [
        ("blobs", 9),
        ("oci_manifests", 2),
        ("oci_tags", 1),
        ("oci_repo_blobs", 4),
        ("go_files", 3),
    ] {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        assert_eq!(count(&pool, &sql).await, rows, "{table} in PostgreSQL");
    }
    let audited = count(&pool, "SELECT COUNT(*) FROM audit WHERE subject = 'alice'").await;
    assert!(audited >= 5, "the pushes' audit rows: {audited}");
    assert!(out.contains("audit"), "{out}");
    assert_eq!(objects(&garage).await.len(), 9);

    // A mirror on the cluster config serves it all, with its upstream gone.
    let migrated = count(&pool, "SELECT COUNT(*) FROM audit").await;
    proxy.stop().await;
    let cluster = TestMirror::start_with_pki(
        root,
        pki,
        MirrorOptions {
            extra_toml: format!(
                "[go]\nupstream = \"off\"\nsumdb = []\nverify = \"off\"\n\n[index]\nurl = \"{}\"\n\n{}",
                postgres.url(),
                garage.storage_toml()
            ),
            ..MirrorOptions::default()
        },
    )
    .await;
    let client = cluster.with_cert();
    let (status, body) = get(&client, &cluster.url("/v2/team/app/manifests/1.0")).await;
    assert_eq!(
        (status, body == manifest),
        (200, true),
        "the manifest by tag"
    );
    for layer in [&big, &small] {
        let (status, body) = get(
            &client,
            &cluster.url(&format!("/v2/team/app/blobs/{}", sha(layer))),
        )
        .await;
        assert_eq!(status, 200);
        assert!(body == *layer, "a layer byte-identical from the cluster");
    }
    let (status, tags) = get(&client, &cluster.url("/v2/team/app/tags/list")).await;
    assert_eq!(status, 200);
    let tags: serde_json::Value = serde_json::from_slice(&tags).unwrap();
    assert_eq!(tags["tags"], json!(["1.0"]));
    let (status, index) = get(
        &client,
        &cluster.url(&format!("/v2/team/app/referrers/{}", sha(&manifest))),
    )
    .await;
    assert_eq!(status, 200);
    let index: serde_json::Value = serde_json::from_slice(&index).unwrap();
    assert_eq!(index["manifests"][0]["digest"], json!(sha(&referrer)));
    for (path, body) in go_files.iter().filter(|(path, _)| !path.ends_with("/list")) {
        let (status, served) = get(&cluster.anonymous(), &cluster.url(path)).await;
        assert_eq!(
            (status, &served == body),
            (200, true),
            "{path} from the cluster"
        );
    }

    cluster.stop().await;
    // Its own audit rows take ids after the migrated ones.
    assert!(count(&pool, "SELECT COUNT(*) FROM audit").await > migrated);
    pool.close().await;
    garage.stop();
    postgres.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_killed_by_pid_midway_ends_the_same_when_run_again() {
    let postgres = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let garage = tokio::task::spawn_blocking(Garage::start).await.unwrap();
    let node = TestMirror::start(MirrorOptions::default()).await;
    let layers: Vec<Vec<u8>> = (0..24u32)
        .map(|n| {
            (0..1_000_000u32)
                .map(|i| (i * (n + 3) % 251) as u8)
                .collect()
        })
        .collect();
    let refs: Vec<&[u8]> = layers.iter().map(Vec::as_slice).collect();
    push_image(&node, "team/many", "1.0", &refs).await;
    let (root, pki) = node.stop().await;
    write_cluster_config(root.path(), "cluster-data", &postgres, &garage);
    // 24 layers, the config and the manifest.
    let total = 26;

    let log = std::fs::File::create(root.path().join("killed.log")).unwrap();
    let mut killed = Guard::spawn(
        "mirror storage migrate",
        Command::new(mirror_bin())
            .current_dir(root.path())
            .args([
                "storage",
                "migrate",
                "--config",
                "mirror.toml",
                "--to",
                "cluster.toml",
            ])
            .env(
                "MIRROR_SYSTEM_CONFIG",
                root.path().join("no-system-config.toml"),
            )
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    );
    common::wait_for("three objects in the bucket", LIMIT, || async {
        objects(&garage).await.len() >= 3
    })
    .await;
    assert!(
        killed.is_running(),
        "the run ended before the kill: give it more to copy"
    );
    killed.signal("KILL");
    let status = killed.child.wait().unwrap();
    assert!(!status.success(), "killed: {status:?}");
    let before = objects(&garage).await.len();
    assert!(before < total, "killed midway: {before} of {total} objects");

    let again = migrate(root.path(), &[]);
    assert!(again.status.success(), "{}", text(&again));
    let out = stdout(&again);
    assert!(
        out.contains(&format!("{} copied", total - before))
            && out.contains(&format!("{before} already in the target")),
        "{}",
        text(&again)
    );
    assert!(
        out.contains("verified: the target holds every blob and row"),
        "{out}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(root.path().join("cluster-data/tmp"))
        .unwrap()
        .collect();
    assert!(
        leftovers.is_empty(),
        "the killed run's staged file went: {leftovers:?}"
    );
    assert_eq!(objects(&garage).await.len(), total);
    let pool = sqlx::PgPool::connect(&postgres.url()).await.unwrap();
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM blobs").await,
        total as i64
    );
    pool.close().await;
    let last = migrate(root.path(), &[]);
    assert!(
        stdout(&last).contains(&format!("0 copied (0 B), {total} already")),
        "{}",
        text(&last)
    );

    drop((root, pki));
    garage.stop();
    postgres.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_source_blob_is_named_never_copied_and_fails_the_run() {
    let postgres = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let garage = tokio::task::spawn_blocking(Garage::start).await.unwrap();
    let node = TestMirror::start(MirrorOptions::default()).await;
    let layer: Vec<u8> = (0..50_000u32).map(|i| (i % 233) as u8).collect();
    push_image(&node, "team/bad", "1.0", &[&layer]).await;
    let (root, pki) = node.stop().await;
    let digest = sha(&layer);
    let hex = &digest["sha256:".len()..];
    let file = root
        .path()
        .join("data/blobs/sha256")
        .join(&hex[..2])
        .join(hex);
    let mut damaged = std::fs::read(&file).unwrap();
    damaged[100] ^= 1;
    std::fs::write(&file, damaged).unwrap();
    write_cluster_config(root.path(), "cluster-data", &postgres, &garage);

    let output = migrate(root.path(), &[]);
    assert!(!output.status.success(), "{}", text(&output));
    assert!(
        stdout(&output).contains(&format!("corrupt in the source, not copied: {digest}")),
        "{}",
        text(&output)
    );
    let stored = objects(&garage).await;
    assert_eq!(stored.len(), 2, "the config and the manifest: {stored:?}");
    assert!(!stored.contains(&digest));
    let pool = sqlx::PgPool::connect(&postgres.url()).await.unwrap();
    let rows: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM blobs WHERE digest = $1) + \
                (SELECT COUNT(*) FROM oci_repo_blobs WHERE digest = $1)",
    )
    .bind(&digest)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(rows, 0, "no row names the corrupt blob");
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM oci_tags").await, 1);

    pool.close().await;
    drop((root, pki));
    garage.stop();
    postgres.stop();
}

#[tokio::test]
async fn a_running_node_and_a_target_that_is_the_source_are_refused() {
    let node = TestMirror::start(MirrorOptions::default()).await;
    let root = node.root.path().to_owned();
    let single = std::fs::read_to_string(root.join("mirror.toml")).unwrap();

    // Another data dir, SQLite and files: a valid target, but the node runs.
    let elsewhere = single.replacen("data_dir = \"data\"", "data_dir = \"elsewhere\"", 1);
    std::fs::write(root.join("cluster.toml"), elsewhere).unwrap();
    let output = tokio::task::spawn_blocking({
        let root = root.clone();
        move || migrate(&root, &[])
    })
    .await
    .unwrap();
    assert!(!output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("in use by a running mirror: stop `mirror serve` on it first"),
        "{}",
        text(&output)
    );
    assert!(
        !root.join("elsewhere/mirror.db").exists(),
        "nothing written"
    );

    // The same config as the target: the source itself.
    std::fs::write(root.join("cluster.toml"), &single).unwrap();
    let output = tokio::task::spawn_blocking({
        let root = root.clone();
        move || migrate(&root, &[])
    })
    .await
    .unwrap();
    assert!(!output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("the target is the source"),
        "{}",
        text(&output)
    );
    node.stop().await;
}
