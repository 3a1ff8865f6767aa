//! Deterministic inputs: the frames the figures are measured with, random geo prefixes and
//! many distinct sources. A fixed seed makes every run measure the same tables.
use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::{
    packet::Packet,
    sip::{self, Creds},
};

/// The PBX the test frames are addressed to.
pub const PBX_V4: &str = "203.0.113.1";
pub const PBX_V6: &str = "2001:db8:5::5";
/// A client that is neither banned nor geo-blocked.
pub const CLIENT_V4: &str = "203.0.113.50";
/// Banned sources (part 1, part 5, and the flood of part 2).
pub const BANNED_V4: &str = "198.51.100.66";
pub const BANNED_V6: &str = "2001:db8:66::5";

/// Geo probes. Each geo table of part 1 holds [`GEO_PINNED`] besides its random prefixes, so
/// that these addresses take the same path through the table at every size: the IPv4 probes
/// read one word of the /24 bitmap (a blocked /24, and an unblocked /24 whose word has other
/// bits set); the IPv6 probes walk /16, /32 and hit or miss at /48. These are the longest walks
/// the random tables produce (prefixes longer than /24 would add one /32 hash lookup).
pub const GEO_BLOCKED_V4: &str = "198.51.100.7";
pub const GEO_PASS_V4: &str = "192.0.2.7";
pub const GEO_BLOCKED_V6: &str = "2001:db8:1::7";
pub const GEO_PASS_V6: &str = "2001:db8:2::7";
pub const GEO_PINNED: [&str; 3] = ["198.51.100.0/24", "192.0.0.0/24", "2001:db8:1::/48"];

/// SplitMix64: tiny, deterministic, good enough to spread addresses.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// `n` random geo prefixes (plus [`GEO_PINNED`] when `n > 0`), shaped like a country table:
/// 55% IPv4 /24s, 5% IPv4 /20s, 40% IPv6 /48s under 2,048 /32s (allocations cluster).
///
/// The ranges are chosen so that no two prefixes overlap or are adjacent halves of a shorter
/// one, so the table holds exactly `n` prefixes after `GeoTable::build` aggregates:
/// /24s take first octets 1-99 and even third octets only, /20s first octets 128-191 and even
/// /20 numbers only, /48s even /48 numbers only. At 500k prefixes the compiled table has about
/// 880k nodes, inside GEO_NODES (1,048,576).
pub fn geo_prefixes(n: usize) -> Vec<IpNet> {
    if n == 0 {
        return Vec::new();
    }
    let mut out: Vec<IpNet> = GEO_PINNED.iter().map(|p| p.parse().unwrap()).collect();
    let random = n.saturating_sub(out.len());
    let n24 = random * 55 / 100;
    let n20 = random * 5 / 100;
    let n48 = random - n24 - n20;
    let mut rng = Rng::new(0x5eed_0001);
    let mut seen = HashSet::new();
    while seen.len() < n24 {
        let a = 1 + rng.below(99) as u32;
        let b = rng.below(256) as u32;
        let c = 2 * rng.below(128) as u32;
        let net = (a << 24) | (b << 16) | (c << 8);
        if seen.insert(net) {
            out.push(IpNet::V4(Ipv4Net::new(Ipv4Addr::from(net), 24).unwrap()));
        }
    }
    seen.clear();
    while seen.len() < n20 {
        let a = 128 + rng.below(64) as u32;
        let idx = 2 * rng.below(2048) as u32; // even /20 number within the /8
        let net = (a << 24) | (idx << 12);
        if seen.insert(net) {
            out.push(IpNet::V4(Ipv4Net::new(Ipv4Addr::from(net), 20).unwrap()));
        }
    }
    let mut seen6 = HashSet::new();
    while seen6.len() < n48 {
        let top = 0x2a00_0000u128 + u128::from(rng.below(2048) as u32);
        let idx = 2 * u128::from(rng.below(32_768) as u32);
        let net = (top << 96) | (idx << 80);
        if seen6.insert(net) {
            out.push(IpNet::V6(Ipv6Net::new(Ipv6Addr::from(net), 48).unwrap()));
        }
    }
    out
}

/// `n` distinct addresses, each inside a different random /24 of [`geo_prefixes`] (so blocked
/// by any table built from at least that many prefixes).
pub fn blocked_sources(prefixes: &[IpNet], n: usize) -> Vec<IpAddr> {
    let mut rng = Rng::new(0x5eed_0002);
    let pinned: Vec<IpNet> = GEO_PINNED.iter().map(|p| p.parse().unwrap()).collect();
    prefixes
        .iter()
        .filter(|p| !pinned.contains(p))
        .filter_map(|p| match p {
            IpNet::V4(v4) if v4.prefix_len() == 24 => {
                let host = 1 + rng.below(254) as u32;
                Some(IpAddr::V4(Ipv4Addr::from(u32::from(v4.network()) | host)))
            }
            _ => None,
        })
        .take(n)
        .collect()
}

