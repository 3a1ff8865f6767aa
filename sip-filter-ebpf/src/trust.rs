//! Learned trust and the counting that uses it (docs: README, "Smarter counting").
//!
//! A 2xx to a credentialed request makes its source trusted, and the (source, extension) pair.
//! A trusted source's failures count against the pair only, and only when the request carried
//! a nonce the PBX issued to that source (a forger, who never sees the challenge, cannot make
//! them count): the pair is blocked at `auth_max_failures`, the source banned when they spread
//! over more than `max_failing_exts` extensions. An untrusted source's failures count against
//! it as ever, and against the extension across sources: at `ext_max_failures` the extension
//! is locked, and only sources trusted for it may still try it.
use sip_filter_common::{
    BanReason, Config, EXT_LOCKED, ExtEvent, ExtFailures, ExtLock, PAIR_BLOCKED, Pair, Reason,
    SourceKey,
};

use crate::{
    ban,
    maps::{EVENTS, EXT_FAILURES, EXT_LOCKS, NONCES, PAIRS, SOURCES, count, now},
    scratch,
};

/// What ingress noted of a credentialed request, for egress to judge its answer.
pub struct Noted {
    pub ext: u64,
    pub nonce_ok: u8,
}

/// Ingress, a credentialed request of the source `key` whose credentials header starts at
/// `at`: its extension and whether its nonce was issued to the source; or the verdict that
/// drops it (its pair blocked; its extension locked: the caller bans the source).
///
/// A subprogram of its own: its keys and values take a frame of their own, not the
/// inspection's, which 6.1 adds to the scan's callbacks' and limits to 512 bytes in all
/// (docs/verifier.md, 16).
#[inline(never)]
pub fn check(key: &[u8; 16], at: u64) -> Result<Noted, Reason> {
    let Some(d) = crate::creds::read(at) else {
        return Ok(Noted {
            ext: 0,
            nonce_ok: 0,
        });
    };
    let nonce_ok = u8::from(
        d.nonce != 0
            && NONCES
                .get_ptr(SourceKey {
                    addr: *key,
                    id: d.nonce,
                })
                .is_some(),
    );
    if d.ext == 0 {
        return Ok(Noted { ext: 0, nonce_ok });
    }
    let t = now();
    let pk = SourceKey {
        addr: *key,
        id: d.ext,
    };
    let trusted = match PAIRS.get_ptr(pk) {
        Some(p) => {
            let p = unsafe { &*p };
            if p.blocked_until_ns > t {
                return Err(Reason::DroppedPair);
            }
            p.trusted_until_ns > t
        }
        None => false,
    };
    if !trusted
        && let Some(l) = unsafe { EXT_LOCKS.get(d.ext) }
        && l.until_ns > t
    {
        return Err(Reason::DroppedExtLocked);
    }
    // The extension's name, for a lock's listing (written once).
    if unsafe { EXT_FAILURES.get(d.ext) }.is_none()
        && let Some(buf) = scratch::buf()
    {
        let e = ExtFailures {
            name: unsafe { *(buf.add(scratch::off::EXT) as *const sip_filter_common::Extension) },
            ..ExtFailures::default()
        };
        let _ = EXT_FAILURES.insert(d.ext, e, 0);
    }
    Ok(Noted {
        ext: d.ext,
        nonce_ok,
    })
}

/// Egress: the PBX challenged the client `key` with this nonce.
#[inline(always)]
pub fn issued(key: &[u8; 16], nonce: u64) {
    if nonce != 0 {
        let _ = NONCES.insert(
            SourceKey {
                addr: *key,
                id: nonce,
            },
            now(),
            0,
        );
    }
}

/// Egress: a 2xx answered a credentialed request of `key` for `ext`.
#[inline(always)]
pub fn learned(key: &[u8; 16], ext: u64, cfg: &Config) {
    crate::flood::trust(key, cfg);
    if ext == 0 {
        return;
    }
    let t = now();
    let pk = SourceKey {
        addr: *key,
        id: ext,
    };
    match PAIRS.get_ptr_mut(pk) {
        Some(p) => unsafe {
            (*p).trusted_until_ns = t + cfg.trust_time_ns;
            (*p).failures = 0;
        },
        None => {
            let p = Pair {
                trusted_until_ns: t + cfg.trust_time_ns,
                ..Pair::default()
            };
            let _ = PAIRS.insert(pk, p, 0);
        }
    }
}

