//! The geo-blocking table: prefixes compiled into the fixed-stride levels the kernel walks
//! (see `sip_filter_common::geo`), and applied to the maps without a moment where an address
//! blocked before and after a change passes.
use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, bail};
use aya::maps::{Array, HashMap, MapData};
use ipnet::IpNet;
use sip_filter_common::{GeoBits, GeoKey, geo};

use crate::addr::net_to_lpm;

/// The compiled table: top-level entries that are not empty, and the nodes below them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GeoTable {
    /// IPv4 /24 bitmap words (index: address >> 14) that have a bit set.
    pub v4_words: BTreeMap<u32, GeoBits>,
    /// IPv6 /16 states (index: first 16 bits) that are not PASS.
    pub v6_top: BTreeMap<u32, u32>,
    pub nodes: BTreeMap<(u32, [u8; 16]), u32>,
    /// Aggregated prefixes (what `geo lookup` explains).
    pub prefixes: usize,
}

/// Sets bit positions `[from, to)` of a 128-bit big-endian address.
fn with_index(base: [u8; 16], from_bit: u32, bits: u32, index: u64) -> [u8; 16] {
    let mut v = u128::from_be_bytes(base);
    let shift = 128 - from_bit - bits;
    v |= (index as u128) << shift;
    v.to_be_bytes()
}

fn mask(addr: [u8; 16], len: u32) -> [u8; 16] {
    let v = u128::from_be_bytes(addr);
    let m = if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    };
    (v & m).to_be_bytes()
}

fn top_index(addr: [u8; 16], top_len: u32) -> u32 {
    (u128::from_be_bytes(addr) >> (128 - top_len)) as u32 & 0xffff
}

/// The bitmap word and bit of an IPv4 address's /24.
fn v4_slot(addr: [u8; 16]) -> (u32, u64) {
    let a = u32::from_be_bytes([addr[12], addr[13], addr[14], addr[15]]);
    (a >> geo::V4_WORD_SHIFT, 1u64 << ((a >> 8) & 63))
}

impl GeoTable {
    /// Marks the /24s `[first, first + count)` blocked, a word at a time.
    fn block_v4_range(&mut self, first: u32, count: u64) {
        let (mut i, end) = (u64::from(first), u64::from(first) + count);
        while i < end {
            let bit = i % 64;
            let n = (64 - bit).min(end - i);
            let bits = if n == 64 {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << bit
            };
            let w = self.v4_words.entry((i / 64) as u32).or_default();
            w.block |= bits;
            w.partial &= !bits;
            i += n;
        }
    }

    /// IPv4: prefixes up to /24 set bits of the /24 bitmap; longer ones mark their /24 partial
    /// and list their addresses as /32 nodes.
    fn add_v4(&mut self, len: u32, addr: [u8; 16]) -> Result<()> {
        let v4_len = len - sip_filter_common::V4_MAPPED_PREFIX;
        if v4_len <= 24 {
            let a = u32::from_be_bytes([addr[12], addr[13], addr[14], addr[15]]);
            self.block_v4_range(a >> 8, 1u64 << (24 - v4_len));
            return Ok(());
        }
        let (word, bit) = v4_slot(addr);
        let w = self.v4_words.entry(word).or_default();
        if w.block & bit != 0 {
            return Ok(());
        }
        w.partial |= bit;
        let count = 1u64 << (32 - v4_len);
        if self.nodes.len() as u64 + count
            > u64::from(sip_filter_common::map::GEO_NODES.max_entries)
        {
            bail!(
                "geo table too large (limit {} entries)",
                sip_filter_common::map::GEO_NODES.max_entries
            );
        }
        for i in 0..count {
            let a = with_index(addr, len, 128 - len, i);
            self.nodes.insert((128, a), geo::BLOCK);
        }
        Ok(())
    }

