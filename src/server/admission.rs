//! Who may hold a connection. Three limits, counted here and enforced by the
//! listener, which closes whatever this refuses:
//!
//! * `max_connections` in all;
//! * `max_anonymous_per_peer` connections of one IP address (an IPv6 /64, the
//!   least a host is given) that have not authenticated yet (still in the TLS
//!   handshake, or anonymous), so one host cannot crowd out the others;
//! * `max_anonymous`: the part of `max_connections` that anonymous connections
//!   may hold together; the rest is reserved for authenticated ones.
//!
//! A connection moves through three stages. It is *handshaking* from accept
//! until TLS completes: it counts against the total and its address, not the
//! anonymous share, because nobody knows yet whether it carries a certificate
//! (counting it as anonymous would turn certificate holders away exactly when
//! the share is full); the handshake timeout bounds how long it stays. With a
//! verified certificate it becomes *authenticated*; without one it must find
//! room in the anonymous share or is closed. An anonymous connection whose
//! request authenticates (a password) becomes authenticated and leaves the
//! share and its address's count: the slot it held goes back to other
//! anonymous peers, and the connection can no longer be crowded out.
//! Authenticated connections count only against the total, so many real
//! users behind one NAT address are not capped.

use crate::sync::Unpoisoned;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The numbers, resolved from `[limits]`.
#[derive(Clone, Copy, Debug)]
pub struct AdmissionLimits {
    pub max_connections: usize,
    pub max_anonymous: usize,
    pub max_anonymous_per_peer: usize,
}

/// Which limit turned a connection away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    MaxConnections,
    PerPeer,
    AnonymousShare,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::PerPeer => "per_peer",
            Refusal::AnonymousShare => "anonymous_share",
        }
    }
}

const HANDSHAKING: u8 = 0;
const ANONYMOUS: u8 = 1;
const AUTHENTICATED: u8 = 2;

#[derive(Default)]
struct Counts {
    total: usize,
    anonymous: usize,
    /// Handshaking and anonymous connections per address; an address leaves
    /// the map at zero, so it is as large as the unauthenticated connections.
    unauthenticated: HashMap<IpAddr, usize>,
}

pub struct Admission {
    limits: AdmissionLimits,
    counts: Mutex<Counts>,
}

/// One admitted connection's place in the counts; dropping it frees the place.
pub struct Slot {
    admission: Arc<Admission>,
    peer: IpAddr,
    /// HANDSHAKING, ANONYMOUS or AUTHENTICATED; changed only under the counts
    /// lock, read without it where a stale read is harmless.
    stage: AtomicU8,
}

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            counts: Mutex::new(Counts::default()),
        })
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unpoisoned()
    }

    /// A connection just accepted from `peer`, before its TLS handshake.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, Refusal> {
        let peer = host_of(peer);
        let mut counts = self.counts();
        if counts.total >= self.limits.max_connections {
            return Err(Refusal::MaxConnections);
        }
        let of_peer = counts.unauthenticated.entry(peer).or_insert(0);
        if *of_peer >= self.limits.max_anonymous_per_peer {
            return Err(Refusal::PerPeer);
        }
        *of_peer += 1;
        counts.total += 1;
        Ok(Slot {
            admission: self.clone(),
            peer,
            stage: AtomicU8::new(HANDSHAKING),
        })
    }
}

impl Slot {
    /// The handshake is done; `authenticated` if it verified a client certificate.
    pub fn handshake_done(&self, authenticated: bool) -> Result<(), Refusal> {
        let mut counts = self.admission.counts();
        if authenticated {
            leave_peer(&mut counts, self.peer);
            self.stage.store(AUTHENTICATED, Ordering::Relaxed);
            return Ok(());
        }
        if counts.anonymous >= self.admission.limits.max_anonymous {
            return Err(Refusal::AnonymousShare);
        }
        counts.anonymous += 1;
        self.stage.store(ANONYMOUS, Ordering::Relaxed);
        Ok(())
    }

