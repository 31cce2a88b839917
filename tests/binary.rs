//! The `mirror` binary as an operator runs it: `serve` with and without a
//! config, signals, config errors, and the `pki` commands.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::process::{Guard, free_port, mirror_bin, run, text, tool, wait_for_port};

const LIMIT: Duration = Duration::from_secs(60);

fn mirror(dir: &Path, args: &[&str]) -> std::process::Output {
    run(
        Command::new(mirror_bin()).current_dir(dir).args(args),
        LIMIT,
    )
}

fn serve(dir: &Path, args: &[&str]) -> Guard {
    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    Guard::spawn(
        "mirror serve",
        Command::new(mirror_bin())
            .current_dir(dir)
            .arg("serve")
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log),
    )
}

fn curl(args: &[&str]) -> std::process::Output {
    run(
        Command::new(tool("curl"))
            .args(["-sS", "--max-time", "20"])
            .args(args),
        LIMIT,
    )
}

#[test]
fn serve_with_no_config_creates_a_pki_and_answers_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let server = serve(dir.path(), &["--listen", &listen]);
    wait_for_port(&listen, LIMIT);
    let ca = dir.path().join("mirror-data/pki/ca.crt");
    let health = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        &format!("https://localhost:{port}/healthz"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&health.stdout),
        "ok\n",
        "{}",
        text(&health)
    );
    // By default every read needs credentials.
    let v2 = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--cacert",
        ca.to_str().unwrap(),
        &format!("https://127.0.0.1:{port}/v2/"),
    ]);
    assert_eq!(String::from_utf8_lossy(&v2.stdout), "401");
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(log.contains("Created a private CA"), "{log}");
    assert!(
        log.contains("pki issue-client"),
        "the first run says how to onboard a user: {log}"
    );
    drop(server);

    // A second start reuses the PKI instead of replacing it.
    let ca_before = std::fs::read(&ca).unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _server = serve(dir.path(), &["--listen", &listen]);
    wait_for_port(&listen, LIMIT);
    assert_eq!(ca_before, std::fs::read(&ca).unwrap());
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(!log.contains("Created a private CA"), "{log}");
}

/// Writes a PKI (CA, server cert, alice and bob) and a config for `port`.
fn configured(dir: &Path, port: u16, client_auth: &str) {
    for args in [
        vec!["pki", "init", "--dir", "pki"],
        vec![
            "pki",
            "issue-server",
            "--dir",
            "pki",
            "--san",
            "127.0.0.1",
            "localhost",
        ],
    ] {
        let out = mirror(dir, &args);
        assert!(out.status.success(), "{}", text(&out));
    }
    let registry = format!("127.0.0.1:{port}");
    for user in ["alice", "bob"] {
        let out = mirror(
            dir,
            &[
                "pki",
                "issue-client",
                user,
                "--dir",
                "pki",
                "--registry",
                &registry,
                "--out",
                &format!("certs-{user}"),
            ],
        );
        assert!(out.status.success(), "{}", text(&out));
    }
    std::fs::write(
        dir.join("mirror.toml"),
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\n\n[tls]\ncert = \"pki/server.crt\"\n\
             key = \"pki/server.key\"\nclient_ca = \"pki/ca.crt\"\ncrl = \"pki/ca.crl\"\n\
             client_auth = \"{client_auth}\"\n\n[limits]\nreload_poll = \"1h\"\n"
        ),
    )
    .unwrap();
}

fn curl_as(dir: &Path, user: &str, port: u16, path: &str) -> std::process::Output {
    let folder = dir.join(format!("certs-{user}/127.0.0.1:{port}"));
    let cert = folder
        .join("client.cert")
        .display()
        .to_string()
        .replace(':', "\\:");
    curl(&[
        "--fail",
        "--cacert",
        folder.join("ca.crt").to_str().unwrap(),
        "--cert",
        &cert,
        "--key",
        folder.join("client.key").to_str().unwrap(),
        &format!("https://127.0.0.1:{port}{path}"),
    ])
}

