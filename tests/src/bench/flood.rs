//! Part 2: CPU per dropped packet under a flood from a banned source, on a veth pair between two
//! namespaces: sip-filter's XDP drop against nftables (netdev ingress; inet prerouting at raw
//! priority) and iptables (raw PREROUTING; iptables-nft and iptables-legacy).
//!
//! Each variant gets its own pair of namespaces, set up once, so that no hook registered for one
//! variant (iptables-legacy's tables stay registered in a namespace once created) lingers on the
//! path of another. The same sender then floods the variants in turn, round after round.
//!
//! iptables is measured twice: `iptables-nft` (Debian's default `iptables`, which turns the rule
//! into native nftables expressions in an `ip raw` table) and `iptables-legacy` (x_tables).
//! `BENCH_DEBUG=1` prints each flood's raw counters.
use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use aya::programs::{XdpMode, links::FdLink};
use sip_filter::{addr, clock, dataplane::Dataplane, maps::Maps as _};
use sip_filter_common::{Ban, Reason};

use crate::{
    bench::{
        Profile,
        inputs::{self, BANNED_V4},
        interleave,
        model::{Part, Row, Table},
        netctx::{
            Affinity, CpuTimes, InNetns, ifindex, in_netns, interrupted, last_allowed_cpu,
            pin_to_cpu, trap_interrupts,
        },
        rawbpf::{self, RawLink, RawXdp},
    },
    netns::Link,
};

pub const TITLE: &str = "Drop under flood: XDP against nftables and iptables";

/// MAC given to every receiving veth, so one frame fits every link.
const RX_MAC: &str = "02:00:00:00:00:01";
/// Frames per BPF_PROG_TEST_RUN call of the sender (about 20 ms of flood).
const CHUNK: u32 = 65_536;
/// Frames per NAPI flush of the sender (the kernel's default batch).
const BATCH: u32 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Xdp,
    XdpFloor,
    NftNetdev,
    NftInetRaw,
    IptNftRaw,
    IptLegacyRaw,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::Xdp,
        Kind::XdpFloor,
        Kind::NftNetdev,
        Kind::NftInetRaw,
        Kind::IptNftRaw,
        Kind::IptLegacyRaw,
    ];

    fn id(self) -> &'static str {
        match self {
            Kind::Xdp => "p2.flood.xdp",
            Kind::XdpFloor => "p2.flood.xdp_floor",
            Kind::NftNetdev => "p2.flood.nft_netdev",
            Kind::NftInetRaw => "p2.flood.nft_inet_raw",
            Kind::IptNftRaw => "p2.flood.iptables_nft_raw",
            Kind::IptLegacyRaw => "p2.flood.iptables_legacy_raw",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Xdp => "sip-filter: `sip_xdp`, native XDP on the veth, ban in BANS",
            Kind::XdpFloor => {
                "reference: empty XDP program returning XDP_DROP (the floor of any XDP drop here)"
            }
            Kind::NftNetdev => "nftables: netdev ingress hook, `ip saddr … counter drop`",
            Kind::NftInetRaw => "nftables: inet prerouting, priority raw (-300)",
            Kind::IptNftRaw => "iptables-nft (Debian's `iptables`): raw PREROUTING `-s … -j DROP`",
            Kind::IptLegacyRaw => "iptables-legacy: raw PREROUTING `-s … -j DROP`",
        }
    }

    fn iptables(self) -> &'static str {
        match self {
            Kind::IptLegacyRaw => "iptables-legacy",
            _ => "iptables-nft",
        }
    }
}

/// sip-filter's dataplane with its XDP program attached; dropping it detaches (the link is a
/// bpf_link fd, not pinned).
struct Attached {
    _link: FdLink,
    dp: Dataplane,
}

/// One receiving side and its rule. Fields drop in order: the XDP link before the namespaces.
struct Receiver {
    kind: Kind,
    xdp: Option<Attached>,
    _floor: Option<(RawLink, RawXdp)>,
    _rules: tempfile::TempDir,
    client_ifindex: u32,
    link: Link,
}

