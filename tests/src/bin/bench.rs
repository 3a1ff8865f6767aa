//! `cargo xtask bench [--quick] [--parts 1,2,5] [--rounds N] [--out DIR]`: the benchmarks of
//! issue 5 (see `tests::bench`). Needs root, like the rest of the test suite.
use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result, bail};
use tests::bench::{self, ALL_PARTS, Options};

const USAGE: &str = "\
usage: bench [--quick] [--parts LIST] [--rounds N] [--out DIR]

  --quick        every row, with fewer rounds and repeats and smaller maps (under 5 minutes);
                 writes bench/quick/ unless --out is given
  --parts LIST   comma-separated parts to run (default 1,2,3,4,5); a partial run writes
                 bench/partial/ unless --out is given, so bench/RESULTS.md only ever comes
                 from a full run
  --rounds N     interleaved rounds per figure (default 9, quick 3; at least 5 for results
                 worth quoting); like --parts, moves the default output to bench/partial/
  --out DIR      where RESULTS.md and results.json go
";

fn parse() -> Result<Option<Options>> {
    let mut quick = false;
    let mut out: Option<PathBuf> = None;
    let mut parts: Option<Vec<u8>> = None;
    let mut rounds: Option<usize> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--out" => out = Some(args.next().context("--out needs a directory")?.into()),
            "--parts" => {
                let list = args.next().context("--parts needs a list, e.g. 1,2,5")?;
                let v = list
                    .split(',')
                    .map(|p| p.trim().parse::<u8>())
                    .collect::<Result<Vec<_>, _>>()
                    .context("--parts: numbers from 1 to 5, comma-separated")?;
                if v.iter().any(|p| !ALL_PARTS.contains(p)) {
                    bail!("--parts: numbers from 1 to 5");
                }
                parts = Some(v);
            }
            "--rounds" => {
                let n: usize = args.next().context("--rounds needs a number")?.parse()?;
                if n == 0 {
                    bail!("--rounds must be at least 1");
                }
                rounds = Some(n);
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(None);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let mut opts = if quick {
        Options::quick()
    } else {
        Options::full()
    };
    let partial = parts.is_some() || rounds.is_some();
    if let Some(p) = parts {
        opts.parts = p;
    }
    if let Some(r) = rounds {
        opts.profile.rounds = r;
    }
    if let Some(o) = out {
        opts.out_dir = o;
    } else if partial && !quick {
        opts.out_dir = bench::repo_bench_dir().join("partial");
    }
    Ok(Some(opts))
}

fn main() -> ExitCode {
    let opts = match parse() {
        Ok(Some(o)) => o,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    match bench::run(&opts) {
        Ok(outcome) => {
            for p in outcome.parts.iter().filter(|p| p.awaits_lab()) {
                eprintln!(
                    "bench: part {} not measured: {}",
                    p.number,
                    p.error.as_deref().unwrap_or("")
                );
            }
            let failed = outcome.failed();
            let asked: Vec<_> = failed
                .iter()
                .filter(|p| opts.parts.contains(&p.number))
                .collect();
            if asked.is_empty() {
                ExitCode::SUCCESS
            } else {
                for p in asked {
                    eprintln!(
                        "bench: part {} failed: {}",
                        p.number,
                        p.error.as_deref().unwrap_or("")
                    );
                }
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
