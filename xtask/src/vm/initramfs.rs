//! The VM's initramfs: busybox, the test binaries and the programs they run
//! (with their shared libraries), the kernel modules and an `/init` that runs
//! the test binaries in turn and reports each one.
//!
//! Layout: the test binaries in `/xtask/deps/`, other programs (the
//! `sip-filter` binary) in `/xtask/`, as in cargo's target directory, since
//! the control tests look for `sip-filter` at `<test exe dir>/../sip-filter`.
//!
//! The newc cpio archive is written here rather than with cpio(1) so that
//! `/dev/console` can be a device node without mknod (and root) on the host:
//! without it the kernel starts `/init` with no stdout.

use std::{
    collections::HashSet,
    fs::File,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use super::{RELEASE_MARKER, RESULT_MARKER, START_MARKER, TestBinary, kernel::Module};
use crate::util::output;

const BUSYBOX: &str = "/bin/busybox";
const MODULE_DIR: &str = "lib/modules/xtask";
const PROGRAM_DIR: &str = "xtask";
const TEST_DIR: &str = "xtask/deps";

pub struct Contents<'a> {
    /// Run in this order, each with `--test-threads=1` and `args`.
    pub tests: &'a [TestBinary],
    /// Programs the tests run, next to the test directory.
    pub programs: &'a [PathBuf],
    /// Host programs that replace busybox's applets of the same name; they
    /// keep their host path (e.g. `/usr/sbin/ip`).
    pub tools: &'a [PathBuf],
    pub args: &'a [String],
    pub modules: &'a [Module],
}

/// Writes the gzip-compressed initramfs to `out`.
pub fn build(out: &Path, contents: &Contents) -> Result<()> {
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut gzip = Command::new("gzip")
        .arg("-1")
        .stdin(Stdio::piped())
        .stdout(file)
        .spawn()
        .context("starting gzip")?;
    let stdin = gzip.stdin.take().expect("stdin is piped");
    let mut cpio = Cpio::new(BufWriter::new(stdin));
    write_contents(&mut cpio, contents)?;
    cpio.finish()?.into_inner().map_err(|e| e.into_error())?;
    let status = gzip.wait().context("waiting for gzip")?;
    if !status.success() {
        bail!("gzip failed ({status})");
    }
    Ok(())
}

fn write_contents<W: Write>(cpio: &mut Cpio<W>, contents: &Contents) -> Result<()> {
    for dir in ["proc", "sys", "dev", "tmp", "run", "root", "etc"] {
        cpio.dir(dir)?;
    }
    cpio.char_device("dev/console", 5, 1)?;
    cpio.char_device("dev/null", 1, 3)?;
    let replaced: HashSet<&str> = contents
        .tools
        .iter()
        .filter_map(|t| t.file_name()?.to_str())
        .collect();
    add_busybox(cpio, &replaced)?;
    for tool in contents.tools {
        let inside = host_path_inside(tool);
        add_with_libraries(cpio, tool, &inside)?;
    }
    for test in contents.tests {
        add_with_libraries(cpio, &test.path, &in_dir(TEST_DIR, &test.path)?)?;
    }
    for program in contents.programs {
        add_with_libraries(cpio, program, &in_dir(PROGRAM_DIR, program)?)?;
    }
    for module in contents.modules {
        cpio.file(
            &format!("{MODULE_DIR}/{}.ko", module.name),
            0o644,
            &module.object,
        )?;
    }
    let init = init_script(contents)?;
    cpio.file("init", 0o755, init.as_bytes())?;
    Ok(())
}

/// Busybox plus a symlink for each applet, so that the init script and any
/// test that shells out find `mount` and friends on PATH; applets named in
/// `replaced` are left out for the host's real programs.
fn add_busybox<W: Write>(cpio: &mut Cpio<W>, replaced: &HashSet<&str>) -> Result<()> {
    cpio.file_from_host(&BUSYBOX[1..], 0o755, Path::new(BUSYBOX))?;
    let applets = output(Command::new(BUSYBOX).arg("--list-full"))?;
    for applet in applets.lines().map(str::trim).filter(|a| !a.is_empty()) {
        let name = applet.rsplit('/').next().unwrap_or(applet);
        if applet != &BUSYBOX[1..] && !replaced.contains(name) {
            cpio.symlink(applet, BUSYBOX)?;
        }
    }
    Ok(())
}

