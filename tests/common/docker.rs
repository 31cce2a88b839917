//! A real Docker engine for end-to-end tests: Debian's dockerd (docker.io) with
//! its data root, exec root, pidfile, socket, key and config file in a temp dir,
//! the containerd it starts itself under that exec root, and a client config
//! (DOCKER_CONFIG) of its own. Dropping it stops dockerd (SIGTERM, then SIGKILL)
//! and then its containerd, each by PID.
//!
//! It runs with `--storage-driver vfs --iptables=false --bridge=none`: no kernel
//! module, no firewall rule and no interface is touched. What it still writes
//! outside the temp dir is `/run/docker/plugins` (a fixed plugin discovery path,
//! left empty), and whatever a test puts in `/etc/docker/certs.d` (see `EtcCertsD`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::process::{Guard, run, text, tool};

const START_LIMIT: Duration = Duration::from_secs(60);
const STOP_LIMIT: Duration = Duration::from_secs(20);
pub const LIMIT: Duration = Duration::from_secs(180);

/// A running dockerd and a client configured for it.
pub struct Dockerd {
    pub dir: tempfile::TempDir,
    guard: Option<Guard>,
}

impl Dockerd {
    /// Starts dockerd with `daemon_json` merged into the config file the
    /// harness writes (e.g. `{"registry-mirrors": [...]}`).
    pub fn start(daemon_json: serde_json::Value) -> Dockerd {
        let dir = tempfile::tempdir().expect("dockerd dir");
        let root = dir.path();
        let mut config = serde_json::json!({
            // Without it dockerd writes its identity key to /etc/docker/key.json.
            "deprecated-key-path": root.join("key.json"),
        });
        if let (Some(config), Some(extra)) = (config.as_object_mut(), daemon_json.as_object()) {
            config.extend(extra.clone());
        }
        std::fs::write(root.join("daemon.json"), config.to_string()).expect("daemon.json");
        std::fs::create_dir_all(root.join("client")).expect("client config dir");
        let log = std::fs::File::create(root.join("dockerd.log")).expect("dockerd log");
        let mut command = Command::new(tool("dockerd"));
        command
            .args([
                "--storage-driver",
                "vfs",
                "--iptables=false",
                "--ip6tables=false",
            ])
            .args(["--bridge=none", "--config-file"])
            .arg(root.join("daemon.json"))
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", root.join("docker.sock").display()))
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        let mut dockerd = Dockerd {
            guard: Some(Guard::spawn("dockerd", &mut command)),
            dir,
        };
        dockerd.wait_until_ready();
        dockerd
    }

    fn wait_until_ready(&mut self) {
        let socket = self.dir.path().join("docker.sock");
        let deadline = Instant::now() + START_LIMIT;
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            let running = self.guard.as_mut().is_some_and(Guard::is_running);
            assert!(
                running && Instant::now() < deadline,
                "dockerd did not start (running: {running}); its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `docker ARGS` (Debian's client) talking to this daemon only.
    pub fn docker(&self, args: &[&str]) -> Command {
        let mut command = Command::new(tool("docker"));
        command
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.socket().display()))
            .env("DOCKER_CONFIG", self.client_config())
            .env_remove("DOCKER_CERT_PATH")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CONTEXT");
        command
    }

    /// Runs `docker ARGS` with the harness's time limit.
    pub fn run(&self, args: &[&str]) -> Output {
        run(&mut self.docker(args), LIMIT)
    }

    /// Runs `docker ARGS`, failing the test with its output and the daemon's
    /// log if it fails; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "docker {args:?} failed:\n{}\ndockerd log (tail):\n{}",
            text(&output),
            self.log_tail(30)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `docker login` with the password on stdin, as the docs recommend.
    pub fn login(&self, registry: &str, user: &str, password: &str) -> Output {
        let mut child = self
            .docker(&["login", "--username", user, "--password-stdin", registry])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker login starts");
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            stdin
                .write_all(password.as_bytes())
                .expect("password to stdin");
        }
        wait_output(child, LIMIT)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    /// DOCKER_CONFIG: where `docker login` keeps credentials.
    pub fn client_config(&self) -> PathBuf {
        self.dir.path().join("client")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// A small image made without a registry: `docker import` of a one-file tar.
    pub fn import(&self, reference: &str, content: &str) {
        let work = self.dir.path().join("import");
        std::fs::create_dir_all(&work).expect("import dir");
        std::fs::write(work.join("hello.txt"), content).expect("import file");
        let tar = self.dir.path().join("import.tar");
        let made = run(
            Command::new("tar")
                .arg("-cf")
                .arg(&tar)
                .arg("-C")
                .arg(&work)
                .arg("hello.txt"),
            LIMIT,
        );
        assert!(made.status.success(), "tar: {}", text(&made));
        self.ok(&["import", &tar.display().to_string(), reference]);
    }

    fn stop(&mut self) {
        let Some(mut guard) = self.guard.take() else {
            return;
        };
        let containerd =
            std::fs::read_to_string(self.dir.path().join("exec/containerd/containerd.pid"))
                .ok()
                .and_then(|pid| pid.trim().parse::<u32>().ok());
        signal(guard.pid(), "TERM");
        let deadline = Instant::now() + STOP_LIMIT;
        while guard.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(25));
        }
        drop(guard);
        // dockerd stops its containerd on a clean exit; after a SIGKILL it is left.
        if let Some(pid) = containerd.filter(|&pid| self.owns(pid)) {
            signal(pid, "KILL");
        }
        // dockerd bind-mounts its data root onto itself; a killed one leaves it.
        let data = self.dir.path().join("data");
        if is_mount_point(&data) {
            let _ = Command::new("umount").arg("-l").arg(&data).status();
        }
    }

    /// Whether `pid` is a process started under this daemon's exec root.
    fn owns(&self, pid: u32) -> bool {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|cmdline| {
                String::from_utf8_lossy(&cmdline)
                    .contains(&self.dir.path().join("exec").display().to_string())
            })
            .unwrap_or(false)
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends `signal` to one process, ignoring failure (it may be gone already).
fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn is_mount_point(path: &Path) -> bool {
    let path = path.display().to_string();
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|line| line.split(' ').nth(1) == Some(path.as_str()))
}

fn wait_output(mut child: std::process::Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while matches!(child.try_wait(), Ok(None)) {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect output")
}

/// A folder the test puts in the real `/etc/docker/certs.d` (dockerd reads no
/// other), named by a `HOST:PORT` no one else uses; removed when dropped, and
/// `/etc/docker/certs.d` with it if the test created it and left it empty.
pub struct EtcCertsD {
    pub path: PathBuf,
    /// The folders above `path` that did not exist before, innermost first.
    created: Vec<PathBuf>,
}

impl EtcCertsD {
    pub const ROOT: &'static str = "/etc/docker/certs.d";

    pub fn claim(host_port: &str) -> EtcCertsD {
        let root = Path::new(Self::ROOT);
        let created = root
            .ancestors()
            .take_while(|dir| !dir.exists())
            .map(Path::to_path_buf)
            .collect();
        let path = root.join(host_port);
        assert!(
            !path.exists(),
            "{} exists already: another run's leftover?",
            path.display()
        );
        EtcCertsD { path, created }
    }
}

impl Drop for EtcCertsD {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
        for dir in &self.created {
            // Only if empty: something else may have moved in meanwhile.
            let _ = std::fs::remove_dir(dir);
        }
    }
}
