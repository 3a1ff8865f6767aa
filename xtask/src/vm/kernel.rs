//! Fetching Debian 12's cloud kernel (6.1) and picking its modules.
//!
//! The kernel is Debian's own package, downloaded with `apt-get download`
//! (the only kernel source reachable from this machine), cached under
//! `target/vm/` and unpacked once.

use std::{
    collections::{BTreeMap, HashSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::util::{output, run};

const PACKAGE_PREFIX: &str = "linux-image-";
const PACKAGE_SUFFIX: &str = "-cloud-amd64-unsigned";
const PACKAGE_SEARCH: &str = r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$";

pub struct Kernel {
    pub package: String,
    /// `uname -r` of the kernel, e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// The unpacked package.
    root: PathBuf,
}

/// A module's (decompressed) object file.
pub struct Module {
    pub name: String,
    pub object: Vec<u8>,
}

/// Finds, downloads and unpacks the kernel. `requested` is `auto` (newest
/// 6.1 cloud kernel apt knows), `6.1.0-N`, `6.1.0-N-cloud-amd64` or a full
/// package name.
pub fn prepare(requested: &str, cache: &Path) -> Result<Kernel> {
    fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    let package = resolve_package(requested, cache)?;
    let root = ensure_unpacked(&package, cache)?;
    let (vmlinuz, release) = find_vmlinuz(&root)?;
    Ok(Kernel {
        package,
        release,
        vmlinuz,
        root,
    })
}

fn package_name(requested: &str) -> String {
    if requested.starts_with(PACKAGE_PREFIX) {
        return requested.to_string();
    }
    let version = requested.trim_end_matches("-cloud-amd64");
    format!("{PACKAGE_PREFIX}{version}{PACKAGE_SUFFIX}")
}

/// The ABI number N of `linux-image-6.1.0-N-cloud-amd64-unsigned`, for sorting.
fn abi_number(package: &str) -> Option<u32> {
    package
        .strip_prefix("linux-image-6.1.0-")?
        .strip_suffix(PACKAGE_SUFFIX)?
        .parse()
        .ok()
}

fn newest(packages: impl IntoIterator<Item = String>) -> Option<String> {
    packages
        .into_iter()
        .filter_map(|p| abi_number(&p).map(|n| (n, p)))
        .max()
        .map(|(_, p)| p)
}

fn apt_search() -> Result<Vec<String>> {
    let out = output(Command::new("apt-cache").args(["search", "--names-only", PACKAGE_SEARCH]))?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

fn cached_packages(cache: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(cache) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| cache.join(name).join("boot").is_dir())
        .collect()
}

fn resolve_package(requested: &str, cache: &Path) -> Result<String> {
    if requested != "auto" {
        return Ok(package_name(requested));
    }
    let mut found = apt_search()?;
    if found.is_empty() {
        // A fresh machine has no package lists yet.
        run(Command::new("apt-get").arg("update"))?;
        found = apt_search()?;
    }
    if let Some(p) = newest(found) {
        return Ok(p);
    }
    // Offline, but an earlier run left a kernel behind: good enough.
    newest(cached_packages(cache))
        .context("apt knows no linux-image-6.1.0-N-cloud-amd64-unsigned package")
}

fn ensure_unpacked(package: &str, cache: &Path) -> Result<PathBuf> {
    let root = cache.join(package);
    if root.join("boot").is_dir() {
        return Ok(root);
    }
    let deb = download(package, cache)?;
    // Unpack beside the final place and rename, so that an interrupted run
    // never leaves a half-unpacked tree that looks complete.
    let partial = cache.join(format!("{package}.partial"));
    if partial.exists() {
        fs::remove_dir_all(&partial).with_context(|| format!("removing {}", partial.display()))?;
    }
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
    fs::rename(&partial, &root).with_context(|| format!("renaming to {}", root.display()))?;
    Ok(root)
}

fn find_deb(package: &str, cache: &Path) -> Option<PathBuf> {
    let prefix = format!("{package}_");
    fs::read_dir(cache).ok()?.find_map(|e| {
        let name = e.ok()?.file_name().into_string().ok()?;
        (name.starts_with(&prefix) && name.ends_with(".deb")).then(|| cache.join(name))
    })
}

fn download(package: &str, cache: &Path) -> Result<PathBuf> {
    if let Some(deb) = find_deb(package, cache) {
        return Ok(deb);
    }
    eprintln!("xtask: downloading {package}");
    run(Command::new("apt-get")
        .args(["download", package])
        .current_dir(cache))
    .with_context(|| format!("downloading {package} (try `--kernel-version auto`)"))?;
    find_deb(package, cache).with_context(|| format!("apt-get download left no {package}_*.deb"))
}

fn find_vmlinuz(root: &Path) -> Result<(PathBuf, String)> {
    let boot = root.join("boot");
    for entry in fs::read_dir(&boot).with_context(|| format!("reading {}", boot.display()))? {
        let name = entry?.file_name().into_string().unwrap_or_default();
        if let Some(release) = name.strip_prefix("vmlinuz-") {
            return Ok((boot.join(&name), release.to_string()));
        }
    }
    bail!("no vmlinuz-* in {}", boot.display())
}

impl Kernel {
    fn modules_dir(&self) -> Result<PathBuf> {
        ["lib/modules", "usr/lib/modules"]
            .iter()
            .map(|d| self.root.join(d).join(&self.release))
            .find(|d| d.is_dir())
            .with_context(|| format!("no module directory for {}", self.release))
    }

    /// The named modules and everything they depend on, in load order.
    /// Names in `optional` are included when the kernel has them as modules
    /// (a built-in or absent feature needs no insmod).
    pub fn modules(&self, required: &[&str], optional: &[&str]) -> Result<Vec<Module>> {
        let index = module_index(&self.modules_dir()?)?;
        let mut loader = Loader {
            index: &index,
            seen: HashSet::new(),
            ordered: Vec::new(),
        };
        for name in required {
            if !index.contains_key(&normalize(name)) {
                bail!("kernel {} has no module {name}", self.release);
            }
            loader.add(&normalize(name))?;
        }
        for name in optional {
            if index.contains_key(&normalize(name)) {
                loader.add(&normalize(name))?;
            }
        }
        Ok(loader.ordered)
    }
}

/// Module names use `_` and `-` interchangeably; the kernel reports `_`.
fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

fn module_name(file_name: &str) -> Option<String> {
    let stem = ["", ".xz", ".zst", ".gz"]
        .iter()
        .find_map(|ext| file_name.strip_suffix(&format!(".ko{ext}")))?;
    Some(normalize(stem))
}

/// Module name -> file, for every module under `dir`.
fn module_index(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut index = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(module_name)
            {
                index.insert(name, path);
            }
        }
    }
    Ok(index)
}

