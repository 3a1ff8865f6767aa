//! sip-filter userspace: loading the dataplane and managing its maps.
pub mod addr;
pub mod allow;
pub mod attach;
pub mod bans;
pub mod calls;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod extensions;
pub mod geo;
pub mod geo_source;
pub mod iface;
pub mod ledger;
pub mod live;
pub mod maps;
pub mod metrics;
pub mod notify;
pub mod pidfile;
pub mod pins;
pub mod privilege;
pub mod replay;
pub mod rules;
pub mod scanners;
pub mod shared;
pub mod state;
pub mod upgrade;

/// The eBPF object built by build.rs (XDP + TC programs and their maps).
pub const EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sip-filter"));
