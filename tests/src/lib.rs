//! Test support for sip-filter: a BPF_PROG_TEST_RUN harness, namespaces, the lab and the bench.
//! The packet, SIP, MaxMind DB and capture builders live in `testkit` and are re-exported here.
pub mod apiban;
pub mod bench;
pub mod crowdsec;
pub mod filter;
pub mod harness;
pub mod lab;
pub mod netns;
pub mod responder;

pub use testkit::{mmdb, packet, pcap, sip};
