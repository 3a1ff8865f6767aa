//! Typed access to the dataplane's maps, whether they come from a freshly loaded object
//! ([`crate::dataplane::Dataplane`]) or from the pins of a running filter ([`Pinned`]).
use std::{collections::HashMap as StdHashMap, path::Path};

use anyhow::{Context as _, Result, bail};
use aya::maps::{Array, HashMap, LpmTrie, Map, MapData, PerCpuArray};
use sip_filter_common::{Ban, Config, Failures, map_names, stat};

use crate::geo::{GeoMaps, GeoTable};

pub type Counters = [u64; stat::COUNT as usize];

pub trait Maps {
    fn map_mut(&mut self, name: &str) -> Result<&mut Map>;
    fn maps3_mut(&mut self, names: [&str; 3]) -> Result<[&mut Map; 3]>;

    fn config(&mut self) -> Result<Config> {
        let m: Array<&mut MapData, Config> = Array::try_from(self.map_mut(map_names::CONFIG)?)?;
        Ok(m.get(&0, 0)?)
    }

    fn set_config(&mut self, cfg: &Config) -> Result<()> {
        let mut m: Array<&mut MapData, Config> = Array::try_from(self.map_mut(map_names::CONFIG)?)?;
        m.set(0, cfg, 0)?;
        Ok(())
    }

    /// Writes the suspend offset the kernel adds to its coarse clock (see `CLOCK_INDEX`).
    fn sync_clock(&mut self) -> Result<()> {
        let mut m: Array<&mut MapData, u64> = Array::try_from(self.map_mut(map_names::CLOCK)?)?;
        m.set(
            sip_filter_common::CLOCK_INDEX,
            crate::clock::suspend_offset_ns(),
            0,
        )?;
        Ok(())
    }

    fn bans(&mut self) -> Result<HashMap<&mut MapData, [u8; 16], Ban>> {
        Ok(HashMap::try_from(self.map_mut(map_names::BANS)?)?)
    }

    fn ban_nets(&mut self) -> Result<LpmTrie<&mut MapData, [u8; 16], Ban>> {
        Ok(LpmTrie::try_from(self.map_mut(map_names::BAN_NETS)?)?)
    }

    fn allow(&mut self) -> Result<LpmTrie<&mut MapData, [u8; 16], u32>> {
        Ok(LpmTrie::try_from(self.map_mut(map_names::ALLOW)?)?)
    }

    fn failures(&mut self) -> Result<HashMap<&mut MapData, [u8; 16], Failures>> {
        Ok(HashMap::try_from(self.map_mut(map_names::FAILURES)?)?)
    }

    /// Per-CPU counters summed, indexed like `sip_filter_common::stat`.
    fn stats(&mut self) -> Result<Counters> {
        let map: PerCpuArray<&mut MapData, u64> =
            PerCpuArray::try_from(self.map_mut(map_names::STATS)?)?;
        let mut out = [0u64; stat::COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = map.get(&(i as u32), 0)?.iter().sum();
        }
        Ok(out)
    }

    fn geo_maps(&mut self) -> Result<GeoMaps<'_>> {
        let [v4, v6, nodes] =
            self.maps3_mut([map_names::GEO_V4, map_names::GEO_V6, map_names::GEO_NODES])?;
        Ok(GeoMaps {
            v4: Array::try_from(v4)?,
            v6: Array::try_from(v6)?,
            nodes: HashMap::try_from(nodes)?,
        })
    }

    /// What the geo maps hold now (after a restart, the base for the next change).
    fn geo_table(&mut self) -> Result<GeoTable> {
        self.geo_maps()?.read()
    }
}

/// The maps of a filter attached by a (possibly stopped) daemon, opened from bpffs.
pub struct Pinned {
    maps: StdHashMap<&'static str, Map>,
}

/// Key and value sizes each pinned map must have; pins left by another layout are refused.
fn expected_layout(name: &str) -> (u32, u32) {
    use core::mem::size_of;
    use sip_filter_common::*;
    let lpm_key = 4 + 16;
    let (k, v) = match name {
        map_names::CONFIG => (4, size_of::<Config>()),
        map_names::BANS => (16, size_of::<Ban>()),
        map_names::BAN_NETS => (lpm_key, size_of::<Ban>()),
        map_names::ALLOW => (lpm_key, 4),
        map_names::FLOWS => (size_of::<FlowKey>(), size_of::<Flow>()),
        map_names::FAILURES => (16, size_of::<Failures>()),
        map_names::GEO_V4 => (4, size_of::<GeoBits>()),
        map_names::GEO_V6 => (4, 4),
        map_names::GEO_NODES => (size_of::<GeoKey>(), 4),
        map_names::STATS => (4, 8),
        map_names::EVENTS => (0, 0),
        map_names::SCRATCH => (4, SCRATCH_LEN + SCRATCH_PAD),
        map_names::CLOCK => (4, 8),
        _ => (0, 0),
    };
    (k as u32, v as u32)
}

/// Refuses pins whose layout differs from this build's (left by another sip-filter version).
pub fn check_layout(dir: &Path) -> Result<()> {
    for name in map_names::ALL {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        let info = aya::maps::MapInfo::from_pin(&path)
            .with_context(|| format!("reading pinned map {}", path.display()))?;
        let (k, v) = expected_layout(name);
        if (k, v) != (0, 0) && (info.key_size(), info.value_size()) != (k, v) {
            bail!(
                "{} was pinned by an incompatible sip-filter version (key/value size {}/{}, this \
                 version uses {k}/{v}); run `sip-filter detach --iface IFACE` with the old binary \
                 or remove {} (this forgets its bans)",
                path.display(),
                info.key_size(),
                info.value_size(),
                dir.display()
            );
        }
    }
    Ok(())
}

impl Pinned {
    pub fn open(dir: &Path) -> Result<Self> {
        check_layout(dir)?;
        let mut maps = StdHashMap::new();
        for name in map_names::ALL {
            let path = dir.join(name);
            let data = MapData::from_pin(&path)
                .with_context(|| format!("opening pinned map {}", path.display()))?;
            maps.insert(name, Map::from_map_data(data)?);
        }
        Ok(Self { maps })
    }
}

impl Maps for Pinned {
    fn map_mut(&mut self, name: &str) -> Result<&mut Map> {
        self.maps
            .get_mut(name)
            .with_context(|| format!("{name} map not pinned"))
    }

    fn maps3_mut(&mut self, names: [&str; 3]) -> Result<[&mut Map; 3]> {
        let [a, b, c] = self.maps.get_disjoint_mut(names);
        Ok([
            a.context("map not pinned")?,
            b.context("map not pinned")?,
            c.context("map not pinned")?,
        ])
    }
}
