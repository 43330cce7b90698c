//! The control plane at scale: 10 000 Services × 10 endpoints programmed
//! from empty, then one endpoint change at a time from watch event to map
//! write (the agent's path, tests/src/stores.rs: the object into its
//! reflector store → `Translator::update` → `Tables::apply_delta`), and the
//! peak RSS of this process, which does what the agent does; the same at
//! 100 000 Services in a child process of its own (`services_100k`). Then
//! network programming latency against a real API server. Writes
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
    model::{Config, NodeContext, translate},
};
use tests::stores::AgentPath;

const SERVICES: u32 = 10_000;
const ENDPOINTS: u32 = 10;
const CHANGES: u32 = 200;
/// The large size, measured in a process of its own.
const LARGE: u32 = 100_000;
/// Network programming latency: Services at the API server, and changes.
const NP_SERVICES: u32 = 10_000;
const NP_CHANGES: u32 = 200;

/// Service i: ClusterIP 198.19.(i / 250).(i % 250 + 1) port 80, for the
/// first 62 500; beyond, the same addresses again on port 81.
fn service(i: u32) -> Service {
    let (port, n) = (80 + i / 62_500, i % 62_500);
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc-{i}"), "namespace": "bench", "resourceVersion": "1"},
        "spec": {
            "clusterIP": Ipv4Addr::new(198, 19, (n / 250) as u8, (n % 250 + 1) as u8).to_string(),
            "ports": [{"name": "http", "port": port, "protocol": "TCP", "targetPort": 8080}],
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
                     "resourceVersion": (generation + 1).to_string(),
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    }))
    .unwrap()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Maglev at the default table size: the median time to build the table of
