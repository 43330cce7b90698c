//! A cluster made of network namespaces on one machine, for tests and for
//! trying svc-lb without Kubernetes.
//!
//! [`Topology`] declares nodes, their pods and one external client; [`Lab`]
//! builds it (namespaces joined by veths, addresses from 198.18.0.0/15, no
//! default routes, TX checksum offload off) and removes all of it on drop,
//! also while a failing test unwinds. Leftovers of killed runs are swept
//! when the next lab comes up.
pub mod cgroup;
pub mod cluster;
pub mod netns;
pub mod server;
pub mod tool;
mod topology;
pub mod wiring;

use std::{io, path::PathBuf};

pub use topology::{
    HAIRPIN_ADDRESS, Lab, LabNode, LabPod, NAT_PORTS, NodeSpec, PodSpec, SERVICE_CIDR,
    SERVICE_CIDR6, Topology, ensure_bpffs, pass_xdp,
};
pub use wiring::{CLIENT_ADDRESS, LB_POOL};

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("{what}")]
    Io { what: String, source: io::Error },
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("a thread inside network namespace {namespace} panicked")]
    ThreadPanicked { namespace: String },
    #[error("no {kind} named {name} in this lab")]
    Unknown { kind: &'static str, name: String },
    #[error("topology: {0}")]
    Topology(String),
    #[error("the lab needs root (network namespaces, BPF): run it as root")]
    NotRoot,
    #[error("datapath of node {node}")]
    Datapath {
        node: String,
        source: Box<svc_agent::dataplane::DataplaneError>,
    },
}

/// Where labs pin their nodes' maps: one directory per lab, one per node
/// inside it.
pub fn pin_root() -> PathBuf {
    PathBuf::from("/sys/fs/bpf/svc-lab")
}

/// Removes `pin_dir` (one lab's pins) and then the pin root if no other
/// lab's pins are left in it.
pub fn remove_lab_pins(pin_dir: &std::path::Path) {
    let _ = svc_agent::dataplane::remove_pins(pin_dir);
    // Fails, and is meant to, while another lab still has a directory here.
    let _ = std::fs::remove_dir(pin_root());
}
