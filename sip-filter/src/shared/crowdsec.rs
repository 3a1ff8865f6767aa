//! CrowdSec's Local API: the bouncer (its ban decisions, polled from `/v1/decisions/stream`)
//! and the watcher (this host's bans pushed as alerts with a decision, `/v1/alerts`).
//!
//! Both talk HTTP on threads of their own and never touch the maps: the bouncer hands each
//! poll's decisions to the daemon's loop, which applies them (`shared::Store`); the watcher
//! takes the daemon's bans from a queue. A LAPI that is down changes nothing in the maps: the
//! bouncer retries with backoff and resyncs (`startup=true`) when it answers again.
use std::{
    net::IpAddr,
    sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result, bail};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{Decision, Delta, go_duration, status::Board};
use crate::config::Crowdsec;

/// How long the LAPI may take to connect and to start its answer.
const TIMEOUT: Duration = Duration::from_secs(30);
/// How long a body may take to arrive: a full stream of 100k decisions from a LAPI busy with
/// an import takes tens of seconds.
const BODY_TIMEOUT: Duration = Duration::from_secs(600);
/// The longest wait between tries while the LAPI is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Bans waiting for the watcher while the LAPI is down; more are dropped and counted.
const ALERT_QUEUE: usize = 10_000;
/// A full stream of 100k decisions is about 25 MB.
const MAX_BODY: u64 = 1 << 30;

/// How often the bouncer reports its usage (`/v1/usage-metrics`, the window of each report).
const USAGE_EVERY: Duration = Duration::from_secs(1800);

