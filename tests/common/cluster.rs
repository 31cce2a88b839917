//! A cluster of `mirror serve` processes for the tests: one PKI, one
//! PostgreSQL index, one Garage bucket, each replica with its own data dir,
//! port and peer endpoint, and a client with alice's certificate.

use std::time::Duration;

use super::garage::Garage;
use super::postgres::Postgres;
use super::process::{Guard, free_port, mirror_bin, text, wait_until_listening};

pub const LIMIT: Duration = Duration::from_secs(120);

pub struct Replica {
    pub name: String,
    pub port: u16,
    pub peer: u16,
    pub process: Guard,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub replicas: Vec<Replica>,
    /// alice's client certificate, trusting the cluster's CA.
    pub client: reqwest::Client,
}

pub fn mirror(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new(mirror_bin())
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "mirror {args:?}: {}", text(&out));
}

/// What every replica's config shares.
struct Settings<'a> {
    index: String,
    storage: String,
    extra: &'a str,
    upstream: &'a str,
}

/// Tries with other ports when a port picked free was taken (by another
/// test's process) before the replica bound it.
const PORT_ATTEMPTS: usize = 5;

impl Replica {
    /// Starts replica `name` in `root` and waits for both its ports. A replica
    /// that exits or hangs instead fails the test with its log.
    fn start(root: &std::path::Path, name: &str, settings: &Settings) -> Replica {
        for attempt in 1..=PORT_ATTEMPTS {
            let (port, peer) = (free_port(), free_port());
            let config = format!(
                "listen = \"127.0.0.1:{port}\"\ndata_dir = \"data-{name}\"\n\n\
                 [tls]\ncert = \"pki/server.crt\"\nkey = \"pki/server.key\"\n\
                 client_ca = \"pki/ca.crt\"\ncrl = \"pki/ca.crl\"\nclient_auth = \"optional\"\n\n\
                 [limits]\nreload_poll = \"1h\"\n\n\
                 [index]\nurl = \"{}\"\n\n{}\n\
                 [cluster]\nreplica = \"{name}\"\npeer_listen = \"127.0.0.1:{peer}\"\n\
                 peer_url = \"https://127.0.0.1:{peer}\"\n\n{}\n\
                 [[registry.upstream]]\nname = \"up.test\"\nurl = \"{}\"\n",
                settings.index, settings.storage, settings.extra, settings.upstream,
            );
            std::fs::write(root.join(format!("{name}.toml")), config).unwrap();
            let log_path = root.join(format!("{name}.log"));
            let log = std::fs::File::create(&log_path).unwrap();
            let mut process = Guard::spawn(
                &format!("mirror serve ({name})"),
                std::process::Command::new(mirror_bin())
                    .current_dir(root)
                    .args(["serve", "--config", &format!("{name}.toml")])
                    .env("RUST_LOG", "info")
                    .env("MIRROR_SYSTEM_CONFIG", root.join("no-system-config.toml"))
                    .stdout(std::process::Stdio::null())
                    .stderr(log),
            );
            let listening = wait_until_listening(&mut process, &format!("127.0.0.1:{port}"), LIMIT)
                .and_then(|()| {
                    wait_until_listening(&mut process, &format!("127.0.0.1:{peer}"), LIMIT)
                });
            let Err(why) = listening else {
                return Replica {
                    name: name.to_owned(),
                    port,
                    peer,
                    process,
                };
            };
            drop(process);
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let port_taken = log.contains("Address already in use");
            assert!(
                port_taken && attempt < PORT_ATTEMPTS,
                "replica {name} did not start: {why}; its log:\n{log}"
            );
        }
        unreachable!("the last attempt returns or fails")
    }
}

impl Cluster {
    /// `n` replicas of one cluster; `extra` is more TOML for every replica's
    /// config (whole sections), before the upstream registry `up.test`.
    pub async fn start(
        n: usize,
        postgres: &Postgres,
        garage: &Garage,
        upstream: &str,
        extra: &str,
    ) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        mirror(root, &["pki", "init", "--dir", "pki"]);
        mirror(
            root,
            &[
                "pki",
                "issue-server",
                "--dir",
                "pki",
                "--san",
                "127.0.0.1",
                "localhost",
            ],
        );
        mirror(
            root,
            &[
                "pki",
                "issue-client",
                "alice",
                "--dir",
                "pki",
                "--registry",
                "cluster:5000",
                "--out",
                "certs",
            ],
        );
        let settings = Settings {
            index: postgres.url(),
            storage: garage.storage_toml(),
            extra,
            upstream,
        };
        let replicas = (1..=n)
            .map(|i| Replica::start(root, &format!("m{i}"), &settings))
            .collect();
        let read = |name: &str| std::fs::read(root.join(name)).unwrap();
        let folder = "certs/cluster:5000";
        let identity = reqwest::Identity::from_pem(
            &[
                read(&format!("{folder}/client.cert")),
                b"\n".to_vec(),
                read(&format!("{folder}/client.key")),
            ]
            .concat(),
        )
        .unwrap();
        let ca = reqwest::Certificate::from_pem(&read("pki/ca.crt")).unwrap();
        let client = reqwest::Client::builder()
            .tls_certs_only([ca])
            .identity(identity)
            .timeout(LIMIT)
            .build()
            .unwrap();
        Cluster {
            dir,
            replicas,
            client,
        }
    }

    pub fn blob_url(&self, replica: usize, digest: &str) -> String {
        format!(
            "https://127.0.0.1:{}/v2/up.test/team/fill/blobs/{digest}",
            self.replicas[replica].port
        )
    }

    pub fn log(&self, replica: usize) -> String {
        let name = &self.replicas[replica].name;
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// `https://127.0.0.1:<port>` of a replica.
    pub fn origin(&self, replica: usize) -> String {
        format!("https://127.0.0.1:{}", self.replicas[replica].port)
    }

    /// `127.0.0.1:<port>` of a replica.
    pub fn host_port(&self, replica: usize) -> String {
        format!("127.0.0.1:{}", self.replicas[replica].port)
    }

    /// alice's `certs.d` folder for the cluster (the files skopeo reads).
    pub fn certs_d(&self) -> std::path::PathBuf {
        self.dir.path().join("certs/cluster:5000")
    }
}

/// How many rows the cluster's index has for blob `digest` (0 or 1).
pub async fn blob_rows(postgres: &Postgres, digest: &str) -> i64 {
    let pool = sqlx::PgPool::connect(&postgres.url()).await.unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM blobs WHERE digest = $1")
        .bind(digest)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}