/// `n` distinct IPv4 addresses that no table of [`geo_prefixes`] blocks (odd third octet in the
/// /24 range), whose /16 is nevertheless PARTIAL in a large table: the lookup goes one level
/// down and misses there.
pub fn passing_sources(n: usize, seed: u64) -> Vec<IpAddr> {
    let mut rng = Rng::new(seed);
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let a = 1 + rng.below(99) as u32;
        let b = rng.below(256) as u32;
        let c = 2 * rng.below(128) as u32 + 1;
        let d = 1 + rng.below(254) as u32;
        let ip = (a << 24) | (b << 16) | (c << 8) | d;
        if seen.insert(ip) {
            out.push(IpAddr::V4(Ipv4Addr::from(ip)));
        }
    }
    out
}

/// `n` distinct IPv4 addresses in 100.64.0.0/10 (outside every geo table), for bans.
pub fn ban_sources(n: usize) -> Vec<IpAddr> {
    let mut rng = Rng::new(0x5eed_0003);
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let ip = 0x6440_0000u32 | (rng.below(1 << 22) as u32);
        if seen.insert(ip) {
            out.push(IpAddr::V4(Ipv4Addr::from(ip)));
        }
    }
    out
}

fn pbx_for(src: IpAddr) -> &'static str {
    if src.is_ipv4() { PBX_V4 } else { PBX_V6 }
}

/// A non-SIP UDP packet: an RTP-sized datagram (G.711, 20 ms: 12 + 160 bytes) to port 5004.
pub fn rtp(src: IpAddr) -> Vec<u8> {
    let mut payload = vec![0u8; 172];
    payload[0] = 0x80; // RTP version 2
    Packet::udp(&src.to_string(), 40_000, pbx_for(src), 5004, payload).build()
}

/// The 600-byte REGISTER of the issue: credentials in its last header.
pub fn register600_msg() -> String {
    sip::padded_register("101", CLIENT_V4, Creds::Header("Authorization:"), 600)
}

/// `msg` from `src`:`sport` to the PBX's SIP port, over UDP (or, `tcp`, in one segment).
fn to_pbx(src: IpAddr, sport: u16, msg: String, tcp: bool) -> Vec<u8> {
    let (from, to) = (src.to_string(), pbx_for(src));
    let p = if tcp {
        Packet::tcp_data(&from, sport, to, 5060, msg)
    } else {
        Packet::udp(&from, sport, to, 5060, msg)
    };
    p.build()
}

pub fn register600(src: IpAddr, sport: u16) -> Vec<u8> {
    to_pbx(src, sport, register600_msg(), false)
}

/// `register600` in one TCP segment.
pub fn register600_tcp(src: IpAddr, sport: u16) -> Vec<u8> {
    to_pbx(src, sport, register600_msg(), true)
}

/// A 1,200-byte INVITE as softphones send it: a dozen headers, `Proxy-Authorization`, and an
/// SDP offer with several codecs (padded with attribute lines to exactly 1,200 bytes).
pub fn invite1200_msg() -> String {
    invite1200_msg_to("201")
}

