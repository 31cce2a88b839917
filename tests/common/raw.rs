//! Raw clients for tests that must hold one exact connection: TLS sockets from a
//! chosen loopback address, HTTP/1.1 written by hand, HTTP/2 through the `h2`
//! crate. reqwest pools and retries, which hides what one connection sees.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mirror_pki::IssuedCert;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;

pub const H1: &[u8] = b"http/1.1";
pub const H2: &[u8] = b"h2";

/// A client config that trusts `ca_pem`, offers `alpn`, and presents `identity`
/// (certificate and key PEM) if given.
pub fn client_config(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
    alpn: &[u8],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA pem"))
        .expect("CA cert");
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let mut config = match identity {
        Some((cert_pem, key_pem)) => {
            let chain = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()];
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

/// A TCP connection to `server` whose source address is `local` (any 127/8 address works on Linux).
pub async fn tcp_from(local: IpAddr, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(local, 0))?;
    socket.connect(server).await
}

/// A TLS connection from `local`; fails if the server closes instead of completing the handshake.
pub async fn tls_from(
    local: IpAddr,
    server: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = tcp_from(local, server).await?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = ServerName::try_from("127.0.0.1").expect("server name");
    tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("TLS handshake did not finish in 10s"))?
}

/// An HTTP/1.1 response read off a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one HTTP/1.1 GET on `stream` (kept alive) and reads its answer.
pub async fn h1_get<S>(stream: &mut S, path: &str, headers: &str) -> std::io::Result<RawResponse>
where
    S: AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n");
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    tokio::time::timeout(Duration::from_secs(10), read_response(stream))
        .await
        .map_err(|_| std::io::Error::other("no answer in 10s"))?
}

/// Reads one response whose body has a Content-Length (all of this server's small answers do).
pub async fn read_response<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<RawResponse> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {head:?}")))?;
    let mut response = RawResponse {
        status,
        head,
        body: buf[head_end..].to_vec(),
    };
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let length: usize = response
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while !body_complete(&response.body, chunked, length) {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        response.body.extend_from_slice(&chunk[..n]);
    }
    if chunked {
        response.body = dechunk(&response.body);
    }
    Ok(response)
}

fn body_complete(body: &[u8], chunked: bool, length: usize) -> bool {
    if chunked {
        body.ends_with(b"0\r\n\r\n")
    } else {
        body.len() >= length
    }
}

/// The data of a complete chunked body (no trailers: this server sends none).
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    while let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .expect("chunk size");
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        data.extend_from_slice(&body[start..start + size]);
        body = &body[start + size + 2..];
    }
    data
}

/// Reads until the peer closes; true if it did within `limit`.
pub async fn closed_within(stream: &mut (impl AsyncRead + Unpin), limit: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let until = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(until, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// An HTTP/2 connection driven by the `h2` crate; `driver` ends when the server closes it.
pub struct H2Conn {
    pub send: h2::client::SendRequest<Bytes>,
    pub driver: tokio::task::JoinHandle<Result<(), h2::Error>>,
}

pub async fn h2_handshake<S>(stream: S, builder: h2::client::Builder) -> H2Conn
where
    S: AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) = builder
        .handshake::<_, Bytes>(stream)
        .await
        .expect("h2 handshake");
    H2Conn {
        send,
        driver: tokio::spawn(connection),
    }
}

/// Sends a GET for `path` and reads the whole answer.
pub async fn h2_get(
    send: &mut h2::client::SendRequest<Bytes>,
    path: &str,
    authorization: Option<&str>,
) -> Result<(u16, Bytes), h2::Error> {
    let response = h2_start(send, path, authorization).await?.await?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut all = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        all.extend_from_slice(&chunk);
    }
    Ok((status, Bytes::from(all)))
}

/// Opens a GET stream for `path`; the caller reads the response as it likes.
pub async fn h2_start(
    send: &mut h2::client::SendRequest<Bytes>,
    path: &str,
    authorization: Option<&str>,
) -> Result<h2::client::ResponseFuture, h2::Error> {
    let ready = send.clone().ready().await?;
    *send = ready;
    let mut request = http::Request::get(format!("https://127.0.0.1{path}"));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let (response, _) = send.send_request(request.body(()).unwrap(), true)?;
    Ok(response)
}

/// The PEM pair of an issued certificate, as `client_config` takes it.
pub fn pems(issued: &IssuedCert) -> Option<(&str, &str)> {
    Some((issued.cert_pem.as_str(), issued.key_pem.as_str()))
}

/// `Basic …` for alice's password.
pub fn basic_alice() -> String {
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        super::USER,
        super::PASSWORD
    ));
    format!("Basic {token}")
}
