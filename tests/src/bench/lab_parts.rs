//! Parts 3 and 4 need the lab (Kamailio, SIPVicious and SIPp in namespaces, `tests::lab`), which
//! is being built separately. Until it lands they fail with [`NEEDS_LAB`], and the report lists
//! their rows as missing: no number is ever made up for them.
//!
//! To fill them in: build the lab from `tests::lab`, measure, and return a [`Part`] whose rows
//! carry the ids listed in `expected_rows` below (the report and `tests/bench_quick.rs` key on
//! them). Both must run every variant once per round, in rotating order, like the other parts
//! ([`crate::bench::interleave`]).
use anyhow::{Result, bail};

use crate::bench::{Profile, model::Part};

/// The error both parts return until the lab exists.
pub const NEEDS_LAB: &str = "needs the lab (tests::lab)";

pub const TITLE_3: &str = "Guesses before the ban: sip-filter against fail2ban";
pub const TITLE_4: &str = "Shielding the PBX under a SIPp flood";

/// Rows part 3 will produce: svcrack against the lab's Kamailio protected by (a) sip-filter,
/// (b) Debian's fail2ban with a jail on Kamailio's authentication-failure log lines and its
/// nftables action, (c) nothing.
pub const ROWS_3: &[&str] = &[
    "p3.guesses.{sip_filter,fail2ban,none}: guesses that reached the PBX",
    "p3.after_threshold.{sip_filter,fail2ban,none}: guesses that reached it after the threshold \
     (goal: 0 for sip-filter)",
    "p3.time_to_drop.{sip_filter,fail2ban}: time from the threshold to the first dropped packet",
];

/// Rows part 4 will produce: SIPp floods from banned and geo-blocked sources at the highest
/// rate the machine generates, with and without sip-filter.
pub const ROWS_4: &[&str] = &[
    "p4.register_success.{with,without}: legitimate registrations that succeed",
    "p4.register_latency.{with,without}: their latency (median, p99)",
    "p4.kamailio_cpu.{with,without}: Kamailio's CPU",
];

/// Part 3. Fails until `tests::lab` exists.
pub fn part3(_p: &Profile) -> Result<Part> {
    bail!("{NEEDS_LAB}: Kamailio with digest auth, svcrack and fail2ban in namespaces")
}

/// Part 4. Fails until `tests::lab` exists.
pub fn part4(_p: &Profile) -> Result<Part> {
    bail!("{NEEDS_LAB}: Kamailio, SIPp load and flood generators in namespaces")
}

/// The rows a part will produce, for the report of a missing part.
pub fn expected_rows(part: u8) -> &'static [&'static str] {
    match part {
        3 => ROWS_3,
        4 => ROWS_4,
        _ => &[],
    }
}
