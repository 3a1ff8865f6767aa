//! Toll-fraud rules at ingress: the dialled number of an INVITE (and of the ACK that follows a
//! blocked one) is looked up in `CALL_RULES`, the table userspace compiles from the rules and the
//! dial plan (every dialable form of every prefix). One lookup per INVITE; nothing here reads a
//! calendar (userspace flips after-hours entries at the schedule's edges).
//!
//! A blocked INVITE is answered where it stands: its request line is overwritten with a status
//! line of the same length (`CALL_REPLY`, padded with spaces), addresses and ports are swapped
//! and the frame goes back out (`XDP_TX`). Via, From, To, Call-ID and CSeq are the request's own,
//! so the phone matches the answer to its transaction and stops ringing at once.
use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_TX},
    helpers::generated::{
        bpf_loop, bpf_skb_load_bytes, bpf_xdp_get_buff_len, bpf_xdp_load_bytes, bpf_xdp_store_bytes,
    },
    maps::lpm_trie::Key,
    programs::{TcContext, XdpContext},
};
use sip_filter_common::{
    CALL_COPY, CALL_INGRESS, CALL_SYMBOLS, CallDigits, CallEvent, CallWindow, EXT_LEN, ExtCalls,
    ExtNumber, Extension, MAX_CALL_RULES, REPLY_LIMIT, Reason, SCRATCH_LEN, call_stat_index,
    call_verdict,
};

use crate::{
    maps::{
        CALL_LIMITS, CALL_REPLY, CALL_RULES, CALL_STATS, EVENTS, EXT_CALLS, EXT_NUMBERS, TRUNKS,
        count, now,
    },
    parse::Packet,
    scratch,
};

/// Bytes of the Request-URI read for its user part (separators included).
const URI_SCAN: usize = 96;
/// Where the lookup key is built: a key on the stack would not fit the XDP frame on 6.1
/// (docs/verifier.md, 11).
const KEY_OFF: usize = scratch::off::CALL_KEY;
const MASK: usize = SCRATCH_LEN - 1;
/// Longest request line answered in place (the status line template's length).
const LINE_MAX: usize = sip_filter_common::CALL_REPLY_LEN;

#[inline(always)]
fn at(buf: *const u8, i: usize) -> u8 {
    unsafe { *buf.add(i & MASK) }
}

/// Bytes of the message copied for the call check: the request line and then some.
const COPY: u64 = CALL_COPY as u64;

/// Copies the start of the message in `ctx` to the scratch buffer, followed by zeros; false
/// when it cannot.
#[inline(always)]
pub fn copy_start(ctx: &XdpContext, pkt: &Packet) -> bool {
    let off = (pkt.payload - ctx.data()) as u64;
    let total = unsafe { bpf_xdp_get_buff_len(ctx.ctx) };
    copy_with(off, total, pkt.msg_len as u64, |to, size| unsafe {
        bpf_xdp_load_bytes(ctx.ctx, off as u32, to, size)
    })
}

/// `copy_start` for an INVITE the PBX sends (TC egress).
#[inline(always)]
pub fn copy_start_tc(ctx: &TcContext, pkt: &Packet) -> bool {
    let off = (pkt.payload - ctx.data()) as u64;
    let total = ctx.len() as u64;
    copy_with(off, total, pkt.msg_len as u64, |to, size| unsafe {
        bpf_skb_load_bytes(ctx.skb.skb as *const _, off as u32, to, size)
    })
}

/// Copies the start of the message (at most `COPY` bytes) to the scratch buffer; its length is
/// noted for the `CallEvent`.
#[inline(always)]
fn copy_with(
    off: u64,
    total: u64,
    msg: u64,
    load: impl FnOnce(*mut core::ffi::c_void, u32) -> i64,
) -> bool {
    let Some(buf) = scratch::buf() else {
        return false;
    };
    match scratch::copy::<COPY>(off, total, msg, load) {
        Some(size) if size > 0 => {
            unsafe { (*event(buf)).msg_len = size as u32 };
            true
        }
        _ => false,
    }
}

/// The `CallEvent` being built in the scratch buffer: its message is the copy at the start.
#[inline(always)]
fn event(buf: *mut u8) -> *mut CallEvent {
    buf as *mut CallEvent
}

