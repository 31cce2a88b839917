//! The checksum database proxy, with a real database (golang.org/x/mod/sumdb
//! server and note signer, tests/go/sumdbserver) and the real `go` command
//! verifying every module through `https://mirror/sumdb/NAME/…`.

mod common;

use common::go::{
    GoEnv, ModuleVersion, StaticProxy, SumdbServer, get, standard_modules, write_tree,
};
use common::{MirrorOptions, TestMirror};
use reqwest::StatusCode;

const NAME: &str = "sum.mirror.test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_verifies_modules_through_the_mirrors_sumdb_proxy_online_and_offline() {
    let tree = tempfile::tempdir().expect("tree");
    let mut modules = standard_modules();
    modules.push(ModuleVersion::package(
        "example.com/tampered",
        "v1.0.0",
        "tampered",
        "real",
        &[],
    ));
    write_tree(tree.path(), &modules);
    let upstream = StaticProxy::start(tree.path()).await;
    let work = tempfile::tempdir().expect("work");
    // 300 records first, so the log has full tiles as well as partial ones.
    let sumdb = SumdbServer::start(work.path(), NAME, tree.path(), 300).await;
    let mirror = TestMirror::start(MirrorOptions {
        extra_toml: format!(
            "[go]\nupstream = \"{}\"\nprivate = [\"corp.example.com\"]\n\n[[go.sumdb]]\nname = \"{NAME}\"\nurl = \"{}\"\nkey = \"{}\"\n",
            upstream.url(),
            sumdb.url,
            sumdb.vkey
        ),
        ..MirrorOptions::default()
    })
    .await;

    let mut go = GoEnv::new(&mirror);
    go.gosumdb = sumdb.vkey.clone();
    let app = go.work_dir("app");
    go.ok(&app, &["mod", "init", "example.com/app"]).await;
    go.ok(
        &app,
        &[
            "get",
            "example.com/greet@v1.1.0",
            "example.com/Upper/Mod@v1.0.1",
        ],
    )
    .await;
    let go_sum = std::fs::read_to_string(app.join("go.sum")).expect("go.sum");
    assert!(go_sum.contains("example.com/greet v1.1.0 h1:"), "{go_sum}");
    let asked = sumdb.requests();
    assert!(
        asked.contains(&"/lookup/example.com/greet@v1.1.0".to_owned()),
        "{asked:?}"
    );
    assert!(
        asked.contains(&"/lookup/example.com/!upper/!mod@v1.0.1".to_owned()),
        "{asked:?}"
    );
    assert!(
        asked.iter().any(|p| p.starts_with("/tile/")),
        "tiles came through the mirror: {asked:?}"
    );

    // The database really is consulted: once it has recorded a module, a
    // changed zip upstream is caught.
    let (status, _) = get(
        &mirror,
        &format!("/sumdb/{NAME}/lookup/example.com/tampered@v1.0.0"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    write_tree(
        tree.path(),
        &[ModuleVersion::package(
            "example.com/tampered",
            "v1.0.0",
            "tampered",
            "EVIL",
            &[],
        )],
    );
    let output = go.run(&app, &["get", "example.com/tampered@v1.0.0"]).await;
    assert!(
        !output.status.success(),
        "a tampered module must not verify"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The mirror itself refuses the zip now (go_verify.rs); a client that
    // verifies would have caught it too.
    assert!(
        stderr.contains("SECURITY ERROR")
            || stderr.contains("checksum mismatch")
            || stderr.contains(&format!("but checksum database {NAME} has")),
        "{stderr}"
    );

    // A full tile is fetched once and kept; partial tiles and lookups briefly.
    let full = format!("/sumdb/{NAME}/tile/8/0/000");
    let before = sumdb
        .requests()
        .iter()
        .filter(|p| *p == "/tile/8/0/000")
        .count();
    let (status, tile) = get(&mirror, &full).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tile.len(), 256 * 32, "a full level-0 tile holds 256 hashes");
    let (_, again) = get(&mirror, &full).await;
    assert_eq!(again, tile);
    let after = sumdb
        .requests()
        .iter()
        .filter(|p| *p == "/tile/8/0/000")
        .count();
    assert!(after <= before + 1, "a full tile is fetched at most once");

    // Private modules are never looked up; unconfigured databases are not proxied.
    let (status, body) = get(
        &mirror,
        &format!("/sumdb/{NAME}/lookup/corp.example.com/x@v1.0.0"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&body).contains("private"));
    assert!(sumdb.requests().iter().all(|p| !p.contains("corp")));
    assert_eq!(
        get(&mirror, &format!("/sumdb/{NAME}/supported")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        get(&mirror, "/sumdb/sum.golang.org/supported").await.0,
        StatusCode::OK,
        "a configured database is proxied besides sum.golang.org, not instead of it"
    );
    assert_eq!(
        get(&mirror, "/sumdb/sum.elsewhere.example/supported")
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    // Database and upstream gone: a fresh module cache still downloads and verifies.
    drop(sumdb);
    upstream.stop().await;
    go.fresh_caches();
    let app = go.work_dir("app");
    go.ok(&app, &["mod", "init", "example.com/app"]).await;
    go.ok(
        &app,
        &[
            "get",
            "example.com/greet@v1.1.0",
            "example.com/Upper/Mod@v1.0.1",
        ],
    )
    .await;
    let (status, again) = get(&mirror, &full).await;
    assert_eq!(again, tile, "the full tile is kept for good");
    assert_eq!(status, StatusCode::OK);
    // A partial hash tile is a prefix of any wider one: answered from what is kept.
    let (status, part) = get(&mirror, &format!("/sumdb/{NAME}/tile/8/0/000.p/5")).await;
    assert_eq!((status, part.as_slice()), (StatusCode::OK, &tile[..5 * 32]));
    let (status, part) = get(&mirror, &format!("/sumdb/{NAME}/tile/8/0/001.p/1")).await;
    assert_eq!(
        (status, part.len()),
        (StatusCode::OK, 32),
        "from a wider partial tile, upstream down"
    );
}
