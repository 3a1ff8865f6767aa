//! Scenarios in the lab (`tests::lab`): Kamailio as the PBX, sip-filter on its interface, and
//! the real tools against it: SIPVicious (svcrack, svwar, svmap) and SIPp. Every assertion is
//! about what the PBX saw (Kamailio's log of each request) or what the filter did (its CLI,
//! its log). Needs root and the lab's packages (`cargo xtask setup`); fails loudly without
//! them, never skips.
//!
//! Run serially: `cargo test -p tests --test lab -- --test-threads=1`. Scenario 3 lasts
//! `LAB_PHONES_SECS` seconds (default 60); the others take a few seconds each.
use std::{io::Write as _, net::IpAddr, time::Duration};

use tests::lab::{
    self, Lab, LabConfig, Phones, Rule,
    capture::{self, SipPacket, Threshold},
    ip, tools,
};

fn start(config: LabConfig) -> Lab {
    Lab::start(config).expect("starting the lab")
}

/// Results every run shows, past the test harness's capture of `println!`.
fn report(line: String) {
    let _ = writeln!(std::io::stderr().lock(), "    lab: {line}");
}

fn sleep(secs: f64) {
    std::thread::sleep(Duration::from_secs_f64(secs));
}

/// From the capture on the PBX's interface: `client` crossed `n` failures, and nothing from
/// it got past the filter once the answer to the n-th failure had left the PBX (the moment
/// the kernel banned it).
fn check_ban(pkts: &[SipPacket], client: IpAddr, n: usize, rule: Rule) -> Threshold {
    let t = capture::threshold(pkts, client, n, rule).unwrap_or_else(|| {
        panic!(
            "the capture shows {n} failures of {client}: {:#?}",
            capture::failures(pkts, client, rule)
        )
    });
    let late = capture::requests_after(pkts, client, t.answer_at);
    // If this fails while the PBX is slow to answer, look at how the filter pairs answers
    // with requests: a client that pipelines requests on one socket can have answers counted
    // against the wrong request, and the ban then lands after more than n failures.
    assert!(
        late.is_empty(),
        "nothing from {client} passed the filter after the answer to its failure #{n} left \
         at {:.6}: {late:#?}\nfailures in the capture: {:#?}",
        t.answer_at,
        capture::failures(pkts, client, rule)
            .iter()
            .map(|(q, a)| (q.at, a.at))
            .collect::<Vec<_>>()
    );
    t
}

/// The PBX answers as the scenarios expect: a challenge first, 401 to a wrong password, 200
/// to the right one, 403 when the digest user is not the extension, 404 to an unknown
/// extension. (sip-filter counts these answers, so they are checked before anything else.)
#[test]
fn s0_the_lab_pbx_answers_like_a_registrar() {
    let lab = start(LabConfig::default());
    let me = lab.attacker.addr;
    // Two wrong passwords, then the right one: 401, 401, 200.
    let mut crack = lab
        .svcrack(&lab.attacker, 101, &lab::dictionary(101, 2, Some(2)), None)
        .unwrap();
    crack.wait(Duration::from_secs(20)).unwrap();
    assert_eq!(
        tools::svcrack_found(&crack.output()).as_deref(),
        Some("pw-101"),
        "{}",
        crack.output()
    );
    let answers: Vec<(bool, u16)> = lab
        .seen_from(me)
        .iter()
        .map(|s| (s.creds, s.code))
        .collect();
    // svcrack resends its first, unauthenticated REGISTER when the challenge is slow to come
    // (UDP retransmission on a loaded machine): one or more challenges, then the guesses.
    let challenges = answers.iter().take_while(|a| **a == (false, 401)).count();
    assert!(challenges >= 1, "challenged first: {answers:?}");
    assert_eq!(
        answers[challenges..],
        [(true, 401), (true, 401), (true, 200)],
        "challenge, two wrong passwords, the right one: {answers:?}"
    );

    // 102's own password, sent to register 101: 403.
    let mut wrong_user = lab
        .svcrack_with(
            &lab.scanner,
            &tools::Crack {
                ext: 101,
                user: Some(102),
                dictionary: vec![lab::password(102)],
                selecttime: None,
            },
        )
        .unwrap();
    assert!(tests::netns::wait_for(Duration::from_secs(10), || lab
        .seen_from(lab.scanner.addr)
        .iter()
        .any(|s| s.creds)));
    wrong_user.stop();
    let seen = lab.seen_from(lab.scanner.addr);
    assert_eq!(
        seen.iter().find(|s| s.creds).map(|s| s.code),
        Some(403),
        "{seen:#?}"
    );

    // svwar over 98-101: its probe of a random extension, 98 and 99 get 404; 100, 101 get 401.
    // (From the trunk: allowlisted, so whatever it gets, it is never banned.)
    let mut war = lab.svwar(&lab.trunk, "98-101").unwrap();
    war.wait(Duration::from_secs(30)).unwrap();
    let codes: Vec<(String, u16)> = lab
        .seen_from(lab.trunk.addr)
        .into_iter()
        .map(|s| (s.user, s.code))
        .collect();
    assert_eq!(codes.len(), 5, "{codes:?}");
    assert!(
        codes[0].1 == 404 && codes[0].0.len() > 3,
        "random probe: {codes:?}"
    );
    assert_eq!(
        codes[1..],
        [
            ("98".to_string(), 404),
            ("99".to_string(), 404),
            ("100".to_string(), 401),
            ("101".to_string(), 401)
        ]
    );
    assert_eq!(tools::svwar_found(&war.output()), vec![100, 101]);
    report(
        "scenario 0: the PBX answers 401 (challenge), 401 (wrong password), 200, 403 (wrong user), \
         404 (unknown extension)"
            .into(),
    );
}

