//! Project tasks. `cargo xtask setup` runs first in every other task.
mod apiserver;
mod modules;
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
    /// Benchmarks; each writes its figures to target/svc-bench/.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
    /// Scenarios under continuous load on a two-node svc-lab (agents
    /// killed and restarted on each node in turn, pods rolled and scaled)
    /// and on an agent watching a real kube-apiserver that is killed for
    /// 10 s, every failed request, lost datagram and broken connection
    /// counted:
    /// target/svc-bench/chaos.json. Fails unless all are zero.
    Chaos {
        /// Shorter load around each change (CI's run).
        #[arg(long)]
        quick: bool,
        /// Run only this scenario (repeatable): steady, agent_kill,
        /// agent_restart, rollout, scale, ...
        #[arg(long = "scenario")]
        scenarios: Vec<String>,
    },
    /// Random and mutated frames through the NIC (XDP, TC) and pod programs, each output
    /// compared byte for byte with a reference model (tests/src/fuzz/):
    /// target/svc-bench/fuzz.json. Fails on any mismatch or kernel error.
    Fuzz {
        /// Frames to send.
        #[arg(long, default_value_t = 1_000_000)]
        packets: u64,
        /// The random seed (default: a fresh one, printed to replay).
        #[arg(long)]
        seed: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// ns per packet through the XDP program (BPF_PROG_TEST_RUN) with 1,
    /// 1 000 and 100 000 frontends: target/svc-bench/packet.json.
    Packet,
    /// 10 000 Services x 10 endpoints programmed from empty, one endpoint
    /// change from event to map write, peak RSS:
    /// target/svc-bench/control-plane.json.
    ControlPlane,
    /// svc-lb against kube-proxy's iptables (legacy and nf_tables backends)
    /// and nftables modes and the direct path, on one two-node lab, at 1,
    /// 1 000 and 10 000 Services: target/svc-bench/kube-proxy.json, and
    /// docs/bench/ (table and chart) from a full run.
    KubeProxy {
        /// Fewer sizes and rounds (under 5 minutes): CI's smoke run.
        #[arg(long)]
        quick: bool,
        /// Run nothing: draw docs/bench/kube-proxy.svg again from the
        /// table in docs/bench/kube-proxy.md (no root needed).
        #[arg(long, conflicts_with = "quick")]
        redraw: bool,
    },
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
        Task::Bench { which } => bench(&root, &tools, which),
        Task::Fuzz { packets, seed } => fuzz(&root, &tools, packets, seed),
        Task::Chaos { quick, scenarios } => chaos(&root, &tools, quick, &scenarios),
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
    // chaos.rs replaces the previous commit's agent by this one under load.
    let previous_agent = previous_agent(root, tools)?;
    // The end-to-end tests run the svc-lab and svc-agent binaries; cargo
    // test builds binaries only for packages that have integration tests.
    run(cargo(root).env("SVC_TOOLCHAIN_DIR", &tools.dir).args([
        "build",
        "--workspace",
        "--exclude",
        "svc-ebpf",
        "--bins",
    ]))?;
    let mut command = cargo(root);
    command
        .env("SVC_TOOLCHAIN_DIR", &tools.dir)
        .env("SVC_KUBE_APISERVER", &kube_apiserver)
        .env("SVC_REQUIRE_APISERVER", "1")
        .env(
            "SVC_CHAOS_PREVIOUS_AGENT",
            previous_agent.unwrap_or_default(),
        )
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
    // Lab names carry the pid of the process that made them (svl<pid>x..):
    // one whose process still runs belongs to someone else (a lab up by
    // hand, another run), not to this test run, whose processes are gone.
    let owned_by_live_process = |name: &str| {
        let digits: String = name
            .trim_start_matches("svl")
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        !digits.is_empty() && Path::new("/proc").join(&digits).exists()
    };
    let mut others_running = false;
    let mut found = Vec::new();
    let mut consider = |name: String, what: String| {
        if owned_by_live_process(&name) {
            others_running = true;
        } else {
            found.push(what);
        }
    };
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("svl") {
                consider(name.clone(), format!("netns {name}"));
            }
        }
    }
    // bpffs: any entry is a pin; cgroupfs: only subdirectories are cgroups
    // (the files are the kernel's own).
    for (dir, only_dirs) in [
        ("/sys/fs/bpf/svc-lab", false),
        ("/sys/fs/cgroup/svc-lab", true),
        ("/sys/fs/cgroup/unified/svc-lab", true),
    ] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.filter_map(Result::ok) {
                if !only_dirs || entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    consider(name, format!("{}", entry.path().display()));
                }
            }
        }
    }
    // Programs carry no owner: only checked when no other lab is running.
    if !others_running
        && let Ok(out) = Command::new("bpftool")
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
    let mut cycles = Vec::new();
    for crate_root in modules::CRATE_ROOTS {
        for cycle in modules::cycles(&root.join(crate_root))? {
            cycles.push(format!(
                "{crate_root}: {}\n    {}",
                cycle.modules.join(" <-> "),
                cycle.uses.join("\n    ")
            ));
        }
    }
    if !cycles.is_empty() {
        bail!("modules that use each other:\n  {}", cycles.join("\n  "));
    }
    println!(
        "no module import cycle in {} crate roots",
        modules::CRATE_ROOTS.len()
    );
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

