//! Thread context for measurements: network namespace, CPU affinity and CPU-time counters.
use std::{fs::File, os::fd::AsRawFd, path::Path};

use anyhow::{Context as _, Result, bail};

/// The current thread inside another network namespace until this guard drops.
///
/// `setns(CLONE_NEWNET)` only moves the calling thread, which is what we want: netlink sockets
/// (aya's XDP attach), `if_nametoindex` and BPF_PROG_TEST_RUN's `ingress_ifindex` all resolve in
/// the namespace of the thread that makes the call.
pub struct InNetns {
    orig: File,
}

impl InNetns {
    pub fn enter(ns: &Path) -> Result<Self> {
        let orig = File::open("/proc/thread-self/ns/net").context("opening our own netns")?;
        let target = File::open(ns).with_context(|| format!("opening {}", ns.display()))?;
        // SAFETY: setns on the calling thread with a valid namespace fd.
        if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!(
                "setns {}: {}",
                ns.display(),
                std::io::Error::last_os_error()
            );
        }
        Ok(Self { orig })
    }
}

impl Drop for InNetns {
    fn drop(&mut self) {
        // SAFETY: as above, back to the namespace the thread came from.
        if unsafe { libc::setns(self.orig.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            // Carrying on in the wrong namespace could touch the host's interfaces: stop.
            eprintln!(
                "bench: cannot return to the original network namespace: {}",
                std::io::Error::last_os_error()
            );
            std::process::abort();
        }
    }
}

/// Runs `f` on the current thread inside namespace `ns`.
pub fn in_netns<T>(ns: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let _g = InNetns::enter(ns)?;
    f()
}

/// Interface index of `name` in the current thread's namespace.
pub fn ifindex(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        bail!("no interface {name}: {}", std::io::Error::last_os_error());
    }
    Ok(i)
}

/// The highest-numbered CPU the calling thread may run on.
pub fn last_allowed_cpu() -> Result<usize> {
    // SAFETY: sched_getaffinity fills the set we own; CPU_ISSET reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            bail!("sched_getaffinity: {}", std::io::Error::last_os_error());
        }
        (0..libc::CPU_SETSIZE as usize)
            .rev()
            .find(|c| libc::CPU_ISSET(*c, &set))
            .context("no CPU in our affinity mask")
    }
}

/// Pins the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity(0) act on
    // the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!(
                "sched_setaffinity(cpu {cpu}): {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// The calling thread's CPU affinity, to restore after [`pin_to_cpu`].
pub struct Affinity(libc::cpu_set_t);

impl Affinity {
    pub fn current() -> Result<Self> {
        // SAFETY: sched_getaffinity fills the set we own.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
                bail!("sched_getaffinity: {}", std::io::Error::last_os_error());
            }
            Ok(Self(set))
        }
    }

    pub fn restore(&self) {
        // SAFETY: a set read by sched_getaffinity, applied to the calling thread.
        unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &self.0) };
    }
}

/// Set by SIGINT or SIGTERM while [`trap_interrupts`] is in force.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// While part 2 holds namespaces, Ctrl-C must unwind through their RAII guards (which delete
/// them) instead of killing the process with the namespaces left behind: the handler only sets
/// a flag that the flood loop checks between chunks (tens of milliseconds).
pub struct TrapInterrupts {
    old: [libc::sighandler_t; 2],
}

pub fn trap_interrupts() -> TrapInterrupts {
    let h = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: installing an async-signal-safe handler (one atomic store).
    unsafe {
        TrapInterrupts {
            old: [
                libc::signal(libc::SIGINT, h),
                libc::signal(libc::SIGTERM, h),
            ],
        }
    }
}

impl Drop for TrapInterrupts {
    fn drop(&mut self) {
        // SAFETY: putting back the handlers that were there before.
        unsafe {
            libc::signal(libc::SIGINT, self.old[0]);
            libc::signal(libc::SIGTERM, self.old[1]);
        }
    }
}

/// Whether SIGINT or SIGTERM arrived while trapped.
pub fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
}

/// CPU time of the calling thread, nanoseconds (precise: read from the scheduler's clock).
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One CPU's line of `/proc/stat`, in nanoseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTimes {
    pub user: u64,
    pub system: u64,
    pub idle: u64,
    pub irq: u64,
    pub softirq: u64,
    pub other: u64,
}

impl CpuTimes {
    /// Reads `cpuN` (or the all-CPU `cpu` line for `None`).
    pub fn read(cpu: Option<usize>) -> Result<Self> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        let tag = match cpu {
            Some(c) => format!("cpu{c}"),
            None => "cpu".to_string(),
        };
        let line = stat
            .lines()
            .find(|l| l.split_whitespace().next() == Some(tag.as_str()))
            .with_context(|| format!("no {tag} line in /proc/stat"))?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse::<u64>().unwrap_or(0) * 1_000_000_000 / hz)
            .collect();
        let f = |i: usize| v.get(i).copied().unwrap_or(0);
        Ok(Self {
            user: f(0) + f(1),
            system: f(2),
            idle: f(3) + f(4),
            irq: f(5),
            softirq: f(6),
            other: f(7),
        })
    }

    pub fn since(&self, before: &Self) -> Self {
        Self {
            user: self.user.saturating_sub(before.user),
            system: self.system.saturating_sub(before.system),
            idle: self.idle.saturating_sub(before.idle),
            irq: self.irq.saturating_sub(before.irq),
            softirq: self.softirq.saturating_sub(before.softirq),
            other: self.other.saturating_sub(before.other),
        }
    }
}
