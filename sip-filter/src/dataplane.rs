//! Loading the eBPF object, checking it against the map table, and reaching its programs and
//! maps.
use std::path::Path;

use anyhow::{Context as _, Result};
use aya::{
    Ebpf, EbpfLoader,
    programs::{SchedClassifier, Xdp},
};
use sip_filter_common::{Config, map};

use crate::{EBPF_OBJECT, maps::Maps as _};

/// The loaded dataplane: both programs verified by the kernel, not attached.
pub struct Dataplane {
    ebpf: Ebpf,
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
            Some(dir) => map::ALL
                .iter()
                .map(|m| (m.name, dir.join(m.name)))
                .collect(),
            None => Vec::new(),
        };
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let ebpf = loader
            .load(EBPF_OBJECT)
            .context("loading the eBPF object")?;
        check_against_table(&ebpf)?;
        let mut dp = Self { ebpf };
        dp.xdp_mut()?
            .load()
            .context("the kernel rejected the XDP program")?;
        dp.tc_mut()?
            .load()
            .context("the kernel rejected the TC program")?;
        dp.load_inspect()?;
        // A freshly created CONFIG holds zeros (no ports); keep a reused one as it is.
        if dp.config()?.nports == 0 {
            dp.set_config(&Config::default())?;
        }
        dp.sync_clock()?;
        Ok(dp)
    }

    /// Loads the request inspection and puts it where `sip_xdp` tail-calls it. On a restart the
    /// pinned `PROGS` slot is overwritten: the new inspection takes over in one atomic update.
    fn load_inspect(&mut self) -> Result<()> {
        for &(name, slot, what) in sip_filter_common::STAGES {
            let prog = self.xdp_program_mut(name)?;
            prog.load()
                .with_context(|| format!("the kernel rejected {what} ({name})"))?;
            let fd = prog.fd()?.try_clone()?;
            let mut progs: aya::maps::ProgramArray<&mut aya::maps::MapData> =
                aya::maps::ProgramArray::try_from(self.map_mut(map::PROGS.name)?)?;
            progs
                .set(slot, &fd, 0)
                .with_context(|| format!("installing {what}"))?;
        }
        Ok(())
    }

    /// Takes a map out of the object (the daemon's ring buffer reader owns EVENTS).
    pub fn take_map(&mut self, name: &str) -> Result<aya::maps::Map> {
        self.ebpf
            .take_map(name)
            .with_context(|| format!("{name} map missing from object"))
    }

    pub fn xdp_mut(&mut self) -> Result<&mut Xdp> {
        self.xdp_program_mut(sip_filter_common::XDP_PROG)
    }

    /// An XDP program of the object by name (the benchmarks' `sip_pass` baseline, say).
    pub fn xdp_program(&self, name: &str) -> Result<&Xdp> {
        Ok(self
            .ebpf
            .program(name)
            .with_context(|| format!("{name} missing from the object"))?
            .try_into()?)
    }

    pub fn xdp_program_mut(&mut self, name: &str) -> Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut(name)
            .with_context(|| format!("{name} missing from the object"))?
            .try_into()?)
    }

    /// A map of the object, read-only (its id and info).
    pub fn map(&self, name: &str) -> Result<&aya::maps::Map> {
        self.ebpf
            .map(name)
            .with_context(|| format!("{name} map missing from object"))
    }

    pub fn tc_mut(&mut self) -> Result<&mut SchedClassifier> {
        Ok(self
            .ebpf
            .program_mut(sip_filter_common::TC_PROG)
            .context("TC program")?
            .try_into()?)
    }

    pub fn xdp(&self) -> &Xdp {
        self.xdp_program(sip_filter_common::XDP_PROG)
            .expect("loaded")
    }

    pub fn tc(&self) -> &SchedClassifier {
        self.ebpf
            .program(sip_filter_common::TC_PROG)
            .expect("loaded")
            .try_into()
            .expect("TC")
    }
}

/// The object's maps and the map table must agree: same names, same key and value sizes.
fn check_against_table(ebpf: &Ebpf) -> Result<()> {
    let mut seen = 0;
    for (name, m) in ebpf.maps() {
        let spec = map::by_name(name).with_context(|| {
            format!("the eBPF object has a map {name} that sip_filter_common::map::ALL lacks")
        })?;
        let (data, kind) = crate::maps::map_data(m)?;
        if kind != spec.kind {
            anyhow::bail!(
                "the object's map {name} is a {kind:?}, the map table says {:?}",
                spec.kind
            );
        }
        let info = data.info()?;
        crate::maps::check_spec(spec, &info, &format!("the object's map {name}"))?;
        seen += 1;
    }
    if seen != map::ALL.len() {
        anyhow::bail!(
            "the eBPF object has {seen} maps, the map table {}",
            map::ALL.len()
        );
    }
    Ok(())
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
