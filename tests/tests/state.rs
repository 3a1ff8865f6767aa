//! Bans on disk: a reboot and a map-layout upgrade keep every ban with no banned packet let
//! through, repeat offenders are banned longer across restarts, a damaged state file is set
//! aside. The real daemon and CLI on a veth between namespaces; needs root.
use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use tests::{
    filter::Filter,
    netns::{Netns, PBX_V4, wait_for},
    responder::Creds,
    sip,
};

const BASE: &str = "[auth]\nmax_failures = 3\nfind_time = \"60s\"\nban_time = \"1h\"\n";
const ATTACKER: &str = "203.0.113.10";

/// A REGISTER every millisecond from `from`, until dropped: what "no packet slipped through"
/// is measured with.
struct Flood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Flood {
    fn start(ns: &Netns, from: &str) -> Flood {
        let local: SocketAddr = format!("{from}:0").parse().unwrap();
        let sock = ns.enter(move || UdpSocket::bind(local)).unwrap().unwrap();
        let msg = sip::register("999", from, sip::Creds::Header("Authorization:"), &[]);
        let (stop, sent) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let (st, se) = (stop.clone(), sent.clone());
        let to: SocketAddr = format!("{PBX_V4}:5060").parse().unwrap();
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                if sock.send_to(msg.as_bytes(), to).is_ok() {
                    se.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Flood {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Three wrong passwords from `c`: the kernel bans it.
fn brute_force(f: &Filter, c: &tests::responder::Client) {
    for _ in 0..3 {
        c.register(PBX_V4, Creds::Bad);
    }
    assert!(
        wait_for(Duration::from_secs(5), || f
            .bans()
            .iter()
            .any(|b| b["addr"] == c.local.ip().to_string())),
        "{} banned:\n{}",
        c.local.ip(),
        f.log()
    );
}

fn addrs(f: &Filter) -> Vec<String> {
    let mut v: Vec<String> = f
        .bans()
        .iter()
        .map(|b| b["addr"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// `ban show --json`'s history of `target`.
fn history(f: &Filter, target: &str) -> Vec<serde_json::Value> {
    let out = f.cli_ok(&["ban", "show", target, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["history"].as_array().unwrap().clone()
}

/// The attacker banned by the kernel, 203.0.113.20 by the operator (2h, with a note).
fn kernel_and_operator_bans(f: &Filter) {
    brute_force(f, &f.client(&format!("{ATTACKER}:0")));
    f.cli_ok(&[
        "ban",
        "add",
        "203.0.113.20",
        "--for",
        "2h",
        "--reason",
        "by hand",
    ]);
}

fn counter(f: &Filter, name: &str) -> u64 {
    f.stats()[name].as_u64().unwrap()
}

#[test]
fn a_reboot_restores_every_ban_before_the_first_packet() {
    let mut f = Filter::start(
        &["203.0.113.20/24", "203.0.113.30/24", "203.0.113.40/24"],
        BASE,
    );
    let pbx = f.responder();
    let me: IpAddr = ATTACKER.parse().unwrap();
    kernel_and_operator_bans(&f);
    f.cli_ok(&["ban", "add", "198.51.100.0/24"]);
    // A ban the kernel issues while no daemon runs is found at the next start.
    f.stop_daemon(true);
    brute_force(&f, &f.client("203.0.113.30:0"));
    f.run_daemon();
    let want = [
        "198.51.100.0/24",
        "203.0.113.10",
        "203.0.113.20",
        "203.0.113.30",
    ];
    assert_eq!(addrs(&f), want);
    assert!(
        wait_for(Duration::from_secs(5), || history(&f, "203.0.113.30").len()
            == 1),
        "the ban issued without a daemon is recorded: {:?}",
        history(&f, "203.0.113.30")
    );
    let before = f.bans();

    // The attacker keeps sending through the reboot.
    let flood = Flood::start(&f.link.client, ATTACKER);
    std::thread::sleep(Duration::from_millis(200));
    let seen_banned = pbx.count_from(me);
    f.simulate_reboot();
    assert!(
        wait_for(Duration::from_secs(5), || pbx.count_from(me)
            > seen_banned + 20),
        "with no filter (mid-reboot) the flood reaches the PBX"
    );
    f.run_daemon();
    assert!(
        f.log()
            .contains("bans restored from the state file before attaching"),
        "{}",
        f.log()
    );
    let at_start = pbx.count_from(me);
    let sent_at_start = flood.sent();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(flood.sent() > sent_at_start + 200, "the flood kept sending");
    assert_eq!(
        pbx.count_from(me),
        at_start,
        "no flood packet reached the PBX after the restart"
    );
    // The new maps' counters: every flood packet the program saw was dropped as banned; not
    // one REGISTER got as far as being inspected.
    let dropped = counter(&f, "dropped_banned");
    assert!(dropped > 200, "{}", f.stats());
    assert_eq!(counter(&f, "req_register"), 0, "{}", f.stats());
    let sent = flood.sent() - sent_at_start;
    drop(flood);
    println!(
        "reboot: {} bans restored; after the attach the flood sent {sent} REGISTERs, the filter \
         dropped {dropped} as banned, 0 reached the PBX",
        want.len()
    );

    let after = f.bans();
    assert_eq!(addrs(&f), want);
    for (a, b) in before.iter().zip(&after) {
        assert_eq!(a["reason"], b["reason"], "{a} / {b}");
        assert_eq!(a["note"], b["note"], "{a} / {b}");
        assert_eq!(a["failures"], b["failures"], "{a} / {b}");
        assert_eq!(a["created"], b["created"], "{a} / {b}");
        let (x, y) = (&a["expires_in_secs"], &b["expires_in_secs"]);
        if x.is_null() {
            assert!(y.is_null(), "still permanent: {b}");
        } else {
            let d = x.as_i64().unwrap() - y.as_i64().unwrap();
            assert!((0..=30).contains(&d), "same expiry: {a} / {b}");
        }
    }
    // A phone at another address is unaffected.
    let phone = f.client("203.0.113.40:0");
    assert_eq!(phone.register(PBX_V4, Creds::Good), Some(200));
}

#[test]
fn a_map_layout_upgrade_carries_the_bans_without_detach() {
    let mut f = Filter::start(&["203.0.113.20/24", "203.0.113.21/24"], BASE);
    let pbx = f.responder();
    let me: IpAddr = ATTACKER.parse().unwrap();
    kernel_and_operator_bans(&f);
    let want = addrs(&f);
    let flood = Flood::start(&f.link.client, ATTACKER);
    std::thread::sleep(Duration::from_millis(200));
    let seen = pbx.count_from(me);

    // An "old version" whose FAILURES map had another value size: swap its pin for one.
    f.stop_daemon(false);
    let dir = std::path::Path::new("/sys/fs/bpf/sip-filter").join(&f.link.pbx_if);
    let failures = dir.join("FAILURES");
    std::fs::remove_file(&failures).unwrap();
    let out = std::process::Command::new("bpftool")
        .args(["map", "create"])
        .arg(&failures)
        .args([
            "type", "hash", "key", "16", "value", "8", "entries", "64", "name", "FAILURES",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refused = f.cli(&["ban", "list"]);
    assert!(
        !refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("FAILURES"),
        "the CLI sees another layout: {}",
        String::from_utf8_lossy(&refused.stderr)
    );

    f.run_daemon();
    assert!(
        f.log().contains("new map layout: bans carried over"),
        "{}",
        f.log()
    );
    assert_eq!(addrs(&f), want, "every ban carried");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        pbx.count_from(me),
        seen,
        "not one flood packet reached the PBX during the upgrade"
    );
    assert!(counter(&f, "dropped_banned") > 0);
    println!(
        "upgrade: {} bans carried; the flood sent {} REGISTERs through it, 0 reached the PBX",
        want.len(),
        flood.sent()
    );
    drop(flood);
    assert!(
        !sip_filter::upgrade::previous_dir(&dir).exists(),
        "the old pins are gone"
    );
    let info = std::process::Command::new("bpftool")
        .args(["map", "show", "pinned"])
        .arg(&failures)
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(
        !info.contains("value 8B"),
        "FAILURES has the new layout: {info}"
    );
    // The filter still counts and bans.
    brute_force(&f, &f.client("203.0.113.21:0"));
}

#[test]
fn repeat_offenders_are_banned_1h_2h_4h_across_a_restart() {
    let mut f = Filter::start(&[], &format!("{BASE}[bans]\nincrement = true\n"));
    let _pbx = f.responder();
    let c = f.client(&format!("{ATTACKER}:0"));
    let ban_secs = |f: &Filter| -> Option<u64> {
        f.bans()
            .iter()
            .find(|b| b["addr"] == ATTACKER)
            .and_then(|b| b["expires_in_secs"].as_u64())
    };
    let mut got = Vec::new();
    for round in 1..=3u64 {
        if round == 3 {
            // Offences are remembered across a restart of the daemon.
            f.stop_daemon(false);
            f.run_daemon();
        }
        brute_force(&f, &c);
        let want = 3600 * (1 << (round - 1));
        assert!(
            wait_for(Duration::from_secs(5), || ban_secs(&f)
                .is_some_and(|s| s + 60 >= want)),
            "round {round}: want {want}s, have {:?}\n{}",
            ban_secs(&f),
            f.log()
        );
        let b = f
            .bans()
            .into_iter()
            .find(|b| b["addr"] == ATTACKER)
            .unwrap();
        assert_eq!(b["offences"], round, "{b}");
        got.push(ban_secs(&f).unwrap());
        f.cli_ok(&["ban", "del", ATTACKER]);
        // The daemon notices the unban (the next ban must be a new offence, not a replacement).
        assert!(wait_for(Duration::from_secs(5), || history(&f, ATTACKER)
            .iter()
            .all(|h| !h["lifted_by"].is_null())));
    }
    let hours: Vec<u64> = got.iter().map(|s| (s + 60) / 3600).collect();
    assert_eq!(hours, [1, 2, 4], "ban times {got:?}");
    let h = history(&f, ATTACKER);
    assert_eq!(h.len(), 3, "{h:?}");
    for (i, r) in h.iter().enumerate() {
        assert_eq!(r["offence"], i as u64 + 1, "{r}");
        assert_eq!(r["origin"], "sip-filter", "{r}");
        assert_eq!(r["lifted_by"], "operator", "{r}");
    }
    let text = f.cli_ok(&["ban", "show", ATTACKER]);
    assert!(text.contains("3 bans remembered"), "{text}");
    assert!(f.log().contains("offence 3 in the history"), "{}", f.log());
}

#[test]
fn a_damaged_state_file_is_set_aside_and_the_pins_keep_their_bans() {
    let mut f = Filter::start(&[], BASE);
    let _pbx = f.responder();
    let c = f.client(&format!("{ATTACKER}:0"));
    brute_force(&f, &c);
    f.stop_daemon(true);
    let db = f.state_file();
    for side in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{side}", db.display()));
    }
    std::fs::write(&db, b"\x00garbage, not SQLite\n".repeat(512)).unwrap();
    f.run_daemon();
    assert!(
        f.log().contains("the state file was damaged"),
        "{}",
        f.log()
    );
    let aside: Vec<_> = std::fs::read_dir(db.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".damaged-"))
        .collect();
    assert_eq!(aside.len(), 1, "the damaged file is kept for a post-mortem");
    assert_eq!(addrs(&f), [ATTACKER], "the pinned ban is kept");
    assert_eq!(c.register(PBX_V4, Creds::Good), None, "and enforced");
    assert!(
        wait_for(Duration::from_secs(5), || history(&f, ATTACKER).len() == 1),
        "and recorded again in the new state file"
    );
    // A bad state directory is a clear error that loses nothing.
    f.stop_daemon(false);
    std::fs::write(
        &f.config,
        format!("{BASE}[state]\ndir = \"/proc/sip-filter-no-such-dir\"\n"),
    )
    .unwrap();
    let out = f
        .link
        .pbx
        .command(tests::filter::bin().to_str().unwrap())
        .args(["run", "--iface", &f.link.pbx_if, "--config"])
        .arg(&f.config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("state directory"), "{err}");
    assert_eq!(c.register(PBX_V4, Creds::Good), None, "the ban still holds");
}

#[test]
fn detach_forgets_the_bans_but_not_the_history() {
    let mut f = Filter::start(&[], BASE);
    let _pbx = f.responder();
    let c = f.client(&format!("{ATTACKER}:0"));
    brute_force(&f, &c);
    assert!(wait_for(Duration::from_secs(5), || history(&f, ATTACKER)
        .len()
        == 1));
    let out = f.cli_ok(&["detach"]);
    assert!(out.contains("1 bans closed"), "{out}");
    if let Some(mut d) = f.daemon.take() {
        d.wait_exit(Duration::from_secs(5)).unwrap();
    }
    // A new start on fresh maps restores nothing: detach meant "forget the bans".
    f.run_daemon();
    assert!(f.bans().is_empty(), "{:?}", f.bans());
    // Answered again; no credentials, so the probe does not make the attacker a trusted
    // source (a 2xx to a credentialed request would, and its next failures would block
    // the pair instead of banning it).
    assert_eq!(c.register(PBX_V4, Creds::None), Some(401));
    let h = history(&f, ATTACKER);
    assert_eq!(h[0]["lifted_by"], "detached", "{h:?}");
    // The history still counts: the next ban is the source's second offence.
    brute_force(&f, &c);
    let b = f
        .bans()
        .into_iter()
        .find(|b| b["addr"] == ATTACKER)
        .unwrap();
    assert_eq!(b["offences"], 2, "{b}");
}
