//! `[notify] webhook`: a JSON document POSTed for each ban the kernel issues, each ban that
//! expires and each call a toll-fraud rule blocks, off the hot path. The daemon hands events to a bounded queue and never waits: a
//! slow or dead endpoint delays no ban (the kernel bans on its own) and grows no memory; what
//! does not fit in the queue is dropped and counted (`sipfilter_notifications_total`).
use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc::{SyncSender, TrySendError, sync_channel},
    },
    time::Duration,
};

use serde::Serialize;
use tracing::warn;

/// Events waiting to be sent, at most.
pub const QUEUE: usize = 1024;
/// Tries per event, with the delay before each retry doubling from `FIRST_RETRY`.
pub const TRIES: u32 = 3;
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// One request's deadline (connect, send, answer).
const TIMEOUT: Duration = Duration::from_secs(5);

/// Notifications by outcome, for the metrics (this process's, since its start).
pub static SENT: AtomicU64 = AtomicU64::new(0);
pub static FAILED: AtomicU64 = AtomicU64::new(0);
pub static DROPPED: AtomicU64 = AtomicU64::new(0);

/// One notification, as the webhook receives it.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// "ban", "unban", "rate_limit", "call_blocked", "ext_lock" (an extension locked; `reason`
    /// is the extension) or "ext_block" (an extension blocked from the source `addr`).
    pub event: &'static str,
    pub iface: String,
    /// Address or prefix, as `ban list` shows it.
    pub addr: String,
    /// `auth-failures`, `extension-scan`, `manual`.
    pub reason: String,
    pub failures: u32,
    /// RFC 3339: when it happened.
    pub time: String,
    /// RFC 3339: when the ban ends (bans only; `None` for a permanent one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Bans: who issued it (`sip-filter`: the kernel at a threshold; `operator`: the CLI).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<&'static str>,
    /// Bans: this source's bans remembered, this one included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offences: Option<u32>,
    /// Unbans: why it ended (`expired`, `operator`, `replaced`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<&'static str>,
    /// Blocked calls (`call_blocked`): direction, extension, dialled and normalised number,
    /// rule, local time, Call-ID.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub call: Option<crate::calls::blocked::BlockedCall>,
}

/// The queue to the sender thread.
pub struct Notifier {
    tx: SyncSender<Event>,
}

impl Notifier {
    /// Starts the sender thread for `url` (checked by the configuration).
    pub fn start(url: String) -> Self {
        let (tx, rx) = sync_channel::<Event>(QUEUE);
        std::thread::Builder::new()
            .name("sip-filter-notify".into())
            .spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .timeout_global(Some(TIMEOUT))
                    .build()
                    .into();
                for e in rx {
                    deliver(&agent, &url, &e);
                }
            })
            .expect("spawning the notification thread");
        Self { tx }
    }

    /// Queues `e`, or drops and counts it when the queue is full. Never blocks.
    pub fn send(&self, e: Event) {
        match self.tx.try_send(e) {
            Ok(()) => {}
            Err(TrySendError::Full(e)) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
                warn!(addr = %e.addr, event = e.event, "notification dropped: the webhook queue is full");
            }
            Err(TrySendError::Disconnected(_)) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn deliver(agent: &ureq::Agent, url: &str, e: &Event) {
    let mut delay = FIRST_RETRY;
    for attempt in 1..=TRIES {
        match agent.post(url).send_json(e) {
            Ok(_) => {
                SENT.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(err) if attempt == TRIES => {
                FAILED.fetch_add(1, Ordering::Relaxed);
                warn!(addr = %e.addr, event = e.event, "notification not delivered after {TRIES} tries: {err}");
            }
            Err(_) => {
                std::thread::sleep(delay);
                delay *= 2;
            }
        }
    }
}
