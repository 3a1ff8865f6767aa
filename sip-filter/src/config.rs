//! The TOML configuration file: every key optional, with the defaults documented in
//! `sip-filter.example.toml`.
use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::IpNet;
use serde::{Deserialize, de};
use sip_filter_common::map;
use toml::Spanned;

/// Shortest IPv6 prefix sources may be tracked by: shorter ones would let one client's
/// failures ban a whole provider.
pub const MIN_IPV6_PREFIX: u8 = 16;

/// Longest `find_time` / `ban_time`: the dataplane adds durations in nanoseconds to a u64
/// clock, and a century is far from overflowing it while being "permanent" for any practical
/// purpose.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Parses an allowlist or zone-file entry: a CIDR (host bits are cleared) or a bare address
/// (a /32 or /128).
pub fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .map(|n| n.trunc())
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .ok()
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// A configuration rejected with where and why (file, line, column, reason).
#[derive(Debug)]
pub struct ConfigError {
    pub path: PathBuf,
    /// 1-based; 0 when the error is not tied to a place in the file (e.g. unreadable file).
    pub line: usize,
    pub column: usize,
    pub reason: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.reason)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.path.display(),
                self.line,
                self.column,
                self.reason
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// `ban_scope`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BanScope {
    /// Everything from a banned (or geo-blocked) source.
    All,
    /// SIP ports only (UDP and TCP, plus the TLS port).
    Sip,
}

/// One failure rule (`[auth]` or `[enumeration]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Threshold {
    pub max: u32,
    pub find_time: Duration,
    pub ban_time: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sip {
    pub ports: Vec<u16>,
    pub tls_port: u16,
    pub ban_scope: BanScope,
    pub ipv6_prefix: u8,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Geo {
    /// MaxMind DB (GeoLite2-Country, DB-IP country lite).
    pub database: Option<PathBuf>,
    /// ISO 3166-1 alpha-2, upper case. At most one of block/allow is non-empty.
    pub block_countries: Vec<String>,
    pub allow_countries: Vec<String>,
    /// Files of CIDRs to block, one per line, `#` comments.
    pub cidr_files: Vec<PathBuf>,
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Address and port of `/metrics`; `None` (the default) serves nothing.
    pub listen: Option<SocketAddr>,
}

/// `[notify]`: where bans and unbans are reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notify {
    /// An `http://` or `https://` URL each event is POSTed to as JSON; `None` sends nothing.
    pub webhook: Option<String>,
}

/// `[crowdsec]`: the CrowdSec Local API. As a bouncer, its ban decisions are dropped at XDP;
/// with machine credentials also as a watcher, this host's bans are pushed to it as alerts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crowdsec {
    /// `http://host:port` of the LAPI (its `/v1/...` paths are appended).
    pub lapi_url: String,
    /// The bouncer's key (`cscli bouncers add`).
    pub api_key: Secret,
    /// How often the decision stream is polled.
    pub poll: Duration,
    /// How often the whole set is fetched again (`startup=true`): a delta poll can miss a
    /// decision committed while it ran (the LAPI selects deltas by creation time).
    pub resync: Duration,
    /// `machine_id` and `password_file` (`cscli machines add`); `None`: bouncer only.
    pub watcher: Option<Watcher>,
}

/// `[crowdsec]` default poll interval.
pub const CROWDSEC_POLL: Duration = Duration::from_secs(2);
/// `[crowdsec]` default full resync interval.
pub const CROWDSEC_RESYNC: Duration = Duration::from_secs(600);

/// `[apiban]`: APIBAN's feed of addresses its SIP honeypots saw, dropped at XDP. APIBAN lists
/// no deletions: an entry is kept `APIBAN_KEEP` from the last time the feed listed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Apiban {
    /// The API's base; `<url>/<key>/banned/<id>` is fetched.
    pub url: String,
    pub key: Secret,
    /// How often new entries are asked for (the service allows at most 5 requests per 2
    /// minutes, which the client keeps to whatever this says).
    pub poll: Duration,
}

/// `[apiban]` default base URL: the public service.
pub const APIBAN_URL: &str = "https://apiban.org/api";
/// `[apiban]` default poll interval.
pub const APIBAN_POLL: Duration = Duration::from_secs(120);

/// The machine a watcher logs in as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watcher {
    pub machine_id: String,
    pub password: Secret,
}

/// A credential, inline in the file or in a file of its own (refused if others can read it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Secret {
    Inline(String),
    File(PathBuf),
}

impl Secret {
    /// The credential, trimmed. A file must not be readable by others: a key in a
    /// world-readable file is a key anyone on the host can use.
    pub fn read(&self) -> anyhow::Result<String> {
        use std::os::unix::fs::PermissionsExt as _;
        let path = match self {
            Secret::Inline(s) => return Ok(s.clone()),
            Secret::File(p) => p,
        };
        let meta = std::fs::metadata(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        if meta.permissions().mode() & 0o004 != 0 {
            anyhow::bail!(
                "{} is readable by every user of this host: `chmod o-r {}` (or 600) first",
                path.display(),
                path.display()
            );
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let text = text.trim();
        if text.is_empty() {
            anyhow::bail!("{} is empty", path.display());
        }
        Ok(text.to_string())
    }
}

/// `[bans]`: repeat offenders, as fail2ban's `bantime.increment`: a source banned again within
/// `history_time` is banned for `ban_time * factor * 2^(earlier bans)`, capped at `max_time`,
/// plus a random `0..rnd_time` so that a botnet cannot time its return.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bans {
    pub increment: bool,
    pub factor: Factor,
    pub max_time: Duration,
    pub rnd_time: Duration,
    pub history_time: Duration,
}

impl Default for Bans {
    fn default() -> Self {
        Self {
            increment: false,
            factor: Factor(1.0),
            max_time: Duration::from_secs(7 * 86400),
            rnd_time: Duration::ZERO,
            history_time: Duration::from_secs(30 * 86400),
        }
    }
}

/// A positive, finite multiplier (so equality is total).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Factor(pub f64);
impl Eq for Factor {}

/// `[state]`: where bans and offence histories are kept on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    pub dir: PathBuf,
}

impl Default for State {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(crate::state::DEFAULT_DIR),
        }
    }
}

/// `[calls]`: the toll-fraud guard's dial plan, schedule and rules (see `calls`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Calls {
    pub plan: crate::calls::dialplan::DialPlan,
    pub schedule: crate::calls::schedule::Schedule,
    pub rules: crate::calls::rules::RuleSet,
    pub default_block: bool,
    /// Addresses the PBX sends calls to (checked at egress); calls from them are inbound.
    pub trunks: Vec<IpNet>,
    /// Per extension, calls to numbers matched as international; 0 = off.
    pub max_calls_per_minute: u32,
    /// Per extension and dialled number: (calls, within).
    pub max_same_number: Option<(u32, Duration)>,
    pub block_for: Duration,
}

/// Everything the configuration file says, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub sip: Sip,
    pub auth: Threshold,
    pub enumeration: Threshold,
    pub allow: Vec<IpNet>,
    pub geo: Geo,
    pub metrics: Metrics,
    pub notify: Notify,
    pub bans: Bans,
    pub state: State,
    /// `None` without a `[calls]` section: no call rules.
    pub calls: Option<Calls>,
    /// `[auth] trust_time`: how long a 2xx to a credentialed request makes its source trusted.
    pub trust_time: Duration,
    /// `[auth] max_failures_per_extension`: failures of one extension from untrusted sources
    /// that lock it (0: off).
    pub max_failures_per_extension: u32,
    /// `[auth] max_failing_extensions`: extensions a trusted source may fail on before it is
    /// banned as a whole.
    pub max_failing_extensions: u32,
    pub scanners: Scanners,
    pub flood: Flood,
    /// `None` without a `[crowdsec]` section.
    pub crowdsec: Option<Crowdsec>,
    /// `None` without an `[apiban]` section.
    pub apiban: Option<Apiban>,
}

/// `[scanners]`: User-Agents that ban at the first request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scanners {
    pub user_agents: Vec<crate::scanners::Signature>,
    pub ban_time: Duration,
}

impl Default for Scanners {
    fn default() -> Self {
        Self {
            user_agents: crate::scanners::defaults(),
            ban_time: Duration::from_secs(86_400),
        }
    }
}

/// `[flood]`: the per-source request rate (0 `max_requests`: off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flood {
    pub max_requests: u32,
    pub per: Duration,
    pub block_for: Duration,
    pub trusted_factor: u32,
}

impl Default for Flood {
    fn default() -> Self {
        Self {
            max_requests: 30,
            per: Duration::from_secs(2),
            block_for: Duration::from_secs(300),
            trusted_factor: 10,
        }
    }
}

impl Flood {
    /// What one request costs a source whose rate is `factor` times `max_requests` per `per`
    /// (whole nanoseconds, rounded down: `max_requests` at once always pass).
    pub fn interval(&self, factor: u32) -> u64 {
        let n = u64::from(self.max_requests) * u64::from(factor);
        (self.per.as_nanos() as u64).checked_div(n).unwrap_or(0)
    }
}

/// The flood guard's largest rate (`max_requests` times `trusted_factor`) and shortest `per`:
/// within them the kernel's whole-nanosecond interval makes the limit exact.
pub const FLOOD_MAX_RATE: u32 = 10_000;
pub const FLOOD_MIN_PER: Duration = Duration::from_millis(100);

