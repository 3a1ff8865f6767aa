//! `cargo xtask setup`: installs what a fresh Debian 12 machine lacks.
//!
//! Every step checks first and acts only when something is missing, so a
//! second run takes well under a second and never touches the network.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::util::{cargo_bin_dir, path_with, run, workspace_root};

/// Debian packages the build, the tests and the VM runs need.
pub const APT_PACKAGES: &[&str] = &[
    // bpf-linker links against LLVM 22.
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    // `cargo xtask vm`.
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    // Tests, demo and benchmarks.
    "bpftool",
    "iproute2",
    "tcpdump",
    "kamailio",
    "sip-tester",
    "sipvicious",
    "nftables",
    "iptables",
    "netsniff-ng",
    // `cargo xtask bench`: turns GRO on for the receiving veth, which gives it the NAPI
    // context that frames redirected by the XDP live-frames sender need.
    "ethtool",
    "python3-pip",
    // `cargo xtask bench` part 3: fail2ban against sip-filter (pyinotify: its inotify backend).
    "fail2ban",
    "python3-pyinotify",
    // The metrics tests: promtool checks the exposition, curl scrapes it.
    "prometheus",
    "curl",
    // The manual page test renders it with groff.
    "groff-base",
    // `sip-filter top` is driven in a terminal multiplexer by its test.
    "tmux",
];

const BPF_LINKER_VERSION: &str = "0.13.0";
/// `cargo xtask deb` builds the Debian package with it.
const CARGO_DEB_VERSION: &str = "3.8.0";
const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";
const BPFFS: &str = "/sys/fs/bpf";

pub fn run_setup() -> Result<()> {
    let start = Instant::now();
    ensure_apt_packages().context("installing Debian packages")?;
    ensure_nightly_rust_src().context("installing the nightly toolchain's rust-src")?;
    ensure_bpf_linker().context("installing bpf-linker")?;
    ensure_cargo_deb().context("installing cargo-deb")?;
    ensure_bpffs().context("mounting bpffs")?;
    ensure_crowdsec().context("unpacking crowdsec")?;
    eprintln!(
        "xtask: setup complete in {:.1}s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn missing_apt_packages() -> Result<Vec<&'static str>> {
    // dpkg-query exits non-zero when it has never heard of a package, and
    // prints nothing for it: treat both as "missing" and read stdout anyway.
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${Status}\\n"])
        .args(APT_PACKAGES)
        .stderr(Stdio::null())
        .output()
        .context("could not run dpkg-query (is this Debian?)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let installed: Vec<&str> = stdout
        .lines()
        .filter(|l| l.ends_with("install ok installed"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    Ok(APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed.contains(p))
        .collect())
}

fn ensure_apt_packages() -> Result<()> {
    let missing = missing_apt_packages()?;
    if missing.is_empty() {
        eprintln!("xtask: apt packages: all {} present", APT_PACKAGES.len());
        return Ok(());
    }
    eprintln!("xtask: apt packages missing: {}", missing.join(" "));
    run(Command::new("apt-get").arg("update"))?;
    // Package scripts (kamailio's above all) must not start daemons here: they
    // would hold ports and files that the tests want to own.
    let _guard = NoDaemonStarts::install()?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("RUNLEVEL", "1"))?;
    let still_missing = missing_apt_packages()?;
    if !still_missing.is_empty() {
        bail!("still not installed: {}", still_missing.join(" "));
    }
    Ok(())
}

/// A `policy-rc.d` that forbids service starts while it lives. An existing one
/// (Docker images ship one) is left alone.
struct NoDaemonStarts {
    created: bool,
}

impl NoDaemonStarts {
    fn install() -> Result<Self> {
        if Path::new(POLICY_RC_D).exists() {
            return Ok(Self { created: false });
        }
        fs::write(
            POLICY_RC_D,
            "#!/bin/sh\n# Temporary, written by cargo xtask setup.\nexit 101\n",
        )
        .with_context(|| format!("writing {POLICY_RC_D}"))?;
        set_executable(Path::new(POLICY_RC_D))?;
        Ok(Self { created: true })
    }
}

impl Drop for NoDaemonStarts {
    fn drop(&mut self) {
        if self.created
            && let Err(e) = fs::remove_file(POLICY_RC_D)
        {
            eprintln!("xtask: warning: could not remove {POLICY_RC_D}: {e}");
        }
    }
}

/// The CrowdSec LAPI the `[crowdsec]` tests run: Debian's package, downloaded and unpacked
/// under `target/crowdsec`, never installed (its postinst registers with the central API,
/// which fails offline and leaves a half-configured package that breaks later apt runs).
fn ensure_crowdsec() -> Result<()> {
    let dir = workspace_root().join("target/crowdsec");
    let root = dir.join("root");
    if root.join("usr/bin/crowdsec").exists() && root.join("usr/bin/cscli").exists() {
        eprintln!("xtask: crowdsec: unpacked in {}", root.display());
        return Ok(());
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let deb = |dir: &Path| {
        fs::read_dir(dir).ok().and_then(|rd| {
            rd.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("crowdsec_") && n.ends_with(".deb"))
            })
        })
    };
    if deb(&dir).is_none() {
        eprintln!("xtask: downloading crowdsec (not installed: unpacked for the tests)");
        run(Command::new("apt-get")
            .args(["download", "crowdsec"])
            .current_dir(&dir))?;
    }
    let file = deb(&dir).context("apt-get download left no crowdsec_*.deb")?;
    let partial = dir.join("root.partial");
    let _ = fs::remove_dir_all(&partial);
    run(Command::new("dpkg-deb").arg("-x").arg(&file).arg(&partial))?;
    let _ = fs::remove_dir_all(&root);
    fs::rename(&partial, &root)?;
    eprintln!("xtask: crowdsec unpacked in {}", root.display());
    Ok(())
}

