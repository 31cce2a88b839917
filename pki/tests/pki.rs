//! The PKI's files are what other tools expect: openssl verifies them, keys are
//! private, revocation lands in a CRL that openssl honours.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use mirror_pki::{
    CaOptions, CertKind, CertsDir, Pki, PkiError, RegistryHost, Validity, holds_crl,
    inspect_crl_file, inspect_file, layout,
};
use time::{Duration, OffsetDateTime};

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is missing: scripts/test.sh installs it");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn new_pki() -> (tempfile::TempDir, Pki) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(dir.path(), &CaOptions::default()).unwrap();
    (dir, pki)
}

#[test]
fn init_writes_a_ca_that_openssl_accepts_with_a_private_key() {
    let (dir, _pki) = new_pki();
    let ca = dir.path().join(layout::CA_CERT);
    assert_eq!(mode(&dir.path().join(layout::CA_KEY)), 0o600);
    let (ok, text) = openssl(&["x509", "-in", ca.to_str().unwrap(), "-noout", "-text"]);
    assert!(ok, "{text}");
    assert!(text.contains("CA:TRUE"), "{text}");
    assert!(text.contains("Certificate Sign, CRL Sign"), "{text}");
    assert!(text.contains("prime256v1"), "{text}");
    let info = &inspect_file(&ca).unwrap()[0];
    assert!(info.is_ca);
    assert!(info.subject.contains("mirror CA"));
}

#[test]
fn init_refuses_to_replace_a_ca_without_force() {
    let (dir, _pki) = new_pki();
    let before = std::fs::read(dir.path().join(layout::CA_CERT)).unwrap();
    let err = Pki::init(dir.path(), &CaOptions::default()).unwrap_err();
    assert!(matches!(err, PkiError::CaExists(_)), "{err}");
    assert_eq!(
        before,
        std::fs::read(dir.path().join(layout::CA_CERT)).unwrap()
    );
    let forced = CaOptions {
        force: true,
        ..CaOptions::default()
    };
    Pki::init(dir.path(), &forced).unwrap();
    assert_ne!(
        before,
        std::fs::read(dir.path().join(layout::CA_CERT)).unwrap()
    );
}

