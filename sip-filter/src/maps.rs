//! Typed access to the dataplane's maps, whether they come from a freshly loaded object
//! ([`crate::dataplane::Dataplane`]) or from the pins of a running filter ([`Pinned`]).
//! Everything that concerns every map (pinning, the layout check, entry counts, clearing)
//! iterates the map table, `sip_filter_common::map::ALL`.
use std::{
    collections::HashMap as StdHashMap,
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
};

use anyhow::{Context as _, Result, bail};
use aya::maps::{Array, HashMap, LpmTrie, Map, MapData, PerCpuArray, PerCpuValues, RingBuf};
use sip_filter_common::{
    Ban, BanEvent, CallEvent, Config, ExtEvent, Failures, Reason, Trace,
    map::{self, Spec},
};

use crate::geo::{GeoMaps, GeoTable};

/// Per-CPU counters summed, indexed by `Reason`.
pub type Counters = [u64; Reason::COUNT];

pub trait Maps {
    fn map_mut(&mut self, name: &str) -> Result<&mut Map>;
    fn maps3_mut(&mut self, names: [&str; 3]) -> Result<[&mut Map; 3]>;

    fn config(&mut self) -> Result<Config> {
        let m: Array<&mut MapData, Config> = Array::try_from(self.map_mut(map::CONFIG.name)?)?;
        Ok(m.get(&0, 0)?)
    }

    fn set_config(&mut self, cfg: &Config) -> Result<()> {
        let mut m: Array<&mut MapData, Config> = Array::try_from(self.map_mut(map::CONFIG.name)?)?;
        m.set(0, cfg, 0)?;
        Ok(())
    }

    /// Changes some fields of the running configuration (the `*_active` flags, `trace`).
    fn update_config(&mut self, f: impl FnOnce(&mut Config)) -> Result<()> {
        let mut c = self.config()?;
        f(&mut c);
        self.set_config(&c)
    }

    /// Writes the suspend offset the kernel adds to its coarse clock (see `CLOCK_INDEX`).
    fn sync_clock(&mut self) -> Result<()> {
        let mut m: Array<&mut MapData, u64> = Array::try_from(self.map_mut(map::CLOCK.name)?)?;
        m.set(
            sip_filter_common::CLOCK_INDEX,
            crate::clock::suspend_offset_ns(),
            0,
        )?;
        Ok(())
    }

    fn bans(&mut self) -> Result<HashMap<&mut MapData, [u8; 16], Ban>> {
        Ok(HashMap::try_from(self.map_mut(map::BANS.name)?)?)
    }

    fn ban_nets(&mut self) -> Result<LpmTrie<&mut MapData, [u8; 16], Ban>> {
        Ok(LpmTrie::try_from(self.map_mut(map::BAN_NETS.name)?)?)
    }

    fn allow(&mut self) -> Result<LpmTrie<&mut MapData, [u8; 16], u32>> {
        Ok(LpmTrie::try_from(self.map_mut(map::ALLOW.name)?)?)
    }

    fn failures(&mut self) -> Result<HashMap<&mut MapData, [u8; 16], Failures>> {
        Ok(HashMap::try_from(self.map_mut(map::FAILURES.name)?)?)
    }

