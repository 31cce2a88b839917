//! `[go] verify = "sumdb"`: what the mirror caches is what the checksum
//! database committed to, whatever the client's settings. Against the real
//! `go` command (1.19 and 1.23, with `GOSUMDB=off`, as intranet guides
//! advise) and a real database (golang.org/x/mod/sumdb, tests/go/sumdbserver):
//! a tampered zip and a go.mod that differs from the record are refused and
//! never stored, a database that rolls back is refused, cached records
//! verify with the database down, and private and nosumdb modules never
//! reach the database.

mod common;

use common::go::{
    GoEnv, GoVersion, ModuleVersion, StaticProxy, SumdbServer, get, standard_modules, write_tree,
};
use common::{MirrorOptions, TestMirror, audit, process};
use reqwest::StatusCode;

const NAME: &str = "sum.verify.test";

fn config(upstream: &str, sumdb_url: &str, vkey: &str) -> MirrorOptions {
    MirrorOptions {
        extra_toml: format!(
            "[go]\nupstream = \"{upstream}\"\nprivate = [\"corp.example.com\"]\n\
             nosumdb = [\"nosum.example.com\"]\n\n\
             [[go.sumdb]]\nname = \"{NAME}\"\nurl = \"{sumdb_url}\"\nkey = \"{vkey}\"\n"
        ),
        ..MirrorOptions::default()
    }
}

/// Has the database log `module@version` as the tree holds it now (the
/// test server hashes a module when it is first looked up).
async fn record(sumdb: &SumdbServer, module: &str, version: &str) {
    let url = format!("{}/lookup/{module}@{version}", sumdb.url);
    let response = reqwest::get(&url).await.expect("lookup");
    assert_eq!(response.status(), StatusCode::OK, "{url}");
}

fn package(path: &str, message: &str) -> ModuleVersion {
    ModuleVersion::package(path, "v1.0.0", "p", message, &[])
}

fn in_module_cache(go: &GoEnv, module: &str, file: &str) -> bool {
    go.dir
        .path()
        .join("gopath/pkg/mod/cache/download")
        .join(module)
        .join("@v")
        .join(file)
        .exists()
}

