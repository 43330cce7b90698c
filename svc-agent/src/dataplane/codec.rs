//! Conversions between the domain model and the map layouts of svc-common.
use std::net::{IpAddr, Ipv4Addr};

use svc_common::{
    FrontendMeta, MAX_SERVICE_CIDRS, NodeConfig, PORT_NAME_LEN, SERVICE_NAME_LEN, ServiceCidr,
    ServiceCidr6, ServiceCidrs, ServiceCidrs6, backend_flags, frontend_kind, lb_mode, proto,
    rev_nat_flags,
};

pub use super::entries::{addr_be, addr_from_be};
use super::{
    entries::{BackendEntry, RevNatEntry, SlotKey},
    maps::RangeEntry,
};
use crate::model::{Cidr, Frontend, FrontendKind, LbMode, Protocol};

/// What the programs are told about the node they run on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSettings {
    /// Source of translated packets to remote backends (source NAT).
    pub node_address: Ipv4Addr,
    /// Source of a pod's packets sent back to itself through a Service.
    pub hairpin_address: Ipv4Addr,
    /// The source NAT port range, inclusive.
    pub nat_ports: (u16, u16),
    /// The cluster's service CIDRs (at most [`MAX_SERVICE_CIDRS`] of each
    /// family): TCP and UDP to an address in them that no frontend serves
    /// is refused.
    pub service_cidrs: Vec<Cidr>,
    /// How external traffic reaches a backend on another node.
    pub lb_mode: LbMode,
}

pub fn node_config(node: &NodeSettings) -> NodeConfig {
    NodeConfig {
        node_addr_be: addr_be(node.node_address),
        hairpin_addr_be: addr_be(node.hairpin_address),
        nat_port_min: node.nat_ports.0,
        nat_port_max: node.nat_ports.1,
        lb_mode: match node.lb_mode {
            LbMode::Snat => lb_mode::SNAT,
            LbMode::Dsr => lb_mode::DSR,
            LbMode::Hybrid => lb_mode::HYBRID,
        },
        _pad: [0; 3],
    }
}

pub fn node_settings(
    config: &NodeConfig,
    cidrs: &ServiceCidrs,
    cidrs6: &ServiceCidrs6,
) -> NodeSettings {
    let count = (cidrs.count as usize).min(MAX_SERVICE_CIDRS);
    let count6 = (cidrs6.count as usize).min(MAX_SERVICE_CIDRS);
    NodeSettings {
        node_address: addr_from_be(config.node_addr_be),
        hairpin_address: addr_from_be(config.hairpin_addr_be),
        nat_ports: (config.nat_port_min, config.nat_port_max),
        // An unknown value (a newer agent's) reads as the default.
        lb_mode: match config.lb_mode {
            lb_mode::DSR => LbMode::Dsr,
            lb_mode::HYBRID => LbMode::Hybrid,
            _ => LbMode::Snat,
        },
        service_cidrs: cidrs.cidrs[..count]
            .iter()
            .map(|cidr| Cidr {
                address: addr_from_be(cidr.network_be).into(),
                prefix: u32::from_be(cidr.mask_be).count_ones() as u8,
            })
            .chain(cidrs6.cidrs[..count6].iter().map(|cidr| Cidr {
                address: std::net::Ipv6Addr::from(cidr.network).into(),
                prefix: u128::from_be_bytes(cidr.mask).count_ones() as u8,
            }))
            .collect(),
    }
}

/// SVC_CIDRS_V1's entry: each IPv4 CIDR as its network and mask (host
/// bits of the address cleared), or None when there are more than the map
/// holds. IPv6 CIDRs are not in it (the kernel maps are IPv4 only).
pub fn service_cidrs(cidrs: &[Cidr]) -> Option<ServiceCidrs> {
    let cidrs: Vec<(Ipv4Addr, u32)> = cidrs
        .iter()
        .filter_map(|cidr| match cidr.network() {
            IpAddr::V4(network) => Some((network, cidr.mask())),
            IpAddr::V6(_) => None,
        })
        .collect();
    let mut entry = ServiceCidrs {
        count: u32::try_from(cidrs.len()).ok()?,
        ..ServiceCidrs::default()
    };
    for (slot, (network, mask)) in entry.cidrs.iter_mut().zip(&cidrs) {
        *slot = ServiceCidr {
            network_be: addr_be(*network),
            mask_be: mask.to_be(),
        };
    }
    (cidrs.len() <= MAX_SERVICE_CIDRS).then_some(entry)
}

