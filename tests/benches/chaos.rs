//! `cargo xtask chaos [--quick]` (SVC_BENCH_QUICK=1): the scenarios of
//! tests/src/chaos.rs under continuous load on a two-node svc-lab. Writes
//! target/svc-bench/chaos.json; exits 1 when any request failed, any
//! datagram was lost or any long-lived connection broke. Needs root, and
//! svc-lab and svc-agent built beside this binary's profile (xtask builds
//! them).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark")]

fn main() {
    let quick = std::env::var("SVC_BENCH_QUICK").is_ok_and(|v| v == "1");
    // SVC_CHAOS_SCENARIOS=a,b runs only those (`cargo xtask chaos
    // --scenario a --scenario b`).
    let only: Vec<String> = std::env::var("SVC_CHAOS_SCENARIOS")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let results = tests::chaos::run(quick, |name| {
        only.is_empty() || only.iter().any(|wanted| wanted == name)
    });
    println!(
        "{:<16} {:>9} {:>7} {:>9} {:>9} {:>10} {:>7} {:>8}",
        "scenario", "requests", "failed", "udp sent", "udp lost", "long-lived", "broken", "seconds"
    );
    for (name, f) in &results {
        println!(
            "{name:<16} {:>9} {:>7} {:>9} {:>9} {:>10} {:>7} {:>8.1}",
            f.requests,
            f.failed,
            f.udp_sent,
            f.udp_lost,
            f.long_lived,
            f.long_lived_broken,
            f.seconds
        );
        for failure in &f.failures {
            println!("  {failure}");
        }
        if let Some(ms) = f.converge_ms {
            let after = if *name == "churn" {
                "the last endpoint change"
            } else {
                "the API server came back"
            };
            println!("  maps converged {ms} ms after {after}");
        }
        if let (Some(rate), Some(cpu)) = (f.changes_per_second, f.agent_cpu_percent) {
            println!("  {rate:.0} endpoint changes/s; agent CPU {cpu:.1} % of a core");
        }
        for (counter, grown) in &f.kernel_counters {
            println!("  kernel: {counter} +{grown}");
        }
    }
    let json = serde_json::json!({
        "quick": quick,
        "scenarios": results,
    });
    tests::write_bench_report("chaos.json", &json);
    if results.values().any(|f| !f.passed()) {
        std::process::exit(1);
    }
}
