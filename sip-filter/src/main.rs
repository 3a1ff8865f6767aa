//! `sip-filter`: the daemon and the operator's command line.
mod cli;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::dispatch(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sip-filter: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
