//! A hostile upstream cannot make a fill unbounded or a body untrue: a blob
//! larger than its descriptor or `registry.max_blob_size` is cut off, an
//! endless body stops at `cache.max_size`, a drip is failed by the fill's
//! minimum rate or deadline (and the next request fills afresh), and a cold
//! `Range` never completes with bytes that have not verified.
//!
//! The upstream is a small HTTP server written here, which answers each path
//! with what the test says and counts what it sent.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{MirrorOptions, PASSWORD, TestMirror, USER, wait_for};
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use sha2::{Digest as _, Sha256};

/// What the upstream sends for one path.
#[derive(Clone)]
enum Reply {
    /// These bytes, with a `Content-Length`.
    Whole(Bytes),
    /// These bytes, chunked, no length announced.
    Chunked(Bytes),
    /// Zeros in 64 KiB chunks, no length, without end (up to `ENDLESS_CAP`,
    /// so that the test itself is bounded).
    Endless,
    /// These bytes, one every `DRIP_EVERY`, no length.
    Drip(Bytes),
}

const ENDLESS_CAP: u64 = 256 << 20;
const DRIP_EVERY: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Sent {
    bytes: u64,
    /// The body is gone: sent whole, or dropped when the peer hung up.
    ended: bool,
}

#[derive(Default)]
struct State {
    routes: Mutex<HashMap<String, (&'static str, Reply)>>,
    gets: Mutex<Vec<String>>,
    sent: Mutex<HashMap<String, Sent>>,
}

/// Counts a body's bytes as hyper takes them, and notes when it is dropped.
struct Meter {
    state: Arc<State>,
    path: String,
}

impl Meter {
    fn add(&self, n: u64) {
        let mut sent = self.state.sent.lock().unwrap();
        sent.entry(self.path.clone()).or_default().bytes += n;
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        let mut sent = self.state.sent.lock().unwrap();
        sent.entry(self.path.clone()).or_default().ended = true;
    }
}

type HostileBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// The chunk of `reply` that starts at `at`, once it is due; `None` at the end.
async fn chunk_at(reply: &Reply, at: u64) -> Option<Bytes> {
    let at_usize = at as usize;
    match reply {
        Reply::Whole(bytes) | Reply::Chunked(bytes) => (at_usize < bytes.len())
            .then(|| bytes.slice(at_usize..bytes.len().min(at_usize + (256 << 10)))),
        Reply::Endless => (at < ENDLESS_CAP).then(|| Bytes::from(vec![0u8; 64 << 10])),
        Reply::Drip(bytes) if at_usize < bytes.len() => {
            tokio::time::sleep(DRIP_EVERY).await;
            Some(bytes.slice(at_usize..at_usize + 1))
        }
        Reply::Drip(_) => None,
    }
}

fn body_of(reply: Reply, meter: Meter) -> HostileBody {
    let stream = futures_util::stream::unfold((reply, meter, 0), |(reply, meter, at)| async move {
        let chunk = chunk_at(&reply, at).await?;
        meter.add(chunk.len() as u64);
        let next = at + chunk.len() as u64;
        Some((Ok(Frame::data(chunk)), (reply, meter, next)))
    });
    BodyExt::boxed(StreamBody::new(stream))
}

async fn answer(
    state: Arc<State>,
    request: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<HostileBody> {
    let path = request.uri().path().to_owned();
    if request.method() == hyper::Method::GET {
        state.gets.lock().unwrap().push(path.clone());
    }
    let empty = || {
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed()
    };
    if path == "/v2/" {
        return hyper::Response::new(empty());
    }
    let Some((content_type, reply)) = state.routes.lock().unwrap().get(&path).cloned() else {
        let mut response = hyper::Response::new(empty());
        *response.status_mut() = hyper::StatusCode::NOT_FOUND;
        return response;
    };
    let mut response = hyper::Response::builder().header("content-type", content_type);
    if let Reply::Whole(bytes) = &reply {
        response = response.header("content-length", bytes.len());
    }
    let meter = Meter {
        state: state.clone(),
        path,
    };
    response.body(body_of(reply, meter)).unwrap()
}

/// The hostile upstream: registry and GOPROXY at once, on 127.0.0.1.
struct Hostile {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Hostile {
    async fn start() -> Hostile {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let serving = state.clone();
        let task = tokio::spawn(async move {
            // Owned here: aborting this task drops the set and every connection.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let state = serving.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(state, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Hostile { addr, state, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn route(&self, path: &str, content_type: &'static str, reply: Reply) {
        let mut routes = self.state.routes.lock().unwrap();
        routes.insert(path.to_owned(), (content_type, reply));
    }

    fn blob(&self, repo: &str, digest: &str, reply: Reply) {
        let path = format!("/v2/{repo}/blobs/{digest}");
        self.route(&path, "application/octet-stream", reply);
    }

    /// An image manifest under `tag` whose one layer is `(digest, size)`.
    fn manifest(&self, repo: &str, tag: &str, layer: (&str, u64)) {
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        let config_digest = sha256(config);
        self.blob(
            repo,
            &config_digest,
            Reply::Whole(Bytes::from_static(config)),
        );
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer.0,
                "size": layer.1,
            }],
        });
        let path = format!("/v2/{repo}/manifests/{tag}");
        let reply = Reply::Whole(Bytes::from(manifest.to_string()));
        self.route(&path, "application/vnd.oci.image.manifest.v1+json", reply);
    }

    fn gets(&self, part: &str) -> usize {
        let gets = self.state.gets.lock().unwrap();
        gets.iter().filter(|p| p.contains(part)).count()
    }

    /// Bytes sent on `path` so far, and whether that body has ended.
    fn sent(&self, path: &str) -> (u64, bool) {
        let sent = self.state.sent.lock().unwrap();
        sent.get(path).map_or((0, false), |s| (s.bytes, s.ended))
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

async fn mirror_for(upstream: &Hostile, extra: &str) -> TestMirror {
    let url = upstream.url();
    TestMirror::start(MirrorOptions {
        extra_toml: format!(
            "[go]\nupstream = \"{url}\"\nsumdb = []\nverify = \"off\"  # about fill limits, not checksums: no test database knows these modules\n\n\
             [[registry.upstream]]\nname = \"up.test\"\nurl = \"{url}\"\n\n{extra}"
        ),
        ..MirrorOptions::default()
    })
    .await
}

/// A GET's status and body, or the error that ended the body.
async fn fetch(
    client: &reqwest::Client,
    url: &str,
    range: Option<&str>,
) -> (u16, Result<Vec<u8>, String>) {
    let mut request = client.get(url);
    if let Some(range) = range {
        request = request.header("range", range);
    }
    // A fill refused early may reset the stream before the headers.
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => return (0, Err(error.to_string())),
    };
    let status = response.status().as_u16();
    let mut stream = response.bytes_stream();
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(error) => return (status, Err(error.to_string())),
        }
    }
    (status, Ok(body))
}