struct Loader<'a> {
    index: &'a BTreeMap<String, PathBuf>,
    seen: HashSet<String>,
    ordered: Vec<Module>,
}

impl Loader<'_> {
    /// Depth-first, so that a module comes after its dependencies.
    fn add(&mut self, name: &str) -> Result<()> {
        if !self.seen.insert(name.to_string()) {
            return Ok(());
        }
        let path = self
            .index
            .get(name)
            .with_context(|| format!("module {name} is needed but not in the kernel package"))?;
        let object = read_module(path)?;
        for dep in depends(&object) {
            self.add(&normalize(&dep))?;
        }
        self.ordered.push(Module {
            name: name.to_string(),
            object,
        });
        Ok(())
    }
}

/// Reads a module, decompressing it: busybox's insmod may lack xz/zstd support.
fn read_module(path: &Path) -> Result<Vec<u8>> {
    let tool = match path.extension().and_then(|e| e.to_str()) {
        Some("ko") => return fs::read(path).with_context(|| format!("reading {}", path.display())),
        Some("xz") => "xz",
        Some("zst") => "zstd",
        Some("gz") => "gzip",
        _ => bail!("unknown module format: {}", path.display()),
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("running {tool} -dc {}", path.display()))?;
    if !out.status.success() {
        bail!("{tool} -dc {} failed ({})", path.display(), out.status);
    }
    Ok(out.stdout)
}

/// The `depends=` entry of a module's `.modinfo` section (NUL-separated
/// `key=value` strings), read without needing kmod's modinfo on the host.
fn depends(object: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(start) = object.windows(KEY.len()).position(|w| w == KEY) else {
        return Vec::new();
    };
    let value = &object[start + KEY.len()..];
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end])
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_newest_abi_numerically() {
        let pkgs = [
            "linux-image-6.1.0-9-cloud-amd64-unsigned",
            "linux-image-6.1.0-56-cloud-amd64-unsigned",
        ];
        assert_eq!(
            newest(pkgs.map(String::from)).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64-unsigned")
        );
    }

    #[test]
    fn package_names() {
        let want = "linux-image-6.1.0-50-cloud-amd64-unsigned";
        assert_eq!(package_name("6.1.0-50"), want);
        assert_eq!(package_name("6.1.0-50-cloud-amd64"), want);
        assert_eq!(package_name(want), want);
    }

    #[test]
    fn reads_depends() {
        assert_eq!(depends(b"x\0depends=a,b-c\0vermagic=6.1"), ["a", "b-c"]);
        assert!(depends(b"x\0depends=\0vermagic=6.1").is_empty());
    }

    #[test]
    fn module_names() {
        assert_eq!(
            module_name("sch_ingress.ko").as_deref(),
            Some("sch_ingress")
        );
        assert_eq!(module_name("nf-tables.ko.xz").as_deref(), Some("nf_tables"));
        assert_eq!(module_name("modules.dep"), None);
    }
}
