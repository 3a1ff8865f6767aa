//! Captures for the replay tests: pcap and pcapng files written with pcap-file's writers, from
//! Ethernet frames built with [`crate::packet::Packet`], optionally re-framed the way
//! `tcpdump -i any` (Linux cooked SLL/SLL2) or a tunnel interface (raw IP) records them.
use std::{borrow::Cow, fs::File, io::BufWriter, path::Path, time::Duration};

use anyhow::Result;
use pcap_file::{
    DataLink,
    pcap::{PcapHeader, PcapPacket, PcapWriter},
    pcapng::{
        PcapNgWriter,
        blocks::{
            enhanced_packet::EnhancedPacketBlock, interface_description::InterfaceDescriptionBlock,
        },
    },
};

/// The file format to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Pcap,
    PcapNg,
}

/// How the frames are recorded (the capture's link type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Ethernet,
    /// Linux cooked capture v1 (LINKTYPE_LINUX_SLL, 113).
    Sll,
    /// Linux cooked capture v2 (LINKTYPE_LINUX_SLL2, 276).
    Sll2,
    /// Raw IP (LINKTYPE_RAW, 101).
    RawIp,
}

impl Link {
    pub fn datalink(self) -> DataLink {
        match self {
            Link::Ethernet => DataLink::ETHERNET,
            Link::Sll => DataLink::LINUX_SLL,
            Link::Sll2 => DataLink::LINUX_SLL2,
            Link::RawIp => DataLink::RAW,
        }
    }

    /// An Ethernet frame (no VLAN tags) as this link type records it.
    pub fn reframe(self, eth: &[u8]) -> Vec<u8> {
        if self == Link::Ethernet {
            return eth.to_vec();
        }
        let ethertype = &eth[12..14];
        let l3 = &eth[14..];
        let mut f = match self {
            // Packet type (0: to us), ARPHRD_ETHER, address length 6, address padded to 8,
            // protocol.
            Link::Sll => [&[0, 0, 0, 1, 0, 6], &eth[6..12], &[0, 0], ethertype].concat(),
            // Protocol, reserved, ifindex 2, ARPHRD_ETHER, packet type, address length 6,
            // address padded to 8.
            Link::Sll2 => [
                ethertype,
                &[0, 0, 0, 0, 0, 2, 0, 1, 0, 6],
                &eth[6..12],
                &[0, 0],
            ]
            .concat(),
            Link::RawIp | Link::Ethernet => Vec::new(),
        };
        f.extend_from_slice(l3);
        f
    }
}

/// Writes `frames` (Ethernet) to `path` as `format`, recorded with `link`, one millisecond apart.
pub fn write(path: &Path, format: Format, link: Link, frames: &[Vec<u8>]) -> Result<()> {
    let records: Vec<Vec<u8>> = frames.iter().map(|f| link.reframe(f)).collect();
    let file = BufWriter::new(File::create(path)?);
    match format {
        Format::Pcap => write_pcap(file, link.datalink(), &records),
        Format::PcapNg => write_pcapng(file, link.datalink(), &records),
    }
}

/// A pcap of Ethernet `frames` each cut to `snaplen` bytes, as `tcpdump -s SNAPLEN` writes
/// them: the header's snaplen is `snaplen` and each record keeps its length on the wire.
pub fn write_snapped(path: &Path, frames: &[Vec<u8>], snaplen: usize) -> Result<()> {
    let header = PcapHeader {
        snaplen: snaplen as u32,
        ..Default::default()
    };
    let mut w = PcapWriter::with_header(BufWriter::new(File::create(path)?), header)?;
    for (i, f) in frames.iter().enumerate() {
        let cut = &f[..f.len().min(snaplen)];
        w.write_packet(&PcapPacket::new(timestamp(i), f.len() as u32, cut))?;
    }
    Ok(())
}

fn timestamp(i: usize) -> Duration {
    Duration::from_secs(1_700_000_000) + Duration::from_millis(i as u64)
}

fn write_pcap(file: BufWriter<File>, datalink: DataLink, records: &[Vec<u8>]) -> Result<()> {
    let header = PcapHeader {
        datalink,
        ..Default::default()
    };
    let mut w = PcapWriter::with_header(file, header)?;
    for (i, r) in records.iter().enumerate() {
        w.write_packet(&PcapPacket::new(timestamp(i), r.len() as u32, r))?;
    }
    Ok(())
}

fn write_pcapng(file: BufWriter<File>, linktype: DataLink, records: &[Vec<u8>]) -> Result<()> {
    let mut w = PcapNgWriter::new(file)?;
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype,
        snaplen: 0xffff,
        options: vec![],
    })?;
    for (i, r) in records.iter().enumerate() {
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: timestamp(i),
            original_len: r.len() as u32,
            data: Cow::Borrowed(r),
            options: vec![],
        })?;
    }
    Ok(())
}
