//! Extensions held by the per-extension call limits (`max_calls_per_minute`,
//! `max_same_number`): the kernel counts and holds (`EXT_CALLS`, `EXT_NUMBERS`); this is what
//! `calls blocked` lists, `calls unblock` lifts, and what the daemon keeps in force.
use std::collections::HashMap as StdHashMap;

use anyhow::{Context as _, Result, bail};
use aya::maps::{HashMap, MapData};
use serde::Serialize;
use sip_filter_common::{CallWindow, EXT_LEN, ExtCalls, ExtNumber, Extension, map};

use crate::{clock, maps::Maps};

/// The `EXT_CALLS` key of an extension (its digest username): zero-padded.
pub fn key(ext: &str) -> Result<Extension> {
    let b = ext.as_bytes();
    if b.is_empty() || b.len() > EXT_LEN {
        bail!("an extension is 1 to {EXT_LEN} bytes, not {ext:?}");
    }
    let mut k = [0u8; EXT_LEN];
    k[..b.len()].copy_from_slice(b);
    Ok(k)
}

/// The extension a key names.
pub fn name(k: &Extension) -> String {
    let n = k.iter().position(|&b| b == 0).unwrap_or(EXT_LEN);
    String::from_utf8_lossy(&k[..n]).into_owned()
}

/// One held extension.
#[derive(Clone, Debug, Serialize)]
pub struct Hold {
    pub extension: String,
    /// RFC 3339: when it may place international calls again.
    pub until: String,
    pub remaining_secs: u64,
}

/// Every extension held now.
pub fn list(dp: &mut impl Maps) -> Result<Vec<Hold>> {
    let calls: HashMap<&mut MapData, Extension, ExtCalls> =
        HashMap::try_from(dp.map_mut(map::EXT_CALLS.name)?)?;
    let now = clock::boot_ns();
    let mut v: Vec<Hold> = calls
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, c)| c.held_until_ns > now)
        .map(|(k, c)| Hold {
            extension: name(&k),
            until: humantime::format_rfc3339_seconds(clock::to_wall(c.held_until_ns)).to_string(),
            remaining_secs: (c.held_until_ns - now) / 1_000_000_000,
        })
        .collect();
    v.sort_by(|a, b| a.extension.cmp(&b.extension));
    Ok(v)
}

/// Lifts the hold on `ext` and forgets its counts; false when it was not held.
pub fn lift(dp: &mut impl Maps, ext: &str) -> Result<bool> {
    let k = key(ext)?;
    let held = {
        let mut calls: HashMap<&mut MapData, Extension, ExtCalls> =
            HashMap::try_from(dp.map_mut(map::EXT_CALLS.name)?)?;
        match calls.get(&k, 0) {
            Ok(c) => {
                let held = c.held_until_ns > clock::boot_ns();
                // Kept, with no hold and no counts: the daemon then knows the operator lifted
                // it (an entry gone is one the LRU evicted, and it writes that back).
                calls
                    .insert(
                        k,
                        ExtCalls {
                            last_call: c.last_call,
                            ..ExtCalls::default()
                        },
                        0,
                    )
                    .context("writing EXT_CALLS")?;
                held
            }
            Err(_) => false,
        }
    };
    let mut numbers: HashMap<&mut MapData, ExtNumber, CallWindow> =
        HashMap::try_from(dp.map_mut(map::EXT_NUMBERS.name)?)?;
    let mine: Vec<ExtNumber> = numbers
        .keys()
        .filter_map(Result::ok)
        .filter(|n| n.ext == k)
        .collect();
    for n in mine {
        let _ = numbers.remove(&n);
    }
    Ok(held)
}

/// The daemon's copy of the holds the kernel issued, written back if `EXT_CALLS` (an LRU, so
/// that usernames nobody owns cannot fill it) evicts one before it ends.
#[derive(Default)]
pub struct Keeper {
    held: StdHashMap<Extension, u64>,
}

impl Keeper {
    /// The kernel held `ext` until `until_ns`.
    pub fn held(&mut self, ext: Extension, until_ns: u64) {
        self.held.insert(ext, until_ns);
    }

    /// Writes back holds that were evicted; forgets ended or lifted ones. Returns how many were
    /// written back.
    pub fn keep(&mut self, dp: &mut impl Maps) -> Result<usize> {
        if self.held.is_empty() {
            return Ok(0);
        }
        let now = clock::boot_ns();
        self.held.retain(|_, until| *until > now);
        let mut calls: HashMap<&mut MapData, Extension, ExtCalls> =
            HashMap::try_from(dp.map_mut(map::EXT_CALLS.name)?)?;
        let mut restored = 0;
        let mut lifted = Vec::new();
        for (k, until) in &self.held {
            match calls.get(k, 0) {
                Ok(c) if c.held_until_ns == 0 => lifted.push(*k),
                Ok(_) => {}
                Err(_) => {
                    calls.insert(
                        k,
                        ExtCalls {
                            held_until_ns: *until,
                            ..ExtCalls::default()
                        },
                        0,
                    )?;
                    restored += 1;
                }
            }
        }
        for k in lifted {
            self.held.remove(&k);
        }
        Ok(restored)
    }
}
