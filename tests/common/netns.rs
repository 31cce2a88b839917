//! A network namespace the test creates, joined to the host by a veth pair, so
//! a server inside it has an address off 127.0.0.0/8 that only this machine
//! can reach. dockerd treats every loopback address as an insecure registry and
//! never presents certs.d client certificates there; at this address it does.
//! Dropping it deletes the namespace, which takes the veth pair with it.
//! `NetnsMirror` is the mirror binary serving in there.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::process::{Guard, mirror_bin, run, text, tool};

const LIMIT: Duration = Duration::from_secs(30);

pub struct NetNs {
    pub name: String,
    host_link: String,
    /// The host's end of the pair; traffic to `inside` leaves from here.
    pub host: Ipv4Addr,
    /// The namespace's end: where its servers listen.
    pub inside: Ipv4Addr,
}

impl NetNs {
    /// `mirror-e2e-PID` with 10.203.N.1 (host) and 10.203.N.2 (inside), /30.
    pub fn create() -> NetNs {
        let pid = std::process::id();
        let subnet = (pid % 250 + 1) as u8;
        let netns = NetNs {
            name: format!("mirror-e2e-{pid}"),
            host_link: format!("mte{pid}h"),
            host: Ipv4Addr::new(10, 203, subnet, 1),
            inside: Ipv4Addr::new(10, 203, subnet, 2),
        };
        let inner_link = format!("mte{pid}n");
        netns.ip(&["netns", "add", &netns.name]);
        netns.ip(&[
            "link",
            "add",
            &netns.host_link,
            "type",
            "veth",
            "peer",
            "name",
            &inner_link,
        ]);
        netns.ip(&["link", "set", &inner_link, "netns", &netns.name]);
        netns.ip(&[
            "addr",
            "add",
            &format!("{}/30", netns.host),
            "dev",
            &netns.host_link,
        ]);
        netns.ip(&["link", "set", &netns.host_link, "up"]);
        let inside = format!("{}/30", netns.inside);
        for args in [
            vec!["addr", "add", inside.as_str(), "dev", inner_link.as_str()],
            vec!["link", "set", inner_link.as_str(), "up"],
            vec!["link", "set", "lo", "up"],
        ] {
            let mut full = vec!["-n", netns.name.as_str()];
            full.extend(args);
            netns.ip(&full);
        }
        netns
    }

    fn ip(&self, args: &[&str]) {
        let output = run(Command::new(tool("ip")).args(args), LIMIT);
        assert!(
            output.status.success(),
            "ip {args:?} failed (the tests run as root to create network namespaces):\n{}",
            text(&output)
        );
    }

    /// `program ARGS…` run inside the namespace (`ip netns exec` execs it, so
    /// the child's PID is the program's own).
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut command = Command::new(tool("ip"));
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new(tool("ip"))
            .args(["netns", "del", &self.name])
            .status();
        // Normally gone with the namespace; a half-made one may have left it.
        let _ = Command::new(tool("ip"))
            .args(["link", "del", &self.host_link])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The mirror binary serving inside `netns` at its address, port 5000.
pub struct NetnsMirror {
    pub guard: Guard,
    pub config: PathBuf,
    pub addr: String,
}

impl NetnsMirror {
    /// Serves hosted `library/` and `team/` only, `client_auth = "required"`,
    /// with the PKI the test made in `dir/pki`.
    pub fn start(netns: &NetNs, dir: &Path) -> NetnsMirror {
        let addr = format!("{}:5000", netns.inside);
        let config = dir.join("mirror.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"{addr}\"\ndata_dir = \"data\"\n\n[tls]\ncert = \"pki/server.crt\"\n\
                 key = \"pki/server.key\"\nclient_ca = \"pki/ca.crt\"\nclient_auth = \"required\"\n\n\
                 [go]\nupstream = \"off\"\n\n[registry]\nhosted = [\"library\", \"team\"]\n"
            ),
        )
        .expect("mirror config");
        let log = std::fs::File::create(dir.join("mirror.log")).expect("mirror log");
        let mut command = netns.command(&mirror_bin());
        command
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log);
        let mut guard = Guard::spawn("mirror in netns", &mut command);
        guard.wait_for_port(&addr, Duration::from_secs(30));
        NetnsMirror {
            guard,
            config,
            addr,
        }
    }

    /// `mirror audit --json --artifact ARTIFACT` rows' (identity, subject, action).
    pub fn audit(&self, artifact: &str) -> Vec<(String, String, String)> {
        let output = run(
            Command::new(mirror_bin())
                .args(["audit", "--json", "--artifact", artifact, "--config"])
                .arg(&self.config),
            Duration::from_secs(30),
        );
        assert!(output.status.success(), "{}", text(&output));
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .map(|row| {
                let field = |name: &str| row[name].as_str().unwrap_or_default().to_owned();
                (field("identity"), field("subject"), field("action"))
            })
            .collect()
    }
}
