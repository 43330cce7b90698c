//! What happens to one packet, whichever way it came in: the flow cache,
//! then conntrack, then the frontend tables for new flows. Each of the
//! three paths past the cache ([`reply`], [`forward`], [`new_flow`])
//! decides a [`Translation`], and [`finish`] carries it out. A flow to a
//! backend on another node may be sent there by direct server return
//! instead (tunnel.rs); a flow another node sent here that way comes in
//! [`Delivered`] to its backend.
use svc_common::{
    Backend, DropReason, Flow, NodeConfig, backend_flags, flow_flags, proto, rev_nat_flags,
};

use crate::{
    action::{Action, Verdict},
    cache::{self, Decision, Probe},
    ct::{self, Snat},
    headers::{TCP_ACK, TCP_SYN},
    icmp,
    lb::{self, Selected, Selection},
    maps::{CONFIG_V1, COUNTED},
    nat,
    packet::{self, Ipv4Flow, Origin, Packet, Parsed},
    reject,
    route::{self, Route},
    stats,
    tunnel::{self, Delivered},
};

/// What one of the paths decided for a packet it translates.
struct Translation {
    /// The packet's new endpoints, and the frontend it counts for.
    to: Decision,
    /// The program sends it by its own route (see route.rs), looked up
    /// for `to`'s addresses; else the stack does.
    routed: bool,
    /// The flow is established (see ct.rs): handed to the stack, it is
    /// cached.
    established: bool,
    /// Sent untranslated, encapsulated, to the backend on another node
    /// that `to`'s destination names (direct server return; `to`'s
    /// source is this node's address, the outer header's source).
    tunnelled: bool,
    /// A flow another node sent here by direct server return, to a
    /// backend of this node (its entries keep its frontend).
    delivered: bool,
}

/// What a new flow's conntrack entries are made of.
struct NewFlow {
    selected: Selected,
    snat: Snat,
}

/// `delivered`: the packet came from another node by direct server
/// return, for that backend (tunnel.rs `receive` took its outer header
/// off); else NONE.
#[inline(always)]
pub fn process<P: Packet>(
    pkt: &P,
    origin: Origin,
    delivered: Delivered,
) -> Result<Action, DropReason> {
    let flow = match packet::parse(pkt)? {
        Parsed::Ipv4(flow) => flow,
        Parsed::IcmpError(err) => return icmp::translate(pkt, &err),
        Parsed::Other => return Ok(Action::PASS),
    };

    // A flow the cache holds (see cache.rs) skips conntrack; a flow
    // handed to the stack below is cached for the packets after this one.
    let probe = Probe::new(&flow, origin);
    if let Some(hit) = probe.lookup(pkt, &flow) {
        if hit.flags & COUNTED != 0 {
            stats::count_frontend(hit.rev_nat_id, u32::from(flow.ip_len));
        }
        cache::rewrite(pkt, &flow, &hit)?;
        pkt.mark_translated();
        return Ok(Action::PASS);
    }

    let key = ct::key_of(&flow);
    if let Some(tracked) = ct::lookup(&key, &flow, origin) {
        // SAFETY: a map value, valid while the program runs (see Tracked).
        let entry = unsafe { &*tracked.entry };
        if entry.flags & flow_flags::REPLY != 0 {
            let translation = reply(&flow, entry, origin, tracked.established)?;
            return finish(pkt, &flow, &probe, translation, None);
        }
        if let Some(translation) = forward(&flow, entry, origin, tracked.established) {
            return finish(pkt, &flow, &probe, translation, None);
        }
        // The flow's backend is gone (UDP): choose again below, as a new flow.
    } else if flow.proto == proto::TCP
        && flow.tcp_flags & (TCP_SYN | TCP_ACK) != TCP_SYN
        && ct::being_collected(&key)
    {
        // A segment of a connection under way whose entry the collector
        // holds out for a moment: sent again by its sender, it finds the
        // entry back. Balanced anew, it could go to another backend.
        return Err(DropReason::CtBeingCollected);
    }

    let is_delivered = delivered.backend_addr_be != 0;
    let selected = if is_delivered {
        // No id on this node: the entries keep the address replies leave
        // from in its place (see flow_flags::DELIVERED).
        Selected {
            backend_id: delivered.kept_addr_be,
            backend: Backend {
                addr_be: delivered.backend_addr_be,
                port_be: delivered.backend_port_be,
                proto: flow.proto,
                flags: backend_flags::LOCAL,
            },
            rev_nat_id: delivered.rev_nat_id,
        }
    } else {
        match lb::select(
            flow.saddr_be,
            Some(flow.sport_be),
            flow.daddr_be,
            flow.dport_be,
            flow.proto,
        )? {
            // Refused, not routed out. Not by the NIC's TC program, whose
            // stack has no room for it: the XDP program in front of it does.
            Selection::NotAFrontend
                if (origin == Origin::Pod || !P::SENDS_ANYWHERE)
                    && lb::in_service_cidrs(flow.daddr_be) =>
            {
                return refuse(pkt, &flow, false, UNSERVED);
            }
            Selection::NotAFrontend => return Ok(Action::PASS),
            Selection::Empty { drop } => return refuse(pkt, &flow, drop, NO_BACKEND),
            Selection::Backend(selected) => selected,
        }
    };
    // Read back from its stack slot: LLVM would otherwise merge the two
    // ways the value is made (a map copy, a built one) into code the
    // verifier refuses. Only XDP takes delivery; the TC programs have no
    // stack for the slot.
    let selected = if P::SPARE_STACK {
        // SAFETY: a plain copy of a local.
        unsafe { core::ptr::read_volatile(&selected) }
    } else {
        selected
    };
    let (translation, new) = new_flow(&flow, origin, selected, is_delivered)?;
    finish(pkt, &flow, &probe, translation, Some(new))
}