    /// Compiles CIDRs (adjacent and overlapping ones are merged first).
    pub fn build(nets: impl IntoIterator<Item = IpNet>) -> Result<Self> {
        let nets: Vec<IpNet> = nets.into_iter().collect();
        let agg = IpNet::aggregate(&nets);
        let mut t = GeoTable {
            prefixes: agg.len(),
            ..Default::default()
        };
        for net in agg {
            if let IpNet::V4(_) = net {
                let (len, addr) = net_to_lpm(net);
                t.add_v4(len, addr)?;
                continue;
            }
            let (len, addr) = net_to_lpm(net);
            let levels: &[u32] = &geo::V6_LEVELS;
            // Longer IPv6 prefixes than the deepest level are widened to it (a /64 is what one
            // subscriber gets anyway).
            let len = len.min(*levels.last().expect("levels"));
            // The level where the prefix ends: entries of that level are BLOCK, the path to it PARTIAL.
            let lvl = levels
                .iter()
                .position(|l| *l >= len)
                .expect("len within levels");
            let depth = levels[lvl];
            let count = 1u64 << (depth - len);
            if t.nodes.len() as u64 + count
                > u64::from(sip_filter_common::map::GEO_NODES.max_entries)
            {
                bail!(
                    "geo table too large: {net} expands to {count} entries (limit {})",
                    sip_filter_common::map::GEO_NODES.max_entries
                );
            }
            let top = &mut t.v6_top;
            let top_len = levels[0];
            if lvl == 0 {
                for i in 0..count {
                    let a = with_index(addr, len, depth - len, i);
                    top.insert(top_index(a, top_len), geo::BLOCK);
                }
                continue;
            }
            let top_state = top.entry(top_index(addr, top_len)).or_insert(geo::PARTIAL);
            if *top_state == geo::BLOCK {
                continue;
            }
            let mut covered = false;
            for l in &levels[1..lvl] {
                let s = t.nodes.entry((*l, mask(addr, *l))).or_insert(geo::PARTIAL);
                if *s == geo::BLOCK {
                    covered = true;
                    break;
                }
            }
            if covered {
                continue;
            }
            for i in 0..count {
                let a = with_index(addr, len, depth - len, i);
                t.nodes.insert((depth, a), geo::BLOCK);
            }
        }
        Ok(t)
    }

    /// Does the table block `ip`? The same walk as the kernel's (`sip-filter-ebpf/src/geo.rs`).
    pub fn blocks(&self, ip: std::net::IpAddr) -> bool {
        let key = crate::addr::to_key(ip);
        if ip.is_ipv4() {
            let (word, bit) = v4_slot(key);
            let w = self.v4_words.get(&word).copied().unwrap_or_default();
            return w.block & bit != 0
                || (w.partial & bit != 0 && self.nodes.get(&(128, key)) == Some(&geo::BLOCK));
        }
        let (levels, top): (&[u32], &BTreeMap<u32, u32>) = (&geo::V6_LEVELS, &self.v6_top);
        let mut state = top
            .get(&top_index(key, levels[0]))
            .copied()
            .unwrap_or(geo::PASS);
        for l in &levels[1..] {
            if state != geo::PARTIAL {
                break;
            }
            state = self
                .nodes
                .get(&(*l, mask(key, *l)))
                .copied()
                .unwrap_or(geo::PASS);
        }
        state == geo::BLOCK
    }

    pub fn is_empty(&self) -> bool {
        self.v4_words.is_empty() && self.v6_top.is_empty()
    }
}

/// The geo maps of a loaded dataplane.
pub struct GeoMaps<'a> {
    pub v4: Array<&'a mut MapData, GeoBits>,
    pub v6: Array<&'a mut MapData, u32>,
    pub nodes: HashMap<&'a mut MapData, GeoKey, u32>,
}

