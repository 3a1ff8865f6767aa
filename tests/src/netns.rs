//! Network namespaces for end-to-end tests, removed by RAII guards even when a test fails.
//! Sockets are opened inside a namespace from a short-lived thread that `setns`es into it; a
//! socket keeps its namespace for life, so the test drives both ends from one process.
use std::{
    fs::File,
    os::fd::AsRawFd,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A short unique tag for names (namespaces, interfaces: at most 15 characters).
pub fn unique(prefix: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}{}{n}", std::process::id() % 100_000)
}

pub fn run(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd).args(args).output().with_context(|| {
        format!("running {cmd} (is it installed? `cargo xtask setup` installs it)")
    })?;
    if !out.status.success() {
        bail!(
            "{cmd} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Result<Self> {
        Self::with_name(unique(prefix))
    }

    /// A namespace with exactly this name (the lab encodes its owner's pid in its names, so
    /// that leftovers of a killed run can be recognised).
    pub fn with_name(name: String) -> Result<Self> {
        run("ip", &["netns", "add", &name])?;
        let ns = Self { name };
        ns.exec("ip", &["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// Runs a command in the namespace (network only: the host's mounts, so bpffs pins are shared).
    pub fn exec(&self, cmd: &str, args: &[&str]) -> Result<String> {
        let mut a = vec![format!("--net={}", self.path().display()), cmd.to_string()];
        a.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        run("nsenter", &refs)
    }

    pub fn command(&self, cmd: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path().display())).arg(cmd);
        c
    }

    /// Runs `f` on a thread inside this namespace (for opening sockets there).
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let file = File::open(self.path()).context("opening the namespace")?;
        std::thread::spawn(move || {
            // SAFETY: setns on this thread only, with a valid namespace fd.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(anyhow::anyhow!(
                    "setns: {}",
                    std::io::Error::last_os_error()
                ));
            }
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Two namespaces joined by a veth pair: `pbx` (with the interface the filter attaches to)
/// and `client`, with addresses from the documentation ranges on both ends.
pub struct Link {
    pub client: Netns,
    pub pbx: Netns,
    /// The PBX-side interface name (unique per link, since pins live on the host's bpffs).
    pub pbx_if: String,
    pub client_if: String,
}

pub const PBX_V4: &str = "203.0.113.1";
pub const PBX_V6: &str = "2001:db8:1::1";

impl Link {
    /// `client_addrs` are extra addresses for the client side, e.g. "198.51.100.10/24".
    pub fn new(client_addrs: &[&str]) -> Result<Self> {
        let pbx = Netns::new("sfp")?;
        let client = Netns::new("sfc")?;
        let pbx_if = unique("sfx");
        let client_if = unique("sfy");
        run(
            "ip",
            &[
                "link",
                "add",
                &pbx_if,
                "netns",
                &pbx.name,
                "type",
                "veth",
                "peer",
                "name",
                &client_if,
                "netns",
                &client.name,
            ],
        )?;
        for (ns, ifn, addrs) in [
            (
                &pbx,
                &pbx_if,
                vec![
                    "203.0.113.1/24",
                    "198.51.100.1/24",
                    "192.0.2.1/24",
                    "2001:db8:1::1/64",
                ],
            ),
            (
                &client,
                &client_if,
                [&["203.0.113.10/24", "2001:db8:1::10/64"][..], client_addrs].concat(),
            ),
        ] {
            for a in addrs {
                let nodad = if a.contains(':') {
                    vec!["nodad"]
                } else {
                    vec![]
                };
                let mut args = vec!["addr", "add", a, "dev", ifn.as_str()];
                args.extend(nodad);
                ns.exec("ip", &args)?;
            }
            ns.exec("ip", &["link", "set", ifn, "up"])?;
        }
        Ok(Self {
            client,
            pbx,
            pbx_if,
            client_if,
        })
    }
}

/// A child process (daemon) ended by its pid on drop.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(mut cmd: Command, log: &std::path::Path) -> Result<Self> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .context("spawning")?;
        Ok(Self { child })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Waits for the process to exit (after a signal), up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if t.elapsed() > timeout {
                bail!("process {} did not exit within {timeout:?}", self.pid());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}
