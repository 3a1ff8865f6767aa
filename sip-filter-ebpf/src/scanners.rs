//! Scanner signatures: a request whose User-Agent starts with a scanner's (`friendly-scanner`,
//! `sipvicious`, ...) bans its source at once. The request scan found where the User-Agent
//! header starts; its value's first `UA_LEN` bytes, folded (`ua_fold`) and zeroed after their
//! end, are one `SCANNERS` lookup: the LPM trie's longest prefix is the signature (an exact one
//! holds the value's end, a zero, too).
use aya_ebpf::maps::lpm_trie::Key;
use sip_filter_common::{SCRATCH_LEN, UA_LEN, UserAgent};

use crate::{
    maps::{SCANNER_STATS, SCANNERS},
    scratch,
};

const MASK: usize = SCRATCH_LEN - 1;
/// `ua_fold` on eight bytes at once.
const FOLD: u64 = 0x2020_2020_2020_2020;
const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
const ONES: u64 = 0x0101_0101_0101_0101;

#[inline(always)]
fn byte(buf: *const u8, i: usize) -> u8 {
    unsafe { *buf.add(i & MASK) }
}

/// High bit of each byte lane of `w` that equals `b` (exact in every lane).
#[inline(always)]
fn lanes_eq(w: u64, b: u8) -> u64 {
    let x = w ^ (ONES * b as u64);
    !(((x & LOW7).wrapping_add(LOW7)) | x | LOW7)
}

/// The index of the signature the request's User-Agent matches (the request scan left where
/// its header starts); `None` without a User-Agent (not a signal) or a match.
#[inline(always)]
pub fn matched() -> Option<u32> {
    let buf = scratch::buf()?;
    let at = unsafe { *scratch::word(scratch::off::UA_AT)? } as usize;
    if at == 0 {
        return None;
    }
    // "User-Agent", blanks, the colon, blanks: RFC 3261's HCOLON and LWS, a few bytes of each.
    let mut p = at + 10;
    for _ in 0..2 {
        let c = byte(buf, p);
        if c == b' ' || c == b'\t' {
            p += 1;
        }
    }
    if byte(buf, p) != b':' {
        return None;
    }
    p += 1;
    for _ in 0..3 {
        let c = byte(buf, p);
        if c == b' ' || c == b'\t' {
            p += 1;
        }
    }
    // The value's words, folded, cut at its end (CR, LF, or the zeros past the message) with
    // masks: a branch per byte would be a path per byte for the verifier.
    let key = unsafe { buf.add(scratch::off::UA_KEY) };
    unsafe { core::ptr::write_unaligned(key as *mut u32, (UA_LEN * 8) as u32) };
    let mut alive = u64::MAX;
    for i in 0..UA_LEN / 8 {
        let w = unsafe { core::ptr::read_unaligned(buf.add((p + 8 * i) & MASK) as *const u64) };
        let ends = lanes_eq(w, 0) | lanes_eq(w, b'\r') | lanes_eq(w, b'\n');
        // The lanes before the first end (all when none).
        let lowest = ends & ends.wrapping_neg();
        let keep = (lowest >> 7).wrapping_sub(1);
        let v = (w | FOLD) & keep & alive;
        unsafe { core::ptr::write_unaligned(key.add(4 + 8 * i) as *mut u64, v) };
        // Nothing after an end.
        alive &= ((ends | ends.wrapping_neg()) >> 63).wrapping_sub(1);
    }
    let key = unsafe { &*(key as *const Key<UserAgent>) };
    let sig = *SCANNERS.get(key)?;
    if let Some(n) = SCANNER_STATS.get_ptr_mut(sig) {
        // Per-CPU slot: no other writer.
        unsafe { *n += 1 };
    }
    Some(sig)
}
