//! The ways a lab serves the benchmark's Services, one at a time on a
//! fresh lab: svc-lb (source NAT, and direct server return), kube-proxy's
//! iptables rules (legacy and nf_tables backends), kube-proxy's nftables
//! rules, and no translation at all.
use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use svc_agent::{dataplane::DataplaneError, model::NodeContext};
use svc_lab::{Lab, LabError, NodeSpec, PodSpec, Topology, netns::Netns, server::Answer};

use super::{ServicePort, TARGET_PORT, iptables, memcg, nftables};
use crate::stores::AgentPath;

pub const NODES: [&str; 2] = ["node-1", "node-2"];
/// Backend pods per node: 10 in all, the endpoints of every Service.
pub const PODS_PER_NODE: usize = 5;
/// The pod on node-1 that dials ClusterIPs (serves nothing, backs no
/// Service).
pub const CLIENT_POD: &str = "client-pod";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    SvcLb,
    /// svc-lb with `--lb-mode dsr`: the NodePort's remote backends are
    /// reached by direct server return.
    SvcLbDsr,
    /// kube-proxy iptables mode, iptables' legacy backend.
    Iptables,
    /// kube-proxy iptables mode, iptables' nf_tables backend.
    IptablesNft,
    /// kube-proxy nftables mode.
    Nftables,
    /// The client dials the pods themselves.
    Direct,
}

impl Mode {
    pub const ALL: [Mode; 6] = [
        Mode::SvcLb,
        Mode::SvcLbDsr,
        Mode::Iptables,
        Mode::IptablesNft,
        Mode::Nftables,
        Mode::Direct,
    ];

    /// The key in kube-proxy.json.
    pub fn key(self) -> &'static str {
        match self {
            Mode::SvcLb => "svclb",
            Mode::SvcLbDsr => "svclb_dsr",
            Mode::Iptables => "iptables",
            Mode::IptablesNft => "iptables_nft",
            Mode::Nftables => "nftables",
            Mode::Direct => "direct",
        }
    }

    /// How svc-lb sends external traffic to remote backends in this mode.
    pub fn lb_mode(self) -> svc_agent::model::LbMode {
        if self == Mode::SvcLbDsr {
            svc_agent::model::LbMode::Dsr
        } else {
            svc_agent::model::LbMode::Snat
        }
    }

    /// Whether svc-lb serves the Services in this mode.
    pub fn is_svclb(self) -> bool {
        matches!(self, Mode::SvcLb | Mode::SvcLbDsr)
    }

    /// Its name for people (the chart's legend).
    pub fn label(self) -> &'static str {
        match self {
            Mode::SvcLb => "svc-lb",
            Mode::SvcLbDsr => "svc-lb (DSR)",
            Mode::Iptables => "iptables (legacy)",
            Mode::IptablesNft => "iptables (nf_tables)",
            Mode::Nftables => "nftables",
            Mode::Direct => "direct path",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModeError {
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error("{mode:?} on {node}: svc-lb datapath")]
    Datapath {
        mode: Mode,
        node: String,
        source: Box<svc_agent::dataplane::DataplaneError>,
    },
    #[error("{tool} on {node} failed: {stderr}")]
    Tool {
        tool: &'static str,
        node: String,
        stderr: String,
    },
    #[error("{what}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{mode:?} does not forward to {target}: {detail}")]
    NotForwarding {
        mode: Mode,
        target: SocketAddr,
        detail: String,
    },
}

/// Two nodes with five backend pods each (HTTP on [`TARGET_PORT`]), and
/// [`CLIENT_POD`] on node-1.
pub fn topology() -> Topology {
    Topology {
        nodes: NODES
            .iter()
            .enumerate()
            .map(|(n, node)| {
                let mut pods: Vec<PodSpec> = (0..PODS_PER_NODE)
                    .map(|p| PodSpec::new(&format!("backend-{}-{p}", n + 1), &[TARGET_PORT], &[]))
                    .collect();
                if n == 0 {
                    pods.push(PodSpec::new(CLIENT_POD, &[], &[]));
                }
                NodeSpec {
                    name: (*node).to_owned(),
                    pods,
                }
            })
            .collect(),
    }
}

/// A lab for one mode: backends keep no TIME_WAIT sockets and the client
/// has the widest port range (DESIGN.md, benchmark method notes).
pub fn lab() -> Result<Lab, ModeError> {
    let lab = Lab::up(&topology())?;
    for pod in lab.pods() {
        pod.netns().sysctl("net.ipv4.tcp_max_tw_buckets", "0")?;
    }
    lab.client()?
        .sysctl("net.ipv4.ip_local_port_range", "1024 65535")?;
    Ok(lab)
}