#[test]
fn s1_svcrack_is_banned_after_exactly_max_failures_guesses() {
    let lab = start(LabConfig::default());
    let me = lab.attacker.addr;
    let max = lab.config.max_failures as usize;
    let dropped_before = lab.stat("dropped_banned");
    let mut cap = lab.capture().unwrap();

    // 40 wrong passwords, svcrack at its own speed (a guess every ~5 ms).
    let mut crack = lab
        .svcrack(&lab.attacker, 101, &lab::dictionary(101, 40, None), None)
        .unwrap();
    let logged = lab
        .wait_ban_logged(lab::ATTACKER, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no ban logged:\n{}", lab.filter.log()));
    // svcrack keeps sending for a while after the ban (every 5 ms): none of it may get through.
    sleep(1.5);
    assert!(crack.running(), "svcrack still attacking");
    crack.stop();
    let pkts = cap.finish().unwrap();

    let ban = lab
        .ban_of(lab::ATTACKER)
        .expect("ban list shows the attacker");
    assert_eq!(ban["reason"], "auth-failures");
    assert_eq!(
        ban["failures"], max as u64,
        "banned at exactly max_failures"
    );
    let t = check_ban(&pkts, me, max, Rule::Auth);

    // What the PBX itself saw. Guesses past max_failures, if any, are ones svcrack sent before
    // the threshold answer reached it (it sends when an answer takes over its 5 ms pause): they
    // passed the filter before the ban existed.
    let guesses = lab.guesses_from(me);
    assert!(guesses.len() >= max, "{guesses:#?}");
    assert!(
        guesses.iter().all(|g| g.user == "101" && g.code == 401),
        "each guess was a wrong password for 101, answered 401: {guesses:#?}"
    );
    let captured = pkts
        .iter()
        .filter(|p| p.src == me && matches!(&p.kind, capture::Kind::Request { creds: true, .. }))
        .count();
    assert_eq!(
        captured,
        guesses.len(),
        "Kamailio logged every guess that passed"
    );
    let dropped = lab.stat("dropped_banned") - dropped_before;
    assert!(
        dropped > 10,
        "svcrack's packets after the ban were dropped ({dropped})"
    );
    assert_eq!(tools::svcrack_found(&crack.output()), None);

    let to_ban_ms = (t.answer_at - t.request_at) * 1e3;
    let to_log_ms = (logged.at - t.answer_at) * 1e3;
    assert!(
        (0.0..2000.0).contains(&to_log_ms),
        "ban logged {to_log_ms:.1} ms after it took effect"
    );
    report(format!(
        "scenario 1: {} guesses reached the PBX (max_failures = {max}, {} in flight when the ban landed); \
         guess #{max} arrived, {to_ban_ms:.3} ms later its 401 left and the ban was in force; \
         the daemon logged it {to_log_ms:.3} ms after that; {dropped} later packets dropped",
        guesses.len(),
        guesses.len() - max
    ));
    report(format!("scenario 1: daemon: {}", logged.text));
}

#[test]
fn s2_svwar_enumeration_is_banned_by_the_not_found_threshold() {
    let lab = start(LabConfig::default());
    let me = lab.scanner.addr;
    let max = lab.config.max_not_found as usize;
    let mut cap = lab.capture().unwrap();

    // 80-99 do not exist (404), 100-130 do (401): svwar's own probe of a random extension
    // and 80-88 make ten 404s, so the scanner is banned long before it reaches the real ones.
    let mut war = lab.svwar(&lab.scanner, "80-130").unwrap();
    let logged = lab
        .wait_ban_logged(lab::SCANNER, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no ban logged:\n{}\n{}", lab.filter.log(), war.output()));
    war.wait(Duration::from_secs(30)).unwrap();
    let pkts = cap.finish().unwrap();

    let ban = lab
        .ban_of(lab::SCANNER)
        .expect("ban list shows the scanner");
    assert_eq!(ban["reason"], "extension-scan");
    assert_eq!(ban["failures"], max as u64);
    let t = check_ban(&pkts, me, max, Rule::NotFound);

    let seen = lab.seen_from(me);
    let not_found = seen.iter().filter(|s| s.code == 404).count();
    assert!(not_found >= max, "{seen:#?}");
    assert!(
        seen.iter().all(|s| s.code == 404),
        "the scanner never reached an existing extension: {seen:#?}"
    );
    let found = tools::svwar_found(&war.output());
    assert!(
        found.is_empty(),
        "the scanner found no extension: {found:?}\n{}",
        war.output()
    );
    report(format!(
        "scenario 2: {not_found} unknown extensions reached the PBX (max_not_found = {max}), \
         ban in force {:.3} ms after the 10th arrived, logged {:.3} ms later; svwar found {} extensions",
        (t.answer_at - t.request_at) * 1e3,
        (logged.at - t.answer_at) * 1e3,
        found.len()
    ));
}

#[test]
fn s3_fifty_phones_behind_one_nat_address_are_never_banned() {
    let secs: usize = std::env::var("LAB_PHONES_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let lab = start(LabConfig::default());
    // 50 accounts, 5 registrations a second: each phone registers every 10 s.
    let phones = Phones {
        accounts: lab::accounts(100..=149),
        rate: 5.0,
        total: 5 * secs,
        answer_timeout: Duration::from_secs(5),
    };
    let mut sipp = lab.office_phones(&phones).unwrap();
    let stats = sipp.finish(Duration::from_secs(secs as u64 + 60)).unwrap();

    assert_eq!(stats.created, phones.total as u64, "{stats:?}");
    assert_eq!(
        stats.successful,
        stats.created,
        "every registration succeeded: {stats:?}\n{}",
        sipp.tool.output()
    );
    assert_eq!(stats.failed, 0, "{stats:?}");
    assert!(lab.bans().is_empty(), "never banned: {:?}", lab.bans());
    assert!(
        !lab.filter.log().contains("banned "),
        "{}",
        lab.filter.log()
    );

    let office = ip(lab::OFFICE);
    assert!(
        lab.seen_from(ip(lab::PHONES_LAN)).is_empty(),
        "the PBX sees the office's NAT address only"
    );
    let seen = lab.seen_from(office);
    let ok = seen.iter().filter(|s| s.creds && s.code == 200).count();
    let wrong = seen.iter().filter(|s| s.creds && s.code != 200).count();
    assert_eq!(ok, phones.total, "every credentialed REGISTER got 200");
    assert_eq!(wrong, 0);
    let users: std::collections::BTreeSet<_> = seen.iter().map(|s| s.user.clone()).collect();
    assert_eq!(users.len(), 50, "50 accounts behind one address");
    report(format!(
        "scenario 3: {} registrations of 50 phones behind {} in {secs} s: {} OK, {} failed, {} retransmissions, 0 bans",
        stats.created,
        lab::OFFICE,
        stats.successful,
        stats.failed,
        stats.retransmissions
    ));
}

#[test]
fn s4_geo_blocked_host_is_dropped_from_its_first_packet_and_the_trunk_never_is() {
    let lab = start(LabConfig::default());
    let geo = lab.geo.addr;
    let trunk = lab.trunk.addr;
    let geo_before = lab.stat("dropped_geo");
    let allowed_before = lab.stat("allowlisted");

    // The blocked host scans, then guesses (the right password is in its list).
    let mut map = lab.svmap(&lab.geo, geo).unwrap();
    let mut crack = lab
        .svcrack(&lab.geo, 101, &lab::dictionary(101, 5, Some(2)), None)
        .unwrap();
    // The trunk retries a stale password for its account, more often than max_failures.
    let stale = lab::dictionary(150, 8, None);
    let mut trunk_crack = lab.svcrack(&lab.trunk, 150, &stale, None).unwrap();
    assert!(
        tests::netns::wait_for(Duration::from_secs(15), || lab.guesses_from(trunk).len()
            >= stale.len()),
        "every failed attempt of the trunk reaches the PBX: {:#?}",
        lab.guesses_from(trunk)
    );
    map.wait(Duration::from_secs(20)).unwrap();
    crack.stop();
    trunk_crack.stop();

    assert!(
        lab.seen_from(geo).is_empty(),
        "the PBX saw nothing from the blocked host: {:#?}",
        lab.seen_from(geo)
    );
    assert!(!tools::svmap_found(&map.output()), "{}", map.output());
    assert_eq!(tools::svcrack_found(&crack.output()), None);
    let dropped = lab.stat("dropped_geo") - geo_before;
    assert!(
        dropped >= 2,
        "svmap's OPTIONS and svcrack's REGISTER dropped ({dropped})"
    );
    assert!(lab.ban_of(lab::GEO).is_none(), "dropped, not banned");

    let tries = lab.guesses_from(trunk);
    assert_eq!(tries.len(), stale.len());
    assert!(tries.iter().all(|t| t.code == 401));
    assert!(
        lab.ban_of(lab::TRUNK).is_none(),
        "the trunk is never banned"
    );
    let mut reg = lab
        .sipp_from(
            &lab.trunk,
            &Phones {
                accounts: lab::accounts(150..=150),
                rate: 1.0,
                total: 1,
                answer_timeout: Duration::from_secs(3),
            },
        )
        .unwrap();
    let stats = reg.finish(Duration::from_secs(20)).unwrap();
    assert_eq!(
        (stats.successful, stats.failed),
        (1, 0),
        "the trunk registers after its failures: {}",
        reg.tool.output()
    );
    let allowed = lab.stat("allowlisted") - allowed_before;
    report(format!(
        "scenario 4: blocked host ({} in {}): 0 packets reached the PBX, {dropped} dropped; \
         trunk ({}): {} failures reached the PBX, not banned, then registered; {allowed} packets allowlisted",
        lab::GEO,
        lab::BLOCKED_COUNTRY,
        lab::TRUNK,
        tries.len()
    ));
}

#[test]
fn s5_a_ban_expires_after_ban_time_and_the_attacker_reaches_the_pbx_again() {
    let lab = start(LabConfig {
        ban_time: "3s".into(),
        ..LabConfig::default()
    });
    let me = lab.attacker.addr;
    let max = lab.config.max_failures as usize;
    let mut cap = lab.capture().unwrap();
    let dictionary = lab::dictionary(101, 40, None);
    let mut crack = lab.svcrack(&lab.attacker, 101, &dictionary, None).unwrap();
    let banned = lab
        .wait_ban_logged(lab::ATTACKER, Duration::from_secs(20))
        .expect("banned");
    crack.stop();

    // The daemon expires bans on a 1 s tick; the kernel ignores an expired ban by itself.
    let expired = tests::netns::wait_for(Duration::from_secs(10), || {
        lab.filter.log().contains("unbanned: ban expired")
    });
    assert!(expired, "the daemon logs the expiry:\n{}", lab.filter.log());
    let expiry = lab
        .daemon_log()
        .into_iter()
        .find(|l| l.text.contains("unbanned: ban expired"))
        .unwrap();
    let lasted = expiry.at - banned.at;
    assert!(
        (3.0..4.5).contains(&lasted),
        "ban_time 3 s: expiry logged {lasted:.2} s after the ban"
    );
    assert!(lab.ban_of(lab::ATTACKER).is_none());

    // The attacker comes back: it reaches the PBX again, and is banned again.
    let back_at = lab::now();
    let mut crack = lab.svcrack(&lab.attacker, 101, &dictionary, None).unwrap();
    let again = tests::netns::wait_for(Duration::from_secs(20), || {
        lab.filter.log().matches("banned 198.51.100.66:").count() >= 2
    });
    sleep(0.5);
    crack.stop();
    assert!(again, "banned again:\n{}", lab.filter.log());
    let pkts = cap.finish().unwrap();
    let (first, second): (Vec<SipPacket>, Vec<SipPacket>) =
        pkts.into_iter().partition(|p| p.at < back_at);
    check_ban(&first, me, max, Rule::Auth);
    check_ban(&second, me, max, Rule::Auth);
    let back = lab
        .guesses_from(me)
        .into_iter()
        .filter(|s| s.at > back_at)
        .count();
    assert!(back >= max, "guesses reached the PBX after the expiry");
    report(format!(
        "scenario 5: ban_time 3 s: expiry logged {lasted:.2} s after the ban (1 s tick); back at \
         the PBX, the attacker was banned again after {max} failures ({back} guesses reached it)"
    ));
}

#[test]
fn s6_the_daemon_killed_mid_attack_leaves_the_kernel_banning_and_state_survives_a_restart() {
    let mut lab = start(LabConfig::default());
    let me = lab.attacker.addr;
    let max = lab.config.max_failures as usize;
    let mut cap = lab.capture().unwrap();
    // A slower svcrack (a guess every ~0.3 s), so the daemon dies in the middle of it.
    let mut crack = lab
        .svcrack(
            &lab.attacker,
            101,
            &lab::dictionary(101, 40, None),
            Some(0.3),
        )
        .unwrap();
    assert!(tests::netns::wait_for(Duration::from_secs(15), || {
        lab.guesses_from(me).len() >= 2
    }));
    let killed_at = lab::now();
    lab.kill_daemon();
    let guesses_at_kill = lab.guesses_from(me).len();
    assert!(guesses_at_kill < max, "killed before the threshold");

    // No daemon: the kernel goes on counting and bans at the threshold by itself.
    let ban = lab
        .wait_banned(lab::ATTACKER, Duration::from_secs(20))
        .expect("banned with the daemon dead");
    assert_eq!(ban["reason"], "auth-failures");
    assert_eq!(ban["failures"], max as u64);
    let status = lab.filter.cli_ok(&["status"]);
    assert!(status.contains("not running"), "{status}");
    sleep(1.5);
    assert!(crack.running(), "svcrack still attacking");
    // svcrack waits 0.3 s before each send, far longer than an answer takes: nothing in flight.
    assert_eq!(lab.guesses_from(me).len(), max, "dropped without a daemon");

    lab.restart_daemon();
    assert!(
        lab.filter.log().contains("reusing pinned maps"),
        "{}",
        lab.filter.log()
    );
    let after = lab
        .ban_of(lab::ATTACKER)
        .expect("the ban survived the restart");
    for k in ["addr", "reason", "failures", "created", "note"] {
        assert_eq!(after[k], ban[k], "{k} kept across the restart");
    }
    sleep(1.0);
    crack.stop();
    let pkts = cap.finish().unwrap();
    let t = check_ban(&pkts, me, max, Rule::Auth);
    let threshold = t.answer_at;
    assert!(
        t.request_at > killed_at,
        "the threshold was crossed with the daemon dead"
    );
    assert_eq!(
        lab.guesses_from(me).len(),
        max,
        "still dropped after the restart"
    );
    report(format!(
        "scenario 6: daemon SIGKILLed after {guesses_at_kill} guesses; the kernel banned at guess #{max} \
         {:.2} s later with no daemon; after the restart the ban ({}, created {}) is intact",
        threshold - killed_at,
        after["reason"],
        after["created"]
    ));
}

#[test]
fn s7_an_ipv6_attacker_is_banned_by_its_64_and_its_other_addresses_are_dropped_too() {
    let lab = start(LabConfig::default());
    let me = lab.attacker6.addr;
    let max = lab.config.max_failures as usize;
    let prefix = "2001:db8:bad:1::/64";
    let mut cap = lab.capture().unwrap();
    let mut crack = lab
        .svcrack(&lab.attacker6, 101, &lab::dictionary(101, 40, None), None)
        .unwrap();
    let logged = lab
        .wait_ban_logged(prefix, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no ban logged:\n{}", lab.filter.log()));
    sleep(0.5);
    crack.stop();
    let ban = lab.ban_of(prefix).unwrap_or_else(|| {
        panic!("ban list shows the /64: {:?}", lab.bans());
    });
    assert_eq!(ban["failures"], max as u64);
    assert!(lab.guesses_from(me).len() >= max);

    // Another address in the same /64, and one in another /64 of the same host.
    let same: IpAddr = ip(lab::ATTACKER6_SAME_64);
    let other: IpAddr = ip(lab::ATTACKER6_OTHER_64);
    let mut map_same = lab.svmap(&lab.attacker6, same).unwrap();
    let mut map_other = lab.svmap(&lab.attacker6, other).unwrap();
    map_same.wait(Duration::from_secs(20)).unwrap();
    map_other.wait(Duration::from_secs(20)).unwrap();
    let pkts = cap.finish().unwrap();
    check_ban(&pkts, me, max, Rule::Auth);
    assert!(
        !pkts.iter().any(|p| p.src == same),
        "nothing from the same /64 passed the filter"
    );
    assert!(
        lab.seen_from(same).is_empty(),
        "the same /64 is dropped: {:#?}",
        lab.seen_from(same)
    );
    assert!(!tools::svmap_found(&map_same.output()));
    assert_eq!(
        lab.seen_from(other).len(),
        1,
        "another /64 is not banned: {:#?}",
        lab.seen_from(other)
    );
    assert!(
        tools::svmap_found(&map_other.output()),
        "{}",
        map_other.output()
    );
    report(format!(
        "scenario 7: {} banned after {max} guesses from {me}; {same} dropped, {other} answered ({})",
        prefix, logged.text
    ));
}

#[test]
fn s8_an_operator_bans_a_phone_with_the_cli_and_unbans_it() {
    let lab = start(LabConfig::default());
    let office = ip(lab::OFFICE);
    // Five phones registering ten times a second in all, for about 8 s.
    let phones = Phones {
        accounts: lab::accounts(100..=104),
        rate: 10.0,
        total: 80,
        answer_timeout: Duration::from_millis(1500),
    };
    let mut sipp = lab.office_phones(&phones).unwrap();
    let ok_count = || {
        lab.seen_from(office)
            .iter()
            .filter(|s| s.creds && s.code == 200)
            .count()
    };
    assert!(tests::netns::wait_for(
        Duration::from_secs(10),
        || ok_count() >= 5
    ));

    let banned_at = lab::now();
    lab.filter.cli_ok(&[
        "ban",
        "add",
        lab::OFFICE,
        "--for",
        "1h",
        "--reason",
        "operator test",
    ]);
    let ban = lab.ban_of(lab::OFFICE).expect("listed");
    assert_eq!(ban["reason"], "manual");
    assert_eq!(ban["note"], "operator test");
    sleep(2.5);
    let unbanned_at = lab::now();
    lab.filter.cli_ok(&["ban", "del", lab::OFFICE]);
    let stats = sipp.finish(Duration::from_secs(60)).unwrap();

    let seen = lab.seen_from(office);
    // A request already past the filter when the ban lands may still be logged a moment later.
    let during: Vec<_> = seen
        .iter()
        .filter(|s| s.at > banned_at + 0.05 && s.at < unbanned_at)
        .collect();
    assert!(
        during.is_empty(),
        "nothing reached the PBX while banned: {during:#?}"
    );
    let before = seen
        .iter()
        .filter(|s| s.at < banned_at && s.creds && s.code == 200)
        .count();
    let resumed = seen
        .iter()
        .filter(|s| s.at > unbanned_at && s.creds && s.code == 200)
        .count();
    assert!(
        before > 0 && resumed > 0,
        "{before} before, {resumed} after"
    );
    assert!(
        stats.failed > 0,
        "registrations failed during the ban: {stats:?}"
    );
    assert!(lab.bans().is_empty());
    report(format!(
        "scenario 8: {before} registrations OK before the ban, none reached the PBX during it ({} failed), \
         {resumed} OK after the unban",
        stats.failed
    ));
}

/// The seeds' toll-fraud stories against Kamailio routing authenticated calls to a SIPp trunk:
/// a phone with valid credentials dials a premium number and a Caribbean look-alike (refused
/// by the filter, under 100 ms, the PBX never sees them, the trunk gets no call); a domestic
/// and an international call in business hours reach the trunk and connect; Kamailio
/// forwarding an inbound call to a premium number is stopped at egress; and when business
/// hours end while the daemon runs, the same international call is refused, with no reload.
#[test]
fn s9_toll_fraud_rules_stop_calls_with_valid_credentials_at_ingress_and_egress() {
    // Business hours end at the next minute boundary at least 25 s away (UTC).
    let now = lab::now() as u64;
    let mut edge = (now / 60 + 1) * 60;
    if edge - now < 25 {
        edge += 60;
    }
    let hm = |t: u64| format!("{:02}:{:02}", (t / 3600) % 24, (t / 60) % 60);
    let window = format!("Mon-Sun {}-{}", hm(edge - 600), hm(edge));
    let lab = start(LabConfig {
        calls: Some(lab::calls_config("UTC", &window, &[])),
        ..LabConfig::default()
    });
    let mut trunk = lab.start_trunk().expect("starting the SIPp trunk");
    let phone = &lab.attacker;
    let pbx = ip(lab::PBX);
    let call = |number: &str, expect| {
        let ok = lab.call(phone, 101, number, expect).expect("a SIPp call");
        if !ok {
            let nic = lab
                .pbx_ns()
                .exec("ethtool", &["-S", lab.pbx_if()])
                .unwrap_or_default();
            let peer = lab
                .filter
                .link
                .client
                .exec("ethtool", &["-S", "pbx"])
                .unwrap_or_default();
            panic!(
                "{number}: expected {expect:?}\nstats: {}\nPBX NIC: {nic}\npeer: {peer}\nlog: {}",
                lab.filter.stats(),
                lab.filter.log()
            );
        }
    };
    let trunk_invites = || lab.trunk_invites();

    // Stolen or cloned credentials: the call is refused before the challenge.
    call("+88212345678", tools::CallOutcome::Refused);
    call("18095550100", tools::CallOutcome::Refused);
    let (code, took) = Lab::first_final_answer(
        phone,
        pbx,
        Lab::invite(phone.addr, pbx, "101", "011882555123"),
    )
    .expect("an answer");
    assert_eq!(code, 403);
    assert!(took < Duration::from_millis(100), "answered in {took:?}");
    // What the PBX and the trunk may and may not see.
    call("+12125550100", tools::CallOutcome::Connected);
    call("+442071234567", tools::CallOutcome::Connected);
    let seen_invites: Vec<String> = lab
        .seen_from(phone.addr)
        .into_iter()
        .filter(|s| s.method == "INVITE")
        .map(|s| s.user)
        .collect();
    for blocked in ["+88212345678", "18095550100", "011882555123"] {
        assert!(
            !seen_invites.iter().any(|u| u == blocked),
            "the PBX saw {blocked}: {seen_invites:?}"
        );
    }
    assert!(
        seen_invites.iter().any(|u| u == "+12125550100"),
        "{seen_invites:?}"
    );
    let at_trunk = trunk_invites();
    assert_eq!(
        at_trunk.len(),
        2,
        "the trunk got the two allowed calls only: {at_trunk:#?}"
    );

    // Forwarding: an inbound call from the trunk to extension 150, which the PBX forwards to a
    // premium number through the trunk. The INVITE the PBX sends never leaves the host.
    let caller = lab.trunk.addr;
    let _ = Lab::first_final_answer(
        &lab.trunk,
        pbx,
        Lab::invite(caller, pbx, "trunk", lab::kamailio::FORWARDING_EXTENSION),
    );
    let forwarded = lab
        .seen_from(caller)
        .into_iter()
        .filter(|s| s.method == "INVITE" && s.code == 181)
        .count();
    assert_eq!(forwarded, 1, "Kamailio forwarded the inbound call");
    assert!(
        !trunk_invites()
            .iter()
            .any(|l| l.contains(lab::kamailio::FORWARD_TO)),
        "the forwarded call reached the trunk: {:#?}",
        trunk_invites()
    );
    let stats = lab.filter.stats();
    assert!(
        stats["call_blocked_egress"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    assert!(stats["call_blocked"].as_u64().unwrap() >= 3, "{stats}");
    let log = lab.filter.log();
    assert!(
        log.contains("call blocked at egress") && log.contains(lab::kamailio::FORWARD_TO),
        "{log}"
    );
    assert!(log.contains("call blocked: extension \"101\""), "{log}");

    // Business hours end while the daemon runs: the same call is refused, no reload.
    let wait = (edge as f64 - lab::now()).max(0.0) + 2.0;
    report(format!(
        "scenario 9: waiting {wait:.0} s for business hours ({window} UTC) to end"
    ));
    sleep(wait);
    call("+442071234567", tools::CallOutcome::Refused);
    call("+12125550100", tools::CallOutcome::Connected);
    assert!(lab.filter.log().contains("business hours ended"));
    let at_trunk = trunk_invites();
    assert_eq!(at_trunk.len(), 3, "{at_trunk:#?}");
    let rules: Vec<String> = lab.filter.stats()["call_rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["calls"].as_u64() > Some(0))
        .map(|r| {
            format!(
                "{} {}/{}",
                r["rule"].as_str().unwrap(),
                r["blocked"],
                r["calls"]
            )
        })
        .collect();
    report(format!(
        "scenario 9: premium, Caribbean look-alike refused (403 in {took:?}); domestic and \
         business-hours international connected; forwarding to {} dropped at egress; after \
         hours the international call refused; the trunk got {} INVITEs; per rule (blocked/INVITEs): {}",
        lab::kamailio::FORWARD_TO,
        at_trunk.len(),
        rules.join(", ")
    ));
    trunk.tool.stop();
}

/// Seed 000: a cloned phone with valid credentials places 19 short calls to one premium
/// number in Africa, in business hours (so no after-hours rule helps). With
/// `max_same_number = { calls = 5, within = "10m" }` the first five connect and every call
/// from the sixth is refused at its credentialed INVITE: the trunk gets five calls, not 19.
/// `calls blocked` lists the extension, `calls unblock` lifts it.
#[test]
fn s10_seed_000_nineteen_calls_to_one_number_are_refused_from_the_sixth() {
    let calls = lab::calls_config(
        "UTC",
        "Mon-Sun 00:00-24:00",
        &[
            "max_same_number = { calls = 5, within = \"10m\" }",
            "block_for = \"1h\"",
        ],
    );
    let lab = start(LabConfig {
        calls: Some(calls),
        ..LabConfig::default()
    });
    let mut trunk = lab.start_trunk().expect("starting the SIPp trunk");
    let phone = &lab.attacker;
    let number = "+2693212345";
    let mut outcomes = Vec::new();
    for i in 1..=19 {
        let expect = if i <= 5 {
            tools::CallOutcome::Connected
        } else {
            tools::CallOutcome::RefusedAfterChallenge
        };
        let ok = lab.call(phone, 101, number, expect).expect("a SIPp call");
        if !ok {
            let mut st = lab.filter.stats();
            st.as_object_mut().unwrap().remove("call_rules");
            let seen: Vec<String> = lab
                .seen_from(phone.addr)
                .iter()
                .map(|x| format!("{} {} creds={} -> {}", x.method, x.user, x.creds, x.code))
                .collect();
            panic!(
                "call {i}: expected {expect:?}\n{st}\n{}\nthe PBX saw: {seen:#?}\ntrunk: {:#?}",
                lab.filter.log(),
                lab.trunk_invites()
            );
        }
        outcomes.push(expect);
    }
    let at_trunk = lab.trunk_invites();
    let to_number = at_trunk.iter().filter(|l| l.contains(number)).count();
    assert_eq!(to_number, 5, "the trunk got five calls: {at_trunk:#?}");
    let held = lab.filter.cli_ok(&["calls", "blocked", "--json"]);
    let held: serde_json::Value = serde_json::from_str(&held).unwrap();
    assert_eq!(held[0]["extension"], "101", "{held}");
    let log = lab.filter.log();
    assert!(
        log.contains("over a call limit (max_same_number = 5 calls within 10m"),
        "{log}"
    );
    // Another extension is not held; the operator lifts 101's hold.
    assert!(
        lab.call(phone, 102, number, tools::CallOutcome::Connected)
            .unwrap()
    );
    lab.filter.cli_ok(&["calls", "unblock", "101"]);
    assert!(
        lab.call(phone, 101, number, tools::CallOutcome::Connected)
            .unwrap(),
        "after the unblock"
    );
    let stats = lab.filter.stats();
    report(format!(
        "scenario 10: 19 calls to {number}: 5 connected, 14 refused (call_held {}); the trunk got \
         {to_number}; `calls blocked`: {held}",
        stats["call_held"]
    ));
    trunk.tool.stop();
}

#[test]
fn s11_svmap_and_svcrack_with_their_default_user_agent_are_banned_at_their_first_request() {
    let lab = start(LabConfig {
        scanners: true,
        ..LabConfig::default()
    });
    let scanner = lab.scanner.addr;
    let attacker = lab.attacker.addr;
    let dropped_before = lab.stat("dropped_scanner");

    // svmap's OPTIONS sweep, then svcrack's guesses: both say "friendly-scanner".
    let mut map = lab.svmap(&lab.scanner, scanner).unwrap();
    let logged = lab
        .wait_ban_logged(lab::SCANNER, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no ban logged:\n{}", lab.filter.log()));
    map.wait(Duration::from_secs(30)).unwrap();
    let mut crack = lab
        .svcrack(
            &lab.attacker,
            101,
            &lab::dictionary(101, 20, Some(10)),
            None,
        )
        .unwrap();
    lab.wait_ban_logged(lab::ATTACKER, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("svcrack not banned:\n{}", lab.filter.log()));
    sleep(1.0);
    crack.stop();

    for who in [lab::SCANNER, lab::ATTACKER] {
        let ban = lab.ban_of(who).expect("ban list shows it");
        assert_eq!(ban["reason"], "scanner", "{ban}");
        assert_eq!(ban["kind"], "ban", "{ban}");
    }
    assert!(
        lab.seen_from(scanner).is_empty(),
        "the PBX never saw svmap: {:#?}",
        lab.seen_from(scanner)
    );
    assert!(
        lab.seen_from(attacker).is_empty(),
        "the PBX never saw a guess: {:#?}",
        lab.seen_from(attacker)
    );
    assert!(!tools::svmap_found(&map.output()), "{}", map.output());
    assert_eq!(
        tools::svcrack_found(&crack.output()),
        None,
        "the password (in its list) was not found"
    );
    let dropped = lab.stat("dropped_scanner") - dropped_before;
    assert_eq!(dropped, 2, "one request of each, then dropped as banned");
    let sigs = lab.stats()["scanners"].clone();
    let hits = sigs
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["signature"] == "friendly-scanner")
        .map(|s| s["requests"].as_u64().unwrap());
    assert_eq!(hits, Some(2), "{sigs}");

    // Positive control: the office's phones (User-Agent lab-phone) register as ever.
    let phones = Phones {
        accounts: lab::accounts(100..=109),
        rate: 10.0,
        total: 10,
        answer_timeout: Duration::from_secs(5),
    };
    let stats = lab
        .office_phones(&phones)
        .unwrap()
        .finish(Duration::from_secs(30))
        .unwrap();
    assert_eq!(stats.successful, 10, "{stats:?}");
    report(format!(
        "scenario 11: svmap and svcrack (User-Agent friendly-scanner) banned at their first \
         request, 0 of their requests reached the PBX, {dropped} requests dropped as a scanner's; \
         10/10 office registrations OK; daemon: {}",
        logged.text
    ));
}

#[test]
fn s12_a_register_flood_is_rate_limited_while_fifty_phones_register() {
    let lab = start(LabConfig::default());
    let me = lab.attacker.addr;
    // 50 phones behind the office's address, 10 registrations a second for 20 s: 20 requests a
    // second from one address (a REGISTER and its answer to the challenge), under the 30 per
    // 2 s of the flood guard's default, and trusted (x10) from their first 200 on.
    let phones = Phones {
        accounts: lab::accounts(100..=149),
        rate: 10.0,
        total: 200,
        answer_timeout: Duration::from_secs(5),
    };
    let mut office = lab.office_phones(&phones).unwrap();
    sleep(2.0);
    // The flood: 200 REGISTERs a second from one address, 2,000 in all.
    let dropped_before = lab.stat("dropped_flood");
    let mut flood = lab.register_flood(&lab.attacker, 200, 2000).unwrap();
    flood.finish(Duration::from_secs(60)).unwrap();
    let stats = office.finish(Duration::from_secs(90)).unwrap();

    let ban = lab
        .ban_of(lab::ATTACKER)
        .expect("ban list shows the flood's drop");
    assert_eq!(ban["kind"], "rate-limit", "{ban}");
    assert_eq!(ban["reason"], "flood", "{ban}");
    let secs = ban["expires_in_secs"].as_u64().unwrap();
    assert!(
        (280..=300).contains(&secs),
        "dropped for block_for (5m): {secs}"
    );
    let reached = lab.seen_from(me).len();
    // The guard's exact count at 200/s: the n-th request passes while n x 66.7 ms less the
    // (n-1) x 5 ms it waited is at most 2 s, so 32; SIPp's pacing moves it by one or two.
    assert!(
        (30..=34).contains(&reached),
        "{reached} of the flood's REGISTERs reached the PBX"
    );
    let dropped = lab.stat("dropped_flood") - dropped_before;
    assert!(dropped as usize >= 2000 - reached - 10, "{dropped} dropped");
    assert_eq!(stats.created, 200, "{stats:?}");
    assert_eq!(
        stats.successful, 200,
        "every office registration succeeded: {stats:?}"
    );
    assert!(
        lab.ban_of(lab::OFFICE).is_none(),
        "the office is not limited"
    );
    assert!(
        lab.filter
            .log()
            .contains(&format!("rate-limited {}", lab::ATTACKER)),
        "{}",
        lab.filter.log()
    );
    report(format!(
        "scenario 12: REGISTER flood of 2000 at 200/s: {reached} reached the PBX, {dropped} \
         dropped, rate-limited for 5m; 50 office phones: {}/{} registrations OK",
        stats.successful, stats.created
    ));
}

#[test]
fn s13_a_sipp_brute_force_over_tcp_is_banned_at_exactly_max_failures() {
    let lab = start(LabConfig::default());
    let me = lab.attacker.addr;
    let max = lab.config.max_failures as usize;
    // Positive control first: a phone that knows its password registers over TCP.
    let good = Phones {
        accounts: lab::accounts(110..=110),
        rate: 5.0,
        total: 3,
        answer_timeout: Duration::from_secs(5),
    };
    let ok = lab
        .sipp_tcp_from(&lab.phones, &good)
        .unwrap()
        .finish(Duration::from_secs(30))
        .unwrap();
    assert_eq!(ok.successful, 3, "registrations over TCP succeed: {ok:?}");

    // 30 wrong passwords for 101 over one TCP connection, 5 a second.
    let guesses = Phones {
        accounts: (0..30).map(|i| (101, format!("wrong-{i}"))).collect(),
        rate: 5.0,
        total: 30,
        answer_timeout: Duration::from_secs(2),
    };
    let mut sipp = lab.sipp_tcp_from(&lab.attacker, &guesses).unwrap();
    lab.wait_ban_logged(lab::ATTACKER, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no ban logged:\n{}", lab.filter.log()));
    sleep(3.0);
    sipp.tool.stop();

    let ban = lab
        .ban_of(lab::ATTACKER)
        .expect("ban list shows the attacker");
    assert_eq!(ban["reason"], "auth-failures", "{ban}");
    assert_eq!(
        ban["failures"], max as u64,
        "banned at exactly max_failures"
    );
    let seen = lab.guesses_from(me);
    assert_eq!(
        seen.len(),
        max,
        "exactly max_failures guesses reached the PBX, none after the ban: {seen:#?}"
    );
    assert!(
        seen.iter().all(|g| g.user == "101" && g.code == 401),
        "{seen:#?}"
    );
    report(format!(
        "scenario 13: SIPp brute force over TCP: {} guesses reached the PBX (max_failures = {max}), \
         banned at the {max}th; a phone registered 3/3 over TCP before",
        seen.len()
    ));
}

/// The office's 50 phones register `total` times, `rate` a second; the SIPp counters.
fn office_registers(
    lab: &Lab,
    accounts: Vec<(u16, String)>,
    rate: f64,
    total: usize,
) -> tools::SippStats {
    let phones = Phones {
        accounts,
        rate,
        total,
        answer_timeout: Duration::from_secs(3),
    };
    let mut sipp = lab.office_phones(&phones).unwrap();
    sipp.finish(Duration::from_secs(total as u64 / rate as u64 + 60))
        .unwrap()
}

#[test]
fn s14_a_spoofer_forging_the_offices_wrong_passwords_gets_nothing_blocked() {
    let lab = start(LabConfig::default());
    // The office registers: its address is trusted (it holds working accounts).
    let before = office_registers(&lab, lab::accounts(100..=149), 25.0, 50);
    assert_eq!(before.successful, 50, "{before:?}");
    let unproven_before = lab.stat("failures_unproven");

    // The spoofer (on the attacker's host, raw socket) sends 200 wrong-password REGISTERs for
    // the office's extensions with the office's address: it never sees an answer, so its
    // nonces are not ones the PBX issued to the office.
    let forged: Vec<Vec<u8>> = (0..200)
        .map(|i| {
            let ext = 100 + (i % 50);
            let m = tests::sip::register(
                &ext.to_string(),
                lab::OFFICE,
                tests::sip::Creds::Header("Authorization:"),
                &[],
            )
            .replace("pbx.example.com", "pbx.lab")
            .replace("1234567890abcdef", &format!("forged-{i}"));
            tests::packet::Packet::udp(lab::OFFICE, 40000 + i as u16, lab::PBX, 5060, m).build()
                [14..]
                .to_vec()
        })
        .collect();
    let mut sipp = lab
        .office_phones(&Phones {
            accounts: lab::accounts(100..=149),
            rate: 25.0,
            total: 250,
            answer_timeout: Duration::from_secs(3),
        })
        .unwrap();
    for chunk in forged.chunks(20) {
        lab.forge(&lab.attacker, chunk.to_vec()).unwrap();
        sleep(0.5);
    }
    let during = sipp.finish(Duration::from_secs(60)).unwrap();
    sleep(1.0);

    let office = ip(lab::OFFICE);
    let answered = lab
        .seen_from(office)
        .iter()
        .filter(|s| s.creds && s.code != 200)
        .count();
    assert!(
        answered >= 190,
        "the PBX answered the forged requests: {answered}"
    );
    let unproven = lab.stat("failures_unproven") - unproven_before;
    assert_eq!(
        unproven as usize, answered,
        "every forged failure was left uncounted"
    );
    assert_eq!(
        during.successful, 250,
        "0 office phones lost a registration: {during:?}"
    );
    assert!(
        lab.ban_of(lab::OFFICE).is_none(),
        "the office is not banned"
    );
    let ext = lab.filter.cli_ok(&["ext", "list", "--json"]);
    assert_eq!(ext.trim(), "[]", "no extension blocked: {ext}");
    report(format!(
        "scenario 14: 200 forged wrong-password REGISTERs with the office's address, {answered} \
         answered by the PBX, {unproven} not counted (nonce not issued to the office); office \
         phones: {}/{} registrations OK during the forgery; 0 bans, 0 extensions blocked",
        during.successful, during.created
    ));
}

#[test]
fn s15_one_office_phone_with_a_stale_password_blocks_only_its_extension() {
    let lab = start(LabConfig::default());
    // 50 phones; 102 has a stale password. 25 registrations a second: 102 tries every 2 s.
    let mut accounts = lab::accounts(100..=149);
    accounts[2].1 = "stale".into();
    let stats = office_registers(&lab, accounts, 25.0, 500);

    let office = ip(lab::OFFICE);
    let seen = lab.seen_from(office);
    let stale = seen.iter().filter(|s| s.user == "102" && s.creds).count();
    let max = lab.config.max_failures as usize;
    assert_eq!(
        stale, max,
        "102's wrong password reached the PBX max_failures times: {stale}"
    );
    assert_eq!(stats.created, 500);
    assert_eq!(
        stats.failed, 10,
        "only 102's 10 registrations failed: {stats:?}"
    );
    assert_eq!(
        stats.successful, 490,
        "the 49 other phones: every registration OK"
    );
    assert!(
        lab.ban_of(lab::OFFICE).is_none(),
        "the office is not banned"
    );
    let ext: serde_json::Value =
        serde_json::from_str(&lab.filter.cli_ok(&["ext", "list", "--json"])).unwrap();
    assert_eq!(ext.as_array().unwrap().len(), 1, "{ext}");
    assert_eq!(ext[0]["extension"], "102");
    assert_eq!(ext[0]["kind"], "blocked");
    assert_eq!(ext[0]["source"], lab::OFFICE);
    assert!(
        lab.filter
            .log()
            .contains("extension 102 blocked from 203.0.113.20"),
        "{}",
        lab.filter.log()
    );
    report(format!(
        "scenario 15: office, 50 phones, 102 with a stale password: 102 blocked from the office \
         after {stale} failures; {}/{} registrations OK (the other 49 phones: all), office not banned",
        stats.successful, stats.created
    ));
}

#[test]
fn s16_fifty_botnet_addresses_two_guesses_each_lock_the_extension_and_its_phone_works() {
    let lab = start(LabConfig::default());
    // The real phone of 101 registers from the office first.
    let ok = office_registers(&lab, lab::accounts(101..=101), 5.0, 2);
    assert_eq!(ok.successful, 2, "{ok:?}");
    // 50 addresses at one hosting provider, two guesses each for 101.
    let bots: Vec<IpAddr> = (0..50)
        .map(|i| format!("198.51.100.{}", 10 + i).parse().unwrap())
        .collect();
    lab.add_addresses(&lab.attacker, &bots).unwrap();
    let mut answered = 0;
    let mut dropped = 0;
    for _round in 0..2 {
        for b in &bots {
            match lab.wrong_password(&lab.attacker, *b, 101) {
                Some(_) => answered += 1,
                None => dropped += 1,
            }
        }
    }
    let from_bots: usize = bots.iter().map(|b| lab.guesses_from(*b).len()).sum();
    let per_ext = 10;
    assert_eq!(
        from_bots, per_ext,
        "the PBX saw exactly max_failures_per_extension guesses"
    );
    assert_eq!(answered, per_ext);
    assert_eq!(dropped, 100 - per_ext);
    let ext: serde_json::Value =
        serde_json::from_str(&lab.filter.cli_ok(&["ext", "list", "--json"])).unwrap();
    assert_eq!(ext[0]["extension"], "101", "{ext}");
    assert_eq!(ext[0]["kind"], "locked");
    let locked_bans = lab
        .bans()
        .iter()
        .filter(|b| b["reason"] == "locked-extension")
        .count();
    // Round one locked it at the tenth bot's guess; every bot that tried it after (the forty
    // others in round one, the first ten in round two) is banned.
    assert_eq!(
        locked_bans, 50,
        "every bot that tried it after the lock is banned"
    );
    assert!(
        lab.filter.log().contains("extension 101 locked"),
        "{}",
        lab.filter.log()
    );
    // The real phone keeps registering.
    let after = office_registers(&lab, lab::accounts(101..=101), 5.0, 5);
    assert_eq!(
        after.successful, 5,
        "the phone of 101 keeps working: {after:?}"
    );
    report(format!(
        "scenario 16: 50 addresses x 2 guesses for 101: {from_bots} reached the PBX, 101 locked \
         at the {per_ext}th, {dropped} dropped, {locked_bans} bots banned; the phone of 101: \
         {}/{} registrations OK",
        after.successful, after.created
    ));
}
