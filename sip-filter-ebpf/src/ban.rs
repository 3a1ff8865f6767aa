//! Bans: lookups on the fast path, failure counting and in-kernel banning on the slow path.
use aya_ebpf::maps::lpm_trie::Key;
use sip_filter_common::{Ban, BanEvent, BanReason, Config, Failures, Reason};

use crate::maps::{ALLOW, BAN_NETS, BANS, EVENTS, FAILURES, count, now, trace};

/// The key a source is tracked and banned under: IPv4 as is, IPv6 masked to the configured prefix
/// (an attacker owns a whole /64, not one address).
#[inline(always)]
pub fn source_key(addr: &[u8; 16], is_v6: bool, cfg: &Config) -> [u8; 16] {
    if !is_v6 {
        return *addr;
    }
    let mut k = *addr;
    for (b, m) in k.iter_mut().zip(cfg.v6_mask) {
        *b &= m;
    }
    k
}

#[inline(always)]
pub fn is_allowed(addr: &[u8; 16], cfg: &Config) -> bool {
    cfg.allow_active != 0 && ALLOW.get(Key::new(128, *addr)).is_some()
}

/// The reason of the ban in force for this source (a `BanReason`), if any. Expired bans count
/// as absent; userspace deletes them and logs the unban. The clock is read only for a ban that
/// has an expiry.
#[inline(always)]
pub fn banned(key: &[u8; 16], addr: &[u8; 16], cfg: &Config) -> Option<u8> {
    if let Some(b) = unsafe { BANS.get(key) }
        && (b.expires_ns == 0 || now() < b.expires_ns)
    {
        return Some(b.reason);
    }
    if cfg.ban_nets_active != 0
        && let Some(b) = BAN_NETS.get(Key::new(128, *addr))
        && (b.expires_ns == 0 || now() < b.expires_ns)
    {
        return Some(b.reason);
    }
    None
}

/// Bans `key` now for `ban_time` (not for failures: a scanner, a flood), as `ban` does.
#[inline(always)]
pub fn ban_now(key: &[u8; 16], addr: &[u8; 16], reason: BanReason, ban_time: u64, cfg: &Config) {
    let t = now();
    if let Some(outcome) = ban(key, addr, reason, 0, t, ban_time, cfg, t) {
        trace(cfg, move |tr| tr.detail = outcome as u32);
    }
}

/// Bans `key` now for `auth_ban_time`, for `failures` counted since `first_ns`.
#[inline(always)]
pub fn ban_for(
    key: &[u8; 16],
    addr: &[u8; 16],
    reason: BanReason,
    failures: u32,
    first_ns: u64,
    cfg: &Config,
) {
    let t = now();
    if let Some(outcome) = ban(
        key,
        addr,
        reason,
        failures,
        first_ns,
        cfg.auth_ban_time_ns,
        cfg,
        t,
    ) {
        trace(cfg, move |tr| tr.detail = outcome as u32);
    }
}

/// What a counted failure is.
#[derive(Clone, Copy)]
pub enum Failure {
    Auth,
    NotFound,
}

/// Counts one failure for `key` and bans it when the threshold is reached inside the window.
/// The trace gets the failure as its verdict and a ban (or why none was stored) as its detail.
#[inline(always)]
pub fn record_failure(key: &[u8; 16], addr: &[u8; 16], kind: Failure, cfg: &Config, now: u64) {
    let f = match FAILURES.get_ptr_mut(key) {
        Some(f) => f,
        None => {
            if FAILURES.insert(key, Failures::default(), 0).is_err() {
                return;
            }
            match FAILURES.get_ptr_mut(key) {
                Some(f) => f,
                None => return,
            }
        }
    };
    let f = unsafe { &mut *f };
    let (first, n, max, find_time, ban_time, reason) = match kind {
        Failure::Auth => {
            count(Reason::AuthFailures);
            trace(cfg, move |t| t.verdict = Reason::AuthFailures as u32);
            (
                &mut f.auth_first_ns,
                &mut f.auth,
                cfg.auth_max_failures,
                cfg.auth_find_time_ns,
                cfg.auth_ban_time_ns,
                BanReason::AuthFailures,
            )
        }
        Failure::NotFound => {
            count(Reason::NotFound);
            trace(cfg, move |t| t.verdict = Reason::NotFound as u32);
            (
                &mut f.not_found_first_ns,
                &mut f.not_found,
                cfg.scan_max_not_found,
                cfg.scan_find_time_ns,
                cfg.scan_ban_time_ns,
                BanReason::NotFound,
            )
        }
    };
    // A window opens at the first failure and lasts find_time; a failure after it starts a new one.
    if *n == 0 || now.wrapping_sub(*first) > find_time {
        *first = now;
        *n = 0;
    }
    *n += 1;
    if max != 0 && *n >= max {
        let failures = *n;
        let first_ns = *first;
        *n = 0;
        if let Some(outcome) = ban(key, addr, reason, failures, first_ns, ban_time, cfg, now) {
            trace(cfg, move |t| t.detail = outcome as u32);
        }
    }
}

/// A 2xx to a request that carried credentials: the client knows its password.
#[inline(always)]
pub fn reset_auth(key: &[u8; 16], cfg: &Config) {
    if let Some(f) = FAILURES.get_ptr_mut(key) {
        unsafe { (*f).auth = 0 };
        count(Reason::AuthResets);
        trace(cfg, move |t| t.verdict = Reason::AuthResets as u32);
    }
}

/// Bans `key` unless it is allowlisted or already banned for longer. Returns what happened to
/// a ban it tried to store (`BansIssued`, `BanMapFull`), `None` when it did not try.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn ban(
    key: &[u8; 16],
    addr: &[u8; 16],
    reason: BanReason,
    failures: u32,
    first_ns: u64,
    ban_time: u64,
    cfg: &Config,
    now: u64,
) -> Option<Reason> {
    if is_allowed(addr, cfg) {
        return None;
    }
    let expires_ns = now + ban_time;
    // Never shorten a ban already in force (an operator's permanent ban, say).
    if let Some(old) = unsafe { BANS.get(key) }
        && old.active_at(now)
        && (old.expires_ns == 0 || old.expires_ns >= expires_ns)
    {
        return None;
    }
    let b = Ban {
        created_ns: now,
        expires_ns,
        first_failure_ns: first_ns,
        failures,
        reason: reason as u8,
        _pad: [0; 3],
        note: [0; 32],
    };
    if BANS.insert(key, b, 0).is_err() {
        count(Reason::BanMapFull);
        return Some(Reason::BanMapFull);
    }
    count(Reason::BansIssued);
    if let Some(r) = reason.counter() {
        count(r);
    }
    match EVENTS.reserve::<BanEvent>(0) {
        Some(mut e) => {
            e.write(BanEvent {
                addr: *key,
                time_ns: now,
                expires_ns,
                first_failure_ns: first_ns,
                failures,
                reason: reason as u8,
                _pad: [0; 3],
            });
            e.submit(0);
        }
        None => count(Reason::EventsLost),
    }
    Some(Reason::BansIssued)
}
