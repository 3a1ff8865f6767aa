//! Control plane end to end: the real `sip-filter` daemon and CLI on a veth between two
//! network namespaces, with a small SIP registrar behind the filter. Needs root; fails loudly
//! without it.
use std::{net::IpAddr, process::Command, time::Duration};

use tests::{
    filter::{Filter, bin},
    mmdb,
    netns::{PBX_V4, PBX_V6, wait_for},
    responder::Creds,
};

const BASE: &str = "[auth]\nmax_failures = 3\nfind_time = \"60s\"\nban_time = \"1h\"\n";

#[test]
fn cli_ban_and_unban_change_what_reaches_the_pbx() {
    let f = Filter::start(&[], BASE);
    let pbx = f.responder();
    let c = f.client("203.0.113.10:0");
    let me: IpAddr = "203.0.113.10".parse().unwrap();
    assert_eq!(
        c.register(PBX_V4, Creds::Good),
        Some(200),
        "reaches the PBX before the ban"
    );

    f.cli_ok(&[
        "ban",
        "add",
        "203.0.113.10",
        "--for",
        "10m",
        "--reason",
        "test ban",
    ]);
    let before = pbx.count_from(me);
    assert_eq!(
        c.register(PBX_V4, Creds::Good),
        None,
        "dropped while banned"
    );
    assert_eq!(
        pbx.count_from(me),
        before,
        "the PBX saw nothing while banned"
    );

    let bans = f.bans();
    assert_eq!(bans.len(), 1);
    let b = &bans[0];
    assert_eq!(b["addr"], "203.0.113.10");
    assert_eq!(b["reason"], "manual");
    assert_eq!(b["note"], "test ban");
    let secs = b["expires_in_secs"].as_u64().unwrap();
    assert!((590..=600).contains(&secs), "expires_in_secs {secs}");
    assert!(
        humantime::parse_rfc3339(b["created"].as_str().unwrap()).is_ok(),
        "created is RFC 3339"
    );

    f.cli_ok(&["ban", "del", "203.0.113.10"]);
    assert_eq!(
        c.register(PBX_V4, Creds::Good),
        Some(200),
        "reaches the PBX after unban"
    );
    assert!(f.bans().is_empty());

    // A permanent CIDR ban, listed with a null expiry; flush lifts it.
    f.cli_ok(&["ban", "add", "203.0.113.0/28"]);
    assert_eq!(c.register(PBX_V4, Creds::Good), None, "CIDR ban drops");
    let bans = f.bans();
    assert_eq!(bans[0]["addr"], "203.0.113.0/28");
    assert!(bans[0]["expires_in_secs"].is_null());
    f.cli_ok(&["ban", "flush"]);
    assert_eq!(c.register(PBX_V4, Creds::Good), Some(200));
}

#[test]
fn kernel_bans_at_threshold_and_survive_kill_9_and_restart() {
    let mut f = Filter::start(&["203.0.113.11/24"], BASE);
    let pbx = f.responder();
    let attacker = f.client("203.0.113.10:0");
    let me: IpAddr = "203.0.113.10".parse().unwrap();
    let mut answered = 0;
    for _ in 0..6 {
        if attacker.register(PBX_V4, Creds::Bad).is_some() {
            answered += 1;
        }
    }
    assert_eq!(answered, 3, "exactly max_failures guesses are answered");
    assert_eq!(pbx.count_from(me), 3, "the PBX saw exactly 3 guesses");
    assert!(
        wait_for(Duration::from_secs(5), || f
            .log()
            .contains("banned 203.0.113.10")),
        "the daemon logs the ban:\n{}",
        f.log()
    );
    let before: Vec<_> = f.bans();
    assert_eq!(before.len(), 1);
    assert_eq!(before[0]["reason"], "auth-failures");
    assert_eq!(before[0]["failures"], 3);

    // kill -9 mid-attack: the ban keeps dropping with no daemon.
    let mut d = f.daemon.take().unwrap();
    d.signal(libc::SIGKILL);
    d.wait_exit(Duration::from_secs(5)).unwrap();
    for _ in 0..3 {
        assert_eq!(
            attacker.register(PBX_V4, Creds::Bad),
            None,
            "still dropped without a daemon"
        );
    }
    assert_eq!(pbx.count_from(me), 3);
    let status = f.cli_ok(&["status"]);
    assert!(status.contains("not running"), "{status}");

    // Restart: the pins are reused, no ban is lost, the programs are swapped in place.
    f.run_daemon();
    assert!(f.log().contains("reusing pinned maps"), "{}", f.log());
    let after = f.bans();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["addr"], before[0]["addr"]);
    assert_eq!(after[0]["created"], before[0]["created"]);
    assert_eq!(attacker.register(PBX_V4, Creds::Bad), None);
    let status = f.cli_ok(&["status", "--json"]);
    let s: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(s["daemon_pid"].as_i64().is_some(), "{status}");
    // The two attached programs and the two stages sip_xdp tail-calls; the old ones are gone.
    let mut names: Vec<&str> = s["program_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "sip_calls",
            "sip_inspect",
            "sip_limits",
            "sip_tc",
            "sip_xdp"
        ],
        "{status}"
    );

    // A phone at another address is unaffected.
    let phone = f.client("203.0.113.11:0");
    assert_eq!(
        phone.register(PBX_V4, Creds::Good),
        Some(200),
        "another address still registers"
    );
}

