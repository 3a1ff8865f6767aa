//! `replay`: runs a packet capture through a private copy of the dataplane and tells, packet by
//! packet, what the filter would have done with it — what `fail2ban-regex` is to fail2ban.
//!
//! The programs are the real ones, run with `BPF_PROG_TEST_RUN` on a dataplane loaded without
//! pins, so the filter attached to the interface (and its bans) is never touched. Packets sent
//! by one of the PBX's addresses go through the TC egress program (which reads the PBX's
//! answers and issues bans); every other packet goes through XDP. Why a packet got its verdict
//! is read from the per-CPU counters that the run changed.
//!
//! Captures: pcap and pcapng, with Ethernet, Linux cooked (SLL and SLL2, what `tcpdump -i any`
//! writes) or raw IP link layers; the latter two are given a synthetic Ethernet header.
//!
//! # Limitation: time is compressed
//! The programs read the kernel's clock, not the capture's timestamps, so everything in the
//! capture is judged as if it arrived at once: failures hours apart still add up inside one
//! `find_time` window, and a ban issued early in the capture is still in force at its end.
use std::{
    fs::File,
    io::{self, BufReader, Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{TestRun as _, TestRunOptions},
};
use ipnet::IpNet;
use pcap_file::{
    DataLink, PcapError,
    pcap::PcapReader,
    pcapng::{Block, PcapNgReader},
};
use serde::Serialize;
use sip_filter_common::{Ban, BanEvent, BanReason, Failures, map_names, method, stat};

use crate::{addr, config::Settings, dataplane::Dataplane, geo::GeoTable, rules};

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
}

/// What the filter did with one packet of the capture.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PacketResult {
    /// 1-based packet number in the capture (as Wireshark numbers them).
    pub index: usize,
    pub direction: Direction,
    pub verdict: Verdict,
    pub reason: String,
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

// --- reading captures ------------------------------------------------------------------------

/// pcap LINKTYPE_* values replay understands.
mod linktype {
    pub const ETHERNET: u32 = 1;
    /// DLT_RAW as written on most BSDs.
    pub const RAW_BSD: u32 = 12;
    pub const RAW: u32 = 101;
    pub const LINUX_SLL: u32 = 113;
    pub const IPV4: u32 = 228;
    pub const IPV6: u32 = 229;
    pub const LINUX_SLL2: u32 = 276;
}

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_HLEN: usize = 14;

/// Refuses a link type that cannot be turned into Ethernet, naming it.
fn check_link(link: u32) -> Result<()> {
    use linktype::*;
    if matches!(
        link,
        ETHERNET | RAW_BSD | RAW | LINUX_SLL | IPV4 | IPV6 | LINUX_SLL2
    ) {
        return Ok(());
    }
    bail!(
        "link type {link} ({:?}) is not supported: replay reads Ethernet (1), Linux cooked \
         capture SLL (113) and SLL2 (276), and raw IP (101, 12, 228, 229) captures",
        DataLink::from(link)
    )
}

/// One captured packet as an Ethernet frame.
struct Frame {
    /// `None` when the capture cut the packet inside its link-layer header.
    eth: Option<Vec<u8>>,
    /// Fewer bytes captured than were on the wire.
    truncated: bool,
}

impl Frame {
    fn new(link: u32, data: &[u8], orig_len: u32) -> Result<Self> {
        check_link(link)?;
        Ok(Self {
            eth: to_ethernet(link, data),
            truncated: (data.len() as u64) < u64::from(orig_len),
        })
    }
}

/// The frame as the programs expect it. A synthetic Ethernet header carries the ethertype the
/// link layer gave (SLL) or the IP version implies (raw IP); the MACs are never looked at.
fn to_ethernet(link: u32, data: &[u8]) -> Option<Vec<u8>> {
    use linktype::*;
    match link {
        ETHERNET => Some(data.to_vec()),
        // SLL: packet type, ARPHRD, address length, 8 address bytes, protocol; 16 bytes.
        LINUX_SLL => Some(ethernet(be16(data, 14)?, data.get(16..)?)),
        // SLL2: protocol first, then reserved, ifindex, ARPHRD, types, address; 20 bytes.
        LINUX_SLL2 => Some(ethernet(be16(data, 0)?, data.get(20..)?)),
        IPV4 => Some(ethernet(ETH_P_IP, data)),
        IPV6 => Some(ethernet(ETH_P_IPV6, data)),
        _ => {
            let ethertype = match data.first()? >> 4 {
                4 => ETH_P_IP,
                6 => ETH_P_IPV6,
                // Not IP: the programs pass it untouched, and so is it reported.
                _ => 0,
            };
            Some(ethernet(ethertype, data))
        }
    }
}

fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_HLEN + payload.len());
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02]);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn be16(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(data.get(at..at + 2)?.try_into().ok()?))
}

/// The two file formats, told apart by their first four bytes.
enum Source {
    Pcap {
        reader: PcapReader<Box<dyn Read>>,
        link: u32,
    },
    PcapNg(PcapNgReader<Box<dyn Read>>),
}

struct Capture {
    path: PathBuf,
    source: Source,
    /// Packets read so far: the number of the last one.
    count: usize,
}

impl Capture {
    fn open(path: &Path) -> Result<Self> {
        let shown = path.display();
        let mut file =
            BufReader::new(File::open(path).with_context(|| format!("opening capture {shown}"))?);
        let mut magic = [0u8; 4];
        if let Err(e) = file.read_exact(&mut magic) {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                bail!("{shown}: not a pcap or pcapng capture: the file is shorter than a header");
            }
            return Err(e).with_context(|| format!("reading capture {shown}"));
        }
        // The readers want the whole stream, magic included.
        let stream: Box<dyn Read> = Box::new(io::Cursor::new(magic).chain(file));
        let source = match u32::from_be_bytes(magic) {
            0xa1b2_c3d4 | 0xd4c3_b2a1 | 0xa1b2_3c4d | 0x4d3c_b2a1 => {
                let reader = PcapReader::new(stream)
                    .map_err(|e| anyhow::anyhow!("{shown}: bad pcap header: {}", describe(&e)))?;
                let link = u32::from(reader.header().datalink);
                check_link(link).with_context(|| format!("{shown}"))?;
                Source::Pcap { reader, link }
            }
            0x0a0d_0d0a => Source::PcapNg(PcapNgReader::new(stream).map_err(|e| {
                anyhow::anyhow!("{shown}: bad pcapng section header: {}", describe(&e))
            })?),
            _ => bail!(
                "{shown}: not a pcap or pcapng capture (it starts with {:08x}; pcap starts with \
                 a1b2c3d4 or d4c3b2a1, pcapng with 0a0d0d0a)",
                u32::from_be_bytes(magic)
            ),
        };
        Ok(Self {
            path: path.to_path_buf(),
            source,
            count: 0,
        })
    }

    /// The next packet, or an error naming where the capture is damaged.
    fn next_frame(&mut self) -> Option<Result<Frame>> {
        let next = match &mut self.source {
            Source::Pcap { reader, link } => next_pcap(reader, *link),
            Source::PcapNg(reader) => next_pcapng(reader),
        }?;
        self.count += 1;
        Some(
            next.with_context(|| {
                format!("{}: reading packet #{}", self.path.display(), self.count)
            }),
        )
    }
}

fn next_pcap(reader: &mut PcapReader<Box<dyn Read>>, link: u32) -> Option<Result<Frame>> {
    // The raw record skips pcap-file's snaplen checks, which refuse captures that some
    // writers produce (snaplen 0, or records longer than the header's snaplen).
    let record = match reader.next_raw_packet()? {
        Ok(r) => r,
        Err(e) => return Some(Err(anyhow::anyhow!(describe(&e)))),
    };
    Some(Frame::new(link, &record.data, record.orig_len))
}

fn next_pcapng(reader: &mut PcapNgReader<Box<dyn Read>>) -> Option<Result<Frame>> {
    loop {
        let block = match reader.next_block()? {
            Ok(b) => b,
            Err(e) => return Some(Err(anyhow::anyhow!(describe(&e)))),
        };
        let (interface, data, orig_len) = match block {
            Block::EnhancedPacket(b) => (b.interface_id, b.data.into_owned(), b.original_len),
            Block::SimplePacket(b) => (0, b.data.into_owned(), b.original_len),
            Block::Packet(b) => (
                u32::from(b.interface_id),
                b.data.into_owned(),
                b.original_len,
            ),
            // Interfaces are remembered by the reader; statistics, names and the rest are not
            // packets.
            _ => continue,
        };
        let Some(iface) = reader.interfaces().get(interface as usize) else {
            return Some(Err(anyhow::anyhow!(
                "packet on interface {interface}, which the capture never described"
            )));
        };
        return Some(Frame::new(u32::from(iface.linktype), &data, orig_len));
    }
}

