//! The reason table: every counter the programs keep, and every reason a verdict can give.
//!
//! One variant per counter. `STATS` is indexed by it, `stats` and `replay` name and explain
//! it from here, and a program's [`crate::Trace`] names its verdict with it. Adding a counter
//! is one row below plus the `count(Reason::X)` that increments it.

/// Declares [`Reason`] with its name and explanation, in `STATS` order.
macro_rules! reasons {
    ($($(#[$doc:meta])* $variant:ident = $name:literal, $action:literal, $explain:literal;)*) => {
        /// A counter in `STATS`, and the reason a program gives for what it did.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Reason {
            $($(#[$doc])* $variant,)*
        }

        impl Reason {
            /// Every reason, in `STATS` order (`ALL[r as usize] == r`).
            pub const ALL: &[Reason] = &[$(Reason::$variant,)*];

            /// The counter's name, as `stats` prints it (snake case, stable across versions).
            pub const fn name(self) -> &'static str {
                match self {
                    $(Reason::$variant => $name,)*
                }
            }

            /// One line on what the counter counts.
            pub const fn explain(self) -> &'static str {
                match self {
                    $(Reason::$variant => $explain,)*
                }
            }

            /// What the counter is about, the `action` label of its metric: `pass` and
            /// `drop` for the XDP verdicts, `seen`, `inspect` (what a passed packet was),
            /// `answer` (the PBX's responses), `count` (failures) and `ban`.
            pub const fn action(self) -> &'static str {
                match self {
                    $(Reason::$variant => $action,)*
                }
            }
        }
    };
}

reasons! {
    // --- XDP ingress: every packet, then exactly one verdict ---------------------------------
    Seen = "seen", "seen", "packets the XDP program saw";
    /// Verdict: passed (every pass except allowlisted ones).
    Passed = "passed", "pass", "packets passed (not allowlisted, not dropped)";
    /// Verdict: passed because the source is allowlisted (a ban or geo block did not apply).
    Allowlisted = "allowlisted", "pass", "packets passed because the source is allowlisted";
    /// Verdict: dropped, the source is banned.
    DroppedBanned = "dropped_banned", "drop", "packets dropped because the source is banned";
    /// Verdict: dropped, the source is in a geo-blocked network.
    DroppedGeo = "dropped_geo", "drop", "packets dropped because the source is geo-blocked";
    /// Verdict: passed, a header is cut short or invalid.
    Malformed = "malformed", "pass", "packets passed uninspected because a header is cut short or invalid";

    // --- XDP ingress: what a passed packet was -----------------------------------------------
    NotIp = "not_ip", "inspect", "frames that are neither IPv4 nor IPv6";
    NonFirstFragment = "non_first_fragment", "inspect", "non-first IP fragments (judged by address only)";
    NonSipOnSipPort = "non_sip_on_sip_port", "inspect", "UDP payloads on a SIP port that are not SIP (keep-alives, STUN)";
    ResponseIn = "resp_in", "answer", "SIP responses sent to the PBX (answers to its own requests, not tracked)";
    ReqRegister = "req_register", "inspect", "REGISTER requests inspected";
    ReqInvite = "req_invite", "inspect", "INVITE requests inspected";
    ReqOptions = "req_options", "inspect", "OPTIONS requests inspected";
    ReqSubscribe = "req_subscribe", "inspect", "SUBSCRIBE requests inspected";
    ReqMessage = "req_message", "inspect", "MESSAGE requests inspected";
    ReqOther = "req_other", "inspect", "requests of other methods inspected";
    ReqWithCreds = "req_with_credentials", "inspect", "requests carrying Authorization or Proxy-Authorization";
    ReqCredsUnknown = "req_credentials_unknown", "inspect", "requests whose header section did not end in the scanned bytes (counted as credentialed)";

    // --- TC egress: the PBX's answers and what they caused -----------------------------------
    EgressSeen = "egress_seen", "seen", "packets the TC egress program saw";
    Resp1xx = "resp_1xx", "answer", "provisional answers from the PBX";
    Resp2xx = "resp_2xx", "answer", "success answers from the PBX";
    Resp3xx = "resp_3xx", "answer", "redirect answers from the PBX";
    Resp4xx = "resp_4xx", "answer", "client-error answers from the PBX";
    Resp5xx = "resp_5xx", "answer", "server-error answers from the PBX";
    Resp6xx = "resp_6xx", "answer", "global-failure answers from the PBX";
    AuthFailures = "auth_failures", "count", "authentication failures counted (403, or 401/407 to a credentialed request)";
    NotFound = "not_found", "count", "404s to REGISTER/INVITE counted (extension scans)";
    AuthResets = "auth_resets", "count", "failure counts reset by a 2xx to a credentialed request";
    BansIssued = "bans_issued", "ban", "bans the kernel issued at a threshold";
    BansAuth = "bans_auth_failures", "ban", "bans the kernel issued for authentication failures";
    BansScan = "bans_extension_scan", "ban", "bans the kernel issued for extension scans";
    BanMapFull = "ban_map_full", "ban", "bans not issued because the ban map is full";
    EventsLost = "events_lost", "ban", "ban events lost because the ring buffer was full";
    // Counted by userspace (`bans::add`), in CPU 0's slot, so that the pinned counters hold
    // every ban however it was made.
    BansManual = "bans_manual", "ban", "bans an operator added (`ban add`)";
    CallsChecked = "calls_checked", "inspect", "INVITEs and ACKs whose dialled number the call rules looked up";
    CallBlocked = "call_blocked", "drop", "calls blocked by a toll-fraud rule (INVITEs answered 403 by the filter, their ACKs dropped): the PBX never saw them";
    CallHeld = "call_held", "drop", "international INVITEs refused (answered 403) because their extension is over a call limit or held by one";
    CallBlockedEgress = "call_blocked_egress", "drop", "INVITEs the PBX sent to a trunk dropped by a toll-fraud rule (forwarding, call-outs): the call never left the host";
    /// Verdict: dropped, the source is over the flood guard's rate (a `Flood` entry in `BANS`).
    DroppedFlood = "dropped_flood", "drop", "packets dropped because the source is over the flood guard's request rate";
    /// Verdict: dropped, a request whose User-Agent is a scanner's (the source is banned).
    DroppedScanner = "dropped_scanner", "drop", "requests dropped because their User-Agent is a scanner's (the source is banned at the first)";
    BansScanner = "bans_scanner", "ban", "bans the kernel issued for a scanner's User-Agent";
    FloodLimited = "flood_limited", "ban", "sources the flood guard started dropping (over max_requests per per)";
    TrustLearned = "trust_learned", "count", "2xx answers to credentialed requests that made (or kept) their source trusted";
    /// Verdict: dropped, a credentialed request for an extension blocked from this source.
    DroppedPair = "dropped_pair", "drop", "credentialed requests dropped because their extension is blocked from their (trusted) source";
    /// Verdict: dropped, a credentialed request for a locked extension (its source is banned).
    DroppedExtLocked = "dropped_ext_locked", "drop", "credentialed requests dropped because their extension is locked (their untrusted source banned)";
    UnprovenFailures = "failures_unproven", "count", "failures of a trusted source not counted: the request's nonce was not one the PBX issued to that address (forged)";
    PairBlocks = "pairs_blocked", "ban", "extensions blocked from one trusted source after max_failures of theirs";
    ExtLocks = "extensions_locked", "ban", "extensions locked after max_failures_per_extension failures from untrusted sources";
    BansLockedExt = "bans_locked_extension", "ban", "bans of untrusted sources that tried a locked extension";
    BansSpread = "bans_failing_extensions", "ban", "trusted sources banned for failing on more than max_failing_extensions extensions";
}

