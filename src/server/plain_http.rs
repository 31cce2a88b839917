//! Plain HTTP sent to the TLS port: answered, as nginx does, with a plain-HTTP
//! `400` whose body says the port speaks TLS and gives the https URL. Docker
//! falls back to plain HTTP on loopback and would otherwise show its user
//! `malformed HTTP response "\x15\x03\x03…"` (our TLS alert).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A TLS record of type handshake: every ClientHello starts with it.
const TLS_HANDSHAKE: u8 = 0x16;
/// More than any request line and Host header a real client sends first.
const MAX_HEAD: usize = 8 * 1024;
/// After answering, how long unread request bytes are drained so that closing
/// does not reset the connection before the client has read the answer.
const DRAIN: Duration = Duration::from_millis(500);

/// What the first byte of a new connection says it is.
#[derive(Debug, PartialEq, Eq)]
pub enum Opening {
    Tls,
    PlainHttp,
    /// Garbage, or closed before a byte: left to the TLS handshake to refuse.
    Other,
}

/// Looks at the first byte without consuming it, so the TLS handshake still
/// reads the whole ClientHello. Costs one `recv(MSG_PEEK)`; the caller bounds
/// the wait with the handshake timeout.
pub async fn opening(tcp: &TcpStream) -> std::io::Result<Opening> {
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 0 {
        return Ok(Opening::Other);
    }
    Ok(match first[0] {
        TLS_HANDSHAKE => Opening::Tls,
        // Every HTTP method starts with an upper-case letter.
        b'A'..=b'Z' => Opening::PlainHttp,
        _ => Opening::Other,
    })
}

/// Reads the request head (bounded), answers 400 with the https URL, closes.
pub async fn answer(mut tcp: TcpStream) -> std::io::Result<()> {
    let head = read_head(&mut tcp).await?;
    let local = tcp.local_addr()?;
    let url = https_url(&String::from_utf8_lossy(&head), local);
    let body = format!("This port speaks TLS (HTTPS), not plain HTTP.\nUse {url}\n");
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(response.as_bytes()).await?;
    tcp.shutdown().await?;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(DRAIN, async {
        while tcp.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    })
    .await;
    Ok(())
}

async fn read_head(tcp: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while head.len() < MAX_HEAD && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    Ok(head)
}

/// `https://HOST/PATH` from the request, where both are plainly what a URL
/// holds; otherwise the address the client connected to, and `/`. The body
/// is plain text, but echoing arbitrary bytes back is still not done.
fn https_url(head: &str, local: SocketAddr) -> String {
    let mut lines = head.split("\r\n");
    let target = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .filter(|target| target.starts_with('/') && target.len() <= 2048 && is_url_text(target))
        .unwrap_or("/");
    let host = lines
        .take_while(|line| !line.is_empty())
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("host").then_some(value.trim())
        })
        .filter(|host| !host.is_empty() && host.len() <= 255 && is_authority(host))
        .map_or_else(|| local.to_string(), str::to_owned);
    format!("https://{host}{target}")
}

fn is_url_text(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'<' && b != b'>')
}

fn is_authority(host: &str) -> bool {
    host.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    #[test]
    fn the_url_keeps_a_plain_host_and_path() {
        let head =
            "GET /v2/library/alpine/manifests/3 HTTP/1.1\r\nHost: mirror.example.com:5000\r\n\r\n";
        assert_eq!(
            https_url(head, local()),
            "https://mirror.example.com:5000/v2/library/alpine/manifests/3"
        );
    }

    #[test]
    fn odd_hosts_and_paths_are_replaced_by_the_local_address_and_root() {
        let head = "GET /<script> HTTP/1.1\r\nHost: evil\x1b[31m\r\n\r\n";
        assert_eq!(https_url(head, local()), "https://127.0.0.1:5000/");
        assert_eq!(https_url("GET", local()), "https://127.0.0.1:5000/");
    }
}
