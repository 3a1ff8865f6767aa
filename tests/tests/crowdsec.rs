//! Many PBX hosts, one blocklist: two filters (PBX A and PBX B, each its own namespaces and
//! daemon) as bouncers and watchers of one real CrowdSec LAPI (Debian 12's 1.4.6).
use std::time::{Duration, Instant};

use tests::{
    crowdsec::Lapi,
    filter::Filter,
    lab::{self, Kamailio, tools},
    netns::{PBX_V4, PBX_V6, wait_for},
    responder::{Creds, Responder},
};

const POLL: &str = "1s";
/// The suite's full resync: often, so the 100k import's stream races are healed in seconds.
const RESYNC: &str = "10s";
const ATTACKER: &str = "203.0.113.10";
const RANGE_CLIENT: &str = "198.51.100.10";
const V6_CLIENT: &str = "2001:db8:1::10";

const BASE: &str = "[auth]\nmax_failures = 3\nfind_time = \"10m\"\nban_time = \"1h\"\n\
                    [scanners]\nuser_agents = []\n";

/// PBX A's SIP side: the suite's responder, or Kamailio (for svcrack, which needs real digest
/// challenges).
enum Pbx {
    Responder(#[allow(dead_code)] Responder),
    Kamailio(
        #[allow(dead_code)] Kamailio,
        #[allow(dead_code)] tempfile::TempDir,
    ),
}

struct Pair {
    a: Filter,
    b: Filter,
    lapi: Lapi,
    pbx_a: Pbx,
    _pbx_b: Responder,
}

/// A LAPI, then both filters with a `[crowdsec]` section each (the LAPI is up first).
fn pair() -> Pair {
    pair_after(|_| {}, false)
}

/// As `pair`, with `before` run on the LAPI before the filters start, and Kamailio as PBX A.
fn pair_after(before: impl FnOnce(&Lapi), kamailio_on_a: bool) -> Pair {
    let link_a = tests::netns::Link::new(&["198.51.100.10/24"]).unwrap();
    let link_b = tests::netns::Link::new(&["198.51.100.10/24"]).unwrap();
    let lapi = Lapi::start(&[&link_a.pbx, &link_b.pbx]).expect("starting the crowdsec LAPI");
    before(&lapi);
    let kamailio = kamailio_on_a.then(|| {
        let dir = tempfile::tempdir().unwrap();
        let k = Kamailio::start(&link_a.pbx, dir.path(), &[lab::ip(PBX_V4)])
            .expect("starting kamailio as PBX A");
        (k, dir)
    });
    let a = Filter::on_link(
        link_a,
        &format!("{BASE}{}", lapi.peers[0].config(POLL, RESYNC)),
    );
    let b = Filter::on_link(
        link_b,
        &format!("{BASE}{}", lapi.peers[1].config(POLL, RESYNC)),
    );
    let pbx_a = match kamailio {
        Some((k, d)) => Pbx::Kamailio(k, d),
        None => Pbx::Responder(a.responder()),
    };
    let _pbx_b = b.responder();
    Pair {
        a,
        b,
        lapi,
        pbx_a,
        _pbx_b,
    }
}

fn banned(f: &Filter, target: &str) -> Option<serde_json::Value> {
    f.bans().into_iter().find(|b| b["addr"] == target)
}

/// `f`'s client at `from` gets an answer to a REGISTER without credentials.
fn answered(f: &Filter, from: &str, to: &str) -> bool {
    f.client(&format!("{}:0", host(from)))
        .register(to, Creds::None)
        .is_some()
}

/// `cscli decisions add ARGS --duration 2h`.
fn decide(lapi: &Lapi, args: &[&str]) {
    let mut a = vec!["decisions", "add"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["--duration", "2h"]);
    lapi.cscli(&a).unwrap();
}

fn host(a: &str) -> String {
    if a.contains(':') {
        format!("[{a}]")
    } else {
        a.to_string()
    }
}

#[test]
fn svcrack_banned_on_pbx_a_is_dropped_by_pbx_b_within_two_polls() {
    let p = pair_after(|_| {}, true);
    let Pbx::Kamailio(kamailio, dir) = &p.pbx_a else {
        unreachable!()
    };
    assert!(
        answered(&p.b, ATTACKER, PBX_V4),
        "B answers the attacker first"
    );
    // svcrack guessing extension 101's password on A (40 wrong ones, at its own speed).
    let mut crack = tools::svcrack(
        &p.a.link.client,
        dir.path(),
        lab::ip(ATTACKER),
        lab::ip(PBX_V4),
        &tools::Crack {
            ext: 101,
            user: None,
            dictionary: lab::dictionary(101, 40, None),
            selecttime: None,
        },
    )
    .unwrap();
    assert!(
        wait_for(Duration::from_secs(20), || banned(&p.a, ATTACKER).is_some()),
        "A bans svcrack at its threshold:\n{}\n{}",
        p.a.log(),
        crack.output()
    );
    crack.stop();
    let guesses = kamailio
        .seen_from(lab::ip(ATTACKER))
        .into_iter()
        .filter(|s| s.creds)
        .count();
    // Past max_failures only what svcrack sent before the threshold answer reached it (it
    // sends on when an answer takes over its 5 ms pause), as in the lab's s2.
    assert!(guesses >= 3, "Kamailio on A saw {guesses} guesses");
    let t = Instant::now();
    let poll = humantime::parse_duration(POLL).unwrap();
    let on_b = wait_for(poll * 2 + Duration::from_secs(3), || {
        banned(&p.b, ATTACKER).is_some()
    });
    let took = t.elapsed();
    assert!(
        on_b,
        "B holds A's ban:\nA:\n{}\nB:\n{}\nLAPI:\n{}",
        p.a.log(),
        p.b.log(),
        p.lapi.log()
    );
    let b = banned(&p.b, ATTACKER).unwrap();
    assert_eq!(b["reason"], "crowdsec", "{b}");
    assert_eq!(b["origin"], "crowdsec/crowdsec", "{b}");
    assert_eq!(b["note"], "sip-filter/auth-failures", "{b}");
    let before = p.b.stats()["dropped_banned"].as_u64().unwrap();
    assert!(!answered(&p.b, ATTACKER, PBX_V4), "B drops the attacker");
    assert!(p.b.stats()["dropped_banned"].as_u64().unwrap() > before);
    assert!(
        answered(&p.b, RANGE_CLIENT, PBX_V4),
        "and only the attacker"
    );
    let held = p.lapi.decisions().unwrap();
    assert!(
        held.iter()
            .any(|(v, s)| v == ATTACKER && s == "sip-filter/auth-failures"),
        "cscli decisions list: {held:?}"
    );
    let status = p.b.cli_ok(&["status", "--json"]);
    let s: serde_json::Value = serde_json::from_str(&status).unwrap();
    let src = &s["sources"][0];
    assert_eq!(src["state"], "connected", "{s}");
    assert!(src["count"].as_u64().unwrap() >= 1, "{s}");
    // CrowdSec 1.4.6 has no /v1/usage-metrics (1.6.3 and later): a 404, said once.
    assert!(
        p.b.log().contains("has no /v1/usage-metrics"),
        "the usage report was tried:\n{}",
        p.b.log()
    );
    eprintln!(
        "propagation A -> B: {:.1}s after A's ban was listed (poll {POLL})",
        took.as_secs_f64()
    );
}

#[test]
fn cscli_decisions_drop_on_both_and_their_delete_spares_a_local_ban() {
    let p = pair();
    // A local ban on A of the IPv6 client, made before the shared one.
    p.a.cli_ok(&["ban", "add", V6_CLIENT, "--for", "1h", "--reason", "local"]);
    decide(&p.lapi, &["--ip", V6_CLIENT]);
    decide(&p.lapi, &["--range", "198.51.100.0/24"]);
    decide(&p.lapi, &["--ip", ATTACKER, "--type", "captcha"]);
    let v6_name = format!("{V6_CLIENT}/64").replace("::10/64", "::/64");
    for f in [&p.a, &p.b] {
        assert!(
            wait_for(Duration::from_secs(6), || banned(f, "198.51.100.0/24")
                .is_some()
                && banned(f, &v6_name).is_some()),
            "both decisions held: {:?}\n{}",
            f.bans(),
            f.log()
        );
        assert!(!answered(f, RANGE_CLIENT, PBX_V4), "the range is dropped");
        assert!(
            !answered(f, V6_CLIENT, PBX_V6),
            "the IPv6 client is dropped"
        );
        assert!(
            answered(f, ATTACKER, PBX_V4),
            "a captcha decision is not enforced"
        );
    }
    assert_eq!(
        banned(&p.a, &v6_name).unwrap()["reason"],
        "manual",
        "A's own ban stays"
    );
    assert_eq!(banned(&p.b, &v6_name).unwrap()["reason"], "crowdsec");
    let status: serde_json::Value =
        serde_json::from_str(&p.b.cli_ok(&["status", "--json"])).unwrap();
    assert!(
        status["sources"][0]["ignored"].as_u64().unwrap() >= 1,
        "{status}"
    );

    p.lapi
        .cscli(&["decisions", "delete", "--ip", V6_CLIENT])
        .unwrap();
    p.lapi
        .cscli(&["decisions", "delete", "--range", "198.51.100.0/24"])
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(6), || banned(&p.b, &v6_name).is_none()
            && banned(&p.b, "198.51.100.0/24").is_none()),
        "B lifts both: {:?}",
        p.b.bans()
    );
    // Answered again (IPv6: once neighbour discovery, whose packets the ban dropped too,
    // has found the client again).
    assert!(answered(&p.b, RANGE_CLIENT, PBX_V4));
    assert!(wait_for(Duration::from_secs(5), || answered(
        &p.b, V6_CLIENT, PBX_V6
    )));
    assert!(
        wait_for(Duration::from_secs(6), || banned(&p.a, "198.51.100.0/24")
            .is_none()),
        "A lifts the range"
    );
    let local = banned(&p.a, &v6_name).expect("A's local ban of the same address stays");
    assert_eq!(local["reason"], "manual");
    assert!(!answered(&p.a, V6_CLIENT, PBX_V6), "and is enforced");
    assert!(answered(&p.a, RANGE_CLIENT, PBX_V4));
}

