//! What `sip-filter top` shows, read from a running filter's pins and state file once per
//! refresh: the counters (rates come from the difference of two readings), bans in force by
//! reason, the sources with the most failures in their current window, and the last bans.
use std::path::Path;

use anyhow::Result;
use sip_filter_common::{BanReason, Reason, map};

use crate::{
    bans,
    maps::{Counters, Maps},
    state::{Row, State},
};

/// One reading.
pub struct Reading {
    pub counters: Counters,
    /// Bans in force, by `BanReason::ALL` order.
    pub bans_by_reason: Vec<(&'static str, usize)>,
    pub bans: usize,
    /// (source, authentication failures, 404s), most first.
    pub top_sources: Vec<(String, u32, u32)>,
    /// The last bans recorded, newest first (from the state file; from the maps without one).
    pub last_bans: Vec<Row>,
    /// Entries and capacity of the maps whose entries come and go.
    pub fill: Vec<(&'static str, usize, u32)>,
}

/// Reads `maps` (and the state file at `state`, when there is one).
pub fn read(maps: &mut impl Maps, state: Option<&Path>, top: usize) -> Result<Reading> {
    let counters = maps.stats()?;
    let list = bans::list(maps)?;
    let bans_by_reason = BanReason::ALL
        .iter()
        .map(|r| {
            (
                r.as_str(),
                list.iter().filter(|e| e.reason == r.as_str()).count(),
            )
        })
        .collect();
    let v6 = bans::v6_prefix(maps)?;
    let mut top_sources: Vec<(String, u32, u32)> = maps
        .failures()?
        .iter()
        .filter_map(Result::ok)
        .map(|(k, f)| (bans::exact_name(k, v6), f.auth, f.not_found))
        .filter(|(_, a, n)| a + n > 0)
        .collect();
    top_sources.sort_by(|a, b| (b.1 + b.2).cmp(&(a.1 + a.2)).then(a.0.cmp(&b.0)));
    top_sources.truncate(top);
    let last_bans = match state.filter(|p| p.exists()) {
        Some(p) => State::open_read_only(p)?.recent(top)?,
        None => Vec::new(),
    };
    let mut fill = Vec::new();
    for spec in map::ALL.iter().filter(|s| s.kind.has_entries()) {
        fill.push((
            spec.name,
            maps.count_entries(spec)?,
            maps.max_entries(spec)?,
        ));
    }
    Ok(Reading {
        counters,
        bans_by_reason,
        bans: list.len(),
        top_sources,
        last_bans,
        fill,
    })
}

/// Per-second rates between two readings `secs` apart, for the reasons that moved or ever
/// counted: (reason, per second, total).
pub fn rates(before: &Counters, now: &Counters, secs: f64) -> Vec<(Reason, f64, u64)> {
    Reason::ALL
        .iter()
        .zip(before.iter().zip(now))
        .filter(|(_, (_, n))| **n > 0)
        .map(|(r, (b, n))| (*r, n.saturating_sub(*b) as f64 / secs.max(0.001), *n))
        .collect()
}
