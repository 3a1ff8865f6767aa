//! sip-filter dataplane: an XDP ingress program that drops banned, geo-blocked sources and notes
//! what each SIP request carries, and a TC egress program that reads the PBX's answers, counts
//! authentication failures and bans in the kernel at the threshold.
#![no_std]
#![no_main]

mod ban;
mod calls;
mod creds;
mod egress;
mod flood;
mod geo;
mod ingress;
mod maps;
mod parse;
mod policy;
mod scanners;
mod scratch;
mod trust;

use aya_ebpf::{
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

/// Frags-aware so that jumbo and multi-buffer frames reach us (and can be read with
/// `bpf_xdp_load_bytes`) instead of being refused by the driver.
#[xdp(frags)]
pub fn sip_xdp(ctx: XdpContext) -> u32 {
    ingress::run(&ctx)
}

/// The SIP request inspection, tail-called by `sip_xdp` (never attached).
#[xdp(frags)]
pub fn sip_inspect(ctx: XdpContext) -> u32 {
    ingress::inspect(&ctx)
}

/// The toll-fraud check of INVITEs and ACKs, tail-called by `sip_xdp` (never attached).
#[xdp(frags)]
pub fn sip_calls(ctx: XdpContext) -> u32 {
    ingress::calls_stage(&ctx)
}

/// The per-extension call limits, tail-called by `sip_inspect` (never attached).
#[xdp(frags)]
pub fn sip_limits(ctx: XdpContext) -> u32 {
    ingress::limits_stage(&ctx)
}

/// Benchmark baseline: what an XDP program that does nothing costs. Never attached.
#[xdp]
pub fn sip_pass(_ctx: XdpContext) -> u32 {
    aya_ebpf::bindings::xdp_action::XDP_PASS
}

/// Egress watches the PBX's answers; it drops only calls to trunks that a rule blocks.
#[classifier]
pub fn sip_tc(ctx: TcContext) -> i32 {
    egress::run(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
