//! Packet fixtures run through the real XDP and TC programs with BPF_PROG_TEST_RUN, Katran
//! style: a description, a frame built field by field, the expected verdict and the expected
//! map changes. Needs root and BPF; fails (never skips) without them. `cargo xtask vm` runs this
//! same binary on the Debian 12 kernel.
use std::{thread::sleep, time::Duration};

use sip_filter_common::{BAN_SCOPE_SIP, BanReason, Config, creds, method, stat};
use tests::{
    harness::{Harness, TC_ACT_OK, XDP_DROP, XDP_PASS},
    packet::{Ext, L4, Packet, TPID_8021AD, TPID_8021Q, payload_offset},
    sip::{self, Creds},
};

const PBX: &str = "203.0.113.5";
const PBX6: &str = "2001:db8:5::5";
const CLIENT: &str = "192.0.2.10";
const CLIENT6: &str = "2001:db8:10:1::10";
const AUTH: Creds = Creds::Header("Authorization:");

/// What a fixture expects the XDP program to record for the frame's source socket.
#[derive(Clone, Debug, PartialEq)]
enum Flow {
    /// Nothing recorded (not a SIP request we inspect, or dropped before inspection).
    None,
    /// One pending request with this method and credentials state.
    Seen(u8, u8),
    /// The flow entry disagrees with the request counters.
    Inconsistent(String),
}

/// What the program recorded for one request: the method and credentials state come from the
/// counters that grew (the flow entry keeps only counts), checked against the flow entry.
fn observed(h: &mut Harness, src: &(String, u16), before: &[u64], after: &[u64]) -> Flow {
    let Some(fl) = h.flow(&src.0, src.1) else {
        return Flow::None;
    };
    let grew = |i: u32| after[i as usize] - before[i as usize];
    let Some(m) =
        (method::REGISTER..=method::OTHER).find(|m| grew(stat::REQ_BASE + *m as u32) == 1)
    else {
        return Flow::Inconsistent(format!("flow {fl:?} but no request counted"));
    };
    let c = match (grew(stat::REQ_WITH_CREDS), grew(stat::REQ_CREDS_UNKNOWN)) {
        (1, 0) => creds::PRESENT,
        (0, 1) => creds::UNKNOWN,
        (0, 0) => creds::NONE,
        other => return Flow::Inconsistent(format!("credential counters grew by {other:?}")),
    };
    let want_reg_inv = u8::from(m == method::REGISTER || m == method::INVITE);
    if fl.pending != 1 || fl.creds != u8::from(c != creds::NONE) || fl.reg_inv != want_reg_inv {
        return Flow::Inconsistent(format!("flow {fl:?} for method {m}, credentials {c}"));
    }
    Flow::Seen(m, c)
}

struct Fixture {
    name: String,
    setup: Box<dyn Fn(&mut Harness)>,
    frame: Vec<u8>,
    /// Source address and port whose flow entry is checked.
    src: (String, u16),
    verdict: u32,
    flow: Flow,
    /// Counters that must have grown by exactly this much.
    stats: Vec<(u32, u64)>,
}

fn fx(name: &str, p: &Packet, verdict: u32, flow: Flow) -> Fixture {
    Fixture {
        name: name.to_string(),
        setup: Box::new(|_| {}),
        frame: p.build(),
        src: (p.src.to_string(), p.sport),
        verdict,
        flow,
        stats: Vec::new(),
    }
}

impl Fixture {
    fn setup(mut self, f: impl Fn(&mut Harness) + 'static) -> Self {
        self.setup = Box::new(f);
        self
    }
    fn stat(mut self, index: u32, delta: u64) -> Self {
        self.stats.push((index, delta));
        self
    }
    fn frame(mut self, frame: Vec<u8>) -> Self {
        self.frame = frame;
        self
    }
}

fn reg(creds: Creds) -> String {
    sip::register("101", CLIENT, creds, &[])
}

fn udp(payload: impl Into<Vec<u8>>) -> Packet {
    Packet::udp(CLIENT, 5062, PBX, 5060, payload)
}

fn udp6(payload: impl Into<Vec<u8>>) -> Packet {
    Packet::udp(CLIENT6, 5062, PBX6, 5060, payload)
}

fn seen(m: u8, c: u8) -> Flow {
    Flow::Seen(m, c)
}

