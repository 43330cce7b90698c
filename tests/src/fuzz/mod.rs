//! Fuzzing the packet programs against a reference model (`cargo xtask
//! fuzz`).
//!
//! [`Model`] is what the three packet programs must do to a frame,
//! written from the design, not from the programs: parse like the
//! datapath (what is dropped as malformed, what passes untouched), which
//! frames are Service traffic, which belong to a flow already translated,
//! and the bytes a translation leaves (addresses, ports, both checksums
//! updated as RFC 1624 says, TTL untouched). [`run`] loads the real
//! programs, programs random tables, sends random and mutated frames
//! through BPF_PROG_TEST_RUN, and compares every output with the model's,
//! byte for byte.
//!
//! Frames from the network go through the NIC's XDP program
//! (`svc_from_world`), its TC program alone (`svc_from_world_tc`, as if
//! XDP had passed them on untouched), or both in turn (TC gets what XDP
//! passed, translated or not, and must leave a translated frame alone).
//! Frames from pods go through the veth program (`svc_from_pod`): new
//! flows to ClusterIPs and to the node's own NodePorts and LoadBalancer
//! IPs (no source NAT), a pod reaching itself (the hairpin address),
//! packets of its flows, and replies of local backends to any client.
//! Malformed and foreign frames go through any of them. ICMP errors quote
//! packets of known flows both ways: about a packet sent to a backend
//! (translated back: outer and quoted headers, every checksum), and
//! about a reply, which a client reports to the frontend (passed
//! untouched: the design translates errors towards clients only).
//!
//! It runs in a network namespace of its own with no route: the
//! programs' route lookups then all answer "leave it to the stack", so no
//! frame is redirected or answered with an ICMP error of the programs' own
//! (those paths have tests of their own). What the model cannot predict
//! it takes from the program and checks: the backend a new flow gets must
//! be one of its frontend's, a source NAT port must lie in the range and
//! be no other flow's, and a pod's new flow may be dropped only where its
//! client port towards one of the backends is another frontend's live
//! flow's.
mod frames;
mod generate;
mod icmp;
mod model;
mod parse;
mod programs;
mod rng;
mod tables;

use std::{collections::BTreeMap, net::Ipv4Addr};

use svc_agent::dataplane::{Datapath, NodeSettings, PacketPrograms};

pub use self::rng::Rng;
use self::{
    frames::{ICMP, hex, verify_icmp_checksums},
    generate::{Side, generate},
    model::Model,
    programs::Program,
    tables::random_frontends,
};
use crate::verify_checksums;

/// The node's address: NodePorts, and the source of NATed flows.
const NODE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
/// The source a pod reaching itself through a Service sees.
const HAIRPIN: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const NAT_PORTS: (u16, u16) = (61000, 65000);
/// Flows the model keeps at most (both tables stay far from full, so no
/// entry is evicted behind its back), and per backend with source NAT (so
/// the NAT port search always finds a free port among the ports it tries).
const MAX_FLOWS: usize = 3000;
const MAX_FLOWS_PER_SNAT_BACKEND: usize = 300;

/// The kinds of frame the fuzzer sends.
pub const KINDS: [&str; 27] = [
    "new_flow",
    "forward",
    "reply",
    "pod_to_cluster_ip",
    "pod_to_node_port",
    "pod_hairpin",
    "pod_forward",
    "pod_reply",
    "client_port_reuse",
    "icmp_unreachable_quoting_flow",
    "icmp_time_exceeded_quoting_flow",
    "icmp_error_quoting_reply",
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
    "ipip_not_ours",
    "ipip_truncated",
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
    /// Runs of each program (a frame through XDP and then TC counts for
    /// both).
    pub by_program: BTreeMap<&'static str, u64>,
    /// What the programs did, as the model expected: dropped, untouched,
    /// translated, new flows by the source NAT they got, ...
    pub by_outcome: BTreeMap<&'static str, u64>,
    /// The first mismatches, each with the frame (hex) to replay.
    pub first_mismatches: Vec<String>,
}

impl Report {
    fn mismatch(&mut self, what: String) {
        self.mismatches += 1;
        if self.first_mismatches.len() < 10 {
            self.first_mismatches.push(what);
        }
    }
}

/// The programs a frame from `side` goes through, in turn.
fn programs_for(rng: &mut Rng, side: Side) -> &'static [Program] {
    const WORLD: [&[Program]; 3] = [
        &[Program::NicXdp],
        &[Program::NicTc],
        &[Program::NicXdp, Program::NicTc],
    ];
    match side {
        Side::Pod => &[Program::PodTc],
        Side::Any if rng.chance(25) => &[Program::PodTc],
        Side::World | Side::Any => WORLD[rng.below(3)],
    }
}

/// Loads the programs with random tables and sends `packets` frames
/// (about evenly of every kind) through them, checking each answer
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
            hairpin_address: HAIRPIN,
            nat_ports: NAT_PORTS,
            service_cidrs: Vec::new(),
            lb_mode: svc_agent::model::LbMode::Snat,
        })
        .expect("node config");
    datapath.tables().apply(&frontends).expect("tables");
    let mut model = Model::new(&frontends);
    let mut report = Report {
        seed,
        frontends: frontends.len(),
        ..Report::default()
    };
    let programs = datapath.packet_programs().expect("the packet programs");
    while report.packets < packets {
        let kind = *rng.pick(&KINDS);
        let Some((frame, side)) = generate(&mut rng, &model, &frontends, kind) else {
            continue;
        };
        report.packets += 1;
        *report.by_kind.entry(kind).or_default() += 1;
        let mut route = programs_for(&mut rng, side);
        if !route.iter().all(|program| program.takes(&frame)) {
            route = &[Program::NicXdp];
        }
        send(&programs, &mut model, &mut report, kind, frame, route);
    }
    report.flows = model.flows.len();
    report
}

/// Sends `frame` through `route`'s programs in turn, each getting what
/// the one before passed on, and checks every answer.
fn send(
    programs: &PacketPrograms<'_>,
    model: &mut Model,
    report: &mut Report,
    kind: &str,
    mut frame: Vec<u8>,
    route: &[Program],
) {
    for &program in route {
        *report.by_program.entry(program.name()).or_default() += 1;
        let (verdict, out) = match program.run(programs, &frame) {
            Ok(answer) => answer,
            Err(error) => {
                report.kernel_errors += 1;
                report.mismatch(format!(
                    "{kind}, {}: kernel error {error}\n  frame {}",
                    program.name(),
                    hex(&frame)
                ));
                return;
            }
        };
        let checked = model
            .check(program, &frame, verdict, &out)
            .and_then(|outcome| fresh_checksums(program, verdict, &frame, &out).map(|()| outcome));
        match checked {
            Ok(outcome) => *report.by_outcome.entry(outcome).or_default() += 1,
            Err(why) => {
                report.mismatch(format!(
                    "{kind}, {}: {why}\n  frame {}",
                    program.name(),
                    hex(&frame)
                ));
                return;
            }
        }
        if verdict != program.pass() {
            return;
        }
        frame = out;
    }
}

/// A frame that came in with valid checksums and was rewritten leaves
/// with valid ones, computed here from scratch.
fn fresh_checksums(program: Program, verdict: u32, frame: &[u8], out: &[u8]) -> Result<(), String> {
    if verdict != program.pass() || out == frame {
        return Ok(());
    }
    let verify = if frame[23] == ICMP {
        verify_icmp_checksums
    } else {
        verify_checksums
    };
    if verify(frame).is_err() {
        return Ok(());
    }
    verify(out).map_err(|e| format!("output checksums: {e}"))
}