/// `dir/<file name of binary>`.
fn in_dir(dir: &str, binary: &Path) -> Result<String> {
    let name = binary
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("odd binary name: {}", binary.display()))?;
    Ok(format!("{dir}/{name}"))
}

/// A host path as an archive member name (no leading `/`).
fn host_path_inside(path: &Path) -> String {
    path.to_string_lossy().trim_start_matches('/').to_string()
}

/// Copies `binary` to `dest` and the shared libraries `ldd` lists (loader
/// included) to their own paths; a library several binaries share is
/// written once.
fn add_with_libraries<W: Write>(cpio: &mut Cpio<W>, binary: &Path, dest: &str) -> Result<()> {
    cpio.file_from_host(dest, 0o755, binary)?;
    for lib in shared_libraries(binary)? {
        let inside = host_path_inside(&lib);
        if !cpio.contains(&inside) {
            cpio.file_from_host(&inside, 0o755, &lib)?;
        }
    }
    Ok(())
}

fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // Static binaries make ldd fail with this message; nothing to copy.
        if String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
            || text.contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        bail!("ldd {} failed ({})", binary.display(), out.status);
    }
    parse_ldd(&text).with_context(|| format!("ldd {}", binary.display()))
}

/// `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` and
/// `/lib64/ld-linux-x86-64.so.2 (0x...)`; the vDSO has no path.
fn parse_ldd(text: &str) -> Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in text.lines() {
        if line.contains("not found") {
            bail!("missing shared library: {}", line.trim());
        }
        libs.extend(
            line.split_whitespace()
                .filter(|w| w.starts_with('/'))
                .map(PathBuf::from),
        );
    }
    Ok(libs)
}

fn shell_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

fn init_script(contents: &Contents) -> Result<String> {
    let mut runs = String::new();
    for test in contents.tests {
        runs.push_str(&format!(
            "run_tests {} /{} --test-threads=1",
            shell_quote(&test.name),
            in_dir(TEST_DIR, &test.path)?
        ));
        for arg in contents.args {
            runs.push(' ');
            runs.push_str(&shell_quote(arg));
        }
        runs.push('\n');
    }
    let modules: Vec<&str> = contents.modules.iter().map(|m| m.name.as_str()).collect();
    Ok(format!(
        r#"#!/bin/sh
# Written by `cargo xtask vm`.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root RUST_BACKTRACE=1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t bpf bpf /sys/fs/bpf
mount -t tmpfs tmpfs /tmp
# `ip netns add` bind-mounts namespaces under /run/netns; the daemon keeps its pid file in /run.
mount -t tmpfs tmpfs /run
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
ip link set lo up
echo "{RELEASE_MARKER}$(uname -r)"
for m in {modules}; do
    insmod /{MODULE_DIR}/$m.ko || echo "xtask-vm: insmod $m failed (built in or already loaded?)"
done
cd /
# run_tests NAME COMMAND...: the markers let the host attribute each
# binary's output, exit code and time.
run_tests() {{
    name=$1
    shift
    echo "{START_MARKER}$name"
    "$@"
    echo "{RESULT_MARKER}$name $?"
}}
{runs}# Let the serial port drain: poweroff does not wait for it.
sleep 1
poweroff -f
"#,
        modules = modules.join(" "),
    ))
}

/// Minimal writer for the "newc" cpio format the kernel unpacks.
struct Cpio<W: Write> {
    out: W,
    next_ino: u32,
    dirs: HashSet<String>,
    /// Everything written but directories.
    names: HashSet<String>,
}

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