/// A reply of a tracked flow (backend → client, or → the NAT address):
/// it comes from the frontend, and goes back to the client. A frontend
/// removed under a live flow leaves nothing to translate back to; the
/// client would reset the reply anyway.
#[inline(always)]
fn reply(
    flow: &Ipv4Flow,
    entry: &Flow,
    origin: Origin,
    established: bool,
) -> Result<Translation, DropReason> {
    let frontend = ct::frontend_of(entry, origin).ok_or(DropReason::SlotMissing)?;
    let (daddr_be, dport_be) = if entry.flags & flow_flags::SNAT != 0 {
        (entry.nat_addr_be, entry.nat_port_be)
    } else {
        (flow.daddr_be, flow.dport_be)
    };
    Ok(Translation {
        to: Decision {
            saddr_be: frontend.addr_be,
            daddr_be,
            sport_be: frontend.port_be,
            dport_be,
            counted: None,
        },
        // Replies from one of the node's own addresses (a NodePort).
        routed: frontend.flags & rev_nat_flags::LOCAL_ADDRESS != 0,
        established,
        tunnelled: false,
        delivered: false,
    })
}

/// A packet of a tracked flow in its original direction: to the flow's
/// backend, from its NAT address and port if it has them. None when the
/// backend is gone (see [`flow_backend`]).
#[inline(always)]
fn forward(
    flow: &Ipv4Flow,
    entry: &Flow,
    origin: Origin,
    established: bool,
) -> Option<Translation> {
    let backend = flow_backend(entry, flow.proto)?;
    if origin == Origin::World && entry.flags & flow_flags::TUNNELLED != 0 {
        // Without this node's address, there is no route to find (below).
        let node_addr_be = tunnel::node_address().unwrap_or(0);
        return Some(tunnelled(
            flow,
            entry.rev_nat_id,
            &backend,
            node_addr_be,
            established,
        ));
    }
    let snat = entry.flags & flow_flags::SNAT != 0;
    let (saddr_be, sport_be) = if snat {
        (entry.nat_addr_be, entry.nat_port_be)
    } else {
        (flow.saddr_be, flow.sport_be)
    };
    Some(Translation {
        to: Decision {
            saddr_be,
            daddr_be: backend.addr_be,
            sport_be,
            dport_be: backend.port_be,
            counted: Some(entry.rev_nat_id),
        },
        // Only SNAT to the node's address is routed here; the hairpin
        // source of a client port clash (see `new_flow`) goes to a local
        // pod through the stack, as flows without SNAT do.
        routed: snat && origin == Origin::World && snat_to_node(entry),
        established,
        tunnelled: false,
        delivered: false,
    })
}

