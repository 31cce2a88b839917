//! A single-node Garage (S3-compatible object store) for a test: its own
//! config, metadata and data in a temp dir, every port on loopback, one bucket
//! and one key made at start by `garage server --single-node --default-bucket`,
//! stopped by its PID. Garage is AGPL and only ever run as a program;
//! `scripts/test.sh` builds it from crates.io once per machine.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::process::{Guard, free_port, memory_tempdir, tool};

pub const BUCKET: &str = "mirror";
pub const REGION: &str = "garage";
const START_LIMIT: Duration = Duration::from_secs(30);
/// Ports picked free can be taken by someone else before Garage binds them.
const PORT_ATTEMPTS: usize = 5;

/// A running Garage node; dropped, it is killed and its files go.
pub struct Garage {
    server: Option<Guard>,
    s3_port: u16,
    admin_port: u16,
    admin_token: String,
    access_key_id: String,
    secret_access_key: String,
    root: tempfile::TempDir,
}

impl Garage {
    pub fn start() -> Garage {
        let root = memory_tempdir("garage-");
        let mut garage = Garage {
            server: None,
            s3_port: 0,
            admin_port: 0,
            admin_token: random_hex(32),
            access_key_id: format!("GK{}", random_hex(12)),
            secret_access_key: random_hex(32),
            root,
        };
        let mut failures = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            match garage.spawn_and_wait() {
                Ok(()) => return garage,
                Err(failure) => failures.push(failure),
            }
        }
        panic!("garage did not start: {}", failures.join("\n"));
    }

    /// `http://127.0.0.1:PORT`, to be used path-style.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    pub fn bucket(&self) -> &str {
        BUCKET
    }

    pub fn region(&self) -> &str {
        REGION
    }

    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Guard::pid)
    }

    /// An S3 client of the test's own on the bucket, to see what the mirror
    /// left in it.
    pub fn client(&self) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_region(REGION)
            .with_bucket_name(BUCKET)
            .with_access_key_id(&self.access_key_id)
            .with_secret_access_key(&self.secret_access_key)
            .build()
            .expect("S3 client for garage")
    }

    /// The `[storage]` section of a mirror config that uses this node.
    pub fn storage_toml(&self) -> String {
        format!(
            "[storage]\nbackend = \"s3\"\nendpoint = \"{}\"\nbucket = \"{BUCKET}\"\n\
             region = \"{REGION}\"\npath_style = true\naccess_key_id = \"{}\"\n\
             secret_access_key = \"{}\"\n",
            self.endpoint(),
            self.access_key_id,
            self.secret_access_key
        )
    }

    /// Multipart uploads begun in the bucket and neither completed nor
    /// aborted, as Garage counts them (the S3 client has no ListMultipartUploads).
    /// Garage updates the count in the background: poll it.
    pub async fn unfinished_multipart_uploads(&self) -> i64 {
        let url = format!(
            "http://127.0.0.1:{}/v2/GetBucketInfo?globalAlias={BUCKET}",
            self.admin_port
        );
        let response = reqwest::Client::new()
            .get(&url)
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .expect("GET GetBucketInfo from garage's admin API");
        assert!(
            response.status().is_success(),
            "GetBucketInfo: {}",
            response.status()
        );
        let info: serde_json::Value = response.json().await.expect("GetBucketInfo JSON");
        info["unfinishedMultipartUploads"]
            .as_i64()
            .unwrap_or_else(|| panic!("no unfinishedMultipartUploads in {info}"))
    }

    /// Kills the node and removes its files.
    pub fn stop(self) {
        drop(self);
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let ports = Ports::pick();
        let config = self.write_config(&ports);
        let log_path = config.with_file_name("garage.log");
        let log = std::fs::File::create(&log_path).expect("create garage log");
        let log_err = log.try_clone().expect("clone log handle");
        let mut command = Command::new(garage_bin());
        command
            .arg("--config")
            .arg(&config)
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", &self.access_key_id)
            .env("GARAGE_DEFAULT_SECRET_KEY", &self.secret_access_key)
            .env("GARAGE_DEFAULT_BUCKET", BUCKET)
            .env("RUST_LOG", "garage=info,warn")
            .current_dir(self.root.path())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        let mut server = Guard::spawn("garage", &mut command);
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if !server.is_running() {
                return Err(format!("garage exited: {}", tail(&log_path)));
            }
            // The bucket and key exist before the S3 listener opens; /health
            // says the layout is applied and the node serves reads and writes.
            if healthy(ports.admin) && accepts(ports.s3) {
                self.s3_port = ports.s3;
                self.admin_port = ports.admin;
                self.server = Some(server);
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "not ready after {START_LIMIT:?}: {}",
                    tail(&log_path)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A fresh config and fresh dirs for each attempt: a failed attempt may
    /// have written a node identity bound to ports we no longer use.
    fn write_config(&self, ports: &Ports) -> PathBuf {
        let dir = self.root.path().join(format!("node-{}", ports.rpc));
        std::fs::create_dir_all(&dir).expect("garage node dir");
        let config = dir.join("garage.toml");
        let toml = format!(
            r#"metadata_dir = "{dir}/meta"
data_dir = "{dir}/data"
db_engine = "sqlite"
replication_factor = 1
metadata_fsync = false
data_fsync = false
disable_scrub = true
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{s3}"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
admin_token = "{admin_token}"
"#,
            dir = dir.display(),
            rpc = ports.rpc,
            s3 = ports.s3,
            admin = ports.admin,
            secret = random_hex(32),
            admin_token = self.admin_token,
        );
        write_private(&config, &toml);
        config
    }
}

struct Ports {
    rpc: u16,
    s3: u16,
    admin: u16,
}

impl Ports {
    fn pick() -> Ports {
        Ports {
            rpc: free_port(),
            s3: free_port(),
            admin: free_port(),
        }
    }
}

/// Garage's admin `/health`: 200 once the node serves reads and writes.
fn healthy(admin_port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", admin_port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.ends_with(b" 200")
}

fn accepts(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// The Garage binary: where `scripts/test.sh` (`cargo install`) put it, else
/// on PATH.
pub fn garage_bin() -> PathBuf {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")));
    if let Some(installed) = cargo_home.map(|home| home.join("bin/garage"))
        && installed.is_file()
    {
        return installed;
    }
    tool("garage")
}

fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut buffer = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut buffer))
        .expect("read /dev/urandom");
    hex::encode(buffer)
}

/// The config holds the RPC secret: ours alone to read, as for any key.
fn write_private(path: &Path, contents: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    file.write_all(contents.as_bytes())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(30).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join("\n")
}
