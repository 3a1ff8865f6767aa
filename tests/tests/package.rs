//! The Debian package `cargo xtask deb` built (`cargo xtask test` builds it before the tests):
//! it installs with apt on this machine, its units pass `systemd-analyze verify`, the installed
//! daemon filters with only the capabilities its unit grants, and purge leaves nothing behind
//! (no files, no state, no filter attached). Needs root; installs and purges for real.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use tests::{
    netns::{Link, PBX_V4, Proc, wait_for},
    responder::{Client, Creds, Responder},
};

const PACKAGE: &str = "sip-filter";
const UNITS: &str = "/usr/lib/systemd/system";

fn deb() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debian");
    std::fs::read_dir(&dir)
        .ok()
        .and_then(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "deb"))
        })
        .unwrap_or_else(|| {
            panic!(
                "no package in {}: build it with `cargo xtask deb`",
                dir.display()
            )
        })
}

fn sh(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

fn ok(cmd: &str, args: &[&str]) -> String {
    let o = sh(cmd, args);
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn installed() -> bool {
    sh("dpkg-query", &["-W", "-f=${Status}", PACKAGE])
        .stdout
        .starts_with(b"install ok installed")
}

/// Purges the package however the test ends.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = sh("apt-get", &["purge", "-y", PACKAGE]);
    }
}

#[test]
fn the_deb_installs_runs_confined_and_purges_cleanly() {
    let deb = deb();
    if installed() {
        ok("apt-get", &["purge", "-y", PACKAGE]);
    }
    let guard = Installed;
    ok("apt-get", &["install", "-y", deb.to_str().unwrap()]);
    assert!(installed());

    // What the package carries.
    let version = ok("/usr/sbin/sip-filter", &["--version"]);
    assert!(version.starts_with("sip-filter "), "{version}");
    let conffiles = ok("dpkg-query", &["-W", "-f=${Conffiles}", PACKAGE]);
    assert!(
        conffiles.contains("/etc/sip-filter/sip-filter.toml"),
        "{conffiles}"
    );
    ok(
        "/usr/sbin/sip-filter",
        &["check-config", "/etc/sip-filter/sip-filter.toml"],
    );
    let page = ok(
        "sh",
        &[
            "-c",
            "zcat /usr/share/man/man8/sip-filter.8.gz | groff -man -Tutf8 -ww 2>&1",
        ],
    );
    assert!(page.contains("sip-filter-ban(8)"), "{page}");
    for sub in ["run", "ban", "allow", "geo", "stats"] {
        assert!(Path::new(&format!("/usr/share/man/man8/sip-filter-{sub}.8.gz")).exists());
    }
    ok(
        "bash",
        &["-n", "/usr/share/bash-completion/completions/sip-filter"],
    );
    assert!(Path::new("/usr/share/zsh/vendor-completions/_sip-filter").exists());
    assert!(Path::new("/usr/share/fish/vendor_completions.d/sip-filter.fish").exists());

    // The units, with their hardening drop-ins, as systemd reads them.
    let verify = sh(
        "systemd-analyze",
        &[
            "verify",
            &format!("{UNITS}/sip-filter.service"),
            &format!("{UNITS}/sip-filter@eth0.service"),
        ],
    );
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let unit = std::fs::read_to_string(format!("{UNITS}/sip-filter@.service")).unwrap();
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
    ] {
        assert!(unit.contains(line), "{line} missing:\n{unit}");
    }
    let hardening =
        std::fs::read_to_string(format!("{UNITS}/sip-filter@.service.d/hardening.conf")).unwrap();
    for line in [
        "ProtectSystem=strict",
        "StateDirectory=sip-filter",
        "NoNewPrivileges=yes",
    ] {
        assert!(hardening.contains(line), "{line} missing:\n{hardening}");
    }
    let security = ok(
        "sh",
        &[
            "-c",
            &format!(
                "cd {UNITS} && systemd-analyze security --offline=yes sip-filter@eth0.service 2>&1"
            ),
        ],
    );
    let exposure = security
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_default()
        .to_string();
    println!("{exposure}");

    // The installed daemon with only the unit's capabilities, as systemd would run it: it
    // attaches, bans, and says it is ready.
    let caps: Vec<String> = hardening
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("CapabilityBoundingSet")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_ascii_lowercase()))
        .collect();
    let bounding = format!("-all,{}", caps.join(","));
    let link = Link::new(&[]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("daemon.log");
    let mut cmd = link.pbx.command("setpriv");
    cmd.args([
        "--bounding-set",
        &bounding,
        "--inh-caps=-all",
        "--no-new-privs",
        "/usr/sbin/sip-filter",
        "run",
        "--iface",
        &link.pbx_if,
        "--config",
        "/etc/sip-filter/sip-filter.toml",
    ])
    .env("NO_COLOR", "1");
    // systemd's readiness protocol, as Type=notify uses it: READY=1 on $NOTIFY_SOCKET.
    let notify_path = tmp.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    cmd.env("NOTIFY_SOCKET", &notify_path);
    let mut daemon = Proc::spawn(cmd, &log).unwrap();
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_for(Duration::from_secs(20), || read()
            .contains("sip-filter attached")),
        "the confined daemon did not attach ({bounding}):\n{}",
        read()
    );
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("a readiness notification");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.contains("READY=1"), "{msg}");
    assert!(
        read().contains("sip-filter attached"),
        "ready only once attached:\n{}",
        read()
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
    let bnd = status.lines().find(|l| l.starts_with("CapBnd:")).unwrap();
    assert_ne!(
        bnd.trim_end(),
        "CapBnd:\t000001ffffffffff",
        "it really ran confined"
    );
    let _pbx = Responder::start(&link.pbx).unwrap();
    let attacker = Client::new(&link.client, "203.0.113.10:0").unwrap();
    for _ in 0..6 {
        attacker.register(PBX_V4, Creds::Bad);
    }
    assert_eq!(attacker.register(PBX_V4, Creds::Bad), None, "banned");
    assert!(
        wait_for(Duration::from_secs(5), || read()
            .contains("banned 203.0.113.10")),
        "{}",
        read()
    );
    assert!(Path::new(&format!("/var/lib/sip-filter/{}.db", link.pbx_if)).exists());
    daemon.signal(libc::SIGTERM);
    daemon.wait_exit(Duration::from_secs(5)).unwrap();

    // Purge with the filter still attached: it is detached, its state forgotten.
    let pins = Path::new("/sys/fs/bpf/sip-filter").join(&link.pbx_if);
    assert!(pins.exists());
    drop(guard);
    assert!(!installed(), "purged");
    for gone in [
        "/usr/sbin/sip-filter",
        "/etc/sip-filter",
        "/etc/default/sip-filter",
        "/var/lib/sip-filter",
        "/usr/lib/systemd/system/sip-filter@.service",
        "/usr/lib/systemd/system/sip-filter@.service.d",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} left behind by purge");
    }
    assert!(
        !pins.exists(),
        "the filter was detached before the binary went"
    );
    let xdp = link
        .pbx
        .exec("ip", &["link", "show", "dev", &link.pbx_if])
        .unwrap();
    assert!(!xdp.contains("xdp"), "no XDP program left: {xdp}");
}
