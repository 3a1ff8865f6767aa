//! `cargo xtask vm`: runs the tests that touch the kernel inside a qemu VM
//! booted on Debian 12's kernel (6.1), because a program the 6.18 verifier
//! accepts can still be rejected by 6.1's, and the control plane takes other
//! paths there (no TCX: the egress program is a netlink tc filter); see
//! docs/verifier.md, pitfall 5.
//!
//! One boot runs every selected test binary in turn: the packet fixtures
//! (`tests/tests/fixtures/`) and the daemon/CLI end-to-end tests
//! (`tests/tests/control.rs`, which also need the `sip-filter` binary and the
//! real `ip` and `nsenter`).

mod initramfs;
mod kernel;
mod qemu;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    summary::TestCounts,
    util::{cargo, describe, target_dir},
};

/// Printed by the guest's init before a test binary starts: `<marker><name>`.
pub const START_MARKER: &str = "XTASK-VM-START: ";
/// Printed by the guest's init after a test binary exits: `<marker><name> <code>`.
pub const RESULT_MARKER: &str = "XTASK-VM-RESULT: ";
/// Printed by the guest's init with `uname -r`.
pub const RELEASE_MARKER: &str = "XTASK-VM-KERNEL: ";

/// Modules the tests need that the cloud kernel does not build in
/// (without them: `RTNETLINK answers: Operation not supported`).
const VM_MODULES: &[&str] = &["veth", "sch_ingress", "cls_bpf"];
/// Loaded when the kernel ships them as separate modules (clsact lives in
/// sch_ingress on 6.1).
const VM_OPTIONAL_MODULES: &[&str] = &["sch_clsact"];

/// Host programs the control tests run, copied with their libraries. They
/// replace busybox's applets of the same name: busybox's `ip` has no
/// `netns`. (busybox's `mount` can mount bpffs, so it stays.)
const HOST_TOOLS: &[Tool] = &[
    Tool {
        name: "ip",
        package: "iproute2",
    },
    Tool {
        name: "nsenter",
        package: "util-linux",
    },
    // The state tests: a reboot removes the tc filter; an "old version's" map is made by hand.
    Tool {
        name: "tc",
        package: "iproute2",
    },
    Tool {
        name: "bpftool",
        package: "bpftool",
    },
];

struct Tool {
    name: &'static str,
    package: &'static str,
}

/// A guard against a hung test, not the expected time: a passing run took 330 s on the
/// 2-core machine (fixtures 180 s, control 65 s, state 85 s) and 880 s with the other core
/// busy (software emulation slows down with it). A program the verifier rejects only after
/// its 1M-instruction limit costs about 35 s of emulated verifier time per load; the limit
/// leaves room for the whole failing run to report.
const DEFAULT_TIMEOUT_SECS: u64 = 1800;

/// A test binary of the `tests` crate that runs in the VM.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suite {
    /// Packet fixtures through BPF_PROG_TEST_RUN (`tests/tests/fixtures/`)
    Fixtures,
    /// Daemon and CLI end to end in network namespaces (`tests/tests/control.rs`)
    Control,
    /// Bans through reboots and map-layout upgrades (`tests/tests/state.rs`)
    State,
}

impl Suite {
    /// In the order they run.
    const ALL: [Suite; 3] = [Suite::Fixtures, Suite::Control, Suite::State];

    /// The `--test` target name.
    fn name(self) -> &'static str {
        match self {
            Suite::Fixtures => "fixtures",
            Suite::Control => "control",
            Suite::State => "state",
        }
    }

    /// Whether the tests run the `sip-filter` binary and shell tools.
    fn needs_daemon(self) -> bool {
        matches!(self, Suite::Control | Suite::State)
    }
}

#[derive(clap::Args, Debug)]
pub struct VmArgs {
    /// Debian 12 cloud kernel to boot: `auto` (newest apt knows) or e.g. `6.1.0-50`
    #[arg(long, default_value = "auto")]
    pub kernel_version: String,
    /// Seconds before the VM is killed (all test binaries together)
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_SECS)]
    pub timeout: u64,
    /// Run only these test binaries (repeat or separate with commas; default: all, in the
    /// order fixtures, control, state)
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Suite>,
    /// Run this test binary instead of building the test binaries (the `sip-filter` binary is
    /// still built and put where the control tests look for it)
    #[arg(long, hide = true, conflicts_with = "only")]
    pub binary: Option<PathBuf>,
    /// Extra arguments for every test binary (after `--`), e.g. a test name filter:
    /// `cargo xtask vm --only control -- ban`
    #[arg(last = true)]
    pub args: Vec<String>,
}

