//! Test support for sip-filter: packet and SIP builders, and a BPF_PROG_TEST_RUN harness.
pub mod bench;
pub mod filter;
pub mod harness;
pub mod lab;
pub mod mmdb;
pub mod netns;
pub mod packet;
pub mod pcap;
pub mod responder;
pub mod sip;
