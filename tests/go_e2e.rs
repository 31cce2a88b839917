//! The real `go` command (Debian's Go 1.19, and Go 1.23 from bookworm-backports)
//! against the mirror over TLS with Basic auth in GOPROXY or `.netrc`, in front
//! of a real static GOPROXY server. Every scenario runs with both versions; Go
//! 1.23 also switches toolchains through the mirror.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::go::{
    GoEnv, GoVersion, ModuleVersion, PSEUDO, StaticProxy, standard_modules, write_latest,
    write_tree,
};
use common::{MirrorOptions, TestMirror};

/// `name::go_1_19` and `name::go_1_23`, each running `scenario(version)`.
macro_rules! with_each_go {
    ($name:ident, $scenario:ident) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn go_1_19() {
                $scenario(GoVersion::Go119).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn go_1_23() {
                $scenario(GoVersion::Go123).await;
            }
        }
    };
}

const MAIN_GO: &str = r#"package main

import (
	"fmt"

	"example.com/Upper/Mod"
	"example.com/deps"
	"example.com/greet"
	greetv2 "example.com/greet/v2"
	"example.com/legacy"
	"example.com/pseudo"
)

func main() {
	fmt.Println(greet.Hello(), "|", greetv2.Hello(), "|", mod.Hello(), "|", legacy.Hello(), "|", pseudo.Hello(), "|", deps.Hello())
}
"#;

const EXPECTED: &str =
    "hello 1.2 | hello 2.1 | upper 1.0.1 | legacy v2 | pseudo | deps+upper 1.0.1";

async fn mirror_for(upstream: &str, extra: &str) -> TestMirror {
    TestMirror::start(MirrorOptions {
        extra_toml: format!("[go]\nupstream = \"{upstream}\"\nsumdb = []\nverify = \"off\"  # the go command through the mirror; go_verify.rs proves verification\n{extra}"),
        ..MirrorOptions::default()
    })
    .await
}

fn standard_tree() -> tempfile::TempDir {
    let tree = tempfile::tempdir().expect("tree");
    write_tree(tree.path(), &standard_modules());
    write_latest(tree.path(), "example.com/pseudo", PSEUDO);
    tree
}

