//! Prometheus text exposition of what the server counts. Counting is a
//! lock-free atomic add on the hot path; label sets are created once.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};

use crate::http::{Body, Protocol, body};

/// Why a TLS handshake failed, as an operator groups them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum HandshakeFailure {
    NoCertificate,
    UnknownCa,
    Expired,
    Revoked,
    BadCertificate,
    Protocol,
    Timeout,
    Io,
}

impl HandshakeFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::NoCertificate => "no_cert",
            HandshakeFailure::UnknownCa => "unknown_ca",
            HandshakeFailure::Expired => "expired",
            HandshakeFailure::Revoked => "revoked",
            HandshakeFailure::BadCertificate => "bad_cert",
            HandshakeFailure::Protocol => "protocol",
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Io => "io",
        }
    }

    pub fn classify(error: &std::io::Error) -> HandshakeFailure {
        use rustls::{CertificateError, Error};
        let Some(tls) = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<Error>())
        else {
            return HandshakeFailure::Io;
        };
        match tls {
            Error::NoCertificatesPresented => HandshakeFailure::NoCertificate,
            Error::InvalidCertificate(cert) => match cert {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    HandshakeFailure::UnknownCa
                }
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => HandshakeFailure::Expired,
                CertificateError::Revoked => HandshakeFailure::Revoked,
                _ => HandshakeFailure::BadCertificate,
            },
            _ => HandshakeFailure::Protocol,
        }
    }
}

/// A counter family keyed by label values.
struct Family {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    values: RwLock<BTreeMap<Vec<String>, AtomicU64>>,
}

impl Family {
    const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Family {
        Family {
            name,
            help,
            labels,
            values: RwLock::new(BTreeMap::new()),
        }
    }

    fn add(&self, label_values: &[&str], amount: u64) {
        {
            let values = self.values.read().unwrap_or_else(|e| e.into_inner());
            if let Some(counter) = find(&values, label_values) {
                counter.fetch_add(amount, Ordering::Relaxed);
                return;
            }
        }
        let mut values = self.values.write().unwrap_or_else(|e| e.into_inner());
        values
            .entry(label_values.iter().map(|s| (*s).to_owned()).collect())
            .or_insert_with(|| AtomicU64::new(0))
            .fetch_add(amount, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, kind: &str) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {kind}", self.name);
        let values = self.values.read().unwrap_or_else(|e| e.into_inner());
        for (label_values, value) in values.iter() {
            let labels: Vec<String> = self
                .labels
                .iter()
                .zip(label_values)
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = writeln!(
                out,
                "{}{{{}}} {}",
                self.name,
                labels.join(","),
                value.load(Ordering::Relaxed)
            );
        }
    }
}

fn find<'a>(values: &'a BTreeMap<Vec<String>, AtomicU64>, key: &[&str]) -> Option<&'a AtomicU64> {
    values
        .iter()
        .find(|(k, _)| k.len() == key.len() && k.iter().zip(key).all(|(a, b)| a == b))
        .map(|(_, v)| v)
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub struct Metrics {
    requests: Family,
    handshake_failures: Family,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            requests: Family::new(
                "mirror_http_requests_total",
                "HTTP requests answered, by protocol and status.",
                &["protocol", "status"],
            ),
            handshake_failures: Family::new(
                "mirror_tls_handshake_failures_total",
                "TLS handshakes that failed, by reason.",
                &["reason"],
            ),
        }
    }

    pub fn request(&self, protocol: Protocol, status: StatusCode) {
        self.requests.add(&[protocol.as_str(), status.as_str()], 1);
    }

    pub fn handshake_failed(&self, reason: HandshakeFailure) {
        self.handshake_failures.add(&[reason.as_str()], 1);
    }

    pub fn render_text(&self) -> String {
        let mut out = String::new();
        self.requests.render(&mut out, "counter");
        self.handshake_failures.render(&mut out, "counter");
        out
    }

    pub fn render(&self) -> Response<Body> {
        let mut response = Response::new(body::full(self.render_text()));
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        response
    }
}
