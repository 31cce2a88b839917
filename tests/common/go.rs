//! Harness for the Go module mirror's tests: a GOPROXY file tree the tests
//! generate (valid module zips, `.info`, `.mod`, `list`), a real HTTP/1.1
//! server on loopback that serves it and logs every request, the real `go`
//! command with a fresh GOPATH/GOMODCACHE/GOCACHE, and a real checksum
//! database (tests/go/sumdbserver, built with Debian's go and x/mod).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::task::{JoinHandle, JoinSet};

use super::process::{self, Guard};
use super::{PASSWORD, TestMirror, USER};

/// A module version to publish in a tree.
pub struct ModuleVersion {
    pub path: String,
    pub version: String,
    /// `go.mod` content; `None` for a `+incompatible` version without one
    /// (its `.mod` is then synthesized as `module PATH`).
    pub go_mod: Option<String>,
    /// Files inside the module: (relative path, content).
    pub files: Vec<(String, String)>,
    /// Listed in `@v/list` (pseudo-versions are not).
    pub listed: bool,
}

impl ModuleVersion {
    /// A module with one package `greet`-style: `func Hello() string { return MESSAGE }`.
    pub fn package(
        path: &str,
        version: &str,
        package: &str,
        message: &str,
        requires: &[(&str, &str)],
    ) -> Self {
        let mut go_mod = format!("module {path}\n\ngo 1.19\n");
        for (dep, version) in requires {
            go_mod.push_str(&format!("\nrequire {dep} {version}\n"));
        }
        ModuleVersion {
            path: path.to_owned(),
            version: version.to_owned(),
            go_mod: Some(go_mod),
            files: vec![(
                format!("{package}.go"),
                format!("package {package}\n\nfunc Hello() string {{ return {message:?} }}\n"),
            )],
            listed: !is_pseudo(version),
        }
    }
}

fn is_pseudo(version: &str) -> bool {
    version.matches('-').count() >= 2 && version.len() > 30
}

/// Go's `!`-case encoding.
pub fn escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_ascii_uppercase() {
                vec!['!', c.to_ascii_lowercase()]
            } else {
                vec![c]
            }
        })
        .collect()
}

/// Writes a GOPROXY file tree under `root`.
pub fn write_tree(root: &Path, modules: &[ModuleVersion]) {
    for m in modules {
        let dir = root.join(escape(&m.path)).join("@v");
        std::fs::create_dir_all(&dir).expect("module dir");
        let base = dir.join(escape(&m.version));
        let info = format!(
            "{{\"Version\":\"{}\",\"Time\":\"2023-01-02T03:04:05Z\"}}",
            m.version
        );
        std::fs::write(with_ext(&base, "info"), info).expect("info");
        let go_mod = m
            .go_mod
            .clone()
            .unwrap_or_else(|| format!("module {}\n", m.path));
        std::fs::write(with_ext(&base, "mod"), &go_mod).expect("mod");
        let prefix = format!("{}@{}/", m.path, m.version);
        let file = std::fs::File::create(with_ext(&base, "zip")).expect("zip");
        let mut zip = zip::ZipWriter::new(file);
        let options = zip::write::SimpleFileOptions::default();
        if let Some(go_mod) = &m.go_mod {
            zip.start_file(format!("{prefix}go.mod"), options)
                .expect("zip entry");
            zip.write_all(go_mod.as_bytes()).expect("zip write");
        }
        for (name, content) in &m.files {
            zip.start_file(format!("{prefix}{name}"), options)
                .expect("zip entry");
            zip.write_all(content.as_bytes()).expect("zip write");
        }
        zip.finish().expect("zip finish");
        let list = dir.join("list");
        let mut listed = std::fs::read_to_string(&list).unwrap_or_default();
        if m.listed {
            listed.push_str(&m.version);
            listed.push('\n');
        }
        std::fs::write(&list, listed).expect("list");
    }
}

