//! The `mirror` binary as an operator runs it: `serve` with and without a
//! config, signals (SIGTERM's grace period included), config errors, and the
//! `pki` commands.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::process::{Guard, free_port, mirror_bin, run, text, tool};

const LIMIT: Duration = Duration::from_secs(60);

/// Where a test's commands look for the system config: a file that does not
/// exist, so a /etc/mirror/mirror.toml on the test machine changes nothing.
fn no_system_config(dir: &Path) -> std::path::PathBuf {
    dir.join("no-system-config.toml")
}

fn mirror(dir: &Path, args: &[&str]) -> std::process::Output {
    run(
        Command::new(mirror_bin())
            .current_dir(dir)
            .args(args)
            .env("MIRROR_SYSTEM_CONFIG", no_system_config(dir)),
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
            .env("MIRROR_SYSTEM_CONFIG", no_system_config(dir))
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
    let mut server = serve(dir.path(), &["--listen", &listen]);
    server.wait_for_port(&listen, LIMIT);
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
    let mut server = serve(dir.path(), &["--listen", &listen]);
    server.wait_for_port(&listen, LIMIT);
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
    let mut server = serve(dir.path(), &["--config", "mirror.toml"]);
    server.wait_for_port(&format!("127.0.0.1:{port}"), LIMIT);
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
    server.wait_for_port(&format!("127.0.0.1:{port}"), LIMIT);
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
    let mut first = serve(dir.path(), &["--config", "mirror.toml"]);
    first.wait_for_port(&format!("127.0.0.1:{port}"), LIMIT);
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
        // Checked by the protocols that parse them, still before the start.
        (
            "[go]\nupstream = \"https://a.example,direct\"\n",
            "go.upstream",
        ),
        ("[go]\nprivate = [\"corp.example.com/[\"]\n", "go.private"),
        ("[registry]\nhosted = [\"Bad/\"]\n", "registry.hosted[0]"),
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
    let fresh = tempfile::tempdir().unwrap();
    std::fs::write(
        fresh.path().join("bad.toml"),
        "[go]\nprivate = [\"corp.example.com/[\"]\n",
    )
    .unwrap();
    let out = mirror(fresh.path(), &["serve", "--config", "bad.toml"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        !fresh.path().join("mirror-data").exists(),
        "a refused config creates no PKI and no store"
    );
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

    let alice_serial = alice_line.split_whitespace().nth(1).unwrap_or_default();
    let crl = mirror(d, &["pki", "inspect", "pki/ca.crl"]);
    let shown = String::from_utf8_lossy(&crl.stdout).into_owned();
    assert!(crl.status.success(), "{}", text(&crl));
    let revoked_line = shown
        .lines()
        .find(|l| l.contains(alice_serial))
        .unwrap_or_default();
    let year = time::OffsetDateTime::now_utc().year().to_string();
    assert!(
        shown.contains("Example CA")
            && shown.contains("next update")
            && revoked_line.contains(&year),
        "the CRL shows its issuer, next update, and alice's serial with its date: {shown}"
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
    let mut server = Guard::spawn(
        "mirror serve",
        Command::new(mirror_bin())
            .current_dir(dir.path())
            .args(["serve", "--config", "mirror.toml"])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log),
    );
    server.wait_for_port(&format!("127.0.0.1:{port}"), LIMIT);
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

/// `curl` run inside the network namespace of process `pid`.
fn curl_in_netns(pid: u32, args: &[&str]) -> std::process::Output {
    run(
        Command::new(tool("nsenter"))
            .arg(format!("--net=/proc/{pid}/ns/net"))
            .arg(tool("curl"))
            .args(["-sS", "--max-time", "20"])
            .args(args),
        LIMIT,
    )
}

/// `mirror serve` with no arguments at all, as a new user first runs it, in a
/// network namespace of its own that has only loopback: the internet is out of
/// reach whatever the machine running the test can reach, and fails at once.
#[test]
fn serve_with_no_config_mirrors_docker_hub_and_names_it_when_it_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let log = std::fs::File::create(d.join("serve.log")).unwrap();
    let server = Guard::spawn(
        "mirror serve (own network namespace)",
        Command::new(tool("unshare"))
            .current_dir(d)
            .args([
                "--net",
                "--",
                "sh",
                "-c",
                "\"$1\" link set lo up && exec \"$0\" serve",
            ])
            .arg(mirror_bin())
            .arg(tool("ip"))
            .env("MIRROR_SYSTEM_CONFIG", no_system_config(d))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log),
    );
    let ca = d.join("mirror-data/pki/ca.crt");
    let ca_arg = ca.to_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + LIMIT;
    while !(ca.exists()
        && curl_in_netns(
            server.pid(),
            &["--cacert", &ca_arg, "https://127.0.0.1:5000/healthz"],
        )
        .status
        .success())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no answer on :5000: {}",
            std::fs::read_to_string(d.join("serve.log")).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let issued = mirror(
        d,
        &[
            "pki",
            "issue-client",
            "tester",
            "--dir",
            "mirror-data/pki",
            "--registry",
            "127.0.0.1:5000",
            "--out",
            "certs.d",
        ],
    );
    assert!(issued.status.success(), "{}", text(&issued));
    let folder = d.join("certs.d/127.0.0.1:5000");
    let cert = folder
        .join("client.cert")
        .display()
        .to_string()
        .replace(':', "\\:");
    let pull = curl_in_netns(
        server.pid(),
        &[
            "-w",
            "\n%{http_code}",
            "--cacert",
            &ca_arg,
            "--cert",
            &cert,
            "--key",
            folder.join("client.key").to_str().unwrap(),
            "-H",
            "Accept: application/vnd.oci.image.index.v1+json",
            "https://127.0.0.1:5000/v2/library/alpine/manifests/latest",
        ],
    );
    let answer = String::from_utf8_lossy(&pull.stdout).into_owned();
    let (body, status) = answer.rsplit_once('\n').unwrap_or_default();
    assert!(
        matches!(status, "502" | "503") && body.contains("registry-1.docker.io"),
        "a pull that cannot reach Docker Hub says so: {status} {body}"
    );
    let log = std::fs::read_to_string(d.join("serve.log")).unwrap();
    for upstream in [
        "https://registry-1.docker.io",
        "https://proxy.golang.org",
        "https://sum.golang.org",
    ] {
        assert!(
            log.contains(upstream),
            "{upstream} is not in the startup log: {log}"
        );
    }
    assert!(
        log.contains("registry-1.docker.io") && log.contains("library/alpine"),
        "the failed pull is logged with its cause: {log}"
    );
}

#[test]
fn serve_without_config_uses_the_system_config_when_it_exists() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    configured(dir.path(), port, "optional");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let system_config = dir.path().join("mirror.toml");
    let mut server = Guard::spawn(
        "mirror serve",
        Command::new(mirror_bin())
            .current_dir(&elsewhere)
            .arg("serve")
            .env("MIRROR_SYSTEM_CONFIG", &system_config)
            .stdout(Stdio::null())
            .stderr(log),
    );
    server.wait_for_port(&format!("127.0.0.1:{port}"), LIMIT);
    assert!(dir.path().join("data/mirror.db").is_file());
    assert!(!elsewhere.join("mirror-data").exists());
    // The other commands find the same data dir.
    let stats = run(
        Command::new(mirror_bin())
            .current_dir(&elsewhere)
            .args(["cache", "stats"])
            .env("MIRROR_SYSTEM_CONFIG", &system_config),
        LIMIT,
    );
    assert!(stats.status.success(), "{}", text(&stats));
}

