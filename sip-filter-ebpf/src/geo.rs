//! Geo-blocking lookup in the fixed-stride table built by userspace: a /16 array, then hash
//! nodes at byte boundaries. Cost is bounded whatever the number of prefixes loaded.
use sip_filter_common::{GeoKey, geo};

use crate::maps::{GEO_NODES, GEO_V4, GEO_V6};

#[inline(always)]
fn node(len: u32, addr: &[u8; 16], keep: usize) -> u32 {
    let mut k = GeoKey { len, addr: [0; 16] };
    for i in 0..16 {
        if i < keep {
            k.addr[i] = addr[i];
        }
    }
    match unsafe { GEO_NODES.get(&k) } {
        Some(v) => *v,
        None => geo::PASS,
    }
}

#[inline(always)]
pub fn blocked(addr: &[u8; 16], is_v6: bool) -> bool {
    if !is_v6 {
        let top = ((addr[12] as u32) << 8) | addr[13] as u32;
        let mut state = GEO_V4.get(top).copied().unwrap_or(geo::PASS);
        if state == geo::PARTIAL {
            state = node(96 + 24, addr, 15);
            if state == geo::PARTIAL {
                state = node(96 + 32, addr, 16);
            }
        }
        return state == geo::BLOCK;
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