fn ingress_fixtures() -> Vec<Fixture> {
    use creds::{NONE, PRESENT, UNKNOWN};
    use method::*;
    let mut v = vec![
        // --- link, network and transport layers ---
        fx(
            "IPv4 REGISTER without credentials",
            &udp(reg(Creds::None)),
            XDP_PASS,
            seen(REGISTER, NONE),
        )
        .stat(stat::REQ_BASE + REGISTER as u32, 1)
        .stat(stat::PASSED, 1),
        fx(
            "IPv4 REGISTER with Authorization",
            &udp(reg(AUTH)),
            XDP_PASS,
            seen(REGISTER, PRESENT),
        )
        .stat(stat::REQ_WITH_CREDS, 1),
        fx(
            "IPv6 REGISTER with Authorization",
            &udp6(reg(AUTH)),
            XDP_PASS,
            seen(REGISTER, PRESENT),
        ),
        fx(
            "802.1Q tagged REGISTER",
            &udp(reg(AUTH)).vlan(TPID_8021Q, 10),
            XDP_PASS,
            seen(REGISTER, PRESENT),
        ),
        fx(
            "QinQ (802.1ad + 802.1Q) REGISTER",
            &udp(reg(AUTH)).vlan(TPID_8021AD, 100).vlan(TPID_8021Q, 10),
            XDP_PASS,
            seen(REGISTER, PRESENT),
        ),
        fx(
            "three VLAN tags are not parsed further",
            &udp(reg(AUTH))
                .vlan(TPID_8021AD, 1)
                .vlan(TPID_8021Q, 2)
                .vlan(TPID_8021Q, 3),
            XDP_PASS,
            Flow::None,
        )
        .stat(stat::PASSED, 1),
        fx(
            "IPv4 with 40 bytes of options",
            &udp(reg(AUTH)).v4_options(40),
            XDP_PASS,
            seen(REGISTER, PRESENT),
        ),
        fx(
            "IPv6 hop-by-hop, routing and destination options headers",
            &udp6(reg(AUTH))
                .v6_ext(Ext::HopByHop)
                .v6_ext(Ext::Routing)
                .v6_ext(Ext::DestOpts),
            XDP_PASS,
            seen(REGISTER, PRESENT),
        ),
        fx(
            "non-SIP UDP (port 53)",
            &Packet::udp(CLIENT, 5062, PBX, 53, vec![0u8; 40]),
            XDP_PASS,
            Flow::None,
        )
        .stat(stat::PASSED, 1),
        fx(
            "TCP to 5060 is not inspected",
            &Packet::tcp(CLIENT, 5062, PBX, 5060),
            XDP_PASS,
            Flow::None,
        ),
        fx(
            "ICMP-like raw IP payload",
            &Packet {
                l4: L4::Raw(1),
                ..udp(vec![8u8, 0, 0, 0])
            },
            XDP_PASS,
            Flow::None,
        ),
        // --- SIP start lines ---
        fx(
            "INVITE with Proxy-Authorization",
            &udp(sip::request(
                "INVITE",
                "101",
                CLIENT,
                Creds::Header("Proxy-Authorization:"),
                &[],
            )),
            XDP_PASS,
            seen(INVITE, PRESENT),
        )
        .stat(stat::REQ_BASE + INVITE as u32, 1),
        fx(
            "OPTIONS scan",
            &udp(sip::request("OPTIONS", "100", CLIENT, Creds::None, &[])),
            XDP_PASS,
            seen(OPTIONS, NONE),
        )
        .stat(stat::REQ_BASE + OPTIONS as u32, 1),
        fx(
            "SUBSCRIBE",
            &udp(sip::request("SUBSCRIBE", "101", CLIENT, Creds::None, &[])),
            XDP_PASS,
            seen(SUBSCRIBE, NONE),
        ),
        fx(
            "MESSAGE",
            &udp(sip::request("MESSAGE", "101", CLIENT, AUTH, &[])),
            XDP_PASS,
            seen(MESSAGE, PRESENT),
        ),
        fx(
            "BYE counts as another method",
            &udp(sip::request("BYE", "101", CLIENT, Creds::None, &[])),
            XDP_PASS,
            seen(OTHER, NONE),
        )
        .stat(stat::REQ_BASE + OTHER as u32, 1),
        fx(
            "a response arriving from a trunk is not a request",
            &udp(sip::response(200, "OK")),
            XDP_PASS,
            Flow::None,
        ),
        fx(
            "CRLF keep-alive",
            &udp(b"\r\n\r\n".to_vec()),
            XDP_PASS,
            Flow::None,
        )
        .stat(stat::NON_SIP_ON_SIP_PORT, 1),
        fx(
            "binary (STUN-like) payload on 5060",
            &udp(vec![0u8, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 0, 0]),
            XDP_PASS,
            Flow::None,
        )
        .stat(stat::NON_SIP_ON_SIP_PORT, 1),
        fx(
            "lower-case method is not SIP",
            &udp(reg(AUTH).replacen("REGISTER", "register", 1)),
            XDP_PASS,
            Flow::None,
        ),
        fx(
            "configured port 5080 is inspected",
            &Packet::udp(CLIENT, 5062, PBX, 5080, reg(AUTH)),
            XDP_PASS,
            seen(REGISTER, PRESENT),
        )
        .setup(|h| {
            h.configure(|c| {
                c.ports = [5060, 5080, 0, 0, 0, 0, 0, 0];
                c.nports = 2;
            });
        }),
        fx(
            "5060 is not inspected when only 5080 is configured",
            &udp(reg(AUTH)),
            XDP_PASS,
            Flow::None,
        )
        .setup(|h| {
            h.configure(|c| {
                c.ports[0] = 5080;
                c.nports = 1;
            });
        }),
        // --- credentials: names, case, spacing, position ---
        fx(
            "credentials in the last header of a 600-byte REGISTER",
            &udp(sip::padded_register("101", CLIENT, AUTH, 600)),
            XDP_PASS,
            seen(REGISTER, PRESENT),
        ),
        fx(
            "a 1,200-byte header line before the credentials",
            &udp(sip::register(
                "101",
                CLIENT,
                AUTH,
                &[format!("X-Long: {}", "x".repeat(1200))],
            )),
            XDP_PASS,
            seen(REGISTER, PRESENT),
        ),
        fx(
            "1,800-byte REGISTER (over 1500 bytes), credentials last",
            &udp(sip::padded_register("101", CLIENT, AUTH, 1800)),
            XDP_PASS,
            seen(REGISTER, PRESENT),
        ),
        fx(
            "header section longer than the 2,048-byte scan window, credentials beyond it",
            &udp(sip::padded_register("101", CLIENT, AUTH, 2600)),
            XDP_PASS,
            seen(REGISTER, UNKNOWN),
        )
        .stat(stat::REQ_CREDS_UNKNOWN, 1),
        fx(
            "header section longer than the scan window, no credentials",
            &udp(sip::padded_register("101", CLIENT, Creds::None, 2600)),
            XDP_PASS,
            seen(REGISTER, UNKNOWN),
        ),
        fx(
            "credentials early in a 5,000-byte multi-buffer frame",
            &udp(sip::register(
                "101",
                CLIENT,
                Creds::None,
                &[sip_auth_header(), format!("X-Pad: {}", "p".repeat(4500))],
            )),
            XDP_PASS,
            seen(REGISTER, PRESENT),
        ),
        fx(
            "5,000-byte frame, credentials beyond the window",
            &udp(sip::padded_register("101", CLIENT, AUTH, 5000)),
            XDP_PASS,
            seen(REGISTER, UNKNOWN),
        ),
        fx(
            "UDP length claims more than the frame holds, blank line inside",
            &Packet {
                udp_len: Some(1400),
                ..udp(reg(Creds::None))
            },
            XDP_PASS,
            seen(REGISTER, NONE),
        ),
        fx(
            "Authorization in the body, after the blank line",
            &udp(format!("{}Authorization: Digest x\r\n", reg(Creds::None))),
            XDP_PASS,
            seen(REGISTER, NONE),
        ),
        fx(
            "UDP length claims more than the frame holds, header section cut",
            &Packet {
                udp_len: Some(1400),
                ..udp(reg(Creds::None).replace("\r\n\r\n", "\r\n"))
            },
            XDP_PASS,
            seen(REGISTER, UNKNOWN),
        ),
        // --- fragments ---
        fx(
            "IPv4 first fragment without credentials in it",
            &udp(reg(Creds::None).replace("\r\n\r\n", "\r\n")).v4_fragment(0, true),
            XDP_PASS,
            seen(REGISTER, UNKNOWN),
        ),
        fx(
            "IPv4 first fragment with credentials in it",
            &udp(reg(AUTH)).v4_fragment(0, true),
            XDP_PASS,
            seen(REGISTER, PRESENT),
        ),
        fx(
            "IPv4 non-first fragment: address verdicts only",
            &Packet {
                payload: b"Authorization: Digest x\r\n".to_vec(),
                ..udp(Vec::new())
            }
            .v4_fragment(185, false),
            XDP_PASS,
            Flow::None,
        )
        .frame(raw_fragment_v4(185))
        .stat(stat::NON_FIRST_FRAGMENT, 1),
        fx(
            "IPv6 non-first fragment",
            &udp6(reg(AUTH)).v6_ext(Ext::Fragment {
                offset: 100,
                more: false,
            }),
            XDP_PASS,
            Flow::None,
        )
        .stat(stat::NON_FIRST_FRAGMENT, 1),
        fx(
            "IPv6 first fragment without the blank line",
            &udp6(reg(Creds::None).replace("\r\n\r\n", "\r\n")).v6_ext(Ext::Fragment {
                offset: 0,
                more: true,
            }),
            XDP_PASS,
            seen(REGISTER, UNKNOWN),
        ),
        fx(
            "non-first fragment from a banned source (scope all)",
            &udp(Vec::new()),
            XDP_DROP,
            Flow::None,
        )
        .frame(raw_fragment_v4(185))
        .setup(|h| h.add_ban(CLIENT, 0).unwrap())
        .stat(stat::DROPPED_BANNED, 1),
        fx(
            "non-first fragment from a banned source (scope sip)",
            &udp(Vec::new()),
            XDP_PASS,
            Flow::None,
        )
        .frame(raw_fragment_v4(185))
        .setup(|h| {
            h.add_ban(CLIENT, 0).unwrap();
            h.configure(|c| c.ban_scope = BAN_SCOPE_SIP);
        }),
        // --- malformed ---
        fx(
            "IPv4 header length 4",
            &udp(reg(AUTH)),
            XDP_PASS,
            Flow::None,
        )
        .frame(patch(udp(reg(AUTH)).build(), 14, 0x44))
        .stat(stat::MALFORMED, 1),
        fx(
            "UDP length below 8",
            &Packet {
                udp_len: Some(4),
                ..udp(reg(AUTH))
            },
            XDP_PASS,
            Flow::None,
        )
        .stat(stat::MALFORMED, 1),
        fx(
            "IPv6 extension header running past the frame",
            &udp6(reg(AUTH)).v6_ext(Ext::HopByHop),
            XDP_PASS,
            Flow::None,
        )
        .frame(udp6(reg(AUTH)).v6_ext(Ext::HopByHop).build()[..14 + 40 + 10].to_vec())
        .stat(stat::MALFORMED, 1),
        // --- bans ---
        fx(
            "banned IPv4 source is dropped",
            &udp(reg(AUTH)),
            XDP_DROP,
            Flow::None,
        )
        .setup(|h| h.add_ban(CLIENT, 3600).unwrap())
        .stat(stat::DROPPED_BANNED, 1),
        fx(
            "banned source: non-SIP traffic dropped too (scope all)",
            &Packet::udp(CLIENT, 40000, PBX, 16384, vec![0x80u8; 172]),
            XDP_DROP,
            Flow::None,
        )
        .setup(|h| h.add_ban(CLIENT, 0).unwrap()),
        fx(
            "expired ban is treated as absent",
            &udp(reg(AUTH)),
            XDP_PASS,
            seen(REGISTER, PRESENT),
        )
        .setup(|h| h.add_ban_until(CLIENT, 1).unwrap()),
        fx(
            "banned IPv6 /64: another address of the /64 is dropped",
            &Packet::udp("2001:db8:10:1::99", 5062, PBX6, 5060, reg(AUTH)),
            XDP_DROP,
            Flow::None,
        )
        .setup(|h| h.add_ban(CLIENT6, 0).unwrap()),
        fx(
            "banned IPv6 /64: the next /64 passes",
            &Packet::udp("2001:db8:10:2::10", 5062, PBX6, 5060, reg(AUTH)),
            XDP_PASS,
            seen(REGISTER, PRESENT),
        )
        .setup(|h| h.add_ban(CLIENT6, 0).unwrap()),
        fx(
            "ipv6_prefix 48: the whole /48 is dropped",
            &Packet::udp("2001:db8:10:ffff::1", 5062, PBX6, 5060, reg(AUTH)),
            XDP_DROP,
            Flow::None,
        )
        .setup(|h| {
            h.configure(|c| c.v6_mask = Config::v6_mask_for(48));
            h.add_ban(CLIENT6, 0).unwrap();
        }),
        fx("operator CIDR ban", &udp(reg(AUTH)), XDP_DROP, Flow::None)
            .setup(|h| h.add_ban_net("192.0.2.0/28").unwrap()),
        fx(
            "allowlist beats a ban",
            &udp(reg(AUTH)),
            XDP_PASS,
            Flow::None,
        )
        .setup(|h| {
            h.add_ban(CLIENT, 0).unwrap();
            h.allow("192.0.2.0/24").unwrap();
        })
        .stat(stat::ALLOWLISTED, 1),
        fx(
            "allowlisted IPv6 prefix passes untouched",
            &udp6(reg(AUTH)),
            XDP_PASS,
            Flow::None,
        )
        .setup(|h| h.allow("2001:db8:10::/48").unwrap())
        .stat(stat::ALLOWLISTED, 1),
        fx(
            "ban scope sip: banned source's DNS passes",
            &Packet::udp(CLIENT, 5062, PBX, 53, vec![0u8; 40]),
            XDP_PASS,
            Flow::None,
        )
        .setup(|h| {
            h.add_ban(CLIENT, 0).unwrap();
            h.configure(|c| c.ban_scope = BAN_SCOPE_SIP);
        }),
        fx(
            "ban scope sip: SIP over UDP dropped",
            &udp(reg(AUTH)),
            XDP_DROP,
            Flow::None,
        )
        .setup(|h| {
            h.add_ban(CLIENT, 0).unwrap();
            h.configure(|c| c.ban_scope = BAN_SCOPE_SIP);
        }),
        fx(
            "ban scope sip: SIP over TLS (TCP 5061) dropped",
            &Packet::tcp(CLIENT, 40000, PBX, 5061),
            XDP_DROP,
            Flow::None,
        )
        .setup(|h| {
            h.add_ban(CLIENT, 0).unwrap();
            h.configure(|c| c.ban_scope = BAN_SCOPE_SIP);
        }),
        // --- geo ---
        fx(
            "geo-blocked IPv4 /24",
            &udp(reg(AUTH)),
            XDP_DROP,
            Flow::None,
        )
        .setup(|h| h.geo_block(&["192.0.2.0/24"]).unwrap())
        .stat(stat::DROPPED_GEO, 1),
        fx(
            "geo-blocked IPv4 /16 (top level)",
            &Packet::udp("198.51.100.7", 5062, PBX, 5060, reg(AUTH)),
            XDP_DROP,
            Flow::None,
        )
        .setup(|h| h.geo_block(&["198.51.0.0/16"]).unwrap()),
        fx(
            "geo-blocked /28: inside dropped",
            &udp(reg(AUTH)),
            XDP_DROP,
            Flow::None,
        )
        .setup(|h| h.geo_block(&["192.0.2.0/28"]).unwrap()),
        fx(
            "geo-blocked /28: outside passes",
            &Packet::udp("192.0.2.77", 5062, PBX, 5060, reg(AUTH)),
            XDP_PASS,
            seen(REGISTER, PRESENT),
        )
        .setup(|h| h.geo_block(&["192.0.2.0/28"]).unwrap()),
        fx(
            "geo-blocked IPv6 /32",
            &udp6(reg(AUTH)),
            XDP_DROP,
            Flow::None,
        )
        .setup(|h| h.geo_block(&["2001:db8::/32"]).unwrap()),
        fx(
            "geo-blocked IPv6 /56: inside dropped",
            &udp6(reg(AUTH)),
            XDP_DROP,
            Flow::None,
        )
        .setup(|h| h.geo_block(&["2001:db8:10:0::/56"]).unwrap()),
        fx(
            "geo-blocked IPv6 /56: same /48, outside passes",
            &Packet::udp("2001:db8:10:100::1", 5062, PBX6, 5060, reg(AUTH)),
            XDP_PASS,
            seen(REGISTER, PRESENT),
        )
        .setup(|h| h.geo_block(&["2001:db8:10:0::/56"]).unwrap()),
        fx("allowlist beats geo", &udp(reg(AUTH)), XDP_PASS, Flow::None).setup(|h| {
            h.geo_block(&["192.0.2.0/24"]).unwrap();
            h.allow("192.0.2.10/32").unwrap();
        }),
        fx(
            "geo with scope sip: non-SIP traffic passes",
            &Packet::udp(CLIENT, 5062, PBX, 53, vec![0u8; 40]),
            XDP_PASS,
            Flow::None,
        )
        .setup(|h| {
            h.geo_block(&["192.0.2.0/24"]).unwrap();
            h.configure(|c| c.ban_scope = BAN_SCOPE_SIP);
        }),
    ];
    // Header name case and spacing variants: all carry credentials.
    for name in [
        "authorization:",
        "AUTHORIZATION:",
        "Authorization :",
        "Authorization\t:",
        "Authorization:",
        "proxy-authorization:",
        "PROXY-AUTHORIZATION  :",
        "Proxy-Authorization:",
    ] {
        v.push(fx(
            &format!("credentials header spelled {name:?}"),
            &udp(reg(Creds::Header(name))),
            XDP_PASS,
            seen(REGISTER, PRESENT),
        ));
    }
    // Look-alikes that are not credentials.
    for name in [
        "Authorization-Info:",
        "X-Authorization:",
        "WWW-Authenticate:",
        "Authorizatio:",
        "Proxy-Authenticate:",
    ] {
        v.push(fx(
            &format!("look-alike header {name:?}"),
            &udp(reg(Creds::Header(name))),
            XDP_PASS,
            seen(REGISTER, NONE),
        ));
    }
    v
}

