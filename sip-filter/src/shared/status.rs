//! Each shared source's state for `status`: the daemon writes it to
//! `/run/sip-filter/<iface>.sources.json` when it changes; the CLI reads it.
use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use serde::{Deserialize, Serialize};

/// One source (the CrowdSec bouncer, its watcher, the APIBAN feed).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Source {
    pub name: String,
    /// `connecting`, `connected` or `unreachable`.
    pub state: String,
    pub url: String,
    /// RFC 3339 of the last successful exchange.
    pub last_sync: Option<String>,
    /// Decisions held (bouncer) or alerts pushed (watcher).
    pub count: u64,
    /// Decisions of types other than `ban`, or scopes other than Ip/Range: counted, not enforced.
    pub ignored: u64,
    pub errors: u64,
    pub last_error: Option<String>,
}

/// The sources of one daemon, shared by the threads that talk to them.
#[derive(Clone)]
pub struct Board {
    path: PathBuf,
    sources: Arc<Mutex<Vec<Source>>>,
}

pub fn path(iface: &str) -> PathBuf {
    crate::pidfile::run_dir().join(format!("{iface}.sources.json"))
}

impl Board {
    pub fn new(iface: &str) -> Self {
        let b = Self {
            path: path(iface),
            sources: Arc::default(),
        };
        b.write();
        b
    }

    /// Changes source `name` (added on first use) and rewrites the file.
    pub fn update(&self, name: &str, url: &str, f: impl FnOnce(&mut Source)) {
        {
            let mut v = self.sources.lock().unwrap_or_else(|e| e.into_inner());
            let i = match v.iter().position(|s| s.name == name) {
                Some(i) => i,
                None => {
                    v.push(Source {
                        name: name.into(),
                        state: "connecting".into(),
                        url: url.into(),
                        ..Source::default()
                    });
                    v.len() - 1
                }
            };
            f(&mut v[i]);
        }
        self.write();
    }

    /// Source `name` as it stands.
    pub fn get(&self, name: &str) -> Option<Source> {
        let v = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        v.iter().find(|s| s.name == name).cloned()
    }

    fn write(&self) {
        let v = self
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let tmp = self.path.with_extension("json.tmp");
        if let Ok(text) = serde_json::to_string_pretty(&v)
            && std::fs::write(&tmp, text).is_ok()
        {
            let _ = std::fs::rename(&tmp, &self.path);
        }
    }
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// What the daemon of `iface` last wrote (empty without one, or without shared sources).
pub fn read(iface: &str) -> Vec<Source> {
    std::fs::read_to_string(path(iface))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}
