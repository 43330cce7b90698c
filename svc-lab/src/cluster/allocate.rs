//! Addresses and ports the lab hands out, as the API server's allocators
//! and a cloud provider's load balancer controller would, for both
//! families: ClusterIPs from 198.19.0.0/16 and fd00:198:19::/112, load
//! balancer ingress from 198.19.255.0/24 and fd00:198:19::ff:0/112.
use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use k8s_openapi::api::core::v1::Service;
use svc_agent::model::IpFamily;

use super::ClusterError;

/// First IPv4 ClusterIP handed out; lower ones are left for manifests
/// that set their own.
const CLUSTER_IP_FIRST: u32 = u32::from_be_bytes([198, 19, 1, 0]);
/// The IPv4 Service range is 198.19.0.0/16 without the load balancer pool.
const CLUSTER_IP_LAST: u32 = u32::from_be_bytes([198, 19, 254, 255]);
/// The IPv6 Service range, fd00:198:19::/112; handed out from ::100 on
/// (below it for manifests that set their own).
const CLUSTER_IP6_BASE: u128 = 0xfd00_0198_0019_0000_0000_0000_0000_0000;
const CLUSTER_IP6_FIRST: u128 = CLUSTER_IP6_BASE + 0x100;
/// The IPv6 load balancer pool, fd00:198:19::ff:0/112.
const LB_POOL6_BASE: u128 = CLUSTER_IP6_BASE + 0xff_0000;
pub const NODE_PORTS: (i32, i32) = (30000, 32767);

/// A ClusterIP the lab may give (or accept from a manifest).
pub fn in_service_range(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(address) => {
            let octets = address.octets();
            octets[0] == 198 && octets[1] == 19 && octets[2] != 255
        }
        IpAddr::V6(address) => u128::from(address) >> 16 == CLUSTER_IP6_BASE >> 16,
    }
}

/// A load balancer ingress IP of the lab's pools (198.19.255.0/24,
/// fd00:198:19::ff:0/112), neither the first nor the last.
pub fn in_lb_pool(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(address) => {
            let octets = address.octets();
            octets[..3] == [198, 19, 255] && octets[3] != 0 && octets[3] != 255
        }
        IpAddr::V6(address) => {
            let bits = u128::from(address);
            bits >> 16 == LB_POOL6_BASE >> 16 && bits & 0xffff != 0 && bits & 0xffff != 0xffff
        }
    }
}

/// What the Services of the lab already hold.
#[derive(Debug, Default)]
pub struct Taken {
    pub cluster_ips: BTreeSet<IpAddr>,
    pub node_ports: BTreeSet<i32>,
    pub lb_ips: BTreeSet<IpAddr>,
}

