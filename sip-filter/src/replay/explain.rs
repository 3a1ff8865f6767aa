//! Explaining a verdict: the program's own record of it (`Trace`) in words, with the counts
//! and bans it refers to read from the maps.
use std::{net::IpAddr, time::Duration};

use anyhow::Result;
use ipnet::IpNet;
use sip_filter_common::{Ban, BanReason, NO_DETAIL, Reason, Trace, creds, method};

use super::{ReplayBan, headers::Headers};
use crate::{addr, config::Settings, maps::Maps};

/// What an XDP run recorded, in words: "banned (auth-failures)", "REGISTER with credentials".
pub(super) fn ingress(
    maps: &mut impl Maps,
    settings: &Settings,
    t: &Trace,
    h: Option<&Headers>,
) -> Result<String> {
    let verdict = Reason::from_index(t.verdict);
    let detail = Reason::from_index(t.detail);
    Ok(match verdict {
        Some(Reason::DroppedBanned) => {
            match h.map(|h| ban_of(maps, settings, h.src)).transpose()? {
                Some(Some(b)) => format!("banned ({})", reason_text(b.reason)),
                _ => "banned".into(),
            }
        }
        Some(Reason::DroppedFlood) => match detail {
            // This request tripped the guard (the trace's detail is the entry it stored).
            Some(Reason::BansIssued) => format!(
                "over the flood guard's rate ({} requests per {}): rate-limited for {}",
                settings.flood.max_requests,
                humantime::format_duration(settings.flood.per),
                humantime::format_duration(settings.flood.block_for)
            ),
            _ => "rate-limited (flood)".into(),
        },
        Some(Reason::DroppedScanner) => match h.and_then(|h| h.user_agent.as_deref()) {
            Some(ua) => format!("scanner User-Agent {ua:?}: banned"),
            None => "scanner User-Agent: banned".into(),
        },
        Some(Reason::DroppedPair) => "extension blocked from this source (its failures)".into(),
        Some(Reason::DroppedExtLocked) => "extension locked: the source is banned".into(),
        Some(Reason::DroppedGeo) => "geo-blocked".into(),
        Some(Reason::Allowlisted) => "allowlisted".into(),
        Some(Reason::Malformed) => "malformed".into(),
        Some(Reason::CallBlocked) => "the ACK of a refused call (dropped)".into(),
        Some(Reason::CallHeld) => "call refused by a call limit".into(),
        _ => match detail {
            Some(Reason::NotIp) => "not IP".into(),
            Some(Reason::NonFirstFragment) => "non-first fragment".into(),
            Some(Reason::NonSipOnSipPort) => "not SIP".into(),
            Some(Reason::ResponseIn) => "SIP response (not tracked)".into(),
            Some(r) if r >= Reason::ReqRegister && r <= Reason::ReqOther => request(r, t.creds),
            _ => "not inspected".into(),
        },
    })
}

/// "REGISTER with credentials": what the request inspection found.
fn request(r: Reason, c: u8) -> String {
    let m = method::REGISTER + (r as u32 - Reason::ReqRegister as u32) as u8;
    let what = if m == method::OTHER {
        "request (other method)"
    } else {
        method::name(m)
    };
    let creds = match c {
        creds::PRESENT => " with credentials",
        creds::UNKNOWN => ", credentials unknown (header section cut)",
        _ => " without credentials",
    };
    format!("{what}{creds}")
}

/// What a PBX answer did: "401: auth failure 3/5", "403: auth failure 5/5 -> banned for 1h".
pub(super) fn egress(
    maps: &mut impl Maps,
    settings: &Settings,
    t: &Trace,
    client: IpAddr,
) -> Result<String> {
    let Some(verdict) = Reason::from_index(t.verdict) else {
        return Ok(format!("unknown reason {}", t.verdict));
    };
    if verdict == Reason::EgressSeen {
        return Ok("not a SIP response".into());
    }
    let effect = match verdict {
        Reason::AuthFailures => failure(maps, settings, t, client, verdict)?,
        Reason::NotFound => failure(maps, settings, t, client, verdict)?,
        Reason::AuthResets => "failures reset".into(),
        Reason::UnprovenFailures => {
            "not counted: a trusted source's request with a nonce not issued to it (forged)".into()
        }
        _ => uncounted(t.status).into(),
    };
    Ok(format!("{}: {effect}", t.status))
}

