//! Prometheus metrics (`[metrics] listen`): what `stats` and `status` show, for the monitoring
//! the operator already runs. Every scrape reads the pinned maps, so the counters are the
//! kernel's own and no daemon restart resets them.
use std::{net::SocketAddr, path::PathBuf};

use anyhow::{Context as _, Result};
use prometheus::{Encoder as _, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use sip_filter_common::{BanReason, Reason, map};
use tracing::{info, warn};

use crate::{
    bans,
    maps::{Maps, Pinned},
    notify,
};

/// The exposition format served (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Creates a metric family and registers it: what every metric below does first.
fn family<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    new: impl FnOnce(Opts, &[&str]) -> prometheus::Result<M>,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<M> {
    let m = new(Opts::new(name, help), labels)?;
    registry.register(Box::new(m.clone()))?;
    Ok(m)
}

/// Renders every metric from the maps of a filter.
pub fn render(maps: &mut impl Maps) -> Result<String> {
    let r = Registry::new();
    let counters = maps.stats()?;

    let packets = family(
        &r,
        IntCounterVec::new,
        "sipfilter_packets_total",
        "Packets and events the dataplane counted, by reason (see `sip-filter stats`).",
        &["action", "reason"],
    )?;
    for (reason, v) in Reason::ALL.iter().zip(counters) {
        packets
            .with_label_values(&[reason.action(), reason.name()])
            .inc_by(v);
    }

    let issued = family(
        &r,
        IntCounterVec::new,
        "sipfilter_bans_total",
        "Bans made, by reason: the kernel's at a threshold and the operators' (`ban add`).",
        &["reason"],
    )?;
    for reason in BanReason::ALL {
        if let Some(c) = reason.counter() {
            issued
                .with_label_values(&[reason.as_str()])
                .inc_by(counters[c as usize]);
        }
    }

    let active = family(
        &r,
        IntGaugeVec::new,
        "sipfilter_active_bans",
        "Bans in force, by reason and address family.",
        &["reason", "family"],
    )?;
    for reason in BanReason::ALL {
        for family in ["ipv4", "ipv6"] {
            active.with_label_values(&[reason.as_str(), family]).set(0);
        }
    }
    for b in bans::list(maps)? {
        let family = if b.addr.contains(':') { "ipv6" } else { "ipv4" };
        active.with_label_values(&[&b.reason, family]).inc();
    }

    let entries = family(
        &r,
        IntGaugeVec::new,
        "sipfilter_map_entries",
        "Entries in a map of the dataplane.",
        &["map"],
    )?;
    let capacity = family(
        &r,
        IntGaugeVec::new,
        "sipfilter_map_capacity",
        "Entries a map of the dataplane can hold.",
        &["map"],
    )?;
    for spec in map::ALL.iter().filter(|s| s.kind.has_entries()) {
        entries
            .with_label_values(&[spec.name])
            .set(maps.count_entries(spec)? as i64);
        capacity
            .with_label_values(&[spec.name])
            .set(i64::from(maps.max_entries(spec)?));
    }

    let notifications = family(
        &r,
        IntCounterVec::new,
        "sipfilter_notifications_total",
        "Webhook notifications since the daemon started, by outcome (sent, failed after retries, \
         dropped: queue full).",
        &["outcome"],
    )?;
    for (outcome, n) in [
        ("sent", &notify::SENT),
        ("failed", &notify::FAILED),
        ("dropped", &notify::DROPPED),
    ] {
        notifications
            .with_label_values(&[outcome])
            .inc_by(n.load(std::sync::atomic::Ordering::Relaxed));
    }

    family(
        &r,
        IntGaugeVec::new,
        "sipfilter_build_info",
        "The running sip-filter's version.",
        &["version"],
    )?
    .with_label_values(&[env!("CARGO_PKG_VERSION")])
    .set(1);

    let mut out = Vec::new();
    TextEncoder::new().encode(&r.gather(), &mut out)?;
    Ok(String::from_utf8(out)?)
}

/// Binds the metrics address; the daemon does it before it touches the filter, so a taken
/// port fails its start with a clear error and changes nothing.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("[metrics] listen: cannot listen on {addr}"))
}

/// Serves `/metrics` from the pins in `dir` on the daemon's runtime.
pub fn spawn(listener: tokio::net::TcpListener, dir: PathBuf) -> Result<()> {
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let dir = dir.clone();
            async move {
                match Pinned::open(&dir).and_then(|mut maps| render(&mut maps)) {
                    Ok(body) => (
                        axum::http::StatusCode::OK,
                        [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
                        body,
                    ),
                    Err(e) => {
                        warn!("metrics: {e:#}");
                        (
                            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                            [(axum::http::header::CONTENT_TYPE, "text/plain")],
                            format!("{e:#}\n"),
                        )
                    }
                }
            }
        }),
    );
    info!(%addr, "metrics at http://{addr}/metrics");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!("metrics server stopped: {e}");
        }
    });
    Ok(())
}
