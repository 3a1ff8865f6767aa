//! Parts 3 and 4, measured in the lab (`tests::lab`: Kamailio, SIPVicious and SIPp in
//! namespaces, on documentation addresses).
//!
//! Part 3: `svcrack` against Kamailio protected by sip-filter, by Debian's fail2ban (a jail on
//! Kamailio's failed-authentication log lines, nftables action, run in the PBX's namespace with
//! its own configuration, socket and pid file), and by nothing. Part 4: legitimate SIPp
//! registrations while SIPp floods from a banned and a geo-blocked source, with and without
//! sip-filter. Both run every variant once per round, in rotating order
//! ([`crate::bench::interleave`]).
use std::{
    collections::HashMap,
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    bench::{
        Profile, interleave,
        model::{Part, Row, Table},
        stats::Summary,
    },
    lab::{
        self, Lab, LabConfig, Phones, Rule, Tool,
        capture::{self, Capture, Kind, SipPacket},
    },
    netns::{Netns, wait_for},
};

/// Kept for the report's "awaits the lab" handling; no part returns it any more.
pub const NEEDS_LAB: &str = "needs the lab (tests::lab)";

pub const TITLE_3: &str = "Guesses before the ban: sip-filter against fail2ban";
pub const TITLE_4: &str = "Shielding the PBX under a SIPp flood";

/// Rows part 3 produces.
pub const ROWS_3: &[&str] = &[
    "p3.guesses.{sip_filter,fail2ban,none}: guesses that reached the PBX",
    "p3.after_threshold.{sip_filter,fail2ban,none}: guesses that reached it after the threshold \
     (goal: 0 for sip-filter)",
    "p3.time_to_drop.{sip_filter,fail2ban}: time from the threshold to the first dropped packet",
];

/// Rows part 4 produces.
pub const ROWS_4: &[&str] = &[
    "p4.register_success.{with,without}: legitimate registrations that succeed",
    "p4.register_latency.{with,without}: their latency (median, p99)",
    "p4.kamailio_cpu.{with,without}: Kamailio's CPU",
];

/// The rows a part will produce, for the report of a missing part.
pub fn expected_rows(part: u8) -> &'static [&'static str] {
    match part {
        3 => ROWS_3,
        4 => ROWS_4,
        _ => &[],
    }
}

fn sleep(secs: f64) {
    std::thread::sleep(Duration::from_secs_f64(secs));
}

/// Keeps the filter attached or detached as a variant needs it.
fn set_filter(lab: &mut Lab, attached: &mut bool, want: bool) -> Result<()> {
    if *attached && !want {
        lab.detach()?;
    } else if !*attached && want {
        lab.attach();
    }
    *attached = want;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Part 3
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Guard {
    SipFilter,
    Fail2ban,
    None,
}

impl Guard {
    fn id(self) -> &'static str {
        match self {
            Guard::SipFilter => "sip_filter",
            Guard::Fail2ban => "fail2ban",
            Guard::None => "none",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Guard::SipFilter => "sip-filter",
            Guard::Fail2ban => "fail2ban (nftables-allports, pyinotify)",
            Guard::None => "nothing",
        }
    }
}

struct Attack {
    guesses: f64,
    after: f64,
    /// Milliseconds from the threshold answer to the first request that got no answer.
    to_drop_ms: f64,
    sent: f64,
    requests: f64,
}

/// fail2ban's jail filter on the lab Kamailio's request line: a request that carried
/// credentials and was answered 401 (wrong password, fresh challenge) or 403.
const F2B_FILTER: &str = "[Definition]\n\
    failregex = LAB\\|[0-9.]+\\|<HOST>\\|\\d+\\|[A-Z]+\\|[^|]*\\|1\\|(?:401|403)\\|\n\
    ignoreregex =\n\
    # Kamailio's stderr lines carry no date fail2ban knows: a line counts when it is read.\n\
    datepattern = {NONE}\n";

