//! What the operator's logs, audit trail and files are exposed to: names and
//! paths from outside never forge or corrupt a log line or an audit row, and
//! secrets others could read or change are refused at start and at reload.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::process::{Guard, free_port, mirror_bin, run, text, tool};
use common::raw_tls::RawH1;
use common::{MirrorOptions, TestMirror};

const LIMIT: Duration = Duration::from_secs(60);
/// What a hostile CA subject could try: end the line, start a forged one, colour the terminal.
const EVIL_CN: &str = "evil\n2026-01-01 INFO forged\x1b[31m";
/// An htpasswd user holding a terminal title sequence, a bell and a carriage return.
const ODD_USER: &str = "odd\x1b]0;pwned\x07\ruser";
const ODD_PASSWORD: &str = "odd-user-password";
/// The one line `mirror serve` prints outside the log format.
const BANNER: &str = "mirror listening on https://";

fn mirror(dir: &Path, args: &[&str]) -> std::process::Output {
    run(
        Command::new(mirror_bin()).current_dir(dir).args(args),
        LIMIT,
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

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A PKI made by the real binary and a config for `port` with the given extra TOML.
fn configured(dir: &Path, port: u16, extra: &str) {
    for args in [
        vec!["pki", "init", "--dir", "pki"],
        vec!["pki", "issue-server", "--dir", "pki", "--san", "127.0.0.1"],
    ] {
        let out = mirror(dir, &args);
        assert!(out.status.success(), "{}", text(&out));
    }
    std::fs::write(
        dir.join("mirror.toml"),
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\n\n[tls]\ncert = \"pki/server.crt\"\n\
             key = \"pki/server.key\"\nclient_ca = \"pki/ca.crt\"\nclient_auth = \"optional\"\n\n\
             [limits]\nreload_poll = \"1h\"\n\n[go]\nupstream = \"off\"\n\n{extra}"
        ),
    )
    .unwrap();
}

/// A client certificate with `EVIL_CN`, signed by the test CA with rcgen
/// directly: `mirror pki` refuses such a name, an enterprise CA may not.
fn issue_evil_cert(dir: &Path) -> (String, String) {
    use rcgen::{
        CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_pem = std::fs::read_to_string(dir.join("pki/ca.crt")).unwrap();
    let ca_key =
        KeyPair::from_pem(&std::fs::read_to_string(dir.join("pki/ca.key")).unwrap()).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, EVIL_CN);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(1);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let (cert_path, key_path) = (dir.join("evil.crt"), dir.join("evil.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    chmod(&key_path, 0o600);
    (
        cert_path.display().to_string(),
        key_path.display().to_string(),
    )
}

fn serve_logging(dir: &Path, port: u16) -> Guard {
    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    let mut server = Guard::spawn(
        "mirror serve",
        Command::new(mirror_bin())
            .current_dir(dir)
            .args(["serve", "--config", "mirror.toml"])
            .env("RUST_LOG", "info")
            // Colour codes of the log format itself would hide the ones under test.
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log),
    );
    server.wait_for_port(&format!("127.0.0.1:{port}"), LIMIT);
    server
}

/// The hostile requests: the evil certificate, the odd user, and paths with a
/// C1 control (CSI) and a right-to-left override. Returns how many were sent.
fn send_hostile_requests(dir: &Path, port: u16) -> usize {
    let (cert, key) = issue_evil_cert(dir);
    let ca = dir.join("pki/ca.crt").display().to_string();
    let url = |path: &str| format!("https://127.0.0.1:{port}{path}");
    let status = |args: &[&str]| {
        let out = curl(
            &[
                &["-o", "/dev/null", "-w", "%{http_code}", "--cacert", &ca],
                args,
            ]
            .concat(),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let by_cert = status(&[
        "--cert",
        &cert,
        "--key",
        &key,
        &url("/example.com/evil/@v/list"),
    ]);
    assert_eq!(by_cert, "404", "the evil certificate is admitted");
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{ODD_USER}:{ODD_PASSWORD}"));
    let header = format!("Authorization: Basic {basic}");
    let by_user = status(&["-H", &header, &url("/example.com/odd/@v/list")]);
    assert_eq!(by_user, "404", "the odd user is admitted");
    for path in [
        "/example.com/csi\u{9b}31m/@v/list",
        "/v2/rlo\u{202e}txt/tags/list",
    ] {
        let mut raw = RawH1::connect(port, &dir.join("pki/ca.crt"));
        let (answered, _) = raw.get(path, &[&header]);
        assert!((400..500).contains(&answered), "{path:?}: {answered}");
    }
    4
}

/// Characters that would break a line, move a terminal's cursor, colour it or
/// reorder it, as the server must never write them.
fn is_raw_control(c: char) -> bool {
    (c.is_control() && c != '\n') || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn read_log_until(dir: &Path, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + LIMIT;
    loop {
        let log = std::fs::read_to_string(dir.join("serve.log")).unwrap();
        if done(&log) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn odd_htpasswd(dir: &Path) {
    let hash = bcrypt::hash(ODD_PASSWORD, 4).unwrap();
    std::fs::write(dir.join("htpasswd"), format!("{ODD_USER}:{hash}\n")).unwrap();
}

#[test]
fn hostile_names_and_paths_cannot_forge_or_colour_a_text_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    configured(dir.path(), port, "[auth]\nhtpasswd = \"htpasswd\"\n");
    odd_htpasswd(dir.path());
    let _server = serve_logging(dir.path(), port);
    let sent = send_hostile_requests(dir.path(), port);
    let log = read_log_until(dir.path(), "the access log lines", |log| {
        log.lines().filter(|l| l.contains("mirror::access")).count() >= sent
    });
    let raw: Vec<char> = log.chars().filter(|&c| is_raw_control(c)).collect();
    assert!(
        raw.is_empty(),
        "raw control characters {raw:?} in the log:\n{log}"
    );
    // Every line is a line tracing wrote: it starts with its timestamp (a
    // forged "2026-01-01 INFO" has no `T`), and the forged text stays on the
    // access line of the request that carried it.
    for line in log.lines().filter(|l| !l.starts_with(BANNER)) {
        let stamp = line.get(..11).unwrap_or_default();
        assert!(
            stamp.len() == 11 && stamp.as_bytes()[10] == b'T' && stamp[..4].parse::<u16>().is_ok(),
            "a line the server did not start: {line:?}\n{log}"
        );
    }
    let access: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("mirror::access"))
        .collect();
    assert_eq!(access.len(), sent, "{log}");
    let forged = access
        .iter()
        .find(|l| l.contains("forged"))
        .expect("the evil CN is logged");
    assert!(
        forged.contains(r"cert:evil\n2026-01-01 INFO forged\u{1b}[31m/"),
        "{forged}"
    );
    assert!(
        access
            .iter()
            .any(|l| l.contains(r"user:odd\u{1b}]0;pwned\u{7}\ruser")),
        "{log}"
    );
    assert!(access.iter().any(|l| l.contains(r"csi\u{9b}31m")), "{log}");
    assert!(
        access.iter().any(|l| l.contains(r"rlo\u{202e}txt")),
        "{log}"
    );
}

#[test]
fn hostile_names_stay_inert_in_json_logs_and_in_mirror_audit() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    configured(
        dir.path(),
        port,
        "[auth]\nhtpasswd = \"htpasswd\"\n\n[log]\nformat = \"json\"\n",
    );
    odd_htpasswd(dir.path());
    let _server = serve_logging(dir.path(), port);
    let sent = send_hostile_requests(dir.path(), port);
    let log = read_log_until(dir.path(), "the access log lines", |log| {
        log.lines().filter(|l| l.contains("mirror::access")).count() >= sent
    });
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.starts_with(BANNER))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}\n{log}")))
        .collect();
    let access: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["target"] == "mirror::access")
        .collect();
    assert_eq!(access.len(), sent, "{log}");
    for line in &access {
        for field in ["identity", "path"] {
            let value = line[field].as_str().unwrap_or_default();
            assert!(
                !value.chars().any(|c| c == '\n' || is_raw_control(c)),
                "{field} holds a raw control character: {value:?}"
            );
        }
    }
    let identities: Vec<&str> = access
        .iter()
        .filter_map(|l| l["identity"].as_str())
        .collect();
    assert!(
        identities
            .iter()
            .any(|i| i.starts_with(r"cert:evil\n2026-01-01 INFO forged\u{1b}[31m/")),
        "{identities:?}"
    );

    let audit = |args: &[&str]| {
        let out = mirror(
            dir.path(),
            &[&["audit", "--config", "mirror.toml"][..], args].concat(),
        );
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let json_rows = || -> Vec<serde_json::Value> {
        audit(&["--json"])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    // Rows reach the index in batches: read the table between two equal reads.
    let deadline = Instant::now() + LIMIT;
    let (rows, table) = loop {
        let before = json_rows();
        let table = audit(&[]);
        if before.len() >= 2 && json_rows().len() == before.len() {
            break (before, table);
        }
        assert!(Instant::now() < deadline, "audit rows missing: {before:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let subjects: Vec<&str> = rows.iter().filter_map(|r| r["subject"].as_str()).collect();
    assert!(
        subjects.contains(&r"evil\n2026-01-01 INFO forged\u{1b}[31m")
            && subjects.contains(&r"odd\u{1b}]0;pwned\u{7}\ruser"),
        "{subjects:?}"
    );
    assert!(!table.chars().any(is_raw_control), "{table:?}");
    assert_eq!(
        table.lines().count(),
        1 + rows.len(),
        "header and one line per row: {table}"
    );
    // The name as the certificate holds it finds its rows.
    let mine = audit(&["--json", "--who", EVIL_CN]);
    assert_eq!(mine.lines().count(), 1, "{mine}");
}

#[test]
fn a_readable_key_or_a_writable_trust_file_stops_the_start_naming_the_file_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    configured(d, free_port(), "[auth]\nhtpasswd = \"htpasswd\"\n");
    odd_htpasswd(d);
    let cases = [
        ("pki/server.key", 0o644, "600"),
        ("pki/server.key", 0o620, "600"),
        ("htpasswd", 0o664, "go-w"),
        ("htpasswd", 0o646, "go-w"),
        ("pki/ca.crt", 0o666, "go-w"),
    ];
    for (file, mode, fix) in cases {
        let path = d.join(file);
        let before = mode_of(&path);
        chmod(&path, mode);
        let out = mirror(d, &["serve", "--config", "mirror.toml"]);
        chmod(&path, before);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file} at {mode:o} was accepted");
        let named = stderr
            .split(&format!("run chmod {fix} "))
            .nth(1)
            .is_some_and(|rest| rest.trim_start_matches("./").starts_with(file));
        assert!(named, "{file} at {mode:o}: {stderr}");
    }
    // A key its group may read (the ssl-cert group convention) is fine.
    chmod(&d.join("pki/server.key"), 0o640);
    let port = free_port();
    configured_port(d, port);
    let mut server = Guard::spawn(
        "mirror serve",
        Command::new(mirror_bin())
            .current_dir(d)
            .args(["serve", "--config", "mirror.toml"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    server.wait_for_port(&format!("127.0.0.1:{port}"), LIMIT);
}

/// Points the config at a new port.
fn configured_port(dir: &Path, port: u16) {
    let config = std::fs::read_to_string(dir.join("mirror.toml")).unwrap();
    let (_, rest) = config.split_once('\n').unwrap();
    std::fs::write(
        dir.join("mirror.toml"),
        format!("listen = \"127.0.0.1:{port}\"\n{rest}"),
    )
    .unwrap();
}

#[test]
fn a_generated_ca_key_others_can_read_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let serve = |port: u16| {
        let listen = format!("127.0.0.1:{port}");
        let mut command = Command::new(mirror_bin());
        command
            .current_dir(dir.path())
            .args(["serve", "--listen", &listen]);
        command
    };
    let port = free_port();
    let mut first = Guard::spawn(
        "mirror serve",
        serve(port).stdout(Stdio::null()).stderr(Stdio::null()),
    );
    first.wait_for_port(&format!("127.0.0.1:{port}"), LIMIT);
    drop(first);
    let ca_key = dir.path().join("mirror-data/pki/ca.key");
    assert_eq!(mode_of(&ca_key), 0o600);
    chmod(&ca_key, 0o604);
    let out = run(&mut serve(free_port()), LIMIT);
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ca.key")
            && stderr.contains("chmod 600 ")
            && stderr.contains("mirror-data/pki/ca.key"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_onto_an_exposed_key_or_htpasswd_fails_and_keeps_serving() {
    let server = TestMirror::start(MirrorOptions::default()).await;
    let key = server.pki.dir.join("server.key");
    for (path, mode, fix) in [
        (key.clone(), 0o644, "chmod 600"),
        (server.pki.htpasswd.clone(), 0o666, "chmod go-w"),
    ] {
        let before = mode_of(&path);
        chmod(&path, mode);
        let error = server
            .mirror()
            .reload()
            .expect_err("a reload onto an exposed file is refused")
            .to_string();
        assert!(
            error.contains(&format!("{fix} {}", path.display())),
            "{error}"
        );
        let response = server
            .with_cert()
            .get(server.url("/v2/"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "the old configuration serves on");
        chmod(&path, before);
        server
            .mirror()
            .reload()
            .expect("a reload onto private files works");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_dir_and_the_index_are_created_private() {
    let server = TestMirror::start(MirrorOptions::default()).await;
    let data = server.root.path().join("data");
    let digest = server
        .mirror()
        .store()
        .blobs()
        .put(b"private bytes", mirror::store::Origin::Cached)
        .await
        .unwrap();
    let hex = digest.as_str().trim_start_matches("sha256:");
    let folders = [
        data.clone(),
        data.join("blobs"),
        data.join("blobs/sha256"),
        data.join(format!("blobs/sha256/{}", &hex[..2])),
        data.join("tmp"),
        data.join("uploads"),
    ];
    for folder in folders {
        assert_eq!(
            format!("{:o}", mode_of(&folder)),
            "700",
            "{}",
            folder.display()
        );
    }
    for file in ["mirror.db", "mirror.db-wal", "mirror.db-shm", "mirror.lock"] {
        let path = data.join(file);
        assert_eq!(format!("{:o}", mode_of(&path)), "600", "{}", path.display());
    }
    server.stop().await;
}