async fn build_and_run(go: &GoEnv, app: &Path) -> String {
    go.ok(app, &["build", "-o", "app", "."]).await;
    let output = std::process::Command::new(app.join("app"))
        .output()
        .expect("run app");
    assert!(output.status.success());
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

with_each_go!(
    go_builds_through_the_mirror_then_again_offline_from_its_cache,
    builds_then_rebuilds_offline
);

async fn builds_then_rebuilds_offline(version: GoVersion) {
    let tree = standard_tree();
    let upstream = StaticProxy::start(tree.path()).await;
    // list_ttl 0: every list is refetched, so the offline run proves stale serving.
    let mirror = mirror_for(&upstream.url(), "list_ttl = \"0s\"\n").await;
    let go = GoEnv::with_version(&mirror, version);

    let outside = go.work_dir("outside");
    let downloaded = go
        .ok(
            &outside,
            &[
                "mod",
                "download",
                "-json",
                "example.com/greet@v1.0.0",
                "example.com/Upper/Mod@v1.0.0",
                "example.com/Upper/Mod@v1.1.0-RC.1",
                "example.com/greet/v2@v2.0.0",
                "example.com/legacy@v2.0.0+incompatible",
                &format!("example.com/pseudo@{PSEUDO}"),
                "example.com/deps@v1.0.0",
            ],
        )
        .await;
    assert!(!downloaded.contains("\"Error\""), "{downloaded}");
    assert_eq!(downloaded.matches("\"Zip\"").count(), 7, "{downloaded}");
    assert_eq!(
        upstream.count("/example.com/!upper/!mod/@v/v1.1.0-!r!c.1.zip"),
        1
    );
    assert!(
        upstream.count("/example.com/!upper/!mod/@v/v1.0.0.zip") == 1,
        "the uppercase path reaches upstream !-encoded: {:?}",
        upstream.requests()
    );

    let app = go.work_dir("app");
    go.ok(&app, &["mod", "init", "example.com/app"]).await;
    std::fs::write(app.join("main.go"), MAIN_GO).expect("main.go");
    let versions = go
        .ok(&app, &["list", "-m", "-versions", "example.com/greet"])
        .await;
    assert_eq!(versions.trim(), "example.com/greet v1.0.0 v1.1.0 v1.2.0");
    let versions = go
        .ok(&app, &["list", "-m", "-versions", "example.com/Upper/Mod"])
        .await;
    assert_eq!(
        versions.trim(),
        "example.com/Upper/Mod v1.0.0 v1.0.1 v1.1.0-RC.1"
    );

    go.ok(&app, &["get", "example.com/greet@latest"]).await;
    let go_mod = std::fs::read_to_string(app.join("go.mod")).expect("go.mod");
    assert!(go_mod.contains("example.com/greet v1.2.0"), "{go_mod}");
    go.ok(
        &app,
        &[
            "get",
            "example.com/greet/v2@latest",
            "example.com/legacy@v2.0.0+incompatible",
            "example.com/pseudo@latest",
            "example.com/deps@v1.0.0",
        ],
    )
    .await;
    let go_mod = std::fs::read_to_string(app.join("go.mod")).expect("go.mod");
    assert!(
        go_mod.contains(&format!("example.com/pseudo {PSEUDO}")),
        "{go_mod}"
    );
    assert!(
        go_mod.contains("example.com/Upper/Mod v1.0.1"),
        "deps pulls its dependency in: {go_mod}"
    );
    assert_eq!(build_and_run(&go, &app).await, EXPECTED);

    // Upstream gone: a fresh module cache builds the same program from the mirror alone.
    upstream.stop().await;
    let offline = GoEnv::with_version(&mirror, version);
    let app2 = offline.work_dir("app");
    for file in ["go.mod", "go.sum", "main.go"] {
        std::fs::copy(app.join(file), app2.join(file)).expect("copy app");
    }
    assert_eq!(build_and_run(&offline, &app2).await, EXPECTED);
    let versions = offline
        .ok(&app2, &["list", "-m", "-versions", "example.com/greet"])
        .await;
    assert_eq!(
        versions.trim(),
        "example.com/greet v1.0.0 v1.1.0 v1.2.0",
        "the stale list is served"
    );
}

with_each_go!(
    a_comma_chain_falls_through_a_404_to_the_next_upstream,
    comma_chain
);

async fn comma_chain(version: GoVersion) {
    let empty = tempfile::tempdir().expect("empty tree");
    let first = StaticProxy::start(empty.path()).await;
    let tree = standard_tree();
    let second = StaticProxy::start(tree.path()).await;
    let mirror = mirror_for(&format!("{},{}", first.url(), second.url()), "").await;
    let go = GoEnv::with_version(&mirror, version);
    let dir = go.work_dir("outside");
    go.ok(&dir, &["mod", "download", "example.com/greet@v1.1.0"])
        .await;
    assert!(
        first.count("example.com/greet/@v/v1.1.0") >= 1,
        "the first upstream was asked"
    );
    assert_eq!(
        second.count("example.com/greet/@v/v1.1.0.zip"),
        1,
        "the second one served"
    );
}

with_each_go!(
    private_modules_never_reach_upstream_and_the_404_says_why,
    private_modules
);

async fn private_modules(version: GoVersion) {
    let tree = tempfile::tempdir().expect("tree");
    let mut modules = standard_modules();
    modules.push(ModuleVersion::package(
        "corp.example.com/secret",
        "v1.0.0",
        "secret",
        "s",
        &[],
    ));
    write_tree(tree.path(), &modules);
    let upstream = StaticProxy::start(tree.path()).await;
    let mirror = mirror_for(
        &upstream.url(),
        "private = [\"*.example.com\", \"example.com/internal\"]\n",
    )
    .await;
    let go = GoEnv::with_version(&mirror, version);
    let dir = go.work_dir("outside");
    let output = go
        .run(&dir, &["mod", "download", "corp.example.com/secret@v1.0.0"])
        .await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("private"),
        "the reason is printed: {stderr}"
    );
    assert!(
        !stderr.contains(common::PASSWORD),
        "go masks the password: {stderr}"
    );
    let output = go
        .run(
            &dir,
            &["mod", "download", "example.com/internal/tool@v1.0.0"],
        )
        .await;
    assert!(!output.status.success());
    // A public module still works beside them.
    go.ok(&dir, &["mod", "download", "example.com/greet@v1.0.0"])
        .await;
    let requests = upstream.requests();
    assert!(
        requests
            .iter()
            .all(|p| !p.contains("secret") && !p.contains("internal")),
        "private names reached upstream: {requests:?}"
    );
}

