//! `sip-filter run`: attach, apply the rules, then watch: log bans as the kernel issues them,
//! expire bans, reload on SIGHUP. Stopping the daemon leaves the filter attached and enforcing.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use sip_filter_common::{BanEvent, BanReason, map};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};
use tracing::{error, info, warn};

use crate::{
    addr,
    attach::{self, Mode},
    bans, clock,
    config::Settings,
    dataplane::Dataplane,
    geo::GeoTable,
    iface,
    maps::{self, Maps as _},
    metrics,
    notify::{Event, Notifier},
    pidfile, pins, privilege, rules,
};

pub struct RunArgs {
    pub iface: String,
    pub config: Option<PathBuf>,
    pub mode: Mode,
}

fn load_settings(path: Option<&Path>) -> Result<Settings> {
    match path {
        Some(p) => Ok(Settings::load(p)?),
        None => Ok(Settings::default()),
    }
}

pub async fn run(args: RunArgs) -> Result<()> {
    privilege::require_root("sip-filter run")?;
    iface::require(&args.iface)?;
    if let Some(pid) = pidfile::daemon_pid(&args.iface) {
        anyhow::bail!(
            "a sip-filter daemon already runs on {} (pid {pid}); send it SIGHUP to reload its \
             configuration, or stop it first",
            args.iface
        );
    }
    let settings = load_settings(args.config.as_deref())?;
    let notifier = settings.notify.webhook.clone().map(Notifier::start);
    let metrics_listener = match settings.metrics.listen {
        Some(addr) => Some(metrics::bind(addr).await?),
        None => None,
    };
    pins::ensure_bpffs()?;
    let dir = pins::dir(&args.iface);
    let restart = dir.join(map::CONFIG.name).exists();
    maps::check_layout(&dir)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    let mut dp = Dataplane::load(Some(&dir))?;
    // After a restart the maps hold the previous geo table; changes apply as a difference.
    let old_geo = if restart {
        dp.geo_table()?
    } else {
        GeoTable::default()
    };
    let mut geo = rules::apply(&mut dp, &settings, &old_geo)?;
    attach::attach(&mut dp, &args.iface, args.mode, &dir)?;
    pidfile::write(&args.iface, args.mode.as_str())?;
    if let Some(l) = metrics_listener {
        metrics::spawn(l, dir.clone())?;
    }
    let bans_now = bans::list(&mut dp)?.len();
    info!(
        iface = %args.iface,
        mode = args.mode.as_str(),
        pins = %dir.display(),
        restart,
        bans = bans_now,
        geo_prefixes = geo.prefixes,
        allow = settings.allow.len(),
        "sip-filter attached{}",
        if restart { " (reusing pinned maps: no ban lost)" } else { "" }
    );

    let ring = RingBuf::try_from(dp.take_map(map::EVENTS.name)?)?;
    // SAFETY: the ring buffer owns its fd and lives inside the AsyncFd until it is dropped.
    let mut ring = unsafe { AsyncFd::register(ring) }
        .map_err(|e| anyhow::anyhow!("watching the ban ring buffer: {e}"))?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut settings = settings;

    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                drain_events(guard.get_inner_mut(), &settings, &args.iface, notifier.as_ref());
                guard.clear_ready();
            }
            _ = tick.tick() => {
                if let Err(e) = dp.sync_clock() {
                    warn!("updating the kernel's clock offset: {e:#}");
                }
                match bans::expire(&mut dp) {
                    Ok(gone) => for b in gone {
                        info!(addr = %b.addr, reason = %b.reason, "unbanned: ban expired");
                        if let Some(n) = &notifier {
                            n.send(Event {
                                event: "unban",
                                iface: args.iface.clone(),
                                addr: b.addr,
                                reason: b.reason,
                                failures: b.failures,
                                time: now_rfc3339(),
                                until: None,
                            });
                        }
                    },
                    Err(e) => warn!("expiring bans: {e:#}"),
                }
            }
            _ = hup.recv() => {
                match reload(&mut dp, args.config.as_deref(), &geo) {
                    Ok((s, g)) => {
                        info!(geo_prefixes = g.prefixes, allow = s.allow.len(), "configuration reloaded");
                        if s.metrics != settings.metrics || s.notify != settings.notify {
                            warn!("[metrics] or [notify] changed: restart the daemon to apply it");
                        }
                        settings = s;
                        geo = g;
                    }
                    Err(e) => error!("configuration rejected, the running rules stay as they were: {e:#}"),
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    info!(
        iface = %args.iface,
        "daemon stopping; the filter stays attached and enforcing (remove it with `sip-filter detach --iface {}`)",
        args.iface
    );
    pidfile::remove_pid(&args.iface);
    Ok(())
}

fn reload(dp: &mut Dataplane, path: Option<&Path>, geo: &GeoTable) -> Result<(Settings, GeoTable)> {
    let s = load_settings(path)?;
    let g = rules::apply(dp, &s, geo)?;
    Ok((s, g))
}

fn drain_events(
    ring: &mut RingBuf<MapData>,
    settings: &Settings,
    iface: &str,
    notifier: Option<&Notifier>,
) {
    let (events, short) = maps::drain_events(ring);
    if short > 0 {
        warn!(short, "short ban events");
    }
    for e in &events {
        let event = log_ban(e, settings, iface);
        if let Some(n) = notifier {
            n.send(event);
        }
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Logs a ban the kernel issued; returns it as a notification.
fn log_ban(e: &BanEvent, settings: &Settings, iface: &str) -> Event {
    let ip = addr::from_key(e.addr);
    let who = match ip {
        std::net::IpAddr::V6(_) => format!("{ip}/{}", settings.sip.ipv6_prefix),
        std::net::IpAddr::V4(_) => ip.to_string(),
    };
    let reason = BanReason::from_u8(e.reason)
        .map(BanReason::as_str)
        .unwrap_or("unknown");
    let window = Duration::from_nanos(e.time_ns.saturating_sub(e.first_failure_ns));
    let until = humantime::format_rfc3339_seconds(clock::to_wall(e.expires_ns));
    let what = match BanReason::from_u8(e.reason) {
        Some(BanReason::NotFound) => "unknown extensions (404)",
        _ => "failed authentications",
    };
    info!(
        addr = %who,
        reason,
        failures = e.failures,
        window_secs = window.as_secs_f64(),
        until = %until,
        "banned {who}: {} {what} in {:.1}s, until {until}",
        e.failures,
        window.as_secs_f64()
    );
    Event {
        event: "ban",
        iface: iface.to_string(),
        addr: who,
        reason: reason.to_string(),
        failures: e.failures,
        time: now_rfc3339(),
        until: (e.expires_ns != 0).then(|| until.to_string()),
    }
}
