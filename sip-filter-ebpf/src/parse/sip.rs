//! SIP start lines and the credential scan.
use aya_ebpf::helpers::generated::bpf_loop;
use sip_filter_common::{SCRATCH_LEN, creds, method};

/// What the first bytes of a UDP payload on a SIP port are.
pub enum Start {
    Request(u8),
    Response,
    /// Not SIP (keep-alive CRLFs, STUN, garbage).
    Other,
}

/// Little-endian u64 of 8 ASCII bytes, to compare a whole word at once.
const fn word(s: &[u8]) -> u64 {
    let mut w = 0u64;
    let mut i = 0;
    while i < s.len() && i < 8 {
        w |= (s[i] as u64) << (8 * i);
        i += 1;
    }
    w
}

const fn low_bytes(n: u32) -> u64 {
    if n >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * n)) - 1
    }
}

/// Sets 0x20 on letters of the first `n` bytes: ASCII lower-casing for comparisons with
/// lower-case header names ('-' and ':' already have the bit set, so they survive).
const LOWER: u64 = 0x2020_2020_2020_2020;

/// Classifies the first eight payload bytes. Method names are case-sensitive in SIP.
#[inline(always)]
pub fn start(first8: u64) -> Start {
    if first8 == word(b"REGISTER") {
        Start::Request(method::REGISTER)
    } else if first8 & low_bytes(7) == word(b"INVITE ") {
        Start::Request(method::INVITE)
    } else if first8 == word(b"OPTIONS ") {
        Start::Request(method::OPTIONS)
    } else if first8 == word(b"SUBSCRIB") {
        Start::Request(method::SUBSCRIBE)
    } else if first8 == word(b"MESSAGE ") {
        Start::Request(method::MESSAGE)
    } else if first8 == word(b"SIP/2.0 ") {
        Start::Response
    } else {
        // Other methods (ACK, BYE, NOTIFY, ...): an upper-case token of 3+ letters.
        let b0 = first8 as u8;
        let b1 = (first8 >> 8) as u8;
        let b2 = (first8 >> 16) as u8;
        if b0.is_ascii_uppercase() && b1.is_ascii_uppercase() && b2.is_ascii_uppercase() {
            Start::Request(method::OTHER)
        } else {
            Start::Other
        }
    }
}

/// Parses "SIP/2.0 NNN" from the first 12 bytes of a response. Returns the status code.
#[inline(always)]
pub fn status(first12: &[u8; 12]) -> Option<u16> {
    let d0 = first12[8].wrapping_sub(b'0');
    let d1 = first12[9].wrapping_sub(b'0');
    let d2 = first12[10].wrapping_sub(b'0');
    if d0 > 9 || d1 > 9 || d2 > 9 || first12[11] != b' ' {
        return None;
    }
    Some(d0 as u16 * 100 + d1 as u16 * 10 + d2 as u16)
}

const MASK: u64 = (SCRATCH_LEN - 1) as u64;
/// Bytes zeroed after the message: covers the last word loaded and every read past a line start
/// that begins inside the message, so no read needs its own bound check.
pub const ZERO_TAIL: usize = 32;

/// High bit of each byte lane that equals `\n`; exact for every lane (no borrow false-positives).
#[inline(always)]
fn newlines(w: u64) -> u64 {
    const LF: u64 = 0x0a0a_0a0a_0a0a_0a0a;
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let x = w ^ LF;
    !(((x & LOW7).wrapping_add(LOW7)) | x | LOW7)
}

#[inline(always)]
fn byte(buf: *const u8, i: u64) -> u8 {
    unsafe { *buf.add((i & MASK) as usize) }
}

#[inline(always)]
fn load8(buf: *const u8, i: u64) -> u64 {
    unsafe { core::ptr::read_unaligned(buf.add((i & MASK) as usize) as *const u64) }
}