with_each_go!(
    an_unknown_module_fails_fast_with_the_upstream_reason,
    unknown_module
);

async fn unknown_module(version: GoVersion) {
    let tree = standard_tree();
    let upstream = StaticProxy::start(tree.path()).await;
    let mirror = mirror_for(&upstream.url(), "").await;
    let go = GoEnv::with_version(&mirror, version);
    let dir = go.work_dir("outside");
    let started = Instant::now();
    let output = go
        .run(&dir, &["mod", "download", "example.com/nothere@v1.0.0"])
        .await;
    assert!(!output.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is not in the test tree"),
        "upstream's reason is passed on: {stderr}"
    );
    let asked = upstream.count("example.com/nothere");
    let output = go
        .run(&dir, &["mod", "download", "example.com/nothere@v1.0.0"])
        .await;
    assert!(!output.status.success());
    assert_eq!(
        upstream.count("example.com/nothere"),
        asked,
        "the 404 is cached"
    );
}

/// The `.netrc` lines `mirror pki issue-client` prints for `mirror`.
fn printed_netrc_lines(mirror: &TestMirror, work: &Path) -> Vec<String> {
    let onboarding = common::onboarding::Onboarding::issue(
        work,
        &mirror.pki.dir,
        common::USER,
        &mirror.host_port(),
        &[],
    );
    let lines: Vec<String> = onboarding
        .block("go")
        .lines()
        .map(|line| line.trim_start_matches(['#', ' ']))
        .filter(|line| line.starts_with("machine "))
        .map(|line| line.replace("PASSWORD", common::PASSWORD))
        .collect();
    assert!(
        !lines.is_empty(),
        "no .netrc lines in:\n{}",
        onboarding.printed
    );
    lines
}

/// Downloads a module with GOPROXY naming only the mirror (no password in it)
/// and `netrc` as ~/.netrc.
async fn download_with_netrc(mirror: &TestMirror, version: GoVersion, netrc: &str) -> bool {
    let mut go = GoEnv::with_version(mirror, version);
    go.goproxy = format!("https://{}", mirror.host_port());
    let netrc_path = go.dir.path().join(".netrc");
    std::fs::write(&netrc_path, netrc).expect(".netrc");
    let dir = go.work_dir("outside");
    go.run(&dir, &["mod", "download", "example.com/greet@v1.0.0"])
        .await
        .status
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printed_netrc_lines_authenticate_go_1_19_and_go_1_23() {
    let tree = standard_tree();
    let upstream = StaticProxy::start(tree.path()).await;
    let mirror = mirror_for(&upstream.url(), "").await;
    let work = tempfile::tempdir().expect("work");
    let lines =
        tokio::task::block_in_place(|| printed_netrc_lines(&mirror, work.path())).join("\n") + "\n";
    for version in GoVersion::ALL {
        assert!(
            download_with_netrc(&mirror, version, &lines).await,
            "{version:?} with the printed lines:\n{lines}"
        );
    }
    // Why both lines: each version matches only one form of `machine`.
    let ip = mirror.addr.ip();
    let host_only = format!(
        "machine {ip} login {} password {}\n",
        common::USER,
        common::PASSWORD
    );
    let with_port = format!(
        "machine {} login {} password {}\n",
        mirror.host_port(),
        common::USER,
        common::PASSWORD
    );
    assert!(download_with_netrc(&mirror, GoVersion::Go119, &host_only).await);
    assert!(!download_with_netrc(&mirror, GoVersion::Go119, &with_port).await);
    assert!(download_with_netrc(&mirror, GoVersion::Go123, &with_port).await);
    assert!(!download_with_netrc(&mirror, GoVersion::Go123, &host_only).await);
}

/// `golang.org/toolchain`'s version for go1.N on this machine's platform.
fn toolchain_version(go: &str) -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!("v0.0.1-{go}.linux-{arch}")
}