/// Is `addr` one of the PBX's trunks? Calls from them are inbound and never judged; calls the
/// PBX sends them are.
#[inline(always)]
pub fn is_trunk(addr: &[u8; 16]) -> bool {
    TRUNKS.get(Key::new(128, *addr)).is_some()
}

/// What the rules make of a call.
pub enum Judged {
    /// Blocked by the rule of this index.
    Blocked(u32),
    /// Let through, to an international number: the per-extension limits count it.
    International,
    /// Let through otherwise (domestic, an extension, no number).
    Other,
}

/// Judges the call whose message `copy_start` copied (its Request-URI starting at `start`).
/// An INVITE (`invite`) is counted against the rule that decided it.
#[inline(always)]
pub fn judge(start: usize, invite: bool) -> Judged {
    let Some(buf) = scratch::buf() else {
        return Judged::Other;
    };
    let Some((key, digits)) = scan_uri(buf, start) else {
        return Judged::Other;
    };
    let Some(r) = CALL_RULES.get(key) else {
        return Judged::Other;
    };
    if digits < r.min_digits as u32 {
        // An extension or a local number: no rule decides it.
        return Judged::Other;
    }
    let blocked = r.blocked != 0;
    // Guard entries (no rule) and rules past the counters' end are not counted.
    if invite && r.rule < MAX_CALL_RULES {
        stat(call_stat_index(r.rule, false));
        if blocked {
            stat(call_stat_index(r.rule, true));
        }
    }
    if blocked {
        Judged::Blocked(r.rule)
    } else if r.international != 0 {
        Judged::International
    } else {
        Judged::Other
    }
}

// --- the per-extension limits ---------------------------------------------------------------
//
// The call stage marks an international INVITE for them (a hash of the dialled number, in the
// scratch buffer past the message copy, which the inspection's copy does not reach); the
// inspection, which finds the credentials header, reads the digest username (and the Call-ID) from
// it and counts the call. Only credentialed INVITEs count: the username is who places the
// call (the first INVITE of a call is challenged by the PBX, the second carries it).

/// The mark: the number's hash (never 0 when set).
const MARK_OFF: usize = scratch::off::MARK;
const EXT_OFF: usize = scratch::off::EXT;
const CRED_OFF: usize = scratch::off::CRED_STATE;
use scratch::word as word_at;

pub fn clear_mark() {
    if let Some(w) = word_at(MARK_OFF) {
        unsafe { *w = 0 };
    }
}

#[inline(always)]
pub fn marked() -> bool {
    word_at(MARK_OFF).is_some_and(|w| unsafe { *w } != 0)
}

