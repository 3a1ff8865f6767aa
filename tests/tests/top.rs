//! `sip-filter top` in a real terminal (tmux): it shows a ban as it happens, the attacker among
//! the top sources, the drop rate, and quits on `q`. Needs root.
use std::{process::Command, time::Duration};

use tests::{
    filter::{Filter, bin},
    netns::{PBX_V4, wait_for},
    responder::Creds,
};

const BASE: &str = "[auth]\nmax_failures = 3\nfind_time = \"60s\"\nban_time = \"1h\"\n";

/// A tmux session, killed however the test ends.
struct Tmux(String);

impl Tmux {
    fn screen(&self) -> String {
        let o = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
    fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["has-session", "-t", &self.0])
            .output()
            .unwrap()
            .status
            .success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .output();
    }
}

#[test]
fn top_shows_a_ban_as_it_happens_and_quits_on_q() {
    let f = Filter::start(&["203.0.113.11/24"], BASE);
    let _pbx = f.responder();
    let session = Tmux(format!("sip-filter-top-{}", std::process::id()));
    let cmd = format!("{} top --iface {}", bin().display(), f.link.pbx_if);
    let started = Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-s",
            &session.0,
            "-x",
            "160",
            "-y",
            "45",
            &cmd,
        ])
        .status()
        .unwrap();
    assert!(started.success(), "tmux new-session");
    assert!(
        wait_for(Duration::from_secs(10), || session
            .screen()
            .contains("packets and events")),
        "top did not draw:\n{}",
        session.screen()
    );
    assert!(
        session.screen().contains("bans in force: 0"),
        "{}",
        session.screen()
    );

    // Two failures: a top source, not banned yet.
    let attacker = f.client("203.0.113.10:0");
    for _ in 0..2 {
        attacker.register(PBX_V4, Creds::Bad);
    }
    assert!(
        wait_for(Duration::from_secs(5), || session
            .screen()
            .lines()
            .any(|l| l.contains("203.0.113.10") && l.contains(" 2 "))),
        "the attacker among the top sources:\n{}",
        session.screen()
    );
    // The third bans it; the banned flood shows as drops.
    attacker.register(PBX_V4, Creds::Bad);
    for _ in 0..20 {
        attacker.register(PBX_V4, Creds::Bad);
    }
    assert!(
        wait_for(Duration::from_secs(5), || {
            let s = session.screen();
            s.contains("bans in force: 1 (1 auth-failures)")
                && s.lines()
                    .any(|l| l.contains("203.0.113.10") && l.contains("in force"))
                && s.contains("dropped_banned")
        }),
        "the ban on screen:\n{}",
        session.screen()
    );
    println!("{}", session.screen());

    Command::new("tmux")
        .args(["send-keys", "-t", &session.0, "q"])
        .status()
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || !session.alive()),
        "q quits"
    );
}
