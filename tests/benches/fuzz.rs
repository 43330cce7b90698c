//! `cargo xtask fuzz [--packets N] [--seed S]` (SVC_FUZZ_PACKETS,
//! SVC_FUZZ_SEED): frames through the packet programs against the reference
//! model of tests/src/fuzz/, in a network namespace of its own. Writes
//! target/svc-bench/fuzz.json; exits 1 on any mismatch or kernel error,
//! printing the frames to replay. Needs root.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark")]

use std::time::Instant;

fn main() {
    let number = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .map(|v| v.parse::<u64>().expect("a number"))
            .unwrap_or(default)
    };
    let packets = number("SVC_FUZZ_PACKETS", 1_000_000);
    let seed = number("SVC_FUZZ_SEED", 1);
    let ns = svc_lab::netns::Netns::create(&format!("svfz{}", std::process::id()))
        .expect("a network namespace");
    let started = Instant::now();
    let report = ns
        .in_thread(move || tests::fuzz::run(packets, seed))
        .expect("the fuzzer thread");
    // Removed now: the exit below on a mismatch skips destructors.
    drop(ns);
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "fuzz: {} frames in {seconds:.1} s ({:.0}/s), seed {}: {} mismatches, {} kernel errors; \
         {} frontends, {} flows",
        report.packets,
        report.packets as f64 / seconds,
        report.seed,
        report.mismatches,
        report.kernel_errors,
        report.frontends,
        report.flows,
    );
    for (what, counts) in [
        ("kind", &report.by_kind),
        ("program", &report.by_program),
        ("outcome", &report.by_outcome),
    ] {
        println!("by {what}:");
        for (name, count) in counts {
            println!("  {name:<32} {count}");
        }
    }
    for mismatch in &report.first_mismatches {
        println!("MISMATCH {mismatch}");
    }
    let mut json = serde_json::to_value(&report).expect("json");
    json["seconds"] = serde_json::json!(seconds);
    tests::write_bench_report("fuzz.json", &json);
    if report.mismatches > 0 || report.kernel_errors > 0 {
        std::process::exit(1);
    }
}
