//! Tests that need an upstream that is not on loopback: each runs again inside
//! a network namespace it creates (and removes), whose loopback interface
//! carries a "public" address for the upstream and for object storage
//! (documentation ranges, routed nowhere), a private 10.77/16 pair and the
//! link-local metadata address, and whose `/etc/hosts` (bind-mounted by
//! `ip netns exec`) gives them names, among them a name resolving to 127.0.0.1.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;

use super::common::process::{run, text, tool};
use super::hostile::{self, Content, Hostile, Reply, TestCa, handler};
use super::{expected, get, logs, mirror_with};

const CHILD: &str = "MIRROR_TEST_NETNS";

const HOSTS: &[(&str, &str)] = &[
    ("registry.test", "203.0.113.10"),
    ("storage.test", "198.51.100.7"),
    ("internal.test", "10.77.0.1"),
    ("internal2.test", "10.77.0.2"),
    ("sneaky.test", "127.0.0.1"),
    ("metadata.test", "169.254.169.254"),
];

/// A namespace and its hosts file, removed when dropped.
struct Namespace {
    name: String,
}

impl Namespace {
    fn create(name: &str) -> Namespace {
        let ip = tool("ip");
        let namespace = Namespace {
            name: name.to_owned(),
        };
        let ok = |args: &[&str]| {
            let output = run(Command::new(&ip).args(args), Duration::from_secs(30));
            assert!(output.status.success(), "ip {args:?}: {}", text(&output));
        };
        let added = run(
            Command::new(&ip).args(["netns", "add", name]),
            Duration::from_secs(30),
        );
        assert!(
            added.status.success(),
            "creating network namespace {name} needs root (CAP_SYS_ADMIN), as scripts/test.sh runs \
             the tests: {}",
            text(&added)
        );
        ok(&["netns", "exec", name, "ip", "link", "set", "lo", "up"]);
        for (_, address) in HOSTS {
            ok(&[
                "netns",
                "exec",
                name,
                "ip",
                "addr",
                "add",
                &format!("{address}/32"),
                "dev",
                "lo",
            ]);
        }
        let dir = namespace.etc();
        std::fs::create_dir_all(&dir).expect("/etc/netns dir");
        let mut hosts = String::from("127.0.0.1 localhost\n::1 localhost\n");
        for (host, address) in HOSTS {
            hosts.push_str(&format!("{address} {host}\n"));
        }
        std::fs::write(dir.join("hosts"), hosts).expect("netns hosts file");
        namespace
    }

    fn etc(&self) -> std::path::PathBuf {
        std::path::Path::new("/etc/netns").join(&self.name)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new(tool("ip"))
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(self.etc());
    }
}

/// Runs `scenario` inside a fresh namespace: this process starts itself again
/// there, running only `test` (its full name), and fails if that run fails.
fn in_namespace<F>(test: &str, scenario: impl FnOnce() -> F)
where
    F: Future<Output = ()>,
{
    if std::env::var_os(CHILD).is_some() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        return runtime.block_on(scenario());
    }
    let short = test.rsplit("::").next().unwrap_or(test);
    let name = format!(
        "mt-{}-{}",
        std::process::id(),
        &short[..short.len().min(12)]
    );
    let namespace = Namespace::create(&name);
    let exe = std::env::current_exe().expect("test binary");
    let mut command = Command::new(tool("ip"));
    command
        .args(["netns", "exec", &namespace.name])
        .arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, &namespace.name);
    let output = run(&mut command, Duration::from_secs(300));
    let shown = text(&output);
    assert!(output.status.success(), "inside {name}: {shown}");
    assert!(
        shown.contains("1 passed"),
        "the test ran inside {name}: {shown}"
    );
}

fn url(server: &Hostile, host: &str) -> String {
    server.url_as(host)
}

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
/// (`/x` + the path), after a Basic challenge when `password` is set.
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
                (k.layer.clone(), url(&storage, "storage.test")),
                (k.zip.clone(), url(&storage, "storage.test")),
                (k.config.clone(), url(&sneaky, "sneaky.test")),
                (k.manifest.clone(), format!("https://127.0.0.1:{port}")),
                (k.list.clone(), format!("https://[::ffff:127.0.0.1]:{port}")),
                (k.info.clone(), url(&internal, "internal.test")),
                (k.go_mod.clone(), url(&internal, "10.77.0.1")),
                (k.lookup.clone(), url(&metadata, "metadata.test")),
            ];
            let routes = targets.clone();
            let registry = redirecting(
                &ca,
                "203.0.113.10",
                &["registry.test"],
                Some(super::basic(super::UPSTREAM_USER, super::UPSTREAM_PASSWORD)),
                move |path| {
                    routes
                        .iter()
                        .find(|(mirror_path, _)| is(path, mirror_path))
                        .map_or("https://nowhere.test".into(), |(_, to)| to.clone())
                },
            )
            .await;
            let base = url(&registry, "registry.test");
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

            for (path, _) in &targets {
                let (status, body) = get(&mirror, path).await;
                if *path == k.layer || *path == k.zip {
                    assert_eq!(status, StatusCode::OK, "{path}: {body:?}");
                    assert_eq!(body, expected(&content, path), "{path}");
                } else {
                    assert_eq!(status, StatusCode::BAD_GATEWAY, "{path}: {body:?}");
                }
            }
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
            let probe = format!("{}/x{}", url(&sneaky, "sneaky.test"), k.config);
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
                (k.layer.clone(), url(&neighbour, "10.77.0.2")),
                (k.zip.clone(), url(&neighbour, "internal2.test")),
                (k.config.clone(), url(&sneaky, "sneaky.test")),
                (k.info.clone(), url(&sneaky, "127.0.0.1")),
                (k.manifest.clone(), url(&metadata, "metadata.test")),
            ];
            let routes = targets.clone();
            let registry = redirecting(&ca, "10.77.0.1", &["internal.test"], None, move |path| {
                routes
                    .iter()
                    .find(|(mirror_path, _)| is(path, mirror_path))
                    .map_or("https://nowhere.test".into(), |(_, to)| to.clone())
            })
            .await;
            let base = url(&registry, "internal.test");
            let mirror = mirror_with(super::upstream_toml(&base, &base, Some(&ca_file), "")).await;

            for (path, _) in &targets {
                let (status, body) = get(&mirror, path).await;
                if *path == k.layer || *path == k.zip {
                    assert_eq!(status, StatusCode::OK, "{path}: {body:?}");
                    assert_eq!(body, expected(&content, path), "{path}");
                } else {
                    assert_eq!(status, StatusCode::BAD_GATEWAY, "{path}: {body:?}");
                }
            }
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
                format!("{}/token", url(&metadata, "metadata.test")),
                format!("{}/token", url(&metadata, "169.254.169.254")),
                format!("{}/token", url(&cleartext, "registry.test")),
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
                    url(&registry, "registry.test"),
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