impl Default for Settings {
    fn default() -> Self {
        Self {
            sip: Sip {
                ports: vec![5060],
                tls_port: 5061,
                ban_scope: BanScope::All,
                ipv6_prefix: 64,
            },
            auth: Threshold {
                max: 5,
                find_time: Duration::from_secs(60),
                ban_time: Duration::from_secs(3600),
            },
            enumeration: Threshold {
                max: 10,
                find_time: Duration::from_secs(60),
                ban_time: Duration::from_secs(3600),
            },
            allow: Vec::new(),
            geo: Geo::default(),
            metrics: Metrics::default(),
            notify: Notify::default(),
            bans: Bans::default(),
            state: State::default(),
            calls: None,
            trust_time: Duration::from_secs(86_400),
            max_failures_per_extension: 10,
            max_failing_extensions: 3,
            scanners: Scanners::default(),
            flood: Flood::default(),
            crowdsec: None,
            apiban: None,
        }
    }
}

impl Settings {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            line: 0,
            column: 0,
            reason: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates configuration text; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cx = Ctx { text, path };
        let raw: RawFile = toml::from_str(text).map_err(|e| cx.toml_error(&e))?;
        let mut s = Settings::default();

        let sip = raw.sip;
        if let Some(ports) = &sip.ports {
            s.sip.ports = cx.udp_ports(ports)?;
        }
        if let Some(v) = &sip.tls_port {
            s.sip.tls_port = cx.port("tls_port", "TCP", v)?;
        }
        if let Some(v) = &sip.ban_scope {
            s.sip.ban_scope = match cx.string("ban_scope", v)? {
                "all" => BanScope::All,
                "sip" => BanScope::Sip,
                other => {
                    return Err(cx.at(
                        v.span(),
                        format!("ban_scope: {other:?} is not \"all\" or \"sip\""),
                    ));
                }
            };
        }
        if let Some(v) = &sip.ipv6_prefix {
            let n = cx.int("ipv6_prefix", v)?;
            s.sip.ipv6_prefix = u8::try_from(n)
                .ok()
                .filter(|p| (MIN_IPV6_PREFIX..=128).contains(p))
                .ok_or_else(|| {
                    cx.at(
                        v.span(),
                        format!(
                            "ipv6_prefix: {n} is not a prefix length between {MIN_IPV6_PREFIX} and 128"
                        ),
                    )
                })?;
        }

        cx.threshold(
            &mut s.auth,
            "max_failures",
            raw.auth.max_failures.as_ref(),
            raw.auth.find_time.as_ref(),
            raw.auth.ban_time.as_ref(),
        )?;
        if let Some(v) = &raw.auth.trust_time {
            s.trust_time = cx.duration("trust_time", v)?;
        }
        if let Some(v) = &raw.auth.max_failures_per_extension {
            s.max_failures_per_extension = cx.count("max_failures_per_extension", v)?;
        }
        if let Some(v) = &raw.auth.max_failing_extensions {
            s.max_failing_extensions = cx.count_in("max_failing_extensions", v, 1, 1000)?;
        }
        cx.threshold(
            &mut s.enumeration,
            "max_not_found",
            raw.enumeration.max_not_found.as_ref(),
            raw.enumeration.find_time.as_ref(),
            raw.enumeration.ban_time.as_ref(),
        )?;

        if let Some(cidrs) = &raw.allow.cidrs {
            s.allow = cx.networks(cidrs)?;
        }

        let geo = raw.geo;
        if let Some(v) = &geo.database {
            s.geo.database = Some(cx.path("database", v)?);
        }
        let block = geo.block_countries.as_ref();
        let allow = geo.allow_countries.as_ref();
        if let Some(list) = block {
            s.geo.block_countries = cx.countries("block_countries", list)?;
        }
        if let Some(list) = allow {
            s.geo.allow_countries = cx.countries("allow_countries", list)?;
        }
        if let (Some(b), Some(a)) = (block, allow)
            && !s.geo.block_countries.is_empty()
            && !s.geo.allow_countries.is_empty()
        {
            // Point at whichever comes second: that is the one that contradicts the first.
            let (later, earlier, span) = if a.span().start > b.span().start {
                ("allow_countries", "block_countries", a.span())
            } else {
                ("block_countries", "allow_countries", b.span())
            };
            return Err(cx.at(
                span,
                format!(
                    "{later}: cannot be combined with {earlier} (block_countries blocks the \
                     listed countries, allow_countries blocks all others): keep one"
                ),
            ));
        }
        if s.geo.database.is_none() {
            for (field, list, codes) in [
                ("block_countries", block, &s.geo.block_countries),
                ("allow_countries", allow, &s.geo.allow_countries),
            ] {
                if let Some(list) = list
                    && !codes.is_empty()
                {
                    return Err(cx.at(
                        list.span(),
                        format!(
                            "{field}: countries need a country database: set [geo] database, \
                             e.g. database = \"/usr/share/GeoIP/GeoLite2-Country.mmdb\""
                        ),
                    ));
                }
            }
        }
        if let Some(files) = &geo.cidr_files {
            let mut paths: Vec<PathBuf> = Vec::new();
            for v in &files.get_ref().0 {
                let p = cx.path("cidr_files", v)?;
                if paths.contains(&p) {
                    return Err(cx.at(
                        v.span(),
                        format!("cidr_files: {} is listed twice", p.display()),
                    ));
                }
                paths.push(p);
            }
            s.geo.cidr_files = paths;
        }

        if let Some(v) = &raw.metrics.listen {
            let text = cx.string("listen", v)?;
            let addr: SocketAddr = text.parse().map_err(|_| {
                cx.at(
                    v.span(),
                    format!(
                        "listen: {text:?} is not an address and port, e.g. \"127.0.0.1:9754\" \
                         or \"[::1]:9754\""
                    ),
                )
            })?;
            s.metrics.listen = Some(addr);
        }

        if let Some(v) = &raw.notify.webhook {
            let text = cx.http_url("webhook", v, "http://127.0.0.1:8080/sip-filter")?;
            s.notify.webhook = Some(text.to_string());
        }

        let b = raw.bans;
        if let Some(v) = &b.increment {
            s.bans.increment = cx.boolean("increment", v)?;
        }
        if let Some(v) = &b.factor {
            let x = match v.get_ref() {
                toml::Value::Integer(n) => *n as f64,
                toml::Value::Float(x) => *x,
                other => {
                    return Err(cx.at(
                        v.span(),
                        format!("factor: expected a number, found {}", describe(other)),
                    ));
                }
            };
            if !(x.is_finite() && x > 0.0 && x <= 1000.0) {
                return Err(cx.at(
                    v.span(),
                    format!("factor: {x} is not a multiplier above 0 and at most 1000"),
                ));
            }
            s.bans.factor = Factor(x);
        }
        if let Some(v) = &b.max_time {
            s.bans.max_time = cx.duration("max_time", v)?;
        }
        if let Some(v) = &b.rnd_time {
            // 0 is a valid jitter (none).
            s.bans.rnd_time = match v.get_ref() {
                toml::Value::String(t)
                    if humantime::parse_duration(t.trim()).is_ok_and(|d| d.is_zero()) =>
                {
                    Duration::ZERO
                }
                _ => cx.duration("rnd_time", v)?,
            };
        }
        if let Some(v) = &b.history_time {
            s.bans.history_time = cx.duration("history_time", v)?;
        }

        if let Some(v) = &raw.state.dir {
            s.state.dir = cx.path("dir", v)?;
        }

        if let Some(list) = &raw.scanners.user_agents {
            let mut sigs: Vec<crate::scanners::Signature> = Vec::new();
            for v in &list.get_ref().0 {
                let text = cx.string("user_agents", v)?;
                let sig = crate::scanners::Signature::parse(text)
                    .map_err(|e| cx.at(v.span(), format!("user_agents: {e}")))?;
                if sigs.iter().any(|o| o.same_key(&sig)) {
                    return Err(cx.at(
                        v.span(),
                        format!(
                            "user_agents: {text:?} is listed twice (signatures are compared \
                             without regard to case)"
                        ),
                    ));
                }
                sigs.push(sig);
            }
            if sigs.len() > map::SCANNERS.max_entries as usize {
                return Err(cx.at(
                    list.span(),
                    format!(
                        "user_agents: at most {} signatures are supported",
                        map::SCANNERS.max_entries
                    ),
                ));
            }
            s.scanners.user_agents = sigs;
        }
        if let Some(v) = &raw.scanners.ban_time {
            s.scanners.ban_time = cx.duration("ban_time", v)?;
        }

        let f = &raw.flood;
        if let Some(v) = &f.max_requests {
            s.flood.max_requests = cx.count_in("max_requests", v, 0, FLOOD_MAX_RATE)?;
        }
        if let Some(v) = &f.per {
            s.flood.per = cx.duration("per", v)?;
            if s.flood.per < FLOOD_MIN_PER {
                return Err(cx.at(
                    v.span(),
                    format!(
                        "per: must be at least {}",
                        humantime::format_duration(FLOOD_MIN_PER)
                    ),
                ));
            }
        }
        if let Some(v) = &f.block_for {
            s.flood.block_for = cx.duration("block_for", v)?;
        }
        if let Some(v) = &f.trusted_factor {
            s.flood.trusted_factor = cx.count_in("trusted_factor", v, 1, FLOOD_MAX_RATE)?;
        }
        if s.flood.max_requests.saturating_mul(s.flood.trusted_factor) > FLOOD_MAX_RATE {
            let span = f
                .trusted_factor
                .as_ref()
                .or(f.max_requests.as_ref())
                .map(|v| v.span())
                .unwrap_or_default();
            return Err(cx.at(
                span,
                format!(
                    "trusted_factor: max_requests x trusted_factor = {} is more than the \
                     {FLOOD_MAX_RATE} requests per `per` supported",
                    u64::from(s.flood.max_requests) * u64::from(s.flood.trusted_factor)
                ),
            ));
        }

