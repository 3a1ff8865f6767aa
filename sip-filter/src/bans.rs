//! Bans as an operator sees them: add, delete, list, flush, and expiry.
use std::{net::IpAddr, time::Duration};

use anyhow::{Context as _, Result, bail};
use aya::maps::lpm_trie::Key;
use ipnet::IpNet;
use serde::Serialize;
use sip_filter_common::{Ban, BanReason};

use crate::{addr, clock, maps::Maps};

/// A ban target from the command line: one address or a CIDR.
pub fn parse_target(s: &str) -> Result<IpNet> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    s.parse::<IpNet>().map(|n| n.trunc()).map_err(|_| {
        anyhow::anyhow!(
            "{s:?} is neither an IP address nor a CIDR (e.g. 192.0.2.7 or 2001:db8::/64)"
        )
    })
}

/// Where a target lives: the exact-source hash (what the kernel bans) or the operator's CIDR trie.
enum Slot {
    Exact([u8; 16]),
    Net(u32, [u8; 16]),
}

fn slot(target: IpNet, v6_prefix: u8) -> Slot {
    match target {
        IpNet::V4(n) if n.prefix_len() == 32 => Slot::Exact(addr::to_key(IpAddr::V4(n.addr()))),
        IpNet::V6(n) if n.prefix_len() == v6_prefix || n.prefix_len() == 128 => {
            Slot::Exact(addr::ban_key(IpAddr::V6(n.addr()), v6_prefix))
        }
        n => {
            let (len, k) = addr::net_to_lpm(n);
            Slot::Net(len, k)
        }
    }
}

/// The IPv6 prefix length the filter bans by (from the running configuration).
pub fn v6_prefix(maps: &mut impl Maps) -> Result<u8> {
    Ok(maps
        .config()?
        .v6_mask
        .iter()
        .map(|b| b.count_ones() as u8)
        .sum())
}

fn note(text: &str) -> [u8; 32] {
    let mut n = [0u8; 32];
    let mut end = text.len().min(32);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    n[..end].copy_from_slice(&text.as_bytes()[..end]);
    n
}

/// Bans `target` for `duration` (None: permanent). Replaces an existing ban of the same target.
/// Returns what is banned: an IPv6 address is banned with its whole prefix (`ipv6_prefix`).
pub fn add(
    maps: &mut impl Maps,
    target: IpNet,
    duration: Option<Duration>,
    reason: &str,
) -> Result<String> {
    let now = clock::boot_ns();
    let expires = duration.map(|d| now + d.as_nanos() as u64).unwrap_or(0);
    let ban = Ban::manual(now, expires, note(reason));
    let v6 = v6_prefix(maps)?;
    let added = match slot(target, v6) {
        Slot::Exact(k) => {
            maps.bans()?
                .insert(k, ban, 0)
                .context("adding the ban (ban map full?)")?;
            Ok(exact_name(k, v6))
        }
        Slot::Net(len, k) => {
            maps.ban_nets()?
                .insert(&Key::new(len, k), ban, 0)
                .context("adding the CIDR ban (map full?)")?;
            maps.update_config(|c| c.ban_nets_active = 1)?;
            Ok(target.to_string())
        }
    };
    if added.is_ok() {
        maps.count(sip_filter_common::Reason::BansManual)?;
    }
    added
}

/// Lifts the ban on `target` and forgets its failures, so it is not banned again at once.
pub fn del(maps: &mut impl Maps, target: IpNet) -> Result<()> {
    let v6 = v6_prefix(maps)?;
    let removed = match slot(target, v6) {
        Slot::Exact(k) => {
            let _ = maps.failures()?.remove(&k);
            maps.bans()?.remove(&k).is_ok()
        }
        Slot::Net(len, k) => maps.ban_nets()?.remove(&Key::new(len, k)).is_ok(),
    };
    if !removed {
        bail!("{target} is not banned");
    }
    Ok(())
}

/// One ban, as `ban list` shows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Entry {
    /// Address, IPv6 prefix or CIDR.
    pub addr: String,
    /// `ban`, or `rate-limit` for the flood guard's temporary drops (`BanReason::kind`).
    pub kind: &'static str,
    pub reason: String,
    /// The operator's note (manual bans).
    pub note: Option<String>,
    pub failures: u32,
    /// RFC 3339.
    pub created: String,
    /// None for a permanent ban.
    pub expires_in_secs: Option<u64>,
    /// Bans of this source remembered, this one included (from the state file; 0 when the CLI
    /// cannot read it).
    pub offences: u32,
    #[serde(skip)]
    pub expires_ns: u64,
    #[serde(skip)]
    pub created_ns: u64,
}

pub fn entry(target: String, b: &Ban, now: u64) -> Entry {
    let why = BanReason::from_u8(b.reason);
    Entry {
        addr: target,
        kind: why.map_or("ban", BanReason::kind),
        reason: why.map_or("unknown", BanReason::as_str).to_string(),
        note: note_text(b),
        failures: b.failures,
        created: humantime::format_rfc3339_seconds(clock::to_wall(b.created_ns)).to_string(),
        expires_in_secs: (b.expires_ns != 0)
            .then(|| b.expires_ns.saturating_sub(now) / 1_000_000_000),
        offences: 0,
        expires_ns: b.expires_ns,
        created_ns: b.created_ns,
    }
}

