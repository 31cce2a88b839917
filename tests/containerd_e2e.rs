//! containerd (Debian's containerd 1.6 and its `ctr`) through the mirror with
//! `client_auth = "required"`, using exactly the hosts.toml files and the CRI
//! `config_path` stanza that `mirror pki issue-client` prints, for Docker Hub
//! and for a second upstream. Only `/etc/containerd/` is moved to a temp dir.

mod common;

use std::time::Duration;

use common::audit::{Who, wait_for_read};
use common::containerd::Containerd;
use common::onboarding::Onboarding;
use common::process::tool;
use common::registry::layout::Layout;
use common::registry::{Auth, DockerRegistry};
use common::{MirrorOptions, TestMirror, USER};
use tokio::task::block_in_place;

/// The printed CRI stanza, uncommented: `#   [plugins…]` → `  [plugins…]`.
fn config_path_stanza(onboarding: &Onboarding) -> String {
    onboarding
        .block("containerd")
        .lines()
        .filter_map(|line| line.strip_prefix("# "))
        .filter(|line| line.starts_with("  "))
        .map(|line| format!("{line}\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctr_pulls_through_the_printed_hosts_toml_for_docker_hub_and_a_second_upstream() {
    let upstream = DockerRegistry::start(Auth::None);
    let work = tempfile::tempdir().expect("work dir");
    let (alpine, tool_image) = block_in_place(|| {
        let mut layout = Layout::new(&work.path().join("layout"));
        let alpine = layout.image("amd64", &[(11, 3000)]);
        let tool_image = layout.image("amd64", &[(12, 3000)]);
        layout.tag("alpine", &alpine);
        layout.tag("tool", &tool_image);
        layout.push(
            "alpine",
            &format!("{}/library/alpine:latest", upstream.addr),
            &[],
        );
        layout.push("tool", &format!("{}/org/tool:1", upstream.addr), &[]);
        (alpine, tool_image)
    });
    let mirror = TestMirror::start(MirrorOptions {
        client_auth: "required",
        extra_toml: format!(
            "[go]\nupstream = \"off\"\n\n\
             [[registry.upstream]]\nname = \"docker.io\"\nurl = \"{url}\"\ndefault = true\n\n\
             [[registry.upstream]]\nname = \"quay.io\"\nurl = \"{url}\"\n",
            url = upstream.url()
        ),
        ..MirrorOptions::default()
    })
    .await;

    block_in_place(|| {
        let onboarding = Onboarding::issue(
            work.path(),
            &mirror.pki.dir,
            USER,
            &mirror.host_port(),
            &["docker.io", "quay.io"],
        );
        let etc = work.path().join("etc/containerd/");
        let etc = etc.display().to_string();
        let stanza = config_path_stanza(&onboarding).replace("/etc/containerd/", &etc);
        assert!(stanza.contains("config_path"), "{stanza}");
        let containerd = Containerd::start(&stanza);
        let plugins = containerd.ctr_ok(&["plugins", "ls"]);
        assert!(
            plugins
                .lines()
                .any(|l| l.contains(" cri ") && l.trim_end().ends_with("ok")),
            "the CRI plugin loads the printed config_path: {plugins}"
        );

        let prelude = format!(
            "ctr() {{ {} --address '{}' \"$@\"; }}",
            tool("ctr").display(),
            containerd.socket().display()
        );
        let ran = onboarding.run(
            "containerd",
            &prelude,
            &[("/etc/containerd/", &etc)],
            &[],
            Duration::from_secs(120),
        );
        assert!(
            ran.status.success(),
            "the printed containerd steps:\n{}\n{}",
            onboarding.block("containerd"),
            common::process::text(&ran)
        );
        let hosts_dir = format!("{etc}certs.d");
        containerd.ctr_ok(&[
            "image",
            "pull",
            "--hosts-dir",
            &hosts_dir,
            "quay.io/org/tool:1",
        ]);
        let images = containerd.ctr_ok(&["image", "ls"]);
        for (name, built) in [
            ("docker.io/library/alpine:latest", &alpine),
            ("quay.io/org/tool:1", &tool_image),
        ] {
            assert!(
                images
                    .lines()
                    .any(|l| l.starts_with(name) && l.contains(&built.digest)),
                "{name} {}: {images}",
                built.digest
            );
        }
    });
    wait_for_read(&mirror, "library/alpine", Who::Cert(USER)).await;
    wait_for_read(&mirror, "org/tool", Who::Cert(USER)).await;
    mirror.stop().await;
}
