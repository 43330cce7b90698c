//! What the programs must do to a frame, written from the design.
use std::{collections::HashMap, net::Ipv4Addr};

use svc_agent::model::Frontend;

use super::{
    NAT_PORTS, NODE,
    frames::{End, ICMP, TCP, Tuple, UDP, addr, be16, hex, proto_number, rewrite},
};
use crate::{XDP_DROP, XDP_PASS};

/// A frontend as the model knows it.
#[derive(Clone, Debug)]
pub(super) struct ModelFrontend {
    pub(super) backends: Vec<(End, bool)>,
}

/// A flow the program translated: what its packets become.
#[derive(Clone, Copy, Debug)]
pub(super) struct ModelFlow {
    pub(super) client: End,
    pub(super) frontend: End,
    pub(super) backend: End,
    /// The source the backend sees: the client, or (node, NAT port).
    pub(super) source: End,
    pub(super) proto: u8,
}

impl ModelFlow {
    /// Client → frontend.
    pub(super) fn forward(&self) -> Tuple {
        Tuple {
            src: self.client,
            dst: self.frontend,
            proto: self.proto,
        }
    }
}

/// What the program must do with a frame.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Expect {
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
    pub(super) flows: HashMap<Tuple, ModelFlow>,
    /// Forward tuples by reply tuple (backend → source).
    replies: HashMap<Tuple, Tuple>,
    pub(super) per_backend: HashMap<(End, u8), usize>,
}

/// The parts of a well-formed IPv4 TCP/UDP frame the model works with.
pub(super) struct Parsed {
    pub(super) l4: usize,
    pub(super) tuple: Tuple,
}

impl Model {
    pub(super) fn new(frontends: &[Frontend]) -> Self {
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

    pub(super) fn expect(&self, frame: &[u8]) -> Expect {
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
    pub(super) fn check(&mut self, frame: &[u8], verdict: u32, out: &[u8]) -> Result<(), String> {
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
