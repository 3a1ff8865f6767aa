//! Addresses as the dataplane stores them: 16 bytes, IPv4 mapped into IPv6 (`::ffff:a.b.c.d`),
//! prefix lengths in that 128-bit space.
use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;
use sip_filter_common::V4_MAPPED_PREFIX;

pub fn to_key(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

pub fn from_key(key: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(key);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// A network as an LPM key: (prefix length in the mapped space, masked address).
pub fn net_to_lpm(net: IpNet) -> (u32, [u8; 16]) {
    let net = net.trunc();
    match net {
        IpNet::V4(n) => (
            V4_MAPPED_PREFIX + u32::from(n.prefix_len()),
            to_key(IpAddr::V4(n.network())),
        ),
        IpNet::V6(n) => (u32::from(n.prefix_len()), n.network().octets()),
    }
}

/// The inverse of [`net_to_lpm`].
pub fn lpm_to_net(prefix: u32, key: [u8; 16]) -> IpNet {
    match from_key(key) {
        IpAddr::V4(v4) if prefix >= V4_MAPPED_PREFIX => {
            IpNet::new(IpAddr::V4(v4), (prefix - V4_MAPPED_PREFIX) as u8).expect("valid prefix")
        }
        ip => IpNet::new(
            IpAddr::V6(match ip {
                IpAddr::V6(v6) => v6,
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            }),
            prefix.min(128) as u8,
        )
        .expect("valid prefix"),
    }
}

/// The key a source is banned under: IPv4 as is, IPv6 masked to `v6_prefix` (like the kernel).
pub fn ban_key(ip: IpAddr, v6_prefix: u8) -> [u8; 16] {
    match ip {
        IpAddr::V4(_) => to_key(ip),
        IpAddr::V6(v6) => {
            let mask = sip_filter_common::Config::v6_mask_for(v6_prefix);
            let mut k = v6.octets();
            for (b, m) in k.iter_mut().zip(mask) {
                *b &= m;
            }
            k
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in ["192.0.2.1", "2001:db8::1"] {
            let ip: IpAddr = s.parse().unwrap();
            assert_eq!(from_key(to_key(ip)), ip);
        }
        for s in ["192.0.2.0/24", "2001:db8::/32", "0.0.0.0/0"] {
            let n: IpNet = s.parse().unwrap();
            let (p, k) = net_to_lpm(n);
            assert_eq!(lpm_to_net(p, k), n);
        }
        assert_eq!(
            ban_key("2001:db8:1:2:3:4:5:6".parse().unwrap(), 64),
            to_key("2001:db8:1:2::".parse().unwrap())
        );
    }
}
