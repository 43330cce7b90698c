//! The desired tables: what the datapath must hold for this node, in domain
//! terms. `plan` prints them, `apply` writes them, `dump` reads them back from
//! the kernel in the same shape. [`translate`] computes them from a snapshot
//! of Kubernetes objects with kube-proxy's rules.
mod context;
mod endpoints;
mod family;
mod service_port;
mod snapshot;
mod topology;
mod translate;
mod translator;

use std::{fmt, net::IpAddr};

use serde::{Deserialize, Serialize};

pub(crate) use self::service_port::ServiceInfo;
pub use self::{
    context::{Cidr, Config, NodeContext, NodeContextError, NodePortAddress},
    family::IpFamily,
    snapshot::{
        Changed, LABEL_SERVICE_NAME, LABEL_SERVICE_PROXY_NAME, LABEL_TOPOLOGY_ZONE, ObjectName,
        Objects, Snapshot, Workload, namespace_of, node_named, object_key, object_name,
        service_name, service_of, slice_name,
    },
    translator::{Delta, Translator, plan, translate},
};

/// What `plan` prints: the frontends one node must hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub node: String,
    pub frontends: Vec<Frontend>,
    /// Frontends the Services ask for that the node does not hold, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<LeftOut>,
}

/// A frontend (or a whole Service) the node does not program, and why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LeftOut {
    /// `NAMESPACE/NAME` of the Service.
    pub service: String,
    /// The frontend, as `KIND ADDRESS:PORT/PROTOCOL`; empty when the whole
    /// Service is left out.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub frontend: String,
    pub reason: LeftOutReason,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LeftOutReason {
    /// Another Service's frontend of higher precedence has the same
    /// address, port and protocol (see translate.rs, address ownership).
    AddressTaken {
        owner: String,
        owner_kind: FrontendKind,
    },
    /// An externalIP outside the agent's --external-ip-cidrs.
    ExternalIpNotAllowed,
    /// The datapath does not serve this for the frontend's address
    /// family yet (`what`: a Service field).
    FamilyNotServed { family: IpFamily, what: String },
    /// A map had no room for the Service's entries.
    MapFull { map: String },
    /// The maps cannot take what the Service holds (the error says what).
    Unwritable { error: String },
}

impl LeftOutReason {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            LeftOutReason::AddressTaken { .. } => "address_taken",
            LeftOutReason::ExternalIpNotAllowed => "external_ip_not_allowed",
            LeftOutReason::FamilyNotServed { .. } => "family_not_served",
            LeftOutReason::MapFull { .. } => "map_full",
            LeftOutReason::Unwritable { .. } => "unwritable",
        }
    }

    /// Whether the node's maps are behind the cluster while this lasts: a
    /// write that failed, not a rule that decided.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            LeftOutReason::MapFull { .. } | LeftOutReason::Unwritable { .. }
        )
    }
}

impl LeftOut {
    /// What is left out and why, without the Service's name (for a report
    /// about that Service): `FRONTEND: REASON`, or `REASON` for all of it.
    pub fn detail(&self) -> String {
        if self.frontend.is_empty() {
            self.reason.to_string()
        } else {
            format!("{}: {}", self.frontend, self.reason)
        }
    }
}

impl fmt::Display for LeftOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.service)?;
        if !self.frontend.is_empty() {
            write!(f, " {}", self.frontend)?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl fmt::Display for LeftOutReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeftOutReason::AddressTaken { owner, owner_kind } => write!(
                f,
                "the address belongs to {owner}'s {owner_kind} (ClusterIPs first, then \
                 NodePorts, LoadBalancer IPs, externalIPs)"
            ),
            LeftOutReason::ExternalIpNotAllowed => {
                write!(f, "externalIP outside --external-ip-cidrs")
            }
            LeftOutReason::FamilyNotServed { family, what } => {
                write!(f, "{what} is not served for {family} frontends yet")
            }
            LeftOutReason::MapFull { map } => write!(f, "the {map} map is full"),
            LeftOutReason::Unwritable { error } => write!(f, "{error}"),
        }
    }
}

impl Frontend {
    /// `KIND ADDRESS:PORT/PROTOCOL` (an IPv6 address in brackets).
    pub fn label(&self) -> String {
        format!(
            "{} {}/{}",
            self.kind,
            std::net::SocketAddr::new(self.address, self.port),
            self.protocol
        )
    }
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
    /// IPv4 or IPv6; the backends are of the same family.
    pub address: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    /// Ready backends first, then terminating ones (used only when no ready
    /// backend is left).
    pub backends: Vec<BackendRef>,
    pub affinity_timeout_seconds: Option<u32>,
    pub on_empty: OnEmpty,
    /// Client CIDRs allowed to reach a LoadBalancer frontend
    /// (spec.loadBalancerSourceRanges of the frontend's family); empty
    /// lets everyone in.
    #[serde(default)]
    pub source_ranges: Vec<Cidr>,
    /// spec.healthCheckNodePort of a LoadBalancer Service with
    /// externalTrafficPolicy=Local, on its external frontends: the port the
    /// node answers the load balancer's health probe on.
    #[serde(default)]
    pub health_check_node_port: Option<u16>,
    /// How new flows pick among the backends.
    #[serde(default, skip_serializing_if = "LbAlgorithm::is_random")]
    pub lb_algorithm: LbAlgorithm,
}

/// How a frontend's new flows pick a backend: `--lb-algorithm` for the
/// node, the `svc-lb.io/lb-algorithm` annotation for one Service.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum LbAlgorithm {
    /// At random, independently on each node (kube-proxy's way).
    #[default]
    Random,
    /// From the flow's 5-tuple through a Maglev table: the same backend
    /// whichever node the flow reaches.
    Maglev,
}

/// How external traffic (NodePort, LoadBalancer, externalIPs) reaches a
/// backend on another node: `--lb-mode`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum LbMode {
    /// Source NAT to the node's address; replies come back through the
    /// node the client reached (kube-proxy's way).
    #[default]
    Snat,
    /// Direct server return: the client's packet goes to the backend's
    /// node inside IPIP; the backend sees the client's address and answers
    /// it directly, from the frontend.
    Dsr,
    /// DSR for TCP, SNAT for UDP.
    Hybrid,
}

impl LbMode {
    /// Whether a flow of `protocol` to a remote backend goes by DSR.
    pub fn tunnels(&self, protocol: Protocol) -> bool {
        match self {
            LbMode::Snat => false,
            LbMode::Dsr => true,
            LbMode::Hybrid => protocol == Protocol::TCP,
        }
    }
}

impl fmt::Display for LbMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LbMode::Snat => "snat",
            LbMode::Dsr => "dsr",
            LbMode::Hybrid => "hybrid",
        })
    }
}

impl LbAlgorithm {
    pub fn is_random(&self) -> bool {
        *self == LbAlgorithm::Random
    }

    /// The algorithm an annotation value names; `None` for any other value.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "random" => Some(LbAlgorithm::Random),
            "maglev" => Some(LbAlgorithm::Maglev),
            _ => None,
        }
    }
}

impl fmt::Display for LbAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LbAlgorithm::Random => "random",
            LbAlgorithm::Maglev => "maglev",
        })
    }
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
    pub address: IpAddr,
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
