//! Header parsing shared by the XDP and TC programs: both see a linear buffer between
//! `data` and `data_end` (TC pulls the headers in first).
pub mod sip;

use core::mem::size_of;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// How many IPv6 extension headers we walk before giving up on finding the transport header.
const MAX_V6_EXT: usize = 6;

/// Header field offsets, in bytes from the start of their header.
mod off {
    /// Ethernet: the ethertype after two MACs; a VLAN tag: the inner ethertype.
    pub const ETH_TYPE: usize = 12;
    pub const VLAN_TYPE: usize = 2;
    /// IPv4: flags and fragment offset, protocol, addresses.
    pub const V4_FRAG: usize = 6;
    pub const V4_PROTO: usize = 9;
    pub const V4_SRC: usize = 12;
    pub const V4_DST: usize = 16;
    /// IPv6: next header, addresses.
    pub const V6_NEXT: usize = 6;
    pub const V6_SRC: usize = 8;
    pub const V6_DST: usize = 24;
    /// IPv6 extension header: next header, length; fragment header: offset and M flag.
    pub const EXT_NEXT: usize = 0;
    pub const EXT_LEN: usize = 1;
    pub const EXT_FRAG: usize = 2;
    /// UDP and TCP: ports; UDP: length.
    pub const L4_SPORT: usize = 0;
    pub const L4_DPORT: usize = 2;
    pub const UDP_LEN: usize = 4;
    /// IPv4: total length; IPv6: payload length; TCP: the data offset's byte.
    pub const V4_LEN: usize = 2;
    pub const V6_PAYLOAD_LEN: usize = 4;
    pub const TCP_DOFF: usize = 12;
}

/// IPv6 extension headers walked to reach the transport header.
const V6_HOP_BY_HOP: u8 = 0;
const V6_ROUTING: u8 = 43;
const V6_FRAGMENT: u8 = 44;
const V6_AUTH: u8 = 51;
const V6_DEST_OPTS: u8 = 60;

/// A bounds-checked read position in the packet, like xdp-tools' `hdr_cursor`.
pub struct Cursor {
    pub pos: usize,
    pub end: usize,
}

impl Cursor {
    #[inline(always)]
    pub const fn new(start: usize, end: usize) -> Self {
        Self { pos: start, end }
    }

    /// Returns a pointer to a `T` at the cursor and moves past it, if the packet holds it.
    #[inline(always)]
    pub fn take<T>(&mut self) -> Option<*const T> {
        let p = self.pos;
        if p + size_of::<T>() > self.end {
            return None;
        }
        self.pos = p + size_of::<T>();
        Some(p as *const T)
    }
}

#[inline(always)]
fn be16(p: *const u8) -> u16 {
    unsafe { u16::from_be_bytes([*p, *p.add(1)]) }
}

/// Why a packet is not inspected further.
pub enum Skip {
    /// Not IP: pass without counting it as malformed.
    NotIp,
    /// A header is cut short or invalid.
    Malformed,
}

/// What the verdicts need from a packet's headers.
pub struct Packet {
    /// Source and destination, IPv4-mapped for IPv4 (see `sip_filter_common`).
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub is_v6: bool,
    /// Transport protocol; ports are valid only when `has_ports`.
    pub proto: u8,
    /// False for non-first fragments (no transport header) and unknown transports.
    pub has_ports: bool,
    /// True for a first fragment: the transport payload continues in later fragments.
    pub first_fragment: bool,
    pub sport: u16,
    pub dport: u16,
    /// Pointer to the transport payload (valid when `proto` is UDP or TCP and `has_ports`).
    pub payload: usize,
    /// The transport payload's length: UDP's, from its header; a TCP segment's, from the IP
    /// length less the headers (0 for a segment without data).
    pub msg_len: u16,
}

#[inline(always)]
fn v4_mapped(p: *const u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[10] = 0xff;
    a[11] = 0xff;
    unsafe {
        a[12] = *p;
        a[13] = *p.add(1);
        a[14] = *p.add(2);
        a[15] = *p.add(3);
    }
    a
}

#[inline(always)]
fn copy16(p: *const u8) -> [u8; 16] {
    unsafe { core::ptr::read_unaligned(p as *const [u8; 16]) }
}

/// Parses Ethernet (up to two VLAN tags), IPv4/IPv6 and the UDP/TCP ports.
#[inline(always)]
pub fn packet(data: usize, data_end: usize) -> Result<Packet, Skip> {
    let mut c = Cursor::new(data, data_end);
    let eth = c.take::<[u8; 14]>().ok_or(Skip::Malformed)? as *const u8;
    let mut proto = be16(unsafe { eth.add(off::ETH_TYPE) });
    // 802.1ad outer tag and 802.1Q inner tag; a third tag is not SIP we can judge.
    for _ in 0..2 {
        if proto != ETH_P_8021Q && proto != ETH_P_8021AD {
            break;
        }
        let tag = c.take::<[u8; 4]>().ok_or(Skip::Malformed)? as *const u8;
        proto = be16(unsafe { tag.add(off::VLAN_TYPE) });
    }
    match proto {
        ETH_P_IP => ipv4(&mut c),
        ETH_P_IPV6 => ipv6(&mut c),
        _ => Err(Skip::NotIp),
    }
}

