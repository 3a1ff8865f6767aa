//! Booting the VM and reading its serial console.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc::{self, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{RELEASE_MARKER, RESULT_MARKER};
use crate::{summary::TestCounts, tee::tee_lines};

/// What the guest reported on its console.
#[derive(Debug, Default)]
pub struct Console {
    pub release: Option<String>,
    pub exit_code: Option<i32>,
    pub counts: TestCounts,
}

impl Console {
    fn read_line(&mut self, line: &str) {
        if let Some(rest) = after(line, RESULT_MARKER) {
            self.exit_code = rest.split_whitespace().next().and_then(|n| n.parse().ok());
        } else if let Some(rest) = after(line, RELEASE_MARKER) {
            self.release = rest.split_whitespace().next().map(str::to_string);
        } else {
            self.counts.add_line(line);
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
            Ok(line) => console.read_line(&line),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                // End the guest's unfinished line (often `test name ... `).
                println!();
                bail!(
                    "the VM did not finish within {}s (see --timeout)",
                    timeout.as_secs()
                )
            }
        }
    }
    let _ = reader.join();
    let status = qemu.0.wait().context("waiting for qemu")?;
    if !status.success() && console.exit_code.is_none() {
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
        c.read_line(&format!("{RELEASE_MARKER}6.1.0-56-cloud-amd64"));
        c.read_line("test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured");
        c.read_line(&format!(
            "[   3.1] random: crng init done{RESULT_MARKER}101"
        ));
        assert_eq!(c.release.as_deref(), Some("6.1.0-56-cloud-amd64"));
        assert_eq!(c.exit_code, Some(101));
        assert_eq!(c.counts.passed, 2);
    }
}
