//! Command line of the `svc-agent` binary.
use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
};

use clap::{Parser, Subcommand, ValueEnum};

/// svc-lb node agent: eBPF Service load balancing in place of kube-proxy.
#[derive(Debug, Parser)]
#[command(name = "svc-agent", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the frontend → backend tables a node should hold, computed
    /// from Kubernetes manifests (needs neither kernel nor API server).
    Plan {
        /// Directory (or single file) of YAML/JSON manifests: Services,
        /// EndpointSlices, Pods, Nodes. Services without an EndpointSlice
        /// get endpoints from the Pods their selector matches.
        #[arg(long)]
        manifests: PathBuf,
        /// The node to plan for: metadata.name of its Node object.
        #[arg(long)]
        node: String,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// Serve NodePorts only on these instead of all the Node's
        /// InternalIP/ExternalIP addresses (comma-separated, as `run`).
        #[arg(long, value_delimiter = ',')]
        nodeport_addresses: Option<Vec<crate::model::NodePortAddress>>,
        /// Plan externalIPs only inside these CIDRs (as `run` does).
        #[arg(long, value_delimiter = ',')]
        external_ip_cidrs: Vec<crate::model::Cidr>,
        /// How frontends pick backends (as `run` does).
        #[arg(long, value_enum, default_value_t)]
        lb_algorithm: crate::model::LbAlgorithm,
    },
    /// Print the frontend → backend tables the kernel holds (reads the
    /// pinned maps; works while no agent runs).
    Dump {
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
        #[command(flatten)]
        pin: PinPath,
        #[command(flatten)]
        agent: AgentAddress,
    },
    /// Say which frontend and backend this node's kernel tables choose for
    /// one flow, and why: its conntrack entry, sessionAffinity, or (for a
    /// new flow) a pick at random among the listed candidates. Reads the
    /// pinned maps; works while no agent runs.
    Lookup {
        #[arg(long = "proto", value_enum)]
        protocol: LookupProtocol,
        /// The client's address and port; several (repeated or
        /// comma-separated) answer for each flow, as a JSON array with -o
        /// json.
        #[arg(long, value_delimiter = ',', required = true)]
        from: Vec<std::net::SocketAddrV4>,
        /// The frontend's address and port.
        #[arg(long)]
        to: std::net::SocketAddrV4,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
        #[command(flatten)]
        pin: PinPath,
    },
    /// Say why Service NAMESPACE/NAME does or does not get traffic: its
    /// selector, its pods' readiness and ports, the traffic policy on
    /// --node, and (with the pins readable) plan against kernel maps and
    /// packet counters. Reads the API server (as `run` finds it), or
    /// manifests with --manifests.
    Diagnose(DiagnoseArgs),
    /// Run the node agent: keep the pinned maps equal to the cluster's
    /// Services (from the API server, or from a manifests directory). A
    /// flag given twice takes its last value (so a wrapper's defaults can
    /// be overridden by flags appended after them).
    #[command(args_override_self = true)]
    Run(RunArgs),
    /// Remove this agent's pinned links (detaching its programs) and maps.
    Cleanup {
        #[command(flatten)]
        pin: PinPath,
    },
}

#[derive(Debug, clap::Args)]
pub struct DiagnoseArgs {
    /// NAMESPACE/NAME (NAME alone means the default namespace).
    pub service: String,
    /// Read the objects from this directory (or file) of manifests
    /// instead of the API server.
    #[arg(long, env = "SVC_MANIFESTS", conflicts_with = "kubeconfig")]
    pub manifests: Option<PathBuf>,
    /// kubeconfig of the API server (default: in-cluster config,
    /// $KUBECONFIG or ~/.kube/config). Diagnose lists the Service's Pods:
    /// its credentials must allow that (the agent's ClusterRole does not).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The node whose plan and kernel maps to check; without it the
    /// traffic-policy and kernel checks are skipped, and the kernel checks
    /// also when the pins are missing.
    #[arg(long, env = "SVC_NODE")]
    pub node: Option<String>,
    #[command(flatten)]
    pub pin: PinPath,
    #[command(flatten)]
    pub agent: AgentAddress,
}

impl DiagnoseArgs {
    /// What `diagnose` is asked.
    pub fn settings(self) -> crate::diagnose::Settings {
        crate::diagnose::Settings {
            service: self.service,
            source: crate::k8s::Source::new(self.manifests, self.kubeconfig),
            node: self.node,
            pin_path: self.pin.pin_path,
            agent: self.agent.agent,
        }
    }
}

