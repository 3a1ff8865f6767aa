//! `replay`: runs a packet capture through a private copy of the dataplane and tells, packet by
//! packet, what the filter would have done with it — what `fail2ban-regex` is to fail2ban.
//!
//! The programs are the real ones, run with `BPF_PROG_TEST_RUN` on a dataplane loaded without
//! pins, so the filter attached to the interface (and its bans) is never touched. Packets sent
//! by one of the PBX's addresses go through the TC egress program (which reads the PBX's
//! answers and issues bans); every other packet goes through XDP. Why a packet got its verdict
//! is what the program recorded in its trace (`TRACE`, `sip_filter_common::Trace`).
//!
//! The jobs, one module each: `capture` reads pcap/pcapng into Ethernet frames, `headers`
//! decodes what the report shows of a frame, `explain` puts a trace in words, `report` writes
//! the lines and the footer.
//!
//! Captures: pcap and pcapng, with Ethernet, Linux cooked (SLL and SLL2, what `tcpdump -i any`
//! writes) or raw IP link layers; the latter two are given a synthetic Ethernet header.
//!
//! # Limitation: time is compressed
//! The programs read the kernel's clock, not the capture's timestamps, so everything in the
//! capture is judged as if it arrived at once: failures hours apart still add up inside one
//! `find_time` window, and a ban issued early in the capture is still in force at its end.
mod capture;
mod explain;
mod headers;
mod report;

use std::{io::Write, net::IpAddr, path::PathBuf, time::Duration};

use anyhow::{Context as _, Result};
use aya::{
    maps::RingBuf,
    programs::{TestRun as _, TestRunOptions},
};
use ipnet::IpNet;
use serde::Serialize;
use sip_filter_common::{Reason, map};

use self::{
    capture::{Capture, ETH_HLEN, Frame},
    explain::{ban_net, ban_time, replay_ban},
    headers::{Headers, headers},
    report::{write_bans_json, write_footer, write_packet},
};
use crate::{
    config::Settings,
    dataplane::Dataplane,
    geo::GeoTable,
    maps::{self, Maps as _},
    rules,
};

/// What to replay and how to report it.
pub struct ReplayOptions {
    /// A pcap or pcapng file.
    pub capture: PathBuf,
    /// The PBX's addresses: packets from them are its answers (TC egress).
    pub pbx: Vec<IpAddr>,
    pub settings: Settings,
    /// One JSON object per line instead of text.
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Towards the PBX: the XDP program.
    Ingress,
    /// From the PBX: the TC egress program.
    Egress,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Drop,
    /// Answered by the filter itself (a call refused with a 403: XDP_TX).
    Answer,
}

/// What the filter did with one packet of the capture.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PacketResult {
    /// 1-based packet number in the capture (as Wireshark numbers them).
    pub index: usize,
    pub direction: Direction,
    pub verdict: Verdict,
    pub reason: String,
    /// The reason table's names for what the program recorded in its trace: its verdict (XDP)
    /// or effect (TC), then the detail if any (`["passed", "req_register"]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recorded: Vec<&'static str>,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// The capture holds less of the packet than was on the wire (snaplen): the real filter
    /// saw more, so its verdict on credentials may differ.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// A ban the filter issued during the replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayBan {
    /// An IPv4 address (/32) or an IPv6 prefix of `sip.ipv6_prefix` bits.
    pub addr: IpNet,
    /// `BanReason::as_str` ("auth-failures", "extension-scan").
    pub reason: String,
    pub failures: u32,
    /// How long the ban lasts; `None` for a permanent one.
    pub ban_time: Option<Duration>,
}

