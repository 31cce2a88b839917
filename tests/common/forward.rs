//! `mirror forward` as a user runs it: the real binary, with a systemd-style
//! `NOTIFY_SOCKET` the test listens on, so readiness (and the address it bound
//! to port 0) is the forwarder's own `READY=1`, never a poll. Stopped by its
//! PID when dropped.

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::process::{Guard, mirror_bin};

pub struct Forward {
    pub guard: Guard,
    pub addr: SocketAddr,
    /// Everything the forwarder wrote to stderr (its log).
    pub stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Forward {
    /// `mirror forward --listen 127.0.0.1:0 --to TO --cert-dir CERT_DIR`.
    pub fn start(to: &str, cert_dir: &Path) -> Forward {
        Forward::start_with(&["--listen", "127.0.0.1:0"], to, cert_dir)
    }

    /// With `args` (`--listen …`, `--allow-non-loopback`) before `--to` and `--cert-dir`.
    pub fn start_with(args: &[&str], to: &str, cert_dir: &Path) -> Forward {
        let dir = tempfile::tempdir().expect("forward dir");
        let socket_path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&socket_path).expect("notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("socket timeout");
        let stderr = dir.path().join("stderr");
        let mut command = command(args, to, cert_dir);
        command
            .env("NOTIFY_SOCKET", &socket_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        let mut guard = Guard::spawn("mirror forward", &mut command);
        let status = wait_ready(&socket, &mut guard, &stderr);
        let addr = status
            .split_whitespace()
            .find_map(|word| word.strip_prefix("http://"))
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no address in the forwarder's status: {status}"));
        Forward {
            guard,
            addr,
            stderr,
            _dir: dir,
        }
    }

    /// The GOPROXY that goes through it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The forwarder's peak resident memory so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.guard.pid()))
            .expect("the forwarder's /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmHWM in {status}"))
    }
}

/// The `mirror forward` command line, for tests that run it to completion.
pub fn command(args: &[&str], to: &str, cert_dir: &Path) -> Command {
    let mut command = Command::new(mirror_bin());
    command
        .arg("forward")
        .args(args)
        .args(["--to", to, "--cert-dir"])
        .arg(cert_dir)
        .env_remove("NOTIFY_SOCKET");
    command
}

/// The `STATUS=` of the forwarder's `READY=1` message.
fn wait_ready(socket: &UnixDatagram, guard: &mut Guard, stderr: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buffer = vec![0u8; 4096];
    loop {
        if let Ok(n) = socket.recv(&mut buffer) {
            let message = String::from_utf8_lossy(&buffer[..n]).into_owned();
            if message.lines().any(|l| l == "READY=1") {
                return message
                    .lines()
                    .find_map(|l| l.strip_prefix("STATUS="))
                    .unwrap_or_default()
                    .to_owned();
            }
        }
        let log = || std::fs::read_to_string(stderr).unwrap_or_default();
        assert!(
            guard.is_running(),
            "mirror forward exited before it was ready:\n{}",
            log()
        );
        assert!(
            Instant::now() < deadline,
            "mirror forward sent no READY=1 within 30 s:\n{}",
            log()
        );
    }
}
