//! Reading captures: pcap and pcapng, each packet turned into the Ethernet frame the programs
//! expect.
use std::{
    fs::File,
    io::{self, BufReader, Read},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use pcap_file::{
    DataLink, PcapError,
    pcap::PcapReader,
    pcapng::{Block, PcapNgReader},
};

/// pcap LINKTYPE_* values replay understands.
pub(super) mod linktype {
    pub const ETHERNET: u32 = 1;
    /// DLT_RAW as written on most BSDs.
    pub const RAW_BSD: u32 = 12;
    pub const RAW: u32 = 101;
    pub const LINUX_SLL: u32 = 113;
    pub const IPV4: u32 = 228;
    pub const IPV6: u32 = 229;
    pub const LINUX_SLL2: u32 = 276;
}

pub(super) const ETH_P_IP: u16 = 0x0800;
pub(super) const ETH_P_IPV6: u16 = 0x86dd;
pub(super) const ETH_HLEN: usize = 14;

/// Refuses a link type that cannot be turned into Ethernet, naming it.
pub(super) fn check_link(link: u32) -> Result<()> {
    use linktype::*;
    if matches!(
        link,
        ETHERNET | RAW_BSD | RAW | LINUX_SLL | IPV4 | IPV6 | LINUX_SLL2
    ) {
        return Ok(());
    }
    bail!(
        "link type {link} ({:?}) is not supported: replay reads Ethernet (1), Linux cooked \
         capture SLL (113) and SLL2 (276), and raw IP (101, 12, 228, 229) captures",
        DataLink::from(link)
    )
}

/// One captured packet as an Ethernet frame.
pub(super) struct Frame {
    /// `None` when the capture cut the packet inside its link-layer header.
    pub eth: Option<Vec<u8>>,
    /// Fewer bytes captured than were on the wire.
    pub truncated: bool,
}

impl Frame {
    fn new(link: u32, data: &[u8], orig_len: u32) -> Result<Self> {
        check_link(link)?;
        Ok(Self {
            eth: to_ethernet(link, data),
            truncated: (data.len() as u64) < u64::from(orig_len),
        })
    }
}

/// The frame as the programs expect it. A synthetic Ethernet header carries the ethertype the
/// link layer gave (SLL) or the IP version implies (raw IP); the MACs are never looked at.
pub(super) fn to_ethernet(link: u32, data: &[u8]) -> Option<Vec<u8>> {
    use linktype::*;
    match link {
        ETHERNET => Some(data.to_vec()),
        // SLL: packet type, ARPHRD, address length, 8 address bytes, protocol; 16 bytes.
        LINUX_SLL => Some(ethernet(be16(data, 14)?, data.get(16..)?)),
        // SLL2: protocol first, then reserved, ifindex, ARPHRD, types, address; 20 bytes.
        LINUX_SLL2 => Some(ethernet(be16(data, 0)?, data.get(20..)?)),
        IPV4 => Some(ethernet(ETH_P_IP, data)),
        IPV6 => Some(ethernet(ETH_P_IPV6, data)),
        _ => {
            let ethertype = match data.first()? >> 4 {
                4 => ETH_P_IP,
                6 => ETH_P_IPV6,
                // Not IP: the programs pass it untouched, and so is it reported.
                _ => 0,
            };
            Some(ethernet(ethertype, data))
        }
    }
}

pub(super) fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_HLEN + payload.len());
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02]);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub(super) fn be16(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(data.get(at..at + 2)?.try_into().ok()?))
}

/// The two file formats, told apart by their first four bytes.
pub(super) enum Source {
    Pcap {
        reader: PcapReader<Box<dyn Read>>,
        link: u32,
    },
    PcapNg(PcapNgReader<Box<dyn Read>>),
}

pub(super) struct Capture {
    path: PathBuf,
    source: Source,
    /// Packets read so far: the number of the last one.
    pub count: usize,
}

