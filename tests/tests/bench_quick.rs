//! Runs the quick benchmark once (`cargo xtask bench --quick`, through the same library call the
//! `bench` binary makes) so that the benchmark never rots: it must complete and produce every
//! row of every part, with one sample per round and a verdict on every goal. No speed is
//! ever asserted: this machine is shared and the figures move.
//!
//! Needs root, BPF, nftables, iptables, ethtool and bpftool, and for parts 3 and 4 the lab's
//! packages (Kamailio, SIPVicious, SIPp, tcpdump) and fail2ban (`cargo xtask setup`); fails,
//! never skips, without them.
use std::collections::HashMap;

use serde_json::Value;
use sip_filter_common::map;
use tests::bench::{self, Options};

/// Every figure of every part (row ids are the same in quick and full runs).
fn expected_rows() -> Vec<String> {
    let mut ids: Vec<String> = [
        "p1.warm.baseline",
        "p1.warm.non_sip_udp",
        "p1.warm.banned_v4",
        "p1.warm.banned_v6",
        "p1.warm.register600",
        "p1.warm.invite1200",
        "p1.cold.baseline",
        "p1.cold.banned_v4",
        "p1.cold.geo_blocked_v4",
        "p1.cold.geo_pass_v4",
        "p1.cold.register600",
        "p2.flood.xdp",
        "p2.flood.xdp_floor",
        "p2.flood.nft_netdev",
        "p2.flood.nft_inet_raw",
        "p2.flood.iptables_nft_raw",
        "p2.flood.iptables_legacy_raw",
        "p5.mem.total",
        "p5.shared.one_by_one",
        "p5.shared.batch",
        "p5.shared.store",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for size in ["0", "1k", "100k", "500k"] {
        for probe in ["v4_blocked", "v4_pass", "v6_blocked", "v6_pass"] {
            ids.push(format!("p1.geo.{size}.{probe}"));
        }
    }
    for state in ["empty", "full"] {
        for case in ["non_sip_udp", "banned_v4", "register600"] {
            ids.push(format!("p5.cost.{state}.{case}"));
        }
    }
    for v in ["sip_filter", "fail2ban", "none"] {
        ids.push(format!("p3.guesses.{v}"));
        ids.push(format!("p3.after_threshold.{v}"));
    }
    for v in ["sip_filter", "fail2ban"] {
        ids.push(format!("p3.time_to_drop.{v}"));
    }
    for v in ["with", "without"] {
        for fig in ["register_success", "register_latency", "kamailio_cpu"] {
            ids.push(format!("p4.{fig}.{v}"));
        }
    }
    // One memory row per map the dataplane has, whatever maps it grows.
    ids.extend(map::ALL.iter().map(|m| format!("p5.mem.{}", m.name)));
    ids
}

/// Rows that carry one of the goals.
const GOAL_ROWS: &[&str] = &[
    "p1.warm.banned_v4",
    "p1.warm.banned_v6",
    "p1.warm.register600",
    "p1.geo.500k.v4_blocked",
    "p1.geo.500k.v4_pass",
    "p1.geo.500k.v6_blocked",
    "p1.geo.500k.v6_pass",
    "p2.flood.xdp",
    "p3.after_threshold.sip_filter",
];

/// Rows whose sample can be 0: counts of guesses past the threshold (the goal is 0), shares
/// of registrations, CPU ticks of an idle Kamailio over a few seconds, and the receiver's
/// softirq time per dropped packet in the quick run's short floods (sampled at ticks, with no
/// IRQ time accounting: on a fast machine the empty XDP program's drops, 30 ns a tick's worth
/// here, can all fall between two ticks).
const ZERO_OK: &[&str] = &[
    "p2.flood.",
    "p3.after_threshold.",
    "p4.register_success.",
    "p4.kamailio_cpu.",
];

/// Rows whose sample is missing (null) when what they time never happened in a round: no
/// registration succeeded under the flood, fail2ban did not ban within the attack.
const MAY_BE_NULL: &[&str] = &["p4.register_latency.without", "p3.time_to_drop.fail2ban"];

#[test]
fn quick_bench_produces_every_row() {
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = Options::quick();
    opts.out_dir = tmp.path().to_path_buf();
    let rounds = opts.profile.rounds;
    let out = bench::run(&opts).expect("the quick benchmark runs");
    let failed: Vec<String> = out
        .failed()
        .iter()
        .map(|p| format!("part {}: {}", p.number, p.error.as_deref().unwrap_or("")))
        .collect();
    assert!(failed.is_empty(), "parts failed:\n{}", failed.join("\n"));

    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(&out.results_json).unwrap()).unwrap();
    assert_eq!(json["mode"], "quick");
    let mut rows: HashMap<String, &Value> = HashMap::new();
    let mut parts: HashMap<u64, &Value> = HashMap::new();
    for part in json["parts"].as_array().unwrap() {
        parts.insert(part["number"].as_u64().unwrap(), part);
        for table in part["tables"].as_array().unwrap() {
            let values = table["kind"] == "values";
            for row in table["rows"].as_array().unwrap() {
                let id = row["id"].as_str().unwrap().to_string();
                let samples = row["samples"].as_array().unwrap();
                // Figures: one sample per round. Map memory: one reading.
                let want = if values { 1 } else { rounds };
                assert_eq!(samples.len(), want, "{id}: {} samples", samples.len());
                let zero_ok = ZERO_OK.iter().any(|p| id.starts_with(p));
                for s in samples {
                    if s.is_null() && MAY_BE_NULL.contains(&id.as_str()) {
                        continue;
                    }
                    let v = s.as_f64().unwrap_or(f64::NAN);
                    // LPM tries allocate per entry, so an empty one holds 0 bytes.
                    assert!(
                        v.is_finite() && (v > 0.0 || ((values || zero_ok) && v == 0.0)),
                        "{id}: sample {s}"
                    );
                }
                assert!(rows.insert(id.clone(), row).is_none(), "{id} twice");
            }
        }
    }
    let md = std::fs::read_to_string(&out.results_md).unwrap();
    let missing: Vec<String> = expected_rows()
        .into_iter()
        .filter(|id| {
            !rows.contains_key(id) || !md.contains(&format!("`{id}`")) && !id.starts_with("p5.mem.")
        })
        .collect();
    assert!(missing.is_empty(), "rows missing: {missing:?}");
    for id in GOAL_ROWS {
        let goal = &rows[*id]["goal"];
        assert!(
            goal["met"].is_boolean(),
            "{id}: goal without a verdict: {goal}"
        );
    }
    for n in [1, 2, 3, 4, 5] {
        assert_eq!(parts[&n]["status"], "measured", "part {n}");
        assert!(
            md.contains(&format!("## {n}. ")),
            "part {n} not in RESULTS.md"
        );
    }
    assert!(md.contains("## Goals") && md.contains("## Closing note"));
}
