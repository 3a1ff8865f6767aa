//! A real CrowdSec Local API for the tests: Debian 12's `crowdsec` package (1.4.6), unpacked by
//! `cargo xtask setup` into `target/crowdsec` (never installed: its postinst registers with
//! the central API and fails offline), run as `crowdsec -no-cs` (the LAPI alone) with sqlite in
//! the test's directory, in a namespace of its own joined to each PBX namespace by a veth pair
//! on 2001:db8:fN::/64. Drop stops it and removes the namespace and links.
use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::netns::{Netns, Proc, run, unique, wait_for};

/// Where `cargo xtask setup` unpacks the package.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("target/crowdsec/root")
}

const PORT: u16 = 8080;

pub struct Lapi {
    pub ns: Netns,
    pub dir: tempfile::TempDir,
    proc: Option<Proc>,
    /// One per PBX namespace given to `start`: its bouncer key and machine password file.
    pub peers: Vec<Peer>,
}

pub struct Peer {
    /// The LAPI's URL as this PBX reaches it.
    pub url: String,
    pub bouncer_key: String,
    pub machine_id: String,
    pub password_file: PathBuf,
}

impl Peer {
    /// A `[crowdsec]` section for this PBX (bouncer and watcher).
    pub fn config(&self, poll: &str, resync: &str) -> String {
        format!(
            "[crowdsec]\nlapi_url = \"{}\"\napi_key = \"{}\"\npoll = \"{poll}\"\nresync = \
             \"{resync}\"\nmachine_id = \"{}\"\npassword_file = \"{}\"\n",
            self.url,
            self.bouncer_key,
            self.machine_id,
            self.password_file.display()
        )
    }
}

