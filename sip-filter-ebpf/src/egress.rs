//! TC egress: reads the PBX's SIP responses and counts failures per client, and holds back the
//! calls it places to its trunks that a toll-fraud rule blocks (forwarding, voicemail
//! call-outs, DISA: whatever made the PBX place them).
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    programs::TcContext,
};
use sip_filter_common::{CALL_EGRESS, Config, Flow, FlowKey, Reason};

use crate::{
    ban::{self, Failure},
    calls, creds,
    maps::{FLOWS, config, count, count_at, now, trace},
    parse::{self, IPPROTO_TCP, IPPROTO_UDP, sip},
    policy::is_sip_port,
    scratch, trust,
};

/// Enough linear bytes for two VLAN tags, IPv6 with extension headers, UDP and a status line.
const PULL_LEN: u32 = 256;

/// The TC action: `TC_ACT_SHOT` only for a call to a trunk that a rule blocks.
pub fn run(ctx: &TcContext) -> i32 {
    count(Reason::EgressSeen);
    let Some(cfg) = config() else {
        return TC_ACT_OK;
    };
    trace(cfg, move |t| t.start(Reason::EgressSeen as u32));
    let len = ctx.len();
    let _ = ctx.pull_data(if len < PULL_LEN { len } else { PULL_LEN });
    let Ok(pkt) = parse::packet(ctx.data(), ctx.data_end()) else {
        return TC_ACT_OK;
    };
    // Plain SIP over UDP and TCP (one message per segment, as the PBX sends its answers).
    if (pkt.proto != IPPROTO_UDP && pkt.proto != IPPROTO_TCP) || !pkt.has_ports {
        return TC_ACT_OK;
    }
    let p = pkt.payload;
    if p + 12 > ctx.data_end() {
        return TC_ACT_OK;
    }
    let first12 = unsafe { core::ptr::read_unaligned(p as *const [u8; 12]) };
    if first12[..7] == *b"INVITE " {
        if cfg.calls_active != 0 && call_blocked(ctx, &pkt) {
            trace(cfg, |t| t.verdict = Reason::CallBlockedEgress as u32);
            count(Reason::CallBlockedEgress);
            return TC_ACT_SHOT;
        }
        return TC_ACT_OK;
    }
    if first12[..8] == *b"SIP/2.0 " && is_sip_port(cfg, pkt.sport) {
        let _ = answer(ctx, cfg, &pkt, &first12);
    }
    TC_ACT_OK
}

/// Is this INVITE the PBX is sending a call to one of its trunks that a rule blocks? Whatever
/// made the PBX place it (a forward, a call-out), it does not leave the host: the PBX's
/// transaction times out and the call fails there.
#[inline(always)]
fn call_blocked(ctx: &TcContext, pkt: &parse::Packet) -> bool {
    if !calls::is_trunk(&pkt.dst) || !calls::copy_start_tc(ctx, pkt) {
        return false;
    }
    count(Reason::CallsChecked);
    let calls::Judged::Blocked(rule) = calls::judge(7, true) else {
        return false;
    };
    calls::report(&pkt.dst, rule, CALL_EGRESS);
    true
}

/// Judges one answer of the PBX (`first12`, its first bytes); the trace gets what it was and
/// what it caused.
#[inline(always)]
fn answer(ctx: &TcContext, cfg: &Config, pkt: &parse::Packet, first12: &[u8; 12]) -> Option<()> {
    let code = sip::status(first12)?;
    let class = (code / 100) as u32;
    let counted = (1..=6).contains(&class);
    if counted {
        count_at(Reason::response_index(class));
    }
    trace(cfg, move |t| {
        t.status = code;
        if counted {
            t.verdict = Reason::response_index(class);
        }
    });
    if code < 200 {
        // Provisional: the transaction is still open.
        return None;
    }

    // The client is where the answer goes.
    let fk = FlowKey::new(pkt.dst, pkt.dport);
    let flow = FLOWS.get_ptr_mut(fk);
    let mut f = match flow {
        Some(p) => unsafe { *p },
        None => Flow::default(),
    };

    // Pair the answer with a pending request (see `Flow`), then close that request: a
    // retransmitted answer finds nothing left to pair with and does not count twice.
    let key = ban::source_key(&pkt.dst, pkt.is_v6, cfg);
    let dst = &pkt.dst;
    if code == 401 || code == 407 {
        // The nonce it issues: a credentialed request from the client that carries it answers
        // this challenge, so it came from this address.
        trust::issued(&key, challenge(ctx, pkt));
    }
    match code {
        // A challenge to a request without credentials is the first step of digest auth.
        401 | 407 if f.creds > 0 => {
            f.creds -= 1;
            failure(&key, dst, &f, cfg);
        }
        403 => {
            f.creds = f.creds.saturating_sub(1);
            failure(&key, dst, &f, cfg);
        }
        404 if f.register_invite > 0 => {
            f.register_invite -= 1;
            ban::record_failure(&key, dst, Failure::NotFound, cfg, now());
        }
        // Success resets the count only when it can only answer a credentialed request.
        200..=299 if f.creds > 0 && f.pending <= f.creds => {
            f.creds -= 1;
            ban::reset_auth(&key, cfg);
            trust::learned(&key, f.ext, cfg);
        }
        _ => {}
    }
    if let Some(p) = flow {
        f.pending = f.pending.saturating_sub(1);
        f.creds = f.creds.min(f.pending);
        f.register_invite = f.register_invite.min(f.pending);
        unsafe { *p = f };
    }
    Some(())
}

/// An authentication failure of the client `key` (the pending request `f`). A trusted source's
/// counts against its extension from it, and only when the request provably came from it (its
/// nonce was issued to it); an untrusted source's against it, and against the extension.
#[inline(always)]
fn failure(key: &[u8; 16], dst: &[u8; 16], f: &Flow, cfg: &Config) {
    if trust::is_trusted(key) {
        if f.nonce_ok == 0 {
            count(Reason::UnprovenFailures);
            trace(cfg, |t| t.verdict = Reason::UnprovenFailures as u32);
            return;
        }
        if f.ext != 0 {
            trust::pair_failure(key, dst, f.ext, cfg);
        }
        return;
    }
    ban::record_failure(key, dst, Failure::Auth, cfg, now());
    if f.ext != 0 {
        trust::ext_failure(f.ext, cfg);
    }
}

/// The nonce's hash of the challenge the PBX sends in this response (0: none).
#[inline(always)]
fn challenge(ctx: &TcContext, pkt: &parse::Packet) -> u64 {
    let off = (pkt.payload - ctx.data()) as u64;
    let total = ctx.len() as u64;
    let load = |to, size| unsafe {
        aya_ebpf::helpers::generated::bpf_skb_load_bytes(
            ctx.skb.skb as *const _,
            off as u32,
            to,
            size,
        )
    };
    match scratch::copy::<{ creds::CHALLENGE_SCAN as u64 }>(off, total, pkt.msg_len as u64, load) {
        Some(n) if n > 0 => creds::challenge_nonce(),
        _ => 0,
    }
}
