//! The run's tables: random frontends of every kind.
use std::{collections::HashSet, net::Ipv4Addr};

use svc_agent::model::{BackendRef, Frontend, FrontendKind, Protocol};

use super::{NODE, rng::Rng};
use crate::{frontend, ready};

/// 3 to 8 frontends of every kind, TCP and UDP, each with 1 to 6 ready
/// backends, local or not. The first is a TCP ClusterIP with a local
/// backend, the second a UDP NodePort with a remote one, the third a TCP
/// LoadBalancer sharing the first one's local backend, so every kind of
/// frame can be made (UDP without checksum needs a UDP flow, a pod
/// reaching itself a local backend, a client port used again another
/// frontend of its protocol). Later frontends may share a backend with
/// an earlier one of their protocol too (a pod behind two Services),
/// where a client port used towards both can clash.
pub(super) fn random_frontends(rng: &mut Rng) -> Vec<Frontend> {
    let kinds = [
        FrontendKind::ClusterIP,
        FrontendKind::NodePort,
        FrontendKind::LoadBalancer,
        FrontendKind::ExternalIP,
    ];
    let mut used = HashSet::new();
    let mut frontends: Vec<Frontend> = Vec::new();
    for i in 0..3 + rng.below(6) {
        let (kind, protocol) = match i {
            0 => (FrontendKind::ClusterIP, Protocol::TCP),
            1 => (FrontendKind::NodePort, Protocol::UDP),
            2 => (FrontendKind::LoadBalancer, Protocol::TCP),
            _ if rng.chance(50) => (*rng.pick(&kinds), Protocol::TCP),
            _ => (*rng.pick(&kinds), Protocol::UDP),
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
        let mut backends: Vec<BackendRef> = (0..1 + rng.below(6))
            .map(|b| {
                let local = match (i, b) {
                    (0, 0) => true,
                    (1, 0) => false,
                    _ => rng.chance(50),
                };
                let third = if local { 1 } else { 2 };
                ready(
                    Ipv4Addr::new(198, 18, third, 10 + (i * 8 + b) as u8),
                    8080,
                    local,
                )
            })
            .collect();
        let earlier: Vec<&BackendRef> = frontends
            .iter()
            .filter(|f| f.protocol == protocol)
            .flat_map(|f| &f.backends)
            .collect();
        if i == 2 {
            backends[0] = *earlier[0];
        } else if !earlier.is_empty() && rng.chance(40) {
            backends[0] = **rng.pick(&earlier);
        }
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
