//! Digest credentials: the username (the extension) and the nonce of a request's credentials
//! header, and the nonce of the PBX's challenge. Read byte by byte by `bpf_loop` callbacks
//! over the scratch copy, their state in the scratch buffer (docs/verifier.md, 12).
use aya_ebpf::helpers::generated::bpf_loop;
use sip_filter_common::{EXT_LEN, Extension, SCRATCH_LEN, ext_id};

use crate::scratch::{self, off};

const MASK: usize = SCRATCH_LEN - 1;
const LOWER: u64 = 0x2020_2020_2020_2020;
/// The scan's state words (at `off::CRED_STATE`): the next byte, where the scan is, the
/// username's length, the nonce's hash. (Words 4-6 are the limits' Call-ID scan.)
const POS: usize = 0;
const STATE: usize = 1;
const LEN: usize = 2;
const NONCE: usize = 3;
const SEEK: u64 = 0;
const IN_USERNAME: u64 = 1;
const IN_NONCE: u64 = 2;
/// Bytes of the credentials header read.
const CRED_SCAN: u32 = 512;
/// Bytes of a challenge read for its nonce.
pub const CHALLENGE_SCAN: u32 = 1024;
const FNV: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

#[inline(always)]
fn at(buf: *const u8, i: usize) -> u8 {
    unsafe { *buf.add(i & MASK) }
}

#[repr(C)]
struct Ctx {
    buf: *mut u8,
}

/// What `read` found.
pub struct Digest {
    /// `ext_id` of the username (its bytes at `off::EXT`); 0 without one.
    pub ext: u64,
    /// The nonce's hash; 0 without one.
    pub nonce: u64,
}

/// Reads the credentials header starting at `at` in the scratch copy.
#[inline(always)]
pub fn read(at: u64) -> Option<Digest> {
    let buf = scratch::buf()?;
    let st = unsafe { buf.add(off::CRED_STATE) } as *mut u64;
    unsafe {
        for i in 0..(EXT_LEN / 8) {
            *(buf.add(off::EXT + 8 * i) as *mut u64) = 0;
        }
        *st.add(POS) = at;
        *st.add(STATE) = SEEK;
        *st.add(LEN) = 0;
        *st.add(NONCE) = 0;
    }
    let mut c = Ctx { buf };
    unsafe {
        bpf_loop(
            CRED_SCAN,
            cred_byte as *mut core::ffi::c_void,
            &mut c as *mut Ctx as *mut core::ffi::c_void,
            0,
        )
    };
    let (len, nonce) = unsafe { (*st.add(LEN), *st.add(NONCE)) };
    let ext = if len == 0 {
        0
    } else {
        ext_id(unsafe { &*(buf.add(off::EXT) as *const Extension) })
    };
    Some(Digest { ext, nonce })
}

/// Is the parameter `name` (8 bytes or fewer, lower case, with its `=`) at `p`, after a
/// separator (so `cnonce=` is not `nonce=`)?
#[inline(always)]
fn param(buf: *const u8, p: usize, word: u64, mask: u64) -> bool {
    let w = unsafe { core::ptr::read_unaligned(buf.add(p & MASK) as *const u64) } | LOWER;
    let before = at(buf, p.wrapping_sub(1));
    (w & mask) == word && (before == b' ' || before == b',' || before == b'\t')
}

const USERNAME: u64 = u64::from_le_bytes(*b"username");
const NONCE_EQ: u64 = u64::from_le_bytes(*b"nonce=\0\0");
const SIX: u64 = 0x0000_ffff_ffff_ffff;

/// One byte of a credentials (or challenge) header: 1 stops the loop.
extern "C" fn cred_byte(_index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let buf = unsafe { (*(ctx as *mut Ctx)).buf };
    let st = unsafe { buf.add(off::CRED_STATE) } as *mut u64;
    let get = |i: usize| unsafe { *st.add(i) };
    let set = |i: usize, v: u64| unsafe { *st.add(i) = v };
    let p = (get(POS) as usize) & 0x7ff;
    let c = at(buf, p);
    set(POS, p as u64 + 1);
    if c == b'\r' || c == b'\n' || c == 0 {
        return 1;
    }
    match get(STATE) {
        SEEK => {
            if param(buf, p, USERNAME, u64::MAX) && at(buf, p + 8) == b'=' {
                let quoted = at(buf, p + 9) == b'"';
                set(STATE, IN_USERNAME);
                set(POS, p as u64 + 9 + quoted as u64);
            } else if param(buf, p, NONCE_EQ, SIX) {
                let quoted = at(buf, p + 6) == b'"';
                set(STATE, IN_NONCE);
                set(NONCE, FNV);
                set(POS, p as u64 + 6 + quoted as u64);
            }
        }
        IN_USERNAME => {
            if c == b'"' || c == b',' || c == b' ' {
                set(STATE, SEEK);
            } else {
                let n = get(LEN) as usize;
                if n < EXT_LEN {
                    unsafe { *buf.add(off::EXT + (n & (EXT_LEN - 1))) = c };
                    set(LEN, n as u64 + 1);
                }
            }
        }
        _ => {
            if c == b'"' || c == b',' || c == b' ' {
                set(STATE, SEEK);
            } else {
                set(NONCE, ((get(NONCE) ^ c as u64).wrapping_mul(FNV_PRIME)) | 1);
            }
        }
    }
    // Both read: nothing more is needed from this header.
    if get(STATE) == SEEK && get(LEN) != 0 && get(NONCE) != 0 {
        return 1;
    }
    0
}

/// The nonce's hash of the challenge (`WWW-Authenticate` / `Proxy-Authenticate`) in the
/// response copied to the scratch buffer (`size` bytes); 0 without one. The first `nonce=`
/// parameter of the message is the challenge's (`nextnonce` is not one).
#[inline(always)]
pub fn challenge_nonce() -> u64 {
    let Some(buf) = scratch::buf() else {
        return 0;
    };
    let st = unsafe { buf.add(off::CRED_STATE) } as *mut u64;
    unsafe {
        *st.add(POS) = 0;
        *st.add(NONCE) = 0;
    }
    let mut c = Ctx { buf };
    unsafe {
        bpf_loop(
            CHALLENGE_SCAN,
            challenge_byte as *mut core::ffi::c_void,
            &mut c as *mut Ctx as *mut core::ffi::c_void,
            0,
        )
    };
    unsafe { *st.add(NONCE) }
}

/// One byte of a response while looking for its nonce: 1 stops.
extern "C" fn challenge_byte(_index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let buf = unsafe { (*(ctx as *mut Ctx)).buf };
    let st = unsafe { buf.add(off::CRED_STATE) } as *mut u64;
    let get = |i: usize| unsafe { *st.add(i) };
    let set = |i: usize, v: u64| unsafe { *st.add(i) = v };
    let p = (get(POS) as usize) & 0x7ff;
    let c = at(buf, p);
    set(POS, p as u64 + 1);
    if c == 0 {
        return 1;
    }
    if get(NONCE) == 0 {
        if param(buf, p, NONCE_EQ, SIX) {
            let quoted = at(buf, p + 6) == b'"';
            set(NONCE, FNV);
            set(POS, p as u64 + 6 + quoted as u64);
        }
        return 0;
    }
    if c == b'"' || c == b',' || c == b' ' || c == b'\r' {
        return 1;
    }
    set(NONCE, ((get(NONCE) ^ c as u64).wrapping_mul(FNV_PRIME)) | 1);
    0
}