/// SVC_CIDRS6_V1's entry: each IPv6 CIDR as its network and mask, or None
/// when there are more than the map holds.
pub fn service_cidrs6(cidrs: &[Cidr]) -> Option<ServiceCidrs6> {
    let cidrs: Vec<(std::net::Ipv6Addr, u128)> = cidrs
        .iter()
        .filter_map(|cidr| match cidr.network() {
            IpAddr::V6(network) => Some((network, cidr.mask128())),
            IpAddr::V4(_) => None,
        })
        .collect();
    let mut entry = ServiceCidrs6 {
        count: u32::try_from(cidrs.len()).ok()?,
        ..ServiceCidrs6::default()
    };
    for (slot, (network, mask)) in entry.cidrs.iter_mut().zip(&cidrs) {
        *slot = ServiceCidr6 {
            network: network.octets(),
            mask: mask.to_be_bytes(),
        };
    }
    (cidrs.len() <= MAX_SERVICE_CIDRS).then_some(entry)
}

pub fn protocol_number(protocol: Protocol) -> u8 {
    match protocol {
        Protocol::TCP => proto::TCP,
        Protocol::UDP => proto::UDP,
        Protocol::SCTP => proto::SCTP,
    }
}

pub fn protocol_from_number(number: u8) -> Option<Protocol> {
    match number {
        proto::TCP => Some(Protocol::TCP),
        proto::UDP => Some(Protocol::UDP),
        proto::SCTP => Some(Protocol::SCTP),
        _ => None,
    }
}

pub fn header_key(frontend: &Frontend) -> SlotKey {
    SlotKey::new(
        frontend.address,
        frontend.port.to_be(),
        protocol_number(frontend.protocol),
        0,
    )
}

pub fn rev_nat(frontend: &Frontend) -> RevNatEntry {
    RevNatEntry {
        address: frontend.address,
        port_be: frontend.port.to_be(),
        flags: if frontend.kind == FrontendKind::NodePort {
            rev_nat_flags::LOCAL_ADDRESS
        } else {
            0
        },
    }
}

pub fn backend(address: IpAddr, port: u16, protocol: Protocol, local: bool) -> BackendEntry {
    BackendEntry {
        address,
        port_be: port.to_be(),
        proto: protocol_number(protocol),
        flags: if local { backend_flags::LOCAL } else { 0 },
    }
}

/// The SRC_RANGES entry of one of a frontend's source ranges. Host bits
/// are cleared so equal prefixes give equal entries.
pub fn source_range(rev_nat_id: u32, addr: Ipv4Addr, len: u8) -> RangeEntry {
    let mask = Cidr {
        address: addr.into(),
        prefix: len,
    }
    .mask();
    let network = Ipv4Addr::from(u32::from(addr) & mask);
    RangeEntry {
        rev_nat_id,
        prefix_len: 32 + u32::from(len),
        addr_be: addr_be(network),
    }
}

pub fn kind_number(kind: FrontendKind) -> u8 {
    match kind {
        FrontendKind::ClusterIP => frontend_kind::CLUSTER_IP,
        FrontendKind::NodePort => frontend_kind::NODE_PORT,
        FrontendKind::LoadBalancer => frontend_kind::LOAD_BALANCER,
        FrontendKind::ExternalIP => frontend_kind::EXTERNAL_IP,
    }
}

pub fn kind_from_number(number: u8) -> Option<FrontendKind> {
    match number {
        frontend_kind::CLUSTER_IP => Some(FrontendKind::ClusterIP),
        frontend_kind::NODE_PORT => Some(FrontendKind::NodePort),
        frontend_kind::LOAD_BALANCER => Some(FrontendKind::LoadBalancer),
        frontend_kind::EXTERNAL_IP => Some(FrontendKind::ExternalIP),
        _ => None,
    }
}

/// Names longer than the fields are cut at a character boundary; the
/// Kubernetes limits (63-character namespace and name, 15-character port
/// names) fit.
pub fn meta(frontend: &Frontend) -> FrontendMeta {
    let mut meta = FrontendMeta {
        kind: kind_number(frontend.kind),
        service_len: 0,
        port_name_len: 0,
        _pad: 0,
        health_check_node_port: frontend.health_check_node_port.unwrap_or(0),
        _pad2: 0,
        service: [0; SERVICE_NAME_LEN],
        port_name: [0; PORT_NAME_LEN],
    };
    meta.service_len = copy_truncated(&frontend.service, &mut meta.service);
    meta.port_name_len = copy_truncated(&frontend.port_name, &mut meta.port_name);
    meta
}

fn copy_truncated(text: &str, field: &mut [u8]) -> u8 {
    let mut len = text.len().min(field.len()).min(usize::from(u8::MAX));
    while !text.is_char_boundary(len) {
        len -= 1;
    }
    field[..len].copy_from_slice(&text.as_bytes()[..len]);
    len as u8
}

pub fn meta_text(field: &[u8], len: u8) -> String {
    let len = usize::from(len).min(field.len());
    String::from_utf8_lossy(&field[..len]).into_owned()
}

#[cfg(test)]
#[path = "codec_props.rs"]
mod props;
