//! Network interfaces of the current namespace, by name.
use std::ffi::CString;

use anyhow::{Context as _, Result, bail};

/// Interfaces of the current network namespace (for "unknown interface" errors).
pub fn interfaces() -> Vec<String> {
    let mut out = Vec::new();
    // SAFETY: if_nameindex returns an array terminated by a zero entry, freed below.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return out;
        }
        let mut p = list;
        while (*p).if_index != 0 {
            out.push(
                std::ffi::CStr::from_ptr((*p).if_name)
                    .to_string_lossy()
                    .into_owned(),
            );
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    out
}

/// The index of `iface`, or an error that lists the interfaces there are.
pub fn require(iface: &str) -> Result<u32> {
    let c = CString::new(iface).context("interface name")?;
    // SAFETY: valid C string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        bail!(
            "unknown interface {iface}; interfaces here: {}",
            interfaces().join(", ")
        );
    }
    Ok(idx)
}
