//! Runs frames through the real programs with BPF_PROG_TEST_RUN and reads their maps.
use std::net::IpAddr;

use anyhow::{Context as _, Result, bail};
use aya::{
    maps::{HashMap, MapData, RingBuf, lpm_trie::Key},
    programs::{TestRun, TestRunOptions},
};
use ipnet::IpNet;
use sip_filter::{addr, clock, dataplane::Dataplane, geo::GeoTable, maps::Maps as _};
use sip_filter_common::{Ban, BanEvent, Config, Failures, Flow, FlowKey, map_names, stat};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const TC_ACT_OK: u32 = 0;

/// The dataplane loaded (not attached), with helpers to drive it packet by packet.
pub struct Harness {
    pub dp: Dataplane,
    geo: GeoTable,
}

impl Harness {
    /// Loads both programs. Fails loudly without root/BPF: these tests must never skip.
    pub fn new() -> Result<Self> {
        Self::with_sizes(&[])
    }

    /// Loads with some maps resized (to fill them in a test).
    pub fn with_sizes(sizes: &[(&str, u32)]) -> Result<Self> {
        let dp = Dataplane::load_with(None, sizes).context(
            "loading the dataplane needs root (CAP_BPF, CAP_NET_ADMIN) and a BPF-capable kernel",
        )?;
        Ok(Self {
            dp,
            geo: GeoTable::default(),
        })
    }

    /// Back to a freshly loaded state: default config, empty tables (counters keep counting;
    /// compare deltas).
    pub fn reset(&mut self) {
        self.dp.set_config(&Config::default()).unwrap();
        self.geo_block(&[]).unwrap();
        let ebpf = &mut self.dp.ebpf;
        clear::<FlowKey, Flow>(ebpf, map_names::FLOWS);
        clear::<[u8; 16], Failures>(ebpf, map_names::FAILURES);
        clear::<[u8; 16], Ban>(ebpf, map_names::BANS);
        clear_lpm::<Ban>(ebpf, map_names::BAN_NETS);
        clear_lpm::<u32>(ebpf, map_names::ALLOW);
        let _ = self.events();
    }

    pub fn configure(&mut self, f: impl FnOnce(&mut Config)) -> &mut Self {
        let mut c = self.dp.config().expect("read CONFIG");
        f(&mut c);
        self.dp.set_config(&c).expect("write CONFIG");
        self
    }

