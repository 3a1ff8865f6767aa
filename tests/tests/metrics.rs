//! `[metrics] listen`: the daemon's Prometheus endpoint, scraped with curl in the PBX's
//! namespace and checked with the real `promtool`. The counters are the kernel's: a kernel ban
//! and the packets it drops show up, and a daemon restart resets nothing. Needs root.
use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::Duration,
};

use tests::{
    filter::Filter,
    netns::{PBX_V4, wait_for},
    responder::Creds,
};

const CONFIG: &str = "[auth]\nmax_failures = 3\nfind_time = \"60s\"\nban_time = \"1h\"\n\n\
                      [metrics]\nlisten = \"203.0.113.1:9754\"\n";

fn scrape(f: &Filter) -> String {
    let o = f
        .link
        .pbx
        .command("curl")
        .args(["-sS", "--fail", "--max-time", "5"])
        .arg(format!("http://{PBX_V4}:9754/metrics"))
        .output()
        .expect("running curl (`cargo xtask setup` installs it)");
    assert!(
        o.status.success(),
        "scraping /metrics failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        f.log()
    );
    String::from_utf8(o.stdout).unwrap()
}

/// `promtool check metrics` on the exposition: the format and Prometheus' naming rules.
fn promtool_check(text: &str) {
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool (`cargo xtask setup` installs Debian's prometheus)");
    p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = p.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The value of the series `name` carrying every label of `labels`, in whatever order.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn metrics_show_the_kernels_counters_and_survive_a_restart() {
    let mut f = Filter::start(&[], CONFIG);
    let _pbx = f.responder();
    let attacker = f.client("203.0.113.10:0");
    for _ in 0..3 {
        assert!(attacker.register(PBX_V4, Creds::Bad).is_some());
    }
    assert!(
        wait_for(Duration::from_secs(5), || f.bans().len() == 1),
        "the kernel banned the guesser"
    );
    for _ in 0..2 {
        assert_eq!(attacker.register(PBX_V4, Creds::Bad), None, "dropped");
    }

    let text = scrape(&f);
    println!("{text}");
    promtool_check(&text);
    let dropped = value(
        &text,
        "sipfilter_packets_total",
        &[("action", "drop"), ("reason", "dropped_banned")],
    )
    .expect("dropped_banned series");
    assert!(dropped >= 2.0, "dropped_banned {dropped}");
    assert_eq!(
        value(
            &text,
            "sipfilter_packets_total",
            &[("action", "count"), ("reason", "auth_failures")]
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &text,
            "sipfilter_bans_total",
            &[("reason", "auth-failures")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "sipfilter_active_bans",
            &[("reason", "auth-failures"), ("family", "ipv4")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "sipfilter_map_entries", &[("map", "BANS")]),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "sipfilter_map_capacity", &[("map", "BANS")]),
        Some(262_144.0)
    );
    assert!(text.contains("sipfilter_build_info{version="), "{text}");
    // Every counter of the reason table is exported.
    for r in sip_filter_common::Reason::ALL {
        assert!(
            value(
                &text,
                "sipfilter_packets_total",
                &[("action", r.action()), ("reason", r.name())]
            )
            .is_some(),
            "{} missing",
            r.name()
        );
    }

    // An operator's ban is counted too.
    f.cli_ok(&["ban", "add", "198.51.100.7", "--for", "1h"]);
    assert_eq!(
        value(&scrape(&f), "sipfilter_bans_total", &[("reason", "manual")]),
        Some(1.0)
    );

    // A restart: the counters live in the pinned maps, nothing starts again from zero.
    let mut d = f.daemon.take().unwrap();
    d.signal(libc::SIGTERM);
    d.wait_exit(Duration::from_secs(5)).unwrap();
    f.run_daemon();
    let again = scrape(&f);
    let after = value(
        &again,
        "sipfilter_packets_total",
        &[("action", "drop"), ("reason", "dropped_banned")],
    )
    .unwrap();
    assert!(
        after >= dropped,
        "dropped_banned {after} after the restart, {dropped} before"
    );
    assert_eq!(
        value(
            &again,
            "sipfilter_bans_total",
            &[("reason", "auth-failures")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&again, "sipfilter_bans_total", &[("reason", "manual")]),
        Some(1.0)
    );
}

#[test]
fn a_taken_metrics_port_fails_the_start_and_leaves_nothing_attached() {
    // Something else listens on the metrics port in the PBX's namespace.
    let mut f = Filter::start(&[], "");
    let holder = f
        .link
        .pbx
        .command("python3")
        .args([
            "-c",
            "import socket,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
             s.bind(('203.0.113.1',9754))\ns.listen()\nprint('up',flush=True)\ntime.sleep(30)",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut holder = KillOnDrop(holder);
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.0.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "up");
    // Stop the running daemon, then start one whose config asks for the taken port.
    let mut d = f.daemon.take().unwrap();
    d.signal(libc::SIGTERM);
    d.wait_exit(Duration::from_secs(5)).unwrap();
    std::fs::write(&f.config, CONFIG).unwrap();
    let mut cmd = f.link.pbx.command(tests::filter::bin().to_str().unwrap());
    cmd.args(["run", "--iface", &f.link.pbx_if, "--config"])
        .arg(&f.config);
    let o = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "must refuse to start");
    assert!(
        err.contains("[metrics] listen: cannot listen on 203.0.113.1:9754"),
        "{err}"
    );
    // The filter attached by the first daemon still enforces.
    let status = f.cli_ok(&["status", "--json"]);
    let s: serde_json::Value = serde_json::from_str(&status).unwrap();
    // sip_xdp, sip_tc and the stages they tail-call.
    assert_eq!(
        s["program_ids"].as_array().unwrap().len(),
        2 + sip_filter_common::STAGES.len(),
        "{status}"
    );
}

/// Ends a helper process by its pid when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
