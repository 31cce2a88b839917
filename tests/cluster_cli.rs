//! The operator's commands on a cluster: one replica (configured with
//! `[index]`, `[storage]` and `[cluster]` on a real PostgreSQL and a real
//! Garage) pulls an image through and a second serves it again; then the
//! real binary, run with the same config from another data dir, reports the
//! rows and bytes (`cache stats`), lists the audit trail with the replica of
//! each row (`audit`), finds every object intact (`cache verify`) and evicts
//! as the upkeep leader does (`cache gc`). Each replica's metrics carry its
//! name, and only the first leads upkeep.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::garage::Garage;
use common::postgres::Postgres;
use common::process::{free_port, mirror_bin, run, text};
use common::registry::layout::Layout;
use common::registry::{Auth, DockerRegistry};
use common::{MirrorOptions, TestMirror, wait_for};

/// `mirror ARGS --config CONFIG --data-dir ELSEWHERE`: stdout, or a panic
/// with everything it said.
fn mirror_cli(config: &Path, elsewhere: &Path, args: &[&str]) -> String {
    let output = run(
        Command::new(mirror_bin())
            .args(args)
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(elsewhere)
            .env_remove("MIRROR_CONFIG"),
        Duration::from_secs(120),
    );
    assert!(
        output.status.success(),
        "mirror {args:?}:\n{}",
        text(&output)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reports_audits_verifies_and_collects_a_cluster_from_its_database_and_bucket() {
    let postgres = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let garage = tokio::task::spawn_blocking(Garage::start).await.unwrap();
    let registry = DockerRegistry::start(Auth::None);
    let seed = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(seed.path());
    let image = layout.image("amd64", &[(91, 60_000)]);
    layout.tag("image", &image);
    layout.push("image", &format!("{}/team/app:v1", registry.addr), &[]);

    let options = |name: &str| {
        let peer = free_port();
        MirrorOptions {
            extra_toml: format!(
                "[index]\nurl = \"{}\"\n\n{}\n\
                 [cluster]\nreplica = \"{name}\"\npeer_listen = \"127.0.0.1:{peer}\"\n\
                 peer_url = \"https://127.0.0.1:{peer}\"\n\n\
                 [[registry.upstream]]\nname = \"up.test\"\nurl = \"{}\"\n",
                postgres.url(),
                garage.storage_toml(),
                registry.url()
            ),
            ..MirrorOptions::default()
        }
    };
    let replica = TestMirror::start(options("m1")).await;
    let client = replica.with_cert();
    let manifest = client
        .get(replica.url("/v2/up.test/team/app/manifests/v1"))
        .header("accept", image.media_type)
        .send()
        .await
        .unwrap();
    assert_eq!(manifest.status(), 200);
    let config = image.config.as_ref().expect("an image has a config");
    for blob in [config, &image.layers[0]] {
        let path = format!("/v2/up.test/team/app/blobs/{}", blob.digest);
        let response = client.get(replica.url(&path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.bytes().await.unwrap().len() as u64, blob.size);
    }
    let stored_bytes = image.size + config.size + image.layers[0].size;

    // The first to start leads upkeep; every series names its replica.
    wait_for(
        "the first replica to lead upkeep",
        Duration::from_secs(15),
        || {
            let replica = &replica;
            async move {
                replica
                    .metrics()
                    .await
                    .contains("mirror_upkeep_leader{replica=\"m1\"} 1")
            }
        },
    )
    .await;
    let metrics = replica.metrics().await;
    let unnamed: Vec<&str> = metrics
        .lines()
        .filter(|line| !line.starts_with('#') && !line.contains("replica=\"m1\""))
        .collect();
    assert!(
        unnamed.is_empty(),
        "series without the replica: {unnamed:?}"
    );

    // A second replica serves the manifest from the shared rows and bytes,
    // and does not lead while the first does.
    let second = TestMirror::start(options("m2")).await;
    let manifest = second
        .with_cert()
        .get(second.url("/v2/up.test/team/app/manifests/v1"))
        .header("accept", image.media_type)
        .send()
        .await
        .unwrap();
    assert_eq!(manifest.status(), 200);
    let metrics = second.metrics().await;
    assert!(
        metrics.contains("mirror_upkeep_leader{replica=\"m2\"} 0"),
        "{metrics}"
    );
    let config_path = replica.config_path.clone();
    // Stopped, they have written their whole audit trail.
    let _first = replica.stop().await;
    let _second = second.stop().await;

    // Another data dir, not even created: the rows are the cluster's.
    let admin = tempfile::tempdir().unwrap();
    let elsewhere = admin.path().join("not-created");
    let stats: serde_json::Value = serde_json::from_str(&mirror_cli(
        &config_path,
        &elsewhere,
        &["cache", "stats", "--json"],
    ))
    .expect("stats JSON");
    assert_eq!(stats["totals"]["blobs"], 3, "{stats}");
    assert_eq!(stats["totals"]["bytes"], stored_bytes, "{stats}");
    let table = mirror_cli(&config_path, &elsewhere, &["cache", "stats"]);
    assert!(table.contains("in 3 blobs"), "{table}");

    let audit = mirror_cli(&config_path, &elsewhere, &["audit"]);
    let header = audit.lines().next().expect("a header");
    assert!(header.contains("REPLICA"), "{audit}");
    let rows: Vec<&str> = audit.lines().skip(1).collect();
    assert_eq!(rows.len(), 4, "{audit}");
    assert!(rows.iter().all(|row| row.contains("team/app")), "{audit}");
    let by = |name: &str| rows.iter().filter(|row| row.contains(name)).count();
    assert_eq!((by(" m1 "), by(" m2 ")), (3, 1), "{audit}");
    let json = mirror_cli(&config_path, &elsewhere, &["audit", "--json"]);
    let mut replicas: Vec<String> = json
        .lines()
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).expect("a JSON record");
            record["replica"].as_str().expect("a replica").to_owned()
        })
        .collect();
    replicas.sort();
    assert_eq!(replicas, ["m1", "m1", "m1", "m2"]);

    let verify = mirror_cli(&config_path, &elsewhere, &["cache", "verify"]);
    assert!(verify.contains("verified 3 blobs"), "{verify}");

    let gc = mirror_cli(&config_path, &elsewhere, &["cache", "gc", "--target", "0"]);
    assert!(gc.contains("shared index"), "{gc}");
    assert!(gc.contains("removed 3 blobs"), "{gc}");
    let stats: serde_json::Value = serde_json::from_str(&mirror_cli(
        &config_path,
        &elsewhere,
        &["cache", "stats", "--json"],
    ))
    .expect("stats JSON");
    assert_eq!(stats["totals"]["blobs"], 0, "{stats}");
    let verify = mirror_cli(&config_path, &elsewhere, &["cache", "verify"]);
    assert!(verify.contains("verified 0 blobs"), "{verify}");

    garage.stop();
    postgres.stop();
}