async fn metric(mirror: &TestMirror, result: &str) -> bool {
    let line =
        format!("mirror_go_checksum_checks_total{{database=\"{NAME}\",result=\"{result}\"}}");
    mirror.metrics().await.lines().any(|l| l.starts_with(&line))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_zip_never_reaches_a_client_that_does_not_verify() {
    let tree = tempfile::tempdir().expect("tree");
    let mut modules = standard_modules();
    modules.push(package("example.com/tampered", "real"));
    write_tree(tree.path(), &modules);
    let upstream = StaticProxy::start(tree.path()).await;
    let work = tempfile::tempdir().expect("work");
    let sumdb = SumdbServer::start(work.path(), NAME, tree.path(), 300).await;
    record(&sumdb, "example.com/tampered", "v1.0.0").await;
    // Same go.mod, other code: only the zip differs from the record.
    write_tree(tree.path(), &[package("example.com/tampered", "EVIL")]);
    let mirror = TestMirror::start(config(&upstream.url(), &sumdb.url, &sumdb.vkey)).await;

    for version in GoVersion::ALL {
        let go = GoEnv::with_version(&mirror, version);
        assert_eq!(go.gosumdb, "off", "the client does not verify");
        let app = go.work_dir("app");
        go.ok(&app, &["mod", "init", "example.com/app"]).await;
        // An honest module verifies and is served.
        go.ok(&app, &["get", "example.com/greet@v1.1.0"]).await;
        let output = go
            .run(&app, &["mod", "download", "example.com/tampered@v1.0.0"])
            .await;
        let text = process::text(&output);
        assert!(!output.status.success(), "{version:?}: {text}");
        assert!(
            text.contains("example.com/tampered@v1.0.0: zip has hash h1:")
                && text.contains(&format!("but checksum database {NAME} has h1:")),
            "{version:?}: the error names the module, both hashes and the database: {text}"
        );
        assert!(
            !in_module_cache(&go, "example.com/tampered", "v1.0.0.zip"),
            "{version:?}: the client never got the zip"
        );
    }
    let (status, body) = get(&mirror, "/example.com/tampered/@v/v1.0.0.zip").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "nothing was stored");
    assert!(String::from_utf8_lossy(&body).contains("zip has hash"));
    assert!(metric(&mirror, "mismatch").await);
    assert!(metric(&mirror, "verified").await);
    let rows = audit::rows(&mirror, "example.com/tampered@v1.0.0.zip").await;
    assert!(
        rows.iter()
            .any(|row| row.status == 502 && row.outcome == "invalid"),
        "{rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_mod_that_differs_from_the_record_is_refused() {
    // The database logs the modules of its own tree; upstream serves another
    // go.mod for v1.0.0, and a v1.0.1 the database has never seen.
    let db_tree = tempfile::tempdir().expect("db tree");
    write_tree(db_tree.path(), &[package("example.com/modded", "same")]);
    let tree = tempfile::tempdir().expect("tree");
    let mut changed = package("example.com/modded", "same");
    changed.go_mod =
        Some("module example.com/modded\n\ngo 1.19\n\nrequire evil.example v6.6.6\n".into());
    let mut newer = package("example.com/modded", "newer");
    newer.version = "v1.0.1".into();
    write_tree(tree.path(), &[changed, newer]);
    let upstream = StaticProxy::start(tree.path()).await;
    let work = tempfile::tempdir().expect("work");
    let sumdb = SumdbServer::start(work.path(), NAME, db_tree.path(), 0).await;
    let mirror = TestMirror::start(config(&upstream.url(), &sumdb.url, &sumdb.vkey)).await;

    let (status, body) = get(&mirror, "/example.com/modded/@v/v1.0.0.mod").await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(
        body.contains("example.com/modded@v1.0.0: go.mod has hash h1:")
            && body.contains(&format!("checksum database {NAME} has h1:")),
        "{body}"
    );
    let go = GoEnv::with_version(&mirror, GoVersion::Go123);
    let app = go.work_dir("app");
    go.ok(&app, &["mod", "init", "example.com/app"]).await;
    let output = go
        .run(&app, &["mod", "download", "example.com/modded@v1.0.0"])
        .await;
    assert!(!output.status.success(), "{}", process::text(&output));
    assert!(!in_module_cache(&go, "example.com/modded", "v1.0.0.mod"));
    assert!(metric(&mirror, "mismatch").await);

    // A version the database does not know: its own 404 text.
    let (status, body) = get(&mirror, "/example.com/modded/@v/v1.0.1.mod").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        String::from_utf8_lossy(&body).contains(&format!("not found in checksum database {NAME}")),
        "{}",
        String::from_utf8_lossy(&body)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_rolls_back_its_tree_head_is_refused() {
    let tree = tempfile::tempdir().expect("tree");
    write_tree(
        tree.path(),
        &[
            package("example.com/first", "a"),
            package("example.com/second", "b"),
        ],
    );
    let upstream = StaticProxy::start(tree.path()).await;
    let work = tempfile::tempdir().expect("work");
    // The real log has 20 records before ours; the fork none: its heads are
    // smaller than the one the mirror verified, and not in it.
    let sumdb = SumdbServer::start_forked(work.path(), NAME, tree.path(), 20, 0).await;
    let fork_url = sumdb.fork_url.clone().expect("fork");
    let mirror = TestMirror::start(config(&upstream.url(), &sumdb.url, &sumdb.vkey)).await;
    let (status, _) = get(&mirror, "/example.com/first/@v/v1.0.0.mod").await;
    assert_eq!(status, StatusCode::OK);

    // The same data dir, the database behind the same name now the fork.
    let (root, pki) = mirror.stop().await;
    let mirror =
        TestMirror::start_with_pki(root, pki, config(&upstream.url(), &fork_url, &sumdb.vkey))
            .await;
    let (status, body) = get(&mirror, "/example.com/second/@v/v1.0.0.mod").await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(
        body.contains(&format!("checksum database {NAME} rolled back")),
        "{body}"
    );
    let (status, _) = get(&mirror, "/example.com/second/@v/v1.0.0.zip").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "never served unverified");
    // A client that looks the module up through the mirror is refused too.
    let (status, _) = get(
        &mirror,
        &format!("/sumdb/{NAME}/lookup/example.com/second@v1.0.0"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(metric(&mirror, "rollback").await);
    // What was verified before stays served.
    let (status, _) = get(&mirror, "/example.com/first/@v/v1.0.0.mod").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_records_verify_with_the_database_down() {
    let tree = tempfile::tempdir().expect("tree");
    write_tree(
        tree.path(),
        &[
            package("example.com/kept", "a"),
            package("example.com/unseen", "b"),
        ],
    );
    let upstream = StaticProxy::start(tree.path()).await;
    let work = tempfile::tempdir().expect("work");
    let sumdb = SumdbServer::start(work.path(), NAME, tree.path(), 300).await;
    let mirror = TestMirror::start(config(&upstream.url(), &sumdb.url, &sumdb.vkey)).await;
    let (status, _) = get(&mirror, "/example.com/kept/@v/v1.0.0.mod").await;
    assert_eq!(status, StatusCode::OK);
    drop(sumdb);

    // The zip was never fetched: it is proven from the kept record and tiles.
    let go = GoEnv::with_version(&mirror, GoVersion::Go119);
    let app = go.work_dir("app");
    go.ok(&app, &["mod", "init", "example.com/app"]).await;
    go.ok(&app, &["mod", "download", "example.com/kept@v1.0.0"])
        .await;
    assert!(in_module_cache(&go, "example.com/kept", "v1.0.0.zip"));

    let (status, body) = get(&mirror, "/example.com/unseen/@v/v1.0.0.zip").await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(
        body.contains("unreachable") && body.contains("not served unverified"),
        "{body}"
    );
    assert!(metric(&mirror, "unreachable").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_and_nosumdb_modules_never_reach_the_database() {
    let tree = tempfile::tempdir().expect("tree");
    write_tree(
        tree.path(),
        &[
            package("nosum.example.com/lib", "internal"),
            package("corp.example.com/lib", "private"),
            package("example.com/public", "public"),
        ],
    );
    let upstream = StaticProxy::start(tree.path()).await;
    let work = tempfile::tempdir().expect("work");
    let sumdb = SumdbServer::start(work.path(), NAME, tree.path(), 0).await;
    let mirror = TestMirror::start(config(&upstream.url(), &sumdb.url, &sumdb.vkey)).await;

    for version in GoVersion::ALL {
        let go = GoEnv::with_version(&mirror, version);
        let app = go.work_dir("app");
        go.ok(&app, &["mod", "init", "example.com/app"]).await;
        go.ok(
            &app,
            &[
                "mod",
                "download",
                "nosum.example.com/lib@v1.0.0",
                "example.com/public@v1.0.0",
            ],
        )
        .await;
        assert!(in_module_cache(&go, "nosum.example.com/lib", "v1.0.0.zip"));
    }
    let (status, _) = get(&mirror, "/corp.example.com/lib/@v/v1.0.0.zip").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "private: never fetched at all"
    );
    let asked = sumdb.requests();
    assert!(
        asked.iter().any(|p| p.contains("example.com/public")),
        "the public module was verified: {asked:?}"
    );
    assert!(
        asked
            .iter()
            .all(|p| !p.contains("nosum") && !p.contains("corp")),
        "{asked:?}"
    );
}