/// Marks the INVITE just judged for the limits, when any are set.
#[inline(always)]
pub fn mark_for_limits() {
    let Some(l) = CALL_LIMITS.get(0) else {
        return;
    };
    if !l.any() {
        return;
    }
    let Some(buf) = scratch::buf() else {
        return;
    };
    // FNV-1a over the key's symbols (its prefix length says how many).
    let n = (unsafe { core::ptr::read_unaligned(buf.add(KEY_OFF) as *const u32) } / 8) as usize;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for i in 0..CALL_SYMBOLS {
        let b = if i < n { at(buf, KEY_OFF + 4 + i) } else { 0 };
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    unsafe { *(buf.add(MARK_OFF) as *mut u64) = h | 1 };
}

/// The mark left by the call stage for this packet (0: none), cleared.
#[inline(always)]
pub fn take_mark(cfg: &sip_filter_common::Config) -> u64 {
    let Some(w) = word_at(MARK_OFF) else {
        return 0;
    };
    let m = unsafe { *w };
    unsafe { *w = 0 };
    if cfg.calls_active == 0 { 0 } else { m }
}

/// The limits on the INVITE in the scratch buffer, whose credentials header starts at `at`:
/// `Some(action)` when it is refused (answered 403, or dropped when it cannot be answered).
#[inline(always)]
pub fn limits(ctx: &XdpContext, src: &[u8; 16], at: u64, number: u64) -> Option<u32> {
    let lim = CALL_LIMITS.get(0)?;
    let buf = scratch::buf()?;
    // Whose call: the digest username, at `EXT_OFF`.
    let digest = crate::creds::read(at)?;
    let st = unsafe { buf.add(CRED_OFF) } as *mut u64;
    unsafe {
        *(buf.add(EXT_OFF + EXT_LEN) as *mut u64) = number;
        *st.add(I_POS) = 0;
        *st.add(I_STATE) = IN_LINE;
        *st.add(I_HASH) = 0xcbf2_9ce4_8422_2325;
    }
    let mut c = ScanCtx { buf };
    unsafe {
        bpf_loop(
            CALL_ID_SCAN,
            call_id_byte as *mut core::ffi::c_void,
            &mut c as *mut ScanCtx as *mut core::ffi::c_void,
            0,
        )
    };
    // Which call: retransmissions of an INVITE (and the INVITE after a challenge) keep its
    // Call-ID. The digest response would not do: two challenges in one second can carry the
    // same nonce, and a client with a fixed cnonce then sends the same response twice.
    let call = unsafe { *st.add(I_HASH) };
    if digest.ext == 0 {
        return None;
    }
    let ext = unsafe { &*(buf.add(EXT_OFF) as *const Extension) };
    let t = now();
    let e = match EXT_CALLS.get_ptr_mut(ext) {
        Some(e) => e,
        None => {
            let _ = EXT_CALLS.insert(ext, ExtCalls::default(), 0);
            EXT_CALLS.get_ptr_mut(ext)?
        }
    };
    let e = unsafe { &mut *e };
    let verdict = if e.held_until_ns > t {
        call_verdict::HELD
    } else if e.last_call == call {
        // A retransmission of the INVITE counted last.
        return None;
    } else {
        e.last_call = call;
        if t.wrapping_sub(e.minute_start_ns) >= 60_000_000_000 {
            e.minute_start_ns = t;
            e.minute_count = 0;
        }
        e.minute_count += 1;
        let mut v = call_verdict::RULE;
        if lim.per_minute != 0 && e.minute_count > lim.per_minute {
            v = call_verdict::OVER_PER_MINUTE;
        }
        if lim.same_number != 0 {
            let key = unsafe { &*(buf.add(EXT_OFF) as *const ExtNumber) };
            let w = match EXT_NUMBERS.get_ptr_mut(key) {
                Some(w) => w,
                None => {
                    let _ = EXT_NUMBERS.insert(key, CallWindow::default(), 0);
                    EXT_NUMBERS.get_ptr_mut(key)?
                }
            };
            let w = unsafe { &mut *w };
            if t.wrapping_sub(w.start_ns) >= lim.same_window_ns {
                w.start_ns = t;
                w.count = 0;
            }
            w.count += 1;
            if w.count > lim.same_number {
                v = call_verdict::OVER_SAME_NUMBER;
            }
        }
        if v == call_verdict::RULE {
            return None;
        }
        e.held_until_ns = t + lim.block_for_ns;
        v
    };
    report_limit(src, verdict);
    if answer(ctx, REPLY_LIMIT) {
        Some(XDP_TX)
    } else {
        Some(XDP_DROP)
    }
}

const LOWER: u64 = 0x2020_2020_2020_2020;

/// The Call-ID scan's state words (after `creds`') and its states: in a line,
/// at a line's start, in the Call-ID's value.
const I_POS: usize = 4;
const I_STATE: usize = 5;
const I_HASH: usize = 6;
const IN_LINE: u64 = 0;
const LINE_START: u64 = 1;
const IN_CALL_ID: u64 = 2;
/// Bytes of the message read for the Call-ID (RFC 3261 puts it among the first headers, and
/// phones do).
const CALL_ID_SCAN: u32 = 1024;

/// One byte of the message while looking for the Call-ID (`Call-ID:` or `i:`): 1 stops.
extern "C" fn call_id_byte(_index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let buf = unsafe { (*(ctx as *mut ScanCtx)).buf };
    let st = unsafe { buf.add(CRED_OFF) } as *mut u64;
    let get = |i: usize| unsafe { *st.add(i) };
    let set = |i: usize, v: u64| unsafe { *st.add(i) = v };
    let p = (get(I_POS) as usize) & 0x7ff;
    let c = at(buf, p);
    set(I_POS, p as u64 + 1);
    if c == 0 {
        return 1;
    }
    match get(I_STATE) {
        IN_LINE => {
            if c == b'\n' {
                set(I_STATE, LINE_START);
            }
        }
        LINE_START => {
            if c == b'\r' || c == b'\n' {
                // The blank line: no Call-ID in the header section.
                return 1;
            }
            let w = unsafe { core::ptr::read_unaligned(buf.add(p & MASK) as *const u64) } | LOWER;
            if w == u64::from_le_bytes(*b"call-id:") {
                set(I_STATE, IN_CALL_ID);
                set(I_POS, p as u64 + 8);
            } else if c | 0x20 == b'i' && at(buf, p + 1) == b':' {
                set(I_STATE, IN_CALL_ID);
                set(I_POS, p as u64 + 2);
            } else {
                set(I_STATE, IN_LINE);
            }
        }
        _ => {
            if c == b'\r' || c == b'\n' {
                return 1;
            }
            if c != b' ' && c != b'\t' {
                set(
                    I_HASH,
                    (get(I_HASH) ^ c as u64).wrapping_mul(0x0100_0000_01b3),
                );
            }
        }
    }
    0
}

/// Reports a refusal by the limits (the extension in the scratch buffer).
#[inline(always)]
fn report_limit(src: &[u8; 16], verdict: u8) {
    let Some(buf) = scratch::buf() else {
        return;
    };
    let e = event(buf);
    unsafe {
        (*e).ext = *(buf.add(EXT_OFF) as *const Extension);
        (*e).msg_len = CALL_COPY as u32;
    }
    send(src, u32::MAX, CALL_INGRESS, verdict);
}

/// Counts one in this CPU's `CALL_STATS[index]` (rules past `MAX_CALL_RULES` are not counted).
#[inline(always)]
fn stat(index: u32) {
    if let Some(p) = CALL_STATS.get_ptr_mut(index) {
        // Per-CPU slot: no other writer, no atomic needed.
        unsafe { *p += 1 };
    }
}

/// Reports the blocked INVITE in the scratch buffer to the daemon (its log, the webhook):
/// the record is built where the message was copied and sent with one ring buffer copy.
#[inline(always)]
pub fn report(addr: &[u8; 16], rule: u32, direction: u8) {
    send(addr, rule, direction, call_verdict::RULE);
}

#[inline(always)]
fn send(addr: &[u8; 16], rule: u32, direction: u8, verdict: u8) {
    let Some(buf) = scratch::buf() else {
        return;
    };
    let e = event(buf);
    unsafe {
        (*e).addr = *addr;
        (*e).time_ns = now();
        (*e).rule = rule;
        (*e).direction = direction;
        (*e).verdict = verdict;
        if EVENTS.output::<CallEvent>(&*e, 0).is_err() {
            count(Reason::EventsLost);
        }
    }
}

/// The lookup key for the number in the Request-URI at `start` and the digits it has (a rule's
/// `min_digits` tells extensions apart); `None` when the URI's user part is not a number.
#[inline(always)]
fn scan_uri(buf: *mut u8, start: usize) -> Option<(&'static Key<CallDigits>, u32)> {
    let s = start & 0xff;
    let scheme = u32::from_le_bytes([at(buf, s), at(buf, s + 1), at(buf, s + 2), at(buf, s + 3)])
        | 0x2020_2020;
    let (pos, tel) = if scheme == u32::from_le_bytes(*b"sip:") | 0x2020_2020 {
        (s + 4, false)
    } else if scheme == u32::from_le_bytes(*b"sips") && at(buf, s + 4) == b':' {
        (s + 5, false)
    } else if scheme == u32::from_le_bytes(*b"tel:") | 0x2020_2020 {
        (s + 4, true)
    } else {
        return None;
    };
    let key = unsafe { buf.add(KEY_OFF) };
    // The scan's state lives in the scratch buffer, not in the callback's context on the stack:
    // the verifier tracks stack values exactly, so a count that grows each turn would keep it
    // from ever seeing two turns alike; map memory reads back as unknown (docs/verifier.md, 12).
    let st = unsafe { buf.add(STATE_OFF) } as *mut u32;
    unsafe {
        *st.add(POS) = pos as u32;
        *st.add(N) = 0;
        *st.add(DIGITS) = 0;
        *st.add(STATE) = if tel { TEL } else { NUMBER };
    }
    let mut u = ScanCtx { buf };
    // One byte per turn; a callback is verified once, where a plain loop is walked turn by
    // turn (and 6.1 refuses the back-edge of one).
    unsafe {
        bpf_loop(
            URI_SCAN as u32,
            uri_byte as *mut core::ffi::c_void,
            &mut u as *mut ScanCtx as *mut core::ffi::c_void,
            0,
        )
    };
    let (n, digits, state) = unsafe { (*st.add(N) as usize & 31, *st.add(DIGITS), *st.add(STATE)) };
    if state != USER || n == 0 || n > CALL_SYMBOLS {
        return None;
    }
    unsafe { core::ptr::write_unaligned(key as *mut u32, (n * 8) as u32) };
    Some((unsafe { &*(key as *const Key<CallDigits>) }, digits))
}

/// The context of the byte scans (`bpf_loop` callbacks): the scratch buffer, which holds their
/// state too.
#[repr(C)]
struct ScanCtx {
    buf: *mut u8,
}

/// The scan's state words, at `STATE_OFF` in the scratch buffer: the next byte, symbols
/// written to the key, digits seen, and where the scan is.
const STATE_OFF: usize = scratch::off::URI_STATE;
const POS: usize = 0;
const N: usize = 1;
const DIGITS: usize = 2;
const STATE: usize = 3;

/// `STATE`: in a `sip:` number; after it, looking for the `@` of a user part; in a `tel:`
/// number; done, a user part (a number); done, not a number.
const NUMBER: u32 = 0;
const PARAMS: u32 = 1;
const TEL: u32 = 2;
const USER: u32 = 3;
const NOT_A_NUMBER: u32 = 4;

/// One byte of the Request-URI: 1 stops the loop.
extern "C" fn uri_byte(_index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let buf = unsafe { (*(ctx as *mut ScanCtx)).buf };
    let st = unsafe { buf.add(STATE_OFF) } as *mut u32;
    let get = |i: usize| unsafe { *st.add(i) };
    let set = |i: usize, v: u32| unsafe { *st.add(i) = v };
    let p = (get(POS) as usize) & 0x3ff;
    let c = at(buf, p);
    set(POS, p as u32 + 1);
    let state = get(STATE);
    let tel = state == TEL;
    if state == PARAMS {
        match c {
            b'@' => set(STATE, USER),
            b' ' | b'\r' | b'>' | 0 => set(STATE, NOT_A_NUMBER),
            _ => return 0,
        }
        return 1;
    }
    let symbol = match c {
        b'0'..=b'9' | b'+' => c,
        b'%' if at(buf, p + 1) == b'2' && at(buf, p + 2) | 0x20 == b'b' => {
            set(POS, p as u32 + 3);
            b'+'
        }
        b'-' | b'.' | b'(' | b')' => return 0,
        b'@' if !tel => {
            set(STATE, USER);
            return 1;
        }
        b';' | b'?' | b':' if !tel => {
            set(STATE, PARAMS);
            return 0;
        }
        // The end of a tel: number.
        b';' | b'?' | b'>' | b' ' | b'\r' | 0 if tel => {
            set(STATE, USER);
            return 1;
        }
        // A URI without a user part, or a name.
        _ => {
            set(STATE, NOT_A_NUMBER);
            return 1;
        }
    };
    if symbol != b'+' {
        set(DIGITS, get(DIGITS) + 1);
    }
    let n = get(N) as usize;
    if n < CALL_SYMBOLS {
        unsafe { *buf.add(KEY_OFF + 4 + (n & 31)) = symbol };
        set(N, n as u32 + 1);
    }
    0
}

/// Turns the refused INVITE in `ctx` into its 403 (the status line `CALL_REPLY[reply]`):
/// false when the caller must drop it instead.
#[inline(always)]
pub fn answer(ctx: &XdpContext, reply: u32) -> bool {
    let Some(buf) = scratch::buf() else {
        return false;
    };
    answer_in_place(ctx, line_len(buf), reply)
}

/// The request line's length (without its CRLF) in the message copied to `buf`; 0 when it does
/// not end within `LINE_MAX` bytes.
#[inline(always)]
fn line_len(buf: *const u8) -> usize {
    let mut l = Line { buf, len: 0 };
    unsafe {
        bpf_loop(
            LINE_MAX as u32,
            line_byte as *mut core::ffi::c_void,
            &mut l as *mut Line as *mut core::ffi::c_void,
            0,
        )
    };
    l.len as usize
}

#[repr(C)]
struct Line {
    buf: *const u8,
    len: u64,
}

extern "C" fn line_byte(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let l = unsafe { &mut *(ctx as *mut Line) };
    let i = (index as usize) & (LINE_MAX - 1);
    if at(l.buf, i) == b'\r' && at(l.buf, i + 1) == b'\n' {
        l.len = i as u64;
        return 1;
    }
    0
}

/// Turns the INVITE in `ctx` into its 403 answer, in place: false when it cannot (IPv6, whose
/// UDP checksum would need recomputing over the whole message; TCP; a request line too long or
/// too short for the template), and the caller drops it instead.
#[inline(always)]
fn answer_in_place(ctx: &XdpContext, line: usize, reply: u32) -> bool {
    if !(12..LINE_MAX).contains(&line) {
        return false;
    }
    let Some(reply) = CALL_REPLY.get_ptr(reply) else {
        return false;
    };
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + 14 > end {
        return false;
    }
    let mut l3 = data + 14;
    let mut proto =
        u16::from_be_bytes(unsafe { [*((data + 12) as *const u8), *((data + 13) as *const u8)] });
    for _ in 0..2 {
        if proto != 0x8100 && proto != 0x88a8 {
            break;
        }
        if l3 + 4 > end {
            return false;
        }
        proto = u16::from_be_bytes(unsafe { [*((l3 + 2) as *const u8), *((l3 + 3) as *const u8)] });
        l3 += 4;
    }
    if proto != 0x0800 || l3 + 20 > end {
        return false;
    }
    // UDP only: a TCP segment cannot be turned around (its sequence numbers); it is dropped.
    if unsafe { *((l3 + 9) as *const u8) } != 17 {
        return false;
    }
    let ihl = ((unsafe { *(l3 as *const u8) } & 0x0f) as usize) * 4;
    let udp = l3 + (ihl & 0x3c);
    if ihl < 20 || udp + 8 > end {
        return false;
    }
    unsafe {
        // Ethernet: swap the MACs.
        let mac = core::ptr::read_unaligned(data as *const [u8; 12]);
        core::ptr::write_unaligned(
            data as *mut [u8; 6],
            *(mac.as_ptr().add(6) as *const [u8; 6]),
        );
        core::ptr::write_unaligned(
            (data + 6) as *mut [u8; 6],
            *(mac.as_ptr() as *const [u8; 6]),
        );
        // IPv4: swap the addresses (the header checksum is a sum: unchanged).
        let src = core::ptr::read_unaligned((l3 + 12) as *const u32);
        let dst = core::ptr::read_unaligned((l3 + 16) as *const u32);
        core::ptr::write_unaligned((l3 + 12) as *mut u32, dst);
        core::ptr::write_unaligned((l3 + 16) as *mut u32, src);
        // UDP: swap the ports; no checksum (allowed over IPv4).
        let sport = core::ptr::read_unaligned(udp as *const u16);
        let dport = core::ptr::read_unaligned((udp + 2) as *const u16);
        core::ptr::write_unaligned(udp as *mut u16, dport);
        core::ptr::write_unaligned((udp + 2) as *mut u16, sport);
        core::ptr::write_unaligned((udp + 6) as *mut u16, 0);
    }
    let off = (udp + 8 - data) as u32;
    // Bounded for the 6.1 verifier on one register (docs/verifier.md, pitfalls 1 and 6).
    let opaque = unsafe { core::ptr::read_volatile(&line) } as u64;
    let size = ((opaque - 1) & (LINE_MAX as u64 - 1)) + 1;
    unsafe { bpf_xdp_store_bytes(ctx.ctx, off, reply as *mut _, size as u32) == 0 }
}