fn sip_auth_header() -> String {
    "Authorization: Digest username=\"101\", response=\"0\"".to_string()
}

fn patch(mut frame: Vec<u8>, at: usize, byte: u8) -> Vec<u8> {
    frame[at] = byte;
    frame
}

/// A non-first IPv4 fragment: IP header with offset set, then continuation bytes (no UDP header).
fn raw_fragment_v4(offset: u16) -> Vec<u8> {
    let p = Packet {
        l4: L4::Raw(17),
        ..udp(b"Authorization: Digest x\r\n\r\n".to_vec())
    }
    .v4_fragment(offset, false);
    p.build()
}

#[test]
fn ingress_fixture_table() {
    let mut h = Harness::new().unwrap();
    let fixtures = ingress_fixtures();
    let mut failed = Vec::new();
    for f in &fixtures {
        h.reset();
        (f.setup)(&mut h);
        let before = h.stats();
        let verdict = h.xdp(&f.frame);
        let after = h.stats();
        let flow = observed(&mut h, &f.src, &before, &after);
        let mut problems = Vec::new();
        if verdict != f.verdict {
            problems.push(format!("verdict {verdict}, want {}", f.verdict));
        }
        if flow != f.flow {
            problems.push(format!("flow {flow:?}, want {:?}", f.flow));
        }
        for (i, d) in &f.stats {
            let got = after[*i as usize] - before[*i as usize];
            if got != *d {
                problems.push(format!("{} +{got}, want +{d}", stat::NAMES[*i as usize]));
            }
        }
        if after[stat::SEEN as usize] - before[stat::SEEN as usize] != 1 {
            problems.push("seen counter did not grow by 1".into());
        }
        let ok = problems.is_empty();
        println!(
            "{} {:<75} {}",
            if ok { "ok  " } else { "FAIL" },
            f.name,
            problems.join("; ")
        );
        if !ok {
            failed.push(f.name.clone());
        }
    }
    println!(
        "fixtures: {} passed, {} failed",
        fixtures.len() - failed.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "failed fixtures: {failed:#?}");
}

