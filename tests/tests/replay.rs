//! `sip_filter::replay`: captures written here (pcap and pcapng, Ethernet, Linux cooked and raw
//! IP) are replayed through a private dataplane, and the per-packet verdicts and bans checked.
//! Needs root and BPF; fails (never skips) without them.
use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::{Path, PathBuf},
};

use sip_filter::{
    config::Settings,
    replay::{self, Direction, ReplayOptions, ReplaySummary, Verdict},
};
use tempfile::TempDir;
use tests::{
    packet::Packet,
    pcap::{self, Format, Link},
    sip::{self, Creds},
};

const PBX: &str = "203.0.113.5";
const PBX6: &str = "2001:db8:5::5";
const CLIENT: &str = "192.0.2.10";
const AUTH: Creds = Creds::Header("Authorization:");

fn register(from: &str, creds: Creds) -> Vec<u8> {
    let to = if from.contains(':') { PBX6 } else { PBX };
    Packet::udp(from, 5062, to, 5060, sip::register("101", from, creds, &[])).build()
}

fn answer(to: &str, code: u16, reason: &str) -> Vec<u8> {
    let from = if to.contains(':') { PBX6 } else { PBX };
    Packet::udp(from, 5060, to, 5062, sip::response(code, reason)).build()
}

/// What svcrack does: REGISTER with a guessed password, 401, again, `rounds` times.
fn svcrack(client: &str, rounds: usize) -> Vec<Vec<u8>> {
    (0..rounds)
        .flat_map(|_| [register(client, AUTH), answer(client, 401, "Unauthorized")])
        .collect()
}

/// A phone that knows its password: challenge, answer, 200.
fn legitimate(client: &str, rounds: usize) -> Vec<Vec<u8>> {
    (0..rounds)
        .flat_map(|_| {
            [
                register(client, Creds::None),
                answer(client, 401, "Unauthorized"),
                register(client, AUTH),
                answer(client, 200, "OK"),
            ]
        })
        .collect()
}

fn settings(max_failures: u32) -> Settings {
    let mut s = Settings::default();
    s.auth.max = max_failures;
    s
}

fn options(capture: &Path, max_failures: u32, json: bool) -> ReplayOptions {
    ReplayOptions {
        capture: capture.to_path_buf(),
        pbx: vec![PBX.parse().unwrap(), PBX6.parse().unwrap()],
        settings: settings(max_failures),
        json,
    }
}

/// Writes `frames` as a capture in `dir` and replays it; returns the summary and the output.
fn replay_frames(
    dir: &TempDir,
    name: &str,
    format: Format,
    link: Link,
    frames: &[Vec<u8>],
    max_failures: u32,
    json: bool,
) -> (ReplaySummary, String) {
    let path = dir.path().join(name);
    pcap::write(&path, format, link, frames).expect("writing the capture");
    replay_file(&path, max_failures, json).expect("replay")
}

fn replay_file(
    path: &Path,
    max_failures: u32,
    json: bool,
) -> anyhow::Result<(ReplaySummary, String)> {
    let mut out = Vec::new();
    let summary = replay::run(&options(path, max_failures, json), &mut out)?;
    Ok((summary, String::from_utf8(out).expect("UTF-8 output")))
}

fn tmp() -> TempDir {
    tempfile::tempdir().expect("temp dir")
}