        // An empty [calls] (the example file's, all commented) sets no call rules.
        if let Some(c) = &raw.calls
            && !c.get_ref().is_empty()
        {
            s.calls = Some(cx.calls(c.get_ref(), c.span())?);
        }
        // An empty [crowdsec] (the example file's, all commented) is off.
        if let Some(c) = &raw.crowdsec
            && !c.get_ref().is_empty()
        {
            s.crowdsec = Some(cx.crowdsec(c.get_ref(), c.span())?);
        }
        if let Some(c) = &raw.apiban
            && !c.get_ref().is_empty()
        {
            s.apiban = Some(cx.apiban(c.get_ref(), c.span())?);
        }
        Ok(s)
    }

    /// The dataplane's view of these settings (the allowlist/geo flags are set by `rules`).
    pub fn dataplane_config(&self) -> sip_filter_common::Config {
        let mut ports = [0; sip_filter_common::MAX_PORTS];
        for (slot, p) in ports.iter_mut().zip(&self.sip.ports) {
            *slot = *p;
        }
        sip_filter_common::Config {
            ports,
            nports: self.sip.ports.len() as u8,
            tls_port: self.sip.tls_port,
            ban_scope: match self.sip.ban_scope {
                BanScope::All => sip_filter_common::BAN_SCOPE_ALL,
                BanScope::Sip => sip_filter_common::BAN_SCOPE_SIP,
            },
            v6_mask: sip_filter_common::Config::v6_mask_for(self.sip.ipv6_prefix),
            auth_max_failures: self.auth.max,
            auth_find_time_ns: self.auth.find_time.as_nanos() as u64,
            auth_ban_time_ns: self.auth.ban_time.as_nanos() as u64,
            scan_max_not_found: self.enumeration.max,
            scan_find_time_ns: self.enumeration.find_time.as_nanos() as u64,
            scan_ban_time_ns: self.enumeration.ban_time.as_nanos() as u64,
            scanner_ban_time_ns: self.scanners.ban_time.as_nanos() as u64,
            flood_interval_ns: self.flood.interval(1),
            flood_trusted_interval_ns: self.flood.interval(self.flood.trusted_factor),
            flood_per_ns: if self.flood.max_requests == 0 {
                0
            } else {
                self.flood.per.as_nanos() as u64
            },
            flood_block_ns: self.flood.block_for.as_nanos() as u64,
            trust_time_ns: self.trust_time.as_nanos() as u64,
            ext_max_failures: self.max_failures_per_extension,
            max_failing_exts: self.max_failing_extensions,
            ..Default::default()
        }
    }

    /// Is `ip` covered by the allowlist?
    pub fn is_allowed(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|n| n.contains(&ip))
    }
}

// The file as written. Every leaf is kept as a spanned TOML value and checked by hand, so that
// each complaint names its key and points at the value itself (serde's own type errors name
// neither). `deny_unknown_fields` makes a misspelt key or section an error.

type Val = Spanned<toml::Value>;
type List = Spanned<Items>;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    sip: RawSip,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    enumeration: RawEnumeration,
    #[serde(default)]
    allow: RawAllow,
    #[serde(default)]
    geo: RawGeo,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    notify: RawNotify,
    #[serde(default)]
    bans: RawBans,
    #[serde(default)]
    state: RawState,
    calls: Option<Spanned<RawCalls>>,
    #[serde(default)]
    scanners: RawScanners,
    #[serde(default)]
    flood: RawFlood,
    crowdsec: Option<Spanned<RawCrowdsec>>,
    apiban: Option<Spanned<RawApiban>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "an [apiban] table")]
struct RawApiban {
    key_file: Option<Val>,
    url: Option<Val>,
    poll: Option<Val>,
}

impl RawApiban {
    fn is_empty(&self) -> bool {
        [&self.key_file, &self.url, &self.poll]
            .iter()
            .all(|v| v.is_none())
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a [crowdsec] table")]
struct RawCrowdsec {
    lapi_url: Option<Val>,
    api_key: Option<Val>,
    api_key_file: Option<Val>,
    poll: Option<Val>,
    resync: Option<Val>,
    machine_id: Option<Val>,
    password_file: Option<Val>,
}

impl RawCrowdsec {
    fn is_empty(&self) -> bool {
        [
            &self.lapi_url,
            &self.api_key,
            &self.api_key_file,
            &self.poll,
            &self.resync,
            &self.machine_id,
            &self.password_file,
        ]
        .iter()
        .all(|v| v.is_none())
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a [scanners] table")]
struct RawScanners {
    user_agents: Option<List>,
    ban_time: Option<Val>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a [flood] table")]
struct RawFlood {
    max_requests: Option<Val>,
    per: Option<Val>,
    block_for: Option<Val>,
    trusted_factor: Option<Val>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a [sip] table")]
struct RawSip {
    ports: Option<List>,
    tls_port: Option<Val>,
    ban_scope: Option<Val>,
    ipv6_prefix: Option<Val>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "an [auth] table")]
struct RawAuth {
    max_failures: Option<Val>,
    find_time: Option<Val>,
    ban_time: Option<Val>,
    trust_time: Option<Val>,
    max_failures_per_extension: Option<Val>,
    max_failing_extensions: Option<Val>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "an [enumeration] table")]
struct RawEnumeration {
    max_not_found: Option<Val>,
    find_time: Option<Val>,
    ban_time: Option<Val>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "an [allow] table")]
struct RawAllow {
    cidrs: Option<List>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a [geo] table")]
struct RawGeo {
    database: Option<Val>,
    block_countries: Option<List>,
    allow_countries: Option<List>,
    cidr_files: Option<List>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a [metrics] table")]
struct RawMetrics {
    listen: Option<Val>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a [notify] table")]
struct RawNotify {
    webhook: Option<Val>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a [bans] table")]
struct RawBans {
    increment: Option<Val>,
    factor: Option<Val>,
    max_time: Option<Val>,
    rnd_time: Option<Val>,
    history_time: Option<Val>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a [state] table")]
struct RawState {
    dir: Option<Val>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a [calls] table")]
struct RawCalls {
    country_code: Option<Val>,
    international_prefix: Option<Val>,
    national_prefix: Option<Val>,
    outside_line: Option<Val>,
    timezone: Option<Val>,
    business_hours: Option<List>,
    holidays: Option<List>,
    block: Option<List>,
    allow: Option<List>,
    after_hours_block: Option<List>,
    default_block: Option<Val>,
    trunks: Option<List>,
    max_calls_per_minute: Option<Val>,
    max_same_number: Option<Val>,
    block_for: Option<Val>,
}

impl RawCalls {
    fn is_empty(&self) -> bool {
        let RawCalls {
            country_code,
            international_prefix,
            national_prefix,
            outside_line,
            timezone,
            business_hours,
            holidays,
            block,
            allow,
            after_hours_block,
            default_block,
            trunks,
            max_calls_per_minute,
            max_same_number,
            block_for,
        } = self;
        [
            country_code,
            international_prefix,
            national_prefix,
            outside_line,
            timezone,
            default_block,
            max_calls_per_minute,
            max_same_number,
            block_for,
        ]
        .iter()
        .all(|v| v.is_none())
            && [
                business_hours,
                holidays,
                block,
                allow,
                after_hours_block,
                trunks,
            ]
            .iter()
            .all(|v| v.is_none())
    }
}

/// An array whose elements keep their own spans. (A plain `Vec` would do, but serde would
/// call a non-array "a sequence".)
struct Items(Vec<Val>);

impl<'de> Deserialize<'de> for Items {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = Items;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array, e.g. [ ... ]")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Items, A::Error> {
                let mut items = Vec::new();
                while let Some(v) = seq.next_element()? {
                    items.push(v);
                }
                Ok(Items(items))
            }
        }
        d.deserialize_seq(Visitor)
    }
}

/// The text being parsed, to turn byte spans into `file:line:column` errors.
struct Ctx<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Ctx<'_> {
    fn at(&self, span: std::ops::Range<usize>, reason: impl Into<String>) -> ConfigError {
        let (line, column) = line_col(self.text, span.start);
        ConfigError {
            path: self.path.to_path_buf(),
            line,
            column,
            reason: reason.into(),
        }
    }

    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        // "field" is serde's word; in a TOML file these are keys (and sections).
        let mut reason = e
            .message()
            .trim_end()
            .replacen("unknown field", "unknown key", 1);
        let Some(span) = e.span() else {
            return ConfigError {
                path: self.path.to_path_buf(),
                line: 0,
                column: 0,
                reason,
            };
        };
        // A type error points at the value; name the key it was given for.
        if reason.starts_with("invalid type")
            && let Some(key) = key_before(self.text, span.start)
        {
            reason = format!("{key}: {reason}");
        }
        // The parser does not say which key or table is repeated; the span holds it.
        if reason == "duplicate key"
            && let Some(key) = self.text.get(span.clone())
        {
            reason = format!("duplicate key `{key}` (each key and [section] may appear once)");
        }
        self.at(span, reason)
    }

    fn int(&self, field: &str, v: &Val) -> Result<i64, ConfigError> {
        match v.get_ref() {
            toml::Value::Integer(n) => Ok(*n),
            other => Err(self.at(
                v.span(),
                format!(
                    "{field}: expected a whole number, found {}",
                    describe(other)
                ),
            )),
        }
    }

    fn boolean(&self, field: &str, v: &Val) -> Result<bool, ConfigError> {
        match v.get_ref() {
            toml::Value::Boolean(b) => Ok(*b),
            other => Err(self.at(
                v.span(),
                format!("{field}: expected true or false, found {}", describe(other)),
            )),
        }
    }

    fn string<'v>(&self, field: &str, v: &'v Val) -> Result<&'v str, ConfigError> {
        match v.get_ref() {
            toml::Value::String(s) => Ok(s),
            other => Err(self.at(
                v.span(),
                format!(
                    "{field}: expected a string in quotes, found {}",
                    describe(other)
                ),
            )),
        }
    }

    fn port(&self, field: &str, proto: &str, v: &Val) -> Result<u16, ConfigError> {
        let n = self.int(field, v)?;
        u16::try_from(n).ok().filter(|p| *p != 0).ok_or_else(|| {
            self.at(
                v.span(),
                format!("{field}: {n} is not a valid {proto} port"),
            )
        })
    }

    fn udp_ports(&self, list: &List) -> Result<Vec<u16>, ConfigError> {
        let items = &list.get_ref().0;
        if items.is_empty() {
            return Err(self.at(
                list.span(),
                "ports: at least one port is needed (5060 is the standard SIP port)",
            ));
        }
        let mut ports: Vec<u16> = Vec::new();
        for (i, v) in items.iter().enumerate() {
            let p = self.port("ports", "UDP", v)?;
            if i == sip_filter_common::MAX_PORTS {
                return Err(self.at(
                    v.span(),
                    format!(
                        "ports: at most {} ports are supported",
                        sip_filter_common::MAX_PORTS
                    ),
                ));
            }
            if ports.contains(&p) {
                return Err(self.at(v.span(), format!("ports: {p} is listed twice")));
            }
            ports.push(p);
        }
        Ok(ports)
    }

    /// A source's `poll`: at least `min`, `default` when absent.
    fn poll(
        &self,
        v: Option<&Val>,
        min: Duration,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(v) = v else {
            return Ok(default);
        };
        let d = self.duration("poll", v)?;
        if d < min {
            return Err(self.at(
                v.span(),
                format!("poll: at least \"{}\"", humantime::format_duration(min)),
            ));
        }
        Ok(d)
    }

    fn duration(&self, field: &str, v: &Val) -> Result<Duration, ConfigError> {
        let s = match v.get_ref() {
            toml::Value::String(s) => s.trim(),
            other => {
                return Err(self.at(
                    v.span(),
                    format!(
                        "{field}: expected a duration in quotes, such as \"60s\", \"10m\" or \
                         \"1h 30m\", found {}",
                        describe(other)
                    ),
                ));
            }
        };
        let permanent = "permanent bans are not supported: give a duration such as \"1d\" \
                         or \"4w\" (a source that keeps failing is banned again)";
        let d = match humantime::parse_duration(s) {
            Ok(d) => d,
            Err(_)
                if field == "ban_time"
                    && matches!(
                        s.to_ascii_lowercase().as_str(),
                        "permanent" | "forever" | "never" | "infinite" | "-1"
                    ) =>
            {
                return Err(self.at(v.span(), format!("{field}: {permanent}")));
            }
            Err(e) => {
                return Err(self.at(
                    v.span(),
                    format!(
                        "{field}: {s:?} is not a duration ({e}); write e.g. \"60s\", \"10m\" \
                         or \"1h 30m\""
                    ),
                ));
            }
        };
        if d.is_zero() {
            let why = if field == "ban_time" {
                permanent
            } else {
                "must be longer than 0"
            };
            return Err(self.at(v.span(), format!("{field}: {why}")));
        }
        if d > MAX_DURATION {
            return Err(self.at(
                v.span(),
                format!("{field}: {s:?} is longer than the supported maximum of 100 years"),
            ));
        }
        Ok(d)
    }

    /// A whole number from `min` to `max`.
    fn count_in(&self, field: &str, v: &Val, min: u32, max: u32) -> Result<u32, ConfigError> {
        let n = self.int(field, v)?;
        u32::try_from(n)
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| {
                let off = if min == 0 { " (0: off)" } else { "" };
                self.at(
                    v.span(),
                    format!("{field}: {n} is not a count from {min}{off} to {max}"),
                )
            })
    }

    fn threshold(
        &self,
        t: &mut Threshold,
        max_field: &str,
        max: Option<&Val>,
        find_time: Option<&Val>,
        ban_time: Option<&Val>,
    ) -> Result<(), ConfigError> {
        if let Some(v) = max {
            let n = self.int(max_field, v)?;
            t.max = u32::try_from(n).map_err(|_| {
                self.at(
                    v.span(),
                    format!(
                        "{max_field}: {n} is not a count from 0 (off) to {}",
                        u32::MAX
                    ),
                )
            })?;
        }
        if let Some(v) = find_time {
            t.find_time = self.duration("find_time", v)?;
        }
        if let Some(v) = ban_time {
            t.ban_time = self.duration("ban_time", v)?;
        }
        Ok(())
    }

    fn networks(&self, list: &List) -> Result<Vec<IpNet>, ConfigError> {
        self.networks_named("cidrs", list)
    }

    fn networks_named(&self, field: &str, list: &List) -> Result<Vec<IpNet>, ConfigError> {
        let mut nets: Vec<IpNet> = Vec::new();
        for v in &list.get_ref().0 {
            let s = self.string(field, v)?;
            let net = parse_net(s.trim()).ok_or_else(|| {
                self.at(
                    v.span(),
                    format!(
                        "{field}: {s:?} is not an address or network (e.g. \"198.51.100.7\", \
                         \"198.51.100.0/24\", \"2001:db8::/48\")"
                    ),
                )
            })?;
            if nets.contains(&net) {
                return Err(self.at(v.span(), format!("{field}: {net} is listed twice")));
            }
            nets.push(net);
        }
        Ok(nets)
    }

    fn countries(&self, field: &str, list: &List) -> Result<Vec<String>, ConfigError> {
        let mut codes: Vec<String> = Vec::new();
        for v in &list.get_ref().0 {
            let s = self.string(field, v)?;
            if s.len() != 2 || !s.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(self.at(
                    v.span(),
                    format!(
                        "{field}: {s:?} is not a two-letter country code (ISO 3166-1 alpha-2, \
                         e.g. \"US\")"
                    ),
                ));
            }
            let code = s.to_ascii_uppercase();
            if codes.contains(&code) {
                return Err(self.at(v.span(), format!("{field}: {code} is listed twice")));
            }
            codes.push(code);
        }
        Ok(codes)
    }

