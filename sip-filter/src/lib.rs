//! sip-filter userspace: loading the dataplane and managing its maps.
pub mod addr;
pub mod clock;
pub mod dataplane;
pub mod geo;

/// The eBPF object built by build.rs (XDP + TC programs and their maps).
pub const EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sip-filter"));
