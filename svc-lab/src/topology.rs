//! Building and tearing down a lab.
//!
//! Addressing: see [`crate::wiring`]; every lab has its own namespaces, so
//! labs never collide.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    thread::JoinHandle,
};

use svc_agent::dataplane::{self, Datapath, NodeSettings, Tables};
use tokio::sync::watch;

use crate::{
    LabError, cgroup,
    netns::{self, Netns, PREFIX},
    pin_root,
    server::{self, Identity},
    wiring,
};

/// What to build.
#[derive(Clone, Debug)]
pub struct Topology {
    pub nodes: Vec<NodeSpec>,
}

#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub name: String,
    pub pods: Vec<PodSpec>,
}

#[derive(Clone, Debug)]
pub struct PodSpec {
    pub name: String,
    pub tcp_ports: Vec<u16>,
    pub udp_ports: Vec<u16>,
}

impl PodSpec {
    pub fn new(name: &str, tcp_ports: &[u16], udp_ports: &[u16]) -> Self {
        Self {
            name: name.to_owned(),
            tcp_ports: tcp_ports.to_vec(),
            udp_ports: udp_ports.to_vec(),
        }
    }
}

pub struct LabPod {
    pub name: String,
    pub node: String,
    pub address: Ipv4Addr,
    pub address6: std::net::Ipv6Addr,
    /// The host-side veth in the node's namespace.
    pub host_interface: String,
    /// Its node's cgroup, which holds the pod's processes as a real node's
    /// root cgroup holds kubepods: the node's socket hooks see them.
    cgroup: PathBuf,
    ns: Netns,
}

impl LabPod {
    /// The pod's network namespace. Threads of this process that enter it
    /// stay in this process's cgroup: their sockets take the per-packet
    /// path only, which is how tests reach it.
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// A command that runs in the pod: in its network namespace and its
    /// node's cgroup, so the node's socket hooks balance its connect()
    /// calls as on a real node.
    pub fn command(&self, program: &str) -> Result<Command, LabError> {
        let mut command = self.ns.command(program)?;
        cgroup::join_on_spawn(&mut command, &self.cgroup)?;
        Ok(command)
    }
}

pub struct LabNode {
    pub name: String,
    pub address: Ipv4Addr,
    pub address6: std::net::Ipv6Addr,
    pub pin_dir: PathBuf,
    /// The cgroup the node's processes run in (and its socket hooks attach to).
    pub cgroup: PathBuf,
    ns: Netns,
}

impl LabNode {
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// A command that runs on the node: in its network namespace and its
    /// cgroup, as a process of a real node would.
    pub fn command(&self, program: &str) -> Result<Command, LabError> {
        let mut command = self.ns.command(program)?;
        cgroup::join_on_spawn(&mut command, &self.cgroup)?;
        Ok(command)
    }
}

struct ServerHandle {
    stop: watch::Sender<bool>,
    thread: JoinHandle<()>,
}

/// A running lab. Dropping it removes everything it made.
pub struct Lab {
    id: String,
    pin_dir: PathBuf,
    servers: Vec<ServerHandle>,
    /// Keeps the fabric ports' XDP programs attached.
    fabric_xdp: Option<Datapath>,
    // Dropped after `Drop::drop` ran, in this order: pods, nodes, client,
    // fabric (each `Netns` deletes its namespace).
    pods: Vec<LabPod>,
    nodes: Vec<LabNode>,
    client: Option<Netns>,
    fabric: Option<Netns>,
}

static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

/// The source a pod sees when it reaches itself through a Service: no
/// node's own address (the stack would drop it as a martian), inside the
/// range pods route to their node.
pub const HAIRPIN_ADDRESS: Ipv4Addr = Ipv4Addr::new(198, 18, 255, 254);
/// Ports source NAT gives flows: above Linux's default ephemeral range
/// (32768-60999), so they never meet the node's own sockets.
pub const NAT_PORTS: (u16, u16) = (61000, 65535);
/// The lab's service CIDR: its ClusterIPs and its load balancer pool
/// (198.19.255.0/24). The agents `svc-lab` runs are told it, so packets
/// to an address or port of it no Service serves are refused.
pub const SERVICE_CIDR: &str = "198.19.0.0/16";
/// The same for IPv6: the ClusterIP range fd00:198:19::/112 and the load
/// balancer pool fd00:198:19::ff:0/112.
pub const SERVICE_CIDR6: &str = "fd00:198:19::/104";

