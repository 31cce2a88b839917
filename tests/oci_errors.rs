//! Bad input and bad upstreams get clean OCI errors, and leave nothing stored.

mod common;

use common::registry::layout::Layout;
use common::registry::proxy::Proxy;
use common::registry::{Auth, DockerRegistry};
use common::{MirrorOptions, TestMirror};

async fn error_of(response: reqwest::Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.expect("an OCI JSON error body");
    let first = &body["errors"][0];
    (
        status,
        first["code"].as_str().unwrap_or("").to_owned(),
        first["message"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_digests_and_unknown_content_get_spec_errors() {
    let registry = DockerRegistry::start(Auth::None);
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(work.path());
    let image = layout.image("amd64", &[(71, 1000)]);
    layout.tag("x", &image);
    layout.push("x", &format!("{}/team/known:v1", registry.addr), &[]);
    let proxy = Proxy::start(&registry.url()).await;
    let mirror = TestMirror::start(MirrorOptions {
        extra_toml: format!(
            "[[registry.upstream]]\nname = \"up.test\"\nurl = \"{}\"\n\n[[registry.upstream]]\nname = \"down.test\"\nurl = \"http://127.0.0.1:9\"\n",
            proxy.url()
        ),
        ..MirrorOptions::default()
    })
    .await;
    let client = mirror.with_cert();
    let get = |path: &str| client.get(mirror.url(path)).send();
    let zero = format!("sha256:{}", "0".repeat(64));

    let cases: Vec<(String, u16, &[&str])> = vec![
        ("/v2/UPPER/case/manifests/v1".into(), 400, &["NAME_INVALID"]),
        ("/v2/a__-b/manifests/v1".into(), 400, &["NAME_INVALID"]),
        (
            format!("/v2/{}/manifests/v1", "a/".repeat(130) + "a"),
            400,
            &["NAME_INVALID"],
        ),
        (
            "/v2/up.test/team/known/blobs/sha256:abc".into(),
            400,
            &["DIGEST_INVALID"],
        ),
        (
            "/v2/up.test/team/known/manifests/md5:0123".into(),
            404,
            &["MANIFEST_UNKNOWN"],
        ),
        (
            "/v2/up.test/team/known/manifests/nope".into(),
            404,
            &["MANIFEST_UNKNOWN"],
        ),
        (
            "/v2/up.test/team/unknown/manifests/v1".into(),
            404,
            &["NAME_UNKNOWN", "MANIFEST_UNKNOWN"],
        ),
        (
            format!("/v2/up.test/team/known/blobs/{zero}"),
            404,
            &["BLOB_UNKNOWN"],
        ),
        (
            "/v2/hosted/nothing/manifests/v1".into(),
            404,
            &["MANIFEST_UNKNOWN"],
        ),
        (
            "/v2/hosted/nothing/tags/list".into(),
            404,
            &["NAME_UNKNOWN"],
        ),
        (
            "/v2/team/known/manifests/v1?ns=nowhere.test".into(),
            404,
            &["NAME_UNKNOWN"],
        ),
        (
            "/v2/down.test/team/known/manifests/v1".into(),
            503,
            &["UNAVAILABLE"],
        ),
        (
            format!("/v2/down.test/team/known/blobs/{zero}"),
            503,
            &["UNAVAILABLE"],
        ),
    ];
    for (path, status, codes) in &cases {
        let (got_status, code, message) = error_of(get(path).await.unwrap()).await;
        assert_eq!(got_status, *status, "{path}: {code} {message}");
        assert!(codes.contains(&code.as_str()), "{path}: {code} {message}");
        if *status == 503 {
            assert!(
                message.contains("down.test"),
                "the message names the upstream: {message}"
            );
        }
    }
    // HEAD of an unknown blob asks upstream, which says 404.
    let head = client
        .head(mirror.url(&format!("/v2/up.test/team/known/blobs/{zero}")))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 404);
    let (status, code, _) = error_of(
        client
            .post(mirror.url("/v2/_catalog"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (405, "UNSUPPORTED"));
    // No client certificate and no password: the registry's 401.
    let anonymous = mirror
        .anonymous()
        .get(mirror.url("/v2/up.test/team/known/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert!(
        anonymous.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    assert_eq!(error_of(anonymous).await.1, "UNAUTHORIZED");

    // An upstream that rate-limits: TOOMANYREQUESTS with its Retry-After.
    proxy.force_status(Some(429));
    let limited = get("/v2/up.test/team/known/manifests/v1").await.unwrap();
    assert_eq!(
        limited
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("7"),
        "{limited:?}"
    );
    assert_eq!(error_of(limited).await.1, "TOOMANYREQUESTS");
    proxy.force_status(None);

    // A manifest whose bytes do not match the digest asked for is refused, not stored.
    proxy.corrupt_blob(&image.digest);
    let path = format!("/v2/up.test/team/known/manifests/{}", image.digest);
    let (status, _, message) = error_of(get(&path).await.unwrap()).await;
    assert!(status >= 500, "{status} {message} {:?}", proxy.seen());
    let digest = image.digest.parse().unwrap();
    assert_eq!(
        mirror.mirror().store().blobs().size(&digest).await.unwrap(),
        None
    );
    proxy.stop_corrupting();
    assert_eq!(get(&path).await.unwrap().status(), 200);

    let catalog: serde_json::Value = get("/v2/_catalog").await.unwrap().json().await.unwrap();
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["up.test/team/known"]),
        "only the good fetch was stored"
    );
    mirror.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_reference_is_an_unknown_manifest_on_read_and_invalid_on_push() {
    let mirror = TestMirror::start(MirrorOptions {
        extra_toml: "[[registry.upstream]]\nname = \"down.test\"\nurl = \"http://127.0.0.1:9\"\n"
            .into(),
        ..MirrorOptions::default()
    })
    .await;
    let client = mirror.with_cert();
    // The first is the OCI conformance suite's; the rest are every way a
    // reference can fail to be a tag or a digest.
    let references = [
        ".INVALID_MANIFEST_NAME",
        "-leading-dash",
        &"t".repeat(129),
        "sha256:1234",
        "md5:0123",
    ];
    for repo in ["hosted/app", "down.test/team/app"] {
        for reference in references {
            let url = mirror.url(&format!("/v2/{repo}/manifests/{reference}"));
            let (status, code, message) = error_of(client.get(&url).send().await.unwrap()).await;
            assert_eq!(
                (status, code.as_str()),
                (404, "MANIFEST_UNKNOWN"),
                "GET {repo} {reference}: {message}"
            );
            let head = client.head(&url).send().await.unwrap();
            assert_eq!(head.status(), 404, "HEAD {repo} {reference}");
        }
    }
    for (reference, expected) in [
        (".INVALID_MANIFEST_NAME", "MANIFEST_INVALID"),
        ("sha256:1234", "DIGEST_INVALID"),
    ] {
        let put = client
            .put(mirror.url(&format!("/v2/hosted/app/manifests/{reference}")))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let (status, code, message) = error_of(put).await;
        assert_eq!(
            (status, code.as_str()),
            (400, expected),
            "PUT {reference}: {message}"
        );
    }
    mirror.stop().await;
}
