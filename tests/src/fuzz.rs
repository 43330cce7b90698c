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
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::Ipv4Addr,
};

use svc_agent::{
    dataplane::{Datapath, NodeSettings},
    model::{Frontend, FrontendKind, Protocol},
};

use aya::programs::{TestRun as _, TestRunOptions};

use crate::{XDP_DROP, XDP_PASS, frontend, ready, verify_checksums};

/// The node's address: NodePorts, and the source of NATed flows.
const NODE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
const NAT_PORTS: (u16, u16) = (61000, 65000);
/// Flows the model keeps at most (both tables stay far from full, so no
/// entry is evicted behind its back), and per remote backend (so the NAT
/// port search always finds a free port among the ports it tries).
const MAX_FLOWS: usize = 3000;
const MAX_FLOWS_PER_REMOTE_BACKEND: usize = 300;

/// A small, seedable generator (splitmix64): the same seed makes the same
/// run, and a mismatch can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// (address, port) of one end.
type End = (Ipv4Addr, u16);

/// One direction of a flow: source, destination, protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Tuple {
    src: End,
    dst: End,
    proto: u8,
}

/// A frontend as the model knows it.
#[derive(Clone, Debug)]
struct ModelFrontend {
    backends: Vec<(End, bool)>,
}

/// A flow the program translated: what its packets become.
#[derive(Clone, Copy, Debug)]
struct ModelFlow {
    client: End,
    frontend: End,
    backend: End,
    /// The source the backend sees: the client, or (node, NAT port).
    source: End,
    proto: u8,
}

impl ModelFlow {
    /// Client → frontend.
    fn forward(&self) -> Tuple {
        Tuple {
            src: self.client,
            dst: self.frontend,
            proto: self.proto,
        }
    }
}

/// What the program must do with a frame.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    Drop,
    /// Passed on exactly as it came.
    Untouched,
    /// A new flow to this frontend: the program picks the backend.
    NewFlow(End),
    /// Rewritten to these (source, destination).
    Rewritten(End, End),
}

/// What the program must do to frames, given the tables and the flows it
/// translated so far.
pub struct Model {
    frontends: HashMap<(Ipv4Addr, u16, u8), ModelFrontend>,
    /// Flows by their forward tuple (client → frontend).
    flows: HashMap<Tuple, ModelFlow>,
    /// Forward tuples by reply tuple (backend → source).
    replies: HashMap<Tuple, Tuple>,
    per_backend: HashMap<(End, u8), usize>,
}

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const SCTP: u8 = 132;

fn proto_number(protocol: Protocol) -> u8 {
    match protocol {
        Protocol::TCP => TCP,
        Protocol::UDP => UDP,
        Protocol::SCTP => SCTP,
    }
}

fn be16(frame: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([frame[at], frame[at + 1]])
}

fn addr(frame: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(frame[at], frame[at + 1], frame[at + 2], frame[at + 3])
}

/// The parts of a well-formed IPv4 TCP/UDP frame the model works with.
struct Parsed {
    l4: usize,
    tuple: Tuple,
}

impl Model {
    fn new(frontends: &[Frontend]) -> Self {
        let frontends = frontends
            .iter()
            .map(|f| {
                let backends = f
                    .backends
                    .iter()
                    .map(|b| ((b.address, b.port), b.local))
                    .collect();
                (
                    (f.address, f.port, proto_number(f.protocol)),
                    ModelFrontend { backends },
                )
            })
            .collect();
        Self {
            frontends,
            flows: HashMap::new(),
            replies: HashMap::new(),
            per_backend: HashMap::new(),
        }
    }

