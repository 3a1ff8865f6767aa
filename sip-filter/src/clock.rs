//! The dataplane's clock: `CLOCK_BOOTTIME` (`bpf_ktime_get_boot_ns`), which keeps counting
//! through suspend so that a ban's expiry is real time.
use std::time::{Duration, SystemTime};

pub fn boot_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_BOOTTIME)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `CLOCK_BOOTTIME - CLOCK_MONOTONIC`: how long the host has been suspended, the offset the
/// kernel side adds to its coarse monotonic clock (`CLOCK` map).
pub fn suspend_offset_ns() -> u64 {
    let read = |id| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we own.
        unsafe { libc::clock_gettime(id, &mut ts) };
        ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
    };
    let boot = read(libc::CLOCK_BOOTTIME);
    let mono = read(libc::CLOCK_MONOTONIC);
    (boot - mono).max(0) as u64
}

/// Wall-clock time of a boot-clock instant (for logs and `ban list`).
pub fn to_wall(boot: u64) -> SystemTime {
    let now_boot = boot_ns();
    let now = SystemTime::now();
    if boot <= now_boot {
        now - Duration::from_nanos(now_boot - boot)
    } else {
        now + Duration::from_nanos(boot - now_boot)
    }
}
