//! `completions` and `man`: generated from the clap definitions, so they never drift from the
//! commands they describe.
use anyhow::{Context as _, Result};
use clap::CommandFactory as _;

use super::Cli;

pub fn completions(shell: clap_complete::Shell) -> Result<()> {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "sip-filter", &mut std::io::stdout());
    Ok(())
}

/// sip-filter(8) (the synopsis, every option, the list of subcommands), or with a subcommand
/// its own page, sip-filter-NAME(8), as the list refers to them.
pub fn man(subcommand: Option<&str>) -> Result<()> {
    let top = Cli::command();
    let cmd = match subcommand {
        None => top,
        Some(name) => {
            let sub = top
                .find_subcommand(name)
                .with_context(|| format!("no subcommand {name:?} (see `sip-filter --help`)"))?
                .clone();
            sub.name(format!("sip-filter-{name}"))
                .bin_name(format!("sip-filter {name}"))
        }
    };
    clap_mangen::Man::new(cmd)
        .section("8")
        .render(&mut std::io::stdout().lock())?;
    Ok(())
}