fn bench(root: &Path, tools: &setup::Tools, which: Bench) -> anyhow::Result<()> {
    let (name, quick, redraw) = match which {
        Bench::Packet => ("packet", false, false),
        Bench::ControlPlane => ("control_plane", false, false),
        Bench::KubeProxy { quick, redraw } => ("kube_proxy", quick, redraw),
    };
    if !redraw {
        setup::require_root("the benchmarks load BPF programs")?;
    }
    let flag = |on: bool| if on { "1" } else { "0" };
    run(cargo(root)
        .env("SVC_TOOLCHAIN_DIR", &tools.dir)
        .env("SVC_BENCH_QUICK", flag(quick))
        .env("SVC_BENCH_REDRAW", flag(redraw))
        .args(["bench", "-p", "tests", "--bench", name]))
}

fn fuzz(root: &Path, tools: &setup::Tools, packets: u64, seed: Option<u64>) -> anyhow::Result<()> {
    setup::require_root("the fuzzer loads BPF programs")?;
    let seed = match seed {
        Some(seed) => seed,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos() as u64,
    };
    println!("fuzz: {packets} frames, seed {seed} (--seed {seed} replays this run)");
    run(cargo(root)
        .env("SVC_TOOLCHAIN_DIR", &tools.dir)
        .env("SVC_FUZZ_PACKETS", packets.to_string())
        .env("SVC_FUZZ_SEED", seed.to_string())
        .args(["bench", "-p", "tests", "--bench", "fuzz"]))
}

fn chaos(
    root: &Path,
    tools: &setup::Tools,
    quick: bool,
    scenarios: &[String],
) -> anyhow::Result<()> {
    setup::require_root("the chaos scenarios build network namespaces and load BPF programs")?;
    // apiserver_kill runs the agent against a real kube-apiserver.
    let kube_apiserver = apiserver::ensure()?;
    // agent_upgrade starts the lab with the previous commit's agent.
    let previous_agent = if scenarios.is_empty() || scenarios.iter().any(|s| s == "agent_upgrade") {
        previous_agent(root, tools)?
    } else {
        None
    };
    // The lab runs the svc-lab and svc-agent binaries of the bench
    // profile's directory (target/release).
    run(cargo(root).env("SVC_TOOLCHAIN_DIR", &tools.dir).args([
        "build",
        "--release",
        "-p",
        "svc-lab",
        "-p",
        "svc-agent",
    ]))?;
    run(cargo(root)
        .env("SVC_TOOLCHAIN_DIR", &tools.dir)
        .env("SVC_BENCH_QUICK", if quick { "1" } else { "0" })
        .env("SVC_CHAOS_SCENARIOS", scenarios.join(","))
        .env("SVC_KUBE_APISERVER", &kube_apiserver)
        .env("SVC_REQUIRE_APISERVER", "1")
        .env(
            "SVC_CHAOS_PREVIOUS_AGENT",
            previous_agent.unwrap_or_default(),
        )
        .args(["bench", "-p", "tests", "--bench", "chaos"]))
}

