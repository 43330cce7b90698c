//! Builds the kernel programs (svc-ebpf) for the BPF target with the dated
//! nightly named in svc-ebpf/rust-toolchain.toml, through aya-build, and puts
//! the object in OUT_DIR for `include_bytes_aligned!`.
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, anyhow, bail};

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir
        .parent()
        .ok_or_else(|| anyhow!("svc-agent has no parent directory"))?;
    let ebpf_dir = workspace.join("svc-ebpf");
    let common_dir = workspace.join("svc-common");
    println!("cargo:rerun-if-changed={}", common_dir.display());
    println!("cargo:rerun-if-env-changed=SVC_TOOLCHAIN_DIR");
    // xtask builds the previous commit's agent from another tree into
    // this checkout's target directory, where both trees' svc-agent share
    // one OUT_DIR (cargo hashes a path package by its path inside its
    // workspace): the variable it sets for that build changes between the
    // two, so each build makes its own tree's kernel object again.
    println!("cargo:rerun-if-env-changed=SVC_PREVIOUS_COMMIT");

    let toolchain = ebpf_toolchain(&ebpf_dir)?;
    let tools = env::var_os("SVC_TOOLCHAIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join(".svc-toolchain"));
    let linker_dir = tools.join("bin");
    if !linker_dir.join("bpf-linker").is_file() {
        bail!(
            "bpf-linker is not installed in {}: run `cargo xtask setup` first \
             (it installs {toolchain} and builds bpf-linker against its LLVM)",
            linker_dir.display()
        );
    }
    let installed = Command::new("rustup")
        .args(["run", &toolchain, "rustc", "--version"])
        .output()
        .map(|out| out.status.success())
        .unwrap_or(false);
    if !installed {
        bail!("the eBPF toolchain {toolchain} is not installed: run `cargo xtask setup` first");
    }
    println!(
        "cargo:rerun-if-changed={}",
        linker_dir.join("bpf-linker").display()
    );

    // The eBPF build (a child cargo) finds bpf-linker on PATH.
    let path = env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![linker_dir];
    paths.extend(env::split_paths(&path));
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { env::set_var("PATH", env::join_paths(paths)?) };

    let root_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "svc-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
    .context("building the eBPF programs (svc-ebpf)")
}

/// The channel in svc-ebpf/rust-toolchain.toml: the one place it is named.
fn ebpf_toolchain(ebpf_dir: &Path) -> anyhow::Result<String> {
    let file = ebpf_dir.join("rust-toolchain.toml");
    println!("cargo:rerun-if-changed={}", file.display());
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|value| value.trim().trim_matches('"').to_owned())
        .next()
        .ok_or_else(|| anyhow!("no `channel = \"...\"` in {}", file.display()))
}