    /// Per-CPU counters summed, indexed by `Reason`.
    fn stats(&mut self) -> Result<Counters> {
        let map: PerCpuArray<&mut MapData, u64> =
            PerCpuArray::try_from(self.map_mut(map::STATS.name)?)?;
        let mut out = [0u64; Reason::COUNT];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = map.get(&(i as u32), 0)?.iter().sum();
        }
        Ok(out)
    }

    /// Adds one to a counter that userspace keeps (`Reason::BansManual`), in CPU 0's slot.
    fn count(&mut self, reason: Reason) -> Result<()> {
        self.count_n(reason, 1)
    }

    /// Adds `n` to a counter that userspace keeps, in CPU 0's slot.
    fn count_n(&mut self, reason: Reason, n: u64) -> Result<()> {
        let mut map: PerCpuArray<&mut MapData, u64> =
            PerCpuArray::try_from(self.map_mut(map::STATS.name)?)?;
        let mut v: Vec<u64> = map.get(&(reason as u32), 0)?.iter().copied().collect();
        v[0] += n;
        map.set(reason as u32, PerCpuValues::try_from(v)?, 0)?;
        Ok(())
    }

    /// Empties every CPU's trace slot, so the next program run's record is the only one.
    fn clear_trace(&mut self) -> Result<()> {
        let mut map: PerCpuArray<&mut MapData, Trace> =
            PerCpuArray::try_from(self.map_mut(map::TRACE.name)?)?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        let zero = Trace {
            recorded: 0,
            ..Trace::new(0)
        };
        map.set(0, PerCpuValues::try_from(vec![zero; cpus])?, 0)?;
        Ok(())
    }

    /// What the program run since [`Maps::clear_trace`] recorded (on whichever CPU it ran).
    fn trace(&mut self) -> Result<Option<Trace>> {
        let map: PerCpuArray<&mut MapData, Trace> =
            PerCpuArray::try_from(self.map_mut(map::TRACE.name)?)?;
        Ok(map.get(&0, 0)?.iter().find(|t| t.recorded != 0).copied())
    }

    /// Entries in a map whose entries come and go (`map::Kind::has_entries`).
    fn count_entries(&mut self, spec: &Spec) -> Result<usize> {
        let (data, _) = map_data(self.map_mut(spec.name)?)?;
        Ok(raw::keys(data, spec.key_size)?.len())
    }

    /// The map's capacity as loaded (a deployment may resize the hash maps).
    fn max_entries(&mut self, spec: &Spec) -> Result<u32> {
        let (data, _) = map_data(self.map_mut(spec.name)?)?;
        Ok(data.info()?.max_entries())
    }

    /// Deletes every entry of a map whose entries come and go.
    fn clear(&mut self, spec: &Spec) -> Result<()> {
        let (data, _) = map_data(self.map_mut(spec.name)?)?;
        for k in raw::keys(data, spec.key_size)? {
            raw::delete(data, &k)?;
        }
        Ok(())
    }

    fn geo_maps(&mut self) -> Result<GeoMaps<'_>> {
        let [v4, v6, nodes] =
            self.maps3_mut([map::GEO_V4.name, map::GEO_V6.name, map::GEO_NODES.name])?;
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

/// The map behind an aya handle and its kind, for the kinds the map table uses.
pub(crate) fn map_data(m: &Map) -> Result<(&MapData, map::Kind)> {
    use map::Kind;
    Ok(match m {
        Map::Array(d) => (d, Kind::Array),
        Map::PerCpuArray(d) => (d, Kind::PerCpuArray),
        Map::HashMap(d) => (d, Kind::Hash),
        Map::LruHashMap(d) => (d, Kind::LruHash),
        Map::LpmTrie(d) => (d, Kind::LpmTrie),
        Map::RingBuf(d) => (d, Kind::RingBuf),
        Map::ProgramArray(d) => (d, Kind::ProgArray),
        other => bail!("a map of a kind the map table does not use: {other:?}"),
    })
}

/// One record of the `EVENTS` ring buffer, told apart by its size.
#[derive(Clone, Debug)]
pub enum Record {
    Ban(BanEvent),
    Call(Box<CallEvent>),
    Ext(ExtEvent),
}

/// The record in `item`, if it is one of ours.
pub fn decode_event(item: &[u8]) -> Option<Record> {
    // SAFETY: the kernel wrote a BanEvent or a CallEvent (repr(C), every bit pattern valid),
    // whose size is the record's length.
    unsafe {
        match item.len() {
            n if n == size_of::<BanEvent>() => Some(Record::Ban(std::ptr::read_unaligned(
                item.as_ptr().cast::<BanEvent>(),
            ))),
            n if n == size_of::<CallEvent>() => Some(Record::Call(Box::new(
                std::ptr::read_unaligned(item.as_ptr().cast::<CallEvent>()),
            ))),
            n if n == size_of::<ExtEvent>() => Some(Record::Ext(std::ptr::read_unaligned(
                item.as_ptr().cast::<ExtEvent>(),
            ))),
            _ => None,
        }
    }
}

/// What the ring buffer held: ban events, blocked-call events, and records of neither kind.
#[derive(Debug, Default)]
pub struct Drained {
    pub bans: Vec<BanEvent>,
    pub calls: Vec<CallEvent>,
    /// Extensions locked and pairs blocked.
    pub exts: Vec<ExtEvent>,
    pub bad: usize,
}

/// Every record waiting in the ring buffer.
pub fn drain_events<T: std::borrow::BorrowMut<MapData>>(ring: &mut RingBuf<T>) -> Drained {
    let mut d = Drained::default();
    while let Some(item) = ring.next() {
        match decode_event(&item) {
            Some(Record::Ban(e)) => d.bans.push(e),
            Some(Record::Call(e)) => d.calls.push(*e),
            Some(Record::Ext(e)) => d.exts.push(e),
            None => d.bad += 1,
        }
    }
    d
}

