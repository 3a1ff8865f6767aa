//! A running filter for end-to-end tests: the real `sip-filter` daemon on the PBX side of a
//! [`Link`], driven through its CLI. Drop stops the daemon and detaches, leaving no pins.
use std::{
    path::PathBuf,
    process::{Command, Output},
    time::Duration,
};

use crate::{
    netns::{Link, Proc, wait_for},
    responder::{Client, Responder},
};

/// The `sip-filter` binary, built next to the test executables (`cargo xtask test` builds it),
/// or next to a binary of this crate (`target/<profile>/demo`).
pub fn bin() -> PathBuf {
    let b = bin_path();
    assert!(
        b.exists(),
        "{} missing: build the workspace first",
        b.display()
    );
    b
}

/// Where the binary should be, whether or not it is there (for cleanup, which must not panic).
fn bin_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let own_dir = exe.parent().unwrap();
    // Test executables live in target/<profile>/deps, binaries in target/<profile>.
    [own_dir, own_dir.parent().unwrap()]
        .iter()
        .map(|d| d.join("sip-filter"))
        .find(|b| b.is_file())
        .unwrap_or_else(|| own_dir.parent().unwrap().join("sip-filter"))
}

/// A filter on the PBX side of a link, its daemon, and its files. Drop stops the daemon and
/// detaches the filter, so nothing is left pinned.
pub struct Filter {
    pub link: Link,
    pub daemon: Option<Proc>,
    pub tmp: tempfile::TempDir,
    pub config: PathBuf,
}

impl Filter {
    pub fn start(client_addrs: &[&str], config: &str) -> Filter {
        let link = Link::new(client_addrs).expect("creating the namespaces");
        Filter::on_link(link, config)
    }

    /// Runs the daemon on the PBX side of a link built by the caller (the lab's bridge).
    pub fn on_link(link: Link, config: &str) -> Filter {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = tmp.path().join("sip-filter.toml");
        // The state file goes under the test's directory, never the host's /var/lib.
        let config = if config.contains("[state]") {
            config.to_string()
        } else {
            format!(
                "{config}\n[state]\ndir = \"{}\"\n",
                tmp.path().join("state").display()
            )
        };
        std::fs::write(&cfg, config).unwrap();
        let mut f = Filter {
            link,
            daemon: None,
            tmp,
            config: cfg,
        };
        f.run_daemon();
        f
    }

    /// The daemon's state file (when the config leaves `[state] dir` to this helper).
    pub fn state_file(&self) -> PathBuf {
        self.tmp
            .path()
            .join("state")
            .join(format!("{}.db", self.link.pbx_if))
    }

    /// Stops the daemon: SIGTERM, or SIGKILL when `kill`.
    pub fn stop_daemon(&mut self, kill: bool) {
        if let Some(mut d) = self.daemon.take() {
            d.signal(if kill { libc::SIGKILL } else { libc::SIGTERM });
            d.wait_exit(Duration::from_secs(5)).unwrap();
        }
    }

    /// A reboot as the filter sees it, with the daemon stopped: bpffs and /run are empty (the
    /// programs go with the links' pins), the state directory stays.
    pub fn simulate_reboot(&mut self) {
        self.stop_daemon(true);
        let dir = std::path::Path::new("/sys/fs/bpf/sip-filter").join(&self.link.pbx_if);
        std::fs::remove_dir_all(&dir).unwrap();
        for ext in ["pid", "mode", "state"] {
            let _ = std::fs::remove_file(format!("/run/sip-filter/{}.{ext}", self.link.pbx_if));
        }
        // Kernels without TCX keep the egress program as a tc filter: a reboot removes it too.
        let _ = self
            .link
            .pbx
            .exec("tc", &["qdisc", "del", "dev", &self.link.pbx_if, "clsact"]);
    }

    /// `sip-filter stats --json`.
    pub fn stats(&self) -> serde_json::Value {
        serde_json::from_str(&self.cli_ok(&["stats", "--json"])).unwrap()
    }

    pub fn log_path(&self) -> PathBuf {
        self.tmp.path().join("daemon.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn run_daemon(&mut self) {
        let mut cmd = self.link.pbx.command(bin().to_str().unwrap());
        cmd.args([
            "run",
            "--iface",
            &self.link.pbx_if,
            "--config",
            self.config.to_str().unwrap(),
        ]);
        // The log is a file that tests read and the demo prints: no colour codes in it.
        cmd.env("NO_COLOR", "1");
        // A test process killed without unwinding stops its daemon too (the filter stays
        // attached; the lab clears such leftovers on its next start).
        // SAFETY: prctl only, between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let attached_before = self.log().matches("sip-filter attached").count();
        let mut p = Proc::spawn(cmd, &self.log_path()).unwrap();
        // Loading and verifying the programs took over 20 s in the emulated VM with the other
        // core busy: wait long, but stop at once if the daemon exits.
        let mut exited = None;
        let attached = wait_for(Duration::from_secs(180), || {
            exited = p.child.try_wait().unwrap();
            exited.is_some() || self.log().matches("sip-filter attached").count() > attached_before
        });
        assert!(
            attached && exited.is_none(),
            "daemon did not attach (exit: {exited:?}):\n{}",
            self.log()
        );
        self.daemon = Some(p);
    }

    /// Runs the CLI in the PBX namespace against this filter's interface.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = self.link.pbx.command(bin().to_str().unwrap());
        cmd.args(args).args(["--iface", &self.link.pbx_if]);
        cmd.output().unwrap()
    }

    pub fn cli_ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(
            o.status.success(),
            "sip-filter {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn bans(&self) -> Vec<serde_json::Value> {
        let out = self.cli_ok(&["ban", "list", "--json"]);
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    pub fn client(&self, local: &str) -> Client {
        Client::new(&self.link.client, local).unwrap()
    }

    pub fn responder(&self) -> Responder {
        Responder::start(&self.link.pbx).unwrap()
    }

    pub fn hup(&self) {
        self.daemon.as_ref().unwrap().signal(libc::SIGHUP);
    }
}

impl Drop for Filter {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.signal(libc::SIGTERM);
            let _ = d.wait_exit(Duration::from_secs(5));
        }
        let _ = Command::new(bin_path())
            .args(["detach", "--iface", &self.link.pbx_if])
            .output();
    }
}
