//! The allowlist as an operator sees it: trunks and offices that are never dropped or banned.
//! Entries come from the configuration file (they follow it on reload) or from `allow add`
//! (they stay until `allow del`).
use anyhow::{Context as _, Result, anyhow};
use aya::maps::lpm_trie::Key;
use ipnet::IpNet;
use serde::Serialize;

use crate::{
    addr::{lpm_to_net, net_to_lpm},
    maps::Maps,
};

/// `ALLOW` values: where an entry came from.
pub const FROM_CONFIG: u32 = 1;
pub const FROM_CLI: u32 = 2;

/// One allowlist entry, as `allow list` shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Entry {
    pub cidr: String,
    /// "config" or "cli".
    pub source: &'static str,
}

/// Allows `net` from the command line and turns the kernel's allowlist check on.
pub fn add(maps: &mut impl Maps, net: IpNet) -> Result<()> {
    let (len, k) = net_to_lpm(net);
    maps.allow()?
        .insert(&Key::new(len, k), FROM_CLI, 0)
        .context("allowlist full?")?;
    maps.update_config(|c| c.allow_active = 1)
}

/// Removes `net`. Returns where it came from ([`FROM_CONFIG`]: a reload brings it back).
pub fn del(maps: &mut impl Maps, net: IpNet) -> Result<u32> {
    let (len, k) = net_to_lpm(net);
    let mut m = maps.allow()?;
    let from = m
        .get(&Key::new(len, k), 0)
        .map_err(|_| anyhow!("{net} is not in the allowlist"))?;
    m.remove(&Key::new(len, k))?;
    Ok(from)
}

/// Every entry, sorted.
pub fn list(maps: &mut impl Maps) -> Result<Vec<Entry>> {
    let mut v: Vec<Entry> = maps
        .allow()?
        .iter()
        .filter_map(Result::ok)
        .map(|(k, from)| Entry {
            cidr: lpm_to_net(k.prefix_len(), k.data()).to_string(),
            source: if from == FROM_CONFIG { "config" } else { "cli" },
        })
        .collect();
    v.sort_by(|a, b| a.cidr.cmp(&b.cidr));
    Ok(v)
}

/// Does the running allowlist hold an entry covering `ip`?
pub fn covers(maps: &mut impl Maps, ip: std::net::IpAddr) -> Result<bool> {
    let (len, k) = net_to_lpm(IpNet::from(ip));
    Ok(maps.allow()?.get(&Key::new(len, k), 0).is_ok())
}
