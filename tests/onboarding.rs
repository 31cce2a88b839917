//! What `mirror pki issue-client` tells a new user works when copied: every
//! block it prints that can run on this machine is run against a test mirror,
//! changed only as tests/common/onboarding.rs describes. The docker block runs
//! in tests/docker_e2e.rs (it needs an address off loopback) and the containerd
//! block in tests/containerd_e2e.rs (it needs a containerd daemon). The forward
//! block runs here with `systemctl --user` stood in for (there is no user
//! manager in a test): it starts the unit's `ExecStart` as systemd would.

mod common;

use std::time::Duration;

use common::audit::{Who, wait_for_read};
use common::go::{PSEUDO, StaticProxy, standard_modules, write_latest, write_tree};
use common::onboarding::Onboarding;
use common::process::{free_port, mirror_bin, text, tool};
use common::registry::layout::Layout;
use common::registry::{Auth, DockerRegistry};
use common::{MirrorOptions, PASSWORD, TestMirror, USER};
use tokio::task::block_in_place;

const LIMIT: Duration = Duration::from_secs(180);

fn issue(mirror: &TestMirror, work: &std::path::Path) -> Onboarding {
    Onboarding::issue(work, &mirror.pki.dir, USER, &mirror.host_port(), &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printed_text_has_a_block_per_client_and_sends_no_certificate_user_to_login() {
    let mirror = TestMirror::start(MirrorOptions::default()).await;
    let work = tempfile::tempdir().expect("work");
    let onboarding = block_in_place(|| issue(&mirror, work.path()));
    let clients = ["docker", "podman", "containerd", "curl", "go", "forward"];
    for client in clients {
        assert!(!onboarding.commands(client).is_empty(), "{client}");
    }
    let commands: Vec<String> = clients
        .iter()
        .flat_map(|client| onboarding.commands(client))
        .collect();
    assert!(
        !commands.iter().any(|c| c.contains(" login")),
        "a certificate is the login: {commands:#?}"
    );
    let containerd = onboarding.block("containerd");
    assert!(
        containerd.contains("config_path") && containerd.contains("--hosts-dir"),
        "{containerd}"
    );
    let podman = onboarding.block("podman");
    assert!(podman.contains("[[registry.mirror]]"), "{podman}");
    let go = onboarding.block("go");
    let port_line = format!("machine {} login {USER}", mirror.host_port());
    let host_line = format!("machine {} login {USER}", mirror.addr.ip());
    assert!(go.contains(&port_line) && go.contains(&host_line), "{go}");
    assert!(go.contains("export SSL_CERT_FILE="), "{go}");
    let forward = onboarding.block("forward");
    assert!(
        forward.contains("~/.config/systemd/user/mirror-forward.service")
            && forward.contains("Type=notify")
            && forward.contains("export GOPROXY=http://127.0.0.1:5080"),
        "{forward}"
    );
    mirror.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printed_podman_steps_send_docker_hub_names_through_the_mirror() {
    let upstream = DockerRegistry::start(Auth::None);
    let work = tempfile::tempdir().expect("work");
    let image = block_in_place(|| {
        let mut layout = Layout::new(&work.path().join("layout"));
        let image = layout.image("amd64", &[(21, 3000)]);
        layout.tag("alpine", &image);
        let dest = format!("{}/library/alpine:latest", upstream.addr);
        layout.push("alpine", &dest, &[]);
        image
    });
    let mirror = TestMirror::start(MirrorOptions {
        client_auth: "required",
        extra_toml: format!(
            "[go]\nupstream = \"off\"\n\n[[registry.upstream]]\nname = \"docker.io\"\n\
             url = \"{}\"\ndefault = true\n",
            upstream.url()
        ),
        ..MirrorOptions::default()
    })
    .await;
    block_in_place(|| {
        let onboarding = issue(&mirror, work.path());
        let etc = format!("{}/etc/containers/", work.path().display());
        let cert_dir = format!("{etc}certs.d/{}", mirror.host_port());
        let storage = work.path().join("storage").display().to_string();
        // podman's own storage in the temp dir; --cert-dir stands for the moved
        // /etc/containers/certs.d (podman looks for HOST:PORT folders there).
        let prelude = format!(
            "podman() {{ sub=$1; shift; {podman} --root '{storage}/root' --runroot '{storage}/run' \
             --storage-driver vfs --cgroup-manager cgroupfs --events-backend none \
             \"$sub\" --cert-dir '{cert_dir}' \"$@\"; }}",
            podman = tool("podman").display(),
        );
        let conf = format!("{etc}registries.conf");
        let ran = onboarding.run(
            "podman",
            &prelude,
            &[("/etc/containers/", &etc)],
            &[("CONTAINERS_REGISTRIES_CONF", &conf)],
            LIMIT,
        );
        assert!(
            ran.status.success(),
            "the printed podman steps:\n{}\n{}",
            onboarding.block("podman"),
            text(&ran)
        );
        assert!(
            String::from_utf8_lossy(&ran.stdout).contains(
                image
                    .config
                    .as_ref()
                    .map_or("", |c| c.digest.trim_start_matches("sha256:"))
            ),
            "podman prints the image ID it pulled: {}",
            text(&ran)
        );
    });
    let rows = wait_for_read(&mirror, "library/alpine", Who::Cert(USER)).await;
    assert!(
        rows.iter().any(|r| r.artifact.starts_with("docker.io/")),
        "the registries.conf mirror names the upstream in the path: {rows:?}"
    );
    mirror.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printed_curl_command_is_admitted_by_its_certificate() {
    let mirror = TestMirror::start(MirrorOptions {
        client_auth: "required",
        ..MirrorOptions::default()
    })
    .await;
    let work = tempfile::tempdir().expect("work");
    block_in_place(|| {
        let onboarding = issue(&mirror, work.path());
        let ran = onboarding.run("curl", "", &[], &[], LIMIT);
        assert!(ran.status.success(), "{}", text(&ran));
        assert_eq!(String::from_utf8_lossy(&ran.stdout), "{}", "{}", text(&ran));
    });
    mirror.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printed_go_steps_work_with_go_1_19_and_go_1_23() {
    let tree = tempfile::tempdir().expect("tree");
    write_tree(tree.path(), &standard_modules());
    write_latest(tree.path(), "example.com/pseudo", PSEUDO);
    let upstream = StaticProxy::start(tree.path()).await;
    let mirror = TestMirror::start(MirrorOptions {
        extra_toml: format!(
            // About the printed steps; go_verify.rs proves verification.
            "[go]\nupstream = \"{}\"\nverify = \"off\"\n",
            upstream.url()
        ),
        ..MirrorOptions::default()
    })
    .await;
    let work = tempfile::tempdir().expect("work");
    let onboarding = block_in_place(|| issue(&mirror, work.path()));
    for go in ["go", "go1.23"] {
        let home = work.path().join(format!("home-{go}"));
        std::fs::create_dir_all(&home).expect("home");
        let bin = tool(go);
        let path = format!(
            "{}:/usr/bin:/bin",
            bin.parent().expect("go's bin dir").display()
        );
        let home_text = home.display().to_string();
        let gopath = home.join("gopath").display().to_string();
        let gocache = home.join("gocache").display().to_string();
        let env = [
            ("PATH", path.as_str()),
            ("HOME", home_text.as_str()),
            ("GOPATH", gopath.as_str()),
            ("GOCACHE", gocache.as_str()),
            ("GOFLAGS", "-modcacherw"),
        ];
        let ran = block_in_place(|| {
            onboarding.run(
                "go",
                "",
                &[
                    ("golang.org/x/mod", "example.com/greet"),
                    ("PASSWORD", PASSWORD),
                ],
                &env,
                LIMIT,
            )
        });
        assert!(ran.status.success(), "{go}: {}", text(&ran));
        assert_eq!(
            String::from_utf8_lossy(&ran.stdout).trim(),
            "example.com/greet v1.2.0",
            "{go}: {}",
            text(&ran)
        );
    }
    wait_for_read(&mirror, "example.com/greet", Who::User(USER)).await;
    mirror.stop().await;
}

/// `systemctl --user` for the forward block: `enable --now` starts the unit's
/// `ExecStart` (with `%h`, as systemd expands it) in the background, records
/// its PID and returns once the port answers, as `Type=notify` makes
/// systemctl wait for the service.
fn fake_systemctl(listen: &str) -> String {
    format!(
        r#"systemctl() {{
  [ "$1" = --user ] || return 1
  case "$2" in
    daemon-reload) ;;
    enable)
      [ "$3" = --now ] || return 1
      exec_start=$(sed -n 's/^ExecStart=//p' "$HOME/.config/systemd/user/$4" | sed "s|%h|$HOME|g")
      $exec_start >"$HOME/forward.log" 2>&1 </dev/null &
      echo $! >"$HOME/forward.pid"
      tries=0
      until curl -s -o /dev/null "http://{listen}/"; do
        tries=$((tries + 1)); [ $tries -lt 200 ] || {{ cat "$HOME/forward.log"; return 1; }}
        sleep 0.05
      done ;;
    *) return 1 ;;
  esac
}}"#
    )
}

