//! APIBAN (apiban.org): addresses its SIP honeypots saw, fetched from the incremental
//! `GET <url>/<key>/banned/<id>` endpoint.
//!
//! The service answers a page of at most 250 addresses with the id to ask from next, or a 400
//! `{"ipaddress":["no new bans"],"ID":"none"}` once there is nothing newer; it allows at most
//! 5 requests per 2 minutes. It lists no deletions: an entry is kept `KEEP` (7 days) from the
//! last time a page listed it, and a full fetch from the start every `RESYNC` (6 days) lists
//! again, and so keeps, every address still on the service's list. Like the CrowdSec bouncer, this runs on a thread
//! of its own and hands each page to the daemon's loop, which records the cursor once the page
//! is applied.
use std::{
    collections::VecDeque,
    net::IpAddr,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result, bail};
use ipnet::IpNet;
use serde::Deserialize;
use tracing::{info, warn};

use super::{Decision, Delta, status::Board};
use crate::{clock, config::Apiban, state::Cursor};

/// How long an entry is kept after a page last listed it.
pub const KEEP: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often the whole list is fetched again from `START`: a day within `KEEP`, so that an
/// address still listed is fetched again (and kept) before its entry runs out.
pub const RESYNC: Duration = Duration::from_secs(6 * 24 * 3600);
/// The id that asks for the whole list (APIBAN's own clients start there).
pub const START: &str = "100";
/// The service's limit: at most `RATE_MAX` requests in any `RATE_WINDOW`.
pub const RATE_MAX: usize = 5;
pub const RATE_WINDOW: Duration = Duration::from_secs(120);
/// What `ban list` shows as the note of an APIBAN entry.
const SCENARIO: &str = "apiban/sip-honeypot";
const TIMEOUT: Duration = Duration::from_secs(30);
/// A page is 250 addresses; anything much larger is not APIBAN.
const MAX_BODY: u64 = 16 << 20;
/// The most addresses the service puts in a page.
pub const PAGE: usize = 250;
/// The name on the status board.
pub const NAME: &str = "apiban";

/// A page as the service sends it. `ipaddress` is a list, or a string in some errors
/// (`"rate limit exceeded"`).
#[derive(Debug, Deserialize)]
struct Page {
    #[serde(default)]
    ipaddress: Addresses,
    #[serde(rename = "ID", default)]
    id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum Addresses {
    #[default]
    None,
    List(Vec<String>),
    One(String),
}

impl Addresses {
    fn first(&self) -> Option<&str> {
        match self {
            Addresses::None => None,
            Addresses::List(v) => v.first().map(String::as_str),
            Addresses::One(s) => Some(s),
        }
    }
}

/// What one request brought.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Addresses, and the id to ask from next.
    Entries {
        addresses: Vec<String>,
        next: String,
    },
    /// Nothing newer than the id asked for.
    NoNewBans,
    /// Over the service's rate: wait a window.
    RateLimited,
}

/// Reads an answer: its status and body.
pub fn classify(status: u16, body: &str) -> Result<Answer> {
    let page: Option<Page> = serde_json::from_str(body).ok();
    let first = page
        .as_ref()
        .and_then(|p| p.ipaddress.first())
        .map(str::to_string);
    let first = first.as_deref();
    let id = page.as_ref().map_or(String::new(), |p| p.id.clone());
    match status {
        200 => {
            let Some(p) = page else {
                bail!("a 200 whose body is not an APIBAN page: {}", excerpt(body));
            };
            if p.id.is_empty() || p.id == "none" {
                // Some deployments answer the end with a 200.
                if first == Some("no new bans") {
                    return Ok(Answer::NoNewBans);
                }
                bail!("a page without the id to ask from next: {}", excerpt(body));
            }
            let addresses = match p.ipaddress {
                Addresses::List(v) => v,
                Addresses::One(s) => vec![s],
                Addresses::None => Vec::new(),
            };
            Ok(Answer::Entries {
                addresses,
                next: p.id,
            })
        }
        _ if first == Some("rate limit exceeded") => Ok(Answer::RateLimited),
        400 if id == "none" && first == Some("no new bans") => Ok(Answer::NoNewBans),
        _ if id == "unauthorized" || first == Some("unauthorized") => {
            bail!("the service refused the key ({status}): check [apiban] key_file")
        }
        _ => bail!("HTTP {status} from the service: {}", excerpt(body)),
    }
}

fn excerpt(body: &str) -> String {
    let t = body.trim();
    match t.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &t[..i]),
        None => t.to_string(),
    }
}

