//! A blocked call as the operator reads it: the kernel's `CallEvent` (the start of the INVITE,
//! who sent it, the rule's index) read with the configuration into the extension, the numbers,
//! the rule and the local time, for the log line, the webhook and the tests.
use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use serde::Serialize;
use sip_filter_common::{CALL_EGRESS, CallEvent, call_verdict};

use super::{dialplan, holds};
use crate::{addr::from_key, config::Calls};

/// One blocked call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BlockedCall {
    /// `ingress` (a phone's INVITE, answered 403) or `egress` (the PBX's INVITE to a trunk,
    /// dropped).
    pub direction: &'static str,
    /// Ingress: the caller; egress: the trunk.
    pub addr: IpAddr,
    /// The digest username when the INVITE carries one, else the From user part.
    pub extension: String,
    /// The Request-URI's user part as dialled.
    pub dialled: String,
    /// Its E.164 form (`+...`), or the cleaned string when it is not one.
    pub number: String,
    /// The rule that blocked it, as `calls check` names it, or the limit.
    pub rule: String,
    /// `rule`, `max_calls_per_minute`, `max_same_number` (the call that went over; the
    /// extension is held from it) or `held` (a call while held).
    pub verdict: &'static str,
    /// When, in the configured time zone (`2026-12-04 17:05:09 EST`).
    pub local_time: String,
    pub call_id: String,
}

impl BlockedCall {
    /// Reads `e` with the rules and dial plan in force (`calls`).
    pub fn read(e: &CallEvent, calls: Option<&Calls>) -> Self {
        let len = (e.msg_len as usize).min(e.msg.len());
        let msg = String::from_utf8_lossy(&e.msg[..len]);
        let head = Head::parse(&msg);
        let dialled = dialplan::uri_user(head.uri).unwrap_or_default().to_string();
        let number = match calls {
            Some(c) => c.plan.normalise(&dialled).to_string(),
            None => dialplan::clean(&dialled),
        };
        let verdict = match e.verdict {
            call_verdict::OVER_PER_MINUTE => "max_calls_per_minute",
            call_verdict::OVER_SAME_NUMBER => "max_same_number",
            call_verdict::HELD => "held",
            _ => "rule",
        };
        let block_for = calls.map_or_else(String::new, |c| {
            humantime::format_duration(c.block_for).to_string()
        });
        let rule = match e.verdict {
            call_verdict::OVER_PER_MINUTE => format!(
                "max_calls_per_minute = {}: held for {block_for}",
                calls.map_or(0, |c| c.max_calls_per_minute)
            ),
            call_verdict::OVER_SAME_NUMBER => {
                let (n, w) = calls.and_then(|c| c.max_same_number).unwrap_or_default();
                format!(
                    "max_same_number = {n} calls within {}: held for {block_for}",
                    humantime::format_duration(w)
                )
            }
            call_verdict::HELD => "held by a call limit".to_string(),
            _ => calls
                .and_then(|c| c.rules.iter().nth(e.rule as usize))
                .map_or_else(|| format!("rule #{}", e.rule), |r| r.describe()),
        };
        let now = jiff::Timestamp::now();
        let local_time = match calls {
            Some(c) => now
                .to_zoned_datetime(c.schedule.tz.clone())
                .strftime("%F %T %Z")
                .to_string(),
            None => now.strftime("%F %T UTC").to_string(),
        };
        Self {
            direction: if e.direction == CALL_EGRESS {
                "egress"
            } else {
                "ingress"
            },
            addr: from_key(e.addr),
            extension: if e.verdict == call_verdict::RULE {
                head.extension()
            } else {
                holds::name(&e.ext)
            },
            dialled,
            number,
            rule,
            verdict,
            local_time,
            call_id: head.call_id.to_string(),
        }
    }