/// 100 backends (µs), and of an update that changes one backend of a
/// Maglev frontend with 10 (ms: the new table's 16 381 entries written
/// into the map's memory, then the header).
fn maglev_figures() -> (f64, f64) {
    use std::net::SocketAddr;
    use svc_agent::{dataplane::MaglevTable, model::LbAlgorithm};
    use svc_common::maglev::DEFAULT_TABLE_SIZE;
    let backends: Vec<SocketAddr> = (0..100u8)
        .map(|i| SocketAddr::new(Ipv4Addr::new(198, 18, 1, i + 1).into(), 8080))
        .collect();
    let mut build_us: Vec<f64> = (0..200)
        .map(|_| {
            let started = Instant::now();
            let table = MaglevTable::build(&backends, DEFAULT_TABLE_SIZE);
            let elapsed = started.elapsed().as_secs_f64() * 1e6;
            assert_eq!(table.entries.len(), usize::from(DEFAULT_TABLE_SIZE));
            elapsed
        })
        .collect();

    let mut datapath = Datapath::load(None).expect("load the datapath (root)");
    let frontend = |first: u8| svc_agent::model::Frontend {
        lb_algorithm: LbAlgorithm::Maglev,
        ..tests::cluster_ip(
            "maglev",
            Ipv4Addr::new(198, 19, 0, 1),
            80,
            svc_agent::model::Protocol::TCP,
            &(first..first + 10)
                .map(|i| (Ipv4Addr::new(198, 18, 2, i), 8080))
                .collect::<Vec<_>>(),
        )
    };
    datapath.tables().apply(&[frontend(1)]).unwrap();
    let mut update_ms: Vec<f64> = (2..52)
        .map(|first| {
            let started = Instant::now();
            let report = datapath.tables().apply(&[frontend(first)]).unwrap();
            assert_eq!(report.frontends_written, 1);
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    (median(&mut build_us), median(&mut update_ms))
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

/// Network programming latency against the real API server (see
/// tests/src/network_programming.rs): `NP_SERVICES` Services,
/// `NP_CHANGES` changes. Null, saying why, without a kube-apiserver.
fn network_programming() -> serde_json::Value {
    let Some(figures) = tests::network_programming::measure(NP_SERVICES, NP_CHANGES) else {
        return serde_json::json!({"skipped": "no kube-apiserver: run `cargo xtask apiserver`"});
    };
    let max = figures.latencies_ms.last().copied().unwrap_or(f64::NAN);
    serde_json::json!({
        "services": figures.services,
        "changes": figures.latencies_ms.len(),
        "p50_ms": figures.quantile_ms(0.5),
        "p99_ms": figures.quantile_ms(0.99),
        "max_ms": max,
        "agent_initial_sync_ms": figures.initial_sync_ms,
        "method": "kube-apiserver 1.20 and etcd on a one-node lab's loopback (watch cache off, as the tests run it), svc-agent run watching them as deploy/'s ServiceAccount; each change merge-patches one Service's EndpointSlice (one endpoint replaced) over a kept-alive connection, timed from just before the patch is sent until this process reads the new endpoint back from the pinned maps (read every 100 us); agent_initial_sync_ms: from the agent's start to every Service in the maps",
    })
}

/// One size's in-process figures.
struct Figures {
    initial_sync_ms: f64,
    changes_ms: Vec<f64>,
}

impl Figures {
    fn quantile(&self, q: f64) -> f64 {
        let last = self.changes_ms.len() - 1;
        self.changes_ms[(last as f64 * q).round() as usize]
    }
}

/// `count` Services programmed from empty, then `CHANGES` single-endpoint
/// changes, the agent's way.
fn measure(count: u32) -> Figures {
    let node = NodeContext {
        name: "node-1".into(),
        zone: None,
        node_addresses: vec![Ipv4Addr::new(198, 18, 0, 11).into()],
    };
    let tables = Datapath::load(None)
        .expect("load the datapath (root)")
        .into_tables();
    let mut agent = AgentPath::new(tables, node.clone());
    // The initial lists, as the reflectors fill the stores; then the
    // agent's first sync.
    agent.list(
        (0..count).map(service).collect(),
        (0..count).map(|i| slice(i, 0)).collect(),
    );
    let started = Instant::now();
    agent.sync_all().unwrap();
    let initial_sync_ms = started.elapsed().as_secs_f64() * 1e3;
    let programmed = agent.tables.read().unwrap().len();
    assert_eq!(programmed, count as usize, "every Service programmed");

    // One endpoint of one Service changes (one of the last 1 000, as a
    // watcher would see any); from the watch event into the store to the
    // map write.
    let mut changes_ms: Vec<f64> = (1..=CHANGES)
        .map(|generation| {
            let changed = count - 1 - (generation % 1_000);
            let new_slice = slice(changed, generation);
            let started = Instant::now();
            let report = agent.slice_changed(new_slice).unwrap();
            let elapsed = started.elapsed().as_secs_f64() * 1e3;
            assert_eq!(
                report.frontends_written, 1,
                "exactly the changed Service is rewritten"
            );
            elapsed
        })
        .collect();
    // The change-by-change path must program what a fresh translation of
    // the same objects says.
    let held: Vec<_> = agent
        .tables
        .read()
        .unwrap()
        .into_iter()
        .map(|state| state.frontend)
        .collect();
    let snapshot = agent.snapshot();
    assert!(
        held == translate(&snapshot, &node, &Config::default()),
        "the maps hold exactly the fresh translation after the changes"
    );
    changes_ms.sort_by(f64::total_cmp);
    Figures {
        initial_sync_ms,
        changes_ms,
    }
}

/// Set in the child process that measures [`LARGE`] Services: its peak
/// RSS is then its own, not this process's after the smaller size.
const CHILD_ENV: &str = "SVC_BENCH_CONTROL_PLANE_SERVICES";

/// The figures at [`LARGE`] Services, from a child process of this same
/// executable.
fn large() -> serde_json::Value {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, LARGE.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap();
    assert!(output.status.success(), "the {LARGE}-Service run failed");
    serde_json::from_slice(&output.stdout).unwrap()
}

fn main() {
    if let Ok(count) = std::env::var(CHILD_ENV) {
        let figures = measure(count.parse().unwrap());
        let report = serde_json::json!({
            "initial_sync_ms": figures.initial_sync_ms,
            "update_p50_ms": figures.quantile(0.5),
            "update_p99_ms": figures.quantile(0.99),
            "rss_mib": peak_rss_mib(),
        });
        println!("{report}");
        return;
    }
    let figures = measure(SERVICES);
    // Before the Maglev figures, whose second datapath is not the agent's.
    let rss_mib = peak_rss_mib();
    let (maglev_build_us, maglev_update_ms) = maglev_figures();
    let services_100k = large();
    let network_programming = network_programming();
    let report = serde_json::json!({
        "services": SERVICES,
        "initial_sync_ms": figures.initial_sync_ms,
        "update_p50_ms": figures.quantile(0.5),
        "update_p99_ms": figures.quantile(0.99),
        "rss_mib": rss_mib,
        "services_100k": services_100k,
        "maglev_build_100_backends_us": maglev_build_us,
        "maglev_update_p50_ms": maglev_update_ms,
        "network_programming_p99_ms": network_programming.get("p99_ms"),
        "network_programming": network_programming,
        "method": "in one process, the agent's path: kube-runtime reflector stores filled with the objects, a first sync (everything translated, Tables::apply reading the kernel maps), then per watch event the object into its store, its name to Translator::update (translates only its Service, settles only the addresses that claims) and the Delta to Tables::apply_delta; unpinned maps; 200 single-endpoint changes, each timed from the watch event into the store to the map write; services_100k: the same for 100 000 Services (from 62 500 on, port 81 of the same ClusterIPs) in a child process, whose peak RSS is its own; maglev_build_100_backends_us: median of 200 builds of a 16381-entry table for 100 backends; maglev_update_p50_ms: median of 50 applies that change one backend of a Maglev frontend with 10 (a new table written, then the header)",
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    tests::write_bench_report("control-plane.json", &report);
}
