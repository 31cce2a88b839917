//! A plain-HTTP reverse proxy in front of an upstream registry that records
//! every request it forwards (to count upstream requests and check what
//! headers reached upstream) and can corrupt one blob's bytes on the way.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response};

/// One forwarded request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
}

struct State {
    target: String,
    client: reqwest::Client,
    seen: Mutex<Vec<Seen>>,
    /// Digests whose content's first byte is flipped on the way through.
    corrupt: Mutex<Vec<String>>,
    /// Answer everything with this status (and `Retry-After: 7`) instead.
    forced: Mutex<Option<u16>>,
    /// Bytes per second of response bodies, to make a fill last long enough
    /// to be interrupted.
    throttle: Mutex<Option<u64>>,
}

pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

type ProxyBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

async fn forward(
    state: Arc<State>,
    request: Request<hyper::body::Incoming>,
) -> Response<ProxyBody> {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/".to_owned(), |p| p.to_string());
    let method = request.method().clone();
    let mut headers = request.headers().clone();
    headers.remove(hyper::header::HOST);
    state.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: path.clone(),
        authorization: headers
            .get(hyper::header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or("").to_owned()),
    });
    if let Some(status) = *state.forced.lock().unwrap() {
        let body = r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#;
        return Response::builder()
            .status(status)
            .header("retry-after", "7")
            .header("content-type", "application/json")
            .body(
                http_body_util::Full::new(Bytes::from(body))
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .unwrap();
    }
    let body = request
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let upstream = state
        .client
        .request(method, format!("{}{path}", state.target))
        .headers(headers)
        .body(body)
        .send()
        .await;
    let upstream = match upstream {
        Ok(upstream) => upstream,
        Err(error) => {
            let mut response = Response::new(
                http_body_util::Full::new(Bytes::from(error.to_string()))
                    .map_err(|never| match never {})
                    .boxed(),
            );
            *response.status_mut() = hyper::StatusCode::BAD_GATEWAY;
            return response;
        }
    };
    let corrupt = state
        .corrupt
        .lock()
        .unwrap()
        .iter()
        .any(|d| path.ends_with(d.as_str()));
    let mut response = Response::builder().status(upstream.status());
    for (name, value) in upstream.headers() {
        response = response.header(name, value);
    }
    let mut first = true;
    let throttle = *state.throttle.lock().unwrap();
    let stream = upstream
        .bytes_stream()
        .map_err(std::io::Error::other)
        .and_then(move |chunk| async move {
            if let Some(rate) = throttle {
                let pause = std::time::Duration::from_secs_f64(chunk.len() as f64 / rate as f64);
                tokio::time::sleep(pause).await;
            }
            Ok(chunk)
        })
        .map_ok(move |chunk| {
            if corrupt && first && !chunk.is_empty() {
                first = false;
                let mut bytes = chunk.to_vec();
                bytes[0] ^= 0xff;
                return Frame::data(Bytes::from(bytes));
            }
            Frame::data(chunk)
        });
    response.body(StreamBody::new(stream).boxed()).unwrap()
}

impl Proxy {
    /// Forwards to `target` (`http://127.0.0.1:PORT`).
    pub async fn start(target: &str) -> Proxy {
        let state = Arc::new(State {
            target: target.trim_end_matches('/').to_owned(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            seen: Mutex::new(Vec::new()),
            corrupt: Mutex::new(Vec::new()),
            forced: Mutex::new(None),
            throttle: Mutex::new(None),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accept_state = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = accept_state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(forward(state, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Proxy { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn corrupt_blob(&self, digest: &str) {
        self.state.corrupt.lock().unwrap().push(digest.to_owned());
    }

    pub fn force_status(&self, status: Option<u16>) {
        *self.state.forced.lock().unwrap() = status;
    }

    pub fn throttle(&self, bytes_per_second: Option<u64>) {
        *self.state.throttle.lock().unwrap() = bytes_per_second;
    }

    pub fn stop_corrupting(&self) {
        self.state.corrupt.lock().unwrap().clear();
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// How many forwarded requests had this method and a path containing `part`.
    pub fn count(&self, method: &str, part: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == method && s.path.contains(part))
            .count()
    }

    pub fn clear(&self) {
        self.state.seen.lock().unwrap().clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
