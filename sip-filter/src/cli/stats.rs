//! `stats` and `status`: what the running filter counted and what it is made of.
use anyhow::Result;
use serde::Serialize;
use sip_filter::{
    bans, calls,
    maps::{Maps as _, Pinned},
    pidfile, pins,
};
use sip_filter_common::{Reason, map};

use super::{open, print_json};

pub fn stats(iface: Option<&str>, json: bool) -> Result<()> {
    let (iface, mut maps) = open(iface)?;
    let counters = maps.stats()?;
    let named = Reason::ALL.iter().zip(counters);
    let rules = call_rules(&iface, &mut maps);
    let scanners: Vec<Signature> = sip_filter::scanners::stats(&mut maps)?
        .into_iter()
        .map(|(signature, requests)| Signature {
            signature,
            requests,
        })
        .collect();
    if json {
        let mut obj: serde_json::Map<String, serde_json::Value> = named
            .map(|(r, v)| (r.name().to_string(), v.into()))
            .collect();
        obj.insert("call_rules".into(), serde_json::to_value(&rules)?);
        obj.insert("scanners".into(), serde_json::to_value(&scanners)?);
        println!("{}", serde_json::Value::Object(obj));
    } else {
        for (r, v) in named {
            println!("{:<26} {v:>12}  {}", r.name(), r.explain());
        }
        let used: Vec<&RuleStats> = rules.iter().filter(|r| r.calls > 0).collect();
        if !used.is_empty() {
            println!("\ncalls decided by each toll-fraud rule (INVITEs, both directions):");
            for r in used {
                println!("{:>12} {:>12} blocked  {}", r.calls, r.blocked, r.rule);
            }
        }
        let hit: Vec<&Signature> = scanners.iter().filter(|s| s.requests > 0).collect();
        if !hit.is_empty() {
            println!("\nrequests caught by each scanner signature (User-Agent, without case):");
            for s in hit {
                println!("{:>12}  {}", s.requests, s.signature);
            }
        }
    }
    Ok(())
}

/// One scanner signature's count.
#[derive(Serialize)]
struct Signature {
    /// As the kernel compares it (lower case; `=` for an exact one).
    signature: String,
    requests: u64,
}

/// One toll-fraud rule's counts.
#[derive(Serialize)]
struct RuleStats {
    rule: String,
    /// INVITEs it decided (blocked or let through).
    calls: u64,
    blocked: u64,
}

/// The per-rule counters, named from the state file the daemon keeps them in step with
/// (empty when there is none to read).
fn call_rules(iface: &str, maps: &mut Pinned) -> Vec<RuleStats> {
    let names = pidfile::state_path(iface)
        .and_then(|p| sip_filter::state::State::open_read_only(&p).ok())
        .and_then(|s| s.call_rules().ok())
        .unwrap_or_default();
    let counts = calls::dataplane::rule_stats(maps, names.len()).unwrap_or_default();
    names
        .into_iter()
        .zip(counts)
        .map(|(rule, (calls, blocked))| RuleStats {
            rule,
            calls,
            blocked,
        })
        .collect()
}

#[derive(Serialize)]
struct MapFill {
    name: &'static str,
    entries: usize,
    max_entries: u32,
}

#[derive(Serialize)]
struct Status {
    iface: String,
    mode: Option<String>,
    daemon_pid: Option<i32>,
    program_ids: Vec<(String, u32)>,
    maps: Vec<MapFill>,
    bans: usize,
    /// Shared blocklists (`[crowdsec]`, `[apiban]`), as the daemon last reported them.
    sources: Vec<sip_filter::shared::status::Source>,
}

pub fn status(iface: Option<&str>, json: bool) -> Result<()> {
    let (iface, mut maps) = open(iface)?;
    let dir = pins::dir(&iface);
    let config_id = aya::maps::MapInfo::from_pin(dir.join(map::CONFIG.name))?.id();
    let mut program_ids = Vec::new();
    for p in aya::programs::loaded_programs().filter_map(Result::ok) {
        if p.map_ids()
            .ok()
            .flatten()
            .is_some_and(|ids| ids.contains(&config_id))
        {
            program_ids.push((p.name_as_str().unwrap_or("?").to_string(), p.id()));
        }
    }
    let s = Status {
        mode: pidfile::mode(&iface),
        daemon_pid: pidfile::daemon_pid(&iface),
        program_ids,
        bans: bans::list(&mut maps)?.len(),
        maps: fills(&mut maps)?,
        sources: sip_filter::shared::status::read(&iface),
        iface,
    };
    if json {
        return print_json(&s);
    }
    println!("interface:  {}", s.iface);
    println!("mode:       {}", s.mode.as_deref().unwrap_or("unknown"));
    match s.daemon_pid {
        Some(pid) => println!("daemon:     running (pid {pid})"),
        None => println!(
            "daemon:     not running (the filter still enforces; start it with `sip-filter run --iface {}`)",
            s.iface
        ),
    }
    if s.program_ids.is_empty() {
        println!("programs:   none attached (pins only)");
    }
    for (n, id) in &s.program_ids {
        println!("program:    {n} id {id}");
    }
    println!("bans:       {} in force", s.bans);
    for src in &s.sources {
        println!(
            "source:     {:<17} {:<11} {} last sync {}, {} {}, {} ignored, {} errors{}",
            src.name,
            src.state,
            src.url,
            src.last_sync.as_deref().unwrap_or("never"),
            src.count,
            if src.name.ends_with("watcher") {
                "alerts pushed"
            } else {
                "decisions held"
            },
            src.ignored,
            src.errors,
            src.last_error
                .as_deref()
                .map(|e| format!(" (last: {e})"))
                .unwrap_or_default()
        );
    }
    for m in &s.maps {
        println!(
            "map:        {:<10} {:>8} / {}",
            m.name, m.entries, m.max_entries
        );
    }
    Ok(())
}

/// Fill levels of the maps whose entries come and go.
fn fills(maps: &mut Pinned) -> Result<Vec<MapFill>> {
    let mut out = Vec::new();
    for spec in map::ALL.iter().filter(|s| s.kind.has_entries()) {
        out.push(MapFill {
            name: spec.name,
            entries: maps.count_entries(spec)?,
            max_entries: maps.max_entries(spec)?,
        });
    }
    Ok(out)
}
