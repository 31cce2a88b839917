//! The real `go` command (Debian's golang-1.19-go) against the mirror over
//! TLS with Basic auth in GOPROXY, in front of a real static GOPROXY server.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::go::{
    GoEnv, ModuleVersion, PSEUDO, StaticProxy, standard_modules, write_latest, write_tree,
};
use common::{MirrorOptions, TestMirror};

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
        extra_toml: format!("[go]\nupstream = \"{upstream}\"\nsumdb = []\n{extra}"),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_builds_through_the_mirror_then_again_offline_from_its_cache() {
    let tree = standard_tree();
    let upstream = StaticProxy::start(tree.path()).await;
    // list_ttl 0: every list is refetched, so the offline run proves stale serving.
    let mirror = mirror_for(&upstream.url(), "list_ttl = \"0s\"\n").await;
    let go = GoEnv::new(&mirror);

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
    let offline = GoEnv::new(&mirror);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comma_chain_falls_through_a_404_to_the_next_upstream() {
    let empty = tempfile::tempdir().expect("empty tree");
    let first = StaticProxy::start(empty.path()).await;
    let tree = standard_tree();
    let second = StaticProxy::start(tree.path()).await;
    let mirror = mirror_for(&format!("{},{}", first.url(), second.url()), "").await;
    let go = GoEnv::new(&mirror);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_modules_never_reach_upstream_and_the_404_says_why() {
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
    let go = GoEnv::new(&mirror);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_module_fails_fast_with_the_upstream_reason() {
    let tree = standard_tree();
    let upstream = StaticProxy::start(tree.path()).await;
    let mirror = mirror_for(&upstream.url(), "").await;
    let go = GoEnv::new(&mirror);
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