/// A page's addresses as the store takes them (each an IP address or a CIDR), and how many
/// were neither.
pub fn to_delta(addresses: Vec<String>, cursor: Cursor, now: SystemTime) -> (Delta, u64) {
    let mut ignored = 0;
    let mut new = Vec::with_capacity(addresses.len());
    for a in addresses {
        let a = a.trim();
        let target = a
            .parse::<IpAddr>()
            .map(IpNet::from)
            .or_else(|_| a.parse::<IpNet>().map(|n| n.trunc()));
        match target {
            Ok(t) => new.push(Decision {
                id: t.to_string(),
                target: t,
                origin: String::new(),
                scenario: SCENARIO.into(),
                expires: Some(now + KEEP),
            }),
            Err(_) => {
                ignored += 1;
                info!(value = %a, "apiban entry {a:?} ignored: not an address or a CIDR");
            }
        }
    }
    let delta = Delta {
        new,
        cursor: Some(cursor),
        ..Delta::default()
    };
    (delta, ignored)
}

/// Where to ask from: the recorded cursor, or `START` (with a new full fetch) when there is
/// none or the last full fetch began `RESYNC` ago.
pub fn start_from(recorded: Option<Cursor>, now: SystemTime) -> Cursor {
    let now_ms = clock::unix_ms(now);
    match recorded {
        Some(c) if now_ms.saturating_sub(c.full_ms) < RESYNC.as_millis() as i64 => c,
        _ => Cursor {
            id: START.into(),
            full_ms: now_ms,
        },
    }
}

/// At most `RATE_MAX` requests in any `RATE_WINDOW`.
#[derive(Default)]
pub struct Limiter {
    sent: VecDeque<Instant>,
}

impl Limiter {
    /// How long to wait before the next request may go.
    pub fn wait(&mut self, now: Instant) -> Duration {
        while self
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= RATE_WINDOW)
        {
            self.sent.pop_front();
        }
        match self.sent.front() {
            Some(oldest) if self.sent.len() >= RATE_MAX => {
                RATE_WINDOW.saturating_sub(now.duration_since(*oldest))
            }
            _ => Duration::ZERO,
        }
    }

    pub fn sent(&mut self, at: Instant) {
        self.sent.push_back(at);
    }
}

