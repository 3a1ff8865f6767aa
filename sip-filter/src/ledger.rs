//! Keeps the state file in step with the maps, and judges repeat offenders.
//!
//! The maps are the truth of what is enforced, and many write them: the kernel (bans at a
//! threshold), the CLI (`ban add/del/flush`), the daemon's expiry. Rather than have each writer
//! also write the state file, the daemon compares the maps with what it last recorded: at every
//! ban event, and once a second for everything else (a CLI ban, a ban the kernel issued while
//! no daemon ran). A ban is identified by its target and its `created_ns`, so a replaced ban
//! is told from the one before it.
use std::{
    collections::HashMap,
    hash::BuildHasher as _,
    path::Path,
    time::{Duration, SystemTime},
};

use anyhow::Result;
use sip_filter_common::{Ban, BanReason};
use tracing::warn;

use crate::{
    bans::{self, Entry},
    clock,
    config::Bans as Policy,
    maps::Maps,
    state::{self, NewBan, State, lifted, origin},
};

/// What changed, for the log and the notifications.
#[derive(Debug)]
pub enum Change {
    Banned { entry: Entry, origin: &'static str },
    Lifted { entry: Entry, by: &'static str },
}

struct Known {
    id: i64,
    created_ns: u64,
    ban: Ban,
}

pub struct Ledger {
    state: State,
    policy: Policy,
    boot_id: String,
    /// The bans recorded as in force, by target.
    known: HashMap<String, Known>,
}

/// A shared blocklist's entry: the decision store keeps those, not the ban history.
fn shared(reason: u8) -> bool {
    BanReason::from_u8(reason).is_some_and(BanReason::is_shared)
}

fn wall(ns: u64) -> SystemTime {
    clock::to_wall(ns)
}

/// fail2ban's `bantime.increment` formula: `ban_time * factor * 2^earlier`, capped at
/// `max_time`, plus up to `rnd_time` of jitter. `earlier` = 0 leaves the ban as it is.
pub fn repeat_ban_time(p: &Policy, base: Duration, earlier: u32, jitter: f64) -> Duration {
    if !p.increment || earlier == 0 {
        return base;
    }
    let scaled = base.as_secs_f64() * p.factor.0 * 2f64.powi(earlier.min(30) as i32);
    let capped = Duration::from_secs_f64(scaled.min(p.max_time.as_secs_f64()));
    capped + p.rnd_time.mul_f64(jitter.clamp(0.0, 1.0))
}

/// A number in [0, 1) that a returning botnet cannot predict (std's per-process random hash
/// keys; no cryptographic need here).
fn jitter() -> f64 {
    let h = std::collections::hash_map::RandomState::new().hash_one(clock::boot_ns());
    (h >> 11) as f64 / (1u64 << 53) as f64
}

impl Ledger {
    /// Opens the state file of `iface` under `dir`; a damaged one is moved aside and reported.
    pub fn open(dir: &Path, iface: &str, policy: Policy) -> Result<Self> {
        let path = state::path(dir, iface);
        let (state, aside) = State::open_or_set_aside(&path)?;
        if let Some((aside, why)) = aside {
            warn!(
                state = %path.display(),
                moved_to = %aside.display(),
                "the state file was damaged ({why:#}): moved aside, starting a new one; the \
                 bans in the pinned maps are kept and recorded again"
            );
        }
        Ok(Self {
            state,
            policy,
            boot_id: clock::boot_id(),
            known: HashMap::new(),
        })
    }

    pub fn path(&self) -> &Path {
        self.state.path()
    }

    /// The state file, for what else it keeps (the call rules' names).
    pub fn state_mut(&mut self) -> &mut State {
        &mut self.state
    }

    pub fn set_policy(&mut self, p: Policy) {
        self.policy = p;
    }

    /// Puts every ban still in force back into fresh maps (after a reboot, or onto an
    /// upgrade's new maps); bans whose time ran out meanwhile are closed. Returns how many were
    /// restored. Call before attaching, so no banned source gets a packet through.
    pub fn restore(&mut self, maps: &mut impl Maps) -> Result<usize> {
        let now = SystemTime::now();
        let mut n = 0;
        for r in self.state.open_bans()? {
            let expires = r.expires_ms.map(clock::from_unix_ms);
            if expires.is_some_and(|e| e <= now) {
                self.state.lift(r.id, expires.unwrap(), lifted::EXPIRED)?;
                continue;
            }
            let Some(reason) = BanReason::from_name(&r.reason) else {
                warn!(target = %r.target, reason = %r.reason, "state file: unknown ban reason, skipped");
                continue;
            };
            // Keep a ban the maps already hold (an upgrade carries the old maps' bans too).
            if bans::get(maps, &r.target)?.is_some_and(|b| b.active_at(clock::boot_ns())) {
                continue;
            }
            let created_ns = clock::from_wall(clock::from_unix_ms(r.created_ms)).max(1);
            let ban = Ban {
                created_ns,
                expires_ns: expires.map(clock::from_wall).unwrap_or(0),
                first_failure_ns: 0,
                failures: r.failures,
                reason: reason as u8,
                _pad: [0; 3],
                note: bans::note_bytes(r.note.as_deref().unwrap_or("")),
            };
            if let Err(e) = bans::put(maps, &r.target, ban) {
                warn!(target = %r.target, "restoring a ban: {e:#}");
                continue;
            }
            self.state.rebind(r.id, &self.boot_id, created_ns)?;
            n += 1;
        }
        Ok(n)
    }

    /// Learns what the state file holds as in force; then compares it with the maps.
    pub fn start(&mut self, maps: &mut impl Maps) -> Result<Vec<Change>> {
        self.known.clear();
        for r in self.state.open_bans()? {
            if r.boot_id != self.boot_id {
                // Recorded in an earlier boot and not restored: gone with that boot's maps.
                let at = r
                    .expires_ms
                    .map(clock::from_unix_ms)
                    .filter(|e| *e <= SystemTime::now())
                    .map(|e| (e, lifted::EXPIRED))
                    .unwrap_or((SystemTime::now(), lifted::OPERATOR));
                self.state.lift(r.id, at.0, at.1)?;
                continue;
            }
            // A ban not in the maps any more is noticed by `sync` (and told expired or lifted
            // by its recorded expiry).
            let recorded = Ban::manual(
                r.created_ns,
                r.expires_ms
                    .map(|ms| clock::from_wall(clock::from_unix_ms(ms)).max(1))
                    .unwrap_or(0),
                [0; 32],
            );
            let ban = bans::get(maps, &r.target)?.unwrap_or(recorded);
            self.known.insert(
                r.target.clone(),
                Known {
                    id: r.id,
                    created_ns: r.created_ns,
                    ban,
                },
            );
        }
        self.sync(maps)
    }

    /// Records bans the maps hold that the state file does not, and closes recorded bans the
    /// maps lost (lifted by an operator).
    pub fn sync(&mut self, maps: &mut impl Maps) -> Result<Vec<Change>> {
        let now = clock::boot_ns();
        let snap = bans::snapshot(maps)?;
        let mut changes = Vec::new();
        let mut present = std::collections::HashSet::with_capacity(snap.len());
        for (target, b) in snap {
            if !b.active_at(now) || shared(b.reason) {
                continue;
            }
            present.insert(target.clone());
            if let Some(c) = self.observe(maps, &target, b)? {
                changes.push(c);
            }
        }
        let gone: Vec<String> = self
            .known
            .keys()
            .filter(|t| !present.contains(*t))
            .cloned()
            .collect();
        for t in gone {
            let k = self.known.remove(&t).expect("known");
            let by = if k.ban.expires_ns != 0 && k.ban.expires_ns <= now {
                lifted::EXPIRED
            } else {
                lifted::OPERATOR
            };
            self.state.lift(k.id, SystemTime::now(), by)?;
            changes.push(Change::Lifted {
                entry: bans::entry(t, &k.ban, now),
                by,
            });
        }
        Ok(changes)
    }

    /// A ban event from the kernel: record that ban now (the next `sync` finds it known).
    pub fn on_event(&mut self, maps: &mut impl Maps, target: &str) -> Result<Option<Change>> {
        match bans::get(maps, target)? {
            Some(b) if b.active_at(clock::boot_ns()) && !shared(b.reason) => {
                self.observe(maps, target, b)
            }
            _ => Ok(None),
        }
    }

    /// Bans the daemon's expiry removed from the maps.
    pub fn expired(&mut self, gone: Vec<Entry>) -> Result<Vec<Change>> {
        let mut changes = Vec::new();
        for e in gone {
            if BanReason::from_name(&e.reason).is_some_and(BanReason::is_shared) {
                continue;
            }
            if let Some(k) = self.known.remove(&e.addr) {
                self.state.lift(k.id, wall(e.expires_ns), lifted::EXPIRED)?;
            }
            changes.push(Change::Lifted {
                entry: e,
                by: lifted::EXPIRED,
            });
        }
        Ok(changes)
    }

    /// Forgets ended bans older than `history_time`.
    pub fn prune(&self) -> Result<usize> {
        self.state
            .prune(SystemTime::now() - self.policy.history_time)
    }

    /// A ban in force in the maps: new to the ledger, a replacement, or known.
    fn observe(
        &mut self,
        maps: &mut impl Maps,
        target: &str,
        mut b: Ban,
    ) -> Result<Option<Change>> {
        if let Some(k) = self.known.get_mut(target) {
            if k.created_ns == b.created_ns {
                k.ban = b;
                return Ok(None);
            }
            // Replaced (`ban add` over a ban, or the kernel banning again): close the old.
            self.state
                .lift(k.id, wall(b.created_ns), lifted::REPLACED)?;
        }
        let origin = bans::origin_of(b.reason);
        let created = wall(b.created_ns);
        let earlier = self
            .state
            .offences(target, SystemTime::now() - self.policy.history_time)?;
        // A repeat offender's kernel ban is lengthened in place (the kernel never shortens it);
        // a flood guard's drop lasts its `block_for`.
        if origin == origin::KERNEL && b.expires_ns != 0 && b.reason != BanReason::Flood as u8 {
            let base = Duration::from_nanos(b.expires_ns.saturating_sub(b.created_ns));
            let t = repeat_ban_time(&self.policy, base, earlier, jitter());
            if t != base {
                b.expires_ns = b.created_ns + t.as_nanos() as u64;
                bans::put(maps, target, b)?;
            }
        }
        let reason = BanReason::from_u8(b.reason)
            .map(BanReason::as_str)
            .unwrap_or("unknown");
        let note = bans::note_text(&b);
        let id = self.state.insert(
            &NewBan {
                target,
                reason,
                origin,
                note: note.as_deref(),
                failures: b.failures,
                offence: earlier + 1,
                created,
                expires: (b.expires_ns != 0).then(|| wall(b.expires_ns)),
                created_ns: b.created_ns,
            },
            &self.boot_id,
        )?;
        self.known.insert(
            target.to_string(),
            Known {
                id,
                created_ns: b.created_ns,
                ban: b,
            },
        );
        let mut entry = bans::entry(target.to_string(), &b, clock::boot_ns());
        entry.offences = earlier + 1;
        Ok(Some(Change::Banned { entry, origin }))
    }
}

/// The offence number of each ban in force, and who made each shared decision, from the
/// state file (for `ban list`).
pub fn offences(path: &Path, list: &mut [Entry]) -> Result<()> {
    let s = State::open_read_only(path)?;
    for e in list {
        if BanReason::from_name(&e.reason).is_some_and(BanReason::is_shared) {
            // The entry is the decision of the source its reason names.
            if let Some(d) = s
                .decisions_for(&e.addr)?
                .into_iter()
                .find(|d| d.source == e.reason)
            {
                e.origin = if d.origin.is_empty() {
                    d.source
                } else {
                    format!("{}/{}", d.source, d.origin)
                };
                e.note = Some(d.scenario);
            }
            continue;
        }
        if let Some(r) = s.open_ban(&e.addr)? {
            e.offences = r.offence;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Factor;

    #[test]
    fn repeat_offenders_double_up_to_the_cap() {
        let h = Duration::from_secs(3600);
        let p = Policy {
            increment: true,
            ..Policy::default()
        };
        let t: Vec<u64> = (0..10)
            .map(|n| repeat_ban_time(&p, h, n, 0.0).as_secs() / 3600)
            .collect();
        // 1h, 2h, 4h, ... capped at max_time = 1w = 168h.
        assert_eq!(t, [1, 2, 4, 8, 16, 32, 64, 128, 168, 168]);
        let off = Policy::default();
        assert_eq!(repeat_ban_time(&off, h, 5, 0.5), h, "increment off");
        let p = Policy {
            increment: true,
            factor: Factor(1.5),
            rnd_time: Duration::from_secs(600),
            ..Policy::default()
        };
        assert_eq!(
            repeat_ban_time(&p, h, 1, 0.0),
            Duration::from_secs(3 * 3600)
        );
        assert_eq!(
            repeat_ban_time(&p, h, 1, 0.5),
            Duration::from_secs(3 * 3600 + 300)
        );
        assert_eq!(
            repeat_ban_time(&p, h, 0, 0.9),
            h,
            "a first ban is never changed"
        );
        let j = jitter();
        assert!((0.0..1.0).contains(&j));
    }
}
