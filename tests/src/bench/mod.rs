//! `cargo xtask bench`: the benchmarks of issue 5, measured side by side in one run and written to
//! `bench/RESULTS.md` and `bench/results.json`.
//!
//! The machine is small (2 cores) and shared, so absolute figures drift from run to run. Every
//! figure is therefore measured in several rounds, and in each round every variant of a part runs
//! once, in an order that rotates from round to round ([`interleave`]); a ratio is always taken
//! between two figures of the same round, so a slow minute slows both sides of it.
//!
//! Parts:
//! 1. cost per packet with BPF_PROG_TEST_RUN ([`cost`]),
//! 2. drop under flood on a veth pair, XDP against nftables and iptables ([`flood`]),
//! 3. guesses before the ban, sip-filter against fail2ban, and 4. shielding the PBX under a
//!    SIPp flood, both in the lab (Kamailio, SIPVicious, SIPp: [`lab_parts`]),
//! 5. scale: map memory at 1M tracked sources and 500k geo prefixes, cost growth ([`scale`]).
pub mod cost;
pub mod flood;
pub mod inputs;
pub mod lab_parts;
pub mod machine;
pub mod model;
pub mod netctx;
pub mod rawbpf;
pub mod report;
pub mod scale;
pub mod stats;

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, Result};

pub use model::{Goal, Part, Row, Table};

/// How much work each part does. [`Profile::full`] is what `bench/RESULTS.md` comes from;
/// [`Profile::quick`] keeps every row but shrinks repeats, rounds and maps so the test suite can
/// run it (in a debug build) in well under five minutes.
#[derive(Clone, Debug)]
pub struct Profile {
    pub name: &'static str,
    /// Interleaved rounds per figure.
    pub rounds: usize,
    /// BPF_PROG_TEST_RUN repeats per warm-cache figure and round.
    pub repeat: u32,
    /// Distinct packets (sources) per cold-cache figure and round.
    pub cold_sources: usize,
    /// Geo prefixes loaded for the "0", "1k", "100k" and "500k" figures.
    pub geo_sizes: [usize; 4],
    /// Tracked sources (FLOWS and FAILURES entries) for part 5.
    pub tracked: usize,
    /// Bans held in BANS for part 5 (its default capacity is 262,144).
    pub bans: usize,
    /// Length of one flood in part 2, seconds.
    pub flood_secs: f64,
    /// Toll-fraud rules in the big call-rule table of part 1 (besides the 10 of the small one).
    pub call_rules: usize,
    /// Shared-blocklist decisions applied per round in part 5.
    pub decisions: usize,
}

impl Profile {
    pub fn full() -> Self {
        Self {
            name: "full",
            rounds: 9,
            repeat: 1_000_000,
            cold_sources: 100_000,
            geo_sizes: [0, 1_000, 100_000, 500_000],
            tracked: 1_000_000,
            bans: 250_000,
            flood_secs: 5.0,
            call_rules: 100_000,
            decisions: 100_000,
        }
    }

    pub fn quick() -> Self {
        Self {
            name: "quick",
            rounds: 3,
            repeat: 100_000,
            cold_sources: 5_000,
            geo_sizes: [0, 1_000, 10_000, 50_000],
            tracked: 50_000,
            bans: 20_000,
            flood_secs: 0.4,
            call_rules: 5_000,
            decisions: 2_000,
        }
    }
}

/// What to run and where to write it.
#[derive(Clone, Debug)]
pub struct Options {
    pub profile: Profile,
    /// Directory that receives RESULTS.md and results.json.
    pub out_dir: PathBuf,
    /// Parts to run (1 to 5); the others are reported as not run.
    pub parts: Vec<u8>,
}

impl Options {
    /// A full run of every part into `bench/` (the committed results).
    pub fn full() -> Self {
        Self {
            profile: Profile::full(),
            out_dir: repo_bench_dir(),
            parts: ALL_PARTS.to_vec(),
        }
    }

    /// A quick run of every part into `bench/quick/` (ignored by git), so that a quick run never
    /// overwrites the committed results.
    pub fn quick() -> Self {
        Self {
            profile: Profile::quick(),
            out_dir: repo_bench_dir().join("quick"),
            parts: ALL_PARTS.to_vec(),
        }
    }
}

pub const ALL_PARTS: [u8; 5] = [1, 2, 3, 4, 5];

/// `bench/` at the repository root.
pub fn repo_bench_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .join("bench")
}