/// Every truncation point of a REGISTER with credentials in its last header: never dropped,
/// malformed while a header is cut, and credentials reported only once the header name is in.
#[test]
fn every_truncation_point_of_a_register() {
    let mut h = Harness::new().unwrap();
    let p = udp(reg(AUTH));
    let full = p.build();
    let payload_at = payload_offset(&p);
    let auth_at = payload_at + reg(AUTH).find("Authorization:").unwrap();
    let mut checked = 0;
    for len in 14..=full.len() {
        h.reset();
        let before = h.stats();
        let verdict = h.xdp(&full[..len]);
        let after = h.stats();
        assert_eq!(
            verdict, XDP_PASS,
            "cut at {len}: a truncated frame is never dropped"
        );
        let malformed = after[stat::MALFORMED as usize] - before[stat::MALFORMED as usize];
        let src = (CLIENT.to_string(), 5062);
        let flow = observed(&mut h, &src, &before, &after);
        if len < payload_at {
            assert_eq!(
                malformed, 1,
                "cut at {len} (inside the headers) counts as malformed"
            );
            assert_eq!(flow, Flow::None, "cut at {len}");
        } else if len < payload_at + 8 {
            assert_eq!(flow, Flow::None, "cut at {len}: too short to be a request");
        } else {
            let want = if len >= auth_at + 14 {
                creds::PRESENT
            } else {
                creds::UNKNOWN
            };
            assert_eq!(flow, Flow::Seen(method::REGISTER, want), "cut at {len}");
        }
        checked += 1;
    }
    println!("truncation points checked: {checked}");
}