/// Slots in `STATS`: room for counters added later without resizing a pinned map.
pub const STATS_SLOTS: u32 = 64;

const _: () = {
    assert!(Reason::ALL.len() <= STATS_SLOTS as usize);
    // Variants are numbered by position: indexing ALL by a variant gives that variant.
    let mut i = 0;
    while i < Reason::ALL.len() {
        assert!(Reason::ALL[i] as usize == i);
        i += 1;
    }
    // The ranges `request` and `response_class` index into.
    assert!(Reason::ReqOther as u32 - Reason::ReqRegister as u32 == 5);
    assert!(Reason::request_index(crate::method::REGISTER) == Reason::ReqRegister as u32);
    assert!(Reason::request_index(crate::method::OTHER) == Reason::ReqOther as u32);
    assert!(Reason::Resp6xx as u32 - Reason::Resp1xx as u32 == 5);
};

impl Reason {
    /// Number of reasons (`STATS` slots in use).
    pub const COUNT: usize = Reason::ALL.len();

    /// `STATS` index of the request counter of a method 1..=6, by arithmetic (the programs
    /// index with it: a `match` would be a chain of branches there).
    #[inline(always)]
    pub const fn request_index(method: u8) -> u32 {
        Reason::ReqRegister as u32 + method as u32 - crate::method::REGISTER as u32
    }

    /// `STATS` index of the response counter of a status class 1..=6.
    #[inline(always)]
    pub const fn response_index(class: u32) -> u32 {
        Reason::Resp1xx as u32 + class - 1
    }

    /// The reason with this `STATS` index, if any.
    pub const fn from_index(i: u32) -> Option<Reason> {
        if (i as usize) < Reason::ALL.len() {
            Some(Reason::ALL[i as usize])
        } else {
            None
        }
    }

    /// True for the verdicts of the XDP program (exactly one is counted per packet).
    pub const fn is_verdict(self) -> bool {
        matches!(self.action().as_bytes(), b"pass" | b"drop")
    }
}
