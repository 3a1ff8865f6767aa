//! `ban add|del|list|flush`.
use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;
use sip_filter::{bans, config::Settings, ledger, pidfile, state};

use super::{open, print_json};

#[derive(Subcommand)]
pub enum BanCmd {
    /// Ban an address, an IPv6 prefix or a CIDR.
    Add {
        target: String,
        /// How long (e.g. 30m, 2h, 7d); permanent if omitted.
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// A note kept with the ban (shown by `ban list`; 32 bytes are kept).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Lift a ban (and forget the source's failure count).
    Del { target: String },
    /// Ban every address or CIDR of a list file: JSON (an array, or APIBAN's
    /// `{"ipaddress": [...]}`) or plain text, one per line, `#` comments.
    Import {
        file: std::path::PathBuf,
        /// How long (e.g. 7d); permanent if omitted.
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// A note kept with each ban (32 bytes are kept).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Bans in force.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Lift every ban.
    Flush,
    /// A source's ban history from the state file, and its ban in force.
    Show {
        target: String,
        #[arg(long)]
        json: bool,
    },
}

/// The state file of the filter on `iface`: where its daemon said it keeps it, else where the
/// default configuration puts it.
pub(super) fn state_file(iface: &str) -> std::path::PathBuf {
    pidfile::state_path(iface).unwrap_or_else(|| {
        let dir = super::default_config(None)
            .and_then(|p| Settings::load(&p).ok())
            .map(|s| s.state.dir)
            .unwrap_or_else(|| state::DEFAULT_DIR.into());
        state::path(&dir, iface)
    })
}

pub fn ban(iface: Option<&str>, cmd: BanCmd) -> Result<()> {
    match cmd {
        BanCmd::Add {
            target,
            duration,
            reason,
        } => {
            let t = bans::parse_target(&target)?;
            let (_, mut maps) = open(iface)?;
            let banned = bans::add(&mut maps, t, duration, &reason)?;
            match duration {
                Some(d) => println!("banned {banned} for {}", humantime::format_duration(d)),
                None => println!("banned {banned} permanently"),
            }
        }
        BanCmd::Del { target } => {
            let t = bans::parse_target(&target)?;
            let (_, mut maps) = open(iface)?;
            bans::del(&mut maps, t)?;
            println!("unbanned {t}");
        }
        BanCmd::Import {
            file,
            duration,
            reason,
        } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let targets = bans::parse_list(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e:#}", file.display()))?;
            let (_, mut maps) = open(iface)?;
            let started = std::time::Instant::now();
            let n = bans::add_many(&mut maps, &targets, duration, &reason)?;
            println!(
                "banned {n} targets from {} {} in {:.2}s",
                file.display(),
                match duration {
                    Some(d) => format!("for {}", humantime::format_duration(d)),
                    None => "permanently".into(),
                },
                started.elapsed().as_secs_f64()
            );
        }
        BanCmd::List { json } => {
            let (iface, mut maps) = open(iface)?;
            let mut list = bans::list(&mut maps)?;
            let path = state_file(&iface);
            if path.exists()
                && let Err(e) = ledger::offences(&path, &mut list)
            {
                eprintln!("note: offences unknown, the state file is unreadable: {e:#}");
            }
            if json {
                print_json(&list)?;
            } else if list.is_empty() {
                println!("no bans");
            } else {
                println!(
                    "{:<28} {:<10} {:<15} {:<14} {:>8} {:>8} {:<21} {:>10}  note",
                    "address",
                    "kind",
                    "reason",
                    "origin",
                    "failures",
                    "offences",
                    "created",
                    "expires in"
                );
                for b in list {
                    let exp = b
                        .expires_in_secs
                        .map(|s| humantime::format_duration(Duration::from_secs(s)).to_string())
                        .unwrap_or_else(|| "never".into());
                    println!(
                        "{:<28} {:<10} {:<15} {:<14} {:>8} {:>8} {:<21} {:>10}  {}",
                        b.addr,
                        b.kind,
                        b.reason,
                        b.origin,
                        b.failures,
                        b.offences,
                        b.created,
                        exp,
                        b.note.unwrap_or_default()
                    );
                }
            }
        }
        BanCmd::Show { target, json } => {
            let t = bans::parse_target(&target)?;
            let (iface, mut maps) = open(iface)?;
            let now = bans::list(&mut maps)?;
            // The name the ban is kept under (an IPv6 address is banned with its prefix).
            let banned = bans::name_of(&mut maps, t)?;
            let current = now.into_iter().find(|e| e.addr == banned);
            let path = state_file(&iface);
            let history = if path.exists() {
                state::State::open_read_only(&path)?.history(&banned)?
            } else {
                Vec::new()
            };
            if json {
                print_json(&serde_json::json!({
                    "addr": banned,
                    "banned": current,
                    "history": history,
                }))?;
                return Ok(());
            }
            match &current {
                Some(b) => println!(
                    "{banned}: banned ({}, {} failures), {}",
                    b.reason,
                    b.failures,
                    b.expires_in_secs
                        .map(|s| format!(
                            "expires in {}",
                            humantime::format_duration(Duration::from_secs(s))
                        ))
                        .unwrap_or_else(|| "permanent".into())
                ),
                None => println!("{banned}: not banned"),
            }
            if history.is_empty() {
                println!("no bans remembered in {}", path.display());
            } else {
                println!("{} bans remembered in {}:", history.len(), path.display());
                println!(
                    "  {:<21} {:<15} {:<10} {:>8} {:>7} {:<21} {:<21}  note",
                    "created", "reason", "origin", "failures", "offence", "expires", "ended"
                );
                for r in history {
                    println!(
                        "  {:<21} {:<15} {:<10} {:>8} {:>7} {:<21} {:<21}  {}",
                        state::format_ms(r.created_ms),
                        r.reason,
                        r.origin,
                        r.failures,
                        r.offence,
                        r.expires_ms
                            .map(state::format_ms)
                            .unwrap_or_else(|| "never".into()),
                        match (r.lifted_ms, r.lifted_by) {
                            (Some(ms), Some(by)) => format!("{} {by}", state::format_ms(ms)),
                            _ => "in force".into(),
                        },
                        r.note.unwrap_or_default()
                    );
                }
            }
        }
        BanCmd::Flush => {
            let (_, mut maps) = open(iface)?;
            let n = bans::flush(&mut maps)?;
            println!("lifted {n} bans");
        }
    }
    Ok(())
}