/// A packet of a flow sent to `backend`, on another node, by direct
/// server return: untranslated, counted for its frontend; `to` is the
/// outer header's source (this node, `node_addr`) and destination (the
/// backend), and the backend's port.
#[inline(always)]
fn tunnelled(
    flow: &Ipv4Flow,
    rev_nat_id: u32,
    backend: &Backend,
    node_addr_be: u32,
    established: bool,
) -> Translation {
    Translation {
        to: Decision {
            saddr_be: node_addr_be,
            daddr_be: backend.addr_be,
            sport_be: flow.sport_be,
            dport_be: backend.port_be,
            counted: Some(rev_nat_id),
        },
        routed: true,
        established,
        tunnelled: true,
        delivered: false,
    }
}

/// The first packet of a flow to a frontend, sent to the `selected`
/// backend, with the source NAT it needs, or by direct server return
/// (`delivered`: a flow another node sent here). Its source port is the
/// client's until [`finish`] makes the flow's entries (and claims a NAT
/// port).
#[inline(always)]
fn new_flow(
    flow: &Ipv4Flow,
    origin: Origin,
    selected: Selected,
    delivered: bool,
) -> Result<(Translation, NewFlow), DropReason> {
    let backend = &selected.backend;
    // External traffic to a backend elsewhere must come back through
    // this node: its source becomes the node's address, and it leaves by
    // the program's own route (the stack would take that source for a
    // martian). A pod that reaches itself through a Service would see its
    // own address as the source and drop the packet: it gets the hairpin
    // address, which is no local address, so it goes through the stack.
    let remote = backend.flags & backend_flags::LOCAL == 0;
    let routed = origin == Origin::World && remote;
    // Or it goes there by direct server return: then the node's address
    // is the outer header's source, and the flow has no source NAT.
    let mut tunnels = false;
    let snat = if routed {
        let config = node_config().ok_or(DropReason::NodeConfigMissing)?;
        tunnels = tunnel::used_for(config.lb_mode, flow.proto);
        Snat {
            addr_be: config.node_addr_be,
            port_min: config.nat_port_min,
            port_max: config.nat_port_max,
        }
    } else if (origin == Origin::Pod && backend.addr_be == flow.saddr_be)
        || ct::reply_tuple_taken(
            flow,
            backend,
            selected.rev_nat_id,
            if delivered { selected.backend_id } else { 0 },
        )
    {
        // The client's port already reaches this backend through
        // another of its frontends, on a live flow. An external
        // client's new flow gets the hairpin source (the backend
        // is local), as masquerading would give it a port of its
        // own (a delivered one too); a pod's is dropped, as netfilter
        // drops a clash.
        if origin == Origin::Pod && backend.addr_be != flow.saddr_be {
            return Err(DropReason::TupleClash);
        }
        let config = node_config().ok_or(DropReason::NodeConfigMissing)?;
        Snat {
            addr_be: config.hairpin_addr_be,
            port_min: config.nat_port_min,
            port_max: config.nat_port_max,
        }
    } else {
        Snat::NONE
    };
    let saddr_be = if snat.addr_be != 0 {
        snat.addr_be
    } else {
        flow.saddr_be
    };
    let translation = Translation {
        to: Decision {
            saddr_be,
            daddr_be: backend.addr_be,
            sport_be: flow.sport_be,
            dport_be: backend.port_be,
            counted: Some(selected.rev_nat_id),
        },
        routed,
        established: false,
        tunnelled: tunnels,
        delivered,
    };
    let snat = if tunnels { Snat::NONE } else { snat };
    Ok((translation, NewFlow { selected, snat }))
}

/// The reasons a refused packet is counted under: TCP (reset), UDP (port
/// unreachable).
type Refusal = (DropReason, DropReason);
const NO_BACKEND: Refusal = (DropReason::NoBackendReset, DropReason::NoBackendUnreachable);
const UNSERVED: Refusal = (
    DropReason::ServiceCidrReset,
    DropReason::ServiceCidrUnreachable,
);

/// A frontend without backends, or an unserved address of the service
/// CIDRs: the packet is dropped (`drop`), or answered as a closed port
/// would answer it.
#[inline(always)]
fn refuse<P: Packet>(
    pkt: &P,
    flow: &Ipv4Flow,
    drop: bool,
    (reset, unreachable): Refusal,
) -> Result<Action, DropReason> {
    if drop {
        return Err(DropReason::NoBackendDrop);
    }
    if !P::SENDS_ANYWHERE && !pkt.listed_target(pkt.ingress_ifindex()) {
        // XDP cannot send the answer back: the TC program will.
        return Ok(Action::PASS);
    }
    if flow.proto == proto::TCP {
        reject::tcp_reset(pkt, flow)?;
        Ok(Action::bounce(reset))
    } else {
        reject::udp_unreachable(pkt, flow)?;
        Ok(Action::bounce(unreachable))
    }
}