/// pcap-file's errors say "Error reading bytes" for a cut file; say what it means.
fn describe(e: &PcapError) -> String {
    match e {
        PcapError::IncompleteBuffer => "the file ends too early (truncated capture?)".into(),
        PcapError::IoError(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
            "the file ends too early (truncated capture?)".into()
        }
        PcapError::IoError(io) => format!("read error: {io}"),
        PcapError::InvalidField(what) => format!("corrupt record: {what}"),
        other => format!("corrupt record: {other}"),
    }
}

// --- reading a frame's headers ---------------------------------------------------------------

/// What the report needs from a frame: a minimal parse, the programs do the real one.
struct Headers<'a> {
    src: IpAddr,
    dst: IpAddr,
    ports: Option<(u16, u16)>,
    /// The UDP payload (to read a response's status code).
    udp_payload: Option<&'a [u8]>,
}

/// Ethernet, up to two VLAN tags, the IPv4 or IPv6 fixed header, UDP/TCP ports. `None` for
/// frames that are not IP or are cut before the addresses.
fn headers(f: &[u8]) -> Option<Headers<'_>> {
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
    let udp_payload = (proto == Some(17)).then(|| f.get(l4 + 8..)).flatten();
    Some(Headers {
        src,
        dst,
        ports,
        udp_payload,
    })
}

/// The status code of a SIP response, if `payload` starts with one.
fn status_code(payload: &[u8]) -> Option<u16> {
    let line = payload.strip_prefix(b"SIP/2.0 ")?;
    let digits = line.get(..3)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

// --- running packets -------------------------------------------------------------------------

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// BPF_PROG_TEST_RUN refuses an skb larger than a page (less head- and tailroom). The egress
/// program only reads the headers and the status line, so a longer answer is cut to this.
const EGRESS_RUN_MAX: usize = 2048;
/// XDP test runs of a frags-aware program take a few pages. The program copies at most
/// `SCAN_BUF` bytes of a message and judges the rest by the UDP length field, which a cut
/// does not change, so cutting a jumbo frame here leaves the verdict as it is.
const INGRESS_RUN_MAX: usize = 16 * 1024;

type Counters = [u64; stat::COUNT as usize];

struct Replayer<'a> {
    dp: Dataplane,
    settings: &'a Settings,
    pbx: &'a [IpAddr],
    /// Counters after the previous packet: each run is judged by what it added.
    counters: Counters,
}