    /// The datapath's parse (svc-ebpf packet.rs, as designed): Err(Drop or
    /// Untouched) for frames that are not a well-formed IPv4 TCP/UDP
    /// packet to consider.
    fn parse(frame: &[u8]) -> Result<Parsed, Expect> {
        const IP: usize = 14;
        if frame.len() < IP || be16(frame, 12) != 0x0800 {
            return Err(Expect::Untouched);
        }
        if frame.len() < IP + 20 {
            return Err(Expect::Drop);
        }
        let ihl = usize::from(frame[IP] & 0x0f) * 4;
        if frame[IP] >> 4 != 4 || ihl < 20 {
            return Err(Expect::Drop);
        }
        let total = usize::from(be16(frame, IP + 2));
        if total < ihl || IP + total > frame.len() {
            return Err(Expect::Drop);
        }
        if be16(frame, IP + 6) & 0x3fff != 0 {
            return Err(Expect::Untouched);
        }
        let l4 = IP + ihl;
        let l4_len = total - ihl;
        let proto = frame[IP + 9];
        match proto {
            TCP => {
                if l4 + 14 > frame.len() {
                    return Err(Expect::Drop);
                }
                let header = usize::from(frame[l4 + 12] >> 4) * 4;
                if header < 20 || header > l4_len {
                    return Err(Expect::Drop);
                }
            }
            UDP => {
                if l4 + 8 > frame.len() {
                    return Err(Expect::Drop);
                }
                let length = usize::from(be16(frame, l4 + 4));
                if length < 8 || length > l4_len {
                    return Err(Expect::Drop);
                }
            }
            ICMP => return Err(Self::icmp(frame, l4, IP + total)),
            _ => return Err(Expect::Untouched),
        }
        Ok(Parsed {
            l4,
            tuple: Tuple {
                src: (addr(frame, IP + 12), be16(frame, l4)),
                dst: (addr(frame, IP + 16), be16(frame, l4 + 2)),
                proto,
            },
        })
    }

    /// ICMP: errors quoting a TCP or UDP packet are parsed further (a
    /// quote too short is malformed); the generator never quotes one of
    /// the model's flows, so every well-formed one passes untouched.
    fn icmp(frame: &[u8], icmp: usize, end: usize) -> Expect {
        if icmp + 2 > frame.len() {
            return Expect::Drop;
        }
        if ![3, 11, 12].contains(&frame[icmp]) {
            return Expect::Untouched;
        }
        let inner = icmp + 8;
        if inner + 2 > frame.len() {
            return Expect::Drop;
        }
        let inner_ihl = usize::from(frame[inner] & 0x0f) * 4;
        if frame[inner] >> 4 != 4 || inner_ihl < 20 {
            return Expect::Drop;
        }
        if inner + 10 > frame.len() {
            return Expect::Drop;
        }
        if ![TCP, UDP].contains(&frame[inner + 9]) {
            return Expect::Untouched;
        }
        if inner + inner_ihl + 8 > end {
            return Expect::Drop;
        }
        Expect::Untouched
    }

    fn expect(&self, frame: &[u8]) -> Expect {
        let parsed = match Self::parse(frame) {
            Ok(parsed) => parsed,
            Err(expect) => return expect,
        };
        let tuple = parsed.tuple;
        if let Some(flow) = self.flows.get(&tuple) {
            return Expect::Rewritten(flow.source, flow.backend);
        }
        if let Some(forward) = self.replies.get(&tuple) {
            let flow = &self.flows[forward];
            return Expect::Rewritten(flow.frontend, flow.client);
        }
        if self
            .frontends
            .contains_key(&(tuple.dst.0, tuple.dst.1, tuple.proto))
        {
            return Expect::NewFlow(tuple.dst);
        }
        Expect::Untouched
    }

    /// Checks the program's answer to `frame`; learns a new flow from it.
    fn check(&mut self, frame: &[u8], verdict: u32, out: &[u8]) -> Result<(), String> {
        let expect = self.expect(frame);
        let (source, destination) = match expect {
            Expect::Drop => {
                return (verdict == XDP_DROP)
                    .then_some(())
                    .ok_or_else(|| format!("expected XDP_DROP, got verdict {verdict}"));
            }
            Expect::Untouched => {
                if verdict != XDP_PASS {
                    return Err(format!(
                        "expected XDP_PASS untouched, got verdict {verdict}"
                    ));
                }
                return (out == frame)
                    .then_some(())
                    .ok_or_else(|| "expected the frame untouched".to_owned());
            }
            Expect::Rewritten(source, destination) => (source, destination),
            Expect::NewFlow(frontend_end) => self.learn(frame, frontend_end, verdict, out)?,
        };
        if verdict != XDP_PASS {
            return Err(format!(
                "expected XDP_PASS rewritten, got verdict {verdict}"
            ));
        }
        let expected = rewrite(frame, source, destination);
        if out != expected {
            return Err(format!(
                "expected {source:?} -> {destination:?}:\n  want {}\n  got  {}",
                hex(&expected),
                hex(out)
            ));
        }
        Ok(())
    }

