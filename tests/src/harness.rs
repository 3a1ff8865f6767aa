//! Runs frames through the real programs with BPF_PROG_TEST_RUN and reads their maps.
use std::net::IpAddr;

use anyhow::{Context as _, Result, bail};
use aya::{
    maps::{Array, HashMap, MapData, RingBuf, lpm_trie::Key},
    programs::{TestRun, TestRunOptions},
};
use ipnet::IpNet;
use sip_filter::{
    addr, clock,
    dataplane::Dataplane,
    geo::GeoTable,
    maps::{self, Counters, Maps as _},
};
use sip_filter_common::{Ban, BanEvent, Config, Failures, Flow, FlowKey, Trace, map};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const TC_ACT_OK: u32 = 0;

/// The dataplane loaded (not attached), with helpers to drive it packet by packet.
pub struct Harness {
    pub dp: Dataplane,
    geo: GeoTable,
    /// `Config::trace` as `reset` restores it: on for fixtures, off for benchmarks.
    trace: u8,
}

impl Harness {
    /// Loads both programs. Fails loudly without root/BPF: these tests must never skip.
    pub fn new() -> Result<Self> {
        Self::with_sizes(&[])
    }

    /// Loads with some maps resized (to fill them in a test).
    pub fn with_sizes(sizes: &[(&str, u32)]) -> Result<Self> {
        let mut dp = Dataplane::load_with(None, sizes).context(
            "loading the dataplane needs root (CAP_BPF, CAP_NET_ADMIN) and a BPF-capable kernel",
        )?;
        dp.update_config(|c| {
            c.trace = 1;
            c.flood_per_ns = 0;
        })?;
        Ok(Self {
            dp,
            geo: GeoTable::default(),
            trace: 1,
        })
    }

    /// With tracing off, as a live filter runs: what the benchmarks measure.
    pub fn untraced(mut self) -> Result<Self> {
        self.trace = 0;
        self.dp.update_config(|c| c.trace = 0)?;
        Ok(self)
    }

    /// Back to a freshly loaded state: default config (tracing as set, no flood guard), empty tables (counters keep
    /// counting; compare deltas). Every map of the map table whose entries come and go is
    /// emptied, but the geo tables, which change as a difference from what they hold.
    pub fn reset(&mut self) {
        self.dp
            .set_config(&Config {
                trace: self.trace,
                // Off: the fixtures send bursts from one source; the flood fixtures turn it on.
                flood_per_ns: 0,
                ..Config::default()
            })
            .unwrap();
        self.geo_block(&[]).unwrap();
        self.dp.sync_clock().unwrap();
        for spec in map::ALL {
            if spec.kind.has_entries() && spec.role != map::Role::Geo {
                self.dp.clear(spec).unwrap();
            }
        }
        let _ = self.events();
    }

    pub fn configure(&mut self, f: impl FnOnce(&mut Config)) -> &mut Self {
        self.dp.update_config(f).expect("update CONFIG");
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

    /// Runs one frame through XDP, returning the XDP action and what the program recorded.
    pub fn xdp_traced(&mut self, frame: &[u8]) -> (u32, Option<Trace>) {
        self.dp.clear_trace().expect("clear TRACE");
        let action = self.xdp(frame);
        (action, self.dp.trace().expect("read TRACE"))
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

    pub fn stats(&mut self) -> Counters {
        self.dp.stats().expect("read STATS")
    }

    pub fn flow(&mut self, ip: &str, port: u16) -> Option<Flow> {
        let m: HashMap<&mut MapData, FlowKey, Flow> =
            HashMap::try_from(self.dp.map_mut(map::FLOWS.name).expect("FLOWS")).unwrap();
        let k = FlowKey::new(addr::to_key(ip.parse().unwrap()), port);
        m.get(&k, 0).ok()
    }

    pub fn failures(&mut self, ip: &str) -> Option<Failures> {
        let v6_prefix = self.v6_prefix();
        self.dp
            .failures()
            .unwrap()
            .get(&addr::ban_key(ip.parse().unwrap(), v6_prefix), 0)
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
        self.dp.update_config(|c| c.ban_nets_active = 1)
    }

    pub fn allow(&mut self, net: &str) -> Result<()> {
        let (len, k) = addr::net_to_lpm(net.parse()?);
        self.dp.allow()?.insert(&Key::new(len, k), 1, 0)?;
        self.dp.update_config(|c| c.allow_active = 1)
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

    /// Moves the programs' clock on by `ns` (the suspend offset they add; `reset` puts it back).
    pub fn advance_clock(&mut self, ns: u64) {
        let mut m: Array<&mut MapData, u64> =
            Array::try_from(self.dp.map_mut(map::CLOCK.name).unwrap()).unwrap();
        let now = m.get(&sip_filter_common::CLOCK_INDEX, 0).unwrap();
        m.set(sip_filter_common::CLOCK_INDEX, now + ns, 0).unwrap();
    }

    /// Drains the ban events the kernel emitted so far.
    pub fn events(&mut self) -> Result<Vec<BanEvent>> {
        Ok(self.all_events()?.bans)
    }

    /// Drains every event the kernel emitted so far (bans and blocked calls).
    pub fn all_events(&mut self) -> Result<maps::Drained> {
        let mut rb = RingBuf::try_from(self.dp.map_mut(map::EVENTS.name)?)?;
        let d = maps::drain_events(&mut rb);
        if d.bad > 0 {
            bail!("{} records of neither kind", d.bad);
        }
        Ok(d)
    }
}
