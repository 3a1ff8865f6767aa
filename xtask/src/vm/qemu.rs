//! Booting the VM and reading its serial console.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc::{self, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{RELEASE_MARKER, RESULT_MARKER, START_MARKER};
use crate::{summary::TestCounts, tee::tee_lines};

/// What the guest reported on its console.
#[derive(Debug, Default)]
pub struct Console {
    pub release: Option<String>,
    /// The test binaries the guest started, in order.
    pub runs: Vec<Run>,
    /// The VM was killed at the deadline.
    pub timed_out: bool,
}

/// One test binary's run, between its start and result markers.
#[derive(Debug)]
pub struct Run {
    pub name: String,
    pub exit_code: Option<i32>,
    /// From the libtest summary lines printed while it ran.
    pub counts: TestCounts,
    started: Instant,
    pub elapsed: Option<Duration>,
}

impl Console {
    /// Reads one console line that arrived at `now`.
    pub fn read_line(&mut self, line: &str, now: Instant) {
        if let Some(rest) = after(line, START_MARKER) {
            if let Some(name) = rest.split_whitespace().next() {
                self.runs.push(Run {
                    name: name.to_string(),
                    exit_code: None,
                    counts: TestCounts::default(),
                    started: now,
                    elapsed: None,
                });
            }
        } else if let Some(rest) = after(line, RESULT_MARKER) {
            let mut words = rest.split_whitespace();
            let (Some(name), Some(code)) = (words.next(), words.next()) else {
                return;
            };
            if let Some(run) = self.runs.iter_mut().rev().find(|r| r.name == name) {
                run.exit_code = code.parse().ok();
                run.elapsed = Some(now.saturating_duration_since(run.started));
            }
        } else if let Some(rest) = after(line, RELEASE_MARKER) {
            self.release = rest.split_whitespace().next().map(str::to_string);
        } else if let Some(run) = self.runs.last_mut().filter(|r| r.exit_code.is_none()) {
            run.counts.add_line(line);
        }
    }
}

/// Text after `marker`, which kernel messages may have pushed away from
/// the start of the line.
fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| &line[i + marker.len()..])
}

/// Kills qemu on every way out, including errors and timeouts.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn boot(kernel: &Path, initrd: &Path, timeout: Duration) -> Result<Console> {
    // /dev/kvm exists here but -enable-kvm fails, so this is plain TCG.
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-m", "2048", "-smp", "2", "-nographic", "-no-reboot"])
        // No network device: the guest has no business talking to anything.
        .args(["-nic", "none"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 quiet panic=-1"])
        // A terminal on stdin would be put in raw mode and could be left so.
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    eprintln!("xtask: booting the VM (timeout {}s)", timeout.as_secs());
    let mut qemu = KillOnDrop(cmd.spawn().context("starting qemu-system-x86_64")?);
    let stdout = qemu.0.stdout.take().expect("stdout is piped");

    let (tx, rx) = mpsc::channel::<String>();
    let reader = thread::spawn(move || {
        tee_lines(stdout, true, |line| {
            let _ = tx.send(line.to_string());
        });
    });

    let mut console = Console::default();
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => console.read_line(&line, Instant::now()),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                // End the guest's unfinished line (often `test name ... `).
                println!();
                eprintln!(
                    "xtask: the VM did not finish within {}s (see --timeout): killing it",
                    timeout.as_secs()
                );
                console.timed_out = true;
                break;
            }
        }
    }
    if console.timed_out {
        // Closes the console pipe, which ends the reader.
        drop(qemu);
        let _ = reader.join();
        return Ok(console);
    }
    let _ = reader.join();
    let status = qemu.0.wait().context("waiting for qemu")?;
    if !status.success() && console.runs.is_empty() {
        bail!("qemu failed ({status})");
    }
    Ok(console)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_markers_amid_kernel_noise() {
        let mut c = Console::default();
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(50);
        c.read_line(&format!("{RELEASE_MARKER}6.1.0-56-cloud-amd64"), t0);
        c.read_line("test result: ok. 9 passed; 0 failed; 0 ignored", t0);
        c.read_line(&format!("{START_MARKER}fixtures"), t0);
        c.read_line(
            "test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured",
            t0,
        );
        c.read_line(
            &format!("[   3.1] random: crng init done{RESULT_MARKER}fixtures 0"),
            t1,
        );
        c.read_line(&format!("{START_MARKER}control"), t1);
        c.read_line("test result: FAILED. 5 passed; 1 failed; 0 ignored", t1);
        c.read_line(&format!("{RESULT_MARKER}control 101"), t1);
        c.read_line("test result: ok. 7 passed; 0 failed; 0 ignored", t1);
        assert_eq!(c.release.as_deref(), Some("6.1.0-56-cloud-amd64"));
        assert_eq!(c.runs.len(), 2);
        let (f, ctl) = (&c.runs[0], &c.runs[1]);
        assert_eq!((f.name.as_str(), f.exit_code), ("fixtures", Some(0)));
        assert_eq!(f.counts.passed, 2);
        assert_eq!(f.elapsed, Some(Duration::from_secs(50)));
        assert_eq!((ctl.name.as_str(), ctl.exit_code), ("control", Some(101)));
        assert_eq!((ctl.counts.passed, ctl.counts.failed), (5, 1));
    }
}
