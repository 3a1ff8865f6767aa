//! XDP ingress verdict: allowlist, ban, geo, then SIP request inspection. Every verdict leaves
//! through `exit`, which counts it and records it (with what the packet was) in the trace.
//!
//! The request inspection is a program of its own, `sip_inspect`, which `sip_xdp` tail-calls for
//! a packet to a SIP port that no ban, allowlist entry or geo rule decided: the kernel verifies
//! each program on its own budget of a million instructions, and the inspection (the credential
//! scan, and what the next features add to it) no longer shares `sip_xdp`'s (docs/verifier.md, 12).
use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    helpers::generated::{bpf_xdp_get_buff_len, bpf_xdp_load_bytes},
    programs::XdpContext,
};
use sip_filter_common::{
    BanReason, CALL_INGRESS, CALLS_SLOT, Config, Flow, FlowKey, INSPECT_SLOT, LIMITS_SLOT,
    REPLY_RULE, Reason, SCAN_BUF, creds, method,
};

use crate::{
    ban, calls, flood, geo,
    maps::{FLOWS, PROGS, config, count, count_at, trace},
    parse::{
        self, IPPROTO_TCP, IPPROTO_UDP, Packet, Skip,
        sip::{self, Start},
    },
    policy::{in_scope, is_sip_request_port},
    scanners, scratch, trust,
};

pub fn run(ctx: &XdpContext) -> u32 {
    count(Reason::Seen);
    let Some(cfg) = config() else {
        return XDP_PASS;
    };
    trace(cfg, |t| t.start(Reason::Passed as u32));
    verdict(ctx, cfg)
}

/// Every verdict leaves through here: counts its reason and records it in the trace.
#[inline(always)]
fn exit(cfg: &Config, reason: Reason, action: u32) -> u32 {
    count(reason);
    trace(cfg, move |t| t.verdict = reason as u32);
    action
}

/// Counts `reason` as what the packet was and records it as the trace's detail.
#[inline(always)]
fn note(cfg: &Config, reason: u32) {
    count_at(reason);
    trace(cfg, move |t| t.detail = reason);
}

/// The verdict on one packet, through `exit` with its reason.
#[inline(always)]
fn verdict(ctx: &XdpContext, cfg: &Config) -> u32 {
    let pkt = match parse::packet(ctx.data(), ctx.data_end()) {
        Ok(p) => p,
        Err(Skip::NotIp) => {
            note(cfg, Reason::NotIp as u32);
            return exit(cfg, Reason::Passed, XDP_PASS);
        }
        Err(Skip::Malformed) => return exit(cfg, Reason::Malformed, XDP_PASS),
    };
    if !pkt.has_ports && pkt.proto == IPPROTO_UDP {
        note(cfg, Reason::NonFirstFragment as u32);
    }
    let key = ban::source_key(&pkt.src, pkt.is_v6, cfg);

    // The ban lookup comes first because it is the hot path under attack; the allowlist still
    // wins.
    let banned = ban::banned(&key, &pkt.src, cfg).filter(|_| in_scope(cfg, &pkt));
    if ban::is_allowed(&pkt.src, cfg) {
        // The allowlist exempts from bans and geo, never from the call rules.
        if cfg.calls_active != 0 && is_sip_request_port(cfg, &pkt) {
            unsafe { PROGS.tail_call(ctx, CALLS_SLOT) };
        }
        return exit(cfg, Reason::Allowlisted, XDP_PASS);
    }
    if let Some(why) = banned {
        // A flood guard's entry is a temporary drop, told apart in the counters.
        let reason = if why == BanReason::Flood as u8 {
            Reason::DroppedFlood
        } else {
            Reason::DroppedBanned
        };
        return exit(cfg, reason, XDP_DROP);
    }
    if cfg.geo_active != 0 && in_scope(cfg, &pkt) && geo::blocked(&pkt.src, pkt.is_v6) {
        return exit(cfg, Reason::DroppedGeo, XDP_DROP);
    }
    if is_sip_request_port(cfg, &pkt) {
        // On success a tail call does not return: `calls_stage` or `inspect` takes the verdict.
        // The call stage picks out INVITEs and ACKs itself: this program reads no payload
        // (6.1's verifier loses track of which parse paths set it).
        if cfg.calls_active != 0 {
            unsafe { PROGS.tail_call(ctx, CALLS_SLOT) };
        }
        unsafe { PROGS.tail_call(ctx, INSPECT_SLOT) };
        // An empty slot (the loader fills it before attaching): pass uninspected.
    }
    exit(cfg, Reason::Passed, XDP_PASS)
}