    /// Runs one frame through XDP, returning the XDP action.
    pub fn xdp(&self, frame: &[u8]) -> u32 {
        self.dp
            .xdp()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ..Default::default()
            })
            .expect("XDP test_run")
            .return_value
    }

    /// Runs one frame through TC egress, returning the TC action.
    pub fn tc(&self, frame: &[u8]) -> u32 {
        self.dp
            .tc()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ..Default::default()
            })
            .expect("TC test_run")
            .return_value
    }

    /// Mean nanoseconds per run of `frame` through XDP over `repeat` runs.
    pub fn xdp_cost(&self, frame: &[u8], repeat: u32) -> Result<(u32, f64)> {
        let r = self.dp.xdp().test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        })?;
        Ok((r.return_value, r.duration.as_nanos() as f64))
    }

    pub fn stats(&mut self) -> [u64; stat::COUNT as usize] {
        self.dp.stats().expect("read STATS")
    }

    pub fn flow(&mut self, ip: &str, port: u16) -> Option<Flow> {
        let m: HashMap<&mut MapData, FlowKey, Flow> =
            HashMap::try_from(self.dp.ebpf.map_mut(map_names::FLOWS).expect("FLOWS")).unwrap();
        let k = FlowKey {
            addr: addr::to_key(ip.parse().unwrap()),
            port,
            _pad: [0; 2],
        };
        m.get(&k, 0).ok()
    }

    pub fn failures(&mut self, ip: &str) -> Option<Failures> {
        let v6_prefix = self.v6_prefix();
        let m: HashMap<&mut MapData, [u8; 16], Failures> =
            HashMap::try_from(self.dp.ebpf.map_mut(map_names::FAILURES).expect("FAILURES"))
                .unwrap();
        m.get(&addr::ban_key(ip.parse().unwrap(), v6_prefix), 0)
            .ok()
    }

    fn v6_prefix(&mut self) -> u8 {
        let c = self.dp.config().unwrap();
        c.v6_mask.iter().map(|b| b.count_ones() as u8).sum()
    }

    /// The ban on a source, whether or not it has expired.
    pub fn ban(&mut self, ip: &str) -> Option<Ban> {
        let v6_prefix = self.v6_prefix();
        let k = addr::ban_key(ip.parse().unwrap(), v6_prefix);
        self.dp.bans().unwrap().get(&k, 0).ok()
    }

    pub fn ban_count(&mut self) -> usize {
        self.dp.bans().unwrap().keys().count()
    }

    /// Bans a source by hand for `secs` seconds (0: permanent).
    pub fn add_ban(&mut self, ip: &str, secs: u64) -> Result<()> {
        let now = clock::boot_ns();
        self.add_ban_until(
            ip,
            if secs == 0 {
                0
            } else {
                now + secs * 1_000_000_000
            },
        )
    }

    /// Bans a source until the boot-clock instant `expires_ns` (0: permanent).
    pub fn add_ban_until(&mut self, ip: &str, expires_ns: u64) -> Result<()> {
        let now = clock::boot_ns();
        let v6_prefix = self.v6_prefix();
        let k = addr::ban_key(ip.parse::<IpAddr>()?, v6_prefix);
        self.dp
            .bans()?
            .insert(k, Ban::manual(now, expires_ns, [0; 32]), 0)?;
        Ok(())
    }

    pub fn add_ban_net(&mut self, net: &str) -> Result<()> {
        let (len, k) = addr::net_to_lpm(net.parse()?);
        let b = Ban::manual(clock::boot_ns(), 0, [0; 32]);
        self.dp.ban_nets()?.insert(&Key::new(len, k), b, 0)?;
        self.configure(|c| c.ban_nets_active = 1);
        Ok(())
    }

    pub fn allow(&mut self, net: &str) -> Result<()> {
        let (len, k) = addr::net_to_lpm(net.parse()?);
        self.dp.allow()?.insert(&Key::new(len, k), 1, 0)?;
        self.configure(|c| c.allow_active = 1);
        Ok(())
    }

    /// Replaces the geo-blocked prefixes.
    pub fn geo_block(&mut self, nets: &[&str]) -> Result<()> {
        let nets: Vec<IpNet> = nets.iter().map(|n| n.parse()).collect::<Result<_, _>>()?;
        let new = GeoTable::build(nets)?;
        self.dp.geo_maps()?.apply(&self.geo, &new)?;
        let active = !new.is_empty();
        self.geo = new;
        self.configure(|c| c.geo_active = u8::from(active));
        Ok(())
    }

    /// Drains the ban events the kernel emitted so far.
    pub fn events(&mut self) -> Result<Vec<BanEvent>> {
        let mut rb = RingBuf::try_from(self.dp.ebpf.map_mut(map_names::EVENTS).context("EVENTS")?)?;
        let mut out = Vec::new();
        while let Some(item) = rb.next() {
            if item.len() < size_of::<BanEvent>() {
                bail!("short ban event: {} bytes", item.len());
            }
            // SAFETY: the kernel wrote a BanEvent (repr(C), any bit pattern valid).
            out.push(unsafe { std::ptr::read_unaligned(item.as_ptr() as *const BanEvent) });
        }
        Ok(out)
    }
}

fn clear<K: aya::Pod, V: aya::Pod>(ebpf: &mut aya::Ebpf, name: &str) {
    let mut m: HashMap<&mut MapData, K, V> =
        HashMap::try_from(ebpf.map_mut(name).unwrap()).unwrap();
    let keys: Vec<K> = m.keys().filter_map(Result::ok).collect();
    for k in keys {
        let _ = m.remove(&k);
    }
}

fn clear_lpm<V: aya::Pod>(ebpf: &mut aya::Ebpf, name: &str) {
    let mut m: aya::maps::LpmTrie<&mut MapData, [u8; 16], V> =
        aya::maps::LpmTrie::try_from(ebpf.map_mut(name).unwrap()).unwrap();
    let keys: Vec<Key<[u8; 16]>> = m.keys().filter_map(Result::ok).collect();
    for k in keys {
        let _ = m.remove(&k);
    }
}