/// The name a ban of `target` is kept under (`ban list`'s `addr`).
pub fn name_of(maps: &mut impl Maps, target: IpNet) -> Result<String> {
    let v6 = v6_prefix(maps)?;
    Ok(match slot(target, v6) {
        Slot::Exact(k) => exact_name(k, v6),
        Slot::Net(..) => target.to_string(),
    })
}

/// The target a kernel ban event names (its key is the masked source address).
pub fn target_of_key(maps: &mut impl Maps, k: [u8; 16]) -> Result<String> {
    Ok(exact_name(k, v6_prefix(maps)?))
}

/// How `ban list` names an exact-source key (an IPv6 key with its prefix).
pub fn exact_name(k: [u8; 16], v6_prefix: u8) -> String {
    match addr::from_key(k) {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) if v6_prefix < 128 => format!("{a}/{v6_prefix}"),
        IpAddr::V6(a) => a.to_string(),
    }
}

/// Every ban in the maps, expired or not, with its target as `ban list` names it.
pub fn snapshot(maps: &mut impl Maps) -> Result<Vec<(String, Ban)>> {
    let v6 = v6_prefix(maps)?;
    let mut out = Vec::new();
    for item in maps.bans()?.iter() {
        let (k, b) = item?;
        out.push((exact_name(k, v6), b));
    }
    for item in maps.ban_nets()?.iter() {
        let (k, b) = item?;
        out.push((addr::lpm_to_net(k.prefix_len(), k.data()).to_string(), b));
    }
    Ok(out)
}

/// The ban of one target as `ban list` names it, if the maps hold one.
pub fn get(maps: &mut impl Maps, target: &str) -> Result<Option<Ban>> {
    let v6 = v6_prefix(maps)?;
    Ok(match slot(parse_target(target)?, v6) {
        Slot::Exact(k) => maps.bans()?.get(&k, 0).ok(),
        Slot::Net(len, k) => maps.ban_nets()?.get(&Key::new(len, k), 0).ok(),
    })
}

/// Writes a ban as it is (restoring one from the state file, lengthening a repeat
/// offender's).
pub fn put(maps: &mut impl Maps, target: &str, ban: Ban) -> Result<()> {
    let v6 = v6_prefix(maps)?;
    match slot(parse_target(target)?, v6) {
        Slot::Exact(k) => maps
            .bans()?
            .insert(k, ban, 0)
            .with_context(|| format!("writing the ban of {target} (ban map full?)"))?,
        Slot::Net(len, k) => {
            maps.ban_nets()?
                .insert(&Key::new(len, k), ban, 0)
                .with_context(|| format!("writing the CIDR ban of {target} (map full?)"))?;
            maps.update_config(|c| c.ban_nets_active = 1)?;
        }
    }
    Ok(())
}

/// Bans in force (expired ones are left out: the kernel ignores them too).
pub fn list(maps: &mut impl Maps) -> Result<Vec<Entry>> {
    let now = clock::boot_ns();
    let mut out: Vec<Entry> = snapshot(maps)?
        .into_iter()
        .filter(|(_, b)| b.active_at(now))
        .map(|(t, b)| entry(t, &b, now))
        .collect();
    out.sort_by(|a, b| a.addr.cmp(&b.addr));
    Ok(out)
}

/// A ban's note as text (`None` when empty).
pub fn note_text(b: &Ban) -> Option<String> {
    let end = b.note.iter().position(|c| *c == 0).unwrap_or(b.note.len());
    let t = String::from_utf8_lossy(&b.note[..end]).into_owned();
    (!t.is_empty()).then_some(t)
}

/// A note for the 32 bytes of a ban value.
pub fn note_bytes(text: &str) -> [u8; 32] {
    note(text)
}

/// Lifts every ban. Returns how many were lifted.
pub fn flush(maps: &mut impl Maps) -> Result<usize> {
    let keys: Vec<[u8; 16]> = maps.bans()?.keys().filter_map(Result::ok).collect();
    let nets: Vec<Key<[u8; 16]>> = maps.ban_nets()?.keys().filter_map(Result::ok).collect();
    let mut n = 0;
    for k in &keys {
        if maps.bans()?.remove(k).is_ok() {
            n += 1;
        }
        let _ = maps.failures()?.remove(k);
    }
    for k in &nets {
        if maps.ban_nets()?.remove(k).is_ok() {
            n += 1;
        }
    }
    Ok(n)
}

/// Deletes bans whose time is up and returns them (for the unban log).
pub fn expire(maps: &mut impl Maps) -> Result<Vec<Entry>> {
    let now = clock::boot_ns();
    let v6 = v6_prefix(maps)?;
    let mut gone = Vec::new();
    let expired: Vec<([u8; 16], Ban)> = maps
        .bans()?
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, b)| !b.active_at(now))
        .collect();
    for (k, b) in expired {
        if maps.bans()?.remove(&k).is_ok() {
            gone.push(entry(exact_name(k, v6), &b, now));
        }
    }
    let expired: Vec<(Key<[u8; 16]>, Ban)> = maps
        .ban_nets()?
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, b)| !b.active_at(now))
        .collect();
    for (k, b) in expired {
        if maps.ban_nets()?.remove(&k).is_ok() {
            gone.push(entry(
                addr::lpm_to_net(k.prefix_len(), k.data()).to_string(),
                &b,
                now,
            ));
        }
    }
    Ok(gone)
}
