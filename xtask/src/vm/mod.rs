//! `cargo xtask vm`: runs the packet-fixture tests inside a qemu VM booted on
//! Debian 12's kernel (6.1), because a program the 6.18 verifier accepts can
//! still be rejected by 6.1's.

mod initramfs;
mod kernel;
mod qemu;

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    summary::TestCounts,
    util::{cargo, describe, target_dir},
};

/// Printed by the guest's init after the test binary exits.
pub const RESULT_MARKER: &str = "XTASK-VM-RESULT: ";
/// Printed by the guest's init with `uname -r`.
pub const RELEASE_MARKER: &str = "XTASK-VM-KERNEL: ";

/// Modules the tests need that the cloud kernel does not build in
/// (without them: `RTNETLINK answers: Operation not supported`).
const VM_MODULES: &[&str] = &["veth", "sch_ingress", "cls_bpf"];
/// Loaded when the kernel ships them as separate modules (clsact lives in
/// sch_ingress on 6.1).
const VM_OPTIONAL_MODULES: &[&str] = &["sch_clsact"];

const DEFAULT_TIMEOUT_SECS: u64 = 900;

#[derive(clap::Args, Debug)]
pub struct VmArgs {
    /// Debian 12 cloud kernel to boot: `auto` (newest apt knows) or e.g. `6.1.0-50`
    #[arg(long, default_value = "auto")]
    pub kernel_version: String,
    /// Seconds before the VM is killed
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_SECS)]
    pub timeout: u64,
    /// Run this test binary instead of building the packet-fixture tests
    #[arg(long, hide = true)]
    pub binary: Option<PathBuf>,
    /// Extra arguments for the test binary (after `--`)
    #[arg(last = true)]
    pub args: Vec<String>,
}

impl Default for VmArgs {
    fn default() -> Self {
        Self {
            kernel_version: "auto".to_string(),
            timeout: DEFAULT_TIMEOUT_SECS,
            binary: None,
            args: Vec::new(),
        }
    }
}

/// The result of one VM run.
pub struct VmOutcome {
    pub release: String,
    pub exit_code: Option<i32>,
    pub counts: TestCounts,
}

impl VmOutcome {
    /// Fails unless the guest reported that the test binary exited 0.
    pub fn check(&self) -> Result<()> {
        match self.exit_code {
            Some(0) => Ok(()),
            Some(code) => bail!("tests in the VM ({}) exited with {code}", self.release),
            None => bail!(
                "the VM ({}) stopped without reporting a result (kernel panic or crash? see the console above)",
                self.release
            ),
        }
    }
}

/// Builds (unless `--binary`), packs and boots; the caller decides what a
/// non-zero exit code means via [`VmOutcome::check`].
pub fn run(args: &VmArgs) -> Result<VmOutcome> {
    let binary = match &args.binary {
        Some(path) => {
            fs::canonicalize(path).with_context(|| format!("--binary {}", path.display()))?
        }
        None => build_fixtures()?,
    };
    let cache = target_dir().join("vm");
    let kernel =
        kernel::prepare(&args.kernel_version, &cache).context("preparing the VM kernel")?;
    eprintln!("xtask: VM kernel: {} ({})", kernel.release, kernel.package);
    let modules = kernel.modules(VM_MODULES, VM_OPTIONAL_MODULES)?;

    let initrd = cache.join(format!("initramfs-{}.cpio.gz", kernel.release));
    let contents = initramfs::Contents {
        binary: &binary,
        args: &args.args,
        modules: &modules,
    };
    initramfs::build(&initrd, &contents).context("building the initramfs")?;
    eprintln!(
        "xtask: initramfs: {} ({})",
        initrd.display(),
        size_mib(&initrd)
    );

    let start = Instant::now();
    let console = qemu::boot(&kernel.vmlinuz, &initrd, Duration::from_secs(args.timeout))?;
    let release = console.release.unwrap_or(kernel.release);
    eprintln!(
        "xtask: VM on {release} finished in {:.1}s, test binary exit code: {}",
        start.elapsed().as_secs_f64(),
        console
            .exit_code
            .map_or("none".to_string(), |c| c.to_string()),
    );
    Ok(VmOutcome {
        release,
        exit_code: console.exit_code,
        counts: console.counts,
    })
}

fn size_mib(path: &Path) -> String {
    fs::metadata(path).map_or("?".to_string(), |m| {
        format!("{:.1} MiB", m.len() as f64 / (1024.0 * 1024.0))
    })
}

/// Builds `tests/tests/fixtures.rs` and returns the test executable's path.
fn build_fixtures() -> Result<PathBuf> {
    let mut cmd = cargo();
    // json-render-diagnostics: artifacts as JSON on stdout, compiler errors
    // still readable on stderr.
    cmd.args([
        "test",
        "-p",
        "tests",
        "--test",
        "fixtures",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]);
    eprintln!("xtask: running `{}`", describe(&cmd));
    let out = crate::util::output(&mut cmd).context("building the packet-fixture tests")?;
    fixtures_executable(&out).context("cargo reported no `fixtures` test executable")
}

fn fixtures_executable(cargo_json: &str) -> Option<PathBuf> {
    cargo_json
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "fixtures")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_fixtures_executable() {
        let json = r#"{"reason":"compiler-artifact","target":{"name":"sip_filter","kind":["lib"]},"executable":null}
{"reason":"compiler-artifact","target":{"name":"fixtures","kind":["test"]},"executable":"/t/debug/deps/fixtures-abc"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            fixtures_executable(json),
            Some(PathBuf::from("/t/debug/deps/fixtures-abc"))
        );
    }
}