/// `sip_inspect`: a packet to a SIP port from a source that nothing above decided (or an
/// allowlisted one, while call rules are in force), entered by tail call from `sip_xdp`, which
/// counted it as seen and started its trace.
pub fn inspect(ctx: &XdpContext) -> u32 {
    let Some(cfg) = config() else {
        return XDP_PASS;
    };
    // The same parse as `sip_xdp`'s; checked again because the verifier knows nothing of it.
    if let Ok(pkt) = parse::packet(ctx.data(), ctx.data_end())
        && is_sip_request_port(cfg, &pkt)
    {
        if let Some((reason, action)) = inspect_request(ctx, cfg, &pkt) {
            return exit(cfg, reason, action);
        }
        // An international INVITE the call stage marked goes on to the limits, last: a value
        // carried through the inspection (the mark, a flag) tripled the paths its
        // verification walks.
        if calls::marked() {
            unsafe { PROGS.tail_call(ctx, LIMITS_SLOT) };
        }
    }
    exit(cfg, Reason::Passed, XDP_PASS)
}

/// `sip_limits`: an international INVITE the call stage marked, entered by tail call from
/// `sip_calls` (an allowlisted source's) or `sip_inspect` (after noting and scanning it). It
/// reads the digest username and the Call-ID and counts the call: refused by a limit, it is
/// answered 403.
pub fn limits_stage(ctx: &XdpContext) -> u32 {
    let Some(cfg) = config() else {
        return XDP_PASS;
    };
    let number = calls::take_mark(cfg);
    if let Ok(pkt) = parse::packet(ctx.data(), ctx.data_end())
        && is_sip_request_port(cfg, &pkt)
    {
        let allowlisted = ban::is_allowed(&pkt.src, cfg);
        // The inspection scanned the message and left its copy here; an allowlisted source's
        // came straight from the call stage, which copied only the request line's part.
        let (creds, at) = if allowlisted {
            scan(ctx, &pkt)
        } else {
            scanned()
        };
        if number != 0
            && creds == creds::PRESENT
            && let Some(action) = calls::limits(ctx, &pkt.src, at, number)
        {
            // Refused: the PBX never answers it, so it is no longer pending.
            if !allowlisted {
                unnote_flow(&pkt);
            }
            return exit(cfg, Reason::CallHeld, action);
        }
        if allowlisted {
            return exit(cfg, Reason::Allowlisted, XDP_PASS);
        }
    }
    exit(cfg, Reason::Passed, XDP_PASS)
}

/// The Request-URI of an INVITE (7) or an ACK (4) starts this far into the message; 0 for
/// other messages.
#[inline(always)]
fn call_uri(ctx: &XdpContext, pkt: &Packet) -> usize {
    let p = pkt.payload;
    if p + 8 > ctx.data_end() {
        return 0;
    }
    let first8 = unsafe { core::ptr::read_unaligned(p as *const u64) };
    if first8 & 0x00ff_ffff_ffff_ffff == u64::from_le_bytes(*b"INVITE \0") {
        7
    } else if first8 as u32 == u32::from_le_bytes(*b"ACK ") {
        4
    } else {
        0
    }
}

/// `sip_calls`: a packet to a SIP port while call rules are in force, entered by tail call from
/// `sip_xdp`. A blocked INVITE is answered 403 (its ACK dropped); anything else goes on to the
/// request inspection (an allowlisted source's passes, as the allowlist has it).
pub fn calls_stage(ctx: &XdpContext) -> u32 {
    let Some(cfg) = config() else {
        return XDP_PASS;
    };
    // The same shape as `inspect`: 6.1's verifier follows it (the payload is read only under
    // the parse's own success and the port check).
    calls::clear_mark();
    if let Ok(pkt) = parse::packet(ctx.data(), ctx.data_end())
        && is_sip_request_port(cfg, &pkt)
    {
        if let Some(action) = call_verdict(ctx, &pkt) {
            return exit(cfg, Reason::CallBlocked, action);
        }
        if ban::is_allowed(&pkt.src, cfg) {
            // Not tracked, but the limits apply to its international calls all the same.
            if calls::marked() {
                unsafe { PROGS.tail_call(ctx, LIMITS_SLOT) };
            }
            return exit(cfg, Reason::Allowlisted, XDP_PASS);
        }
        unsafe { PROGS.tail_call(ctx, INSPECT_SLOT) };
    }
    exit(cfg, Reason::Passed, XDP_PASS)
}

