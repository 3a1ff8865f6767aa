//! `sip-filter run`: attach, apply the rules, then watch: log bans as the kernel issues them,
//! expire bans, reload on SIGHUP. Stopping the daemon leaves the filter attached and enforcing.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use sip_filter_common::{BanEvent, BanReason, call_verdict, map};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};
use tracing::{error, info, warn};

use crate::{
    attach::{self, Mode},
    bans,
    calls::{
        self,
        blocked::{BlockedCall, Repeats},
        holds::Keeper,
    },
    clock,
    config::{self, Settings},
    dataplane::Dataplane,
    geo::GeoTable,
    iface,
    ledger::{Change, Ledger},
    maps::{self, Maps as _},
    metrics,
    notify::{Event, Notifier},
    pidfile, pins, privilege, rules,
    shared::{
        Delta, Feeds, Store, apiban,
        crowdsec::{self, LocalBan, Watcher},
        status::Board,
    },
    state, upgrade,
};

/// What a shared blocklist's thread needs: its section and its key (read before attaching).
enum Source {
    Crowdsec(config::Crowdsec, String),
    Apiban(config::Apiban, String),
}

/// The shared blocklists the daemon runs (`[crowdsec]`, `[apiban]`) and their polls as they
/// arrive (tagged with the feed's index).
struct Shared {
    feeds: Feeds,
    rx: tokio::sync::mpsc::Receiver<(usize, Delta)>,
}

impl Shared {
    /// Local bans that ended (the ledger's changes): the decisions the feeds hold for their
    /// targets go back into the maps.
    fn reinstate(&mut self, dp: &mut Dataplane, changes: &[Change]) {
        for c in changes {
            if let Change::Lifted { entry, .. } = c {
                self.feeds
                    .ended(dp, &entry.addr, BanReason::from_name(&entry.reason));
            }
        }
    }
}