const BOUNCER: &str = "crowdsec";
const WATCHER: &str = "crowdsec-watcher";

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(TIMEOUT))
        .timeout_recv_response(Some(TIMEOUT))
        .timeout_recv_body(Some(BODY_TIMEOUT))
        .user_agent(concat!("sip-filter/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// One decision as `/v1/decisions/stream` lists it.
#[derive(Debug, Deserialize)]
pub struct RawDecision {
    pub id: i64,
    #[serde(default)]
    pub origin: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub scope: String,
    #[serde(default)]
    pub value: String,
    #[serde(default)]
    pub duration: String,
    #[serde(default)]
    pub scenario: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct Stream {
    #[serde(default)]
    pub new: Option<Vec<RawDecision>>,
    #[serde(default)]
    pub deleted: Option<Vec<RawDecision>>,
}

/// The target of an `Ip` or `Range` decision.
fn target(scope: &str, value: &str) -> Option<IpNet> {
    match scope.to_ascii_lowercase().as_str() {
        "ip" => value.parse::<IpAddr>().ok().map(IpNet::from),
        "range" => value.parse::<IpNet>().ok().map(|n| n.trunc()),
        _ => None,
    }
}

/// A stream answer as the store takes it, and how many decisions were not enforceable
/// (types other than `ban`, scopes other than Ip and Range).
pub fn to_delta(s: Stream, full: bool, now: SystemTime) -> (Delta, u64) {
    let mut ignored = 0;
    let mut delta = Delta {
        full,
        ..Delta::default()
    };
    for d in s.new.unwrap_or_default() {
        let t = target(&d.scope, &d.value);
        let left = go_duration(&d.duration);
        match (t, left) {
            (Some(t), Some(left)) if d.kind.eq_ignore_ascii_case("ban") => {
                if left.is_zero() {
                    continue;
                }
                delta.new.push(Decision {
                    id: d.id.to_string(),
                    target: t,
                    origin: d.origin,
                    scenario: d.scenario,
                    expires: Some(now + left),
                });
            }
            _ => {
                ignored += 1;
                info!(
                    id = d.id,
                    kind = %d.kind,
                    scope = %d.scope,
                    value = %d.value,
                    "crowdsec decision {} not enforced: only `ban` decisions for Ip and Range are",
                    d.id
                );
            }
        }
    }
    delta.deleted = s
        .deleted
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.id.to_string())
        .collect();
    (delta, ignored)
}

/// Polls the decision stream forever, handing each answer to `deliver` (which returns false
/// once the daemon is gone). The first poll, the first after an error, and one every
/// `resync` ask for the whole set (`startup=true`).
pub fn run_bouncer(cfg: Crowdsec, key: String, board: Board, deliver: impl Fn(Delta) -> bool) {
    let agent = agent();
    let url = format!("{}/v1/decisions/stream", cfg.lapi_url);
    let mut startup = true;
    let mut last_full = std::time::Instant::now();
    let mut backoff = cfg.poll;
    let mut down = false;
    let mut usage = Usage::new(&cfg.lapi_url);
    loop {
        if last_full.elapsed() >= cfg.resync {
            startup = true;
        }
        let started = SystemTime::now();
        let got = agent
            .get(&url)
            .query("startup", if startup { "true" } else { "false" })
            .header("X-Api-Key", &key)
            .call()
            .map_err(anyhow::Error::from)
            .and_then(|mut r| {
                let text = r
                    .body_mut()
                    .with_config()
                    .limit(MAX_BODY)
                    .read_to_string()
                    .context("reading the decision stream")?;
                serde_json::from_str::<Stream>(&text).context("parsing the decision stream")
            });
        match got {
            Ok(s) => {
                let (delta, ignored) = to_delta(s, startup, started);
                if down {
                    info!(url = %cfg.lapi_url, "crowdsec LAPI reachable again: resynced");
                    down = false;
                }
                if startup {
                    last_full = std::time::Instant::now();
                }
                startup = false;
                backoff = cfg.poll;
                board.update(BOUNCER, &cfg.lapi_url, |s| {
                    s.state = "connected".into();
                    s.last_sync = Some(super::status::now_rfc3339());
                    s.ignored += ignored;
                });
                if !deliver(delta) {
                    return;
                }
                usage.maybe_send(&agent, &key, &board);
                std::thread::sleep(cfg.poll);
            }
            Err(e) => {
                if !down {
                    warn!(
                        url = %cfg.lapi_url,
                        "crowdsec LAPI unreachable, every ban stays in force; retrying: {e:#}"
                    );
                    down = true;
                }
                board.update(BOUNCER, &cfg.lapi_url, |s| {
                    s.state = "unreachable".into();
                    s.errors += 1;
                    s.last_error = Some(format!("{e:#}"));
                });
                startup = true;
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// The bouncer's usage report (`POST /v1/usage-metrics`, CrowdSec 1.6.3 and later): who it
/// is and how many decisions it holds, every `USAGE_EVERY`. Older LAPIs answer 404: logged
/// once, not asked again.
struct Usage {
    url: String,
    started: SystemTime,
    last: Option<std::time::Instant>,
    unsupported: bool,
}

impl Usage {
    fn new(lapi_url: &str) -> Self {
        Self {
            url: format!("{lapi_url}/v1/usage-metrics"),
            started: SystemTime::now(),
            last: None,
            unsupported: false,
        }
    }

    fn maybe_send(&mut self, agent: &ureq::Agent, key: &str, board: &Board) {
        if self.unsupported || self.last.is_some_and(|t| t.elapsed() < USAGE_EVERY) {
            return;
        }
        // The first report goes after the first poll, each later one covers its window.
        let window = if self.last.is_some() {
            USAGE_EVERY
        } else {
            SystemTime::now()
                .duration_since(self.started)
                .unwrap_or_default()
        };
        self.last = Some(std::time::Instant::now());
        let held = board.get(BOUNCER).map_or(0, |s| s.count);
        let body = usage_report(self.started, SystemTime::now(), window, held);
        match agent
            .post(&self.url)
            .header("X-Api-Key", key)
            .send_json(&body)
        {
            Ok(_) => info!(url = %self.url, held, "crowdsec usage metrics sent"),
            Err(ureq::Error::StatusCode(404)) => {
                info!(
                    url = %self.url,
                    "this crowdsec LAPI has no /v1/usage-metrics (before 1.6.3): not sent again"
                );
                self.unsupported = true;
            }
            Err(e) => warn!(url = %self.url, "crowdsec usage metrics not sent: {e:#}"),
        }
    }
}

/// The body of a usage report: one remediation component, one window.
pub fn usage_report(
    started: SystemTime,
    now: SystemTime,
    window: Duration,
    held: u64,
) -> serde_json::Value {
    let unix = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    serde_json::json!({
        "remediation_components": [{
            "type": "sip-filter",
            "name": "sip-filter",
            "version": env!("CARGO_PKG_VERSION"),
            "utc_startup_timestamp": unix(started),
            "last_pull": unix(now),
            "feature_flags": [],
            "os": os_release(),
            "metrics": [{
                "meta": {"window_size_seconds": window.as_secs(), "utc_now_timestamp": unix(now)},
                "items": [{"name": "active_decisions", "value": held, "unit": "ip"}],
            }],
        }]
    })
}

/// `os` of a usage report: the distribution's name and version from `/etc/os-release`.
fn os_release() -> serde_json::Value {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .map(|v| v.trim().trim_matches('"').to_string())
            .filter(|v| !v.is_empty())
    };
    serde_json::json!({
        "name": field("NAME").unwrap_or_else(|| "Linux".into()),
        "version": field("VERSION_ID").unwrap_or_else(|| "unknown".into()),
    })
}

/// A ban of this host's, for the watcher.
#[derive(Clone, Debug)]
pub struct LocalBan {
    pub target: String,
    /// `BanReason::as_str`: the scenario is `sip-filter/<reason>`.
    pub reason: String,
    pub failures: u32,
    pub duration: Option<Duration>,
    pub first_failure: SystemTime,
    pub created: SystemTime,
}

/// The queue to the watcher thread.
pub struct Watcher {
    tx: SyncSender<LocalBan>,
}

impl Watcher {
    /// Starts the watcher thread.
    pub fn start(cfg: Crowdsec, board: Board) -> Result<Self> {
        let w = cfg.watcher.clone().context("no machine_id")?;
        let password = w.password.read().context("[crowdsec] password_file")?;
        let (tx, rx) = sync_channel(ALERT_QUEUE);
        std::thread::Builder::new()
            .name("sip-filter-watcher".into())
            .spawn(move || run_watcher(cfg, w.machine_id, password, board, rx))
            .context("spawning the watcher thread")?;
        Ok(Self { tx })
    }

    /// Queues a ban to push. Never blocks.
    pub fn push(&self, b: LocalBan) {
        if let Err(TrySendError::Full(b)) = self.tx.try_send(b) {
            warn!(addr = %b.target, "crowdsec alert dropped: the watcher's queue is full");
        }
    }
}

#[derive(Serialize)]
struct Login<'a> {
    machine_id: &'a str,
    password: &'a str,
    scenarios: Vec<String>,
}

#[derive(Deserialize)]
struct Token {
    token: String,
}

/// The scenario a ban of this reason is pushed under.
pub fn scenario(reason: &str) -> String {
    format!("sip-filter/{reason}")
}

/// `POST /v1/alerts`'s body for one ban (an array of one alert, with its decision).
pub fn alert(b: &LocalBan) -> serde_json::Value {
    let stamp = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    let (scope, value) = if b.target.contains('/') {
        ("Range", b.target.clone())
    } else {
        ("Ip", b.target.clone())
    };
    let scenario = scenario(&b.reason);
    // A permanent ban is pushed as a long one: a decision needs a duration.
    let duration = b.duration.unwrap_or(Duration::from_secs(10 * 365 * 86_400));
    let message = format!(
        "sip-filter banned {} ({}, {} failures)",
        b.target, b.reason, b.failures
    );
    let source = if scope == "Ip" {
        serde_json::json!({ "scope": scope, "value": value, "ip": value })
    } else {
        serde_json::json!({ "scope": scope, "value": value, "range": value })
    };
    serde_json::json!([{
        "scenario": scenario,
        "scenario_hash": "",
        "scenario_version": env!("CARGO_PKG_VERSION"),
        "message": message,
        "events_count": b.failures.max(1),
        "start_at": stamp(b.first_failure),
        "stop_at": stamp(b.created),
        "capacity": b.failures.max(1),
        "leakspeed": "0s",
        "simulated": false,
        "remediation": true,
        "events": [{
            "timestamp": stamp(b.created),
            "meta": [
                { "key": "source_ip", "value": value },
                { "key": "reason", "value": b.reason },
                { "key": "failures", "value": b.failures.to_string() },
            ],
        }],
        "source": source,
        "decisions": [{
            "origin": "crowdsec",
            "type": "ban",
            "scope": scope,
            "value": value,
            "duration": format!("{}s", duration.as_secs().max(1)),
            "scenario": scenario,
        }],
    }])
}

fn run_watcher(
    cfg: Crowdsec,
    machine_id: String,
    password: String,
    board: Board,
    rx: Receiver<LocalBan>,
) {
    let agent = agent();
    let mut token: Option<String> = None;
    let login = |agent: &ureq::Agent| -> Result<String> {
        let mut r = agent
            .post(format!("{}/v1/watchers/login", cfg.lapi_url))
            .send_json(Login {
                machine_id: &machine_id,
                password: &password,
                scenarios: Vec::new(),
            })
            .context("logging in to the LAPI")?;
        Ok(r.body_mut().read_json::<Token>()?.token)
    };
    for b in rx {
        let body = alert(&b);
        let mut backoff = Duration::from_secs(1);
        loop {
            let sent = (|| -> Result<()> {
                if token.is_none() {
                    token = Some(login(&agent)?);
                }
                let t = token.as_deref().unwrap_or_default();
                match agent
                    .post(format!("{}/v1/alerts", cfg.lapi_url))
                    .header("Authorization", &format!("Bearer {t}"))
                    .send_json(&body)
                {
                    Ok(_) => Ok(()),
                    Err(ureq::Error::StatusCode(401 | 403)) => {
                        // The token ran out (they last an hour): log in again.
                        token = None;
                        bail!("the LAPI refused the token")
                    }
                    Err(e) => Err(e.into()),
                }
            })();
            match sent {
                Ok(()) => {
                    info!(addr = %b.target, scenario = %scenario(&b.reason), "ban pushed to the crowdsec LAPI");
                    board.update(WATCHER, &cfg.lapi_url, |s| {
                        s.state = "connected".into();
                        s.last_sync = Some(super::status::now_rfc3339());
                        s.count += 1;
                    });
                    break;
                }
                Err(e) => {
                    board.update(WATCHER, &cfg.lapi_url, |s| {
                        s.state = "unreachable".into();
                        s.errors += 1;
                        s.last_error = Some(format!("{e:#}"));
                    });
                    if backoff == Duration::from_secs(1) {
                        warn!(addr = %b.target, "pushing a ban to the crowdsec LAPI failed, retrying: {e:#}");
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_answers_become_decisions() {
        let text = r#"{"new":[
            {"id":7,"origin":"cscli","type":"ban","scope":"Ip","value":"192.0.2.7","duration":"3h59m59.5s","scenario":"manual 'ban' from 'x'"},
            {"id":8,"origin":"crowdsec","type":"ban","scope":"Range","value":"2001:db8:1::5/48","duration":"1h","scenario":"s"},
            {"id":9,"origin":"cscli","type":"captcha","scope":"Ip","value":"192.0.2.9","duration":"1h","scenario":"s"},
            {"id":10,"origin":"cscli","type":"ban","scope":"Country","value":"FR","duration":"1h","scenario":"s"},
            {"id":11,"origin":"cscli","type":"ban","scope":"Ip","value":"192.0.2.11","duration":"-2s","scenario":"s"}
        ],"deleted":[{"id":3,"origin":"cscli","type":"ban","scope":"Ip","value":"192.0.2.3","duration":"-1s","scenario":"s"}]}"#;
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let (d, ignored) = to_delta(serde_json::from_str(text).unwrap(), true, now);
        assert!(d.full);
        assert_eq!(ignored, 2, "captcha and Country");
        assert_eq!(d.new.len(), 2, "{d:?}");
        assert_eq!(d.new[0].id, "7");
        assert_eq!(d.new[0].target, "192.0.2.7/32".parse::<IpNet>().unwrap());
        assert_eq!(
            d.new[0].expires,
            Some(now + Duration::from_secs_f64(14399.5))
        );
        assert_eq!(d.new[1].target, "2001:db8:1::/48".parse::<IpNet>().unwrap());
        assert_eq!(d.deleted, ["3"]);
        let (d, _) = to_delta(
            serde_json::from_str(r#"{"new":null,"deleted":null}"#).unwrap(),
            false,
            now,
        );
        assert!(d.new.is_empty() && d.deleted.is_empty());
    }

    #[test]
    fn usage_reports_have_what_the_lapi_requires() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let r = usage_report(t0, t0 + Duration::from_secs(60), Duration::from_secs(60), 7);
        let c = &r["remediation_components"][0];
        assert_eq!(c["utc_startup_timestamp"], 1_700_000_000);
        assert!(c["version"].is_string());
        assert!(c["os"]["name"].is_string() && c["os"]["version"].is_string());
        let m = &c["metrics"][0];
        assert_eq!(m["meta"]["window_size_seconds"], 60);
        assert_eq!(m["meta"]["utc_now_timestamp"], 1_700_000_060);
        assert_eq!(m["items"][0]["name"], "active_decisions");
        assert_eq!(m["items"][0]["value"], 7);
        assert_eq!(m["items"][0]["unit"], "ip");
    }

    #[test]
    fn alerts_carry_a_decision() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let a = alert(&LocalBan {
            target: "203.0.113.9".into(),
            reason: "auth-failures".into(),
            failures: 5,
            duration: Some(Duration::from_secs(3600)),
            first_failure: t,
            created: t + Duration::from_secs(3),
        });
        let a = &a[0];
        assert_eq!(a["scenario"], "sip-filter/auth-failures");
        assert_eq!(a["source"]["ip"], "203.0.113.9");
        assert_eq!(a["decisions"][0]["duration"], "3600s");
        assert_eq!(a["decisions"][0]["scope"], "Ip");
        assert_eq!(a["start_at"], "2023-11-14T22:13:20Z");
    }
}
