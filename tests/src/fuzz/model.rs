//! What the programs must do to a frame, written from the design (the
//! comments of svc-ebpf flow.rs, ct.rs, icmp.rs and docs/design.md), not
//! from the programs. All three programs share the tables and conntrack:
//! a packet of a flow already translated is translated the same way
//! whichever program sees it; only a new flow depends on where it came
//! in (its [`Origin`]).
use std::{collections::HashMap, net::Ipv4Addr};

use svc_agent::model::Frontend;

use super::{
    HAIRPIN, NAT_PORTS, NODE,
    frames::{End, Tuple, addr, be16, hex, proto_number, rewrite},
    icmp::translated_back,
    parse::{IP, Parsed, Quote, Unparsed, parse},
    programs::{Origin, Program},
};

/// A frontend as the model knows it: its backends, and whether each is a
/// pod of this node.
#[derive(Clone, Debug)]
pub(super) struct ModelFrontend {
    pub(super) backends: Vec<(End, bool)>,
}

/// A flow the programs translated: what its packets become.
#[derive(Clone, Copy, Debug)]
pub(super) struct ModelFlow {
    pub(super) client: End,
    pub(super) frontend: End,
    pub(super) backend: End,
    /// The source the backend sees: the client, or (node or hairpin
    /// address, NAT port).
    pub(super) source: End,
    pub(super) proto: u8,
    /// Where the client's packets come in.
    pub(super) origin: Origin,
    /// The backend is a pod of this node: its replies come from a veth.
    pub(super) local: bool,
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

    /// Backend → the source it saw.
    pub(super) fn reply(&self) -> Tuple {
        Tuple {
            src: self.backend,
            dst: self.source,
            proto: self.proto,
        }
    }
}

/// What a program must do with a frame.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Expect {
    Drop,
    /// Passed on exactly as it came.
    Untouched,
    /// A new flow to this frontend: the program picks the backend.
    NewFlow(End),
    /// Rewritten to these (source, destination).
    Rewritten(End, End),
    /// An ICMP error about a flow's packet, translated back: these bytes.
    Translated(Vec<u8>),
}