#[test]
fn reload_rejects_a_broken_config_and_applies_a_good_one() {
    let tmp = tempfile::tempdir().unwrap();
    let zone = tmp.path().join("blocked.zone");
    std::fs::write(&zone, "# test zone\n198.51.100.0/24\n").unwrap();
    let blocking = format!("{BASE}[geo]\ncidr_files = [\"{}\"]\n", zone.display());
    let f = Filter::start(&["198.51.100.10/24"], &blocking);
    let _pbx = f.responder();
    let c = f.client("198.51.100.10:0");
    assert_eq!(
        c.register(PBX_V4, Creds::Good),
        None,
        "zone file blocks from the first packet"
    );

    std::fs::write(&f.config, "[auth\nmax_failures = ").unwrap();
    f.hup();
    assert!(
        wait_for(Duration::from_secs(5), || f
            .log()
            .contains("configuration rejected")),
        "{}",
        f.log()
    );
    assert!(
        f.log().contains("sip-filter.toml:1:"),
        "the error names file and line: {}",
        f.log()
    );
    assert_eq!(
        c.register(PBX_V4, Creds::Good),
        None,
        "old rules still block"
    );

    std::fs::write(&f.config, BASE).unwrap();
    f.hup();
    assert!(wait_for(Duration::from_secs(5), || f
        .log()
        .contains("configuration reloaded")));
    assert!(
        wait_for(Duration::from_secs(3), || c.register(PBX_V4, Creds::Good)
            == Some(200)),
        "the new rules unblock"
    );
}

#[test]
fn geo_blocking_from_a_maxmind_db_and_allowlist_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("country.mmdb");
    mmdb::write_country_db(
        &db,
        &[
            ("198.51.100.0/24", "AL"),
            ("2001:db8:2::/48", "PS"),
            ("203.0.113.0/24", "DE"),
            ("2001:db8:1::/48", "DE"),
        ],
    )
    .unwrap();
    let cfg = format!(
        "{BASE}[allow]\ncidrs = [\"198.51.100.20/32\"]\n[geo]\ndatabase = \"{}\"\nblock_countries = [\"AL\", \"PS\"]\n",
        db.display()
    );
    let f = Filter::start(
        &["198.51.100.10/24", "198.51.100.20/24", "2001:db8:2::10/64"],
        &cfg,
    );
    f.link
        .pbx
        .exec(
            "ip",
            &[
                "addr",
                "add",
                "2001:db8:2::1/64",
                "dev",
                &f.link.pbx_if,
                "nodad",
            ],
        )
        .unwrap();
    let pbx = f.responder();

    let v4 = f.client("198.51.100.10:0");
    assert_eq!(
        v4.register(PBX_V4, Creds::Good),
        None,
        "AL is dropped from its first packet"
    );
    let v6 = f.client("[2001:db8:2::10]:0");
    assert_eq!(
        v6.register("2001:db8:2::1", Creds::Good),
        None,
        "PS over IPv6 is dropped"
    );
    assert_eq!(pbx.count_from("198.51.100.10".parse().unwrap()), 0);
    assert_eq!(pbx.count_from("2001:db8:2::10".parse().unwrap()), 0);

    let trunk = f.client("198.51.100.20:0");
    assert_eq!(
        trunk.register(PBX_V4, Creds::Good),
        Some(200),
        "allowlist beats geo"
    );
    let de = f.client("203.0.113.10:0");
    assert_eq!(de.register(PBX_V4, Creds::Good), Some(200), "DE passes");
    let de6 = f.client("[2001:db8:1::10]:0");
    assert_eq!(
        de6.register(PBX_V6, Creds::Good),
        Some(200),
        "DE over IPv6 passes"
    );

    let out = f.cli_ok(&[
        "geo",
        "lookup",
        "198.51.100.10",
        "--config",
        f.config.to_str().unwrap(),
    ]);
    assert!(out.contains("AL") && out.contains("blocked"), "{out}");
    assert!(
        out.contains("drops it"),
        "the running filter's verdict: {out}"
    );
    let out = f.cli_ok(&[
        "geo",
        "lookup",
        "198.51.100.20",
        "--config",
        f.config.to_str().unwrap(),
    ]);
    assert!(out.contains("allowlist"), "{out}");
}

