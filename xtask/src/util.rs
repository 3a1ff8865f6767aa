//! Small helpers for running child processes and locating the workspace.

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::{summary::TestCounts, tee::tee_lines};

/// Root of the cargo workspace (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits inside the workspace")
        .to_path_buf()
}

/// The workspace's target directory, honouring `CARGO_TARGET_DIR`.
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// `~/.cargo/bin` (or `$CARGO_HOME/bin`), where rustup and `cargo install` put binaries.
pub fn cargo_bin_dir() -> Option<PathBuf> {
    let home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    Some(home.join("bin"))
}

/// `PATH` with `dir` in front, unless it is already in it.
pub fn path_with(dir: &Path) -> Result<OsString> {
    let current = env::var_os("PATH").unwrap_or_default();
    if env::split_paths(&current).any(|p| p == dir) {
        return Ok(current);
    }
    let paths = std::iter::once(dir.to_path_buf()).chain(env::split_paths(&current));
    env::join_paths(paths).context("building PATH")
}

/// A `cargo` command run from the workspace root.
pub fn cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root());
    cmd
}

/// Builds the release `sip-filter` binary (the demo, the benchmarks and the package run it).
pub fn build_release_daemon() -> anyhow::Result<()> {
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "sip-filter",
        "--bin",
        "sip-filter",
    ]))
}

/// Human-readable command line, for progress and error messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

fn check(cmd: &Command, status: ExitStatus) -> Result<()> {
    if status.success() {
        Ok(())
    } else {
        bail!("`{}` failed ({status})", describe(cmd))
    }
}

/// Runs `cmd` with inherited stdio and fails unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: running `{}`", describe(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", describe(cmd)))?;
    check(cmd, status)
}

/// Runs `cmd` quietly and returns its stdout; fails unless it exits 0.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start `{}`", describe(cmd)))?;
    check(cmd, out.status)?;
    String::from_utf8(out.stdout).with_context(|| format!("`{}` printed non-UTF-8", describe(cmd)))
}

/// Runs a libtest-based command, echoing its stdout while counting the
/// `test result:` lines, so that the final summary can report real numbers.
pub fn run_tests(cmd: &mut Command) -> (Result<()>, TestCounts) {
    let mut counts = TestCounts::default();
    eprintln!("xtask: running `{}`", describe(cmd));
    let mut child = match cmd.stdout(Stdio::piped()).spawn() {
        Ok(child) => child,
        Err(e) => {
            let err = anyhow::Error::new(e).context(format!("could not start `{}`", describe(cmd)));
            return (Err(err), counts);
        }
    };
    let stdout = child.stdout.take().expect("stdout is piped");
    tee_lines(stdout, false, |line| counts.add_line(line));
    let result = child
        .wait()
        .with_context(|| format!("waiting for `{}`", describe(cmd)))
        .and_then(|status| check(cmd, status));
    (result, counts)
}