    /// A request on this connection authenticated: it stops counting as anonymous.
    pub fn authenticated(&self) {
        if self.stage.load(Ordering::Relaxed) == AUTHENTICATED {
            return;
        }
        let mut counts = self.admission.counts();
        if self.stage.load(Ordering::Relaxed) == ANONYMOUS {
            counts.anonymous -= 1;
            leave_peer(&mut counts, self.peer);
            self.stage.store(AUTHENTICATED, Ordering::Relaxed);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.admission.counts();
        counts.total -= 1;
        match self.stage.load(Ordering::Relaxed) {
            HANDSHAKING => leave_peer(&mut counts, self.peer),
            ANONYMOUS => {
                counts.anonymous -= 1;
                leave_peer(&mut counts, self.peer);
            }
            _ => {}
        }
    }
}

/// The address that stands for one host: IPv4 as it is (also when it arrives
/// IPv4-mapped on a dual-stack socket), IPv6 cut to its /64, since one host
/// may use any address of its prefix.
fn host_of(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
        v4 => v4,
    }
}

fn leave_peer(counts: &mut Counts, peer: IpAddr) {
    if let Some(of_peer) = counts.unauthenticated.get_mut(&peer) {
        *of_peer -= 1;
        if *of_peer == 0 {
            counts.unauthenticated.remove(&peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission() -> Arc<Admission> {
        Admission::new(AdmissionLimits {
            max_connections: 6,
            max_anonymous: 4,
            max_anonymous_per_peer: 2,
        })
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn one_address_holds_at_most_its_cap_until_a_connection_authenticates() {
        let admission = admission();
        let first = admission.admit(ip(1)).unwrap();
        let _second = admission.admit(ip(1)).unwrap();
        assert_eq!(admission.admit(ip(1)).err(), Some(Refusal::PerPeer));
        assert!(
            admission.admit(ip(2)).is_ok(),
            "other addresses are not affected"
        );
        first.handshake_done(false).unwrap();
        first.authenticated();
        assert!(admission.admit(ip(1)).is_ok());
    }

    #[test]
    fn anonymous_connections_cannot_take_the_reserved_share() {
        let admission = admission();
        let anonymous: Vec<Slot> = (1..=4)
            .map(|n| {
                let slot = admission.admit(ip(n)).unwrap();
                slot.handshake_done(false).unwrap();
                slot
            })
            .collect();
        let late = admission.admit(ip(5)).unwrap();
        assert_eq!(late.handshake_done(false), Err(Refusal::AnonymousShare));
        late.handshake_done(true).unwrap();
        let sixth = admission.admit(ip(6)).unwrap();
        sixth.handshake_done(true).unwrap();
        assert_eq!(admission.admit(ip(7)).err(), Some(Refusal::MaxConnections));
        drop(anonymous);
        let counts = admission.counts();
        assert_eq!((counts.total, counts.anonymous), (2, 0));
        assert!(counts.unauthenticated.is_empty());
    }

    #[test]
    fn addresses_of_one_ipv6_prefix_or_mapped_ipv4_count_as_one_host() {
        let admission = admission();
        let _a = admission.admit("2001:db8:1:2::1".parse().unwrap()).unwrap();
        let _b = admission
            .admit("2001:db8:1:2:ffff::9".parse().unwrap())
            .unwrap();
        assert_eq!(
            admission.admit("2001:db8:1:2::77".parse().unwrap()).err(),
            Some(Refusal::PerPeer)
        );
        assert!(admission.admit("2001:db8:1:3::1".parse().unwrap()).is_ok());
        let _c = admission.admit("::ffff:10.0.0.1".parse().unwrap()).unwrap();
        let _d = admission.admit(ip(1)).unwrap();
        assert_eq!(admission.admit(ip(1)).err(), Some(Refusal::PerPeer));
    }

    #[test]
    fn an_authenticated_request_frees_the_anonymous_place() {
        let admission = admission();
        let slot = admission.admit(ip(1)).unwrap();
        slot.handshake_done(false).unwrap();
        slot.authenticated();
        slot.authenticated();
        assert_eq!(admission.counts().anonymous, 0);
        drop(slot);
        assert_eq!(admission.counts().total, 0);
    }
}
