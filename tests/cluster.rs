//! Three `mirror serve` processes, replicas of one cluster: one PostgreSQL,
//! one Garage bucket, one PKI, each with its own data dir and peer endpoint,
//! in front of one counting, throttled upstream. A cold blob is fetched from
//! upstream once for the whole cluster, and every replica's clients stream it
//! as it arrives; when the replica fetching it is killed, the others finish
//! it with verified bytes; a lying upstream gets no complete body anywhere.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::cluster::{Cluster, blob_rows};
use common::garage::Garage;
use common::postgres::Postgres;
use common::registry::layout::{Blob, Layout};
use common::registry::proxy::Proxy;
use common::registry::{Auth, DockerRegistry};
use futures_util::StreamExt;
use object_store::ObjectStore;
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

const LIMIT: Duration = common::cluster::LIMIT;

/// What one client saw of a GET.
struct Fetched {
    status: u16,
    /// sha256 and length of the body, or why it broke off.
    body: Result<(String, u64), String>,
    first_byte: Option<Instant>,
    finished: Instant,
}

/// Streams a GET, counting what arrives into `progress`.
async fn fetch(client: reqwest::Client, url: String, progress: Arc<AtomicU64>) -> Fetched {
    let response = match client.get(&url).send().await {
        Ok(response) => response,
        Err(error) => {
            return Fetched {
                status: 0,
                body: Err(error.to_string()),
                first_byte: None,
                finished: Instant::now(),
            };
        }
    };
    let status = response.status().as_u16();
    let mut stream = response.bytes_stream();
    let (mut hasher, mut len, mut first_byte) = (Sha256::new(), 0u64, None);
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                first_byte.get_or_insert_with(Instant::now);
                hasher.update(&chunk);
                len += chunk.len() as u64;
                progress.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            Err(error) => {
                return Fetched {
                    status,
                    body: Err(format!("{error} after {len} bytes")),
                    first_byte,
                    finished: Instant::now(),
                };
            }
        }
    }
    Fetched {
        status,
        body: Ok((format!("sha256:{}", hex::encode(hasher.finalize())), len)),
        first_byte,
        finished: Instant::now(),
    }
}

/// An upstream registry holding one image with a `size`-byte layer, behind a
/// counting proxy.
async fn upstream_with_layer(seed: u64, size: u64) -> (DockerRegistry, Proxy, Blob) {
    let registry = DockerRegistry::start(Auth::None);
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(work.path());
    let image = layout.image("amd64", &[(seed, size)]);
    layout.tag("v1", &image);
    layout.push("v1", &format!("{}/team/fill:v1", registry.addr), &[]);
    let proxy = Proxy::start(&registry.url()).await;
    (registry, proxy, image.layers[0].clone())
}

async fn engines() -> (Postgres, Garage) {
    let postgres = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let garage = tokio::task::spawn_blocking(Garage::start).await.unwrap();
    (postgres, garage)
}

/// `per_replica` clients on each replica, all at once.
fn clients(
    cluster: &Cluster,
    replicas: &[usize],
    per_replica: usize,
    digest: &str,
    progress: &Arc<AtomicU64>,
) -> Vec<(usize, tokio::task::JoinHandle<Fetched>)> {
    let mut tasks = Vec::new();
    for &replica in replicas {
        for _ in 0..per_replica {
            let url = cluster.blob_url(replica, digest);
            let task = tokio::spawn(fetch(cluster.client.clone(), url, progress.clone()));
            tasks.push((replica, task));
        }
    }
    tasks
}

