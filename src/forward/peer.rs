//! Who may use a forwarder on loopback: every local user can reach
//! 127.0.0.1, and whoever connects acts with the certificate, so a loopback
//! forwarder serves only the user who runs it (and root, who can read the key
//! anyway). The kernel names the owner of the client's end of a loopback TCP
//! connection in its socket table (`/proc/net/tcp`, `/proc/net/tcp6`), as
//! identd did; a connection it cannot place is refused. Elsewhere than Linux
//! there is no such table: every local user is admitted, and a warning says so.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::certs::Identity;
use super::refusal::Refusal;

/// Which connections a forwarder serves.
pub struct Admission {
    /// The uid allowed besides root; `None` admits anyone (off loopback).
    owner: Option<u32>,
    subject: String,
}

impl Admission {
    /// Only the forwarder's own user (and root).
    pub fn same_user(identity: &Identity) -> Admission {
        let owner = own_uid();
        if owner.is_none() {
            tracing::warn!(
                "this system cannot tell which user a local connection is from: every local user \
                 can act with the certificate's identity"
            );
        }
        Admission {
            owner,
            subject: identity.subject.clone(),
        }
    }

    /// Anyone who reaches the port: `--allow-non-loopback`.
    pub fn anyone() -> Admission {
        Admission {
            owner: None,
            subject: String::new(),
        }
    }

    /// `Ok` when the client at `peer`, connected to our `local`, may act with the certificate.
    pub async fn check(&self, peer: SocketAddr, local: SocketAddr) -> Result<(), Refusal> {
        let Some(owner) = self.owner else {
            return Ok(());
        };
        match owner_of(peer, local).await {
            Some(uid) if uid == owner || uid == 0 => Ok(()),
            Some(uid) => Err(Refusal::new(format!(
                "mirror forward: this forwarder acts with the certificate of {} and serves only \
                 its own user (uid {owner}); this connection is from uid {uid}\n",
                crate::escape::escape(&self.subject)
            ))),
            None => Err(unplaced()),
        }
    }
}

/// A connection whose user the socket table does not show.
pub fn unplaced() -> Refusal {
    Refusal::new(
        "mirror forward: cannot tell which user this connection is from, so it is not served\n"
            .into(),
    )
}

#[cfg(target_os = "linux")]
fn own_uid() -> Option<u32> {
    Some(rustix::process::getuid().as_raw())
}

#[cfg(not(target_os = "linux"))]
fn own_uid() -> Option<u32> {
    None
}

/// The uid owning the client socket of the connection `peer` → `local`.
async fn owner_of(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = tokio::fs::read_to_string(table).await else {
            continue;
        };
        if let Some(uid) = find_owner(&text, peer, local) {
            return Some(uid);
        }
    }
    None
}

/// In a socket table, the uid of the socket whose own address is `peer` and
/// whose remote address is `local`: the client's end of our connection.
fn find_owner(table: &str, peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let (peer, local) = (canonical(peer), canonical(local));
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (own, remote, uid) = (fields.get(1)?, fields.get(2)?, fields.get(7)?);
        (parse_addr(own)? == peer && parse_addr(remote)? == local)
            .then(|| uid.parse().ok())
            .flatten()
    })
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// `0100007F:1F90`: the address as the kernel's in-memory words in hex, the port in hex.
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words = (0..ip.len() / 8)
        .map(|i| {
            ip.get(i * 8..i * 8 + 8)
                .and_then(|w| u32::from_str_radix(w, 16).ok())
        })
        .collect::<Option<Vec<u32>>>()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        32 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => return None,
    };
    Some(canonical(SocketAddr::new(ip, port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two ends of one loopback connection (client 127.0.0.1:53210 as uid 1000 →
    // forwarder 127.0.0.1:5080 as uid 0) and the listener, as /proc/net/tcp shows
    // them on a little-endian machine.
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:13D8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:13D8 0100007F:CFDA 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:CFDA 0100007F:13D8 01 00000000:00000000 00:00000000 00000000  1000        0 3 1 0000000000000000 20 4 30 10 -1
";

    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:CFDB 00000000000000000000000001000000:13D8 01 00000000:00000000 00:00000000 00000000  1001        0 4 1 0000000000000000 20 4 30 10 -1
";

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn the_client_end_of_a_loopback_connection_names_its_user() {
        let (peer, local) = (addr("127.0.0.1:53210"), addr("127.0.0.1:5080"));
        assert_eq!(find_owner(TCP, peer, local), Some(1000));
        assert_eq!(find_owner(TCP, local, peer), Some(0), "the other end");
        assert_eq!(find_owner(TCP, addr("127.0.0.1:53211"), local), None);
        assert_eq!(
            find_owner(TCP6, addr("[::1]:53211"), addr("[::1]:5080")),
            Some(1001)
        );
    }

    #[test]
    fn a_live_loopback_connection_is_placed_as_this_process_user() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let uid = runtime.block_on(owner_of(peer, listener.local_addr().unwrap()));
        assert_eq!(uid, own_uid());
    }
}