impl ReplayBan {
    /// The address as `ban list` shows it: a bare address for a host, a CIDR for a prefix.
    pub fn addr_text(&self) -> String {
        if self.addr.prefix_len() == self.addr.max_prefix_len() {
            self.addr.addr().to_string()
        } else {
            self.addr.to_string()
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    pub packets: Vec<PacketResult>,
    pub bans: Vec<ReplayBan>,
}

/// The footer line that states the timing limitation (see the module documentation).
pub const TIMING_NOTE: &str = "Note: the kernel's clock is used, not the capture's timestamps, \
     so the capture's timing is compressed: everything in it is judged as if it arrived at once \
     (find_time windows never run out, and a ban issued early is still in force at the end).";

/// Replays `opts.capture`, writing one line per packet and then the bans to `out`.
///
/// Packets already written stay written when the capture turns out to be damaged half-way;
/// the error then names the packet where reading stopped.
pub fn run(opts: &ReplayOptions, out: &mut dyn Write) -> Result<ReplaySummary> {
    // The capture is checked before the dataplane is loaded: a wrong file fails fast.
    let mut capture = Capture::open(&opts.capture)?;
    let mut replayer = Replayer::new(opts)?;
    let mut summary = ReplaySummary::default();
    while let Some(frame) = capture.next_frame() {
        let frame = frame?;
        let result = replayer.packet(capture.count, &frame)?;
        write_packet(out, &result, opts.json)?;
        summary.packets.push(result);
    }
    summary.bans = replayer.bans()?;
    if opts.json {
        write_bans_json(out, &summary.bans)?;
    } else {
        write_footer(out, &summary, &opts.pbx)?;
    }
    Ok(summary)
}
// --- running packets -------------------------------------------------------------------------

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const TC_ACT_SHOT: u32 = 2;

/// BPF_PROG_TEST_RUN refuses an skb larger than a page (less head- and tailroom). The egress
/// program only reads the headers and the status line, so a longer answer is cut to this.
const EGRESS_RUN_MAX: usize = 2048;
/// XDP test runs of a frags-aware program take a few pages. The program copies at most
/// `SCAN_BUF` bytes of a message and judges the rest by the UDP length field, which a cut
/// does not change, so cutting a jumbo frame here leaves the verdict as it is.
const INGRESS_RUN_MAX: usize = 16 * 1024;

struct Replayer<'a> {
    dp: Dataplane,
    settings: &'a Settings,
    pbx: &'a [IpAddr],
    /// Ban events drained from the ring buffer (the calls' are read packet by packet).
    ban_events: Vec<sip_filter_common::BanEvent>,
}

impl<'a> Replayer<'a> {
    fn new(opts: &'a ReplayOptions) -> Result<Self> {
        // No pin directory: fresh maps that only this process sees, so the live filter's bans
        // and counters stay as they are.
        let mut dp = Dataplane::load(None).context(
            "loading a private copy of the dataplane (needs root: CAP_BPF and CAP_NET_ADMIN)",
        )?;
        // Tracing first: `rules::apply` keeps the flag as it finds it.
        dp.update_config(|c| c.trace = 1)?;
        rules::apply(&mut dp, &opts.settings, &GeoTable::default())
            .context("applying the settings to the replay dataplane")?;
        Ok(Self {
            dp,
            settings: &opts.settings,
            pbx: &opts.pbx,
            ban_events: Vec::new(),
        })
    }

    fn packet(&mut self, index: usize, frame: &Frame) -> Result<PacketResult> {
        let eth = frame.eth.as_deref().unwrap_or_default();
        let h = headers(eth);
        let egress = h.as_ref().is_some_and(|h| self.pbx.contains(&h.src));
        let mut r = blank_result(index, h.as_ref(), egress, frame.truncated);
        if frame.eth.is_none() || eth.len() < ETH_HLEN {
            // The kernel refuses to test-run less than an Ethernet header.
            r.reason = "not run: captured too short for an Ethernet header".into();
            return Ok(r);
        }
        self.dp.clear_trace()?;
        let action = self.test_run(eth, egress).with_context(|| {
            format!(
                "running packet #{index} through the {:?} program",
                r.direction
            )
        })?;
        let trace = self
            .dp
            .trace()?
            .context("the program recorded no trace for this packet")?;
        r.recorded = [trace.verdict, trace.detail]
            .into_iter()
            .filter_map(Reason::from_index)
            .map(Reason::name)
            .collect();
        // A call the rules refused says so on the ring buffer, with what the log would say.
        let drained = {
            let mut ring = RingBuf::try_from(self.dp.map_mut(map::EVENTS.name)?)?;
            maps::drain_events(&mut ring)
        };
        self.ban_events.extend(drained.bans);
        let call = drained
            .calls
            .last()
            .map(|e| crate::calls::blocked::BlockedCall::read(e, self.settings.calls.as_ref()));
        if egress {
            let h = h.as_ref().expect("egress packets have headers");
            if action == TC_ACT_SHOT {
                // A call the PBX placed to a trunk, held back by a rule.
                r.verdict = Verdict::Drop;
                r.reason = call.map_or_else(
                    || "call blocked at egress".into(),
                    |c| format!("call to {} blocked at egress: {}", c.number, c.rule),
                );
            } else {
                // The answer's effect is on the client's failure counts.
                r.reason = explain::egress(&mut self.dp, self.settings, &trace, h.dst)?;
            }
        } else {
            r.verdict = match action {
                XDP_PASS => Verdict::Pass,
                XDP_DROP => Verdict::Drop,
                XDP_TX => Verdict::Answer,
                other => anyhow::bail!("packet #{index}: unexpected XDP action {other}"),
            };
            r.reason = match call {
                Some(c) => format!(
                    "call from extension {:?} to {} refused (403): {}",
                    c.extension, c.number, c.rule
                ),
                None => explain::ingress(&mut self.dp, self.settings, &trace, h.as_ref())?,
            };
        }
        Ok(r)
    }

    fn test_run(&self, eth: &[u8], egress: bool) -> Result<u32> {
        let result = if egress {
            let data = &eth[..eth.len().min(EGRESS_RUN_MAX)];
            self.dp.tc().test_run(run_opts(data))
        } else {
            let data = &eth[..eth.len().min(INGRESS_RUN_MAX)];
            self.dp.xdp().test_run(run_opts(data))
        };
        Ok(result?.return_value)
    }

