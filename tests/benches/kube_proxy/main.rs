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
//! Writes target/svc-bench/kube-proxy.{json,md,png}; a full run also
//! writes docs/bench/kube-proxy.{md,png}. Needs root. `SVC_BENCH_QUICK=1`
//! (set by `--quick`) runs fewer sizes and rounds, under 5 minutes.
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
        self,
        modes::{self, Mode},
    },
    load,
};

/// What a run does.
pub struct Plan {
    pub quick: bool,
    pub sizes: Vec<u16>,
    pub rounds: usize,
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

/// One mode at one size in one round.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub conn_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub connect_p99_ms: f64,
    pub failed: u64,
    pub program_all_ms: f64,
    pub one_change_ms: f64,
    pub peak_rss_kib: Option<u64>,
    pub map_bytes: Option<u64>,
}

fn plan() -> Plan {
    let quick = std::env::var("SVC_BENCH_QUICK").is_ok_and(|v| v == "1");
    if quick {
        Plan {
            quick,
            sizes: vec![1, 1_000],
            rounds: 2,
            concurrency: 32,
            warmup: Duration::from_millis(500),
            duration: Duration::from_secs(3),
        }
    } else {
        Plan {
            quick,
            sizes: vec![1, 1_000, 10_000],
            rounds: 3,
            concurrency: 32,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(8),
        }
    }
}

fn measure(mode: Mode, count: u16, plan: &Plan) -> Sample {
    let lab = modes::lab().expect("lab up (root)");
    let services = kube_proxy::services(count, &modes::endpoints(&lab));
    let programmed = modes::program(&lab, mode, &services)
        .unwrap_or_else(|e| panic!("{mode:?} at {count} Services: programming failed: {e}"));
    let targets = modes::targets(&lab, mode, &services).unwrap();
    for target in &targets {
        modes::check_forwards(&lab, mode, *target)
            .unwrap_or_else(|e| panic!("{count} Services: {e}"));
    }
    let map_bytes = match mode {
        Mode::SvcLb => Some(modes::svclb_map_bytes(&lab, modes::NODES[0]).unwrap()),
        _ => None,
    };
    let run = load::run(
        lab.client().unwrap(),
        targets.clone(),
        plan.concurrency,
        plan.warmup,
        plan.duration,
    )
    .unwrap();
    let one_change = modes::change_one_endpoint(&lab, mode, &services)
        .unwrap_or_else(|e| panic!("{mode:?} at {count} Services: endpoint change failed: {e}"));
    for target in &targets {
        modes::check_forwards(&lab, mode, *target)
            .unwrap_or_else(|e| panic!("{count} Services, after one endpoint change: {e}"));
    }
    let sample = Sample {
        conn_per_s: run.conn_per_s(),
        p50_ms: run.latency_ms(0.5),
        p99_ms: run.latency_ms(0.99),
        connect_p99_ms: run.connect_ms(0.99),
        failed: run.failed,
        program_all_ms: programmed.elapsed.as_secs_f64() * 1e3,
        one_change_ms: one_change.as_secs_f64() * 1e3,
        peak_rss_kib: programmed.peak_rss_kib,
        map_bytes,
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
    sample
}

fn main() {
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
            for mode in Mode::ALL.into_iter().filter(|m| *m != Mode::Direct) {
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
