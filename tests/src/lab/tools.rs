//! The real tools, run inside the lab's hosts: SIPVicious (`svmap`, `svwar`, `svcrack`,
//! Debian's `sipvicious` 0.3.3) for the attacks and SIPp (`sip-tester`) for the phones.
//!
//! Quirks of sipvicious 0.3.3 that shape the commands below: `svcrack` and `svwar` ignore
//! `--bindingip` (it is never passed on), so each attacker host has one address per family
//! and `-x` sets the address written in Via; `svcrack` waits 10 s on its socket after its
//! last guess, so tests end it by pid once they have what they need.
use std::{
    net::IpAddr,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::kamailio::REALM;
use crate::netns::{Netns, Proc};

/// Every program the lab runs; a missing one fails the lab's start with this list.
pub const REQUIRED: &[(&str, &str)] = &[
    ("kamailio", "kamailio"),
    ("sipp", "sip-tester"),
    ("svcrack", "sipvicious"),
    ("svwar", "sipvicious"),
    ("svmap", "sipvicious"),
    ("nft", "nftables"),
    ("nsenter", "util-linux"),
    ("ip", "iproute2"),
    ("tcpdump", "tcpdump"),
];

/// Fails (never skips) when a program the lab needs is not installed.
pub fn check_installed() -> Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    // Root's sbin directories, in case PATH lacks them (kamailio lives in /usr/sbin).
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    let missing: Vec<String> = REQUIRED
        .iter()
        .filter(|(prog, _)| !dirs.iter().any(|d| d.join(prog).is_file()))
        .map(|(prog, pkg)| format!("{prog} (Debian package {pkg})"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "the lab needs {}: run `cargo xtask setup`",
            missing.join(", ")
        );
    }
    Ok(())
}

/// A running tool, ended by its pid on drop; its stdout and stderr go to one file.
pub struct Tool {
    pub name: String,
    proc: Proc,
    out: PathBuf,
    pub started: Instant,
}

impl Tool {
    pub fn spawn(name: &str, mut cmd: Command, out: PathBuf) -> Result<Tool> {
        // If this process dies without unwinding, the tool does not outlive it.
        // SAFETY: prctl only, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let proc = Proc::spawn(cmd, &out).with_context(|| format!("starting {name}"))?;
        Ok(Tool {
            name: name.to_string(),
            proc,
            out,
            started: Instant::now(),
        })
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }

    pub fn running(&mut self) -> bool {
        matches!(self.proc.child.try_wait(), Ok(None))
    }

    /// Waits for the tool to end by itself; past `timeout` it is killed and this fails.
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        match self.proc.wait_exit(timeout) {
            Ok(s) => Ok(s),
            Err(e) => {
                self.stop();
                bail!("{} did not finish: {e}\n{}", self.name, self.output())
            }
        }
    }

    /// Asks the tool to end (SIGTERM by pid), SIGKILL after `grace`.
    pub fn terminate(&mut self, grace: Duration) {
        if self.running() {
            self.proc.signal(libc::SIGTERM);
            if self.proc.wait_exit(grace).is_err() {
                self.stop();
            }
        }
    }

    /// Ends the tool now (SIGKILL by pid) and reaps it.
    pub fn stop(&mut self) {
        if self.running() {
            self.proc.signal(libc::SIGKILL);
            let _ = self.proc.child.wait();
        }
    }
}

fn family_flag(target: IpAddr) -> Option<&'static str> {
    target.is_ipv6().then_some("-6")
}

/// The address sipvicious writes in Via (`-x`). It writes `host:port` as given, so an IPv6
/// address needs its brackets, or Kamailio cannot parse the Via and drops the request.
fn via_host(me: IpAddr) -> String {
    match me {
        IpAddr::V6(a) => format!("[{a}]"),
        IpAddr::V4(a) => a.to_string(),
    }
}

/// What svcrack attacks, and how.
#[derive(Clone, Debug)]
pub struct Crack {
    /// The extension registered (To).
    pub ext: u16,
    /// The digest user name, when it is not the extension (svcrack's `-e`).
    pub user: Option<u16>,
    pub dictionary: Vec<String>,
    /// svcrack's pause before each send (its default: 5 ms).
    pub selecttime: Option<f64>,
}

