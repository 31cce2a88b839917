//! The Docker engine (Debian's docker.io: dockerd 20.10) against the mirror:
//! `docker login`/`logout`, pulls by tag, by digest and of a multi-arch index
//! from a real docker-registry upstream, a push to a hosted namespace and back,
//! dockerd's `registry-mirrors` path as README describes it, and mTLS with the
//! certs.d folder `mirror pki issue-client` writes and the docker commands it
//! prints, at an address in a network namespace the test creates.
//!
//! dockerd treats 127.0.0.0/8 as an insecure registry: there it presents no
//! client certificate (and falls back to plain HTTP), so on loopback these
//! tests log in with a password. It sends a registry-mirror no `docker login`
//! password at all: on loopback a mirror gets nothing; off loopback it gets the
//! certs.d certificate.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::audit::{Who, wait_for_read};
use common::docker::{Dockerd, EtcCertsD};
use common::netns::{NetNs, NetnsMirror};
use common::onboarding::Onboarding;
use common::process::{mirror_bin, run, text, tool};
use common::registry::layout::{Built, Layout};
use common::registry::{Auth, DockerRegistry};
use common::{MirrorOptions, PASSWORD, TestMirror, USER};
use serde_json::json;
use tokio::task::block_in_place;

struct Seeded {
    alpine: Built,
    multi: Built,
    _work: tempfile::TempDir,
}

/// `library/alpine:3.20` and `:latest` (one amd64 image) and `team/multi:v1`
/// (an index of amd64 and arm64), pushed into `registry` with skopeo.
fn seed(registry: &DockerRegistry) -> Seeded {
    let work = tempfile::tempdir().expect("layout dir");
    let mut layout = Layout::new(&work.path().join("layout"));
    let alpine = layout.image("amd64", &[(1, 4000)]);
    let amd64 = layout.image("amd64", &[(2, 3000)]);
    let arm64 = layout.image("arm64", &[(3, 3000)]);
    let multi = layout.index(&[("amd64", &amd64), ("arm64", &arm64)]);
    layout.tag("alpine", &alpine);
    layout.tag("multi", &multi);
    for tag in ["3.20", "latest"] {
        let dest = format!("{}/library/alpine:{tag}", registry.addr);
        layout.push("alpine", &dest, &[]);
    }
    let dest = format!("{}/team/multi:v1", registry.addr);
    layout.push("multi", &dest, &["--all"]);
    Seeded {
        alpine,
        multi,
        _work: work,
    }
}

/// A mirror of `registry` as Docker Hub (`docker.io`, the default upstream,
/// with Hub's `library/` rule though its URL is not Hub's), with `internal/…`
/// hosted, and `extra` TOML after.
async fn mirror_of(registry: &DockerRegistry, registry_section: &str) -> TestMirror {
    TestMirror::start(MirrorOptions {
        extra_toml: format!(
            "[go]\nupstream = \"off\"\n\n[registry]\nhosted = [\"internal\"]\n{registry_section}\n\n\
             [[registry.upstream]]\nname = \"docker.io\"\nurl = \"{}\"\ndefault = true\nlibrary_prefix = true\n",
            registry.url()
        ),
        ..MirrorOptions::default()
    })
    .await
}