pub fn set_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod 755 {}", path.display()))
}

fn ensure_nightly_rust_src() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .stderr(Stdio::null())
        .output()
        .context("could not run rustup")?;
    if !installed.status.success() {
        eprintln!("xtask: nightly toolchain missing");
        return run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]));
    }
    let has_rust_src = String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == "rust-src");
    if has_rust_src {
        eprintln!("xtask: nightly rust-src: present");
        return Ok(());
    }
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn bpf_linker_works() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn ensure_bpf_linker() -> Result<()> {
    // PATH already includes ~/.cargo/bin (see `prepare_path`).
    if bpf_linker_works() {
        eprintln!("xtask: bpf-linker: present");
        return Ok(());
    }
    // Without llvm-config on PATH the build picks no LLVM and fails to link
    // with `unable to find library -lLLVM`.
    let path = path_with(Path::new(LLVM_BIN))?;
    let install = |locked: bool| {
        let mut cmd = Command::new("cargo");
        cmd.args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION]);
        if locked {
            cmd.arg("--locked");
        }
        cmd.args(["--no-default-features", "--features", "llvm-22"])
            .env("PATH", &path);
        run(&mut cmd)
    };
    if let Err(e) = install(true) {
        eprintln!("xtask: `cargo install --locked` failed ({e:#}); retrying without --locked");
        install(false)?;
    }
    if !bpf_linker_works() {
        bail!("bpf-linker was installed but `bpf-linker --version` still fails");
    }
    Ok(())
}

fn cargo_deb_version() -> Option<String> {
    let out = Command::new("cargo-deb").arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn ensure_cargo_deb() -> Result<()> {
    if cargo_deb_version().is_some_and(|v| v.contains(CARGO_DEB_VERSION)) {
        eprintln!("xtask: cargo-deb {CARGO_DEB_VERSION}: present");
        return Ok(());
    }
    run(Command::new("cargo").args([
        "install",
        "cargo-deb",
        "--version",
        CARGO_DEB_VERSION,
        "--locked",
    ]))
}

fn bpffs_mounted() -> Result<bool> {
    let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    Ok(mounts.lines().any(|l| {
        let mut fields = l.split_whitespace();
        fields.nth(1) == Some(BPFFS) && fields.next() == Some("bpf")
    }))
}

fn ensure_bpffs() -> Result<()> {
    if bpffs_mounted()? {
        eprintln!("xtask: bpffs: mounted at {BPFFS}");
        return Ok(());
    }
    run(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))
}

/// Puts `~/.cargo/bin` on this process's PATH so that every child (cargo,
/// aya-build's nested cargo, rustup, bpf-linker) finds the same tools even
/// when xtask was started from a shell that lacks it.
pub fn prepare_path() -> Result<()> {
    let Some(dir) = cargo_bin_dir() else {
        return Ok(());
    };
    let path = path_with(&dir)?;
    // SAFETY: called first thing in `main`, before any thread exists.
    unsafe { std::env::set_var("PATH", path) };
    Ok(())
}
