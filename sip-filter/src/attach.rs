//! Attaching the programs so they outlive the daemon: the XDP link (and the TCX link on kernels
//! that have TCX) is pinned; on older kernels the egress program is a netlink tc filter, which
//! stays until removed. A restart swaps the programs in place, with no gap in enforcement.
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use aya::programs::{
    LinkOrder, SchedClassifier, TcAttachType, Xdp, XdpMode,
    links::{FdLink, PinnedLink},
    tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle},
    xdp::XdpLink,
};

use crate::{dataplane::Dataplane, pidfile, pins};

/// `--mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Native if the driver supports it, generic (skb) otherwise: the kernel decides.
    Auto,
    /// Driver (native) XDP: fastest; fails if the driver lacks it.
    Native,
    /// Generic XDP: works on any interface, costs an skb allocation per packet.
    Skb,
}

impl Mode {
    fn xdp(self) -> XdpMode {
        match self {
            Mode::Auto => XdpMode::Default,
            Mode::Native => XdpMode::Driver,
            Mode::Skb => XdpMode::Skb,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Native => "native",
            Mode::Skb => "skb",
        }
    }
}

/// Netlink tc filter identity (kernels without TCX): fixed so a restart finds and replaces it.
const TC_PRIORITY: u16 = 49_100;
const TC_HANDLE: TcHandle = TcHandle::new(0, 0x51f);

/// Attaches (or, when pins exist, re-points) both programs on `iface`.
pub fn attach(dp: &mut Dataplane, iface: &str, mode: Mode, dir: &Path) -> Result<()> {
    attach_xdp(dp, iface, mode, dir)?;
    attach_tc(dp, iface, dir)
}

/// What re-pointing needs of a program; one body for both, whose link types differ.
trait Repoint {
    /// Swaps this process's program into `link` in place. The pin owns the link: dropping
    /// the handle taken back only closes our fd.
    fn repoint(&mut self, link: FdLink) -> Result<()>;
}

macro_rules! repoint_via {
    ($prog:ty, $link:ty) => {
        impl Repoint for $prog {
            fn repoint(&mut self, link: FdLink) -> Result<()> {
                let id = self.attach_to_link(<$link>::try_from(link)?)?;
                let _ = self.take_link(id)?;
                Ok(())
            }
        }
    };
}
repoint_via!(Xdp, XdpLink);
repoint_via!(SchedClassifier, SchedClassifierLink);

/// When a link is pinned at `pin` (a restart), swaps `prog` into it; false when there is no
/// pin (a first start).
fn repoint_pinned(prog: &mut impl Repoint, pin: &Path, what: &str) -> Result<bool> {
    if !pin.exists() {
        return Ok(false);
    }
    let link = FdLink::from(
        PinnedLink::from_pin(pin).with_context(|| format!("opening the pinned {what} link"))?,
    );
    prog.repoint(link)
        .with_context(|| format!("replacing the {what} program in place"))?;
    Ok(true)
}

fn attach_xdp(dp: &mut Dataplane, iface: &str, mode: Mode, dir: &Path) -> Result<()> {
    let pin = dir.join(pins::XDP_LINK);
    let prog = dp.xdp_mut()?;
    if repoint_pinned(prog, &pin, "XDP")? {
        return Ok(());
    }
    let id = prog
        .attach(iface, mode.xdp())
        .map_err(|e| xdp_error(e, iface, mode))?;
    let link = FdLink::try_from(prog.take_link(id)?)
        .context("the kernel attached XDP without a bpf_link (kernel older than 5.9?)")?;
    link.pin(&pin)
        .with_context(|| format!("pinning the XDP link at {}", pin.display()))?;
    Ok(())
}

fn xdp_error(e: aya::programs::ProgramError, iface: &str, mode: Mode) -> anyhow::Error {
    let msg = format!("{e:#}");
    let hint = match mode {
        Mode::Native => {
            "the driver may not support native XDP: try --mode skb (generic, works everywhere) or --mode auto"
        }
        Mode::Auto => "try --mode skb (generic XDP)",
        Mode::Skb => {
            "generic XDP failed: is another XDP program attached (`ip link show dev IFACE`)?"
        }
    };
    anyhow::anyhow!(
        "attaching XDP to {iface} in {} mode failed: {msg}; {hint}",
        mode.as_str()
    )
}

fn attach_tc(dp: &mut Dataplane, iface: &str, dir: &Path) -> Result<()> {
    // An existing clsact qdisc is fine (another tool or an earlier run added it).
    if let Err(e) = tc::qdisc_add_clsact(iface)
        && !matches!(&e, tc::TcError::NetlinkError(n) if n.raw_os_error() == Some(libc::EEXIST))
    {
        return Err(e).context("adding the clsact qdisc for the egress program");
    }
    let pin = dir.join(pins::TC_LINK);
    let prog = dp.tc_mut()?;
    if repoint_pinned(prog, &pin, "TC")? {
        return Ok(());
    }
    // TCX (6.6+): a bpf_link we pin like the XDP one.
    if let Ok(id) = prog.attach_with_options(
        iface,
        TcAttachType::Egress,
        TcAttachOptions::TcxOrder(LinkOrder::default()),
    ) {
        let link = FdLink::try_from(prog.take_link(id)?)?;
        link.pin(&pin)
            .with_context(|| format!("pinning the TC link at {}", pin.display()))?;
        return Ok(());
    }
    // Netlink tc filter: replace ours if it is there, else create it.
    let opts = NlOptions {
        priority: TC_PRIORITY,
        handle: TC_HANDLE,
        ..Default::default()
    };
    let id = match SchedClassifierLink::attached(
        iface,
        TcAttachType::Egress,
        TC_PRIORITY,
        TC_HANDLE,
        None,
    )
    .map_err(anyhow::Error::from)
    .and_then(|l| Ok(prog.attach_to_link(l)?))
    {
        Ok(id) => id,
        Err(_) => prog
            .attach_with_options(iface, TcAttachType::Egress, TcAttachOptions::Netlink(opts))
            .context("attaching the egress program (tc filter)")?,
    };
    // The filter stays in the kernel; forgetting the handle keeps aya from removing it on drop.
    std::mem::forget(prog.take_link(id)?);
    Ok(())
}

/// Removes both programs from `iface` and deletes every pin (bans and counters are gone after).
pub fn detach(iface: &str) -> Result<()> {
    let dir = pins::dir(iface);
    if !dir.exists() {
        bail!(
            "no sip-filter on interface {iface} (nothing pinned in {})",
            dir.display()
        );
    }
    for name in [pins::XDP_LINK, pins::TC_LINK] {
        let p = dir.join(name);
        if p.exists() {
            let link = PinnedLink::from_pin(&p)
                .with_context(|| format!("opening {}", p.display()))?
                .unpin()?;
            drop(link);
        }
    }
    // Netlink filter (kernels without TCX), matched by program name; absent is fine.
    let _ = tc::qdisc_detach_program(iface, TcAttachType::Egress, sip_filter_common::TC_PROG);
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    // A daemon killed with SIGKILL leaves its run files behind.
    pidfile::remove(iface);
    Ok(())
}