#[test]
fn svcrack_sequence_is_banned_at_the_fifth_failure() {
    let dir = tmp();
    let frames = svcrack(CLIENT, 6);
    let (s, out) = replay_frames(
        &dir,
        "svcrack.pcap",
        Format::Pcap,
        Link::Ethernet,
        &frames,
        5,
        false,
    );
    println!("{out}");
    assert_eq!(s.packets.len(), 12);
    for (i, p) in s.packets.iter().enumerate() {
        assert_eq!(p.index, i + 1, "1-based packet numbers");
        let want = if i % 2 == 0 {
            Direction::Ingress
        } else {
            Direction::Egress
        };
        assert_eq!(p.direction, want, "packet #{}", p.index);
    }
    // Guesses 1..5 reach the PBX; answers 1..4 count up.
    for round in 0..5 {
        let req = &s.packets[2 * round];
        assert_eq!(req.verdict, Verdict::Pass, "{req:?}");
        assert_eq!(req.reason, "REGISTER with credentials");
        assert_eq!(req.src, Some(CLIENT.parse().unwrap()));
        assert_eq!(req.sport, Some(5062));
    }
    for round in 0..4 {
        let ans = &s.packets[2 * round + 1];
        assert_eq!(ans.reason, format!("401: auth failure {}/5", round + 1));
    }
    let fifth = &s.packets[9];
    assert!(
        fifth.reason.starts_with("401: auth failure 5/5 -> banned"),
        "the 5th answer bans: {fifth:?}"
    );
    let sixth = &s.packets[10];
    assert_eq!(sixth.verdict, Verdict::Drop, "the 6th REGISTER is dropped");
    assert!(sixth.reason.contains("banned"), "{sixth:?}");
    assert_eq!(s.bans.len(), 1, "{:?}", s.bans);
    assert_eq!(s.bans[0].addr_text(), CLIENT);
    assert_eq!(s.bans[0].reason, "auth-failures");
    assert_eq!(s.bans[0].failures, 5);
    assert!(out.contains("#11 in  192.0.2.10:5062 -> 203.0.113.5:5060 drop  banned"));
    assert!(out.contains("Bans the filter would have issued:"));
    assert!(out.contains("192.0.2.10") && out.contains("auth-failures"));
    assert!(
        out.contains(replay::TIMING_NOTE),
        "states the timing limitation"
    );
}

#[test]
fn legitimate_challenge_and_answer_never_bans() {
    let dir = tmp();
    let frames = legitimate(CLIENT, 20);
    let (s, out) = replay_frames(
        &dir,
        "phone.pcap",
        Format::Pcap,
        Link::Ethernet,
        &frames,
        3,
        false,
    );
    assert_eq!(s.packets.len(), 80);
    assert!(
        s.packets.iter().all(|p| p.verdict == Verdict::Pass),
        "{out}"
    );
    assert!(s.bans.is_empty(), "{:?}", s.bans);
    assert!(
        !s.packets.iter().any(|p| p.reason.contains("auth failure")),
        "{out}"
    );
    assert_eq!(s.packets[0].reason, "REGISTER without credentials");
    assert_eq!(s.packets[2].reason, "REGISTER with credentials");
    assert!(
        s.packets[1].reason.starts_with("401: challenge"),
        "{:?}",
        s.packets[1]
    );
    assert!(out.contains("No bans."), "{out}");
}

/// `tcpdump -i any` (SLL, SLL2) and raw IP captures give the Ethernet capture's verdicts.
#[test]
fn cooked_and_raw_ip_captures_replay_like_ethernet() {
    let dir = tmp();
    let frames = svcrack(CLIENT, 6);
    let verdicts = |s: &ReplaySummary| -> Vec<(Direction, Verdict, String, Option<IpAddr>)> {
        s.packets
            .iter()
            .map(|p| (p.direction, p.verdict, p.reason.clone(), p.src))
            .collect()
    };
    let (eth, _) = replay_frames(
        &dir,
        "eth.pcap",
        Format::Pcap,
        Link::Ethernet,
        &frames,
        5,
        false,
    );
    for link in [Link::Sll, Link::Sll2, Link::RawIp] {
        let name = format!("{link:?}.pcap");
        let (s, out) = replay_frames(&dir, &name, Format::Pcap, link, &frames, 5, false);
        assert_eq!(verdicts(&s), verdicts(&eth), "{link:?}:\n{out}");
        assert_eq!(s.bans, eth.bans, "{link:?}");
    }
}

/// pcapng, IPv6: three addresses of one /64 guess passwords; the /64 is banned and reported as
/// a prefix; an IPv4 phone in the same capture is untouched.
#[test]
fn pcapng_ipv6_attacker_is_banned_by_prefix() {
    let dir = tmp();
    let mut frames = Vec::new();
    for host in ["2001:db8:1:2::a", "2001:db8:1:2::b", "2001:db8:1:2::c"] {
        frames.extend(svcrack(host, 1));
        frames.extend(legitimate(CLIENT, 1));
    }
    frames.push(register("2001:db8:1:2:ffff::1", AUTH));
    let (s, out) = replay_frames(
        &dir,
        "v6.pcapng",
        Format::PcapNg,
        Link::Ethernet,
        &frames,
        3,
        false,
    );
    println!("{out}");
    let last = s.packets.last().unwrap();
    assert_eq!(
        last.verdict,
        Verdict::Drop,
        "another address of the /64: {last:?}"
    );
    assert!(last.reason.contains("banned"));
    assert_eq!(s.bans.len(), 1, "{:?}", s.bans);
    assert_eq!(s.bans[0].addr_text(), "2001:db8:1:2::/64");
    assert_eq!(s.bans[0].failures, 3);
    assert!(out.contains("2001:db8:1:2::/64"));
    assert!(
        out.contains("[2001:db8:1:2::a]:5062 -> [2001:db8:5::5]:5060"),
        "{out}"
    );
    let client: Option<IpAddr> = Some(CLIENT.parse().unwrap());
    let phone: Vec<_> = s
        .packets
        .iter()
        .filter(|p| p.src == client || p.dst == client)
        .collect();
    assert_eq!(phone.len(), 12);
    assert!(phone.iter().all(|p| p.verdict == Verdict::Pass));
}