/// `invite1200_msg` dialling `user` (its Request-URI and To), still exactly 1,200 bytes.
pub fn invite1200_msg_to(user: &str) -> String {
    let host = CLIENT_V4;
    let build = |pad: usize| {
        let mut sdp = format!(
            "v=0\r\no=- 3711 3711 IN IP4 {host}\r\ns=call\r\nc=IN IP4 {host}\r\nt=0 0\r\n\
             m=audio 40000 RTP/AVP 9 0 8 18 101\r\na=rtpmap:9 G722/8000\r\n\
             a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:18 G729/8000\r\n\
             a=fmtp:18 annexb=no\r\na=rtpmap:101 telephone-event/8000\r\n\
             a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
        );
        if pad > 0 {
            sdp.push_str(&format!("a=x-pad:{}\r\n", "p".repeat(pad)));
        }
        format!(
            "INVITE sip:{user}@pbx.example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP {host}:5060;branch=z9hG4bK-inv-77;rport\r\n\
             Max-Forwards: 70\r\n\
             From: \"Alice\" <sip:101@pbx.example.com>;tag=a1b2c3\r\n\
             To: <sip:{user}@pbx.example.com>\r\n\
             Call-ID: 9876543210fedcba@{host}\r\n\
             CSeq: 2 INVITE\r\n\
             Contact: <sip:101@{host}:5060>\r\n\
             Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, NOTIFY, MESSAGE, SUBSCRIBE, INFO, UPDATE\r\n\
             Supported: replaces, timer, 100rel\r\n\
             Session-Expires: 1800\r\n\
             User-Agent: fixture/1.0\r\n\
             Proxy-Authorization: Digest username=\"101\", realm=\"pbx.example.com\", \
             nonce=\"5f1c1e8d0b6a4c1f9f2d\", uri=\"sip:201@pbx.example.com\", \
             response=\"0123456789abcdef0123456789abcdef\", algorithm=MD5\r\n\
             Content-Type: application/sdp\r\n\
             Content-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        )
    };
    // The padding line costs 10 bytes besides its filler, and Content-Length may gain a digit:
    // search the filler length that lands exactly on 1,200.
    (1..1200)
        .map(build)
        .find(|m| m.len() == 1200)
        .expect("an INVITE of exactly 1,200 bytes")
}

pub fn invite1200(src: IpAddr, sport: u16) -> Vec<u8> {
    invite1200_to(src, sport, "201")
}

/// `invite1200` dialling `user`.
pub fn invite1200_to(src: IpAddr, sport: u16, user: &str) -> Vec<u8> {
    to_pbx(src, sport, invite1200_msg_to(user), false)
}

/// The call rules of the benchmark's "10 rules" dataplane: the README's plan, the default
/// high-risk list off so that the table holds exactly these.
pub const CALL_RULES_10: &str = r#"
[calls]
country_code = "1"
timezone = "UTC"
business_hours = ["Mon-Sun 00:00-24:00"]
default_block = false
block = ["+882", "+883", "+881", "+53", "+252", "+232", "+224"]
allow = ["+1", "+44"]
after_hours_block = ["+"]
"#;

/// A number the probes dial: international, let through in business hours. In the 10-rule
/// table the `"+"` rule decides it; in the big table a rule as long as any of its own.
pub const CALL_PROBE: &str = "+4930123456";

/// `CALL_RULES_10` with `n` more rules: random 4-to-7-digit prefixes under +2 to +9 (none
/// under +1, whose national forms would double the table), alternately block and allow, plus
/// an allow rule for the probe's first seven digits.
pub fn call_rules_many(n: usize) -> String {
    let mut rng = Rng::new(0x5eed_ca11);
    let mut set = std::collections::BTreeSet::new();
    while set.len() < n {
        let len = 4 + rng.below(4);
        let mut p = (2 + rng.below(8)).to_string();
        for _ in 1..len {
            p.push(char::from(b'0' + rng.below(10) as u8));
        }
        if !CALL_PROBE[1..].starts_with(&p) {
            set.insert(p);
        }
    }
    let (mut block, mut allow) = (Vec::new(), vec![format!("\"+{}\"", &CALL_PROBE[1..8])]);
    for (i, p) in set.into_iter().enumerate() {
        let q = format!("\"+{p}\"");
        if i % 2 == 0 {
            block.push(q)
        } else {
            allow.push(q)
        }
    }
    CALL_RULES_10
        .replace(
            "block = [\"+882\"",
            &format!("block = [{}, \"+882\"", block.join(", ")),
        )
        .replace(
            "allow = [\"+1\"",
            &format!("allow = [{}, \"+1\"", allow.join(", ")),
        )
}

/// Writes a valid IPv4 header checksum (the fixtures leave it zero: XDP does not check it, but
/// the kernel's IP input does, before any netfilter hook at prerouting).
pub fn fix_ipv4_checksum(frame: &mut [u8]) {
    assert_eq!(&frame[12..14], &[0x08, 0x00], "untagged IPv4 frame");
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    frame[24] = 0;
    frame[25] = 0;
    let mut sum: u32 = frame[14..14 + ihl]
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let c = !(sum as u16);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use sip_filter::geo::GeoTable;

    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(register600_msg().len(), 600);
        assert_eq!(invite1200_msg().len(), 1200);
    }

    #[test]
    fn prefixes_do_not_merge_and_probes_walk_deep() {
        let nets = geo_prefixes(2_000);
        let t = GeoTable::build(nets.clone()).unwrap();
        assert_eq!(t.prefixes, 2_000);
        assert!(t.blocks(GEO_BLOCKED_V4.parse().unwrap()));
        assert!(!t.blocks(GEO_PASS_V4.parse().unwrap()));
        assert!(t.blocks(GEO_BLOCKED_V6.parse().unwrap()));
        assert!(!t.blocks(GEO_PASS_V6.parse().unwrap()));
        for ip in blocked_sources(&nets, 100) {
            assert!(t.blocks(ip), "{ip}");
        }
        for ip in passing_sources(100, 1) {
            assert!(!t.blocks(ip), "{ip}");
        }
    }

    #[test]
    fn checksum() {
        // RFC 1071 example header: checksum b861.
        let mut f = vec![0u8; 14];
        f[12] = 8;
        f.extend_from_slice(&[
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ]);
        fix_ipv4_checksum(&mut f);
        assert_eq!(&f[24..26], &[0xb8, 0x61]);
    }
}
