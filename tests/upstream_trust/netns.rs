//! Tests that need an upstream that is not on loopback: each runs again inside
//! a network namespace it creates (and removes), whose loopback interface
//! carries a "public" address for the upstream and for object storage
//! (documentation ranges, routed nowhere), a private 10.77/16 pair and the
//! link-local metadata address, and whose `/etc/hosts` (bind-mounted by
//! `ip netns exec`) gives them names, among them a name resolving to 127.0.0.1.

use std::sync::Arc;

use bytes::Bytes;
use reqwest::StatusCode;

use super::hostile::{self, Content, Hostile, Reply, TestCa, handler};
use super::namespace::in_namespace;
use super::{expected, get, logs, mirror_with};

/// An https server on `address` for `names`, serving `Content` under any prefix.
async fn serving(ca: &TestCa, address: &str, names: &[&str], content: Arc<Content>) -> Hostile {
    Hostile::https(
        &format!("{address}:0"),
        ca.server_config(names),
        handler(move |seen| {
            let path = seen.path.split_once("/x").map_or("", |(_, rest)| rest);
            content.serve(path).unwrap_or(Reply::Status(404))
        }),
    )
    .await
}

/// An upstream whose every answer is a redirect to where `route` says
/// (`/x` + the path), after a Basic challenge for `/v2/` when `credentials` is set.
async fn redirecting(
    ca: &TestCa,
    address: &str,
    names: &[&str],
    credentials: Option<String>,
    route: impl Fn(&str) -> String + Send + Sync + 'static,
) -> Hostile {
    Hostile::https(
        &format!("{address}:0"),
        ca.server_config(names),
        handler(move |seen| {
            if let Some(expected) = &credentials
                && seen.authorization.as_deref() != Some(expected.as_str())
                && seen.path.starts_with("/v2/")
            {
                return Reply::Challenge("Basic realm=\"hostile\"".into());
            }
            Reply::Redirect(format!("{}/x{}", route(&seen.path), seen.path))
        }),
    )
    .await
}

struct Kinds {
    list: String,
    info: String,
    go_mod: String,
    zip: String,
    lookup: String,
    manifest: String,
    config: String,
    layer: String,
}

fn kinds(content: &Content) -> Kinds {
    let paths = super::every_path(content);
    Kinds {
        list: paths[0].clone(),
        info: paths[1].clone(),
        go_mod: paths[2].clone(),
        zip: paths[3].clone(),
        lookup: paths[4].clone(),
        manifest: paths[5].clone(),
        config: paths[6].clone(),
        layer: paths[7].clone(),
    }
}

/// Where each mirror path of `targets` is sent: `(mirror path, target base URL)`.
fn router(targets: &[(String, String)]) -> impl Fn(&str) -> String + Send + Sync + 'static {
    let targets = targets.to_vec();
    move |path| {
        targets
            .iter()
            .find(|(mirror_path, _)| is(path, mirror_path))
            .map_or("https://nowhere.test".into(), |(_, to)| to.clone())
    }
}

/// Asks the mirror for every path of `targets`: those in `followed` come
/// through whole, the rest are refused with 502.
async fn expect_followed_only(
    mirror: &super::common::TestMirror,
    content: &Content,
    targets: &[(String, String)],
    followed: &[&String],
) {
    for (path, _) in targets {
        let (status, body) = get(mirror, path).await;
        if followed.contains(&path) {
            assert_eq!(status, StatusCode::OK, "{path}: {body:?}");
            assert_eq!(body, expected(content, path), "{path}");
        } else {
            assert_eq!(status, StatusCode::BAD_GATEWAY, "{path}: {body:?}");
        }
    }
}

/// Where the path of an upstream request (`/…` as the upstream sees it) matches a mirror path.
fn is(upstream_path: &str, mirror_path: &str) -> bool {
    let mirror_path = mirror_path
        .replacen("/v2/up.test/", "/v2/", 1)
        .replace(&format!("/sumdb/{}", super::SUMDB), "/sumdb");
    upstream_path.split('?').next() == Some(mirror_path.as_str())
}

