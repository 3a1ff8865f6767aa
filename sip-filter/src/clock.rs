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

/// Boot-clock instant of a wall-clock time (restoring bans from the state file after a reboot);
/// a time before this boot is the boot itself.
pub fn from_wall(wall: SystemTime) -> u64 {
    let now_boot = boot_ns();
    let now = SystemTime::now();
    match wall.duration_since(now) {
        Ok(ahead) => now_boot.saturating_add(ahead.as_nanos() as u64),
        Err(e) => now_boot.saturating_sub(e.duration().as_nanos() as u64),
    }
}

/// Milliseconds since the Unix epoch (the state file's times).
pub fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// The wall-clock time of a Unix millisecond count.
pub fn from_unix_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`): tells a restart from a reboot.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
