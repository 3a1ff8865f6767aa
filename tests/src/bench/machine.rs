//! The machine a run was measured on, for the report's header.
use std::{process::Command, time::SystemTime};

#[derive(Clone, Debug)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub virtualization: String,
    /// RFC 3339, UTC.
    pub date: String,
    /// `git describe`-like: the commit and whether the tree had changes.
    pub commit: String,
    /// Versions of the tools the comparison uses.
    pub tools: Vec<(String, String)>,
}

impl Machine {
    pub fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        // lscpu names the hypervisor; systemd-detect-virt would name the container first.
        let lscpu = Command::new("lscpu")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let hypervisor = lscpu
            .lines()
            .find(|l| l.starts_with("Hypervisor vendor:"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| format!("{} guest", v.trim()));
        let virtualization = match (hypervisor, cpuinfo.contains(" hypervisor")) {
            (Some(h), _) => h,
            (None, true) => "virtual machine".into(),
            (None, false) => "bare metal".into(),
        };
        let repo = env!("CARGO_MANIFEST_DIR");
        let commit = first_line("git", &["-C", repo, "rev-parse", "--short=12", "HEAD"])
            .map(|c| {
                let dirty = Command::new("git")
                    .args(["-C", repo, "status", "--porcelain", "--untracked-files=no"])
                    .output()
                    .map(|o| !o.stdout.is_empty())
                    .unwrap_or(false);
                if dirty {
                    format!("{c} (with uncommitted changes)")
                } else {
                    c
                }
            })
            .unwrap_or_else(|| "unknown".into());
        let tools = [
            ("nft", vec!["--version"]),
            ("iptables-legacy", vec!["--version"]),
            ("iptables-nft", vec!["--version"]),
            ("bpftool", vec!["version"]),
        ]
        .into_iter()
        .map(|(t, a)| {
            (
                t.to_string(),
                first_line(t, &a).unwrap_or_else(|| "not found".into()),
            )
        })
        .collect();
        Self {
            cpu,
            cores,
            memory_gib: mem_kib / (1024.0 * 1024.0),
            kernel,
            virtualization,
            date: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            commit,
            tools,
        }
    }
}

fn first_line(cmd: &str, args: &[&str]) -> Option<String> {
    let o = Command::new(cmd).args(args).output().ok()?;
    let s = String::from_utf8_lossy(&o.stdout);
    let l = s.lines().next()?.trim();
    (!l.is_empty()).then(|| l.to_string())
}
