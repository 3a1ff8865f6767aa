//! Types and constants shared by the eBPF programs and userspace.
//!
//! Every struct is `#[repr(C)]` with explicit padding fields so that the kernel and userspace
//! agree on layout byte for byte: the size assertions at the end of this file fail the build if
//! a struct grows implicit padding, and loading the object checks every map's key and value
//! size against the map table (`map::ALL`), which is built from these types.
//!
//! Addresses are always 16 bytes in network order: IPv6 as is, IPv4 as an IPv4-mapped IPv6 address
//! (`::ffff:a.b.c.d`). One key type lets one map hold both families. Prefix lengths stored in maps
//! are in that 128-bit space (an IPv4 /24 is stored as /120).
#![no_std]

/// Maximum number of UDP ports inspected as SIP.
pub const MAX_PORTS: usize = 8;

/// Bytes of SIP message copied to the scratch buffer and scanned for credentials.
pub const SCAN_BUF: usize = 2048;
/// Size of the per-CPU scratch buffer: a power of two, at least `SCAN_BUF` plus the zeroed
/// tail and the widest read past a line start, so that an index masked with `SCRATCH_LEN - 1`
/// is always in bounds and never wraps into the message.
pub const SCRATCH_LEN: usize = 2 * SCAN_BUF;
/// Bytes past `SCRATCH_LEN` in the scratch value, so that an 8-byte read at the largest masked
/// index stays inside it (the verifier checks the index bound, not what the index can be;
/// docs/verifier.md, pitfall 4).
pub const SCRATCH_PAD: usize = 32;

/// Prefix length added to an IPv4 prefix to place it in the IPv4-mapped IPv6 space.
pub const V4_MAPPED_PREFIX: u32 = 96;

pub mod map;
mod reason;
pub use reason::{Reason, STATS_SLOTS};

/// `CLOCK[0]`: `CLOCK_BOOTTIME - CLOCK_MONOTONIC` in nanoseconds (time spent suspended), written
/// at load and refreshed by the daemon every second. If the host suspends while no daemon runs,
/// the kernel's clock lags by the suspend and bans end that much later, never earlier.
pub const CLOCK_INDEX: u32 = 0;

/// Program names in the object file.
pub const XDP_PROG: &str = "sip_xdp";
/// The SIP request inspection: an XDP program of its own, tail-called by `sip_xdp` from
/// `PROGS[INSPECT_SLOT]`, so that the kernel verifies it on its own budget (docs/verifier.md, 12).
pub const INSPECT_PROG: &str = "sip_inspect";
pub const INSPECT_SLOT: u32 = 0;
/// The toll-fraud check of INVITEs and ACKs, tail-called by `sip_xdp` from `PROGS[CALLS_SLOT]`
/// while call rules are in force; it goes on to the inspection for calls it does not block.
pub const CALLS_PROG: &str = "sip_calls";
pub const CALLS_SLOT: u32 = 1;
/// The per-extension call limits, tail-called by `sip_inspect` for an international INVITE
/// with credentials (their scan and counting would crowd the inspection's verifier budget).
pub const LIMITS_PROG: &str = "sip_limits";
pub const LIMITS_SLOT: u32 = 2;
/// Every program tail-called through `PROGS`: (name, slot, what it is). The loader fills the
/// slots from it and the tests check each one's verifier budget.
pub const STAGES: &[(&str, u32, &str)] = &[
    (INSPECT_PROG, INSPECT_SLOT, "the request inspection"),
    (CALLS_PROG, CALLS_SLOT, "the call rules"),
    (LIMITS_PROG, LIMITS_SLOT, "the call limits"),
];
pub const TC_PROG: &str = "sip_tc";
/// An empty XDP program kept in the object as the benchmarks' baseline.
pub const PASS_PROG: &str = "sip_pass";

/// `Config::ban_scope` values.
pub const BAN_SCOPE_ALL: u8 = 0;
pub const BAN_SCOPE_SIP: u8 = 1;