/// Carries a [`Translation`] out. Its route is looked up first, before
/// any state is made: a program that cannot send the packet that way
/// passes it on untouched (XDP, to the TC program behind it), the whole
/// flow with it. A packet that cannot be delivered is answered instead
/// (see [`answer_if_undeliverable`]). Then a new flow's conntrack entries
/// are made, which gives its NAT port, and the packet is rewritten (or
/// encapsulated) and sent.
#[inline(always)]
fn finish<P: Packet>(
    pkt: &P,
    flow: &Ipv4Flow,
    probe: &Probe,
    mut translation: Translation,
    new: Option<NewFlow>,
) -> Result<Action, DropReason> {
    let to = &mut translation.to;
    let route = if translation.routed {
        let outer = if translation.tunnelled {
            tunnel::OUTER_LEN
        } else {
            0
        };
        let Some(route) = route::plan(pkt, to.saddr_be, to.daddr_be, flow, outer) else {
            return Ok(Action::PASS);
        };
        Some(route)
    } else {
        None
    };
    if let Some(answer) =
        answer_if_undeliverable(pkt, flow, route.as_ref(), to.saddr_be, to.daddr_be)?
    {
        return Ok(answer);
    }
    // The route's share of sending, done now (the next hop's MAC
    // addresses written, the TTL down): what is kept past conntrack is the
    // verdict alone, not the route (the TC programs' stack has no room for
    // both).
    let sent = match route {
        Some(route) => Some(route::send(pkt, route, flow.proto)?),
        None => None,
    };
    if let Some(new) = new {
        let selected = &new.selected;
        let created = ct::create(
            flow,
            selected.backend_id,
            &selected.backend,
            selected.rev_nat_id,
            new.snat,
            if translation.tunnelled {
                flow_flags::TUNNELLED
            } else if translation.delivered {
                flow_flags::DELIVERED
            } else {
                0
            },
        )?;
        to.sport_be = created.nat_port_be;
    }
    match sent {
        Some(action) if translation.tunnelled => send_tunnelled(pkt, flow, to, action),
        sent => rewrite_and_send(pkt, flow, probe, to, sent, translation.established),
    }
}

/// The end of [`finish`] for a flow sent by direct server return to the
/// backend `decision` names: counted, a SYN's MSS clamped to what fits
/// the route once encapsulated, and sent as `sent` says (route.rs `send`
/// made it ready to leave) inside an IPIP header. The TC program (which sends
/// only what XDP could not, for want of the next hop's MAC address)
/// leaves the MSS as it is: that connection's client learns the size from
/// the ICMP fragmentation needed its first full segment gets.
#[inline(always)]
fn send_tunnelled<P: Packet>(
    pkt: &P,
    flow: &Ipv4Flow,
    decision: &Decision,
    sent: Action,
) -> Result<Action, DropReason> {
    if let Some(rev_nat_id) = decision.counted {
        stats::count_frontend(rev_nat_id, u32::from(flow.ip_len));
    }
    // Not in TC: its stack has no room for it (see Packet::SPARE_STACK).
    if P::SPARE_STACK
        && flow.tcp_flags & TCP_SYN != 0
        && let Some(mtu) = route::mtu(pkt, decision.saddr_be, decision.daddr_be, proto::IPIP)
    {
        // The outer header, and the inner IP and TCP headers.
        let headers = tunnel::OUTER_LEN + 40;
        tunnel::clamp_mss(pkt, flow, mtu.saturating_sub(headers))?;
    }
    if matches!(sent.verdict(), Verdict::Pass) {
        // Only the stack could send it (no route, or fragments needed),
        // and it cannot be handed a packet from one of the node's own
        // addresses.
        return Err(DropReason::TunnelUnroutable);
    }
    tunnel::encapsulate(pkt, decision.saddr_be, decision.daddr_be, decision.dport_be)?;
    Ok(sent)
}

#[inline(always)]
fn node_config() -> Option<NodeConfig> {
    CONFIG_V1.get(0).copied().filter(|c| c.node_addr_be != 0)
}

