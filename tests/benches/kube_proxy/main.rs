//! svc-lb side by side with kube-proxy's iptables (legacy and nf_tables
//! backends) and nftables modes, and with no translation at all, on the
//! same two-node lab: `cargo xtask bench kube-proxy [--quick]`.
//!
//! For each Service count, round after round, every mode gets a fresh lab
//! (so only one mode is ever active on the nodes), programs all Services
//! from empty (timed), must forward a curl to the NodePort of the last
//! Service (the one kube-proxy's rules scan last), then takes fixed
//! concurrency one-request-per-connection HTTP load from the external
//! client, then one endpoint change (timed) and must still forward.
//! Figures are medians over rounds, with min-max spread.
//!
//! Writes target/svc-bench/kube-proxy.{json,md,svg}; a full run also
//! writes docs/bench/kube-proxy.{md,svg}. Needs root. `SVC_BENCH_QUICK=1`
//! (set by `--quick`) runs fewer sizes and rounds, under 5 minutes.
//! `SVC_BENCH_REDRAW=1` (set by `--redraw`) runs nothing and needs no
//! root: it draws docs/bench/kube-proxy.svg again from the table in
//! docs/bench/kube-proxy.md (after a change to the chart's code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark binary"
)]

mod chart;
mod report;

use std::{collections::BTreeMap, time::Duration};

use tests::{
    kube_proxy::{
        self, NodePorts,
        modes::{self, Mode},
    },
    load,
};

/// What a run does.
pub struct Plan {
    pub quick: bool,
    /// Writes docs/bench/: a full run with no SVC_BENCH_* override.
    pub publish: bool,
    pub sizes: Vec<u16>,
    pub rounds: usize,
    /// The modes compared (the direct path always runs).
    pub modes: Vec<Mode>,
    pub node_ports: NodePorts,
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Pod -> ClusterIP load, per measurement.
    pub pod_duration: Duration,
    /// The bulk stream, per measurement (after `warmup`).
    pub stream_duration: Duration,
}

/// One mode at one size in one round.
#[derive(Clone, Debug)]
pub struct Sample {
    pub conn_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub connect_p99_ms: f64,
    pub failed: u64,
    pub program_all_ms: f64,
    pub one_change_ms: f64,
    pub peak_rss_kib: Option<u64>,
    /// svc-lb: its maps' bytes_memlock; iptables/nftables: what the rule
    /// loader left charged to its memory cgroup.
    pub kernel_bytes: Option<u64>,
    /// Pod -> ClusterIP of the last Service (measured in fewer runs in
    /// quick mode: NaN when not).
    pub pod_conn_per_s: f64,
    pub pod_p50_ms: f64,
    pub pod_p99_ms: f64,
    /// One TCP stream, client -> NodePort.
    pub stream_gbit_per_s: f64,
    /// node-1's conntrack entries after the loads (none without rules).
    pub conntrack_entries: Option<u64>,
}

/// `VAR` as a comma-separated list, if set.
fn env_list(var: &str) -> Option<Vec<String>> {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
}

fn plan() -> Plan {
    let quick = std::env::var("SVC_BENCH_QUICK").is_ok_and(|v| v == "1");
    let mut plan = default_plan(quick);
    let overridden = ["SIZES", "MODES", "ROUNDS", "NODEPORTS"]
        .iter()
        .any(|v| std::env::var_os(format!("SVC_BENCH_{v}")).is_some());
    plan.publish = !quick && !overridden;
    // One-off runs: SVC_BENCH_SIZES=10000 SVC_BENCH_MODES=iptables
    // SVC_BENCH_ROUNDS=1 SVC_BENCH_NODEPORTS=all.
    if let Some(sizes) = env_list("SVC_BENCH_SIZES") {
        plan.sizes = sizes
            .iter()
            .map(|s| s.parse().expect("SVC_BENCH_SIZES: numbers"))
            .collect();
    }
    if let Some(keys) = env_list("SVC_BENCH_MODES") {
        plan.modes = Mode::ALL
            .into_iter()
            .filter(|m| *m != Mode::Direct && keys.iter().any(|k| k == m.key()))
            .collect();
    }
    if let Ok(rounds) = std::env::var("SVC_BENCH_ROUNDS") {
        plan.rounds = rounds.parse().expect("SVC_BENCH_ROUNDS: a number");
    }
    if std::env::var("SVC_BENCH_NODEPORTS").is_ok_and(|v| v == "all") {
        plan.node_ports = NodePorts::All;
    }
    plan
}

fn default_plan(quick: bool) -> Plan {
    let modes = Mode::ALL
        .into_iter()
        .filter(|m| *m != Mode::Direct)
        .collect();
    if quick {
        Plan {
            quick,
            publish: false,
            sizes: vec![1, 1_000],
            rounds: 2,
            modes,
            node_ports: NodePorts::Last,
            concurrency: 32,
            warmup: Duration::from_millis(500),
            duration: Duration::from_secs(3),
            pod_duration: Duration::from_secs(2),
            stream_duration: Duration::from_secs(1),
        }
    } else {
        Plan {
            quick,
            publish: false,
            sizes: vec![1, 1_000, 10_000],
            rounds: 3,
            modes,
            node_ports: NodePorts::Last,
            concurrency: 32,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(8),
            // Shorter than the NodePort load: both loads' TIME_WAIT
            // entries share node-1's conntrack table, and nf_conntrack_max
            // (262 144 here) is global, read-only in a namespace.
            pod_duration: Duration::from_secs(4),
            stream_duration: Duration::from_secs(3),
        }
    }
}

