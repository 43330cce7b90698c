//! Project tasks. `cargo xtask setup` runs first in every other task.
mod apiserver;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what is missing: the eBPF nightly, bpf-linker built against
    /// its LLVM, and the Debian packages the tests use.
    Setup,
    /// Run every test (needs root: BPF and network namespaces), then check
    /// that nothing of ours was left behind.
    Test {
        /// Passed to `cargo test` (e.g. a test name filter after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build (once; cached in /var/cache/svc-lb by package version) the
    /// kube-apiserver the real API server tests run, from Debian's
    /// `kubernetes` source package.
    Apiserver,
    /// rustfmt check, and clippy with -D warnings on the workspace and on
    /// svc-ebpf for the BPF target.
    Lint,
    /// Build and run the demo: a one-node lab, curl through a ClusterIP, and
    /// the tables the kernel holds.
    Demo,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = workspace_root()?;
    let tools = setup::install(&root)?;
    match cli.command {
        Task::Setup => Ok(()),
        Task::Test { args } => test(&root, &tools, &args),
        Task::Apiserver => apiserver::ensure().map(|_| ()),
        Task::Lint => lint(&root, &tools),
        Task::Demo => demo(&root),
    }
}

fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .context("xtask has no parent directory")
}

/// Runs a command to completion, failing with its rendering if it fails.
pub fn run(command: &mut Command) -> anyhow::Result<()> {
    let rendered = format!("{command:?}");
    let status = command
        .status()
        .with_context(|| format!("starting {rendered}"))?;
    if !status.success() {
        bail!("{rendered} failed ({status})");
    }
    Ok(())
}

fn cargo(root: &Path) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root);
    command
}

fn test(root: &Path, tools: &setup::Tools, args: &[String]) -> anyhow::Result<()> {
    setup::require_root("the tests load BPF programs and create network namespaces")?;
    // The real API server tier must run here, not skip.
    let kube_apiserver = apiserver::ensure()?;
    let mut command = cargo(root);
    command
        .env("SVC_TOOLCHAIN_DIR", &tools.dir)
        .env("SVC_KUBE_APISERVER", &kube_apiserver)
        .env("SVC_REQUIRE_APISERVER", "1")
        .args(["test", "--workspace", "--exclude", "svc-ebpf"])
        .args(args);
    let result = run_counting_tests(&mut command);
    let leftovers = leftovers_after_settling();
    let totals = result?;
    if !leftovers.is_empty() {
        bail!("the tests left behind: {}", leftovers.join(", "));
    }
    println!("no namespace, pin or program of ours is left behind");
    println!(
        "tests: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    Ok(())
}

#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

/// Runs `cargo test`, echoing its output, and adds up the per-binary
/// `test result:` lines into one closing count.
fn run_counting_tests(command: &mut Command) -> anyhow::Result<Totals> {
    use std::io::{BufRead as _, BufReader};
    let rendered = format!("{command:?}");
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {rendered}"))?;
    let mut totals = Totals::default();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            println!("{line}");
            if let Some(summary) = line.strip_prefix("test result: ") {
                for part in summary.split([';', '.']) {
                    let mut words = part.split_whitespace();
                    let (Some(count), Some(what)) = (words.next(), words.next()) else {
                        continue;
                    };
                    let Ok(count) = count.parse::<u64>() else {
                        continue;
                    };
                    match what {
                        "passed" => totals.passed += count,
                        "failed" => totals.failed += count,
                        "ignored" => totals.ignored += count,
                        _ => {}
                    }
                }
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!(
            "{rendered} failed ({status}): {} passed, {} failed",
            totals.passed,
            totals.failed
        );
    }
    Ok(totals)
}

/// What is left once the kernel finished tearing down: a deleted network
/// namespace releases its veths (and the programs attached to them) from a
/// work queue, a moment after the tests' processes are gone. Polls until
/// nothing is left or 10 s have passed.
fn leftovers_after_settling() -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let found = leftovers();
        if found.is_empty() || std::time::Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Namespaces, pins and programs of ours still present.
fn leftovers() -> Vec<String> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("svl") || name.starts_with("svc-test") {
                found.push(format!("netns {name}"));
            }
        }
    }
    for dir in ["/sys/fs/bpf/svc-lab", "/sys/fs/bpf/svc-test"] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.filter_map(Result::ok) {
                found.push(format!("pin {}", entry.path().display()));
            }
        }
    }
    if let Ok(out) = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        // Program names are cut at 15 characters by the kernel.
        if text.contains("\"name\":\"svc_from_pod\"") {
            found.push("program svc_from_pod".into());
        }
    }
    found
}

fn lint(root: &Path, tools: &setup::Tools) -> anyhow::Result<()> {
    run(cargo(root).args(["fmt", "--all", "--", "--check"]))?;
    run(cargo(root)
        .env("SVC_TOOLCHAIN_DIR", &tools.dir)
        .args([
            "clippy",
            "--workspace",
            "--exclude",
            "svc-ebpf",
            "--all-targets",
        ])
        .args(["--", "-D", "warnings"]))?;
    // svc-ebpf only builds for the BPF target, with the eBPF nightly.
    run(Command::new("rustup")
        .current_dir(root.join("svc-ebpf"))
        .args(["run", &tools.ebpf_toolchain, "cargo", "clippy"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .args([
            "--target-dir",
            &root.join("target/ebpf-clippy").to_string_lossy(),
        ])
        .args(["--", "-D", "warnings"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("CARGO"))
}

fn demo(root: &Path) -> anyhow::Result<()> {
    setup::require_root("the demo creates network namespaces and loads BPF programs")?;
    run(cargo(root).args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "svc-lab",
        "-p",
        "svc-agent",
    ]))?;
    run(Command::new(root.join("target/release/svc-lab")).arg("demo"))
}
