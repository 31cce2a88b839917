//! The real `go` command in a fresh environment (Debian's Go 1.19, or 1.23
//! from bookworm-backports), and a real checksum database
//! (tests/go/sumdbserver) built with Debian's go and x/mod.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::process::{self, Guard};
use crate::common::{PASSWORD, TestMirror, USER};

/// The `go` commands the tests run; they differ in how they read `.netrc`
/// and in toolchain switching (1.21+).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoVersion {
    Go119,
    Go123,
}

impl GoVersion {
    pub const ALL: [GoVersion; 2] = [GoVersion::Go119, GoVersion::Go123];

    pub fn binary(self) -> PathBuf {
        process::tool(match self {
            GoVersion::Go119 => "go",
            GoVersion::Go123 => "go1.23",
        })
    }

    /// A build cache shared by every test of this version, kept between runs
    /// in cargo's test temp dir: it holds compiled packages only (never
    /// modules, which each test fetches through its own mirror into its own
    /// module cache), and compiling the standard library again in every fresh
    /// environment is most of a Go test's time.
    pub fn build_cache(self) -> PathBuf {
        let name = match self {
            GoVersion::Go119 => "gocache-1.19",
            GoVersion::Go123 => "gocache-1.23",
        };
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
    }

    /// PATH with this version's bin dir first.
    pub fn path(self) -> String {
        let binary = self.binary();
        let bin = binary.parent().unwrap_or(Path::new("/usr/bin"));
        format!("{}:/usr/bin:/bin", bin.display())
    }
}

/// A fresh environment for the real `go` command: its own GOPATH, module
/// cache, build cache and HOME, no inherited Go settings, our CA trusted
/// through SSL_CERT_FILE, and GOPROXY pointing at the mirror with alice's
/// password in the URL.
pub struct GoEnv {
    pub dir: tempfile::TempDir,
    pub version: GoVersion,
    pub goproxy: String,
    pub ca: PathBuf,
    pub gosumdb: String,
    /// GOTOOLCHAIN: `local` unless a test asks for switching (`auto`).
    pub gotoolchain: String,
}

impl GoEnv {
    pub fn new(mirror: &TestMirror) -> GoEnv {
        GoEnv::with_version(mirror, GoVersion::Go119)
    }

    pub fn with_version(mirror: &TestMirror, version: GoVersion) -> GoEnv {
        GoEnv::for_proxy(&mirror.host_port(), mirror.pki.ca_cert(), version)
    }

    /// Go with alice's password in GOPROXY for the mirror at `host_port`,
    /// trusting the CA at `ca`.
    pub fn for_proxy(host_port: &str, ca: PathBuf, version: GoVersion) -> GoEnv {
        GoEnv {
            dir: tempfile::tempdir().expect("go env dir"),
            version,
            goproxy: format!("https://{USER}:{PASSWORD}@{host_port}"),
            ca,
            gosumdb: "off".into(),
            gotoolchain: "local".into(),
        }
    }

    /// Starts over with empty caches (same GOPROXY).
    pub fn fresh_caches(&mut self) {
        self.dir = tempfile::tempdir().expect("go env dir");
    }

