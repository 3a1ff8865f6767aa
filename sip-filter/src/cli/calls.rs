//! `calls check`: what the toll-fraud rules decide for a number, now or at a given time.
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::Subcommand;
use sip_filter::{
    calls::{
        dialplan::{Dialled, How},
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
}

pub fn calls(cmd: CallsCmd) -> Result<()> {
    match cmd {
        CallsCmd::Check {
            number,
            extension,
            at,
            config,
        } => check(&number, extension.as_deref(), at.as_deref(), config),
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
    if let Some(ext) = extension {
        println!(
            "extension:   {ext} (per-extension limits are counted by the dataplane; none is \
             enforced yet)"
        );
    }
    println!(
        "verdict:     {}",
        if verdict.blocked {
            "blocked"
        } else {
            "allowed"
        }
    );
    Ok(())
}
