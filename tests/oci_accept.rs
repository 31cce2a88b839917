//! A tag is cached whatever the client's `Accept`: the mirror resolves tags
//! upstream with every manifest type it knows, keeps the tag's true manifest,
//! and answers a narrow client from the cache the way the upstream registry
//! (CNCF distribution) would answer it.

mod common;

use common::registry::layout::{Built, Layout};
use common::registry::proxy::Proxy;
use common::registry::{Auth, DockerRegistry};
use common::{MirrorOptions, TestMirror};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

struct Seeded {
    image: Built,
}

fn seed(registry: &DockerRegistry, dir: &std::path::Path) -> Seeded {
    let mut layout = Layout::new(dir);
    let image = layout.image("amd64", &[(91, 1000)]);
    let amd64 = layout.image("amd64", &[(92, 1000)]);
    let arm64 = layout.image("arm64", &[(93, 1000)]);
    let multi = layout.index(&[("arm64", &arm64), ("amd64", &amd64)]);
    layout.tag("image", &image);
    layout.tag("multi", &multi);
    let at = |repo: &str| format!("{}/{repo}", registry.addr);
    layout.push("image", &at("team/app:v1"), &[]);
    layout.push("multi", &at("team/multi:v1"), &["--all"]);
    layout.push("multi", &at("team/list:v1"), &["--all", "--format", "v2s2"]);
    layout.push("image", &at("team/docker:v1"), &["--format", "v2s2"]);
    Seeded { image }
}

fn options(upstream: &str) -> MirrorOptions {
    MirrorOptions {
        extra_toml: format!(
            "[[registry.upstream]]\nname = \"up.test\"\nurl = \"{upstream}\"\ntag_ttl = \"1h\"\n"
        ),
        ..MirrorOptions::default()
    }
}

/// What a client sees of a manifest GET or HEAD: status, digest header (or
/// error code) and content type.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    digest_or_code: String,
    content_type: String,
}

async fn answer(request: reqwest::RequestBuilder) -> Answer {
    answer_of(request, false).await
}

async fn answer_of(request: reqwest::RequestBuilder, head: bool) -> Answer {
    let response = request.send().await.expect("manifest request");
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let content_type = header("content-type");
    let digest = header("docker-content-digest");
    // A HEAD has no body to read (and how a server ends an error HEAD over
    // HTTP/2 is not what this test is about).
    let body = if head {
        bytes::Bytes::new()
    } else {
        response.bytes().await.expect("body")
    };
    let digest_or_code = if status == 200 {
        digest
    } else {
        serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|error| error["errors"][0]["code"].as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    Answer {
        status,
        // Errors are compared by code; their content types differ harmlessly.
        content_type: if status == 200 {
            content_type
        } else {
            String::new()
        },
        digest_or_code,
    }
}

fn manifest_gets(proxy: &Proxy) -> usize {
    proxy.count("GET", "/manifests/") + proxy.count("HEAD", "/manifests/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_pulled_with_a_narrow_accept_is_a_hit_the_second_time_and_offline() {
    let mut registry = DockerRegistry::start(Auth::None);
    let work = tempfile::tempdir().unwrap();
    let seeded = seed(&registry, work.path());
    let proxy = Proxy::start(&registry.url()).await;
    let mirror = TestMirror::start(options(&proxy.url())).await;
    let client = mirror.with_cert();
    let url = mirror.url("/v2/up.test/team/app/manifests/v1");
    let get = || client.get(&url).header("accept", OCI_MANIFEST);
    let expected = Answer {
        status: 200,
        digest_or_code: seeded.image.digest.clone(),
        content_type: OCI_MANIFEST.to_owned(),
    };

    assert_eq!(answer(get()).await, expected);
    let upstream = manifest_gets(&proxy);
    assert!(upstream >= 1);
    for _ in 0..5 {
        assert_eq!(answer(get()).await, expected);
    }
    assert_eq!(
        answer_of(client.head(&url).header("accept", OCI_MANIFEST), true).await,
        expected
    );
    assert_eq!(
        manifest_gets(&proxy),
        upstream,
        "later pulls of the tag are hits"
    );

    registry.stop();
    assert_eq!(answer(get()).await, expected, "offline, from the cache");
    mirror.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_the_client_cannot_accept_is_answered_as_the_upstream_answers_it() {
    let mut registry = DockerRegistry::start(Auth::None);
    let work = tempfile::tempdir().unwrap();
    seed(&registry, work.path());
    let proxy = Proxy::start(&registry.url()).await;
    let mirror = TestMirror::start(options(&proxy.url())).await;
    let client = mirror.with_cert();
    let direct = reqwest::Client::new();
    let cases = [
        // An OCI index to a client that takes only image manifests: 404.
        ("team/multi", OCI_MANIFEST),
        // An OCI manifest to a client that takes only Docker's: 404.
        ("team/app", DOCKER_MANIFEST),
        // A Docker list to a client without lists: the linux/amd64 image.
        ("team/list", DOCKER_MANIFEST),
        // What it accepts, as it is.
        ("team/docker", DOCKER_MANIFEST),
    ];
    let mut expected = Vec::new();
    for (repo, accept) in cases {
        let upstream = answer(
            direct
                .get(format!("{}/v2/{repo}/manifests/v1", registry.url()))
                .header("accept", accept),
        )
        .await;
        let mirrored = answer(
            client
                .get(mirror.url(&format!("/v2/up.test/{repo}/manifests/v1")))
                .header("accept", accept),
        )
        .await;
        assert_eq!(mirrored, upstream, "{repo} with Accept: {accept}");
        expected.push(upstream);
    }
    assert_eq!(expected[0].digest_or_code, "MANIFEST_UNKNOWN");
    assert_eq!(expected[1].digest_or_code, "MANIFEST_UNKNOWN");
    assert_eq!(expected[2].content_type, DOCKER_MANIFEST);

    let seen = manifest_gets(&proxy);
    registry.stop();
    for ((repo, accept), expected) in cases.iter().zip(&expected) {
        for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
            let url = mirror.url(&format!("/v2/up.test/{repo}/manifests/v1"));
            let head = method == reqwest::Method::HEAD;
            let got = answer_of(
                client
                    .request(method.clone(), url)
                    .header("accept", *accept),
                head,
            )
            .await;
            if head && expected.status != 200 {
                // A HEAD error has no body to name its code.
                assert_eq!(got.status, expected.status, "HEAD {repo}");
                continue;
            }
            assert_eq!(&got, expected, "{method} {repo} offline");
        }
    }
    assert_eq!(
        manifest_gets(&proxy),
        seen,
        "every answer came from the cache"
    );
    mirror.stop().await;
}
