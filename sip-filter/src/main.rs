//! `sip-filter`: the daemon and the operator's command line.
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use serde::Serialize;
use sip_filter::{
    addr, attach, bans,
    config::Settings,
    daemon, geo_source,
    maps::{Maps, Pinned},
    pins,
};
use sip_filter_common::{map_names, stat};

/// Default configuration file, used by `run` and `geo lookup` when it exists.
const DEFAULT_CONFIG: &str = "/etc/sip-filter/sip-filter.toml";

#[derive(Parser)]
#[command(
    name = "sip-filter",
    version,
    about = "XDP firewall for SIP: stops brute force, scanners and toll fraud before the PBX sees a packet"
)]
struct Cli {
    /// Interface whose filter a management command works on (default: the only one filtered).
    #[arg(long, global = true)]
    iface: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Attach the filter to an interface and run the daemon (logs bans, expires them, reloads on SIGHUP).
    Run {
        /// Configuration file (default: /etc/sip-filter/sip-filter.toml if it exists, else built-in defaults).
        #[arg(long)]
        config: Option<PathBuf>,
        /// XDP attach mode.
        #[arg(long, value_enum, default_value = "auto")]
        mode: attach::Mode,
        #[arg(long, value_enum, default_value = "human")]
        log_format: LogFormat,
    },
    /// Remove the filter from an interface, with its pins (bans and counters are forgotten).
    Detach,
    /// Validate a configuration file without touching the running filter.
    CheckConfig { path: PathBuf },
    /// Manage bans.
    Ban {
        #[command(subcommand)]
        cmd: BanCmd,
    },
    /// Manage the allowlist (trunks, offices: never dropped, never banned).
    Allow {
        #[command(subcommand)]
        cmd: AllowCmd,
    },
    /// Geo-blocking.
    Geo {
        #[command(subcommand)]
        cmd: GeoCmd,
    },
    /// Packet and verdict counters.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Interface, mode, program ids, map fill levels and whether the daemon runs.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Run a pcap/pcapng capture through the filter's programs on private maps (like fail2ban-regex).
    Replay {
        capture: PathBuf,
        /// The PBX's address(es): its packets go through the egress program.
        #[arg(long, required = true)]
        pbx: Vec<IpAddr>,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum BanCmd {
    /// Ban an address, an IPv6 prefix or a CIDR.
    Add {
        target: String,
        /// How long (e.g. 30m, 2h, 7d); permanent if omitted.
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// A note kept with the ban (shown by `ban list`; 32 bytes are kept).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Lift a ban (and forget the source's failure count).
    Del { target: String },
    /// Bans in force.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Lift every ban.
    Flush,
}

#[derive(Subcommand)]
enum AllowCmd {
    Add {
        cidr: String,
    },
    Del {
        cidr: String,
    },
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum GeoCmd {
    /// Country of an address and the filter's verdict, with why.
    Lookup {
        addr: IpAddr,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sip-filter: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn default_config(given: Option<PathBuf>) -> Option<PathBuf> {
    given.or_else(|| {
        Path::new(DEFAULT_CONFIG)
            .exists()
            .then(|| PathBuf::from(DEFAULT_CONFIG))
    })
}

fn open(iface: Option<&str>) -> Result<(String, Pinned)> {
    pins::require_root("managing the filter")?;
    let iface = pins::resolve_iface(iface)?;
    let maps = Pinned::open(&pins::dir(&iface))?;
    Ok((iface, maps))
}

fn dispatch(cli: Cli) -> Result<()> {
    let iface = cli.iface.as_deref();
    match cli.cmd {
        Cmd::Run {
            config,
            mode,
            log_format,
        } => {
            let iface = iface.context("run needs --iface IFACE (the PBX's network interface)")?;
            init_logs(log_format);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(daemon::run(daemon::RunArgs {
                iface: iface.to_string(),
                config: default_config(config),
                mode,
            }))
        }
        Cmd::Detach => {
            pins::require_root("detach")?;
            let iface = iface.context("detach needs --iface IFACE")?;
            if let Some(pid) = pins::daemon_pid(iface) {
                // SAFETY: plain kill(2) on the daemon's pid from its pid file.
                unsafe { libc::kill(pid, libc::SIGTERM) };
                std::thread::sleep(Duration::from_millis(300));
            }
            attach::detach(iface)?;
            println!("sip-filter removed from {iface}");
            Ok(())
        }
        Cmd::CheckConfig { path } => {
            let s = Settings::load(&path)?;
            let nets = geo_source::blocked_networks(&s.geo)?;
            let geo = sip_filter::geo::GeoTable::build(nets)?;
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
            Ok(())
        }
        Cmd::Ban { cmd } => ban(iface, cmd),
        Cmd::Allow { cmd } => allow(iface, cmd),
        Cmd::Geo {
            cmd: GeoCmd::Lookup { addr, config },
        } => geo_lookup(iface, addr, config),
        Cmd::Stats { json } => {
            let (_, mut maps) = open(iface)?;
            let s = maps.stats()?;
            let named: Vec<(&str, u64)> = stat::NAMES
                .iter()
                .zip(s)
                .filter(|(n, _)| !n.is_empty())
                .map(|(n, v)| (*n, v))
                .collect();
            if json {
                let obj: serde_json::Map<String, serde_json::Value> = named
                    .into_iter()
                    .map(|(n, v)| (n.to_string(), v.into()))
                    .collect();
                println!("{}", serde_json::Value::Object(obj));
            } else {
                for (n, v) in named {
                    println!("{n:<26} {v}");
                }
            }
            Ok(())
        }
        Cmd::Status { json } => status(iface, json),
        Cmd::Replay {
            capture,
            pbx,
            config,
            json,
        } => replay(capture, pbx, config, json),
    }
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

fn ban(iface: Option<&str>, cmd: BanCmd) -> Result<()> {
    match cmd {
        BanCmd::Add {
            target,
            duration,
            reason,
        } => {
            let t = bans::parse_target(&target)?;
            let (_, mut maps) = open(iface)?;
            let banned = bans::add(&mut maps, t, duration, &reason)?;
            match duration {
                Some(d) => println!("banned {banned} for {}", humantime::format_duration(d)),
                None => println!("banned {banned} permanently"),
            }
        }
        BanCmd::Del { target } => {
            let t = bans::parse_target(&target)?;
            let (_, mut maps) = open(iface)?;
            bans::del(&mut maps, t)?;
            println!("unbanned {t}");
        }
        BanCmd::List { json } => {
            let (_, mut maps) = open(iface)?;
            let list = bans::list(&mut maps)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("no bans");
            } else {
                println!(
                    "{:<28} {:<15} {:>8} {:<21} {:>10}  note",
                    "address", "reason", "failures", "created", "expires in"
                );
                for b in list {
                    let exp = b
                        .expires_in_secs
                        .map(|s| humantime::format_duration(Duration::from_secs(s)).to_string())
                        .unwrap_or_else(|| "never".into());
                    println!(
                        "{:<28} {:<15} {:>8} {:<21} {:>10}  {}",
                        b.addr,
                        b.reason,
                        b.failures,
                        b.created,
                        exp,
                        b.note.unwrap_or_default()
                    );
                }
            }
        }
        BanCmd::Flush => {
            let (_, mut maps) = open(iface)?;
            let n = bans::flush(&mut maps)?;
            println!("lifted {n} bans");
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct AllowEntry {
    cidr: String,
    source: &'static str,
}

fn allow(iface: Option<&str>, cmd: AllowCmd) -> Result<()> {
    use aya::maps::lpm_trie::Key;
    use sip_filter::rules::{ALLOW_FROM_CLI, ALLOW_FROM_CONFIG};
    let parse = |s: &str| -> Result<ipnet::IpNet> { bans::parse_target(s) };
    match cmd {
        AllowCmd::Add { cidr } => {
            let net = parse(&cidr)?;
            let (_, mut maps) = open(iface)?;
            let (len, k) = addr::net_to_lpm(net);
            maps.allow()?
                .insert(&Key::new(len, k), ALLOW_FROM_CLI, 0)
                .context("allowlist full?")?;
            let mut c = maps.config()?;
            c.allow_active = 1;
            maps.set_config(&c)?;
            println!("allowed {net}");
        }
        AllowCmd::Del { cidr } => {
            let net = parse(&cidr)?;
            let (_, mut maps) = open(iface)?;
            let (len, k) = addr::net_to_lpm(net);
            let mut m = maps.allow()?;
            let from = m
                .get(&Key::new(len, k), 0)
                .map_err(|_| anyhow::anyhow!("{net} is not in the allowlist"))?;
            m.remove(&Key::new(len, k))?;
            if from == ALLOW_FROM_CONFIG {
                println!(
                    "removed {net} (it is in the configuration file: a reload brings it back)"
                );
            } else {
                println!("removed {net}");
            }
        }
        AllowCmd::List { json } => {
            let (_, mut maps) = open(iface)?;
            let mut v: Vec<AllowEntry> = maps
                .allow()?
                .iter()
                .filter_map(Result::ok)
                .map(|(k, from)| AllowEntry {
                    cidr: addr::lpm_to_net(k.prefix_len(), k.data()).to_string(),
                    source: if from == ALLOW_FROM_CONFIG {
                        "config"
                    } else {
                        "cli"
                    },
                })
                .collect();
            v.sort_by(|a, b| a.cidr.cmp(&b.cidr));
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if v.is_empty() {
                println!("allowlist is empty");
            } else {
                for e in v {
                    println!("{:<43} {}", e.cidr, e.source);
                }
            }
        }
    }
    Ok(())
}

fn geo_lookup(iface: Option<&str>, ip: IpAddr, config: Option<PathBuf>) -> Result<()> {
    let settings = match default_config(config) {
        Some(p) => Settings::load(&p)?,
        None => Settings::default(),
    };
    let v = geo_source::lookup(&settings.geo, ip)?;
    let country = v.country.as_deref().unwrap_or("unknown");
    let net = v.network.map(|n| format!(" ({n})")).unwrap_or_default();
    println!("{ip}: country {country}{net}");
    println!(
        "configuration: {} — {}",
        if v.blocked { "blocked" } else { "not blocked" },
        v.why
    );
    if let Some(n) = settings.allow.iter().find(|n| n.contains(&ip)) {
        println!("allowlisted by {n} in the configuration: the allowlist beats geo-blocking");
    }
    // What the running filter does right now, if there is one.
    if let Ok(iface) = pins::resolve_iface(iface)
        && let Ok(mut maps) = Pinned::open(&pins::dir(&iface))
    {
        let table = maps.geo_table()?;
        let blocks = table.blocks(ip);
        let (len, k) = addr::net_to_lpm(ipnet::IpNet::from(ip));
        let allowed = maps
            .allow()?
            .get(&aya::maps::lpm_trie::Key::new(len, k), 0)
            .is_ok();
        let verdict = match (blocks, allowed) {
            (_, true) => "passes (allowlisted)",
            (true, false) => "drops it (geo-blocked)",
            (false, false) => "does not geo-block it",
        };
        println!("running filter on {iface}: {verdict}");
    }
    Ok(())
}

#[derive(Serialize)]
struct MapFill {
    name: &'static str,
    entries: usize,
    max_entries: u32,
}

#[derive(Serialize)]
struct Status {
    iface: String,
    mode: Option<String>,
    daemon_pid: Option<i32>,
    program_ids: Vec<(String, u32)>,
    maps: Vec<MapFill>,
    bans: usize,
}

fn status(iface: Option<&str>, json: bool) -> Result<()> {
    let (iface, mut maps) = open(iface)?;
    let dir = pins::dir(&iface);
    let config_id = aya::maps::MapInfo::from_pin(dir.join(map_names::CONFIG))?.id();
    let mut program_ids = Vec::new();
    for p in aya::programs::loaded_programs().filter_map(Result::ok) {
        if p.map_ids()
            .ok()
            .flatten()
            .is_some_and(|ids| ids.contains(&config_id))
        {
            program_ids.push((p.name_as_str().unwrap_or("?").to_string(), p.id()));
        }
    }
    let mut fills = Vec::new();
    for name in [
        map_names::BANS,
        map_names::BAN_NETS,
        map_names::ALLOW,
        map_names::FLOWS,
        map_names::FAILURES,
        map_names::GEO_NODES,
    ] {
        let info = aya::maps::MapInfo::from_pin(dir.join(name))?;
        let entries = count_entries(&mut maps, name)?;
        fills.push(MapFill {
            name,
            entries,
            max_entries: info.max_entries(),
        });
    }
    let s = Status {
        mode: std::fs::read_to_string(pins::mode_file(&iface)).ok(),
        daemon_pid: pins::daemon_pid(&iface),
        program_ids,
        bans: bans::list(&mut maps)?.len(),
        maps: fills,
        iface,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!("interface:  {}", s.iface);
    println!("mode:       {}", s.mode.as_deref().unwrap_or("unknown"));
    match s.daemon_pid {
        Some(pid) => println!("daemon:     running (pid {pid})"),
        None => println!(
            "daemon:     not running (the filter still enforces; start it with `sip-filter run --iface {}`)",
            s.iface
        ),
    }
    if s.program_ids.is_empty() {
        println!("programs:   none attached (pins only)");
    }
    for (n, id) in &s.program_ids {
        println!("program:    {n} id {id}");
    }
    println!("bans:       {} in force", s.bans);
    for m in &s.maps {
        println!(
            "map:        {:<10} {:>8} / {}",
            m.name, m.entries, m.max_entries
        );
    }
    Ok(())
}

fn count_entries(maps: &mut Pinned, name: &str) -> Result<usize> {
    use sip_filter_common::{Flow, FlowKey, GeoKey};
    Ok(match name {
        map_names::BANS => maps.bans()?.keys().count(),
        map_names::BAN_NETS => maps.ban_nets()?.keys().count(),
        map_names::ALLOW => maps.allow()?.keys().count(),
        map_names::FAILURES => maps.failures()?.keys().count(),
        map_names::FLOWS => aya::maps::HashMap::<_, FlowKey, Flow>::try_from(maps.map_mut(name)?)?
            .keys()
            .count(),
        map_names::GEO_NODES => {
            aya::maps::HashMap::<_, GeoKey, u32>::try_from(maps.map_mut(name)?)?
                .keys()
                .count()
        }
        _ => 0,
    })
}

fn replay(capture: PathBuf, pbx: Vec<IpAddr>, config: Option<PathBuf>, json: bool) -> Result<()> {
    pins::require_root("replay (it loads the programs into the kernel to run them)")?;
    let settings = match config {
        Some(p) => Settings::load(&p)?,
        None => Settings::default(),
    };
    let opts = sip_filter::replay::ReplayOptions {
        capture,
        pbx,
        settings,
        json,
    };
    let mut out = std::io::stdout().lock();
    sip_filter::replay::run(&opts, &mut out)?;
    Ok(())
}
