//! The toll-fraud guard's policy: the dial plan, destination rules, business hours, and the
//! table they compile to for the dataplane. `sip-filter calls check` decides with it.
pub mod blocked;
pub mod dataplane;
pub mod dialplan;
pub mod high_risk;
pub mod holds;
pub mod rules;
pub mod schedule;
