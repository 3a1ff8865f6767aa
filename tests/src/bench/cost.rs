//! Part 1: cost per packet of `sip_xdp`, measured with BPF_PROG_TEST_RUN against the empty XDP
//! program `sip_pass` of the same object, warm (one packet repeated) and cold (many distinct
//! sources, one run each).
use std::net::IpAddr;

use anyhow::{Context as _, Result, bail};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use ipnet::IpNet;
use sip_filter::{addr, clock, geo::GeoTable, maps::Maps as _};
use sip_filter_common::{Ban, PASS_PROG, XDP_PROG};

use crate::{
    bench::{
        Profile,
        inputs::{self, *},
        interleave,
        model::{Part, Row, Table},
        netctx::thread_cpu_ns,
    },
    harness::{Harness, XDP_DROP, XDP_PASS},
};

const XDP_TX: u32 = 3;

pub const TITLE: &str = "Cost per packet (BPF_PROG_TEST_RUN)";

/// Which program of a loaded object a variant runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Prog {
    Pass,
    Sip,
}

/// How a variant feeds the program.
enum Input {
    /// One frame, `repeat` times in one call (warm cache).
    Warm(Vec<u8>),
    /// The template frame with each of these IPv4 sources written in, one run each (cold).
    Cold(Vec<u8>, Vec<[u8; 4]>),
}

struct Variant {
    id: String,
    label: String,
    /// Index into the loaded dataplanes.
    dp: usize,
    prog: Prog,
    input: Input,
    expect: u32,
}

/// One measurement: ns per packet, and the kernel's own (integer) mean for warm runs.
#[derive(Clone, Copy)]
struct Sample {
    ns: f64,
    kernel_ns: f64,
}

fn prog(h: &Harness, p: Prog) -> Result<&Xdp> {
    let name = if p == Prog::Pass { PASS_PROG } else { XDP_PROG };
    h.dp.xdp_program(name)
}

fn measure(hs: &[Harness], v: &mut Variant, repeat: u32) -> Result<Sample> {
    let p = prog(&hs[v.dp], v.prog)?;
    match &mut v.input {
        Input::Warm(frame) => {
            // The thread's CPU clock around the call: sub-nanosecond resolution per packet once
            // divided by a million repeats (the kernel's mean is an integer), and like the
            // kernel's figure it leaves out the time the thread is preempted. The syscall's own
            // cost (a few microseconds) spreads to nothing over the repeats.
            let t0 = thread_cpu_ns();
            let r = p.test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..Default::default()
            })?;
            let t1 = thread_cpu_ns();
            if r.return_value != v.expect {
                bail!(
                    "{}: verdict {} instead of {}",
                    v.id,
                    r.return_value,
                    v.expect
                );
            }
            Ok(Sample {
                ns: (t1 - t0) as f64 / f64::from(repeat),
                kernel_ns: r.duration.as_nanos() as f64,
            })
        }
        Input::Cold(frame, sources) => {
            let mut total = 0u128;
            for s in sources.iter() {
                frame[26..30].copy_from_slice(s);
                let r = p.test_run(TestRunOptions {
                    data_in: Some(frame),
                    repeat: 1,
                    ..Default::default()
                })?;
                if r.return_value != v.expect {
                    bail!(
                        "{}: verdict {} instead of {} for {:?}",
                        v.id,
                        r.return_value,
                        v.expect,
                        s
                    );
                }
                total += r.duration.as_nanos();
            }
            let ns = total as f64 / sources.len() as f64;
            Ok(Sample { ns, kernel_ns: ns })
        }
    }
}

pub fn permanent_ban() -> Ban {
    Ban::manual(clock::boot_ns(), 0, [0; 32])
}

/// Bans every address of `ips` (IPv4 as is, IPv6 by /64) in the harness's BANS.
pub fn ban_all(h: &mut Harness, ips: &[IpAddr]) -> Result<()> {
    let ban = permanent_ban();
    let mut bans = h.dp.bans()?;
    for ip in ips {
        bans.insert(addr::ban_key(*ip, 64), ban, 0)
            .with_context(|| format!("banning {ip}"))?;
    }
    Ok(())
}

