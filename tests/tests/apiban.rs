//! APIBAN's feed (`[apiban]`) against a local server speaking its documented API
//! (`tests::apiban`; the public service cannot be reached from tests): pages, the "no new bans"
//! end, the service's rate, 400s, and a restart that goes on from the recorded cursor.
use std::{
    os::unix::fs::PermissionsExt as _,
    time::{Duration, Instant},
};

use tests::{
    apiban::{Apiban, PAGE},
    filter::Filter,
    netns::{Link, PBX_V4, wait_for},
    responder::{Creds, Responder},
};

const KEY: &str = "0123456789abcdef";
const BASE: &str = "[auth]\nmax_failures = 3\n[scanners]\nuser_agents = []\n";
/// The service's limit.
const RATE_MAX: usize = 5;
const RATE_WINDOW: Duration = Duration::from_secs(120);

struct Feed {
    f: Filter,
    server: Apiban,
    _pbx: Responder,
    started: Instant,
    /// The key file (600), in a directory removed with the feed.
    key: std::path::PathBuf,
    _keydir: tempfile::TempDir,
}

/// A link with `clients`, a server listing `initial`, and the filter polling it.
fn feed(clients: &[&str], initial: &[String], poll: &str, extra: &str) -> Feed {
    let link = Link::new(clients).unwrap();
    let server = Apiban::start(&link.pbx, KEY).unwrap();
    server.add(initial);
    let keydir = tempfile::tempdir().unwrap();
    let key = keydir.path().join("apiban.key");
    std::fs::write(&key, KEY).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = format!(
        "{BASE}{extra}\n[apiban]\nkey_file = \"{}\"\nurl = \"{}\"\npoll = \"{poll}\"\n",
        key.display(),
        server.url()
    );
    let started = Instant::now();
    let f = Filter::on_link(link, &config);
    let _pbx = f.responder();
    Feed {
        f,
        server,
        _pbx,
        started,
        key,
        _keydir: keydir,
    }
}

fn apiban_bans(f: &Filter) -> Vec<serde_json::Value> {
    f.bans()
        .into_iter()
        .filter(|b| b["reason"] == "apiban")
        .collect()
}

fn banned(f: &Filter, addr: &str) -> bool {
    f.bans().iter().any(|b| b["addr"] == addr)
}

fn answered(f: &Filter, from: &str) -> bool {
    f.client(&format!("{from}:0"))
        .register(PBX_V4, Creds::None)
        .is_some()
}

