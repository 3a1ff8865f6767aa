//! `run`, `detach` and `check-config`: the filter's life on an interface.
use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result};
use sip_filter::{
    attach,
    config::Settings,
    daemon,
    geo::GeoTable,
    geo_source, pidfile, privilege,
    state::{State, lifted},
};

use super::default_config;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// Configuration file (default: /etc/sip-filter/sip-filter.toml if it exists, else built-in defaults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value = "auto")]
    mode: attach::Mode,
    #[arg(long, value_enum, default_value = "human")]
    log_format: LogFormat,
}

pub fn run(iface: Option<&str>, args: RunArgs) -> Result<()> {
    let iface = iface.context("run needs --iface IFACE (the PBX's network interface)")?;
    init_logs(args.log_format);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(daemon::run(daemon::RunArgs {
        iface: iface.to_string(),
        config: default_config(args.config),
        mode: args.mode,
    }))
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => b.init(),
        LogFormat::Json => b.json().flatten_event(true).init(),
    }
}

pub fn detach(iface: Option<&str>) -> Result<()> {
    privilege::require_root("detach")?;
    let iface = iface.context("detach needs --iface IFACE")?;
    if let Some(pid) = pidfile::daemon_pid(iface) {
        // SAFETY: plain kill(2) on the daemon's pid from its pid file.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        std::thread::sleep(Duration::from_millis(300));
    }
    attach::detach(iface)?;
    // Detaching forgets the bans: the next start must not restore them from the state file
    // (their history stays, for repeat offenders).
    let state = super::ban::state_file(iface);
    if state.exists() {
        match State::open(&state).and_then(|s| s.lift_all(SystemTime::now(), lifted::DETACHED)) {
            Ok(n) if n > 0 => println!("{n} bans closed in {}", state.display()),
            Ok(_) => {}
            Err(e) => eprintln!("note: {} not updated: {e:#}", state.display()),
        }
    }
    println!("sip-filter removed from {iface}");
    Ok(())
}

pub fn check_config(path: &Path) -> Result<()> {
    let s = Settings::load(path)?;
    let nets = geo_source::blocked_networks(&s.geo)?;
    let geo = GeoTable::build(nets)?;
    println!(
        "{}: OK (ports {:?}, auth {} failures in {:?} -> ban {:?}, {} allowlisted, {} geo prefixes)",
        path.display(),
        s.sip.ports,
        s.auth.max,
        s.auth.find_time,
        s.auth.ban_time,
        s.allow.len(),
        geo.prefixes
    );
    if let Some(c) = &s.calls {
        println!(
            "[calls]: {} destination rules ({} dialable forms), {} business-hours windows in {}, \
             {} trunks",
            c.rules.len(),
            sip_filter::calls::rules::Table::compile(&c.plan, &c.rules)
                .forms
                .len(),
            c.schedule.windows.len(),
            c.schedule.tz.iana_name().unwrap_or("UTC"),
            c.trunks.len()
        );
    }
    let f = &s.flood;
    let flood = if f.max_requests == 0 {
        "off".to_string()
    } else {
        format!(
            "{} requests per {} -> drop for {} (x{} when trusted)",
            f.max_requests,
            humantime::format_duration(f.per),
            humantime::format_duration(f.block_for),
            f.trusted_factor
        )
    };
    println!(
        "[scanners]: {} User-Agent signatures -> ban {}; [flood]: {flood}",
        s.scanners.user_agents.len(),
        humantime::format_duration(s.scanners.ban_time)
    );
    // The credentials as the daemon reads them: a missing or world-readable key stops it.
    if let Some(c) = &s.crowdsec {
        c.api_key.read().context("[crowdsec] api key")?;
        if let Some(w) = &c.watcher {
            w.password.read().context("[crowdsec] password_file")?;
        }
        println!(
            "[crowdsec]: bouncer of {} every {}{}",
            c.lapi_url,
            humantime::format_duration(c.poll),
            match &c.watcher {
                Some(w) => format!(", watcher as {}", w.machine_id),
                None => String::new(),
            }
        );
    }
    if let Some(a) = &s.apiban {
        a.key.read().context("[apiban] key_file")?;
        use sip_filter::shared::apiban::{RATE_MAX, RATE_WINDOW};
        println!(
            "[apiban]: {} every {} (at most {RATE_MAX} requests per {})",
            a.url,
            humantime::format_duration(a.poll),
            humantime::format_duration(RATE_WINDOW)
        );
    }
    Ok(())
}