/// Zero when `b` ends a header name (`:` or whitespace before it), non-zero otherwise.
/// Arithmetic instead of comparisons: every comparison is a branch for the verifier to walk
/// (docs/verifier.md, pitfall 8).
#[inline(always)]
fn not_name_end(b: u64) -> u64 {
    const ENDS: u64 = (1 << b':') | (1 << b' ') | (1 << b'\t');
    (((ENDS >> (b & 63)) & 1) ^ 1) | (b >> 6)
}

/// Does the line at `at` start with `Authorization` or `Proxy-Authorization` (any case),
/// then optional whitespace and a colon? Bytes past the message are zero, so they never match.
#[inline(always)]
fn credentials_header(buf: *const u8, at: u64) -> bool {
    let r0 = load8(buf, at);
    let r1 = load8(buf, at + 8);
    let r2 = load8(buf, at + 16);
    let (w0, w1, w2) = (r0 | LOWER, r1 | LOWER, r2 | LOWER);
    let auth = (w0 ^ word(b"authoriz"))
        | ((w1 & low_bytes(5)) ^ word(b"ation"))
        | not_name_end((r1 >> 40) & 0xff);
    let proxy = (w0 ^ word(b"proxy-au"))
        | (w1 ^ word(b"thorizat"))
        | ((w2 & low_bytes(3)) ^ word(b"ion"))
        | not_name_end((r2 >> 24) & 0xff);
    // Both non-zero means neither matched; one branch for the whole test.
    let nonzero = |x: u64| (x | x.wrapping_neg()) >> 63;
    nonzero(auth) & nonzero(proxy) == 0
}

/// Does the line at `at` start with `User-Agent` (any case), then whitespace or a colon?
#[inline(always)]
fn user_agent_header(buf: *const u8, at: u64) -> bool {
    let r0 = load8(buf, at);
    let r1 = load8(buf, at + 8);
    let x = ((r0 | LOWER) ^ word(b"user-age"))
        | (((r1 | LOWER) & low_bytes(2)) ^ word(b"nt"))
        | not_name_end((r1 >> 16) & 0xff);
    x == 0
}

/// State shared with the `bpf_loop` callback, on the caller's stack.
#[repr(C)]
struct Scan {
    buf: *const u8,
    size: u64,
    /// A `creds` value once decided, `UNDECIDED` while scanning.
    result: u8,
}

/// Where in the scratch buffer the scan leaves the offsets of the first credentials header and
/// the User-Agent header it found (0: none): map memory, not the scan's state on the stack,
/// whose exact values the verifier would track (docs/verifier.md, 13).
const CREDS_AT_OFF: usize = crate::scratch::off::CREDS_AT;
const UA_AT_OFF: usize = crate::scratch::off::UA_AT;

#[inline(always)]
fn slot(buf: *const u8, off: usize) -> *mut u64 {
    unsafe { (buf as *mut u8).add(off) as *mut u64 }
}

const UNDECIDED: u8 = 0xff;
/// `Scan::result`: the blank line ending the header section was found.
const ENDED: u8 = 0xfe;

/// Aligned words examined per `bpf_loop` turn: fewer turns, less call overhead.
const WORDS_PER_TURN: u64 = 4;

/// One `bpf_loop` turn: `WORDS_PER_TURN` aligned words of the message from `index`. A callback
/// is verified once, where a plain loop of 256 turns is walked turn by turn by the verifier.
///
/// The newline masks of all four words are computed without branches and most turns end there
/// (a line is about 40 bytes); words with newlines go to `scan_lanes`, a separate subprogram so
/// that the verifier's work adds up per word instead of multiplying across them (6.1 gives up
/// at a million instructions otherwise; docs/verifier.md, pitfall 7).
extern "C" fn scan_words(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let s = unsafe { &mut *(ctx as *mut Scan) };
    let base = index * WORDS_PER_TURN * 8;
    if base >= s.size {
        return 1;
    }
    let mut masks = [0u64; WORDS_PER_TURN as usize];
    for (w, m) in masks.iter_mut().enumerate() {
        let pos = base + 8 * w as u64;
        // All ones while `pos < size`, zero past the message (which holds stale bytes).
        let inside = 0u64.wrapping_sub(pos.wrapping_sub(s.size) >> 63);
        // Aligned load: `pos` is a multiple of 8 and the scratch buffer is a map value.
        *m = newlines(unsafe { *(s.buf.add((pos & MASK) as usize) as *const u64) }) & inside;
    }
    if masks.iter().fold(0, |a, m| a | m) == 0 {
        return 0;
    }
    for (w, m) in masks.iter().enumerate() {
        if *m != 0 && scan_lanes(s, base + 8 * w as u64, *m) {
            return 1;
        }
    }
    0
}