#[test]
fn json_lines_parse_and_carry_the_fields() {
    let dir = tmp();
    let frames = svcrack(CLIENT, 6);
    let (s, out) = replay_frames(
        &dir,
        "svcrack.pcap",
        Format::Pcap,
        Link::Ethernet,
        &frames,
        5,
        true,
    );
    println!("{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.len(),
        s.packets.len() + 1,
        "one line per packet, then the bans:\n{out}"
    );
    for (i, line) in lines[..s.packets.len()].iter().enumerate() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["index"], i + 1, "{line}");
        assert!(
            matches!(v["verdict"].as_str(), Some("pass" | "drop")),
            "{line}"
        );
        assert!(
            matches!(v["direction"].as_str(), Some("ingress" | "egress")),
            "{line}"
        );
        assert!(!v["reason"].as_str().expect("reason").is_empty(), "{line}");
        assert!(v["src"].is_string() && v["dst"].is_string(), "{line}");
    }
    let eleventh: serde_json::Value = serde_json::from_str(lines[10]).unwrap();
    assert_eq!(eleventh["verdict"], "drop");
    // The reason comes from the program's own trace, named by the reason table.
    assert_eq!(eleventh["recorded"], serde_json::json!(["dropped_banned"]));
    let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(
        first["recorded"],
        serde_json::json!(["passed", "req_register"])
    );
    let bans: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    let bans = bans["bans"].as_array().expect("bans array");
    assert_eq!(bans.len(), 1);
    assert_eq!(bans[0]["addr"], CLIENT);
    assert_eq!(bans[0]["reason"], "auth-failures");
    assert_eq!(bans[0]["failures"], 5);
}

fn replay_error(path: &Path) -> String {
    match replay_file(path, 5, false) {
        Ok((_, out)) => panic!("{} replayed without error:\n{out}", path.display()),
        Err(e) => {
            println!("{}: {e:#}", path.display());
            format!("{e:#}")
        }
    }
}

#[test]
fn damaged_captures_give_clear_errors() {
    let dir = tmp();
    let file = |name: &str, bytes: &[u8]| -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };

    let e = replay_error(&file("garbage.pcap", b"this is not a capture at all\n"));
    assert!(e.contains("not a pcap or pcapng capture"), "{e}");

    let e = replay_error(&file("empty.pcap", b""));
    assert!(e.contains("shorter than a header"), "{e}");

    let good = dir.path().join("good.pcap");
    pcap::write(&good, Format::Pcap, Link::Ethernet, &svcrack(CLIENT, 6)).unwrap();
    let bytes = std::fs::read(&good).unwrap();

    let e = replay_error(&file("header-only.pcap", &bytes[..10]));
    assert!(
        e.contains("bad pcap header") && e.contains("truncated"),
        "{e}"
    );

    let e = replay_error(&file("cut.pcap", &bytes[..bytes.len() - 7]));
    assert!(e.contains("packet #12") && e.contains("truncated"), "{e}");

    let ng = dir.path().join("good.pcapng");
    pcap::write(&ng, Format::PcapNg, Link::Ethernet, &svcrack(CLIENT, 2)).unwrap();
    let ng_bytes = std::fs::read(&ng).unwrap();
    let e = replay_error(&file("cut.pcapng", &ng_bytes[..ng_bytes.len() - 5]));
    assert!(e.contains("packet #4") && e.contains("truncated"), "{e}");

    // 802.11 (link type 105): named in the error.
    let mut wifi = bytes[..24].to_vec();
    let link_at = 20;
    let big_endian = wifi[0] == 0xa1;
    let link = if big_endian {
        105u32.to_be_bytes()
    } else {
        105u32.to_le_bytes()
    };
    wifi[link_at..link_at + 4].copy_from_slice(&link);
    let e = replay_error(&file("wifi.pcap", &wifi));
    assert!(e.contains("link type 105"), "{e}");
}

