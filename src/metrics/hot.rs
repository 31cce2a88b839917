//! The counters every request touches, each label set a slot in an array
//! indexed by small enums (protocol, outcome) and the status code: counting is
//! an index and an atomic add, with no lookup and no lock. Rendered in the
//! same exposition as the other families; never-counted slots are left out.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use http::StatusCode;

use crate::wire::{Outcome, Protocol};

/// In exposition (label) order.
const PROTOCOLS: [Protocol; 3] = [Protocol::Go, Protocol::Internal, Protocol::Oci];
const OUTCOMES: [Outcome; 7] = [
    Outcome::Error,
    Outcome::Hit,
    Outcome::Hosted,
    Outcome::Invalid,
    Outcome::Miss,
    Outcome::NotFound,
    Outcome::Stale,
];
/// `StatusCode` holds 100..=999.
const FIRST_STATUS: usize = 100;
const STATUSES: usize = 900;

fn protocol_slot(protocol: Protocol) -> usize {
    match protocol {
        Protocol::Go => 0,
        Protocol::Internal => 1,
        Protocol::Oci => 2,
    }
}

fn outcome_slot(outcome: Outcome) -> usize {
    match outcome {
        Outcome::Error => 0,
        Outcome::Hit => 1,
        Outcome::Hosted => 2,
        Outcome::Invalid => 3,
        Outcome::Miss => 4,
        Outcome::NotFound => 5,
        Outcome::Stale => 6,
    }
}

fn zeros(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

pub struct RequestCounters {
    /// protocol × status.
    requests: Box<[AtomicU64]>,
    /// protocol × outcome.
    outcomes: Box<[AtomicU64]>,
    /// Per protocol.
    response_bytes: Box<[AtomicU64]>,
}

impl Default for RequestCounters {
    fn default() -> Self {
        RequestCounters {
            requests: zeros(PROTOCOLS.len() * STATUSES),
            outcomes: zeros(PROTOCOLS.len() * OUTCOMES.len()),
            response_bytes: zeros(PROTOCOLS.len()),
        }
    }
}

fn add(cells: &[AtomicU64], slot: usize, amount: u64) {
    if let Some(cell) = cells.get(slot) {
        cell.fetch_add(amount, Ordering::Relaxed);
    }
}

fn header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
}

impl RequestCounters {
    pub fn request(&self, protocol: Protocol, status: StatusCode) {
        let status = usize::from(status.as_u16()).saturating_sub(FIRST_STATUS);
        add(
            &self.requests,
            protocol_slot(protocol) * STATUSES + status,
            1,
        );
    }

    pub fn outcome(&self, protocol: Protocol, outcome: Outcome) {
        add(
            &self.outcomes,
            protocol_slot(protocol) * OUTCOMES.len() + outcome_slot(outcome),
            1,
        );
    }

    pub fn response_bytes(&self, protocol: Protocol, bytes: u64) {
        add(&self.response_bytes, protocol_slot(protocol), bytes);
    }

    pub fn render(&self, out: &mut String) {
        let counted = |cells: &[AtomicU64], slot: usize| {
            cells
                .get(slot)
                .map_or(0, |cell| cell.load(Ordering::Relaxed))
        };
        let name = "mirror_http_requests_total";
        header(out, name, "HTTP requests answered, by protocol and status.");
        for protocol in PROTOCOLS {
            for status in 0..STATUSES {
                let slot = protocol_slot(protocol) * STATUSES + status;
                let n = counted(&self.requests, slot);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "{name}{{protocol=\"{}\",status=\"{}\"}} {n}",
                        protocol.as_str(),
                        status + FIRST_STATUS
                    );
                }
            }
        }
        let name = "mirror_cache_requests_total";
        header(
            out,
            name,
            "Content requests by how they were served (hit, miss, stale, hosted, not_found, invalid, error).",
        );
        for protocol in PROTOCOLS {
            for outcome in OUTCOMES {
                let slot = protocol_slot(protocol) * OUTCOMES.len() + outcome_slot(outcome);
                let n = counted(&self.outcomes, slot);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "{name}{{protocol=\"{}\",outcome=\"{}\"}} {n}",
                        protocol.as_str(),
                        outcome.as_str()
                    );
                }
            }
        }
        let name = "mirror_response_bytes_total";
        header(out, name, "Response body bytes sent to clients.");
        for protocol in PROTOCOLS {
            let n = counted(&self.response_bytes, protocol_slot(protocol));
            if n > 0 {
                let _ = writeln!(out, "{name}{{protocol=\"{}\"}} {n}", protocol.as_str());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_label_sets_render_in_label_order_and_others_not_at_all() {
        let counters = RequestCounters::default();
        counters.request(Protocol::Oci, StatusCode::NOT_FOUND);
        counters.request(Protocol::Oci, StatusCode::OK);
        counters.request(Protocol::Oci, StatusCode::OK);
        counters.request(Protocol::Go, StatusCode::GONE);
        counters.outcome(Protocol::Oci, Outcome::Hit);
        counters.outcome(Protocol::Oci, Outcome::Error);
        counters.response_bytes(Protocol::Oci, 10);
        counters.response_bytes(Protocol::Oci, 5);
        let mut out = String::new();
        counters.render(&mut out);
        let lines: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                r#"mirror_http_requests_total{protocol="go",status="410"} 1"#,
                r#"mirror_http_requests_total{protocol="oci",status="200"} 2"#,
                r#"mirror_http_requests_total{protocol="oci",status="404"} 1"#,
                r#"mirror_cache_requests_total{protocol="oci",outcome="error"} 1"#,
                r#"mirror_cache_requests_total{protocol="oci",outcome="hit"} 1"#,
                r#"mirror_response_bytes_total{protocol="oci"} 15"#,
            ]
        );
    }
}