#[test]
fn sighup_makes_the_running_server_enforce_a_new_crl() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    configured(dir.path(), port, "required");
    let server = serve(dir.path(), &["--config", "mirror.toml"]);
    wait_for_port(&format!("127.0.0.1:{port}"), LIMIT);
    assert!(curl_as(dir.path(), "alice", port, "/v2/").status.success());

    let revoked = mirror(dir.path(), &["pki", "revoke", "alice", "--dir", "pki"]);
    assert!(revoked.status.success(), "{}", text(&revoked));
    server.signal("HUP");

    let deadline = std::time::Instant::now() + LIMIT;
    while curl_as(dir.path(), "alice", port, "/v2/").status.success() {
        assert!(
            std::time::Instant::now() < deadline,
            "alice is still admitted after SIGHUP"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        curl_as(dir.path(), "bob", port, "/v2/").status.success(),
        "bob is unaffected"
    );
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(log.contains("SIGHUP"), "{log}");
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    configured(dir.path(), port, "optional");
    let mut server = serve(dir.path(), &["--config", "mirror.toml"]);
    wait_for_port(&format!("127.0.0.1:{port}"), LIMIT);
    server.signal("TERM");
    let deadline = std::time::Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    configured(dir.path(), port, "optional");
    let _first = serve(dir.path(), &["--config", "mirror.toml"]);
    wait_for_port(&format!("127.0.0.1:{port}"), LIMIT);
    let second = mirror(
        dir.path(),
        &[
            "serve",
            "--config",
            "mirror.toml",
            "--listen",
            "127.0.0.1:0",
        ],
    );
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("in use by another mirror process"),
        "{}",
        text(&second)
    );
}

#[test]
fn config_errors_name_the_key_and_missing_files_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[tls]\nclient_auth = \"sometimes\"\n", "tls.client_auth"),
        ("[tls]\nclient_ath = \"optional\"\n", "tls.client_ath"),
        (
            "[limits]\nhandshake_timeout = 5\n",
            "limits.handshake_timeout",
        ),
        (
            "[tls]\ncert = \"nope.crt\"\nkey = \"nope.key\"\nclient_auth = \"off\"\n",
            "nope.crt",
        ),
        ("[auth]\nhtpasswd = \"missing-htpasswd\"\n", "auth.htpasswd"),
    ];
    for (toml, expected) in cases {
        std::fs::write(dir.path().join("bad.toml"), toml).unwrap();
        let out = mirror(dir.path(), &["serve", "--config", "bad.toml"]);
        assert!(!out.status.success(), "{toml}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(expected) && stderr.contains("bad.toml"),
            "{toml} → {stderr}"
        );
    }
    let out = mirror(dir.path(), &["serve", "--config", "absent.toml"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("absent.toml"),
        "{}",
        text(&out)
    );
}