#[test]
fn server_certificate_verifies_and_carries_dns_and_ip_sans() {
    let (dir, pki) = new_pki();
    pki.issue_server(
        &[
            "mirror.example.com".into(),
            "localhost".into(),
            "127.0.0.1".into(),
        ],
        Validity::Days(30),
    )
    .unwrap();
    let ca = dir.path().join(layout::CA_CERT);
    let server = dir.path().join(layout::SERVER_CERT);
    assert_eq!(mode(&dir.path().join(layout::SERVER_KEY)), 0o600);
    let (ok, text) = openssl(&[
        "verify",
        "-purpose",
        "sslserver",
        "-CAfile",
        ca.to_str().unwrap(),
        server.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let info = &inspect_file(&server).unwrap()[0];
    assert_eq!(
        info.sans,
        ["DNS:mirror.example.com", "DNS:localhost", "IP:127.0.0.1"]
    );
    // clientAuth too: replicas present it to each other's peer endpoints.
    assert_eq!(info.extended_key_usage, ["serverAuth", "clientAuth"]);
    assert!(!info.is_ca);
}

#[test]
fn client_certificate_lands_in_certs_d_with_dockers_file_names() {
    let (dir, pki) = new_pki();
    let issued = pki.issue_client("alice", Validity::Days(30)).unwrap();
    let registry: RegistryHost = "mirror.example.com:5000".parse().unwrap();
    let certs_d = dir.path().join("certs.d");
    let written = CertsDir::write(&certs_d, &registry, pki.ca_cert_pem(), &issued).unwrap();
    let folder = certs_d.join("mirror.example.com:5000");
    for name in ["ca.crt", "client.cert", "client.key"] {
        assert!(folder.join(name).is_file(), "{name} missing");
    }
    assert_eq!(
        std::fs::read_dir(&folder).unwrap().count(),
        3,
        "nothing but the three files"
    );
    assert_eq!(mode(&folder.join("client.key")), 0o600);
    let (ok, text) = openssl(&[
        "verify",
        "-purpose",
        "sslclient",
        "-CAfile",
        folder.join("ca.crt").to_str().unwrap(),
        folder.join("client.cert").to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    // The key really belongs to the certificate.
    let (_, cert_pub) = openssl(&[
        "x509",
        "-in",
        folder.join("client.cert").to_str().unwrap(),
        "-noout",
        "-pubkey",
    ]);
    let (_, key_pub) = openssl(&[
        "pkey",
        "-in",
        folder.join("client.key").to_str().unwrap(),
        "-pubout",
    ]);
    assert_eq!(cert_pub, key_pub);
    let info = &inspect_file(&written.cert()).unwrap()[0];
    assert_eq!(info.subject, "CN=alice");
    assert_eq!(info.extended_key_usage, ["clientAuth"]);
    assert_eq!(info.serial, issued.serial);

    let usage = written.usage("alice").to_string();
    assert!(usage.contains("/etc/docker/certs.d/"), "{usage}");
    assert!(
        usage.contains("[host.\"https://mirror.example.com:5000\"]"),
        "{usage}"
    );
    assert!(
        usage.contains("mirror.example.com\\:5000/client.cert"),
        "curl needs the colon escaped: {usage}"
    );
    assert!(
        usage.contains("machine mirror.example.com login alice"),
        "{usage}"
    );
}

#[test]
fn onboarding_text_covers_every_client_and_each_upstream_and_tells_no_one_to_log_in() {
    let (dir, pki) = new_pki();
    let issued = pki.issue_client("alice", Validity::Days(30)).unwrap();
    let registry: RegistryHost = "mirror.example.com:5000".parse().unwrap();
    let written = CertsDir::write(
        &dir.path().join("certs.d"),
        &registry,
        pki.ca_cert_pem(),
        &issued,
    )
    .unwrap();
    let upstreams = vec![RegistryHost::docker_hub(), "ghcr.io".parse().unwrap()];
    let usage = written.usage("alice").with_upstreams(upstreams).to_string();
    for expected in [
        "# docker",
        "# podman",
        "# containerd",
        "# curl",
        "# go",
        "config_path = \"/etc/containerd/certs.d\"",
        "--hosts-dir /etc/containerd/certs.d",
        "/etc/containerd/certs.d/ghcr.io/hosts.toml",
        "server = \"https://ghcr.io\"",
        "location = \"mirror.example.com:5000/ghcr.io\"",
        "/etc/containers/certs.d/",
        "machine mirror.example.com:5000 login alice password PASSWORD",
        "machine mirror.example.com login alice password PASSWORD",
        "export SSL_CERT_FILE=",
    ] {
        assert!(usage.contains(expected), "{expected} missing:\n{usage}");
    }
    assert!(
        !usage
            .lines()
            .any(|l| l.contains("docker login") && !l.contains("no `docker login`")),
        "a certificate is the login:\n{usage}"
    );
}

#[test]
fn revoked_certificate_is_listed_in_a_crl_that_openssl_enforces() {
    let (dir, pki) = new_pki();
    let alice = pki.issue_client("alice", Validity::Days(30)).unwrap();
    let bob = pki.issue_client("bob", Validity::Days(30)).unwrap();
    let alice_pem = dir.path().join("alice.pem");
    let bob_pem = dir.path().join("bob.pem");
    std::fs::write(&alice_pem, &alice.cert_pem).unwrap();
    std::fs::write(&bob_pem, &bob.cert_pem).unwrap();
    let ca = dir.path().join(layout::CA_CERT);
    let crl = dir.path().join(layout::CRL);
    let verify = |cert: &Path| {
        openssl(&[
            "verify",
            "-crl_check",
            "-CAfile",
            ca.to_str().unwrap(),
            "-CRLfile",
            crl.to_str().unwrap(),
            cert.to_str().unwrap(),
        ])
    };
    assert!(verify(&alice_pem).0, "the empty CRL from init is valid");

    let revoked = pki.revoke("alice").unwrap();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].serial, alice.serial);
    let (ok, text) = verify(&alice_pem);
    assert!(!ok && text.contains("revoked"), "{text}");
    assert!(verify(&bob_pem).0, "bob is unaffected");

    // By serial, in the colon form other tools print.
    let colon_serial: String = bob
        .serial
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap().to_uppercase())
        .collect::<Vec<_>>()
        .join(":");
    pki.revoke(&colon_serial).unwrap();
    assert!(!verify(&bob_pem).0);

    let list = pki.list().unwrap();
    assert!(
        list.iter()
            .all(|r| r.kind == CertKind::Client && r.revoked_at.is_some())
    );
    assert!(matches!(pki.revoke("carol"), Err(PkiError::NotFound(_))));
}

#[test]
fn a_crl_reads_back_with_its_issuer_next_update_and_revoked_serials() {
    let dir = tempfile::tempdir().unwrap();
    let options = CaOptions {
        common_name: "Revoking CA".into(),
        ..CaOptions::default()
    };
    let pki = Pki::init(dir.path(), &options).unwrap();
    let crl_path = dir.path().join(layout::CRL);
    let empty = inspect_crl_file(&crl_path).unwrap();
    assert!(empty.revoked.is_empty() && empty.issuer.contains("Revoking CA"));

    let alice = pki.issue_client("alice", Validity::Days(30)).unwrap();
    let bob = pki.issue_client("bob", Validity::Days(30)).unwrap();
    pki.revoke("alice").unwrap();
    pki.revoke("bob").unwrap();
    let crl = inspect_crl_file(&crl_path).unwrap();
    let serials: Vec<&str> = crl.revoked.iter().map(|r| r.serial.as_str()).collect();
    assert_eq!(serials, [alice.serial.as_str(), bob.serial.as_str()]);
    let year = OffsetDateTime::now_utc().year().to_string();
    assert!(
        crl.revoked.iter().all(|r| r.revoked_at.contains(&year)),
        "{crl}"
    );
    let next = crl.next_update.clone().expect("a next update");
    assert!(
        next.contains(&(OffsetDateTime::now_utc().year() + 1).to_string()),
        "a year ahead: {next}"
    );
    assert!(!crl.overdue);
    assert_ne!(crl.number, empty.number, "every CRL gets a new number");
    let shown = crl.to_string();
    assert!(
        shown.contains("next update:")
            && shown.contains(&alice.serial)
            && shown.contains("Revoking CA"),
        "{shown}"
    );

    let pem = std::fs::read(&crl_path).unwrap();
    assert!(holds_crl(&pem));
    assert!(!holds_crl(pki.ca_cert_pem().as_bytes()));
    assert!(inspect_crl_file(&dir.path().join(layout::CA_CERT)).is_err());
}

#[test]
fn expired_window_can_be_issued_for_tests_and_shows_as_expired() {
    let (dir, pki) = new_pki();
    let now = OffsetDateTime::now_utc();
    let old = pki
        .issue_client(
            "old",
            Validity::Between(now - Duration::days(10), now - Duration::days(1)),
        )
        .unwrap();
    let path = dir.path().join("old.pem");
    std::fs::write(&path, &old.cert_pem).unwrap();
    assert!(inspect_file(&path).unwrap()[0].expired);
    let ca = dir.path().join(layout::CA_CERT);
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        ca.to_str().unwrap(),
        path.to_str().unwrap(),
    ]);
    assert!(!ok && text.contains("expired"), "{text}");
}

#[test]
fn reopened_pki_keeps_issuing_under_the_same_ca() {
    let (dir, pki) = new_pki();
    let ca_before = pki.ca_cert_pem().to_owned();
    drop(pki);
    let pki = Pki::open(dir.path()).unwrap();
    assert_eq!(ca_before, pki.ca_cert_pem());
    pki.issue_client("carol", Validity::Days(1)).unwrap();
    assert_eq!(pki.list().unwrap().len(), 1);
    let missing = tempfile::tempdir().unwrap();
    assert!(matches!(Pki::open(missing.path()), Err(PkiError::NoCa(..))));
}

#[test]
fn bad_names_and_sans_are_refused_before_anything_is_written() {
    let (_dir, pki) = new_pki();
    assert!(pki.issue_client("../evil", Validity::Days(1)).is_err());
    assert!(pki.issue_server(&[], Validity::Days(1)).is_err());
    assert!(
        pki.issue_server(&["bad name".into()], Validity::Days(1))
            .is_err()
    );
    assert!(pki.list().unwrap().is_empty());
}
