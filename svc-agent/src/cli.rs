//! Command line of the `svc-agent` binary.
use std::{net::Ipv4Addr, path::PathBuf};

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
        /// Serve NodePorts on these addresses instead of the Node's
        /// InternalIP/ExternalIP addresses (comma-separated).
        #[arg(long, value_delimiter = ',')]
        nodeport_addresses: Option<Vec<Ipv4Addr>>,
    },
    /// Print the frontend → backend tables the kernel holds (reads the
    /// pinned maps; works while no agent runs).
    Dump {
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
        #[command(flatten)]
        pin: PinPath,
    },
    /// Say why Service NAMESPACE/NAME does or does not get traffic: its
    /// selector, its pods' readiness and ports, the traffic policy on
    /// --node, and (with the pins readable) plan against kernel maps and
    /// packet counters. Reads manifests (API-server mode is not done yet).
    Diagnose {
        /// NAMESPACE/NAME (NAME alone means the default namespace).
        service: String,
        #[arg(long, env = "SVC_MANIFESTS", default_value = "/etc/svc-lb/manifests")]
        manifests: PathBuf,
        /// The node whose plan and kernel maps to check (default: the
        /// hostname); the kernel checks are skipped when the pins are
        /// missing.
        #[arg(long, env = "SVC_NODE")]
        node: Option<String>,
        #[command(flatten)]
        pin: PinPath,
    },
    /// Remove this agent's pinned links (detaching its programs) and maps.
    Cleanup {
        #[command(flatten)]
        pin: PinPath,
    },
}

#[derive(Debug, clap::Args)]
pub struct PinPath {
    /// bpffs directory holding this agent's maps and links.
    #[arg(long, env = "SVC_PIN_PATH", default_value = "/sys/fs/bpf/svc-lb")]
    pub pin_path: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}