fn with_ext(base: &Path, ext: &str) -> PathBuf {
    PathBuf::from(format!("{}.{ext}", base.display()))
}

/// The modules most tests use: several versions each, an uppercase path, a
/// `/v2` module, `+incompatible`, a pseudo-version, and a module that depends
/// on another.
pub const PSEUDO: &str = "v0.0.0-20230102030405-abcdefabcdef";

pub fn standard_modules() -> Vec<ModuleVersion> {
    let mut legacy_v2 = ModuleVersion::package(
        "example.com/legacy",
        "v2.0.0+incompatible",
        "legacy",
        "legacy v2",
        &[],
    );
    legacy_v2.go_mod = None;
    vec![
        ModuleVersion::package("example.com/greet", "v1.0.0", "greet", "hello 1.0", &[]),
        ModuleVersion::package("example.com/greet", "v1.1.0", "greet", "hello 1.1", &[]),
        ModuleVersion::package("example.com/greet", "v1.2.0", "greet", "hello 1.2", &[]),
        ModuleVersion::package("example.com/Upper/Mod", "v1.0.0", "mod", "upper 1.0.0", &[]),
        ModuleVersion::package("example.com/Upper/Mod", "v1.0.1", "mod", "upper 1.0.1", &[]),
        ModuleVersion::package("example.com/greet/v2", "v2.0.0", "greet", "hello 2.0", &[]),
        ModuleVersion::package("example.com/greet/v2", "v2.1.0", "greet", "hello 2.1", &[]),
        ModuleVersion::package("example.com/legacy", "v1.0.0", "legacy", "legacy v1", &[]),
        legacy_v2,
        ModuleVersion::package("example.com/pseudo", PSEUDO, "pseudo", "pseudo", &[]),
        ModuleVersion {
            files: vec![(
                "deps.go".into(),
                "package deps\n\nimport \"example.com/Upper/Mod\"\n\nfunc Hello() string { return \"deps+\" + mod.Hello() }\n"
                    .into(),
            )],
            ..ModuleVersion::package(
                "example.com/deps",
                "v1.0.0",
                "deps",
                "",
                &[("example.com/Upper/Mod", "v1.0.1")],
            )
        },
    ]
}

/// Writes `@latest` for a module whose only version is a pseudo-version, as proxies do.
pub fn write_latest(root: &Path, module: &str, version: &str) {
    let info = format!("{{\"Version\":\"{version}\",\"Time\":\"2023-01-02T03:04:05Z\"}}");
    std::fs::write(root.join(escape(module)).join("@latest"), info).expect("@latest");
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Serve,
    /// Every request gets a 500.
    Fail,
}

struct State {
    root: PathBuf,
    log: Mutex<Vec<String>>,
    mode: Mutex<Mode>,
    delay: Mutex<Duration>,
}

/// A static GOPROXY tree over plain HTTP/1.1 on 127.0.0.1, logging each
/// request's decoded path. Dropping it (or `stop`) closes the listener and
/// every open connection.
pub struct StaticProxy {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: Option<JoinHandle<()>>,
}