#[test]
fn the_lapi_down_keeps_every_ban_and_a_resync_follows() {
    let mut p = pair();
    decide(&p.lapi, &["--range", "198.51.100.0/24"]);
    decide(&p.lapi, &["--ip", ATTACKER]);
    assert!(wait_for(Duration::from_secs(6), || banned(&p.b, ATTACKER)
        .is_some()
        && banned(&p.b, "198.51.100.0/24").is_some()));
    p.lapi.stop();
    let stopped = Instant::now();
    let down = wait_for(Duration::from_secs(10), || {
        let s: serde_json::Value =
            serde_json::from_str(&p.b.cli_ok(&["status", "--json"])).unwrap();
        s["sources"][0]["state"] == "unreachable"
    });
    assert!(down, "B notices the LAPI is down:\n{}", p.b.log());
    // Down for a minute: the bans stay and are enforced.
    while stopped.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_secs(10));
        assert!(banned(&p.b, ATTACKER).is_some(), "the bans stay");
    }
    assert!(!answered(&p.b, ATTACKER, PBX_V4), "and are enforced");
    assert!(answered(&p.b, V6_CLIENT, PBX_V6), "B still answers others");
    // A restart of B's daemon while the LAPI is down keeps them too.
    p.b.stop_daemon(false);
    p.b.run_daemon();
    assert!(banned(&p.b, "198.51.100.0/24").is_some());
    // Deleted while B could not see it: the resync lifts it.
    p.lapi.run().unwrap();
    p.lapi
        .cscli(&["decisions", "delete", "--ip", ATTACKER])
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(70), || banned(&p.b, ATTACKER).is_none()),
        "resynced: {:?}\n{}",
        p.b.bans(),
        p.b.log()
    );
    assert!(banned(&p.b, "198.51.100.0/24").is_some(), "the rest stays");
    assert!(p.b.log().contains("reachable again"), "{}", p.b.log());
}

