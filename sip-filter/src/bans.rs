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

/// Bans many targets at once (`ban import`), in batches. Returns how many were banned.
pub fn add_many(
    maps: &mut impl Maps,
    targets: &[IpNet],
    duration: Option<Duration>,
    reason: &str,
) -> Result<usize> {
    let now = clock::boot_ns();
    let expires = duration.map(|d| now + d.as_nanos() as u64).unwrap_or(0);
    let ban = Ban::manual(now, expires, note(reason));
    let v6 = v6_prefix(maps)?;
    let places: Vec<Place> = targets.iter().map(|t| place(*t, v6)).collect();
    let items: Vec<(&Place, Ban)> = places.iter().map(|p| (p, ban)).collect();
    let n = put_many(maps, &items)?;
    maps.count_n(sip_filter_common::Reason::BansManual, n as u64)?;
    Ok(n)
}

/// The targets of a list file (`ban import`): a JSON array of addresses or CIDRs, or an
/// object holding one (APIBAN's `{"ipaddress": [...]}`, or an `addresses`/`ips` key), or
/// plain text, one per line with `#` comments. Errors name the line.
pub fn parse_list(text: &str) -> Result<Vec<IpNet>> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') || trimmed.starts_with('{') {
        let v: serde_json::Value =
            serde_json::from_str(text).context("the file looks like JSON but is not")?;
        let items = match &v {
            serde_json::Value::Array(a) => a,
            serde_json::Value::Object(o) => ["ipaddress", "addresses", "ips", "decisions"]
                .iter()
                .find_map(|k| o.get(*k).and_then(|x| x.as_array()))
                .context("a JSON object needs an `ipaddress`, `addresses` or `ips` array")?,
            _ => bail!("expected a JSON array of addresses"),
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let s = match item {
                serde_json::Value::String(s) => s.as_str(),
                serde_json::Value::Object(o) => o
                    .get("value")
                    .or_else(|| o.get("ip"))
                    .and_then(|x| x.as_str())
                    .with_context(|| format!("entry {}: no `value` or `ip`", i + 1))?,
                other => bail!("entry {}: {other} is not an address", i + 1),
            };
            out.push(parse_target(s).with_context(|| format!("entry {}", i + 1))?);
        }
        return Ok(out);
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        out.push(parse_target(line).with_context(|| format!("line {}", i + 1))?);
    }
    Ok(out)
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
    /// Who issued it: `sip-filter`, `operator`, or a shared blocklist (`crowdsec/cscli`: the
    /// source and, from the state file, who made the decision there).
    pub origin: String,
    /// The operator's note (manual bans); a shared decision's scenario.
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

/// Who issued a ban of this reason (`state::origin`).
pub fn origin_of(reason: u8) -> &'static str {
    use crate::state::origin;
    match BanReason::from_u8(reason) {
        Some(BanReason::Manual) => origin::OPERATOR,
        Some(BanReason::Crowdsec) => origin::CROWDSEC,
        Some(BanReason::Apiban) => origin::APIBAN,
        _ => origin::KERNEL,
    }
}

