//! Frames of every kind, and the side of the node each comes from.
use std::net::Ipv4Addr;

use svc_agent::model::{Frontend, FrontendKind};

use super::{
    MAX_FLOWS, MAX_FLOWS_PER_SNAT_BACKEND, NODE,
    frames::{End, ICMP, IPIP, TCP, Tuple, UDP, icmp_frame, ipv4_frame, packet, proto_number},
    model::{Model, ModelFlow},
    programs::Origin,
    rng::Rng,
};

/// Where a frame comes from, which decides the programs it goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Side {
    /// From the network: the NIC's programs.
    World,
    /// From a pod of this node: its veth's program.
    Pod,
    /// Either (frames that are malformed or no Service traffic).
    Any,
}

impl From<Origin> for Side {
    fn from(origin: Origin) -> Self {
        match origin {
            Origin::World => Side::World,
            Origin::Pod => Side::Pod,
        }
    }
}

/// A client out on the network.
fn world_client(rng: &mut Rng) -> End {
    (
        Ipv4Addr::new(198, 18, 50 + rng.below(4) as u8, 1 + rng.below(250) as u8),
        1024 + rng.below(60000) as u16,
    )
}

/// A pod of this node that backs no frontend.
fn pod_client(rng: &mut Rng) -> End {
    (
        Ipv4Addr::new(198, 18, 1, 100 + rng.below(100) as u8),
        1024 + rng.below(60000) as u16,
    )
}

/// A random flow of the model's for which `wanted` holds, if a few tries
/// find one. HashMap order is arbitrary but fixed for a run: the same
/// seed picks the same flows.
fn pick_flow(
    rng: &mut Rng,
    model: &Model,
    wanted: impl Fn(&ModelFlow) -> bool,
) -> Option<ModelFlow> {
    if model.flows.is_empty() {
        return None;
    }
    (0..8)
        .filter_map(|_| model.flows.values().nth(rng.below(model.flows.len())))
        .find(|flow| wanted(flow))
        .copied()
}

/// Whether a new flow to `frontend` might find its backend without a
/// free NAT port among the ports the program tries (see MAX_FLOWS).
fn crowded(model: &Model, frontend: &Frontend) -> bool {
    let proto = proto_number(frontend.protocol);
    model.flows.len() >= MAX_FLOWS
        || frontend.backends.iter().any(|b| {
            model
                .per_backend
                .get(&((crate::ipv4(b.address), b.port), proto))
                .is_some_and(|n| *n >= MAX_FLOWS_PER_SNAT_BACKEND)
        })
}

/// The opening packet of a new flow from `client` to `frontend`; None
/// when that flow exists or the tables are too full.
fn opening(rng: &mut Rng, model: &Model, client: End, frontend: &Frontend) -> Option<Vec<u8>> {
    let tuple = Tuple {
        src: client,
        dst: (crate::ipv4(frontend.address), frontend.port),
        proto: proto_number(frontend.protocol),
    };
    if crowded(model, frontend) || model.flows.contains_key(&tuple) {
        return None;
    }
    Some(packet(rng, &tuple, true, 5, 64))
}

/// An IP header and what follows it, as an ICMP error quotes them: the
/// first 8 bytes of L4 (RFC 792), or all of it.
fn quote_of(rng: &mut Rng, frame: &[u8]) -> Vec<u8> {
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let length = if rng.chance(50) { ihl + 8 } else { ip.len() };
    ip[..length].to_vec()
}

/// A router on the way to a remote backend.
fn router(rng: &mut Rng) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 80, 1 + rng.below(250) as u8)
}

/// The four ICMP header bytes after the checksum of a fragmentation
/// needed: the next hop's MTU.
fn mtu_bytes(rng: &mut Rng) -> [u8; 4] {
    let mtu = (576 + rng.below(1000) as u16).to_be_bytes();
    [0, 0, mtu[0], mtu[1]]
}