#[inline(always)]
fn ipv4(c: &mut Cursor) -> Result<Packet, Skip> {
    let ip = c.take::<[u8; 20]>().ok_or(Skip::Malformed)? as *const u8;
    let vihl = unsafe { *ip };
    let ihl = (vihl & 0x0f) as usize;
    if vihl >> 4 != 4 || ihl < 5 {
        return Err(Skip::Malformed);
    }
    // Options: the header length is checked against the packet before moving on.
    let opts = (ihl - 5) * 4;
    if c.pos + opts > c.end {
        return Err(Skip::Malformed);
    }
    c.pos += opts;
    let frag = be16(unsafe { ip.add(off::V4_FRAG) });
    let offset = frag & 0x1fff;
    let more = frag & 0x2000 != 0;
    let mut p = Packet {
        src: v4_mapped(unsafe { ip.add(off::V4_SRC) }),
        dst: v4_mapped(unsafe { ip.add(off::V4_DST) }),
        is_v6: false,
        proto: unsafe { *ip.add(off::V4_PROTO) },
        has_ports: false,
        first_fragment: more && offset == 0,
        sport: 0,
        dport: 0,
        payload: 0,
        msg_len: 0,
    };
    if offset != 0 {
        return Ok(p);
    }
    // The bytes from the transport header on (a TCP segment's length is known only so).
    let total = be16(unsafe { ip.add(off::V4_LEN) }) as usize;
    let l4_len = total.saturating_sub(ihl * 4);
    transport(c, &mut p, l4_len)?;
    Ok(p)
}

#[inline(always)]
fn ipv6(c: &mut Cursor) -> Result<Packet, Skip> {
    let ip = c.take::<[u8; 40]>().ok_or(Skip::Malformed)? as *const u8;
    if unsafe { *ip } >> 4 != 6 {
        return Err(Skip::Malformed);
    }
    let mut p = Packet {
        src: copy16(unsafe { ip.add(off::V6_SRC) }),
        dst: copy16(unsafe { ip.add(off::V6_DST) }),
        is_v6: true,
        proto: 0,
        has_ports: false,
        first_fragment: false,
        sport: 0,
        dport: 0,
        payload: 0,
        msg_len: 0,
    };
    let mut next = unsafe { *ip.add(off::V6_NEXT) };
    let after_ip = c.pos;
    // The arms stay apart: merging them (a unit chosen by header type) made the verifier's
    // walk of the unrolled loop hit its 1M-instruction limit (docs/verifier.md, pitfall 10).
    for _ in 0..MAX_V6_EXT {
        match next {
            // Hop-by-hop, routing, destination options: length in 8-octet units, excluding the first.
            V6_HOP_BY_HOP | V6_ROUTING | V6_DEST_OPTS => {
                let h = c.take::<[u8; 8]>().ok_or(Skip::Malformed)? as *const u8;
                next = unsafe { *h.add(off::EXT_NEXT) };
                let rest = unsafe { *h.add(off::EXT_LEN) } as usize * 8;
                if c.pos + rest > c.end {
                    return Err(Skip::Malformed);
                }
                c.pos += rest;
            }
            // Authentication header: length in 4-octet units, minus 2.
            V6_AUTH => {
                let h = c.take::<[u8; 8]>().ok_or(Skip::Malformed)? as *const u8;
                next = unsafe { *h.add(off::EXT_NEXT) };
                let rest = unsafe { *h.add(off::EXT_LEN) } as usize * 4;
                if c.pos + rest > c.end {
                    return Err(Skip::Malformed);
                }
                c.pos += rest;
            }
            V6_FRAGMENT => {
                let h = c.take::<[u8; 8]>().ok_or(Skip::Malformed)? as *const u8;
                next = unsafe { *h.add(off::EXT_NEXT) };
                let fo = be16(unsafe { h.add(off::EXT_FRAG) });
                if fo >> 3 != 0 {
                    // Non-first fragment: address-level verdicts only.
                    p.proto = next;
                    return Ok(p);
                }
                p.first_fragment = fo & 1 != 0;
            }
            _ => break,
        }
    }
    p.proto = next;
    let payload_len = be16(unsafe { ip.add(off::V6_PAYLOAD_LEN) }) as usize;
    let l4_len = payload_len.saturating_sub(c.pos - after_ip);
    transport(c, &mut p, l4_len)?;
    Ok(p)
}

/// The ports, and where the payload starts and how long it is; `l4_len`: the bytes from the
/// transport header on, as the IP header says.
#[inline(always)]
fn transport(c: &mut Cursor, p: &mut Packet, l4_len: usize) -> Result<(), Skip> {
    match p.proto {
        IPPROTO_UDP => {
            let u = c.take::<[u8; 8]>().ok_or(Skip::Malformed)? as *const u8;
            p.sport = be16(unsafe { u.add(off::L4_SPORT) });
            p.dport = be16(unsafe { u.add(off::L4_DPORT) });
            let len = be16(unsafe { u.add(off::UDP_LEN) });
            if len < 8 {
                return Err(Skip::Malformed);
            }
            p.msg_len = len - 8;
            p.payload = c.pos;
            p.has_ports = true;
        }
        IPPROTO_TCP => {
            // The ports (a ban with scope "sip" covers SIP over TCP and TLS) and the segment's
            // data: plain SIP over TCP is inspected like UDP, one message per segment.
            let t = c.take::<[u8; 20]>().ok_or(Skip::Malformed)? as *const u8;
            p.sport = be16(unsafe { t.add(off::L4_SPORT) });
            p.dport = be16(unsafe { t.add(off::L4_DPORT) });
            p.has_ports = true;
            let hlen = ((unsafe { *t.add(off::TCP_DOFF) } >> 4) as usize) * 4;
            if hlen < 20 || c.pos + (hlen - 20) > c.end {
                return Err(Skip::Malformed);
            }
            c.pos += hlen - 20;
            p.payload = c.pos;
            p.msg_len = l4_len.saturating_sub(hlen) as u16;
        }
        _ => {}
    }
    Ok(())
}