    /// Every ban in the BANS map, plus any the ring buffer reported that the map lacks, in the
    /// order they were issued.
    fn bans(&mut self) -> Result<Vec<ReplayBan>> {
        let prefix = self.settings.sip.ipv6_prefix;
        let mut found: Vec<(u64, ReplayBan)> = Vec::new();
        for entry in self.dp.bans()?.iter() {
            let (key, b) = entry?;
            found.push((
                b.created_ns,
                replay_ban(key, prefix, b.reason, b.failures, ban_time(&b)),
            ));
        }
        let mut ring = RingBuf::try_from(self.dp.map_mut(map::EVENTS.name)?)?;
        let mut events = std::mem::take(&mut self.ban_events);
        events.extend(maps::drain_events(&mut ring).bans);
        for e in events {
            let net = ban_net(e.addr, prefix);
            if !found.iter().any(|(_, b)| b.addr == net) {
                let time =
                    (e.expires_ns != 0).then(|| Duration::from_nanos(e.expires_ns - e.time_ns));
                found.push((
                    e.time_ns,
                    replay_ban(e.addr, prefix, e.reason, e.failures, time),
                ));
            }
        }
        found.sort_by_key(|a| (a.0, a.1.addr));
        Ok(found.into_iter().map(|(_, b)| b).collect())
    }
}

/// A passed packet with its addresses and no reason yet.
fn blank_result(index: usize, h: Option<&Headers>, egress: bool, truncated: bool) -> PacketResult {
    let ports = h.and_then(|h| h.ports);
    PacketResult {
        index,
        direction: if egress {
            Direction::Egress
        } else {
            Direction::Ingress
        },
        verdict: Verdict::Pass,
        reason: String::new(),
        recorded: Vec::new(),
        src: h.map(|h| h.src),
        dst: h.map(|h| h.dst),
        sport: ports.map(|p| p.0),
        dport: ports.map(|p| p.1),
        truncated,
    }
}

fn run_opts(data: &[u8]) -> TestRunOptions<'_> {
    TestRunOptions {
        data_in: Some(data),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::{
        ReplayBan,
        capture::{ETH_P_IP, check_link, ethernet, linktype, to_ethernet},
        explain::ban_net,
        headers::headers,
    };
    use crate::addr;
    use std::net::IpAddr;

    /// An IPv4/UDP packet 192.0.2.1:5062 -> 203.0.113.5:5060 carrying `payload`.
    fn ipv4_udp(payload: &[u8]) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 192, 0, 2, 1, 203, 0, 113, 5,
        ];
        p.extend_from_slice(&[0x13, 0xc6, 0x13, 0xc4, 0, 0, 0, 0]);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn link_layers_become_ethernet() {
        let ip = ipv4_udp(b"SIP/2.0 401 Unauthorized\r\n");
        let want = ethernet(ETH_P_IP, &ip);
        let mut sll = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 2, 0, 0, 0x08, 0x00];
        sll.extend_from_slice(&ip);
        let mut sll2 = vec![
            0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 2, 0, 0,
        ];
        sll2.extend_from_slice(&ip);
        assert_eq!(to_ethernet(linktype::LINUX_SLL, &sll), Some(want.clone()));
        assert_eq!(to_ethernet(linktype::LINUX_SLL2, &sll2), Some(want.clone()));
        assert_eq!(to_ethernet(linktype::RAW, &ip), Some(want.clone()));
        assert_eq!(to_ethernet(linktype::RAW_BSD, &ip), Some(want.clone()));
        assert_eq!(to_ethernet(linktype::IPV4, &ip), Some(want));
        assert_eq!(to_ethernet(linktype::LINUX_SLL, &sll[..10]), None);
        assert!(check_link(105).unwrap_err().to_string().contains("105"));
    }

    #[test]
    fn headers_behind_two_vlan_tags() {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x88, 0xa8, 0, 1, 0x81, 0x00, 0, 2, 0x08, 0x00]);
        f.extend_from_slice(&ipv4_udp(b"SIP/2.0 404 Not Found\r\n"));
        let h = headers(&f).expect("IPv4");
        assert_eq!(h.src, "192.0.2.1".parse::<IpAddr>().unwrap());
        assert_eq!(h.dst, "203.0.113.5".parse::<IpAddr>().unwrap());
        assert_eq!(h.ports, Some((5062, 5060)));
        assert!(headers(&ethernet(0x0806, &[0; 28])).is_none(), "ARP");
    }

    #[test]
    fn ban_addresses_print_like_ban_list() {
        let v4 = ban_net(addr::to_key("192.0.2.10".parse().unwrap()), 64);
        let v6 = ban_net(addr::ban_key("2001:db8:1:2:3::4".parse().unwrap(), 64), 64);
        let ban = |addr| ReplayBan {
            addr,
            reason: "auth-failures".into(),
            failures: 5,
            ban_time: None,
        };
        assert_eq!(ban(v4).addr_text(), "192.0.2.10");
        assert_eq!(ban(v6).addr_text(), "2001:db8:1:2::/64");
    }
}