/// fail2ban-server (Debian's package) in the PBX's namespace, with its own configuration,
/// socket, pid file and log under `dir`.
struct Fail2ban {
    tool: Tool,
    ns_path: PathBuf,
    sock: PathBuf,
    log: PathBuf,
}

impl Fail2ban {
    fn start(ns: &Netns, dir: &Path, kamailio_log: &Path, cfg: &LabConfig) -> Result<Self> {
        let _ = std::fs::remove_dir_all(dir);
        let conf = dir.join("conf");
        std::fs::create_dir_all(&conf)?;
        let out = std::process::Command::new("cp")
            .args(["-a", "/etc/fail2ban/."])
            .arg(&conf)
            .output()
            .context("copying /etc/fail2ban")?;
        if !out.status.success() {
            bail!(
                "copying /etc/fail2ban (is fail2ban installed? cargo xtask setup): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // Only our jail: no Debian default (sshd) jail.
        let _ = std::fs::remove_dir_all(conf.join("jail.d"));
        std::fs::create_dir_all(conf.join("jail.d"))?;
        let log = dir.join("fail2ban.log");
        std::fs::write(
            conf.join("fail2ban.local"),
            format!(
                "[Definition]\nloglevel = INFO\nlogtarget = {}\ndbfile = :memory:\n",
                log.display()
            ),
        )?;
        std::fs::write(conf.join("filter.d/kamailio-lab.conf"), F2B_FILTER)?;
        let secs = |s: &str| -> Result<u64> {
            Ok(humantime::parse_duration(s)
                .with_context(|| format!("duration {s}"))?
                .as_secs())
        };
        std::fs::write(
            conf.join("jail.local"),
            format!(
                "[kamailio-lab]\n\
                 enabled = true\n\
                 filter = kamailio-lab\n\
                 logpath = {} tail\n\
                 backend = pyinotify\n\
                 maxretry = {}\n\
                 findtime = {}\n\
                 bantime = {}\n\
                 ignoreip =\n\
                 ignoreself = false\n\
                 action = nftables-allports[name=kamailio-lab, protocol=\"udp\", blocktype=drop]\n",
                kamailio_log.display(),
                cfg.max_failures,
                secs(&cfg.find_time)?,
                secs(&cfg.ban_time)?,
            ),
        )?;
        let sock = dir.join("f2b.sock");
        let pid = dir.join("f2b.pid");
        let mut cmd = ns.command("fail2ban-server");
        cmd.args(["-f", "-x", "-c"])
            .arg(&conf)
            .arg("-s")
            .arg(&sock)
            .arg("-p")
            .arg(&pid);
        let tool = Tool::spawn("fail2ban-server", cmd, dir.join("server.out"))?;
        let mut f = Fail2ban {
            tool,
            ns_path: ns.path(),
            sock,
            log,
        };
        let up = wait_for(Duration::from_secs(20), || {
            f.log_text().contains("Jail 'kamailio-lab' started") || !f.tool.running()
        });
        if !up || !f.log_text().contains("Jail 'kamailio-lab' started") {
            let why = format!("{}\n{}", f.tool.output(), f.log_text());
            f.stop();
            bail!("fail2ban did not start its jail:\n{why}");
        }
        Ok(f)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the server (its nftables action removes its rules) and removes its table if it
    /// is still there.
    fn stop(&mut self) {
        if self.tool.running() {
            let _ = std::process::Command::new("nsenter")
                .arg(format!("--net={}", self.ns_path.display()))
                .arg("fail2ban-client")
                .arg("-s")
                .arg(&self.sock)
                .arg("stop")
                .output();
            if wait_for(Duration::from_secs(10), || !self.tool.running()) {
                self.tool.stop();
            } else {
                self.tool.terminate(Duration::from_secs(3));
            }
        }
        let _ = std::process::Command::new("nsenter")
            .arg(format!("--net={}", self.ns_path.display()))
            .args(["nft", "delete", "table", "inet", "f2b-table"])
            .output();
    }
}

impl Drop for Fail2ban {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Requests from `client` after `t` that never got an answer (same Via branch), in order.
fn unanswered_after(pkts: &[SipPacket], client: IpAddr, t: f64) -> Vec<&SipPacket> {
    pkts.iter()
        .filter(|p| p.src == client && p.is_request() && p.at > t)
        .filter(|q| {
            !pkts.iter().any(|a| {
                a.dst == client
                    && matches!(a.kind, Kind::Response { .. })
                    && a.branch.is_some()
                    && a.branch == q.branch
                    && a.at >= q.at
            })
        })
        .collect()
}

fn attack(
    lab: &mut Lab,
    attached: &mut bool,
    guard: Guard,
    window: f64,
    round_dir: &Path,
) -> Result<Attack> {
    if guard == Guard::SipFilter {
        // A fresh ban state for the round: bans and failure counts forgotten.
        set_filter(lab, attached, false)?;
    }
    set_filter(lab, attached, guard == Guard::SipFilter)?;
    let max = lab.config.max_failures as usize;
    let me = lab.attacker.addr;
    let f2b = if guard == Guard::Fail2ban {
        Some(Fail2ban::start(
            lab.pbx_ns(),
            round_dir,
            lab.kamailio.log_path(),
            &lab.config,
        )?)
    } else {
        None
    };
    // On the attacker's side: every request it sent, and which ones got an answer (a request
    // dropped by XDP or by nftables gets none).
    let mut cap = Capture::start(&lab.attacker.ns, "eth0", lab.dir.path())?;
    let t0 = lab::now();
    let mut crack = lab.svcrack(&lab.attacker, 101, &lab::dictionary(101, 5000, None), None)?;
    sleep(window);
    crack.stop();
    sleep(0.3);
    let pkts = cap.finish()?;
    drop(f2b);
    let guesses = lab
        .guesses_from(me)
        .into_iter()
        .filter(|s| s.at >= t0)
        .count();
    let sent = pkts
        .iter()
        .filter(|p| p.src == me && matches!(p.kind, Kind::Request { creds: true, .. }))
        .count();
    let to_drop_ms = match guard {
        Guard::None => f64::NAN,
        _ => {
            let t = capture::threshold(&pkts, me, max, Rule::Auth).with_context(|| {
                format!("{}: fewer than {max} failures in the capture", guard.id())
            })?;
            unanswered_after(&pkts, me, t.answer_at)
                .first()
                .map_or(f64::NAN, |p| (p.at - t.answer_at) * 1e3)
        }
    };
    Ok(Attack {
        guesses: guesses as f64,
        after: guesses.saturating_sub(max) as f64,
        to_drop_ms,
        sent: sent as f64,
        requests: pkts
            .iter()
            .filter(|p| p.src == me && p.is_request())
            .count() as f64,
    })
}

/// Part 3: guesses before the ban.
pub fn part3(p: &Profile) -> Result<Part> {
    let cfg = LabConfig::default();
    let max = cfg.max_failures;
    let window = if p.name == "quick" { 3.0 } else { 5.0 };
    let mut lab = Lab::start(cfg.clone())?;
    let mut attached = true;
    let mut guards = [Guard::SipFilter, Guard::Fail2ban, Guard::None];
    let mut round = 0usize;
    let runs = interleave(&mut guards, p.rounds, |g| {
        round += 1;
        let dir = lab.dir.path().join(format!("f2b-{round}"));
        attack(&mut lab, &mut attached, *g, window, &dir)
    })?;
    drop(lab);

    let col = |i: usize, f: fn(&Attack) -> f64| runs[i].iter().map(f).collect::<Vec<f64>>();
    let mut guesses = Vec::new();
    let mut after = Vec::new();
    let mut to_drop = Vec::new();
    for (i, g) in guards.iter().enumerate() {
        let mut r = Row::new(
            &format!("p3.guesses.{}", g.id()),
            &format!("guesses reaching the PBX, {}", g.label()),
            "guesses",
            col(i, |a| a.guesses),
        )
        .extra("guesses sent", "guesses", col(i, |a| a.sent))
        .extra("requests sent", "requests", col(i, |a| a.requests));
        if *g != Guard::None {
            r = r.baseline("p3.guesses.none");
        }
        guesses.push(r);
        let mut r = Row::new(
            &format!("p3.after_threshold.{}", g.id()),
            &format!("guesses past the threshold ({max}), {}", g.label()),
            "guesses",
            col(i, |a| a.after),
        );
        match g {
            Guard::SipFilter => {
                r = r
                    .baseline("p3.after_threshold.none")
                    .goal("zero guesses after the threshold for sip-filter", 0.0)
            }
            Guard::Fail2ban => r = r.baseline("p3.after_threshold.none"),
            Guard::None => {}
        }
        after.push(r);
        if *g != Guard::None {
            let mut r = Row::new(
                &format!("p3.time_to_drop.{}", g.id()),
                &format!("threshold answer to first dropped guess, {}", g.label()),
                "ms",
                col(i, |a| a.to_drop_ms),
            );
            if *g == Guard::SipFilter {
                r = r.baseline("p3.time_to_drop.fail2ban");
            }
            to_drop.push(r);
        }
    }
    let med = |rows: &[Row], id: &str| {
        rows.iter()
            .find(|r| r.id == id)
            .and_then(Row::summary)
            .map_or(f64::NAN, |s| s.median)
    };
    let sf_after = med(&after, "p3.after_threshold.sip_filter");
    let f2b_after = med(&after, "p3.after_threshold.fail2ban");
    let none_after = med(&after, "p3.after_threshold.none");
    let sf_drop = med(&to_drop, "p3.time_to_drop.sip_filter");
    let f2b_drop = med(&to_drop, "p3.time_to_drop.fail2ban");

    let mut part = Part::new(
        3,
        TITLE_3,
        &format!(
            "`svcrack` (SIPVicious, its default pace: a guess every ~5 ms) from the lab's attacker \
             ({}) tries a dictionary of wrong passwords for extension 101 on the lab's Kamailio \
             for {window} s per run, then is stopped. Variants: **sip-filter** on the PBX's \
             interface (detached and attached again before each run: fresh bans and counts); \
             **fail2ban** {} from Debian's package, started for each run in the PBX's namespace \
             with its own configuration directory, socket and pid file, one jail on Kamailio's \
             log line for a request with credentials answered 401/403, `maxretry = {max}`, \
             `findtime`/`bantime` as sip-filter's ({} / {}), `backend = pyinotify`, action \
             `nftables-allports` (UDP, drop) at inet input; **nothing** (filter detached). \
             *Guesses* are credentialed requests in Kamailio's own request log; *past the \
             threshold* are those beyond the {max}th. *Time to drop*: from the {max}th failure \
             answer reaching the attacker to the first request of the attacker that got no \
             answer, both from a capture on the attacker's interface (a packet dropped by XDP or \
             by nftables gets no answer).",
            lab::ATTACKER,
            fail2ban_version(),
            cfg.find_time,
            cfg.ban_time,
        ),
    );
    let mut t = Table::figures(
        "p3.guesses",
        "Guesses that reached the PBX",
        &format!(
            "In {window} s of svcrack; ratio against no protection in the same round. Extra \
             columns, from the attacker's capture: credentialed requests (guesses) and all \
             requests svcrack sent (it asks for a fresh challenge, without credentials, when a \
             guess gets no answer)."
        ),
        guesses,
    );
    t.show_delta = false;
    part.tables.push(t);
    let mut t = Table::figures(
        "p3.after_threshold",
        "Guesses after the threshold",
        "Guesses that reached Kamailio beyond `max_failures`.",
        after,
    );
    t.show_delta = false;
    part.tables.push(t);
    let mut t = Table::figures(
        "p3.time_to_drop",
        "Threshold to first dropped packet",
        "From the answer to the threshold-crossing guess to the first request that got no \
         answer (ratio: sip-filter against fail2ban in the same round). For sip-filter the ban \
         is in force from that answer on (its TC egress program bans as the answer leaves), so \
         this is svcrack's pause before its next request.",
        to_drop,
    );
    t.show_delta = false;
    part.tables.push(t);
    part.notes.push(
        "fail2ban reads Kamailio's log (inotify), matches the line, then runs `nft add element`: \
         the attacker keeps guessing until that set element exists; sip-filter counts the \
         answers in the kernel and bans as the threshold answer leaves."
            .into(),
    );
    part.summary.push(format!(
        "Part 3: guesses past the threshold, median: sip-filter {sf_after:.0}, fail2ban \
         {f2b_after:.0}, none {none_after:.0}; threshold to first drop: sip-filter {sf_drop:.1} ms, \
         fail2ban {f2b_drop:.0} ms."
    ));
    Ok(part)
}

fn fail2ban_version() -> String {
    std::process::Command::new("fail2ban-server")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "fail2ban".into())
}

// ---------------------------------------------------------------------------------------------
// Part 4
// ---------------------------------------------------------------------------------------------

/// The flood: a REGISTER for an existing extension without credentials (Kamailio answers each
/// with a digest challenge), sent and forgotten.
const FLOOD_XML: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="flood: unauthenticated REGISTER">
  <send>
    <![CDATA[

      REGISTER sip:[remote_ip] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:101@pbx.lab>;tag=[pid]-[call_number]
      To: <sip:101@pbx.lab>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:101@[local_ip]:[local_port]>
      Max-Forwards: 70
      Expires: 300
      User-Agent: flood
      Content-Length: 0

    ]]>
  </send>
</scenario>
"#;

fn flood(ns: &Netns, dir: &Path, me: IpAddr, tag: &str) -> Result<Tool> {
    let xml = dir.join("flood.xml");
    std::fs::write(&xml, FLOOD_XML)?;
    let mut cmd = ns.command("sipp");
    cmd.arg(lab::PBX)
        .arg("-sf")
        .arg(&xml)
        .args(["-i", &me.to_string(), "-p", "5070", "-t", "u1"])
        // As fast as SIPp goes: far more calls per second than it can make.
        .args(["-r", "1000000", "-rp", "1000", "-l", "1000000"])
        .args(["-m", "100000000", "-nostdin", "-nd"])
        .current_dir(dir);
    Tool::spawn("sipp flood", cmd, dir.join(format!("flood-{tag}.out")))
}

/// Packets a lab host sent into the switch so far (its switch port's receive counter).
fn port_rx(sw: &Netns, port: &str) -> f64 {
    let Ok(out) = sw.exec("ip", &["-j", "-s", "link", "show", "dev", port]) else {
        return f64::NAN;
    };
    serde_json::from_str::<serde_json::Value>(&out)
        .ok()
        .and_then(|v| v[0]["stats64"]["rx"]["packets"].as_f64())
        .unwrap_or(f64::NAN)
}

/// utime + stime of `pids`, in seconds.
fn cpu_secs(pids: &[i32]) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            // After the command: state is field 3, utime 14, stime 15 (1-based in stat).
            let u: f64 = f.get(11)?.parse().ok()?;
            let st: f64 = f.get(12)?.parse().ok()?;
            Some((u + st) / tck)
        })
        .sum()
}