/// Where an established flow goes. TCP keeps its backend address for good:
/// the connection lives as long as the pod does, whatever the Service's
/// backend set says (kube-proxy's conntrack behaves the same). UDP has no
/// connection to keep; a datagram flow whose backend left the BACKENDS
/// table picks a live one again, as kube-proxy flushes UDP conntrack
/// entries of removed endpoints.
#[inline(always)]
fn flow_backend(entry: &Flow, protocol: u8) -> Option<Backend> {
    let stored = Backend {
        addr_be: entry.backend_addr_be,
        port_be: entry.backend_port_be,
        proto: protocol,
        flags: 0,
    };
    // A delivered flow's backend is the one its sender chose: this node
    // has no say (and no id for it).
    if protocol == proto::TCP || entry.flags & flow_flags::DELIVERED != 0 {
        return Some(stored);
    }
    let current = lb::backend(entry.backend_id)?;
    (current.addr_be == stored.addr_be && current.port_be == stored.port_be).then_some(stored)
}

/// Whether a flow's source NAT is to the node's own address (a remote
/// backend), not to the hairpin address.
#[inline(always)]
fn snat_to_node(entry: &Flow) -> bool {
    node_config().is_some_and(|config| config.node_addr_be == entry.nat_addr_be)
}

/// ICMP errors across the translation. A packet whose TTL runs out here
/// (traceroute), or that its sender forbade fragmenting and does not fit
/// the route to its translated destination (path MTU discovery; from
/// `saddr`, to `daddr`), is answered here with ICMP time exceeded or
/// fragmentation needed, quoting it untranslated: the stack would answer
/// about the translated packet, which the sender cannot match to its
/// socket. `route` is the program's own route for it, if it has one; else
/// the route the stack will take is looked up (for those packets only).
#[inline(always)]
fn answer_if_undeliverable<P: Packet>(
    pkt: &P,
    flow: &Ipv4Flow,
    route: Option<&Route>,
    saddr_be: u32,
    daddr_be: u32,
) -> Result<Option<Action>, DropReason> {
    // An answer XDP cannot send back is left to the TC program.
    let untouched = Ok(Some(Action::PASS));
    if route::expires(pkt, flow, route, saddr_be, daddr_be) {
        if !P::SENDS_ANYWHERE && !pkt.listed_target(pkt.ingress_ifindex()) {
            return untouched;
        }
        reject::time_exceeded(pkt, flow)?;
        return Ok(Some(Action::bounce(DropReason::TimeExceeded)));
    }
    let mtu = match route {
        Some(Route::TooBig { mtu }) => *mtu,
        Some(_) => return Ok(None),
        None => match route::too_big(pkt, flow, saddr_be, daddr_be) {
            Some(mtu) => mtu,
            None => return Ok(None),
        },
    };
    if !P::SENDS_ANYWHERE && !pkt.listed_target(pkt.ingress_ifindex()) {
        return untouched;
    }
    reject::fragmentation_needed(pkt, flow, mtu)?;
    Ok(Some(Action::bounce(DropReason::FragmentationNeeded)))
}

/// The end of [`finish`]: the packet counted for its frontend (when
/// `decision` says so), rewritten as `decision` says, and sent as `sent`
/// says (the program's own route, made ready by route.rs
/// `send`); one of an established flow handed to the stack
/// instead leaves `decision` in the flow cache for the flow's next packets
/// (a flow not established yet must keep taking the conntrack path, which
/// moves it along: see ct.rs).
#[inline(always)]
fn rewrite_and_send<P: Packet>(
    pkt: &P,
    flow: &Ipv4Flow,
    probe: &Probe,
    decision: &Decision,
    sent: Option<Action>,
    established: bool,
) -> Result<Action, DropReason> {
    if let Some(rev_nat_id) = decision.counted {
        stats::count_frontend(rev_nat_id, u32::from(flow.ip_len));
    }
    if sent.is_none() && established {
        probe.fill(flow, decision);
    }
    nat::rewrite_destination(pkt, flow, decision.daddr_be, decision.dport_be)?;
    nat::rewrite_source(pkt, flow, decision.saddr_be, decision.sport_be)?;
    match sent {
        Some(action) => Ok(action),
        None => {
            pkt.mark_translated();
            Ok(Action::PASS)
        }
    }
}
