//! The control plane at scale: 10 000 Services × 10 endpoints programmed
//! from empty, then one endpoint change at a time from event to map write
//! (the agent's path: snapshot → translate → Tables::apply), and the peak
//! RSS of this process, which does what the agent does. Writes
//! target/svc-bench/control-plane.json. Needs root (BPF maps).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark binary"
)]

use std::{net::Ipv4Addr, time::Instant};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use svc_agent::{
    dataplane::Datapath,
    k8s::Snapshot,
    model::{Config, NodeContext, translate},
};

const SERVICES: u32 = 10_000;
const ENDPOINTS: u32 = 10;
const CHANGES: u32 = 50;

fn service(i: u32) -> Service {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc-{i}"), "namespace": "bench"},
        "spec": {
            "clusterIP": Ipv4Addr::new(198, 19, (i / 250) as u8, (i % 250 + 1) as u8).to_string(),
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
            "selector": {"app": format!("svc-{i}")}
        }
    }))
    .unwrap()
}

/// The slice of Service i; `generation` shifts its first endpoint, so a new
/// generation is one endpoint change.
fn slice(i: u32, generation: u32) -> EndpointSlice {
    let endpoints: Vec<_> = (0..ENDPOINTS)
        .map(|e| {
            let n = i * ENDPOINTS + e + if e == 0 { generation * 7 } else { 0 };
            // Pod addresses from 198.18.0.0/16 (62 500 of them: Services
            // beyond share pods, as their backends then do).
            let n = n % 62_500;
            let address = Ipv4Addr::new(198, 18, (n / 250) as u8, (n % 250 + 1) as u8);
            serde_json::json!({
                "addresses": [address.to_string()],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "nodeName": if e % 2 == 0 { "node-1" } else { "node-2" }
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc-{i}-abc"), "namespace": "bench",
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    }))
    .unwrap()
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024.0
}

fn main() {
    let mut snapshot = Snapshot {
        services: (0..SERVICES).map(service).collect(),
        endpoint_slices: (0..SERVICES).map(|i| slice(i, 0)).collect(),
        ..Snapshot::default()
    };
    let node = NodeContext {
        name: "node-1".into(),
        zone: None,
        node_addresses: vec![Ipv4Addr::new(198, 18, 0, 11)],
    };
    let config = Config::default();
    let mut datapath = Datapath::load(None).expect("load the datapath (root)");

    let started = Instant::now();
    let frontends = translate(&snapshot, &node, &config);
    datapath.tables().apply(&frontends).unwrap();
    let initial_sync_ms = started.elapsed().as_secs_f64() * 1e3;
    let programmed = datapath.tables().read().unwrap().len();
    assert_eq!(programmed, SERVICES as usize, "every Service programmed");

    // One endpoint of one Service changes (the last one, as a watcher would
    // see any); from the event to the map write.
    let mut changes_ms: Vec<f64> = (1..=CHANGES)
        .map(|generation| {
            let changed = SERVICES - 1 - (generation % 100);
            snapshot.endpoint_slices[changed as usize] = slice(changed, generation);
            let started = Instant::now();
            let frontends = translate(&snapshot, &node, &config);
            let report = datapath.tables().apply(&frontends).unwrap();
            let elapsed = started.elapsed().as_secs_f64() * 1e3;
            assert_eq!(
                report.frontends_written, 1,
                "exactly the changed Service is rewritten"
            );
            elapsed
        })
        .collect();
    changes_ms.sort_by(f64::total_cmp);
    let quantile = |q: f64| changes_ms[((changes_ms.len() - 1) as f64 * q).round() as usize];
    let report = serde_json::json!({
        "services": SERVICES,
        "initial_sync_ms": initial_sync_ms,
        "update_p50_ms": quantile(0.5),
        "update_p99_ms": quantile(0.99),
        "rss_mib": peak_rss_mib(),
        "method": "in one process: translate the whole snapshot, then Tables::apply (diff against the kernel maps); unpinned maps; 50 single-endpoint changes",
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/svc-bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("control-plane.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
}
