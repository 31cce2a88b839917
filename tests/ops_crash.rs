//! Crash safety: the real `mirror` process is killed with SIGKILL at varying
//! moments of fills (and of the evictions a small cache limit keeps
//! triggering, and of a concurrent `mirror cache gc`), again and again. After
//! every kill the restarted server must hold only complete, digest-verified
//! content, with no temp files left, and must still serve everything.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TestPki;
use common::process::{Guard, free_port, mirror_bin, run, text};
use common::registry::layout::Layout;
use common::registry::proxy::Proxy;
use common::registry::{Auth, DockerRegistry};
use sha2::Digest as _;

const ROUNDS: u64 = 12;
const MIB: u64 = 1024 * 1024;
const LIMIT: Duration = Duration::from_secs(120);

struct Setup {
    dir: PathBuf,
    pki: TestPki,
    port: u16,
}

fn write_config(setup: &Setup, upstream: &str) {
    std::fs::write(
        setup.dir.join("mirror.toml"),
        format!(
            r#"listen = "127.0.0.1:{port}"
data_dir = "data"

[tls]
cert = "pki/server.crt"
key = "pki/server.key"
client_ca = "pki/ca.crt"
client_auth = "optional"

[auth]
read = "anonymous"

[cache]
# Smaller than what the rounds pull: eviction runs all the time.
max_size = "40MiB"
low_water = 0.6

[[registry.upstream]]
name = "up.test"
url = "{upstream}"
"#,
            port = setup.port
        ),
    )
    .unwrap();
}

fn start(setup: &Setup) -> Guard {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(setup.dir.join("serve.log"))
        .unwrap();
    let mut guard = Guard::spawn(
        "mirror serve",
        Command::new(mirror_bin())
            .current_dir(&setup.dir)
            .args(["serve", "--config", "mirror.toml"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log),
    );
    guard.wait_for_port(&format!("127.0.0.1:{}", setup.port), LIMIT);
    guard
}

fn kill(mut guard: Guard) {
    guard.signal("KILL");
    let deadline = Instant::now() + LIMIT;
    while guard.is_running() {
        assert!(Instant::now() < deadline, "mirror did not die");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn temp_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("data/tmp")).map_or(0, |d| d.count())
}

/// `mirror cache verify` on the data dir: every indexed blob re-hashed.
fn verify(dir: &Path) -> String {
    let output = run(
        Command::new(mirror_bin())
            .current_dir(dir)
            .args(["cache", "verify", "--data-dir", "data"]),
        LIMIT,
    );
    assert!(
        output.status.success(),
        "store not clean:\n{}",
        text(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn get_blob(client: &reqwest::Client, port: u16, digest: &str) -> Result<Vec<u8>, String> {
    let url = format!("https://127.0.0.1:{port}/v2/up.test/crash/app/blobs/{digest}");
    let response = client.get(url).send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    response
        .bytes()
        .await
        .map(|b| b.to_vec())
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_at_any_moment_the_store_keeps_only_verified_content() {
    let root = tempfile::tempdir().unwrap();
    let mut registry = DockerRegistry::start(Auth::None);
    let mut layout = Layout::new(&root.path().join("layout"));
    let image = layout.image(
        "amd64",
        &[(1, 20 * MIB), (2, 14 * MIB), (3, 3 * MIB), (4, 200 * 1024)],
    );
    layout.tag("1", &image);
    let dest = format!("{}/crash/app:1", registry.addr);
    tokio::task::block_in_place(|| layout.push("1", &dest, &[]));
    let proxy = Proxy::start(&registry.url()).await;
    // Slow enough that a kill lands mid-fill, fast enough for a short test.
    proxy.throttle(Some(60 * MIB));

    let setup = Setup {
        dir: root.path().join("mirror"),
        pki: TestPki::create(&root.path().join("mirror")),
        port: free_port(),
    };
    write_config(&setup, &proxy.url());
    let client = common::client_builder(setup.pki.ca_pem()).build().unwrap();
    let digests: Vec<String> = image.layers.iter().map(|b| b.digest.clone()).collect();

    let mut mid_fill = 0;
    for round in 0..ROUNDS {
        let server = start(&setup);
        assert_eq!(
            temp_files(&setup.dir),
            0,
            "round {round}: temp files survived a restart"
        );
        verify(&setup.dir);

        // Every round asks for every layer at once; the kill comes at a different moment each time.
        let mut pulls = Vec::new();
        for digest in &digests {
            let client = client.clone();
            let digest = digest.clone();
            let port = setup.port;
            pulls.push(tokio::spawn(async move {
                get_blob(&client, port, &digest).await
            }));
        }
        let gc = (round % 3 == 2).then(|| {
            Guard::spawn(
                "mirror cache gc",
                Command::new(mirror_bin())
                    .current_dir(&setup.dir)
                    .args(["cache", "gc", "--data-dir", "data", "--target", "5MiB"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )
        });
        tokio::time::sleep(Duration::from_millis(40 + (round * 73) % 500)).await;
        let in_flight = temp_files(&setup.dir);
        kill(server);
        if let Some(gc) = gc {
            gc.signal("KILL");
        }
        if in_flight > 0 {
            mid_fill += 1;
        }
        for pull in pulls {
            // Whatever a client got before the kill, it never got a complete wrong body.
            if let Ok(Ok(bytes)) = pull.await {
                let got = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)));
                assert!(
                    digests.contains(&got),
                    "round {round}: a client received bad bytes"
                );
            }
        }
    }

    // A last start: clean, and everything still pulls, from upstream or the store.
    let server = start(&setup);
    let report = verify(&setup.dir);
    for digest in &digests {
        let bytes = get_blob(&client, setup.port, digest)
            .await
            .expect("pull after the crashes");
        assert_eq!(
            &format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes))),
            digest
        );
    }
    // And with the upstream gone, what is stored still serves.
    registry.stop();
    drop(proxy);
    let stored = verify(&setup.dir);
    kill(server);
    assert!(
        mid_fill >= ROUNDS / 2,
        "only {mid_fill} of {ROUNDS} kills landed during a fill; the test is not testing crashes"
    );
    println!(
        "crash loop: {ROUNDS} kills survived ({mid_fill} mid-fill, every 3rd with a gc running); {report}{stored}"
    );
}
