//! Test support for sip-filter: packet and SIP builders, and a BPF_PROG_TEST_RUN harness.
pub mod harness;
pub mod packet;
pub mod sip;
