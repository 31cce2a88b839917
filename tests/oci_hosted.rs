//! Hosted repositories (names that map to no upstream): pushes by skopeo and
//! by hand (monolithic, chunked, cross-repository mount), manifests checked
//! against their blobs, deletes, tags and catalog pagination, referrers.

mod common;

use common::process::skopeo;
use common::registry::layout::{Layout, OCI_MANIFEST};
use common::{MirrorOptions, TestMirror};
use serde_json::json;
use sha2::{Digest as _, Sha256};

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

async fn oci_code(response: reqwest::Response) -> String {
    let body: serde_json::Value = response.json().await.expect("OCI error body");
    body["errors"][0]["code"].as_str().unwrap_or("").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pushes_to_a_hosted_repository_and_pulls_back_the_same_digests() {
    // A default upstream takes every name, except in the hosted namespace.
    let mirror = TestMirror::start(MirrorOptions {
        extra_toml: "[registry]\nhosted = [\"team\"]\n\n[[registry.upstream]]\nname = \"hub.test\"\nurl = \"http://127.0.0.1:9\"\ndefault = true\n".into(),
        ..MirrorOptions::default()
    })
    .await;
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(&work.path().join("layout"));
    let image = layout.image("amd64", &[(61, 3000), (62, 400_000)]);
    let amd64 = layout.image("amd64", &[(63, 1000)]);
    let arm64 = layout.image("arm64", &[(64, 1000)]);
    let multi = layout.index(&[("amd64", &amd64), ("arm64", &arm64)]);
    layout.tag("img", &image);
    layout.tag("multi", &multi);
    let certs = mirror.certs_d.display().to_string();
    let host = mirror.host_port();
    for (tag, repo, all) in [
        ("img", "team/app:v1", false),
        ("multi", "team/multi:v1", true),
    ] {
        let mut args = vec![
            "copy".to_owned(),
            "--dest-cert-dir".to_owned(),
            certs.clone(),
        ];
        if all {
            args.push("--all".to_owned());
        }
        args.push(format!("oci:{}:{tag}", layout.dir.display()));
        args.push(format!("docker://{host}/{repo}"));
        skopeo(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }
    for (repo, digest, all) in [
        ("team/app:v1", &image.digest, false),
        ("team/multi:v1", &multi.digest, true),
    ] {
        let out = work.path().join(repo.replace([':', '/'], "-"));
        std::fs::create_dir_all(&out).unwrap();
        let mut args = vec![
            "copy".to_owned(),
            "--src-cert-dir".to_owned(),
            certs.clone(),
        ];
        if all {
            args.push("--all".to_owned());
        }
        args.push(format!("docker://{host}/{repo}"));
        args.push(format!("oci:{}:t", out.display()));
        skopeo(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
        assert_eq!(index["manifests"][0]["digest"], json!(digest));
    }
    let catalog: serde_json::Value = mirror
        .with_cert()
        .get(mirror.url("/v2/_catalog"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(catalog["repositories"], json!(["team/app", "team/multi"]));
    mirror.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_made_pushes_follow_the_distribution_spec() {
    let mirror = TestMirror::start(MirrorOptions {
        extra_toml: "[[registry.upstream]]\nname = \"up.test\"\nurl = \"http://127.0.0.1:9\"\n"
            .into(),
        ..MirrorOptions::default()
    })
    .await;
    let client = mirror.with_cert();
    let url = |p: &str| mirror.url(p);

    // Chunked: POST, two PATCHes with Content-Range, PUT with the digest.
    let layer: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let layer_digest = sha(&layer);
    let started = client
        .post(url("/v2/team/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202);
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    let patched = client
        .patch(url(&location))
        .header("content-range", "0-99999")
        .body(layer[..100_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 202);
    assert_eq!(patched.headers()["range"], "0-99999");
    let wrong = client
        .patch(url(&location))
        .header("content-range", "5-10")
        .body(vec![0u8; 6])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 416);
    let patched = client
        .patch(url(&location))
        .header("content-range", "100000-299999")
        .body(layer[100_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 202);
    let put = client
        .put(url(&format!("{location}?digest={layer_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    assert_eq!(
        put.headers()["docker-content-digest"],
        layer_digest.as_str()
    );
    let got = client
        .get(url(&format!("/v2/team/app/blobs/{layer_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert!(got.bytes().await.unwrap() == layer);

    // Monolithic POST with the wrong digest: refused, nothing stored.
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let config_digest = sha(&config);
    let bad = client
        .post(url(&format!(
            "/v2/team/app/blobs/uploads/?digest={}",
            sha(b"other")
        )))
        .body(config.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(oci_code(bad).await, "DIGEST_INVALID");
    let posted = client
        .post(url(&format!(
            "/v2/team/app/blobs/uploads/?digest={config_digest}"
        )))
        .body(config.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 201);

    // A manifest naming a blob the repository lacks is refused.
    let manifest = |layer: &str| {
        json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len() },
            "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": 1 }],
        })
        .to_string()
    };
    let missing = client
        .put(url("/v2/team/app/manifests/v1"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest(&sha(b"absent")))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);
    assert_eq!(oci_code(missing).await, "MANIFEST_BLOB_UNKNOWN");
    let body = manifest(&layer_digest);
    let manifest_digest = sha(body.as_bytes());
    for tag in ["v1", "v2", "v3"] {
        let put = client
            .put(url(&format!("/v2/team/app/manifests/{tag}")))
            .header("content-type", OCI_MANIFEST)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 201);
        assert_eq!(
            put.headers()["docker-content-digest"],
            manifest_digest.as_str()
        );
    }

    // Tags page by `n` and `last`, with a Link to the next page.
    let page = client
        .get(url("/v2/team/app/tags/list?n=2"))
        .send()
        .await
        .unwrap();
    let link = page.headers()["link"].to_str().unwrap().to_owned();
    assert_eq!(link, "</v2/team/app/tags/list?n=2&last=v2>; rel=\"next\"");
    let tags: serde_json::Value = page.json().await.unwrap();
    assert_eq!(tags, json!({ "name": "team/app", "tags": ["v1", "v2"] }));
    let rest: serde_json::Value = client
        .get(url("/v2/team/app/tags/list?n=2&last=v2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rest["tags"], json!(["v3"]));

    // Cross-repository mount: no bytes sent.
    let mounted = client
        .post(url(&format!(
            "/v2/team/other/blobs/uploads/?mount={layer_digest}&from=team/app"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(mounted.status(), 201);
    let head = client
        .head(url(&format!("/v2/team/other/blobs/{layer_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "300000");
    // Blobs belong to repositories: a third one does not see it.
    let unseen = client
        .head(url(&format!("/v2/team/third/blobs/{layer_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(unseen.status(), 404);

    // Referrers: an artifact whose subject is the image, filtered by artifactType.
    let empty = b"{}".to_vec();
    let empty_digest = sha(&empty);
    let post = client
        .post(url(&format!(
            "/v2/team/app/blobs/uploads/?digest={empty_digest}"
        )))
        .body(empty)
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 201);
    let artifact = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.sbom",
        "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": empty_digest, "size": 2 },
        "layers": [{ "mediaType": "application/vnd.oci.empty.v1+json", "digest": empty_digest, "size": 2 }],
        "subject": { "mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": body.len() },
        "annotations": { "org.example": "yes" },
    })
    .to_string();
    let artifact_digest = sha(artifact.as_bytes());
    let put = client
        .put(url(&format!("/v2/team/app/manifests/{artifact_digest}")))
        .header("content-type", OCI_MANIFEST)
        .body(artifact.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    assert_eq!(put.headers()["oci-subject"], manifest_digest.as_str());
    let referrers = client
        .get(url(&format!("/v2/team/app/referrers/{manifest_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        referrers.headers()["content-type"],
        "application/vnd.oci.image.index.v1+json"
    );
    let index: serde_json::Value = referrers.json().await.unwrap();
    assert_eq!(index["manifests"][0]["digest"], json!(artifact_digest));
    assert_eq!(
        index["manifests"][0]["artifactType"],
        "application/vnd.example.sbom"
    );
    assert_eq!(index["manifests"][0]["annotations"]["org.example"], "yes");
    let filtered = client
        .get(url(&format!(
            "/v2/team/app/referrers/{manifest_digest}?artifactType=application/other"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(filtered.headers()["oci-filters-applied"], "artifactType");
    let index: serde_json::Value = filtered.json().await.unwrap();
    assert_eq!(index["manifests"], json!([]));

    // Catalog pagination, once a second repository has a manifest (its blobs mounted).
    let mounted = client
        .post(url(&format!(
            "/v2/team/other/blobs/uploads/?mount={config_digest}&from=team/app"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(mounted.status(), 201);
    let put = client
        .put(url("/v2/team/other/manifests/m"))
        .header("content-type", OCI_MANIFEST)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let page = client.get(url("/v2/_catalog?n=1")).send().await.unwrap();
    assert_eq!(
        page.headers()["link"],
        "</v2/_catalog?n=1&last=team%2Fapp>; rel=\"next\""
    );

    // Deletes: a tag, then the manifest (its other tags go with it).
    let deleted = client
        .delete(url("/v2/team/app/manifests/v3"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 202);
    let gone = client
        .get(url("/v2/team/app/manifests/v3"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    assert_eq!(oci_code(gone).await, "MANIFEST_UNKNOWN");
    let deleted = client
        .delete(url(&format!("/v2/team/app/manifests/{manifest_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 202);
    let gone = client
        .get(url("/v2/team/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);

    // Pushing into a mirrored repository is refused.
    let refused = client
        .post(url("/v2/up.test/team/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(oci_code(refused).await, "DENIED");
    mirror.stop().await;
}

/// A chunked push survives a restart of the server: the session, its bytes
/// and its hash state come back from the data dir; a chunk the process died
/// writing is dropped, and `Range` tells the client where to go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_push_resumes_after_a_restart() {
    let options = || MirrorOptions {
        extra_toml: "[[registry.upstream]]\nname = \"up.test\"\nurl = \"http://127.0.0.1:9\"\n"
            .into(),
        ..MirrorOptions::default()
    };
    let mirror = TestMirror::start(options()).await;
    let client = mirror.with_cert();
    let layer: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let layer_digest = sha(&layer);
    let started = client
        .post(mirror.url("/v2/team/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202);
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    let id = location.rsplit('/').next().unwrap().to_owned();
    let patched = client
        .patch(mirror.url(&location))
        .header("content-range", "0-1999999")
        .body(layer[..2_000_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 202);
    // A second session, of which only the repository will be asked wrongly.
    let other = client
        .post(mirror.url("/v2/team/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let other_location = other.headers()["location"].to_str().unwrap().to_owned();

    let (root, pki) = mirror.stop().await;
    // As if the process had died while writing the next chunk.
    let file = root.path().join("data/uploads").join(&id);
    let mut bytes = std::fs::read(&file).expect("the session's file outlives the process");
    assert_eq!(bytes.len(), 2_000_000);
    bytes.extend(std::iter::repeat_n(0xAB, 1_500_000));
    std::fs::write(&file, &bytes).unwrap();

    let mirror = TestMirror::start_with_pki(root, pki, options()).await;
    let client = mirror.with_cert();
    let status = client.get(mirror.url(&location)).send().await.unwrap();
    assert_eq!(status.status(), 204);
    assert_eq!(
        status.headers()["range"],
        "0-1999999",
        "the acknowledged bytes only"
    );
    let patched = client
        .patch(mirror.url(&location))
        .header("content-range", "2000000-2999999")
        .body(layer[2_000_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 202);
    assert_eq!(patched.headers()["range"], "0-2999999");
    let put = client
        .put(mirror.url(&format!("{location}?digest={layer_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201, "the resumed hash covers every byte");
    let got = client
        .get(mirror.url(&format!("/v2/team/app/blobs/{layer_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert!(got.bytes().await.unwrap() == layer);

    // Another repository, or an id that is no session, gets no session.
    let elsewhere = other_location.replace("/team/app/", "/team/other/");
    let wrong_repo = client.get(mirror.url(&elsewhere)).send().await.unwrap();
    assert_eq!(wrong_repo.status(), 404);
    assert_eq!(oci_code(wrong_repo).await, "BLOB_UPLOAD_UNKNOWN");
    let made_up = client
        .get(mirror.url("/v2/team/app/blobs/uploads/..%2f..%2fmirror.db"))
        .send()
        .await
        .unwrap();
    assert_eq!(made_up.status(), 404);
    // The finished session left nothing behind; the open one is still there.
    let cancelled = client
        .delete(mirror.url(&other_location))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 204);
    let left: Vec<_> = std::fs::read_dir(mirror.root.path().join("data/uploads"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "upload files left: {left:?}");
    mirror.stop().await;
}

/// A small blob read once is kept in memory: its later hits open no file
/// (removing the file behind the server's back shows it), answer GET, Range
/// and HEAD with the same headers, stay within the repository that holds the
/// blob, and end with the blob's DELETE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_blob_once_read_is_served_from_memory_until_deleted() {
    let mirror = TestMirror::start(MirrorOptions::default()).await;
    let client = mirror.with_cert();
    let blob = b"a small layer, read whole once and then kept".to_vec();
    let digest = sha(&blob);
    let posted = client
        .post(mirror.url(&format!("/v2/team/app/blobs/uploads/?digest={digest}")))
        .body(blob.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 201);
    let blob_url = mirror.url(&format!("/v2/team/app/blobs/{digest}"));
    let first = client.get(&blob_url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(first.bytes().await.unwrap() == blob);

    let hex = &digest["sha256:".len()..];
    let file = mirror
        .root
        .path()
        .join("data/blobs/sha256")
        .join(&hex[..2])
        .join(hex);
    std::fs::remove_file(&file).unwrap();
    let again = client.get(&blob_url).send().await.unwrap();
    assert_eq!(again.status(), 200, "served from memory, not from {file:?}");
    let length = blob.len().to_string();
    for (name, value) in [
        ("docker-content-digest", digest.clone()),
        ("etag", format!("\"{digest}\"")),
        ("content-length", length.clone()),
        ("content-type", "application/octet-stream".to_owned()),
        ("accept-ranges", "bytes".to_owned()),
    ] {
        assert_eq!(again.headers()[name], value.as_str(), "{name}");
    }
    assert!(again.bytes().await.unwrap() == blob);
    let ranged = client
        .get(&blob_url)
        .header("range", "bytes=2-6")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), 206);
    assert_eq!(
        ranged.headers()["content-range"],
        format!("bytes 2-6/{}", blob.len()).as_str()
    );
    assert!(ranged.bytes().await.unwrap() == blob[2..7]);
    let head = client.head(&blob_url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], length.as_str());

    let elsewhere = client
        .get(mirror.url(&format!("/v2/team/other/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 404, "only the repository that holds it");
    let deleted = client.delete(&blob_url).send().await.unwrap();
    assert_eq!(deleted.status(), 202);
    let after = client.get(&blob_url).send().await.unwrap();
    assert_eq!(after.status(), 404, "a delete forgets the kept bytes");
    assert_eq!(oci_code(after).await, "BLOB_UNKNOWN");
    mirror.stop().await;
}