/// A body that arrived complete with a success status.
fn complete(answer: &(u16, Result<Vec<u8>, String>)) -> bool {
    matches!(answer, (200 | 206, Ok(_)))
}

fn temp_files(mirror: &TestMirror) -> usize {
    std::fs::read_dir(mirror.root.path().join("data/tmp"))
        .unwrap()
        .count()
}

async fn stored(mirror: &TestMirror, digest: &str) -> bool {
    let digest = digest.parse().unwrap();
    let store = mirror.mirror().store();
    store.blobs().size(&digest).await.unwrap().is_some()
}

/// `mirror_fill_failures_total` as `/metrics` shows it.
async fn fill_failures(mirror: &TestMirror) -> u64 {
    let metrics = mirror.metrics().await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("mirror_fill_failures_total "))
        .expect("fill failures are exported");
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// After a refused fill: nothing stored, no temp file left, failure counted.
async fn assert_refused_cleanly(mirror: &TestMirror, digest: &str, failures_before: u64) {
    assert!(!stored(mirror, digest).await, "{digest} must not be stored");
    wait_for("the temp file to go", Duration::from_secs(10), || async {
        temp_files(mirror) == 0
    })
    .await;
    assert!(
        fill_failures(mirror).await > failures_before,
        "the refused fill counts as failed"
    );
}

