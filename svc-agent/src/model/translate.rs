//! One Service and its EndpointSlices in, the frontends one node must hold
//! out, and the rules between Services (who owns a shared address): every
//! kube-proxy rule lives here (and in the modules it calls), nowhere else.
//! The whole cluster is translated by translator.rs.
use std::{net::IpAddr, sync::Arc};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};

use super::{
    BackendRef, BackendState, Config, Frontend, FrontendKind, IpFamily, LbAlgorithm, LeftOut,
    LeftOutReason, NodeContext, OnEmpty,
    endpoints::{Endpoint, endpoints_of_port},
    service_port::{ServiceInfo, ServicePortInfo},
    topology::{Categorized, NodeTopology, categorize},
};

/// The frontends of one Service: those of its IPv4 cluster IP, then
/// those of its IPv6 one, each family's from its own addresses and
/// endpoints.
pub(super) fn service_frontends(
    service: &Service,
    slices: &[&EndpointSlice],
    node: &NodeContext,
    config: &Config,
) -> Vec<Frontend> {
    let topology = NodeTopology {
        name: &node.name,
        zone: node.zone.as_deref(),
    };
    let mut frontends = Vec::new();
    for family in IpFamily::ALL {
        let Some(info) = ServiceInfo::for_family(service, family) else {
            continue;
        };
        let nodeport_addresses = config.nodeport_addresses_for(node, family);
        for port in &info.ports {
            let endpoints = endpoints_of_port(
                slices.iter().copied(),
                family,
                &port.name,
                port.protocol,
                &node.name,
            );
            let categorized = categorize(&endpoints, &info.traffic_policy(port), topology);
            push_port_frontends(
                &mut frontends,
                &info,
                port,
                &categorized,
                &nodeport_addresses,
                info.lb_algorithm.unwrap_or(config.lb_algorithm),
            );
        }
    }
    frontends
}

/// The frontends of one Service port.
fn push_port_frontends(
    frontends: &mut Vec<Frontend>,
    info: &ServiceInfo,
    port: &ServicePortInfo,
    categorized: &Categorized,
    nodeport_addresses: &[IpAddr],
    lb_algorithm: LbAlgorithm,
) {
    let cluster = categorized.cluster.as_deref().unwrap_or_default();
    let local = categorized.local.as_deref().unwrap_or_default();
    let frontend = |kind, address, port_number, local_policy: bool| {
        let endpoints = if local_policy { local } else { cluster };
        Frontend {
            service: info.key.clone(),
            port_name: port.name.clone(),
            kind,
            address,
            port: port_number,
            protocol: port.protocol,
            backends: backends(endpoints),
            affinity_timeout_seconds: info.affinity_timeout_seconds,
            // kube-proxy rejects when no node has a usable endpoint, and
            // drops when only this node has none under Local policy.
            on_empty: if local_policy && categorized.has_any {
                OnEmpty::Drop
            } else {
                OnEmpty::Reject
            },
            source_ranges: Vec::new(),
            health_check_node_port: None,
            lb_algorithm: LbAlgorithm::Random,
        }
    };
    frontends.push(frontend(
        FrontendKind::ClusterIP,
        info.cluster_ip,
        port.port,
        info.internal_local,
    ));
    // Maglev only where a flow may reach the Service through any node: its
    // external frontends. A ClusterIP's flows start on the node that
    // balances them (as Cilium keeps Maglev for north-south traffic).
    let external = |kind, address, port_number| Frontend {
        health_check_node_port: info.health_check_node_port,
        lb_algorithm,
        ..frontend(kind, address, port_number, info.external_local)
    };
    if let Some(node_port) = port.node_port {
        for address in nodeport_addresses {
            frontends.push(external(FrontendKind::NodePort, *address, node_port));
        }
    }
    for vip in &info.load_balancer_vips {
        frontends.push(Frontend {
            source_ranges: info.source_ranges.clone(),
            ..external(FrontendKind::LoadBalancer, *vip, port.port)
        });
    }
    for address in &info.external_ips {
        frontends.push(external(FrontendKind::ExternalIP, *address, port.port));
    }
}