/// The previous commit's svc-agent (release), for agent_upgrade: its tree
/// exported with `git archive` into target/svc-previous/COMMIT/, built
/// once in this checkout's own target directory, whose compiled
/// dependencies it shares (only the workspace's crates and the kernel
/// programs are built again), and the binary kept there for later runs.
/// None, saying why, when there is no previous commit here (a shallow
/// clone).
fn previous_agent(root: &Path, tools: &setup::Tools) -> anyhow::Result<Option<PathBuf>> {
    let rev = Command::new("git")
        .current_dir(root)
        .args(["rev-parse", "--verify", "--quiet", "HEAD~1"])
        .output()
        .context("running git")?;
    if !rev.status.success() {
        println!("xtask: no previous commit here; agent_upgrade does not run");
        return Ok(None);
    }
    let commit = String::from_utf8_lossy(&rev.stdout).trim().to_owned();
    let dir = root.join("target/svc-previous").join(&commit);
    let binary = dir.join("svc-agent");
    if binary.exists() {
        println!("xtask: previous agent {commit} cached");
        return Ok(Some(binary));
    }
    println!("xtask: building the previous commit's agent ({commit}), once");
    let tree = dir.join("tree");
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(&tree)?;
    let mut archive = Command::new("git")
        .current_dir(root)
        .args(["archive", "--format=tar", &commit])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running git archive")?;
    let tar = archive.stdout.take().context("git archive's output")?;
    run(Command::new("tar").current_dir(&tree).arg("-x").stdin(tar))?;
    if !archive.wait()?.success() {
        bail!("git archive {commit} failed");
    }
    // The binary lands where this checkout's own agent does, which the
    // caller builds again next: copied out at once.
    let target = root.join("target");
    // SVC_PREVIOUS_COMMIT: see svc-agent/build.rs (the shared OUT_DIR).
    run(cargo(&tree)
        .env("SVC_TOOLCHAIN_DIR", &tools.dir)
        .env("CARGO_TARGET_DIR", &target)
        .env("SVC_PREVIOUS_COMMIT", &commit)
        .args(["build", "--release", "-p", "svc-agent"]))?;
    // Whole or not at all: a binary that is there counts as built.
    let part = dir.join("svc-agent.part");
    std::fs::copy(target.join("release/svc-agent"), &part)
        .and_then(|_| std::fs::rename(&part, &binary))
        .with_context(|| format!("keeping the previous agent as {}", binary.display()))?;
    let _ = std::fs::remove_dir_all(&tree);
    Ok(Some(binary))
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
    let lab = root.join("target/release/svc-lab");
    let state = std::env::temp_dir().join("svc-lab-demo");
    let result = seed_story(root, &lab, &state);
    // Whatever happened, nothing stays behind.
    let _ = svc_lab(&lab, &state, &["down"]).status();
    result
}

fn svc_lab(lab: &Path, state: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(lab);
    command.arg("--state").arg(state).args(args);
    command
}

