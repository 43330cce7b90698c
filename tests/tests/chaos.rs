//! Bounded end-to-end runs of `cargo xtask chaos`'s scenarios (its quick
//! form): a rollout restart and a scale 3 -> 10 -> 1 -> 3 under continuous
//! load, with the Deployment's 5 s preStop sleep; the previous commit's
//! agents replaced by this build's on their live pins, node by node
//! (`cargo xtask test` builds that agent and names it in
//! $SVC_CHAOS_PREVIOUS_AGENT; without it, as in a clone without history,
//! that scenario says SKIPPED); the real kube-apiserver
//! killed for 10 s under load while the endpoints change; and 10 s of
//! endpoint churn (100 changes/s) across 200 Services beside the loaded
//! one; and, on a lab of `--lb-mode dsr --lb-algorithm maglev` agents,
//! the LB IP's route moved node-1 -> node-2 -> both -> node-1. Every request must be answered, every datagram, every long-lived
//! connection kept (reopened only when the server says it closes), and the
//! maps must take the change within 2 s of the API server's return, and
//! hold every Service's last endpoints after the churn. The
//! short-connection workers pause 20 ms between requests (2 ms in `cargo
//! xtask chaos`): a lifecycle fault shows at this rate as tens of failures
//! (97 of 2 577 with svc-lab's waits taken out), and the load leaves the
//! 2-core machine room for the rest of the suite.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::Duration;

#[test]
fn rollout_scale_an_upgrade_an_api_server_outage_and_endpoint_churn_fail_no_request() {
    let results = tests::chaos::run_selected(true, Duration::from_millis(20), |name| {
        matches!(
            name,
            "rollout" | "scale" | "agent_upgrade" | "apiserver_kill" | "churn" | "dsr_failover"
        )
    });
    let upgrade = tests::chaos::previous_agent().is_some();
    assert_eq!(results.len(), 5 + usize::from(upgrade), "{results:?}");
    for (name, figures) in &results {
        eprintln!("{name}: {figures:?}");
        assert!(
            figures.requests > 500,
            "{name}: too little load: {figures:?}"
        );
        assert!(figures.udp_sent > 100, "{name}: {figures:?}");
        assert!(figures.passed(), "{name}: {figures:?}");
    }
    let churn = &results["churn"];
    assert!(
        churn.converge_ms.is_some() && churn.agent_cpu_percent.is_some(),
        "{churn:?}"
    );
    let converge_ms = results["apiserver_kill"].converge_ms.unwrap();
    assert!(
        converge_ms <= 2000,
        "the maps took {converge_ms} ms to follow the API server's return"
    );
}