async fn fill_owner(postgres: &Postgres, key: &str) -> Option<String> {
    let pool = sqlx::PgPool::connect(&postgres.url()).await.unwrap();
    let owner: Option<(String,)> = sqlx::query_as("SELECT owner FROM fills WHERE key = $1")
        .bind(key)
        .fetch_optional(&pool)
        .await
        .unwrap();
    pool.close().await;
    owner.map(|(owner,)| owner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_clients_on_three_replicas_get_one_upstream_fetch_streamed_to_all() {
    let (postgres, garage) = engines().await;
    let (_registry, proxy, layer) = upstream_with_layer(81, 64 << 20).await;
    // About four seconds upstream: long enough that every client joins the fill in flight.
    proxy.throttle(Some(16 << 20));
    let cluster = Cluster::start(3, &postgres, &garage, &proxy.url(), "").await;

    let progress = Arc::new(AtomicU64::new(0));
    let tasks = clients(&cluster, &[0, 1, 2], 10, &layer.digest, &progress);
    let mut fetched = Vec::new();
    for (replica, task) in tasks {
        let result = task.await.unwrap();
        assert_eq!(
            (result.status, result.body.as_ref().ok()),
            (200, Some(&(layer.digest.clone(), layer.size))),
            "a client of {}: {:?}\n{}",
            cluster.replicas[replica].name,
            result.body,
            cluster.log(replica)
        );
        fetched.push(result);
    }
    assert_eq!(
        proxy.count("GET", &format!("/blobs/{}", layer.digest)),
        1,
        "one upstream GET for 30 clients on 3 replicas: {:?}",
        proxy.seen()
    );
    // Streamed as it arrived, on every replica: each client had its first
    // byte before any client had its last.
    let first_done = fetched.iter().map(|f| f.finished).min().unwrap();
    let last_first_byte = fetched.iter().filter_map(|f| f.first_byte).max().unwrap();
    assert!(
        last_first_byte < first_done,
        "some client got its first byte only after another had the whole blob"
    );
    let stored = garage
        .client()
        .list(None)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .filter(|o| {
            o.as_ref()
                .is_ok_and(|o| o.location.as_ref().contains(&layer.digest[7..]))
        })
        .count();
    assert_eq!(stored, 1, "one object for the blob in the bucket");
    assert_eq!(blob_rows(&postgres, &layer.digest).await, 1);
    assert_eq!(
        fill_owner(&postgres, &format!("oci:{}", layer.digest)).await,
        None,
        "the lease is released"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_replica_filling_is_killed_the_others_finish_with_verified_bytes() {
    let (postgres, garage) = engines().await;
    let (_registry, proxy, layer) = upstream_with_layer(82, 32 << 20).await;
    proxy.throttle(Some(4 << 20));
    let cluster = Cluster::start(3, &postgres, &garage, &proxy.url(), "").await;
    let key = format!("oci:{}", layer.digest);

    // The first client's replica claims the fill; the others follow it.
    let progress = Arc::new(AtomicU64::new(0));
    let first = clients(&cluster, &[0], 1, &layer.digest, &progress);
    common::wait_for("the fill's lease", LIMIT, || async {
        fill_owner(&postgres, &key).await.is_some()
    })
    .await;
    let owner_name = fill_owner(&postgres, &key).await.unwrap();
    let owner = cluster
        .replicas
        .iter()
        .position(|r| r.name == owner_name)
        .unwrap();
    let survivors: Vec<usize> = (0..3).filter(|&r| r != owner).collect();
    let followers = clients(&cluster, &survivors, 3, &layer.digest, &progress);
    // About half way: 7 clients, each half through its 32 MiB.
    common::wait_for("half the blob", LIMIT, || async {
        progress.load(Ordering::Relaxed) > 7 * (16 << 20)
    })
    .await;
    cluster.replicas[owner].process.signal("KILL");

    for (replica, task) in followers {
        let result = task.await.unwrap();
        assert_eq!(
            (result.status, result.body.as_ref().ok()),
            (200, Some(&(layer.digest.clone(), layer.size))),
            "a client of surviving {}: {:?}\n{}",
            cluster.replicas[replica].name,
            result.body,
            cluster.log(replica)
        );
    }
    for (_, task) in first {
        // Its replica is gone: whatever it got, never a complete wrong body.
        let result = task.await.unwrap();
        if let Ok((digest, len)) = &result.body
            && *len == layer.size
        {
            assert_eq!(digest, &layer.digest);
        }
    }
    assert!(
        survivors
            .iter()
            .any(|&r| cluster.log(r).contains("took over a fill")),
        "a survivor took the fill over:\n{}",
        survivors
            .iter()
            .map(|&r| cluster.log(r))
            .collect::<String>()
    );
    let fetches = proxy.count("GET", &format!("/blobs/{}", layer.digest));
    assert!(
        (1..=2).contains(&fetches),
        "at most one extra upstream request: {fetches}: {:?}",
        proxy.seen()
    );
    assert_eq!(blob_rows(&postgres, &layer.digest).await, 1);
    common::wait_for("no unfinished multipart upload", LIMIT, || async {
        garage.unfinished_multipart_uploads().await == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_upstream_gets_no_complete_body_on_any_replica_and_nothing_stored() {
    let (postgres, garage) = engines().await;
    let (_registry, proxy, layer) = upstream_with_layer(83, 8 << 20).await;
    proxy.corrupt_blob(&layer.digest);
    proxy.throttle(Some(8 << 20));
    let cluster = Cluster::start(3, &postgres, &garage, &proxy.url(), "").await;
    let progress = Arc::new(AtomicU64::new(0));
    for (replica, task) in clients(&cluster, &[0, 1, 2], 3, &layer.digest, &progress) {
        let result = task.await.unwrap();
        let complete = result.status == 200
            && result
                .body
                .as_ref()
                .is_ok_and(|(_, len)| *len == layer.size);
        assert!(
            !complete,
            "a client of {} got a complete body of bad bytes: {:?}",
            cluster.replicas[replica].name, result.body
        );
    }
    assert_eq!(blob_rows(&postgres, &layer.digest).await, 0, "no row");
    let objects = garage
        .client()
        .list(None)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .filter(|o| {
            o.as_ref()
                .is_ok_and(|o| o.location.as_ref().contains(&layer.digest[7..]))
        })
        .count();
    assert_eq!(objects, 0, "no object");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_endpoint_admits_replicas_only() {
    let (postgres, garage) = engines().await;
    let cluster = Cluster::start(1, &postgres, &garage, "https://127.0.0.1:9", "").await;
    let url = format!("https://127.0.0.1:{}/fills/00", cluster.replicas[0].peer);
    // alice's certificate is good on the main port, not here.
    let refused = cluster.client.get(&url).send().await;
    assert!(
        refused.is_err(),
        "a user's certificate on the peer endpoint: {refused:?}"
    );
    let read = |name: &str| std::fs::read(cluster.dir.path().join(name)).unwrap();
    let ca = reqwest::Certificate::from_pem(&read("pki/ca.crt")).unwrap();
    let anonymous = reqwest::Client::builder()
        .tls_certs_only([ca.clone()])
        .build()
        .unwrap();
    assert!(anonymous.get(&url).send().await.is_err(), "no certificate");
    // The replicas' own certificate: admitted, and no such fill here.
    let identity = reqwest::Identity::from_pem(
        &[
            read("pki/server.crt"),
            b"\n".to_vec(),
            read("pki/server.key"),
        ]
        .concat(),
    )
    .unwrap();
    let replica = reqwest::Client::builder()
        .tls_certs_only([ca])
        .identity(identity)
        .build()
        .unwrap();
    assert_eq!(replica.get(&url).send().await.unwrap().status(), 404);
    // The refusal is logged as the connection closes; the client may see
    // the close first.
    common::wait_for("the refusal in the log", LIMIT, || async {
        cluster
            .log(0)
            .contains("not a replica's server certificate")
    })
    .await;
}

/// `Location` of a response, made absolute against `origin`.
fn location(response: &reqwest::Response, origin: &str) -> String {
    let location = response.headers()["location"].to_str().unwrap();
    if location.starts_with("http") {
        location.to_owned()
    } else {
        format!("{origin}{location}")
    }
}

/// The same upload session's URL on another replica.
fn on_replica(url: &str, cluster: &Cluster, replica: usize) -> String {
    let path = &url[url.find("/v2/").unwrap()..];
    format!("https://127.0.0.1:{}{path}", cluster.replicas[replica].port)
}

async fn patch(
    client: &reqwest::Client,
    url: &str,
    start: u64,
    body: impl Into<reqwest::Body>,
    len: u64,
) -> reqwest::Response {
    client
        .patch(url)
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("{start}-{}", start + len - 1))
        .header("content-length", len)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_push_goes_on_from_any_replica_one_writer_at_a_time() {
    let (postgres, garage) = engines().await;
    let cluster = Cluster::start(3, &postgres, &garage, "https://127.0.0.1:9", "").await;
    let client = &cluster.client;
    let blob: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&blob)));
    let (one, two, rest) = (
        &blob[..1_000_000],
        &blob[1_000_000..2_000_000],
        &blob[2_000_000..],
    );

    let started = client
        .post(format!("{}/v2/team/app/blobs/uploads/", cluster.origin(0)))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202);
    let session = location(&started, &cluster.origin(0));

    let first = patch(
        client,
        &on_replica(&session, &cluster, 1),
        0,
        one.to_vec(),
        1_000_000,
    )
    .await;
    assert_eq!(first.status(), 202, "{:?}", first.text().await);

    // A PATCH whose body stalls half way holds the session on replica 2 ...
    let (feed, body) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    let stalled_url = on_replica(&session, &cluster, 2);
    let stalled_client = client.clone();
    let stalled = tokio::spawn(async move {
        let stream = tokio_stream_from(body);
        patch(
            &stalled_client,
            &stalled_url,
            1_000_000,
            reqwest::Body::wrap_stream(stream),
            1_000_000,
        )
        .await
        .status()
    });
    feed.send(Ok(two[..500_000].to_vec())).await.unwrap();
    let id = session
        .split('?')
        .next()
        .and_then(|path| path.rsplit('/').next())
        .unwrap()
        .to_owned();
    common::wait_for("the stalled PATCH's writer lease", LIMIT, || async {
        fill_owner(&postgres, &format!("upload:{id}"))
            .await
            .is_some()
    })
    .await;
    // ... so a second writer on replica 0 is refused until it ends.
    let other = patch(
        client,
        &on_replica(&session, &cluster, 0),
        1_000_000,
        two.to_vec(),
        1_000_000,
    )
    .await;
    let refused = Some(other.status());
    assert_eq!(
        refused,
        Some(reqwest::StatusCode::TOO_MANY_REQUESTS),
        "a concurrent PATCH is refused"
    );
    feed.send(Ok(two[500_000..].to_vec())).await.unwrap();
    drop(feed);
    assert_eq!(stalled.await.unwrap(), 202);

    // Where the session stands, asked on yet another replica.
    let status = client
        .get(on_replica(&session, &cluster, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 204);
    assert_eq!(status.headers()["range"], "0-1999999");

    let separator = if session.contains('?') { '&' } else { '?' };
    let put = client
        .put(format!(
            "{}{separator}digest={digest}",
            on_replica(&session, &cluster, 0)
        ))
        .header("content-type", "application/octet-stream")
        .body(rest.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201, "{:?}", put.text().await);
    for replica in 0..3 {
        let got = client
            .get(format!(
                "{}/v2/team/app/blobs/{digest}",
                cluster.origin(replica)
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), 200);
        assert!(
            got.bytes().await.unwrap() == blob,
            "byte-identical on {replica}"
        );
    }
    // The session's parts went with it; only the blob stays.
    let leftovers = garage
        .client()
        .list(Some(&object_store::path::Path::from("uploads")))
        .collect::<Vec<_>>()
        .await
        .len();
    assert_eq!(leftovers, 0, "no part of the session left in the bucket");
}

fn tokio_stream_from(
    mut body: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| body.poll_recv(cx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_patch_leaves_the_session_to_go_on_from_another() {
    let (postgres, garage) = engines().await;
    let cluster = Cluster::start(3, &postgres, &garage, "https://127.0.0.1:9", "").await;
    let client = &cluster.client;
    let blob: Vec<u8> = (0..2_000_000u32).map(|i| (i % 241) as u8).collect();
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&blob)));
    let started = client
        .post(format!("{}/v2/team/app/blobs/uploads/", cluster.origin(0)))
        .send()
        .await
        .unwrap();
    let session = location(&started, &cluster.origin(0));
    let id = session
        .split('?')
        .next()
        .and_then(|path| path.rsplit('/').next())
        .unwrap()
        .to_owned();
    let first = patch(
        client,
        &on_replica(&session, &cluster, 1),
        0,
        blob[..1_000_000].to_vec(),
        1_000_000,
    )
    .await;
    assert_eq!(first.status(), 202);

    // Replica 2 dies with half of the next chunk received.
    let (feed, body) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    let dying_url = on_replica(&session, &cluster, 2);
    let dying_client = client.clone();
    let dying = tokio::spawn(async move {
        let body = reqwest::Body::wrap_stream(tokio_stream_from(body));
        dying_client
            .patch(&dying_url)
            .header("content-range", "1000000-1999999")
            .header("content-length", 1_000_000)
            .body(body)
            .send()
            .await
    });
    feed.send(Ok(blob[1_000_000..1_500_000].to_vec()))
        .await
        .unwrap();
    common::wait_for("the dying PATCH's writer lease", LIMIT, || async {
        fill_owner(&postgres, &format!("upload:{id}"))
            .await
            .is_some()
    })
    .await;
    cluster.replicas[2].process.signal("KILL");
    assert!(
        dying.await.unwrap().is_err(),
        "its client sees the connection go"
    );

    // Once its writer lease runs out, the chunk is sent again elsewhere.
    let mut status = None;
    for _ in 0..60 {
        let again = patch(
            client,
            &on_replica(&session, &cluster, 0),
            1_000_000,
            blob[1_000_000..].to_vec(),
            1_000_000,
        )
        .await;
        status = Some(again.status());
        if again.status() != 429 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(status, Some(reqwest::StatusCode::ACCEPTED));
    let separator = if session.contains('?') { '&' } else { '?' };
    let put = client
        .put(format!(
            "{}{separator}digest={digest}",
            on_replica(&session, &cluster, 1)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201, "{:?}", put.text().await);
    let got = client
        .get(format!("{}/v2/team/app/blobs/{digest}", cluster.origin(0)))
        .send()
        .await
        .unwrap();
    assert!(got.bytes().await.unwrap() == blob);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_load_fails_requests_only_while_it_is_down() {
    let (mut postgres, garage) = engines().await;
    let registry = DockerRegistry::start(Auth::None);
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(work.path());
    let image = layout.image("amd64", &[(91, 300_000), (92, 400_000)]);
    layout.tag("v1", &image);
    layout.push("v1", &format!("{}/team/fill:v1", registry.addr), &[]);
    let cluster = Cluster::start(2, &postgres, &garage, &registry.url(), "").await;
    let (before, after) = (&image.layers[0], &image.layers[1]);
    let get = |replica: usize, digest: &str| {
        let (client, url) = (cluster.client.clone(), cluster.blob_url(replica, digest));
        async move { fetch(client, url, Arc::new(AtomicU64::new(0))).await }
    };
    let warm = get(0, &before.digest).await;
    assert_eq!(warm.status, 200);

    // Load on both replicas across the outage: hits of one blob.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for replica in 0..2 {
        let (client, url, stop) = (
            cluster.client.clone(),
            cluster.blob_url(replica, &before.digest),
            stop.clone(),
        );
        load.push(tokio::spawn(async move {
            let mut answered = 0u32;
            for _ in 0..2_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let result = fetch(client.clone(), url.clone(), Arc::new(AtomicU64::new(0))).await;
                answered += u32::from(result.status != 0);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            answered
        }));
    }
    tokio::task::block_in_place(|| postgres.restart());

    // Recovered without restarting mirror: a cold blob fills through the
    // other replica, and hits answer again on both.
    let mut recovered = None;
    for _ in 0..100 {
        let result = get(1, &after.digest).await;
        if result.status == 200 {
            recovered = Some(result);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let recovered = recovered.expect("a cold fill after PostgreSQL came back");
    assert_eq!(recovered.body.unwrap(), (after.digest.clone(), after.size));
    for replica in 0..2 {
        let hit = get(replica, &before.digest).await;
        assert_eq!(
            (hit.status, hit.body.unwrap()),
            (200, (before.digest.clone(), before.size))
        );
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        assert!(
            task.await.unwrap() > 0,
            "every replica answered under the load"
        );
    }
}