    /// A new flow: the backend and NAT port the program chose, checked
    /// against what it may choose, and remembered.
    fn learn(
        &mut self,
        frame: &[u8],
        frontend_end: End,
        verdict: u32,
        out: &[u8],
    ) -> Result<(End, End), String> {
        if verdict != XDP_PASS {
            return Err(format!(
                "new flow: expected XDP_PASS, got verdict {verdict}"
            ));
        }
        let Ok(parsed) = Self::parse(frame) else {
            return Err("new flow that does not parse".into());
        };
        let tuple = parsed.tuple;
        if out.len() != frame.len() {
            return Err("new flow: length changed".into());
        }
        let chosen_source = (addr(out, 26), be16(out, parsed.l4));
        let backend = (addr(out, 30), be16(out, parsed.l4 + 2));
        let frontend = &self.frontends[&(frontend_end.0, frontend_end.1, tuple.proto)];
        let Some(&(_, local)) = frontend.backends.iter().find(|(b, _)| *b == backend) else {
            return Err(format!(
                "new flow went to {backend:?}, not a backend of {frontend_end:?}"
            ));
        };
        let source = if local {
            tuple.src
        } else {
            let (node, port) = chosen_source;
            if node != NODE || !(NAT_PORTS.0..=NAT_PORTS.1).contains(&port) {
                return Err(format!(
                    "remote backend: source {chosen_source:?} is not a NAT port"
                ));
            }
            chosen_source
        };
        let reply = Tuple {
            src: backend,
            dst: source,
            proto: tuple.proto,
        };
        if self.replies.contains_key(&reply) {
            return Err(format!(
                "NAT port {source:?} to {backend:?} is another flow's"
            ));
        }
        self.flows.insert(
            tuple,
            ModelFlow {
                client: tuple.src,
                frontend: frontend_end,
                backend,
                source,
                proto: tuple.proto,
            },
        );
        self.replies.insert(reply, tuple);
        if !local {
            *self.per_backend.entry((backend, tuple.proto)).or_default() += 1;
        }
        Ok((source, backend))
    }
}

