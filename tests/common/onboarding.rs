//! What `mirror pki issue-client` prints, taken at its word: the real binary
//! issues a certificate, its output is split into the shell blocks it prints
//! (one per client, each headed by a `# client…` comment), and a block is run
//! with `sh` after only two kinds of change, both visible in the test: path
//! prefixes swapped for temp dirs (`/etc/containerd/` → `TMP/etc/containerd/`),
//! and a prelude of shell functions that point a tool at the test's daemon or
//! storage (`ctr() { /usr/bin/ctr --address SOCK "$@"; }`). `sudo` runs its
//! command as is: the tests already run as root.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::process::{mirror_bin, run, text};

pub struct Onboarding {
    /// Everything the command printed.
    pub printed: String,
    /// The folder that holds `certs.d/`: where the blocks are meant to run.
    pub cwd: PathBuf,
}

impl Onboarding {
    /// Runs `mirror pki issue-client NAME --dir PKI --registry REGISTRY --out
    /// certs.d [--upstream U]…` in `cwd`.
    pub fn issue(cwd: &Path, pki: &Path, name: &str, registry: &str, upstreams: &[&str]) -> Self {
        let mut command = Command::new(mirror_bin());
        command
            .current_dir(cwd)
            .args(["pki", "issue-client", name, "--dir"])
            .arg(pki)
            .args(["--registry", registry, "--out", "certs.d"]);
        for upstream in upstreams {
            command.args(["--upstream", upstream]);
        }
        let output = run(&mut command, Duration::from_secs(30));
        assert!(output.status.success(), "issue-client: {}", text(&output));
        Onboarding {
            printed: String::from_utf8_lossy(&output.stdout).into_owned(),
            cwd: cwd.to_owned(),
        }
    }

    /// The block whose header comment starts with `# CLIENT`.
    pub fn block(&self, client: &str) -> &str {
        let header = format!("# {client}");
        self.printed
            .split("\n\n")
            .map(|block| block.trim_start_matches('\n'))
            .find(|block| block.starts_with(&header))
            .unwrap_or_else(|| panic!("no `{header}` block in:\n{}", self.printed))
    }

    /// The block's command lines: neither comments nor heredoc bodies.
    pub fn commands(&self, client: &str) -> Vec<String> {
        let mut commands = Vec::new();
        let mut heredoc_end: Option<String> = None;
        for line in self.block(client).lines() {
            if let Some(end) = &heredoc_end {
                if line == end {
                    heredoc_end = None;
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            if let Some((_, marker)) = line.split_once("<<") {
                heredoc_end = Some(marker.trim().trim_matches('\'').to_owned());
            }
            commands.push(line.to_owned());
        }
        commands
    }

    /// Runs the `client` block with `sh -e` in `cwd`, after replacing each
    /// `(from, to)` everywhere in it and prepending `prelude`, in an
    /// environment of only a plain PATH, HOME = `cwd`, and `env`.
    pub fn run(
        &self,
        client: &str,
        prelude: &str,
        replace: &[(&str, &str)],
        env: &[(&str, &str)],
        limit: Duration,
    ) -> Output {
        let mut block = self.block(client).to_owned();
        for (from, to) in replace {
            block = block.replace(from, to);
        }
        let script = format!("sudo() {{ \"$@\"; }}\n{prelude}\n{block}\n");
        let mut command = Command::new("sh");
        command
            .args(["-e", "-x", "-c", &script])
            .current_dir(&self.cwd)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", &self.cwd);
        for (key, value) in env {
            command.env(key, value);
        }
        run(&mut command, limit)
    }
}
