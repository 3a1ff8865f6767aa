//! Where a running filter lives: bpffs pins under `/sys/fs/bpf/sip-filter/<iface>/` (maps and
//! links, which keep the filter enforcing without a daemon).
use std::{
    ffi::CString,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

pub const BPFFS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
pub const XDP_LINK: &str = "xdp_link";
pub const TC_LINK: &str = "tc_link";

pub fn root() -> PathBuf {
    Path::new(BPFFS).join("sip-filter")
}

pub fn dir(iface: &str) -> PathBuf {
    root().join(iface)
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid C string, st is ours to fill.
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
}

/// Mounts bpffs at /sys/fs/bpf if it is not there (as systemd does on most distributions).
pub fn ensure_bpffs() -> Result<()> {
    let p = Path::new(BPFFS);
    if is_bpffs(p) {
        return Ok(());
    }
    fs::create_dir_all(p).ok();
    let status = std::process::Command::new("mount")
        .args(["-t", "bpf", "bpf", BPFFS])
        .status()
        .context("running mount -t bpf")?;
    if !status.success() || !is_bpffs(p) {
        bail!(
            "bpffs is not mounted at {BPFFS} and mounting it failed; mount it with \
             `mount -t bpf bpf {BPFFS}` (needs root, and a kernel with CONFIG_BPF_SYSCALL)"
        );
    }
    Ok(())
}

/// Interfaces that have a filter pinned.
pub fn filtered_interfaces() -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(root())
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().join(sip_filter_common::map::CONFIG.name).exists())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The interface a management command works on: the one given, or the only one filtered.
pub fn resolve_iface(given: Option<&str>) -> Result<String> {
    let have = filtered_interfaces();
    match given {
        Some(i) => {
            if !have.iter().any(|h| h == i) {
                bail!(
                    "no sip-filter on interface {i} (nothing pinned in {}); filtered interfaces: {}",
                    dir(i).display(),
                    list_or_none(&have)
                );
            }
            Ok(i.to_string())
        }
        None => match have.as_slice() {
            [one] => Ok(one.clone()),
            [] => bail!(
                "no sip-filter is attached to any interface (start one with `sip-filter run --iface IFACE`)"
            ),
            _ => bail!(
                "several interfaces are filtered ({}): say which with --iface",
                have.join(", ")
            ),
        },
    }
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}