/// Latency of each successful registration from `client`, in ms: from its first REGISTER
/// leaving to the 200 arriving, paired by Call-ID (a capture on the client's interface).
fn register_latencies(pkts: &[SipPacket], client: IpAddr) -> Vec<f64> {
    let mut first: HashMap<&str, f64> = HashMap::new();
    let mut v = Vec::new();
    for p in pkts {
        let Some(id) = p.call_id.as_deref() else {
            continue;
        };
        match p.kind {
            Kind::Request { .. } if p.src == client => {
                first.entry(id).or_insert(p.at);
            }
            Kind::Response { code: 200 } if p.dst == client => {
                if let Some(t) = first.remove(id) {
                    v.push((p.at - t) * 1e3);
                }
            }
            _ => {}
        }
    }
    v
}

struct Shield {
    success_pct: f64,
    lat_median: f64,
    lat_p99: f64,
    cpu_pct: f64,
    flood_pps: f64,
    registrations: f64,
}

fn shield(
    lab: &mut Lab,
    attached: &mut bool,
    with: bool,
    secs: f64,
    round: usize,
) -> Result<Shield> {
    set_filter(lab, attached, with)?;
    if with {
        lab.filter
            .cli_ok(&["ban", "add", lab::ATTACKER, "--reason", "bench"]);
    }
    let dir = lab.dir.path().join(format!("p4-{round}"));
    std::fs::create_dir_all(&dir)?;
    let mut floods = vec![
        flood(&lab.attacker.ns, &dir, lab.attacker.addr, "banned")?,
        flood(&lab.geo.ns, &dir, lab.geo.addr, "geo")?,
    ];
    sleep(0.5);
    for f in &mut floods {
        if !f.running() {
            bail!("the SIPp flood ended early:\n{}", f.output());
        }
    }
    let sw = &lab.filter.link.client;
    let rx0 = port_rx(sw, "attacker") + port_rx(sw, "geo");
    let pids = lab.kamailio.pids();
    let cpu0 = cpu_secs(&pids);
    let t0 = Instant::now();
    let rate = 20.0;
    let phones = Phones {
        accounts: lab::accounts(150..=199),
        rate,
        total: (rate * secs).round() as usize,
        answer_timeout: Duration::from_secs(2),
    };
    let mut cap = Capture::start(&lab.office_gw.ns, "eth0", &dir)?;
    let mut sipp = lab.sipp_from(&lab.office_gw, &phones)?;
    let stats = sipp.finish(Duration::from_secs_f64(secs + 30.0));
    let el = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_secs(&pids);
    let rx1 = port_rx(sw, "attacker") + port_rx(sw, "geo");
    for f in &mut floods {
        f.stop();
    }
    let stats = stats?;
    if with {
        lab.filter.cli_ok(&["ban", "del", lab::ATTACKER]);
    }
    let pkts = cap.finish()?;
    let mut lat = register_latencies(&pkts, lab.office_gw.addr);
    lat.sort_by(f64::total_cmp);
    let (lat_median, lat_p99) = if lat.is_empty() {
        (f64::NAN, f64::NAN)
    } else {
        let s = Summary::of(&lat).expect("non-empty");
        let i = ((lat.len() as f64 * 0.99).ceil() as usize).clamp(1, lat.len()) - 1;
        (s.median, lat[i])
    };
    Ok(Shield {
        success_pct: 100.0 * stats.successful as f64 / (stats.created.max(1)) as f64,
        lat_median,
        lat_p99,
        cpu_pct: 100.0 * (cpu1 - cpu0) / el,
        flood_pps: (rx1 - rx0) / el,
        registrations: stats.created as f64,
    })
}