    pub fn work_dir(&self, name: &str) -> PathBuf {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).expect("work dir");
        dir
    }

    pub fn command(&self, cwd: &Path, args: &[&str]) -> Command {
        let home = self.dir.path();
        let mut command = Command::new(self.version.binary());
        command
            .args(args)
            .current_dir(cwd)
            .env_clear()
            .env("PATH", self.version.path())
            .env("GOTOOLCHAIN", &self.gotoolchain)
            .env("HOME", home)
            .env("GOPATH", home.join("gopath"))
            .env("GOMODCACHE", home.join("gopath/pkg/mod"))
            .env("GOCACHE", self.version.build_cache())
            .env("GOENV", "off")
            .env("GOFLAGS", "-modcacherw")
            .env("GOPROXY", &self.goproxy)
            .env("GOSUMDB", &self.gosumdb)
            .env("CGO_ENABLED", "0")
            .env("SSL_CERT_FILE", &self.ca);
        command
    }

    /// Runs `go ARGS` in `cwd` on a blocking thread; returns its output.
    pub async fn run(&self, cwd: &Path, args: &[&str]) -> Output {
        let mut command = self.command(cwd, args);
        tokio::task::spawn_blocking(move || process::run(&mut command, Duration::from_secs(240)))
            .await
            .expect("go runs")
    }

    /// Runs `go ARGS`, failing the test with go's output if it fails.
    pub async fn ok(&self, cwd: &Path, args: &[&str]) -> String {
        let output = self.run(cwd, args).await;
        assert!(
            output.status.success(),
            "go {args:?} failed:\n{}",
            process::text(&output)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// A real checksum database (golang.org/x/mod/sumdb) on loopback.
pub struct SumdbServer {
    pub url: String,
    /// The verifier key, `NAME+HASH+KEY`: what GOSUMDB is set to.
    pub vkey: String,
    /// With `start_forked`: a second log signed by the same key.
    pub fork_url: Option<String>,
    pub log: PathBuf,
    pub guard: Guard,
}

impl SumdbServer {
    /// Builds tests/go/sumdbserver with Debian's go and x/mod (GOPATH mode)
    /// and starts it over `tree`, with `fill` synthetic records logged first.
    pub async fn start(dir: &Path, name: &str, tree: &Path, fill: usize) -> SumdbServer {
        SumdbServer::start_with(dir, name, tree, fill, None).await
    }

    /// Also serves, at `fork_url`, a second log under the same key with
    /// `fork` synthetic records of its own first: a forked database.
    pub async fn start_forked(
        dir: &Path,
        name: &str,
        tree: &Path,
        fill: usize,
        fork: usize,
    ) -> SumdbServer {
        SumdbServer::start_with(dir, name, tree, fill, Some(fork)).await
    }

    async fn start_with(
        dir: &Path,
        name: &str,
        tree: &Path,
        fill: usize,
        fork: Option<usize>,
    ) -> SumdbServer {
        let binary = build_x_mod_tool(dir, "sumdbserver").await;
        let log = dir.join("sumdb.log");
        let stdout = dir.join("sumdb.out");
        let mut command = Command::new(&binary);
        command
            .arg("-name")
            .arg(name)
            .arg("-tree")
            .arg(tree)
            .arg("-fill")
            .arg(fill.to_string())
            .arg("-log")
            .arg(&log)
            .arg("-fork")
            .arg(fork.map_or(-1, |n| n as i64).to_string())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"));
        let guard = Guard::spawn("sumdbserver", &mut command);
        let lines = if fork.is_some() { 2 } else { 1 };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let printed: Vec<String> = loop {
            let text = std::fs::read_to_string(&stdout).unwrap_or_default();
            if text.matches('\n').count() >= lines {
                break text.lines().map(str::to_owned).collect();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "sumdbserver printed no address"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        let (addr, vkey) = printed[0].split_once(' ').expect("ADDR VKEY");
        SumdbServer {
            url: format!("http://{addr}"),
            vkey: vkey.to_owned(),
            fork_url: printed.get(1).map(|addr| format!("http://{addr}")),
            log,
            guard,
        }
    }

    /// Request paths the database has received.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// Builds tests/go/NAME with Debian's go and x/mod (GOPATH mode) into `dir`.
pub async fn build_x_mod_tool(dir: &Path, name: &str) -> PathBuf {
    let go = process::tool("go");
    let x_mod = Path::new("/usr/share/gocode/src/golang.org/x/mod/sumdb/server.go");
    assert!(
        x_mod.is_file(),
        "golang.org/x/mod is not installed: run scripts/test.sh (it installs golang-golang-x-mod-dev)"
    );
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/go")
        .join(name)
        .join("main.go");
    let binary = dir.join(name);
    let mut build = Command::new(go);
    build
        .args(["build", "-o"])
        .arg(&binary)
        .arg(&source)
        .env_clear()
        .env("PATH", "/usr/lib/go-1.19/bin:/usr/bin:/bin")
        .env("HOME", dir)
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOCACHE", GoVersion::Go119.build_cache())
        .env("CGO_ENABLED", "0");
    let output =
        tokio::task::spawn_blocking(move || process::run(&mut build, Duration::from_secs(300)))
            .await
            .expect("build runs");
    assert!(
        output.status.success(),
        "building {name} failed:\n{}",
        process::text(&output)
    );
    binary
}
