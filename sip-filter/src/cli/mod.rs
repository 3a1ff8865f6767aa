//! The command line: one module per command family, each with its arguments and output.
//! The policy they apply lives in the library (`bans`, `allow`, `rules`, `geo_source`).
mod allow;
mod ban;
mod calls;
mod docs;
mod ext;
mod geo;
mod replay;
mod run;
mod stats;
mod top;

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Parser, Subcommand};
use sip_filter::{maps::Pinned, pins, privilege};

/// Default configuration file, used by `run` and `geo lookup` when it exists.
const DEFAULT_CONFIG: &str = "/etc/sip-filter/sip-filter.toml";

#[derive(Parser)]
#[command(
    name = "sip-filter",
    version,
    about = "XDP firewall for SIP: stops brute force, scanners and toll fraud before the PBX sees a packet"
)]
pub struct Cli {
    /// Interface whose filter a management command works on (default: the only one filtered).
    #[arg(long, global = true)]
    iface: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Attach the filter to an interface and run the daemon (logs bans, expires them, reloads on SIGHUP).
    Run(run::RunArgs),
    /// Remove the filter from an interface, with its pins (bans and counters are forgotten).
    Detach,
    /// Validate a configuration file without touching the running filter.
    CheckConfig { path: PathBuf },
    /// Manage bans.
    Ban {
        #[command(subcommand)]
        cmd: ban::BanCmd,
    },
    /// Manage the allowlist (trunks, offices: never dropped, never banned).
    Allow {
        #[command(subcommand)]
        cmd: allow::AllowCmd,
    },
    /// Locked extensions (`ext list`, `ext unlock EXT`).
    Ext {
        #[command(subcommand)]
        cmd: ext::ExtCmd,
    },
    /// Toll-fraud rules: `calls check NUMBER` shows what they decide.
    Calls {
        #[command(subcommand)]
        cmd: calls::CallsCmd,
    },
    /// Geo-blocking.
    Geo {
        #[command(subcommand)]
        cmd: geo::GeoCmd,
    },
    /// Packet and verdict counters.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Interface, mode, program ids, map fill levels and whether the daemon runs.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// A live view: packets and drops per second by reason, bans in force, the top sources by
    /// failures, the last bans (`q` quits).
    Top {
        /// Refresh interval.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
    },
    /// Run a pcap/pcapng capture through the filter's programs on private maps (like fail2ban-regex).
    Replay(replay::ReplayArgs),
    /// Print a shell completion script (e.g. `sip-filter completions bash > /etc/bash_completion.d/sip-filter`).
    Completions { shell: clap_complete::Shell },
    /// Print the manual page, sip-filter(8), in roff (`sip-filter man | man -l -`).
    Man {
        /// A subcommand's own page instead (`sip-filter man ban`: sip-filter-ban(8)).
        subcommand: Option<String>,
        /// Write every page into this directory instead (sip-filter.8, sip-filter-ban.8, ...).
        #[arg(long, conflicts_with = "subcommand")]
        dir: Option<PathBuf>,
    },
}

pub fn dispatch(cli: Cli) -> Result<()> {
    let iface = cli.iface.as_deref();
    match cli.cmd {
        Cmd::Run(args) => run::run(iface, args),
        Cmd::Detach => run::detach(iface),
        Cmd::CheckConfig { path } => run::check_config(&path),
        Cmd::Ban { cmd } => ban::ban(iface, cmd),
        Cmd::Allow { cmd } => allow::allow(iface, cmd),
        Cmd::Calls { cmd } => calls::calls(cmd),
        Cmd::Ext { cmd } => ext::ext(iface, cmd),
        Cmd::Geo { cmd } => geo::geo(iface, cmd),
        Cmd::Stats { json } => stats::stats(iface, json),
        Cmd::Status { json } => stats::status(iface, json),
        Cmd::Top { interval } => top::top(iface, interval),
        Cmd::Replay(args) => replay::replay(args),
        Cmd::Completions { shell } => docs::completions(shell),
        Cmd::Man { subcommand, dir } => docs::man(subcommand.as_deref(), dir.as_deref()),
    }
}

/// The configuration file given, or the default one if it exists.
fn default_config(given: Option<PathBuf>) -> Option<PathBuf> {
    given.or_else(|| {
        Path::new(DEFAULT_CONFIG)
            .exists()
            .then(|| PathBuf::from(DEFAULT_CONFIG))
    })
}

/// The pinned maps of the filter a management command works on.
fn open(iface: Option<&str>) -> Result<(String, Pinned)> {
    privilege::require_root("managing the filter")?;
    let iface = pins::resolve_iface(iface)?;
    let maps = Pinned::open(&pins::dir(&iface))?;
    Ok((iface, maps))
}

/// Prints `value` as pretty JSON.
fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