/// `svcrack` from `host`, whose address is `me`.
pub fn svcrack(
    host: &Netns,
    dir: &Path,
    me: IpAddr,
    target: IpAddr,
    crack: &Crack,
) -> Result<Tool> {
    let ext = crack.ext;
    let dict = dir.join(format!("svcrack-{ext}-{}.txt", crate::netns::unique("d")));
    std::fs::write(&dict, crack.dictionary.join("\n") + "\n")?;
    let mut cmd = host.command("svcrack");
    let user = crack.user.unwrap_or(ext);
    cmd.args(family_flag(target))
        .args(["-u", &user.to_string(), "-e", &ext.to_string(), "-d"])
        .arg(&dict)
        .args(["-x", &via_host(me), "--maximumtime", "30"]);
    if let Some(t) = crack.selecttime {
        cmd.args(["-t", &t.to_string()]);
    }
    cmd.arg(target.to_string());
    Tool::spawn(
        "svcrack",
        cmd,
        dir.join(format!("svcrack-{}.out", host.name)),
    )
}

/// `svwar`: enumerates the extensions in `range` (e.g. "90-130") with REGISTERs.
pub fn svwar(host: &Netns, dir: &Path, me: IpAddr, target: IpAddr, range: &str) -> Result<Tool> {
    let mut cmd = host.command("svwar");
    cmd.args(family_flag(target))
        .args(["-e", range, "-x", &via_host(me), "--maximumtime", "3"])
        .arg(target.to_string());
    Tool::spawn("svwar", cmd, dir.join(format!("svwar-{}.out", host.name)))
}

/// `svmap`: looks for a SIP device at `target` with an OPTIONS request, from `me`.
pub fn svmap(host: &Netns, dir: &Path, me: IpAddr, target: IpAddr) -> Result<Tool> {
    let mut cmd = host.command("svmap");
    cmd.args(family_flag(target))
        .args(["-b", &me.to_string(), "-x", &via_host(me)])
        .arg(target.to_string());
    Tool::spawn("svmap", cmd, dir.join(format!("svmap-{me}.out")))
}

/// Extensions `svwar` reports in its result table.
pub fn svwar_found(output: &str) -> Vec<u16> {
    table_first_column(output)
}

/// The password `svcrack` reports, if it found one.
pub fn svcrack_found(output: &str) -> Option<String> {
    output
        .lines()
        .filter(|l| l.starts_with('|') && !l.contains("Password"))
        .find_map(|l| l.split('|').nth(2).map(|p| p.trim().to_string()))
        .filter(|p| !p.is_empty())
}

/// Whether `svmap` found a SIP device (its table lists one row per device).
pub fn svmap_found(output: &str) -> bool {
    output
        .lines()
        .any(|l| l.starts_with('|') && l.contains(":5060"))
}

fn table_first_column(output: &str) -> Vec<u16> {
    output
        .lines()
        .filter(|l| l.starts_with('|'))
        .filter_map(|l| l.split('|').nth(1)?.trim().parse().ok())
        .collect()
}