impl Default for VmArgs {
    fn default() -> Self {
        Self {
            kernel_version: "auto".to_string(),
            timeout: DEFAULT_TIMEOUT_SECS,
            only: Vec::new(),
            binary: None,
            args: Vec::new(),
        }
    }
}

impl VmArgs {
    /// The selected suites, deduplicated, in their running order.
    fn suites(&self) -> Vec<Suite> {
        Suite::ALL
            .into_iter()
            .filter(|s| self.only.is_empty() || self.only.contains(s))
            .collect()
    }
}

/// A test binary packed into the VM.
pub struct TestBinary {
    /// Short name used in the markers and the summary (`fixtures`, `control`).
    pub name: String,
    pub path: PathBuf,
}

/// What happened to one test binary in the VM.
#[derive(Debug)]
pub struct BinaryOutcome {
    pub name: String,
    /// Whether the guest started it.
    pub started: bool,
    pub exit_code: Option<i32>,
    pub counts: TestCounts,
    /// From its start marker to its result marker, as seen by the host.
    pub elapsed: Option<Duration>,
}

/// The result of one VM run.
pub struct VmOutcome {
    pub release: String,
    pub binaries: Vec<BinaryOutcome>,
    /// The VM was killed after this many seconds, if it was.
    pub timed_out: Option<u64>,
}

impl BinaryOutcome {
    /// Fails unless the guest reported that this binary exited 0.
    fn check(&self, release: &str, timed_out: Option<u64>) -> Result<()> {
        let name = &self.name;
        match (self.exit_code, self.started, timed_out) {
            (Some(0), ..) => Ok(()),
            (Some(code), ..) => bail!("{name} tests in the VM ({release}) exited with {code}"),
            (None, true, Some(secs)) => bail!(
                "{name} tests in the VM ({release}) did not finish within the VM's {secs}s \
                 (see --timeout; the last test named on the console above hung)"
            ),
            (None, true, None) => bail!(
                "{name} tests in the VM ({release}) stopped without reporting a result \
                 (kernel panic or crash? see the console above)"
            ),
            (None, false, _) => bail!(
                "{name} tests never started in the VM ({release}): it stopped before \
                 (see the console above)"
            ),
        }
    }

    /// `control: 6 passed, 0 failed, 0 ignored in 95s`.
    fn describe(&self) -> String {
        let c = self.counts;
        let time = self
            .elapsed
            .map_or(String::new(), |d| format!(" in {:.0}s", d.as_secs_f64()));
        format!(
            "{}: {} passed, {} failed, {} ignored{time}",
            self.name, c.passed, c.failed, c.ignored
        )
    }
}

impl VmOutcome {
    /// The counts of every binary together.
    pub fn counts(&self) -> TestCounts {
        let mut total = TestCounts::default();
        for b in &self.binaries {
            total += b.counts;
        }
        total
    }

    /// One summary step per test binary: its label (with counts and time)
    /// and its result.
    pub fn steps(&self) -> Vec<(String, Result<()>)> {
        self.binaries
            .iter()
            .map(|b| {
                (
                    format!("VM tests ({}) {}", self.release, b.describe()),
                    b.check(&self.release, self.timed_out),
                )
            })
            .collect()
    }

    /// Fails unless every binary exited 0.
    pub fn check(&self) -> Result<()> {
        let failures: Vec<String> = self
            .binaries
            .iter()
            .filter_map(|b| b.check(&self.release, self.timed_out).err())
            .map(|e| format!("{e:#}"))
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            bail!("{}", failures.join("; "))
        }
    }

    /// One line per binary on stderr.
    pub fn print(&self) {
        for b in &self.binaries {
            let verdict = match b.check(&self.release, self.timed_out) {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("FAILED: {e:#}"),
            };
            eprintln!("xtask: VM ({}) {}: {verdict}", self.release, b.describe());
        }
    }
}