/// An ICMP error about a packet a flow sent to its backend (source or
/// NAT address → backend): destination unreachable (port unreachable from
/// the backend, fragmentation needed, net/host/protocol unreachable), or
/// time exceeded and parameter problem. From the backend or a router on
/// the way; a local backend's come from its veth, the rest from the NIC.
fn icmp_quoting_flow(rng: &mut Rng, model: &Model, unreachable: bool) -> Option<(Vec<u8>, Side)> {
    let flow = pick_flow(rng, model, |_| true)?;
    let sent = Tuple {
        src: flow.source,
        dst: flow.backend,
        proto: flow.proto,
    };
    let inner_ihl_words = if rng.chance(20) {
        6 + rng.below(4) as u8
    } else {
        5
    };
    let packet = packet(rng, &sent, false, inner_ihl_words, 64);
    let quote = quote_of(rng, &packet);
    let backend = flow.backend.0;
    let (reporter, kind, rest) = match (unreachable, rng.below(3)) {
        (true, 0) => (backend, (3, 3), [0; 4]),
        (true, 1) => (router(rng), (3, 4), mtu_bytes(rng)),
        (true, _) => (router(rng), (3, rng.below(3) as u8), [0; 4]),
        (false, 0) => (backend, (12, 0), [20, 0, 0, 0]),
        (false, _) => (router(rng), (11, 0), [0; 4]),
    };
    // No router stands between the node and its pods.
    let (reporter, side) = match flow.local {
        true => (backend, Side::Pod),
        false => (reporter, Side::World),
    };
    let frame = icmp_frame(reporter, flow.source.0, kind, rest, &quote);
    Some((frame, side))
}

/// An ICMP error a client sends about a reply it got (frontend → client):
/// port unreachable, or fragmentation needed on the client's side.
fn icmp_quoting_reply(rng: &mut Rng, model: &Model) -> Option<(Vec<u8>, Side)> {
    let flow = pick_flow(rng, model, |_| true)?;
    let received = Tuple {
        src: flow.frontend,
        dst: flow.client,
        proto: flow.proto,
    };
    let packet = packet(rng, &received, false, 5, 64);
    let quote = quote_of(rng, &packet);
    let (kind, rest) = match rng.chance(50) {
        true => ((3, 3), [0; 4]),
        false => ((3, 4), mtu_bytes(rng)),
    };
    let frame = icmp_frame(flow.client.0, flow.frontend.0, kind, rest, &quote);
    Some((frame, flow.origin.into()))
}

/// Generates the frame of `kind` and the side it comes from; None when
/// that kind cannot be made now (no fitting flow or frontend yet).
pub(super) fn generate(
    rng: &mut Rng,
    model: &Model,
    frontends: &[Frontend],
    kind: &str,
) -> Option<(Vec<u8>, Side)> {
    let any_flow = |rng: &mut Rng| pick_flow(rng, model, |_| true);
    let a_packet_of =
        |rng: &mut Rng, tuple: Tuple, side: Side| Some((packet(rng, &tuple, false, 5, 64), side));
    let frame = match kind {
        "new_flow" => {
            let f = rng.pick(frontends);
            let client = world_client(rng);
            if crowded(model, f) {
                // Full: a packet of a flow there is instead.
                let flow = pick_flow(rng, model, |f| f.origin == Origin::World)?;
                return a_packet_of(rng, flow.forward(), Side::World);
            }
            opening(rng, model, client, f)?
        }
        "forward" => {
            let flow = pick_flow(rng, model, |f| f.origin == Origin::World)?;
            return a_packet_of(rng, flow.forward(), Side::World);
        }
        "reply" => {
            let flow = pick_flow(rng, model, |f| !f.local)?;
            return a_packet_of(rng, flow.reply(), Side::World);
        }
        "pod_to_cluster_ip" | "pod_to_node_port" => {
            let cluster_ip = kind == "pod_to_cluster_ip";
            let candidates: Vec<&Frontend> = frontends
                .iter()
                .filter(|f| (f.kind == FrontendKind::ClusterIP) == cluster_ip)
                .collect();
            let f = *rng.pick(&candidates);
            let client = pod_client(rng);
            return opening(rng, model, client, f).map(|frame| (frame, Side::Pod));
        }
        "pod_hairpin" => {
            let f = rng.pick(frontends);
            let locals: Vec<_> = f.backends.iter().filter(|b| b.local).collect();
            if locals.is_empty() {
                return None;
            }
            let client = (
                crate::ipv4(rng.pick(&locals).address),
                1024 + rng.below(64000) as u16,
            );
            return opening(rng, model, client, f).map(|frame| (frame, Side::Pod));
        }
        "pod_forward" => {
            let flow = pick_flow(rng, model, |f| f.origin == Origin::Pod)?;
            return a_packet_of(rng, flow.forward(), Side::Pod);
        }
        "pod_reply" => {
            let flow = pick_flow(rng, model, |f| f.local)?;
            return a_packet_of(rng, flow.reply(), Side::Pod);
        }
        "client_port_reuse" => {
            // A client's port of a live flow, to another frontend: one
            // that shares the flow's backend, mostly, where the backend
            // would see the two flows as one.
            let flow = any_flow(rng)?;
            let others: Vec<&Frontend> = frontends
                .iter()
                .filter(|f| {
                    proto_number(f.protocol) == flow.proto
                        && (crate::ipv4(f.address), f.port) != flow.frontend
                })
                .collect();
            let sharing: Vec<&Frontend> = others
                .iter()
                .copied()
                .filter(|f| {
                    f.backends
                        .iter()
                        .any(|b| (crate::ipv4(b.address), b.port) == flow.backend)
                })
                .collect();
            let pool = if !sharing.is_empty() && rng.chance(80) {
                &sharing
            } else {
                &others
            };
            if pool.is_empty() {
                return None;
            }
            let f = *rng.pick(pool);
            return opening(rng, model, flow.client, f).map(|frame| (frame, flow.origin.into()));
        }
        "icmp_unreachable_quoting_flow" => return icmp_quoting_flow(rng, model, true),
        "icmp_time_exceeded_quoting_flow" => return icmp_quoting_flow(rng, model, false),
        "icmp_error_quoting_reply" => return icmp_quoting_reply(rng, model),
        _ => return malformed_or_foreign(rng, model, kind).map(|frame| (frame, Side::Any)),
    };
    Some((frame, Side::World))
}