#[test]
fn pki_commands_issue_list_revoke_and_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(
        mirror(d, &["pki", "init", "--dir", "pki", "--cn", "Example CA"])
            .status
            .success()
    );
    let again = mirror(d, &["pki", "init", "--dir", "pki"]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("--force"),
        "{}",
        text(&again)
    );

    let server = mirror(
        d,
        &[
            "pki",
            "issue-server",
            "--dir",
            "pki",
            "--san",
            "mirror.example.com",
            "10.0.0.5",
        ],
    );
    assert!(server.status.success(), "{}", text(&server));
    let client = mirror(
        d,
        &[
            "pki",
            "issue-client",
            "alice",
            "--dir",
            "pki",
            "--registry",
            "mirror.example.com:5000",
            "--out",
            "certs.d",
            "--hosts-toml",
            "hosts.toml",
        ],
    );
    let printed = String::from_utf8_lossy(&client.stdout).into_owned();
    assert!(client.status.success(), "{}", text(&client));
    for expected in [
        "/etc/docker/certs.d/",
        "[host.\"https://mirror.example.com:5000\"]",
        "curl --cacert",
        "GOPROXY=",
    ] {
        assert!(
            printed.contains(expected),
            "missing {expected:?} in {printed}"
        );
    }
    assert!(
        std::fs::read_to_string(d.join("hosts.toml"))
            .unwrap()
            .contains("client = [[")
    );
    let folder = d.join("certs.d/mirror.example.com:5000");
    for name in ["ca.crt", "client.cert", "client.key"] {
        assert!(folder.join(name).is_file(), "{name}");
    }

    let inspect = mirror(d, &["pki", "inspect", "pki/server.crt"]);
    let shown = String::from_utf8_lossy(&inspect.stdout).into_owned();
    assert!(
        shown.contains("DNS:mirror.example.com") && shown.contains("IP:10.0.0.5"),
        "{shown}"
    );
    assert!(
        shown.contains("serverAuth") && shown.contains("Example CA"),
        "{shown}"
    );

    let revoke = mirror(d, &["pki", "revoke", "alice", "--dir", "pki"]);
    assert!(revoke.status.success(), "{}", text(&revoke));
    let list =
        String::from_utf8_lossy(&mirror(d, &["pki", "list", "--dir", "pki"]).stdout).into_owned();
    let alice_line = list
        .lines()
        .find(|l| l.starts_with("alice"))
        .unwrap_or_default();
    assert!(
        alice_line.contains("client") && !alice_line.trim_end().ends_with('-'),
        "{list}"
    );
    let server_line = list
        .lines()
        .find(|l| l.starts_with("mirror.example.com"))
        .unwrap_or_default();
    assert!(
        server_line.trim_end().ends_with('-'),
        "server not revoked: {list}"
    );

    let missing = mirror(d, &["pki", "revoke", "nobody", "--dir", "pki"]);
    assert!(!missing.status.success());
    let bad_registry = mirror(
        d,
        &[
            "pki",
            "issue-client",
            "eve",
            "--dir",
            "pki",
            "--registry",
            "../../etc",
            "--out",
            "certs.d",
        ],
    );
    assert!(!bad_registry.status.success());
    assert!(!d.join("etc").exists());
}

#[test]
fn json_logs_name_the_client_on_every_request_and_never_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    configured(dir.path(), port, "optional");
    let hash = bcrypt::hash("s3cret-password", 4).unwrap();
    std::fs::write(dir.path().join("htpasswd"), format!("carol:{hash}\n")).unwrap();
    let mut config = std::fs::read_to_string(dir.path().join("mirror.toml")).unwrap();
    config.push_str("\n[auth]\nhtpasswd = \"htpasswd\"\n\n[log]\nformat = \"json\"\n");
    std::fs::write(dir.path().join("mirror.toml"), config).unwrap();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let _server = Guard::spawn(
        "mirror serve",
        Command::new(mirror_bin())
            .current_dir(dir.path())
            .args(["serve", "--config", "mirror.toml"])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log),
    );
    wait_for_port(&format!("127.0.0.1:{port}"), LIMIT);
    let ca = dir.path().join("pki/ca.crt");
    let url = format!("https://127.0.0.1:{port}/v2/");
    let ok = curl(&[
        "--fail",
        "--cacert",
        ca.to_str().unwrap(),
        "-u",
        "carol:s3cret-password",
        &url,
    ]);
    assert!(ok.status.success(), "{}", text(&ok));
    let bad = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "-u",
        "carol:wrong-password",
        &url,
    ]);
    assert!(bad.status.success(), "{}", text(&bad));
    assert!(curl_as(dir.path(), "alice", port, "/v2/").status.success());

    let deadline = std::time::Instant::now() + LIMIT;
    let lines = loop {
        let text = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|v: &serde_json::Value| v["target"] == "mirror::access")
            .collect();
        if lines.len() >= 3 {
            assert!(
                !text.contains("s3cret-password") && !text.contains("wrong-password"),
                "{text}"
            );
            use base64::Engine;
            let basic = base64::engine::general_purpose::STANDARD.encode("carol:s3cret-password");
            assert!(
                !text.contains(&basic),
                "the Authorization header leaked: {text}"
            );
            break lines;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "access log lines missing: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let identities: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["identity"].as_str())
        .collect();
    assert!(identities.contains(&"user:carol"), "{lines:?}");
    assert!(
        identities.contains(&"anonymous"),
        "the refused request is logged too: {lines:?}"
    );
    assert!(
        identities.iter().any(|i| i.starts_with("cert:alice/")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l["status"].is_u64() && l["peer"].is_string()),
        "{lines:?}"
    );
}