/// The seed story, one screen per step. `expect_ok` false: the step must
/// fail (the refused connection, the immutable selector).
fn seed_story(root: &Path, lab: &Path, state: &Path) -> anyhow::Result<()> {
    let seed = root.join("examples/seed");
    let file = |name: &str| seed.join(name).to_string_lossy().into_owned();
    let curl = |url: &str| format!("curl -sS --max-time 3 {url}");
    run_step(
        lab,
        state,
        "1. Three nginx pods; ClusterIP, NodePort 30080 and LoadBalancer Services",
        split(&format!(
            "up -f {} -f {} -f {}",
            file("nodes.yaml"),
            file("web-deployment.yaml"),
            file("web-services.yaml")
        )),
        true,
    )?;
    println!("\n$ svc-lab get endpoints");
    svc_lab(lab, state, &["get", "endpoints"]).status()?;
    let pod = first_pod(lab, state)?;
    let script: Vec<(&str, Vec<String>, bool)> = vec![
        (
            "2. A pod curls the ClusterIP",
            exec(&format!("pod/{pod}"), &curl("http://198.19.0.10/")),
            true,
        ),
        (
            "3. node-1 curls its own NodePort (the seed: curl NODE_IP:30080 on the master)",
            exec("node/node-1", &curl("http://198.18.0.11:30080/")),
            true,
        ),
        (
            "4. The external client curls the NodePort of node-1",
            exec("client", &curl("http://198.18.0.11:30080/")),
            true,
        ),
        (
            "5. ... and of node-2",
            exec("client", &curl("http://198.18.0.12:30080/")),
            true,
        ),
        (
            "6. The client curls the load balancer's IP",
            exec("client", &curl("http://198.19.255.1/")),
            true,
        ),
        (
            "7. The seed's mistake: a Service selecting app=web",
            split(&format!("apply -f {}", file("broken-selector.yaml"))),
            true,
        ),
        (
            "8. Connection refused",
            exec("client", &curl("http://198.18.0.11:30090/")),
            false,
        ),
        (
            "9. Why? svc-agent diagnose",
            exec(
                "node/node-1",
                "svc-agent diagnose default/web-broken --manifests STATE/manifests --node node-1",
            ),
            true,
        ),
        (
            "10. Relabel the Deployment app=web: its selector is immutable",
            split(&format!(
                "apply -f {}",
                seed.join("fix/web-deployment.yaml").display()
            )),
            false,
        ),
        (
            "11. Delete and re-create it, as the seed did",
            split("delete deployment/web"),
            true,
        ),
        (
            "12. Re-created: app=web pods",
            split(&format!(
                "apply -f {}",
                seed.join("fix/web-deployment.yaml").display()
            )),
            true,
        ),
        (
            "13. Traffic flows again",
            exec("client", &curl("http://198.18.0.11:30090/")),
            true,
        ),
    ];
    for (title, args, expect_ok) in script {
        run_step(lab, state, title, args, expect_ok)?;
    }
    println!("\n=== 14. svc-lab down");
    Ok(())
}

fn first_pod(lab: &Path, state: &Path) -> anyhow::Result<String> {
    let output = svc_lab(lab, state, &["get", "pods", "-o", "json"]).output()?;
    let list: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    list["items"][0]["metadata"]["name"]
        .as_str()
        .map(str::to_owned)
        .context("the lab has no pod")
}

fn run_step(
    lab: &Path,
    state: &Path,
    title: &str,
    args: Vec<String>,
    expect_ok: bool,
) -> anyhow::Result<()> {
    {
        println!("\n=== {title}");
        let args: Vec<String> = args
            .into_iter()
            .map(|a| a.replace("STATE", &state.to_string_lossy()))
            .collect();
        println!("$ svc-lab {}", args.join(" "));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let status = svc_lab(lab, state, &refs).status()?;
        if status.success() != expect_ok {
            bail!(
                "step {title:?}: expected {}, got {status}",
                if expect_ok { "success" } else { "a failure" }
            );
        }
    }
    Ok(())
}

fn split(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

fn exec(target: &str, command: &str) -> Vec<String> {
    let mut args = vec!["exec".to_owned(), target.to_owned(), "--".to_owned()];
    args.extend(split(command));
    args
}
