//! Every map of the dataplane, grouped by role. Each static has a row of the same name in
//! `sip_filter_common::map`, from which userspace pins, checks and shows it.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use sip_filter_common::{
    Ban, CallDigits, CallLimits, CallReply, CallRule, CallWindow, Config, ExtCalls, ExtFailures,
    ExtLock, ExtNumber, Extension, Failures, Flow, FlowKey, GeoBits, GeoKey, Pair, Reason,
    SCRATCH_LEN, SCRATCH_PAD, Source, SourceKey, Trace, UserAgent, map,
};

// --- policy, written by userspace ---------------------------------------------------------

/// The runtime configuration (one entry); both programs read it per packet.
#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(map::CONFIG.max_entries, 0);

/// Trunks and offices: never dropped, never banned. Value unused.
#[map]
pub static ALLOW: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(map::ALLOW.max_entries, 0);

/// Geo-blocking, a fixed-stride multi-level table (see `sip_filter_common::geo`).
/// IPv4: a bitmap of /24s, 64 per word.
#[map]
pub static GEO_V4: Array<GeoBits> = Array::with_max_entries(map::GEO_V4.max_entries, 0);
/// IPv6: the /16 top level.
#[map]
pub static GEO_V6: Array<u32> = Array::with_max_entries(map::GEO_V6.max_entries, 0);
/// The levels below: IPv4 /32s under partial /24s, IPv6 /32, /48 and /64 nodes.
#[map]
pub static GEO_NODES: HashMap<GeoKey, u32> =
    HashMap::with_max_entries(map::GEO_NODES.max_entries, 0);

/// Toll-fraud rules: every dialable form of every prefix (see `calls`); consulted only when
/// `Config::calls_active` is set.
#[map]
pub static CALL_RULES: LpmTrie<CallDigits, CallRule> =
    LpmTrie::with_max_entries(map::CALL_RULES.max_entries, 0);

/// The PBX's trunks: calls from them are inbound, not judged by the call rules. Value unused.
#[map]
pub static TRUNKS: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(map::TRUNKS.max_entries, 0);

/// Per-CPU counts of the calls each rule decided and blocked, by `call_stat_index`; cleared by
/// userspace when the rule list changes.
#[map]
pub static CALL_STATS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(map::CALL_STATS.max_entries, 0);

/// The status lines a refused INVITE is answered with, by `REPLY_RULE` / `REPLY_LIMIT`
/// (padded with spaces).
#[map]
pub static CALL_REPLY: Array<CallReply> = Array::with_max_entries(map::CALL_REPLY.max_entries, 0);

/// The per-extension call limits (one entry; all zero: none).
#[map]
pub static CALL_LIMITS: Array<CallLimits> =
    Array::with_max_entries(map::CALL_LIMITS.max_entries, 0);

/// Per extension: the international calls counted and the hold. An LRU: fake usernames
/// cannot fill it; a hold an eviction loses is written back by the daemon within a second.
#[map]
pub static EXT_CALLS: LruHashMap<Extension, ExtCalls> =
    LruHashMap::with_max_entries(map::EXT_CALLS.max_entries, 0);

/// Per extension and dialled number: the `max_same_number` window.
#[map]
pub static EXT_NUMBERS: LruHashMap<ExtNumber, CallWindow> =
    LruHashMap::with_max_entries(map::EXT_NUMBERS.max_entries, 0);

/// Scanner User-Agents (folded, zero after the end) -> the signature's index; consulted only
/// when `Config::scanners_active` is set.
#[map]
pub static SCANNERS: LpmTrie<UserAgent, u32> =
    LpmTrie::with_max_entries(map::SCANNERS.max_entries, 0);

// --- bans ----------------------------------------------------------------------------------

/// Bans by source (IPv4 address or masked IPv6 prefix). A plain hash, not an LRU: tracking
/// pressure must never evict a ban.
#[map]
pub static BANS: HashMap<[u8; 16], Ban> = HashMap::with_max_entries(map::BANS.max_entries, 0);

/// Locked extensions (`ext_id`), written by egress at the threshold and by nothing else but
/// the operator's `ext unlock` and the daemon's expiry.
#[map]
pub static EXT_LOCKS: HashMap<u64, ExtLock> =
    HashMap::with_max_entries(map::EXT_LOCKS.max_entries, 0);

/// CIDR bans added by an operator; only consulted when `Config::ban_nets_active` is set.
#[map]
pub static BAN_NETS: LpmTrie<[u8; 16], Ban> =
    LpmTrie::with_max_entries(map::BAN_NETS.max_entries, 0);

// --- tracking ------------------------------------------------------------------------------

