//! Decisions from shared blocklists (CrowdSec's Local API, APIBAN), held beside this host's own
//! bans.
//!
//! A decision bans a target for its duration. The maps hold one entry per target, and this
//! host may ban the same target itself, so the store keeps every decision and writes what it
//! should: a local ban in force (the kernel's, an operator's, a flood guard's drop) is never
//! overwritten or lifted by a shared decision, and when it ends the decision is put back
//! (`reinstate`). Deleting a decision lifts exactly that decision: the entry goes only if it
//! is the decision's own and no other decision holds the target. Decisions also live in the
//! state file, so that a reboot restores them before the first packet and a LAPI that is down
//! costs no ban.
pub mod apiban;
pub mod crowdsec;
pub mod status;

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant, SystemTime},
};

use anyhow::Result;
use ipnet::IpNet;
use sip_filter_common::{Ban, BanReason};
use tracing::{info, warn};

use crate::{
    bans::{self, Place},
    clock,
    maps::Maps,
    state::{Cursor, DecisionRow, State},
};
use status::Board;

/// One decision as a source gives it.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Unique within its source.
    pub id: String,
    pub target: IpNet,
    /// Who made it at the source (CrowdSec: `cscli`, `crowdsec`, `CAPI`, `lists:...`).
    pub origin: String,
    pub scenario: String,
    /// `None`: no end.
    pub expires: Option<SystemTime>,
}

/// What a poll of a source brought.
#[derive(Debug, Default)]
pub struct Delta {
    /// The source's whole set (a startup or resync): decisions held and not in it are gone.
    pub full: bool,
    pub new: Vec<Decision>,
    pub deleted: Vec<String>,
    /// An incremental feed's position after this delta, recorded once it is applied (a crash
    /// before that fetches the page again).
    pub cursor: Option<Cursor>,
}

/// What applying a delta did, for the log and `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub added: usize,
    pub removed: usize,
    /// Targets now enforced from a decision (written to the maps).
    pub written: usize,
    /// Targets a local ban in force already holds: kept as they are.
    pub shadowed: usize,
    pub allowlisted: usize,
    pub elapsed: Duration,
    /// Targets whose entry this source lifted: another source's decision may hold them.
    pub lifted: Vec<String>,
}

struct Held {
    target: String,
    net: IpNet,
    origin: String,
    scenario: String,
    expires: Option<SystemTime>,
}

/// The decisions of one source.
pub struct Store {
    source: &'static str,
    reason: BanReason,
    held: HashMap<String, Held>,
    /// Decision ids by target (`ban list`'s name).
    by_target: HashMap<String, Vec<String>>,
}

