//! The desired tables: what the datapath must hold for this node, in domain
//! terms. `plan` prints them, `apply` writes them, `dump` reads them back from
//! the kernel in the same shape. [`translate`] computes them from a snapshot
//! of Kubernetes objects with kube-proxy's rules.
mod context;
mod endpoints;
mod service_port;
mod topology;
mod translate;
mod translator;

use std::{fmt, net::Ipv4Addr};

use serde::{Deserialize, Serialize};

pub use self::{
    context::{Config, NodeContext, NodeContextError},
    translate::{plan, translate},
    translator::Translator,
};

/// What `plan` prints: the frontends one node must hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub node: String,
    pub frontends: Vec<Frontend>,
}

/// One frontend: an address, port and protocol traffic is sent to, and the
/// backends new connections to it may go to on this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frontend {
    /// `NAMESPACE/NAME` of the Service.
    pub service: String,
    /// The Service port's name ("" when unnamed).
    pub port_name: String,
    pub kind: FrontendKind,
    pub address: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
    /// Ready backends first, then terminating ones (used only when no ready
    /// backend is left).
    pub backends: Vec<BackendRef>,
    pub affinity_timeout_seconds: Option<u32>,
    pub on_empty: OnEmpty,
    /// Client CIDRs allowed to reach a LoadBalancer frontend
    /// (spec.loadBalancerSourceRanges, IPv4 only); empty lets everyone in.
    #[serde(default)]
    pub source_ranges: Vec<String>,
    /// spec.healthCheckNodePort of a LoadBalancer Service with
    /// externalTrafficPolicy=Local, on its external frontends: the port the
    /// node answers the load balancer's health probe on.
    #[serde(default)]
    pub health_check_node_port: Option<u16>,
}

impl Frontend {
    pub fn ready_backends(&self) -> impl Iterator<Item = &BackendRef> {
        self.backends
            .iter()
            .filter(|backend| backend.state == BackendState::Ready)
    }

    pub fn terminating_backends(&self) -> impl Iterator<Item = &BackendRef> {
        self.backends
            .iter()
            .filter(|backend| backend.state == BackendState::Terminating)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BackendRef {
    pub address: Ipv4Addr,
    pub port: u16,
    pub state: BackendState,
    /// The endpoint runs on this node (external traffic to it needs no
    /// source NAT).
    #[serde(default)]
    pub local: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    Ready,
    Terminating,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FrontendKind {
    ClusterIP,
    NodePort,
    LoadBalancer,
    ExternalIP,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    TCP,
    UDP,
    SCTP,
}

/// What a frontend does with a new connection when it has no backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnEmpty {
    /// TCP reset / ICMP port unreachable: "connection refused" at once.
    Reject,
    /// Silence (externalTrafficPolicy=Local without a local endpoint).
    Drop,
}

impl Protocol {
    /// The protocol an API object names (`None` is the API's default, TCP);
    /// `None` back for a protocol we do not know.
    pub fn from_api(name: Option<&str>) -> Option<Self> {
        match name.unwrap_or("TCP") {
            "TCP" => Some(Protocol::TCP),
            "UDP" => Some(Protocol::UDP),
            "SCTP" => Some(Protocol::SCTP),
            _ => None,
        }
    }
}

impl fmt::Display for FrontendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            FrontendKind::ClusterIP => "ClusterIP",
            FrontendKind::NodePort => "NodePort",
            FrontendKind::LoadBalancer => "LoadBalancer",
            FrontendKind::ExternalIP => "ExternalIP",
        };
        f.write_str(name)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Protocol::TCP => "TCP",
            Protocol::UDP => "UDP",
            Protocol::SCTP => "SCTP",
        };
        f.write_str(name)
    }
}

impl fmt::Display for BackendState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendState::Ready => "ready",
            BackendState::Terminating => "terminating",
        })
    }
}
