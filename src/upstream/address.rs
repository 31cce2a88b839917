//! Which network an IP address is on, as the redirect and token-realm rules
//! see it: the public internet, or one of the networks an upstream must not
//! steer the mirror into (this host, the local network, link-local services
//! such as cloud metadata at 169.254.169.254). Pure functions, no I/O.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The kind of network an address is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Public,
    /// 127/8, ::1, and the unspecified 0.0.0.0/8 and ::, which Linux connects to this host.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16, 100.64/10 (carrier-grade NAT, VPN overlays), fc00::/7, fec0::/10.
    Private,
    /// 169.254/16 and fe80::/10.
    LinkLocal,
    /// Multicast, broadcast and reserved space: nothing an upstream can be on.
    Unroutable,
}

impl Class {
    fn bit(self) -> u8 {
        match self {
            Class::Public => 1,
            Class::Loopback => 2,
            Class::Private => 4,
            Class::LinkLocal => 8,
            Class::Unroutable => 16,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Class::Public => "public",
            Class::Loopback => "loopback",
            Class::Private => "private",
            Class::LinkLocal => "link-local",
            Class::Unroutable => "unroutable",
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of classes, small enough to live in an atomic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Classes(pub(super) u8);

impl Classes {
    pub fn with(self, class: Class) -> Classes {
        Classes(self.0 | class.bit())
    }

    pub fn contains(self, class: Class) -> bool {
        self.0 & class.bit() != 0
    }
}

pub fn class_of(ip: IpAddr) -> Class {
    match ip {
        IpAddr::V4(v4) => class_of_v4(v4),
        IpAddr::V6(v6) => class_of_v6(v6),
    }
}

fn class_of_v4(ip: Ipv4Addr) -> Class {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() || a == 0 {
        Class::Loopback
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        Class::Private
    } else if ip.is_link_local() {
        Class::LinkLocal
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Class::Unroutable
    } else {
        Class::Public
    }
}

fn class_of_v6(ip: Ipv6Addr) -> Class {
    // Mapped (::ffff:a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) addresses reach the
    // IPv4 address inside them.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return class_of_v4(v4);
    }
    let segments = ip.segments();
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., a, b, c, d] = ip.octets();
        return class_of_v4(Ipv4Addr::new(a, b, c, d));
    }
    let first = segments[0];
    if ip.is_loopback() || ip.is_unspecified() {
        Class::Loopback
    } else if first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfec0 {
        Class::Private
    } else if first & 0xffc0 == 0xfe80 {
        Class::LinkLocal
    } else if ip.is_multicast() || segments[..6] == [0; 6] {
        // The rest of ::/96 is the deprecated IPv4-compatible form.
        Class::Unroutable
    } else {
        Class::Public
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(text: &str) -> Class {
        class_of(text.parse().unwrap())
    }

    #[test]
    fn addresses_of_this_host_are_loopback() {
        for ip in [
            "127.0.0.1",
            "127.255.0.9",
            "0.0.0.0",
            "0.1.2.3",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:0.0.0.0",
            "64:ff9b::127.0.0.1",
        ] {
            assert_eq!(class(ip), Class::Loopback, "{ip}");
        }
    }

    #[test]
    fn local_networks_are_private_or_link_local() {
        for ip in [
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.254",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "fc00::1",
            "fd12:3456::1",
            "fec0::1",
            "::ffff:10.1.2.3",
            "::ffff:192.168.0.1",
            "64:ff9b::10.0.0.1",
        ] {
            assert_eq!(class(ip), Class::Private, "{ip}");
        }
        for ip in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "febf::1",
            "::ffff:169.254.169.254",
        ] {
            assert_eq!(class(ip), Class::LinkLocal, "{ip}");
        }
    }

    #[test]
    fn the_neighbours_of_private_ranges_are_public() {
        for ip in [
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.1",
            "192.167.255.255",
            "192.169.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.255.255",
            "11.0.0.1",
            "126.255.255.255",
            "128.0.0.1",
            "198.51.100.7",
            "2606:4700::1111",
            "fbff::1",
            "fe00::1",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
        ] {
            assert_eq!(class(ip), Class::Public, "{ip}");
        }
    }

    #[test]
    fn multicast_broadcast_and_reserved_are_unroutable() {
        for ip in [
            "224.0.0.1",
            "239.255.255.255",
            "255.255.255.255",
            "240.0.0.1",
            "ff02::1",
            "::10.0.0.1",
        ] {
            assert_eq!(class(ip), Class::Unroutable, "{ip}");
        }
    }

    #[test]
    fn class_sets_hold_what_was_added() {
        let set = Classes::default().with(Class::Loopback);
        assert!(set.contains(Class::Loopback));
        assert!(!set.contains(Class::Private));
        assert!(!Classes::default().contains(Class::Public));
    }
}