/// Runtime configuration, one entry in the `CONFIG` array map. Userspace rewrites it at any time;
/// both programs read it per packet, so a change applies without reloading anything.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// UDP ports inspected as SIP (first `nports` entries are used). With `ban_scope = sip`
    /// these ports are also the TCP ports a ban covers.
    pub ports: [u16; MAX_PORTS],
    /// SIP over TLS port (TCP); covered by a ban when `ban_scope = sip`.
    pub tls_port: u16,
    pub nports: u8,
    pub ban_scope: u8,
    /// Non-zero when the allowlist holds entries (saves a trie lookup per packet otherwise).
    pub allow_active: u8,
    /// Non-zero when operators added CIDR bans.
    pub ban_nets_active: u8,
    /// Non-zero when geo tables hold entries.
    pub geo_active: u8,
    /// Non-zero to have each program run record its verdict in `TRACE` (replay and tests set
    /// it; a live filter leaves it off and pays nothing).
    pub trace: u8,
    /// Non-zero when `CALL_RULES` holds the toll-fraud rules: INVITEs are judged by them.
    pub calls_active: u8,
    pub _pad: [u8; 7],
    /// Mask applied to IPv6 sources before tracking and banning (e.g. /64 = 8 x 0xff, 8 x 0).
    pub v6_mask: [u8; 16],
    pub auth_max_failures: u32,
    /// Extension scans: 404s to REGISTER/INVITE.
    pub scan_max_not_found: u32,
    pub auth_find_time_ns: u64,
    pub auth_ban_time_ns: u64,
    pub scan_find_time_ns: u64,
    pub scan_ban_time_ns: u64,
    /// Scanner signatures: non-zero when `SCANNERS` holds User-Agents that ban at the first
    /// request, for this long.
    pub scanners_active: u8,
    pub _pad2: [u8; 7],
    pub scanner_ban_time_ns: u64,
    /// The flood guard (a GCRA token bucket per source over its SIP requests): a request
    /// costs `flood_interval_ns` (`per / max_requests`; a trusted source's is `trusted_factor`
    /// times smaller), and a source more than `flood_per_ns` ahead of the clock is over
    /// (`max_requests` at once, `max_requests` per `per` after). 0: no flood guard.
    pub flood_interval_ns: u64,
    pub flood_trusted_interval_ns: u64,
    pub flood_per_ns: u64,
    /// How long a source over the limit is dropped (a `BANS` entry of reason `Flood`).
    pub flood_block_ns: u64,
    /// How long a 2xx to a credentialed request makes its source trusted.
    pub trust_time_ns: u64,
    /// Failures of one extension from untrusted sources that lock it (0: off).
    pub ext_max_failures: u32,
    /// Extensions a trusted source may fail on before it is banned as a whole.
    pub max_failing_exts: u32,
}

impl Config {
    pub const fn v6_mask_for(prefix: u8) -> [u8; 16] {
        let mut m = [0u8; 16];
        let mut i = 0;
        while i < 16 {
            let bits = prefix as i32 - (i as i32) * 8;
            m[i] = if bits >= 8 {
                0xff
            } else if bits <= 0 {
                0
            } else {
                0xffu8 << (8 - bits)
            };
            i += 1;
        }
        m
    }
}

impl Default for Config {
    fn default() -> Self {
        const SEC: u64 = 1_000_000_000;
        let mut ports = [0u16; MAX_PORTS];
        ports[0] = 5060;
        Self {
            ports,
            tls_port: 5061,
            nports: 1,
            ban_scope: BAN_SCOPE_ALL,
            allow_active: 0,
            ban_nets_active: 0,
            geo_active: 0,
            trace: 0,
            calls_active: 0,
            _pad: [0; 7],
            v6_mask: Self::v6_mask_for(64),
            auth_max_failures: 5,
            scan_max_not_found: 10,
            auth_find_time_ns: 60 * SEC,
            auth_ban_time_ns: 3600 * SEC,
            scan_find_time_ns: 60 * SEC,
            scan_ban_time_ns: 3600 * SEC,
            scanners_active: 0,
            _pad2: [0; 7],
            scanner_ban_time_ns: 86_400 * SEC,
            // 30 requests per 2 s, ten times that for a trusted source.
            flood_interval_ns: 2 * SEC / 30,
            flood_trusted_interval_ns: 2 * SEC / 300,
            flood_per_ns: 2 * SEC,
            flood_block_ns: 300 * SEC,
            trust_time_ns: 86_400 * SEC,
            ext_max_failures: 10,
            max_failing_exts: 3,
        }
    }
}