impl Capture {
    pub(super) fn open(path: &Path) -> Result<Self> {
        let shown = path.display();
        let mut file =
            BufReader::new(File::open(path).with_context(|| format!("opening capture {shown}"))?);
        let mut magic = [0u8; 4];
        if let Err(e) = file.read_exact(&mut magic) {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                bail!("{shown}: not a pcap or pcapng capture: the file is shorter than a header");
            }
            return Err(e).with_context(|| format!("reading capture {shown}"));
        }
        // The readers want the whole stream, magic included.
        let stream: Box<dyn Read> = Box::new(io::Cursor::new(magic).chain(file));
        let source = match u32::from_be_bytes(magic) {
            0xa1b2_c3d4 | 0xd4c3_b2a1 | 0xa1b2_3c4d | 0x4d3c_b2a1 => {
                let reader = PcapReader::new(stream)
                    .map_err(|e| anyhow::anyhow!("{shown}: bad pcap header: {}", describe(&e)))?;
                let link = u32::from(reader.header().datalink);
                check_link(link).with_context(|| format!("{shown}"))?;
                Source::Pcap { reader, link }
            }
            0x0a0d_0d0a => Source::PcapNg(PcapNgReader::new(stream).map_err(|e| {
                anyhow::anyhow!("{shown}: bad pcapng section header: {}", describe(&e))
            })?),
            _ => bail!(
                "{shown}: not a pcap or pcapng capture (it starts with {:08x}; pcap starts with \
                 a1b2c3d4 or d4c3b2a1, pcapng with 0a0d0d0a)",
                u32::from_be_bytes(magic)
            ),
        };
        Ok(Self {
            path: path.to_path_buf(),
            source,
            count: 0,
        })
    }

    /// The next packet, or an error naming where the capture is damaged.
    pub(super) fn next_frame(&mut self) -> Option<Result<Frame>> {
        let next = match &mut self.source {
            Source::Pcap { reader, link } => next_pcap(reader, *link),
            Source::PcapNg(reader) => next_pcapng(reader),
        }?;
        self.count += 1;
        Some(
            next.with_context(|| {
                format!("{}: reading packet #{}", self.path.display(), self.count)
            }),
        )
    }
}

pub(super) fn next_pcap(
    reader: &mut PcapReader<Box<dyn Read>>,
    link: u32,
) -> Option<Result<Frame>> {
    // The raw record skips pcap-file's snaplen checks, which refuse captures that some
    // writers produce (snaplen 0, or records longer than the header's snaplen).
    let record = match reader.next_raw_packet()? {
        Ok(r) => r,
        Err(e) => return Some(Err(anyhow::anyhow!(describe(&e)))),
    };
    Some(Frame::new(link, &record.data, record.orig_len))
}

pub(super) fn next_pcapng(reader: &mut PcapNgReader<Box<dyn Read>>) -> Option<Result<Frame>> {
    loop {
        let block = match reader.next_block()? {
            Ok(b) => b,
            Err(e) => return Some(Err(anyhow::anyhow!(describe(&e)))),
        };
        let (interface, data, orig_len) = match block {
            Block::EnhancedPacket(b) => (b.interface_id, b.data.into_owned(), b.original_len),
            Block::SimplePacket(b) => (0, b.data.into_owned(), b.original_len),
            Block::Packet(b) => (
                u32::from(b.interface_id),
                b.data.into_owned(),
                b.original_len,
            ),
            // Interfaces are remembered by the reader; statistics, names and the rest are not
            // packets.
            _ => continue,
        };
        let Some(iface) = reader.interfaces().get(interface as usize) else {
            return Some(Err(anyhow::anyhow!(
                "packet on interface {interface}, which the capture never described"
            )));
        };
        return Some(Frame::new(u32::from(iface.linktype), &data, orig_len));
    }
}

/// pcap-file's errors say "Error reading bytes" for a cut file; say what it means.
pub(super) fn describe(e: &PcapError) -> String {
    match e {
        PcapError::IncompleteBuffer => "the file ends too early (truncated capture?)".into(),
        PcapError::IoError(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
            "the file ends too early (truncated capture?)".into()
        }
        PcapError::IoError(io) => format!("read error: {io}"),
        PcapError::InvalidField(what) => format!("corrupt record: {what}"),
        other => format!("corrupt record: {other}"),
    }
}