/// Polls the feed forever, handing each page to `deliver` (false once the daemon is gone).
pub fn run(
    cfg: Apiban,
    key: String,
    recorded: Option<Cursor>,
    board: Board,
    deliver: impl Fn(Delta) -> bool,
) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(TIMEOUT))
        .timeout_recv_response(Some(TIMEOUT))
        .timeout_recv_body(Some(TIMEOUT))
        .http_status_as_error(false)
        .user_agent(concat!("sip-filter/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut cursor = start_from(recorded, SystemTime::now());
    let mut limiter = Limiter::default();
    let mut backoff = cfg.poll;
    let mut failing = false;
    loop {
        let wait = limiter.wait(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        limiter.sent(Instant::now());
        let started = SystemTime::now();
        // The key is part of the path: never in a log line.
        let url = format!("{}/{key}/banned/{}", cfg.url, cursor.id);
        let got = agent
            .get(&url)
            .call()
            .map_err(anyhow::Error::from)
            .and_then(|mut r| {
                let status = r.status().as_u16();
                let body = r
                    .body_mut()
                    .with_config()
                    .limit(MAX_BODY)
                    .read_to_string()
                    .context("reading the answer")?;
                classify(status, &body)
            })
            .map_err(|e| anyhow::anyhow!("{}", format!("{e:#}").replace(&key, "<key>")));
        let pause = match got {
            Ok(Answer::Entries { addresses, next }) => {
                let n = addresses.len();
                cursor.id = next;
                let (delta, ignored) = to_delta(addresses, cursor.clone(), started);
                recovered(&mut failing, &cfg.url);
                backoff = cfg.poll;
                board.update(NAME, &cfg.url, |s| {
                    s.state = "connected".into();
                    s.ignored += ignored;
                });
                if !deliver(delta) {
                    return;
                }
                // A full page: more follow at once (within the rate); a shorter one was the
                // last.
                if n >= PAGE { Duration::ZERO } else { cfg.poll }
            }
            Ok(Answer::NoNewBans) => {
                recovered(&mut failing, &cfg.url);
                backoff = cfg.poll;
                board.update(NAME, &cfg.url, |s| {
                    s.state = "connected".into();
                    s.last_sync = Some(super::status::now_rfc3339());
                });
                let next = start_from(Some(cursor.clone()), SystemTime::now());
                let resync = next.id == START;
                cursor = next;
                if resync {
                    info!(
                        "apiban: fetching the whole list again (an entry ends {} after the last page \
                         that listed it)",
                        humantime::format_duration(KEEP)
                    );
                    if !deliver(Delta {
                        cursor: Some(cursor.clone()),
                        ..Delta::default()
                    }) {
                        return;
                    }
                    Duration::ZERO
                } else {
                    cfg.poll
                }
            }
            Ok(Answer::RateLimited) => {
                warn!("apiban: over the service's request rate, waiting {RATE_WINDOW:?}");
                board.update(NAME, &cfg.url, |s| {
                    s.errors += 1;
                    s.last_error = Some("rate limit exceeded".into());
                });
                RATE_WINDOW
            }
            Err(e) => {
                if !failing {
                    warn!(
                        url = %cfg.url,
                        "apiban unreachable or refusing, every ban stays in force; retrying: {e:#}"
                    );
                    failing = true;
                }
                board.update(NAME, &cfg.url, |s| {
                    s.state = "unreachable".into();
                    s.errors += 1;
                    s.last_error = Some(format!("{e:#}"));
                });
                let b = backoff;
                backoff = (backoff * 2).min(cfg.poll.max(Duration::from_secs(600)));
                b
            }
        };
        std::thread::sleep(pause);
    }
}

fn recovered(failing: &mut bool, url: &str) {
    if std::mem::take(failing) {
        info!(url, "apiban answers again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_as_the_service_sends_them() {
        assert_eq!(
            classify(
                200,
                r#"{"ipaddress":["192.0.2.1","2001:db8::1"],"ID":"1700000001"}"#
            )
            .unwrap(),
            Answer::Entries {
                addresses: vec!["192.0.2.1".into(), "2001:db8::1".into()],
                next: "1700000001".into()
            }
        );
        assert_eq!(
            classify(400, r#"{"ipaddress":["no new bans"],"ID":"none"}"#).unwrap(),
            Answer::NoNewBans
        );
        assert_eq!(
            classify(400, r#"{"ipaddress":"rate limit exceeded","ID":"none"}"#).unwrap(),
            Answer::RateLimited
        );
        let e = classify(403, r#"{"ipaddress":["unauthorized"],"ID":"unauthorized"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("refused the key"), "{e}");
        let e = classify(400, "bad request").unwrap_err().to_string();
        assert_eq!(e, "HTTP 400 from the service: bad request");
        assert!(classify(200, "<html>").is_err());
        assert!(classify(200, r#"{"ipaddress":["192.0.2.1"]}"#).is_err());
    }

    #[test]
    fn pages_become_decisions_kept_seven_days() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let c = Cursor {
            id: "7".into(),
            full_ms: 1,
        };
        let (d, ignored) = to_delta(
            vec!["192.0.2.1".into(), "198.51.100.0/24".into(), "x".into()],
            c.clone(),
            now,
        );
        assert_eq!(ignored, 1);
        assert_eq!(d.cursor, Some(c));
        assert!(!d.full);
        assert_eq!(d.new.len(), 2);
        assert_eq!(d.new[0].id, "192.0.2.1/32");
        assert_eq!(d.new[1].target, "198.51.100.0/24".parse::<IpNet>().unwrap());
        assert_eq!(d.new[0].expires, Some(now + KEEP));
    }

    #[test]
    fn the_whole_list_again_each_week() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let now_ms = clock::unix_ms(now);
        assert_eq!(start_from(None, now).id, START);
        let recent = Cursor {
            id: "9".into(),
            full_ms: now_ms - 3_600_000,
        };
        assert_eq!(start_from(Some(recent.clone()), now), recent);
        let old = Cursor {
            id: "9".into(),
            full_ms: now_ms - RESYNC.as_millis() as i64,
        };
        assert_eq!(
            start_from(Some(old), now),
            Cursor {
                id: START.into(),
                full_ms: now_ms
            }
        );
    }

    #[test]
    fn at_most_five_requests_in_two_minutes() {
        let t0 = Instant::now();
        let mut l = Limiter::default();
        for i in 0..RATE_MAX as u64 {
            let t = t0 + Duration::from_secs(i);
            assert_eq!(l.wait(t), Duration::ZERO);
            l.sent(t);
        }
        let t = t0 + Duration::from_secs(10);
        assert_eq!(l.wait(t), RATE_WINDOW - Duration::from_secs(10));
        let t = t0 + RATE_WINDOW;
        assert_eq!(l.wait(t), Duration::ZERO, "the oldest left the window");
        l.sent(t);
        assert_eq!(l.wait(t), Duration::from_secs(1));
    }
}
