//! Addresses and ports the lab hands out, as the API server's allocators
//! and a cloud provider's load balancer controller would.
use std::{collections::BTreeSet, net::Ipv4Addr};

use k8s_openapi::api::core::v1::Service;

use super::ClusterError;

/// First ClusterIP handed out; lower ones are left for manifests that set
/// their own.
const CLUSTER_IP_FIRST: u32 = u32::from_be_bytes([198, 19, 1, 0]);
/// The Service range is 198.19.0.0/16 without the load balancer pool.
const CLUSTER_IP_LAST: u32 = u32::from_be_bytes([198, 19, 254, 255]);
pub const NODE_PORTS: (i32, i32) = (30000, 32767);

/// A ClusterIP the lab may give (or accept from a manifest).
pub fn in_service_range(address: Ipv4Addr) -> bool {
    let octets = address.octets();
    octets[0] == 198 && octets[1] == 19 && octets[2] != 255
}

/// A load balancer ingress IP of the lab's pool (198.19.255.0/24).
pub fn in_lb_pool(address: Ipv4Addr) -> bool {
    let octets = address.octets();
    octets[..3] == [198, 19, 255] && octets[3] != 0 && octets[3] != 255
}

/// What the Services of the lab already hold.
#[derive(Debug, Default)]
pub struct Taken {
    pub cluster_ips: BTreeSet<Ipv4Addr>,
    pub node_ports: BTreeSet<i32>,
    pub lb_ips: BTreeSet<Ipv4Addr>,
}

impl Taken {
    pub fn of<'a>(services: impl IntoIterator<Item = &'a Service>) -> Self {
        let mut taken = Self::default();
        for service in services {
            if let Some(spec) = &service.spec {
                if let Some(ip) = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok()) {
                    taken.cluster_ips.insert(ip);
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

    pub fn cluster_ip(&mut self, service: &str) -> Result<Ipv4Addr, ClusterError> {
        let free = (CLUSTER_IP_FIRST..=CLUSTER_IP_LAST)
            .map(Ipv4Addr::from)
            .find(|ip| ip.octets()[3] != 0 && !self.cluster_ips.contains(ip))
            .ok_or_else(|| ClusterError::Exhausted {
                what: "ClusterIPs in 198.19.0.0/16",
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

    pub fn lb_ip(&mut self, service: &str) -> Result<Ipv4Addr, ClusterError> {
        let free = (1..=254)
            .map(|last| Ipv4Addr::new(198, 19, 255, last))
            .find(|ip| !self.lb_ips.contains(ip))
            .ok_or_else(|| ClusterError::Exhausted {
                what: "load balancer IPs in 198.19.255.0/24",
                object: service.to_owned(),
            })?;
        self.lb_ips.insert(free);
        Ok(free)
    }
}

/// The IPv4 ingress addresses in a Service's status.
pub fn lb_ingress(service: &Service) -> Vec<Ipv4Addr> {
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
        taken.cluster_ips.insert(Ipv4Addr::new(198, 19, 1, 1));
        taken.node_ports.insert(30000);
        assert_eq!(
            taken.cluster_ip("default/a").ok(),
            Some(Ipv4Addr::new(198, 19, 1, 2))
        );
        assert_eq!(taken.node_port("default/a").ok(), Some(30001));
        assert_eq!(
            taken.lb_ip("default/a").ok(),
            Some(Ipv4Addr::new(198, 19, 255, 1))
        );
        assert_eq!(
            taken.lb_ip("default/b").ok(),
            Some(Ipv4Addr::new(198, 19, 255, 2))
        );
    }

    #[test]
    fn ranges() {
        assert!(in_service_range(Ipv4Addr::new(198, 19, 0, 10)));
        assert!(!in_service_range(Ipv4Addr::new(198, 19, 255, 1)));
        assert!(!in_service_range(Ipv4Addr::new(10, 96, 0, 1)));
        assert!(in_lb_pool(Ipv4Addr::new(198, 19, 255, 7)));
        assert!(!in_lb_pool(Ipv4Addr::new(198, 19, 100, 1)));
    }
}