/// Builds (unless `--binary`), packs and boots; the caller decides what a
/// non-zero exit code means via [`VmOutcome::check`].
pub fn run(args: &VmArgs) -> Result<VmOutcome> {
    let cache = target_dir().join("vm");
    let (tests, needs_daemon) = match &args.binary {
        Some(path) => {
            let path =
                fs::canonicalize(path).with_context(|| format!("--binary {}", path.display()))?;
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .with_context(|| format!("odd binary name: {}", path.display()))?
                .to_string();
            (vec![TestBinary { name, path }], true)
        }
        None => {
            let suites = args.suites();
            let tests = build_tests(&suites)?;
            (tests, suites.iter().any(|s| s.needs_daemon()))
        }
    };

    let mut programs = Vec::new();
    let mut tools = Vec::new();
    if needs_daemon {
        programs.push(build_sip_filter()?);
        for tool in HOST_TOOLS {
            tools.push(find_tool(tool)?);
        }
    }

    let kernel =
        kernel::prepare(&args.kernel_version, &cache).context("preparing the VM kernel")?;
    eprintln!("xtask: VM kernel: {} ({})", kernel.release, kernel.package);
    let modules = kernel.modules(VM_MODULES, VM_OPTIONAL_MODULES)?;

    // Per run, so that two runs at once (two engineers, one workspace) do not
    // write over each other's initramfs.
    let scratch = Scratch::create(&cache)?;
    // Debug info is most of a debug build's size (about 75%): without it the
    // initramfs packs, boots and unpacks faster and takes less of the VM's memory.
    let tests: Vec<TestBinary> = tests
        .into_iter()
        .map(|t| TestBinary {
            path: strip_debug(&t.path, &scratch.0),
            name: t.name,
        })
        .collect();
    let programs: Vec<PathBuf> = programs
        .iter()
        .map(|p| strip_debug(p, &scratch.0))
        .collect();

    let initrd = scratch
        .0
        .join(format!("initramfs-{}.cpio.gz", kernel.release));
    let contents = initramfs::Contents {
        tests: &tests,
        programs: &programs,
        tools: &tools,
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
    eprintln!(
        "xtask: VM {} after {:.1}s",
        if console.timed_out {
            "killed"
        } else {
            "finished"
        },
        start.elapsed().as_secs_f64()
    );
    let outcome = outcome(&tests, console, kernel.release, args.timeout);
    outcome.print();
    Ok(outcome)
}

/// Matches what the console showed to the binaries that were packed, so
/// that a binary the VM never reached still shows up as failed.
fn outcome(
    tests: &[TestBinary],
    console: qemu::Console,
    kernel_release: String,
    timeout: u64,
) -> VmOutcome {
    let binaries = tests
        .iter()
        .map(|t| {
            let run = console.runs.iter().find(|r| r.name == t.name);
            BinaryOutcome {
                name: t.name.clone(),
                started: run.is_some(),
                exit_code: run.and_then(|r| r.exit_code),
                counts: run.map(|r| r.counts).unwrap_or_default(),
                elapsed: run.and_then(|r| r.elapsed),
            }
        })
        .collect();
    VmOutcome {
        release: console.release.unwrap_or(kernel_release),
        binaries,
        timed_out: console.timed_out.then_some(timeout),
    }
}

/// `target/vm/run-<pid>/`: the stripped binaries and the initramfs of one
/// run, removed when it ends (qemu has read the initramfs by then).
struct Scratch(PathBuf);

impl Scratch {
    fn create(cache: &Path) -> Result<Self> {
        // Leftovers of runs that were killed (Ctrl-C), including one that had our pid.
        for entry in fs::read_dir(cache).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("run-")) else {
                continue;
            };
            if pid == std::process::id().to_string() || !Path::new("/proc").join(pid).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        let dir = cache.join(format!("run-{}", std::process::id()));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn size_mib(path: &Path) -> String {
    fs::metadata(path).map_or("?".to_string(), |m| {
        format!("{:.1} MiB", m.len() as f64 / (1024.0 * 1024.0))
    })
}

/// Runs a cargo build with `--message-format=json-render-diagnostics`
/// (artifacts as JSON on stdout, compiler errors still readable on stderr)
/// and returns its stdout.
fn cargo_json(args: &[&str], what: &str) -> Result<String> {
    let mut cmd = cargo();
    cmd.args(args)
        .arg("--message-format=json-render-diagnostics");
    eprintln!("xtask: running `{}`", describe(&cmd));
    crate::util::output(&mut cmd).with_context(|| format!("building {what}"))
}

/// Builds the selected `tests/tests/*.rs` binaries in one cargo run.
fn build_tests(suites: &[Suite]) -> Result<Vec<TestBinary>> {
    let mut args = vec!["test", "-p", "tests", "--no-run"];
    for s in suites {
        args.extend(["--test", s.name()]);
    }
    let out = cargo_json(&args, "the test binaries")?;
    suites
        .iter()
        .map(|s| {
            let path = executable(&out, s.name(), "test")
                .with_context(|| format!("cargo reported no `{}` test executable", s.name()))?;
            Ok(TestBinary {
                name: s.name().to_string(),
                path,
            })
        })
        .collect()
}

/// Builds the `sip-filter` binary the control tests run.
fn build_sip_filter() -> Result<PathBuf> {
    let out = cargo_json(
        &["build", "-p", "sip-filter", "--bin", "sip-filter"],
        "the sip-filter binary",
    )?;
    executable(&out, "sip-filter", "bin").context("cargo reported no `sip-filter` executable")
}

/// The executable of the target `name` of kind `kind` in cargo's JSON messages.
fn executable(cargo_json: &str, name: &str, kind: &str) -> Option<PathBuf> {
    cargo_json
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| {
            m["reason"] == "compiler-artifact"
                && m["target"]["name"] == name
                && m["target"]["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == kind))
        })
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
}

/// A copy of `binary` without debug info in `stage` (same file name), or
/// `binary` itself when objcopy (binutils) fails: only slower, not wrong.
/// Symbols stay, so backtraces still name functions.
fn strip_debug(binary: &Path, stage: &Path) -> PathBuf {
    let Some(name) = binary.file_name() else {
        return binary.to_path_buf();
    };
    let out = stage.join(name);
    let status = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(binary)
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => out,
        other => {
            eprintln!(
                "xtask: warning: `objcopy --strip-debug {}` failed ({other:?}); packing it with \
                 its debug info",
                binary.display()
            );
            binary.to_path_buf()
        }
    }
}

/// The host's `tool`, as found on PATH (plus the sbin directories, which a
/// non-login root shell may lack).
fn find_tool(tool: &Tool) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(tool.name))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "`{}` is not installed (Debian package {}; `cargo xtask setup` installs the \
                 packages the tests need)",
                tool.name, tool.package
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_executables_by_name_and_kind() {
        let json = r#"{"reason":"compiler-artifact","target":{"name":"sip_filter","kind":["lib"]},"executable":null}
{"reason":"compiler-artifact","target":{"name":"fixtures","kind":["test"]},"executable":"/t/debug/deps/fixtures-abc"}
{"reason":"compiler-artifact","target":{"name":"control","kind":["test"]},"executable":"/t/debug/deps/control-def"}
{"reason":"compiler-artifact","target":{"name":"sip-filter","kind":["bin"]},"executable":"/t/debug/sip-filter"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            executable(json, "fixtures", "test"),
            Some(PathBuf::from("/t/debug/deps/fixtures-abc"))
        );
        assert_eq!(
            executable(json, "control", "test"),
            Some(PathBuf::from("/t/debug/deps/control-def"))
        );
        assert_eq!(
            executable(json, "sip-filter", "bin"),
            Some(PathBuf::from("/t/debug/sip-filter"))
        );
        assert_eq!(executable(json, "sip-filter", "test"), None);
    }

    #[test]
    fn only_keeps_the_running_order() {
        let mut args = VmArgs::default();
        assert_eq!(args.suites(), Suite::ALL);
        args.only = vec![Suite::Control, Suite::Fixtures, Suite::Control];
        assert_eq!(args.suites(), [Suite::Fixtures, Suite::Control]);
        args.only = vec![Suite::State, Suite::Fixtures];
        assert_eq!(args.suites(), [Suite::Fixtures, Suite::State]);
        args.only = vec![Suite::Control];
        assert_eq!(args.suites(), [Suite::Control]);
    }

    #[test]
    fn outcome_flags_binaries_the_vm_never_reached() {
        let tests = ["fixtures", "control"].map(|n| TestBinary {
            name: n.to_string(),
            path: PathBuf::from(n),
        });
        let mut console = qemu::Console::default();
        let t = Instant::now();
        console.read_line(&format!("{START_MARKER}fixtures"), t);
        console.read_line("test result: ok. 2 passed; 0 failed; 0 ignored", t);
        console.read_line(&format!("{RESULT_MARKER}fixtures 0"), t);
        console.read_line(&format!("{START_MARKER}control"), t);
        console.timed_out = true;
        let o = outcome(&tests, console, "6.1.0-56-cloud-amd64".into(), 600);
        assert_eq!(o.counts().passed, 2);
        let steps = o.steps();
        assert!(steps[0].1.is_ok());
        let err = format!("{:#}", steps[1].1.as_ref().unwrap_err());
        assert!(err.contains("did not finish within the VM's 600s"), "{err}");
        assert!(o.check().is_err());

        let o = outcome(&tests, qemu::Console::default(), "r".into(), 600);
        let err = format!("{:#}", o.check().unwrap_err());
        assert!(err.contains("fixtures tests never started"), "{err}");
    }
}
