//! `sip-filter top`: a live view of the filter, refreshed every second — packets and drops per
//! second by reason, bans in force, the sources with the most failures, the last bans. `q`
//! quits. The readings come from `sip_filter::live`; this module only draws them.
use std::time::{Duration, Instant};

use anyhow::Result;
use ratatui::{
    Frame,
    crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
    layout::{Constraint, Layout},
    style::{Style, Stylize as _},
    text::Line,
    widgets::{Block, Paragraph, Row, Table},
};
use sip_filter::{
    live::{self, Reading},
    maps::Counters,
    pidfile, state,
};
use sip_filter_common::Reason;

use super::open;

/// Rows in the source and ban tables.
const TOP: usize = 12;

pub fn top(iface: Option<&str>, interval: Duration) -> Result<()> {
    let (iface, mut maps) = open(iface)?;
    let state_file = super::ban::state_file(&iface);
    let mut before: Option<(Instant, Counters)> = None;
    let mut terminal = ratatui::init();
    let result = (|| -> Result<()> {
        loop {
            let reading = live::read(&mut maps, Some(&state_file), TOP)?;
            let now = Instant::now();
            let rates = match &before {
                Some((t, c)) => live::rates(c, &reading.counters, (now - *t).as_secs_f64()),
                None => live::rates(&reading.counters, &reading.counters, 1.0),
            };
            before = Some((now, reading.counters));
            let daemon = pidfile::daemon_pid(&iface);
            terminal.draw(|f| draw(f, &iface, daemon, &reading, &rates))?;
            // Wait for the next refresh, or a key.
            let deadline = now + interval;
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                if !event::poll(left)? {
                    break;
                }
                if let Event::Key(k) = event::read()?
                    && k.kind == KeyEventKind::Press
                    && (matches!(k.code, KeyCode::Char('q') | KeyCode::Esc)
                        || (k.code == KeyCode::Char('c')
                            && k.modifiers.contains(KeyModifiers::CONTROL)))
                {
                    return Ok(());
                }
            }
        }
    })();
    ratatui::restore();
    result
}

fn draw(
    f: &mut Frame,
    iface: &str,
    daemon: Option<i32>,
    r: &Reading,
    rates: &[(Reason, f64, u64)],
) {
    let [head, body] =
        Layout::vertical([Constraint::Length(4), Constraint::Min(0)]).areas(f.area());
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(body);
    let [sources, last] =
        Layout::vertical([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(right);

    let rate = |reason: Reason| {
        rates
            .iter()
            .find(|(x, _, _)| *x == reason)
            .map(|(_, r, _)| *r)
            .unwrap_or(0.0)
    };
    let drops = rate(Reason::DroppedBanned) + rate(Reason::DroppedGeo);
    let by_reason: Vec<String> = r
        .bans_by_reason
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{n} {name}"))
        .collect();
    let header = vec![
        Line::from(vec![
            format!("sip-filter on {iface}").bold(),
            match daemon {
                Some(pid) => format!("   daemon pid {pid}").into(),
                None => "   daemon not running (the filter still enforces)".yellow(),
            },
            "   q quits".dim(),
        ]),
        Line::from(format!(
            "{:.0} packets/s seen, {drops:.0} dropped/s   bans in force: {}{}",
            rate(Reason::Seen),
            r.bans,
            if by_reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", by_reason.join(", "))
            }
        )),
    ];
    f.render_widget(Paragraph::new(header).block(Block::bordered()), head);

    let rows: Vec<Row> = rates
        .iter()
        .map(|(reason, per_sec, total)| {
            let row = Row::new(vec![
                reason.name().to_string(),
                reason.action().to_string(),
                format!("{per_sec:.1}"),
                total.to_string(),
            ]);
            if reason.action() == "drop" && *per_sec > 0.0 {
                row.style(Style::new().red())
            } else {
                row
            }
        })
        .collect();
    f.render_widget(
        table(
            rows,
            &[
                Constraint::Min(24),
                Constraint::Length(8),
                Constraint::Length(10),
                Constraint::Length(12),
            ],
            &["reason", "action", "per sec", "total"],
            " packets and events ",
        ),
        left,
    );

    let rows: Vec<Row> = r
        .top_sources
        .iter()
        .map(|(who, auth, nf)| Row::new(vec![who.clone(), auth.to_string(), nf.to_string()]))
        .collect();
    f.render_widget(
        Table::new(
            rows,
            [
                Constraint::Min(20),
                Constraint::Length(9),
                Constraint::Length(6),
            ],
        )
        .header(Row::new(["source", "failures", "404s"]).bold())
        .block(Block::bordered().title(" top sources by failures (current window) ")),
        sources,
    );

    let rows: Vec<Row> = r
        .last_bans
        .iter()
        .map(|b| {
            let when = state::format_ms(b.created_ms);
            let row = Row::new(vec![
                when.get(11..19).unwrap_or(&when).to_string(),
                b.target.clone(),
                b.reason.clone(),
                b.offence.to_string(),
                b.lifted_by.clone().unwrap_or_else(|| "in force".into()),
            ]);
            if b.lifted_ms.is_none() {
                row.style(Style::new().red())
            } else {
                row
            }
        })
        .collect();
    f.render_widget(
        table(
            rows,
            &[
                Constraint::Length(8),
                Constraint::Min(16),
                Constraint::Length(14),
                Constraint::Length(3),
                Constraint::Length(8),
            ],
            &["time", "source", "reason", "#", "now"],
            " last bans ",
        ),
        last,
    );
}

/// One of the panes: a bordered table with a bold header.
fn table<'a>(
    rows: Vec<Row<'a>>,
    widths: &[Constraint],
    header: &[&'a str],
    title: &'a str,
) -> Table<'a> {
    Table::new(rows, widths.to_vec())
        .header(Row::new(header.to_vec()).bold())
        .block(Block::bordered().title(title))
}
