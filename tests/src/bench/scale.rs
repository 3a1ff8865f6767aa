//! Part 5: kernel memory of every map with 1M tracked sources, 250k bans and 500k geo prefixes,
//! and the per-packet cost growth from empty to full maps.
use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context as _, Result, bail};
use aya::maps::{HashMap, Map, MapData};
use sip_filter::{addr, clock, geo::GeoTable, maps::Maps as _};
use sip_filter_common::{Failures, Flow, FlowKey, map};

use crate::{
    bench::{
        Profile,
        cost::{ban_all, load_geo},
        inputs::{self, *},
        interleave,
        model::{Part, Row, Table, TableKind},
        netctx::thread_cpu_ns,
        stats::Summary,
    },
    harness::{Harness, XDP_DROP, XDP_PASS},
};

pub const TITLE: &str = "Scale: map memory and cost growth with full maps";

/// Id of the map behind `m`, for bpftool.
fn map_id(m: &Map) -> Result<u32> {
    let d: &MapData = match m {
        Map::Array(d)
        | Map::HashMap(d)
        | Map::LruHashMap(d)
        | Map::LpmTrie(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuHashMap(d)
        | Map::RingBuf(d)
        | Map::ProgramArray(d) => d,
        _ => bail!("unexpected map type"),
    };
    Ok(d.info()?.id())
}

/// A map as `bpftool -j map show id N` describes it.
#[derive(Clone, Debug)]
struct MapMem {
    name: String,
    kind: String,
    key: u64,
    value: u64,
    max_entries: u64,
    memlock: u64,
}

fn map_memory(h: &Harness) -> Result<Vec<MapMem>> {
    let mut out = Vec::new();
    for spec in map::ALL {
        let name = spec.name;
        let m = h.dp.map(name)?;
        let id = map_id(m)?;
        let o = std::process::Command::new("bpftool")
            .args(["-j", "map", "show", "id", &id.to_string()])
            .output()
            .context("running bpftool (`cargo xtask setup` installs it)")?;
        if !o.status.success() {
            bail!(
                "bpftool map show id {id}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let j: serde_json::Value = serde_json::from_slice(&o.stdout)?;
        let n = |k: &str| j[k].as_u64().unwrap_or(0);
        out.push(MapMem {
            name: name.to_string(),
            kind: j["type"].as_str().unwrap_or("?").to_string(),
            key: n("bytes_key"),
            value: n("bytes_value"),
            max_entries: n("max_entries"),
            memlock: n("bytes_memlock"),
        });
    }
    Ok(out)
}

/// Fills FLOWS with `n` client sockets and FAILURES with `n` sources.
fn fill_tracking(h: &mut Harness, n: usize) -> Result<()> {
    let now = clock::boot_ns();
    let src = |i: usize| IpAddr::V4(Ipv4Addr::from(0x0a00_0000u32 + i as u32));
    {
        let mut flows: HashMap<&mut MapData, FlowKey, Flow> =
            HashMap::try_from(h.dp.map_mut(map::FLOWS.name)?)?;
        // One pending REGISTER per socket, as after a phone's first request.
        let f = Flow {
            pending: 1,
            register_invite: 1,
            ..Default::default()
        };
        for i in 0..n {
            let k = FlowKey::new(addr::to_key(src(i)), 5060 + (i % 7) as u16);
            flows.insert(k, f, 0).context("filling FLOWS")?;
        }
    }
    let mut failures = h.dp.failures()?;
    let f = Failures {
        auth_first_ns: now,
        auth: 2,
        ..Default::default()
    };
    for i in 0..n {
        failures
            .insert(addr::to_key(src(i)), f, 0)
            .context("filling FAILURES")?;
    }
    Ok(())
}

const METHOD: &str = "\
Two dataplanes with the same map sizes (FLOWS and FAILURES resized with \
`Dataplane::load_with` to hold the tracked sources), one left empty and one filled from \
userspace: FLOWS with one entry per tracked client socket, FAILURES with one per source, BANS \
with the bans below, and the largest geo table of part 1 (built with `GeoTable::build`, \
applied with `GeoMaps::apply`). Memory is `bytes_memlock` from `bpftool -j map show id N`, which \
on this kernel is the map's own accounting of what it allocated (`map_mem_usage`). Hash and LRU \
maps are preallocated, so they cost the same empty or full: their size is chosen at load time, \
not by the traffic. Cost growth: the same BPF_PROG_TEST_RUN measurement as part 1 (warm, thread \
CPU time over the repeats), on the empty and on the full dataplane, interleaved.";

pub fn run(p: &Profile) -> Result<Part> {
    let tracked = p.tracked;
    let cap = (tracked as u32).next_power_of_two();
    let sizes = [(map::FLOWS.name, cap), (map::FAILURES.name, cap)];
    let mut empty = Harness::with_sizes(&sizes)?.untraced()?;
    let mut full = Harness::with_sizes(&sizes)?.untraced()?;
    let geo_n = p.geo_sizes[3];
    let table = GeoTable::build(geo_prefixes(geo_n))?;
    let bans = ban_sources(p.bans);
    for h in [&mut empty, &mut full] {
        ban_all(h, &[BANNED_V4.parse()?])?;
    }
    eprintln!(
        "bench: part 5: filling maps ({tracked} tracked sources, {} bans, {geo_n} geo prefixes)",
        p.bans
    );
    fill_tracking(&mut full, tracked)?;
    ban_all(&mut full, &bans)?;
    load_geo(&mut full, &table)?;

    let flows = full.dp.count_entries(&map::FLOWS)?;
    let failures = full.dp.count_entries(&map::FAILURES)?;
    let nbans = full.dp.count_entries(&map::BANS)?;
    if flows < tracked || failures < tracked {
        bail!(
            "the LRU maps evicted entries while filling: FLOWS {flows}, FAILURES {failures} of \
             {tracked}"
        );
    }
    let geo_nodes = table.nodes.len();
    let entries = |name: &str| -> String {
        let is = |spec: map::Spec| name == spec.name;
        if is(map::FLOWS) {
            flows.to_string()
        } else if is(map::FAILURES) {
            failures.to_string()
        } else if is(map::BANS) {
            nbans.to_string()
        } else if is(map::GEO_NODES) {
            geo_nodes.to_string()
        } else if is(map::GEO_V4) || is(map::GEO_V6) {
            "(array)".into()
        } else {
            "-".into()
        }
    };

    let mem_full = map_memory(&full)?;
    let mem_empty = map_memory(&empty)?;
    let mut mem_rows = Vec::new();
    for (f, e) in mem_full.iter().zip(&mem_empty) {
        mem_rows.push(
            Row::new(
                &format!("p5.mem.{}", f.name),
                &format!(
                    "{} ({}, key {} B, value {} B, max {} entries; holds {})",
                    f.name,
                    f.kind,
                    f.key,
                    f.value,
                    f.max_entries,
                    entries(&f.name)
                ),
                "bytes",
                vec![f.memlock as f64],
            )
            .extra("empty maps", "bytes", vec![e.memlock as f64]),
        );
    }
    let total: u64 = mem_full.iter().map(|m| m.memlock).sum();
    let total_empty: u64 = mem_empty.iter().map(|m| m.memlock).sum();
    mem_rows.push(
        Row::new("p5.mem.total", "all maps", "bytes", vec![total as f64]).extra(
            "empty maps",
            "bytes",
            vec![total_empty as f64],
        ),
    );

    // Cost growth, interleaved: (id, label, frame, verdict).
    let tracked_src: IpAddr = Ipv4Addr::from(0x0a00_0000u32 + 7).into();
    let cases = [
        (
            "non_sip_udp",
            "non-SIP UDP from an unbanned, unblocked source",
            inputs::rtp(GEO_PASS_V4.parse()?),
            XDP_PASS,
        ),
        (
            "banned_v4",
            "banned IPv4 source, dropped",
            inputs::register600(BANNED_V4.parse()?, 5060),
            XDP_DROP,
        ),
        (
            "register600",
            "600-byte REGISTER from a tracked source",
            inputs::register600(tracked_src, 5060),
            XDP_PASS,
        ),
    ];
    let hs = [&empty, &full];
    let mut vs: Vec<(usize, usize)> = (0..cases.len()).flat_map(|c| [(c, 0), (c, 1)]).collect();
    let repeat = p.repeat;
    let measure = |&mut (c, d): &mut (usize, usize)| -> Result<f64> {
        let (_, _, frame, expect) = &cases[c];
        let t0 = thread_cpu_ns();
        let r = aya::programs::TestRun::test_run(
            hs[d].dp.xdp(),
            aya::programs::TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..Default::default()
            },
        )?;
        let t1 = thread_cpu_ns();
        if r.return_value != *expect {
            bail!("{}: verdict {}", cases[c].0, r.return_value);
        }
        Ok((t1 - t0) as f64 / f64::from(repeat))
    };
    for v in &mut vs {
        measure(v)?;
    }
    let samples = interleave(&mut vs, p.rounds, measure)?;
    let mut cost_rows = Vec::new();
    for ((c, d), s) in vs.iter().zip(samples) {
        let (tag, what, _, _) = &cases[*c];
        let state = if *d == 0 { "empty" } else { "full" };
        let mut row = Row::new(
            &format!("p5.cost.{state}.{tag}"),
            &format!("{what}, {state} maps"),
            "ns/packet",
            s,
        );
        if *d == 1 {
            row = row.baseline(&format!("p5.cost.empty.{tag}"));
        }
        cost_rows.push(row);
    }

    let shared = shared_decisions(p, &mut empty)?;
    let mut part = Part::new(5, TITLE, METHOD);
    part.tables.push(Table {
        id: "p5.mem".into(),
        title: "Kernel memory of every map".into(),
        kind: TableKind::Values,
        show_delta: false,
        intro: format!(
            "Full: {tracked} tracked sources (FLOWS {flows}, FAILURES {failures} entries), \
             {nbans} bans, {geo_n} geo prefixes ({geo_nodes} GEO_NODES entries)."
        ),
        rows: mem_rows,
    });
    part.tables.push(Table::figures(
        "p5.cost",
        "Cost per packet, empty against full maps",
        &format!(
            "{} rounds of {repeat} repeats; ratio: full to empty, same round. With full maps \
             the non-SIP packet also walks the geo table (geo-blocking is off in the empty \
             dataplane), which is part of the growth.",
            p.rounds
        ),
        cost_rows,
    ));
    part.summary.push(shared.1);
    part.tables.push(shared.0);
    part.notes.push(
        "BAN_NETS and ALLOW are LPM tries, which allocate per entry: they hold nothing in either \
         dataplane, hence 0 bytes. Every other map is preallocated at its maximum size."
            .to_string(),
    );
    part.notes.push(
        "Warm test_run keeps the looked-up entries in the CPU caches, so this growth is the \
         longer hash chains and the geo walk, not cache misses; part 1's cold figures, taken \
         with the largest geo table and many bans, show those."
            .to_string(),
    );
    Ok(part)
}

/// Decisions per second of cs-firewall-bouncer's nftables mode (its issue #114), the anchor of
/// the shared-blocklist loader.
const ANCHOR_DECISIONS_PER_SEC: f64 = 40.0;

/// Shared-blocklist decisions (a CrowdSec stream's worth) applied to the maps: through the
/// bouncer's store (state file rows and batch map writes, what the daemon does with a poll),
/// against the same bans written one map update at a time, interleaved; the maps are emptied
/// after each.
fn shared_decisions(p: &Profile, h: &mut Harness) -> Result<(Table, String)> {
    use std::time::{Duration, Instant, SystemTime};

    use sip_filter::{
        bans,
        shared::{Decision, Delta, Store},
        state::{self, State},
    };
    use sip_filter_common::{Ban, BanReason};

    let n = p.decisions;
    // Distinct IPv6 /64s of the documentation prefix (IPv6 is banned by /64).
    let targets: Vec<ipnet::IpNet> = (0..n as u32)
        .map(|i| {
            format!("2001:db8:{:x}:{:x}::1/128", 0x100 + (i >> 16), i & 0xffff)
                .parse()
                .unwrap()
        })
        .collect();
    let dir = tempfile::tempdir()?;
    let mut round = 0;
    let mut variants = [0usize, 1, 2];
    let samples = interleave(&mut variants, p.rounds, |v| -> Result<f64> {
        round += 1;
        let t = Instant::now();
        if *v == 0 {
            let mut st = State::open(&state::path(dir.path(), &format!("r{round}")))?;
            let mut store = Store::new(state::origin::CROWDSEC, BanReason::Crowdsec);
            let expires = Some(SystemTime::now() + Duration::from_secs(4 * 3600));
            let new = targets
                .iter()
                .enumerate()
                .map(|(i, t)| Decision {
                    id: i.to_string(),
                    target: *t,
                    origin: "lists:bench".into(),
                    scenario: "bench".into(),
                    expires,
                })
                .collect();
            let a = store.apply(
                &mut h.dp,
                &mut st,
                Delta {
                    full: true,
                    new,
                    ..Delta::default()
                },
                &[],
            )?;
            anyhow::ensure!(a.written == n, "{} of {n} written", a.written);
        } else {
            let now = clock::boot_ns();
            let ban = Ban {
                created_ns: now,
                expires_ns: now + 4 * 3600 * 1_000_000_000,
                first_failure_ns: 0,
                failures: 0,
                reason: BanReason::Crowdsec as u8,
                _pad: [0; 3],
                note: bans::note_bytes("bench"),
            };
            if *v == 1 {
                for t in &targets {
                    bans::put(&mut h.dp, &t.to_string(), ban)?;
                }
            } else {
                let v6 = bans::v6_prefix(&mut h.dp)?;
                let places: Vec<bans::Place> =
                    targets.iter().map(|t| bans::place(*t, v6)).collect();
                let items: Vec<(&bans::Place, Ban)> = places.iter().map(|p| (p, ban)).collect();
                anyhow::ensure!(bans::put_many(&mut h.dp, &items)? == n);
            }
        }
        let secs = t.elapsed().as_secs_f64();
        let held = h.dp.count_entries(&map::BANS)?;
        // The banned source of the cost rows stays.
        anyhow::ensure!(held >= n, "{held} bans held after writing {n}");
        for t in &targets {
            bans::del(&mut h.dp, *t)?;
        }
        Ok(n as f64 / secs)
    })?;
    let mut it = samples.into_iter();
    let (store, single, batch) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
    let median = |v: &[f64]| Summary::of(v).map_or(0.0, |s| s.median);
    let (ms, m1, mb) = (median(&store), median(&single), median(&batch));
    let rows = vec![
        Row::new(
            "p5.shared.one_by_one",
            &format!("{n} bans written one map update each (`bans::put`)"),
            "decisions/s",
            single,
        ),
        Row::new(
            "p5.shared.batch",
            &format!("{n} bans written in `BPF_MAP_UPDATE_BATCH` calls (`bans::put_many`)"),
            "decisions/s",
            batch,
        )
        .baseline("p5.shared.one_by_one"),
        Row::new(
            "p5.shared.store",
            &format!(
                "{n} CrowdSec decisions through the bouncer's store (state file rows, batch map \
                 writes)"
            ),
            "decisions/s",
            store,
        )
        .baseline("p5.shared.one_by_one"),
    ];
    let table = Table {
        show_delta: false,
        ..Table::figures(
            "p5.shared",
            "Shared-blocklist decisions applied to the maps",
            &format!(
                "{} rounds, interleaved; ratio: to one map update each, same round (higher \
                 is faster). The store also writes a state-file row per decision (SQLite, one \
                 transaction), which is most of its time. The anchor, \
                 cs-firewall-bouncer's nftables mode, applies about {ANCHOR_DECISIONS_PER_SEC:.0} \
                 decisions per second (its issue #114).",
                p.rounds
            ),
            rows,
        )
    };
    let summary = format!(
        "{n} shared decisions applied at {ms:.0}/s through the store ({:.0}x the anchor's ~{:.0}/s; \
         the map writes alone: {mb:.0}/s in batches, {m1:.0}/s one update each)",
        ms / ANCHOR_DECISIONS_PER_SEC,
        ANCHOR_DECISIONS_PER_SEC
    );
    Ok((table, summary))
}
