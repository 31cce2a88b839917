//! The listener's promises about who gets in: client certificates in the three
//! modes, Basic credentials, the `docker login` handshake on `/v2/`, ALPN.

mod common;

use common::{MirrorOptions, PASSWORD, TestMirror, USER};
use mirror_pki::{CaOptions, Pki, Validity};
use reqwest::StatusCode;
use time::{Duration, OffsetDateTime};

fn options(client_auth: &'static str) -> MirrorOptions {
    MirrorOptions {
        client_auth,
        ..MirrorOptions::default()
    }
}

/// A client certificate for `name` from a CA the server has never heard of.
fn foreign_identity(name: &str) -> mirror_pki::IssuedCert {
    let dir = tempfile::tempdir().unwrap();
    let foreign = Pki::init(dir.path(), &CaOptions::default()).unwrap();
    foreign.issue_client(name, Validity::Days(1)).unwrap()
}

#[tokio::test]
async fn required_mode_rejects_a_client_without_a_certificate() {
    let server = TestMirror::start(options("required")).await;
    let refused = server.anonymous().get(server.url("/v2/")).send().await;
    assert!(
        refused.is_err(),
        "a request without a certificate got {refused:?}"
    );
    let admitted = server
        .with_cert()
        .get(server.url("/v2/"))
        .send()
        .await
        .unwrap();
    assert_eq!(admitted.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn certificate_from_another_ca_never_completes_a_request() {
    for mode in ["optional", "required"] {
        let server = TestMirror::start(options(mode)).await;
        let mallory = foreign_identity(USER);
        let result = server
            .with_identity(&mallory)
            .get(server.url("/healthz"))
            .send()
            .await;
        assert!(
            result.is_err(),
            "{mode}: foreign certificate got {result:?}"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn expired_certificate_never_completes_a_request() {
    let server = TestMirror::start(options("optional")).await;
    let now = OffsetDateTime::now_utc();
    let expired = server
        .pki
        .pki
        .issue_client(
            "old",
            Validity::Between(now - Duration::days(30), now - Duration::days(1)),
        )
        .unwrap();
    let result = server
        .with_identity(&expired)
        .get(server.url("/healthz"))
        .send()
        .await;
    assert!(result.is_err(), "expired certificate got {result:?}");
    server.stop().await;
}

#[tokio::test]
async fn revoked_certificate_fails_after_revoke_and_reload() {
    let server = TestMirror::start(options("required")).await;
    let bob = server
        .pki
        .pki
        .issue_client("bob", Validity::Days(1))
        .unwrap();
    let alice = server.with_cert();
    assert_eq!(
        alice.get(server.url("/v2/")).send().await.unwrap().status(),
        StatusCode::OK
    );

    server.pki.pki.revoke(USER).unwrap();
    // Until the server reloads, it enforces the CRL it loaded.
    server.mirror().reload().unwrap();

    let result = server.with_cert().get(server.url("/v2/")).send().await;
    assert!(result.is_err(), "revoked certificate got {result:?}");
    let bob_response = server
        .with_identity(&bob)
        .get(server.url("/v2/"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        bob_response.status(),
        StatusCode::OK,
        "other users are unaffected"
    );
    server.stop().await;
}

#[tokio::test]
async fn optional_mode_challenges_an_anonymous_client_like_a_registry() {
    let server = TestMirror::start(options("optional")).await;
    let response = server
        .anonymous()
        .get(server.url("/v2/"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.starts_with("Basic realm=\"mirror\""),
        "{challenge}"
    );
    assert_eq!(
        response.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");
    server.stop().await;
}

#[tokio::test]
async fn optional_mode_admits_a_password_user() {
    let server = TestMirror::start(options("optional")).await;
    let response = server
        .anonymous()
        .get(server.url("/v2/"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
    server.stop().await;
}

#[tokio::test]
async fn optional_mode_admits_a_client_certificate_alone() {
    let server = TestMirror::start(options("optional")).await;
    let response = server
        .with_cert()
        .get(server.url("/v2/"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
    server.stop().await;
}

#[tokio::test]
async fn wrong_password_is_refused_even_beside_a_certificate() {
    let server = TestMirror::start(options("optional")).await;
    for client in [server.anonymous(), server.with_cert()] {
        let response = client
            .get(server.url("/v2/"))
            .basic_auth(USER, Some("not-the-password"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let unknown = server
        .anonymous()
        .get(server.url("/v2/"))
        .basic_auth("nobody", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test]
async fn cert_policy_refuses_password_users_with_403() {
    let server = TestMirror::start(MirrorOptions {
        extra_toml: "[registry]\nread = \"cert\"\n".into(),
        ..options("optional")
    })
    .await;
    let response = server
        .anonymous()
        .get(server.url("/v2/"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "DENIED");
    let with_cert = server
        .with_cert()
        .get(server.url("/v2/"))
        .send()
        .await
        .unwrap();
    assert_eq!(with_cert.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn anonymous_policy_admits_anyone_with_a_trusted_tls_connection() {
    let server = TestMirror::start(MirrorOptions {
        extra_toml: "[auth]\nread = \"anonymous\"\n".into(),
        ..options("optional")
    })
    .await;
    let response = server
        .anonymous()
        .get(server.url("/v2/"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn off_mode_serves_without_asking_for_certificates() {
    let server = TestMirror::start(options("off")).await;
    let response = server
        .anonymous()
        .get(server.url("/v2/"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn http2_is_negotiated_by_alpn_and_http1_still_works() {
    let server = TestMirror::start(options("optional")).await;
    let h2 = server
        .with_cert()
        .get(server.url("/v2/"))
        .send()
        .await
        .unwrap();
    assert_eq!(h2.version(), reqwest::Version::HTTP_2);
    assert_eq!(h2.status(), StatusCode::OK);
    let h1_client = common::client_builder(server.pki.ca_pem())
        .http1_only()
        .build()
        .unwrap();
    let h1 = h1_client
        .get(server.url("/v2/"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(h1.version(), reqwest::Version::HTTP_11);
    assert_eq!(h1.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn healthz_needs_no_credentials_but_metrics_do() {
    let server = TestMirror::start(options("optional")).await;
    let health = server
        .anonymous()
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let metrics = server
        .anonymous()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), StatusCode::UNAUTHORIZED);
    let metrics = server
        .with_cert()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    assert!(
        metrics
            .text()
            .await
            .unwrap()
            .contains("mirror_http_requests_total")
    );
    server.stop().await;
}

#[tokio::test]
async fn handshake_failures_are_counted_by_reason() {
    let server = TestMirror::start(options("optional")).await;
    let mallory = foreign_identity("mallory");
    let _ = server
        .with_identity(&mallory)
        .get(server.url("/healthz"))
        .send()
        .await;
    let now = OffsetDateTime::now_utc();
    let expired = server
        .pki
        .pki
        .issue_client(
            "old",
            Validity::Between(now - Duration::days(3), now - Duration::days(1)),
        )
        .unwrap();
    let _ = server
        .with_identity(&expired)
        .get(server.url("/healthz"))
        .send()
        .await;
    let text = server.metrics().await;
    assert!(
        text.contains("mirror_tls_handshake_failures_total{reason=\"unknown_ca\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("mirror_tls_handshake_failures_total{reason=\"expired\"} 1"),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_certificate_that_expires_mid_connection_gets_no_more_answers() {
    use common::raw;
    let server = TestMirror::start(options("optional")).await;
    let now = OffsetDateTime::now_utc();
    let brief = server
        .pki
        .pki
        .issue_client(
            "brief",
            Validity::Between(now - Duration::hours(1), now + Duration::seconds(3)),
        )
        .unwrap();
    let local = std::net::Ipv4Addr::LOCALHOST.into();
    let h1 = raw::client_config(server.pki.ca_pem(), raw::pems(&brief), raw::H1);
    let mut h1 = raw::tls_from(local, server.addr, h1).await.unwrap();
    let h2 = raw::client_config(server.pki.ca_pem(), raw::pems(&brief), raw::H2);
    let h2 = raw::tls_from(local, server.addr, h2).await.unwrap();
    let mut h2 = raw::h2_handshake(h2, h2::client::Builder::new()).await;
    assert_eq!(raw::h1_get(&mut h1, "/v2/", "").await.unwrap().status, 200);
    assert_eq!(
        raw::h2_get(&mut h2.send, "/v2/", None).await.unwrap().0,
        200
    );

    let expired_at = brief.not_after;
    common::wait_for(
        "the certificate's notAfter",
        std::time::Duration::from_secs(10),
        || async move { OffsetDateTime::now_utc() > expired_at + Duration::seconds(1) },
    )
    .await;
    let after = raw::h1_get(&mut h1, "/v2/", "").await.unwrap();
    assert_eq!(after.status, 401, "{}", after.head);
    assert_eq!(after.header("connection"), Some("close"), "{}", after.head);
    assert!(raw::closed_within(&mut h1, std::time::Duration::from_secs(5)).await);
    let (status, body) = raw::h2_get(&mut h2.send, "/v2/", None).await.unwrap();
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), &mut h2.driver).await;
    assert!(ended.is_ok(), "the HTTP/2 connection stayed open");
    server.stop().await;
}