/// Why an address is banned.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BanReason {
    /// 403s, and 401/407s to requests that carried credentials.
    AuthFailures = 1,
    /// 404s to REGISTER/INVITE: extension enumeration.
    NotFound = 2,
    /// Added by an operator.
    Manual = 3,
    /// Its User-Agent is a scanner's (`[scanners]`): banned at the first request.
    Scanner = 4,
    /// Over the flood guard's rate (`[flood]`): dropped for `block_for`. Not a ban: no
    /// offence in the history.
    Flood = 5,
    /// A credentialed request for a locked extension from a source not trusted for it.
    LockedExtension = 6,
    /// A CrowdSec decision (`[crowdsec]`): another host's ban, or a community blocklist's.
    /// Userspace writes and lifts these; a local ban of the same target takes precedence.
    Crowdsec = 7,
    /// An APIBAN entry (`[apiban]`): an address its SIP honeypots saw, kept 7 days. Written
    /// and lifted like `Crowdsec`.
    Apiban = 8,
}

impl BanReason {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::AuthFailures),
            2 => Some(Self::NotFound),
            3 => Some(Self::Manual),
            4 => Some(Self::Scanner),
            5 => Some(Self::Flood),
            6 => Some(Self::LockedExtension),
            7 => Some(Self::Crowdsec),
            8 => Some(Self::Apiban),
            _ => None,
        }
    }
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AuthFailures => "auth-failures",
            Self::NotFound => "extension-scan",
            Self::Manual => "manual",
            Self::Scanner => "scanner",
            Self::Flood => "flood",
            Self::LockedExtension => "locked-extension",
            Self::Crowdsec => "crowdsec",
            Self::Apiban => "apiban",
        }
    }

    /// The counter of the bans made for this reason (the kernel counts its own, `bans::add`
    /// the operators').
    pub const fn counter(self) -> Option<Reason> {
        match self {
            Self::AuthFailures => Some(Reason::BansAuth),
            Self::NotFound => Some(Reason::BansScan),
            Self::Manual => Some(Reason::BansManual),
            Self::Scanner => Some(Reason::BansScanner),
            Self::Flood => Some(Reason::FloodLimited),
            Self::LockedExtension => Some(Reason::BansLockedExt),
            Self::Crowdsec | Self::Apiban => None,
        }
    }

    /// What `ban list` calls an entry of this reason: a `ban`, or a temporary `rate-limit`.
    pub const fn kind(self) -> &'static str {
        match self {
            Self::Flood => "rate-limit",
            _ => "ban",
        }
    }

    /// Every reason, for reports that list them all.
    pub const ALL: [BanReason; 8] = [
        Self::AuthFailures,
        Self::NotFound,
        Self::Manual,
        Self::Scanner,
        Self::Flood,
        Self::LockedExtension,
        Self::Crowdsec,
        Self::Apiban,
    ];

    /// Held for a shared blocklist (not this host's own ban): kept out of the offence
    /// history, and a local ban of the same target replaces it.
    pub const fn is_shared(self) -> bool {
        matches!(self, Self::Crowdsec | Self::Apiban)
    }

    /// The reason named `name` (what `as_str` gives; the state file stores names).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