fn bpffs_entries() -> BTreeSet<PathBuf> {
    fn walk(dir: &Path, out: &mut BTreeSet<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            }
            out.insert(p);
        }
    }
    let mut out = BTreeSet::new();
    walk(Path::new("/sys/fs/bpf"), &mut out);
    out
}

/// A replay uses a private dataplane: nothing is pinned, so a live filter's maps are untouched.
#[test]
fn replay_leaves_bpffs_untouched() {
    assert!(
        Path::new("/sys/fs/bpf").is_dir(),
        "bpffs must be mounted at /sys/fs/bpf for this check"
    );
    let before = bpffs_entries();
    let dir = tmp();
    let (s, _) = replay_frames(
        &dir,
        "svcrack.pcap",
        Format::Pcap,
        Link::Ethernet,
        &svcrack(CLIENT, 6),
        5,
        false,
    );
    assert_eq!(s.bans.len(), 1, "the replay did ban");
    assert_eq!(
        bpffs_entries(),
        before,
        "replay created or removed something in /sys/fs/bpf"
    );
}

/// Traffic that is not a password guess is passed, each kind with its own reason.
#[test]
fn other_traffic_is_explained() {
    let dir = tmp();
    let mut arp = Packet::udp(CLIENT, 1, PBX, 1, Vec::new()).build()[..14].to_vec();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    arp.extend_from_slice(&[0u8; 28]);
    let req = |m: &str| {
        Packet::udp(
            CLIENT,
            5062,
            PBX,
            5060,
            sip::request(m, "555", CLIENT, Creds::None, &[]),
        )
    };
    let frames = vec![
        arp,
        Packet::udp(CLIENT, 40000, PBX, 53, vec![0u8; 30]).build(),
        Packet::tcp(CLIENT, 40000, PBX, 5060).build(),
        Packet::udp(CLIENT, 5062, PBX, 5060, b"\r\n\r\n".to_vec()).build(),
        req("OPTIONS").build(),
        req("BYE").build(),
        Packet::udp("198.51.100.7", 5060, PBX, 5060, sip::response(200, "OK")).build(),
        req("INVITE").build(),
        answer(CLIENT, 100, "Trying"),
        answer(CLIENT, 404, "Not Found"),
        Packet::udp(PBX, 5070, CLIENT, 5062, sip::response(403, "Forbidden")).build(),
        vec![0u8; 10],
    ];
    let (s, out) = replay_frames(
        &dir,
        "mixed.pcap",
        Format::Pcap,
        Link::Ethernet,
        &frames,
        5,
        false,
    );
    println!("{out}");
    let reasons: Vec<&str> = s.packets.iter().map(|p| p.reason.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "not IP",
            "not inspected",
            "not inspected",
            "not SIP",
            "OPTIONS without credentials",
            "request (other method) without credentials",
            "SIP response (not tracked)",
            "INVITE without credentials",
            "100: provisional",
            "404: not-found 1/10",
            "not a SIP response",
            "not run: captured too short for an Ethernet header",
        ]
    );
    assert!(s.packets.iter().all(|p| p.verdict == Verdict::Pass));
    assert!(out.contains("#1 in  - -> - pass  not IP"), "{out}");
    assert!(s.bans.is_empty());
}

/// A capture cut by `tcpdump -s`: the credentials past the snaplen are not in it, which the
/// report says instead of guessing.
#[test]
fn snaplen_cut_packets_are_flagged() {
    let dir = tmp();
    let path = dir.path().join("snapped.pcap");
    pcap::write_snapped(&path, &[register(CLIENT, AUTH)], 300).unwrap();
    let (s, out) = replay_file(&path, 5, false).expect("replay");
    println!("{out}");
    let p = &s.packets[0];
    assert!(p.truncated);
    assert_eq!(
        p.reason,
        "REGISTER, credentials unknown (header section cut)"
    );
    assert!(
        out.contains("[cut by snaplen]") && out.contains("snaplen"),
        "{out}"
    );
}