fn blob_url(mirror: &TestMirror, repo: &str, digest: &str) -> String {
    mirror.url(&format!("/v2/up.test/{repo}/blobs/{digest}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_range_from_a_lying_upstream_never_completes_and_stores_nothing() {
    let upstream = Hostile::start().await;
    let mirror = mirror_for(&upstream, "").await;
    let content = common::noise::bytes(3 << 20);
    let digest = sha256(&content);
    let mut lie = content.to_vec();
    lie[0] ^= 0xff;
    upstream.blob("team/app", &digest, Reply::Whole(Bytes::from(lie)));
    let client = mirror.with_cert();
    let url = blob_url(&mirror, "team/app", &digest);
    let range = Some("bytes=0-1048575");

    let answer = fetch(&client, &url, range).await;
    assert!(
        !complete(&answer),
        "a cold range of unverified bytes must not complete: status {}, {:?}",
        answer.0,
        answer.1.as_ref().map(Vec::len)
    );
    assert_refused_cleanly(&mirror, &digest, 0).await;

    upstream.blob("team/app", &digest, Reply::Whole(content.clone()));
    let (status, body) = fetch(&client, &url, range).await;
    assert_eq!(status, 206);
    assert!(body.unwrap() == content[..1 << 20], "the honest range");
    assert!(stored(&mirror, &digest).await);
    mirror.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_larger_than_its_descriptor_is_cut_off_and_not_stored() {
    let upstream = Hostile::start().await;
    let mirror = mirror_for(&upstream, "").await;
    // The digest is true; the manifest's size is not: the body runs past it.
    let content = common::noise::bytes(2 << 20);
    let digest = sha256(&content);
    upstream.manifest("team/app", "v1", (&digest, 1 << 20));
    upstream.blob("team/app", &digest, Reply::Chunked(content.clone()));
    let client = mirror.with_cert();
    let manifest = mirror.url("/v2/up.test/team/app/manifests/v1");
    let (status, _) = fetch(&client, &manifest, None).await;
    assert_eq!(status, 200, "the manifest is served and recorded");

    let answer = fetch(&client, &blob_url(&mirror, "team/app", &digest), None).await;
    assert!(!complete(&answer), "cut off at the descriptor's size");
    assert_refused_cleanly(&mirror, &digest, 0).await;
    mirror.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_over_registry_max_blob_size_is_refused_and_one_under_it_is_served() {
    let upstream = Hostile::start().await;
    let mirror = mirror_for(&upstream, "[registry]\nmax_blob_size = \"1MiB\"\n").await;
    let client = mirror.with_cert();
    let big = common::noise::bytes((1 << 20) + 1);
    let big_digest = sha256(&big);
    upstream.blob("team/app", &big_digest, Reply::Whole(big.clone()));
    let answer = fetch(&client, &blob_url(&mirror, "team/app", &big_digest), None).await;
    assert!(!complete(&answer), "an announced length over the limit");
    assert_refused_cleanly(&mirror, &big_digest, 0).await;

    let failures = fill_failures(&mirror).await;
    upstream.blob("team/app", &big_digest, Reply::Chunked(big));
    let answer = fetch(&client, &blob_url(&mirror, "team/app", &big_digest), None).await;
    assert!(!complete(&answer), "an unannounced body over the limit");
    assert_refused_cleanly(&mirror, &big_digest, failures).await;

    let small = common::noise::bytes(1 << 20);
    let small_digest = sha256(&small);
    upstream.blob("team/app", &small_digest, Reply::Chunked(small.clone()));
    let (status, body) = fetch(&client, &blob_url(&mirror, "team/app", &small_digest), None).await;
    assert_eq!(status, 200);
    assert!(body.unwrap() == small);
    mirror.stop().await;
}

/// Whether a GET of a Go file arrives whole with a 200.
async fn zip_completes(mirror: &TestMirror, path: &str) -> bool {
    let response = mirror
        .anonymous()
        .get(mirror.url(path))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await;
    match response {
        Ok(response) if response.status() == 200 => response.bytes().await.is_ok(),
        _ => false,
    }
}

/// Waits for the upstream to see its endless body dropped; what it had sent.
async fn sent_until_cut(upstream: &Hostile, path: &str) -> u64 {
    wait_for("the mirror to hang up", Duration::from_secs(60), || async {
        upstream.sent(path).1
    })
    .await;
    upstream.sent(path).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_blob_is_cut_off_at_cache_max_size() {
    let upstream = Hostile::start().await;
    let mirror = mirror_for(&upstream, "[cache]\nmax_size = \"8MiB\"\n").await;
    let digest = sha256(b"whatever the endless body claims to be");
    upstream.blob("team/app", &digest, Reply::Endless);
    let answer = fetch(
        &mirror.with_cert(),
        &blob_url(&mirror, "team/app", &digest),
        None,
    )
    .await;
    assert!(!complete(&answer));
    let sent = sent_until_cut(&upstream, &format!("/v2/team/app/blobs/{digest}")).await;
    // Socket buffers on both sides hold a few MiB the mirror never wrote.
    assert!(
        sent < 40 << 20,
        "the mirror took {} MiB of an endless body with an 8 MiB cache",
        sent >> 20
    );
    assert_refused_cleanly(&mirror, &digest, 0).await;
    mirror.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_module_zip_is_cut_off_at_cache_max_size() {
    let upstream = Hostile::start().await;
    let mirror = mirror_for(&upstream, "[cache]\nmax_size = \"8MiB\"\n").await;
    let path = "/example.com/endless/@v/v1.0.0.zip";
    upstream.route(path, "application/zip", Reply::Endless);
    assert!(!zip_completes(&mirror, path).await);
    let sent = sent_until_cut(&upstream, path).await;
    assert!(
        sent < 40 << 20,
        "the mirror took {} MiB of an endless zip with an 8 MiB cache",
        sent >> 20
    );
    wait_for("the temp file to go", Duration::from_secs(10), || async {
        temp_files(&mirror) == 0
    })
    .await;
    assert!(fill_failures(&mirror).await > 0);
    mirror.stop().await;
}

/// Starts `n` clients on one cold blob; each one's answer and how long it took.
async fn concurrent_gets(
    mirror: &TestMirror,
    url: &str,
    n: usize,
) -> Vec<((u16, Result<Vec<u8>, String>), Duration)> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (client, url) = (mirror.with_cert(), url.to_owned());
            tokio::spawn(async move {
                let started = Instant::now();
                let answer = fetch(&client, &url, None).await;
                (answer, started.elapsed())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

/// A drip of `len` bytes lasts `len × DRIP_EVERY`: far past every limit the
/// tests set, so that a client served to the end has been held far too long.
const DRIP_LEN: usize = 400;

async fn drip_fails_every_client_then_fills(extra: &str) {
    let upstream = Hostile::start().await;
    let mirror = mirror_for(&upstream, extra).await;
    let content = common::noise::bytes(DRIP_LEN);
    let digest = sha256(&content);
    upstream.blob("team/app", &digest, Reply::Drip(content.clone()));
    let url = blob_url(&mirror, "team/app", &digest);
    for (answer, took) in concurrent_gets(&mirror, &url, 3).await {
        assert!(!complete(&answer), "a drip must not be served to the end");
        assert!(
            took < Duration::from_secs(15),
            "a client was held {took:?} by a drip"
        );
    }
    assert_refused_cleanly(&mirror, &digest, 0).await;

    // The failed fill is gone: the next request starts a new one.
    upstream.blob("team/app", &digest, Reply::Whole(content.clone()));
    let (status, body) = fetch(&mirror.with_cert(), &url, None).await;
    assert_eq!(status, 200);
    assert!(body.unwrap() == content);
    assert_eq!(upstream.gets(&digest), 2, "one drip, one honest fill");
    mirror.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drip_below_the_minimum_rate_fails_every_waiting_client_and_the_next_request_fills() {
    drip_fails_every_client_then_fills(
        "[cache]\nfill_min_rate = \"1KiB\"\nfill_rate_window = \"2s\"\n",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drip_above_the_minimum_rate_is_ended_by_the_fill_timeout() {
    // Ten bytes a second pass a one-byte minimum; the deadline ends it.
    drip_fails_every_client_then_fills(
        "[cache]\nfill_min_rate = \"1B\"\nfill_rate_window = \"1s\"\nfill_timeout = \"3s\"\n",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dripping_module_zip_is_ended_by_the_fill_timeout() {
    let upstream = Hostile::start().await;
    let mirror = mirror_for(&upstream, "[cache]\nfill_timeout = \"2s\"\n").await;
    let path = "/example.com/drip/@v/v1.0.0.zip";
    upstream.route(
        path,
        "application/zip",
        Reply::Drip(common::noise::bytes(DRIP_LEN)),
    );
    let started = Instant::now();
    assert!(!zip_completes(&mirror, path).await);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "held {:?} by a dripping zip",
        started.elapsed()
    );
    wait_for("the temp file to go", Duration::from_secs(10), || async {
        temp_files(&mirror) == 0
    })
    .await;
    assert!(fill_failures(&mirror).await > 0);
    mirror.stop().await;
}
