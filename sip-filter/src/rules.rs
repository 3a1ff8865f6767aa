//! Applying validated settings to a loaded dataplane: config map, allowlist, call rules,
//! scanner signatures and geo tables.
//!
//! Order matters: nothing that is blocked both before and after a reload may pass in between,
//! so new entries go in before the flags that enable them, and old ones leave after.
use std::collections::BTreeSet;

use anyhow::{Context as _, Result};
use aya::maps::lpm_trie::Key;
use ipnet::IpNet;

use crate::{
    addr::{lpm_to_net, net_to_lpm},
    allow::FROM_CONFIG,
    config::Settings,
    geo::GeoTable,
    geo_source,
    maps::Maps,
};

/// Writes `settings` into the dataplane's maps. `old_geo` is what the geo maps hold now; the
/// new geo table is returned so the next reload can apply the difference. Everything that can
/// fail on bad input (reading the geo database and zone files) happens before any map is touched.
pub fn apply(dp: &mut impl Maps, settings: &Settings, old_geo: &GeoTable) -> Result<GeoTable> {
    let geo_nets = geo_source::blocked_networks(&settings.geo).context("geo-blocking sources")?;
    let new_geo = GeoTable::build(geo_nets)?;

    let current = dp.config()?;
    let mut cfg = settings.dataplane_config();
    // Not from the file: CIDR bans come from the CLI, tracing from replay and the tests.
    cfg.ban_nets_active = current.ban_nets_active;
    cfg.trace = current.trace;

    // Allowlist: add the new config entries first, then drop config entries no longer listed.
    let wanted: BTreeSet<IpNet> = settings.allow.iter().map(|n| n.trunc()).collect();
    let mut allow = dp.allow()?;
    let existing: Vec<(u32, [u8; 16], u32)> = allow
        .iter()
        .filter_map(Result::ok)
        .map(|(k, v)| (k.prefix_len(), k.data(), v))
        .collect();
    for net in &wanted {
        let (len, key) = net_to_lpm(*net);
        let k = Key::new(len, key);
        if allow.get(&k, 0).is_err() {
            allow.insert(&k, FROM_CONFIG, 0)?;
        }
    }
    for (len, key, from) in &existing {
        if *from == FROM_CONFIG && !wanted.contains(&lpm_to_net(*len, *key)) {
            let _ = allow.remove(&Key::new(*len, *key));
        }
    }
    let allow_count = allow.keys().count();
    cfg.allow_active = u8::from(allow_count > 0 || !wanted.is_empty());

    // Call rules: entries first, then the flag (a reload keeps the old ones until then).
    let business = settings
        .calls
        .as_ref()
        .is_some_and(|c| c.schedule.is_business(jiff::Timestamp::now()));
    cfg.calls_active = u8::from(crate::calls::dataplane::apply(
        dp,
        settings.calls.as_ref(),
        business,
    )?);

    // Scanner signatures: the same order.
    cfg.scanners_active = u8::from(crate::scanners::apply(dp, &settings.scanners.user_agents)?);

    // Geo: while the tables change, keep the check on if either side blocks anything.
    cfg.geo_active = u8::from(!old_geo.is_empty() || !new_geo.is_empty());
    dp.set_config(&cfg)?;
    dp.geo_maps()?.apply(old_geo, &new_geo)?;
    cfg.geo_active = u8::from(!new_geo.is_empty());
    dp.set_config(&cfg)?;
    Ok(new_geo)
}
