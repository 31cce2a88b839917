//! A network namespace for one test: created with `ip netns`, its loopback
//! interface carrying the addresses of `HOSTS` and its `/etc/hosts` (which
//! `ip netns exec` bind-mounts) naming them; removed when the test ends.
//! The test process runs itself again inside it for that one test.

use std::process::Command;
use std::time::Duration;

use super::common::process::{run, text, tool};

const CHILD: &str = "MIRROR_TEST_NETNS";

const HOSTS: &[(&str, &str)] = &[
    ("registry.test", "203.0.113.10"),
    ("storage.test", "198.51.100.7"),
    ("internal.test", "10.77.0.1"),
    ("internal2.test", "10.77.0.2"),
    ("sneaky.test", "127.0.0.1"),
    ("metadata.test", "169.254.169.254"),
];

/// A namespace and its hosts file, removed when dropped.
struct Namespace {
    name: String,
}

impl Namespace {
    fn create(name: &str) -> Namespace {
        let ip = tool("ip");
        let namespace = Namespace {
            name: name.to_owned(),
        };
        let ok = |args: &[&str]| {
            let output = run(Command::new(&ip).args(args), Duration::from_secs(30));
            assert!(output.status.success(), "ip {args:?}: {}", text(&output));
        };
        let added = run(
            Command::new(&ip).args(["netns", "add", name]),
            Duration::from_secs(30),
        );
        assert!(
            added.status.success(),
            "creating network namespace {name} needs root (CAP_SYS_ADMIN), as scripts/test.sh runs \
             the tests: {}",
            text(&added)
        );
        ok(&["netns", "exec", name, "ip", "link", "set", "lo", "up"]);
        for (_, address) in HOSTS {
            ok(&[
                "netns",
                "exec",
                name,
                "ip",
                "addr",
                "add",
                &format!("{address}/32"),
                "dev",
                "lo",
            ]);
        }
        let dir = namespace.etc();
        std::fs::create_dir_all(&dir).expect("/etc/netns dir");
        let mut hosts = String::from("127.0.0.1 localhost\n::1 localhost\n");
        for (host, address) in HOSTS {
            hosts.push_str(&format!("{address} {host}\n"));
        }
        std::fs::write(dir.join("hosts"), hosts).expect("netns hosts file");
        namespace
    }

    fn etc(&self) -> std::path::PathBuf {
        std::path::Path::new("/etc/netns").join(&self.name)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new(tool("ip"))
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(self.etc());
    }
}

/// Runs `scenario` inside a fresh namespace: this process starts itself again
/// there, running only `test` (its full name), and fails if that run fails.
pub fn in_namespace<F>(test: &str, scenario: impl FnOnce() -> F)
where
    F: Future<Output = ()>,
{
    if std::env::var_os(CHILD).is_some() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        return runtime.block_on(scenario());
    }
    let short = test.rsplit("::").next().unwrap_or(test);
    let name = format!(
        "mt-{}-{}",
        std::process::id(),
        &short[..short.len().min(12)]
    );
    let namespace = Namespace::create(&name);
    let exe = std::env::current_exe().expect("test binary");
    let mut command = Command::new(tool("ip"));
    command
        .args(["netns", "exec", &namespace.name])
        .arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, &namespace.name);
    let output = run(&mut command, Duration::from_secs(300));
    let shown = text(&output);
    assert!(output.status.success(), "inside {name}: {shown}");
    assert!(
        shown.contains("1 passed"),
        "the test ran inside {name}: {shown}"
    );
}