impl Lab {
    pub fn up(topology: &Topology) -> Result<Self, LabError> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(LabError::NotRoot);
        }
        if topology.nodes.is_empty() || topology.nodes.len() > wiring::MAX_NODES {
            return Err(LabError::Topology("a lab has 1 to 200 nodes".into()));
        }
        ensure_bpffs()?;
        netns::sweep_stale(&pin_root());
        cgroup::sweep_stale();
        let id = format!(
            "{PREFIX}{}x{}",
            std::process::id(),
            LAB_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut lab = Self {
            pin_dir: pin_root().join(&id),
            id,
            servers: Vec::new(),
            fabric_xdp: None,
            pods: Vec::new(),
            nodes: Vec::new(),
            client: None,
            fabric: None,
        };
        // On any error below, dropping `lab` removes what was made so far.
        lab.build(topology)?;
        Ok(lab)
    }

    fn ns_name(&self, role: &str, name: &str) -> String {
        format!("{}-{role}-{name}", self.id)
    }

    fn build(&mut self, topology: &Topology) -> Result<(), LabError> {
        self.fabric = Some(wiring::create_fabric(&self.ns_name("fabric", "net"))?);
        for (index, spec) in topology.nodes.iter().enumerate() {
            let number = node_number(index)?;
            let node = self.add_node(spec, number)?;
            self.nodes.push(node);
        }
        self.pass_xdp_on_fabric()?;
        let routed: Vec<(&Netns, u8)> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(index, node)| node_number(index).map(|number| (&node.ns, number)))
            .collect::<Result<_, _>>()?;
        wiring::route_pod_cidrs(&routed)?;
        for (index, spec) in topology.nodes.iter().enumerate() {
            for (pod_index, pod) in spec.pods.iter().enumerate() {
                self.add_pod(index, pod_index, pod)?;
            }
        }
        let numbers: Vec<u8> = (0..self.nodes.len())
            .map(node_number)
            .collect::<Result<_, _>>()?;
        let client =
            wiring::create_client(self.fabric()?, &self.ns_name("client", "ext"), &numbers)?;
        self.client = Some(client);
        Ok(())
    }

    fn fabric(&self) -> Result<&Netns, LabError> {
        self.fabric
            .as_ref()
            .ok_or_else(|| LabError::Topology("no fabric".into()))
    }

    /// Frames a node's XDP program sends back (XDP_TX) into a veth only
    /// arrive when the peer runs an XDP program too: a pass-everything one
    /// on every fabric port.
    fn pass_xdp_on_fabric(&mut self) -> Result<(), LabError> {
        let ports: Vec<String> = (0..self.nodes.len())
            .map(|index| node_number(index).map(wiring::fabric_port))
            .collect::<Result<_, _>>()?;
        let datapath = pass_xdp(self.fabric()?, ports)?;
        self.fabric_xdp = Some(datapath);
        Ok(())
    }

    fn add_node(&self, spec: &NodeSpec, number: u8) -> Result<LabNode, LabError> {
        let ns = wiring::create_node(self.fabric()?, &self.ns_name("node", &spec.name), number)?;
        Ok(LabNode {
            name: spec.name.clone(),
            address: wiring::node_address(number),
            address6: wiring::node_address6(number),
            pin_dir: self.pin_dir.join(&spec.name),
            cgroup: cgroup::create(&self.id, &spec.name)?,
            ns,
        })
    }

    fn add_pod(
        &mut self,
        node_index: usize,
        pod_index: usize,
        spec: &PodSpec,
    ) -> Result<(), LabError> {
        let node = &self.nodes[node_index];
        let (ns, address, host_interface) = wiring::create_pod(
            &node.ns,
            &self.ns_name("pod", &spec.name),
            node_number(node_index)?,
            pod_index,
        )?;
        let identity = Identity {
            pod: spec.name.clone(),
            node: node.name.clone(),
        };
        let server = start_server(&ns, identity, &spec.tcp_ports, &spec.udp_ports)?;
        self.servers.push(server);
        self.pods.push(LabPod {
            name: spec.name.clone(),
            node: node.name.clone(),
            address,
            address6: wiring::pod_address6(address),
            host_interface,
            cgroup: node.cgroup.clone(),
            ns,
        });
        Ok(())
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    pub fn node(&self, name: &str) -> Result<&LabNode, LabError> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| LabError::Unknown {
                kind: "node",
                name: name.to_owned(),
            })
    }

    pub fn pod(&self, name: &str) -> Result<&LabPod, LabError> {
        self.pods
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| LabError::Unknown {
                kind: "pod",
                name: name.to_owned(),
            })
    }

    pub fn pods(&self) -> &[LabPod] {
        &self.pods
    }

    pub fn client(&self) -> Result<&Netns, LabError> {
        self.client.as_ref().ok_or_else(|| LabError::Unknown {
            kind: "client",
            name: "client".into(),
        })
    }

    /// Loads svc-lb's datapath for `node` (maps pinned in the node's pin
    /// directory) and attaches it to every pod veth of that node.
    pub fn load_datapath(&self, node: &str) -> Result<(), LabError> {
        self.load_datapath_in(node, svc_agent::model::LbMode::Snat)
    }

    /// [`Self::load_datapath`], external traffic to remote backends sent
    /// as `lb_mode` says.
    pub fn load_datapath_in(
        &self,
        node: &str,
        lb_mode: svc_agent::model::LbMode,
    ) -> Result<(), LabError> {
        let lab_node = self.node(node)?;
        let pin_dir = lab_node.pin_dir.clone();
        let interfaces: Vec<String> = self
            .pods
            .iter()
            .filter(|p| p.node == node)
            .map(|p| p.host_interface.clone())
            .collect();
        let node_name = node.to_owned();
        let node_settings = NodeSettings {
            lb_mode,
            ..self.node_settings(lab_node)
        };
        let node_cgroup = lab_node.cgroup.clone();
        lab_node
            .ns
            .in_thread(move || {
                let mut datapath = Datapath::load(Some(&pin_dir))?;
                datapath.tables().set_node(&node_settings)?;
                datapath.tables().set_host_netns()?;
                for interface in &interfaces {
                    datapath.attach_pod_interface(interface)?;
                }
                datapath.attach_node_interface("eth0")?;
                datapath.attach_cgroup(&node_cgroup)?;
                datapath.finish_migrations()?;
                Ok::<(), dataplane::DataplaneError>(())
            })?
            .map_err(|source| LabError::Datapath {
                node: node_name,
                source: Box::new(source),
            })
    }

    /// What the datapath of `node` is told about it.
    fn node_settings(&self, node: &LabNode) -> NodeSettings {
        NodeSettings {
            node_address: node.address,
            hairpin_address: HAIRPIN_ADDRESS,
            nat_ports: NAT_PORTS,
            service_cidrs: Vec::new(),
            lb_mode: svc_agent::model::LbMode::Snat,
        }
    }

    /// The pinned maps of `node`'s datapath.
    pub fn tables(&self, node: &str) -> Result<Tables, LabError> {
        Tables::open_pinned(&self.node(node)?.pin_dir).map_err(|source| LabError::Datapath {
            node: node.to_owned(),
            source: Box::new(source),
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for server in self.servers.drain(..) {
            let _ = server.stop.send(true);
            let _ = server.thread.join();
        }
        self.fabric_xdp = None;
        // Pinned links hold the programs; removing them detaches.
        crate::remove_lab_pins(&self.pin_dir);
        cgroup::remove_lab(&self.id);
        // The namespaces go when the fields drop, right after this.
    }
}

/// The 1-based number of the node at `index`.
fn node_number(index: usize) -> Result<u8, LabError> {
    u8::try_from(index + 1).map_err(|_| LabError::Topology("a lab has 1 to 200 nodes".into()))
}

/// Loads a pass-everything XDP program on `ports` of the fabric; it stays
/// attached while the returned datapath lives.
pub fn pass_xdp(fabric: &Netns, ports: Vec<String>) -> Result<Datapath, LabError> {
    fabric
        .in_thread(move || {
            let mut datapath = Datapath::load(None)?;
            for port in &ports {
                datapath.attach_xdp_pass(port)?;
            }
            Ok::<Datapath, dataplane::DataplaneError>(datapath)
        })?
        .map_err(|source| LabError::Datapath {
            node: "fabric".into(),
            source: Box::new(source),
        })
}

/// Starts a pod's server on a thread inside the pod's namespace and returns
/// once every port is bound.
fn start_server(
    ns: &Netns,
    identity: Identity,
    tcp_ports: &[u16],
    udp_ports: &[u16],
) -> Result<ServerHandle, LabError> {
    let (stop, stop_rx) = watch::channel(false);
    let (ready_tx, ready_rx) = mpsc::channel();
    let path = ns.path();
    let tcp_ports = tcp_ports.to_vec();
    let udp_ports = udp_ports.to_vec();
    let thread = std::thread::spawn(move || {
        let result = netns::enter(&path).and_then(|()| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| LabError::Io {
                    what: "starting a runtime".into(),
                    source,
                })
        });
        let runtime = match result {
            Ok(runtime) => runtime,
            Err(error) => {
                let _ = ready_tx.send(Err(error));
                return;
            }
        };
        runtime.block_on(async move {
            match server::bind(identity, &tcp_ports, &udp_ports).await {
                Ok(listeners) => {
                    let _ = ready_tx.send(Ok(()));
                    server::serve(listeners, stop_rx).await;
                }
                Err(source) => {
                    let _ = ready_tx.send(Err(LabError::Io {
                        what: "binding the lab server's ports".into(),
                        source,
                    }));
                }
            }
        });
    });
    let ready = ready_rx.recv().map_err(|_| LabError::ThreadPanicked {
        namespace: ns.name().to_owned(),
    })?;
    let handle = ServerHandle { stop, thread };
    match ready {
        Ok(()) => Ok(handle),
        Err(error) => {
            let _ = handle.thread.join();
            Err(error)
        }
    }
}

/// Mounts bpffs on /sys/fs/bpf when nothing is mounted there.
pub fn ensure_bpffs() -> Result<(), LabError> {
    let root = Path::new("/sys/fs/bpf");
    let mounted = std::fs::read_to_string("/proc/self/mounts")
        .map(|mounts| {
            mounts
                .lines()
                .any(|line| line.split_whitespace().nth(1) == Some("/sys/fs/bpf"))
        })
        .unwrap_or(false);
    if !mounted {
        netns::run(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(root))?;
    }
    Ok(())
}
