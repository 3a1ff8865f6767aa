//! Geo-blocking lookup in the fixed-stride table built by userspace: a /16 array, then hash
//! nodes at byte boundaries. Cost is bounded whatever the number of prefixes loaded.
use sip_filter_common::{GeoKey, geo};

use crate::maps::{GEO_NODES, GEO_V4, GEO_V6};

#[inline(always)]
fn node(len: u32, addr: &[u8; 16], keep: usize) -> u32 {
    let mut k = GeoKey { len, addr: [0; 16] };
    for (d, s) in k.addr.iter_mut().zip(addr).take(keep) {
        *d = *s;
    }
    match unsafe { GEO_NODES.get(k) } {
        Some(v) => *v,
        None => geo::PASS,
    }
}

#[inline(always)]
pub fn blocked(addr: &[u8; 16], is_v6: bool) -> bool {
    if !is_v6 {
        let a = u32::from_be_bytes([addr[12], addr[13], addr[14], addr[15]]);
        let Some(w) = GEO_V4.get(a >> geo::V4_WORD_SHIFT) else {
            return false;
        };
        let bit = 1u64 << ((a >> 8) & 63);
        return w.block & bit != 0
            || (w.partial & bit != 0 && node(96 + 32, addr, 16) == geo::BLOCK);
    }
    let top = ((addr[0] as u32) << 8) | addr[1] as u32;
    let mut state = GEO_V6.get(top).copied().unwrap_or(geo::PASS);
    if state == geo::PARTIAL {
        state = node(32, addr, 4);
        if state == geo::PARTIAL {
            state = node(48, addr, 6);
            if state == geo::PARTIAL {
                state = node(64, addr, 8);
            }
        }
    }
    state == geo::BLOCK
}
