//! The clients users run, against a cluster of `mirror serve` replicas on one
//! PostgreSQL and one Garage bucket: `go mod download` and `skopeo copy`
//! through different replicas in one run, a skopeo push spread over the
//! replicas by a round-robin balancer and pulled back from another, and an
//! eviction by the upkeep leader while another replica streams the blob.

mod common;

use std::path::Path;

use common::balancer::RoundRobin;
use common::cluster::{Cluster, LIMIT, blob_rows};
use common::garage::Garage;
use common::go::{GoEnv, GoVersion, StaticProxy, standard_modules, write_tree};
use common::postgres::Postgres;
use common::process::skopeo;
use common::registry::layout::{Built, Layout};
use common::registry::proxy::Proxy;
use common::registry::{Auth, DockerRegistry};
use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};

async fn engines() -> (Postgres, Garage) {
    let postgres = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let garage = tokio::task::spawn_blocking(Garage::start).await.unwrap();
    (postgres, garage)
}

/// `skopeo copy` of `reference` from the replica (or balancer) at
/// `host_port` into an OCI layout at `out`; its manifest digest.
fn pull(cluster: &Cluster, host_port: &str, reference: &str, out: &Path) -> String {
    let certs = cluster.certs_d().display().to_string();
    let src = format!("docker://{host_port}/{reference}");
    let dest = format!("oci:{}:t", out.display());
    skopeo(&["copy", "--src-cert-dir", &certs, &src, &dest]);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).expect("index.json"))
            .expect("index.json is JSON");
    index["manifests"][0]["digest"]
        .as_str()
        .expect("a manifest digest")
        .to_owned()
}

/// Every blob of `image` in the pulled layout `out`, byte for byte as built.
fn assert_same_blobs(image: &Built, built: &Layout, out: &Path) {
    let blobs = image
        .layers
        .iter()
        .chain(image.config.iter())
        .map(|blob| blob.digest.trim_start_matches("sha256:").to_owned());
    for hex in blobs {
        let pulled = std::fs::read(out.join("blobs/sha256").join(&hex)).expect("pulled blob");
        let original = std::fs::read(built.dir.join("blobs/sha256").join(&hex)).expect("built");
        assert!(pulled == original, "blob {hex} differs");
    }
}

/// A docker-registry holding `image` as `team/app:v1`, behind a counting proxy.
async fn upstream_with(layers: &[(u64, u64)]) -> (DockerRegistry, Proxy, Layout, Built) {
    let registry = DockerRegistry::start(Auth::None);
    let work = tempfile::tempdir().unwrap().keep();
    let mut layout = Layout::new(&work.join("layout"));
    let image = layout.image("amd64", layers);
    layout.tag("v1", &image);
    layout.push("v1", &format!("{}/team/app:v1", registry.addr), &[]);
    let proxy = Proxy::start(&registry.url()).await;
    (registry, proxy, layout, image)
}