/// One's complement sum of the 16-bit words of `bytes`.
fn ones_sum(bytes: &[u8]) -> u32 {
    bytes
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// RFC 1624 (eqn. 3): the checksum `old` after the words `from` became
/// `to`: HC' = ~(~HC + ~m + m').
fn updated_checksum(old: u16, from: &[u8], to: &[u8]) -> u16 {
    let not_from: u32 = from
        .chunks(2)
        .map(|w| u32::from(!u16::from_be_bytes([w[0], w[1]])))
        .sum();
    !fold(u32::from(!old) + not_from + ones_sum(to))
}

/// `frame` with its source and destination made `source` and
/// `destination`, checksums updated (a UDP datagram without a checksum
/// keeps none; one whose checksum comes to 0 gets 0xffff).
fn rewrite(frame: &[u8], source: End, destination: End) -> Vec<u8> {
    let mut out = frame.to_vec();
    let l4 = 14 + usize::from(frame[14] & 0x0f) * 4;
    let proto = frame[23];
    let mut old_words = Vec::new();
    let mut new_words = Vec::new();
    old_words.extend_from_slice(&frame[26..34]);
    out[26..30].copy_from_slice(&source.0.octets());
    out[30..34].copy_from_slice(&destination.0.octets());
    new_words.extend_from_slice(&out[26..34]);
    let ip_csum = updated_checksum(be16(frame, 24), &frame[26..34], &out[26..34]);
    out[24..26].copy_from_slice(&ip_csum.to_be_bytes());
    old_words.extend_from_slice(&frame[l4..l4 + 4]);
    out[l4..l4 + 2].copy_from_slice(&source.1.to_be_bytes());
    out[l4 + 2..l4 + 4].copy_from_slice(&destination.1.to_be_bytes());
    new_words.extend_from_slice(&out[l4..l4 + 4]);
    let csum_at = if proto == TCP { l4 + 16 } else { l4 + 6 };
    let old = be16(frame, csum_at);
    if proto == UDP && old == 0 {
        return out;
    }
    let mut new = updated_checksum(old, &old_words, &new_words);
    if proto == UDP && new == 0 {
        new = 0xffff;
    }
    out[csum_at..csum_at + 2].copy_from_slice(&new.to_be_bytes());
    out
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

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

/// Builds an Ethernet + IPv4 frame: `ihl_words` 32-bit words of IP
/// header (options are NOPs), the L4 bytes as given (checksums correct).
fn ipv4_frame(tuple: &Tuple, l4: Vec<u8>, ihl_words: u8, ttl: u8, frag: u16) -> Vec<u8> {
    let ihl = usize::from(ihl_words) * 4;
    let total = ihl + l4.len();
    let mut frame = vec![0u8; 14 + total];
    frame[0..6].copy_from_slice(&crate::HOST_MAC);
    frame[6..12].copy_from_slice(&crate::POD_MAC);
    frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = 14;
    frame[ip] = 0x40 | ihl_words;
    frame[ip + 2..ip + 4].copy_from_slice(&(total as u16).to_be_bytes());
    frame[ip + 4..ip + 6].copy_from_slice(&0x1234u16.to_be_bytes());
    frame[ip + 6..ip + 8].copy_from_slice(&frag.to_be_bytes());
    frame[ip + 8] = ttl;
    frame[ip + 9] = tuple.proto;
    frame[ip + 12..ip + 16].copy_from_slice(&tuple.src.0.octets());
    frame[ip + 16..ip + 20].copy_from_slice(&tuple.dst.0.octets());
    for byte in &mut frame[ip + 20..ip + ihl] {
        *byte = 1;
    }
    let l4_at = ip + ihl;
    frame[l4_at..].copy_from_slice(&l4);
    let ip_csum = !fold(ones_sum(&frame[ip..ip + ihl]));
    frame[ip + 10..ip + 12].copy_from_slice(&ip_csum.to_be_bytes());
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&tuple.src.0.octets());
    pseudo.extend_from_slice(&tuple.dst.0.octets());
    pseudo.extend_from_slice(&[0, tuple.proto]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    let csum_at = match tuple.proto {
        TCP => Some(l4_at + 16),
        UDP => Some(l4_at + 6),
        _ => None,
    };
    if let Some(at) = csum_at
        && at + 2 <= frame.len()
    {
        let mut sum = !fold(ones_sum(&pseudo) + ones_sum(&frame[l4_at..]));
        if tuple.proto == UDP && sum == 0 {
            sum = 0xffff;
        }
        frame[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    }
    frame
}

/// TCP header (no options) and payload; checksum left for [`ipv4_frame`].
fn tcp_l4(tuple: &Tuple, flags: u8, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut l4 = vec![0u8; 20];
    l4[0..2].copy_from_slice(&tuple.src.1.to_be_bytes());
    l4[2..4].copy_from_slice(&tuple.dst.1.to_be_bytes());
    l4[4..8].copy_from_slice(&seq.to_be_bytes());
    l4[8..12].copy_from_slice(&7u32.to_be_bytes());
    l4[12] = 5 << 4;
    l4[13] = flags;
    l4[14..16].copy_from_slice(&64240u16.to_be_bytes());
    l4.extend_from_slice(payload);
    l4
}

fn udp_l4(tuple: &Tuple, payload: &[u8]) -> Vec<u8> {
    let mut l4 = vec![0u8; 8];
    l4[0..2].copy_from_slice(&tuple.src.1.to_be_bytes());
    l4[2..4].copy_from_slice(&tuple.dst.1.to_be_bytes());
    l4[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    l4.extend_from_slice(payload);
    l4
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;

/// A well-formed frame of `tuple`: TCP (SYN when `opening`, else ACK, with
/// or without data) or UDP.
fn packet(rng: &mut Rng, tuple: &Tuple, opening: bool, ihl_words: u8, ttl: u8) -> Vec<u8> {
    let length = rng.below(64);
    let payload = rng.bytes(length);
    let l4 = if tuple.proto == TCP {
        let flags = if opening {
            SYN
        } else if payload.is_empty() {
            ACK
        } else {
            ACK | PSH
        };
        tcp_l4(tuple, flags, rng.next_u64() as u32, &payload)
    } else {
        udp_l4(tuple, &payload)
    };
    ipv4_frame(tuple, l4, ihl_words, ttl, 0)
}

/// The run's tables: 2 to 8 frontends of every kind, TCP and UDP, each
/// with 1 to 6 ready backends, local or not.
fn random_frontends(rng: &mut Rng) -> Vec<Frontend> {
    let kinds = [
        FrontendKind::ClusterIP,
        FrontendKind::NodePort,
        FrontendKind::LoadBalancer,
        FrontendKind::ExternalIP,
    ];
    let mut used = HashSet::new();
    let mut frontends = Vec::new();
    for i in 0..2 + rng.below(7) {
        let kind = *rng.pick(&kinds);
        // The first two are one of each, so every kind of frame can be
        // made (UDP without checksum needs a UDP flow).
        let protocol = match i {
            0 => Protocol::TCP,
            1 => Protocol::UDP,
            _ if rng.chance(50) => Protocol::TCP,
            _ => Protocol::UDP,
        };
        let address = match kind {
            FrontendKind::NodePort => NODE,
            FrontendKind::ClusterIP => Ipv4Addr::new(198, 19, 0, 1 + rng.below(8) as u8),
            _ => Ipv4Addr::new(198, 19, 100, 1 + rng.below(8) as u8),
        };
        let port = if kind == FrontendKind::NodePort {
            30000 + rng.below(16) as u16
        } else {
            [80, 443, 53, 8080][rng.below(4)]
        };
        if !used.insert((address, port, protocol)) {
            continue;
        }
        let backends: Vec<_> = (0..1 + rng.below(6))
            .map(|b| {
                let local = rng.chance(50);
                let third = if local { 1 } else { 2 };
                ready(
                    Ipv4Addr::new(198, 18, third, 10 + (i * 8 + b) as u8),
                    8080,
                    local,
                )
            })
            .collect();
        frontends.push(frontend(
            kind,
            &format!("f{i}"),
            (address, port),
            protocol,
            &backends,
        ));
    }
    frontends
}

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

/// Generates the frame of `kind`; None when that kind cannot be made now
/// (no flow yet).
fn generate(rng: &mut Rng, model: &Model, frontends: &[Frontend], kind: &str) -> Option<Vec<u8>> {
    let client = |rng: &mut Rng| {
        (
            Ipv4Addr::new(198, 18, 50 + rng.below(4) as u8, 1 + rng.below(250) as u8),
            1024 + rng.below(60000) as u16,
        )
    };
    let random_flow = |rng: &mut Rng| -> Option<ModelFlow> {
        if model.flows.is_empty() {
            return None;
        }
        // HashMap order is arbitrary but fixed for a run; index into it.
        model
            .flows
            .values()
            .nth(rng.below(model.flows.len()))
            .copied()
    };
    let well_formed = |rng: &mut Rng| -> Vec<u8> {
        let flow = random_flow(rng);
        let tuple = match flow {
            Some(flow) if rng.chance(70) => flow.forward(),
            _ => Tuple {
                src: client(rng),
                dst: (Ipv4Addr::new(198, 18, 60, 1), 9),
                proto: if rng.chance(50) { TCP } else { UDP },
            },
        };
        packet(rng, &tuple, false, 5, 64)
    };
    let frame = match kind {
        "new_flow" => {
            let f = rng.pick(frontends);
            let proto = proto_number(f.protocol);
            let mut tuple = Tuple {
                src: client(rng),
                dst: (f.address, f.port),
                proto,
            };
            let remote = f.backends.iter().any(|b| !b.local);
            let crowded = f.backends.iter().any(|b| {
                model
                    .per_backend
                    .get(&((b.address, b.port), proto))
                    .is_some_and(|n| *n >= MAX_FLOWS_PER_REMOTE_BACKEND)
            });
            if model.flows.len() >= MAX_FLOWS || (remote && crowded) {
                // Full: a packet of a flow there is instead.
                let flow = random_flow(rng)?;
                tuple = flow.forward();
                return Some(packet(rng, &tuple, false, 5, 64));
            }
            if model.flows.contains_key(&tuple) {
                return None;
            }
            packet(rng, &tuple, true, 5, 64)
        }
        "forward" => {
            let flow = random_flow(rng)?;
            let tuple = flow.forward();
            packet(rng, &tuple, false, 5, 64)
        }
        "reply" => {
            let flow = random_flow(rng)?;
            let tuple = Tuple {
                src: flow.backend,
                dst: flow.source,
                proto: flow.proto,
            };
            packet(rng, &tuple, false, 5, 64)
        }
        "not_a_frontend" => {
            let tuple = Tuple {
                src: client(rng),
                dst: (
                    Ipv4Addr::new(198, 18, 70, 1 + rng.below(250) as u8),
                    rng.next_u64() as u16,
                ),
                proto: if rng.chance(50) { TCP } else { UDP },
            };
            let opening = rng.chance(50);
            packet(rng, &tuple, opening, 5, 64)
        }
        "truncated" => {
            let frame = well_formed(rng);
            let cut = 14 + rng.below(frame.len() - 14);
            frame[..cut].to_vec()
        }
        "bad_ihl" => {
            let mut frame = well_formed(rng);
            frame[14] = 0x40 | rng.below(16) as u8;
            if rng.chance(20) {
                frame[14] = (rng.below(16) as u8) << 4 | 5;
            }
            frame
        }
        "bad_length" => {
            let mut frame = well_formed(rng);
            let total = rng.next_u64() as u16;
            frame[16..18].copy_from_slice(&total.to_be_bytes());
            frame
        }
        "ip_options" => {
            let flow = random_flow(rng)?;
            let tuple = flow.forward();
            let ihl_words = 6 + rng.below(10) as u8;
            packet(rng, &tuple, false, ihl_words, 64)
        }
        "fragment" => {
            let mut frame = well_formed(rng);
            let frag: u16 = if rng.chance(50) {
                0x2000
            } else {
                1 + rng.below(0x1fff) as u16
            };
            frame[20..22].copy_from_slice(&frag.to_be_bytes());
            frame
        }
        "ttl_0_1" => {
            let flow = random_flow(rng)?;
            let tuple = flow.forward();
            let ttl = rng.below(2) as u8;
            packet(rng, &tuple, false, 5, ttl)
        }
        "bad_l4_header" => {
            let mut frame = well_formed(rng);
            let l4 = 14 + 20;
            if frame[23] == TCP {
                frame[l4 + 12] = (rng.below(5) as u8) << 4;
            } else {
                let bad = if rng.chance(50) { rng.below(8) } else { 2000 } as u16;
                frame[l4 + 4..l4 + 6].copy_from_slice(&bad.to_be_bytes());
            }
            frame
        }
        "udp_no_checksum" => {
            let flow = random_flow(rng).filter(|f| f.proto == UDP)?;
            let tuple = Tuple {
                src: flow.client,
                dst: flow.frontend,
                proto: UDP,
            };
            let mut frame = packet(rng, &tuple, false, 5, 64);
            frame[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
            frame
        }
        "icmp_error_garbage" => {
            let tuple = Tuple {
                src: (Ipv4Addr::new(198, 18, 80, 1), 0),
                dst: client(rng),
                proto: ICMP,
            };
            let mut l4 = vec![*rng.pick(&[3u8, 11, 12, 0, 8, 5]), 0, 0, 0, 0, 0, 0, 0];
            // The quote: garbage, or an IP header whose version and
            // protocol are right and the rest is not a flow of ours.
            let length = rng.below(48);
            let mut quote = rng.bytes(length);
            if quote.len() >= 20 && rng.chance(60) {
                quote[0] = 0x45;
                quote[9] = *rng.pick(&[TCP, UDP, 1]);
                quote[12..16].copy_from_slice(&[198, 18, 90, 1]);
            }
            l4.extend_from_slice(&quote);
            ipv4_frame(&tuple, l4, 5, 64, 0)
        }
        "vlan" => {
            let frame = well_formed(rng);
            let mut tagged = frame[..12].to_vec();
            tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
            tagged.extend_from_slice(&frame[12..]);
            tagged
        }
        "ipv6" => {
            let mut frame = well_formed(rng);
            frame[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
            frame
        }
        _ => {
            let length = 14 + rng.below(120);
            let mut frame = rng.bytes(length);
            if rng.chance(50) {
                frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
                if let Some(version_ihl) = frame.get_mut(14) {
                    *version_ihl = 0x45;
                }
            }
            frame
        }
    };
    Some(frame)
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