impl<'a> Replayer<'a> {
    fn new(opts: &'a ReplayOptions) -> Result<Self> {
        // No pin directory: fresh maps that only this process sees, so the live filter's bans
        // and counters stay as they are.
        let mut dp = Dataplane::load(None).context(
            "loading a private copy of the dataplane (needs root: CAP_BPF and CAP_NET_ADMIN)",
        )?;
        rules::apply(&mut dp, &opts.settings, &GeoTable::default())
            .context("applying the settings to the replay dataplane")?;
        let counters = read_counters(&dp.ebpf)?;
        Ok(Self {
            dp,
            settings: &opts.settings,
            pbx: &opts.pbx,
            counters,
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
        let action = self.test_run(eth, egress).with_context(|| {
            format!(
                "running packet #{index} through the {:?} program",
                r.direction
            )
        })?;
        let now = read_counters(&self.dp.ebpf)?;
        let delta: Counters = std::array::from_fn(|i| now[i].wrapping_sub(self.counters[i]));
        self.counters = now;
        if egress {
            // Egress never drops; the answer's effect is on the client's failure counts.
            let h = h.as_ref().expect("egress packets have headers");
            r.reason = self.egress_reason(&delta, h)?;
        } else {
            r.verdict = if action == XDP_PASS {
                Verdict::Pass
            } else {
                Verdict::Drop
            };
            r.reason = self.ingress_reason(&delta, h.as_ref(), action)?;
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

    /// Why XDP passed or dropped a packet: the first counter of the table that moved, then
    /// what the request inspection counted, then what is left.
    fn ingress_reason(&self, d: &Counters, h: Option<&Headers<'_>>, action: u32) -> Result<String> {
        /// Counters that name an ingress verdict on their own, in the order the program
        /// decides (a banned non-first fragment is "banned").
        const TABLE: [(u32, &str); 6] = [
            (stat::DROPPED_BANNED, "banned"),
            (stat::DROPPED_GEO, "geo-blocked"),
            (stat::ALLOWLISTED, "allowlisted"),
            (stat::MALFORMED, "malformed"),
            (stat::NON_FIRST_FRAGMENT, "non-first fragment"),
            (stat::NON_SIP_ON_SIP_PORT, "not SIP"),
        ];
        if let Some((index, text)) = TABLE.iter().find(|(i, _)| d[*i as usize] > 0) {
            if *index == stat::DROPPED_BANNED
                && let Some(h) = h
            {
                return self.banned_reason(h.src);
            }
            return Ok((*text).to_string());
        }
        if let Some(text) = request_reason(d) {
            return Ok(text);
        }
        Ok(match h {
            _ if action != XDP_PASS && action != XDP_DROP => format!("XDP action {action}"),
            None => "not IP".into(),
            Some(h) if h.udp_payload.and_then(status_code).is_some() => {
                "SIP response (not tracked)".into()
            }
            Some(_) => "not inspected".into(),
        })
    }

    /// "banned (auth-failures)": which ban dropped it, when the source has one of its own.
    fn banned_reason(&self, src: IpAddr) -> Result<String> {
        Ok(match self.ban_of(src)? {
            Some(b) => format!("banned ({})", reason_text(b.reason)),
            None => "banned".into(),
        })
    }

    /// What a PBX answer did: "401: auth failure 3/5", "403: auth failure 5/5 -> banned for 1h".
    fn egress_reason(&self, d: &Counters, h: &Headers<'_>) -> Result<String> {
        let Some(class) = (1..=6u32).find(|c| d[(stat::RESP_BASE + c) as usize] > 0) else {
            return Ok("not a SIP response".into());
        };
        let code = h.udp_payload.and_then(status_code);
        let shown = code.map_or_else(|| format!("{class}xx"), |c| c.to_string());
        let effect = match failure_kind(d) {
            Some(kind) => self.failure_effect(d, kind, h.dst)?,
            None if d[stat::AUTH_RESETS as usize] > 0 => "failures reset".into(),
            None => uncounted(code.unwrap_or(class as u16 * 100)).into(),
        };
        Ok(format!("{shown}: {effect}"))
    }

    /// "auth failure 3/5", or the ban the failure led to, or why it did not lead to one.
    fn failure_effect(&self, d: &Counters, kind: FailureKind, client: IpAddr) -> Result<String> {
        let (label, max) = match kind {
            FailureKind::Auth => ("auth failure", self.settings.auth.max),
            FailureKind::NotFound => ("not-found", self.settings.enumeration.max),
        };
        if d[stat::BANS_ISSUED as usize] > 0
            && let Some(ban) = self.ban_of(client)?
        {
            return Ok(format!(
                "{label} {} -> banned for {}",
                ratio(ban.failures, max),
                ban_time_text(ban_time(&ban))
            ));
        }
        let n = self.failure_count(client, kind)?;
        if n > 0 || max == 0 {
            return Ok(format!("{label} {}", ratio(n, max)));
        }
        // The threshold was reached (the kernel restarts the count) but no ban was issued.
        let why = if d[stat::BAN_MAP_FULL as usize] > 0 {
            "the ban map is full"
        } else if self.settings.is_allowed(client) {
            "allowlisted"
        } else {
            "already banned for longer"
        };
        Ok(format!("{label} {}, not banned: {why}", ratio(max, max)))
    }

    fn client_key(&self, ip: IpAddr) -> [u8; 16] {
        addr::ban_key(ip, self.settings.sip.ipv6_prefix)
    }

    fn ban_of(&self, ip: IpAddr) -> Result<Option<Ban>> {
        let key = self.client_key(ip);
        let bans: HashMap<&MapData, [u8; 16], Ban> =
            HashMap::try_from(self.dp.ebpf.map(map_names::BANS).context("BANS map")?)?;
        Ok(bans.get(&key, 0).ok())
    }

    fn failure_count(&self, ip: IpAddr, kind: FailureKind) -> Result<u32> {
        let key = self.client_key(ip);
        let failures: HashMap<&MapData, [u8; 16], Failures> = HashMap::try_from(
            self.dp
                .ebpf
                .map(map_names::FAILURES)
                .context("FAILURES map")?,
        )?;
        let f = failures.get(&key, 0).unwrap_or_default();
        Ok(match kind {
            FailureKind::Auth => f.auth,
            FailureKind::NotFound => f.not_found,
        })
    }

    /// Every ban in the BANS map, plus any the ring buffer reported that the map lacks, in the
    /// order they were issued.
    fn bans(&mut self) -> Result<Vec<ReplayBan>> {
        let prefix = self.settings.sip.ipv6_prefix;
        let mut found: Vec<(u64, ReplayBan)> = Vec::new();
        {
            let bans: HashMap<&MapData, [u8; 16], Ban> =
                HashMap::try_from(self.dp.ebpf.map(map_names::BANS).context("BANS map")?)?;
            for entry in bans.iter() {
                let (key, b) = entry?;
                found.push((
                    b.created_ns,
                    replay_ban(key, prefix, b.reason, b.failures, ban_time(&b)),
                ));
            }
        }
        for e in drain_events(&mut self.dp.ebpf)? {
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
fn blank_result(
    index: usize,
    h: Option<&Headers<'_>>,
    egress: bool,
    truncated: bool,
) -> PacketResult {
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

/// Summed per-CPU counters. Read through the object directly: replay needs nothing of the
/// dataplane but its maps and programs.
fn read_counters(ebpf: &Ebpf) -> Result<Counters> {
    let map: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(ebpf.map(map_names::STATS).context("STATS map")?)?;
    let mut out = [0u64; stat::COUNT as usize];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = map.get(&(i as u32), 0)?.iter().sum();
    }
    Ok(out)
}

fn drain_events(ebpf: &mut Ebpf) -> Result<Vec<BanEvent>> {
    let mut ring = RingBuf::try_from(ebpf.map_mut(map_names::EVENTS).context("EVENTS map")?)?;
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        if item.len() >= size_of::<BanEvent>() {
            // SAFETY: the kernel wrote a BanEvent (repr(C), every bit pattern valid).
            out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<BanEvent>()) });
        }
    }
    Ok(out)
}

/// "REGISTER with credentials": what the request inspection counted, if it ran.
fn request_reason(d: &Counters) -> Option<String> {
    let m = (method::REGISTER..=method::OTHER)
        .find(|m| d[(stat::REQ_BASE + u32::from(*m)) as usize] > 0)?;
    let what = if m == method::OTHER {
        "request (other method)"
    } else {
        method::name(m)
    };
    let creds = if d[stat::REQ_WITH_CREDS as usize] > 0 {
        " with credentials"
    } else if d[stat::REQ_CREDS_UNKNOWN as usize] > 0 {
        ", credentials unknown (header section cut)"
    } else {
        " without credentials"
    };
    Some(format!("{what}{creds}"))
}

#[derive(Clone, Copy)]
enum FailureKind {
    Auth,
    NotFound,
}

fn failure_kind(d: &Counters) -> Option<FailureKind> {
    if d[stat::AUTH_FAILURES as usize] > 0 {
        Some(FailureKind::Auth)
    } else if d[stat::NOT_FOUND as usize] > 0 {
        Some(FailureKind::NotFound)
    } else {
        None
    }
}

/// Why an answer counted nothing, by its status code.
fn uncounted(code: u16) -> &'static str {
    match code {
        100..=199 => "provisional",
        200..=299 => "success",
        401 | 407 => "challenge, not counted (no credentialed request pending)",
        404 => "not counted (no REGISTER or INVITE pending)",
        _ => "not counted",
    }
}

/// "3/5", or "3" when the threshold is off.
fn ratio(n: u32, max: u32) -> String {
    if max == 0 {
        n.to_string()
    } else {
        format!("{n}/{max}")
    }
}

fn reason_text(reason: u8) -> &'static str {
    BanReason::from_u8(reason).map_or("unknown", BanReason::as_str)
}

fn ban_time(b: &Ban) -> Option<Duration> {
    (b.expires_ns != 0).then(|| Duration::from_nanos(b.expires_ns.saturating_sub(b.created_ns)))
}

fn ban_time_text(t: Option<Duration>) -> String {
    match t {
        // Whole seconds: the kernel's nanoseconds would print as "1h 2ms 7us".
        Some(t) => humantime::format_duration(Duration::from_secs(t.as_secs())).to_string(),
        None => "ever".into(),
    }
}

/// A BANS key as a network: IPv4 host, or the IPv6 prefix the kernel masked it to.
fn ban_net(key: [u8; 16], v6_prefix: u8) -> IpNet {
    match addr::from_key(key) {
        ip @ IpAddr::V4(_) => IpNet::from(ip),
        ip @ IpAddr::V6(_) => IpNet::new(ip, v6_prefix.min(128))
            .expect("prefix at most 128")
            .trunc(),
    }
}

fn replay_ban(
    key: [u8; 16],
    v6_prefix: u8,
    reason: u8,
    failures: u32,
    ban_time: Option<Duration>,
) -> ReplayBan {
    ReplayBan {
        addr: ban_net(key, v6_prefix),
        reason: reason_text(reason).to_string(),
        failures,
        ban_time,
    }
}

// --- output ----------------------------------------------------------------------------------

fn write_packet(out: &mut dyn Write, r: &PacketResult, json: bool) -> Result<()> {
    if json {
        serde_json::to_writer(&mut *out, r)?;
        writeln!(out)?;
        return Ok(());
    }
    let dir = match r.direction {
        Direction::Ingress => "in",
        Direction::Egress => "out",
    };
    let verdict = match r.verdict {
        Verdict::Pass => "pass",
        Verdict::Drop => "drop",
    };
    let cut = if r.truncated { " [cut by snaplen]" } else { "" };
    writeln!(
        out,
        "#{} {dir:<3} {} -> {} {verdict:<5} {}{cut}",
        r.index,
        endpoint(r.src, r.sport),
        endpoint(r.dst, r.dport),
        r.reason
    )?;
    Ok(())
}

/// "192.0.2.10:5062", "[2001:db8::1]:5060", or the address alone without ports.
fn endpoint(ip: Option<IpAddr>, port: Option<u16>) -> String {
    match (ip, port) {
        (None, _) => "-".into(),
        (Some(ip), None) => ip.to_string(),
        (Some(IpAddr::V4(ip)), Some(p)) => format!("{ip}:{p}"),
        (Some(IpAddr::V6(ip)), Some(p)) => format!("[{ip}]:{p}"),
    }
}

fn write_bans_json(out: &mut dyn Write, bans: &[ReplayBan]) -> Result<()> {
    let bans: Vec<serde_json::Value> = bans
        .iter()
        .map(|b| {
            serde_json::json!({
                "addr": b.addr_text(),
                "reason": b.reason,
                "failures": b.failures,
                "ban_time_secs": b.ban_time.map(|t| t.as_secs()),
            })
        })
        .collect();
    serde_json::to_writer(&mut *out, &serde_json::json!({ "bans": bans }))?;
    writeln!(out)?;
    Ok(())
}

fn write_footer(out: &mut dyn Write, s: &ReplaySummary, pbx: &[IpAddr]) -> Result<()> {
    let dropped = s
        .packets
        .iter()
        .filter(|p| p.verdict == Verdict::Drop)
        .count();
    let answers = s
        .packets
        .iter()
        .filter(|p| p.direction == Direction::Egress)
        .count();
    writeln!(
        out,
        "\n{}: {} passed, {dropped} dropped; {answers} from the PBX.",
        plural(s.packets.len(), "packet"),
        s.packets.len() - dropped,
    )?;
    if s.bans.is_empty() {
        writeln!(out, "No bans.")?;
    } else {
        writeln!(out, "Bans the filter would have issued:")?;
        for b in &s.bans {
            writeln!(
                out,
                "  {:<24} {:<15} {} failures, for {}",
                b.addr_text(),
                b.reason,
                b.failures,
                ban_time_text(b.ban_time)
            )?;
        }
    }
    writeln!(out, "\n{TIMING_NOTE}")?;
    if answers == 0 {
        let list: Vec<String> = pbx.iter().map(IpAddr::to_string).collect();
        writeln!(
            out,
            "Note: no packet came from the PBX ({}); failures are counted from the PBX's \
             answers, so none could be.",
            if list.is_empty() {
                "no --pbx address given".to_string()
            } else {
                list.join(", ")
            }
        )?;
    }
    let cut = s.packets.iter().filter(|p| p.truncated).count();
    if cut > 0 {
        writeln!(
            out,
            "Note: {} cut by the capture's snaplen: the filter saw them whole, so verdicts \
             on credentials may differ (capture with -s 0).",
            plural(cut, "packet")
        )?;
    }
    Ok(())
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(h.udp_payload.and_then(status_code), Some(404));
        assert!(headers(&ethernet(0x0806, &[0; 28])).is_none(), "ARP");
    }

    #[test]
    fn status_codes() {
        assert_eq!(status_code(b"SIP/2.0 200 OK"), Some(200));
        assert_eq!(status_code(b"SIP/2.0 20"), None);
        assert_eq!(status_code(b"REGISTER sip:x SIP/2.0"), None);
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
