//! Loading the eBPF object and reaching its maps.
use std::path::Path;

use anyhow::{Context as _, Result};
use aya::{
    Ebpf, EbpfLoader,
    programs::{SchedClassifier, Xdp},
};
use sip_filter_common::{Config, map_names};

use crate::maps::Maps as _;

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
        dp.sync_clock()?;
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
}

impl crate::maps::Maps for Dataplane {
    fn map_mut(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .with_context(|| format!("{name} map missing from object"))
    }

    fn maps3_mut(&mut self, names: [&str; 3]) -> Result<[&mut aya::maps::Map; 3]> {
        let [a, b, c] = self.ebpf.maps_disjoint_mut(names);
        Ok([
            a.context("map missing")?,
            b.context("map missing")?,
            c.context("map missing")?,
        ])
    }
}