/// "auth failure 3/5", or the ban the failure led to, or why it did not lead to one.
fn failure(
    maps: &mut impl Maps,
    settings: &Settings,
    t: &Trace,
    client: IpAddr,
    kind: Reason,
) -> Result<String> {
    let (label, max) = if kind == Reason::AuthFailures {
        ("auth failure", settings.auth.max)
    } else {
        ("not-found", settings.enumeration.max)
    };
    let detail = (t.detail != NO_DETAIL)
        .then(|| Reason::from_index(t.detail))
        .flatten();
    if detail == Some(Reason::BansIssued)
        && let Some(ban) = ban_of(maps, settings, client)?
    {
        return Ok(format!(
            "{label} {} -> banned for {}",
            ratio(ban.failures, max),
            ban_time_text(ban_time(&ban))
        ));
    }
    let key = addr::ban_key(client, settings.sip.ipv6_prefix);
    let f = maps.failures()?.get(&key, 0).unwrap_or_default();
    let n = if kind == Reason::AuthFailures {
        f.auth
    } else {
        f.not_found
    };
    if n > 0 || max == 0 {
        return Ok(format!("{label} {}", ratio(n, max)));
    }
    // The threshold was reached (the kernel restarts the count) but no ban was issued.
    let why = if detail == Some(Reason::BanMapFull) {
        "the ban map is full"
    } else if settings.is_allowed(client) {
        "allowlisted"
    } else {
        "already banned for longer"
    };
    Ok(format!("{label} {}, not banned: {why}", ratio(max, max)))
}

fn ban_of(maps: &mut impl Maps, settings: &Settings, ip: IpAddr) -> Result<Option<Ban>> {
    let key = addr::ban_key(ip, settings.sip.ipv6_prefix);
    Ok(maps.bans()?.get(&key, 0).ok())
}

/// Why an answer counted nothing, by its status code.
fn uncounted(code: u16) -> &'static str {
    match code {
        100..=199 => "provisional",
        200..=299 => "success",
        401 | 407 => "challenge, not counted (no credentialed request pending)",
        404 => "not counted (no REGISTER or INVITE pending)",
        _ => "not counted",
    }
}

/// "3/5", or "3" when the threshold is off.
fn ratio(n: u32, max: u32) -> String {
    if max == 0 {
        n.to_string()
    } else {
        format!("{n}/{max}")
    }
}

fn reason_text(reason: u8) -> &'static str {
    BanReason::from_u8(reason).map_or("unknown", BanReason::as_str)
}

pub(super) fn ban_time(b: &Ban) -> Option<Duration> {
    (b.expires_ns != 0).then(|| Duration::from_nanos(b.expires_ns.saturating_sub(b.created_ns)))
}

pub(super) fn ban_time_text(t: Option<Duration>) -> String {
    match t {
        // Whole seconds: the kernel's nanoseconds would print as "1h 2ms 7us".
        Some(t) => humantime::format_duration(Duration::from_secs(t.as_secs())).to_string(),
        None => "ever".into(),
    }
}

/// A BANS key as a network: IPv4 host, or the IPv6 prefix the kernel masked it to.
pub(super) fn ban_net(key: [u8; 16], v6_prefix: u8) -> IpNet {
    match addr::from_key(key) {
        ip @ IpAddr::V4(_) => IpNet::from(ip),
        ip @ IpAddr::V6(_) => IpNet::new(ip, v6_prefix.min(128))
            .expect("prefix at most 128")
            .trunc(),
    }
}

pub(super) fn replay_ban(
    key: [u8; 16],
    v6_prefix: u8,
    reason: u8,
    failures: u32,
    ban_time: Option<Duration>,
) -> ReplayBan {
    ReplayBan {
        addr: ban_net(key, v6_prefix),
        reason: reason_text(reason).to_string(),
        failures,
        ban_time,
    }
}
