//! The run's tables, and frames of every kind.
use std::{collections::HashSet, net::Ipv4Addr};

use svc_agent::model::{Frontend, FrontendKind, Protocol};

use super::{
    MAX_FLOWS, MAX_FLOWS_PER_REMOTE_BACKEND, NODE,
    frames::{ICMP, TCP, Tuple, UDP, ipv4_frame, packet, proto_number},
    model::{Model, ModelFlow},
    rng::Rng,
};
use crate::{frontend, ready};

/// The run's tables: 2 to 8 frontends of every kind, TCP and UDP, each
/// with 1 to 6 ready backends, local or not.
pub(super) fn random_frontends(rng: &mut Rng) -> Vec<Frontend> {
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

/// Generates the frame of `kind`; None when that kind cannot be made now
/// (no flow yet).
pub(super) fn generate(
    rng: &mut Rng,
    model: &Model,
    frontends: &[Frontend],
    kind: &str,
) -> Option<Vec<u8>> {
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
