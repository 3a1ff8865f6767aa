//! `allow add|del|list`.
use anyhow::Result;
use clap::Subcommand;
use sip_filter::{allow, bans};

use super::{open, print_json};

#[derive(Subcommand)]
pub enum AllowCmd {
    Add {
        cidr: String,
    },
    Del {
        cidr: String,
    },
    List {
        #[arg(long)]
        json: bool,
    },
}

pub fn allow(iface: Option<&str>, cmd: AllowCmd) -> Result<()> {
    match cmd {
        AllowCmd::Add { cidr } => {
            let net = bans::parse_target(&cidr)?;
            let (_, mut maps) = open(iface)?;
            allow::add(&mut maps, net)?;
            println!("allowed {net}");
        }
        AllowCmd::Del { cidr } => {
            let net = bans::parse_target(&cidr)?;
            let (_, mut maps) = open(iface)?;
            if allow::del(&mut maps, net)? == allow::FROM_CONFIG {
                println!(
                    "removed {net} (it is in the configuration file: a reload brings it back)"
                );
            } else {
                println!("removed {net}");
            }
        }
        AllowCmd::List { json } => {
            let (_, mut maps) = open(iface)?;
            let v = allow::list(&mut maps)?;
            if json {
                print_json(&v)?;
            } else if v.is_empty() {
                println!("allowlist is empty");
            } else {
                for e in v {
                    println!("{:<43} {}", e.cidr, e.source);
                }
            }
        }
    }
    Ok(())
}
