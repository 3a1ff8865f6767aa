//! Which packets the configuration's rules cover, shared by both programs.
use sip_filter_common::{BAN_SCOPE_ALL, Config};

use crate::parse::{IPPROTO_TCP, IPPROTO_UDP, Packet};

/// Is `port` one of the configured SIP ports?
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
pub fn in_scope(cfg: &Config, p: &Packet) -> bool {
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

/// Is this a SIP message to a SIP port, which the ingress program inspects: UDP, or a TCP
/// segment with data (plain SIP over TCP; TLS is judged by address only)?
#[inline(always)]
pub fn is_sip_request_port(cfg: &Config, p: &Packet) -> bool {
    (p.proto == IPPROTO_UDP || (p.proto == IPPROTO_TCP && p.msg_len > 0))
        && p.has_ports
        && is_sip_port(cfg, p.dport)
}
