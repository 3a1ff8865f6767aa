//! `geo lookup`.
use std::{net::IpAddr, path::PathBuf};

use anyhow::Result;
use clap::Subcommand;
use sip_filter::{
    allow,
    config::Settings,
    geo_source,
    maps::{Maps as _, Pinned},
    pins,
};

use super::default_config;

#[derive(Subcommand)]
pub enum GeoCmd {
    /// Country of an address and the filter's verdict, with why.
    Lookup {
        addr: IpAddr,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

pub fn geo(iface: Option<&str>, cmd: GeoCmd) -> Result<()> {
    let GeoCmd::Lookup { addr: ip, config } = cmd;
    let settings = match default_config(config) {
        Some(p) => Settings::load(&p)?,
        None => Settings::default(),
    };
    let v = geo_source::lookup(&settings.geo, ip)?;
    let country = v.country.as_deref().unwrap_or("unknown");
    let net = v.network.map(|n| format!(" ({n})")).unwrap_or_default();
    println!("{ip}: country {country}{net}");
    println!(
        "configuration: {} — {}",
        if v.blocked { "blocked" } else { "not blocked" },
        v.why
    );
    if let Some(n) = settings.allow.iter().find(|n| n.contains(&ip)) {
        println!("allowlisted by {n} in the configuration: the allowlist beats geo-blocking");
    }
    // What the running filter does right now, if there is one.
    if let Ok(iface) = pins::resolve_iface(iface)
        && let Ok(mut maps) = Pinned::open(&pins::dir(&iface))
    {
        let blocks = maps.geo_table()?.blocks(ip);
        let verdict = match (blocks, allow::covers(&mut maps, ip)?) {
            (_, true) => "passes (allowlisted)",
            (true, false) => "drops it (geo-blocked)",
            (false, false) => "does not geo-block it",
        };
        println!("running filter on {iface}: {verdict}");
    }
    Ok(())
}