/// What a new flow's first packet taught the model.
enum Learned {
    /// A flow (its outcome, the source and backend it was given).
    Flow(&'static str, End, End),
    /// A pod's new flow, rightly dropped: its tuple towards the chosen
    /// backend is a live flow's of another frontend.
    Clash,
}

/// What the programs must do to frames, given the tables and the flows
/// they translated so far.
pub struct Model {
    frontends: HashMap<(Ipv4Addr, u16, u8), ModelFrontend>,
    /// Flows by their forward tuple (client → frontend).
    pub(super) flows: HashMap<Tuple, ModelFlow>,
    /// Forward tuples by reply tuple (backend → source).
    replies: HashMap<Tuple, Tuple>,
    /// Source-NATed flows per (backend, protocol).
    pub(super) per_backend: HashMap<(End, u8), usize>,
}

/// Err unless the program said `want`.
fn verdict_is(program: Program, want: u32, got: u32, what: &str) -> Result<(), String> {
    (want == got).then_some(()).ok_or_else(|| {
        format!(
            "{}: expected {what} ({want}), got verdict {got}",
            program.name()
        )
    })
}

/// Err unless `out` is `want`.
fn bytes_are(want: &[u8], out: &[u8], what: &str) -> Result<(), String> {
    (want == out).then_some(()).ok_or_else(|| {
        format!(
            "expected {what}:\n  want {}\n  got  {}",
            hex(want),
            hex(out)
        )
    })
}

impl Model {
    pub(super) fn new(frontends: &[Frontend]) -> Self {
        let frontends = frontends
            .iter()
            .map(|f| {
                let backends = f
                    .backends
                    .iter()
                    .map(|b| ((crate::ipv4(b.address), b.port), b.local))
                    .collect();
                (
                    (crate::ipv4(f.address), f.port, proto_number(f.protocol)),
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

    pub(super) fn expect(&self, frame: &[u8]) -> Expect {
        let tuple = match parse(frame) {
            Err(Unparsed::Malformed) => return Expect::Drop,
            Err(Unparsed::Other) => return Expect::Untouched,
            Ok(Parsed::IcmpError(quote)) => return self.icmp_error(frame, &quote),
            Ok(Parsed::Flow { tuple, .. }) => tuple,
        };
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

    /// An ICMP error is translated back when it quotes a packet a flow
    /// sent to its backend: that packet's reply is the flow's. Any other
    /// (about a reply, which a client reports to the frontend; about no
    /// flow) passes untouched.
    fn icmp_error(&self, frame: &[u8], quote: &Quote) -> Expect {
        let reply = Tuple {
            src: quote.tuple.dst,
            dst: quote.tuple.src,
            proto: quote.tuple.proto,
        };
        let Some(forward) = self.replies.get(&reply) else {
            return Expect::Untouched;
        };
        let flow = &self.flows[forward];
        let snat_client = (flow.source != flow.client).then_some(flow.client);
        Expect::Translated(translated_back(frame, quote, flow.frontend, snat_client))
    }

    /// Checks `program`'s answer to `frame`; learns a new flow from it.
    /// Ok says what the answer was (the report counts each outcome).
    pub(super) fn check(
        &mut self,
        program: Program,
        frame: &[u8],
        verdict: u32,
        out: &[u8],
    ) -> Result<&'static str, String> {
        let pass = program.pass();
        let (outcome, source, destination) = match self.expect(frame) {
            Expect::Drop => {
                verdict_is(program, program.drop(), verdict, "a drop")?;
                return Ok("dropped");
            }
            Expect::Untouched => {
                verdict_is(program, pass, verdict, "a pass")?;
                bytes_are(frame, out, "the frame untouched")?;
                return Ok("untouched");
            }
            Expect::Translated(expected) => {
                verdict_is(program, pass, verdict, "a pass")?;
                bytes_are(&expected, out, "the ICMP error translated back")?;
                return Ok("icmp_error_translated_back");
            }
            Expect::Rewritten(source, destination) => ("translated", source, destination),
            Expect::NewFlow(frontend) => {
                match self.learn(program, frame, frontend, verdict, out)? {
                    Learned::Flow(outcome, source, backend) => (outcome, source, backend),
                    Learned::Clash => return Ok("new_flow_clash_dropped"),
                }
            }
        };
        verdict_is(program, pass, verdict, "a pass")?;
        let expected = rewrite(frame, source, destination);
        bytes_are(&expected, out, &format!("{source:?} -> {destination:?}"))?;
        Ok(outcome)
    }

    /// A new flow: the backend and NAT port the program chose, checked
    /// against what it may choose, and remembered.
    fn learn(
        &mut self,
        program: Program,
        frame: &[u8],
        frontend_end: End,
        verdict: u32,
        out: &[u8],
    ) -> Result<Learned, String> {
        let Ok(Parsed::Flow { l4, tuple }) = parse(frame) else {
            return Err("new flow that does not parse".into());
        };
        let origin = program.origin();
        let frontend = &self.frontends[&(frontend_end.0, frontend_end.1, tuple.proto)];
        if origin == Origin::Pod && verdict == program.drop() {
            // The model cannot know which backend was picked; one of them
            // at least must clash (as netfilter drops a clash).
            let may_clash = frontend
                .backends
                .iter()
                .any(|(b, _)| b.0 != tuple.src.0 && self.clashes(*b, &tuple, frontend_end));
            return match may_clash && out == frame {
                true => Ok(Learned::Clash),
                false => Err("a pod's new flow was dropped, but no backend clashes".into()),
            };
        }
        verdict_is(program, program.pass(), verdict, "a pass of a new flow")?;
        if out.len() != frame.len() {
            return Err("new flow: length changed".into());
        }
        let chosen_source = (addr(out, IP + 12), be16(out, l4));
        let backend = (addr(out, IP + 16), be16(out, l4 + 2));
        let Some(&(_, local)) = frontend.backends.iter().find(|(b, _)| *b == backend) else {
            return Err(format!(
                "new flow went to {backend:?}, not a backend of {frontend_end:?}"
            ));
        };
        // The source the backend must see (flow.rs `new_flow`): external
        // traffic to a backend elsewhere comes from the node; a pod
        // reaching itself, or a client whose tuple towards the backend is
        // another frontend's live flow's, from the hairpin address (a
        // pod's clashing flow is dropped instead).
        let hairpin = origin == Origin::Pod && backend.0 == tuple.src.0;
        let clash = !hairpin && self.clashes(backend, &tuple, frontend_end);
        let snat = match origin {
            Origin::World if !local => Some(NODE),
            Origin::World if clash => Some(HAIRPIN),
            Origin::Pod if hairpin => Some(HAIRPIN),
            Origin::Pod if clash => {
                return Err(format!(
                    "a pod's new flow to {backend:?} took the tuple of a live flow"
                ));
            }
            _ => None,
        };
        let source = match snat {
            Some(address) => {
                let (node, port) = chosen_source;
                if node != address || !(NAT_PORTS.0..=NAT_PORTS.1).contains(&port) {
                    return Err(format!(
                        "expected a NAT port of {address}, got source {chosen_source:?}"
                    ));
                }
                chosen_source
            }
            None => tuple.src,
        };
        let flow = ModelFlow {
            client: tuple.src,
            frontend: frontend_end,
            backend,
            source,
            proto: tuple.proto,
            origin,
            local,
        };
        if self.replies.contains_key(&flow.reply()) {
            return Err(format!(
                "source {source:?} to {backend:?} is another flow's"
            ));
        }
        self.flows.insert(tuple, flow);
        self.replies.insert(flow.reply(), tuple);
        if snat.is_some() {
            *self.per_backend.entry((backend, tuple.proto)).or_default() += 1;
        }
        let outcome = match snat {
            Some(address) if address == NODE => "new_flow_snat_to_node",
            Some(_) => "new_flow_snat_to_hairpin",
            None => "new_flow",
        };
        Ok(Learned::Flow(outcome, source, backend))
    }

    /// Whether a new flow of `tuple` (client → `frontend`) sent to
    /// `backend` as it is would take the reply tuple of a live flow of
    /// another frontend.
    fn clashes(&self, backend: End, tuple: &Tuple, frontend: End) -> bool {
        let reply = Tuple {
            src: backend,
            dst: tuple.src,
            proto: tuple.proto,
        };
        self.replies
            .get(&reply)
            .is_some_and(|forward| self.flows[forward].frontend != frontend)
    }
}