/// Map operations on keys of a size known at run time (from the map table), which aya's
/// typed handles cannot express: counting and clearing any map.
mod raw {
    use super::*;

    const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
    const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;

    /// `union bpf_attr` for element commands.
    #[repr(C)]
    struct ElemAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        next_key: u64,
        flags: u64,
    }

    fn bpf(cmd: libc::c_long, attr: &ElemAttr) -> std::io::Result<()> {
        // SAFETY: `attr` is a valid bpf_attr prefix for element commands, its pointers point at
        // buffers of the map's key size that outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                attr as *const ElemAttr,
                size_of::<ElemAttr>(),
            )
        };
        if rc < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    pub fn keys(m: &MapData, key_size: u32) -> Result<Vec<Vec<u8>>> {
        let fd = m.fd().as_fd().as_raw_fd() as u32;
        let mut out: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut next = vec![0u8; key_size as usize];
            let attr = ElemAttr {
                map_fd: fd,
                _pad: 0,
                key: out.last().map_or(0, |k| k.as_ptr() as u64),
                next_key: next.as_mut_ptr() as u64,
                flags: 0,
            };
            match bpf(BPF_MAP_GET_NEXT_KEY, &attr) {
                Ok(()) => out.push(next),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
                Err(e) => return Err(e).context("bpf_map_get_next_key"),
            }
        }
    }

    pub fn delete(m: &MapData, key: &[u8]) -> Result<()> {
        let attr = ElemAttr {
            map_fd: m.fd().as_fd().as_raw_fd() as u32,
            _pad: 0,
            key: key.as_ptr() as u64,
            next_key: 0,
            flags: 0,
        };
        match bpf(BPF_MAP_DELETE_ELEM, &attr) {
            // Gone already (an LRU eviction, the kernel): what we wanted.
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => {
                Err(e).context("bpf_map_delete_elem")
            }
            _ => Ok(()),
        }
    }
}

/// Checks that a map of a loaded object (or a pin) has the layout of its map table row: key
/// and value sizes, and the size of arrays (a STATS with fewer slots, say).
pub fn check_spec(spec: &Spec, info: &aya::maps::MapInfo, what: &str) -> Result<()> {
    if spec.kind.size_is_layout() && info.max_entries() != spec.max_entries {
        bail!(
            "{what} has {} entries, this version uses {}",
            info.max_entries(),
            spec.max_entries
        );
    }
    if (info.key_size(), info.value_size()) != (spec.key_size, spec.value_size) {
        bail!(
            "{what} has key/value size {}/{}, this version uses {}/{}",
            info.key_size(),
            info.value_size(),
            spec.key_size,
            spec.value_size
        );
    }
    Ok(())
}

/// Refuses pins whose layout differs from this build's (left by another sip-filter version).
pub fn check_layout(dir: &Path) -> Result<()> {
    // A directory without CONFIG holds no filter (a first start).
    if !dir.join(map::CONFIG.name).exists() {
        return Ok(());
    }
    for spec in map::ALL {
        let path = dir.join(spec.name);
        if !path.exists() {
            bail!(
                "{} has no {} map: it was pinned by another sip-filter version; start this \
                 version's daemon (`sip-filter run`) to carry its bans onto new maps in place",
                dir.display(),
                spec.name,
            );
        }
        let info = aya::maps::MapInfo::from_pin(&path)
            .with_context(|| format!("reading pinned map {}", path.display()))?;
        check_spec(spec, &info, &path.display().to_string()).with_context(|| {
            format!(
                "{} was pinned by another sip-filter version; start this version's daemon \
                 (`sip-filter run`) to carry its bans onto new maps in place",
                path.display(),
            )
        })?;
    }
    Ok(())
}

/// The maps of a filter attached by a (possibly stopped) daemon, opened from bpffs.
pub struct Pinned {
    maps: StdHashMap<&'static str, Map>,
}

impl Pinned {
    pub fn open(dir: &Path) -> Result<Self> {
        check_layout(dir)?;
        let mut maps = StdHashMap::new();
        for spec in map::ALL {
            let path = dir.join(spec.name);
            let data = MapData::from_pin(&path)
                .with_context(|| format!("opening pinned map {}", path.display()))?;
            maps.insert(spec.name, Map::from_map_data(data)?);
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
