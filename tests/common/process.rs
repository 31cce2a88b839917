//! Real processes for end-to-end tests: the `mirror` binary itself, and the
//! external tools (`curl`, `podman`, `skopeo`, `go`, `docker-registry`,
//! `dockerd`, `containerd`, `ip`, …) that `scripts/test.sh` installs. A missing
//! tool fails the test, naming the package that brings it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The path of an external tool, or a failure that says how to get it.
pub fn tool(name: &str) -> PathBuf {
    let candidates: &[&str] = match name {
        "go" => &["/usr/lib/go-1.19/bin/go"],
        "go1.23" => &["/usr/lib/go-1.23/bin/go"],
        "docker-registry" => &["/usr/bin/docker-registry"],
        // Debian's docker.io, not another `docker` earlier on PATH: the CLI
        // must match the daemon the tests start.
        "docker" => &["/usr/bin/docker"],
        "dockerd" => &["/usr/sbin/dockerd"],
        "ip" => &["/usr/bin/ip", "/usr/sbin/ip"],
        // Debian keeps PostgreSQL's programs off PATH.
        "initdb" => &["/usr/lib/postgresql/15/bin/initdb"],
        "postgres" => &["/usr/lib/postgresql/15/bin/postgres"],
        "pg_isready" => &["/usr/lib/postgresql/15/bin/pg_isready"],
        "psql" => &["/usr/lib/postgresql/15/bin/psql"],
        _ => &[],
    };
    for candidate in candidates {
        if Path::new(candidate).is_file() {
            return PathBuf::from(candidate);
        }
    }
    if candidates.is_empty() {
        let path = std::env::var_os("PATH").unwrap_or_default();
        for dir in std::env::split_paths(&path) {
            let full = dir.join(name);
            if full.is_file() {
                return full;
            }
        }
    }
    panic!(
        "`{name}` is not installed: run scripts/test.sh (scripts/install-test-deps.sh installs {})",
        package_of(name)
    );
}

/// The Debian package scripts/install-test-deps.sh installs `name` from.
fn package_of(name: &str) -> &'static str {
    match name {
        "go" => "golang-1.19-go",
        "go1.23" => "golang-1.23-go from bookworm-backports",
        "docker" | "dockerd" => "docker.io",
        "containerd" | "ctr" => "containerd",
        "ip" => "iproute2",
        "htpasswd" => "apache2-utils",
        "initdb" | "postgres" | "pg_isready" | "psql" => "postgresql (PostgreSQL 15)",
        "setpriv" => "util-linux",
        "garage" => "garage 2.5.0 with `cargo install`, once per machine (15-30 minutes)",
        "docker-registry" | "skopeo" | "podman" | "curl" | "openssl" | "git" => {
            "the package of that name"
        }
        _ => "every tool the tests use",
    }
}

/// Runs a command to completion with a time limit; returns its output.
pub fn run(command: &mut Command, limit: Duration) -> Output {
    let description = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {description}: {e}"));
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let output = child.wait_with_output().ok();
                panic!(
                    "{description} did not finish within {limit:?}; stderr: {}",
                    output
                        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                        .unwrap_or_default()
                );
            }
        }
    }
    child.wait_with_output().expect("collect output")
}

pub fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The `mirror` binary cargo built for this test run.
pub fn mirror_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mirror"))
}

/// A child process killed (by its PID, and only it) when dropped.
pub struct Guard {
    pub child: Child,
    pub name: String,
}

impl Guard {
    pub fn spawn(name: &str, command: &mut Command) -> Guard {
        let child = command
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Guard {
            child,
            name: name.to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal to this process only.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until this process listens on `addr`; fails the test at once,
    /// saying so, when the process exits first.
    pub fn wait_for_port(&mut self, addr: &str, limit: Duration) {
        if let Err(why) = wait_until_listening(self, addr, limit) {
            panic!("{why}");
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `addr` accepts TCP connections, unless `process` exits first
/// (then the error says how) or `limit` passes.
pub fn wait_until_listening(
    process: &mut Guard,
    addr: &str,
    limit: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while std::net::TcpStream::connect(addr).is_err() {
        if let Ok(Some(status)) = process.child.try_wait() {
            return Err(format!(
                "{} exited ({status}) before {addr} listened",
                process.name
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!("nothing listening on {addr} after {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Ok(())
}

/// A free loopback port (bound then released) for a child process to bind.
/// The tests of one binary run at once, and a port released here is free
/// again until its child binds it, which takes a replica seconds: never hand
/// out one port twice, or two children may race for it.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
    panic!("the kernel offered only ports handed out already");
}

/// A temp dir in memory (/dev/shm) where there is one, else in the usual temp
/// dir. For engines' data: file creation on this machine's disk costs
/// milliseconds a file under load, which makes an initdb-sized tree of a
/// thousand files take seconds to copy; tmpfs takes a tenth of that.
pub fn memory_tempdir(prefix: &str) -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix);
    if shm.is_dir()
        && let Ok(dir) = builder.tempdir_in(shm)
    {
        return dir;
    }
    builder.tempdir().expect("temp dir")
}

/// Runs `skopeo --insecure-policy ARGS`, failing the test with its output if
/// it fails; its stdout.
pub fn skopeo(args: &[&str]) -> String {
    let mut command = Command::new(tool("skopeo"));
    command.arg("--insecure-policy").args(args);
    let output = run(&mut command, Duration::from_secs(300));
    assert!(
        output.status.success(),
        "skopeo {args:?} failed:\n{}",
        text(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
