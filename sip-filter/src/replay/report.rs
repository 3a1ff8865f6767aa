//! Writing the report: a line (or JSON object) per packet, then the bans and the notes.
use std::{io::Write, net::IpAddr};

use anyhow::Result;

use super::{
    Direction, PacketResult, ReplayBan, ReplaySummary, TIMING_NOTE, Verdict, explain::ban_time_text,
};

pub(super) fn write_packet(out: &mut dyn Write, r: &PacketResult, json: bool) -> Result<()> {
    if json {
        serde_json::to_writer(&mut *out, r)?;
        writeln!(out)?;
        return Ok(());
    }
    let dir = match r.direction {
        Direction::Ingress => "in",
        Direction::Egress => "out",
    };
    let verdict = match r.verdict {
        Verdict::Pass => "pass",
        Verdict::Drop => "drop",
        Verdict::Answer => "403",
    };
    let cut = if r.truncated { " [cut by snaplen]" } else { "" };
    writeln!(
        out,
        "#{} {dir:<3} {} -> {} {verdict:<5} {}{cut}",
        r.index,
        endpoint(r.src, r.sport),
        endpoint(r.dst, r.dport),
        r.reason
    )?;
    Ok(())
}

/// "192.0.2.10:5062", "[2001:db8::1]:5060", or the address alone without ports.
pub(super) fn endpoint(ip: Option<IpAddr>, port: Option<u16>) -> String {
    match (ip, port) {
        (None, _) => "-".into(),
        (Some(ip), None) => ip.to_string(),
        (Some(IpAddr::V4(ip)), Some(p)) => format!("{ip}:{p}"),
        (Some(IpAddr::V6(ip)), Some(p)) => format!("[{ip}]:{p}"),
    }
}

pub(super) fn write_bans_json(out: &mut dyn Write, bans: &[ReplayBan]) -> Result<()> {
    let bans: Vec<serde_json::Value> = bans
        .iter()
        .map(|b| {
            serde_json::json!({
                "addr": b.addr_text(),
                "reason": b.reason,
                "failures": b.failures,
                "ban_time_secs": b.ban_time.map(|t| t.as_secs()),
            })
        })
        .collect();
    serde_json::to_writer(&mut *out, &serde_json::json!({ "bans": bans }))?;
    writeln!(out)?;
    Ok(())
}

pub(super) fn write_footer(out: &mut dyn Write, s: &ReplaySummary, pbx: &[IpAddr]) -> Result<()> {
    let dropped = s
        .packets
        .iter()
        .filter(|p| p.verdict == Verdict::Drop)
        .count();
    let answers = s
        .packets
        .iter()
        .filter(|p| p.direction == Direction::Egress)
        .count();
    writeln!(
        out,
        "\n{}: {} passed, {dropped} dropped; {answers} from the PBX.",
        plural(s.packets.len(), "packet"),
        s.packets.len() - dropped,
    )?;
    if s.bans.is_empty() {
        writeln!(out, "No bans.")?;
    } else {
        writeln!(out, "Bans the filter would have issued:")?;
        for b in &s.bans {
            writeln!(
                out,
                "  {:<24} {:<15} {} failures, for {}",
                b.addr_text(),
                b.reason,
                b.failures,
                ban_time_text(b.ban_time)
            )?;
        }
    }
    writeln!(out, "\n{TIMING_NOTE}")?;
    if answers == 0 {
        let list: Vec<String> = pbx.iter().map(IpAddr::to_string).collect();
        writeln!(
            out,
            "Note: no packet came from the PBX ({}); failures are counted from the PBX's \
             answers, so none could be.",
            if list.is_empty() {
                "no --pbx address given".to_string()
            } else {
                list.join(", ")
            }
        )?;
    }
    let cut = s.packets.iter().filter(|p| p.truncated).count();
    if cut > 0 {
        writeln!(
            out,
            "Note: {} cut by the capture's snaplen: the filter saw them whole, so verdicts \
             on credentials may differ (capture with -s 0).",
            plural(cut, "packet")
        )?;
    }
    Ok(())
}

pub(super) fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}
