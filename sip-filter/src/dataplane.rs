//! Loading the eBPF object and reaching its maps.
use std::path::Path;

use anyhow::{Context as _, Result};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray},
    programs::{SchedClassifier, Xdp},
};
use sip_filter_common::{Ban, Config, map_names, stat};

use crate::EBPF_OBJECT;

/// The loaded dataplane: both programs verified by the kernel, not attached.
pub struct Dataplane {
    pub ebpf: Ebpf,
}

impl Dataplane {
    /// Loads the object. With `pin_dir`, every map is opened from (or created and pinned at)
    /// `pin_dir/<MAP>`, which is how a restarted daemon keeps its bans.
    pub fn load(pin_dir: Option<&Path>) -> Result<Self> {
        Self::load_with(pin_dir, &[])
    }

    /// Like [`Dataplane::load`], with some maps' sizes overridden (`(map name, max entries)`).
    pub fn load_with(pin_dir: Option<&Path>, sizes: &[(&str, u32)]) -> Result<Self> {
        let mut loader = EbpfLoader::new();
        for (name, size) in sizes {
            loader.map_max_entries(name, *size);
        }
        let paths: Vec<(&str, std::path::PathBuf)> = match pin_dir {
            Some(dir) => map_names::ALL.iter().map(|m| (*m, dir.join(m))).collect(),
            None => Vec::new(),
        };
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(EBPF_OBJECT)
            .context("loading the eBPF object")?;
        {
            let xdp: &mut Xdp = ebpf
                .program_mut(sip_filter_common::XDP_PROG)
                .context("XDP program missing from object")?
                .try_into()?;
            xdp.load().context("the kernel rejected the XDP program")?;
        }
        {
            let tc: &mut SchedClassifier = ebpf
                .program_mut(sip_filter_common::TC_PROG)
                .context("TC program missing from object")?
                .try_into()?;
            tc.load().context("the kernel rejected the TC program")?;
        }
        let mut dp = Self { ebpf };
        // A freshly created CONFIG holds zeros (no ports); keep a reused one as it is.
        if dp.config()?.nports == 0 {
            dp.set_config(&Config::default())?;
        }
        Ok(dp)
    }

    pub fn xdp(&self) -> &Xdp {
        self.ebpf
            .program(sip_filter_common::XDP_PROG)
            .expect("loaded")
            .try_into()
            .expect("XDP")
    }

    pub fn tc(&self) -> &SchedClassifier {
        self.ebpf
            .program(sip_filter_common::TC_PROG)
            .expect("loaded")
            .try_into()
            .expect("TC")
    }

    fn config_map(&mut self) -> Result<Array<&mut MapData, Config>> {
        Ok(Array::try_from(
            self.ebpf.map_mut(map_names::CONFIG).context("CONFIG map")?,
        )?)
    }

    pub fn config(&mut self) -> Result<Config> {
        Ok(self.config_map()?.get(&0, 0)?)
    }

    pub fn set_config(&mut self, cfg: &Config) -> Result<()> {
        self.config_map()?.set(0, cfg, 0)?;
        Ok(())
    }

    pub fn bans(&mut self) -> Result<HashMap<&mut MapData, [u8; 16], Ban>> {
        Ok(HashMap::try_from(
            self.ebpf.map_mut(map_names::BANS).context("BANS map")?,
        )?)
    }

    pub fn ban_nets(&mut self) -> Result<LpmTrie<&mut MapData, [u8; 16], Ban>> {
        Ok(LpmTrie::try_from(
            self.ebpf
                .map_mut(map_names::BAN_NETS)
                .context("BAN_NETS map")?,
        )?)
    }

    pub fn allow(&mut self) -> Result<LpmTrie<&mut MapData, [u8; 16], u32>> {
        Ok(LpmTrie::try_from(
            self.ebpf.map_mut(map_names::ALLOW).context("ALLOW map")?,
        )?)
    }

    /// Per-CPU counters summed, indexed like `sip_filter_common::stat`.
    pub fn stats(&self) -> Result<[u64; stat::COUNT as usize]> {
        let map: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map(map_names::STATS).context("STATS map")?)?;
        let mut out = [0u64; stat::COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = map.get(&(i as u32), 0)?.iter().sum();
        }
        Ok(out)
    }
}

impl Dataplane {
    pub fn geo_maps(&mut self) -> Result<crate::geo::GeoMaps<'_>> {
        let [v4, v6, nodes] = self.ebpf.maps_disjoint_mut([
            map_names::GEO_V4,
            map_names::GEO_V6,
            map_names::GEO_NODES,
        ]);
        Ok(crate::geo::GeoMaps {
            v4: Array::try_from(v4.context("GEO_V4 map")?)?,
            v6: Array::try_from(v6.context("GEO_V6 map")?)?,
            nodes: HashMap::try_from(nodes.context("GEO_NODES map")?)?,
        })
    }
}