/// Value of `BANS` (key: masked source address) and `BAN_NETS` (key: LPM prefix).
/// Times are `CLOCK_BOOTTIME` nanoseconds, which keep counting during suspend. The kernel side
/// reads `bpf_ktime_get_coarse_ns() + CLOCK[0]` (see `CLOCK`): the precise boot clock helper costs
/// more than the rest of a drop, and ban times need no better than the 4 ms tick.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ban {
    pub created_ns: u64,
    /// 0 means permanent.
    pub expires_ns: u64,
    /// When the first counted failure of the window happened (0 for manual bans).
    pub first_failure_ns: u64,
    pub failures: u32,
    pub reason: u8,
    pub _pad: [u8; 3],
    /// Operator's note (`ban add --reason`), UTF-8, zero-padded; zeros for kernel bans.
    pub note: [u8; 32],
}

impl Ban {
    /// An operator's ban made at `now_ns` until `expires_ns` (0: permanent), with a note.
    pub const fn manual(now_ns: u64, expires_ns: u64, note: [u8; 32]) -> Self {
        Self {
            created_ns: now_ns,
            expires_ns,
            first_failure_ns: 0,
            failures: 0,
            reason: BanReason::Manual as u8,
            _pad: [0; 3],
            note,
        }
    }

    /// A ban is in force until `expires_ns`; the kernel treats an expired ban as absent.
    #[inline(always)]
    pub const fn active_at(&self, now_ns: u64) -> bool {
        self.expires_ns == 0 || now_ns < self.expires_ns
    }
}

/// Symbols of a dialled number that a `CALL_RULES` key holds: `+` and ASCII digits, as the
/// Request-URI's user part has them once `%2B` is read as `+` and the separators `-.()` are
/// dropped. E.164 numbers have at most 15 digits; prefixes (outside line, international
/// prefix) fit in the rest. Longer numbers are looked up by their first symbols.
pub const CALL_SYMBOLS: usize = 24;
/// The data of a `CALL_RULES` key (its LPM prefix length is 8 bits per symbol).
pub type CallDigits = [u8; CALL_SYMBOLS];

/// Value of `CALL_RULES`: what a call to a number with this dialable form gets.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CallRule {
    /// Non-zero: blocked now (userspace flips after-hours rules at the schedule's edges).
    pub blocked: u8,
    /// Fewer digits than this in the user part: an extension or local number, not matched.
    pub min_digits: u8,
    /// Non-zero: an international number, counted by the per-extension limits.
    pub international: u8,
    pub _pad: u8,
    /// The rule's index in userspace's rule list (for logs and `stats`).
    pub rule: u32,
}

/// Bytes of `CALL_REPLY`: the status line a blocked INVITE's request line is overwritten with
/// (as many bytes as the request line had, so nothing else in the packet moves).
pub const CALL_REPLY_LEN: usize = 256;
pub type CallReply = [u8; CALL_REPLY_LEN];

/// Rules counted in `CALL_STATS` (two per-CPU counters each); rules past it decide calls
/// all the same, uncounted.
pub const MAX_CALL_RULES: u32 = 4_096;
/// `CALL_STATS` index of a rule's counter: calls it decided, or (`blocked`) blocked.
pub const fn call_stat_index(rule: u32, blocked: bool) -> u32 {
    rule * 2 + blocked as u32
}

/// Bytes of a message the call check copies (the request line and the first headers): what
/// the Request-URI scan reads and what a `CallEvent` carries for the log.
pub const CALL_COPY: usize = 512;

/// `CallEvent::direction` values.
pub const CALL_INGRESS: u8 = 0;
pub const CALL_EGRESS: u8 = 1;

/// `CallEvent::verdict` values: why the call was refused.
pub mod call_verdict {
    /// A destination rule (`CallEvent::rule`) blocks it.
    pub const RULE: u8 = 0;
    /// It is over `max_calls_per_minute`: the extension is held from now.
    pub const OVER_PER_MINUTE: u8 = 1;
    /// It is over `max_same_number`: the extension is held from now.
    pub const OVER_SAME_NUMBER: u8 = 2;
    /// The extension is held (`block_for` has not run out).
    pub const HELD: u8 = 3;
}

/// `CALL_REPLY` entries: the status line for each kind of refusal.
pub const REPLY_RULE: u32 = 0;
pub const REPLY_LIMIT: u32 = 1;