/// Last request per client socket, written by XDP, read by TC.
#[map]
pub static FLOWS: LruHashMap<FlowKey, Flow> =
    LruHashMap::with_max_entries(map::FLOWS.max_entries, 0);

/// Failure counters per source (IPv4 address or masked IPv6 prefix), written by TC.
#[map]
pub static FAILURES: LruHashMap<[u8; 16], Failures> =
    LruHashMap::with_max_entries(map::FAILURES.max_entries, 0);

/// Per source: the flood guard's bucket (ingress) and the learned trust (egress). An LRU: a
/// flood of new sources evicts the oldest, which only forgets a bucket (a trust is learned
/// again at the next successful REGISTER).
#[map]
pub static SOURCES: LruHashMap<[u8; 16], Source> =
    LruHashMap::with_max_entries(map::SOURCES.max_entries, 0);

/// Per source and extension: the pair's trust, and a trusted source's failures and block for
/// it (egress writes, ingress reads). An LRU: what it evicts is relearned or recounted.
#[map]
pub static PAIRS: LruHashMap<SourceKey, Pair> =
    LruHashMap::with_max_entries(map::PAIRS.max_entries, 0);

/// The nonces the PBX's challenges issued, per client address (egress writes, ingress checks a
/// credentialed request's). Value: when.
#[map]
pub static NONCES: LruHashMap<SourceKey, u64> =
    LruHashMap::with_max_entries(map::NONCES.max_entries, 0);

/// Failures per extension (`ext_id`) from untrusted sources; its name is written by ingress.
#[map]
pub static EXT_FAILURES: LruHashMap<u64, ExtFailures> =
    LruHashMap::with_max_entries(map::EXT_FAILURES.max_entries, 0);

// --- reporting -----------------------------------------------------------------------------

/// Per-CPU counters, indexed by `Reason`.
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(map::STATS.max_entries, 0);

/// Per-CPU counts of the requests each scanner signature caught, by its index.
#[map]
pub static SCANNER_STATS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(map::SCANNER_STATS.max_entries, 0);

/// What the last run on this CPU decided (written only when `Config::trace` is set).
#[map]
pub static TRACE: PerCpuArray<Trace> = PerCpuArray::with_max_entries(map::TRACE.max_entries, 0);

/// Ban events for the daemon's log.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(map::EVENTS.max_entries, 0);

// --- scratch -------------------------------------------------------------------------------

/// Per-CPU copy of a SIP message, so the credential scan indexes a map value with a masked
/// index instead of fighting the verifier over packet pointers inside a loop
/// (docs/verifier.md, pitfall 4).
#[map]
pub static SCRATCH: PerCpuArray<[u8; SCRATCH_LEN + SCRATCH_PAD]> =
    PerCpuArray::with_max_entries(map::CLOCK.max_entries, 0);

/// `sip_inspect` at `INSPECT_SLOT`, filled by the loader: the request inspection, verified apart.
#[map]
pub static PROGS: ProgramArray = ProgramArray::with_max_entries(map::PROGS.max_entries, 0);

/// See `sip_filter_common::CLOCK_INDEX`.
#[map]
pub static CLOCK: Array<u64> = Array::with_max_entries(1, 0);

/// Boot-clock nanoseconds, to the tick: coarse monotonic time plus the suspend offset.
#[inline(always)]
pub fn now() -> u64 {
    let offset = CLOCK.get(0).copied().unwrap_or(0);
    unsafe { aya_ebpf::helpers::generated::bpf_ktime_get_coarse_ns() }.wrapping_add(offset)
}

#[inline(always)]
pub fn count(reason: Reason) {
    count_at(reason as u32);
}

/// Counts at a computed `STATS` index (`Reason::request_index`, `Reason::response_index`).
#[inline(always)]
pub fn count_at(index: u32) {
    if let Some(p) = STATS.get_ptr_mut(index) {
        // Per-CPU slot: no other writer, no atomic needed.
        unsafe { *p += 1 };
    }
}

/// Records in this CPU's trace slot, for replay and the tests, when they asked for it; each
/// fact is written where it is decided.
///
/// The lookup and the write are a subprogram of their own, called only when tracing is on:
/// inlined, each site's map key took a slot of the XDP frame, which shares 512 bytes with the
/// credential scan's subprograms (docs/verifier.md, pitfall 11).
#[inline(always)]
pub fn trace(cfg: &Config, f: impl FnOnce(&mut Trace)) {
    if cfg.trace != 0 {
        record(f);
    }
}

#[inline(never)]
fn record(f: impl FnOnce(&mut Trace)) {
    if let Some(p) = TRACE.get_ptr_mut(0) {
        f(unsafe { &mut *p });
    }
}

#[inline(always)]
pub fn config() -> Option<&'static Config> {
    CONFIG.get(0)
}
