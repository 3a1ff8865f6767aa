//! `ext list` and `ext unlock`: locked extensions and extensions blocked from one source.
use anyhow::Result;
use clap::Subcommand;
use sip_filter::extensions;

use super::{open, print_json};

#[derive(Subcommand)]
pub enum ExtCmd {
    /// Extensions locked by failures from many untrusted sources (a botnet), and extensions
    /// blocked from one trusted source (a phone with a stale password behind the office's NAT).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Lifts an extension's lock and every block of it.
    Unlock {
        /// The extension (its digest username).
        extension: String,
    },
}

pub fn ext(iface: Option<&str>, cmd: ExtCmd) -> Result<()> {
    let (_, mut maps) = open(iface)?;
    match cmd {
        ExtCmd::List { json } => {
            let list = extensions::list(&mut maps)?;
            if json {
                return print_json(&list);
            }
            if list.is_empty() {
                println!("no extension locked or blocked");
            }
            for e in list {
                let whom = match &e.source {
                    Some(s) => format!("blocked from {s}"),
                    None => "locked".into(),
                };
                println!(
                    "{:<16} {:<28} {:>4} failures  until {} ({} s)",
                    e.extension, whom, e.failures, e.until, e.remaining_secs
                );
            }
        }
        ExtCmd::Unlock { extension } => {
            let n = extensions::unlock(&mut maps, &extension)?;
            if n == 0 {
                println!("{extension}: neither locked nor blocked");
            } else {
                println!("{extension}: unlocked ({n} lifted)");
            }
        }
    }
    Ok(())
}
