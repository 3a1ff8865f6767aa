//! The map table: every map of the dataplane with its kind and layout, declared once.
//!
//! The eBPF crate declares each map as a `#[map]` static of the same name; userspace pins,
//! layout-checks, counts, shows in `status` and resets (tests) the maps by iterating [`ALL`].
//! Loading the object checks that its maps and this table agree (names, kinds, key and value
//! sizes), so a static without a row, or a row whose types drifted, fails at the first load.
//! Adding a map is one static in `sip-filter-ebpf/src/maps.rs` (sized from its row) plus one
//! row here.
use core::mem::size_of;

use crate::{
    Ban, CallDigits, CallLimits, CallReply, CallRule, CallWindow, Config, ExtCalls, ExtFailures,
    ExtLock, ExtNumber, Extension, Failures, Flow, FlowKey, GeoBits, GeoKey, MAX_CALL_RULES,
    MAX_SIGNATURES, Pair, SCRATCH_LEN, SCRATCH_PAD, STATS_SLOTS, Source, SourceKey, Trace,
    UserAgent,
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
    /// Programs the XDP program tail-calls (its slots are filled by the loader, not cleared).
    ProgArray,
}

impl Kind {
    /// Maps whose entries come and go (shown with their fill level in `status`).
    pub const fn has_entries(self) -> bool {
        matches!(self, Kind::Hash | Kind::LruHash | Kind::LpmTrie)
    }

    /// Arrays are indexed by design (a counter, a /24 word): their size is part of the layout,
    /// where the size of the other maps is a deployment's choice (`Dataplane::load_with`).
    pub const fn size_is_layout(self) -> bool {
        matches!(self, Kind::Array | Kind::PerCpuArray | Kind::ProgArray)
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
    /// Entries by default (bytes for a ring buffer); the eBPF static is declared with it.
    pub max_entries: u32,
}

impl Spec {
    /// A map with key type `K` and value type `V`.
    pub const fn of<K, V>(name: &'static str, kind: Kind, role: Role, max_entries: u32) -> Self {
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
            max_entries,
        }
    }
}

type Addr = [u8; 16];
type Scratch = [u8; SCRATCH_LEN + SCRATCH_PAD];

/// Declares each row once: a `pub const` of that name and its place in [`ALL`].
macro_rules! maps {
    ($($(#[$doc:meta])* $name:ident: <$k:ty, $v:ty> $kind:ident, $role:ident, $size:expr;)*) => {
        $($(#[$doc])* pub const $name: Spec =
            Spec::of::<$k, $v>(stringify!($name), Kind::$kind, Role::$role, $size);)*

        /// Every map, in the order `status` shows them (and pins, checks and counts them).
        pub const ALL: &[Spec] = &[$($name,)*];
    };
}

maps! {
    /// The runtime configuration: one entry.
    CONFIG: <u32, Config> Array, Policy, 1;
    /// Active bans issued by the kernel or an operator (exact address / IPv6 prefix).
    BANS: <Addr, Ban> Hash, Bans, 262_144;
    /// CIDR bans added by an operator.
    BAN_NETS: <Addr, Ban> LpmTrie, Bans, 16_384;
    /// Trunks and offices.
    ALLOW: <Addr, u32> LpmTrie, Policy, 16_384;
    /// Per (source address, port) request state: hundreds of thousands of sources.
    FLOWS: <FlowKey, Flow> LruHash, Tracking, 524_288;
    /// Per source failure counters.
    FAILURES: <Addr, Failures> LruHash, Tracking, 524_288;
    /// IPv4 geo bitmap words: 2^24 /24s, 64 per word.
    GEO_V4: <u32, GeoBits> Array, Geo, 1 << 18;
    /// IPv6 geo top level: one entry per /16.
    GEO_V6: <u32, u32> Array, Geo, 65_536;
    /// Geo nodes below the top levels.
    GEO_NODES: <GeoKey, u32> Hash, Geo, 1_048_576;
    /// Counters, indexed by `Reason`.
    STATS: <u32, u64> PerCpuArray, Reporting, STATS_SLOTS;
    /// The last run's record on each CPU.
    TRACE: <u32, Trace> PerCpuArray, Reporting, 1;
    /// Ban events (size in bytes).
    EVENTS: <(), ()> RingBuf, Reporting, 256 * 1024;
    /// The credential scan's copy of a message.
    SCRATCH: <u32, Scratch> PerCpuArray, Scratch, 1;
    /// The suspend offset of the kernel's clock.
    CLOCK: <u32, u64> Array, Policy, 1;
    /// The stages the XDP programs tail-call (`STAGES`).
    PROGS: <u32, u32> ProgArray, Scratch, crate::STAGES.len() as u32;
    /// Every dialable form of every toll-fraud rule: dialled symbols -> verdict.
    CALL_RULES: <CallDigits, CallRule> LpmTrie, Policy, 262_144;
    /// The PBX's trunks: calls from them are inbound, not judged by the call rules.
    TRUNKS: <Addr, u32> LpmTrie, Policy, 1_024;
    /// The status lines a refused INVITE is answered with (`REPLY_RULE`, `REPLY_LIMIT`),
    /// padded with spaces.
    CALL_REPLY: <u32, CallReply> Array, Policy, 2;
    /// The per-extension call limits: one entry.
    CALL_LIMITS: <u32, CallLimits> Array, Policy, 1;
    /// Per extension (digest username): international calls counted and the hold.
    EXT_CALLS: <Extension, ExtCalls> LruHash, Tracking, 65_536;
    /// Per extension and dialled number: calls in the current `max_same_number` window.
    EXT_NUMBERS: <ExtNumber, CallWindow> LruHash, Tracking, 65_536;
    /// Calls each rule decided and blocked (`call_stat_index`), both directions; cleared when
    /// the rule list changes.
    CALL_STATS: <u32, u64> PerCpuArray, Reporting, 2 * MAX_CALL_RULES;
    /// Scanner User-Agent signatures (folded, see `UserAgent`) -> their index in the list.
    SCANNERS: <UserAgent, u32> LpmTrie, Policy, 1_024;
    /// Requests each signature caught, by its index (the first `MAX_SIGNATURES`).
    SCANNER_STATS: <u32, u64> PerCpuArray, Reporting, MAX_SIGNATURES;
    /// Per source: the flood guard's bucket and the learned trust.
    SOURCES: <Addr, Source> LruHash, Tracking, 524_288;
    /// Per source and extension: trust, failures and the block of a trusted source's pair.
    PAIRS: <SourceKey, Pair> LruHash, Tracking, 262_144;
    /// The nonces the PBX issued, per client address (the key's `id`: the nonce's hash).
    NONCES: <SourceKey, u64> LruHash, Tracking, 262_144;
    /// Failures per extension from untrusted sources.
    EXT_FAILURES: <u64, ExtFailures> LruHash, Tracking, 65_536;
    /// Locked extensions (a plain hash: pressure never evicts a lock).
    EXT_LOCKS: <u64, ExtLock> Hash, Bans, 16_384;
}

/// The row of the map called `name`.
pub fn by_name(name: &str) -> Option<&'static Spec> {
    ALL.iter().find(|s| s.name.as_bytes() == name.as_bytes())
}