/// Every backend pod's address: the endpoints of every Service.
pub fn endpoints(lab: &Lab) -> Vec<Ipv4Addr> {
    lab.pods()
        .iter()
        .filter(|p| p.name.starts_with("backend-"))
        .map(|p| p.address)
        .collect()
}

/// Where the client sends its connections: the NodePort of the last
/// Service (the one kube-proxy's rules scan last) on node-1, or for
/// [`Mode::Direct`] every pod in turn.
pub fn targets(
    lab: &Lab,
    mode: Mode,
    services: &[ServicePort],
) -> Result<Vec<SocketAddr>, ModeError> {
    if mode == Mode::Direct {
        return Ok(endpoints(lab)
            .into_iter()
            .map(|a| SocketAddr::V4(SocketAddrV4::new(a, TARGET_PORT)))
            .collect());
    }
    let node = lab.node(NODES[0])?;
    let port = services.last().and_then(|s| s.node_port).unwrap_or(0);
    Ok(vec![SocketAddr::V4(SocketAddrV4::new(node.address, port))])
}

/// Where [`CLIENT_POD`] sends its connections: the ClusterIP of the last
/// Service, or for [`Mode::Direct`] every backend pod in turn.
pub fn pod_targets(lab: &Lab, mode: Mode, services: &[ServicePort]) -> Vec<SocketAddr> {
    if mode == Mode::Direct {
        return endpoints(lab)
            .into_iter()
            .map(|a| SocketAddr::V4(SocketAddrV4::new(a, TARGET_PORT)))
            .collect();
    }
    services
        .last()
        .map(|s| SocketAddr::V4(SocketAddrV4::new(s.cluster_ip, s.port)))
        .into_iter()
        .collect()
}

/// What programming all Services cost on node-1.
pub struct Programmed {
    pub elapsed: Duration,
    /// Peak RSS of the program that wrote the rules (iptables-restore, nft)
    /// or of this process while svc-lb's tables were applied.
    pub peak_rss_kib: Option<u64>,
    /// Kernel memory the rule loader left charged to its scratch memory
    /// cgroup ([`super::memcg`]); `None` for svc-lb and the direct path.
    pub rules_kernel_bytes: Option<u64>,
    /// svc-lb's writer of node-1, kept for the change that follows.
    writer: Option<AgentWriter>,
}

impl Programmed {
    const NOTHING: Programmed = Programmed {
        elapsed: Duration::ZERO,
        peak_rss_kib: None,
        rules_kernel_bytes: None,
        writer: None,
    };
}

/// What svc-agent holds to program a node, as it holds it: its watch
/// stores, its `Translator` and its `Tables` (tests/src/stores.rs).
struct AgentWriter {
    agent: AgentPath,
    /// Each pod's address and node: where its endpoint says it runs.
    pod_nodes: Vec<(Ipv4Addr, String)>,
}

impl AgentWriter {
    fn new(lab: &Lab, node: &str, services: &[ServicePort]) -> Result<AgentWriter, ModeError> {
        let pod_nodes: Vec<(Ipv4Addr, String)> = lab
            .pods()
            .iter()
            .map(|p| (p.address, p.node.clone()))
            .collect();
        let mut agent = AgentPath::new(
            lab.tables(node)?,
            NodeContext {
                name: node.to_owned(),
                zone: None,
                node_addresses: vec![lab.node(node)?.address.into()],
            },
        );
        agent.list(
            services.iter().map(service_object).collect(),
            services
                .iter()
                .map(|s| slice_object(s, &pod_nodes, 1))
                .collect(),
        );
        Ok(AgentWriter { agent, pod_nodes })
    }

    fn datapath_error(node: &str) -> impl FnOnce(DataplaneError) -> ModeError {
        move |source| ModeError::Datapath {
            mode: Mode::SvcLb,
            node: node.to_owned(),
            source: Box::new(source),
        }
    }
}

/// The Service object of a benchmark Service: type NodePort when it has
/// one.
fn service_object(service: &ServicePort) -> Service {
    let mut port = serde_json::json!({
        "name": service.port_name(), "port": service.port,
        "protocol": "TCP", "targetPort": TARGET_PORT,
    });
    if let Some(node_port) = service.node_port {
        port["nodePort"] = node_port.into();
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": service.name, "namespace": service.namespace, "resourceVersion": "1"},
        "spec": {
            "type": if service.node_port.is_some() { "NodePort" } else { "ClusterIP" },
            "clusterIP": service.cluster_ip.to_string(),
            "ports": [port],
            "selector": {"app": service.name},
        }
    }))
    .expect("a Service object")
}

