//! The flood guard and the learned trust, per source (`SOURCES`).
//!
//! The guard is a token bucket over a source's SIP requests, kept as one timestamp (GCRA, the
//! generic cell rate algorithm): each request moves the source's theoretical arrival time
//! `interval` on from the later of it and now; a request that would put it more than `per`
//! ahead of now is over. So `max_requests` pass at once and `max_requests` per `per` after,
//! exactly (Kamailio's pike lands between one and three times its setting). A refused request
//! does not move the time: a source that slows down is let through again.
use sip_filter_common::{Config, Reason, Source};

use crate::maps::{SOURCES, count, now};

/// This source's entry, made when it has none.
#[inline(always)]
fn entry(key: &[u8; 16]) -> Option<*mut Source> {
    if let Some(s) = SOURCES.get_ptr_mut(key) {
        return Some(s);
    }
    SOURCES.insert(key, Source::default(), 0).ok()?;
    SOURCES.get_ptr_mut(key)
}

/// Counts a request of the source `key` against its rate: true when it is over.
#[inline(always)]
pub fn over(key: &[u8; 16], cfg: &Config) -> bool {
    let Some(s) = entry(key) else {
        return false;
    };
    let s = unsafe { &mut *s };
    let t = now();
    // A trusted source (a working account) gets `trusted_factor` times the rate, so an office
    // whose phones all re-register after a power cut passes.
    let interval = if s.trusted_until_ns > t {
        cfg.flood_trusted_interval_ns
    } else {
        cfg.flood_interval_ns
    };
    let tat = if s.flood_tat_ns > t {
        s.flood_tat_ns
    } else {
        t
    };
    if tat + interval - t > cfg.flood_per_ns {
        return true;
    }
    s.flood_tat_ns = tat + interval;
    false
}

/// A 2xx answered a credentialed request of the source `key`: it holds a working account,
/// and is trusted for `trust_time` from now.
#[inline(always)]
pub fn trust(key: &[u8; 16], cfg: &Config) {
    if let Some(s) = entry(key) {
        unsafe { (*s).trusted_until_ns = now() + cfg.trust_time_ns };
        count(Reason::TrustLearned);
    }
}