/// What a run produced: every part (measured or missing) and where the report went.
pub struct Outcome {
    pub parts: Vec<Part>,
    pub results_md: PathBuf,
    pub results_json: PathBuf,
}

impl Outcome {
    /// Parts that were asked for and failed, other than those waiting for the lab.
    pub fn failed(&self) -> Vec<&Part> {
        self.parts
            .iter()
            .filter(|p| p.error.is_some() && !p.awaits_lab())
            .collect()
    }
}

/// Runs the selected parts and writes the report. A part that fails is reported as missing with
/// its error (never with made-up numbers); the caller decides whether that fails the run.
pub fn run(opts: &Options) -> Result<Outcome> {
    let start = Instant::now();
    let p = &opts.profile;
    let machine = machine::Machine::probe();
    eprintln!(
        "bench: {} run ({} rounds), parts {:?}, on {} ({} cores), kernel {}",
        p.name, p.rounds, opts.parts, machine.cpu, machine.cores, machine.kernel
    );
    let mut parts = Vec::new();
    for n in ALL_PARTS {
        let (title, f): (&str, fn(&Profile) -> Result<Part>) = match n {
            1 => (cost::TITLE, cost::run),
            2 => (flood::TITLE, flood::run),
            3 => (lab_parts::TITLE_3, lab_parts::part3),
            4 => (lab_parts::TITLE_4, lab_parts::part4),
            _ => (scale::TITLE, scale::run),
        };
        if !opts.parts.contains(&n) {
            parts.push(Part::missing(
                n,
                title,
                "not selected in this run (--parts)",
            ));
            continue;
        }
        let t = Instant::now();
        eprintln!("bench: part {n}: {title}");
        let part = match f(p) {
            Ok(mut part) => {
                part.secs = t.elapsed().as_secs_f64();
                part
            }
            Err(e) => {
                let msg = format!("{e:#}");
                if msg.contains(lab_parts::NEEDS_LAB) {
                    eprintln!("bench: part {n}: not measured: {msg}");
                } else {
                    eprintln!("bench: part {n} failed: {msg}");
                }
                let mut part = Part::missing(n, title, &msg);
                part.secs = t.elapsed().as_secs_f64();
                part
            }
        };
        eprintln!("bench: part {n} done in {:.1}s", part.secs);
        parts.push(part);
        if netctx::interrupted() {
            anyhow::bail!("interrupted (nothing written)");
        }
    }
    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("creating {}", opts.out_dir.display()))?;
    let total = start.elapsed().as_secs_f64();
    let results_md = opts.out_dir.join("RESULTS.md");
    let results_json = opts.out_dir.join("results.json");
    let rep = report::Report {
        machine: &machine,
        profile: p,
        parts: &parts,
        total_secs: total,
    };
    std::fs::write(&results_json, rep.json_string()?)
        .with_context(|| format!("writing {}", results_json.display()))?;
    std::fs::write(&results_md, rep.markdown())
        .with_context(|| format!("writing {}", results_md.display()))?;
    eprintln!(
        "bench: wrote {} and {} in {total:.0}s",
        results_md.display(),
        results_json.display()
    );
    Ok(Outcome {
        parts,
        results_md,
        results_json,
    })
}

/// Runs `variants` for `rounds` rounds. In round `r` the variants run in the order
/// `r, r+1, ..., r-1` (rotated), so that no variant always runs first (cold) or right after a
/// given neighbour. Returns, per variant, one measurement per round.
pub fn interleave<V, T>(
    variants: &mut [V],
    rounds: usize,
    mut measure: impl FnMut(&mut V) -> Result<T>,
) -> Result<Vec<Vec<T>>> {
    let n = variants.len();
    let mut out: Vec<Vec<T>> = (0..n).map(|_| Vec::with_capacity(rounds)).collect();
    for r in 0..rounds {
        for k in 0..n {
            let i = (r + k) % n;
            out[i].push(measure(&mut variants[i])?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleave_rotates() {
        let mut order = Vec::new();
        let mut v = [0usize, 1, 2];
        let out = interleave(&mut v, 3, |x| {
            order.push(*x);
            Ok(*x * 10)
        })
        .unwrap();
        assert_eq!(order, [0, 1, 2, 1, 2, 0, 2, 0, 1]);
        assert_eq!(out, vec![vec![0; 3], vec![10; 3], vec![20; 3]]);
    }
}