/// The action for a blocked INVITE (answered) or ACK (dropped); `None` for anything else.
/// Calls from the PBX's trunks are inbound: no destination rule applies to them.
#[inline(always)]
fn call_verdict(ctx: &XdpContext, pkt: &Packet) -> Option<u32> {
    let uri = call_uri(ctx, pkt);
    if uri == 0 || calls::is_trunk(&pkt.src) || !calls::copy_start(ctx, pkt) {
        return None;
    }
    count(Reason::CallsChecked);
    let invite = uri == 7;
    match calls::judge(uri, invite) {
        calls::Judged::Blocked(rule) => {
            if invite {
                calls::report(&pkt.src, rule, CALL_INGRESS);
                if calls::answer(ctx, REPLY_RULE) {
                    return Some(XDP_TX);
                }
            }
            Some(XDP_DROP)
        }
        calls::Judged::International if invite => {
            calls::mark_for_limits();
            None
        }
        _ => None,
    }
}

/// A request the inspection drops: why, and the ban (or flood guard's entry) it makes.
type Dropped = (Reason, Option<(BanReason, u64)>);

/// Records the method of a SIP request and whether it carries credentials, for the egress
/// program to judge the PBX's answer; drops a request over the flood guard's rate, from a
/// scanner, or for an extension locked or blocked from its source (the verdict, `None` to go
/// on). The ban a drop makes is made here, once: each inlined site of it took its own 112 bytes
/// of the frame, which 6.1 adds up with the scan's callbacks' (docs/verifier.md, 16).
#[inline(always)]
fn inspect_request(ctx: &XdpContext, cfg: &Config, pkt: &Packet) -> Option<(Reason, u32)> {
    let key = ban::source_key(&pkt.src, pkt.is_v6, cfg);
    let (reason, ban) = judge_request(ctx, cfg, pkt, &key)?;
    if let Some((why, time)) = ban {
        ban::ban_now(&key, &pkt.src, why, time, cfg);
    }
    Some((reason, XDP_DROP))
}

#[inline(always)]
fn judge_request(ctx: &XdpContext, cfg: &Config, pkt: &Packet, key: &[u8; 16]) -> Option<Dropped> {
    let p = pkt.payload;
    if p + 8 > ctx.data_end() {
        note(cfg, Reason::NonSipOnSipPort as u32);
        return None;
    }
    let first8 = unsafe { core::ptr::read_unaligned(p as *const u64) };
    let method = match sip::start(first8) {
        Start::Request(m) => m,
        // Answers to the PBX's own requests (trunks, phones): nothing to track.
        Start::Response => {
            note(cfg, Reason::ResponseIn as u32);
            return None;
        }
        Start::Other => {
            note(cfg, Reason::NonSipOnSipPort as u32);
            return None;
        }
    };
    note(cfg, Reason::request_index(method));
    if cfg.flood_per_ns != 0 && flood::over(key, cfg) {
        let ban = (BanReason::Flood, cfg.flood_block_ns);
        return Some((Reason::DroppedFlood, Some(ban)));
    }
    if first8 as u32 == u32::from_le_bytes(*b"ACK ") {
        // The one request that gets no answer: noted as pending, it would pair the next call's
        // challenge with a credentialed request and count a phone's every call as a failure.
        return None;
    }
    let (creds, at) = scan(ctx, pkt);
    trace(cfg, move |t| t.creds = creds);
    if cfg.scanners_active != 0 && scanners::matched().is_some() {
        let ban = (BanReason::Scanner, cfg.scanner_ban_time_ns);
        return Some((Reason::DroppedScanner, Some(ban)));
    }
    // Whose credentials, and whether they answer a challenge sent to this source.
    let noted = if creds == creds::PRESENT {
        match trust::check(key, at) {
            Ok(n) => n,
            Err(reason) => {
                let ban = (reason == Reason::DroppedExtLocked)
                    .then_some((BanReason::LockedExtension, cfg.auth_ban_time_ns));
                return Some((reason, ban));
            }
        }
    } else {
        trust::Noted {
            ext: 0,
            nonce_ok: 0,
        }
    };
    match creds {
        creds::PRESENT => count(Reason::ReqWithCreds),
        creds::UNKNOWN => count(Reason::ReqCredsUnknown),
        _ => {}
    }
    let with_creds = u8::from(creds != creds::NONE);
    let register_invite = u8::from(method == method::REGISTER || method == method::INVITE);
    note_flow(pkt, with_creds, register_invite, &noted);
    None
}

