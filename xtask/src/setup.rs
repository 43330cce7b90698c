//! `cargo xtask setup`: installs what is missing and nothing else, quickly
//! when everything is present. Where it cannot install, it stops with one
//! message saying what is missing and how to get it.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::run;

/// bpf-linker release the eBPF build links with.
const BPF_LINKER_VERSION: &str = "0.13.0";
/// TCX links (the TC attach point used) appeared in Linux 6.6.
const MIN_KERNEL: (u32, u32) = (6, 6);
/// Commands the tests and the lab run, and the Debian package of each.
const PACKAGES: [(&str, &str); 9] = [
    ("ip", "iproute2"),
    ("ethtool", "ethtool"),
    ("bpftool", "bpftool"),
    ("curl", "curl"),
    ("mount", "mount"),
    // A UDP client that prints the source of replies, in node tests.
    ("python3", "python3"),
    // `cargo xtask bench kube-proxy` loads kube-proxy's rule sets with both
    // iptables backends and with nft.
    ("iptables-legacy-restore", "iptables"),
    ("iptables-nft-restore", "iptables"),
    ("nft", "nftables"),
];

/// What the other tasks need to know about the installed tools.
pub struct Tools {
    /// Holds bin/bpf-linker (svc-agent's build.rs reads it as SVC_TOOLCHAIN_DIR).
    pub dir: PathBuf,
    pub ebpf_toolchain: String,
}

pub fn install(root: &Path) -> anyhow::Result<Tools> {
    check_kernel()?;
    install_packages()?;
    let ebpf_toolchain = ebpf_toolchain(root)?;
    install_toolchain(&ebpf_toolchain)?;
    let dir = root.join(".svc-toolchain");
    install_bpf_linker(&dir, &ebpf_toolchain)?;
    Ok(Tools {
        dir,
        ebpf_toolchain,
    })
}

pub fn require_root(why: &str) -> anyhow::Result<()> {
    if !is_root() {
        bail!("run as root: {why}");
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

fn check_kernel() -> anyhow::Result<()> {
    let release =
        fs::read_to_string("/proc/sys/kernel/osrelease").context("reading the kernel release")?;
    let mut parts = release.trim().split(['.', '-']);
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    if (major, minor) < MIN_KERNEL {
        bail!(
            "Linux {}.{} or newer is needed (TCX links); this kernel is {}",
            MIN_KERNEL.0,
            MIN_KERNEL.1,
            release.trim()
        );
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!(
            "this kernel has no BTF (/sys/kernel/btf/vmlinux): boot one built with CONFIG_DEBUG_INFO_BTF=y"
        );
    }
    Ok(())
}

fn on_path(command: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|dir| dir.join(command).is_file())
}

fn install_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(command, _)| !on_path(command))
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() || !on_path("apt-get") {
        bail!(
            "missing packages: {}. Install them (as root on Debian/Ubuntu: apt-get install {})",
            missing.join(", "),
            missing.join(" ")
        );
    }
    println!("xtask setup: installing {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing))
}

/// The channel named in svc-ebpf/rust-toolchain.toml.
fn ebpf_toolchain(root: &Path) -> anyhow::Result<String> {
    let file = root.join("svc-ebpf/rust-toolchain.toml");
    let text = fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|value| value.trim().trim_matches('"').to_owned())
        .next()
        .with_context(|| format!("no `channel = \"...\"` in {}", file.display()))
}

fn rustup(toolchain: &str) -> Command {
    let mut command = Command::new("rustup");
    // Cargo sets these for xtask; they would override the toolchain asked for.
    command
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("CARGO");
    command.args(["run", toolchain]);
    command
}

fn install_toolchain(toolchain: &str) -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", toolchain])
        .output()
        .map(|out| {
            let list = String::from_utf8_lossy(&out.stdout);
            out.status.success()
                && list.lines().any(|l| l.starts_with("rust-src"))
                && list.lines().any(|l| l.starts_with("clippy"))
        })
        .unwrap_or(false);
    if installed {
        return Ok(());
    }
    println!("xtask setup: installing {toolchain} with rust-src and clippy");
    run(Command::new("rustup").args([
        "toolchain",
        "install",
        toolchain,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
        "--component",
        "clippy",
    ]))
    .context("installing the eBPF toolchain (rustup must reach its distribution server)")
}

/// bpf-linker must use the same LLVM as the nightly that emits the bitcode,
/// so it is built against that nightly's own libLLVM (a link directory in
/// `dir/llvm/lib` stands in for an LLVM install) with the matching feature.
fn install_bpf_linker(dir: &Path, toolchain: &str) -> anyhow::Result<()> {
    let version = String::from_utf8(
        rustup(toolchain)
            .args(["rustc", "-vV"])
            .output()
            .context("running the eBPF toolchain's rustc")?
            .stdout,
    )?;
    let llvm_major = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("the eBPF toolchain's rustc does not report its LLVM version")?
        .to_owned();
    let sysroot = String::from_utf8(
        rustup(toolchain)
            .args(["rustc", "--print", "sysroot"])
            .output()?
            .stdout,
    )?;
    let sysroot_lib = PathBuf::from(sysroot.trim()).join("lib");
    let libllvm: Vec<PathBuf> = fs::read_dir(&sysroot_lib)
        .with_context(|| format!("listing {}", sysroot_lib.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libLLVM"))
        })
        .collect();
    let Some(soname) = libllvm
        .iter()
        .find(|p| p.to_string_lossy().contains("libLLVM.so."))
        .or_else(|| libllvm.first())
        .cloned()
    else {
        bail!("{toolchain} ships no libLLVM in {}", sysroot_lib.display());
    };

    let stamp_path = dir.join("bpf-linker.stamp");
    let stamp = format!(
        "bpf-linker {BPF_LINKER_VERSION} llvm-{llvm_major} {}\n",
        soname.display()
    );
    let linker = dir.join("bin/bpf-linker");
    let works = Command::new(&linker)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if works && fs::read_to_string(&stamp_path).ok().as_deref() == Some(stamp.as_str()) {
        return Ok(());
    }

    println!(
        "xtask setup: building bpf-linker {BPF_LINKER_VERSION} against {toolchain}'s LLVM {llvm_major}"
    );
    let llvm_lib = dir.join("llvm/lib");
    if llvm_lib.exists() {
        fs::remove_dir_all(&llvm_lib)?;
    }
    fs::create_dir_all(&llvm_lib)?;
    for file in &libllvm {
        if let Some(name) = file.file_name() {
            std::os::unix::fs::symlink(file, llvm_lib.join(name))?;
        }
    }
    std::os::unix::fs::symlink(&soname, llvm_lib.join("libLLVM.so"))?;
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .env("LLVM_PREFIX", dir.join("llvm"))
            .args([
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
            ])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{llvm_major}"),
            ])
            .arg("--root")
            .arg(dir)
            .arg("--target-dir")
            .arg(dir.join("build")),
    )
    .context("building bpf-linker")?;
    fs::write(&stamp_path, stamp)?;
    Ok(())
}
