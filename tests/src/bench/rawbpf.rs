//! Two-instruction XDP programs loaded with the raw `bpf(2)` syscall, for part 2:
//!
//! - the flood sender, `return XDP_TX`, run by BPF_PROG_TEST_RUN with
//!   `BPF_F_TEST_XDP_LIVE_FRAMES`. In live-frames mode the kernel turns XDP_TX into a redirect
//!   out of the `ingress_ifindex` device: every repeat is one real frame transmitted on the
//!   sender's veth, which the peer receives through its NAPI poll (softirq), as frames DMA'd by
//!   a NIC would arrive. The sender's own work stays in the syscall (system time), so the
//!   receiver's cost can be read separately (see "Packet generators" in bench/README.md);
//! - `return XDP_DROP`, attached to a receiving veth: the cheapest drop XDP can do on that path,
//!   the floor that any XDP filter's drop sits on.
//!
//! They are built here rather than in `sip-filter-ebpf` because they are two instructions each,
//! belong to the benchmark only, and must never ship in the filter's object.
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Result, bail};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
pub const XDP_DROP: i32 = 1;
pub const XDP_TX: i32 = 3;

#[repr(C)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// The head of `union bpf_attr` for BPF_PROG_LOAD (the kernel zero-fills what we leave out).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for BPF_LINK_CREATE (XDP).
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// `union bpf_attr` for BPF_PROG_TEST_RUN.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// `struct xdp_md`, the context BPF_PROG_TEST_RUN takes for XDP.
#[repr(C)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> libc::c_long {
    // SAFETY: `attr` is a repr(C) prefix of `union bpf_attr` for `cmd`, and its size is passed.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, size_of::<T>()) }
}

/// A loaded `return ACTION` XDP program.
pub struct RawXdp {
    fd: OwnedFd,
}

/// A raw program attached to an interface through a bpf_link; closing it detaches.
pub struct RawLink {
    _fd: OwnedFd,
}

impl RawXdp {
    pub fn load(action: i32) -> Result<Self> {
        let insns = [
            // r0 = XDP_TX (BPF_ALU64 | BPF_MOV | BPF_K)
            Insn {
                code: 0xb7,
                regs: 0,
                off: 0,
                imm: action,
            },
            // exit (BPF_JMP | BPF_EXIT)
            Insn {
                code: 0x95,
                regs: 0,
                off: 0,
                imm: 0,
            },
        ];
        let license = c"GPL";
        let mut name = [0u8; 16];
        name[..11].copy_from_slice(b"bench_const");
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            prog_name: name,
            expected_attach_type: BPF_XDP,
            ..Default::default()
        };
        let fd = sys_bpf(BPF_PROG_LOAD, &mut attr);
        if fd < 0 {
            bail!(
                "loading a `return {action}` XDP program: {}",
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: the kernel returned a new file descriptor that nothing else owns.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
        })
    }

    /// Attaches in native (driver) mode to interface `ifindex` of the calling thread's
    /// namespace.
    pub fn attach_native(&self, ifindex: u32) -> Result<RawLink> {
        let mut attr = LinkCreateAttr {
            prog_fd: self.fd.as_raw_fd() as u32,
            target_ifindex: ifindex,
            attach_type: BPF_XDP,
            flags: XDP_FLAGS_DRV_MODE,
        };
        let fd = sys_bpf(BPF_LINK_CREATE, &mut attr);
        if fd < 0 {
            bail!(
                "attaching an XDP program to ifindex {ifindex}: {}",
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: a new file descriptor that nothing else owns.
        Ok(RawLink {
            _fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
        })
    }

    /// Runs the program over `count` live frames entering on `ifindex` (resolved in the calling
    /// thread's network namespace), `batch` frames per NAPI flush: for `return XDP_TX`, transmits
    /// `count` copies of `frame` out of that interface. Returns the kernel's mean time per frame
    /// in nanoseconds.
    pub fn send(&self, frame: &[u8], ifindex: u32, count: u32, batch: u32) -> Result<u32> {
        let ctx = XdpMd {
            data: 0,
            data_end: frame.len() as u32,
            data_meta: 0,
            ingress_ifindex: ifindex,
            rx_queue_index: 0,
            egress_ifindex: 0,
        };
        let mut attr = TestRunAttr {
            prog_fd: self.fd.as_raw_fd() as u32,
            data_size_in: frame.len() as u32,
            data_in: frame.as_ptr() as u64,
            repeat: count,
            ctx_size_in: size_of::<XdpMd>() as u32,
            ctx_in: &ctx as *const XdpMd as u64,
            flags: BPF_F_TEST_XDP_LIVE_FRAMES,
            batch_size: batch,
            ..Default::default()
        };
        if sys_bpf(BPF_PROG_TEST_RUN, &mut attr) != 0 {
            bail!(
                "BPF_PROG_TEST_RUN (live frames): {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(attr.duration)
    }
}
