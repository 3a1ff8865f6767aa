//! Test builders that need nothing from sip-filter: packets built field by field, SIP messages,
//! MaxMind DB country databases and pcap/pcapng captures. The `tests` crate re-exports them,
//! and sip-filter's unit tests use them as a dev-dependency.
pub mod mmdb;
pub mod packet;
pub mod pcap;
pub mod sip;