/// Egress: is the source `key` trusted?
#[inline(always)]
pub fn is_trusted(key: &[u8; 16]) -> bool {
    SOURCES
        .get_ptr(key)
        .is_some_and(|s| unsafe { (*s).trusted_until_ns } > now())
}

/// Egress: a failure of the trusted source `key` for `ext`: counted against the pair (and the
/// spread of the source's failing extensions).
#[inline(always)]
pub fn pair_failure(key: &[u8; 16], addr: &[u8; 16], ext: u64, cfg: &Config) {
    let t = now();
    let pk = SourceKey {
        addr: *key,
        id: ext,
    };
    let p = match PAIRS.get_ptr_mut(pk) {
        Some(p) => p,
        None => {
            if PAIRS.insert(pk, Pair::default(), 0).is_err() {
                return;
            }
            match PAIRS.get_ptr_mut(pk) {
                Some(p) => p,
                None => return,
            }
        }
    };
    let p = unsafe { &mut *p };
    count(Reason::AuthFailures);
    if p.failures == 0 || t.wrapping_sub(p.first_ns) > cfg.auth_find_time_ns {
        p.first_ns = t;
        p.failures = 0;
        spread(key, addr, cfg, t);
    }
    p.failures += 1;
    if cfg.auth_max_failures != 0 && p.failures >= cfg.auth_max_failures {
        p.blocked_until_ns = t + cfg.auth_ban_time_ns;
        count(Reason::PairBlocks);
        report(PAIR_BLOCKED, ext, addr, p.blocked_until_ns, p.failures);
    }
}

/// One more extension failing from the trusted source `key` in the window: over
/// `max_failing_exts`, it is banned as a whole.
#[inline(always)]
fn spread(key: &[u8; 16], addr: &[u8; 16], cfg: &Config, t: u64) {
    let Some(s) = SOURCES.get_ptr_mut(key) else {
        return;
    };
    let s = unsafe { &mut *s };
    if s.spread == 0 || t.wrapping_sub(s.spread_first_ns) > cfg.auth_find_time_ns {
        s.spread_first_ns = t;
        s.spread = 0;
    }
    s.spread += 1;
    if s.spread > cfg.max_failing_exts {
        let n = s.spread;
        s.spread = 0;
        count(Reason::BansSpread);
        ban::ban_for(
            key,
            addr,
            BanReason::AuthFailures,
            n,
            s.spread_first_ns,
            cfg,
        );
    }
}

/// Egress: a failure of an untrusted source for `ext`, counted against the extension.
#[inline(always)]
pub fn ext_failure(ext: u64, cfg: &Config) {
    if cfg.ext_max_failures == 0 {
        return;
    }
    let Some(e) = EXT_FAILURES.get_ptr_mut(ext) else {
        return;
    };
    let e = unsafe { &mut *e };
    let t = now();
    if e.failures == 0 || t.wrapping_sub(e.first_ns) > cfg.auth_find_time_ns {
        e.first_ns = t;
        e.failures = 0;
    }
    e.failures += 1;
    if e.failures >= cfg.ext_max_failures {
        let lock = ExtLock {
            created_ns: t,
            until_ns: t + cfg.auth_ban_time_ns,
            failures: e.failures,
            _pad: 0,
            name: e.name,
        };
        e.failures = 0;
        if EXT_LOCKS.insert(ext, lock, 0).is_ok() {
            count(Reason::ExtLocks);
            report(EXT_LOCKED, ext, &[0; 16], lock.until_ns, lock.failures);
        } else {
            count(Reason::BanMapFull);
        }
    }
}

/// Tells the daemon: an extension locked, or blocked from `addr`.
#[inline(always)]
fn report(kind: u8, ext: u64, addr: &[u8; 16], until_ns: u64, failures: u32) {
    let name = match unsafe { EXT_FAILURES.get(ext) } {
        Some(e) => e.name,
        None => [0; sip_filter_common::EXT_LEN],
    };
    match EVENTS.reserve::<ExtEvent>(0) {
        Some(mut r) => {
            r.write(ExtEvent {
                name,
                addr: *addr,
                until_ns,
                failures,
                kind,
                _pad: [0; 3],
                ext,
            });
            r.submit(0);
        }
        None => count(Reason::EventsLost),
    }
}