    /// A string of digits (possibly empty when `empty_ok`).
    fn digits(&self, field: &str, v: &Val, empty_ok: bool) -> Result<String, ConfigError> {
        let t = self.string(field, v)?.trim();
        if (t.is_empty() && !empty_ok) || !t.bytes().all(|b| b.is_ascii_digit()) || t.len() > 6 {
            return Err(self.at(
                v.span(),
                format!(
                    "{field}: {t:?} is not {}digits, e.g. \"{}\"",
                    if empty_ok { "empty or " } else { "" },
                    if field == "country_code" { "44" } else { "00" }
                ),
            ));
        }
        Ok(t.to_string())
    }

    fn prefixes(&self, field: &str, list: &List) -> Result<Vec<String>, ConfigError> {
        let mut out: Vec<String> = Vec::new();
        for v in &list.get_ref().0 {
            let t = self.string(field, v)?;
            let p = crate::calls::rules::parse_prefix(t)
                .map_err(|e| self.at(v.span(), format!("{field}: {e}")))?;
            if out.contains(&p) {
                return Err(self.at(v.span(), format!("{field}: \"+{p}\" is listed twice")));
            }
            out.push(p);
        }
        Ok(out)
    }

    fn count(&self, field: &str, v: &Val) -> Result<u32, ConfigError> {
        let n = self.int(field, v)?;
        u32::try_from(n).map_err(|_| {
            self.at(
                v.span(),
                format!("{field}: {n} is not a count from 0 (off) to {}", u32::MAX),
            )
        })
    }

