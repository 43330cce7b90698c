//! Per-packet cost of the NIC program (XDP) through BPF_PROG_TEST_RUN, with
//! 1, 1 000 and 100 000 frontends in the maps. Writes
//! target/svc-bench/packet.json and prints a table. Needs root.
//!
//! Method: the kernel times the program over `repeat` runs of one packet
//! and reports the mean. A repeated packet is a new flow only the first
//! time, so the new-flow cost is the median of single runs over distinct
//! packets (each its own source port), which includes the kernel's timer
//! overhead of one run; the other figures use REPEAT runs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark binary"
)]

use std::{collections::BTreeMap, net::Ipv4Addr};

use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use svc_agent::{dataplane::Datapath, model::Protocol};
use tests::{SYN, cluster_ip, tcp_frame};

const REPEAT: u32 = 1_000_000;
const NEW_FLOWS: u16 = 20_000;
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const BACKEND: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);

fn mean_ns(program: &Xdp, frame: &[u8], repeat: u32) -> f64 {
    let mut out = vec![0u8; frame.len() + 256];
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..TestRunOptions::default()
        })
        .expect("BPF_PROG_TEST_RUN (root?)");
    result.duration.as_nanos() as f64
}

/// Frontend i: 198.19.(i / 250).(i % 250 + 1):80, one local backend.
fn frontend_address(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, (i / 250) as u8, (i % 250 + 1) as u8)
}

struct Figures {
    new_flow: f64,
    ct_hit: f64,
    miss: f64,
}

fn measure(frontends: u32) -> Figures {
    let mut datapath = Datapath::load(None).expect("load the datapath (root)");
    let table: Vec<_> = (0..frontends)
        .map(|i| {
            cluster_ip(
                &format!("svc-{i}"),
                frontend_address(i),
                80,
                Protocol::TCP,
                &[(BACKEND, 8080)],
            )
        })
        .collect();
    datapath.tables().apply(&table).unwrap();
    // The measured frontend is the last one written.
    let target = frontend_address(frontends - 1);
    let program = datapath.from_world_program().unwrap();

    let mut singles: Vec<f64> = (0..NEW_FLOWS)
        .map(|i| {
            let syn = tcp_frame((CLIENT, 10_000 + i), (target, 80), 1, SYN, b"");
            mean_ns(program, &syn, 1)
        })
        .collect();
    singles.sort_by(f64::total_cmp);
    let new_flow = singles[singles.len() / 2];

    let established = tcp_frame((CLIENT, 9_999), (target, 80), 1, SYN, b"");
    mean_ns(program, &established, 1);
    let ct_hit = mean_ns(program, &established, REPEAT);

    let stranger = tcp_frame(
        (CLIENT, 9_998),
        (Ipv4Addr::new(198, 18, 7, 7), 80),
        1,
        SYN,
        b"",
    );
    let miss = mean_ns(program, &stranger, REPEAT);
    Figures {
        new_flow,
        ct_hit,
        miss,
    }
}

fn main() {
    let mut datapath = Datapath::load(None).expect("load the datapath (root)");
    let syn = tcp_frame((CLIENT, 10_000), (frontend_address(0), 80), 1, SYN, b"");
    let baseline = mean_ns(datapath.xdp_pass_program().unwrap(), &syn, REPEAT);
    drop(datapath);

    let mut by_size = BTreeMap::new();
    for frontends in [1u32, 1_000, 100_000] {
        by_size.insert(frontends, measure(frontends));
    }

    println!("XDP per packet, ns (BPF_PROG_TEST_RUN; baseline = XDP_PASS program: {baseline:.1})");
    println!(
        "{:>10}  {:>9}  {:>7}  {:>7}",
        "frontends", "new flow", "ct hit", "miss"
    );
    for (frontends, f) in &by_size {
        println!(
            "{frontends:>10}  {:>9.1}  {:>7.1}  {:>7.1}",
            f.new_flow, f.ct_hit, f.miss
        );
    }
    let series = |pick: fn(&Figures) -> f64| {
        serde_json::Value::Object(
            by_size
                .iter()
                .map(|(size, f)| (size.to_string(), serde_json::json!(pick(f))))
                .collect(),
        )
    };
    let report = serde_json::json!({
        "baseline_ns": baseline,
        "new_flow_ns": series(|f| f.new_flow),
        "ct_hit_ns": series(|f| f.ct_hit),
        "miss_ns": series(|f| f.miss),
        "method": "BPF_PROG_TEST_RUN on svc_from_world (XDP); baseline, ct_hit and miss are means over 1e6 repeats; new_flow is the median of 20000 single runs on distinct flows",
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/svc-bench");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("packet.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("wrote {}", path.display());
}
