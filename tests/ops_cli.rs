//! The operator's commands against a real data dir: `cache prefetch` (with
//! the server stopped, and beside a running one), `cache stats`, `audit`, and
//! the audit retention the server keeps to.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::go::{StaticProxy, standard_modules, write_tree};
use common::process::{mirror_bin, run, text, tool};
use common::registry::layout::Layout;
use common::registry::{Auth, DockerRegistry};
use common::{MirrorOptions, PASSWORD, TestMirror, USER, wait_for};

const LIMIT: Duration = Duration::from_secs(180);

fn mirror_cli(config: &Path, args: &[&str]) -> std::process::Output {
    tokio::task::block_in_place(|| {
        run(
            Command::new(mirror_bin())
                .args(args)
                .arg("--config")
                .arg(config)
                .env("RUST_LOG", "warn"),
            LIMIT,
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prefetch_from_a_go_sum_fills_a_stopped_servers_store_for_offline_builds() {
    let tree = tempfile::tempdir().unwrap();
    write_tree(tree.path(), &standard_modules());
    let upstream = StaticProxy::start(tree.path()).await;
    let server = TestMirror::start(MirrorOptions {
        extra_toml: format!("[go]\nupstream = \"{}\"\nsumdb = []\nverify = \"off\"  # about the CLI; go_verify.rs proves verification\n", upstream.url()),
        ..MirrorOptions::default()
    })
    .await;
    let config = server.config_path.clone();
    let (root, pki) = server.stop().await;

    let go_sum = root.path().join("go.sum");
    std::fs::write(
        &go_sum,
        "example.com/greet v1.2.0 h1:AAAA=\nexample.com/greet v1.2.0/go.mod h1:BBBB=\n\
         example.com/Upper/Mod v1.0.1/go.mod h1:CCCC=\n",
    )
    .unwrap();
    let prefetched = mirror_cli(
        &config,
        &["cache", "prefetch", "--go-sum", go_sum.to_str().unwrap()],
    );
    assert!(prefetched.status.success(), "{}", text(&prefetched));
    let summary = String::from_utf8_lossy(&prefetched.stdout);
    assert!(summary.contains("go: 5 files"), "{summary}");

    // Upstream gone: what was prefetched is served, what was not is not.
    upstream.stop().await;
    let server = TestMirror::start_with_pki(
        root,
        pki,
        MirrorOptions {
            extra_toml: "[go]\nupstream = \"http://127.0.0.1:9\"\nsumdb = []\nverify = \"off\"  # about the CLI; go_verify.rs proves verification\n".to_owned(),
            ..MirrorOptions::default()
        },
    )
    .await;
    let client = server.anonymous();
    let get = |path: &str| {
        let request = client
            .get(server.url(path))
            .basic_auth(USER, Some(PASSWORD))
            .send();
        async move { request.await.unwrap().status().as_u16() }
    };
    assert_eq!(get("/example.com/greet/@v/v1.2.0.zip").await, 200);
    assert_eq!(get("/example.com/greet/@v/v1.2.0.info").await, 200);
    assert_eq!(get("/example.com/!upper/!mod/@v/v1.0.1.mod").await, 200);
    assert_ne!(
        get("/example.com/!upper/!mod/@v/v1.0.1.zip").await,
        200,
        "a /go.mod line fetches no zip"
    );

    let stats = mirror_cli(&config, &["cache", "stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).expect("stats JSON");
    let zips = stats["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["upstream"] == "module zip files")
        .cloned()
        .unwrap_or_default();
    assert_eq!(zips["blobs"], 1, "{stats}");
    let audit = mirror_cli(&config, &["audit", "--who", "mirror-prefetch"]);
    let audit_text = String::from_utf8_lossy(&audit.stdout);
    assert!(
        audit_text.contains("example.com/greet@v1.2.0"),
        "{audit_text}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prefetch_beside_a_running_server_stores_every_platform_of_an_image() {
    let root = tempfile::tempdir().unwrap();
    let mut registry = DockerRegistry::start(Auth::None);
    let mut layout = Layout::new(&root.path().join("layout"));
    let amd64 = layout.image("amd64", &[(11, 300 * 1024)]);
    let arm64 = layout.image("arm64", &[(12, 200 * 1024)]);
    let index = layout.index(&[("amd64", &amd64), ("arm64", &arm64)]);
    layout.tag("1", &index);
    tokio::task::block_in_place(|| {
        layout.push("1", &format!("{}/pre/app:1", registry.addr), &["--all"])
    });

    let server = TestMirror::start(MirrorOptions {
        extra_toml: format!(
            "[[registry.upstream]]\nname = \"up.test\"\nurl = \"{}\"\n",
            registry.url()
        ),
        ..MirrorOptions::default()
    })
    .await;
    let list = root.path().join("images.txt");
    std::fs::write(&list, "# what the build farm needs\nup.test/pre/app:1\n").unwrap();
    let prefetched = mirror_cli(
        &server.config_path,
        &["cache", "prefetch", "--images", list.to_str().unwrap()],
    );
    assert!(prefetched.status.success(), "{}", text(&prefetched));
    // An index, two manifests, two configs, two layers.
    assert!(
        String::from_utf8_lossy(&prefetched.stdout).contains("images: 7 files"),
        "{}",
        text(&prefetched)
    );

    registry.stop();
    for arch in ["amd64", "arm64"] {
        let out = root.path().join(format!("pulled-{arch}"));
        let copied = tokio::task::block_in_place(|| {
            run(
                Command::new(tool("skopeo"))
                    .args([
                        "--insecure-policy",
                        "--override-arch",
                        arch,
                        "copy",
                        "--src-cert-dir",
                    ])
                    .arg(&server.certs_d)
                    .arg(format!("docker://{}/up.test/pre/app:1", server.host_port()))
                    .arg(format!("oci:{}:1", out.display())),
                LIMIT,
            )
        });
        assert!(
            copied.status.success(),
            "{arch} offline after prefetch: {}",
            text(&copied)
        );
    }

    // The offline pulls were hits, counted with the bytes they sent.
    let metrics = server.metrics().await;
    for expected in [
        r#"mirror_cache_requests_total{protocol="oci",outcome="hit"}"#,
        r#"mirror_response_bytes_total{protocol="oci"}"#,
        "mirror_store_bytes ",
        "mirror_fills_total ",
    ] {
        assert!(metrics.contains(expected), "{expected} missing:\n{metrics}");
    }
    let layer = &arm64.layers[0].digest;
    // A running server writes its audit in batches, a few milliseconds behind
    // the requests: wait for skopeo's reads to land.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let who = loop {
        let audit = mirror_cli(&server.config_path, &["audit", "--digest", layer, "--json"]);
        let who: Vec<String> = String::from_utf8_lossy(&audit.stdout)
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["subject"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        if who.contains(&USER.to_owned()) || std::time::Instant::now() > deadline {
            break who;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(who.contains(&"mirror-prefetch".to_owned()), "{who:?}");
    assert!(
        who.contains(&USER.to_owned()),
        "skopeo's pull as alice is audited too: {who:?}"
    );
    server.stop().await;
}

/// The number before `unit` in a line of `cache stats` output.
fn count_before(line: &str, unit: &str) -> u64 {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| w.trim_end_matches(',') == unit)
        .unwrap_or_else(|| panic!("no {unit:?} in {line:?}"));
    words[at - 1]
        .parse()
        .unwrap_or_else(|_| panic!("no count before {unit:?} in {line:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prefetch_takes_references_as_users_write_them_and_stats_add_up() {
    let root = tempfile::tempdir().unwrap();
    let registry = DockerRegistry::start(Auth::None);
    let mut layout = Layout::new(&root.path().join("layout"));
    let image = layout.image("amd64", &[(21, 100 * 1024), (22, 50 * 1024)]);
    layout.tag("1", &image);
    // The same image in two repositories: its blobs are stored once.
    for repo in ["team/app", "tool"] {
        tokio::task::block_in_place(|| {
            layout.push("1", &format!("{}/{repo}:1", registry.addr), &[])
        });
    }
    let server = TestMirror::start(MirrorOptions {
        extra_toml: format!(
            "[[registry.upstream]]\nname = \"up.test\"\nurl = \"{}\"\ndefault = true\n",
            registry.url()
        ),
        ..MirrorOptions::default()
    })
    .await;
    let mirror_host = server.host_port();
    let references = [
        // This mirror's address as the user pulls from it, then an upstream's name.
        format!("{mirror_host}/up.test/team/app:1"),
        // The mirror by another name its certificate carries, then a default-upstream name.
        format!("localhost:{}/team/app:1", server.addr.port()),
        // An upstream by its own host and port.
        format!("{}/team/app:1", registry.addr),
        // A single component, on a default upstream that is not Docker Hub: no library/.
        "tool:1".to_owned(),
        // By digest, on the default upstream.
        format!("team/app@{}", image.digest),
    ];
    let mut args = vec!["cache", "prefetch"];
    args.extend(references.iter().map(String::as_str));
    let prefetched = mirror_cli(&server.config_path, &args);
    assert!(prefetched.status.success(), "{}", text(&prefetched));
    assert!(
        String::from_utf8_lossy(&prefetched.stdout).contains(", 0 failed"),
        "{}",
        text(&prefetched)
    );

    let unknown = mirror_cli(
        &server.config_path,
        &["cache", "prefetch", "quay.io/org/app:1"],
    );
    assert!(!unknown.status.success());
    let said = String::from_utf8_lossy(&unknown.stderr).into_owned();
    assert!(
        said.contains("quay.io") && said.contains("up.test"),
        "an unknown registry is refused, naming what is known: {said}"
    );

    let stats = mirror_cli(&server.config_path, &["cache", "stats"]);
    let stats = String::from_utf8_lossy(&stats.stdout).into_owned();
    let mut lines = stats.lines();
    let header = lines.next().unwrap_or_default();
    let rows: Vec<&str> = lines.take_while(|l| l.starts_with("  ")).collect();
    let in_rows: u64 = rows.iter().map(|row| count_before(row, "blobs")).sum();
    // A manifest and a config and two layers, once, though two repositories hold them.
    assert_eq!(count_before(header, "blobs"), 4, "{stats}");
    assert_eq!(in_rows, 4, "the rows add up to the header: {stats}");
    let json = mirror_cli(&server.config_path, &["cache", "stats", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).expect("stats JSON");
    let groups = json["groups"].as_array().cloned().unwrap_or_default();
    let sum = |field: &str| {
        groups
            .iter()
            .map(|g| g[field].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    assert_eq!(
        sum("blobs"),
        json["totals"]["blobs"].as_u64().unwrap(),
        "{json}"
    );
    assert_eq!(
        sum("bytes"),
        json["totals"]["bytes"].as_u64().unwrap(),
        "{json}"
    );
    server.stop().await;
}

/// Writes one audit row for `artifact`, `age` old, straight into the index of a
/// stopped server: the server's sweep is what the test watches.
async fn aged_audit_row(data_dir: &Path, artifact: &str, age: Duration) {
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(data_dir.join("mirror.db"));
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    sqlx::query(
        "INSERT INTO audit (at_ms, identity, subject, peer, protocol, action, artifact, outcome, status)
         VALUES (?1, 'cert', 'alice', '127.0.0.1:1', 'oci', 'read', ?2, 'hit', 200)",
    )
    .bind(now_ms - age.as_millis() as i64)
    .bind(artifact)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_server_deletes_audit_records_older_than_the_retention_and_keeps_newer_ones() {
    const DAY: Duration = Duration::from_secs(24 * 3600);
    let options = || MirrorOptions {
        extra_toml: "[audit]\nretention = \"1d\"\n".into(),
        ..MirrorOptions::default()
    };
    let server = TestMirror::start(options()).await;
    let (root, pki) = server.stop().await;
    let data_dir = root.path().join("data");
    aged_audit_row(&data_dir, "retention/old@two-days", 2 * DAY).await;
    aged_audit_row(&data_dir, "retention/new@half-a-day", DAY / 2).await;

    let server = TestMirror::start_with_pki(root, pki, options()).await;
    wait_for(
        "the sweep to delete the record older than audit.retention",
        Duration::from_secs(30),
        || async {
            common::audit::rows(&server, "retention/old")
                .await
                .is_empty()
        },
    )
    .await;
    let kept = common::audit::rows(&server, "retention/new").await;
    assert_eq!(
        kept.len(),
        1,
        "a record within audit.retention went: {kept:?}"
    );
    server.stop().await;
}
