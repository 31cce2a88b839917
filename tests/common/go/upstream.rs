//! A static GOPROXY tree over plain HTTP/1.1 on loopback that logs each
//! request, can be made to fail or to answer slowly, and stops for real.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::task::{JoinHandle, JoinSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Serve,
    /// Every request gets a 500.
    Fail,
}

struct State {
    root: PathBuf,
    log: Mutex<Vec<String>>,
    mode: Mutex<Mode>,
    delay: Mutex<Duration>,
}

/// A static GOPROXY tree over plain HTTP/1.1 on 127.0.0.1, logging each
/// request's decoded path. Dropping it (or `stop`) closes the listener and
/// every open connection.
pub struct StaticProxy {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: Option<JoinHandle<()>>,
}

impl StaticProxy {
    pub async fn start(root: &Path) -> StaticProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let state = Arc::new(State {
            root: root.to_owned(),
            log: Mutex::new(Vec::new()),
            mode: Mutex::new(Mode::Serve),
            delay: Mutex::new(Duration::ZERO),
        });
        let serving = state.clone();
        let task = tokio::spawn(async move {
            // Owned here: aborting this task drops the set, which aborts every connection.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                let state = serving.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(serve(&state, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        StaticProxy {
            addr,
            state,
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request path seen so far, decoded, in order.
    pub fn requests(&self) -> Vec<String> {
        self.state.log.lock().expect("log").clone()
    }

    /// How many requests' paths contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.requests()
            .iter()
            .filter(|p| p.contains(needle))
            .count()
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().expect("mode") = mode;
    }

    /// Waits this long before answering each request.
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().expect("delay") = delay;
    }

    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for StaticProxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn serve(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let raw = request.uri().path().to_owned();
    let path = percent_encoding::percent_decode_str(&raw)
        .decode_utf8_lossy()
        .into_owned();
    state.log.lock().expect("log").push(path.clone());
    let delay = *state.delay.lock().expect("delay");
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let reply = |status: StatusCode, body: Vec<u8>| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
    };
    if *state.mode.lock().expect("mode") == Mode::Fail {
        return reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            b"upstream is broken\n".to_vec(),
        );
    }
    let relative = path.trim_start_matches('/');
    if relative.split('/').any(|e| e == ".." || e.is_empty()) {
        return reply(StatusCode::BAD_REQUEST, b"bad path\n".to_vec());
    }
    match std::fs::read(state.root.join(relative)) {
        Ok(bytes) => reply(StatusCode::OK, bytes),
        Err(_) => reply(
            StatusCode::NOT_FOUND,
            format!("not found: {relative} is not in the test tree\n").into_bytes(),
        ),
    }
}
