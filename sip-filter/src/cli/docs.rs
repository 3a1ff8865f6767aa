//! `completions` and `man`: generated from the clap definitions, so they never drift from the
//! commands they describe.
use std::path::Path;

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
pub fn man(subcommand: Option<&str>, dir: Option<&Path>) -> Result<()> {
    if let Some(dir) = dir {
        return man_dir(dir);
    }
    let page = page(subcommand)?;
    render(page, &mut std::io::stdout().lock())
}

fn page(subcommand: Option<&str>) -> Result<clap::Command> {
    let top = Cli::command();
    Ok(match subcommand {
        None => top,
        Some(name) => {
            let sub = top
                .find_subcommand(name)
                .with_context(|| format!("no subcommand {name:?} (see `sip-filter --help`)"))?
                .clone();
            sub.name(format!("sip-filter-{name}"))
                .bin_name(format!("sip-filter {name}"))
        }
    })
}

fn render(cmd: clap::Command, out: &mut impl std::io::Write) -> Result<()> {
    clap_mangen::Man::new(cmd).section("8").render(out)?;
    Ok(())
}

/// Every page, sip-filter.8 and sip-filter-NAME.8 for each subcommand, into `dir` (packaging).
fn man_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let subs: Vec<String> = Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    let pages = std::iter::once(None).chain(subs.iter().map(|s| Some(s.as_str())));
    for sub in pages {
        let file = match sub {
            None => "sip-filter.8".to_string(),
            Some(s) => format!("sip-filter-{s}.8"),
        };
        let path = dir.join(&file);
        let mut f =
            std::fs::File::create(&path).with_context(|| format!("writing {}", path.display()))?;
        render(page(sub)?, &mut f)?;
        println!("{}", path.display());
    }
    Ok(())
}