    fn calls(&self, c: &RawCalls, span: std::ops::Range<usize>) -> Result<Calls, ConfigError> {
        use crate::calls::{dialplan::DialPlan, rules::RuleSet, schedule};
        let cc = match &c.country_code {
            Some(v) => self.digits("country_code", v, false)?,
            None => {
                return Err(self.at(
                    span.start..span.start + 1,
                    "[calls] needs country_code: the PBX's own E.164 calling code, e.g. \"1\" \
                     (North America) or \"44\"",
                ));
            }
        };
        let nanp = cc == "1";
        let plan = DialPlan {
            international_prefix: match &c.international_prefix {
                Some(v) => self.digits("international_prefix", v, true)?,
                None => if nanp { "011" } else { "00" }.into(),
            },
            national_prefix: match &c.national_prefix {
                Some(v) => self.digits("national_prefix", v, true)?,
                None => if nanp { "1" } else { "0" }.into(),
            },
            outside_line: match &c.outside_line {
                Some(v) => self.digits("outside_line", v, true)?,
                None => String::new(),
            },
            country_code: cc,
        };
        let tz = match &c.timezone {
            Some(v) => {
                let name = self.string("timezone", v)?;
                jiff::tz::TimeZone::get(name).map_err(|e| {
                    self.at(
                        v.span(),
                        format!(
                            "timezone: {name:?} is not a time zone ({e}); use an IANA name such \
                             as \"America/New_York\" or \"UTC\""
                        ),
                    )
                })?
            }
            None => {
                if let Some(l) = c.business_hours.as_ref().or(c.holidays.as_ref()) {
                    return Err(self.at(
                        l.span(),
                        "business hours need [calls] timezone, e.g. timezone = \"Europe/London\"",
                    ));
                }
                jiff::tz::TimeZone::UTC
            }
        };
        let mut windows = Vec::new();
        if let Some(l) = &c.business_hours {
            for v in &l.get_ref().0 {
                let t = self.string("business_hours", v)?;
                windows.push(
                    schedule::parse_window(t)
                        .map_err(|e| self.at(v.span(), format!("business_hours: {e}")))?,
                );
            }
        }
        let mut holidays = Vec::new();
        if let Some(l) = &c.holidays {
            for v in &l.get_ref().0 {
                let t = self.string("holidays", v)?;
                holidays.push(t.trim().parse::<jiff::civil::Date>().map_err(|_| {
                    self.at(
                        v.span(),
                        format!("holidays: {t:?} is not a date (YYYY-MM-DD, e.g. \"2026-12-25\")"),
                    )
                })?);
            }
        }
        let list = |field: &str, l: &Option<List>| match l {
            Some(l) => self.prefixes(field, l),
            None => Ok(Vec::new()),
        };
        let block = list("block", &c.block)?;
        let allow = list("allow", &c.allow)?;
        let after = list("after_hours_block", &c.after_hours_block)?;
        let default_block = match &c.default_block {
            Some(v) => self.boolean("default_block", v)?,
            None => true,
        };
        let rules = RuleSet::new(&block, &allow, &after, default_block).map_err(|e| {
            let at = c
                .allow
                .as_ref()
                .or(c.after_hours_block.as_ref())
                .map(|l| l.span())
                .unwrap_or(span.clone());
            self.at(at, format!("[calls]: {e}"))
        })?;
        let trunks = match &c.trunks {
            Some(l) => self.networks_named("trunks", l)?,
            None => Vec::new(),
        };
        let max_calls_per_minute = match &c.max_calls_per_minute {
            Some(v) => self.count("max_calls_per_minute", v)?,
            None => 0,
        };
        let max_same_number = match &c.max_same_number {
            None => None,
            Some(v) => {
                let toml::Value::Table(t) = v.get_ref() else {
                    return Err(self.at(
                        v.span(),
                        "max_same_number: expected a table, e.g. { calls = 5, within = \"10m\" }",
                    ));
                };
                let bad = |why: String| self.at(v.span(), format!("max_same_number: {why}"));
                if let Some(k) = t.keys().find(|k| *k != "calls" && *k != "within") {
                    return Err(bad(format!(
                        "unknown key `{k}`, expected `calls` and `within`"
                    )));
                }
                let calls = match t.get("calls") {
                    Some(toml::Value::Integer(n)) if *n > 0 && *n <= u32::MAX as i64 => *n as u32,
                    _ => return Err(bad("`calls` must be a count above 0".into())),
                };
                let within = match t.get("within") {
                    Some(toml::Value::String(w)) => humantime::parse_duration(w.trim())
                        .ok()
                        .filter(|d| !d.is_zero())
                        .ok_or_else(|| {
                            bad(format!("`within`: {w:?} is not a duration such as \"10m\""))
                        })?,
                    _ => return Err(bad("`within` must be a duration such as \"10m\"".into())),
                };
                Some((calls, within))
            }
        };
        let block_for = match &c.block_for {
            Some(v) => self.duration("block_for", v)?,
            None => Duration::from_secs(3600),
        };
        Ok(Calls {
            plan,
            schedule: schedule::Schedule {
                tz,
                windows,
                holidays,
            },
            rules,
            default_block,
            trunks,
            max_calls_per_minute,
            max_same_number,
            block_for,
        })
    }

    fn crowdsec(
        &self,
        c: &RawCrowdsec,
        span: std::ops::Range<usize>,
    ) -> Result<Crowdsec, ConfigError> {
        let head = span.start..span.start + 1;
        let Some(v) = &c.lapi_url else {
            return Err(self.at(
                head,
                "[crowdsec] needs lapi_url: the Local API's address, e.g. \
                 \"http://127.0.0.1:8080\"",
            ));
        };
        let lapi_url = self
            .http_url("lapi_url", v, "http://127.0.0.1:8080")?
            .trim_end_matches('/')
            .to_string();
        let api_key = match (&c.api_key, &c.api_key_file) {
            (Some(a), Some(_)) => {
                return Err(self.at(a.span(), "api_key: give api_key or api_key_file, not both"));
            }
            (Some(v), None) => {
                let k = self.string("api_key", v)?.trim();
                if k.is_empty() {
                    return Err(self.at(v.span(), "api_key: the key is empty"));
                }
                Secret::Inline(k.to_string())
            }
            (None, Some(v)) => Secret::File(self.path("api_key_file", v)?),
            (None, None) => {
                return Err(self.at(
                    head,
                    "[crowdsec] needs api_key_file (or api_key): the bouncer key from \
                     `cscli bouncers add sip-filter`",
                ));
            }
        };
        let poll = self.poll(c.poll.as_ref(), Duration::from_millis(500), CROWDSEC_POLL)?;
        let resync = match &c.resync {
            Some(v) => {
                let d = self.duration("resync", v)?;
                if d < poll {
                    return Err(self.at(v.span(), "resync: at least as long as poll"));
                }
                d
            }
            None => CROWDSEC_RESYNC.max(poll),
        };
        let watcher = match (&c.machine_id, &c.password_file) {
            (Some(m), Some(p)) => {
                let id = self.string("machine_id", m)?.trim();
                if id.is_empty() {
                    return Err(self.at(m.span(), "machine_id: the name is empty"));
                }
                Some(Watcher {
                    machine_id: id.to_string(),
                    password: Secret::File(self.path("password_file", p)?),
                })
            }
            (Some(m), None) => {
                return Err(self.at(
                    m.span(),
                    "machine_id: give password_file too (the machine's password, from \
                     `cscli machines add`)",
                ));
            }
            (None, Some(p)) => {
                return Err(self.at(p.span(), "password_file: give machine_id too"));
            }
            (None, None) => None,
        };
        Ok(Crowdsec {
            lapi_url,
            api_key,
            poll,
            resync,
            watcher,
        })
    }

    fn apiban(&self, c: &RawApiban, span: std::ops::Range<usize>) -> Result<Apiban, ConfigError> {
        let Some(k) = &c.key_file else {
            return Err(self.at(
                span.start..span.start + 1,
                "[apiban] needs key_file: a file holding the key apiban.org sent (chmod 600)",
            ));
        };
        let url = match &c.url {
            Some(v) => self
                .http_url("url", v, APIBAN_URL)?
                .trim_end_matches('/')
                .to_string(),
            None => APIBAN_URL.to_string(),
        };
        let poll = self.poll(c.poll.as_ref(), Duration::from_secs(1), APIBAN_POLL)?;
        Ok(Apiban {
            url,
            key: Secret::File(self.path("key_file", k)?),
            poll,
        })
    }

    /// An `http://` or `https://` URL with a host.
    fn http_url<'v>(&self, field: &str, v: &'v Val, example: &str) -> Result<&'v str, ConfigError> {
        let text = self.string(field, v)?;
        let ok = text
            .parse::<ureq::http::Uri>()
            .ok()
            .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
        if ok.is_none() {
            return Err(self.at(
                v.span(),
                format!("{field}: {text:?} is not an http:// or https:// URL, e.g. \"{example}\""),
            ));
        }
        Ok(text)
    }

    fn path(&self, field: &str, v: &Val) -> Result<PathBuf, ConfigError> {
        let s = self.string(field, v)?;
        if s.trim().is_empty() {
            return Err(self.at(v.span(), format!("{field}: the path is empty")));
        }
        Ok(PathBuf::from(s))
    }
}

/// "found ..." for a value of the wrong type.
fn describe(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("the string {s:?}"),
        toml::Value::Integer(n) => format!("the number {n}"),
        toml::Value::Float(x) => format!("the number {x}"),
        toml::Value::Boolean(b) => format!("{b}"),
        toml::Value::Datetime(d) => format!("the date {d}"),
        toml::Value::Array(_) => "an array".to_owned(),
        toml::Value::Table(_) => "a table".to_owned(),
    }
}

