//! The fuzzer's reference model agrees with the packet programs (NIC XDP,
//! NIC TC, pod TC) on every frame kind (a short run; `cargo xtask fuzz` runs long ones), for a fixed seed
//! and a fresh one.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

fn fuzz(seed: u64, packets: u64) {
    let ns = svc_lab::netns::Netns::create(&format!("svfz{}-{seed}", std::process::id()))
        .expect("a network namespace");
    let report = ns
        .in_thread(move || tests::fuzz::run(packets, seed))
        .unwrap();
    assert_eq!(report.packets, packets);
    assert_eq!(
        (report.mismatches, report.kernel_errors),
        (0, 0),
        "seed {seed}:\n{}",
        report.first_mismatches.join("\n")
    );
    // Every kind was sent, and flows were made and used.
    assert_eq!(
        report.by_kind.len(),
        tests::fuzz::KINDS.len(),
        "{:?}",
        report.by_kind
    );
    assert!(report.flows > 0);
    // Every program ran, and the paths the new kinds are for were taken.
    assert_eq!(report.by_program.len(), 3, "{:?}", report.by_program);
    for outcome in [
        "new_flow_snat_to_node",
        "new_flow_snat_to_hairpin",
        "icmp_error_translated_back",
        "translated",
    ] {
        assert!(
            report.by_outcome.get(outcome).is_some_and(|n| *n > 0),
            "{outcome}: {:?}",
            report.by_outcome
        );
    }
}

#[test]
fn the_model_and_the_program_agree_for_a_fixed_seed() {
    fuzz(42, 20_000);
}

#[test]
fn the_model_and_the_program_agree_for_a_fresh_seed() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("seed {seed}");
    fuzz(seed, 20_000);
}
