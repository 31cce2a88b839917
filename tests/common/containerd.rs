//! A real containerd (Debian's containerd 1.6) for end-to-end tests, with its
//! root, state, sockets and config file in a temp dir, and `ctr` pointed at it.
//! Dropping it stops the daemon by PID (SIGTERM, then SIGKILL).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::process::{Guard, run, text, tool};

pub const LIMIT: Duration = Duration::from_secs(120);

pub struct Containerd {
    pub dir: tempfile::TempDir,
    guard: Option<Guard>,
}

impl Containerd {
    /// Starts containerd with a version 2 config of its own, `extra` TOML
    /// appended (such as the CRI `config_path` stanza).
    pub fn start(extra: &str) -> Containerd {
        let dir = tempfile::tempdir().expect("containerd dir");
        let root = dir.path();
        let config = root.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{root}/root\"\nstate = \"{root}/state\"\n\n\
                 [grpc]\n  address = \"{root}/containerd.sock\"\n\n\
                 [ttrpc]\n  address = \"{root}/containerd.sock.ttrpc\"\n\n\
                 [debug]\n  address = \"\"\n\n{extra}\n",
                root = root.display()
            ),
        )
        .expect("containerd config");
        let log = std::fs::File::create(root.join("containerd.log")).expect("log");
        let guard = Guard::spawn(
            "containerd",
            Command::new(tool("containerd"))
                .arg("--config")
                .arg(&config)
                .stdout(log.try_clone().expect("log handle"))
                .stderr(log),
        );
        let mut containerd = Containerd {
            dir,
            guard: Some(guard),
        };
        containerd.wait_until_ready();
        containerd
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + LIMIT;
        while std::os::unix::net::UnixStream::connect(self.socket()).is_err() {
            let running = self.guard.as_mut().is_some_and(Guard::is_running);
            assert!(
                running && Instant::now() < deadline,
                "containerd did not start; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr --address SOCKET ARGS`.
    pub fn ctr(&self, args: &[&str]) -> Output {
        run(
            Command::new(tool("ctr"))
                .arg("--address")
                .arg(self.socket())
                .args(args),
            LIMIT,
        )
    }

    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let output = self.ctr(args);
        assert!(
            output.status.success(),
            "ctr {args:?}: {}\ncontainerd log:\n{}",
            text(&output),
            self.log()
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn stop(&mut self) {
        let Some(mut guard) = self.guard.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(guard.pid().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while guard.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(25));
        }
        drop(guard);
        unmount_below(self.dir.path());
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Snapshotters mount below the root while they unpack; a killed daemon can
/// leave such a mount, which would keep the temp dir from being removed.
fn unmount_below(dir: &Path) {
    let prefix = dir.display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for point in mounts.lines().filter_map(|l| l.split(' ').nth(1)) {
        if point.starts_with(&prefix) {
            let _ = Command::new("umount").arg("-l").arg(point).status();
        }
    }
}