#[test]
fn a_public_upstream_reaches_public_storage_and_no_internal_address() {
    in_namespace(
        "netns::a_public_upstream_reaches_public_storage_and_no_internal_address",
        || async {
            let logs = logs();
            let content = Arc::new(Content::new());
            let (ca, _dir, ca_file) = super::temp_ca();
            let storage = serving(&ca, "198.51.100.7", &["storage.test"], content.clone()).await;
            let names = ["sneaky.test", "127.0.0.1", "::ffff:127.0.0.1", "::1"];
            let sneaky = serving(&ca, "[::]", &names, content.clone()).await;
            let internal = serving(
                &ca,
                "10.77.0.1",
                &["internal.test", "10.77.0.1"],
                content.clone(),
            )
            .await;
            let metadata = serving(
                &ca,
                "169.254.169.254",
                &["metadata.test", "169.254.169.254"],
                content.clone(),
            )
            .await;
            let k = kinds(&content);
            let port = sneaky.addr.port();
            let targets: Vec<(String, String)> = vec![
                (k.layer.clone(), storage.url_as("storage.test")),
                (k.zip.clone(), storage.url_as("storage.test")),
                (k.config.clone(), sneaky.url_as("sneaky.test")),
                (k.manifest.clone(), format!("https://127.0.0.1:{port}")),
                (k.list.clone(), format!("https://[::ffff:127.0.0.1]:{port}")),
                (k.info.clone(), internal.url_as("internal.test")),
                (k.go_mod.clone(), internal.url_as("10.77.0.1")),
                (k.lookup.clone(), metadata.url_as("metadata.test")),
            ];
            let registry = redirecting(
                &ca,
                "203.0.113.10",
                &["registry.test"],
                Some(super::basic(super::UPSTREAM_USER, super::UPSTREAM_PASSWORD)),
                router(&targets),
            )
            .await;
            let base = registry.url_as("registry.test");
            let go_base = base.replace(
                "https://",
                &format!(
                    "https://{}:{}@",
                    super::UPSTREAM_USER,
                    super::UPSTREAM_PASSWORD
                ),
            );
            let credentials = super::credentials_toml("");
            let toml = super::upstream_toml(&go_base, &base, Some(&ca_file), &credentials);
            let mirror = mirror_with(toml).await;

            expect_followed_only(&mirror, &content, &targets, &[&k.layer, &k.zip]).await;
            for seen in storage.seen() {
                assert_eq!(
                    seen.authorization, None,
                    "storage got a credential: {seen:?}"
                );
            }
            assert_eq!(storage.seen().len(), 2, "{:?}", storage.seen());
            for (name, server) in [
                ("loopback", &sneaky),
                ("private", &internal),
                ("link-local", &metadata),
            ] {
                assert_eq!(
                    server.connections(),
                    0,
                    "the {name} server was connected to"
                );
            }
            assert!(
                logs.lines_with(&[
                    "sneaky.test resolves only to addresses",
                    "127.0.0.1 (loopback)"
                ]) >= 1,
                "a name is refused for the address it resolves to"
            );
            // The refused servers were reachable: refusal, not a dead port, kept the mirror out.
            let direct = reqwest::Client::builder()
                .tls_certs_only([reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap()])
                .no_proxy()
                .build()
                .unwrap();
            let probe = format!("{}/x{}", sneaky.url_as("sneaky.test"), k.config);
            let answer = direct
                .get(&probe)
                .send()
                .await
                .expect("sneaky.test answers");
            assert_eq!(answer.status(), StatusCode::OK);
        },
    );
}