/// Takes back what `note_flow` noted for a credentialed INVITE the limits refused.
#[inline(always)]
fn unnote_flow(pkt: &Packet) {
    if let Some(f) = FLOWS.get_ptr_mut(FlowKey::new(pkt.src, pkt.sport)) {
        unsafe {
            (*f).pending = (*f).pending.saturating_sub(1);
            (*f).creds = (*f).creds.saturating_sub(1);
            (*f).register_invite = (*f).register_invite.saturating_sub(1);
        }
    }
}

/// Notes a request on its client socket's `Flow`, for the egress program to pair the PBX's
/// answer with.
#[inline(always)]
fn note_flow(pkt: &Packet, with_creds: u8, register_invite: u8, noted: &trust::Noted) {
    let k = FlowKey::new(pkt.src, pkt.sport);
    // Re-registering phones and guessing scanners reuse their socket: updating in place costs a
    // lookup, where an LRU insert costs several times more. A full map evicts the oldest client,
    // which only forgets its pending requests.
    match FLOWS.get_ptr_mut(k) {
        Some(f) => unsafe {
            (*f).pending = (*f).pending.saturating_add(1);
            (*f).creds = (*f).creds.saturating_add(with_creds);
            (*f).register_invite = (*f).register_invite.saturating_add(register_invite);
            if with_creds != 0 {
                (*f).ext = noted.ext;
                (*f).nonce_ok = noted.nonce_ok;
            }
        },
        None => {
            let f = Flow {
                pending: 1,
                creds: with_creds,
                register_invite,
                nonce_ok: noted.nonce_ok,
                _pad: [0; 4],
                ext: noted.ext,
            };
            let _ = FLOWS.insert(k, f, 0);
        }
    }
}

/// Copies up to `SCAN_BUF` bytes of the message to the per-CPU scratch buffer and scans them:
/// the `creds` value and where the credentials header starts. Both are left in the scratch
/// buffer too, for the limits stage (`scanned`).
#[inline(always)]
fn scan(ctx: &XdpContext, pkt: &Packet) -> (u8, u64) {
    let c = scan_copy(ctx, pkt);
    if let Some(w) = scratch::word(scratch::off::SCANNED) {
        unsafe { *w = c as u64 };
    }
    scanned()
}

/// What the last `scan` of this packet found: its `creds` value and where the credentials
/// header starts.
#[inline(always)]
fn scanned() -> (u8, u64) {
    match (
        scratch::word(scratch::off::SCANNED),
        scratch::word(scratch::off::CREDS_AT),
    ) {
        (Some(c), Some(at)) => unsafe { (*c as u8, *at) },
        _ => (creds::UNKNOWN, 0),
    }
}

#[inline(always)]
fn scan_copy(ctx: &XdpContext, pkt: &Packet) -> u8 {
    let Some(buf) = scratch::buf() else {
        return creds::UNKNOWN;
    };
    let off = (pkt.payload - ctx.data()) as u64;
    let total = unsafe { bpf_xdp_get_buff_len(ctx.ctx) };
    let msg = pkt.msg_len as u64;
    let load = |to, size| unsafe { bpf_xdp_load_bytes(ctx.ctx, off as u32, to, size) };
    match scratch::copy::<{ SCAN_BUF as u64 }>(off, total, msg, load) {
        None => creds::UNKNOWN,
        Some(0) => creds::NONE,
        Some(size) => {
            // A TCP segment whose header section does not end in it continues in the next one: its
            // credentials are unknown.
            let truncated = pkt.first_fragment || msg > size || pkt.proto == IPPROTO_TCP;
            sip::scan_credentials(buf, size, truncated)
        }
    }
}