fn source(f: &Filter) -> serde_json::Value {
    let s: serde_json::Value = serde_json::from_str(&f.cli_ok(&["status", "--json"])).unwrap();
    s["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "apiban")
        .cloned()
        .unwrap_or_else(|| panic!("no apiban source in {s}"))
}

#[test]
fn pages_of_the_feed_drop_at_xdp_within_the_services_rate() {
    // 300 addresses (two pages), an IPv6 one, an allowlisted one and one that is no address.
    let mut initial: Vec<String> = (2..=201).map(|i| format!("192.0.2.{i}")).collect();
    initial.extend((100..=199).map(|i| format!("203.0.113.{i}")));
    initial.push("2001:db8:ff::1".into());
    initial.push("198.51.100.5".into());
    initial.push("not-an-address".into());
    let late = "198.51.100.77";
    let control = "198.51.100.10";
    let p = feed(
        &["198.51.100.10/24", "198.51.100.77/24", "198.51.100.5/24"],
        &initial,
        "5s",
        "[allow]\ncidrs = [\"198.51.100.5\"]\n",
    );
    assert!(
        wait_for(Duration::from_secs(20), || apiban_bans(&p.f).len() == 301),
        "both pages applied: {} bans\n{}",
        apiban_bans(&p.f).len(),
        p.f.log()
    );
    let loaded = p.started.elapsed();
    // Not listed yet: answered (the positive control for the drop below).
    assert!(
        answered(&p.f, late),
        "{late} is answered before it is listed"
    );
    p.server.add(&[late.to_string()]);

    let b = apiban_bans(&p.f);
    let one = b.iter().find(|b| b["addr"] == "192.0.2.2").unwrap();
    assert_eq!(one["origin"], "apiban", "{one}");
    assert_eq!(one["note"], "apiban/sip-honeypot", "{one}");
    let left = one["expires_in_secs"].as_u64().unwrap();
    assert!(
        (7 * 86400 - 120..=7 * 86400).contains(&left),
        "kept 7 days: {one}"
    );
    assert!(banned(&p.f, "2001:db8:ff::/64"), "the IPv6 entry");
    assert!(!banned(&p.f, "198.51.100.5"), "the allowlist wins");
    assert!(
        p.f.log().contains("the allowlist wins"),
        "and says so:\n{}",
        p.f.log()
    );
    assert!(answered(&p.f, "198.51.100.5"));

    assert!(
        wait_for(Duration::from_secs(20), || banned(&p.f, late)),
        "the next poll lists {late}: {:?}\n{}",
        p.server.requests(),
        p.f.log()
    );
    let before = p.f.stats()["dropped_banned"].as_u64().unwrap();
    assert!(!answered(&p.f, late), "{late} is dropped");
    assert!(p.f.stats()["dropped_banned"].as_u64().unwrap() > before);
    assert!(answered(&p.f, control), "and only the listed");

    // Requests at 0 s (two pages), then every 5 s: the sixth would go at about 20 s, were it
    // not for the limit.
    let first = p.server.requests()[0].0;
    let quiet_until = first + Duration::from_secs(24);
    std::thread::sleep(quiet_until.saturating_duration_since(Instant::now()));
    let reqs = p.server.requests();
    let paths: Vec<&str> = reqs.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(
        paths[0],
        format!("/api/{KEY}/banned/100"),
        "the whole list first"
    );
    let after_first_page = 1_700_000_000 + PAGE as u64;
    assert_eq!(paths[1], format!("/api/{KEY}/banned/{after_first_page}"));
    assert_eq!(
        reqs.len(),
        RATE_MAX,
        "at most {RATE_MAX} requests in {RATE_WINDOW:?}: {paths:?}"
    );
    let s = source(&p.f);
    assert_eq!(s["state"], "connected", "{s}");
    assert_eq!(s["count"], 302, "{s}");
    assert_eq!(s["ignored"], 1, "{s}");
    assert!(s["last_sync"].is_string(), "{s}");
    eprintln!(
        "apiban: 301 entries (2 pages) applied {:.1}s after the daemon started; {} requests in {:.0}s",
        loaded.as_secs_f64(),
        reqs.len(),
        p.started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_400_keeps_every_ban_and_a_restart_goes_on_from_the_cursor() {
    let listed = "198.51.100.20";
    let control = "198.51.100.10";
    let mut p = feed(
        &["198.51.100.10/24", "198.51.100.20/24"],
        &[listed.to_string(), "192.0.2.7".into()],
        "5s",
        "",
    );
    assert!(
        wait_for(Duration::from_secs(10), || apiban_bans(&p.f).len() == 2),
        "{}",
        p.f.log()
    );
    // check-config reads the key as the daemon does: a key others can read is refused.
    let check = || {
        std::process::Command::new(tests::filter::bin())
            .args(["check-config", p.f.config.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let ok = check();
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success() && out.contains("[apiban]: http://"),
        "{out}"
    );
    let key = p.key.clone();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let bad = check();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && err.contains("chmod o-r"), "{err}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cursor = p.server.last_id();
    p.server
        .fail_with(Some((400, r#"{"ipaddress":["bad request"],"ID":"none"}"#)));
    let failing = wait_for(Duration::from_secs(20), || {
        source(&p.f)["errors"].as_u64().unwrap_or(0) >= 1
    });
    let s = source(&p.f);
    assert!(failing, "the 400 is counted: {s}\n{}", p.f.log());
    assert!(
        s["last_error"].as_str().unwrap().contains("HTTP 400"),
        "{s}"
    );
    assert!(
        !s["last_error"].as_str().unwrap().contains(KEY),
        "the key is not shown: {s}"
    );
    assert!(!p.f.log().contains(KEY), "nor logged:\n{}", p.f.log());
    assert_eq!(apiban_bans(&p.f).len(), 2, "the bans stay");
    assert!(!answered(&p.f, listed), "and are enforced");
    assert!(answered(&p.f, control), "others are answered");

    // A restart: the bans come back from the pins and the state file, and the feed goes on
    // from the id after the last page, not from the start.
    p.f.stop_daemon(false);
    p.server.fail_with(None);
    let n = p.server.requests().len();
    p.server.add(&["192.0.2.8".to_string()]);
    p.f.run_daemon();
    assert!(
        banned(&p.f, listed) && banned(&p.f, "192.0.2.7"),
        "held across the restart: {:?}",
        p.f.bans()
    );
    assert!(
        wait_for(Duration::from_secs(10), || banned(&p.f, "192.0.2.8")),
        "the new entry: {:?}\n{}",
        p.server.requests(),
        p.f.log()
    );
    let reqs = p.server.requests();
    assert_eq!(
        reqs[n].1,
        format!("/api/{KEY}/banned/{cursor}"),
        "the restart asks from the cursor: {reqs:?}"
    );
    assert!(!answered(&p.f, listed));
    assert!(answered(&p.f, control));
}

/// Two feeds holding the same address (CrowdSec and APIBAN), through the daemon's `Feeds`: the
/// first writes it, the other is shadowed; when the first's decision is deleted, or runs out,
/// the other's is enforced again. The real maps, through BPF_PROG_TEST_RUN.
#[test]
fn an_address_two_feeds_hold_stays_banned_until_both_let_it_go() {
    use sip_filter::{
        bans,
        shared::{Decision, Delta, Feeds, Store, status::Board},
        state::{self, State},
    };
    use sip_filter_common::BanReason;
    use std::time::SystemTime;
    use testkit::{packet::Packet, sip};
    use tests::harness::{Harness, XDP_DROP, XDP_PASS};

    let mut h = Harness::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut st = State::open(&state::path(dir.path(), "eth0")).unwrap();
    let iface = tests::netns::unique("sfq");
    let mut feeds = Feeds::new(Board::new(&iface));
    feeds.push(
        Store::new(state::origin::CROWDSEC, BanReason::Crowdsec),
        "http://lapi".into(),
    );
    feeds.push(
        Store::new(state::origin::APIBAN, BanReason::Apiban),
        "http://apiban".into(),
    );
    let (cs, ab) = (0, 1);
    let decision = |addr: &str, id: &str, left: Duration| Decision {
        id: id.into(),
        target: format!("{addr}/32").parse().unwrap(),
        origin: String::new(),
        scenario: "test".into(),
        expires: Some(SystemTime::now() + left),
    };
    let add = |d: Decision| Delta {
        new: vec![d],
        ..Delta::default()
    };
    let register = |addr: &str| {
        Packet::udp(
            addr,
            5060,
            "203.0.113.1",
            5060,
            sip::register("101", "203.0.113.1", sip::Creds::None, &[]),
        )
        .build()
    };
    let reason =
        |h: &mut Harness, addr: &str| bans::get(&mut h.dp, addr).unwrap().map(|b| b.reason);
    let week = Duration::from_secs(7 * 86400);

    // Deleted at CrowdSec.
    let a1 = "198.51.100.66";
    assert_eq!(h.xdp(&register(a1)), XDP_PASS, "not banned yet");
    feeds.apply(&mut h.dp, &mut st, cs, add(decision(a1, "1", week)), &[]);
    feeds.apply(&mut h.dp, &mut st, ab, add(decision(a1, a1, week)), &[]);
    assert_eq!(
        reason(&mut h, a1),
        Some(BanReason::Crowdsec as u8),
        "the first writes"
    );
    assert_eq!(feeds.store(ab).len(), 1, "the other holds it too");
    assert_eq!(h.xdp(&register(a1)), XDP_DROP);
    let delete = Delta {
        deleted: vec!["1".into()],
        ..Delta::default()
    };
    feeds.apply(&mut h.dp, &mut st, cs, delete, &[]);
    assert_eq!(
        reason(&mut h, a1),
        Some(BanReason::Apiban as u8),
        "APIBAN's at once"
    );
    assert_eq!(h.xdp(&register(a1)), XDP_DROP, "still dropped");

    // CrowdSec's decision runs out (the daemon's expiry removes the entry).
    let a2 = "198.51.100.67";
    let short = Duration::from_millis(300);
    feeds.apply(&mut h.dp, &mut st, cs, add(decision(a2, "2", short)), &[]);
    feeds.apply(&mut h.dp, &mut st, ab, add(decision(a2, a2, week)), &[]);
    assert_eq!(reason(&mut h, a2), Some(BanReason::Crowdsec as u8));
    std::thread::sleep(short + Duration::from_millis(200));
    let gone = bans::expire(&mut h.dp).unwrap();
    assert!(gone.iter().any(|e| e.addr == a2), "{gone:?}");
    feeds.expired(&mut h.dp, &gone);
    feeds.expire(&mut st);
    assert_eq!(
        reason(&mut h, a2),
        Some(BanReason::Apiban as u8),
        "APIBAN's takes over"
    );
    assert_eq!(h.xdp(&register(a2)), XDP_DROP, "still dropped");
    assert_eq!(feeds.store(cs).len(), 0);
    let _ = std::fs::remove_file(sip_filter::shared::status::path(&iface));
}
