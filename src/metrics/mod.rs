//! Prometheus text exposition of what the server counts. What every request
//! counts is an array slot and an atomic add (`hot`); upstream requests and
//! handshake failures are labelled families (`family`). The store's own
//! counters and sizes are read at scrape time.

mod family;
mod hot;
mod replica;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use family::{Family, Histogram};

use http::StatusCode;

use crate::store::Store;
use crate::wire::{Outcome, Protocol};

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
    /// Plain HTTP sent to the TLS port (answered with a 400 naming the https URL).
    PlainHttp,
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
            HandshakeFailure::PlainHttp => "plain_http",
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

pub struct Metrics {
    requests: hot::RequestCounters,
    upstream_requests: Family<AtomicU64>,
    upstream_latency: Family<Histogram>,
    handshake_failures: Family<AtomicU64>,
    connections_refused: Family<AtomicU64>,
    go_checksum: Family<AtomicU64>,
    /// `[cluster] replica`, a label on every series; `None` on a single node.
    replica: Option<String>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            requests: hot::RequestCounters::default(),
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
            connections_refused: Family::new(
                "mirror_connections_refused_total",
                "Connections closed by a connection limit, by limit.",
                &["reason"],
            ),
            go_checksum: Family::new(
                "mirror_go_checksum_checks_total",
                "Go module files checked against a checksum database, by result \
                 (verified, mismatch, not_found, unreachable, invalid, fork, rollback).",
                &["database", "result"],
            ),
            replica: None,
        }
    }

    /// Labels every series with `replica="<name>"` (`[cluster] replica`).
    pub fn for_replica(self, name: Option<&str>) -> Metrics {
        Metrics {
            replica: name.map(str::to_owned),
            ..self
        }
    }

    pub fn request(&self, protocol: Protocol, status: StatusCode) {
        self.requests.request(protocol, status);
    }

    pub fn outcome(&self, protocol: Protocol, outcome: Outcome) {
        self.requests.outcome(protocol, outcome);
    }

    pub fn response_bytes(&self, protocol: Protocol, bytes: u64) {
        self.requests.response_bytes(protocol, bytes);
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

    /// `reason` names the limit: `max_connections`, `per_peer`, `anonymous_share`.
    pub fn connection_refused(&self, reason: &'static str) {
        self.connections_refused.add(&[reason], 1);
    }

    /// One `.mod` or `.zip` checked against checksum database `database`.
    pub fn go_checksum(&self, database: &str, result: &'static str) {
        self.go_checksum.add(&[database, result], 1);
    }

    /// The whole exposition, including the store's counters and current size.
    pub async fn render(&self, store: &Store) -> String {
        let mut out = String::new();
        self.requests.render(&mut out);
        self.upstream_requests.render(&mut out);
        self.upstream_latency.render(&mut out);
        self.handshake_failures.render(&mut out);
        self.connections_refused.render(&mut out);
        self.go_checksum.render(&mut out);
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
        counter(
            &mut out,
            "mirror_quarantined_blobs_total",
            "Stored blobs that failed their digest check when read, moved to data_dir/quarantine/.",
            &counters.quarantined_blobs,
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
        let leader = "mirror_upkeep_leader";
        let _ = writeln!(
            out,
            "# HELP {leader} 1 while this process runs eviction, sweeps and audit retention \
             (always on a SQLite index; one replica of those sharing a PostgreSQL index).\n\
             # TYPE {leader} gauge\n{leader} {}",
            u8::from(store.is_upkeep_leader())
        );
        let in_flight = "mirror_fill_bytes_in_flight";
        let _ = writeln!(
            out,
            "# HELP {in_flight} Bytes that fills in progress hold in tmp/ (counted against cache.max_size).\n\
             # TYPE {in_flight} gauge\n{in_flight} {}",
            store.fill_bytes_in_flight()
        );
        match &self.replica {
            Some(name) => replica::label_every_series(&out, name),
            None => out,
        }
    }
}