impl GeoMaps<'_> {
    /// Reads back the table the maps hold.
    pub fn read(&self) -> Result<GeoTable> {
        let mut t = GeoTable::default();
        for (i, v) in self.v4.iter().enumerate() {
            let v = v?;
            if v != GeoBits::default() {
                t.v4_words.insert(i as u32, v);
            }
        }
        for (i, v) in self.v6.iter().enumerate() {
            let v = v?;
            if v != geo::PASS {
                t.v6_top.insert(i as u32, v);
            }
        }
        for item in self.nodes.iter() {
            let (k, v) = item?;
            t.nodes.insert((k.len, k.addr), v);
        }
        Ok(t)
    }

    /// Moves the maps from `old` to `new`. Deeper entries are written before the entries that
    /// point to them, and entries are removed only once nothing points to them, so every
    /// address blocked in both tables stays blocked throughout.
    pub fn apply(&mut self, old: &GeoTable, new: &GeoTable) -> Result<()> {
        let mut by_depth: Vec<(&(u32, [u8; 16]), &u32)> = new
            .nodes
            .iter()
            .filter(|(k, v)| old.nodes.get(k) != Some(v))
            .collect();
        by_depth.sort_by_key(|e| std::cmp::Reverse(e.0.0));
        for ((len, addr), state) in by_depth {
            self.nodes.insert(
                GeoKey {
                    len: *len,
                    addr: *addr,
                },
                state,
                0,
            )?;
        }
        for (i, w) in &new.v4_words {
            if old.v4_words.get(i) != Some(w) {
                self.v4.set(*i, w, 0)?;
            }
        }
        for i in old.v4_words.keys() {
            if !new.v4_words.contains_key(i) {
                self.v4.set(*i, GeoBits::default(), 0)?;
            }
        }
        for (i, s) in &new.v6_top {
            if old.v6_top.get(i) != Some(s) {
                self.v6.set(*i, s, 0)?;
            }
        }
        for i in old.v6_top.keys() {
            if !new.v6_top.contains_key(i) {
                self.v6.set(*i, geo::PASS, 0)?;
            }
        }
        let gone: BTreeSet<_> = old
            .nodes
            .keys()
            .filter(|k| !new.nodes.contains_key(*k))
            .collect();
        for (len, addr) in gone {
            // Already absent is fine: the goal is that it is gone.
            let _ = self.nodes.remove(&GeoKey {
                len: *len,
                addr: *addr,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(nets: &[&str]) -> GeoTable {
        GeoTable::build(nets.iter().map(|n| n.parse().unwrap())).unwrap()
    }

    fn ip(s: &str) -> std::net::IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn levels() {
        let g = t(&["198.51.100.0/24", "203.0.113.16/28", "10.0.0.0/8"]);
        // A /8 is 65,536 /24s: 1,024 full bitmap words.
        assert_eq!(
            g.v4_words.values().filter(|w| w.block == u64::MAX).count(),
            1024
        );
        assert_eq!(g.nodes.iter().filter(|((l, _), _)| *l == 128).count(), 16);
        for (addr, blocked) in [
            ("198.51.100.7", true),
            ("198.51.101.7", false),
            ("203.0.113.20", true),
            ("203.0.113.40", false),
            ("10.200.3.4", true),
            ("11.0.0.1", false),
        ] {
            assert_eq!(g.blocks(ip(addr)), blocked, "{addr}");
        }
        let g6 = t(&["2001:db8::/32", "2001:db9:1:2::/64"]);
        assert_eq!(g6.v6_top.get(&0x2001), Some(&geo::PARTIAL));
        assert!(g6.blocks(ip("2001:db8:5::1")));
        assert!(g6.blocks(ip("2001:db9:1:2::9")));
        assert!(!g6.blocks(ip("2001:db9:1:3::9")));
    }

    #[test]
    fn aggregates_adjacent() {
        let g = t(&["192.0.2.0/25", "192.0.2.128/25"]);
        assert_eq!(g.prefixes, 1);
        assert!(
            g.nodes.is_empty(),
            "the two halves make a /24: one bit, no nodes"
        );
        assert!(g.blocks(ip("192.0.2.200")));
    }
}
