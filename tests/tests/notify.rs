//! `[notify] webhook`: a receiver on a documentation address in the PBX's namespace gets each
//! ban and unban as JSON within a second; a receiver that never answers delays no ban. Needs
//! root.
use std::{
    io::BufRead as _,
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use tests::{
    filter::Filter,
    netns::{Netns, PBX_V4, wait_for},
    responder::Creds,
};

/// A webhook receiver: appends each POSTed body to `out`, one per line; with `hang` it never
/// answers (a dead endpoint that accepts connections).
const RECEIVER: &str = r#"
import http.server, json, sys, time
out, hang = sys.argv[1], sys.argv[2] == "hang"
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))
    def do_POST(self):
        doc = json.loads(self.body())
        with open(out, "a") as f:
            f.write(json.dumps(doc) + "\n")
        if hang:
            time.sleep(60)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
s = http.server.ThreadingHTTPServer(("203.0.113.1", 9755), H)
print("up", flush=True)
s.serve_forever()
"#;

/// Ends the receiver by its pid when the test ends, however it ends.
struct Receiver(Child);

impl Receiver {
    fn start(ns: &Netns, out: &Path, hang: bool) -> Self {
        let mut child = ns
            .command("python3")
            .args(["-c", RECEIVER])
            .arg(out)
            .arg(if hang { "hang" } else { "ok" })
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "up", "the receiver started");
        Self(child)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config(ban_time: &str) -> String {
    format!(
        "[auth]\nmax_failures = 3\nfind_time = \"60s\"\nban_time = \"{ban_time}\"\n\n\
         [notify]\nwebhook = \"http://{PBX_V4}:9755/hook\"\n"
    )
}

fn received(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn each_ban_and_unban_reaches_the_webhook_within_a_second() {
    let f = Filter::start(&[], &config("3s"));
    let out = f.tmp.path().join("hook.jsonl");
    let _receiver = Receiver::start(&f.link.pbx, &out, false);
    let _pbx = f.responder();
    let attacker = f.client("203.0.113.10:0");
    for _ in 0..3 {
        assert!(attacker.register(PBX_V4, Creds::Bad).is_some());
    }
    let banned_at = Instant::now();
    assert!(
        wait_for(Duration::from_secs(2), || !received(&out).is_empty()),
        "no notification: {}",
        f.log()
    );
    let took = banned_at.elapsed();
    assert!(
        took <= Duration::from_secs(1),
        "ban notified after {took:?}"
    );
    let ban = &received(&out)[0];
    assert_eq!(ban["event"], "ban", "{ban}");
    assert_eq!(ban["addr"], "203.0.113.10");
    assert_eq!(ban["reason"], "auth-failures");
    assert_eq!(ban["failures"], 3);
    assert_eq!(ban["iface"], f.link.pbx_if.as_str());
    assert!(humantime::parse_rfc3339(ban["until"].as_str().unwrap()).is_ok());
    assert!(humantime::parse_rfc3339(ban["time"].as_str().unwrap()).is_ok());

    assert!(
        wait_for(Duration::from_secs(10), || received(&out).len() >= 2),
        "no unban notification: {}",
        f.log()
    );
    let unban = &received(&out)[1];
    assert_eq!(unban["event"], "unban", "{unban}");
    assert_eq!(unban["addr"], "203.0.113.10");
    assert_eq!(unban["by"], "expired", "{unban}");
    assert_eq!(ban["origin"], "sip-filter", "{ban}");
    assert_eq!(ban["offences"], 1, "{ban}");
    println!("ban notified after {took:?}");

    // The operator's bans and unbans are notified too (the daemon sees the maps change).
    f.cli_ok(&["ban", "add", "198.51.100.0/24", "--reason", "abuse desk"]);
    let t = Instant::now();
    assert!(
        wait_for(Duration::from_secs(3), || received(&out).len() >= 3),
        "no notification of the CLI ban: {}",
        f.log()
    );
    let took = t.elapsed();
    assert!(
        took <= Duration::from_millis(1500),
        "CLI ban notified after {took:?}"
    );
    let cli = &received(&out)[2];
    assert_eq!(cli["event"], "ban", "{cli}");
    assert_eq!(cli["addr"], "198.51.100.0/24", "{cli}");
    assert_eq!(cli["reason"], "manual", "{cli}");
    assert_eq!(cli["origin"], "operator", "{cli}");
    assert!(cli.get("until").is_none(), "permanent: {cli}");
    f.cli_ok(&["ban", "del", "198.51.100.0/24"]);
    assert!(wait_for(Duration::from_secs(3), || received(&out).len() >= 4));
    let lifted = &received(&out)[3];
    assert_eq!(lifted["event"], "unban", "{lifted}");
    assert_eq!(lifted["by"], "operator", "{lifted}");
}

#[test]
fn a_webhook_that_never_answers_delays_no_ban() {
    let f = Filter::start(&["203.0.113.11/24"], &config("1h"));
    let out = f.tmp.path().join("hook.jsonl");
    let _receiver = Receiver::start(&f.link.pbx, &out, true);
    let _pbx = f.responder();
    for (i, addr) in ["203.0.113.10", "203.0.113.11"].iter().enumerate() {
        let attacker = f.client(&format!("{addr}:0"));
        for _ in 0..3 {
            assert!(attacker.register(PBX_V4, Creds::Bad).is_some());
        }
        let t = Instant::now();
        assert!(
            wait_for(Duration::from_secs(1), || f
                .log()
                .contains(&format!("banned {addr}"))),
            "ban #{} not logged within 1 s while the webhook hangs:\n{}",
            i + 1,
            f.log()
        );
        assert_eq!(
            attacker.register(PBX_V4, Creds::Bad),
            None,
            "{addr} dropped at once ({:?})",
            t.elapsed()
        );
    }
    assert_eq!(f.bans().len(), 2);
    // The receiver got the first notification and is sitting on it.
    assert!(wait_for(Duration::from_secs(2), || !received(&out).is_empty()));
}
