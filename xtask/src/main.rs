//! Project tasks for sip-filter: `cargo xtask <task>`.

mod deb;
mod setup;
mod summary;
mod tee;
mod util;
mod vm;

use std::{os::unix::process::CommandExt, process::ExitCode};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use crate::{
    summary::Report,
    util::{cargo, output, run, run_tests},
};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Project tasks for sip-filter"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the build and tests need (apt packages, nightly rust-src, bpf-linker, bpffs)
    Setup,
    /// Setup, then build the workspace
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Setup, then fmt, clippy, the host tests and the tests in the 6.1 VM
    Test {
        /// Skip the tests in the VM
        #[arg(long)]
        no_vm: bool,
        /// Skip cargo fmt and cargo clippy
        #[arg(long)]
        no_lint: bool,
    },
    /// Setup, then run the packet-fixture and control-plane tests in a VM on Debian 12's 6.1
    /// kernel
    Vm(vm::VmArgs),
    /// Setup, then run the demo (`tests` crate, bin `demo`)
    Demo {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Setup, then build the Debian package into target/debian (cargo-deb)
    Deb,
    /// Setup, then run the benchmarks (`tests` crate, bin `bench`)
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = setup::prepare_path().and_then(|()| match cli.task {
        Task::Setup => setup::run_setup(),
        Task::Build { release } => build(release),
        Task::Test { no_vm, no_lint } => test(no_vm, no_lint),
        Task::Vm(args) => run_vm(&args),
        Task::Demo { args } => exec_tests_bin("demo", &args),
        Task::Deb => {
            setup::run_setup().and_then(|()| deb::build().map(|p| println!("{}", p.display())))
        }
        Task::Bench { args } => exec_tests_bin("bench", &args),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The eBPF crate only builds for the BPF target, through sip-filter's
/// build.rs, so host-side cargo runs leave it out.
const EXCLUDE_EBPF: [&str; 3] = ["--workspace", "--exclude", "sip-filter-ebpf"];

fn build(release: bool) -> Result<()> {
    setup::run_setup()?;
    let mut cmd = cargo();
    cmd.arg("build").args(EXCLUDE_EBPF);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)
}

fn test(no_vm: bool, no_lint: bool) -> Result<()> {
    setup::run_setup()?;
    let mut report = Report::default();

    if no_lint {
        report.skip("fmt", "--no-lint");
        report.skip("clippy", "--no-lint");
    } else {
        report.record("fmt", run(cargo().args(["fmt", "--all", "--", "--check"])));
        let clippy = run(cargo().arg("clippy").args(EXCLUDE_EBPF).args([
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]));
        report.record("clippy", clippy);
        // The eBPF crate only builds for the BPF target, with the nightly toolchain's rust-src.
        let ebpf_clippy = run(cargo()
            .current_dir(util::workspace_root().join("sip-filter-ebpf"))
            .args([
                "+nightly",
                "clippy",
                "--release",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--target-dir",
            ])
            .arg(util::workspace_root().join("target/ebpf-clippy"))
            .args(["--", "-D", "warnings"]));
        report.record("clippy (eBPF)", ebpf_clippy);
    }

    // The end-to-end tests run the `sip-filter` binary: build every binary first, since
    // `cargo test` only builds the bins of packages that have integration tests.
    report.record(
        "build",
        run(cargo().arg("build").args(EXCLUDE_EBPF).arg("--bins")),
    );

    // The package test installs what `cargo xtask deb` built.
    report.record("deb", deb::build().map(|_| ()));

    // The tests need root and share one kernel (links, pins, XDP hooks): serially.
    let (result, counts) = run_tests(
        cargo()
            .arg("test")
            .args(EXCLUDE_EBPF)
            .args(["--", "--test-threads=1"]),
    );
    report.counts += counts;
    report.record("host tests", result);

    if no_vm {
        report.skip("VM tests", "--no-vm");
    } else {
        match vm::run(&vm::VmArgs::default()) {
            Ok(outcome) => {
                report.counts += outcome.counts();
                for (step, result) in outcome.steps() {
                    report.record(step, result);
                }
            }
            Err(e) => report.record("VM tests", Err(e)),
        }
    }

    report.print();
    if report.failed() {
        bail!("some steps failed (see the summary above)");
    }
    Ok(())
}

fn run_vm(args: &vm::VmArgs) -> Result<()> {
    setup::run_setup()?;
    vm::run(args)?.check()
}

/// Replaces xtask with `cargo run --release -p tests --bin NAME`, once that
/// binary exists.
fn exec_tests_bin(name: &str, args: &[String]) -> Result<()> {
    if !tests_has_bin(name)? {
        bail!("`{name}` is not built yet: the `tests` crate has no `{name}` binary");
    }
    setup::run_setup()?;
    // The demo and the lab benchmarks run the daemon: its binary goes next to theirs.
    util::build_release_daemon()?;
    let mut cmd = cargo();
    cmd.args(["run", "--release", "-p", "tests", "--bin", name, "--"])
        .args(args);
    eprintln!("xtask: running `{}`", util::describe(&cmd));
    let err = cmd.exec();
    Err(err).context("could not exec cargo")
}

fn tests_has_bin(name: &str) -> Result<bool> {
    let json = output(cargo().args(["metadata", "--no-deps", "--format-version", "1"]))?;
    let meta: serde_json::Value = serde_json::from_str(&json).context("parsing cargo metadata")?;
    let packages = meta["packages"]
        .as_array()
        .context("cargo metadata: no packages")?;
    Ok(packages
        .iter()
        .filter(|p| p["name"] == "tests")
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .any(|t| {
            t["name"] == name
                && t["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "bin"))
        }))
}