/// The kinds of frame every program must treat alike: malformed, not
/// Service traffic, or odd packets of known flows.
fn malformed_or_foreign(rng: &mut Rng, model: &Model, kind: &str) -> Option<Vec<u8>> {
    let any_flow = |rng: &mut Rng| pick_flow(rng, model, |_| true);
    let well_formed = |rng: &mut Rng| -> Vec<u8> {
        let tuple = match any_flow(rng) {
            Some(flow) if rng.chance(70) => flow.forward(),
            _ => Tuple {
                src: world_client(rng),
                dst: (Ipv4Addr::new(198, 18, 60, 1), 9),
                proto: if rng.chance(50) { TCP } else { UDP },
            },
        };
        packet(rng, &tuple, false, 5, 64)
    };
    let frame = match kind {
        "not_a_frontend" => {
            let tuple = Tuple {
                src: world_client(rng),
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
            let flow = any_flow(rng)?;
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
            let flow = any_flow(rng)?;
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
            let flow = any_flow(rng).filter(|f| f.proto == UDP)?;
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
                dst: world_client(rng),
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
        // IPIP that is not direct server return (see svc-ebpf's tunnel.rs),
        // whole or cut short: a tunnel to the node's own address (the
        // inner packet may be a flow's), or an inner packet for no
        // frontend.
        "ipip_not_ours" | "ipip_truncated" => {
            let to_node = rng.chance(50);
            let inner = if to_node {
                well_formed(rng)
            } else {
                let tuple = Tuple {
                    src: world_client(rng),
                    dst: (Ipv4Addr::new(198, 18, 60, 1), 9),
                    proto: if rng.chance(50) { TCP } else { UDP },
                };
                packet(rng, &tuple, false, 5, 64)
            };
            let outer = Tuple {
                src: (Ipv4Addr::new(198, 18, 0, 12), 0),
                dst: if to_node {
                    (NODE, 0)
                } else {
                    (Ipv4Addr::new(198, 18, 2, 1 + rng.below(250) as u8), 0)
                },
                proto: IPIP,
            };
            let frame = ipv4_frame(&outer, inner[14..].to_vec(), 5, 64, 0x4000);
            if kind == "ipip_truncated" {
                let cut = 14 + rng.below(frame.len() - 14);
                frame[..cut].to_vec()
            } else {
                frame
            }
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
