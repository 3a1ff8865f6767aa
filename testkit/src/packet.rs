//! Packets built field by field, like Katran's test fixtures: every header is spelled out so a
//! fixture can bend any one of them (VLAN tags, IPv4 options, IPv6 extension headers, fragments).
use std::net::IpAddr;

pub const TPID_8021Q: u16 = 0x8100;
pub const TPID_8021AD: u16 = 0x88a8;

/// An IPv6 extension header placed between the fixed header and the transport header.
#[derive(Clone, Copy, Debug)]
pub enum Ext {
    HopByHop,
    DestOpts,
    Routing,
    /// Fragment header: offset in 8-octet units, more-fragments flag.
    Fragment {
        offset: u16,
        more: bool,
    },
}

#[derive(Clone, Copy, Debug)]
pub enum L4 {
    Udp,
    Tcp,
    /// Payload carried directly in IP with this protocol number.
    Raw(u8),
}

/// Describes one frame; `build` serialises it.
#[derive(Clone, Debug)]
pub struct Packet {
    pub vlans: Vec<(u16, u16)>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub l4: L4,
    pub sport: u16,
    pub dport: u16,
    pub payload: Vec<u8>,
    /// IPv4 options bytes (padded to a multiple of 4).
    pub v4_options: Vec<u8>,
    /// IPv4 fragment offset (8-octet units) and more-fragments flag.
    pub v4_frag: (u16, bool),
    pub v6_ext: Vec<Ext>,
    /// Overrides the UDP length field (to fake a lying header).
    pub udp_len: Option<u16>,
    /// TCP options bytes (NOPs), a multiple of 4.
    pub tcp_options: usize,
}

impl Packet {
    pub fn udp(src: &str, sport: u16, dst: &str, dport: u16, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            vlans: Vec::new(),
            src: src.parse().expect("src address"),
            dst: dst.parse().expect("dst address"),
            l4: L4::Udp,
            sport,
            dport,
            payload: payload.into(),
            v4_options: Vec::new(),
            v4_frag: (0, false),
            v6_ext: Vec::new(),
            udp_len: None,
            tcp_options: 0,
        }
    }

    pub fn tcp(src: &str, sport: u16, dst: &str, dport: u16) -> Self {
        Self::tcp_data(src, sport, dst, dport, Vec::new())
    }

    /// A TCP segment carrying `payload` (a SYN when it is empty, PSH+ACK otherwise).
    pub fn tcp_data(
        src: &str,
        sport: u16,
        dst: &str,
        dport: u16,
        payload: impl Into<Vec<u8>>,
    ) -> Self {
        Self {
            l4: L4::Tcp,
            ..Self::udp(src, sport, dst, dport, payload)
        }
    }

    pub fn tcp_options(mut self, len: usize) -> Self {
        self.tcp_options = len.div_ceil(4) * 4;
        self
    }

    pub fn vlan(mut self, tpid: u16, vid: u16) -> Self {
        self.vlans.push((tpid, vid));
        self
    }

    pub fn v4_options(mut self, len: usize) -> Self {
        // NOP options followed by END: valid and skipped by every parser.
        let mut o = vec![1u8; len];
        if let Some(last) = o.last_mut() {
            *last = 0;
        }
        self.v4_options = o;
        self
    }

    pub fn v4_fragment(mut self, offset: u16, more: bool) -> Self {
        self.v4_frag = (offset, more);
        self
    }

    pub fn v6_ext(mut self, e: Ext) -> Self {
        self.v6_ext.push(e);
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(64 + self.payload.len());
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // dst MAC
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]); // src MAC
        for (tpid, vid) in &self.vlans {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&vid.to_be_bytes());
        }
        let l4 = self.transport();
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                let opts = self.v4_options.len().div_ceil(4) * 4;
                let ihl = 5 + opts / 4;
                let total = (ihl * 4 + l4.len()) as u16;
                f.push(0x40 | ihl as u8);
                f.push(0);
                f.extend_from_slice(&total.to_be_bytes());
                f.extend_from_slice(&0x1234u16.to_be_bytes());
                let (off, more) = self.v4_frag;
                f.extend_from_slice(
                    &((off & 0x1fff) | if more { 0x2000 } else { 0 }).to_be_bytes(),
                );
                f.push(64);
                f.push(self.proto());
                f.extend_from_slice(&[0, 0]); // checksum: not checked by the programs
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                let mut o = self.v4_options.clone();
                o.resize(opts, 0);
                f.extend_from_slice(&o);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend_from_slice(&0x86ddu16.to_be_bytes());
                let mut ext = Vec::new();
                let mut kinds: Vec<u8> = self.v6_ext.iter().map(|e| ext_proto(*e)).collect();
                kinds.push(self.proto());
                for (i, e) in self.v6_ext.iter().enumerate() {
                    let next = kinds[i + 1];
                    match e {
                        Ext::Fragment { offset, more } => {
                            ext.extend_from_slice(&[next, 0]);
                            ext.extend_from_slice(
                                &((offset << 3) | u16::from(*more)).to_be_bytes(),
                            );
                            ext.extend_from_slice(&[0, 0, 0, 1]);
                        }
                        _ => {
                            // 16 bytes: length field 1 (in 8-octet units beyond the first 8), PadN.
                            ext.extend_from_slice(&[next, 1, 1, 12]);
                            ext.extend_from_slice(&[0; 12]);
                        }
                    }
                }
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&((ext.len() + l4.len()) as u16).to_be_bytes());
                f.push(kinds[0]);
                f.push(64);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                f.extend_from_slice(&ext);
            }
            _ => panic!("source and destination must be the same family"),
        }
        f.extend_from_slice(&l4);
        f
    }

    fn proto(&self) -> u8 {
        match self.l4 {
            L4::Udp => 17,
            L4::Tcp => 6,
            L4::Raw(p) => p,
        }
    }

    fn transport(&self) -> Vec<u8> {
        let mut t = Vec::new();
        match self.l4 {
            L4::Udp => {
                let len = self.udp_len.unwrap_or((8 + self.payload.len()) as u16);
                t.extend_from_slice(&self.sport.to_be_bytes());
                t.extend_from_slice(&self.dport.to_be_bytes());
                t.extend_from_slice(&len.to_be_bytes());
                t.extend_from_slice(&[0, 0]);
            }
            L4::Tcp => {
                t.extend_from_slice(&self.sport.to_be_bytes());
                t.extend_from_slice(&self.dport.to_be_bytes());
                t.extend_from_slice(&1u32.to_be_bytes()); // seq
                t.extend_from_slice(&0u32.to_be_bytes()); // ack
                let doff = (5 + self.tcp_options / 4) as u8;
                let flags = if self.payload.is_empty() { 0x02 } else { 0x18 }; // SYN; PSH+ACK
                t.extend_from_slice(&[doff << 4, flags]);
                t.extend_from_slice(&0xffffu16.to_be_bytes());
                t.extend_from_slice(&[0, 0, 0, 0]);
                t.extend(std::iter::repeat_n(1u8, self.tcp_options)); // NOPs
            }
            L4::Raw(_) => {}
        }
        t.extend_from_slice(&self.payload);
        t
    }
}

fn ext_proto(e: Ext) -> u8 {
    match e {
        Ext::HopByHop => 0,
        Ext::Routing => 43,
        Ext::Fragment { .. } => 44,
        Ext::DestOpts => 60,
    }
}

/// Offset of the transport payload in a frame built by [`Packet::build`].
pub fn payload_offset(p: &Packet) -> usize {
    p.build().len() - p.payload.len()
}
