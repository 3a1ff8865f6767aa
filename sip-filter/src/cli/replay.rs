//! `replay`: a capture through private copies of the programs.
use std::{net::IpAddr, path::PathBuf};

use anyhow::Result;
use sip_filter::{config::Settings, privilege, replay};

#[derive(clap::Args)]
pub struct ReplayArgs {
    capture: PathBuf,
    /// The PBX's address(es): its packets go through the egress program.
    #[arg(long, required = true)]
    pbx: Vec<IpAddr>,
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

pub fn replay(args: ReplayArgs) -> Result<()> {
    privilege::require_root("replay (it loads the programs into the kernel to run them)")?;
    let settings = match args.config {
        Some(p) => Settings::load(&p)?,
        None => Settings::default(),
    };
    let opts = replay::ReplayOptions {
        capture: args.capture,
        pbx: args.pbx,
        settings,
        json: args.json,
    };
    let mut out = std::io::stdout().lock();
    replay::run(&opts, &mut out)?;
    Ok(())
}
