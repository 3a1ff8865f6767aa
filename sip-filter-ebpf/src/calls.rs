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
    helpers::generated::{
        bpf_loop, bpf_skb_load_bytes, bpf_xdp_get_buff_len, bpf_xdp_load_bytes, bpf_xdp_store_bytes,
    },
    maps::lpm_trie::Key,
    programs::{TcContext, XdpContext},
};
use sip_filter_common::{
    CALL_COPY, CALL_SYMBOLS, CallDigits, CallEvent, MAX_CALL_RULES, Reason, SCAN_BUF, SCRATCH_LEN,
    call_stat_index,
};

use crate::{
    maps::{CALL_REPLY, CALL_RULES, CALL_STATS, EVENTS, SCRATCH, TRUNKS, count, now},
    parse::{Packet, sip::ZERO_TAIL},
};

/// Bytes of the Request-URI read for its user part (separators included).
const URI_SCAN: usize = 96;
/// Where in the per-CPU scratch buffer the lookup key is built: past the message copy and its
/// zeroed tail. A key on the stack would not fit the XDP frame on 6.1 (docs/verifier.md, 11).
const KEY_OFF: usize = SCAN_BUF + 1024;
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
    copy_with(off, total, pkt.udp_payload_len as u64, |to, size| unsafe {
        bpf_xdp_load_bytes(ctx.ctx, off as u32, to, size)
    })
}

/// `copy_start` for an INVITE the PBX sends (TC egress).
#[inline(always)]
pub fn copy_start_tc(ctx: &TcContext, pkt: &Packet) -> bool {
    let off = (pkt.payload - ctx.data()) as u64;
    let total = ctx.len() as u64;
    copy_with(off, total, pkt.udp_payload_len as u64, |to, size| unsafe {
        bpf_skb_load_bytes(ctx.skb.skb as *const _, off as u32, to, size)
    })
}

/// Copies `msg` bytes (at most `COPY`, and no more than the frame holds past `off`) with
/// `load`, into the scratch buffer; its length is noted for the `CallEvent`.
#[inline(always)]
fn copy_with(
    off: u64,
    total: u64,
    msg: u64,
    load: impl FnOnce(*mut core::ffi::c_void, u32) -> i64,
) -> bool {
    let Some(buf) = SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    let buf = buf as *mut u8;
    if total <= off {
        return false;
    }
    let avail = total - off;
    let want = if msg < avail { msg } else { avail };
    if want == 0 {
        return false;
    }
    let clamped = if want >= COPY { COPY } else { want };
    // Bounded on one register for the 6.1 verifier (docs/verifier.md, pitfalls 1, 2 and 6).
    let opaque = unsafe { core::ptr::read_volatile(&clamped) };
    let size = ((opaque - 1) & (COPY - 1)) + 1;
    if load(buf.cast(), size as u32) != 0 {
        return false;
    }
    for i in 0..ZERO_TAIL / 8 {
        unsafe { core::ptr::write_unaligned(buf.add(size as usize + 8 * i) as *mut u64, 0) };
    }
    unsafe { (*event(buf)).msg_len = size as u32 };
    true
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

/// The rule that blocks the call whose message `copy_start` copied (its Request-URI starting
/// at `start`), if one does. An INVITE (`invite`) is counted against the rule that decided it.
#[inline(always)]
pub fn blocked_by(start: usize, invite: bool) -> Option<u32> {
    let buf = SCRATCH.get_ptr_mut(0)? as *mut u8;
    let (key, digits) = scan_uri(buf, start)?;
    let r = CALL_RULES.get(key)?;
    if digits < r.min_digits as u32 {
        // An extension or a local number: no rule decides it.
        return None;
    }
    let blocked = r.blocked != 0;
    // Guard entries (no rule) and rules past the counters' end are not counted.
    if invite && r.rule < MAX_CALL_RULES {
        stat(call_stat_index(r.rule, false));
        if blocked {
            stat(call_stat_index(r.rule, true));
        }
    }
    if blocked { Some(r.rule) } else { None }
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
    let Some(buf) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let e = event(buf as *mut u8);
    unsafe {
        (*e).addr = *addr;
        (*e).time_ns = now();
        (*e).rule = rule;
        (*e).direction = direction;
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
    let mut u = Uri { buf };
    // One byte per turn; a callback is verified once, where a plain loop is walked turn by
    // turn (and 6.1 refuses the back-edge of one).
    unsafe {
        bpf_loop(
            URI_SCAN as u32,
            uri_byte as *mut core::ffi::c_void,
            &mut u as *mut Uri as *mut core::ffi::c_void,
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

/// The Request-URI scan's context: the scratch buffer (its state is in there, at `STATE_OFF`).
#[repr(C)]
struct Uri {
    buf: *mut u8,
}

/// The scan's state words, at `STATE_OFF` in the scratch buffer: the next byte, symbols
/// written to the key, digits seen, and where the scan is.
const STATE_OFF: usize = KEY_OFF - 16;
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
    let buf = unsafe { (*(ctx as *mut Uri)).buf };
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

/// Turns the blocked INVITE in `ctx` into its 403: false when the caller must drop it instead.
#[inline(always)]
pub fn answer(ctx: &XdpContext) -> bool {
    let Some(buf) = SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    answer_in_place(ctx, line_len(buf as *const u8))
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
/// UDP checksum would need recomputing over the whole message; a request line too long or too
/// short for the template), and the caller drops it instead.
#[inline(always)]
fn answer_in_place(ctx: &XdpContext, line: usize) -> bool {
    if !(12..LINE_MAX).contains(&line) {
        return false;
    }
    let Some(reply) = CALL_REPLY.get_ptr(0) else {
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