/// The next poll of the shared blocklists (never, without any).
async fn next_delta(s: &mut Option<Shared>) -> Option<(usize, Delta)> {
    match s {
        Some(s) => s.rx.recv().await,
        None => std::future::pending().await,
    }
}

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
    let mut ledger = Ledger::open(&settings.state.dir, &args.iface, settings.bans.clone())?;
    // Credentials first: a key that cannot be read stops the start with a clear error.
    let mut stores: Vec<(Store, Source)> = Vec::new();
    if let Some(c) = &settings.crowdsec {
        let key = c.api_key.read().context("[crowdsec] api key")?;
        stores.push((
            Store::new(state::origin::CROWDSEC, BanReason::Crowdsec),
            Source::Crowdsec(c.clone(), key),
        ));
    }
    if let Some(a) = &settings.apiban {
        let key = a.key.read().context("[apiban] key_file")?;
        stores.push((
            Store::new(state::origin::APIBAN, BanReason::Apiban),
            Source::Apiban(a.clone(), key),
        ));
    }
    pins::ensure_bpffs()?;
    let dir = pins::dir(&args.iface);
    let pinned = dir.join(map::CONFIG.name).exists();
    // Pins of another layout: an upgrade, carried over on new maps (see `upgrade`).
    let previous = match maps::check_layout(&dir) {
        Ok(()) => None,
        Err(e) => {
            warn!("{e:#}: upgrading in place, carrying the bans to new maps");
            Some(upgrade::set_aside(&dir)?)
        }
    };
    let fresh = !pinned || previous.is_some();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    let loaded = Dataplane::load(Some(&dir)).and_then(|mut dp| {
        // After a restart the maps hold the previous geo table; changes apply as a difference.
        let old_geo = if fresh {
            GeoTable::default()
        } else {
            dp.geo_table()?
        };
        let geo = rules::apply(&mut dp, &settings, &old_geo)?;
        let carried = match &previous {
            Some(p) => p.carry_bans(&mut dp)?,
            None => 0,
        };
        // Every ban still in force goes back before the program is attached: no banned
        // source gets a packet through.
        let restored = if fresh { ledger.restore(&mut dp)? } else { 0 };
        // So are the shared decisions held (a LAPI that is down at boot costs none).
        for (st, _) in &mut stores {
            let a = st.load(&mut dp, ledger.state_mut())?;
            if a.added > 0 {
                info!(
                    source = st.source(),
                    held = a.added,
                    ms = a.elapsed.as_millis() as u64,
                    "{} {} decisions restored from the state file",
                    a.added,
                    st.source()
                );
            }
        }
        Ok((dp, geo, carried, restored))
    });
    let (mut dp, mut geo, carried, restored) = match loaded {
        Ok(v) => v,
        Err(e) => {
            if let Some(p) = previous {
                p.put_back(&dir);
            }
            return Err(e);
        }
    };
    if let Some(p) = &previous {
        p.move_links(&dir)?;
    }
    attach::attach(&mut dp, &args.iface, args.mode, &dir)?;
    let upgraded = previous.is_some();
    if let Some(p) = previous {
        p.remove();
    }
    pidfile::write(&args.iface, args.mode.as_str())?;
    pidfile::write_state_path(&args.iface, ledger.path());
    if let Some(l) = metrics_listener {
        metrics::spawn(l, dir.clone())?;
    }
    let board = Board::new(&args.iface);
    let watcher = match settings.crowdsec.as_ref().filter(|c| c.watcher.is_some()) {
        Some(c) => Some(Watcher::start(c.clone(), board.clone())?),
        None => None,
    };
    let mut shared = if stores.is_empty() {
        None
    } else {
        let (tx, rx) = tokio::sync::mpsc::channel::<(usize, Delta)>(4);
        let mut feeds = Feeds::new(board.clone());
        for (store, source) in stores {
            let i = feeds.len();
            let tx = tx.clone();
            let deliver = move |d| tx.blocking_send((i, d)).is_ok();
            let b = board.clone();
            let url = match source {
                Source::Crowdsec(cfg, key) => {
                    let url = cfg.lapi_url.clone();
                    std::thread::Builder::new()
                        .name("sip-filter-bouncer".into())
                        .spawn(move || crowdsec::run_bouncer(cfg, key, b, deliver))
                        .context("spawning the crowdsec bouncer thread")?;
                    url
                }
                Source::Apiban(cfg, key) => {
                    let url = cfg.url.clone();
                    let recorded = ledger.state_mut().cursor(state::origin::APIBAN)?;
                    std::thread::Builder::new()
                        .name("sip-filter-apiban".into())
                        .spawn(move || apiban::run(cfg, key, recorded, b, deliver))
                        .context("spawning the apiban thread")?;
                    url
                }
            };
            feeds.push(store, url);
        }
        Some(Shared { feeds, rx })
    };
    let mut reporter = Reporter {
        iface: args.iface.clone(),
        notifier,
        repeats: Repeats::default(),
        watcher,
    };
    if let Err(e) =
        calls::dataplane::name_rules(&mut dp, ledger.state_mut(), settings.calls.as_ref())
    {
        warn!("recording the call rules' names: {e:#}");
    }
    match ledger.start(&mut dp) {
        Ok(changes) => reporter.report(changes, &[]),
        Err(e) => warn!("reading the state file: {e:#}"),
    }
    let bans_now = bans::list(&mut dp)?.len();
    info!(
        iface = %args.iface,
        mode = args.mode.as_str(),
        pins = %dir.display(),
        state = %ledger.path().display(),
        restart = pinned,
        upgraded,
        restored,
        carried,
        bans = bans_now,
        geo_prefixes = geo.prefixes,
        allow = settings.allow.len(),
        "sip-filter attached{}",
        if upgraded {
            " (new map layout: bans carried over, programs swapped in place)"
        } else if pinned {
            " (reusing pinned maps: no ban lost)"
        } else if restored > 0 {
            " (bans restored from the state file before attaching)"
        } else {
            ""
        }
    );
    // systemd's Type=notify: ready once the programs are attached (a no-op elsewhere).
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);

    let ring = RingBuf::try_from(dp.take_map(map::EVENTS.name)?)?;
    // SAFETY: the ring buffer owns its fd and lives inside the AsyncFd until it is dropped.
    let mut ring = unsafe { AsyncFd::register(ring) }
        .map_err(|e| anyhow::anyhow!("watching the ban ring buffer: {e}"))?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut prune = tokio::time::interval(Duration::from_secs(3600));
    let mut settings = settings;
    let mut keeper = Keeper::default();
    // Which side of business hours the call rules in the kernel were written for.
    let mut business = business_now(&settings);

    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                on_events(guard.get_inner_mut(), &mut dp, &mut ledger, &mut reporter, &settings, &mut keeper);
                guard.clear_ready();
            }
            _ = tick.tick() => {
                if let Err(e) = dp.sync_clock() {
                    warn!("updating the kernel's clock offset: {e:#}");
                }
                // Events first, so a ban is recorded with what its event says.
                on_events(ring.get_mut(), &mut dp, &mut ledger, &mut reporter, &settings, &mut keeper);
                match keeper.keep(&mut dp) {
                    Ok(0) => {}
                    Ok(n) => info!(holds = n, "call-limit holds written back after an eviction"),
                    Err(e) => warn!("keeping the call-limit holds: {e:#}"),
                }
                match crate::extensions::expire(&mut dp) {
                    Ok(gone) => {
                        for ext in gone {
                            info!(extension = %ext, "extension {ext} unlocked: its lock ran out");
                        }
                    }
                    Err(e) => warn!("expiring extension locks: {e:#}"),
                }
                match bans::expire(&mut dp).and_then(|gone| {
                    // A feed's entry that ran out: another feed may hold the target longer
                    // (the ledger reports only this host's own bans).
                    if let Some(sh) = shared.as_mut() {
                        sh.feeds.expired(&mut dp, &gone);
                    }
                    ledger.expired(gone)
                }) {
                    Ok(changes) => {
                        if let Some(sh) = shared.as_mut() {
                            sh.reinstate(&mut dp, &changes);
                        }
                        reporter.report(changes, &[]);
                    }
                    Err(e) => warn!("expiring bans: {e:#}"),
                }
                if let Some(sh) = shared.as_mut() {
                    sh.feeds.expire(ledger.state_mut());
                }
                // The schedule's edges: after-hours rules flip in the kernel (within a second).
                let now_business = business_now(&settings);
                if now_business != business {
                    match calls::dataplane::apply(&mut dp, settings.calls.as_ref(), now_business.unwrap_or(false)) {
                        Ok(_) => {
                            info!(
                                "{}: the after-hours call rules are now {}",
                                if now_business == Some(true) { "business hours began" } else { "business hours ended" },
                                if now_business == Some(true) { "lifted" } else { "in force" }
                            );
                            business = now_business;
                        }
                        Err(e) => warn!("flipping the after-hours call rules: {e:#}"),
                    }
                }
                match ledger.sync(&mut dp) {
                    Ok(changes) => {
                        if let Some(sh) = shared.as_mut() {
                            sh.reinstate(&mut dp, &changes);
                        }
                        reporter.report(changes, &[]);
                    }
                    Err(e) => warn!("recording bans in the state file: {e:#}"),
                }
            }
            Some((i, delta)) = next_delta(&mut shared) => {
                if let Some(sh) = shared.as_mut() {
                    sh.feeds.apply(&mut dp, ledger.state_mut(), i, delta, &settings.allow);
                }
            }
            _ = prune.tick() => {
                if let Err(e) = ledger.prune() {
                    warn!("pruning the state file: {e:#}");
                }
            }
            _ = hup.recv() => {
                match reload(&mut dp, args.config.as_deref(), &geo) {
                    Ok((s, g)) => {
                        info!(geo_prefixes = g.prefixes, allow = s.allow.len(), "configuration reloaded");
                        if s.metrics != settings.metrics
                            || s.notify != settings.notify
                            || s.state != settings.state
                            || s.crowdsec != settings.crowdsec
                            || s.apiban != settings.apiban
                        {
                            warn!("[metrics], [notify], [state], [crowdsec] or [apiban] changed: restart the daemon to apply it");
                        }
                        ledger.set_policy(s.bans.clone());
                        if let Err(e) = calls::dataplane::name_rules(&mut dp, ledger.state_mut(), s.calls.as_ref()) {
                            warn!("recording the call rules' names: {e:#}");
                        }
                        business = business_now(&s);
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
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    info!(
        iface = %args.iface,
        "daemon stopping; the filter stays attached and enforcing (remove it with `sip-filter detach --iface {}`)",
        args.iface
    );
    pidfile::remove_pid(&args.iface);
    Ok(())
}

/// Whether it is business hours for the call rules (`None` without any).
fn business_now(s: &Settings) -> Option<bool> {
    s.calls
        .as_ref()
        .map(|c| c.schedule.is_business(jiff::Timestamp::now()))
}

fn reload(dp: &mut Dataplane, path: Option<&Path>, geo: &GeoTable) -> Result<(Settings, GeoTable)> {
    let s = load_settings(path)?;
    let g = rules::apply(dp, &s, geo)?;
    Ok((s, g))
}

/// Records and reports the bans the kernel announced, and reports the calls it blocked.
fn on_events(
    ring: &mut RingBuf<MapData>,
    dp: &mut Dataplane,
    ledger: &mut Ledger,
    reporter: &mut Reporter,
    settings: &Settings,
    keeper: &mut Keeper,
) {
    let drained = maps::drain_events(ring);
    if drained.bad > 0 {
        warn!(records = drained.bad, "ring buffer records of neither kind");
    }
    for e in &drained.calls {
        if matches!(
            e.verdict,
            call_verdict::OVER_PER_MINUTE | call_verdict::OVER_SAME_NUMBER
        ) {
            let block_for = settings
                .calls
                .as_ref()
                .map_or(0, |c| c.block_for.as_nanos() as u64);
            keeper.held(e.ext, e.time_ns + block_for);
        }
        reporter.call(&BlockedCall::read(e, settings.calls.as_ref()));
    }
    for e in &drained.exts {
        let source = if e.kind == sip_filter_common::EXT_LOCKED {
            String::new()
        } else {
            bans::target_of_key(dp, e.addr).unwrap_or_default()
        };
        reporter.ext(e, &source);
    }
    for e in &drained.bans {
        let change =
            bans::target_of_key(dp, e.addr).and_then(|target| ledger.on_event(dp, &target));
        match change {
            Ok(c) => reporter.report(c.into_iter().collect(), std::slice::from_ref(e)),
            Err(err) => warn!("recording a ban: {err:#}"),
        }
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Logs each change and hands it to the webhook.
struct Reporter {
    iface: String,
    notifier: Option<Notifier>,
    /// Blocked calls already reported (the PBX retransmits an INVITE held back at egress).
    repeats: Repeats,
    /// This host's bans to push to the CrowdSec LAPI.
    watcher: Option<Watcher>,
}

impl Reporter {
    /// Logs an extension locked (or blocked from one source) and hands it to the webhook.
    fn ext(&mut self, e: &sip_filter_common::ExtEvent, source: &str) {
        let extension = calls::holds::name(&e.name);
        let locked = e.kind == sip_filter_common::EXT_LOCKED;
        info!(
            extension = %extension,
            source,
            failures = e.failures,
            "{}",
            crate::extensions::describe(e, source)
        );
        if let Some(n) = &self.notifier {
            n.send(Event {
                event: if locked { "ext_lock" } else { "ext_block" },
                iface: self.iface.clone(),
                addr: source.to_string(),
                reason: extension,
                failures: e.failures,
                time: now_rfc3339(),
                until: Some(
                    humantime::format_rfc3339_seconds(clock::to_wall(e.until_ns)).to_string(),
                ),
                origin: None,
                offences: None,
                by: None,
                call: None,
            });
        }
    }

    /// Logs a blocked call and hands it to the webhook, once per call.
    fn call(&mut self, c: &BlockedCall) {
        if self.repeats.is_repeat(c) {
            return;
        }
        info!(
            direction = c.direction,
            addr = %c.addr,
            extension = %c.extension,
            dialled = %c.dialled,
            number = %c.number,
            rule = %c.rule,
            local_time = %c.local_time,
            call_id = %c.call_id,
            "{}",
            c.describe()
        );
        if let Some(n) = &self.notifier {
            n.send(Event {
                event: "call_blocked",
                iface: self.iface.clone(),
                addr: c.addr.to_string(),
                reason: "toll-fraud".into(),
                failures: 0,
                time: now_rfc3339(),
                until: None,
                origin: None,
                offences: None,
                by: None,
                call: Some(c.clone()),
            });
        }
    }

    /// `events`: the kernel's ban events behind these changes, for the failure window.
    fn report(&mut self, changes: Vec<Change>, events: &[BanEvent]) {
        for c in changes {
            let event = match c {
                Change::Banned { entry: b, origin } => {
                    let until = (b.expires_ns != 0).then(|| {
                        humantime::format_rfc3339_seconds(clock::to_wall(b.expires_ns)).to_string()
                    });
                    let until_text = until.clone().unwrap_or_else(|| "forever".into());
                    let span = Duration::from_secs(b.expires_in_secs.unwrap_or(0));
                    let repeat = if b.offences > 1 {
                        format!(
                            ", offence {} in the history: banned for {}",
                            b.offences,
                            humantime::format_duration(span)
                        )
                    } else {
                        String::new()
                    };
                    // The kernel's bans go to the CrowdSec LAPI too (a flood guard's drop is
                    // not a ban).
                    if let Some(w) = &self.watcher
                        && origin == state::origin::KERNEL
                        && b.kind != BanReason::Flood.kind()
                    {
                        let window = events
                            .iter()
                            .find(|e| e.time_ns == b.created_ns)
                            .map(|e| {
                                Duration::from_nanos(e.time_ns.saturating_sub(e.first_failure_ns))
                            })
                            .unwrap_or_default();
                        let created = clock::to_wall(b.created_ns);
                        w.push(LocalBan {
                            target: b.addr.clone(),
                            reason: b.reason.clone(),
                            failures: b.failures,
                            duration: (b.expires_ns != 0)
                                .then(|| Duration::from_nanos(b.expires_ns - b.created_ns)),
                            first_failure: created - window,
                            created,
                        });
                    }
                    match BanReason::from_name(&b.reason) {
                        Some(BanReason::Manual) | None => info!(
                            addr = %b.addr,
                            reason = %b.reason,
                            origin,
                            note = b.note.as_deref().unwrap_or(""),
                            offences = b.offences,
                            until = %until_text,
                            "banned {} by the operator until {until_text}{repeat}",
                            b.addr
                        ),
                        Some(BanReason::Scanner) => info!(
                            addr = %b.addr,
                            reason = %b.reason,
                            origin,
                            offences = b.offences,
                            until = %until_text,
                            "banned {}: a scanner's User-Agent, until {until_text}{repeat}",
                            b.addr
                        ),
                        Some(BanReason::Flood) => info!(
                            addr = %b.addr,
                            reason = %b.reason,
                            origin,
                            until = %until_text,
                            "rate-limited {}: over the flood guard's request rate, dropped until \
                             {until_text}",
                            b.addr
                        ),
                        Some(reason) => {
                            let what = match reason {
                                BanReason::NotFound => "unknown extensions (404)",
                                _ => "failed authentications",
                            };
                            let window = events
                                .iter()
                                .find(|e| e.time_ns == b.created_ns)
                                .map(|e| {
                                    Duration::from_nanos(
                                        e.time_ns.saturating_sub(e.first_failure_ns),
                                    )
                                })
                                .unwrap_or_default();
                            info!(
                                addr = %b.addr,
                                reason = %b.reason,
                                origin,
                                failures = b.failures,
                                window_secs = window.as_secs_f64(),
                                offences = b.offences,
                                until = %until_text,
                                "banned {}: {} {what} in {:.1}s, until {until_text}{repeat}",
                                b.addr,
                                b.failures,
                                window.as_secs_f64()
                            );
                        }
                    }
                    let flood = b.kind == BanReason::Flood.kind();
                    Event {
                        event: if flood { "rate_limit" } else { "ban" },
                        iface: self.iface.clone(),
                        addr: b.addr,
                        reason: b.reason,
                        failures: b.failures,
                        time: now_rfc3339(),
                        until,
                        origin: Some(origin),
                        offences: Some(b.offences),
                        by: None,
                        call: None,
                    }
                }
                Change::Lifted { entry: b, by } => {
                    match by {
                        state::lifted::EXPIRED if b.kind == BanReason::Flood.kind() => {
                            info!(addr = %b.addr, reason = %b.reason, "rate limit ended")
                        }
                        state::lifted::EXPIRED => {
                            info!(addr = %b.addr, reason = %b.reason, "unbanned: ban expired")
                        }
                        state::lifted::REPLACED => {
                            info!(addr = %b.addr, reason = %b.reason, "ban replaced by a new one")
                        }
                        _ => info!(addr = %b.addr, reason = %b.reason, "unbanned by the operator"),
                    }
                    if by == state::lifted::REPLACED {
                        continue;
                    }
                    Event {
                        event: "unban",
                        iface: self.iface.clone(),
                        addr: b.addr,
                        reason: b.reason,
                        failures: b.failures,
                        time: now_rfc3339(),
                        until: None,
                        origin: None,
                        offences: None,
                        by: Some(by),
                        call: None,
                    }
                }
            };
            if let Some(n) = &self.notifier {
                n.send(event);
            }
        }
    }
}
