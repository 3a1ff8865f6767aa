//! The map table: every map of the dataplane with its kind and layout, declared once.
//!
//! The eBPF crate declares each map as a `#[map]` static of the same name; userspace pins,
//! layout-checks, counts, shows in `status` and resets (tests) the maps by iterating [`ALL`].
//! Loading the object checks that its maps and this table agree (names, kinds, key and value
//! sizes), so a static without a row, or a row whose types drifted, fails at the first load.
//! Adding a map is one static in `sip-filter-ebpf/src/maps.rs` plus one row here.
use core::mem::size_of;

use crate::{
    Ban, Config, Failures, Flow, FlowKey, GeoBits, GeoKey, SCRATCH_LEN, SCRATCH_PAD, Trace,
};

/// The kernel map types the dataplane uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Array,
    PerCpuArray,
    Hash,
    LruHash,
    LpmTrie,
    RingBuf,
}

impl Kind {
    /// Maps whose entries come and go (shown with their fill level in `status`).
    pub const fn has_entries(self) -> bool {
        matches!(self, Kind::Hash | Kind::LruHash | Kind::LpmTrie)
    }
}

/// What a map is for; decides what a test harness clears between fixtures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Written by userspace from the configuration and the CLI.
    Policy,
    /// The geo-blocking tables (compiled by userspace, replaced as a difference).
    Geo,
    /// Bans, written by the egress program and userspace.
    Bans,
    /// Per-client state the programs keep.
    Tracking,
    /// Counters, events and traces read by userspace.
    Reporting,
    /// Per-CPU working memory of the programs.
    Scratch,
}

/// One map: its name in the object (and pin file name), kind, role and layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    pub name: &'static str,
    pub kind: Kind,
    pub role: Role,
    /// Key and value sizes as the kernel reports them (an LPM trie key has a 4-byte prefix
    /// length before the data; a ring buffer has neither).
    pub key_size: u32,
    pub value_size: u32,
}

impl Spec {
    /// A map with key type `K` and value type `V`.
    pub const fn of<K, V>(name: &'static str, kind: Kind, role: Role) -> Self {
        let (key_size, value_size) = match kind {
            Kind::LpmTrie => (4 + size_of::<K>(), size_of::<V>()),
            Kind::RingBuf => (0, 0),
            _ => (size_of::<K>(), size_of::<V>()),
        };
        Self {
            name,
            kind,
            role,
            key_size: key_size as u32,
            value_size: value_size as u32,
        }
    }
}

type Addr = [u8; 16];
type Scratch = [u8; SCRATCH_LEN + SCRATCH_PAD];

pub const CONFIG: Spec = Spec::of::<u32, Config>("CONFIG", Kind::Array, Role::Policy);
pub const ALLOW: Spec = Spec::of::<Addr, u32>("ALLOW", Kind::LpmTrie, Role::Policy);
pub const GEO_V4: Spec = Spec::of::<u32, GeoBits>("GEO_V4", Kind::Array, Role::Geo);
pub const GEO_V6: Spec = Spec::of::<u32, u32>("GEO_V6", Kind::Array, Role::Geo);
pub const GEO_NODES: Spec = Spec::of::<GeoKey, u32>("GEO_NODES", Kind::Hash, Role::Geo);
pub const BANS: Spec = Spec::of::<Addr, Ban>("BANS", Kind::Hash, Role::Bans);
pub const BAN_NETS: Spec = Spec::of::<Addr, Ban>("BAN_NETS", Kind::LpmTrie, Role::Bans);
pub const FLOWS: Spec = Spec::of::<FlowKey, Flow>("FLOWS", Kind::LruHash, Role::Tracking);
pub const FAILURES: Spec = Spec::of::<Addr, Failures>("FAILURES", Kind::LruHash, Role::Tracking);
pub const STATS: Spec = Spec::of::<u32, u64>("STATS", Kind::PerCpuArray, Role::Reporting);
pub const TRACE: Spec = Spec::of::<u32, Trace>("TRACE", Kind::PerCpuArray, Role::Reporting);
pub const EVENTS: Spec = Spec::of::<(), ()>("EVENTS", Kind::RingBuf, Role::Reporting);
pub const SCRATCH: Spec = Spec::of::<u32, Scratch>("SCRATCH", Kind::PerCpuArray, Role::Scratch);
pub const CLOCK: Spec = Spec::of::<u32, u64>("CLOCK", Kind::Array, Role::Policy);

/// Every map, in the order `status` shows them.
pub const ALL: &[Spec] = &[
    CONFIG, ALLOW, GEO_V4, GEO_V6, GEO_NODES, BANS, BAN_NETS, FLOWS, FAILURES, STATS, TRACE,
    EVENTS, SCRATCH, CLOCK,
];

/// The row of the map called `name`.
pub fn by_name(name: &str) -> Option<&'static Spec> {
    ALL.iter().find(|s| s.name.as_bytes() == name.as_bytes())
}
