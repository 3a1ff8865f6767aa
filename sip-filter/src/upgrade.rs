//! A map-layout upgrade without `detach`: a new version whose maps differ from the pinned ones
//! starts on new maps, and the running programs keep enforcing until it swaps in.
//!
//! 1. The old pins are moved aside (`/sys/fs/bpf/sip-filter-previous/<iface>`: bpffs allows no
//!    dot in a name); the old links keep the old programs attached, reading the old maps.
//! 2. The new object is loaded and its maps pinned in the interface's directory; the rules are
//!    applied; the bans of the old maps (where their layout is still readable) and of the state
//!    file are written into the new ones.
//! 3. The old links are moved into the new directory and re-pointed at the new programs
//!    (`bpf_link_update`: atomic, no packet sees no program); the old maps go with the old pins.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use aya::maps::{HashMap, LpmTrie, Map, MapData};
use sip_filter_common::{Ban, map};
use tracing::warn;

use crate::{addr, bans, clock, maps::Maps, pins};

/// The old pins during an upgrade.
pub struct Previous {
    pub dir: PathBuf,
}

/// Where the old pins of `dir` wait during an upgrade.
pub fn previous_dir(dir: &Path) -> PathBuf {
    let iface = dir.file_name().unwrap_or_default();
    Path::new(pins::BPFFS)
        .join("sip-filter-previous")
        .join(iface)
}

/// Step 1: moves the old pins aside.
pub fn set_aside(dir: &Path) -> Result<Previous> {
    let prev = previous_dir(dir);
    if prev.exists() {
        bail!(
            "{} is left from an upgrade that did not finish; its links may still hold the \
             programs attached. Move its xdp_link/tc_link pins back into {} and start again, \
             or detach",
            prev.display(),
            dir.display()
        );
    }
    std::fs::create_dir_all(prev.parent().expect("has a parent"))
        .with_context(|| format!("creating {}", prev.display()))?;
    std::fs::rename(dir, &prev)
        .with_context(|| format!("moving {} aside to {}", dir.display(), prev.display()))?;
    Ok(Previous { dir: prev })
}

impl Previous {
    /// Undoes step 1 after a failed load: the old filter stays as it was.
    pub fn put_back(self, dir: &Path) {
        let _ = std::fs::remove_dir_all(dir);
        if let Err(e) = std::fs::rename(&self.dir, dir) {
            warn!("putting {} back: {e}", self.dir.display());
        }
    }

    /// Step 2: copies the bans in force from the old maps whose layout this version can read.
    /// Returns how many were carried.
    pub fn carry_bans(&self, maps: &mut impl Maps) -> Result<usize> {
        let now = clock::boot_ns();
        let mut found: Vec<(String, Ban)> = Vec::new();
        let v6 = bans::v6_prefix(maps)?;
        if let Some(m) = self.readable(map::BANS) {
            let m: HashMap<MapData, [u8; 16], Ban> = HashMap::try_from(m)?;
            for (k, b) in m.iter().filter_map(Result::ok) {
                found.push((bans::exact_name(k, v6), b));
            }
        }
        if let Some(m) = self.readable(map::BAN_NETS) {
            let m: LpmTrie<MapData, [u8; 16], Ban> = LpmTrie::try_from(m)?;
            for (k, b) in m.iter().filter_map(Result::ok) {
                found.push((addr::lpm_to_net(k.prefix_len(), k.data()).to_string(), b));
            }
        }
        let mut n = 0;
        for (t, b) in found.into_iter().filter(|(_, b)| b.active_at(now)) {
            match bans::put(maps, &t, b) {
                Ok(()) => n += 1,
                Err(e) => warn!(target = %t, "carrying a ban to the new maps: {e:#}"),
            }
        }
        Ok(n)
    }

    /// The old pinned map `spec`, if its key and value have this version's layout.
    fn readable(&self, spec: map::Spec) -> Option<Map> {
        let path = self.dir.join(spec.name);
        let data = MapData::from_pin(&path).ok()?;
        let info = data.info().ok()?;
        if info.key_size() != spec.key_size || info.value_size() != spec.value_size {
            warn!(
                map = spec.name,
                "the old {} map has another layout: its bans come from the state file only",
                spec.name
            );
            return None;
        }
        Map::from_map_data(data).ok()
    }

    /// Step 3a: moves the old links into the new directory, where `attach` re-points them.
    pub fn move_links(&self, dir: &Path) -> Result<()> {
        for name in [pins::XDP_LINK, pins::TC_LINK] {
            let from = self.dir.join(name);
            if from.exists() {
                std::fs::rename(&from, dir.join(name))
                    .with_context(|| format!("moving {} into {}", from.display(), dir.display()))?;
            }
        }
        Ok(())
    }

    /// Step 3b: forgets the old maps (the old programs no longer hold them once re-pointed).
    pub fn remove(self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            warn!("removing the old pins {}: {e}", self.dir.display());
        }
        if let Some(parent) = self.dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}