/// Bytes of an extension (digest username) as the limits key it: zero-padded, longer ones cut.
pub const EXT_LEN: usize = 32;
pub type Extension = [u8; EXT_LEN];

/// The per-extension call limits (`CALL_LIMITS[0]`, written by userspace from `[calls]`).
/// Only credentialed INVITEs to international numbers count: the digest username is who
/// places the call, and a retransmission carries the same Call-ID (counted once).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CallLimits {
    /// International calls per extension per minute; 0 = no limit.
    pub per_minute: u32,
    /// Calls per extension to one number within `same_window_ns`; 0 = no limit.
    pub same_number: u32,
    pub same_window_ns: u64,
    /// How long an extension over a limit may not place international calls.
    pub block_for_ns: u64,
}

impl CallLimits {
    pub const fn any(&self) -> bool {
        self.per_minute != 0 || self.same_number != 0
    }
}

/// Value of `EXT_CALLS`: one extension's international calls.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ExtCalls {
    /// Boot-clock time the extension's hold ends (0: not held).
    pub held_until_ns: u64,
    /// Start of the current one-minute window and the calls counted in it.
    pub minute_start_ns: u64,
    pub minute_count: u32,
    pub _pad: u32,
    /// Hash of the last counted INVITE's Call-ID: its retransmissions carry the same.
    pub last_call: u64,
}

/// Key of `EXT_NUMBERS`: an extension and a hash of the number it dialled.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ExtNumber {
    pub ext: Extension,
    pub number: u64,
}

/// Value of `EXT_NUMBERS`: calls to that number in the current window.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CallWindow {
    pub start_ns: u64,
    pub count: u32,
    pub _pad: u32,
}

/// Ring buffer record emitted when a call is blocked (`EVENTS` holds these beside `BanEvent`s,
/// told apart by their size). The message comes first so that the kernel builds the record in
/// its scratch copy of the INVITE, in place: userspace reads the extension, the Call-ID and the
/// numbers from it, with a real parser, off the per-packet path.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallEvent {
    /// The start of the INVITE; `msg_len` bytes of it are the message.
    pub msg: [u8; CALL_COPY],
    /// Ingress: the caller's address; egress: the trunk's.
    pub addr: [u8; 16],
    pub time_ns: u64,
    /// `CallRule::rule` of the rule that blocked it.
    pub rule: u32,
    pub msg_len: u32,
    pub direction: u8,
    /// A `call_verdict` value.
    pub verdict: u8,
    pub _pad: [u8; 6],
    /// Limits (`verdict` other than `RULE`): the extension held.
    pub ext: Extension,
}

/// Key of `FLOWS`: one SIP client socket (address and source port).
/// Digest auth is per transaction, and NAT puts many phones behind one address on different ports,
/// so what a pending request carried is tracked per socket, not per address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowKey {
    pub addr: [u8; 16],
    pub port: u16,
    pub _pad: [u8; 2],
}

impl FlowKey {
    #[inline(always)]
    pub const fn new(addr: [u8; 16], port: u16) -> Self {
        Self {
            addr,
            port,
            _pad: [0; 2],
        }
    }
}

/// `Flow::method` values, and the request counters' order.
pub mod method {
    pub const UNKNOWN: u8 = 0;
    pub const REGISTER: u8 = 1;
    pub const INVITE: u8 = 2;
    pub const OPTIONS: u8 = 3;
    pub const SUBSCRIBE: u8 = 4;
    pub const MESSAGE: u8 = 5;
    pub const OTHER: u8 = 6;

    pub const fn name(m: u8) -> &'static str {
        match m {
            REGISTER => "REGISTER",
            INVITE => "INVITE",
            OPTIONS => "OPTIONS",
            SUBSCRIBE => "SUBSCRIBE",
            MESSAGE => "MESSAGE",
            OTHER => "other",
            _ => "unknown",
        }
    }
}

