//! `ban add|del|list|flush`.
use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;
use sip_filter::bans;

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
    /// Bans in force.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Lift every ban.
    Flush,
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
        BanCmd::List { json } => {
            let (_, mut maps) = open(iface)?;
            let list = bans::list(&mut maps)?;
            if json {
                print_json(&list)?;
            } else if list.is_empty() {
                println!("no bans");
            } else {
                println!(
                    "{:<28} {:<15} {:>8} {:<21} {:>10}  note",
                    "address", "reason", "failures", "created", "expires in"
                );
                for b in list {
                    let exp = b
                        .expires_in_secs
                        .map(|s| humantime::format_duration(Duration::from_secs(s)).to_string())
                        .unwrap_or_else(|| "never".into());
                    println!(
                        "{:<28} {:<15} {:>8} {:<21} {:>10}  {}",
                        b.addr,
                        b.reason,
                        b.failures,
                        b.created,
                        exp,
                        b.note.unwrap_or_default()
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
