//! Decoding what the report shows of a frame: addresses, ports, a response's status code.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::capture::{ETH_P_IP, ETH_P_IPV6, be16};

/// What the report needs from a frame: a minimal parse, the programs do the real one.
pub(super) struct Headers {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ports: Option<(u16, u16)>,
    /// A UDP SIP message's User-Agent, for the report of a scanner's ban.
    pub user_agent: Option<String>,
}

/// Ethernet, up to two VLAN tags, the IPv4 or IPv6 fixed header, UDP/TCP ports. `None` for
/// frames that are not IP or are cut before the addresses.
pub(super) fn headers(f: &[u8]) -> Option<Headers> {
    let mut at = 12;
    let mut ethertype = be16(f, at)?;
    for _ in 0..2 {
        if ethertype != 0x8100 && ethertype != 0x88a8 {
            break;
        }
        at += 4;
        ethertype = be16(f, at)?;
    }
    let l3 = at + 2;
    let (src, dst, proto, l4) = match ethertype {
        ETH_P_IP => {
            let ip = f.get(l3..l3 + 20)?;
            let src = Ipv4Addr::from(<[u8; 4]>::try_from(&ip[12..16]).ok()?);
            let dst = Ipv4Addr::from(<[u8; 4]>::try_from(&ip[16..20]).ok()?);
            // A non-first fragment has no transport header.
            let first = be16(ip, 6)? & 0x1fff == 0;
            let proto = first.then_some(ip[9]);
            (
                src.into(),
                dst.into(),
                proto,
                l3 + usize::from(ip[0] & 0x0f) * 4,
            )
        }
        ETH_P_IPV6 => {
            let ip = f.get(l3..l3 + 40)?;
            let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).ok()?);
            let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).ok()?);
            // Extension headers are not walked: ports are only shown when UDP/TCP follows.
            (src.into(), dst.into(), Some(ip[6]), l3 + 40)
        }
        _ => return None,
    };
    let transport = matches!(proto, Some(6 | 17));
    let ports = transport
        .then(|| Some((be16(f, l4)?, be16(f, l4 + 2)?)))
        .flatten();
    let user_agent = (proto == Some(17))
        .then(|| f.get(l4 + 8..))
        .flatten()
        .and_then(user_agent);
    Some(Headers {
        src,
        dst,
        ports,
        user_agent,
    })
}

/// The value of the User-Agent header of a SIP message's header section.
fn user_agent(msg: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(msg);
    let head = text.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("user-agent")
            .then(|| value.trim().to_string())
    })
}