#[test]
fn an_internal_upstream_stays_on_its_own_kind_of_network() {
    in_namespace(
        "netns::an_internal_upstream_stays_on_its_own_kind_of_network",
        || async {
            let content = Arc::new(Content::new());
            let (ca, _dir, ca_file) = super::temp_ca();
            let neighbour = serving(
                &ca,
                "10.77.0.2",
                &["internal2.test", "10.77.0.2"],
                content.clone(),
            )
            .await;
            let sneaky = serving(
                &ca,
                "127.0.0.1",
                &["sneaky.test", "127.0.0.1"],
                content.clone(),
            )
            .await;
            let metadata =
                serving(&ca, "169.254.169.254", &["metadata.test"], content.clone()).await;
            let k = kinds(&content);
            let targets: Vec<(String, String)> = vec![
                (k.layer.clone(), neighbour.url_as("10.77.0.2")),
                (k.zip.clone(), neighbour.url_as("internal2.test")),
                (k.config.clone(), sneaky.url_as("sneaky.test")),
                (k.info.clone(), sneaky.url_as("127.0.0.1")),
                (k.manifest.clone(), metadata.url_as("metadata.test")),
            ];
            let registry =
                redirecting(&ca, "10.77.0.1", &["internal.test"], None, router(&targets)).await;
            let base = registry.url_as("internal.test");
            let mirror = mirror_with(super::upstream_toml(&base, &base, Some(&ca_file), "")).await;

            expect_followed_only(&mirror, &content, &targets, &[&k.layer, &k.zip]).await;
            assert_eq!(neighbour.seen().len(), 2, "{:?}", neighbour.seen());
            assert_eq!(sneaky.connections(), 0, "loopback was connected to");
            assert_eq!(metadata.connections(), 0, "link-local was connected to");
        },
    );
}

#[test]
fn token_realms_never_lead_into_internal_networks_or_cleartext() {
    in_namespace(
        "netns::token_realms_never_lead_into_internal_networks_or_cleartext",
        || async {
            let content = Arc::new(Content::new());
            let (ca, _dir, ca_file) = super::temp_ca();
            let token = || {
                handler(|_| {
                    Reply::Content(
                        "application/json",
                        Bytes::from_static(br#"{"token":"hostile-token"}"#),
                    )
                })
            };
            let metadata = Hostile::https(
                "169.254.169.254:0",
                ca.server_config(&["metadata.test", "169.254.169.254"]),
                token(),
            )
            .await;
            let cleartext = Hostile::http("203.0.113.10:0", token()).await;
            let realms = [
                format!("{}/token", metadata.url_as("metadata.test")),
                format!("{}/token", metadata.url_as("169.254.169.254")),
                format!("{}/token", cleartext.url_as("registry.test")),
            ];
            let mut registries = Vec::new();
            let mut toml = String::new();
            for (i, realm) in realms.iter().enumerate() {
                let (content, realm) = (content.clone(), realm.clone());
                let registry = Hostile::https(
                    "203.0.113.10:0",
                    ca.server_config(&["registry.test"]),
                    handler(move |seen| {
                        if seen.authorization.as_deref() == Some("Bearer hostile-token") {
                            return content.serve(&seen.path).unwrap_or(Reply::Status(404));
                        }
                        Reply::Challenge(format!("Bearer realm=\"{realm}\",service=\"s\""))
                    }),
                )
                .await;
                let credentials = if i == 2 {
                    format!(
                        "username = \"{}\"\npassword = \"{}\"\n",
                        super::UPSTREAM_USER,
                        super::UPSTREAM_PASSWORD
                    )
                } else {
                    String::new()
                };
                toml.push_str(&format!(
                    "[[registry.upstream]]\nname = \"r{i}.test\"\nurl = \"{}\"\nca = \"{}\"\n{credentials}\n",
                    registry.url_as("registry.test"),
                    ca_file.display()
                ));
                registries.push(registry);
            }
            let mirror = mirror_with(toml).await;

            for (i, realm) in realms.iter().enumerate() {
                let path = format!("/v2/r{i}.test/{}/manifests/{}", hostile::REPO, hostile::TAG);
                let (status, body) = get(&mirror, &path).await;
                assert_eq!(status, StatusCode::BAD_GATEWAY, "{realm}: {body:?}");
            }
            assert_eq!(metadata.connections(), 0, "a realm led to link-local");
            assert_eq!(
                cleartext.connections(),
                0,
                "credentials went out in cleartext"
            );
        },
    );
}