impl Lapi {
    /// A LAPI reachable from each of `pbxs` (namespaces), with a bouncer and a machine for each.
    pub fn start(pbxs: &[&Netns]) -> Result<Lapi> {
        let bin = root().join("usr/bin/crowdsec");
        if !bin.exists() {
            bail!(
                "{} missing: `cargo xtask setup` unpacks Debian's crowdsec package there",
                bin.display()
            );
        }
        let ns = Netns::new("sfl")?;
        let dir = tempfile::tempdir()?;
        let d = dir.path().to_path_buf();
        for sub in ["etc", "data", "hub", "logs", "notifications"] {
            std::fs::create_dir_all(d.join(sub))?;
        }
        for f in ["profiles.yaml", "simulation.yaml"] {
            std::fs::copy(root().join("etc/crowdsec").join(f), d.join("etc").join(f))
                .with_context(|| format!("copying the package's {f}"))?;
        }
        let cfg = format!(
            "common:
  daemonize: false
  log_media: file
  log_level: info
  log_dir: {d}/logs/
  working_dir: .
config_paths:
  config_dir: {d}/etc/
  data_dir: {d}/data/
  simulation_path: {d}/etc/simulation.yaml
  hub_dir: {d}/hub/
  index_path: {d}/hub/.index.json
  notification_dir: {d}/notifications/
  plugin_dir: {root}/usr/lib/crowdsec/plugins/
cscli:
  output: human
  color: \"no\"
db_config:
  # `info` logs a line per decision (14 MB for a 100k import).
  log_level: warning
  type: sqlite
  db_path: {d}/data/crowdsec.db
  use_wal: true
  flush:
    max_items: 500000
    max_age: 7d
plugin_config:
  user: nobody
  group: nogroup
api:
  client:
    insecure_skip_verify: false
    credentials_path: {d}/etc/local_api_credentials.yaml
  server:
    log_level: info
    listen_uri: \"[::]:{PORT}\"
    profiles_path: {d}/etc/profiles.yaml
    trusted_ips:
      - 127.0.0.1
      - ::1
prometheus:
  enabled: false
  level: full
  listen_addr: 127.0.0.1
  listen_port: 16060
",
            d = d.display(),
            root = root().display(),
        );
        std::fs::write(d.join("config.yaml"), cfg)?;
        let mut lapi = Lapi {
            ns,
            dir,
            proc: None,
            peers: Vec::new(),
        };
        // cscli's own machine (it talks to the LAPI for `decisions add/list/delete`).
        lapi.cscli(&[
            "machines",
            "add",
            "cscli-test",
            "--password",
            "cscli-test-password",
            "-f",
            &format!("{}/etc/local_api_credentials.yaml", d.display()),
            "--url",
            &format!("http://127.0.0.1:{PORT}"),
        ])?;
        for (i, pbx) in pbxs.iter().enumerate() {
            let (outer, inner) = (unique("sfm"), unique("sfn"));
            run(
                "ip",
                &[
                    "link",
                    "add",
                    &outer,
                    "netns",
                    &lapi.ns.name,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &inner,
                    "netns",
                    &pbx.name,
                ],
            )?;
            let net = format!("2001:db8:f{i}::");
            lapi.ns.exec(
                "ip",
                &["addr", "add", &format!("{net}1/64"), "dev", &outer, "nodad"],
            )?;
            lapi.ns.exec("ip", &["link", "set", &outer, "up"])?;
            pbx.exec(
                "ip",
                &["addr", "add", &format!("{net}2/64"), "dev", &inner, "nodad"],
            )?;
            pbx.exec("ip", &["link", "set", &inner, "up"])?;
            let machine_id = format!("pbx{i}");
            let password_file = d.join(format!("{machine_id}.password"));
            let password = format!("pbx{i}-password-0123456789");
            std::fs::write(&password_file, &password)?;
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600))?;
            lapi.cscli(&[
                "machines",
                "add",
                &machine_id,
                "--password",
                &password,
                "-f",
                &format!("{}/{machine_id}.yaml", d.display()),
            ])?;
            let bouncer_key = format!("pbx{i}bouncerkey0123456789abcdef");
            lapi.cscli(&[
                "bouncers",
                "add",
                &format!("sip-filter-{i}"),
                "-k",
                &bouncer_key,
            ])?;
            lapi.peers.push(Peer {
                url: format!("http://[{net}1]:{PORT}"),
                bouncer_key,
                machine_id,
                password_file,
            });
        }
        lapi.run()?;
        Ok(lapi)
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// Starts the LAPI (again) and waits until it answers.
    pub fn run(&mut self) -> Result<()> {
        let mut cmd = self
            .ns
            .command(root().join("usr/bin/crowdsec").to_str().unwrap());
        cmd.args(["-c", self.config().to_str().unwrap(), "-no-cs"]);
        let p = Proc::spawn(cmd, &self.dir.path().join("crowdsec.out"))?;
        self.proc = Some(p);
        let t = Instant::now();
        let up = wait_for(Duration::from_secs(60), || {
            self.cscli(&["decisions", "list", "-o", "json"]).is_ok()
        });
        if !up {
            bail!(
                "the crowdsec LAPI did not answer within 60 s:\n{}",
                self.log()
            );
        }
        eprintln!("crowdsec LAPI up in {:.1}s", t.elapsed().as_secs_f64());
        Ok(())
    }

    /// Stops the LAPI (SIGTERM, then SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.signal(libc::SIGTERM);
            if p.wait_exit(Duration::from_secs(10)).is_err() {
                p.signal(libc::SIGKILL);
                let _ = p.wait_exit(Duration::from_secs(5));
            }
        }
    }

    /// `cscli -c CFG ARGS` in the LAPI's namespace; its stdout.
    pub fn cscli(&self, args: &[&str]) -> Result<String> {
        let mut cmd: Command = self
            .ns
            .command(root().join("usr/bin/cscli").to_str().unwrap());
        cmd.arg("-c").arg(self.config()).args(args);
        let out = cmd.output().context("running cscli")?;
        if !out.status.success() {
            bail!(
                "cscli {} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The decisions the LAPI holds (`cscli decisions list -o json`: alerts with decisions),
    /// as (value, scenario) pairs.
    pub fn decisions(&self) -> Result<Vec<(String, String)>> {
        let out = self.cscli(&["decisions", "list", "-o", "json", "--limit", "0"])?;
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_default();
        let mut got = Vec::new();
        for alert in v.as_array().into_iter().flatten() {
            for d in alert["decisions"].as_array().into_iter().flatten() {
                got.push((
                    d["value"].as_str().unwrap_or_default().to_string(),
                    d["scenario"].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
        Ok(got)
    }

    pub fn log(&self) -> String {
        let d = self.dir.path();
        ["crowdsec.out", "logs/crowdsec_api.log", "logs/crowdsec.log"]
            .iter()
            .map(|f| std::fs::read_to_string(d.join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Lapi {
    fn drop(&mut self) {
        self.stop();
    }
}
