//! XDP ingress verdict: allowlist, ban, geo, then SIP request inspection.
use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    helpers::generated::{bpf_xdp_get_buff_len, bpf_xdp_load_bytes},
    programs::XdpContext,
};
use sip_filter_common::{BAN_SCOPE_ALL, Config, Flow, FlowKey, SCAN_BUF, creds, method, stat};

use crate::{
    ban, geo,
    maps::{FLOWS, SCRATCH, config, count},
    parse::{
        self, IPPROTO_TCP, IPPROTO_UDP, Packet, Skip,
        sip::{self, Start},
    },
};

#[inline(always)]
pub fn is_sip_port(cfg: &Config, port: u16) -> bool {
    let mut hit = false;
    for i in 0..cfg.ports.len() {
        if i < cfg.nports as usize && cfg.ports[i] == port {
            hit = true;
        }
    }
    hit
}

/// Does a ban (or geo block) apply to this packet? Scope "all" covers everything from the
/// source; scope "sip" covers SIP over UDP and TCP on the SIP ports and the TLS port.
#[inline(always)]
fn in_scope(cfg: &Config, p: &Packet) -> bool {
    if cfg.ban_scope == BAN_SCOPE_ALL {
        return true;
    }
    if !p.has_ports {
        return false;
    }
    match p.proto {
        IPPROTO_UDP => is_sip_port(cfg, p.dport),
        IPPROTO_TCP => p.dport == cfg.tls_port || is_sip_port(cfg, p.dport),
        _ => false,
    }
}

#[inline(always)]
fn verdict(stat_index: u32, action: u32) -> u32 {
    count(stat_index);
    action
}

pub fn run(ctx: &XdpContext) -> u32 {
    count(stat::SEEN);
    let Some(cfg) = config() else {
        return XDP_PASS;
    };
    let pkt = match parse::packet(ctx.data(), ctx.data_end()) {
        Ok(p) => p,
        Err(Skip::NotIp) => return verdict(stat::PASSED, XDP_PASS),
        Err(Skip::Malformed) => return verdict(stat::MALFORMED, XDP_PASS),
    };
    if !pkt.has_ports && pkt.proto == IPPROTO_UDP {
        count(stat::NON_FIRST_FRAGMENT);
    }
    let key = ban::source_key(&pkt.src, pkt.is_v6, cfg);

    // The ban lookup comes first because it is the hot path under attack; the allowlist still
    // wins, it is only consulted after a hit.
    if ban::is_banned(&key, &pkt.src, cfg) && in_scope(cfg, &pkt) {
        if ban::is_allowed(&pkt.src, cfg) {
            return verdict(stat::ALLOWLISTED, XDP_PASS);
        }
        return verdict(stat::DROPPED_BANNED, XDP_DROP);
    }
    if ban::is_allowed(&pkt.src, cfg) {
        return verdict(stat::ALLOWLISTED, XDP_PASS);
    }
    if cfg.geo_active != 0 && in_scope(cfg, &pkt) && geo::blocked(&pkt.src, pkt.is_v6) {
        return verdict(stat::DROPPED_GEO, XDP_DROP);
    }
    if pkt.proto == IPPROTO_UDP && pkt.has_ports && is_sip_port(cfg, pkt.dport) {
        inspect_request(ctx, &pkt);
    }
    verdict(stat::PASSED, XDP_PASS)
}

/// Records the method of a SIP request and whether it carries credentials, for the egress
/// program to judge the PBX's answer.
#[inline(always)]
fn inspect_request(ctx: &XdpContext, pkt: &Packet) {
    let p = pkt.payload;
    if p + 8 > ctx.data_end() {
        count(stat::NON_SIP_ON_SIP_PORT);
        return;
    }
    let first8 = unsafe { core::ptr::read_unaligned(p as *const u64) };
    let method = match sip::start(first8) {
        Start::Request(m) => m,
        // Answers to the PBX's own requests (trunks, phones): nothing to track.
        Start::Response => return,
        Start::Other => {
            count(stat::NON_SIP_ON_SIP_PORT);
            return;
        }
    };
    count(stat::REQ_BASE + method as u32);
    let creds = scan(ctx, pkt);
    match creds {
        creds::PRESENT => count(stat::REQ_WITH_CREDS),
        creds::UNKNOWN => count(stat::REQ_CREDS_UNKNOWN),
        _ => {}
    }
    let k = FlowKey {
        addr: pkt.src,
        port: pkt.sport,
        _pad: [0; 2],
    };
    let with_creds = u8::from(creds != creds::NONE);
    let reg_inv = u8::from(method == method::REGISTER || method == method::INVITE);
    // Re-registering phones and guessing scanners reuse their socket: updating in place costs a
    // lookup, where an LRU insert costs several times more. A full map evicts the oldest client,
    // which only forgets its pending requests.
    match FLOWS.get_ptr_mut(k) {
        Some(f) => unsafe {
            (*f).pending = (*f).pending.saturating_add(1);
            (*f).creds = (*f).creds.saturating_add(with_creds);
            (*f).reg_inv = (*f).reg_inv.saturating_add(reg_inv);
        },
        None => {
            let f = Flow {
                pending: 1,
                creds: with_creds,
                reg_inv,
                _pad: [0; 5],
            };
            let _ = FLOWS.insert(k, f, 0);
        }
    }
}

/// Copies up to `SCAN_BUF` bytes of the message to the per-CPU scratch buffer and scans them.
#[inline(always)]
fn scan(ctx: &XdpContext, pkt: &Packet) -> u8 {
    let Some(buf) = SCRATCH.get_ptr_mut(0) else {
        return creds::UNKNOWN;
    };
    let buf = buf as *mut u8;
    let off = (pkt.payload - ctx.data()) as u64;
    let total = unsafe { bpf_xdp_get_buff_len(ctx.ctx) };
    if total <= off {
        return creds::UNKNOWN;
    }
    // Sizes are computed in u64 and clamped on one register so the 6.1 verifier sees both
    // bounds of the helper's length argument (field notes, pitfalls 1 and 2).
    let avail = total - off;
    let msg = pkt.udp_payload_len as u64;
    let want = if msg < avail { msg } else { avail };
    if want == 0 {
        return creds::NONE;
    }
    let buf_len = SCAN_BUF as u64;
    let clamped = if want >= buf_len { buf_len } else { want };
    // LLVM would prove the mask below redundant and drop it; read through a volatile so that
    // the instructions the 6.1 verifier needs to bound the length on one register stay.
    let opaque = unsafe { core::ptr::read_volatile(&clamped) };
    let size = ((opaque - 1) & (buf_len - 1)) + 1;
    let truncated = pkt.first_fragment || msg > size;
    let rc = unsafe { bpf_xdp_load_bytes(ctx.ctx, off as u32, buf.cast(), size as u32) };
    if rc != 0 {
        return creds::UNKNOWN;
    }
    // Whatever an earlier packet left past the message must not be read as part of this one.
    // Word stores: a byte loop here compiles to a call to a byte-at-a-time memset.
    for i in 0..sip::ZERO_TAIL / 8 {
        unsafe { core::ptr::write_unaligned(buf.add(size as usize + 8 * i) as *mut u64, 0) };
    }
    sip::scan_credentials(buf, size, truncated)
}
