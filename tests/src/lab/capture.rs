//! A packet capture (tcpdump) on the PBX's interface, for what Kamailio's log cannot tell:
//! the exact moment a ban took effect. AF_PACKET sees an incoming frame after XDP, so a
//! dropped one never shows, and an outgoing one after the TC egress program, which issues
//! the ban as the PBX's answer to the threshold-crossing request leaves. So the answer that
//! crossed the threshold is in the capture, and a request from the banned source captured
//! after it would have got past the ban.
//!
//! Kamailio's log times each request when a worker handles it, which under load can be
//! well after the request passed the filter (it waited in the socket queue); the capture's
//! kernel timestamps have no such lag.
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};

use super::tools::Tool;
use crate::netns::{Netns, wait_for};

/// A SIP message seen on the PBX's interface.
#[derive(Clone, Debug)]
pub struct SipPacket {
    /// Kernel timestamp, seconds since the Unix epoch.
    pub at: f64,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The top Via's branch: pairs an answer with its request.
    pub branch: Option<String>,
    /// The Call-ID: pairs the steps of one registration (the benchmark's latencies).
    pub call_id: Option<String>,
    pub kind: Kind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Request { method: String, creds: bool },
    Response { code: u16 },
}

impl SipPacket {
    pub fn is_request(&self) -> bool {
        matches!(self.kind, Kind::Request { .. })
    }
}

/// What sip-filter counts towards a ban (README: "Digest-aware").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// 403, or 401/407 to a request that carried credentials.
    Auth,
    /// 404 to REGISTER or INVITE.
    NotFound,
}

/// When a source crossed a threshold, from the capture.
#[derive(Clone, Debug)]
pub struct Threshold {
    /// The request whose answer was the n-th failure, as it arrived.
    pub request_at: f64,
    /// That answer leaving the PBX: the ban is in force from here on.
    pub answer_at: f64,
}

pub struct Capture {
    tool: Tool,
    file: PathBuf,
}

impl Capture {
    /// Captures SIP (UDP 5060) on `iface` in `ns`, once tcpdump says it listens.
    pub fn start(ns: &Netns, iface: &str, dir: &Path) -> Result<Capture> {
        let file = dir.join(format!("{}.pcap", crate::netns::unique("pbx")));
        let mut cmd = ns.command("tcpdump");
        // --immediate-mode and -U: every packet handed over and written at once (by default
        // the kernel holds packets in a ring block for up to a second, and SIGTERM loses
        // that block); -Z root: keep the right to write in our directory (Debian's tcpdump
        // drops to its own user by default).
        cmd.args(["-i", iface, "-n", "-s", "0", "--immediate-mode", "-U"])
            .args(["-Z", "root", "-w"])
            .arg(&file)
            .args(["udp", "port", "5060"]);
        let out = dir.join(format!("tcpdump-{iface}.out"));
        let tool = Tool::spawn("tcpdump", cmd, out)?;
        let mut cap = Capture { tool, file };
        let ok = wait_for(Duration::from_secs(10), || {
            cap.tool.output().contains("listening on") || !cap.tool.running()
        });
        if !ok || !cap.tool.running() {
            bail!("tcpdump did not start: {}", cap.tool.output());
        }
        Ok(cap)
    }

    /// The SIP messages captured so far.
    pub fn packets(&self) -> Result<Vec<SipPacket>> {
        read(&self.file)
    }

    /// Ends tcpdump (SIGTERM, so it closes the file) and returns what it captured.
    pub fn finish(&mut self) -> Result<Vec<SipPacket>> {
        self.tool.terminate(Duration::from_secs(5));
        self.packets()
    }
}

/// Reads a capture file, keeping the SIP messages in it.
pub fn read(path: &Path) -> Result<Vec<SipPacket>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut r = match pcap_file::pcap::PcapReader::new(f) {
        Ok(r) => r,
        // tcpdump writes the header when it starts: an empty file is an empty capture.
        Err(_) if std::fs::metadata(path)?.len() == 0 => return Ok(Vec::new()),
        Err(e) => return Err(e).context("reading the capture"),
    };
    let mut v = Vec::new();
    while let Some(p) = r.next_packet() {
        let Ok(p) = p else {
            // A packet cut short at the end of a live capture.
            break;
        };
        if let Some(s) = parse(p.timestamp.as_secs_f64(), &p.data) {
            v.push(s);
        }
    }
    Ok(v)
}

fn parse(at: f64, frame: &[u8]) -> Option<SipPacket> {
    let pkt = SlicedPacket::from_ethernet(frame).ok()?;
    let (src, dst) = match pkt.net? {
        NetSlice::Ipv4(ip) => (
            IpAddr::V4(ip.header().source_addr()),
            IpAddr::V4(ip.header().destination_addr()),
        ),
        NetSlice::Ipv6(ip) => (
            IpAddr::V6(ip.header().source_addr()),
            IpAddr::V6(ip.header().destination_addr()),
        ),
        NetSlice::Arp(_) => return None,
    };
    let TransportSlice::Udp(udp) = pkt.transport? else {
        return None;
    };
    let text = String::from_utf8_lossy(udp.payload());
    let (kind, branch) = sip_summary(&text)?;
    Some(SipPacket {
        at,
        src,
        dst,
        branch,
        call_id: call_id(&text),
        kind,
    })
}