// --- egress: the PBX's answers -------------------------------------------------------------

fn answer(code: u16) -> Vec<u8> {
    Packet::udp(PBX, 5060, CLIENT, 5062, sip::response(code, "X")).build()
}

fn answer6(code: u16, to: &str) -> Vec<u8> {
    Packet::udp(PBX6, 5060, to, 5062, sip::response(code, "X")).build()
}

/// (description, request frame or none, status, auth failures, not-found count)
type StatusCase = (&'static str, Option<Vec<u8>>, u16, u32, u32);

/// One request (or none) from the client, then one answer: the failure counters after it.
#[test]
fn egress_status_codes() {
    let mut h = Harness::new().unwrap();
    let no_blank = reg(Creds::None).replace("\r\n\r\n", "\r\n");
    let cases: Vec<StatusCase> = vec![
        (
            "401 challenge to a REGISTER without credentials",
            Some(udp(reg(Creds::None)).build()),
            401,
            0,
            0,
        ),
        (
            "401 to a REGISTER with credentials",
            Some(udp(reg(AUTH)).build()),
            401,
            1,
            0,
        ),
        (
            "407 to an INVITE with Proxy-Authorization",
            Some(
                udp(sip::request(
                    "INVITE",
                    "101",
                    CLIENT,
                    Creds::Header("Proxy-Authorization:"),
                    &[],
                ))
                .build(),
            ),
            407,
            1,
            0,
        ),
        (
            "407 challenge to an INVITE without credentials",
            Some(udp(sip::request("INVITE", "101", CLIENT, Creds::None, &[])).build()),
            407,
            0,
            0,
        ),
        (
            "401 to a first fragment (credentials unknown)",
            Some(udp(no_blank).v4_fragment(0, true).build()),
            401,
            1,
            0,
        ),
        ("403 with no request seen", None, 403, 1, 0),
        (
            "403 to a REGISTER without credentials",
            Some(udp(reg(Creds::None)).build()),
            403,
            1,
            0,
        ),
        (
            "404 to a REGISTER",
            Some(udp(reg(Creds::None)).build()),
            404,
            0,
            1,
        ),
        (
            "404 to an INVITE",
            Some(udp(sip::request("INVITE", "555", CLIENT, Creds::None, &[])).build()),
            404,
            0,
            1,
        ),
        (
            "404 to an OPTIONS",
            Some(udp(sip::request("OPTIONS", "555", CLIENT, Creds::None, &[])).build()),
            404,
            0,
            0,
        ),
        ("404 with no request seen", None, 404, 0, 0),
        ("486 busy", Some(udp(reg(AUTH)).build()), 486, 0, 0),
        ("100 Trying", Some(udp(reg(AUTH)).build()), 100, 0, 0),
        (
            "200 to a REGISTER with credentials",
            Some(udp(reg(AUTH)).build()),
            200,
            0,
            0,
        ),
    ];
    let mut failed = 0;
    for (name, req, code, auth, nf) in &cases {
        h.reset();
        if let Some(r) = req {
            assert_eq!(h.xdp(r), XDP_PASS);
        }
        assert_eq!(h.tc(&answer(*code)), TC_ACT_OK, "egress never drops");
        let f = h.failures(CLIENT).unwrap_or_default();
        let ok = f.auth == *auth && f.not_found == *nf;
        println!(
            "{} {name:<55} auth={} not_found={}",
            if ok { "ok  " } else { "FAIL" },
            f.auth,
            f.not_found
        );
        if !ok {
            failed += 1;
        }
    }
    assert_eq!(failed, 0, "egress status fixtures failed");

    // A provisional answer leaves the request open; the final one still counts.
    h.reset();
    h.xdp(&udp(reg(AUTH)).build());
    h.tc(&answer(100));
    h.tc(&answer(401));
    assert_eq!(h.failures(CLIENT).unwrap().auth, 1, "100 then 401");

    // Answers from a non-SIP port are not SIP answers.
    h.reset();
    h.tc(&Packet::udp(PBX, 5070, CLIENT, 5062, sip::response(403, "Forbidden")).build());
    assert!(
        h.failures(CLIENT).is_none(),
        "answer from port 5070 ignored"
    );

    // A 200 to a credentialed request resets the count.
    h.reset();
    for _ in 0..3 {
        h.xdp(&udp(reg(AUTH)).build());
        h.tc(&answer(401));
    }
    assert_eq!(h.failures(CLIENT).unwrap().auth, 3);
    h.xdp(&udp(reg(AUTH)).build());
    h.tc(&answer(200));
    assert_eq!(h.failures(CLIENT).unwrap().auth, 0, "200 resets");

    // A retransmitted final answer counts once.
    h.reset();
    h.xdp(&udp(reg(AUTH)).build());
    h.tc(&answer(401));
    h.tc(&answer(401));
    assert_eq!(h.failures(CLIENT).unwrap().auth, 1, "retransmitted 401");

    // Pipelined requests on one socket: a wrong guess and a plain REGISTER sent back to back,
    // answered in either order. Only the guess's 401 counts, whichever comes first.
    h.reset();
    for _ in 0..3 {
        h.xdp(&udp(reg(AUTH)).build());
        h.xdp(&udp(reg(Creds::None)).build());
        h.tc(&answer(401));
        h.tc(&answer(401));
    }
    assert_eq!(
        h.failures(CLIENT).unwrap().auth,
        3,
        "one failure per pipelined guess"
    );

    // A 200 to a request without credentials, pipelined with a guess, does not reset the count
    // (an OPTIONS answered 200 must not launder a guess).
    h.reset();
    for _ in 0..3 {
        h.xdp(&udp(reg(AUTH)).build());
        h.xdp(&udp(sip::request("OPTIONS", "101", CLIENT, Creds::None, &[])).build());
        h.tc(&answer(200));
        h.tc(&answer(401));
    }
    assert_eq!(
        h.failures(CLIENT).unwrap().auth,
        3,
        "200 to the OPTIONS resets nothing"
    );
}

#[test]
fn legitimate_digest_flow_never_bans() {
    let mut h = Harness::new().unwrap();
    h.configure(|c| c.auth_max_failures = 3);
    for _ in 0..200 {
        assert_eq!(h.xdp(&udp(reg(Creds::None)).build()), XDP_PASS);
        h.tc(&answer(401));
        assert_eq!(h.xdp(&udp(reg(AUTH)).build()), XDP_PASS);
        h.tc(&answer(200));
    }
    assert!(
        h.ban(CLIENT).is_none(),
        "challenge-then-authenticate must never ban"
    );
    assert_eq!(h.failures(CLIENT).map(|f| f.auth).unwrap_or(0), 0);
}

#[test]
fn credentialed_failures_ban_exactly_at_threshold() {
    let mut h = Harness::new().unwrap();
    let n = 5;
    h.configure(|c| c.auth_max_failures = n);
    let before = h.stats();
    for i in 1..=n {
        assert_eq!(
            h.xdp(&udp(reg(AUTH)).build()),
            XDP_PASS,
            "guess {i} reaches the PBX"
        );
        h.tc(&answer(401));
        if i < n {
            assert!(h.ban(CLIENT).is_none(), "no ban after {i} failures");
        }
    }
    let ban = h.ban(CLIENT).expect("banned at the threshold");
    assert_eq!(ban.reason, BanReason::AuthFailures as u8);
    assert_eq!(ban.failures, n);
    assert!(ban.expires_ns > ban.created_ns, "ban has an expiry");
    assert_eq!(
        h.xdp(&udp(reg(AUTH)).build()),
        XDP_DROP,
        "the next guess is dropped"
    );
    let after = h.stats();
    assert_eq!(
        after[stat::BANS_ISSUED as usize] - before[stat::BANS_ISSUED as usize],
        1
    );
    let events = h.events().unwrap();
    assert_eq!(events.len(), 1, "one ban event");
    assert_eq!(events[0].failures, n);
    assert_eq!(events[0].reason, BanReason::AuthFailures as u8);
    assert_eq!(
        sip_filter::addr::from_key(events[0].addr).to_string(),
        CLIENT
    );
}

#[test]
fn extension_scan_banned_by_not_found_threshold() {
    let mut h = Harness::new().unwrap();
    h.configure(|c| {
        c.enum_max_not_found = 4;
        c.auth_max_failures = 100;
    });
    for ext in 0..4 {
        let r = udp(sip::request(
            "REGISTER",
            &format!("9{ext:02}"),
            CLIENT,
            Creds::None,
            &[],
        ))
        .build();
        assert_eq!(h.xdp(&r), XDP_PASS);
        h.tc(&answer(404));
    }
    let ban = h.ban(CLIENT).expect("banned by the not-found threshold");
    assert_eq!(ban.reason, BanReason::NotFound as u8);
    assert_eq!(ban.failures, 4);
}

#[test]
fn failures_outside_find_time_do_not_add_up() {
    let mut h = Harness::new().unwrap();
    h.configure(|c| {
        c.auth_max_failures = 3;
        c.auth_find_time_ns = 200_000_000;
    });
    for _ in 0..2 {
        h.xdp(&udp(reg(AUTH)).build());
        h.tc(&answer(403));
    }
    sleep(Duration::from_millis(300));
    h.xdp(&udp(reg(AUTH)).build());
    h.tc(&answer(403));
    assert!(h.ban(CLIENT).is_none(), "the window restarted");
    assert_eq!(h.failures(CLIENT).unwrap().auth, 1);
}

#[test]
fn ban_expires_after_ban_time() {
    let mut h = Harness::new().unwrap();
    h.configure(|c| {
        c.auth_max_failures = 2;
        c.auth_ban_time_ns = 300_000_000;
    });
    for _ in 0..2 {
        h.xdp(&udp(reg(AUTH)).build());
        h.tc(&answer(403));
    }
    assert_eq!(h.xdp(&udp(reg(AUTH)).build()), XDP_DROP, "banned");
    sleep(Duration::from_millis(450));
    assert_eq!(h.xdp(&udp(reg(AUTH)).build()), XDP_PASS, "ban expired");
}

#[test]
fn allowlisted_client_is_never_banned() {
    let mut h = Harness::new().unwrap();
    h.configure(|c| c.auth_max_failures = 2);
    h.allow("192.0.2.0/24").unwrap();
    for _ in 0..10 {
        h.xdp(&udp(reg(AUTH)).build());
        h.tc(&answer(403));
    }
    assert!(h.ban(CLIENT).is_none());
    assert_eq!(h.xdp(&udp(reg(AUTH)).build()), XDP_PASS);
}

#[test]
fn ipv6_attacker_banned_by_its_prefix() {
    let mut h = Harness::new().unwrap();
    h.configure(|c| c.auth_max_failures = 3);
    // Three different addresses of one /64 add up.
    for host in ["2001:db8:10:1::a", "2001:db8:10:1::b", "2001:db8:10:1::c"] {
        h.xdp(&Packet::udp(host, 5062, PBX6, 5060, reg(AUTH)).build());
        h.tc(&answer6(401, host));
    }
    assert!(h.ban("2001:db8:10:1::ffff").is_some(), "the /64 is banned");
    let other = Packet::udp("2001:db8:10:1:1234::1", 5062, PBX6, 5060, reg(AUTH)).build();
    assert_eq!(
        h.xdp(&other),
        XDP_DROP,
        "another address of the /64 is dropped"
    );
}

#[test]
fn kernel_ban_never_shortens_an_operator_ban() {
    let mut h = Harness::new().unwrap();
    h.configure(|c| c.auth_max_failures = 1);
    h.add_ban(CLIENT, 0).unwrap();
    h.configure(|c| c.ban_scope = BAN_SCOPE_SIP);
    // The answer still goes out (egress), the ban stays permanent.
    h.tc(&answer(403));
    assert_eq!(h.ban(CLIENT).unwrap().expires_ns, 0);
    assert_eq!(h.ban(CLIENT).unwrap().reason, BanReason::Manual as u8);
}

#[test]
fn full_ban_map_is_counted() {
    let mut h = Harness::with_sizes(&[(sip_filter_common::map_names::BANS, 2)]).unwrap();
    h.configure(|c| c.auth_max_failures = 1);
    h.add_ban("198.51.100.1", 0).unwrap();
    h.add_ban("198.51.100.2", 0).unwrap();
    let before = h.stats();
    h.tc(&answer(403));
    let after = h.stats();
    assert_eq!(
        after[stat::BAN_MAP_FULL as usize] - before[stat::BAN_MAP_FULL as usize],
        1
    );
    assert!(h.ban(CLIENT).is_none());
    // Existing bans are untouched and still drop.
    assert_eq!(
        h.xdp(&Packet::udp("198.51.100.1", 5062, PBX, 5060, reg(AUTH)).build()),
        XDP_DROP
    );
}

#[test]
fn responses_by_class_are_counted() {
    let mut h = Harness::new().unwrap();
    let before = h.stats();
    for code in [100, 180, 200, 302, 401, 404, 500, 603] {
        h.tc(&answer(code));
    }
    let after = h.stats();
    let d = |i: u32| after[i as usize] - before[i as usize];
    assert_eq!(d(stat::RESP_BASE + 1), 2);
    assert_eq!(d(stat::RESP_BASE + 2), 1);
    assert_eq!(d(stat::RESP_BASE + 3), 1);
    assert_eq!(d(stat::RESP_BASE + 4), 2);
    assert_eq!(d(stat::RESP_BASE + 5), 1);
    assert_eq!(d(stat::RESP_BASE + 6), 1);
}
