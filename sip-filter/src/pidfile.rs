//! The daemon's run files under `/run/sip-filter`: its pid (one daemon per interface) and the
//! XDP mode it attached with (for `status`).
use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

const RUN_DIR: &str = "/run/sip-filter";

/// Where the run files live.
pub fn run_dir() -> PathBuf {
    PathBuf::from(RUN_DIR)
}

fn pid_file(iface: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{iface}.pid"))
}

fn mode_file(iface: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{iface}.mode"))
}

/// The pid of the daemon for `iface`, if it is running.
pub fn daemon_pid(iface: &str) -> Option<i32> {
    let pid: i32 = fs::read_to_string(pid_file(iface))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "sip-filter").then_some(pid)
}

/// Records this process as the daemon of `iface`, attached in `mode`.
pub fn write(iface: &str, mode: &str) -> Result<()> {
    fs::create_dir_all(RUN_DIR).with_context(|| format!("creating {RUN_DIR}"))?;
    fs::write(pid_file(iface), format!("{}\n", std::process::id()))?;
    fs::write(mode_file(iface), mode).ok();
    Ok(())
}

fn state_file(iface: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{iface}.state"))
}

/// Records where the daemon of `iface` keeps its state file (for the CLI's `ban show`).
pub fn write_state_path(iface: &str, path: &Path) {
    fs::write(state_file(iface), path.as_os_str().as_encoded_bytes()).ok();
}

/// The state file of `iface`'s daemon as it last recorded it.
pub fn state_path(iface: &str) -> Option<PathBuf> {
    fs::read_to_string(state_file(iface))
        .ok()
        .map(|s| PathBuf::from(s.trim_end()))
}

/// The XDP mode the daemon of `iface` attached with.
pub fn mode(iface: &str) -> Option<String> {
    fs::read_to_string(mode_file(iface)).ok()
}

/// The daemon stopped: it no longer runs (the mode stays for `status`).
pub fn remove_pid(iface: &str) {
    let _ = fs::remove_file(pid_file(iface));
}

/// The filter is gone: forget both files.
pub fn remove(iface: &str) {
    remove_pid(iface);
    let _ = fs::remove_file(mode_file(iface));
}