impl Store {
    pub fn new(source: &'static str, reason: BanReason) -> Self {
        Self {
            source,
            reason,
            held: HashMap::new(),
            by_target: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// The source's name (`state::origin`).
    pub fn source(&self) -> &'static str {
        self.source
    }

    /// The reason of the entries this source writes.
    pub fn reason(&self) -> BanReason {
        self.reason
    }

    /// Loads what the state file holds of this source and writes it to the maps (after a
    /// reboot, before attaching; on a restart the maps hold it already and this changes
    /// nothing). Expired decisions are dropped.
    pub fn load(&mut self, maps: &mut impl Maps, state: &mut State) -> Result<Applied> {
        let now = SystemTime::now();
        let mut new = Vec::new();
        let mut gone = Vec::new();
        for r in state.decisions(self.source)? {
            let expires = r.expires_ms.map(clock::from_unix_ms);
            match bans::parse_target(&r.target) {
                Ok(target) if expires.is_none_or(|e| e > now) => new.push(Decision {
                    id: r.id,
                    target,
                    origin: r.origin,
                    scenario: r.scenario,
                    expires,
                }),
                _ => gone.push(r.id),
            }
        }
        state.delete_decisions(self.source, &gone)?;
        self.apply(
            maps,
            state,
            Delta {
                new,
                ..Delta::default()
            },
            &[],
        )
    }

    /// Applies a poll's decisions to the maps and the state file. A decision for an
    /// allowlisted address is logged and skipped (the kernel lets allowlisted sources through
    /// a CIDR ban anyway).
    pub fn apply(
        &mut self,
        maps: &mut impl Maps,
        state: &mut State,
        delta: Delta,
        allow: &[IpNet],
    ) -> Result<Applied> {
        let started = Instant::now();
        let v6 = bans::v6_prefix(maps)?;
        let mut out = Applied::default();
        let mut dirty: HashSet<String> = HashSet::new();
        let mut deleted = delta.deleted;
        if delta.full {
            let keep: HashSet<&str> = delta.new.iter().map(|d| d.id.as_str()).collect();
            deleted.extend(
                self.held
                    .keys()
                    .filter(|id| !keep.contains(id.as_str()))
                    .cloned(),
            );
        }
        for id in &deleted {
            if let Some(h) = self.forget(id) {
                dirty.insert(h.target);
                out.removed += 1;
            }
        }
        let mut rows = Vec::with_capacity(delta.new.len());
        for d in delta.new {
            if d.target.prefix_len() == d.target.max_prefix_len()
                && allow.iter().any(|n| n.contains(&d.target.addr()))
            {
                info!(
                    addr = %d.target,
                    source = self.source,
                    origin = %d.origin,
                    scenario = %d.scenario,
                    "{} decision for allowlisted {} skipped: the allowlist wins",
                    self.source,
                    d.target
                );
                out.allowlisted += 1;
                continue;
            }
            // A resync repeats what is held: nothing to write (its end moves by the poll's
            // timing only).
            if let Some(h) = self.held.get(&d.id)
                && h.net == d.target
                && h.origin == d.origin
                && h.scenario == d.scenario
                && same_end(h.expires, d.expires)
            {
                continue;
            }
            let p = bans::place(d.target, v6);
            if let Some(old) = self.forget(&d.id) {
                dirty.insert(old.target);
            }
            rows.push(DecisionRow {
                source: self.source.into(),
                id: d.id.clone(),
                target: p.name.clone(),
                origin: d.origin.clone(),
                scenario: d.scenario.clone(),
                expires_ms: d.expires.map(clock::unix_ms),
            });
            self.by_target
                .entry(p.name.clone())
                .or_default()
                .push(d.id.clone());
            dirty.insert(p.name.clone());
            self.held.insert(
                d.id,
                Held {
                    target: p.name,
                    net: d.target,
                    origin: d.origin,
                    scenario: d.scenario,
                    expires: d.expires,
                },
            );
            out.added += 1;
        }
        state.delete_decisions(self.source, &deleted)?;
        state.put_decisions(&rows)?;
        if let Some(c) = &delta.cursor {
            state.set_cursor(self.source, c)?;
        }
        let e = self.enforce(maps, dirty, v6)?;
        out.written = e.written;
        out.shadowed = e.shadowed;
        out.lifted = e.lifted;
        out.elapsed = started.elapsed();
        Ok(out)
    }

    /// A local ban of `target` ended: the decisions held for it are enforced again.
    pub fn reinstate(&mut self, maps: &mut impl Maps, target: &str) -> Result<bool> {
        if !self.by_target.contains_key(target) {
            return Ok(false);
        }
        let v6 = bans::v6_prefix(maps)?;
        let e = self.enforce(maps, HashSet::from([target.to_string()]), v6)?;
        Ok(e.written > 0)
    }

    /// Forgets decisions whose time is up (the daemon's ban expiry removes their entries).
    pub fn expire(&mut self, state: &mut State) -> Result<usize> {
        let now = SystemTime::now();
        let ended: Vec<String> = self
            .held
            .iter()
            .filter(|(_, h)| h.expires.is_some_and(|e| e <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ended {
            self.forget(id);
        }
        state.delete_decisions(self.source, &ended)?;
        Ok(ended.len())
    }

    fn forget(&mut self, id: &str) -> Option<Held> {
        let h = self.held.remove(id)?;
        if let Some(ids) = self.by_target.get_mut(&h.target) {
            ids.retain(|i| i != id);
            if ids.is_empty() {
                self.by_target.remove(&h.target);
            }
        }
        Some(h)
    }

    /// The decision that holds `target` longest.
    fn strongest(&self, target: &str) -> Option<&Held> {
        self.by_target
            .get(target)?
            .iter()
            .filter_map(|id| self.held.get(id))
            .max_by_key(|h| h.expires.map_or(u128::MAX, |e| clock::unix_ms(e) as u128))
    }

    /// Writes each dirty target's strongest decision, or lifts the entry when no decision
    /// holds it any more and it is this source's own.
    fn enforce(&self, maps: &mut impl Maps, dirty: HashSet<String>, v6: u8) -> Result<Enforced> {
        let now_ns = clock::boot_ns();
        let mut writes: Vec<(Place, Ban)> = Vec::new();
        let mut out = Enforced::default();
        for target in dirty {
            let best = self.strongest(&target);
            let net = match best {
                Some(h) => h.net,
                None => match bans::parse_target(&target) {
                    Ok(n) => n,
                    Err(_) => continue,
                },
            };
            let p = bans::place(net, v6);
            let current = bans::get_at(maps, &p)?.filter(|b| b.active_at(now_ns));
            let ours = current.is_some_and(|b| b.reason == self.reason as u8);
            if current.is_some() && !ours {
                out.shadowed += 1;
                continue;
            }
            match best {
                Some(h) => {
                    let ban = Ban {
                        created_ns: now_ns,
                        expires_ns: h.expires.map_or(0, |e| clock::from_wall(e).max(1)),
                        first_failure_ns: 0,
                        failures: 0,
                        reason: self.reason as u8,
                        _pad: [0; 3],
                        note: bans::note_bytes(&h.scenario),
                    };
                    writes.push((p, ban));
                }
                None if ours => {
                    bans::remove_at(maps, &p)?;
                    out.lifted.push(target);
                }
                None => {}
            }
        }
        let items: Vec<(&Place, Ban)> = writes.iter().map(|(p, b)| (p, *b)).collect();
        out.written = bans::put_many(maps, &items)?;
        Ok(out)
    }
}

#[derive(Default)]
struct Enforced {
    written: usize,
    /// Targets a local ban (or another source's decision) in force already holds.
    shadowed: usize,
    lifted: Vec<String>,
}

/// The stores of every feed the daemon runs (CrowdSec, APIBAN), with their status. A target
/// two feeds hold is written by one; when that one's entry ends or is lifted, the other's
/// decision is enforced again.
pub struct Feeds {
    feeds: Vec<Feed>,
    board: Board,
}

struct Feed {
    store: Store,
    url: String,
}

impl Feeds {
    pub fn new(board: Board) -> Self {
        Self {
            feeds: Vec::new(),
            board,
        }
    }

    pub fn len(&self) -> usize {
        self.feeds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.feeds.is_empty()
    }

    /// Adds a feed (its index is `len()` before the call).
    pub fn push(&mut self, store: Store, url: String) {
        self.feeds.push(Feed { store, url });
        self.count(self.feeds.len() - 1);
    }

    pub fn store(&self, i: usize) -> &Store {
        &self.feeds[i].store
    }

    /// Applies a poll of feed `i`; a target it lifted may be another feed's again.
    pub fn apply(
        &mut self,
        maps: &mut impl Maps,
        state: &mut State,
        i: usize,
        delta: Delta,
        allow: &[IpNet],
    ) {
        let f = &mut self.feeds[i];
        let name = f.store.source();
        let owner = f.store.reason();
        let lifted = match f.store.apply(maps, state, delta, allow) {
            Ok(a) => {
                log_applied(name, &a, f.store.len());
                a.lifted
            }
            Err(e) => {
                tracing::error!("applying {name} decisions (the bans in force stay): {e:#}");
                Vec::new()
            }
        };
        self.count(i);
        for t in lifted {
            self.ended(maps, &t, Some(owner));
        }
    }

    /// Entries the daemon's expiry removed: those of a feed may be another feed's target too.
    pub fn expired(&mut self, maps: &mut impl Maps, gone: &[bans::Entry]) {
        for e in gone {
            let reason = BanReason::from_name(&e.reason);
            if reason.is_some_and(BanReason::is_shared) {
                self.ended(maps, &e.addr, reason);
            }
        }
    }

    /// An entry of `owner`'s (a feed's, or a local ban's) ended or was lifted: the other feeds'
    /// decisions for `target` are enforced again.
    pub fn ended(&mut self, maps: &mut impl Maps, target: &str, owner: Option<BanReason>) {
        for f in &mut self.feeds {
            if Some(f.store.reason()) == owner {
                continue;
            }
            match f.store.reinstate(maps, target) {
                Ok(true) => info!(
                    addr = %target,
                    source = f.store.source(),
                    "{target}: the ban in force ended, the {} decision is enforced again",
                    f.store.source()
                ),
                Ok(false) => {}
                Err(e) => warn!(addr = %target, "putting a shared decision back: {e:#}"),
            }
        }
    }

    /// Forgets the decisions whose time is up.
    pub fn expire(&mut self, state: &mut State) {
        for i in 0..self.feeds.len() {
            match self.feeds[i].store.expire(state) {
                Ok(0) => {}
                Ok(_) => self.count(i),
                Err(e) => warn!("expiring shared decisions: {e:#}"),
            }
        }
    }

    fn count(&self, i: usize) {
        let f = &self.feeds[i];
        let held = f.store.len() as u64;
        self.board
            .update(f.store.source(), &f.url, |s| s.count = held);
    }
}

/// Two ends of one decision as two polls computed them (now + the time left).
fn same_end(a: Option<SystemTime>, b: Option<SystemTime>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            let d = a.duration_since(b).or_else(|_| b.duration_since(a));
            d.is_ok_and(|d| d < Duration::from_secs(60))
        }
        (None, None) => true,
        _ => false,
    }
}

/// Logs what a poll applied, when it changed anything.
pub fn log_applied(source: &str, a: &Applied, held: usize) {
    if a.added == 0 && a.removed == 0 && a.allowlisted == 0 {
        return;
    }
    info!(
        source,
        added = a.added,
        removed = a.removed,
        written = a.written,
        shadowed = a.shadowed,
        allowlisted = a.allowlisted,
        held,
        ms = a.elapsed.as_millis() as u64,
        "{source}: {} decisions added, {} removed ({held} held) in {} ms",
        a.added,
        a.removed,
        a.elapsed.as_millis()
    );
    if a.elapsed > Duration::from_secs(5) {
        warn!(source, "applying {source}'s decisions took {:?}", a.elapsed);
    }
}

/// A Go duration as CrowdSec prints it: `3h59m59.93s`, `-1.5s`, `250ms`. Negative or zero is
/// `Duration::ZERO` (already over).
pub fn go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * unit;
        rest = &rest[u..];
    }
    Some(if neg {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(total)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(
            go_duration("3h59m59.5s"),
            Some(Duration::from_secs_f64(4.0 * 3600.0 - 0.5))
        );
        assert_eq!(go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(go_duration("1m0s"), Some(Duration::from_secs(60)));
        assert_eq!(go_duration("-1.5s"), Some(Duration::ZERO));
        assert_eq!(go_duration("0"), Some(Duration::ZERO));
        assert_eq!(go_duration("168h"), Some(Duration::from_secs(168 * 3600)));
        assert_eq!(go_duration(""), None);
        assert_eq!(go_duration("4 hours"), None);
        assert_eq!(go_duration("5"), None);
    }
}