#[test]
fn a_reboot_restores_the_shared_decisions_before_the_first_packet() {
    let mut p = pair();
    decide(&p.lapi, &["--ip", ATTACKER]);
    assert!(wait_for(Duration::from_secs(6), || banned(&p.b, ATTACKER).is_some()));
    p.lapi.stop();
    p.b.simulate_reboot();
    p.b.run_daemon();
    assert!(
        p.b.log()
            .contains("crowdsec decisions restored from the state file"),
        "{}",
        p.b.log()
    );
    assert!(
        !answered(&p.b, ATTACKER, PBX_V4),
        "dropped with the LAPI down"
    );
    assert!(
        answered(&p.b, RANGE_CLIENT, PBX_V4),
        "while B answers others"
    );
}

#[test]
fn one_hundred_thousand_decisions_reach_the_maps() {
    // Imported before the filters start (1.4.6's sqlite LAPI fails an import with "database
    // is locked" while bouncers stream it): what is measured is the filters' bulk load, from
    // the first `startup=true` stream to 100k entries in the maps.
    let n = 100_000u32;
    let mut imported = Duration::ZERO;
    let started = std::cell::Cell::new(None);
    let p = pair_after(
        |lapi| {
            // 100k distinct IPv6 /64s in the documentation prefix (IPv6 is banned by /64).
            let mut csv = String::from("value,duration,reason\n");
            for i in 0..n {
                csv.push_str(&format!(
                    "2001:db8:{:x}:{:x}::1,4h,bulk\n",
                    0x100 + (i >> 16),
                    i & 0xffff
                ));
            }
            let file = lapi.dir.path().join("bulk.csv");
            std::fs::write(&file, csv).unwrap();
            let t = Instant::now();
            lapi.cscli(&["decisions", "import", "-i", file.to_str().unwrap()])
                .unwrap();
            imported = t.elapsed();
            started.set(Some(Instant::now()));
        },
        false,
    );
    let count = |f: &Filter| {
        let s: serde_json::Value = serde_json::from_str(&f.cli_ok(&["status", "--json"])).unwrap();
        s["maps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "BANS")
            .map(|m| m["entries"].as_u64().unwrap())
            .unwrap_or(0)
    };
    let reached = wait_for(Duration::from_secs(180), || count(&p.b) >= u64::from(n));
    let took = started.get().unwrap().elapsed();
    assert!(reached, "B's BANS: {}\n{}", count(&p.b), p.b.log());
    let applied =
        p.b.log()
            .lines()
            .find(|l| l.contains("decisions added") && l.contains("added=100000"))
            .map(str::to_owned)
            .unwrap_or_default();
    eprintln!(
        "100k decisions: cscli import {:.1}s; in B's maps {:.1}s after the filters started \
         (debug build; daemon: {applied})",
        imported.as_secs_f64(),
        took.as_secs_f64()
    );
    assert!(wait_for(Duration::from_secs(60), || count(&p.a) >= u64::from(n)));
}

#[test]
fn ban_import_bans_a_list_in_batches() {
    let f = Filter::start(&["198.51.100.10/24"], BASE);
    let _pbx = f.responder();
    assert!(answered(&f, ATTACKER, PBX_V4));
    let list = f.tmp.path().join("list.txt");
    let mut text = String::from("# APIBAN-style list\n198.51.100.0/24\n");
    text.push_str(&format!("{ATTACKER}\n"));
    // 5,000 more, so that the exact ones take more than one batch.
    for i in 0..5000u32 {
        text.push_str(&format!("2001:db8:{:x}::1\n", 0x200 + i));
    }
    std::fs::write(&list, text).unwrap();
    let out = f.cli_ok(&[
        "ban",
        "import",
        list.to_str().unwrap(),
        "--for",
        "7d",
        "--reason",
        "apiban",
    ]);
    assert!(out.contains("banned 5002 targets"), "{out}");
    let b = banned(&f, ATTACKER).unwrap();
    assert_eq!(b["reason"], "manual");
    assert_eq!(b["note"], "apiban");
    assert!(b["expires_in_secs"].as_u64().unwrap() > 6 * 86_400);
    assert_eq!(f.bans().len(), 5002);
    assert!(!answered(&f, ATTACKER, PBX_V4), "dropped");
    assert!(!answered(&f, RANGE_CLIENT, PBX_V4), "the range too");
    let bad = f.tmp.path().join("bad.txt");
    std::fs::write(&bad, "192.0.2.1\nnope\n").unwrap();
    let o = f.cli(&["ban", "import", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("line 2"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(f.bans().len(), 5002, "a bad file bans nothing");
}