/// The EndpointSlice of a benchmark Service: every endpoint ready, on the
/// node its pod runs on.
fn slice_object(
    service: &ServicePort,
    pod_nodes: &[(Ipv4Addr, String)],
    version: u32,
) -> EndpointSlice {
    let endpoints: Vec<_> = service
        .endpoints
        .iter()
        .map(|address| {
            let node = pod_nodes.iter().find(|(a, _)| a == address).map(|(_, n)| n);
            serde_json::json!({
                "addresses": [address.to_string()],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "nodeName": node,
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{}-bench", service.name), "namespace": service.namespace,
                     "resourceVersion": version.to_string(),
                     "labels": {"kubernetes.io/service-name": service.name}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": service.port_name(), "port": TARGET_PORT, "protocol": "TCP"}],
    }))
    .expect("an EndpointSlice object")
}

/// Programs `services` into every node (node-1 timed).
pub fn program(lab: &Lab, mode: Mode, services: &[ServicePort]) -> Result<Programmed, ModeError> {
    let mut first = None;
    for node in NODES {
        let programmed = match mode {
            Mode::SvcLb | Mode::SvcLbDsr => {
                lab.load_datapath_in(node, mode.lb_mode())?;
                apply_svclb(lab, node, services)?
            }
            Mode::Iptables | Mode::IptablesNft | Mode::Nftables => {
                let text = rule_text(lab, mode, node, services)?;
                load_rules(lab, mode, node, &text)?
            }
            Mode::Direct => Programmed::NOTHING,
        };
        first.get_or_insert(programmed);
    }
    Ok(first.unwrap_or(Programmed::NOTHING))
}

/// Removes the last endpoint of the last Service on node-1 the way each
/// mode does it, and returns how long until the change is in the kernel:
/// svc-lb goes the agent's way, from the new EndpointSlice in its store
/// through its Translator to the maps, against what its Tables remember;
/// the iptables modes resync everything with iptables-restore; nftables
/// sends kube-proxy's incremental transaction.
pub fn change_one_endpoint(
    lab: &Lab,
    mode: Mode,
    services: &[ServicePort],
    programmed: &mut Programmed,
) -> Result<Duration, ModeError> {
    let mut changed = services.to_vec();
    let Some(last) = changed.last_mut() else {
        return Ok(Duration::ZERO);
    };
    let Some(removed) = last.endpoints.pop() else {
        return Ok(Duration::ZERO);
    };
    let node = NODES[0];
    Ok(match mode {
        Mode::SvcLb | Mode::SvcLbDsr => {
            let writer = programmed
                .writer
                .as_mut()
                .expect("svc-lb was programmed through its writer");
            let changed_slice = slice_object(&changed[changed.len() - 1], &writer.pod_nodes, 2);
            let start = Instant::now();
            writer
                .agent
                .slice_changed(changed_slice)
                .map_err(AgentWriter::datapath_error(node))?;
            start.elapsed()
        }
        Mode::Iptables | Mode::IptablesNft => {
            let text = rule_text(lab, mode, node, &changed)?;
            load_rules(lab, mode, node, &text)?.elapsed
        }
        Mode::Nftables => {
            let original = &services[services.len() - 1];
            let text = nftables::endpoint_removed(original, removed);
            load_rules(lab, mode, node, &text)?.elapsed
        }
        Mode::Direct => Duration::ZERO,
    })
}

/// One request from the external client to `target` through the mode;
/// the answer must come from a backend pod.
pub fn check_forwards(lab: &Lab, mode: Mode, target: SocketAddr) -> Result<Answer, ModeError> {
    curl_backend(lab.client()?, mode, target)
}

/// One request from [`CLIENT_POD`] to `target` through the mode; the answer
/// must come from a backend pod.
pub fn check_pod_forwards(lab: &Lab, mode: Mode, target: SocketAddr) -> Result<Answer, ModeError> {
    curl_backend(lab.pod(CLIENT_POD)?.netns(), mode, target)
}

fn curl_backend(from: &Netns, mode: Mode, target: SocketAddr) -> Result<Answer, ModeError> {
    let output = from
        .command("curl")?
        .args(["-sS", "--max-time", "3", &format!("http://{target}/")])
        .output()
        .map_err(|source| ModeError::Io {
            what: "running curl in the client".into(),
            source,
        })?;
    let body = String::from_utf8_lossy(&output.stdout);
    Answer::parse(&body)
        .filter(|answer| answer.pod.starts_with("backend-"))
        .ok_or_else(|| ModeError::NotForwarding {
            mode,
            target,
            detail: format!("{body}{}", String::from_utf8_lossy(&output.stderr))
                .trim()
                .to_owned(),
        })
}

/// All of `services` programmed into `node` by svc-agent's writer, from
/// empty maps: objects to frontends (its Translator), then its Tables'
/// first apply (which reads the maps), timed together.
fn apply_svclb(lab: &Lab, node: &str, services: &[ServicePort]) -> Result<Programmed, ModeError> {
    let mut writer = AgentWriter::new(lab, node, services)?;
    reset_peak_rss();
    let start = Instant::now();
    writer
        .agent
        .sync_all()
        .map_err(AgentWriter::datapath_error(node))?;
    let elapsed = start.elapsed();
    Ok(Programmed {
        elapsed,
        peak_rss_kib: own_peak_rss_kib(),
        rules_kernel_bytes: None,
        writer: Some(writer),
    })
}

fn rule_text(
    lab: &Lab,
    mode: Mode,
    node: &str,
    services: &[ServicePort],
) -> Result<String, ModeError> {
    Ok(match mode {
        Mode::Nftables => nftables::ruleset(&[lab.node(node)?.address], services),
        _ => iptables::ruleset(services),
    })
}

/// Loads rule text into `node` with the mode's tool, timed, and reaps the
/// tool with wait4 for its peak RSS.
fn load_rules(lab: &Lab, mode: Mode, node: &str, text: &str) -> Result<Programmed, ModeError> {
    let tool: &'static str = match mode {
        Mode::Iptables => "iptables-legacy-restore",
        Mode::IptablesNft => "iptables-nft-restore",
        _ => "nft",
    };
    // One directory per lab: tests in one process load rules into labs of
    // their own at the same time, and must not read each other's files.
    let dir = std::env::temp_dir().join(format!("svc-bench-{}-{}", std::process::id(), lab.id()));
    std::fs::create_dir_all(&dir).map_err(io("creating a scratch directory"))?;
    let rules = dir.join(format!("{node}.rules"));
    let errors = dir.join(format!("{node}.stderr"));
    std::fs::write(&rules, text).map_err(io("writing the rule file"))?;
    let mut command = lab.node(node)?.netns().command(tool)?;
    if mode == Mode::Nftables {
        command.arg("-f");
    }
    command
        .arg(&rules)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    command.stderr(std::fs::File::create(&errors).map_err(io("creating the stderr file"))?);
    let memcg = memcg::ScratchMemcg::create();
    if let Some(memcg) = &memcg {
        memcg.join_on_spawn(&mut command)?;
    }
    let (status, elapsed, peak_rss_kib) = run_measured(&mut command)?;
    let rules_kernel_bytes = memcg.as_ref().and_then(memcg::ScratchMemcg::kernel_bytes);
    let stderr = std::fs::read_to_string(&errors).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    if !status {
        return Err(ModeError::Tool {
            tool,
            node: node.to_owned(),
            stderr: stderr.chars().take(2000).collect(),
        });
    }
    Ok(Programmed {
        elapsed,
        peak_rss_kib: Some(peak_rss_kib),
        rules_kernel_bytes,
        writer: None,
    })
}