#[test]
fn a_log_written_to_a_file_has_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    configured(dir.path(), port, "optional");
    let mut server = serve(dir.path(), &["--config", "mirror.toml"]);
    server.wait_for_port(&format!("127.0.0.1:{port}"), LIMIT);
    assert!(curl_as(dir.path(), "alice", port, "/v2/").status.success());
    let deadline = std::time::Instant::now() + LIMIT;
    let log = loop {
        let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
        if log.contains("mirror::access") {
            break log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no access line: {log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escape codes in a file: {log:?}"
    );
}

#[test]
fn pki_list_columns_line_up_whatever_the_lengths() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for args in [
        &["pki", "init", "--dir", "pki"][..],
        &[
            "pki",
            "issue-server",
            "--dir",
            "pki",
            "--san",
            "a-rather-long-host-name.mirror.example.com",
        ],
    ] {
        let out = mirror(d, args);
        assert!(out.status.success(), "{}", text(&out));
    }
    for user in ["al", "build-robot-for-the-payments-team"] {
        let out = mirror(
            d,
            &[
                "pki",
                "issue-client",
                user,
                "--dir",
                "pki",
                "--registry",
                "m:5000",
                "--out",
                "certs.d",
            ],
        );
        assert!(out.status.success(), "{}", text(&out));
    }
    assert!(
        mirror(d, &["pki", "revoke", "al", "--dir", "pki"])
            .status
            .success()
    );
    let list = mirror(d, &["pki", "list", "--dir", "pki"]);
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    let header = list.lines().next().unwrap_or_default();
    let starts: Vec<usize> = ["SERIAL", "KIND", "NOT AFTER", "REVOKED"]
        .iter()
        .map(|column| {
            header
                .find(column)
                .unwrap_or_else(|| panic!("{column}: {list}"))
        })
        .collect();
    let rows: Vec<&str> = list.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{list}");
    for row in rows {
        for &start in &starts {
            let (before, at) = (row.as_bytes()[start - 1], row.as_bytes()[start]);
            assert!(
                before == b' ' && at != b' ',
                "a column does not start at {start}:\n{list}"
            );
        }
    }
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/mirror.service"
    ))
    .expect("deploy/mirror.service");
    for hardening in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/mirror",
        "User=mirror",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
    ] {
        assert!(unit.contains(hardening), "{hardening} missing:\n{unit}");
    }
    assert!(unit.contains("/usr/local/bin/mirror serve"), "{unit}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mirror.service");
    let built = unit.replace("/usr/local/bin/mirror", mirror_bin().to_str().unwrap());
    std::fs::write(&path, built).unwrap();
    let verified = run(
        Command::new(tool("systemd-analyze"))
            .arg("verify")
            .arg(&path),
        LIMIT,
    );
    // verify warns about unknown keys and bad values without failing: any line
    // about this unit is a defect.
    let complaints: Vec<String> = text(&verified)
        .lines()
        .filter(|line| line.contains("mirror.service"))
        .map(str::to_owned)
        .collect();
    assert!(
        verified.status.success() && complaints.is_empty(),
        "{}",
        text(&verified)
    );
    let security = run(
        Command::new(tool("systemd-analyze"))
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&path),
        LIMIT,
    );
    let report = text(&security);
    let exposure: f64 = report
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for mirror.service: "))
        .and_then(|(_, level)| level.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level: {report}"));
    assert!(exposure < 2.0, "exposure {exposure}: {report}");
}