/// SIPp's registration scenario: REGISTER, 401 with a challenge, REGISTER with the digest
/// answer (`[field1]` is an `[authentication ...]` keyword from the injection file: SIPp 3.6
/// does not expand `[fieldN]` inside `[authentication]` itself), 200.
pub const REGISTER_XML: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="lab phone: register with digest authentication">
  <send retrans="500">
    <![CDATA[

      REGISTER sip:[remote_ip] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:[field0]@REALM>;tag=[pid]-[call_number]
      To: <sip:[field0]@REALM>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:[field0]@[local_ip]:[local_port]>
      Max-Forwards: 70
      Expires: 300
      User-Agent: lab-phone
      Content-Length: 0

    ]]>
  </send>
  <recv response="401" auth="true"/>
  <send retrans="500">
    <![CDATA[

      REGISTER sip:[remote_ip] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:[field0]@REALM>;tag=[pid]-[call_number]
      To: <sip:[field0]@REALM>
      Call-ID: [call_id]
      CSeq: 2 REGISTER
      Contact: <sip:[field0]@[local_ip]:[local_port]>
      [field1]
      Max-Forwards: 70
      Expires: 300
      User-Agent: lab-phone
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"#;

/// A REGISTER flood: one REGISTER per call, never answering the challenge (so it never
/// fails authentication: only the flood guard stops it).
pub fn register_flood_xml() -> String {
    scenario(
        "register flood",
        &[send(
            false,
            "REGISTER sip:[remote_ip] SIP/2.0\n\
             Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport\n\
             From: <sip:100@REALM>;tag=[pid]-[call_number]\n\
             To: <sip:100@REALM>\n\
             Call-ID: [call_id]\n\
             CSeq: 1 REGISTER\n\
             Contact: <sip:100@[local_ip]:[local_port]>\n\
             Max-Forwards: 70\n\
             Expires: 300\n\
             User-Agent: lab-flood\n\
             Content-Length: 0\n",
        )],
    )
}

/// A scenario of the lab's phone: the XML around `steps` (`<send>`, `<recv>`, `<pause>`).
fn scenario(name: &str, steps: &[String]) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\" ?>\n\
         <!DOCTYPE scenario SYSTEM \"sipp.dtd\">\n\
         <scenario name=\"lab phone: {name}\">\n\
         {}</scenario>\n",
        steps.concat()
    )
}

/// A `<send>` of `message` (its lines, without indentation), retransmitted every 500 ms
/// until answered when `retrans`.
fn send(retrans: bool, message: &str) -> String {
    let retrans = if retrans { " retrans=\"500\"" } else { "" };
    let lines: String = message.lines().map(|l| format!("      {l}\n")).collect();
    format!("  <send{retrans}>\n    <![CDATA[\n\n{lines}\n    ]]>\n  </send>\n")
}

/// A `<recv>` of a response with `code`, and the attributes in `attrs` (e.g. ` optional="true"`).
fn recv(code: u16, attrs: &str) -> String {
    format!("  <recv response=\"{code}\"{attrs}/>\n")
}

/// The call's INVITE (`[field0]` calls `[field1]`), number `cseq`; with `auth`, the digest
/// answer `[field2]` to the PBX's challenge.
fn call_invite(cseq: u32, auth: bool) -> String {
    let auth = if auth { "[field2]\n" } else { "" };
    send(
        true,
        &format!(
            "INVITE sip:[field1]@[remote_ip] SIP/2.0\n\
             Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport\n\
             From: <sip:[field0]@REALM>;tag=[pid]-[call_number]\n\
             To: <sip:[field1]@REALM>\n\
             Call-ID: [call_id]\n\
             CSeq: {cseq} INVITE\n\
             Contact: <sip:[field0]@[local_ip]:[local_port]>\n\
             {auth}\
             Max-Forwards: 70\n\
             User-Agent: lab-phone\n\
             Content-Length: 0\n"
        ),
    )
}

/// The ACK of a final answer other than 2xx to INVITE `cseq`: in its transaction, whose
/// branch is SIPp's `[branch-N]` (`branch`).
fn failure_ack(branch: &str, cseq: u32) -> String {
    send(
        false,
        &format!(
            "ACK sip:[field1]@[remote_ip] SIP/2.0\n\
             Via: SIP/2.0/[transport] [local_ip]:[local_port];branch={branch};rport\n\
             From: <sip:[field0]@REALM>;tag=[pid]-[call_number]\n\
             To: <sip:[field1]@REALM>[peer_tag_param]\n\
             Call-ID: [call_id]\n\
             CSeq: {cseq} ACK\n\
             Max-Forwards: 70\n\
             Content-Length: 0\n"
        ),
    )
}