/// A toolchain module whose `bin/go` is a shell script printing its version.
fn fake_toolchain(go: &str) -> ModuleVersion {
    ModuleVersion {
        path: "golang.org/toolchain".into(),
        version: toolchain_version(go),
        go_mod: None,
        files: vec![
            (
                "bin/go".into(),
                format!(
                    "#!/bin/sh\necho \"go version {go} linux (fake toolchain from the test tree)\"\n"
                ),
            ),
            // After unpacking, go makes bin/go, bin/gofmt and pkg/tool/
            // executable, and insists they exist.
            ("bin/gofmt".into(), "#!/bin/sh\nexit 0\n".into()),
            (
                "pkg/tool/README".into(),
                "no tools in a fake toolchain\n".into(),
            ),
        ],
        listed: true,
    }
}

async fn go_version_in(go: &GoEnv, toolchain: &str) -> std::process::Output {
    let app = go.work_dir(&format!("app-{toolchain}"));
    std::fs::write(
        app.join("go.mod"),
        format!("module example.com/app\n\ngo 1.23\n\ntoolchain {toolchain}\n"),
    )
    .expect("go.mod");
    go.run(&app, &["version"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_1_23_switches_to_a_toolchain_fetched_through_the_mirror_or_says_it_is_not_available() {
    let tree = standard_tree();
    write_tree(tree.path(), &[fake_toolchain("go1.99.0")]);
    let upstream = StaticProxy::start(tree.path()).await;
    let work = tempfile::tempdir().expect("work");
    // A downloaded toolchain must be in a checksum database: go refuses one
    // when GOSUMDB=off or GONOSUMDB matches (golang.org/toolchain has no
    // go.sum line). The test's own database vouches for the fake one, and go
    // reaches it through the mirror's /sumdb/ proxy.
    let sumdb =
        common::go::SumdbServer::start(work.path(), "sum.mirror.test", tree.path(), 0).await;
    let mirror = TestMirror::start(MirrorOptions {
        extra_toml: format!(
            "[go]\nupstream = \"{}\"\n\n[[go.sumdb]]\nname = \"sum.mirror.test\"\nurl = \"{}\"\nkey = \"{}\"\n",
            upstream.url(),
            sumdb.url,
            sumdb.vkey
        ),
        ..MirrorOptions::default()
    })
    .await;
    let mut go = GoEnv::with_version(&mirror, GoVersion::Go123);
    go.gosumdb = sumdb.vkey.clone();
    go.gotoolchain = "auto".into();

    let output = go_version_in(&go, "go1.99.0").await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("go version go1.99.0 linux (fake toolchain"),
        "{}",
        common::process::text(&output)
    );
    let zip = format!(
        "/golang.org/toolchain/@v/{}.zip",
        toolchain_version("go1.99.0")
    );
    assert_eq!(upstream.count(&zip), 1, "{:?}", upstream.requests());
    let lookup = format!(
        "/lookup/golang.org/toolchain@{}",
        toolchain_version("go1.99.0")
    );
    assert!(sumdb.requests().contains(&lookup), "{:?}", sumdb.requests());

    let missing = go_version_in(&go, "go1.98.0").await;
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success(), "{stderr}");
    assert!(
        stderr.contains("download go1.98.0") && stderr.contains("toolchain not available"),
        "{stderr}"
    );
    let (status, body) = common::go::get(
        &mirror,
        &format!(
            "/golang.org/toolchain/@v/{}.zip",
            toolchain_version("go1.98.0")
        ),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND);
    assert!(
        String::from_utf8_lossy(&body).contains("not in the test tree"),
        "the mirror passes upstream's reason on: {}",
        String::from_utf8_lossy(&body)
    );
}