/// Line starts examined per word. SIP lines are longer than 4 bytes (the blank line ending the
/// headers is found at the first of its two newlines), so a real message never has more; each
/// extra lane would multiply the verifier's work.
const LANES_PER_WORD: usize = 2;

/// Examines the line starts after the newlines `pending` of the word at `pos`. True once the
/// answer is known (`s.result` set).
#[inline(never)]
fn scan_lanes(s: &mut Scan, pos: u64, pending: u64) -> bool {
    let buf = s.buf;
    let mut pending = pending;
    for _ in 0..LANES_PER_WORD {
        if pending == 0 {
            return false;
        }
        let lowest = pending & pending.wrapping_neg();
        pending ^= lowest;
        // Lane of the lowest set high bit: (1 << 8k) * 0x0001020304050607 has k in its top byte.
        let lane = ((lowest >> 7).wrapping_mul(0x0001_0203_0405_0607)) >> 56;
        let at = pos + lane + 1;
        let first = byte(buf, at);
        if first == b'\r' || first == b'\n' {
            // Blank line: end of the header section (a zero byte past the end is neither).
            s.result = ENDED;
            return true;
        }
        // The scan goes on past the credentials to the end of the header section: the
        // User-Agent may come after them.
        let lc = first | 0x20;
        if (lc == b'a' || lc == b'p')
            && credentials_header(buf, at)
            && unsafe { *slot(buf, CREDS_AT_OFF) } == 0
        {
            unsafe { *slot(buf, CREDS_AT_OFF) = at };
        } else if lc == b'u' && user_agent_header(buf, at) {
            unsafe { *slot(buf, UA_AT_OFF) = at };
        }
    }
    if pending != 0 {
        // Lines of under four bytes: not a real client. Counted as carrying credentials, so
        // such padding cannot hide a guess.
        s.result = creds::UNKNOWN;
        return true;
    }
    false
}

/// Scans the header section of the first `size` bytes of a SIP request copied to `buf`
/// (followed by `ZERO_TAIL` zero bytes) for a credentials header and the User-Agent: where they
/// start is left at `CREDS_AT_OFF` and `UA_AT_OFF` (0: none). `truncated` says that the message
/// continues beyond `size`. The `creds` value.
#[inline(always)]
pub fn scan_credentials(buf: *const u8, size: u64, truncated: bool) -> u8 {
    unsafe {
        *slot(buf, CREDS_AT_OFF) = 0;
        *slot(buf, UA_AT_OFF) = 0;
    }
    let mut s = Scan {
        buf,
        size,
        result: UNDECIDED,
    };
    let turns = size.div_ceil(8 * WORDS_PER_TURN);
    unsafe {
        bpf_loop(
            turns as u32,
            scan_words as *mut core::ffi::c_void,
            &mut s as *mut Scan as *mut core::ffi::c_void,
            0,
        )
    };
    if unsafe { *slot(buf, CREDS_AT_OFF) } != 0 {
        return creds::PRESENT;
    }
    match s.result {
        UNDECIDED if truncated => creds::UNKNOWN,
        // All bytes scanned, no credentials and no blank line.
        UNDECIDED | ENDED => creds::NONE,
        r => r,
    }
}
