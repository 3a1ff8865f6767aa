//! Builds the eBPF object (sip-filter-ebpf) for bpfel-unknown-none with the nightly toolchain
//! and bpf-linker; `cargo xtask setup` installs both.
fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../sip-filter-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "sip-filter-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