#[test]
fn bans_expire_on_time_with_the_daemon_running_and_stopped() {
    let mut f = Filter::start(&[], BASE);
    let _pbx = f.responder();
    let c = f.client("203.0.113.10:0");
    f.cli_ok(&["ban", "add", "203.0.113.10", "--for", "2s"]);
    assert_eq!(c.register(PBX_V4, Creds::Good), None);
    assert!(
        wait_for(Duration::from_secs(6), || f
            .log()
            .contains("unbanned: ban expired")),
        "the running daemon expires and logs it:\n{}",
        f.log()
    );
    assert_eq!(c.register(PBX_V4, Creds::Good), Some(200));

    // Daemon stopped: the kernel ignores the expired ban by itself.
    let mut d = f.daemon.take().unwrap();
    d.signal(libc::SIGTERM);
    d.wait_exit(Duration::from_secs(5)).unwrap();
    assert!(f.log().contains("stays attached"), "{}", f.log());
    f.cli_ok(&["ban", "add", "203.0.113.10", "--for", "2s"]);
    assert_eq!(
        c.register(PBX_V4, Creds::Good),
        None,
        "enforced without a daemon"
    );
    std::thread::sleep(Duration::from_millis(2300));
    assert_eq!(
        c.register(PBX_V4, Creds::Good),
        Some(200),
        "expired without a daemon"
    );
    assert!(f.bans().is_empty(), "ban list leaves out expired bans");
}

#[test]
fn bad_input_gets_a_one_line_error_and_changes_nothing() {
    let f = Filter::start(&[], BASE);
    f.cli_ok(&["ban", "add", "203.0.113.99"]);
    for args in [
        &["ban", "add", "203.0.113.300"][..],
        &["ban", "add", "not-an-address"],
        &["ban", "del", "192.0.2.77"],
        &["allow", "add", "2001:db8::/129"],
    ] {
        let o = f.cli(args);
        assert!(!o.status.success(), "{args:?} must fail");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            err.trim().lines().count(),
            1,
            "one-line error for {args:?}: {err}"
        );
        assert!(err.starts_with("sip-filter: error:"), "{err}");
    }
    assert_eq!(f.bans().len(), 1, "nothing changed");

    // Unknown interface: lists the ones that exist.
    let o = f
        .link
        .pbx
        .command(bin().to_str().unwrap())
        .args(["run", "--iface", "nosuchif0"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("unknown interface nosuchif0") && err.contains(&f.link.pbx_if),
        "{err}"
    );

    // A second daemon on the same interface is refused; the first keeps running.
    let o = f
        .link
        .pbx
        .command(bin().to_str().unwrap())
        .args(["run", "--iface", &f.link.pbx_if])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("already runs"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(f.cli_ok(&["status"]).contains("running (pid"));

    // A broken config is refused at start with file:line:col.
    let bad = f.tmp.path().join("bad.toml");
    std::fs::write(&bad, "[sip]\nports = [70000]\n").unwrap();
    let o = Command::new(bin())
        .args(["check-config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.toml:2:"), "{err}");
}
