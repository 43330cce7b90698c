//! Fuzzing the NIC program against a reference model (`cargo xtask fuzz`).
//!
//! [`Model`] is what the XDP program must do to a frame, written from the
//! design, not from the program: parse like the datapath (what is dropped
//! as malformed, what passes untouched), which frames are Service traffic,
//! which belong to a flow already translated, and the bytes a translation
//! leaves (addresses, ports, both checksums updated as RFC 1624 says, TTL
//! untouched). [`run`] loads the real programs, programs random tables,
//! sends random and mutated frames through BPF_PROG_TEST_RUN, and compares
//! every output with the model's, byte for byte.
//!
//! It runs in a network namespace of its own with no route: the program's
//! route lookups then all answer "leave it to the stack", so no frame is
//! redirected or answered with an ICMP error (those paths have tests of
//! their own). What the model cannot predict it takes from the program
//! and checks: the backend a new flow gets must be one of its frontend's,
//! and a source NAT port must lie in the range and be no other flow's.
mod frames;
mod generate;
mod model;
mod rng;

use std::{collections::BTreeMap, net::Ipv4Addr};

use aya::programs::{TestRun as _, TestRunOptions};
use svc_agent::dataplane::{Datapath, NodeSettings};

pub use self::rng::Rng;
use self::{
    frames::hex,
    generate::{generate, random_frontends},
    model::Model,
};
use crate::{XDP_PASS, verify_checksums};

/// The node's address: NodePorts, and the source of NATed flows.
pub(super) const NODE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
pub(super) const NAT_PORTS: (u16, u16) = (61000, 65000);
/// Flows the model keeps at most (both tables stay far from full, so no
/// entry is evicted behind its back), and per remote backend (so the NAT
/// port search always finds a free port among the ports it tries).
pub(super) const MAX_FLOWS: usize = 3000;
pub(super) const MAX_FLOWS_PER_REMOTE_BACKEND: usize = 300;

/// The kinds of frame the fuzzer sends.
pub const KINDS: [&str; 16] = [
    "new_flow",
    "forward",
    "reply",
    "not_a_frontend",
    "truncated",
    "bad_ihl",
    "bad_length",
    "ip_options",
    "fragment",
    "ttl_0_1",
    "bad_l4_header",
    "udp_no_checksum",
    "icmp_error_garbage",
    "vlan",
    "ipv6",
    "random_bytes",
];

/// What a run found.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub packets: u64,
    pub mismatches: u64,
    pub kernel_errors: u64,
    pub seed: u64,
    pub frontends: usize,
    pub flows: usize,
    pub by_kind: BTreeMap<&'static str, u64>,
    /// The first mismatches, each with the frame (hex) to replay.
    pub first_mismatches: Vec<String>,
}

/// Loads the programs with random tables and sends `packets` frames
/// (about evenly of every kind) through the NIC program, checking each
/// against the model. Call it inside a network namespace without routes
/// (see the module docs).
pub fn run(packets: u64, seed: u64) -> Report {
    let mut rng = Rng::new(seed);
    let frontends = random_frontends(&mut rng);
    let mut datapath = Datapath::load(None).expect("load the datapath (root, kernel >= 6.6)");
    datapath
        .tables()
        .set_node(&NodeSettings {
            node_address: NODE,
            hairpin_address: Ipv4Addr::new(198, 18, 1, 1),
            nat_ports: NAT_PORTS,
        })
        .expect("node config");
    datapath.tables().apply(&frontends).expect("tables");
    let mut model = Model::new(&frontends);
    let mut report = Report {
        seed,
        frontends: frontends.len(),
        ..Report::default()
    };
    let program = datapath.from_world_program().expect("the NIC program");
    while report.packets < packets {
        let kind = *rng.pick(&KINDS);
        let Some(frame) = generate(&mut rng, &model, &frontends, kind) else {
            continue;
        };
        report.packets += 1;
        *report.by_kind.entry(kind).or_default() += 1;
        let mut out = vec![0u8; frame.len() + 256];
        let answer = program.test_run(TestRunOptions {
            data_in: Some(&frame),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        });
        let verdict = match answer {
            Ok(answer) => {
                out.truncate(answer.data_size_out as usize);
                answer.return_value
            }
            Err(error) => {
                report.kernel_errors += 1;
                if report.first_mismatches.len() < 10 {
                    report.first_mismatches.push(format!(
                        "{kind}: kernel error {error}\n  frame {}",
                        hex(&frame)
                    ));
                }
                continue;
            }
        };
        let checked = model.check(&frame, verdict, &out).and_then(|()| {
            // A frame that came in with valid checksums leaves with valid
            // ones, computed from scratch.
            if verdict == XDP_PASS && out != frame && verify_checksums(&frame).is_ok() {
                verify_checksums(&out).map_err(|e| format!("output checksums: {e}"))
            } else {
                Ok(())
            }
        });
        if let Err(why) = checked {
            report.mismatches += 1;
            if report.first_mismatches.len() < 10 {
                report
                    .first_mismatches
                    .push(format!("{kind}: {why}\n  frame {}", hex(&frame)));
            }
        }
    }
    report.flows = model.flows.len();
    report
}