impl<W: Write> Cpio<W> {
    fn new(out: W) -> Self {
        Self {
            out,
            next_ino: 1,
            dirs: HashSet::new(),
            names: HashSet::new(),
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.names.contains(name) || self.dirs.contains(name)
    }

    fn header(&mut self, name: &str, mode: u32, size: u64, rdev: (u32, u32)) -> io::Result<()> {
        let size =
            u32::try_from(size).map_err(|_| io::Error::other(format!("{name} is over 4 GiB")))?;
        if mode & S_IFMT != S_IFDIR && !self.names.insert(name.to_string()) {
            return Err(io::Error::other(format!("{name} is in the archive twice")));
        }
        let name_size = name.len() + 1;
        let ino = self.next_ino;
        self.next_ino += 1;
        write!(
            self.out,
            "070701{ino:08x}{mode:08x}{uid:08x}{gid:08x}{nlink:08x}{mtime:08x}{size:08x}\
             {dev_major:08x}{dev_minor:08x}{rmaj:08x}{rmin:08x}{name_size:08x}{check:08x}",
            uid = 0,
            gid = 0,
            nlink = 1,
            mtime = 0,
            dev_major = 0,
            dev_minor = 0,
            rmaj = rdev.0,
            rmin = rdev.1,
            check = 0,
        )?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        // The 110-byte header plus the name is padded to a multiple of 4.
        self.pad(110 + name_size as u64)
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        let padding = (4 - len % 4) % 4;
        self.out.write_all(&[0; 3][..padding as usize])
    }

    /// The kernel does not create missing parents, so every file's parent
    /// directories are written first.
    fn parents(&mut self, name: &str) -> io::Result<()> {
        if let Some((parent, _)) = name.rsplit_once('/') {
            self.dir(parent)?;
        }
        Ok(())
    }

    fn dir(&mut self, name: &str) -> io::Result<()> {
        if self.dirs.contains(name) {
            return Ok(());
        }
        self.parents(name)?;
        self.dirs.insert(name.to_string());
        self.header(name, S_IFDIR | 0o755, 0, (0, 0))
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.parents(name)?;
        self.header(name, S_IFREG | perm, data.len() as u64, (0, 0))?;
        self.out.write_all(data)?;
        self.pad(data.len() as u64)
    }

    /// Streams a host file (following symlinks) into the archive.
    fn file_from_host(&mut self, name: &str, perm: u32, host: &Path) -> Result<()> {
        let mut src = File::open(host).with_context(|| format!("opening {}", host.display()))?;
        let size = src.metadata()?.len();
        self.parents(name)?;
        self.header(name, S_IFREG | perm, size, (0, 0))?;
        let copied = io::copy(&mut src, &mut self.out)
            .with_context(|| format!("copying {}", host.display()))?;
        if copied != size {
            bail!("{} changed size while being copied", host.display());
        }
        Ok(self.pad(size)?)
    }

    fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        self.parents(name)?;
        self.header(name, S_IFLNK | 0o777, target.len() as u64, (0, 0))?;
        self.out.write_all(target.as_bytes())?;
        self.pad(target.len() as u64)
    }

    fn char_device(&mut self, name: &str, major: u32, minor: u32) -> io::Result<()> {
        self.parents(name)?;
        self.header(name, S_IFCHR | 0o600, 0, (major, minor))
    }

    fn finish(mut self) -> io::Result<W> {
        self.header("TRAILER!!!", 0, 0, (0, 0))?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ldd_output() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f3c)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f3c)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
        assert!(parse_ldd("\tlibfoo.so => not found\n").is_err());
    }

    #[test]
    fn init_runs_each_binary_with_the_args() {
        let tests = ["fixtures", "control"].map(|n| TestBinary {
            name: n.to_string(),
            path: PathBuf::from(format!("/t/debug/deps/{n}-abc")),
        });
        let args = ["ban it".to_string()];
        let contents = Contents {
            tests: &tests,
            programs: &[],
            tools: &[],
            args: &args,
            modules: &[],
        };
        let init = init_script(&contents).unwrap();
        let f = init
            .find("run_tests 'fixtures' /xtask/deps/fixtures-abc --test-threads=1 'ban it'\n")
            .unwrap();
        let c = init
            .find("run_tests 'control' /xtask/deps/control-abc --test-threads=1 'ban it'\n")
            .unwrap();
        assert!(f < c && c < init.find("poweroff -f").unwrap());
        assert!(init.contains(&format!("echo \"{RESULT_MARKER}$name $?\"")));
    }

    #[test]
    fn cpio_refuses_a_name_twice() {
        let mut cpio = Cpio::new(Vec::new());
        cpio.file("a/b", 0o644, b"1").unwrap();
        cpio.dir("a").unwrap();
        assert!(cpio.contains("a/b"));
        assert!(cpio.file("a/b", 0o644, b"2").is_err());
    }

    #[test]
    fn quotes_arguments() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn cpio_entries_are_aligned() {
        let mut cpio = Cpio::new(Vec::new());
        cpio.file("a/bc", 0o644, b"hello").unwrap();
        let out = cpio.finish().unwrap();
        assert_eq!(out.len() % 4, 0);
        assert!(out.starts_with(b"070701"));
        // The parent directory "a" comes first, then the file.
        let text = String::from_utf8_lossy(&out);
        assert!(text.find("a\0").unwrap() < text.find("a/bc\0").unwrap());
    }
}