/// Where the node's agent answers (`--listen` of `svc-agent run`): what
/// it left out of the maps, and why, is read from its `/left-out`.
#[derive(Debug, clap::Args)]
pub struct AgentAddress {
    #[arg(long = "agent", env = "SVC_AGENT", default_value = "127.0.0.1:10266")]
    pub agent: SocketAddr,
}

#[derive(Debug, clap::Args)]
pub struct PinPath {
    /// bpffs directory holding this agent's maps and links.
    #[arg(long, env = "SVC_PIN_PATH", default_value = "/sys/fs/bpf/svc-lb")]
    pub pin_path: PathBuf,
}

/// The protocols the programs translate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LookupProtocol {
    Tcp,
    Udp,
}

impl From<LookupProtocol> for crate::model::Protocol {
    fn from(protocol: LookupProtocol) -> Self {
        match protocol {
            LookupProtocol::Tcp => Self::TCP,
            LookupProtocol::Udp => Self::UDP,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// This node: metadata.name of its Node object.
    #[arg(long)]
    pub node: String,
    /// Take the cluster's objects from this directory of manifests
    /// (reloaded when it changes) instead of the API server.
    #[arg(long, conflicts_with = "kubeconfig")]
    pub manifests: Option<PathBuf>,
    /// kubeconfig of the API server (default: in-cluster config,
    /// $KUBECONFIG or ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    pub pin: PinPath,
    /// Node interfaces Service traffic arrives on from the network (XDP,
    /// TC behind it); comma-separated. Without it they are found: the
    /// interfaces of the IPv4 default route and those an earlier agent
    /// attached (at start), and those holding the Node's
    /// InternalIP/ExternalIP addresses (once its object is seen); never
    /// loopback or pod veths.
    #[arg(long, value_delimiter = ',')]
    pub node_interfaces: Vec<String>,
    /// Pod veths (host side) start with this; the agent attaches to every
    /// one, also those created later.
    #[arg(long, default_value = "lxc")]
    pub pod_interface_prefix: String,
    /// Source address for SNAT to remote backends (default: the Node's
    /// first InternalIP/ExternalIP).
    #[arg(long)]
    pub node_address: Option<Ipv4Addr>,
    /// Source a pod sees when it reaches itself through a Service.
    #[arg(long, default_value = "169.254.42.1")]
    pub hairpin_address: Ipv4Addr,
    /// Ports source NAT hands out, MIN-MAX.
    #[arg(long, default_value = "61000-65535", value_parser = parse_port_range)]
    pub nat_ports: (u16, u16),
    /// Serve NodePorts (and healthCheckNodePorts) only on these instead of
    /// all the Node's InternalIP/ExternalIP addresses (comma-separated):
    /// CIDRs (the Node's addresses inside them, either family),
    /// `primary` (the Node's first address of each family), as
    /// kube-proxy's flag, or addresses (each as given).
    #[arg(long, value_delimiter = ',')]
    pub nodeport_addresses: Option<Vec<crate::model::NodePortAddress>>,
    /// Program externalIPs only inside these CIDRs (comma-separated); the
    /// others are left out, with the reason in /left-out, /metrics, dump
    /// and diagnose. Default: every externalIP, as kube-proxy does. The
    /// agent-side counterpart of the DenyServiceExternalIPs admission
    /// plugin (CVE-2020-8554).
    #[arg(long, value_delimiter = ',')]
    pub external_ip_cidrs: Vec<crate::model::Cidr>,
    /// The cluster's service CIDRs (the API server's
    /// --service-cluster-ip-range; repeatable or comma-separated, at most
    /// 4 of each family). TCP and UDP to an address in them that no
    /// Service serves, or to a port a ClusterIP does not serve, are
    /// refused at once (reset / ICMP port unreachable, counted), not
    /// routed out, as kube-proxy's nftables mode does; IPv6 ones so far
    /// in connect() and sendmsg() only (the socket hooks). Default: none.
    #[arg(long = "service-cidr", value_delimiter = ',')]
    pub service_cidrs: Vec<crate::model::Cidr>,
    /// How new flows to NodePorts, LoadBalancer IPs and externalIPs pick a
    /// backend: at random on each node (kube-proxy's way), or by Maglev
    /// consistent hashing of the flow's 5-tuple, so a flow gets the same
    /// backend whichever node it reaches (behind an ECMP router). A
    /// Service's `svc-lb.io/lb-algorithm` annotation (random|maglev)
    /// overrides it. ClusterIPs pick at random.
    #[arg(long, value_enum, default_value_t)]
    pub lb_algorithm: crate::model::LbAlgorithm,
    /// How external traffic (NodePorts, LoadBalancer IPs, externalIPs)
    /// reaches a backend on another node: snat (its source becomes this
    /// node's address, replies come back through it: kube-proxy's way);
    /// dsr (direct server return: the client's packet goes to the
    /// backend's node inside IPIP, the backend sees the client's address
    /// and answers it directly); hybrid (dsr for TCP, snat for UDP). Every
    /// node takes delivery of DSR traffic whatever its own mode. Pod
    /// addresses must be routable between nodes, and the network must let
    /// replies leave a node with a frontend's address as their source.
    #[arg(long, value_enum, default_value_t)]
    pub lb_mode: crate::model::LbMode,
    /// Entries of each Maglev frontend's lookup table: a prime from 251 to
    /// 65521, well above the backends a Service has (each holds about
    /// SIZE/N entries; Maglev's paper asks for 100 times N). Every node
    /// must use the same size. The map holds 4194304 entries (32 MiB of
    /// kernel memory): 4194304 / SIZE tables.
    #[arg(long, default_value_t = svc_common::maglev::DEFAULT_TABLE_SIZE, value_parser = parse_maglev_table_size)]
    pub maglev_table_size: u16,
    /// Every this many seconds the agent reads the maps back from the
    /// kernel and repairs whatever differs from what it wrote (another
    /// writer, a stray bpftool); 0: never. kube-proxy resyncs its rules
    /// the same way.
    #[arg(long, default_value_t = 60)]
    pub resync_seconds: u64,
    /// Address of /healthz, /livez, /readyz, /metrics and /left-out.
    #[arg(long, default_value = "127.0.0.1:10266")]
    pub listen: SocketAddr,
    /// /healthz (and every healthCheckNodePort's serviceProxyHealthy)
    /// turns unhealthy once a change has waited this many seconds to reach
    /// the maps, as kube-proxy's does after twice its sync period.
    #[arg(long, default_value_t = 10)]
    pub healthz_timeout_seconds: u64,
    /// cgroup (v2) directory whose processes get socket-level load
    /// balancing (connect/sendmsg/recvmsg/getpeername hooks): on a real
    /// node the cgroup2 root; "none" to attach no socket hooks.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    pub cgroup: PathBuf,
}

fn parse_maglev_table_size(text: &str) -> Result<u16, String> {
    let size: u16 = text.trim().parse().map_err(|e| format!("{text:?}: {e}"))?;
    if !crate::dataplane::valid_maglev_table_size(size) {
        return Err(format!(
            "{size} is not a prime from {} to {} (try 16381, 32749 or 65521)",
            svc_common::maglev::MIN_TABLE_SIZE,
            svc_common::maglev::MAX_TABLE_SIZE
        ));
    }
    Ok(size)
}

fn parse_port_range(text: &str) -> Result<(u16, u16), String> {
    let (min, max) = text
        .split_once('-')
        .ok_or_else(|| format!("{text:?} is not MIN-MAX"))?;
    let port = |p: &str| p.trim().parse::<u16>().map_err(|e| format!("{p:?}: {e}"));
    let (min, max) = (port(min)?, port(max)?);
    if min == 0 || min > max {
        return Err(format!("{text:?}: need 1 <= MIN <= MAX"));
    }
    Ok((min, max))
}

impl RunArgs {
    /// The agent's settings.
    pub fn settings(self) -> crate::run::Settings {
        crate::run::Settings {
            node: self.node,
            source: crate::k8s::Source::new(self.manifests, self.kubeconfig),
            pin_path: self.pin.pin_path,
            node_interfaces: self.node_interfaces,
            pod_interface_prefix: self.pod_interface_prefix,
            node_address: self.node_address,
            hairpin_address: self.hairpin_address,
            nat_ports: self.nat_ports,
            nodeport_addresses: self.nodeport_addresses,
            external_ip_cidrs: self.external_ip_cidrs,
            service_cidrs: self.service_cidrs,
            lb_algorithm: self.lb_algorithm,
            lb_mode: self.lb_mode,
            maglev_table_size: self.maglev_table_size,
            listen: self.listen,
            resync_period: (self.resync_seconds > 0)
                .then(|| std::time::Duration::from_secs(self.resync_seconds)),
            cgroup: (self.cgroup.as_os_str() != "none").then_some(self.cgroup),
            unhealthy_after: std::time::Duration::from_secs(self.healthz_timeout_seconds),
        }
    }
}