/// An htpasswd file with alice's password, for `go` (GOPROXY carries it).
fn htpasswd(dir: &Path) -> String {
    let path = dir.join("htpasswd");
    let hash = bcrypt::hash(common::PASSWORD, 4).unwrap();
    std::fs::write(&path, format!("{}:{hash}\n", common::USER)).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_mod_download_and_skopeo_copy_through_two_replicas_in_one_run() {
    let (postgres, garage) = engines().await;
    let tree = tempfile::tempdir().unwrap();
    write_tree(tree.path(), &standard_modules());
    let goproxy = StaticProxy::start(tree.path()).await;
    let (_registry, proxy, layout, image) = upstream_with(&[(71, 3 << 20), (72, 200_000)]).await;
    let secrets = tempfile::tempdir().unwrap();
    let extra = format!(
        "[auth]\nhtpasswd = \"{}\"\n\n[go]\nupstream = \"{}\"\nsumdb = []\nverify = \"off\"\n",
        htpasswd(secrets.path()),
        goproxy.url()
    );
    let cluster = Cluster::start(2, &postgres, &garage, &proxy.url(), &extra).await;
    let ca = cluster.dir.path().join("pki/ca.crt");
    let modules = [
        "example.com/greet@v1.2.0",
        "example.com/Upper/Mod@v1.0.1",
        "example.com/greet/v2@v2.1.0",
        "example.com/deps@v1.0.0",
    ];
    let download = |replica: usize| {
        let go = GoEnv::for_proxy(&cluster.host_port(replica), ca.clone(), GoVersion::Go119);
        async move {
            let dir = go.work_dir("outside");
            let mut args = vec!["mod", "download", "-json"];
            args.extend(modules);
            let json = go.ok(&dir, &args).await;
            assert!(!json.contains("\"Error\""), "{json}");
            assert_eq!(json.matches("\"Zip\"").count(), modules.len(), "{json}");
            json
        }
    };
    let copy = |replica: usize| {
        let out = tempfile::tempdir().unwrap();
        let host_port = cluster.host_port(replica);
        let digest = tokio::task::block_in_place(|| {
            pull(&cluster, &host_port, "up.test/team/app:v1", out.path())
        });
        (out, digest)
    };

    // Go through the first replica while skopeo pulls through the second...
    let (first_go, (first_out, first_digest)) = tokio::join!(download(0), async { copy(1) });
    assert_eq!(first_digest, image.digest);
    assert_same_blobs(&image, &layout, first_out.path());
    // ... then the other way round: each is a hit on the replica that did
    // not fetch it, and upstream saw every object once.
    let (second_go, (second_out, second_digest)) = tokio::join!(download(1), async { copy(0) });
    assert_eq!(second_digest, image.digest);
    assert_same_blobs(&image, &layout, second_out.path());
    let sums = |json: &str| -> Vec<String> {
        json.lines()
            .filter(|line| line.contains("\"Sum\""))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(sums(&first_go), sums(&second_go), "the same module hashes");
    for module in [
        "example.com/greet/@v/v1.2.0.zip",
        "/example.com/deps/@v/v1.0.0.zip",
    ] {
        assert_eq!(
            goproxy.count(module),
            1,
            "{module} fetched once: {:?}",
            goproxy.requests()
        );
    }
    for layer in &image.layers {
        let fetches = proxy.count("GET", &format!("/blobs/{}", layer.digest));
        assert_eq!(fetches, 1, "layer {} fetched once", layer.digest);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skopeo_push_spread_by_a_round_robin_balancer_pulls_back_identical_from_another_replica()
{
    let (postgres, garage) = engines().await;
    let cluster = Cluster::start(3, &postgres, &garage, "https://127.0.0.1:9", "").await;
    let balancer = RoundRobin::start(cluster.replicas.iter().map(|r| r.port).collect()).await;
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(&work.path().join("layout"));
    let image = layout.image(
        "amd64",
        &[(41, 12 << 20), (42, 6 << 20), (43, 300_000), (44, 2 << 20)],
    );
    layout.tag("v1", &image);
    let certs = cluster.certs_d().display().to_string();
    tokio::task::block_in_place(|| {
        skopeo(&[
            "copy",
            "--dest-cert-dir",
            &certs,
            &format!("oci:{}:v1", layout.dir.display()),
            &format!("docker://{}/team/rr:v1", balancer.host_port()),
        ])
    });
    let used = balancer.backends_used();
    assert!(
        used >= 2,
        "skopeo's connections went to {used} replica(s): {:?}",
        balancer.connections
    );

    // Every replica serves the push, whichever took which part of it.
    for replica in 0..3 {
        let out = tempfile::tempdir().unwrap();
        let host_port = cluster.host_port(replica);
        let digest =
            tokio::task::block_in_place(|| pull(&cluster, &host_port, "team/rr:v1", out.path()));
        assert_eq!(
            digest, image.digest,
            "from {}",
            cluster.replicas[replica].name
        );
        assert_same_blobs(&image, &layout, out.path());
    }
}

/// The replica leading upkeep, from the replicas' logs.
async fn leader(cluster: &Cluster) -> usize {
    let mut found = None;
    common::wait_for("an upkeep leader", LIMIT, || {
        found = (0..cluster.replicas.len())
            .find(|&r| cluster.log(r).contains("this process leads upkeep"));
        std::future::ready(found.is_some())
    })
    .await;
    found.unwrap()
}

/// GETs a blob whole; its sha256.
async fn get_blob(cluster: &Cluster, replica: usize, digest: &str) -> String {
    let url = format!(
        "{}/v2/up.test/team/app/blobs/{digest}",
        cluster.origin(replica)
    );
    let response = cluster.client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200, "GET {url}");
    let body = response.bytes().await.unwrap();
    format!("sha256:{}", hex::encode(Sha256::digest(&body)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eviction_by_the_leader_leaves_a_slow_stream_on_another_replica_whole() {
    let (postgres, garage) = engines().await;
    let (_registry, proxy, _layout, image) = upstream_with(&[(51, 32 << 20), (52, 32 << 20)]).await;
    let (evicted, filler) = (&image.layers[0], &image.layers[1]);
    // Room for one of the two layers: the second's fill evicts the first.
    let extra = "[cache]\nmax_size = \"48MiB\"\n";
    let cluster = Cluster::start(3, &postgres, &garage, &proxy.url(), extra).await;
    let leader = leader(&cluster).await;
    let reader = (leader + 1) % 3;
    assert_eq!(
        get_blob(&cluster, reader, &evicted.digest).await,
        evicted.digest
    );

    // A client of another replica reads a little, then stalls.
    let url = format!(
        "{}/v2/up.test/team/app/blobs/{}",
        cluster.origin(reader),
        evicted.digest
    );
    let response = cluster.client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let (mut hasher, mut len) = (Sha256::new(), 0u64);
    while len < 1 << 20 {
        let chunk = body.next().await.expect("more body").expect("a chunk");
        hasher.update(&chunk);
        len += chunk.len() as u64;
    }

    // The leader fills the other layer and evicts the one being read.
    assert_eq!(
        get_blob(&cluster, leader, &filler.digest).await,
        filler.digest
    );
    common::wait_for("the leader evicts the first layer", LIMIT, || async {
        blob_rows(&postgres, &evicted.digest).await == 0
    })
    .await;
    assert!(
        cluster
            .log(leader)
            .contains("evicted least-recently-used content"),
        "{}",
        cluster.log(leader)
    );

    // The stalled stream goes on from the object, which outlives its row.
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap_or_else(|error| panic!("cut off after {len} bytes: {error}"));
        hasher.update(&chunk);
        len += chunk.len() as u64;
    }
    assert_eq!(len, evicted.size);
    assert_eq!(
        format!("sha256:{}", hex::encode(hasher.finalize())),
        evicted.digest
    );

    // The next GET anywhere is a miss again, and refills from upstream.
    let before = proxy.count("GET", &format!("/blobs/{}", evicted.digest));
    let elsewhere = (leader + 2) % 3;
    assert_eq!(
        get_blob(&cluster, elsewhere, &evicted.digest).await,
        evicted.digest
    );
    assert_eq!(
        proxy.count("GET", &format!("/blobs/{}", evicted.digest)),
        before + 1,
        "refilled from upstream"
    );
    assert_eq!(blob_rows(&postgres, &evicted.digest).await, 1);
}