pub fn entry(target: String, b: &Ban, now: u64) -> Entry {
    let why = BanReason::from_u8(b.reason);
    Entry {
        addr: target,
        kind: why.map_or("ban", BanReason::kind),
        origin: origin_of(b.reason).to_string(),
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
    get_at(maps, &place(parse_target(target)?, v6))
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

/// Where one target lives in the maps, worked out once (for writers of many targets: the
/// shared blocklists).
pub struct Place {
    pub net: IpNet,
    /// `ban list`'s name of it.
    pub name: String,
    slot: Slot,
}

pub fn place(target: IpNet, v6_prefix: u8) -> Place {
    let slot = slot(target, v6_prefix);
    let name = match &slot {
        Slot::Exact(k) => exact_name(*k, v6_prefix),
        Slot::Net(..) => target.to_string(),
    };
    Place {
        net: target,
        name,
        slot,
    }
}

pub fn get_at(maps: &mut impl Maps, p: &Place) -> Result<Option<Ban>> {
    Ok(match p.slot {
        Slot::Exact(k) => maps.bans()?.get(&k, 0).ok(),
        Slot::Net(len, k) => maps.ban_nets()?.get(&Key::new(len, k), 0).ok(),
    })
}

/// Removes the entry at `p` (whatever it holds). Whether there was one.
pub fn remove_at(maps: &mut impl Maps, p: &Place) -> Result<bool> {
    Ok(match p.slot {
        Slot::Exact(k) => maps.bans()?.remove(&k).is_ok(),
        Slot::Net(len, k) => maps.ban_nets()?.remove(&Key::new(len, k)).is_ok(),
    })
}

/// Writes many bans: the exact ones in batches of `BPF_MAP_UPDATE_BATCH` (one system call
/// per 4096 entries instead of one each), CIDRs one by one (LPM tries have no batch update).
/// Returns how many were written; the first error stops it.
pub fn put_many(maps: &mut impl Maps, items: &[(&Place, Ban)]) -> Result<usize> {
    let mut keys = Vec::new();
    let mut values = Vec::new();
    let mut n = 0;
    let mut nets = false;
    for (p, b) in items {
        match p.slot {
            Slot::Exact(k) => {
                keys.push(k);
                values.push(*b);
            }
            Slot::Net(len, k) => {
                maps.ban_nets()?
                    .insert(&Key::new(len, k), *b, 0)
                    .with_context(|| format!("writing the CIDR ban of {} (map full?)", p.name))?;
                nets = true;
                n += 1;
            }
        }
    }
    if nets {
        maps.update_config(|c| c.ban_nets_active = 1)?;
    }
    for (k, v) in keys.chunks(4096).zip(values.chunks(4096)) {
        let fd = match maps.map_mut(sip_filter_common::map::BANS.name)? {
            aya::maps::Map::HashMap(d) => {
                use std::os::fd::{AsFd as _, AsRawFd as _};
                d.fd().as_fd().as_raw_fd()
            }
            _ => bail!("BANS is not a hash map"),
        };
        update_batch(fd, k, v).context("writing bans (ban map full?)")?;
        n += k.len();
    }
    Ok(n)
}

/// `BPF_MAP_UPDATE_BATCH` (Linux 5.6) on a hash map: `keys[i]` gets `values[i]`.
fn update_batch<K: Copy, V: Copy>(fd: i32, keys: &[K], values: &[V]) -> Result<()> {
    // union bpf_attr, the `batch` member (include/uapi/linux/bpf.h).
    #[repr(C)]
    #[derive(Default)]
    struct Batch {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }
    const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
    let mut attr = Batch {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: keys.len() as u32,
        map_fd: fd as u32,
        ..Batch::default()
    };
    // SAFETY: the attribute points at `keys.len()` keys and values that outlive the call; the
    // kernel writes only `count` back.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_BATCH,
            &mut attr as *mut Batch,
            std::mem::size_of::<Batch>() as u32,
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        bail!(
            "BPF_MAP_UPDATE_BATCH: {e} ({} of {} written)",
            attr.count,
            keys.len()
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_files_in_every_format() {
        let want: Vec<IpNet> = ["192.0.2.7/32", "198.51.100.0/24", "2001:db8::5/128"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let plain = "# a list\n192.0.2.7\n\n198.51.100.9/24  # a range\n2001:db8::5\n";
        assert_eq!(parse_list(plain).unwrap(), want);
        let json = r#"["192.0.2.7", "198.51.100.0/24", "2001:db8::5"]"#;
        assert_eq!(parse_list(json).unwrap(), want);
        let apiban =
            r#"{"ipaddress": ["192.0.2.7", "198.51.100.0/24", "2001:db8::5"], "ID": "123"}"#;
        assert_eq!(parse_list(apiban).unwrap(), want);
        let objects =
            r#"[{"value": "192.0.2.7"}, {"ip": "198.51.100.0/24"}, {"value": "2001:db8::5"}]"#;
        assert_eq!(parse_list(objects).unwrap(), want);
        let e = parse_list("192.0.2.7\nnot-an-address\n").unwrap_err();
        assert!(format!("{e:#}").starts_with("line 2: "), "{e:#}");
        let e = parse_list(r#"["192.0.2.7", 5]"#).unwrap_err();
        assert!(format!("{e:#}").contains("entry 2"), "{e:#}");
        assert!(parse_list("{not json").is_err());
    }
}
