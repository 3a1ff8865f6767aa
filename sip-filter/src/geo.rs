//! The geo-blocking table: prefixes compiled into the fixed-stride levels the kernel walks
//! (see `sip_filter_common::geo`), and applied to the maps without a moment where an address
//! blocked before and after a change passes.
use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, bail};
use aya::maps::{Array, HashMap, MapData};
use ipnet::IpNet;
use sip_filter_common::{GeoKey, geo, sizes};

use crate::addr::net_to_lpm;

/// The compiled table: top-level array entries that are not PASS, and the nodes below them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GeoTable {
    pub v4_top: BTreeMap<u32, u32>,
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

impl GeoTable {
    /// Compiles CIDRs (adjacent and overlapping ones are merged first).
    pub fn build(nets: impl IntoIterator<Item = IpNet>) -> Result<Self> {
        let nets: Vec<IpNet> = nets.into_iter().collect();
        let agg = IpNet::aggregate(&nets);
        let mut t = GeoTable {
            prefixes: agg.len(),
            ..Default::default()
        };
        for net in agg {
            let (len, addr) = net_to_lpm(net);
            let (levels, v6): (&[u32], bool) = match net {
                IpNet::V4(_) => (&geo::V4_LEVELS, false),
                IpNet::V6(_) => (&geo::V6_LEVELS, true),
            };
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
            if t.nodes.len() as u64 + count > u64::from(sizes::GEO_NODES) {
                bail!(
                    "geo table too large: {net} expands to {count} entries (limit {})",
                    sizes::GEO_NODES
                );
            }
            let top = if v6 { &mut t.v6_top } else { &mut t.v4_top };
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
        let (levels, top): (&[u32], &BTreeMap<u32, u32>) = match ip {
            std::net::IpAddr::V4(_) => (&geo::V4_LEVELS, &self.v4_top),
            std::net::IpAddr::V6(_) => (&geo::V6_LEVELS, &self.v6_top),
        };
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
        self.v4_top.is_empty() && self.v6_top.is_empty()
    }
}

/// The geo maps of a loaded dataplane.
pub struct GeoMaps<'a> {
    pub v4: Array<&'a mut MapData, u32>,
    pub v6: Array<&'a mut MapData, u32>,
    pub nodes: HashMap<&'a mut MapData, GeoKey, u32>,
}

impl GeoMaps<'_> {
    /// Reads back the table the maps hold.
    pub fn read(&self) -> Result<GeoTable> {
        let mut t = GeoTable::default();
        for (map, top) in [(&self.v4, &mut t.v4_top), (&self.v6, &mut t.v6_top)] {
            for (i, v) in map.iter().enumerate() {
                let v = v?;
                if v != geo::PASS {
                    top.insert(i as u32, v);
                }
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
        for (top, map, old_top) in [
            (&new.v4_top, &mut self.v4, &old.v4_top),
            (&new.v6_top, &mut self.v6, &old.v6_top),
        ] {
            for (i, s) in top {
                if old_top.get(i) != Some(s) {
                    map.set(*i, s, 0)?;
                }
            }
            for i in old_top.keys() {
                if !top.contains_key(i) {
                    map.set(*i, geo::PASS, 0)?;
                }
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

    #[test]
    fn levels() {
        let g = t(&["198.51.100.0/24", "203.0.113.16/28", "10.0.0.0/8"]);
        assert_eq!(g.v4_top.get(&0xc633), Some(&geo::PARTIAL)); // 198.51/16
        assert_eq!(
            g.v4_top.iter().filter(|(_, s)| **s == geo::BLOCK).count(),
            256
        );
        assert_eq!(g.nodes.iter().filter(|((l, _), _)| *l == 128).count(), 16);
        let g6 = t(&["2001:db8::/32", "2001:db9:1:2::/64"]);
        assert_eq!(g6.v6_top.get(&0x2001), Some(&geo::PARTIAL));
        assert_eq!(
            g6.nodes.get(&(
                32,
                mask(crate::addr::to_key("2001:db8::".parse().unwrap()), 32)
            )),
            Some(&geo::BLOCK)
        );
    }

    #[test]
    fn aggregates_adjacent() {
        let g = t(&["192.0.2.0/25", "192.0.2.128/25"]);
        assert_eq!(g.prefixes, 1);
        assert_eq!(g.nodes.len(), 1);
    }
}