/// A request in the call's dialog (the ACK of the 200, BYE), along its route set.
fn in_dialog(retrans: bool, method: &str, cseq: u32) -> String {
    send(
        retrans,
        &format!(
            "{method} [next_url] SIP/2.0\n\
             Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport\n\
             From: <sip:[field0]@REALM>;tag=[pid]-[call_number]\n\
             To: <sip:[field1]@REALM>[peer_tag_param]\n\
             [routes]\n\
             Call-ID: [call_id]\n\
             CSeq: {cseq} {method}\n\
             Max-Forwards: 70\n\
             Content-Length: 0\n"
        ),
    )
}

/// A call up to the credentialed INVITE: INVITE, the PBX's 407 challenge and its ACK, the
/// INVITE again with the digest answer, its optional 100.
fn challenged_invite() -> Vec<String> {
    vec![
        call_invite(1, false),
        recv(100, " optional=\"true\""),
        recv(407, " auth=\"true\""),
        failure_ack("[branch-3]", 1),
        call_invite(2, true),
        recv(100, " optional=\"true\""),
    ]
}

/// A phone's call (SIPp): INVITE, the PBX's 407 challenge, the INVITE again with the digest
/// answer, the trunk's 180/200, ACK and, half a second later, BYE (the ACK and BYE go to the
/// PBX, which relays them to the trunk). Fields: extension, dialled number, the
/// `[authentication ...]` keyword.
pub fn call_xml() -> String {
    let mut steps = challenged_invite();
    steps.extend([
        recv(180, " optional=\"true\""),
        recv(200, " rrs=\"true\""),
        in_dialog(false, "ACK", 2),
        "  <pause milliseconds=\"500\"/>\n".into(),
        in_dialog(true, "BYE", 3),
        recv(200, ""),
    ]);
    scenario("a call with digest authentication", &steps)
}

/// A phone's call the filter refuses: the first INVITE (before any challenge) gets a 403
/// and nothing else; the phone ACKs it. Any other answer (a 407: the PBX saw the INVITE) fails
/// the call. Fields: extension, dialled number.
pub fn refused_call_xml() -> String {
    scenario(
        "a call the filter refuses",
        &[
            call_invite(1, false),
            recv(403, ""),
            failure_ack("[branch-2]", 1),
        ],
    )
}

/// What a phone's call is expected to get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallOutcome {
    /// Authenticated, relayed to the trunk, answered, hung up ([`call_xml`]).
    Connected,
    /// Refused by the filter with a 403 to the first INVITE ([`refused_call_xml`]).
    Refused,
    /// Challenged by the PBX, then refused by the filter with a 403 to the credentialed
    /// INVITE (the call limits: [`held_call_xml`]).
    RefusedAfterChallenge,
}

/// A call refused at its credentialed INVITE: [`call_xml`] up to it, then a 403 and its ACK.
pub fn held_call_xml() -> String {
    let mut steps = challenged_invite();
    steps.extend([recv(403, ""), failure_ack("[branch-6]", 2)]);
    scenario("a call refused after the challenge", &steps)
}

/// How a SIPp run registers phones.
#[derive(Clone, Debug)]
pub struct Phones {
    /// (extension, password) of each phone; each call registers the next one, in turn.
    pub accounts: Vec<(u16, String)>,
    /// Registrations started per second.
    pub rate: f64,
    /// Registrations in all.
    pub total: usize,
    /// A registration with no answer this long fails (SIPp's -recv_timeout).
    pub answer_timeout: Duration,
}

/// SIPp's counters at the end of a run (its `-trace_stat` file).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SippStats {
    pub created: u64,
    pub successful: u64,
    pub failed: u64,
    pub retransmissions: u64,
}

pub struct Sipp {
    pub tool: Tool,
    stat: PathBuf,
}

impl Sipp {
    /// Starts SIPp in `host`, from `me`, registering `phones` at `target`. Every call uses its
    /// own socket (`-t un`), as separate phones do.
    pub fn start(
        host: &Netns,
        dir: &Path,
        me: IpAddr,
        target: IpAddr,
        phones: &Phones,
    ) -> Result<Sipp> {
        Self::start_on(host, dir, me, target, phones, "un")
    }