/// Frames larger than BPF_PROG_TEST_RUN takes are cut before the run without changing what
/// the programs see: jumbo requests keep their credentials, a long answer still counts.
#[test]
fn oversized_frames_are_replayed() {
    let dir = tmp();
    let big = |len: usize| {
        let msg = sip::register(
            "101",
            CLIENT,
            Creds::None,
            &[
                "Authorization: Digest username=\"101\"".to_string(),
                format!("X-Pad: {}", "p".repeat(len)),
            ],
        );
        Packet::udp(CLIENT, 5062, PBX, 5060, msg).build()
    };
    let long_answer = Packet::udp(
        PBX,
        5060,
        CLIENT,
        5062,
        format!("{}{}", sip::response(401, "Unauthorized"), "x".repeat(4000)),
    )
    .build();
    let frames = vec![big(9000), long_answer, big(30000)];
    let (s, out) = replay_frames(
        &dir,
        "jumbo.pcap",
        Format::Pcap,
        Link::Ethernet,
        &frames,
        5,
        false,
    );
    println!("{out}");
    assert_eq!(s.packets[0].reason, "REGISTER with credentials");
    assert_eq!(s.packets[1].reason, "401: auth failure 1/5");
    assert_eq!(s.packets[2].reason, "REGISTER with credentials");
}

/// A phone's INVITE with `uri` as its Request-URI.
fn invite(uri: &str) -> Vec<u8> {
    let m = sip::invite(uri, "101", CLIENT, Creds::None, &[]);
    Packet::udp(CLIENT, 5062, PBX, 5060, m).build()
}

/// Call verdicts: a premium call is answered 403 by the filter (named with its extension,
/// number and rule), a domestic one passes, and the PBX's INVITE forwarding a call to a
/// premium number through its trunk is dropped at egress.
#[test]
fn call_verdicts_are_shown() {
    let dir = tmp();
    let path = dir.path().join("calls.pcap");
    let forward = {
        let m = sip::invite("sip:+8825551234@198.51.100.7", "101", PBX, Creds::None, &[]);
        Packet::udp(PBX, 5060, "198.51.100.7", 5060, m).build()
    };
    let frames = vec![
        invite("sip:+8825551234@pbx"),
        invite("sip:+12125550100@pbx"),
        forward,
    ];
    pcap::write(&path, Format::Pcap, Link::Ethernet, &frames).unwrap();
    let mut opts = options(&path, 5, false);
    opts.settings = Settings::parse(
        "[calls]\ncountry_code = \"1\"\nallow = [\"+1\"]\ntrunks = [\"198.51.100.7\"]\n",
        "sip-filter.toml".as_ref(),
    )
    .unwrap();
    let mut out = Vec::new();
    let s = replay::run(&opts, &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    println!("{out}");
    assert_eq!(s.packets[0].verdict, Verdict::Answer);
    assert!(
        s.packets[0]
            .reason
            .contains("extension \"101\" to +8825551234 refused (403)")
            && s.packets[0].reason.contains("+882"),
        "{}",
        s.packets[0].reason
    );
    assert_eq!(s.packets[1].verdict, Verdict::Pass);
    assert_eq!(s.packets[2].direction, Direction::Egress);
    assert_eq!(s.packets[2].verdict, Verdict::Drop);
    assert!(
        s.packets[2].reason.contains("blocked at egress"),
        "{}",
        s.packets[2].reason
    );
    assert!(out.contains(" 403 "), "{out}");
}

#[test]
fn scanner_and_flood_verdicts_are_shown() {
    let dir = tmp();
    let path = dir.path().join("scan.pcap");
    let scanner = {
        let m = sip::request("OPTIONS", "100", "198.51.100.9", Creds::None, &[])
            .replace("User-Agent: fixture/1.0", "User-Agent: friendly-scanner");
        Packet::udp("198.51.100.9", 5060, PBX, 5060, m).build()
    };
    // The flood guard's default: 30 requests at once pass, the 31st trips it.
    let mut frames = vec![scanner];
    frames.extend((0..32).map(|_| register(CLIENT, Creds::None)));
    pcap::write(&path, Format::Pcap, Link::Ethernet, &frames).unwrap();
    let opts = options(&path, 5, false);
    let mut out = Vec::new();
    let s = replay::run(&opts, &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    println!("{out}");
    assert_eq!(s.packets[0].verdict, Verdict::Drop);
    assert_eq!(
        s.packets[0].reason,
        "scanner User-Agent \"friendly-scanner\": banned"
    );
    assert!(s.packets[1..=30].iter().all(|p| p.verdict == Verdict::Pass));
    assert_eq!(s.packets[31].verdict, Verdict::Drop);
    assert_eq!(
        s.packets[31].reason,
        "over the flood guard's rate (30 requests per 2s): rate-limited for 5m"
    );
    assert_eq!(s.packets[32].verdict, Verdict::Drop);
    assert_eq!(s.packets[32].reason, "rate-limited (flood)");
}