/// `Flow::creds` values.
pub mod creds {
    pub const NONE: u8 = 0;
    /// An `Authorization` or `Proxy-Authorization` header was found.
    pub const PRESENT: u8 = 1;
    /// The header section did not end inside the scanned bytes (or the packet was a first
    /// fragment), and no credentials were seen in what was scanned. Counted like `PRESENT`: an
    /// attacker must not hide a guess behind padding.
    pub const UNKNOWN: u8 = 2;
}

/// Value of `FLOWS`: requests from a client socket still waiting for a final answer (the LRU map
/// ages idle sockets out). A client may send several requests before the answers come back, and
/// an answer does not say here which request it answers, so the egress program pairs each final
/// answer with the pending request that is worst for an attacker: a 401/407 with a request that
/// carried credentials if one is pending, a 2xx with one that did not. A single pending request,
/// the way real phones talk, pairs exactly.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Flow {
    /// All pending requests.
    pub pending: u8,
    /// Pending requests that carried credentials (or may have: `creds::UNKNOWN`).
    pub creds: u8,
    /// Pending REGISTERs and INVITEs (a 404 to them is an extension scan).
    pub register_invite: u8,
    /// The last credentialed request carried a nonce the PBX issued to this address: it came
    /// from there (a forger never sees the challenge).
    pub nonce_ok: u8,
    pub _pad: [u8; 4],
    /// The last credentialed request's extension (`ext_id` of its digest username; 0: none).
    pub ext: u64,
}

/// Value of `SOURCES` (key: masked source address): what the ingress program keeps per source.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Source {
    /// The flood guard's theoretical arrival time (GCRA): the boot-clock time by which the
    /// source's requests so far would have been spaced out at its rate.
    pub flood_tat_ns: u64,
    /// Trusted until then: a 2xx answered one of its credentialed requests (it holds a working
    /// account). Written by the egress program.
    pub trusted_until_ns: u64,
    /// A trusted source's failing extensions in the window from `spread_first_ns` (more than
    /// `max_failing_extensions` ban it as a whole).
    pub spread_first_ns: u64,
    pub spread: u32,
    pub _pad: u32,
}

/// `ext_id`: an extension (digest username, zero-padded) as the maps key it, a hash of its
/// four words. The kernel and userspace both call this function.
#[inline(always)]
pub fn ext_id(e: &Extension) -> u64 {
    let mut h: u64 = 0x243f_6a88_85a3_08d3;
    let mut i = 0;
    while i < EXT_LEN / 8 {
        let w = u64::from_le_bytes([
            e[8 * i],
            e[8 * i + 1],
            e[8 * i + 2],
            e[8 * i + 3],
            e[8 * i + 4],
            e[8 * i + 5],
            e[8 * i + 6],
            e[8 * i + 7],
        ]);
        h = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 29;
        i += 1;
    }
    h | 1
}

/// Key of `PAIRS` and `NONCES`: a source (masked address) and a number (an `ext_id`, a nonce's
/// hash).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SourceKey {
    pub addr: [u8; 16],
    pub id: u64,
}

/// Value of `PAIRS`: one source and one extension. Trust is learned per pair (a 2xx to a
/// credentialed request for it); a trusted source's failures count against the pair, which is
/// blocked at `auth_max_failures`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Pair {
    pub trusted_until_ns: u64,
    pub blocked_until_ns: u64,
    pub first_ns: u64,
    pub failures: u32,
    pub _pad: u32,
}

/// Value of `EXT_FAILURES`: failures of one extension from untrusted sources, in the window
/// from `first_ns`, and its name (for the lock's listing).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ExtFailures {
    pub first_ns: u64,
    pub failures: u32,
    pub _pad: u32,
    pub name: Extension,
}

/// Value of `EXT_LOCKS`: a locked extension (key: `ext_id`): its credentialed requests are
/// dropped, and their sources banned, unless the source is trusted for it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ExtLock {
    pub created_ns: u64,
    pub until_ns: u64,
    pub failures: u32,
    pub _pad: u32,
    pub name: Extension,
}