fn client_auths(docker: &Dockerd) -> serde_json::Value {
    let path = docker.client_config().join("config.json");
    let config: serde_json::Value = std::fs::read(&path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    config["auths"].clone()
}

fn inspect(docker: &Dockerd, reference: &str, format: &str) -> String {
    docker
        .ok(&["image", "inspect", "--format", format, reference])
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_login_takes_the_right_password_refuses_a_wrong_one_and_logout_forgets_it() {
    let mirror = TestMirror::start(MirrorOptions::default()).await;
    let registry = mirror.host_port();
    block_in_place(|| {
        let docker = Dockerd::start(json!({}));
        let wrong = docker.login(&registry, USER, "not-the-password");
        assert!(!wrong.status.success(), "{}", text(&wrong));
        assert!(
            String::from_utf8_lossy(&wrong.stderr).contains("401 Unauthorized"),
            "{}",
            text(&wrong)
        );
        assert!(client_auths(&docker).get(&registry).is_none());

        let right = docker.login(&registry, USER, PASSWORD);
        assert!(right.status.success(), "{}", text(&right));
        assert!(
            String::from_utf8_lossy(&right.stdout).contains("Login Succeeded"),
            "{}",
            text(&right)
        );
        assert!(client_auths(&docker).get(&registry).is_some());

        let out = docker.ok(&["logout", &registry]);
        assert!(out.contains("Removing login credentials"), "{out}");
        assert!(client_auths(&docker).get(&registry).is_none());
    });
    mirror.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_pulls_by_tag_by_digest_and_a_multi_arch_index_through_the_mirror() {
    let upstream = DockerRegistry::start(Auth::None);
    let seeded = block_in_place(|| seed(&upstream));
    let mirror = mirror_of(&upstream, "").await;
    let reg = mirror.host_port();
    block_in_place(|| {
        let docker = Dockerd::start(json!({}));
        let login = docker.login(&reg, USER, PASSWORD);
        assert!(login.status.success(), "{}", text(&login));

        let by_tag = format!("{reg}/library/alpine:3.20");
        docker.ok(&["pull", &by_tag]);
        let digests = inspect(&docker, &by_tag, "{{json .RepoDigests}}");
        assert!(digests.contains(&seeded.alpine.digest), "{digests}");

        // Docker Hub's short name, by digest: `alpine` is `library/alpine` there.
        let by_digest = format!("{reg}/alpine@{}", seeded.alpine.digest);
        docker.ok(&["pull", &by_digest]);
        assert_eq!(
            inspect(&docker, &by_digest, "{{.Id}}"),
            inspect(&docker, &by_tag, "{{.Id}}")
        );

        let multi = format!("{reg}/team/multi:v1");
        docker.ok(&["pull", &multi]);
        assert_eq!(inspect(&docker, &multi, "{{.Architecture}}"), "amd64");
        let digests = inspect(&docker, &multi, "{{json .RepoDigests}}");
        assert!(
            digests.contains(&seeded.multi.digest),
            "the index's digest names the pull: {digests}"
        );

        docker.ok(&["logout", &reg]);
        let refused = docker.run(&["pull", &format!("{reg}/library/alpine:latest")]);
        assert!(!refused.status.success(), "{}", text(&refused));
    });
    wait_for_read(&mirror, "library/alpine", Who::User(USER)).await;
    wait_for_read(&mirror, "team/multi", Who::User(USER)).await;
    mirror.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_pushes_to_a_hosted_namespace_and_pulls_it_back() {
    let upstream = DockerRegistry::start(Auth::None);
    let mirror = mirror_of(&upstream, "").await;
    let reg = mirror.host_port();
    let reference = format!("{reg}/internal/app:1.0");
    block_in_place(|| {
        let docker = Dockerd::start(json!({}));
        let login = docker.login(&reg, USER, PASSWORD);
        assert!(login.status.success(), "{}", text(&login));
        docker.import(&reference, "built here\n");
        let id = inspect(&docker, &reference, "{{.Id}}");
        let pushed = docker.ok(&["push", &reference]);
        assert!(pushed.contains("digest: sha256:"), "{pushed}");
        docker.ok(&["rmi", &reference]);
        docker.ok(&["pull", &reference]);
        assert_eq!(inspect(&docker, &reference, "{{.Id}}"), id);
    });
    wait_for_read(&mirror, "internal/app", Who::User(USER)).await;
    let rows = common::audit::rows(&mirror, "internal/app").await;
    assert!(
        rows.iter()
            .any(|r| r.action == "write" && r.subject == USER && r.outcome == "hosted"),
        "the push is audited as alice's write: {rows:?}"
    );
    mirror.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_mirrors_on_loopback_pass_the_mirror_by_under_the_default_policy() {
    let upstream = DockerRegistry::start(Auth::None);
    block_in_place(|| seed(&upstream));
    let mirror = mirror_of(&upstream, "").await;
    block_in_place(|| {
        let docker = Dockerd::start(json!({
            "registry-mirrors": [format!("https://{}", mirror.host_port())],
        }));
        let pulled = docker.run(&["pull", "alpine:3.20"]);
        // dockerd asked the mirror with no credentials, was refused, and went
        // to Docker Hub on its own (unreachable from the test machine).
        assert!(!pulled.status.success(), "{}", text(&pulled));
        assert!(
            String::from_utf8_lossy(&pulled.stderr).contains("registry-1.docker.io"),
            "{}",
            text(&pulled)
        );
        let log = docker.log();
        assert!(
            log.contains("Attempting next endpoint for pull after error")
                && log.contains("no basic auth credentials"),
            "dockerd's fallback: {}",
            docker.log_tail(20)
        );
    });
    assert!(
        common::audit::rows(&mirror, "library/alpine")
            .await
            .is_empty(),
        "nothing was served"
    );
    mirror.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_mirrors_on_loopback_pull_through_the_mirror_when_reads_are_anonymous() {
    let upstream = DockerRegistry::start(Auth::None);
    let seeded = block_in_place(|| seed(&upstream));
    let mirror = mirror_of(&upstream, "read = \"anonymous\"").await;
    let reg = mirror.host_port();
    block_in_place(|| {
        let docker = Dockerd::start(json!({ "registry-mirrors": [format!("https://{reg}")] }));
        docker.ok(&["pull", "alpine:3.20"]);
        let digests = inspect(&docker, "alpine:3.20", "{{json .RepoDigests}}");
        assert!(digests.contains(&seeded.alpine.digest), "{digests}");
        // The price README states: /v2/ no longer challenges, so dockerd never
        // sends a password to this host, and any password "logs in".
        let login = docker.login(&reg, USER, "not-the-password");
        assert!(login.status.success(), "{}", text(&login));
    });
    let rows = wait_for_read(&mirror, "library/alpine", Who::Anonymous).await;
    assert!(
        rows.iter().any(|r| r.artifact.contains("library/alpine")),
        "{rows:?}"
    );
    mirror.stop().await;
}

fn pki_cli(dir: &Path, args: &[&str]) {
    let output = run(
        Command::new(mirror_bin())
            .current_dir(dir)
            .arg("pki")
            .args(args),
        Duration::from_secs(30),
    );
    assert!(output.status.success(), "pki {args:?}: {}", text(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_presents_the_issued_certificate_off_loopback_named_and_as_a_registry_mirror() {
    block_in_place(|| {
        let netns = NetNs::create();
        let dir = tempfile::tempdir().expect("work dir");
        let san = netns.inside.to_string();
        pki_cli(dir.path(), &["init", "--dir", "pki"]);
        pki_cli(dir.path(), &["issue-server", "--dir", "pki", "--san", &san]);
        let mirror = NetnsMirror::start(&netns, dir.path());
        let onboarding = Onboarding::issue(dir.path(), Path::new("pki"), USER, &mirror.addr, &[]);
        assert!(
            !onboarding
                .printed
                .lines()
                .any(|line| line.trim_start().starts_with("docker login")),
            "certificate users are not told to log in:\n{}",
            onboarding.printed
        );
        let certs = dir.path().join("certs.d").join(&mirror.addr);

        // Content to pull, pushed with alice's certificate (skopeo reads certs.d too).
        let work = dir.path().join("layout");
        let mut layout = Layout::new(&work);
        let image = layout.image("amd64", &[(7, 2000)]);
        layout.tag("alpine", &image);
        let cert_dir = certs.display().to_string();
        let dest = format!("{}/library/alpine:latest", mirror.addr);
        layout.push("alpine", &dest, &["--dest-cert-dir", &cert_dir]);

        let etc = EtcCertsD::claim(&mirror.addr);
        let docker = Dockerd::start(json!({}));
        let socket = format!("unix://{}", docker.socket().display());
        let client = docker.client_config().display().to_string();
        let env = [
            ("DOCKER_HOST", socket.as_str()),
            ("DOCKER_CONFIG", client.as_str()),
        ];
        let prelude = format!("docker() {{ {} \"$@\"; }}", tool("docker").display());
        let ran = onboarding.run("docker", &prelude, &[], &env, Duration::from_secs(180));
        assert!(
            ran.status.success(),
            "the printed docker steps:\n{}\n{}\ndockerd:\n{}",
            onboarding.block("docker"),
            text(&ran),
            docker.log_tail(20)
        );
        assert!(etc.path.join("client.cert").is_file());
        let digests = inspect(&docker, &dest, "{{json .RepoDigests}}");
        assert!(digests.contains(&image.digest), "{digests}");

        // Pushing works by certificate alone too.
        let app = format!("{}/team/app:1", mirror.addr);
        docker.import(&app, "pushed by certificate\n");
        docker.ok(&["push", &app]);
        docker.ok(&["rmi", &app]);
        docker.ok(&["pull", &app]);

        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let audited = loop {
            let rows = mirror.audit("team/app");
            let done = rows.iter().any(|(_, _, action)| action == "read");
            if done || std::time::Instant::now() > deadline {
                break rows;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        for action in ["write", "read"] {
            assert!(
                audited
                    .iter()
                    .any(|(identity, subject, a)| identity == "cert"
                        && subject == USER
                        && a == action),
                "{action} by alice's certificate: {audited:?}"
            );
        }
        assert!(
            mirror
                .audit("library/alpine")
                .iter()
                .any(|(identity, subject, _)| identity == "cert" && subject == USER),
            "the printed pull was alice's, by certificate"
        );

        // As a registry-mirror, dockerd presents the same certificate (it sends
        // a mirror no `docker login` password, but certs.d it does).
        let mirrored = Dockerd::start(json!({
            "registry-mirrors": [format!("https://{}", mirror.addr)],
        }));
        mirrored.ok(&["pull", "alpine:latest"]);
        let digests = inspect(&mirrored, "alpine:latest", "{{json .RepoDigests}}");
        assert!(digests.contains(&image.digest), "{digests}");
        assert!(
            !mirrored.log().contains("Attempting next endpoint"),
            "served by the mirror, no fallback: {}",
            mirrored.log_tail(20)
        );
        drop(mirrored);

        // The certificate is what admitted dockerd: without it the handshake fails.
        std::fs::remove_file(etc.path.join("client.cert")).expect("remove cert");
        std::fs::remove_file(etc.path.join("client.key")).expect("remove key");
        docker.ok(&["rmi", &app]);
        let refused = docker.run(&["pull", &app]);
        assert!(!refused.status.success(), "{}", text(&refused));
        drop(mirror.guard);
    });
}
