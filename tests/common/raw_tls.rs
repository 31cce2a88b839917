//! A bare HTTP/1.1 client over TLS, for requests no ordinary client sends:
//! paths that go out byte for byte (curl and reqwest percent-encode them),
//! and requests on one kept-alive connection while the test changes the
//! server under it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// One TLS connection to `127.0.0.1:port`, trusting only the CA in `ca_pem_file`.
pub struct RawH1 {
    reader: BufReader<Tls>,
}

impl RawH1 {
    pub fn connect(port: u16, ca_pem_file: &Path) -> RawH1 {
        let ca = rustls_pki_types::CertificateDer::from_pem_file(ca_pem_file).expect("CA pem");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).expect("CA");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
        let connection = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
        let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        RawH1 {
            reader: BufReader::new(rustls::StreamOwned::new(connection, tcp)),
        }
    }

    /// Sends `GET path` with `headers` (each `Name: value`) and reads the
    /// answer: its status code and body.
    pub fn get(&mut self, path: &str, headers: &[&str]) -> (u16, String) {
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        for header in headers {
            request.push_str(header);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        let stream = self.reader.get_mut();
        stream.write_all(request.as_bytes()).expect("send");
        stream.flush().expect("flush");
        let status_line = self.line();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP status line: {status_line:?}"));
        let mut length = 0;
        loop {
            let line = self.line();
            if line.trim_end().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().expect("content-length");
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read");
        line
    }
}
