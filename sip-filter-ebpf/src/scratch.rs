//! The per-CPU scratch buffer (`SCRATCH`): the copy of the message the scans read, and past it
//! the regions the stages leave each other and build their map keys in. Map memory, not the
//! stack: the XDP frame is small on 6.1 (docs/verifier.md, 11), and values carried across a
//! scan in registers or on the stack multiply what the verifier walks (pitfalls 13 and 15).
//!
//! The stages of one packet run on one CPU one after the other (tail calls), so what one
//! leaves here the next reads; nothing survives to the next packet that is not rewritten.
use sip_filter_common::SCAN_BUF;

use crate::{maps::SCRATCH, parse::sip::ZERO_TAIL};

/// Where each region starts. The message copy takes `SCAN_BUF` bytes from 0, then its
/// `ZERO_TAIL` zeros.
pub mod off {
    use sip_filter_common::SCAN_BUF;

    /// The credentials scan's result: where the credentials header starts (when present).
    pub const CREDS_AT: usize = SCAN_BUF + 192;
    /// The last request scan's `creds` value, for the limits stage.
    pub const SCANNED: usize = CREDS_AT + 8;
    /// Where the User-Agent header starts (0: none seen).
    pub const UA_AT: usize = SCANNED + 8;
    /// The call stage's mark for the limits: the dialled number's hash (0: none).
    pub const MARK: usize = SCAN_BUF + 256;
    /// The extension (`EXT_LEN` bytes, zero-padded) and the number's hash after it: together an
    /// `ExtNumber` key, its first `EXT_LEN` bytes an `EXT_CALLS` key.
    pub const EXT: usize = MARK + 64;
    /// The limits' username and Call-ID scans' state words.
    pub const CRED_STATE: usize = EXT + 64;
    /// The Request-URI scan's state words.
    pub const URI_STATE: usize = CALL_KEY - 16;
    /// The `CALL_RULES` lookup key.
    pub const CALL_KEY: usize = SCAN_BUF + 1024;
    /// The `SCANNERS` lookup key.
    pub const UA_KEY: usize = SCAN_BUF + 1280;
}

const _: () = {
    assert!(off::CREDS_AT >= SCAN_BUF + ZERO_TAIL);
    assert!(off::UA_AT + 8 <= off::MARK);
    assert!(off::CRED_STATE + 64 <= off::URI_STATE);
    assert!(off::UA_KEY + 4 + sip_filter_common::UA_LEN <= sip_filter_common::SCRATCH_LEN);
};

/// This CPU's scratch buffer.
#[inline(always)]
pub fn buf() -> Option<*mut u8> {
    SCRATCH.get_ptr_mut(0).map(|p| p as *mut u8)
}

/// The word at `off` in the scratch buffer.
#[inline(always)]
pub fn word(off: usize) -> Option<*mut u64> {
    Some(unsafe { buf()?.add(off) } as *mut u64)
}

/// Copies the message (`msg` bytes at `off` in a frame of `total`, at most `CAP`, a power of
/// two) to the start of the scratch buffer with `load`, followed by `ZERO_TAIL` zeros, so that
/// nothing an earlier packet left is read as part of this one. The bytes copied; `None` when
/// it could not copy, `Some(0)` for an empty message.
#[inline(always)]
pub fn copy<const CAP: u64>(
    off: u64,
    total: u64,
    msg: u64,
    load: impl FnOnce(*mut core::ffi::c_void, u32) -> i64,
) -> Option<u64> {
    let buf = buf()?;
    if total <= off {
        return None;
    }
    // Sizes are computed in u64 and clamped on one register so the 6.1 verifier sees both
    // bounds of the helper's length argument (docs/verifier.md, pitfalls 1 and 2).
    let avail = total - off;
    let want = if msg < avail { msg } else { avail };
    if want == 0 {
        return Some(0);
    }
    let clamped = if want >= CAP { CAP } else { want };
    // LLVM would prove the mask below redundant and drop it; read through a volatile so that
    // the instructions the 6.1 verifier needs to bound the length on one register stay
    // (docs/verifier.md, pitfall 6).
    let opaque = unsafe { core::ptr::read_volatile(&clamped) };
    let size = ((opaque - 1) & (CAP - 1)) + 1;
    if load(buf.cast(), size as u32) != 0 {
        return None;
    }
    // Word stores: a byte loop here compiles to a call to a byte-at-a-time memset.
    for i in 0..ZERO_TAIL / 8 {
        unsafe { core::ptr::write_unaligned(buf.add(size as usize + 8 * i) as *mut u64, 0) };
    }
    Some(size)
}
