//! Prometheus text exposition of what the server counts. Counting on the hot
//! path is a read lock and an atomic add; a label set is allocated once, the
//! first time it is seen. The store's own counters and sizes are read at scrape
//! time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::StatusCode;

use crate::http::{Outcome, Protocol};
use crate::store::Store;

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

/// How an upstream request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamResult {
    Ok,
    NotFound,
    Error,
}

impl UpstreamResult {
    fn as_str(self) -> &'static str {
        match self {
            UpstreamResult::Ok => "ok",
            UpstreamResult::NotFound => "not_found",
            UpstreamResult::Error => "error",
        }
    }
}

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }
}

/// A metric family: one value per combination of label values.
struct Family<V> {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    values: RwLock<BTreeMap<Vec<String>, V>>,
}

impl<V: Default> Family<V> {
    const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Family<V> {
        Family {
            name,
            help,
            labels,
            values: RwLock::new(BTreeMap::new()),
        }
    }

    fn with(&self, label_values: &[&str], f: impl FnOnce(&V)) {
        {
            let values = self.values.read().unwrap_or_else(|e| e.into_inner());
            if let Some(value) = values
                .iter()
                .find(|(k, _)| {
                    k.iter()
                        .map(String::as_str)
                        .eq(label_values.iter().copied())
                })
                .map(|(_, v)| v)
            {
                f(value);
                return;
            }
        }
        let mut values = self.values.write().unwrap_or_else(|e| e.into_inner());
        f(values
            .entry(label_values.iter().map(|s| (*s).to_owned()).collect())
            .or_default());
    }

    fn header(&self, out: &mut String, kind: &str) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {kind}", self.name);
    }

    fn label_text(&self, values: &[String], extra: Option<(&str, &str)>) -> String {
        let mut pairs: Vec<String> = self
            .labels
            .iter()
            .zip(values)
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        if let Some((k, v)) = extra {
            pairs.push(format!("{k}=\"{v}\""));
        }
        if pairs.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", pairs.join(","))
        }
    }
}

impl Family<AtomicU64> {
    fn add(&self, label_values: &[&str], amount: u64) {
        self.with(label_values, |v| {
            v.fetch_add(amount, Ordering::Relaxed);
        });
    }

    fn render(&self, out: &mut String) {
        self.header(out, "counter");
        let values = self.values.read().unwrap_or_else(|e| e.into_inner());
        for (labels, value) in values.iter() {
            let _ = writeln!(
                out,
                "{}{} {}",
                self.name,
                self.label_text(labels, None),
                value.load(Ordering::Relaxed)
            );
        }
    }
}

impl Family<Histogram> {
    fn render(&self, out: &mut String) {
        self.header(out, "histogram");
        let values = self.values.read().unwrap_or_else(|e| e.into_inner());
        for (labels, histogram) in values.iter() {
            for (bound, bucket) in BUCKETS.iter().zip(&histogram.buckets) {
                let le = bound.to_string();
                let _ = writeln!(
                    out,
                    "{}_bucket{} {}",
                    self.name,
                    self.label_text(labels, Some(("le", &le))),
                    bucket.load(Ordering::Relaxed)
                );
            }
            let count = histogram.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{}_bucket{} {count}",
                self.name,
                self.label_text(labels, Some(("le", "+Inf")))
            );
            let sum = histogram.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "{}_sum{} {sum}",
                self.name,
                self.label_text(labels, None)
            );
            let _ = writeln!(
                out,
                "{}_count{} {count}",
                self.name,
                self.label_text(labels, None)
            );
        }
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub struct Metrics {
    requests: Family<AtomicU64>,
    outcomes: Family<AtomicU64>,
    response_bytes: Family<AtomicU64>,
    upstream_requests: Family<AtomicU64>,
    upstream_latency: Family<Histogram>,
    handshake_failures: Family<AtomicU64>,
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
            outcomes: Family::new(
                "mirror_cache_requests_total",
                "Content requests by how they were served (hit, miss, stale, hosted, not_found, invalid, error).",
                &["protocol", "outcome"],
            ),
            response_bytes: Family::new(
                "mirror_response_bytes_total",
                "Response body bytes sent to clients.",
                &["protocol"],
            ),
            upstream_requests: Family::new(
                "mirror_upstream_requests_total",
                "Requests to upstreams, by result.",
                &["protocol", "upstream", "result"],
            ),
            upstream_latency: Family::new(
                "mirror_upstream_request_duration_seconds",
                "Time until an upstream answered (headers), by upstream.",
                &["protocol", "upstream"],
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

    pub fn outcome(&self, protocol: Protocol, outcome: Outcome) {
        self.outcomes.add(&[protocol.as_str(), outcome.as_str()], 1);
    }

    pub fn response_bytes(&self, protocol: Protocol, bytes: u64) {
        self.response_bytes.add(&[protocol.as_str()], bytes);
    }

    pub fn upstream(
        &self,
        protocol: Protocol,
        upstream: &str,
        result: UpstreamResult,
        elapsed: Duration,
    ) {
        self.upstream_requests
            .add(&[protocol.as_str(), upstream, result.as_str()], 1);
        self.upstream_latency
            .with(&[protocol.as_str(), upstream], |h| h.observe(elapsed));
    }

    pub fn handshake_failed(&self, reason: HandshakeFailure) {
        self.handshake_failures.add(&[reason.as_str()], 1);
    }

    /// The whole exposition, including the store's counters and current size.
    pub async fn render(&self, store: &Store) -> String {
        let mut out = String::new();
        self.requests.render(&mut out);
        self.outcomes.render(&mut out);
        self.response_bytes.render(&mut out);
        self.upstream_requests.render(&mut out);
        self.upstream_latency.render(&mut out);
        self.handshake_failures.render(&mut out);
        let counters = store.counters();
        let counter = |out: &mut String, name: &str, help: &str, value: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        };
        counter(
            &mut out,
            "mirror_fills_total",
            "Upstream fills stored.",
            &counters.fills_completed,
        );
        counter(
            &mut out,
            "mirror_fill_failures_total",
            "Upstream fills that failed (upstream error, digest mismatch, invalid content, disk).",
            &counters.fills_failed,
        );
        counter(
            &mut out,
            "mirror_filled_bytes_total",
            "Bytes stored from upstreams.",
            &counters.bytes_filled,
        );
        counter(
            &mut out,
            "mirror_evictions_total",
            "Blobs evicted to stay under cache.max_size.",
            &counters.evicted_blobs,
        );
        counter(
            &mut out,
            "mirror_evicted_bytes_total",
            "Bytes evicted.",
            &counters.evicted_bytes,
        );
        match store.totals().await {
            Ok(totals) => {
                let gauge = |out: &mut String, name: &str, help: &str, value: u64| {
                    let _ = writeln!(
                        out,
                        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
                    );
                };
                gauge(
                    &mut out,
                    "mirror_store_bytes",
                    "Bytes of content in the store.",
                    totals.bytes,
                );
                gauge(
                    &mut out,
                    "mirror_store_blobs",
                    "Blobs in the store.",
                    totals.blobs,
                );
                gauge(
                    &mut out,
                    "mirror_store_hosted_bytes",
                    "Bytes of pushed (never evicted) content.",
                    totals.hosted_bytes,
                );
            }
            Err(error) => tracing::warn!(%error, "metrics: could not read store totals"),
        }
        out
    }
}
