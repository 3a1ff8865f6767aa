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