/// Stops the forwarder a fake `systemctl` started, by the PID it recorded.
struct Started(std::path::PathBuf);

impl Drop for Started {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.0) {
            let _ = std::process::Command::new("kill").arg(pid.trim()).status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printed_forward_unit_gives_go_1_19_and_go_1_23_the_certificate() {
    let tree = tempfile::tempdir().expect("tree");
    write_tree(tree.path(), &standard_modules());
    let upstream = StaticProxy::start(tree.path()).await;
    let mirror = TestMirror::start(MirrorOptions {
        client_auth: "required",
        // About the printed steps; go_verify.rs proves verification.
        extra_toml: format!(
            "[go]\nupstream = \"{}\"\nverify = \"off\"\n",
            upstream.url()
        ),
        ..MirrorOptions::default()
    })
    .await;
    let work = tempfile::tempdir().expect("work");
    let onboarding = block_in_place(|| issue(&mirror, work.path()));
    let bin = mirror_bin().display().to_string();
    for go in ["go", "go1.23"] {
        let home = work.path().join(format!("home-{go}"));
        std::fs::create_dir_all(&home).expect("home");
        let _started = Started(home.join("forward.pid"));
        let go_bin = tool(go);
        let path = format!(
            "{}:/usr/bin:/bin",
            go_bin.parent().expect("go's bin dir").display()
        );
        let home_text = home.display().to_string();
        let gopath = home.join("gopath").display().to_string();
        let gocache = home.join("gocache").display().to_string();
        let env = [
            ("PATH", path.as_str()),
            ("HOME", home_text.as_str()),
            ("GOPATH", gopath.as_str()),
            ("GOCACHE", gocache.as_str()),
            ("GOFLAGS", "-modcacherw"),
        ];
        let listen = format!("127.0.0.1:{}", free_port());
        let ran = block_in_place(|| {
            onboarding.run(
                "forward",
                &fake_systemctl(&listen),
                &[
                    ("golang.org/x/mod", "example.com/greet"),
                    ("127.0.0.1:5080", &listen),
                    ("/usr/local/bin/mirror", &bin),
                ],
                &env,
                LIMIT,
            )
        });
        assert!(ran.status.success(), "{go}: {}", text(&ran));
        assert_eq!(
            String::from_utf8_lossy(&ran.stdout).trim(),
            "example.com/greet v1.2.0",
            "{go}: {}",
            text(&ran)
        );
    }
    wait_for_read(&mirror, "example.com/greet", Who::Cert(USER)).await;
    mirror.stop().await;
}
