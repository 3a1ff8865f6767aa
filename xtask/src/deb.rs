//! `cargo xtask deb`: the Debian package, built by cargo-deb from `[package.metadata.deb]` in
//! sip-filter/Cargo.toml. The man pages and completions are generated from the release binary's
//! clap definitions first, into target/release/deb-assets (cargo-deb finds the target directory by that prefix), where the metadata's assets point.
use std::{fs, path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::util::{build_release_daemon, cargo, run, workspace_root};

/// Builds the package; returns its path.
pub fn build() -> Result<PathBuf> {
    let root = workspace_root();
    build_release_daemon()?;
    let bin = root.join("target/release/sip-filter");
    let assets = root.join("target/release/deb-assets");
    let _ = fs::remove_dir_all(&assets);
    let man = assets.join("man");
    run(Command::new(&bin).args(["man", "--dir"]).arg(&man))?;
    run(Command::new("gzip")
        .args(["-9n", "--force"])
        .args(fs::read_dir(&man)?.filter_map(|e| e.ok()).map(|e| e.path())))?;
    let completions = assets.join("completions");
    fs::create_dir_all(&completions)?;
    for (shell, file) in [
        ("bash", "sip-filter.bash"),
        ("zsh", "_sip-filter"),
        ("fish", "sip-filter.fish"),
    ] {
        let out = Command::new(&bin)
            .args(["completions", shell])
            .output()
            .with_context(|| format!("running {}", bin.display()))?;
        if !out.status.success() {
            bail!("sip-filter completions {shell} failed");
        }
        fs::write(completions.join(file), out.stdout)?;
    }
    let out_dir = root.join("target/debian");
    let _ = fs::remove_dir_all(&out_dir);
    run(cargo()
        .args(["deb", "-p", "sip-filter", "--no-build", "--output"])
        .arg(&out_dir))?;
    let deb = fs::read_dir(&out_dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("cargo deb wrote no .deb")?;
    Ok(deb)
}