/// Part 4: shielding the PBX.
pub fn part4(p: &Profile) -> Result<Part> {
    let secs = if p.name == "quick" { 3.0 } else { 8.0 };
    // Registrations from the office router's own address (not banned, not geo-blocked), so
    // that a capture on its interface times each one.
    let mut lab = Lab::start(LabConfig::default())?;
    let mut attached = true;
    let mut variants = [true, false];
    let mut round = 0usize;
    let runs = interleave(&mut variants, p.rounds, |with| {
        round += 1;
        shield(&mut lab, &mut attached, *with, secs, round)
    })?;
    drop(lab);
    let col = |i: usize, f: fn(&Shield) -> f64| runs[i].iter().map(f).collect::<Vec<f64>>();
    let name = |with: bool| if with { "with" } else { "without" };
    let label = |with: bool| {
        if with {
            "with sip-filter"
        } else {
            "without sip-filter"
        }
    };
    let mut success = Vec::new();
    let mut latency = Vec::new();
    let mut cpu = Vec::new();
    for (i, with) in variants.iter().copied().enumerate() {
        let mut r = Row::new(
            &format!("p4.register_success.{}", name(with)),
            &format!("registrations that succeed, {}", label(with)),
            "%",
            col(i, |s| s.success_pct),
        )
        .extra("started", "registrations", col(i, |s| s.registrations));
        if with {
            r = r.baseline("p4.register_success.without");
        }
        success.push(r);
        let mut r = Row::new(
            &format!("p4.register_latency.{}", name(with)),
            &format!("registration latency (median), {}", label(with)),
            "ms",
            col(i, |s| s.lat_median),
        )
        .extra("p99", "ms", col(i, |s| s.lat_p99));
        if with {
            r = r.baseline("p4.register_latency.without");
        }
        latency.push(r);
        let mut r = Row::new(
            &format!("p4.kamailio_cpu.{}", name(with)),
            &format!("Kamailio's CPU, {}", label(with)),
            "% of a core",
            col(i, |s| s.cpu_pct),
        )
        .extra("flood", "packets/s", col(i, |s| s.flood_pps));
        if with {
            r = r.baseline("p4.kamailio_cpu.without");
        }
        cpu.push(r);
    }
    let med = |rows: &[Row], id: &str| {
        rows.iter()
            .find(|r| r.id == id)
            .and_then(Row::summary)
            .map_or(f64::NAN, |s| s.median)
    };
    let flood_med = |i: usize| Summary::of(&col(i, |s| s.flood_pps)).map_or(f64::NAN, |s| s.median);
    let summary = format!(
        "Part 4: under SIPp floods from a banned and a geo-blocked source ({:.0} packets/s \
         reached with sip-filter, {:.0} without), legitimate registrations succeeded {:.0}% with \
         sip-filter and {:.0}% without (median latency {:.1} ms against {:.1} ms); Kamailio used \
         {:.1}% of a core with it and {:.0}% without.",
        flood_med(0),
        flood_med(1),
        med(&success, "p4.register_success.with"),
        med(&success, "p4.register_success.without"),
        med(&latency, "p4.register_latency.with"),
        med(&latency, "p4.register_latency.without"),
        med(&cpu, "p4.kamailio_cpu.with"),
        med(&cpu, "p4.kamailio_cpu.without"),
    );
    let mut part = Part::new(
        4,
        TITLE_4,
        &format!(
            "Two SIPp instances flood the lab's Kamailio with unauthenticated REGISTERs (each \
             answered with a digest challenge when it reaches Kamailio), as fast as SIPp sends \
             (`-r 1000000 -rp 1000`, one UDP socket each): one from {} (banned with \
             `sip-filter ban add` in the *with* variant), one from {} (in the geo-blocked \
             country). Meanwhile SIPp registers 50 phones (digest authentication) from the \
             office's address at 20 per second for {secs} s, each registration failing after \
             2 s without an answer (retransmissions every 500 ms). *Latency*: from a capture \
             on the office's interface, per successful registration (paired by Call-ID), from \
             its first REGISTER leaving to the 200 arriving; median per round, p99 beside it. \
             *Kamailio's CPU*: utime + stime of its main process and workers \
             (`/proc/<pid>/stat`) over the registration run, per second of wall time. The \
             flood rate is the packets the two flooders put on the switch. *Without*: \
             sip-filter detached.",
            lab::ATTACKER,
            lab::GEO,
        ),
    );
    part.tables.push(Table::figures(
        "p4.register_success",
        "Legitimate registrations that succeed",
        "",
        success,
    ));
    part.tables.push(Table::figures(
        "p4.register_latency",
        "Their latency",
        "",
        latency,
    ));
    part.tables.push(Table::figures(
        "p4.kamailio_cpu",
        "Kamailio's CPU during the flood",
        "Extra column: the flood rate reached (both sources together).",
        cpu,
    ));
    part.notes.push(
        "The flood rate is what two SIPp processes reach on this 2-core machine while Kamailio \
         runs beside them: without sip-filter Kamailio takes CPU from the flooders (and answers \
         every request with a challenge they must receive), so the rate reached is lower than \
         with it."
            .into(),
    );
    part.notes.push(
        "Kamailio's CPU is read in clock ticks (10 ms): with sip-filter it is a few ticks over \
         the run, at the resolution of the measure (a round can read 0)."
            .into(),
    );
    part.summary.push(summary);
    Ok(part)
}
