//! `calls check`: what the toll-fraud rules decide for a number, now or at a given time.
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::Subcommand;
use sip_filter::{
    calls::{
        dialplan::{Dialled, How},
        holds,
        rules::Table,
    },
    config::Settings,
};

#[derive(Subcommand)]
pub enum CallsCmd {
    /// The normalised number, the rule that decides and the verdict (now, or `--at`).
    Check {
        /// As dialled: a number or a Request-URI (`9011882555123`, `sip:+1-809-555-0100@pbx`).
        number: String,
        /// The calling extension (for the per-extension limits).
        #[arg(long)]
        extension: Option<String>,
        /// A local time in the configured time zone, e.g. "2026-12-04 17:05".
        #[arg(long)]
        at: Option<String>,
        /// Configuration file (default: /etc/sip-filter/sip-filter.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Extensions held by a call limit (`max_calls_per_minute`, `max_same_number`): they may
    /// not place international calls until the hold ends.
    Blocked {
        /// Interface (default: the only one sip-filter is attached to).
        #[arg(long)]
        iface: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Lifts an extension's hold and forgets its call counts.
    Unblock {
        /// The extension (its digest username).
        extension: String,
        #[arg(long)]
        iface: Option<String>,
    },
}

pub fn calls(cmd: CallsCmd) -> Result<()> {
    match cmd {
        CallsCmd::Check {
            number,
            extension,
            at,
            config,
        } => check(&number, extension.as_deref(), at.as_deref(), config),
        CallsCmd::Blocked { iface, json } => {
            let (_, mut maps) = super::open(iface.as_deref())?;
            let held = holds::list(&mut maps)?;
            if json {
                return super::print_json(&held);
            }
            if held.is_empty() {
                println!("no extension is held by a call limit");
            }
            for h in held {
                println!(
                    "{:<20} held until {} ({} left)",
                    h.extension,
                    h.until,
                    humantime::format_duration(std::time::Duration::from_secs(h.remaining_secs))
                );
            }
            Ok(())
        }
        CallsCmd::Unblock { extension, iface } => {
            holds::key(&extension)?;
            let (_, mut maps) = super::open(iface.as_deref())?;
            if holds::lift(&mut maps, &extension)? {
                println!("extension {extension} may place international calls again");
            } else {
                println!("extension {extension} was not held (its call counts start again)");
            }
            Ok(())
        }
    }
}

fn check(
    number: &str,
    extension: Option<&str>,
    at: Option<&str>,
    config: Option<PathBuf>,
) -> Result<()> {
    let path = super::default_config(config).context(
        "no configuration: pass --config PATH (or create /etc/sip-filter/sip-filter.toml)",
    )?;
    let settings = Settings::load(&path)?;
    let Some(c) = settings.calls else {
        bail!(
            "{} has no [calls] section: no call rules apply",
            path.display()
        );
    };
    let user = sip_filter::calls::dialplan::uri_user(number).unwrap_or(number);
    let when = match at {
        None => jiff::Timestamp::now().to_zoned_datetime(c.schedule.tz.clone()),
        Some(t) => t
            .trim()
            .parse::<jiff::civil::DateTime>()
            .ok()
            .and_then(|dt| dt.to_zoned_datetime(c.schedule.tz.clone()).ok())
            .with_context(|| format!("--at {t:?} is not a local time like \"2026-12-04 17:05\""))?,
    };
    let business = c.schedule.is_business(when.timestamp());
    let table = Table::compile(&c.plan, &c.rules);
    let verdict = table.decide(user, business);
    let normalised = c.plan.normalise(user);
    println!("dialled:     {user}");
    match &normalised {
        Dialled::E164 { digits, how } => println!(
            "normalised:  +{digits} ({})",
            match how {
                How::Plus => "dialled with +",
                How::InternationalPrefix => "international prefix",
                How::National => "national number",
            }
        ),
        Dialled::Internal(s) => println!("normalised:  {s}: an extension or local number"),
    }
    println!(
        "rule:        {}",
        verdict
            .rule
            .as_ref()
            .map(|r| r.describe())
            .unwrap_or_else(|| "none matches".into())
    );
    println!(
        "time:        {} {} ({})",
        when.strftime("%Y-%m-%d %H:%M %a"),
        c.schedule.tz.iana_name().unwrap_or("UTC"),
        if business {
            "business hours"
        } else {
            "after hours"
        }
    );
    // Whether the extension is held now, from the running filter (only for a call now).
    let mut held = None;
    if let Some(ext) = extension {
        let international = table.lookup_entry(user).is_some_and(|e| e.international);
        let line = match super::open(None).and_then(|(_, mut m)| holds::list(&mut m)) {
            _ if at.is_some() => {
                "holds are not known ahead (the filter counts calls as they come)".into()
            }
            Ok(list) => match list.into_iter().find(|h| h.extension == ext) {
                Some(h) => {
                    if international {
                        held = Some(h.until.clone());
                    }
                    format!("held by a call limit until {}", h.until)
                }
                None => "not held by a call limit".into(),
            },
            Err(e) => format!("holds unknown (the filter's maps: {e:#})"),
        };
        println!("extension:   {ext}: {line}");
    }
    let text = match (&held, verdict.blocked) {
        (_, true) => "blocked".to_string(),
        (Some(until), false) => format!("refused: the extension is held until {until}"),
        (None, false) => "allowed".to_string(),
    };
    println!("verdict:     {text}");
    Ok(())
}
