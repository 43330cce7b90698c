//! Backend churn under load: connections stay open and new ones keep
//! coming while backends are added, marked terminating and removed. No
//! established connection breaks, no new connection reaches a backend that
//! is terminating or gone, and not one request fails.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use svc_agent::model::{BackendRef, FrontendKind, Protocol};
use svc_lab::{Lab, NodeSpec, PodSpec, Topology};
use tests::{churn_load::Load, frontend, ready, terminating};

const SERVICE: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 30);

fn web(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 1, 10 + n - 1)
}

/// Polls `done` until it holds, failing after 20 s.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

#[test]
fn churn_under_load_loses_no_request() {
    let lab = Lab::up(&Topology {
        nodes: vec![NodeSpec {
            name: "node-1".into(),
            pods: vec![
                PodSpec::new("web-1", &[8080], &[]),
                PodSpec::new("web-2", &[8080], &[]),
                PodSpec::new("web-3", &[8080], &[]),
                PodSpec::new("client", &[], &[]),
            ],
        }],
    })
    .unwrap();
    for n in 1..=3 {
        assert_eq!(lab.pod(&format!("web-{n}")).unwrap().address, web(n));
    }
    lab.load_datapath("node-1").unwrap();
    let apply = |backends: &[BackendRef]| {
        let table = [frontend(
            FrontendKind::ClusterIP,
            "web",
            (SERVICE, 80),
            Protocol::TCP,
            backends,
        )];
        lab.tables("node-1").unwrap().apply(&table).unwrap();
        Instant::now()
    };
    let target = SocketAddr::from((SERVICE, 80));
    let client = lab.pod("client").unwrap().netns();

    // Long connections first, while web-1 is the only backend: they all
    // live on the backend that will be drained and removed.
    apply(&[ready(web(1), 8080, true)]);
    let mut load = Load::new();
    load.long(client, target, 0..3);
    apply(&[ready(web(1), 8080, true), ready(web(2), 8080, true)]);
    load.short(client, target, 3);
    let record = load.record.clone();
    let successes = || {
        record
            .snapshot()
            .iter()
            .filter(|o| o.result.is_ok())
            .count()
    };
    wait_for("50 answers", || successes() >= 50);

    let added = apply(&[
        ready(web(1), 8080, true),
        ready(web(2), 8080, true),
        ready(web(3), 8080, true),
    ]);
    wait_for("a new connection to web-3", || {
        record
            .snapshot()
            .iter()
            .any(|o| !o.long && o.started > added && o.result.as_deref() == Ok("web-3"))
    });

    let drained = apply(&[
        terminating(web(1), 8080, true),
        ready(web(2), 8080, true),
        ready(web(3), 8080, true),
    ]);
    let before = successes();
    wait_for("100 answers while web-1 terminates", || {
        successes() >= before + 100
    });

    let removed = apply(&[ready(web(2), 8080, true), ready(web(3), 8080, true)]);
    let before = successes();
    let served_since = |id: usize, since: Instant| {
        record
            .snapshot()
            .iter()
            .filter(|o| o.long && o.connection == id && o.started > since && o.result.is_ok())
            .count()
    };
    wait_for(
        "100 answers, and 5 on every long connection, after web-1 left",
        || successes() >= before + 100 && (0..3).all(|id| served_since(id, removed) >= 5),
    );
    load.stop();

    let outcomes = record.snapshot();
    let failures: Vec<_> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let late_to_web_1 = outcomes
        .iter()
        .filter(|o| !o.long && o.started > drained && o.result.as_deref() == Ok("web-1"))
        .count();
    assert_eq!(
        late_to_web_1, 0,
        "new connections reached a terminating or removed backend"
    );
    for id in 0..3 {
        let mine: Vec<_> = outcomes
            .iter()
            .filter(|o| o.long && o.connection == id)
            .collect();
        assert!(
            mine.iter().all(|o| o.result.as_deref() == Ok("web-1")),
            "connection {id} moved"
        );
        let after_removal = mine.iter().filter(|o| o.started > removed).count();
        assert!(
            after_removal > 0,
            "connection {id} stopped being served after web-1 left"
        );
    }
    let short = outcomes.iter().filter(|o| !o.long).count();
    assert!(short >= 250, "{short} short connections");
}