impl Receiver {
    fn new(kind: Kind) -> Result<Self> {
        let link = Link::new(&[]).context("creating the namespaces")?;
        let pbx = &link.pbx;
        let ifn = link.pbx_if.as_str();
        pbx.exec("ip", &["link", "set", "dev", ifn, "address", RX_MAC])?;
        // GRO on gives a veth without XDP its NAPI context; without it, frames redirected to the
        // veth are refused. Same setting for every variant.
        pbx.exec("ethtool", &["-K", ifn, "gro", "on"])?;
        let rules = tempfile::tempdir()?;
        let mut xdp = None;
        let mut floor = None;
        match kind {
            Kind::XdpFloor => {
                let prog = RawXdp::load(rawbpf::XDP_DROP)?;
                let l = in_netns(&pbx.path(), || prog.attach_native(ifindex(ifn)?))?;
                floor = Some((l, prog));
            }
            Kind::Xdp => {
                let mut dp = Dataplane::load(None)?;
                let key = addr::ban_key(BANNED_V4.parse()?, 64);
                let ban = Ban::manual(clock::boot_ns(), 0, [0; 32]);
                dp.bans()?.insert(key, ban, 0)?;
                let link_fd = in_netns(&pbx.path(), || {
                    let prog = dp.xdp_mut()?;
                    let id = prog
                        .attach(ifn, XdpMode::Driver)
                        .context("attaching sip_xdp in native mode to the veth")?;
                    Ok(FdLink::try_from(prog.take_link(id)?)?)
                })?;
                xdp = Some(Attached { _link: link_fd, dp });
            }
            Kind::NftNetdev | Kind::NftInetRaw => {
                let ruleset = if kind == Kind::NftNetdev {
                    format!(
                        "table netdev sfbench {{\n  chain ingress {{\n    type filter hook ingress \
                         device \"{ifn}\" priority 0; policy accept;\n    ip saddr {BANNED_V4} \
                         counter drop\n  }}\n}}\n"
                    )
                } else {
                    format!(
                        "table inet sfbench {{\n  chain prerouting {{\n    type filter hook \
                         prerouting priority raw; policy accept;\n    ip saddr {BANNED_V4} \
                         counter drop\n  }}\n}}\n"
                    )
                };
                let f = rules.path().join("rules.nft");
                std::fs::write(&f, ruleset)?;
                pbx.exec("nft", &["-f", f.to_str().unwrap()])?;
            }
            Kind::IptNftRaw | Kind::IptLegacyRaw => {
                pbx.exec(
                    kind.iptables(),
                    &[
                        "-t",
                        "raw",
                        "-A",
                        "PREROUTING",
                        "-s",
                        BANNED_V4,
                        "-j",
                        "DROP",
                    ],
                )?;
            }
        }
        let client_if = link.client_if.clone();
        let client_ifindex = in_netns(&link.client.path(), || ifindex(&client_if))?;
        Ok(Self {
            kind,
            xdp,
            _floor: floor,
            _rules: rules,
            client_ifindex,
            link,
        })
    }

    /// Packets dropped by this variant's rule so far.
    fn dropped(&mut self) -> Result<u64> {
        let pbx = &self.link.pbx;
        match self.kind {
            Kind::Xdp => {
                let dp = &mut self.xdp.as_mut().context("attached")?.dp;
                Ok(dp.stats()?[Reason::DroppedBanned as usize])
            }
            Kind::XdpFloor => {
                let ifn = self.link.pbx_if.clone();
                ethtool_counter(&pbx.exec("ethtool", &["-S", &ifn])?, "rx_queue_0_xdp_drops")
            }
            Kind::NftNetdev => {
                nft_counter(&pbx.exec("nft", &["list", "chain", "netdev", "sfbench", "ingress"])?)
            }
            Kind::NftInetRaw => {
                nft_counter(&pbx.exec("nft", &["list", "chain", "inet", "sfbench", "prerouting"])?)
            }
            Kind::IptNftRaw | Kind::IptLegacyRaw => ipt_counter(&pbx.exec(
                self.kind.iptables(),
                &["-t", "raw", "-L", "PREROUTING", "-v", "-x", "-n"],
            )?),
        }
    }

    fn client_ns(&self) -> PathBuf {
        self.link.client.path()
    }
}

fn nft_counter(listing: &str) -> Result<u64> {
    let mut words = listing.split_whitespace();
    while let Some(w) = words.next() {
        if w == "packets" {
            return Ok(words.next().context("nft counter value")?.parse()?);
        }
    }
    bail!("no counter in nft listing:\n{listing}")
}

fn ethtool_counter(stats: &str, name: &str) -> Result<u64> {
    for l in stats.lines() {
        if let Some((k, v)) = l.trim().split_once(':')
            && k == name
        {
            return Ok(v.trim().parse()?);
        }
    }
    bail!("no {name} in ethtool -S:\n{stats}")
}

fn ipt_counter(listing: &str) -> Result<u64> {
    for l in listing.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.len() > 3 && w[2] == "DROP" {
            return Ok(w[0].parse()?);
        }
    }
    bail!("no DROP rule in iptables listing:\n{listing}")
}