/// The start line and the parts of the headers the analysis needs.
fn sip_summary(text: &str) -> Option<(Kind, Option<String>)> {
    let mut lines = text.split("\r\n");
    let start = lines.next()?;
    let mut branch = None;
    let mut creds = false;
    for l in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = l.split_once(':')?;
        let name = name.trim().to_ascii_lowercase();
        if (name == "via" || name == "v") && branch.is_none() {
            branch = value
                .split(';')
                .find_map(|p| p.trim().strip_prefix("branch="))
                .map(|b| b.trim_end_matches(',').trim().to_string());
        }
        if name == "authorization" || name == "proxy-authorization" {
            creds = true;
        }
    }
    let kind = if let Some(rest) = start.strip_prefix("SIP/2.0 ") {
        Kind::Response {
            code: rest.get(..3)?.parse().ok()?,
        }
    } else {
        let method = start.split(' ').next()?.to_string();
        if method.is_empty() || !start.ends_with("SIP/2.0") {
            return None;
        }
        Kind::Request { method, creds }
    };
    Some((kind, branch))
}

/// The Call-ID header's value (`Call-ID` or its compact form `i`).
fn call_id(text: &str) -> Option<String> {
    text.split("\r\n")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            let name = name.trim().to_ascii_lowercase();
            (name == "call-id" || name == "i").then(|| value.trim().to_string())
        })
}

/// The failures of `client` as sip-filter counts them under `rule`, in the order they left:
/// (the request, its answer).
pub fn failures(pkts: &[SipPacket], client: IpAddr, rule: Rule) -> Vec<(&SipPacket, &SipPacket)> {
    let mut v = Vec::new();
    for ans in pkts.iter().filter(|p| p.dst == client) {
        let Kind::Response { code } = ans.kind else {
            continue;
        };
        let Some(req) = pkts
            .iter()
            .filter(|p| p.src == client && p.is_request() && p.at <= ans.at)
            .rev()
            .find(|p| p.branch.is_some() && p.branch == ans.branch)
        else {
            continue;
        };
        let Kind::Request { method, creds } = &req.kind else {
            continue;
        };
        let counts = match rule {
            Rule::Auth => code == 403 || (*creds && (code == 401 || code == 407)),
            Rule::NotFound => code == 404 && (method == "REGISTER" || method == "INVITE"),
        };
        if counts {
            v.push((req, ans));
        }
    }
    v.sort_by(|a, b| a.1.at.total_cmp(&b.1.at));
    v
}

/// When `client` crossed a threshold of `n` failures under `rule`, if it did.
pub fn threshold(pkts: &[SipPacket], client: IpAddr, n: usize, rule: Rule) -> Option<Threshold> {
    let f = failures(pkts, client, rule);
    let (req, ans) = f.get(n.checked_sub(1)?)?;
    Some(Threshold {
        request_at: req.at,
        answer_at: ans.at,
    })
}

/// Requests from `client` captured (that is: past the filter) after `t`.
pub fn requests_after(pkts: &[SipPacket], client: IpAddr, t: f64) -> Vec<&SipPacket> {
    pkts.iter()
        .filter(|p| p.src == client && p.is_request() && p.at > t)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(at: f64, branch: &str, creds: bool) -> SipPacket {
        SipPacket {
            at,
            src: "198.51.100.66".parse().unwrap(),
            dst: "203.0.113.1".parse().unwrap(),
            branch: Some(branch.into()),
            call_id: None,
            kind: Kind::Request {
                method: "REGISTER".into(),
                creds,
            },
        }
    }

    fn ans(at: f64, branch: &str, code: u16) -> SipPacket {
        SipPacket {
            at,
            src: "203.0.113.1".parse().unwrap(),
            dst: "198.51.100.66".parse().unwrap(),
            branch: Some(branch.into()),
            call_id: None,
            kind: Kind::Response { code },
        }
    }

    #[test]
    fn summarises_sip() {
        let (k, b) = sip_summary(
            "REGISTER sip:203.0.113.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.66:5060;branch=z9hG4bK-1;rport\r\n\
             authorization: Digest username=\"101\"\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            k,
            Kind::Request {
                method: "REGISTER".into(),
                creds: true
            }
        );
        assert_eq!(b.as_deref(), Some("z9hG4bK-1"));
        let (k, _) =
            sip_summary("SIP/2.0 404 Not Found\r\nv: SIP/2.0/UDP x;branch=b\r\n\r\n").unwrap();
        assert_eq!(k, Kind::Response { code: 404 });
        assert!(sip_summary("garbage").is_none());
    }

    #[test]
    fn challenges_to_requests_without_credentials_do_not_count() {
        let client: IpAddr = "198.51.100.66".parse().unwrap();
        let pkts = vec![
            req(1.0, "a", false),
            ans(1.1, "a", 401),
            req(2.0, "b", true),
            ans(2.1, "b", 401),
            req(3.0, "c", true),
            req(3.05, "d", true),
            ans(3.1, "c", 401),
            ans(3.2, "d", 200),
        ];
        let f = failures(&pkts, client, Rule::Auth);
        assert_eq!(f.len(), 2);
        let t = threshold(&pkts, client, 2, Rule::Auth).unwrap();
        assert_eq!((t.request_at, t.answer_at), (3.0, 3.1));
        assert_eq!(requests_after(&pkts, client, t.answer_at).len(), 0);
        assert_eq!(requests_after(&pkts, client, 3.0).len(), 1);
        assert!(threshold(&pkts, client, 3, Rule::Auth).is_none());
    }
}