    /// The log line's text.
    pub fn describe(&self) -> String {
        match self.direction {
            "egress" => format!(
                "call blocked at egress: the PBX called {} ({}) for extension {:?} via trunk {}, {} at {}: dropped",
                self.number, self.dialled, self.extension, self.addr, self.rule, self.local_time
            ),
            _ if self.verdict != "rule" => format!(
                "call refused: extension {:?} at {} dialled {} ({}), over a call limit ({}) at {}: answered 403",
                self.extension, self.addr, self.dialled, self.number, self.rule, self.local_time
            ),
            _ => format!(
                "call blocked: extension {:?} at {} dialled {} ({}), {} at {}: answered 403",
                self.extension, self.addr, self.dialled, self.number, self.rule, self.local_time
            ),
        }
    }
}

/// What the log needs from the start of an INVITE.
#[derive(Default)]
struct Head<'a> {
    uri: &'a str,
    from_user: &'a str,
    username: &'a str,
    call_id: &'a str,
}

impl<'a> Head<'a> {
    fn parse(msg: &'a str) -> Self {
        let mut h = Head::default();
        let mut lines = msg.split("\r\n");
        if let Some(first) = lines.next() {
            h.uri = first.split(' ').nth(1).unwrap_or_default();
        }
        for line in lines {
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "from" | "f" => h.from_user = uri_user_of(value),
                "call-id" | "i" => h.call_id = value,
                "authorization" | "proxy-authorization" => {
                    if let Some(u) = param(value, "username") {
                        h.username = u;
                    }
                }
                _ => {}
            }
        }
        h
    }

    fn extension(&self) -> String {
        if self.username.is_empty() {
            self.from_user
        } else {
            self.username
        }
        .to_string()
    }
}

/// The user part of the URI in a From/To value (`"Bob" <sip:101@pbx>;tag=x`, `sip:101@pbx`).
fn uri_user_of(value: &str) -> &str {
    let uri = match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value.split(';').next().unwrap_or_default(),
    };
    dialplan::uri_user(uri).unwrap_or_default()
}

/// A digest parameter's value (`username="101"`).
fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    let rest = value.strip_prefix("Digest").unwrap_or(value);
    rest.split(',').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"'))
    })
}

/// Retransmissions: a PBX resends an INVITE the filter held back for up to 32 s (Timer B), and
/// each copy is blocked again; the operator hears of each call once.
#[derive(Default)]
pub struct Repeats {
    seen: HashMap<(String, &'static str), Instant>,
}

/// How long a call's later copies are not reported again.
const REPEAT_WINDOW: Duration = Duration::from_secs(64);

impl Repeats {
    /// Whether `c` is a copy of a call reported within the window.
    pub fn is_repeat(&mut self, c: &BlockedCall) -> bool {
        let now = Instant::now();
        self.seen
            .retain(|_, t| now.duration_since(*t) < REPEAT_WINDOW);
        if c.call_id.is_empty() {
            return false;
        }
        self.seen
            .insert((c.call_id.clone(), c.direction), now)
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:9011882555123@pbx SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK1\r\n\
        From: \"Phone\" <sip:101@pbx>;tag=1\r\n\
        To: <sip:9011882555123@pbx>\r\n\
        i: abc@192.0.2.10\r\n\
        Proxy-Authorization: Digest username=\"102\", realm=\"pbx\", nonce=\"n\"\r\n\r\n";

    #[test]
    fn reads_the_extension_and_the_call_id() {
        let h = Head::parse(INVITE);
        assert_eq!(h.uri, "sip:9011882555123@pbx");
        assert_eq!(h.from_user, "101");
        assert_eq!(h.call_id, "abc@192.0.2.10");
        assert_eq!(h.extension(), "102", "the digest username wins");
        let no_auth = INVITE.replace("Proxy-Authorization", "X-Other");
        assert_eq!(Head::parse(&no_auth).extension(), "101");
        let cut = &INVITE[..60];
        assert_eq!(
            Head::parse(cut).extension(),
            "",
            "a cut message: no extension"
        );
    }
}