/// One flood's measurements.
#[derive(Clone, Copy, Debug)]
struct Flood {
    /// Receiver softirq time on the flooding CPU per dropped packet, ns.
    rx_ns: f64,
    /// Dropped packets per second, millions.
    mpps: f64,
    /// Sender system time per frame sent, ns.
    tx_ns: f64,
    /// Share of the frames sent that the rule dropped.
    delivered: f64,
    /// Softirq time on the other CPUs per dropped packet, ns (should stay near zero).
    other_softirq_ns: f64,
}

fn flood(rx: &mut Receiver, tx: &RawXdp, frame: &[u8], secs: f64, cpu: usize) -> Result<Flood> {
    let d0 = rx.dropped()?;
    let all0 = CpuTimes::read(None)?;
    let c0 = CpuTimes::read(Some(cpu))?;
    let t0 = Instant::now();
    let mut sent = 0u64;
    {
        let _ns = InNetns::enter(&rx.client_ns())?;
        let limit = Duration::from_secs_f64(secs);
        while t0.elapsed() < limit {
            if interrupted() {
                bail!("interrupted");
            }
            tx.send(frame, rx.client_ifindex, CHUNK, BATCH)?;
            sent += u64::from(CHUNK);
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let c = CpuTimes::read(Some(cpu))?.since(&c0);
    let all = CpuTimes::read(None)?.since(&all0);
    let dropped = rx.dropped()? - d0;
    if dropped == 0 {
        bail!(
            "{}: none of {sent} frames was dropped by the rule (did they reach it?)",
            rx.kind.id()
        );
    }
    let d = dropped as f64;
    if std::env::var_os("BENCH_DEBUG").is_some() {
        eprintln!(
            "bench: {} {wall:.2}s sent {sent} dropped {dropped} cpu{cpu} {c:?} all {all:?}",
            rx.kind.id()
        );
    }
    Ok(Flood {
        rx_ns: c.softirq as f64 / d,
        mpps: d / wall / 1e6,
        tx_ns: c.system as f64 / sent as f64,
        delivered: d / sent as f64,
        other_softirq_ns: all.softirq.saturating_sub(c.softirq) as f64 / d,
    })
}

const METHOD: &str = "\
Two network namespaces per variant, joined by a veth pair; the receiving veth has GRO on (which \
gives it a NAPI context) and one rule that drops the banned source 198.51.100.66. The flood is \
the 600-byte REGISTER of part 1 from that source (valid IPv4 checksum, addressed to the \
receiver's MAC), sent by a two-instruction `return XDP_TX` program run with BPF_PROG_TEST_RUN in \
`BPF_F_TEST_XDP_LIVE_FRAMES` mode (64 frames per NAPI flush): each repeat is a real frame \
transmitted on the sending veth. The receiver takes the frames in its NAPI poll, as a NIC \
driver would, so its work runs in softirq, while the sender's work is system time in the \
syscall. The sending thread is pinned to the last CPU and NAPI runs on the CPU that scheduled \
it, so the receiver's whole cost is that CPU's softirq time in `/proc/stat`, divided by the \
packets the rule counted (sip-filter's `dropped_banned` counter, the nft rule counter, the \
iptables rule counter). This kernel has no `CONFIG_IRQ_TIME_ACCOUNTING`: softirq time is \
sampled by the 250 Hz tick, which is unbiased but grainy, hence floods of several seconds and \
the median of several rounds. The packet rate is what one CPU reaches doing both the sending \
and the receiving, so it is a ceiling of this set-up, not of a NIC. The XDP variant is the real \
`sip_xdp` program of the filter's object, attached in native (driver) mode to the veth, with a \
real ban in its BANS map. Variants run in rotating order in every round.";

pub fn run(p: &Profile) -> Result<Part> {
    let p = p.clone();
    // A thread of its own: it pins itself to one CPU and hops between namespaces, and neither
    // must leak into the rest of the run.
    let _trap = trap_interrupts();
    std::thread::spawn(move || {
        let affinity = Affinity::current()?;
        let r = run_pinned(&p);
        affinity.restore();
        r
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the flood thread panicked"))?
}

fn run_pinned(p: &Profile) -> Result<Part> {
    let cpu = last_allowed_cpu()?;
    pin_to_cpu(cpu)?;
    let mut frame = inputs::register600(BANNED_V4.parse()?, 5060);
    let mac: Vec<u8> = RX_MAC
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()?;
    frame[0..6].copy_from_slice(&mac);
    inputs::fix_ipv4_checksum(&mut frame);
    let tx = RawXdp::load(rawbpf::XDP_TX)?;
    let mut receivers = Kind::ALL
        .into_iter()
        .map(|k| Receiver::new(k).with_context(|| format!("setting up {}", k.id())))
        .collect::<Result<Vec<_>>>()?;
    // A short flood per variant first: proves the frames reach each rule and warms the paths.
    for rx in &mut receivers {
        let f = flood(rx, &tx, &frame, 0.2, cpu)?;
        if f.delivered < 0.9 {
            bail!(
                "{}: the rule saw only {:.0}% of the frames sent",
                rx.kind.id(),
                f.delivered * 100.0
            );
        }
    }
    let results = interleave(&mut receivers, p.rounds, |rx| {
        flood(rx, &tx, &frame, p.flood_secs, cpu)
    })?;
    let mut rows = Vec::new();
    for (rx, fl) in receivers.iter().zip(&results) {
        let col = |f: fn(&Flood) -> f64| fl.iter().map(f).collect::<Vec<_>>();
        let mut row = Row::new(rx.kind.id(), rx.kind.label(), "ns/packet", col(|f| f.rx_ns))
            .baseline(Kind::NftInetRaw.id())
            .extra("rate", "Mpps", col(|f| f.mpps))
            .extra("sender", "ns/frame", col(|f| f.tx_ns))
            .extra("dropped/sent", "", col(|f| f.delivered))
            .extra(
                "softirq on other CPUs",
                "ns/packet",
                col(|f| f.other_softirq_ns),
            );
        if rx.kind == Kind::Xdp {
            row = row.goal(
                "at least 5x cheaper per packet than the nftables raw drop (ratio <= 0.20)",
                0.2,
            );
        }
        rows.push(row);
    }
    drop(receivers);
    let mut part = Part::new(2, TITLE, METHOD);
    let mut table = Table::figures(
        "p2.flood",
        "Receiver CPU per dropped packet (softirq on the flooding CPU)",
        &format!(
            "{} rounds, {:.1} s of flood per variant and round; ratio: to the nftables inet \
             prerouting raw drop of the same round.",
            p.rounds, p.flood_secs
        ),
        rows,
    );
    table.show_delta = false;
    part.tables.push(table);
    let floor_id = Kind::XdpFloor.id();
    let nft_id = Kind::NftInetRaw.id();
    if let (Some(floor), Some(xdp), Some(nft), Some(nft_floor)) = (
        part.median(floor_id),
        part.median(Kind::Xdp.id()),
        part.median(nft_id),
        part.ratio_between(nft_id, floor_id),
    ) {
        let need = if xdp > nft / 5.0 {
            format!(
                " To be 5x cheaper than the nftables raw drop here, sip-filter's drop would have \
                 to cost at most {:.0} ns, i.e. add at most {:.0} ns to the empty program's.",
                nft / 5.0,
                nft / 5.0 - floor
            )
        } else {
            String::new()
        };
        let bound = if nft_floor.median < 5.0 {
            " On this path, then, no XDP program could be 5x cheaper than the nftables raw drop: \
             the veth driver's own per-frame work, which every XDP program pays, is the floor. On a \
             NIC, XDP drops in the driver before any skb exists, and published NIC measurements \
             show a wider gap; this run does not measure a NIC."
        } else {
            ""
        };
        part.summary.push(format!(
            "Receiver CPU per dropped packet under flood: an empty XDP program returning XDP_DROP \
             costs {floor:.0} ns on this veth path, sip-filter's drop {xdp:.0} ns ({:+.0} ns: \
             its parsing, ban lookup and counters), the nftables raw drop {nft:.0} ns: the empty \
             XDP drop is {:.1}x cheaper than nftables here.{bound}{need}",
            xdp - floor,
            nft_floor.median
        ));
    }
    Ok(part)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counters() {
        let nft = "table inet sfbench {\n\tchain prerouting {\n\t\ttype filter hook prerouting \
                   priority raw; policy accept;\n\t\tip saddr 198.51.100.66 counter packets 12 \
                   bytes 7200 drop\n\t}\n}\n";
        assert_eq!(nft_counter(nft).unwrap(), 12);
        let ipt = "Chain PREROUTING (policy ACCEPT 0 packets, 0 bytes)\n    pkts      bytes \
                   target     prot opt in     out     source               destination\n      \
                   34     2040 DROP       0    --  *      *       198.51.100.66        \
                   0.0.0.0/0\n";
        assert_eq!(ipt_counter(ipt).unwrap(), 34);
    }
}
