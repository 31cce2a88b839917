//! The files `mirror pki` writes and the server it protects work with the
//! tools people really use: podman and skopeo (containers/image reading a
//! certs.d folder), curl, openssl, and `htpasswd -B` files.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::process::{run, text, tool};
use common::{MirrorOptions, PASSWORD, TestMirror, USER};

const LIMIT: Duration = Duration::from_secs(60);

/// podman/skopeo login into a throwaway auth file.
fn login(
    program: &str,
    server: &TestMirror,
    cert_dir: &Path,
    user: &str,
    password: &str,
) -> std::process::Output {
    let auth_file = server.root.path().join(format!("{program}-auth.json"));
    run(
        Command::new(tool(program))
            .arg("login")
            .arg("--cert-dir")
            .arg(cert_dir)
            .args(["-u", user, "-p", password])
            .arg(server.host_port())
            .env("REGISTRY_AUTH_FILE", &auth_file)
            .env("HOME", server.root.path()),
        LIMIT,
    )
}

/// A certs.d folder with only the CA: a user who logs in with a password.
fn ca_only_cert_dir(server: &TestMirror) -> std::path::PathBuf {
    let dir = server.root.path().join("ca-only").join(server.host_port());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(server.pki.ca_cert(), dir.join("ca.crt")).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn podman_login_with_a_password_succeeds_and_a_wrong_password_fails() {
    let server = TestMirror::start(MirrorOptions::default()).await;
    let cert_dir = ca_only_cert_dir(&server);
    let ok = tokio::task::block_in_place(|| login("podman", &server, &cert_dir, USER, PASSWORD));
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains("Login Succeeded"),
        "{}",
        text(&ok)
    );
    let bad = tokio::task::block_in_place(|| login("podman", &server, &cert_dir, USER, "wrong"));
    assert!(!bad.status.success(), "{}", text(&bad));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("invalid username/password"),
        "{}",
        text(&bad)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn podman_login_with_the_issued_certs_d_folder_authenticates_by_certificate() {
    let server = TestMirror::start(MirrorOptions {
        client_auth: "required",
        ..MirrorOptions::default()
    })
    .await;
    // podman sends the password only after a 401; the certificate alone
    // authenticates, so login succeeds whatever the password (documented).
    let ok =
        tokio::task::block_in_place(|| login("podman", &server, &server.certs_d, USER, "anything"));
    assert!(ok.status.success(), "{}", text(&ok));
    // Without the certificate, a server that requires one refuses the TLS handshake.
    let cert_dir = ca_only_cert_dir(&server);
    let refused =
        tokio::task::block_in_place(|| login("podman", &server, &cert_dir, USER, PASSWORD));
    assert!(!refused.status.success(), "{}", text(&refused));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_reads_the_certs_d_folder_too() {
    let server = TestMirror::start(MirrorOptions {
        client_auth: "required",
        ..MirrorOptions::default()
    })
    .await;
    let ok =
        tokio::task::block_in_place(|| login("skopeo", &server, &server.certs_d, USER, "anything"));
    assert!(ok.status.success(), "{}", text(&ok));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_with_the_certs_d_files_is_admitted_and_without_them_is_not() {
    let server = TestMirror::start(MirrorOptions {
        client_auth: "required",
        ..MirrorOptions::default()
    })
    .await;
    let certs = &server.certs_d;
    // curl takes `:` in --cert as a passphrase separator: escape it.
    let cert_arg = certs
        .join("client.cert")
        .display()
        .to_string()
        .replace(':', "\\:");
    let ok = tokio::task::block_in_place(|| {
        run(
            Command::new(tool("curl"))
                .args(["-sS", "--fail", "-D", "-"])
                .arg("--cacert")
                .arg(certs.join("ca.crt"))
                .arg("--cert")
                .arg(&cert_arg)
                .arg("--key")
                .arg(certs.join("client.key"))
                .arg(server.url("/v2/")),
            LIMIT,
        )
    });
    assert!(ok.status.success(), "{}", text(&ok));
    let headers = String::from_utf8_lossy(&ok.stdout).to_lowercase();
    assert!(
        headers.contains("docker-distribution-api-version: registry/2.0"),
        "{headers}"
    );
    let refused = tokio::task::block_in_place(|| {
        run(
            Command::new(tool("curl"))
                .args(["-sS", "--fail", "--cacert"])
                .arg(certs.join("ca.crt"))
                .arg(server.url("/v2/")),
            LIMIT,
        )
    });
    assert!(!refused.status.success(), "{}", text(&refused));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn openssl_completes_tls_1_2_and_1_3_handshakes_with_a_client_certificate() {
    let server = TestMirror::start(MirrorOptions {
        client_auth: "required",
        ..MirrorOptions::default()
    })
    .await;
    let certs = &server.certs_d;
    for version in ["-tls1_2", "-tls1_3"] {
        let output = tokio::task::block_in_place(|| {
            run(
                Command::new(tool("openssl"))
                    .args(["s_client", version, "-connect", &server.host_port()])
                    .arg("-CAfile")
                    .arg(certs.join("ca.crt"))
                    .arg("-cert")
                    .arg(certs.join("client.cert"))
                    .arg("-key")
                    .arg(certs.join("client.key"))
                    .args(["-verify_return_error", "-brief"]),
                LIMIT,
            )
        });
        let all = text(&output);
        assert!(output.status.success(), "{version}: {all}");
        assert!(all.contains("Verification: OK"), "{version}: {all}");
        let expected = if version == "-tls1_2" {
            "TLSv1.2"
        } else {
            "TLSv1.3"
        };
        assert!(all.contains(expected), "{version}: {all}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_written_by_htpasswd_dash_b_is_accepted() {
    let server = TestMirror::start(MirrorOptions::default()).await;
    let made = tokio::task::block_in_place(|| {
        run(
            Command::new(tool("htpasswd"))
                .args(["-B", "-b", "-c"])
                .arg(&server.pki.htpasswd)
                .args(["carol", "carol-pw"]),
            LIMIT,
        )
    });
    assert!(made.status.success(), "{}", text(&made));
    server.mirror().reload().unwrap();
    let response = server
        .anonymous()
        .get(server.url("/v2/"))
        .basic_auth("carol", Some("carol-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    server.stop().await;
}