/// Runs `command` to its end: (succeeded, wall time, peak RSS in KiB).
fn run_measured(command: &mut Command) -> Result<(bool, Duration, u64), ModeError> {
    let start = Instant::now();
    let child = command.spawn().map_err(io("starting the rule loader"))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child, not reaped yet; both pointers are valid.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let elapsed = start.elapsed();
    if reaped != pid {
        return Err(ModeError::Io {
            what: "waiting for the rule loader".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    let succeeded = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    Ok((succeeded, elapsed, usage.ru_maxrss.max(0) as u64))
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> ModeError {
    move |source| ModeError::Io {
        what: what.to_owned(),
        source,
    }
}

/// Resets this process's peak RSS (VmHWM) to its current RSS.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// This process's peak RSS (VmHWM) in KiB.
pub fn own_peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Kernel memory held by the maps svc-lb pinned for `node` (bpftool's
/// bytes_memlock, summed).
pub fn svclb_map_bytes(lab: &Lab, node: &str) -> Result<u64, ModeError> {
    let dir = lab.node(node)?.pin_dir.clone();
    let mut total = 0;
    let entries = std::fs::read_dir(&dir).map_err(io("listing the pin directory"))?;
    for entry in entries.filter_map(Result::ok) {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        total += map_memlock(&entry.path()).unwrap_or(0);
    }
    Ok(total)
}

fn map_memlock(pin: &Path) -> Option<u64> {
    let output = Command::new("bpftool")
        .args(["-j", "map", "show", "pinned"])
        .arg(pin)
        .output()
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    value["bytes_memlock"].as_u64()
}