fn measure(mode: Mode, count: u16, plan: &Plan) -> Sample {
    let lab = modes::lab().expect("lab up (root)");
    let services = kube_proxy::services(count, &modes::endpoints(&lab), plan.node_ports);
    let mut programmed = modes::program(&lab, mode, &services)
        .unwrap_or_else(|e| panic!("{mode:?} at {count} Services: programming failed: {e}"));
    let targets = modes::targets(&lab, mode, &services).unwrap();
    let pod_targets = modes::pod_targets(&lab, mode, &services);
    let check = |when: &str| {
        for target in &targets {
            modes::check_forwards(&lab, mode, *target)
                .unwrap_or_else(|e| panic!("{count} Services{when}: {e}"));
        }
        for target in &pod_targets {
            modes::check_pod_forwards(&lab, mode, *target)
                .unwrap_or_else(|e| panic!("{count} Services{when}, from a pod: {e}"));
        }
    };
    check("");
    let kernel_bytes = match mode {
        Mode::SvcLb | Mode::SvcLbDsr => {
            Some(modes::svclb_map_bytes(&lab, modes::NODES[0]).unwrap())
        }
        _ => programmed.rules_kernel_bytes,
    };
    let run = load::run(
        lab.client().unwrap(),
        targets.clone(),
        plan.concurrency,
        plan.warmup,
        plan.duration,
    )
    .unwrap();
    // A process of the pod (its node's cgroup), as a real pod's client:
    // svc-lb's socket hooks balance its connect() calls.
    let exe = std::env::current_exe().unwrap();
    let pod_run = load::run_as(
        lab.pod(modes::CLIENT_POD)
            .unwrap()
            .command(exe.to_str().unwrap())
            .unwrap(),
        pod_targets.clone(),
        plan.concurrency,
        plan.warmup,
        plan.pod_duration,
    )
    .unwrap();
    // One stream to one backend (for the direct path, the first pod).
    let stream = load::stream(
        lab.client().unwrap(),
        targets[0],
        plan.warmup,
        plan.stream_duration,
    )
    .unwrap()
    .unwrap_or_else(|e| panic!("{mode:?} at {count} Services: bulk stream failed: {e}"));
    // Connections both loads left in node-1's conntrack table (TIME_WAIT
    // entries live 120 s): checks nf_conntrack_max never drops a SYN.
    let conntrack_entries = lab
        .node(modes::NODES[0])
        .unwrap()
        .netns()
        .in_thread(|| {
            std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .unwrap();
    let one_change = modes::change_one_endpoint(&lab, mode, &services, &mut programmed)
        .unwrap_or_else(|e| panic!("{mode:?} at {count} Services: endpoint change failed: {e}"));
    check(", after one endpoint change");
    let sample = Sample {
        conn_per_s: run.conn_per_s(),
        p50_ms: run.latency_ms(0.5),
        p99_ms: run.latency_ms(0.99),
        connect_p99_ms: run.connect_ms(0.99),
        failed: run.failed + pod_run.failed,
        program_all_ms: programmed.elapsed.as_secs_f64() * 1e3,
        one_change_ms: one_change.as_secs_f64() * 1e3,
        peak_rss_kib: programmed.peak_rss_kib,
        kernel_bytes,
        pod_conn_per_s: pod_run.conn_per_s(),
        pod_p50_ms: pod_run.latency_ms(0.5),
        pod_p99_ms: pod_run.latency_ms(0.99),
        stream_gbit_per_s: stream.gbit_per_s(),
        conntrack_entries,
    };
    println!(
        "  {:<12} {count:>6} Services: {:>8.0} conn/s  p50 {:>6.2} ms  p99 {:>6.2} ms  connect p99 {:>6.2} ms  failed {:>4}  program {:>9.1} ms  one change {:>8.1} ms",
        mode.key(),
        sample.conn_per_s,
        sample.p50_ms,
        sample.p99_ms,
        sample.connect_p99_ms,
        sample.failed,
        sample.program_all_ms,
        sample.one_change_ms
    );
    println!(
        "  {:<12} {count:>6} Services: pod->ClusterIP {:>8.0} conn/s  p50 {:>6.2} ms  p99 {:>6.2} ms  failed {:>4}  stream {:>6.2} Gbit/s  kernel memory {}  node-1 conntrack {}",
        "",
        sample.pod_conn_per_s,
        sample.pod_p50_ms,
        sample.pod_p99_ms,
        pod_run.failed,
        sample.stream_gbit_per_s,
        sample
            .kernel_bytes
            .map_or("-".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0)),
        sample
            .conntrack_entries
            .map_or("-".into(), |n| n.to_string()),
    );
    sample
}

fn main() {
    load::serve_as_child();
    if std::env::var("SVC_BENCH_REDRAW").is_ok_and(|v| v == "1") {
        report::redraw();
        return;
    }
    let plan = plan();
    let started = std::time::Instant::now();
    // (mode, size) -> samples over rounds; direct has size 0.
    let mut samples: BTreeMap<(Mode, u16), Vec<Sample>> = BTreeMap::new();
    for round in 1..=plan.rounds {
        println!("round {round}/{}", plan.rounds);
        samples
            .entry((Mode::Direct, 0))
            .or_default()
            .push(measure(Mode::Direct, 1, &plan));
        for &size in &plan.sizes {
            for &mode in &plan.modes {
                samples
                    .entry((mode, size))
                    .or_default()
                    .push(measure(mode, size, &plan));
            }
        }
    }
    let summary = report::Summary::new(&plan, &samples, started.elapsed());
    summary.write();
}
