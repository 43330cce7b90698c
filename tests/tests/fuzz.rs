//! The fuzzer's reference model agrees with the NIC program on every frame
//! kind (a short run; `cargo xtask fuzz` runs long ones), for a fixed seed
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