/// Backends in table order: ready first, then terminating (which the
/// rules only hand out when no ready one is left), each by address/port.
fn backends(endpoints: &[Endpoint]) -> Vec<BackendRef> {
    let mut backends: Vec<BackendRef> = endpoints
        .iter()
        .map(|endpoint| BackendRef {
            address: endpoint.address,
            port: endpoint.port,
            state: if endpoint.ready {
                BackendState::Ready
            } else {
                BackendState::Terminating
            },
            local: endpoint.is_local,
        })
        .collect();
    backends.sort_by_key(|backend| (backend.state, backend.address, backend.port));
    backends
}

pub(super) fn frontend_order(
    frontend: &Frontend,
) -> (&str, &str, super::Protocol, FrontendKind, IpAddr, u16) {
    (
        &frontend.service,
        &frontend.port_name,
        frontend.protocol,
        frontend.kind,
        frontend.address,
        frontend.port,
    )
}

/// One address, port and protocol can hold one frontend. When Services
/// claim the same one, its owner is decided by kind first, in the order
/// an address is trusted: a ClusterIP (allocated by the API server), then
/// a node address's NodePort, then LoadBalancer ingress (written by a
/// controller), then externalIPs (any Service's author may write one).
/// So `aaa/x` with an externalIP equal to the kubernetes Service's
/// ClusterIP, or to a node address, takes nothing from them
/// (CVE-2020-8554's class). Between frontends of one kind, the first in
/// [`translate`]'s order keeps it, whatever order `claims` come in.
pub(super) fn owner(claims: &[Arc<Frontend>]) -> Option<&Arc<Frontend>> {
    claims
        .iter()
        .min_by(|a, b| ownership_order(a).cmp(&ownership_order(b)))
}

/// Why `frontend` is not programmed: `owner` holds its address.
pub(super) fn address_taken(frontend: &Frontend, owner: &Frontend) -> LeftOut {
    tracing::warn!(
        service = %frontend.service,
        frontend = %frontend.label(),
        owner = %owner.service,
        owner_kind = ?owner.kind,
        "frontend address belongs to another Service's frontend; not programmed"
    );
    LeftOut {
        service: frontend.service.clone(),
        frontend: frontend.label(),
        reason: LeftOutReason::AddressTaken {
            owner: owner.service.clone(),
            owner_kind: owner.kind,
        },
    }
}

/// Why `frontend` is not programmed whoever else claims its address, if
/// so: an externalIP outside the configured CIDRs (see
/// [`Config::external_ip_cidrs`]), or an IPv6 frontend asking for what the
/// IPv6 datapath does not do yet (sessionAffinity, source ranges: their
/// maps are IPv4 only), which served without it would be served wrong.
pub(super) fn refused(frontend: &Frontend, config: &Config) -> Option<LeftOut> {
    let family = IpFamily::of(frontend.address);
    let not_served = |what: &str| LeftOutReason::FamilyNotServed {
        family,
        what: what.to_owned(),
    };
    let reason = if family == IpFamily::IPv6 && frontend.affinity_timeout_seconds.is_some() {
        not_served("sessionAffinity")
    } else if family == IpFamily::IPv6 && !frontend.source_ranges.is_empty() {
        not_served("loadBalancerSourceRanges")
    } else if frontend.kind == FrontendKind::ExternalIP
        && !config.allows_external_ip(frontend.address)
    {
        tracing::warn!(
            service = %frontend.service,
            frontend = %frontend.label(),
            "externalIP outside --external-ip-cidrs; not programmed"
        );
        LeftOutReason::ExternalIpNotAllowed
    } else {
        return None;
    };
    Some(LeftOut {
        service: frontend.service.clone(),
        frontend: frontend.label(),
        reason,
    })
}

/// Who owns a contested address: kind, then [`frontend_order`].
fn ownership_order(
    frontend: &Frontend,
) -> (
    FrontendKind,
    (&str, &str, super::Protocol, FrontendKind, IpAddr, u16),
) {
    // FrontendKind's order is the precedence.
    (frontend.kind, frontend_order(frontend))
}

#[cfg(test)]
#[path = "translate_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "translate_props.rs"]
mod props;
