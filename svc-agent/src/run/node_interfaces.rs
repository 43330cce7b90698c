//! The node interfaces: where Service traffic arrives from the network
//! (XDP, TC behind it).
//!
//! Given with `--node-interfaces`: exactly those, attached at start, and a
//! failure stops the agent. Otherwise they are found: at start, the
//! interfaces of the IPv4 default route and those an earlier agent's links
//! are pinned on (its programs there must be swapped for this agent's
//! before the migrations of resized maps end, see pins.rs); once the Node
//! object is known, and again on every rescan, the interfaces holding its
//! InternalIP/ExternalIP addresses. Loopback and pod veths (the pod
//! interface prefix) are never node interfaces. A found interface whose
//! attachment fails is retried on every rescan. Nothing is detached.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use super::{AgentStatus, RunError, Settings, interfaces};
use k8s_openapi::api::core::v1::Node;

use crate::{dataplane::Datapath, model::NodeContext};

/// How a node interface was found (said in the log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Found {
    Given,
    PinnedBefore,
    DefaultRoute,
    NodeAddress,
}

impl Found {
    fn as_str(self) -> &'static str {
        match self {
            Found::Given => "given",
            Found::PinnedBefore => "attached by an earlier agent",
            Found::DefaultRoute => "default route",
            Found::NodeAddress => "node address",
        }
    }
}

pub struct NodeInterfaces {
    /// `--node-interfaces` was given: nothing is looked for.
    given: bool,
    pod_prefix: String,
    /// The Node's InternalIP/ExternalIP addresses, once its object is seen.
    node_addresses: Vec<IpAddr>,
    /// Every interface found, and how; attached or not (yet).
    found: BTreeMap<String, Found>,
    attached: BTreeSet<String>,
    /// Reported once, retried on every rescan.
    failing: BTreeSet<String>,
    /// Whether the Node's addresses were reported held by no interface.
    reported_unheld: bool,
    /// Whether reading the interfaces that take XDP frames failed last time.
    xdp_targets_failing: bool,
}

impl NodeInterfaces {
    /// At start: the given interfaces, or the ones found by the default
    /// route and by an earlier agent's pins.
    pub fn attach_at_start(
        settings: &Settings,
        datapath: &mut Datapath,
        status: &AgentStatus,
    ) -> Result<Self, RunError> {
        let mut this = Self {
            given: !settings.node_interfaces.is_empty(),
            pod_prefix: settings.pod_interface_prefix.clone(),
            node_addresses: Vec::new(),
            found: BTreeMap::new(),
            attached: BTreeSet::new(),
            failing: BTreeSet::new(),
            reported_unheld: false,
            xdp_targets_failing: false,
        };
        if this.given {
            for interface in &settings.node_interfaces {
                datapath.attach_node_interface(interface)?;
                tracing::info!(%interface, found = Found::Given.as_str(), "node interface attached");
                this.attached.insert(interface.clone());
            }
            return Ok(this);
        }
        match interfaces::default_route() {
            Ok(names) if names.is_empty() => tracing::info!("no IPv4 default route"),
            Ok(names) => names
                .into_iter()
                .for_each(|name| this.add(name, Found::DefaultRoute)),
            Err(error) => {
                tracing::warn!(%error, "cannot read the IPv4 default route (/proc/net/route)")
            }
        }
        match interfaces::names() {
            Ok(names) => {
                for (name, _) in names {
                    if datapath.node_interface_pinned(&name) {
                        this.add(name, Found::PinnedBefore);
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot list interfaces"),
        }
        this.attach_found(datapath, status);
        Ok(this)
    }

    /// A new snapshot: when its Node object (`node`) has other addresses
    /// than before, the interfaces holding them are attached.
    pub fn node_seen(
        &mut self,
        node: Option<&Node>,
        datapath: &mut Datapath,
        status: &AgentStatus,
    ) {
        if self.given {
            return;
        }
        let Some(node) = node else {
            return;
        };
        // Most snapshots change Services, not the Node: the rescan every
        // interfaces::RESCAN looks again for its addresses meanwhile.
        let addresses = NodeContext::from_node(node).node_addresses;
        if addresses == self.node_addresses {
            return;
        }
        self.node_addresses = addresses;
        self.reported_unheld = false;
        self.rescan(datapath, status);
    }

    /// Looks for the Node's addresses again (an interface may have got one
    /// since), and retries the attachments that failed.
    pub fn rescan(&mut self, datapath: &mut Datapath, status: &AgentStatus) {
        if self.given {
            return;
        }
        if !self.node_addresses.is_empty() {
            match interfaces::holding(&self.node_addresses) {
                Ok(names) if names.is_empty() => {
                    if !std::mem::replace(&mut self.reported_unheld, true) {
                        tracing::warn!(
                            addresses = ?self.node_addresses,
                            attached = ?self.attached,
                            "no interface holds the Node's addresses: Service traffic from the network is translated only on the node interfaces attached; name them with --node-interfaces"
                        );
                    }
                }
                Ok(names) => {
                    self.reported_unheld = false;
                    names
                        .into_iter()
                        .for_each(|name| self.add(name, Found::NodeAddress));
                }
                Err(error) => tracing::warn!(%error, "cannot list interface addresses"),
            }
        }
        self.attach_found(datapath, status);
    }

    /// Reads again which interfaces transmit XDP frames (they change as
    /// XDP programs come and go, here and on veth peers), so the NIC
    /// program sends packets only where they arrive; the rest take the TC
    /// program's way. A failure is logged once, until it works again.
    pub fn refresh_xdp_targets(&mut self, datapath: &mut Datapath) {
        match datapath.refresh_xdp_targets() {
            Ok(count) => {
                if std::mem::replace(&mut self.xdp_targets_failing, false) {
                    tracing::info!(count, "interfaces taking XDP frames read again");
                }
            }
            Err(error) => {
                if !std::mem::replace(&mut self.xdp_targets_failing, true) {
                    tracing::warn!(%error, "cannot read which interfaces take XDP frames: the NIC program keeps its last list");
                }
            }
        }
    }

    /// Takes `name` as a node interface unless it is loopback or a pod's.
    fn add(&mut self, name: String, how: Found) {
        let pod = !self.pod_prefix.is_empty() && name.starts_with(&self.pod_prefix);
        if name == "lo" || pod {
            return;
        }
        self.found.entry(name).or_insert(how);
    }

    fn attach_found(&mut self, datapath: &mut Datapath, status: &AgentStatus) {
        for (interface, how) in &self.found {
            if self.attached.contains(interface) {
                continue;
            }
            match datapath.attach_node_interface(interface) {
                Ok(()) => {
                    tracing::info!(%interface, found = how.as_str(), "node interface attached");
                    self.failing.remove(interface);
                    self.attached.insert(interface.clone());
                }
                Err(error) => {
                    status.metrics.error("attach");
                    if self.failing.insert(interface.clone()) {
                        tracing::error!(%interface, found = how.as_str(), %error, "attaching to node interface failed; retrying");
                    }
                }
            }
        }
    }
}