/// `ExtEvent::kind`.
pub const EXT_LOCKED: u8 = 0;
pub const PAIR_BLOCKED: u8 = 1;

/// Ring buffer record of an extension locked (`EXT_LOCKED`) or a pair blocked (`PAIR_BLOCKED`,
/// `addr` the source); told from the other records by its size.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtEvent {
    pub name: Extension,
    pub addr: [u8; 16],
    pub until_ns: u64,
    pub failures: u32,
    pub kind: u8,
    pub _pad: [u8; 3],
    pub ext: u64,
}

/// Bytes of the User-Agent compared with the scanner signatures.
pub const UA_LEN: usize = 32;
/// `SCANNERS` key data: the User-Agent's first `UA_LEN` bytes with 0x20 set on each (ASCII
/// lower case, as `ua_fold` has it), zeros after its end; the LPM prefix of a signature
/// covers its bytes, and an exact one (`=smap`) its end too.
pub type UserAgent = [u8; UA_LEN];
/// Signatures counted in `SCANNER_STATS`.
pub const MAX_SIGNATURES: u32 = 256;

/// How a User-Agent byte is compared: with 0x20 set (`A`..`Z` become `a`..`z`; a byte of a
/// User-Agent is never 0 then, so 0 marks its end).
pub const fn ua_fold(b: u8) -> u8 {
    b | 0x20
}

/// Value of `FAILURES` (key: masked source address): failures counted inside the current window.
/// A window opens at the first failure and lasts `find_time`; a failure after it opens a new one.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Failures {
    pub auth_first_ns: u64,
    pub not_found_first_ns: u64,
    pub auth: u32,
    pub not_found: u32,
}

/// Ring buffer record emitted when the kernel bans a source.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BanEvent {
    pub addr: [u8; 16],
    pub time_ns: u64,
    pub expires_ns: u64,
    pub first_failure_ns: u64,
    pub failures: u32,
    pub reason: u8,
    pub _pad: [u8; 3],
}

/// Key of `GEO_NODES`: a prefix of the geo tables below the /16 top level.
/// `len` is in the IPv4-mapped space (an IPv4 /24 is 120); `addr` is masked to `len`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct GeoKey {
    pub len: u32,
    pub addr: [u8; 16],
}

/// Value of `GEO_V4`: 64 consecutive IPv4 /24s (word index: address >> 14; bit: (address >> 8)
/// & 63). A `block` bit drops the whole /24; a `partial` bit sends the lookup to the /32 nodes
/// of `GEO_NODES`. One inlined array read decides nearly every IPv4 packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GeoBits {
    pub block: u64,
    pub partial: u64,
}

/// Values of `GEO_V6` (indexed by the first 16 bits of the address) and `GEO_NODES`.
/// The geo tables have fixed strides (IPv4: a /24 bitmap, then /32; IPv6: /16, /32, /48, /64):
/// a lookup costs at most one array and three hash lookups (IPv4: one array, rarely one hash)
/// whatever the number of prefixes loaded, where an LPM trie slows down as it fills.
pub mod geo {
    pub const PASS: u32 = 0;
    pub const BLOCK: u32 = 1;
    /// Some addresses below this node are blocked: look one level deeper.
    pub const PARTIAL: u32 = 2;

    /// IPv6 stride boundaries.
    pub const V6_LEVELS: [u32; 4] = [16, 32, 48, 64];
    /// IPv4: `address >> V4_WORD_SHIFT` is the `GEO_V4` word index.
    pub const V4_WORD_SHIFT: u32 = 14;
}

/// `Trace::detail` when there is nothing more to say.
pub const NO_DETAIL: u32 = u32::MAX;