/// Starts a push on a fresh connection and sends `sent` of a `length`-byte
/// PATCH body: a request in flight until the test sends the rest.
async fn push_in_flight(
    config: std::sync::Arc<rustls::ClientConfig>,
    addr: std::net::SocketAddr,
    length: usize,
    sent: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let localhost = std::net::IpAddr::from([127, 0, 0, 1]);
    let mut tls = common::raw::tls_from(localhost, addr, config)
        .await
        .unwrap();
    tls.write_all(
        b"POST /v2/team/app/blobs/uploads/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
    )
    .await
    .unwrap();
    let started = common::raw::read_response(&mut tls).await.unwrap();
    assert_eq!(started.status, 202, "{}", started.head);
    let location = started.header("location").unwrap().to_owned();
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {length}\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(sent).await.unwrap();
    tls.flush().await.unwrap();
    tls
}

#[tokio::test]
async fn sigterm_lets_a_request_in_flight_finish_refuses_new_connections_and_exits_by_the_grace_period()
 {
    use tokio::io::AsyncWriteExt;
    // Long enough that a loaded machine still gets the finishing request's
    // second half in before it runs out.
    let grace = Duration::from_secs(30);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    configured(dir.path(), port, "optional");
    let mut config = std::fs::read_to_string(dir.path().join("mirror.toml")).unwrap();
    // `configured` ends in [limits].
    config.push_str("shutdown_grace = \"30s\"\n\n[registry]\nhosted = [\"team\"]\n");
    std::fs::write(dir.path().join("mirror.toml"), config).unwrap();
    let mut server = serve(dir.path(), &["--config", "mirror.toml"]);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    server.wait_for_port(&addr.to_string(), LIMIT);

    let folder = dir.path().join(format!("certs-alice/127.0.0.1:{port}"));
    let read = |name: &str| std::fs::read_to_string(folder.join(name)).unwrap();
    let (ca, cert, key) = (read("ca.crt"), read("client.cert"), read("client.key"));
    let tls_config = common::raw::client_config(&ca, Some((&cert, &key)), common::raw::H1);
    let mut finishing = push_in_flight(tls_config.clone(), addr, 12, b"first ").await;
    // Never finished: the grace period, not this request, decides when the process exits.
    let _stalled = push_in_flight(tls_config, addr, 12, b"first ").await;

    server.signal("TERM");
    let signalled = std::time::Instant::now();
    while std::net::TcpStream::connect(addr).is_ok() {
        assert!(
            signalled.elapsed() < grace,
            "new connections still accepted after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    finishing.write_all(b"second").await.unwrap();
    finishing.flush().await.unwrap();
    let finished = tokio::time::timeout(LIMIT, common::raw::read_response(&mut finishing))
        .await
        .expect("an answer to the request in flight")
        .expect("the request in flight is answered, not cut off");
    // Past the grace period it would have been cut off instead.
    assert_eq!(finished.status, 202, "{}", finished.head);

    // Exiting takes the grace period plus the store's close; far less than this.
    let exit_by = grace + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < exit_by,
            "still running {exit_by:?} after SIGTERM with a {grace:?} grace period"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(log.contains("shutdown grace period over"), "{log}");
}