    /// [`Sipp::start`] over SIPp's transport `transport` (`un`: a UDP socket per call; `t1`:
    /// one TCP connection for all).
    pub fn start_on(
        host: &Netns,
        dir: &Path,
        me: IpAddr,
        target: IpAddr,
        phones: &Phones,
        transport: &str,
    ) -> Result<Sipp> {
        let tag = crate::netns::unique("s");
        let xml = dir.join("register.xml");
        std::fs::write(&xml, REGISTER_XML.replace("REALM", REALM))?;
        let csv = dir.join(format!("phones-{tag}.csv"));
        let mut users = String::from("SEQUENTIAL\n");
        for (ext, pw) in &phones.accounts {
            users.push_str(&format!(
                "{ext};[authentication username={ext} password={pw}]\n"
            ));
        }
        std::fs::write(&csv, users)?;
        let stat = dir.join(format!("sipp-{tag}-stat.csv"));
        let remote = match target {
            IpAddr::V6(a) => format!("[{a}]"),
            IpAddr::V4(a) => a.to_string(),
        };
        let mut cmd = host.command("sipp");
        cmd.arg(remote)
            .arg("-sf")
            .arg(&xml)
            .arg("-inf")
            .arg(&csv)
            .args([
                "-i",
                &me.to_string(),
                "-t",
                transport,
                "-max_socket",
                "2048",
            ])
            // No default BYE on failed calls: a failed registration is just that.
            .arg("-nd")
            // Calls per 10 s, so that fractional rates work.
            .args([
                "-r",
                &format!("{}", (phones.rate * 10.0).round().max(1.0) as u64),
            ])
            .args(["-rp", "10000"])
            .args(["-m", &phones.total.to_string()])
            .args(["-l", "200"])
            .args([
                "-recv_timeout",
                &phones.answer_timeout.as_millis().to_string(),
            ])
            .args(["-nostdin", "-trace_stat", "-fd", "1", "-stf"])
            .arg(&stat)
            .current_dir(dir);
        let tool = Tool::spawn("sipp", cmd, dir.join(format!("sipp-{tag}.out")))?;
        Ok(Sipp { tool, stat })
    }

    /// One call from `me` (extension `ext`, its lab password) to `number` through the PBX at
    /// `target`, scripted for the `expect`ed outcome: it succeeds (`successful == 1`) only if
    /// that is what happened.
    pub fn call(
        host: &Netns,
        dir: &Path,
        me: IpAddr,
        target: IpAddr,
        ext: u16,
        number: &str,
        expect: CallOutcome,
    ) -> Result<Sipp> {
        let tag = crate::netns::unique("c");
        let (name, text) = match expect {
            CallOutcome::Connected => ("call.xml", call_xml()),
            CallOutcome::Refused => ("refused-call.xml", refused_call_xml()),
            CallOutcome::RefusedAfterChallenge => ("held-call.xml", held_call_xml()),
        };
        let xml = dir.join(name);
        std::fs::write(&xml, text.replace("REALM", REALM))?;
        let csv = dir.join(format!("call-{tag}.csv"));
        let pw = super::kamailio::password(ext);
        std::fs::write(
            &csv,
            format!("SEQUENTIAL\n{ext};{number};[authentication username={ext} password={pw}]\n"),
        )?;
        let stat = dir.join(format!("sipp-{tag}-stat.csv"));
        let mut cmd = host.command("sipp");
        cmd.arg(target.to_string())
            .arg("-sf")
            .arg(&xml)
            .arg("-inf")
            .arg(&csv)
            .args(["-i", &me.to_string(), "-m", "1", "-nd"])
            .args(["-recv_timeout", "5000"])
            .args(["-nostdin", "-trace_stat", "-fd", "1", "-stf"])
            .arg(&stat)
            .current_dir(dir);
        let tool = Tool::spawn("sipp", cmd, dir.join(format!("sipp-{tag}.out")))?;
        Ok(Sipp { tool, stat })
    }