/// What one program run decided, written to `TRACE` at the program's exit when
/// `Config::trace` is set: `replay` and the tests read a packet's reason from it directly.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trace {
    /// A [`Reason`]: for XDP the verdict counted (`Reason::is_verdict`); for TC egress the
    /// effect of the answer (`AuthFailures`, `NotFound`, `AuthResets`), or its response
    /// class when it counted nothing, or `EgressSeen` when it was not a SIP answer.
    pub verdict: u32,
    /// A [`Reason`] that says more, or [`NO_DETAIL`]: XDP `NotIp`, `NonFirstFragment`,
    /// `NonSipOnSipPort`, `ResponseIn`, or the request counter of an inspected request;
    /// TC `BansIssued` or `BanMapFull` when the answer reached a threshold.
    pub detail: u32,
    /// XDP: `creds::*` of an inspected request.
    pub creds: u8,
    /// Non-zero once written (userspace zeroes the slot before a run).
    pub recorded: u8,
    /// TC: the status code read.
    pub status: u16,
    pub _pad: [u8; 4],
}

impl Trace {
    pub const fn new(verdict: u32) -> Self {
        Self {
            verdict,
            detail: NO_DETAIL,
            creds: creds::NONE,
            recorded: 1,
            status: 0,
            _pad: [0; 4],
        }
    }

    /// Starts a run's record in place, field by field: a whole `Trace` built first would take
    /// stack the programs do not have to spare (512 bytes across the scan's subprograms).
    #[inline(always)]
    pub fn start(&mut self, verdict: u32) {
        self.verdict = verdict;
        self.detail = NO_DETAIL;
        self.creds = creds::NONE;
        self.recorded = 1;
        self.status = 0;
    }
}

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: all of these are repr(C), Copy, made of integers and byte arrays with explicit
    // padding fields, so every bit pattern is valid and there are no implicit padding bytes.
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for Ban {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for Flow {}
    unsafe impl aya::Pod for Failures {}
    unsafe impl aya::Pod for BanEvent {}
    unsafe impl aya::Pod for GeoKey {}
    unsafe impl aya::Pod for GeoBits {}
    unsafe impl aya::Pod for Trace {}
    unsafe impl aya::Pod for CallRule {}
    unsafe impl aya::Pod for CallEvent {}
    unsafe impl aya::Pod for CallLimits {}
    unsafe impl aya::Pod for ExtCalls {}
    unsafe impl aya::Pod for ExtNumber {}
    unsafe impl aya::Pod for CallWindow {}
    unsafe impl aya::Pod for Source {}
    unsafe impl aya::Pod for SourceKey {}
    unsafe impl aya::Pod for Pair {}
    unsafe impl aya::Pod for ExtFailures {}
    unsafe impl aya::Pod for ExtLock {}
    unsafe impl aya::Pod for ExtEvent {}
}

/// Sizes pinned here must match the kernel side; a struct that grows implicit padding fails to
/// compile instead of silently misreading a map.
const _: () = {
    use core::mem::size_of;
    assert!(size_of::<Config>() == 16 + 2 + 6 + 8 + 16 + 8 + 32 + 8 + 48 + 8);
    assert!(size_of::<Source>() == 32);
    assert!(size_of::<SourceKey>() == 24);
    assert!(size_of::<Pair>() == 32);
    assert!(size_of::<ExtFailures>() == 16 + EXT_LEN);
    assert!(size_of::<ExtLock>() == 24 + EXT_LEN);
    assert!(size_of::<ExtEvent>() == EXT_LEN + 40);
    assert!(size_of::<CallRule>() == 8);
    assert!(size_of::<Ban>() == 64);
    assert!(size_of::<FlowKey>() == 20);
    assert!(size_of::<Flow>() == 16);
    assert!(size_of::<Failures>() == 24);
    assert!(size_of::<BanEvent>() == 48);
    // Told apart from a `BanEvent` in the ring by its size.
    assert!(size_of::<CallEvent>() == CALL_COPY + 40 + EXT_LEN);
    assert!(size_of::<CallLimits>() == 24);
    assert!(size_of::<ExtCalls>() == 32);
    assert!(size_of::<ExtNumber>() == EXT_LEN + 8);
    assert!(size_of::<CallWindow>() == 16);
    assert!(size_of::<GeoKey>() == 20);
    assert!(size_of::<Trace>() == 16);
};
