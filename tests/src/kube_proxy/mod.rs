//! The same Services as kube-proxy would program them, for the side-by-side
//! benchmark (`cargo xtask bench kube-proxy`): rule text in the layouts of
//! kube-proxy's iptables and nftables proxiers, and the four ways a lab node
//! can serve them.
//!
//! Our own generators, following the layouts (and chain naming) of
//! kubernetes/kubernetes `pkg/proxy/iptables/proxier.go` and
//! `pkg/proxy/nftables/proxier.go` (rule text as in their `proxier_test.go`).
pub mod iptables;
pub mod memcg;
pub mod modes;
pub mod nftables;
#[cfg(test)]
mod tests;

use std::net::Ipv4Addr;

use sha2::{Digest as _, Sha256};

/// What kube-proxy's masquerade rules mark with (its default
/// `--iptables-masquerade-bit` 14).
pub const MASQUERADE_MARK: &str = "0x4000";
/// The cluster's pod addresses as kube-proxy's `--cluster-cidr` (local
/// traffic detection): the lab's pod networks and nodes.
pub const CLUSTER_CIDR: &str = "198.18.0.0/16";
/// The Service CIDR ClusterIPs come from.
pub const SERVICE_CIDR: &str = "198.19.0.0/16";
/// The port every backend pod serves on.
pub const TARGET_PORT: u16 = 8080;

/// One Service port as both proxiers see it: a TCP port `p80` with a
/// ClusterIP, maybe a NodePort (externalTrafficPolicy Cluster), and
/// endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub namespace: String,
    pub name: String,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    /// `None` for a ClusterIP-only Service.
    pub node_port: Option<u16>,
    /// Endpoint addresses (all ready), each serving on [`TARGET_PORT`].
    pub endpoints: Vec<Ipv4Addr>,
}

impl ServicePort {
    /// The port's name (`p80`).
    pub fn port_name(&self) -> String {
        format!("p{}", self.port)
    }

    /// `NAMESPACE/NAME:PORT`, kube-proxy's ServicePortName string.
    pub fn service_port_name(&self) -> String {
        format!("{}/{}:{}", self.namespace, self.name, self.port_name())
    }
}

/// Which of the benchmark's Services also have a NodePort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodePorts {
    /// Only the last Service, the one the client dials. A cluster cannot
    /// give 10 000 Services a NodePort (the default range 30000-32767 holds
    /// 2 768), and most Services are ClusterIP-only.
    Last,
    /// Every Service: kube-proxy's iptables KUBE-NODEPORTS chain then holds
    /// one rule per Service, each calling two xt matches, before the one
    /// the client dials (the worst case; `SVC_BENCH_NODEPORTS=all`).
    All,
}

/// `count` Services: Service i has ClusterIP 198.19.(i/250).(i%250+1):80
/// and, as `node_ports` says, NodePort 20000+i; every one is backed by all
/// of `endpoints`. NodePorts lie outside the API's default range (so that
/// [`NodePorts::All`] fits) and below the nodes' ephemeral ports.
pub fn services(count: u16, endpoints: &[Ipv4Addr], node_ports: NodePorts) -> Vec<ServicePort> {
    (0..count)
        .map(|i| ServicePort {
            namespace: "bench".into(),
            name: format!("svc-{i}"),
            cluster_ip: Ipv4Addr::new(198, 19, (i / 250) as u8, (i % 250 + 1) as u8),
            port: 80,
            node_port: (node_ports == NodePorts::All || i + 1 == count).then_some(20000 + i),
            endpoints: endpoints.to_vec(),
        })
        .collect()
}

/// base32(sha256(text)), kube-proxy's chain-name hash, cut to `len`.
pub fn chain_hash(text: &str, len: usize) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = Sha256::digest(text.as_bytes());
    let mut out = String::with_capacity(len);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for byte in digest {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 && out.len() < len {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    out
}