/// The key of `key = value` when `offset` is where the value starts (values begin on the
/// line of their key, also inside inline tables).
fn key_before(text: &str, offset: usize) -> Option<&str> {
    let before = text.get(..offset)?;
    let line = &before[before.rfind('\n').map_or(0, |i| i + 1)..];
    let key = line
        .trim_end()
        .strip_suffix('=')?
        .trim_end()
        .rsplit(|c: char| c.is_whitespace() || c == '{' || c == ',')
        .next()?
        .trim_matches(|c| c == '"' || c == '\'');
    (!key.is_empty()).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Settings {
        Settings::parse(text, Path::new("sip-filter.toml")).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The error as the operator sees it: `file:line:column: reason`.
    fn err(text: &str) -> String {
        Settings::parse(text, Path::new("sip-filter.toml"))
            .expect_err("must be rejected")
            .to_string()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    const EXAMPLE: &str = include_str!("../../sip-filter.example.toml");

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(parse(""), Settings::default());
        assert_eq!(
            parse("# nothing\n\n[sip]\n[auth]\n[geo]\n"),
            Settings::default()
        );
    }

    #[test]
    fn defaults_match_the_dataplane_defaults() {
        assert_eq!(
            Settings::default().dataplane_config(),
            sip_filter_common::Config::default()
        );
    }

    #[test]
    fn full_file() {
        let s = parse(
            r#"
[sip]
ports = [5060, 5080]
tls_port = 5063
ban_scope = "sip"
ipv6_prefix = 56

[auth]
max_failures = 3
find_time = "10m"
ban_time = "1h 30m"
trust_time = "12h"

[scanners]
user_agents = ["friendly-scanner", "=smap"]
ban_time = "2h"

[flood]
max_requests = 20
per = "1s"
block_for = "1m"
trusted_factor = 5

[crowdsec]
lapi_url = "http://127.0.0.1:8080/"
api_key_file = "/etc/sip-filter/crowdsec.key"
poll = "5s"
resync = "1h"
machine_id = "pbx1"
password_file = "/etc/sip-filter/crowdsec.password"

[apiban]
key_file = "/etc/sip-filter/apiban.key"
poll = "4m"

[enumeration]
max_not_found = 0
find_time = "30s"
ban_time = "2d"

[allow]
cidrs = ["198.51.100.0/24", "2001:db8:100::/48", "203.0.113.7", "2001:db8::1", "192.0.2.9/24"]

[geo]
database = "/usr/share/GeoIP/GeoLite2-Country.mmdb"
block_countries = ["ps", "AL"]
cidr_files = ["/etc/sip-filter/blocked.zone", "other.zone"]

[metrics]
listen = "127.0.0.1:9754"

[notify]
webhook = "https://hooks.example.com/sip"

[bans]
increment = true
factor = 1.5
max_time = "2w"
rnd_time = "10m"
history_time = "60d"

[state]
dir = "/srv/sip-filter"
"#,
        );
        assert_eq!(
            s,
            Settings {
                sip: Sip {
                    ports: vec![5060, 5080],
                    tls_port: 5063,
                    ban_scope: BanScope::Sip,
                    ipv6_prefix: 56,
                },
                auth: Threshold {
                    max: 3,
                    find_time: Duration::from_secs(600),
                    ban_time: Duration::from_secs(5400),
                },
                enumeration: Threshold {
                    max: 0,
                    find_time: Duration::from_secs(30),
                    ban_time: Duration::from_secs(2 * 86400),
                },
                allow: vec![
                    net("198.51.100.0/24"),
                    net("2001:db8:100::/48"),
                    net("203.0.113.7/32"),
                    net("2001:db8::1/128"),
                    // Host bits are cleared.
                    net("192.0.2.0/24"),
                ],
                geo: Geo {
                    database: Some("/usr/share/GeoIP/GeoLite2-Country.mmdb".into()),
                    block_countries: vec!["PS".into(), "AL".into()],
                    allow_countries: vec![],
                    cidr_files: vec!["/etc/sip-filter/blocked.zone".into(), "other.zone".into()],
                },
                metrics: Metrics {
                    listen: Some("127.0.0.1:9754".parse().unwrap()),
                },
                notify: Notify {
                    webhook: Some("https://hooks.example.com/sip".into()),
                },
                bans: Bans {
                    increment: true,
                    factor: Factor(1.5),
                    max_time: Duration::from_secs(14 * 86400),
                    rnd_time: Duration::from_secs(600),
                    history_time: Duration::from_secs(60 * 86400),
                },
                state: State {
                    dir: "/srv/sip-filter".into(),
                },
                calls: None,
                trust_time: Duration::from_secs(12 * 3600),
                max_failures_per_extension: 10,
                max_failing_extensions: 3,
                scanners: Scanners {
                    user_agents: vec![
                        crate::scanners::Signature::parse("friendly-scanner").unwrap(),
                        crate::scanners::Signature::parse("=smap").unwrap(),
                    ],
                    ban_time: Duration::from_secs(7200),
                },
                flood: Flood {
                    max_requests: 20,
                    per: Duration::from_secs(1),
                    block_for: Duration::from_secs(60),
                    trusted_factor: 5,
                },
                crowdsec: Some(Crowdsec {
                    lapi_url: "http://127.0.0.1:8080".into(),
                    api_key: Secret::File("/etc/sip-filter/crowdsec.key".into()),
                    poll: Duration::from_secs(5),
                    resync: Duration::from_secs(3600),
                    watcher: Some(Watcher {
                        machine_id: "pbx1".into(),
                        password: Secret::File("/etc/sip-filter/crowdsec.password".into()),
                    }),
                }),
                apiban: Some(Apiban {
                    url: APIBAN_URL.into(),
                    key: Secret::File("/etc/sip-filter/apiban.key".into()),
                    poll: Duration::from_secs(240),
                }),
            }
        );
        assert!(s.is_allowed("203.0.113.7".parse().unwrap()));
        assert!(!s.is_allowed("203.0.113.8".parse().unwrap()));
        let dp = s.dataplane_config();
        assert_eq!(dp.nports, 2);
        assert_eq!(&dp.ports[..3], &[5060, 5080, 0]);
        assert_eq!(dp.ban_scope, sip_filter_common::BAN_SCOPE_SIP);
        assert_eq!(dp.auth_find_time_ns, 600_000_000_000);
        assert_eq!(dp.flood_interval_ns, 50_000_000);
        assert_eq!(dp.flood_trusted_interval_ns, 10_000_000);
        assert_eq!(dp.flood_per_ns, 1_000_000_000);
        assert_eq!(dp.trust_time_ns, 12 * 3600 * 1_000_000_000);
    }

    #[test]
    fn flood_and_scanner_errors_point_at_the_value() {
        for (text, want) in [
            (
                "[flood]\nmax_requests = -1\n",
                "2:16: max_requests: -1 is not a count from 0 (0: off) to 10000",
            ),
            (
                "[flood]\nper = \"10ms\"\n",
                "2:7: per: must be at least 100ms",
            ),
            (
                "[flood]\nmax_requests = 2000\n",
                "2:16: trusted_factor: max_requests x trusted_factor = 20000",
            ),
            (
                "[flood]\ntrusted_factor = 0\n",
                "2:18: trusted_factor: 0 is not a count from 1 to 10000",
            ),
            (
                "[scanners]\nuser_agents = [\"a\", \"=\"]\n",
                "2:21: user_agents: \"=\" is empty",
            ),
            (
                "[scanners]\nuser_agents = [\"a\", \"A\", \"a\"]\n",
                "2:21: user_agents: \"A\" is listed twice",
            ),
        ] {
            let e = Settings::parse(text, Path::new("x.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(&format!("x.toml:{want}")), "{text:?}: {e}");
        }
        // Off, and every default signature in force by default.
        let s = parse("[flood]\nmax_requests = 0\n");
        assert_eq!(s.dataplane_config().flood_per_ns, 0);
        assert_eq!(s.scanners.user_agents.len(), crate::scanners::DEFAULT.len());
        assert!(
            parse("[scanners]\nuser_agents = []\n")
                .scanners
                .user_agents
                .is_empty()
        );
    }

    #[test]
    fn allow_countries_and_inline_tables() {
        let s = parse(
            "geo = { database = \"db.mmdb\", allow_countries = [\"us\", \"CA\"] }\n\
             sip = { ports = [5060, 5061, 5062, 5063, 5064, 5065, 5066, 5067] }\n",
        );
        assert_eq!(s.geo.allow_countries, ["US", "CA"]);
        assert!(s.geo.block_countries.is_empty());
        assert_eq!(s.sip.ports.len(), sip_filter_common::MAX_PORTS);
        // An empty list of the other kind is no conflict.
        let s = parse(
            "[geo]\ndatabase = \"db.mmdb\"\nblock_countries = []\nallow_countries = [\"US\"]\n",
        );
        assert_eq!(s.geo.allow_countries, ["US"]);
        // A database alone (for `geo lookup`) is fine.
        let s = parse("[geo]\ndatabase = \"db.mmdb\"\n");
        assert_eq!(s.geo.database, Some(PathBuf::from("db.mmdb")));
    }

    #[test]
    fn example_file_states_the_defaults() {
        assert_eq!(parse(EXAMPLE), Settings::default());
    }

    /// Uncomments the example's `#key = value` lines (but not `skip`).
    fn uncomment(text: &str, skip: &str) -> String {
        text.lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest)
                    if rest.starts_with(|c: char| c.is_ascii_lowercase())
                        && !rest.starts_with(skip) =>
                {
                    rest.to_owned()
                }
                _ => l.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn example_file_examples_are_valid() {
        let text = uncomment(EXAMPLE, "allow_countries")
            // The commented `cidrs` example follows the default `cidrs = []`.
            .replace("cidrs = []\n", "");
        let s = parse(&text);
        assert_eq!(
            s.geo.database,
            Some(PathBuf::from("/usr/share/GeoIP/GeoLite2-Country.mmdb"))
        );
        assert_eq!(s.geo.block_countries, ["PS", "AL"]);
        assert_eq!(
            s.geo.cidr_files,
            [PathBuf::from("/etc/sip-filter/blocked.zone")]
        );
        assert_eq!(s.allow.len(), 3);
        assert_eq!(s.sip, Settings::default().sip);

        let text = uncomment(EXAMPLE, "block_countries").replace("cidrs = []\n", "");
        assert_eq!(parse(&text).geo.allow_countries, ["US", "CA"]);

        // Both at once is the documented conflict.
        let text = uncomment(EXAMPLE, "none").replace("cidrs = []\n", "");
        assert!(err(&text).contains("allow_countries: cannot be combined with block_countries"));
    }

    #[test]
    fn crowdsec_section() {
        let c = parse("[crowdsec]\nlapi_url = \"http://[2001:db8::1]:8080\"\napi_key = \"k\"\n")
            .crowdsec
            .unwrap();
        assert_eq!(c.api_key, Secret::Inline("k".into()));
        assert_eq!(c.poll, CROWDSEC_POLL);
        assert_eq!(c.watcher, None);
        assert_eq!(
            err("[crowdsec]\napi_key = \"k\"\n"),
            "sip-filter.toml:1:1: [crowdsec] needs lapi_url: the Local API's address, e.g. \
             \"http://127.0.0.1:8080\""
        );
        assert!(
            err("[crowdsec]\nlapi_url = \"http://x\"\n").contains("needs api_key_file"),
            "no key"
        );
        assert!(
            err("[crowdsec]\nlapi_url = \"x\"\napi_key = \"k\"\n")
                .starts_with("sip-filter.toml:2:12: lapi_url: \"x\" is not an http")
        );
        assert!(
            err("[crowdsec]\nlapi_url = \"http://x\"\napi_key = \"k\"\napi_key_file = \"/k\"\n")
                .contains("3:11: api_key: give api_key or api_key_file, not both")
        );
        assert!(
            err("[crowdsec]\nlapi_url = \"http://x\"\napi_key = \"k\"\npoll = \"100ms\"\n")
                .contains("4:8: poll: at least")
        );
        assert!(
            err("[crowdsec]\nlapi_url = \"http://x\"\napi_key = \"k\"\nmachine_id = \"m\"\n")
                .contains("4:14: machine_id: give password_file too")
        );
    }

    #[test]
    fn apiban_section() {
        let a = parse("[apiban]\nkey_file = \"/k\"\nurl = \"http://127.0.0.1:9/api/\"\n")
            .apiban
            .unwrap();
        assert_eq!(a.url, "http://127.0.0.1:9/api");
        assert_eq!(a.poll, APIBAN_POLL);
        assert_eq!(parse("[apiban]\n").apiban, None, "an empty section is off");
        assert_eq!(
            err("[apiban]\nurl = \"http://x\"\n"),
            "sip-filter.toml:1:1: [apiban] needs key_file: a file holding the key apiban.org \
             sent (chmod 600)"
        );
        assert!(
            err("[apiban]\nkey_file = \"/k\"\npoll = \"10ms\"\n").contains("3:8: poll: at least")
        );
        assert!(err("[apiban]\nkey = \"k\"\n").contains("unknown key `key`"));
    }

    #[test]
    fn secret_files_readable_by_others_are_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("key");
        std::fs::write(&f, "abc\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Secret::File(f.clone()).read().unwrap_err().to_string();
        assert!(e.contains("readable by every user"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Secret::File(f).read().unwrap(), "abc");
        let e = Secret::File(dir.path().join("none")).read().unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
    }

    #[test]
    fn metrics_listen() {
        assert_eq!(
            parse("[metrics]\nlisten = \"[::1]:9754\"\n").metrics.listen,
            Some("[::1]:9754".parse().unwrap())
        );
        assert_eq!(
            err("[metrics]\nlisten = \"localhost\"\n"),
            "sip-filter.toml:2:10: listen: \"localhost\" is not an address and port, e.g. \
             \"127.0.0.1:9754\" or \"[::1]:9754\""
        );
        assert_eq!(
            err("[metrics]\nport = 9754\n"),
            "sip-filter.toml:2:1: unknown key `port`, expected `listen`"
        );
    }

    #[test]
    fn calls_section() {
        let s = parse(
            r#"
[calls]
country_code = "1"
outside_line = "9"
timezone = "America/New_York"
business_hours = ["Mon-Fri 08:00-17:00"]
holidays = ["2026-12-25"]
block = ["+882", "+883"]
allow = ["+1"]
after_hours_block = ["+"]
trunks = ["198.51.100.7"]
max_calls_per_minute = 10
max_same_number = { calls = 5, within = "10m" }
block_for = "1h"
"#,
        );
        let c = s.calls.unwrap();
        assert_eq!(c.plan.international_prefix, "011", "NANP default");
        assert_eq!(c.plan.national_prefix, "1");
        assert_eq!(c.plan.outside_line, "9");
        assert_eq!(c.schedule.windows.len(), 1);
        assert!(c.default_block);
        assert_eq!(c.trunks, [net("198.51.100.7/32")]);
        assert_eq!(c.max_same_number, Some((5, Duration::from_secs(600))));
        let uk = parse("[calls]\ncountry_code = \"44\"\n").calls.unwrap();
        assert_eq!(
            (
                uk.plan.international_prefix.as_str(),
                uk.plan.national_prefix.as_str()
            ),
            ("00", "0")
        );
        for (text, want) in [
            (
                "[calls]\nblock = [\"+882\"]\n",
                "sip-filter.toml:1:1: [calls] needs country_code",
            ),
            (
                "[calls]\ncountry_code = \"1\"\nblock = [\"882\"]\n",
                "sip-filter.toml:3:10: block: \"882\" is not an E.164 prefix",
            ),
            (
                "[calls]\ncountry_code = \"1\"\ntimezone = \"Mars/Olympus\"\n",
                "sip-filter.toml:3:12: timezone: \"Mars/Olympus\" is not a time zone",
            ),
            (
                "[calls]\ncountry_code = \"1\"\nbusiness_hours = [\"Mon-Fri 08:00-17:00\"]\n",
                "sip-filter.toml:3:18: business hours need [calls] timezone",
            ),
            (
                "[calls]\ncountry_code = \"1\"\ntimezone = \"UTC\"\nbusiness_hours = [\"Mon-Fry 08:00-17:00\"]\n",
                "sip-filter.toml:4:19: business_hours: \"Fry\" is not a day",
            ),
            (
                "[calls]\ncountry_code = \"1\"\ntimezone = \"UTC\"\nholidays = [\"2026-13-01\"]\n",
                "sip-filter.toml:4:13: holidays: \"2026-13-01\" is not a date",
            ),
            (
                "[calls]\ncountry_code = \"1\"\nmax_same_number = { calls = 0, within = \"10m\" }\n",
                "max_same_number: `calls` must be a count above 0",
            ),
            (
                "[calls]\ncountry_code = \"1\"\nmax_calls_per_minute = -1\n",
                "max_calls_per_minute: -1 is not a count",
            ),
            (
                "[calls]\ncountry_code = \"1\"\nblock = [\"+44\"]\nallow = [\"+44\"]\n",
                "is in both block and allow",
            ),
            (
                "[calls]\ncountry_code = \"one\"\n",
                "country_code: \"one\" is not digits",
            ),
        ] {
            let e = err(text);
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn bans_and_state() {
        let s = parse("[bans]\nincrement = true\nrnd_time = \"0s\"\nfactor = 2\n");
        assert!(s.bans.increment);
        assert_eq!(s.bans.factor, Factor(2.0));
        assert_eq!(s.bans.rnd_time, Duration::ZERO);
        assert_eq!(
            s.bans.max_time,
            Duration::from_secs(7 * 86400),
            "default max_time 1w"
        );
        assert_eq!(
            s.bans.history_time,
            Duration::from_secs(30 * 86400),
            "default 30d"
        );
        assert_eq!(s.state.dir, PathBuf::from("/var/lib/sip-filter"));
        assert_eq!(
            err("[bans]\nincrement = \"yes\"\n"),
            "sip-filter.toml:2:13: increment: expected true or false, found the string \"yes\""
        );
        assert!(err("[bans]\nfactor = 0\n").contains("factor: 0 is not a multiplier"));
        assert!(
            err("[bans]\nmax_time = \"soon\"\n").contains("max_time: \"soon\" is not a duration")
        );
        assert!(err("[state]\ndir = \"\"\n").contains("dir: the path is empty"));
    }

    #[test]
    fn notify_webhook() {
        assert_eq!(
            err("[notify]\nwebhook = \"ftp://x/y\"\n"),
            "sip-filter.toml:2:11: webhook: \"ftp://x/y\" is not an http:// or https:// URL, \
             e.g. \"http://127.0.0.1:8080/sip-filter\""
        );
        assert!(err("[notify]\nwebhook = \"not a url\"\n").contains("is not an http://"));
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(
            err("[sip]\nports = [5060\n"),
            "sip-filter.toml:2:14: unclosed array, expected `]`"
        );
        assert_eq!(
            err("[sip]\n[sip]\n"),
            "sip-filter.toml:2:2: duplicate key `sip` (each key and [section] may appear once)"
        );
        assert_eq!(
            err("[auth]\nban_time = \"1h\"\nban_time = \"2h\"\n"),
            "sip-filter.toml:3:1: duplicate key `ban_time` (each key and [section] may appear \
             once)"
        );
        assert_eq!(
            err("[sip]\nports = [5060]]\n"),
            "sip-filter.toml:2:15: unexpected key or value, expected newline, `#`"
        );
    }

    #[test]
    fn unknown_keys_and_sections() {
        assert_eq!(
            err("[sip]\nport = [5060]\n"),
            "sip-filter.toml:2:1: unknown key `port`, expected one of `ports`, `tls_port`, \
             `ban_scope`, `ipv6_prefix`"
        );
        assert_eq!(
            err("[sip]\nports = [5060]\n\n[jail]\nmaxretry = 3\n"),
            "sip-filter.toml:4:2: unknown key `jail`, expected one of `sip`, `auth`, \
             `enumeration`, `allow`, `geo`, `metrics`, `notify`, `bans`, `state`, `calls`, \
             `scanners`, `flood`, `crowdsec`, `apiban`"
        );
        assert_eq!(
            err("[auth]\nmaxretry = 3\n"),
            "sip-filter.toml:2:1: unknown key `maxretry`, expected one of `max_failures`, \
             `find_time`, `ban_time`, `trust_time`, `max_failures_per_extension`, \
             `max_failing_extensions`"
        );
        assert_eq!(
            err("[enumeration]\nmax_failures = 3\n"),
            "sip-filter.toml:2:1: unknown key `max_failures`, expected one of `max_not_found`, \
             `find_time`, `ban_time`"
        );
        assert_eq!(
            err("[geo]\ncountries = [\"US\"]\n"),
            "sip-filter.toml:2:1: unknown key `countries`, expected one of `database`, \
             `block_countries`, `allow_countries`, `cidr_files`"
        );
        assert_eq!(
            err("[allow]\ncidr = []\n"),
            "sip-filter.toml:2:1: unknown key `cidr`, expected `cidrs`"
        );
    }

    #[test]
    fn wrong_types() {
        assert_eq!(
            err("[sip]\nports = 5060\n"),
            "sip-filter.toml:2:9: ports: invalid type: integer `5060`, expected an array, e.g. [ ... ]"
        );
        assert_eq!(
            err("sip = 5\n"),
            "sip-filter.toml:1:7: sip: invalid type: integer `5`, expected a [sip] table"
        );
        assert_eq!(
            err("[sip]\nports = [\"5060\"]\n"),
            "sip-filter.toml:2:10: ports: expected a whole number, found the string \"5060\""
        );
        assert_eq!(
            err("[sip]\ntls_port = 5061.0\n"),
            "sip-filter.toml:2:12: tls_port: expected a whole number, found the number 5061"
        );
        assert_eq!(
            err("[sip]\nban_scope = true\n"),
            "sip-filter.toml:2:13: ban_scope: expected a string in quotes, found true"
        );
        assert_eq!(
            err("[auth]\nmax_failures = \"5\"\n"),
            "sip-filter.toml:2:16: max_failures: expected a whole number, found the string \"5\""
        );
        assert_eq!(
            err("[geo]\ndatabase = [\"a.mmdb\"]\n"),
            "sip-filter.toml:2:12: database: expected a string in quotes, found an array"
        );
    }

    #[test]
    fn sip_values() {
        assert_eq!(
            err("# SIP ports\n[sip]\n\n\n\nports = [5060, 70000]\n"),
            "sip-filter.toml:6:16: ports: 70000 is not a valid UDP port"
        );
        assert_eq!(
            err("[sip]\nports = [0]\n"),
            "sip-filter.toml:2:10: ports: 0 is not a valid UDP port"
        );
        assert_eq!(
            err("[sip]\nports = []\n"),
            "sip-filter.toml:2:9: ports: at least one port is needed (5060 is the standard SIP port)"
        );
        assert_eq!(
            err("[sip]\nports = [1, 2, 3, 4, 5, 6, 7, 8, 9]\n"),
            "sip-filter.toml:2:34: ports: at most 8 ports are supported"
        );
        assert_eq!(
            err("[sip]\nports = [5060,\n  5080,\n  5060]\n"),
            "sip-filter.toml:4:3: ports: 5060 is listed twice"
        );
        assert_eq!(
            err("[sip]\ntls_port = -1\n"),
            "sip-filter.toml:2:12: tls_port: -1 is not a valid TCP port"
        );
        assert_eq!(
            err("[sip]\nban_scope = \"All\"\n"),
            "sip-filter.toml:2:13: ban_scope: \"All\" is not \"all\" or \"sip\""
        );
        assert_eq!(
            err("[sip]\nipv6_prefix = 8\n"),
            "sip-filter.toml:2:15: ipv6_prefix: 8 is not a prefix length between 16 and 128"
        );
        assert_eq!(
            err("[sip]\nipv6_prefix = 129\n"),
            "sip-filter.toml:2:15: ipv6_prefix: 129 is not a prefix length between 16 and 128"
        );
        assert_eq!(parse("[sip]\nipv6_prefix = 128\n").sip.ipv6_prefix, 128);
        assert_eq!(parse("[sip]\nipv6_prefix = 16\n").sip.ipv6_prefix, 16);
        assert_eq!(parse("[sip]\nports = [65535]\n").sip.ports, [65535]);
    }

    #[test]
    fn thresholds() {
        assert_eq!(
            err("[auth]\nmax_failures = -1\n"),
            "sip-filter.toml:2:16: max_failures: -1 is not a count from 0 (off) to 4294967295"
        );
        assert_eq!(
            err("[enumeration]\nmax_not_found = 4294967296\n"),
            "sip-filter.toml:2:17: max_not_found: 4294967296 is not a count from 0 (off) to \
             4294967295"
        );
        assert_eq!(
            err("[auth]\nfind_time = 60\n"),
            "sip-filter.toml:2:13: find_time: expected a duration in quotes, such as \"60s\", \
             \"10m\" or \"1h 30m\", found the number 60"
        );
        assert_eq!(
            err("[auth]\nfind_time = \"0s\"\n"),
            "sip-filter.toml:2:13: find_time: must be longer than 0"
        );
        assert_eq!(
            err("[enumeration]\nfind_time = \"10 parsecs\"\n"),
            "sip-filter.toml:2:13: find_time: \"10 parsecs\" is not a duration (unknown time unit \
             \"parsecs\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, \
             years (and few variations)); write e.g. \"60s\", \"10m\" or \"1h 30m\""
        );
        for permanent in ["0", "permanent", "-1"] {
            assert_eq!(
                err(&format!("[auth]\nban_time = \"{permanent}\"\n")),
                "sip-filter.toml:2:12: ban_time: permanent bans are not supported: give a \
                 duration such as \"1d\" or \"4w\" (a source that keeps failing is banned again)"
            );
        }
        assert_eq!(
            err("[auth]\nban_time = \"101y\"\n"),
            "sip-filter.toml:2:12: ban_time: \"101y\" is longer than the supported maximum of \
             100 years"
        );
        let s = parse("[auth]\nban_time = \"4w\"\n[enumeration]\nfind_time = \"1h 30m\"\n");
        assert_eq!(s.auth.ban_time, Duration::from_secs(28 * 86400));
        assert_eq!(s.enumeration.find_time, Duration::from_secs(5400));
        assert_eq!(s.auth.max, 5);
    }

    #[test]
    fn allowlist() {
        assert_eq!(
            err("[allow]\ncidrs = [\"198.51.100.0/24\", \"198.51.100.0/33\"]\n"),
            "sip-filter.toml:2:29: cidrs: \"198.51.100.0/33\" is not an address or network (e.g. \
             \"198.51.100.7\", \"198.51.100.0/24\", \"2001:db8::/48\")"
        );
        assert_eq!(
            err("[allow]\ncidrs = [\"pbx.example.com\"]\n"),
            "sip-filter.toml:2:10: cidrs: \"pbx.example.com\" is not an address or network (e.g. \
             \"198.51.100.7\", \"198.51.100.0/24\", \"2001:db8::/48\")"
        );
        assert_eq!(
            err("[allow]\ncidrs = [\"2001:db8::/48\", \"2001:db8::1/48\"]\n"),
            "sip-filter.toml:2:27: cidrs: 2001:db8::/48 is listed twice"
        );
        assert_eq!(
            err("[allow]\ncidrs = [5060]\n"),
            "sip-filter.toml:2:10: cidrs: expected a string in quotes, found the number 5060"
        );
    }

    #[test]
    fn geo_values() {
        assert_eq!(
            err("[geo]\ndatabase = \"\"\n"),
            "sip-filter.toml:2:12: database: the path is empty"
        );
        assert_eq!(
            err("[geo]\ncidr_files = [\"a.zone\", \" \"]\n"),
            "sip-filter.toml:2:25: cidr_files: the path is empty"
        );
        assert_eq!(
            err("[geo]\ncidr_files = [\"a.zone\", \"a.zone\"]\n"),
            "sip-filter.toml:2:25: cidr_files: a.zone is listed twice"
        );
        assert_eq!(
            err("[geo]\ndatabase = \"c.mmdb\"\nblock_countries = [\"PS\", \"USA\"]\n"),
            "sip-filter.toml:3:26: block_countries: \"USA\" is not a two-letter country code \
             (ISO 3166-1 alpha-2, e.g. \"US\")"
        );
        assert_eq!(
            err("[geo]\ndatabase = \"c.mmdb\"\nallow_countries = [\"U1\"]\n"),
            "sip-filter.toml:3:20: allow_countries: \"U1\" is not a two-letter country code \
             (ISO 3166-1 alpha-2, e.g. \"US\")"
        );
        assert_eq!(
            err("[geo]\ndatabase = \"c.mmdb\"\nallow_countries = [\"us\", \"US\"]\n"),
            "sip-filter.toml:3:26: allow_countries: US is listed twice"
        );
        assert_eq!(
            err(
                "[geo]\ndatabase = \"c.mmdb\"\nallow_countries = [\"US\"]\nblock_countries = [\"PS\"]\n"
            ),
            "sip-filter.toml:4:19: block_countries: cannot be combined with allow_countries \
             (block_countries blocks the listed countries, allow_countries blocks all others): \
             keep one"
        );
        assert_eq!(
            err(
                "[geo]\nblock_countries = [\"PS\"]\nallow_countries = [\"US\"]\ndatabase = \"c.mmdb\"\n"
            ),
            "sip-filter.toml:3:19: allow_countries: cannot be combined with block_countries \
             (block_countries blocks the listed countries, allow_countries blocks all others): \
             keep one"
        );
        assert_eq!(
            err("[geo]\nblock_countries = [\"PS\"]\n"),
            "sip-filter.toml:2:19: block_countries: countries need a country database: set [geo] \
             database, e.g. database = \"/usr/share/GeoIP/GeoLite2-Country.mmdb\""
        );
        // Files are not looked at while parsing: that happens when the rules are applied.
        let s = parse("[geo]\ndatabase = \"/nonexistent.mmdb\"\ncidr_files = [\"/nonexistent\"]\n");
        assert_eq!(s.geo.cidr_files, [PathBuf::from("/nonexistent")]);
    }

    #[test]
    fn columns_count_characters() {
        // "é" is two bytes but one column.
        assert_eq!(
            err("# café\n[allow]\ncidrs = [\"é\"]\n"),
            "sip-filter.toml:3:10: cidrs: \"é\" is not an address or network (e.g. \
             \"198.51.100.7\", \"198.51.100.0/24\", \"2001:db8::/48\")"
        );
        assert_eq!(line_col("ab\ncé d", 7), (2, 4));
        assert_eq!(line_col("ab\n", 3), (2, 1));
        assert_eq!(line_col("", 5), (1, 1));
    }

    #[test]
    fn load_reports_unreadable_files() {
        let e = Settings::load(Path::new("/nonexistent/sip-filter.toml")).unwrap_err();
        assert_eq!(e.line, 0);
        assert!(
            e.to_string()
                .starts_with("/nonexistent/sip-filter.toml: cannot read: ")
        );
    }

    #[test]
    fn parse_net_accepts_addresses() {
        assert_eq!(parse_net("192.0.2.1"), Some(net("192.0.2.1/32")));
        assert_eq!(parse_net("2001:db8::/33"), Some(net("2001:db8::/33")));
        assert_eq!(parse_net("192.0.2.1/24"), Some(net("192.0.2.0/24")));
        assert_eq!(parse_net("192.0.2.0/"), None);
        assert_eq!(parse_net(""), None);
    }
}
