//! Locked extensions and blocked pairs: the kernel counts failures per extension across
//! untrusted sources and locks it (`EXT_LOCKS`), and a trusted source's failures per
//! (source, extension) pair, which it blocks (`PAIRS`). This is what `ext list` shows,
//! `ext unlock` lifts, and what the daemon expires and reports.
use anyhow::{Context as _, Result};
use aya::maps::{HashMap, MapData};
use serde::Serialize;
use sip_filter_common::{EXT_LOCKED, ExtEvent, ExtLock, Pair, SourceKey, ext_id, map};

use crate::{bans, calls::holds, clock, maps::Maps};

/// One lock or block in force.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Entry {
    pub extension: String,
    /// `locked` (every untrusted source), or `blocked` from `source` (a trusted one).
    pub kind: &'static str,
    pub source: Option<String>,
    pub failures: u32,
    /// RFC 3339.
    pub until: String,
    pub remaining_secs: u64,
}

fn until(ns: u64, now: u64) -> (String, u64) {
    (
        humantime::format_rfc3339_seconds(clock::to_wall(ns)).to_string(),
        ns.saturating_sub(now) / 1_000_000_000,
    )
}

/// Every locked extension, then every blocked pair, in force now.
pub fn list(dp: &mut impl Maps) -> Result<Vec<Entry>> {
    let now = clock::boot_ns();
    let mut out = Vec::new();
    {
        let locks: HashMap<&mut MapData, u64, ExtLock> =
            HashMap::try_from(dp.map_mut(map::EXT_LOCKS.name)?)?;
        for (_, l) in locks.iter().filter_map(Result::ok) {
            if l.until_ns > now {
                let (until, remaining_secs) = until(l.until_ns, now);
                out.push(Entry {
                    extension: holds::name(&l.name),
                    kind: "locked",
                    source: None,
                    failures: l.failures,
                    until,
                    remaining_secs,
                });
            }
        }
    }
    let names = names(dp)?;
    let blocked: Vec<(SourceKey, Pair)> = {
        let pairs: HashMap<&mut MapData, SourceKey, Pair> =
            HashMap::try_from(dp.map_mut(map::PAIRS.name)?)?;
        pairs
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, p)| p.blocked_until_ns > now)
            .collect()
    };
    for (k, p) in blocked {
        let (until, remaining_secs) = until(p.blocked_until_ns, now);
        out.push(Entry {
            extension: names
                .iter()
                .find(|(id, _)| *id == k.id)
                .map_or_else(|| format!("#{:016x}", k.id), |(_, n)| n.clone()),
            kind: "blocked",
            source: Some(bans::target_of_key(dp, k.addr)?),
            failures: p.failures,
            until,
            remaining_secs,
        });
    }
    out.sort_by(|a, b| (a.kind, &a.extension).cmp(&(b.kind, &b.extension)));
    Ok(out)
}

/// The names the kernel registered for the extensions it counts (`EXT_FAILURES`).
fn names(dp: &mut impl Maps) -> Result<Vec<(u64, String)>> {
    let f: HashMap<&mut MapData, u64, sip_filter_common::ExtFailures> =
        HashMap::try_from(dp.map_mut(map::EXT_FAILURES.name)?)?;
    Ok(f.iter()
        .filter_map(Result::ok)
        .map(|(id, e)| (id, holds::name(&e.name)))
        .collect())
}

/// Lifts the lock of `ext` and every block of it from a trusted source; how many there were.
pub fn unlock(dp: &mut impl Maps, ext: &str) -> Result<usize> {
    let id = ext_id(&holds::key(ext)?);
    let mut n = 0;
    {
        let mut locks: HashMap<&mut MapData, u64, ExtLock> =
            HashMap::try_from(dp.map_mut(map::EXT_LOCKS.name)?)?;
        if locks.remove(&id).is_ok() {
            n += 1;
        }
    }
    let mut pairs: HashMap<&mut MapData, SourceKey, Pair> =
        HashMap::try_from(dp.map_mut(map::PAIRS.name)?)?;
    let blocked: Vec<(SourceKey, Pair)> = pairs
        .iter()
        .filter_map(Result::ok)
        .filter(|(k, p)| k.id == id && p.blocked_until_ns != 0)
        .collect();
    for (k, p) in blocked {
        let lifted = Pair {
            blocked_until_ns: 0,
            failures: 0,
            ..p
        };
        pairs.insert(k, lifted, 0).context("writing PAIRS")?;
        n += 1;
    }
    Ok(n)
}

/// Removes the locks that ran out (the kernel ignores them already); their extensions.
pub fn expire(dp: &mut impl Maps) -> Result<Vec<String>> {
    let now = clock::boot_ns();
    let mut locks: HashMap<&mut MapData, u64, ExtLock> =
        HashMap::try_from(dp.map_mut(map::EXT_LOCKS.name)?)?;
    let gone: Vec<(u64, ExtLock)> = locks
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, l)| l.until_ns <= now)
        .collect();
    for (id, _) in &gone {
        let _ = locks.remove(id);
    }
    Ok(gone.iter().map(|(_, l)| holds::name(&l.name)).collect())
}

/// An event's words for the log: "extension 101 locked: 10 failures from untrusted sources".
pub fn describe(e: &ExtEvent, source: &str) -> String {
    let name = holds::name(&e.name);
    let (until, _) = until(e.until_ns, clock::boot_ns());
    if e.kind == EXT_LOCKED {
        format!(
            "extension {name} locked: {} failures from untrusted sources; until {until} only \
             sources that registered it may try it",
            e.failures
        )
    } else {
        format!(
            "extension {name} blocked from {source}: {} failures from a source that holds a \
             working account; its other extensions keep working; until {until}",
            e.failures
        )
    }
}
