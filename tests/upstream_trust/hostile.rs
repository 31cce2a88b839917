//! Hostile upstreams written for these tests: small HTTP/1.1 servers, plain or
//! TLS with certificates from a CA made here, that answer each request with
//! what the test's closure says (content, a redirect, a token challenge) and
//! record every request they get, with its `Authorization`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use sha2::{Digest as _, Sha256};
use tokio::task::JoinSet;

/// One request a hostile server received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub authorization: Option<String>,
}

/// What to answer.
pub enum Reply {
    Content(&'static str, Bytes),
    /// 307 to this URL.
    Redirect(String),
    /// 401 with this `WWW-Authenticate`.
    Challenge(String),
    Status(u16),
}

pub type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

pub fn handler(f: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Handler {
    Arc::new(f)
}

/// A test CA issuing server certificates for any names and addresses.
pub struct TestCa {
    key: rcgen::KeyPair,
    cert: rcgen::Certificate,
    issuer_params: rcgen::CertificateParams,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "hostile upstream test CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.clone().self_signed(&key).expect("CA cert");
        TestCa {
            key,
            cert,
            issuer_params: params,
        }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// Writes the CA certificate (what `[go] ca` and an upstream's `ca` name).
    pub fn write_pem(&self, path: &Path) {
        std::fs::write(path, self.cert.pem()).expect("write CA pem");
    }

    /// A TLS server configuration for `names` (host names or IP addresses).
    pub fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        let issuer = rcgen::Issuer::from_params(&self.issuer_params, &self.key);
        let leaf = params.signed_by(&key, &issuer).expect("leaf cert");
        let chain = vec![leaf.der().clone()];
        let key_der = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .expect("server config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// A running hostile server. Dropping it stops it and every connection.
pub struct Hostile {
    pub addr: SocketAddr,
    scheme: &'static str,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Hostile {
    pub async fn http(bind: &str, handler: Handler) -> Hostile {
        Hostile::start(bind, None, handler).await
    }

    pub async fn https(bind: &str, tls: Arc<rustls::ServerConfig>, handler: Handler) -> Hostile {
        Hostile::start(bind, Some(tls), handler).await
    }

    async fn start(
        bind: &str,
        tls: Option<Arc<rustls::ServerConfig>>,
        handler: Handler,
    ) -> Hostile {
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .unwrap_or_else(|e| panic!("bind {bind}: {e}"));
        let addr = listener.local_addr().expect("local addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let recorder = seen.clone();
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = connections.clone();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(async move {
            // Owned here: aborting this task drops the set and every connection.
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let (handler, seen, acceptor) =
                    (handler.clone(), recorder.clone(), acceptor.clone());
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let reply = answer(&handler, &seen, &request);
                        async move { Ok::<_, Infallible>(reply) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                let io = hyper_util::rt::TokioIo::new(tls);
                                let _ = http.serve_connection(io, service).await;
                            }
                        }
                        None => {
                            let io = hyper_util::rt::TokioIo::new(stream);
                            let _ = http.serve_connection(io, service).await;
                        }
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Hostile {
            addr,
            scheme,
            seen,
            connections,
            task,
        }
    }

    /// `scheme://ADDR`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// `scheme://HOST:PORT`, for a server reached by a name.
    pub fn url_as(&self, host: &str) -> String {
        format!("{}://{host}:{}", self.scheme, self.addr.port())
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// TCP connections accepted, TLS handshake or not.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(
    handler: &Handler,
    seen: &Mutex<Vec<Seen>>,
    request: &Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let this = Seen {
        method: request.method().to_string(),
        path: request
            .uri()
            .path_and_query()
            .map_or("/".to_owned(), |p| p.to_string()),
        authorization: request
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or("<binary>").to_owned()),
    };
    seen.lock().unwrap().push(this.clone());
    let head = this.method == "HEAD";
    let mut response = Response::builder();
    let body = match handler(&this) {
        Reply::Content(content_type, body) => {
            response = response
                .header("content-type", content_type)
                .header("content-length", body.len())
                .header("docker-content-digest", sha256(&body));
            body
        }
        Reply::Redirect(location) => {
            response = response.status(307).header("location", location);
            Bytes::new()
        }
        Reply::Challenge(challenge) => {
            response = response
                .status(StatusCode::UNAUTHORIZED)
                .header("www-authenticate", challenge)
                .header("content-type", "application/json");
            Bytes::from_static(br#"{"errors":[{"code":"UNAUTHORIZED","message":"token needed"}]}"#)
        }
        Reply::Status(status) => {
            response = response.status(status);
            Bytes::from_static(b"no\n")
        }
    };
    let body = if head { Bytes::new() } else { body };
    response.body(Full::new(body)).unwrap()
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// What the hostile upstreams serve: one Go module version, a checksum
/// database answer and one OCI image (manifest, config, layer).
pub struct Content {
    pub info: Bytes,
    pub go_mod: Bytes,
    pub zip: Bytes,
    pub manifest: Bytes,
    pub config: Bytes,
    pub layer: Bytes,
}

pub const MODULE: &str = "example.com/hostile";
pub const VERSION: &str = "v1.0.0";
pub const REPO: &str = "lib/app";
pub const TAG: &str = "v1";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const LOOKUP: &str = "example.com/hostile v1.0.0 h1:not-a-real-record=\n";

impl Content {
    pub fn new() -> Content {
        let go_mod = format!("module {MODULE}\n\ngo 1.19\n");
        let zip = module_zip(&go_mod);
        let config = Bytes::from_static(
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        );
        let layer = Bytes::from(
            (0..70_000u32)
                .map(|i| (i * 7 % 251) as u8)
                .collect::<Vec<_>>(),
        );
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(&layer), "size": layer.len()}],
        });
        Content {
            info: Bytes::from(format!(
                "{{\"Version\":\"{VERSION}\",\"Time\":\"2023-01-02T03:04:05Z\"}}"
            )),
            go_mod: Bytes::from(go_mod),
            zip,
            manifest: Bytes::from(manifest.to_string()),
            config,
            layer,
        }
    }

    /// The answer an honest upstream gives to `path` (GOPROXY, sumdb or OCI), if any.
    pub fn serve(&self, path: &str) -> Option<Reply> {
        let path = path.split('?').next().unwrap_or(path);
        let go = format!("/{MODULE}/@v/");
        let reply = |t: &'static str, b: &Bytes| Some(Reply::Content(t, b.clone()));
        if let Some(file) = path.strip_prefix(&go) {
            return match file {
                "list" => reply("text/plain", &Bytes::from(format!("{VERSION}\n"))),
                f if f == format!("{VERSION}.info") => reply("application/json", &self.info),
                f if f == format!("{VERSION}.mod") => reply("text/plain", &self.go_mod),
                f if f == format!("{VERSION}.zip") => reply("application/zip", &self.zip),
                _ => None,
            };
        }
        if path.ends_with(&format!("/lookup/{MODULE}@{VERSION}")) {
            return reply("text/plain", &Bytes::from_static(LOOKUP.as_bytes()));
        }
        if path.ends_with(&format!("/{REPO}/manifests/{TAG}")) {
            return reply(OCI_MANIFEST, &self.manifest);
        }
        for blob in [&self.config, &self.layer] {
            if path.ends_with(&format!("/blobs/{}", sha256(blob))) {
                return reply("application/octet-stream", blob);
            }
        }
        None
    }
}

fn module_zip(go_mod: &str) -> Bytes {
    use std::io::Write;
    let mut buffer = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut buffer);
    let options = zip::write::SimpleFileOptions::default();
    let prefix = format!("{MODULE}@{VERSION}/");
    zip.start_file(format!("{prefix}go.mod"), options)
        .expect("zip entry");
    zip.write_all(go_mod.as_bytes()).expect("zip write");
    zip.start_file(format!("{prefix}hostile.go"), options)
        .expect("zip entry");
    zip.write_all(b"package hostile\n").expect("zip write");
    zip.finish().expect("zip finish");
    Bytes::from(buffer.into_inner())
}