/// Loads `table` into a freshly loaded harness and turns geo-blocking on.
pub fn load_geo(h: &mut Harness, table: &GeoTable) -> Result<()> {
    h.dp.geo_maps()?.apply(&GeoTable::default(), table)?;
    h.configure(|c| c.geo_active = 1);
    Ok(())
}

fn v4(ip: IpAddr) -> [u8; 4] {
    match ip {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(_) => unreachable!("cold sources are IPv4"),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// "1k", "100k", "500k" for the nominal sizes of the full profile.
fn size_tag(n: usize) -> String {
    if n >= 1000 {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

const METHOD: &str = "\
BPF_PROG_TEST_RUN runs a program on a frame in the kernel without a NIC, so it measures the \
program alone: what each packet costs on top of what any XDP program costs. The baseline is \
`sip_pass`, an empty XDP program built into the same object, measured in the same round. \
*Warm*: one frame repeated `repeat` times per call, the figure being the calling thread's CPU \
time divided by the repeats (the kernel's own mean, an integer number of nanoseconds, is \
kept in `results.json`; both leave out time the thread is preempted). Every map lookup then \
hits the CPU caches. *Cold*: test_run repeats one frame, so many distinct sources are emulated \
by running each of them once: N distinct frames (the template with each source address \
written in), one call of one run each, mean of the kernel's per-run times. Between two runs \
the syscall and the other sources' entries push each source's map entries out of the caches, \
as a flood from many addresses does. A run's time includes reading the clock once, in both \
the variant and the baseline: cold ratios are therefore compressed toward 1, and the column \
*over baseline* (difference of the same round) is the figure to read. Every variant of the \
part (warm, geo and cold) runs once per round, in rotating order; each verdict is checked \
(a banned source must be dropped, a passing one passed). Geo tables: random prefixes (55% \
IPv4 /24, 5% IPv4 /20, 40% IPv6 /48 under 2,048 /32s, none adjacent or overlapping) built with \
`GeoTable::build` and applied with `GeoMaps::apply`, each size in a dataplane of its own; the \
probes take the longest walk the tables have (IPv4: one word of the /24 bitmap; IPv6: /16 \
array, /32 node, /48 node). At 0 prefixes geo-blocking is off (`geo_active = 0`), which is what the \
daemon does without a geo configuration, so the ratio to it includes the whole lookup.";

pub fn run(p: &Profile) -> Result<Part> {
    let mut hs: Vec<Harness> = Vec::new();
    // Dataplane 0: default maps, no geo; bans for the banned probes.
    let mut h0 = Harness::new()?.untraced()?;
    h0.dp.xdp_program_mut(PASS_PROG)?.load()?;
    ban_all(&mut h0, &[ip(BANNED_V4), ip(BANNED_V6)])?;
    hs.push(h0);

    let client = ip(CLIENT_V4);
    let mut vs = vec![
        warm(
            "p1.warm.baseline",
            "empty XDP program (`sip_pass`): the baseline",
            0,
            Prog::Pass,
            inputs::rtp(client),
            XDP_PASS,
        ),
        warm(
            "p1.warm.non_sip_udp",
            "non-SIP UDP (RTP-sized, port 5004), passed",
            0,
            Prog::Sip,
            inputs::rtp(client),
            XDP_PASS,
        ),
        warm(
            "p1.warm.banned_v4",
            "banned IPv4 source (600-byte REGISTER), dropped",
            0,
            Prog::Sip,
            inputs::register600(ip(BANNED_V4), 5060),
            XDP_DROP,
        ),
        warm(
            "p1.warm.banned_v6",
            "banned IPv6 source (600-byte REGISTER, ban on its /64), dropped",
            0,
            Prog::Sip,
            inputs::register600(ip(BANNED_V6), 5060),
            XDP_DROP,
        ),
        warm(
            "p1.warm.register600",
            "600-byte REGISTER, credentials in its last header: scanned, flow noted, passed",
            0,
            Prog::Sip,
            inputs::register600(client, 5060),
            XDP_PASS,
        ),
        warm(
            "p1.warm.invite1200",
            "1,200-byte INVITE (SDP body, `Proxy-Authorization`): scanned, flow noted, passed",
            0,
            Prog::Sip,
            inputs::invite1200(client, 5060),
            XDP_PASS,
        ),
    ];

    // Counting (scanner signatures, the flood guard): the same REGISTER and INVITE with the
    // default signatures in force and the guard counting each request (at a rate the repeats
    // never reach, so every run is counted and passed), and a source the guard limits.
    let mut hg = Harness::new()?.untraced()?;
    sip_filter::scanners::apply(&mut hg.dp, &sip_filter::scanners::defaults())?;
    hg.configure(|c| {
        c.scanners_active = 1;
        c.flood_interval_ns = 1;
        c.flood_trusted_interval_ns = 1;
        c.flood_per_ns = u64::MAX / 4;
    });
    {
        let mut limited = permanent_ban();
        limited.reason = sip_filter_common::BanReason::Flood as u8;
        hg.dp
            .bans()?
            .insert(addr::ban_key(ip(BANNED_V4), 64), limited, 0)?;
    }
    hs.push(hg);
    let dg = hs.len() - 1;
    vs.push(warm(
        "p1.counting.register600",
        "600-byte REGISTER, scanner signatures and flood guard on: scanned, counted, passed",
        dg,
        Prog::Sip,
        inputs::register600(client, 5060),
        XDP_PASS,
    ));
    vs.push(warm(
        "p1.counting.invite1200",
        "1,200-byte INVITE, scanner signatures and flood guard on: scanned, counted, passed",
        dg,
        Prog::Sip,
        inputs::invite1200(client, 5060),
        XDP_PASS,
    ));
    vs.push(warm(
        "p1.counting.rate_limited",
        "rate-limited IPv4 source (600-byte REGISTER, the flood guard's entry), dropped",
        dg,
        Prog::Sip,
        inputs::register600(ip(BANNED_V4), 5060),
        XDP_DROP,
    ));
    vs.push(warm(
        "p1.counting.register600_tcp",
        "the 600-byte REGISTER in one TCP segment, signatures and guard on: scanned, passed",
        dg,
        Prog::Sip,
        inputs::register600_tcp(client, 40000),
        XDP_PASS,
    ));

    // Calls: the same 1,200-byte INVITE with call rules in force, 10 of them and `call_rules`
    // (100k in the full run), each in a dataplane of its own; and a blocked one, answered.
    let mut call_dp = |config: &str| -> Result<usize> {
        let mut h = Harness::new()?.untraced()?;
        let s = sip_filter::config::Settings::parse(config, "bench.toml".as_ref())?;
        let active = sip_filter::calls::dataplane::apply(&mut h.dp, s.calls.as_ref(), true)?;
        if !active {
            bail!("the benchmark's call rules are not in force");
        }
        h.configure(|c| c.calls_active = 1);
        hs.push(h);
        Ok(hs.len() - 1)
    };
    let d10 = call_dp(inputs::CALL_RULES_10)?;
    let many = p.call_rules;
    let dmany = call_dp(&inputs::call_rules_many(many))?;
    let probe = inputs::CALL_PROBE;
    vs.push(warm(
        "p1.calls.invite1200_10",
        &format!("1,200-byte INVITE to {probe}, 10 call rules: looked up, scanned, passed"),
        d10,
        Prog::Sip,
        inputs::invite1200_to(client, 5060, probe),
        XDP_PASS,
    ));
    vs.push(warm(
        "p1.calls.invite1200_many",
        &format!(
            "1,200-byte INVITE to {probe}, {} call rules: looked up, scanned, passed",
            many + 10
        ),
        dmany,
        Prog::Sip,
        inputs::invite1200_to(client, 5060, probe),
        XDP_PASS,
    ));
    // A blocked INVITE is rewritten into its answer, and test_run's repeats run on the frame
    // as the last run left it (the second would see a response): one run per call, on a fresh
    // copy each time, against the passed INVITE measured the same way.
    let once = (p.repeat / 200) as usize;
    let single = |id: &str, label: &str, frame: Vec<u8>, expect| Variant {
        id: id.to_string(),
        label: label.to_string(),
        dp: d10,
        prog: Prog::Sip,
        input: Input::Cold(frame, vec![v4(client); once]),
        expect,
    };
    vs.push(single(
        "p1.calls.passed_once",
        "1,200-byte INVITE to the probe, 10 call rules, one run per call: passed",
        inputs::invite1200_to(client, 5060, probe),
        XDP_PASS,
    ));
    vs.push(single(
        "p1.calls.blocked_once",
        "1,200-byte INVITE to +8825551234 (blocked), one run per call: answered 403 in place \
         (XDP_TX), event sent",
        inputs::invite1200_to(client, 5060, "+8825551234"),
        XDP_TX,
    ));

    // Geo: one dataplane per table size (the first size, 0, is dataplane 0 with geo off).
    let probes = [
        ("v4_blocked", GEO_BLOCKED_V4, "IPv4 source in a blocked /24"),
        (
            "v4_pass",
            GEO_PASS_V4,
            "IPv4 source outside, /16 partly blocked",
        ),
        ("v6_blocked", GEO_BLOCKED_V6, "IPv6 source in a blocked /48"),
        (
            "v6_pass",
            GEO_PASS_V6,
            "IPv6 source outside, /32 partly blocked",
        ),
    ];
    let nominal = super::Profile::full().geo_sizes;
    let mut big_prefixes: Vec<IpNet> = Vec::new();
    let mut big_table = GeoTable::default();
    let mut geo_ids = Vec::new();
    for (i, (&size, &nom)) in p.geo_sizes.iter().zip(&nominal).enumerate() {
        let dp = if size == 0 {
            0
        } else {
            let nets = geo_prefixes(size);
            let table = GeoTable::build(nets.clone())?;
            if table.prefixes != size {
                bail!(
                    "geo table of {size} random prefixes aggregated to {}",
                    table.prefixes
                );
            }
            let mut h = Harness::new()?.untraced()?;
            load_geo(&mut h, &table).with_context(|| format!("loading {size} geo prefixes"))?;
            hs.push(h);
            if i == p.geo_sizes.len() - 1 {
                big_prefixes = nets;
                big_table = table;
            }
            hs.len() - 1
        };
        for (tag, addr, what) in probes {
            let id = format!("p1.geo.{}.{tag}", size_tag(nom));
            let blocked = size > 0 && tag.ends_with("blocked");
            let label = if size == 0 {
                format!("geo, 0 prefixes (geo off): {what}")
            } else {
                format!("geo, {size} prefixes: {what}")
            };
            vs.push(warm(
                &id,
                &label,
                dp,
                Prog::Sip,
                inputs::rtp(ip(addr)),
                if blocked { XDP_DROP } else { XDP_PASS },
            ));
            geo_ids.push((i, tag, id));
        }
    }

    // Cold: a dataplane with the largest geo table and `cold_sources` bans.
    let n = p.cold_sources;
    let banned = ban_sources(n);
    let blocked = blocked_sources(&big_prefixes, n);
    if blocked.len() < n {
        bail!(
            "only {} blocked /24s for {n} cold sources: raise the largest geo size",
            blocked.len()
        );
    }
    let passing = passing_sources(n, 0x5eed_0004);
    let registering = passing_sources(n, 0x5eed_0005);
    let mut hc = Harness::new()?.untraced()?;
    hc.dp.xdp_program_mut(PASS_PROG)?.load()?;
    load_geo(&mut hc, &big_table)?;
    ban_all(&mut hc, &banned)?;
    hs.push(hc);
    let dc = hs.len() - 1;
    let cold = |id: &str, label: &str, prog, template: Vec<u8>, srcs: &[IpAddr], expect| Variant {
        id: id.to_string(),
        label: label.to_string(),
        dp: dc,
        prog,
        input: Input::Cold(template, srcs.iter().map(|s| v4(*s)).collect()),
        expect,
    };
    let rtp_t = inputs::rtp(client);
    let reg_t = inputs::register600(client, 5060);
    let big = p.geo_sizes[3];
    vs.push(cold(
        "p1.cold.baseline",
        &format!("empty XDP program, {n} distinct sources: the cold baseline"),
        Prog::Pass,
        rtp_t.clone(),
        &passing,
        XDP_PASS,
    ));
    vs.push(cold(
        "p1.cold.banned_v4",
        &format!("{n} distinct banned IPv4 sources ({n} bans held), dropped"),
        Prog::Sip,
        reg_t.clone(),
        &banned,
        XDP_DROP,
    ));
    vs.push(cold(
        "p1.cold.geo_blocked_v4",
        &format!("{n} distinct sources, each in another blocked /24 ({big} prefixes), dropped"),
        Prog::Sip,
        rtp_t.clone(),
        &blocked,
        XDP_DROP,
    ));
    vs.push(cold(
        "p1.cold.geo_pass_v4",
        &format!("{n} distinct sources outside the geo table ({big} prefixes), passed"),
        Prog::Sip,
        rtp_t,
        &passing,
        XDP_PASS,
    ));
    vs.push(cold(
        "p1.cold.register600",
        &format!("600-byte REGISTER from {n} distinct tracked sources (flow entry updated)"),
        Prog::Sip,
        reg_t,
        &registering,
        XDP_PASS,
    ));

    // Warm-up, outside the rounds: faults pages in, and creates the cold REGISTER sources'
    // flow entries so every round measures the same thing (an update of a tracked source).
    for v in &mut vs {
        measure(&hs, v, 1000).with_context(|| format!("warm-up of {}", v.id))?;
    }
    eprintln!(
        "bench: part 1: {} variants x {} rounds (repeat {}, {n} cold sources)",
        vs.len(),
        p.rounds,
        p.repeat
    );
    let repeat = p.repeat;
    let samples = interleave(&mut vs, p.rounds, |v| measure(&hs, v, repeat))?;

    let mut warm_rows = Vec::new();
    let mut call_rows = Vec::new();
    let mut counting_rows = Vec::new();
    let mut geo_rows = Vec::new();
    let mut cold_rows = Vec::new();
    for (v, s) in vs.iter().zip(samples) {
        let mut row = Row::new(
            &v.id,
            &v.label,
            "ns/packet",
            s.iter().map(|x| x.ns).collect(),
        );
        if matches!(v.input, Input::Warm(_)) {
            row = row.extra("kernel mean", "ns", s.iter().map(|x| x.kernel_ns).collect());
        }
        if v.id.starts_with("p1.counting.") {
            row = match v.id.as_str() {
                "p1.counting.register600" => row.baseline("p1.warm.register600").goal(
                    "REGISTER with the counting features <= 1.2x the REGISTER without",
                    1.2,
                ),
                "p1.counting.invite1200" => row.baseline("p1.warm.invite1200").goal(
                    "INVITE with the counting features <= 1.2x the INVITE without",
                    1.2,
                ),
                "p1.counting.rate_limited" => row
                    .baseline("p1.warm.banned_v4")
                    .goal("rate-limited drop <= 1.05x the banned drop", 1.05),
                "p1.counting.register600_tcp" => row.baseline("p1.counting.register600"),
                _ => row,
            };
            counting_rows.push(row);
        } else if v.id.starts_with("p1.calls.") {
            row = match v.id.as_str() {
                "p1.calls.invite1200_10" => row.baseline("p1.warm.invite1200").goal(
                    "INVITE with the call rule lookup <= 1.2x the INVITE without",
                    1.2,
                ),
                "p1.calls.invite1200_many" => row.baseline("p1.calls.invite1200_10").goal(
                    &format!("{} call rules: INVITE <= 1.1x at 10 rules", size_tag(many)),
                    1.1,
                ),
                "p1.calls.blocked_once" => row.baseline("p1.calls.passed_once"),
                _ => row,
            };
            call_rows.push(row);
        } else if v.id.starts_with("p1.warm.") {
            if v.id != "p1.warm.baseline" {
                row = row.baseline("p1.warm.baseline");
            }
            row = match v.id.as_str() {
                "p1.warm.banned_v4" | "p1.warm.banned_v6" => {
                    row.goal("banned drop <= 1.3x the empty program", 1.3)
                }
                "p1.warm.register600" => row.goal("REGISTER <= 3x the empty program", 3.0),
                _ => row,
            };
            warm_rows.push(row);
        } else if v.id.starts_with("p1.geo.") {
            let (i, tag, _) = geo_ids.iter().find(|(_, _, id)| *id == v.id).unwrap();
            if *i == 0 {
                row = row.baseline("p1.warm.baseline");
            } else {
                row = row.baseline(&format!("p1.geo.0.{tag}"));
            }
            if *i == 3 {
                row = row.goal(
                    &format!(
                        "geo at {} prefixes <= 1.5x geo at 0",
                        size_tag(p.geo_sizes[3])
                    ),
                    1.5,
                );
            }
            geo_rows.push(row);
        } else {
            if v.id != "p1.cold.baseline" {
                row = row.baseline("p1.cold.baseline");
            }
            cold_rows.push(row);
        }
    }
    let mut part = Part::new(1, TITLE, METHOD);
    part.tables.push(Table::figures(
        "p1.warm",
        "Warm cache: one packet repeated",
        &format!(
            "{} rounds of {} repeats; ratio: to the empty program in the same round.",
            p.rounds, repeat
        ),
        warm_rows,
    ));
    part.tables.push(Table::figures(
        "p1.counting",
        "Smarter counting: scanner signatures, the flood guard, SIP over TCP",
        &format!(
            "{} rounds of {} repeats, one dataplane with the 19 default User-Agent signatures \
             and the flood guard counting every request (its rate set out of the repeats' \
             reach, so each run is counted and passed). Ratio: to the same packet in the \
             dataplane without them (`p1.warm.*`), same round; the rate-limited source's drop \
             to the banned source's; TCP to UDP.",
            p.rounds, repeat
        ),
        counting_rows,
    ));
    part.tables.push(Table::figures(
        "p1.calls",
        "Toll-fraud rules: the 1,200-byte INVITE with call rules in force",
        &format!(
            "{} rounds of {} repeats; the INVITE dials {probe} (let through: business hours). \
             Ratio: 10 rules to the same INVITE without call rules (it dials an extension, \
             `p1.warm.invite1200`); {} rules to 10 rules, same round. The blocked INVITE is \
             answered where it stands (its request line overwritten, addresses swapped) and \
             goes back out (XDP_TX); as that rewrites the frame, it is measured one run per \
             call (the kernel's time of each, which includes reading the clock) against the \
             passed INVITE measured the same way: read *over baseline*.",
            p.rounds,
            repeat,
            many + 10
        ),
        call_rows,
    ));
    part.tables.push(Table::figures(
        "p1.geo",
        "Geo lookup against the number of prefixes loaded (non-SIP UDP from each probe)",
        &format!(
            "{} rounds of {} repeats; ratio: at 0 prefixes, to the empty program; otherwise to the \
             same probe at 0 prefixes (geo off), same round. Prefixes loaded: {}.",
            p.rounds,
            repeat,
            p.geo_sizes
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        geo_rows,
    ));
    part.tables.push(Table::figures(
        "p1.cold",
        "Cold cache: many distinct sources, one run each",
        &format!(
            "{} rounds of {n} distinct frames; ratio: to the empty program run over the same \
             number of distinct frames in the same round (see the method: compressed toward 1).",
            p.rounds
        ),
        cold_rows,
    ));
    // The structure's own property: does a lookup cost more in a big table than in a small one?
    // Same probe, same round, largest against smallest non-empty table.
    let mut growth = Vec::new();
    for (tag, _, _) in probes {
        if let Some(r) =
            part.ratio_between(&format!("p1.geo.500k.{tag}"), &format!("p1.geo.1k.{tag}"))
        {
            growth.push((tag, r.median));
        }
    }
    if !growth.is_empty() {
        let worst = growth.iter().map(|(_, r)| *r).fold(0.0, f64::max);
        let verdict = if worst <= 1.1 {
            "the lookup does not get measurably dearer as the table grows"
        } else {
            "the lookup gets dearer as the table grows"
        };
        part.summary.push(format!(
            "Geo lookup at {} prefixes against {} prefixes (same probe, same round): {}; {verdict}. \
             The goal's ratio is against 0 prefixes, where geo-blocking is off: it prices the \
             lookup itself, not its growth.",
            p.geo_sizes[3],
            p.geo_sizes[1],
            growth
                .iter()
                .map(|(t, r)| format!("{t} {r:.2}x"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let geo_nodes = big_table.nodes.len();
    part.notes.push(format!(
        "The largest geo table ({} prefixes) compiles to {geo_nodes} GEO_NODES entries and {} + \
         {} non-empty slots (IPv4 /24 bitmap words + IPv6 /16s).",
        big_table.prefixes,
        big_table.v4_words.len(),
        big_table.v6_top.len()
    ));
    Ok(part)
}

fn warm(id: &str, label: &str, dp: usize, prog: Prog, frame: Vec<u8>, expect: u32) -> Variant {
    Variant {
        id: id.to_string(),
        label: label.to_string(),
        dp,
        prog,
        input: Input::Warm(frame),
        expect,
    }
}
