//! `cargo xtask demo`: a PBX under attack, told live in the terminal.
//!
//! Starts the lab (`tests::lab`: Kamailio as the PBX, sip-filter on its interface, phones
//! behind a NAT, an allowlisted trunk, attackers with SIPVicious), plays the incidents the
//! filter answers, then replays the same attacks with sip-filter detached and compares what
//! the PBX saw. Removes the lab and exits 0; Ctrl-C removes it too.
use std::{
    process::{Command, ExitCode},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};
use tests::lab::{self, Lab, LabConfig, Phones, Seen, SippStats, tools};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn main() -> ExitCode {
    // Ctrl-C or SIGTERM: the story stops at its next pause and the lab is removed on the way
    // out (the tools, in the terminal's process group, get the Ctrl-C themselves).
    let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\ndemo: {e:#}");
            if INTERRUPTED.load(Ordering::SeqCst) {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Sleeps, unless interrupted.
fn pause(secs: f64) -> Result<()> {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < until {
        if INTERRUPTED.load(Ordering::SeqCst) {
            bail!("interrupted: removing the lab");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Polls `f` until it is true or `timeout` passes; fails if interrupted.
fn wait(timeout: Duration, mut f: impl FnMut() -> bool) -> Result<bool> {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if f() {
            return Ok(true);
        }
        pause(0.02)?;
    }
    Ok(f())
}

fn heading(title: &str) {
    println!("\n{title}\n{}", "-".repeat(title.chars().count()));
}

/// `HH:MM:SS.mmm` (UTC, like the daemon's log) of a Unix time in seconds.
fn clock(at: f64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs_f64(at);
    humantime::format_rfc3339_millis(t).to_string()[11..23].to_string()
}

/// Prints rows with every column padded to its widest cell; with `right`, the columns after
/// the first are right-aligned (figures).
fn table(rows: &[Vec<String>], right: bool) {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == 0 || !right {
                    format!("{c:<w$}", w = widths[i])
                } else {
                    format!("{c:>w$}", w = widths[i])
                }
            })
            .collect();
        println!("  {}", line.join("   ").trim_end());
    }
}

/// Builds the `sip-filter` binary next to this one: `cargo run` builds only the demo, and the
/// lab runs the real daemon and CLI.
fn ensure_sip_filter() -> Result<()> {
    let Some(cargo) = std::env::var_os("CARGO") else {
        // Not started by cargo: the binary has to be there already (checked by the lab).
        return Ok(());
    };
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    println!("(building the sip-filter binary, if needed)");
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "sip-filter",
        "--bin",
        "sip-filter",
    ])
    .args(["--manifest-path", manifest]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let status = cmd.status().context("running cargo build")?;
    if !status.success() {
        bail!("building sip-filter failed");
    }
    Ok(())
}

/// What the PBX saw during one run of the story.
#[derive(Default)]
struct Outcome {
    guesses: usize,
    cracked: Option<String>,
    attacker_registered: bool,
    not_found: usize,
    extensions_found: usize,
    geo_reached: usize,
    geo_found_pbx: bool,
    phones: SippStats,
    phones_banned: bool,
    /// Of the risky calls (premium, look-alike, after hours), how many reached the trunk.
    risky_at_trunk: usize,
    /// Whether the call the PBX forwarded to a premium number left it for the trunk.
    forward_left: bool,
    /// Whether the domestic call connected.
    domestic_ok: bool,
}

/// The office's time zone: one where it is now past 17:00 (a whole-hour `Etc/GMT` zone), so
/// that the demo's story happens after business hours whatever the machine's clock says.
fn five_pm_zone() -> String {
    let utc_hour = (lab::now() as i64 / 3600) % 24;
    let mut h = (17 - utc_hour).rem_euclid(24);
    if h > 14 {
        h -= 24;
    }
    match h {
        0 => "UTC".into(),
        // Etc/GMT names have the sign inverted: Etc/GMT-3 is three hours ahead of UTC.
        h if h > 0 => format!("Etc/GMT-{h}"),
        h => format!("Etc/GMT+{}", -h),
    }
}

/// The calls the cloned phone places: (number, what it is, refused by the rules?).
const CALLS: &[(&str, &str, bool)] = &[
    ("+88212345678", "a premium satellite number", true),
    (
        "18095550100",
        "the Dominican Republic, dialled like a US number",
        true,
    ),
    ("+442071234567", "London, after business hours", true),
    ("+12125550100", "New York: domestic", false),
];

/// The office's phones for one run: 50 accounts, each registering every 10 s.
fn office_phones() -> Phones {
    Phones {
        accounts: lab::accounts(100..=149),
        rate: 5.0,
        total: 125,
        answer_timeout: Duration::from_secs(5),
    }
}

/// svcrack's wordlist: 19 wrong passwords, then the right one.
fn wordlist() -> Vec<String> {
    lab::dictionary(101, 19, Some(19))
}

fn seen_since(lab: &Lab, ip: std::net::IpAddr, since: f64) -> Vec<Seen> {
    lab.seen_from(ip)
        .into_iter()
        .filter(|s| s.at >= since)
        .collect()
}

fn run() -> Result<()> {
    ensure_sip_filter()?;
    let started = Instant::now();
    println!("sip-filter demo: a PBX under attack, with and without sip-filter");
    println!("================================================================");
    println!(
        "\nEverything runs on this machine, in network namespaces joined by a bridge, on \
         documentation\naddresses: nothing leaves the lab. Starting it..."
    );
    let zone = five_pm_zone();
    let mut lab = Lab::start(LabConfig {
        calls: Some(lab::calls_config(&zone, "Mon-Fri 08:00-17:00", &[])),
        ..LabConfig::default()
    })?;

    println!();
    table(
        &[
            vec!["host".into(), "address".into(), "what it is".into()],
            vec![
                "pbx".into(),
                format!("{} {}", lab::PBX, lab::PBX6),
                format!(
                    "Kamailio registrar, extensions 100-199; sip-filter on its NIC ({})",
                    lab.pbx_if()
                ),
            ],
            vec![
                "office".into(),
                lab::OFFICE.into(),
                "50 phones (SIPp, extensions 100-149) behind one NAT address".into(),
            ],
            vec![
                "trunk".into(),
                lab::TRUNK.into(),
                "the SIP trunk provider, allowlisted".into(),
            ],
            vec![
                "attacker".into(),
                lab::ATTACKER.into(),
                "password guesser (SIPVicious svcrack)".into(),
            ],
            vec![
                "scanner".into(),
                lab::SCANNER.into(),
                "extension scanner (SIPVicious svwar)".into(),
            ],
            vec![
                "geo".into(),
                lab::GEO.into(),
                format!(
                    "a host in a country this PBX blocks ({})",
                    lab::BLOCKED_COUNTRY
                ),
            ],
        ],
        false,
    );
    let c = &lab.config;
    println!(
        "\nsip-filter's rules: {} failed logins within {} -> ban for {}; {} unknown extensions -> ban for {};\n\
         allowlist: the trunk; geo-blocking: {} (from the lab's made-up country database);\n\
         calls: business hours Mon-Fri 08:00-17:00, after them only domestic calls, and the\n\
         high-risk list always blocked.",
        c.max_failures,
        c.find_time,
        c.ban_time,
        c.max_not_found,
        c.scan_ban_time,
        lab::BLOCKED_COUNTRY
    );

    let with = story(&mut lab)?;

    heading("7. The same attacks without sip-filter");
    let out = lab.detach()?;
    println!("  $ sip-filter detach\n    {}", out.trim());
    let without = replay(&lab)?;

    heading("8. What the PBX saw");
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
    let cracked = |o: &Outcome| match &o.cracked {
        Some(p) => format!("yes ({p})"),
        None => "no".into(),
    };
    let phones = |o: &Outcome| format!("{}/{}", o.phones.successful, o.phones.created);
    table(
        &[
            vec![String::new(), "with sip-filter".into(), "without".into()],
            vec![
                "password guesses that reached the PBX".into(),
                with.guesses.to_string(),
                without.guesses.to_string(),
            ],
            vec![
                "password of extension 101 found by svcrack".into(),
                cracked(&with),
                cracked(&without),
            ],
            vec![
                "attacker registered as extension 101".into(),
                yes_no(with.attacker_registered),
                yes_no(without.attacker_registered),
            ],
            vec![
                "unknown-extension probes that reached the PBX".into(),
                with.not_found.to_string(),
                without.not_found.to_string(),
            ],
            vec![
                "extensions svwar discovered (of 31 probed)".into(),
                with.extensions_found.to_string(),
                without.extensions_found.to_string(),
            ],
            vec![
                "requests from the blocked country at the PBX".into(),
                with.geo_reached.to_string(),
                without.geo_reached.to_string(),
            ],
            vec![
                "PBX found by the blocked country's svmap".into(),
                yes_no(with.geo_found_pbx),
                yes_no(without.geo_found_pbx),
            ],
            vec![
                "premium / look-alike / after-hours calls at the trunk".into(),
                format!("{} of 3", with.risky_at_trunk),
                format!("{} of 3", without.risky_at_trunk),
            ],
            vec![
                "forwarded call to a premium number left the PBX".into(),
                yes_no(with.forward_left),
                yes_no(without.forward_left),
            ],
            vec![
                "domestic call connected".into(),
                yes_no(with.domestic_ok),
                yes_no(without.domestic_ok),
            ],
            vec![
                "phone registrations OK / attempted".into(),
                phones(&with),
                phones(&without),
            ],
            vec![
                "office banned".into(),
                yes_no(with.phones_banned),
                yes_no(without.phones_banned),
            ],
        ],
        true,
    );

    println!("\nRemoving the lab...");
    let iface = lab.pbx_if().to_string();
    drop(lab);
    let left: Vec<String> = lab::leftovers(&iface);
    if !left.is_empty() {
        bail!("the lab left things behind: {}", left.join(", "));
    }
    println!(
        "Done in {:.0} s: namespaces, links, processes and pins removed.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Scenes 1-5, with sip-filter on the PBX's interface, narrated as they happen.
fn story(lab: &mut Lab) -> Result<Outcome> {
    let mut o = Outcome::default();
    let office = lab::ip(lab::OFFICE);
    let attacker = lab.attacker.addr;

    heading("1. The office phones register");
    let t_phones = lab::now();
    let mut sipp = lab.office_phones(&office_phones())?;
    println!(
        "  50 phones behind {} register every 10 s (SIPp, digest authentication), all along.",
        lab::OFFICE
    );
    pause(4.0)?;
    let ok = seen_since(lab, office, t_phones)
        .iter()
        .filter(|s| s.creds && s.code == 200)
        .count();
    println!("  After 4 s the PBX has accepted {ok} registrations (200 OK).");

    heading("2. An attacker guesses the password of extension 101");
    let words = wordlist();
    println!(
        "  $ svcrack -u 101 -d wordlist.txt {}     ({} passwords, the right one last)",
        lab::PBX,
        words.len()
    );
    let dropped_before = lab.stat("dropped_banned");
    let t_attack = lab::now();
    let mut crack = lab.svcrack(&lab.attacker, 101, &words, None)?;
    let mut shown = 0;
    let mut ban_line = None;
    wait(Duration::from_secs(20), || {
        let guesses: Vec<Seen> = seen_since(lab, attacker, t_attack)
            .into_iter()
            .filter(|s| s.creds)
            .collect();
        for g in &guesses[shown..] {
            shown += 1;
            println!(
                "  {}  guess {shown} reached the PBX  ->  {} {}",
                clock(g.at),
                g.code,
                if g.code == 401 {
                    "(wrong password)"
                } else {
                    ""
                }
            );
        }
        ban_line = lab
            .daemon_log()
            .into_iter()
            .find(|l| l.text.contains("banned 198.51.100.66:"));
        ban_line.is_some() || !crack.running()
    })?;
    let Some(ban_line) = ban_line else {
        bail!("the attacker was not banned:\n{}", lab.filter.log());
    };
    println!("  sip-filter's log:\n    {}", ban_line.text);
    pause(3.0)?;
    let still = crack.running();
    crack.stop();
    let dropped = lab.stat("dropped_banned") - dropped_before;
    let guesses: Vec<Seen> = seen_since(lab, attacker, t_attack)
        .into_iter()
        .filter(|s| s.creds)
        .collect();
    o.guesses = guesses.len();
    o.cracked = tools::svcrack_found(&crack.output());
    o.attacker_registered = guesses.iter().any(|g| g.code == 200);
    let after = seen_since(lab, attacker, ban_line.at).len();
    println!(
        "  svcrack {} for 3 s more: {dropped} packets dropped before the network stack, {after} reached the PBX.",
        if still { "kept sending" } else { "gave up" },
    );
    println!(
        "  The kernel banned it as the PBX's answer to guess {} left; the daemon logged it {:.2} ms\n  \
         after that guess reached the PBX. svcrack found {}.",
        guesses.len(),
        guesses.last().map_or(0.0, |g| (ban_line.at - g.at) * 1e3),
        o.cracked.as_deref().unwrap_or("no password")
    );

    heading("3. A scanner looks for extensions");
    println!(
        "  $ svwar -e 90-130 {}     (90-99 do not exist, 100-130 do)",
        lab::PBX
    );
    let t_scan = lab::now();
    let mut war = lab.svwar(&lab.scanner, "90-130")?;
    let scanner = lab.scanner.addr;
    let mut scan_ban = None;
    wait(Duration::from_secs(20), || {
        scan_ban = lab
            .daemon_log()
            .into_iter()
            .find(|l| l.text.contains("banned 198.51.100.77:"));
        scan_ban.is_some() || !war.running()
    })?;
    let Some(scan_ban) = scan_ban else {
        bail!("the scanner was not banned:\n{}", lab.filter.log());
    };
    println!("  sip-filter's log:\n    {}", scan_ban.text);
    wait(Duration::from_secs(20), || !war.running())?;
    war.stop();
    let seen = seen_since(lab, scanner, t_scan);
    o.not_found = seen.iter().filter(|s| s.code == 404).count();
    o.extensions_found = tools::svwar_found(&war.output()).len();
    println!(
        "  {} unknown extensions reached the PBX; svwar's result: {} extensions found.",
        o.not_found, o.extensions_found
    );

    heading("4. A host in a blocked country knocks");
    println!("  $ svmap {}     (from {})", lab::PBX, lab::GEO);
    let geo_before = lab.stat("dropped_geo");
    let t_geo = lab::now();
    let mut map = lab.svmap(&lab.geo, lab.geo.addr)?;
    wait(Duration::from_secs(20), || !map.running())?;
    map.stop();
    o.geo_reached = seen_since(lab, lab.geo.addr, t_geo).len();
    o.geo_found_pbx = tools::svmap_found(&map.output());
    println!(
        "  svmap found {}; the PBX saw {} packets from it; sip-filter dropped {} (geo).",
        if o.geo_found_pbx {
            "the PBX"
        } else {
            "no SIP device"
        },
        o.geo_reached,
        lab.stat("dropped_geo") - geo_before
    );
    let lookup = lab.filter.cli_ok(&[
        "geo",
        "lookup",
        lab::GEO,
        "--config",
        lab.filter.config.to_str().unwrap(),
    ]);
    println!("  $ sip-filter geo lookup {}", lab::GEO);
    for l in lookup.lines() {
        println!("    {l}");
    }
    let mut trunk = lab.sipp_from(
        &lab.trunk,
        &Phones {
            accounts: lab::accounts(199..=199),
            rate: 1.0,
            total: 1,
            answer_timeout: Duration::from_secs(3),
        },
    )?;
    let t = trunk.finish(Duration::from_secs(20))?;
    println!(
        "  The trunk ({}) is in the same country, but allowlisted: its registration {}.",
        lab::TRUNK,
        if t.successful == 1 {
            "went through (200 OK)"
        } else {
            "FAILED"
        }
    );

    heading("5. Stolen credentials, 5 p.m., a premium number");
    calls_scene(lab, &mut o, true)?;

    heading("6. What the operator sees");
    println!("  $ sip-filter ban list");
    for l in lab.filter.cli_ok(&["ban", "list"]).lines() {
        println!("    {l}");
    }
    let stats = lab.stats();
    println!("  $ sip-filter stats   (excerpt)");
    for k in [
        "seen",
        "passed",
        "allowlisted",
        "dropped_banned",
        "dropped_geo",
        "auth_failures",
        "not_found",
        "bans_issued",
    ] {
        println!("    {k:<16} {}", stats[k]);
    }

    o.phones = sipp.finish(Duration::from_secs(60))?;
    pause(0.0)?;
    o.phones_banned = lab.ban_of(lab::OFFICE).is_some();
    println!(
        "\n  Meanwhile the office: {} of {} registrations OK, {} failed; its address was {}banned.",
        o.phones.successful,
        o.phones.created,
        o.phones.failed,
        if o.phones_banned { "" } else { "never " }
    );
    Ok(o)
}

/// The cloned phone's calls and a forwarded call, through the PBX to the trunk (SIPp);
/// narrated when `tell`.
fn calls_scene(lab: &Lab, o: &mut Outcome, tell: bool) -> Result<()> {
    let mut trunk = lab.start_trunk()?;
    let before = lab.trunk_invites().len();
    let phone = &lab.phones;
    let pbx = lab::ip(lab::PBX);
    if tell {
        let local = lab.filter.cli_ok(&[
            "calls",
            "check",
            "+442071234567",
            "--config",
            lab.filter.config.to_str().unwrap(),
        ]);
        let time = local
            .lines()
            .find(|l| l.starts_with("time:"))
            .unwrap_or_default()
            .trim_start_matches("time:")
            .trim()
            .to_string();
        println!(
            "  A phone in the office was cloned: the copy has extension 120's real password.\n  \
             It is {time} at the office. The copy places its calls (SIPp, digest authentication):"
        );
    }
    for (number, what, risky) in CALLS {
        let expect = if *risky && tell {
            tools::CallOutcome::Refused
        } else {
            tools::CallOutcome::Connected
        };
        let ok = lab.call(phone, 120, number, expect)?;
        if !risky {
            o.domestic_ok = ok;
        }
        if tell {
            let answer = if expect == tools::CallOutcome::Refused {
                let (code, took) = Lab::first_final_answer(
                    phone,
                    pbx,
                    Lab::invite(phone.addr, pbx, "120", number),
                )
                .context("no answer")?;
                format!(
                    "{code} from sip-filter in {:.1} ms, the PBX never saw it",
                    took.as_secs_f64() * 1e3
                )
            } else if ok {
                "authenticated, through the trunk, answered".into()
            } else {
                "FAILED".into()
            };
            println!("    {number:<15} {what:<50} -> {answer}");
        }
    }
    let risky: Vec<&str> = CALLS.iter().filter(|c| c.2).map(|c| c.0).collect();
    let at_trunk = lab.trunk_invites()[before..].to_vec();
    o.risky_at_trunk = risky
        .iter()
        .filter(|n| at_trunk.iter().any(|l| l.contains(&format!("sip:{n}@"))))
        .count();

    // Extension 150 forwards its calls to a premium number: the PBX places that call itself.
    let caller = lab.trunk.addr;
    let _ = Lab::first_final_answer(
        &lab.trunk,
        pbx,
        Lab::invite(caller, pbx, "caller", lab::kamailio::FORWARDING_EXTENSION),
    );
    o.forward_left = lab
        .trunk_invites()
        .iter()
        .any(|l| l.contains(lab::kamailio::FORWARD_TO));
    trunk.tool.stop();
    if tell {
        println!(
            "  An inbound call for extension 150, which forwards to {}: the PBX places that call\n  \
             itself; its INVITE {} the host.",
            lab::kamailio::FORWARD_TO,
            if o.forward_left { "LEFT" } else { "never left" }
        );
        println!("  sip-filter's log:");
        for l in lab
            .daemon_log()
            .into_iter()
            .filter(|l| l.text.contains("call blocked"))
        {
            let text = l
                .text
                .find("call blocked")
                .map_or(&l.text[..], |i| &l.text[i..]);
            let text = text.split(" direction=").next().unwrap_or(text);
            println!("    {}", text);
        }
    }
    Ok(())
}

/// The same attacks on the unprotected PBX, told briefly.
fn replay(lab: &Lab) -> Result<Outcome> {
    let mut o = Outcome::default();
    let office = lab::ip(lab::OFFICE);
    let t0 = lab::now();
    let mut sipp = lab.office_phones(&office_phones())?;

    let mut crack = lab.svcrack(&lab.attacker, 101, &wordlist(), None)?;
    wait(Duration::from_secs(30), || !crack.running())?;
    crack.stop();
    let guesses: Vec<Seen> = seen_since(lab, lab.attacker.addr, t0)
        .into_iter()
        .filter(|s| s.creds)
        .collect();
    o.guesses = guesses.len();
    o.cracked = tools::svcrack_found(&crack.output());
    o.attacker_registered = guesses.iter().any(|g| g.code == 200);
    println!(
        "  svcrack: {} guesses reached the PBX; password found: {}",
        o.guesses,
        o.cracked.as_deref().unwrap_or("none")
    );

    let mut war = lab.svwar(&lab.scanner, "90-130")?;
    wait(Duration::from_secs(30), || !war.running())?;
    war.stop();
    o.not_found = seen_since(lab, lab.scanner.addr, t0)
        .iter()
        .filter(|s| s.code == 404)
        .count();
    o.extensions_found = tools::svwar_found(&war.output()).len();
    println!(
        "  svwar: {} unknown extensions probed, {} extensions found",
        o.not_found, o.extensions_found
    );

    let mut map = lab.svmap(&lab.geo, lab.geo.addr)?;
    wait(Duration::from_secs(20), || !map.running())?;
    map.stop();
    o.geo_reached = seen_since(lab, lab.geo.addr, t0).len();
    o.geo_found_pbx = tools::svmap_found(&map.output());
    println!(
        "  svmap from {}: {}",
        lab::GEO,
        if o.geo_found_pbx {
            "found the PBX"
        } else {
            "found nothing"
        }
    );

    calls_scene(lab, &mut o, false)?;
    println!(
        "  calls: {} of 3 premium / look-alike / after-hours calls reached the trunk; the forward to {} {}",
        o.risky_at_trunk,
        lab::kamailio::FORWARD_TO,
        if o.forward_left {
            "left the PBX"
        } else {
            "did not leave"
        }
    );

    o.phones = sipp.finish(Duration::from_secs(60))?;
    let ok = seen_since(lab, office, t0)
        .iter()
        .filter(|s| s.creds && s.code == 200)
        .count();
    println!(
        "  phones: {} of {} registrations OK ({ok} accepted by the PBX)",
        o.phones.successful, o.phones.created
    );
    Ok(o)
}