impl StaticProxy {
    pub async fn start(root: &Path) -> StaticProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let state = Arc::new(State {
            root: root.to_owned(),
            log: Mutex::new(Vec::new()),
            mode: Mutex::new(Mode::Serve),
            delay: Mutex::new(Duration::ZERO),
        });
        let serving = state.clone();
        let task = tokio::spawn(async move {
            // Owned here: aborting this task drops the set, which aborts every connection.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = serving.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(serve(&state, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        StaticProxy {
            addr,
            state,
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request path seen so far, decoded, in order.
    pub fn requests(&self) -> Vec<String> {
        self.state.log.lock().expect("log").clone()
    }

    /// How many requests' paths contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.requests()
            .iter()
            .filter(|p| p.contains(needle))
            .count()
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().expect("mode") = mode;
    }

    /// Waits this long before answering each request.
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().expect("delay") = delay;
    }

    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for StaticProxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn serve(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let raw = request.uri().path().to_owned();
    let path = percent_encoding::percent_decode_str(&raw)
        .decode_utf8_lossy()
        .into_owned();
    state.log.lock().expect("log").push(path.clone());
    let delay = *state.delay.lock().expect("delay");
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let reply = |status: StatusCode, body: Vec<u8>| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
    };
    if *state.mode.lock().expect("mode") == Mode::Fail {
        return reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            b"upstream is broken\n".to_vec(),
        );
    }
    let relative = path.trim_start_matches('/');
    if relative.split('/').any(|e| e == ".." || e.is_empty()) {
        return reply(StatusCode::BAD_REQUEST, b"bad path\n".to_vec());
    }
    match std::fs::read(state.root.join(relative)) {
        Ok(bytes) => reply(StatusCode::OK, bytes),
        Err(_) => reply(
            StatusCode::NOT_FOUND,
            format!("not found: {relative} is not in the test tree\n").into_bytes(),
        ),
    }
}

/// A fresh environment for the real `go` command: its own GOPATH, module
/// cache, build cache and HOME, no inherited Go settings, our CA trusted
/// through SSL_CERT_FILE, and GOPROXY pointing at the mirror with alice's
/// password in the URL.
pub struct GoEnv {
    pub dir: tempfile::TempDir,
    pub goproxy: String,
    pub ca: PathBuf,
    pub gosumdb: String,
}

impl GoEnv {
    pub fn new(mirror: &TestMirror) -> GoEnv {
        GoEnv {
            dir: tempfile::tempdir().expect("go env dir"),
            goproxy: format!("https://{USER}:{PASSWORD}@{}", mirror.host_port()),
            ca: mirror.pki.ca_cert(),
            gosumdb: "off".into(),
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
        let mut command = Command::new(process::tool("go"));
        command
            .args(args)
            .current_dir(cwd)
            .env_clear()
            .env("PATH", "/usr/lib/go-1.19/bin:/usr/bin:/bin")
            .env("HOME", home)
            .env("GOPATH", home.join("gopath"))
            .env("GOMODCACHE", home.join("gopath/pkg/mod"))
            .env("GOCACHE", home.join("gocache"))
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
    pub log: PathBuf,
    pub guard: Guard,
}

impl SumdbServer {
    /// Builds tests/go/sumdbserver with Debian's go and x/mod (GOPATH mode)
    /// and starts it over `tree`, with `fill` synthetic records logged first.
    pub async fn start(dir: &Path, name: &str, tree: &Path, fill: usize) -> SumdbServer {
        let go = process::tool("go");
        let x_mod = Path::new("/usr/share/gocode/src/golang.org/x/mod/sumdb/server.go");
        assert!(
            x_mod.is_file(),
            "golang.org/x/mod is not installed: run scripts/test.sh (it installs golang-golang-x-mod-dev)"
        );
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go/sumdbserver/main.go");
        let binary = dir.join("sumdbserver");
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
            .env("GOCACHE", dir.join("gocache"))
            .env("CGO_ENABLED", "0");
        let output =
            tokio::task::spawn_blocking(move || process::run(&mut build, Duration::from_secs(300)))
                .await
                .expect("build runs");
        assert!(
            output.status.success(),
            "building sumdbserver failed:\n{}",
            process::text(&output)
        );
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
            .stdout(std::fs::File::create(&stdout).expect("stdout file"));
        let guard = Guard::spawn("sumdbserver", &mut command);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let first_line = loop {
            let text = std::fs::read_to_string(&stdout).unwrap_or_default();
            if let Some(line) = text.lines().next().filter(|_| text.contains('\n')) {
                break line.to_owned();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "sumdbserver printed no address"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        let (addr, vkey) = first_line.split_once(' ').expect("ADDR VKEY");
        SumdbServer {
            url: format!("http://{addr}"),
            vkey: vkey.to_owned(),
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