impl Taken {
    pub fn of<'a>(services: impl IntoIterator<Item = &'a Service>) -> Self {
        let mut taken = Self::default();
        for service in services {
            if let Some(spec) = &service.spec {
                for ip in spec.cluster_ips.iter().flatten().chain(&spec.cluster_ip) {
                    if let Ok(ip) = ip.parse() {
                        taken.cluster_ips.insert(ip);
                    }
                }
                for port in spec.ports.iter().flatten() {
                    if let Some(node_port) = port.node_port {
                        taken.node_ports.insert(node_port);
                    }
                }
            }
            for ingress in lb_ingress(service) {
                taken.lb_ips.insert(ingress);
            }
        }
        taken
    }

    /// A free ClusterIP of `family`.
    pub fn cluster_ip(&mut self, service: &str, family: IpFamily) -> Result<IpAddr, ClusterError> {
        let free = match family {
            IpFamily::IPv4 => (CLUSTER_IP_FIRST..=CLUSTER_IP_LAST)
                .map(|bits| IpAddr::from(Ipv4Addr::from(bits)))
                .find(|ip| !ip.to_string().ends_with(".0") && !self.cluster_ips.contains(ip)),
            IpFamily::IPv6 => (CLUSTER_IP6_FIRST..CLUSTER_IP6_BASE + 0xffff)
                .map(|bits| IpAddr::from(Ipv6Addr::from(bits)))
                .find(|ip| !self.cluster_ips.contains(ip)),
        };
        let free = free.ok_or_else(|| ClusterError::Exhausted {
            what: match family {
                IpFamily::IPv4 => "ClusterIPs in 198.19.0.0/16",
                IpFamily::IPv6 => "ClusterIPs in fd00:198:19::/112",
            },
            object: service.to_owned(),
        })?;
        self.cluster_ips.insert(free);
        Ok(free)
    }

    pub fn node_port(&mut self, service: &str) -> Result<i32, ClusterError> {
        let free = (NODE_PORTS.0..=NODE_PORTS.1)
            .find(|port| !self.node_ports.contains(port))
            .ok_or_else(|| ClusterError::Exhausted {
                what: "NodePorts in 30000-32767",
                object: service.to_owned(),
            })?;
        self.node_ports.insert(free);
        Ok(free)
    }

    /// A free load balancer ingress IP of `family`.
    pub fn lb_ip(&mut self, service: &str, family: IpFamily) -> Result<IpAddr, ClusterError> {
        let free = match family {
            IpFamily::IPv4 => (1..=254)
                .map(|last| IpAddr::from(Ipv4Addr::new(198, 19, 255, last)))
                .find(|ip| !self.lb_ips.contains(ip)),
            IpFamily::IPv6 => (1..0xffff)
                .map(|last| IpAddr::from(Ipv6Addr::from(LB_POOL6_BASE + last)))
                .find(|ip| !self.lb_ips.contains(ip)),
        };
        let free = free.ok_or_else(|| ClusterError::Exhausted {
            what: match family {
                IpFamily::IPv4 => "load balancer IPs in 198.19.255.0/24",
                IpFamily::IPv6 => "load balancer IPs in fd00:198:19::ff:0/112",
            },
            object: service.to_owned(),
        })?;
        self.lb_ips.insert(free);
        Ok(free)
    }
}

/// The ingress addresses in a Service's status, of both families.
pub fn lb_ingress(service: &Service) -> Vec<IpAddr> {
    service
        .status
        .as_ref()
        .and_then(|status| status.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|ingress| ingress.ip.as_deref()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_skip_what_is_taken() {
        let mut taken = Taken::default();
        taken
            .cluster_ips
            .insert(Ipv4Addr::new(198, 19, 1, 1).into());
        taken.node_ports.insert(30000);
        let ip = |text: &str| text.parse::<IpAddr>().ok();
        assert_eq!(
            taken.cluster_ip("default/a", IpFamily::IPv4).ok(),
            ip("198.19.1.2")
        );
        assert_eq!(
            taken.cluster_ip("default/a", IpFamily::IPv6).ok(),
            ip("fd00:198:19::100")
        );
        assert_eq!(
            taken.cluster_ip("default/b", IpFamily::IPv6).ok(),
            ip("fd00:198:19::101")
        );
        assert_eq!(taken.node_port("default/a").ok(), Some(30001));
        assert_eq!(
            taken.lb_ip("default/a", IpFamily::IPv4).ok(),
            ip("198.19.255.1")
        );
        assert_eq!(
            taken.lb_ip("default/b", IpFamily::IPv4).ok(),
            ip("198.19.255.2")
        );
        assert_eq!(
            taken.lb_ip("default/a", IpFamily::IPv6).ok(),
            ip("fd00:198:19::ff:1")
        );
    }

    #[test]
    fn ranges() {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert!(in_service_range(ip("198.19.0.10")));
        assert!(!in_service_range(ip("198.19.255.1")));
        assert!(!in_service_range(ip("10.96.0.1")));
        assert!(in_service_range(ip("fd00:198:19::10")));
        assert!(!in_service_range(ip("fd00:198:19::ff:1")));
        assert!(!in_service_range(ip("fd00:198:18::10")));
        assert!(in_lb_pool(ip("198.19.255.7")));
        assert!(!in_lb_pool(ip("198.19.100.1")));
        assert!(in_lb_pool(ip("fd00:198:19::ff:7")));
        assert!(!in_lb_pool(ip("fd00:198:19::ff:0")));
        assert!(!in_lb_pool(ip("fd00:198:19::10")));
    }
}
