use std::process::Command;

/// Rebuild the eBPF object when bpf-linker changes (it is the eBPF crate's linker).
fn main() {
    if let Ok(out) = Command::new("which").arg("bpf-linker").output()
        && out.status.success()
    {
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        println!("cargo:rerun-if-changed={path}");
    }
}
