//! `svc-agent run` without `--node-interfaces` on a one-node lab: it finds
//! the node's interface by the Node object's InternalIP (the lab has no
//! default route) and attaches XDP and TC there, never to loopback or pod
//! veths; restarted, it takes the interface over at start, from the links
//! the first agent pinned.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use aya::programs::{
    TcAttachType,
    links::{FdLink, PinnedLink},
};
use svc_lab::{Lab, NodeSpec, PodSpec, Topology, netns::Netns};
use tests::agent::Agent;

const NODE: &str = "node-1";
/// node-1's address on the lab fabric, on its eth0.
const NODE_IP: &str = "198.18.0.11";

/// A manifests directory holding node-1's Node object, removed on drop.
struct Manifests(PathBuf);

impl Manifests {
    fn new(lab: &Lab) -> Self {
        let dir = std::env::temp_dir().join(format!("{}-manifests", lab.id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("node.yaml"),
            format!(
                "apiVersion: v1\nkind: Node\nmetadata:\n  name: {NODE}\nstatus:\n  addresses:\n  - type: InternalIP\n    address: {NODE_IP}\n"
            ),
        )
        .unwrap();
        Self(dir)
    }
}

impl Drop for Manifests {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The program a pinned link runs.
fn pinned_program(pin_dir: &Path, link: &str) -> u32 {
    let link = FdLink::from(PinnedLink::from_pin(pin_dir.join("links").join(link)).unwrap());
    link.info().unwrap().program_id()
}

/// The XDP program on `interface` (`ip -j link`), if any.
fn xdp_program(netns: &Netns, interface: &str) -> Option<u64> {
    let output = netns
        .ip(&["-j", "-d", "link", "show", "dev", interface])
        .unwrap();
    let links: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    links[0]["xdp"]["prog"]["id"].as_u64()
}

/// The TCX ingress programs on `interface`.
fn tc_programs(netns: &Netns, interface: &'static str) -> Vec<u32> {
    netns
        .in_thread(move || {
            aya::programs::SchedClassifier::query_tcx(interface, TcAttachType::Ingress)
                .map(|(_, programs)| programs.iter().map(|p| p.id()).collect())
                .unwrap_or_default()
        })
        .unwrap()
}

/// The log's `node interface attached` lines.
fn attached_lines(agent: &Agent) -> Vec<String> {
    agent
        .log()
        .lines()
        .filter(|line| line.contains("node interface attached"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn without_node_interfaces_the_interface_holding_the_node_address_is_attached() {
    let lab = Lab::up(&Topology {
        nodes: vec![NodeSpec {
            name: NODE.into(),
            pods: vec![PodSpec::new("web-1", &[8080], &[])],
        }],
    })
    .unwrap();
    let manifests = Manifests::new(&lab);
    let netns = lab.node(NODE).unwrap().netns();
    let args = ["--manifests", manifests.0.to_str().unwrap()];

    let mut agent = Agent::spawn_finding_node_interfaces(&lab, NODE, &args);
    agent.wait_ready(&lab, Duration::from_secs(20));
    // Attached before the first sync: ready means attached.
    let lines = attached_lines(&agent);
    assert_eq!(lines.len(), 1, "{}", agent.log());
    assert!(
        lines[0].contains("interface=eth0") && lines[0].contains("found=\"node address\""),
        "{}",
        lines[0]
    );
    let xdp = pinned_program(&agent.pin_dir, "from_world-eth0");
    let tc = pinned_program(&agent.pin_dir, "from_world_tc-eth0");
    assert_eq!(xdp_program(netns, "eth0"), Some(u64::from(xdp)));
    assert_eq!(tc_programs(netns, "eth0"), [tc]);
    // The pod veth (which holds the pods' gateway address) and loopback
    // are no node interfaces.
    for interface in ["lxc0", "lo"] {
        assert_eq!(xdp_program(netns, interface), None, "{interface}");
    }
    assert_eq!(tc_programs(netns, "lxc0").len(), 1, "the pod program only");
    let pins: Vec<String> = std::fs::read_dir(agent.pin_dir.join("links"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("from_world"))
        .collect();
    assert_eq!(pins.len(), 2, "{pins:?}");

    // Restarted: eth0 is taken over at start (the new program swapped
    // into the pinned links), before the Node is known.
    assert!(agent.terminate().success());
    let mut agent = Agent::spawn_finding_node_interfaces(&lab, NODE, &args);
    agent.wait_ready(&lab, Duration::from_secs(20));
    let lines = attached_lines(&agent);
    assert_eq!(lines.len(), 1, "{}", agent.log());
    assert!(
        lines[0].contains("interface=eth0")
            && lines[0].contains("found=\"attached by an earlier agent\""),
        "{}",
        lines[0]
    );
    let swapped = pinned_program(&agent.pin_dir, "from_world-eth0");
    assert_ne!(swapped, xdp, "the new agent's program runs");
    assert_eq!(xdp_program(netns, "eth0"), Some(u64::from(swapped)));
}