    /// A REGISTER flood from `me` at `target`: `rate` a second, `total` in all, one socket.
    pub fn flood(
        host: &Netns,
        dir: &Path,
        me: IpAddr,
        target: IpAddr,
        rate: u32,
        total: u32,
    ) -> Result<Sipp> {
        let xml = dir.join("register-flood.xml");
        std::fs::write(&xml, register_flood_xml().replace("REALM", REALM))?;
        let stat = dir.join("sipp-flood-stat.csv");
        let mut cmd = host.command("sipp");
        cmd.arg(target.to_string())
            .arg("-sf")
            .arg(&xml)
            .args(["-i", &me.to_string(), "-nd"])
            .args(["-r", &rate.to_string(), "-m", &total.to_string()])
            .args(["-nostdin", "-trace_stat", "-fd", "1", "-stf"])
            .arg(&stat)
            .current_dir(dir);
        let tool = Tool::spawn("sipp", cmd, dir.join("sipp-flood.out"))?;
        Ok(Sipp { tool, stat })
    }

    /// The trunk: SIPp's built-in answering scenario on `me`:5060 (180, 200, then the
    /// caller's BYE), every message it gets written to `messages`.
    pub fn trunk(host: &Netns, dir: &Path, me: IpAddr, messages: &Path) -> Result<Sipp> {
        let stat = dir.join("sipp-trunk-stat.csv");
        let mut cmd = host.command("sipp");
        cmd.args(["-sn", "uas", "-i", &me.to_string(), "-p", "5060"])
            .args(["-trace_msg", "-message_file"])
            .arg(messages)
            .args(["-nostdin", "-trace_stat", "-fd", "1", "-stf"])
            .arg(&stat)
            .current_dir(dir);
        let tool = Tool::spawn("sipp", cmd, dir.join("sipp-trunk.out"))?;
        Ok(Sipp { tool, stat })
    }

    /// The latest counters SIPp wrote (every second, and at the end).
    pub fn stats(&self) -> Option<SippStats> {
        parse_stats(&std::fs::read_to_string(&self.stat).ok()?)
    }

    /// Waits for the run to end and returns its final counters.
    pub fn finish(&mut self, timeout: Duration) -> Result<SippStats> {
        self.tool.wait(timeout)?;
        self.stats()
            .with_context(|| format!("no statistics from sipp:\n{}", self.tool.output()))
    }
}

/// Reads the last line of SIPp's statistics file (`;`-separated, with a header line).
fn parse_stats(text: &str) -> Option<SippStats> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next()?.split(';').collect();
    let last: Vec<&str> = lines.next_back()?.split(';').collect();
    let get = |name: &str| -> Option<u64> {
        let i = header.iter().position(|h| *h == name)?;
        last.get(i)?.trim().parse().ok()
    };
    Some(SippStats {
        created: get("TotalCallCreated")?,
        successful: get("SuccessfulCall(C)")?,
        failed: get("FailedCall(C)")?,
        retransmissions: get("Retransmissions(C)").unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tool_tables() {
        let svwar = "+-----------+----------------+\n| Extension | Authentication |\n\
                     +===========+================+\n| 102       | reqauth        |\n\
                     +-----------+----------------+\n| 103       | reqauth        |\n";
        assert_eq!(svwar_found(svwar), vec![102, 103]);
        let crack = "+-----------+----------+\n| Extension | Password |\n\
                     +===========+==========+\n| 101       | pw-101   |\n";
        assert_eq!(svcrack_found(crack).as_deref(), Some("pw-101"));
        assert_eq!(svcrack_found("WARNING:root:found nothing\n"), None);
        assert!(svmap_found(
            "| SIP Device       | User Agent |\n| 203.0.113.1:5060 | lab-pbx    |\n"
        ));
        assert!(!svmap_found("| SIP Device | User Agent |\n"));
    }

    #[test]
    fn reads_sipp_statistics() {
        let text = "StartTime;TotalCallCreated;SuccessfulCall(C);FailedCall(C);Retransmissions(C);\n\
                    x;10;10;0;0;\nx;100;99;1;4;\n";
        assert_eq!(
            parse_stats(text),
            Some(SippStats {
                created: 100,
                successful: 99,
                failed: 1,
                retransmissions: 4
            })
        );
    }
}
