//! `cargo xtask chaos`: what users see while the cluster changes under
//! load, counted. A two-node `svc-lab` of examples/chaos/ (a 3-replica
//! Deployment serving HTTP and a UDP echo, LoadBalancer and NodePort
//! Services) carries continuous load on every path:
//! - a new TCP connection per request: client -> NodePort of each node,
//!   client -> LB IP, pod -> ClusterIP;
//! - long-lived keep-alive connections through the same paths, each of
//!   which must never break;
//! - UDP request/response through a NodePort, each datagram answered.
//!
//! and each scenario changes something meanwhile. A scenario passes only
//! with zero failed requests, zero lost datagrams and zero broken
//! connections.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark harness panics on misuse"
)]

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use svc_lab::{Lab, NodeSpec, PodSpec, Topology, cluster::Cluster, netns::Netns, wiring};

use crate::{
    agent::Agent,
    apiserver::{self, ApiServer},
    churn_load::Load,
};

const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 20);
const NODE_PORT: u16 = 30090;
const UDP_NODE_PORT: u16 = 30053;

/// One scenario's figures.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Figures {
    pub requests: u64,
    pub failed: u64,
    pub udp_sent: u64,
    pub udp_lost: u64,
    pub long_lived: u64,
    pub long_lived_broken: u64,
    pub seconds: f64,
    /// Packets the datapaths did not forward as they came during the
    /// scenario, by node and reason (answered with a reset or ICMP error,
    /// or dropped).
    pub datapath_drops: BTreeMap<String, u64>,
    /// What went wrong, first few.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
    /// TCP trouble the lab's kernels counted during the scenario (resets
    /// sent, listen queue overflows, challenge ACKs, retransmitted SYNs,
    /// ...), "NAMESPACE COUNTER" -> delta: where a failure came from.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub kernel_counters: BTreeMap<String, u64>,
    /// apiserver_kill: from the API server answering again to the maps
    /// holding the change made then; churn: from the last change to the
    /// maps holding every Service's last endpoints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub converge_ms: Option<u64>,
    /// churn: endpoint changes written per second (the API server's
    /// answers pace it; 100 is asked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes_per_second: Option<f64>,
    /// churn: the agent's CPU time over the churn, in % of one core.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_cpu_percent: Option<f64>,
}

impl Figures {
    pub fn passed(&self) -> bool {
        self.failed == 0 && self.udp_lost == 0 && self.long_lived_broken == 0
    }
}

/// A lab brought down on drop.
struct ChaosLab {
    state: PathBuf,
    cluster: Cluster,
}

/// The `svc-lab` binary beside this one's profile directory
/// (target/PROFILE/deps/NAME -> target/PROFILE/svc-lab), with svc-agent
/// next to it.
fn svc_lab() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("svc-lab")
}

impl ChaosLab {
    /// `svc-lab up` of examples/chaos, its agents `agent` (default: the
    /// svc-agent beside svc-lab), with `agent_args` added to theirs.
    fn up(agent: Option<&Path>, agent_args: &[&str]) -> Self {
        static LABS: AtomicU64 = AtomicU64::new(0);
        let state = std::env::temp_dir().join(format!(
            "svc-chaos-{}-{}",
            std::process::id(),
            LABS.fetch_add(1, Ordering::Relaxed)
        ));
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/chaos");
        let mut lab = Self {
            state: state.clone(),
            cluster: Cluster::default(),
        };
        let mut args = vec!["up".to_owned(), "-f".into(), examples.display().to_string()];
        if let Some(agent) = agent {
            args.extend(["--agent".into(), agent.display().to_string()]);
        }
        args.extend(agent_args.iter().map(|arg| format!("--agent-arg={arg}")));
        lab.svc_lab(&args.iter().map(String::as_str).collect::<Vec<_>>());
        lab.reload();
        lab
    }

    /// Reads lab.json again (agents' pids change on a restart).
    fn reload(&mut self) {
        let text = std::fs::read_to_string(self.state.join("lab.json")).expect("lab.json");
        self.cluster = serde_json::from_str(&text).expect("lab.json");
    }

    /// The binary each node's agent runs now.
    fn agent_binaries(&mut self) -> Vec<PathBuf> {
        self.reload();
        self.cluster
            .nodes
            .iter()
            .map(|node| {
                let pid = node.agent_pid.expect("a running agent");
                std::fs::read_link(format!("/proc/{pid}/exe")).expect("the agent's binary")
            })
            .collect()
    }

    /// Runs `svc-lab ARGS` on this lab's state; panics when it fails.
    fn svc_lab(&self, args: &[&str]) -> String {
        let output = std::process::Command::new(svc_lab())
            .arg("--state")
            .arg(&self.state)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", svc_lab().display()));
        assert!(
            output.status.success(),
            "svc-lab {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn netns(&self, name: &str) -> Netns {
        Netns::existing(&format!("{}-{name}", self.cluster.id)).expect("a lab namespace")
    }

    fn client(&self) -> Netns {
        self.netns("client-ext")
    }

    /// The namespace of pod `name`.
    fn pod(&self, name: &str) -> Netns {
        let pod = self
            .cluster
            .pods
            .iter()
            .find(|p| p.object.metadata.name.as_deref() == Some(name))
            .expect("the pod");
        let number = self
            .cluster
            .nodes
            .iter()
            .find(|n| n.name() == pod.node)
            .expect("its node")
            .number;
        self.netns(&format!("pod-{number}-{}", pod.index))
    }

    /// The load balancer IP the lab gave Service `web`.
    fn lb_ip(&self) -> Ipv4Addr {
        self.cluster
            .services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some("web"))
            .and_then(|s| {
                s.status
                    .as_ref()?
                    .load_balancer
                    .as_ref()?
                    .ingress
                    .as_ref()?
                    .first()?
                    .ip
                    .clone()
            })
            .expect("web's load balancer IP")
            .parse()
            .expect("an IPv4 address")
    }

    /// Every node's datapath drop counters: "NODE REASON" -> packets.
    fn drops(&self) -> BTreeMap<String, u64> {
        let mut drops = BTreeMap::new();
        for node in self.node_names() {
            let dump = self.svc_lab(&["exec", &format!("node/{node}"), "--", "svc-agent", "dump"]);
            let Some(line) = dump.lines().find_map(|l| l.strip_prefix("not forwarded: ")) else {
                continue;
            };
            for pair in line.split_whitespace() {
                if let Some((reason, packets)) = pair.split_once('=') {
                    drops.insert(format!("{node} {reason}"), packets.parse().unwrap_or(0));
                }
            }
        }
        drops
    }

    /// The trouble counters of every lab namespace present now:
    /// "NAMESPACE COUNTER" -> value.
    fn kernel_counters(&self) -> BTreeMap<String, u64> {
        let prefix = format!("{}-", self.cluster.id);
        let mut counters = BTreeMap::new();
        for name in svc_lab::netns::lab_namespaces() {
            let Some(short) = name.strip_prefix(&prefix) else {
                continue;
            };
            let Ok(netns) = Netns::existing(&name) else {
                continue;
            };
            for (counter, value) in trouble_counters(&netns) {
                counters.insert(format!("{short} {counter}"), value);
            }
        }
        counters
    }

    fn node_names(&self) -> Vec<String> {
        self.cluster
            .nodes
            .iter()
            .map(|n| n.name().to_owned())
            .collect()
    }
}

impl Drop for ChaosLab {
    fn drop(&mut self) {
        let down = std::process::Command::new(svc_lab())
            .arg("--state")
            .arg(&self.state)
            .arg("down")
            .output();
        if !down.is_ok_and(|output| output.status.success()) {
            eprintln!("svc-lab down failed");
        }
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// The counters a scenario's figures report the growth of.
struct Before {
    drops: BTreeMap<String, u64>,
    kernel: BTreeMap<String, u64>,
}

impl Before {
    fn read(lab: &ChaosLab) -> Self {
        Self {
            drops: lab.drops(),
            kernel: lab.kernel_counters(),
        }
    }
}

/// The counters of `after` that grew since `before` (one absent before,
/// a namespace made meanwhile, counts from zero), by how much.
fn grown(before: &BTreeMap<String, u64>, after: BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .into_iter()
        .filter_map(|(what, value)| {
            let during = value.saturating_sub(before.get(&what).copied().unwrap_or(0));
            (during > 0).then_some((what, during))
        })
        .collect()
}

/// The counters of `netns`'s /proc/net/{snmp,netstat} that only move
/// when TCP has trouble, with their values (none when it cannot be read).
pub fn trouble_counters(netns: &Netns) -> Vec<(String, u64)> {
    let read = netns.in_thread(|| {
        ["snmp", "netstat"]
            .map(|file| {
                std::fs::read_to_string(format!("/proc/thread-self/net/{file}")).unwrap_or_default()
            })
            .concat()
    });
    read.map(|text| parse_trouble_counters(&text))
        .unwrap_or_default()
}

fn parse_trouble_counters(text: &str) -> Vec<(String, u64)> {
    const TROUBLE: [&str; 18] = [
        "Tcp:AttemptFails",
        "Tcp:EstabResets",
        "Tcp:OutRsts",
        "Tcp:InErrs",
        "TcpExt:ListenOverflows",
        "TcpExt:ListenDrops",
        "TcpExt:TCPBacklogDrop",
        "TcpExt:TCPReqQFullDrop",
        "TcpExt:TCPChallengeACK",
        "TcpExt:TCPSYNChallenge",
        "TcpExt:PAWSActive",
        "TcpExt:PAWSEstab",
        "TcpExt:TWRecycled",
        "TcpExt:TCPTimeWaitOverflow",
        "TcpExt:TCPAbortOnData",
        "TcpExt:TCPAbortOnTimeout",
        "TcpExt:TCPSynRetrans",
        "TcpExt:TCPTimeouts",
    ];
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    // Each table is a line of names and a line of values, both
    // starting with "Table:".
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        let (Some((table, names)), Some((_, values))) =
            (names.split_once(' '), values.split_once(' '))
        else {
            continue;
        };
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            let counter = format!("{table}{name}");
            if TROUBLE.contains(&counter.as_str()) {
                found.push((counter, value.parse().unwrap_or(0)));
            }
        }
    }
    found
}

/// UDP request/response from `netns` to `target`, one datagram at a time
/// (each must be answered within a second), until stopped.
struct UdpLoad {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
    worker: Option<JoinHandle<()>>,
}

impl UdpLoad {
    fn start(netns: &Netns, target: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (sent, lost) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let path = netns.path();
        let worker = {
            let (stop, sent, lost) = (stop.clone(), sent.clone(), lost.clone());
            std::thread::spawn(move || {
                svc_lab::netns::enter(&path).unwrap();
                let mut buffer = [0u8; 512];
                while !stop.load(Ordering::Relaxed) {
                    // A socket (a source port, a flow) per query: a late
                    // answer cannot pass for the next query's.
                    let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
                    socket
                        .set_read_timeout(Some(Duration::from_secs(1)))
                        .unwrap();
                    sent.fetch_add(1, Ordering::Relaxed);
                    let answered = socket.send_to(b"query", target).is_ok()
                        && socket.recv_from(&mut buffer).is_ok_and(|(len, _)| {
                            String::from_utf8_lossy(&buffer[..len]).contains("pod=")
                        });
                    if !answered {
                        lost.fetch_add(1, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        Self {
            stop,
            sent,
            lost,
            worker: Some(worker),
        }
    }

    fn stop(&mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
        (
            self.sent.load(Ordering::Relaxed),
            self.lost.load(Ordering::Relaxed),
        )
    }
}

/// Every kind of load, started together.
struct AllLoad {
    tcp: Load,
    udp: UdpLoad,
    long_lived: u64,
}

impl AllLoad {
    fn start(lab: &ChaosLab, pause: Duration) -> Self {
        let (client, load_pod) = (lab.client(), lab.pod("load"));
        let node_port = |number: u8| SocketAddr::from((wiring::node_address(number), NODE_PORT));
        Self::on(
            &[
                (&client, node_port(1)),
                (&client, node_port(2)),
                (&client, SocketAddr::from((lab.lb_ip(), 80))),
                (&load_pod, SocketAddr::from((CLUSTER_IP, 80))),
            ],
            (
                &client,
                SocketAddr::from((wiring::node_address(1), UDP_NODE_PORT)),
            ),
            pause,
        )
    }

    /// A short-connection worker and two long-lived connections on each
    /// path (from a namespace to a target), and UDP from `udp.0` to `udp.1`.
    fn on(paths: &[(&Netns, SocketAddr)], udp: (&Netns, SocketAddr), pause: Duration) -> Self {
        let mut tcp = Load::with_pause(pause);
        for (netns, target) in paths {
            tcp.short(netns, *target, 1);
        }
        let mut id = 0;
        for (netns, target) in paths {
            tcp.long(netns, *target, id..id + 2);
            id += 2;
        }
        Self {
            tcp,
            udp: UdpLoad::start(udp.0, udp.1),
            long_lived: id as u64,
        }
    }

    fn stop(self, started: Instant, lab: &ChaosLab, before: &Before) -> Figures {
        let mut figures = self.figures(started);
        figures.datapath_drops = grown(&before.drops, lab.drops());
        figures.kernel_counters = grown(&before.kernel, lab.kernel_counters());
        figures
    }

    /// Stops the load and counts its outcomes.
    fn figures(mut self, started: Instant) -> Figures {
        self.tcp.stop();
        let (udp_sent, udp_lost) = self.udp.stop();
        let outcomes = self.tcp.record.snapshot();
        let mut figures = Figures {
            requests: outcomes.len() as u64,
            udp_sent,
            udp_lost,
            long_lived: self.long_lived,
            seconds: started.elapsed().as_secs_f64(),
            ..Figures::default()
        };
        let mut broken = BTreeMap::new();
        for outcome in &outcomes {
            if let Err(why) = &outcome.result {
                figures.failed += 1;
                if outcome.long {
                    broken.insert(outcome.connection, ());
                }
                if figures.failures.len() < 10 {
                    figures.failures.push(format!(
                        "{:.1} s: {} connection {}: {why}",
                        outcome.started.duration_since(started).as_secs_f64(),
                        if outcome.long { "long-lived" } else { "short" },
                        outcome.connection
                    ));
                }
            }
        }
        figures.long_lived_broken = broken.len() as u64;
        figures
    }
}

/// Runs the scenarios `wanted` names; `quick` keeps load on for less time
/// around each change. Returns the figures by scenario name.
pub fn run(quick: bool, wanted: impl Fn(&str) -> bool) -> BTreeMap<&'static str, Figures> {
    run_selected(quick, Duration::from_millis(2), wanted)
}

/// Runs the scenarios `wanted` names, on one lab, with `pause` between a
/// TCP worker's requests.
pub fn run_selected(
    quick: bool,
    pause: Duration,
    wanted: impl Fn(&str) -> bool,
) -> BTreeMap<&'static str, Figures> {
    let settle = if quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(10)
    };
    let lab = ChaosLab::up(None, &[]);
    let mut results = BTreeMap::new();
    // The control: the same load while nothing changes.
    if wanted("steady") {
        let before = Before::read(&lab);
        let started = Instant::now();
        let load = AllLoad::start(&lab, pause);
        std::thread::sleep(settle * 3);
        results.insert("steady", load.stop(started, &lab, &before));
    }
    // Each scenario: the svc-lab commands run under load, `settle` apart.
    // Agents restarted node by node (SIGKILL, then SIGTERM); pods replaced
    // and scaled (each terminating pod's preStop sleep, then its server
    // drains on SIGTERM).
    let restarts = |kill: bool| -> Vec<Vec<String>> {
        lab.node_names()
            .into_iter()
            .map(|node| {
                let mut args = vec!["restart".to_owned(), format!("node/{node}")];
                if kill {
                    args.push("--kill".into());
                }
                args
            })
            .collect()
    };
    let words = |text: &str| text.split_whitespace().map(str::to_owned).collect();
    let scenarios: [(&'static str, Vec<Vec<String>>); 4] = [
        ("agent_kill", restarts(true)),
        ("agent_restart", restarts(false)),
        // As an operator would: started without waiting (the rollout
        // goes on in the background), then waited for.
        (
            "rollout",
            vec![
                words("rollout restart deployment/web --no-wait"),
                words("rollout status deployment/web"),
            ],
        ),
        (
            "scale",
            ["10", "1", "3"]
                .into_iter()
                .map(|replicas| words(&format!("scale deployment/web --replicas {replicas}")))
                .collect(),
        ),
    ];
    for (name, commands) in scenarios {
        if wanted(name) {
            results.insert(name, under_load(&lab, name, &commands, settle, pause));
        }
    }
    drop(lab);
    // Direct server return with Maglev, the LB IP's route moved from node
    // to node under the load (an ECMP next hop failing and coming back):
    // its long-lived connections must survive every move.
    if wanted("dsr_failover") {
        let lab = ChaosLab::up(None, &["--lb-mode=dsr", "--lb-algorithm=maglev"]);
        let commands: Vec<Vec<String>> = ["node/node-1", "node/node-2", "all", "node/node-1"]
            .into_iter()
            .map(|via| words(&format!("route lb --via {via}")))
            .collect();
        results.insert(
            "dsr_failover",
            under_load(&lab, "dsr_failover", &commands, settle, pause),
        );
    }
    if wanted("agent_upgrade")
        && let Some(figures) = agent_upgrade(settle, pause)
    {
        results.insert("agent_upgrade", figures);
    }
    if wanted("apiserver_kill")
        && let Some(figures) = apiserver_kill(settle, pause)
    {
        results.insert("apiserver_kill", figures);
    }
    let (services, length) = if quick {
        (200, Duration::from_secs(10))
    } else {
        (1000, Duration::from_secs(60))
    };
    if wanted("churn")
        && let Some(figures) = churn(settle, pause, services, length)
    {
        results.insert("churn", figures);
    }
    results
}

/// Scenario `name`: the svc-lab `commands` run on `lab` under the load
/// (`pause` between a TCP worker's requests), `settle` apart.
fn under_load(
    lab: &ChaosLab,
    name: &str,
    commands: &[Vec<String>],
    settle: Duration,
    pause: Duration,
) -> Figures {
    let before = Before::read(lab);
    let started = Instant::now();
    let load = AllLoad::start(lab, pause);
    std::thread::sleep(settle);
    for command in commands {
        let args: Vec<&str> = command.iter().map(String::as_str).collect();
        eprint!("{name}: {}", lab.svc_lab(&args));
        std::thread::sleep(settle);
    }
    load.stop(started, lab, &before)
}

/// The previous commit's agent that $SVC_CHAOS_PREVIOUS_AGENT names
/// (`cargo xtask chaos` and `cargo xtask test` build it), if any.
pub fn previous_agent() -> Option<PathBuf> {
    std::env::var_os("SVC_CHAOS_PREVIOUS_AGENT")
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
}

/// A lab whose agents are the previous commit's build
/// ([`previous_agent`]), each
/// replaced under load by this build's on its live pins, node by node:
/// established connections must keep their backends, SNATed flows their
/// NAT ports, conntrack its entries. None without that binary, saying so.
fn agent_upgrade(settle: Duration, pause: Duration) -> Option<Figures> {
    let Some(previous) = previous_agent() else {
        eprintln!("agent_upgrade: SKIPPED, no previous build ($SVC_CHAOS_PREVIOUS_AGENT)");
        return None;
    };
    let mut lab = ChaosLab::up(Some(&previous), &[]);
    let previous = std::fs::canonicalize(&previous).expect("the previous agent");
    assert!(
        lab.agent_binaries()
            .iter()
            .all(|binary| *binary == previous),
        "the lab does not run the previous build"
    );
    let before = Before::read(&lab);
    let started = Instant::now();
    let load = AllLoad::start(&lab, pause);
    std::thread::sleep(settle);
    for node in lab.node_names() {
        eprint!(
            "agent_upgrade: {}",
            lab.svc_lab(&["restart", &format!("node/{node}")])
        );
        std::thread::sleep(settle);
    }
    let figures = load.stop(started, &lab, &before);
    let now = lab.agent_binaries();
    assert!(
        now.iter().all(|binary| *binary != previous),
        "an agent still runs the previous build: {now:?}"
    );
    Some(figures)
}

const API_NODE: &str = "node-1";
const API_SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";
/// The API server is away this long.
const OUTAGE: Duration = Duration::from_secs(10);
/// The pods of the API server scenarios' one-node lab.
const API_PODS: [&str; 4] = ["web-1", "web-2", "web-3", "web-4"];

/// An EndpointSlice of Service `service` (ports http 8080/TCP and dns
/// 5353/UDP), its endpoints on the API node with their readiness.
fn slice_of(service: &str, endpoints: &[(Ipv4Addr, bool)]) -> serde_json::Value {
    let endpoints: Vec<_> = endpoints
        .iter()
        .map(|(address, ready)| {
            serde_json::json!({"addresses": [address.to_string()],
                "conditions": {"ready": ready}, "nodeName": API_NODE})
        })
        .collect();
    serde_json::json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-1"), "namespace": "default",
            "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                  {"name": "dns", "port": 5353, "protocol": "UDP"}],
        "endpoints": endpoints})
}

/// The backend addresses the agent's pinned tables hold for each Service
/// (namespace/name) that has a frontend.
fn held_backends(agent: &Agent) -> BTreeMap<String, std::collections::BTreeSet<Ipv4Addr>> {
    let held = svc_agent::dataplane::Tables::open_pinned(&agent.pin_dir)
        .and_then(|tables| tables.read())
        .expect("the agent's pinned tables");
    let mut by_service = BTreeMap::<String, std::collections::BTreeSet<Ipv4Addr>>::new();
    for state in held {
        by_service
            .entry(state.frontend.service.clone())
            .or_default()
            .extend(
                state
                    .frontend
                    .backends
                    .iter()
                    .map(|backend| crate::ipv4(backend.address)),
            );
    }
    by_service
}

/// The one-node lab of the API server scenarios, the real kube-apiserver
/// on its node (with the node and Service `web`, NodePort TCP and UDP,
/// whose endpoints `endpoints` gives from the lab), and the agent watching
/// it as deploy/'s ServiceAccount, healthy. None without a kube-apiserver
/// binary (`cargo xtask apiserver`), saying so.
fn with_api_lab(
    endpoints: impl Fn(&Lab) -> Vec<(Ipv4Addr, bool)>,
    scenario: impl FnOnce(&Lab, &mut ApiServer<'_>, &mut Agent) -> Figures,
) -> Option<Figures> {
    let binary = apiserver::binary()?;
    let lab = Lab::up(&Topology {
        nodes: vec![NodeSpec {
            name: API_NODE.into(),
            pods: API_PODS
                .iter()
                .map(|name| PodSpec::new(name, &[8080], &[5353]))
                .collect(),
        }],
    })
    .expect("a one-node lab");
    let node = lab.node(API_NODE).expect("the node");
    let mut api = ApiServer::start(node.netns(), binary);
    api.create(
        "/api/v1/nodes",
        &serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": API_NODE},
            "status": {"addresses": [{"type": "InternalIP", "address": node.address.to_string()}]}}),
    );
    api.create(
        "/api/v1/namespaces/default/services",
        &serde_json::json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "NodePort", "clusterIP": CLUSTER_IP.to_string(), "ports": [
                {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": NODE_PORT},
                {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP", "nodePort": UDP_NODE_PORT}]}}),
    );
    api.create(API_SLICES, &slice_of("web", &endpoints(&lab)));
    let kubeconfig = api.agent_kubeconfig();
    let mut agent = Agent::spawn(&lab, API_NODE, &["--kubeconfig", kubeconfig.to_str()?]);
    agent.wait_healthy(&lab, Duration::from_secs(30));
    let figures = scenario(&lab, &mut api, &mut agent);
    agent.terminate();
    Some(figures)
}

/// Load on Service `web` of the API server lab: short and long-lived TCP
/// through the NodePort, UDP through the UDP NodePort, from the client.
fn api_lab_load(lab: &Lab, pause: Duration) -> AllLoad {
    let client = lab.client().expect("the lab's client");
    let address = lab.node(API_NODE).expect("the node").address;
    AllLoad::on(
        &[(client, SocketAddr::from((address, NODE_PORT)))],
        (client, SocketAddr::from((address, UDP_NODE_PORT))),
        pause,
    )
}

/// Waits until the agent's tables hold `want` for every Service it names:
/// how long that took, in ms. Panics with the agent's log after 60 s.
fn converged(
    agent: &Agent,
    want: &BTreeMap<String, std::collections::BTreeSet<Ipv4Addr>>,
    since: Instant,
) -> u64 {
    loop {
        let held = held_backends(agent);
        let missing = want
            .iter()
            .filter(|(service, backends)| held.get(*service) != Some(*backends))
            .count();
        if missing == 0 {
            return since.elapsed().as_millis() as u64;
        }
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "{missing} Services' endpoints not in the maps after 60 s:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The agent against a real kube-apiserver (on the node's loopback, RBAC,
/// deploy/'s ServiceAccount), one node, four pods of which web-1..3 are
/// the Service's endpoints. Under load, the API server is killed for 10 s;
/// meanwhile the cluster moves on (web-4 started, web-1 to go), and when
/// the API server answers again the EndpointSlice says so (as the
/// controller writes it then). Traffic must not notice the outage, and the
/// maps must hold the new endpoints soon after the API server is back:
/// `converge_ms`. None without a kube-apiserver binary (`cargo xtask
/// apiserver`), saying so.
fn apiserver_kill(settle: Duration, pause: Duration) -> Option<Figures> {
    let pods = |lab: &Lab, names: &[&str]| -> Vec<(Ipv4Addr, bool)> {
        names
            .iter()
            .map(|name| (lab.pod(name).expect("a lab pod").address, true))
            .collect()
    };
    with_api_lab(
        |lab| pods(lab, &API_PODS[..3]),
        |lab, api, agent| {
            let started = Instant::now();
            let load = api_lab_load(lab, pause);
            std::thread::sleep(settle);
            api.stop_apiserver();
            eprintln!("apiserver_kill: API server killed");
            std::thread::sleep(OUTAGE);
            api.start_apiserver();
            let back = Instant::now();
            let now_serving = pods(lab, &API_PODS[1..]);
            api.patch(
                &format!("{API_SLICES}/web-1"),
                &slice_of("web", &now_serving),
            );
            let want = BTreeMap::from([(
                "default/web".to_owned(),
                now_serving.iter().map(|(address, _)| *address).collect(),
            )]);
            let converge_ms = converged(agent, &want, back);
            eprintln!("apiserver_kill: API server back, maps converged after {converge_ms} ms");
            if converge_ms > 1000 {
                // What the agent did meanwhile, for a slow return's cause.
                eprintln!("apiserver_kill: the agent's log:\n{}", agent.log());
            }
            std::thread::sleep(settle);
            let mut figures = load.figures(started);
            figures.converge_ms = Some(converge_ms);
            figures
        },
    )
}

/// Endpoint changes the churn scenario makes per second.
const CHURN_RATE: u64 = 100;
/// Endpoints per churning Service.
const CHURN_ENDPOINTS: u32 = 10;

/// The `generation`th endpoint set of churning Service `service`: 10 of
/// 16 addresses of its own in 198.18.128.0/17 (where no lab pod is), one
/// replaced by the next at each generation, one of them not ready in
/// every third.
fn churn_endpoints(service: u32, generation: u32) -> Vec<(Ipv4Addr, bool)> {
    let base = u32::from(Ipv4Addr::new(198, 18, 128, 0)) + service * 16;
    (0..CHURN_ENDPOINTS)
        .map(|slot| {
            let address = Ipv4Addr::from(base + (generation + slot) % 16);
            (address, !(generation % 3 == 2 && slot == 0))
        })
        .collect()
}

/// Endpoint churn at scale: `services` ClusterIP Services of 10 endpoints
/// each beside Service `web` (under load), then for `length` 100 endpoint
/// changes a second, nine in ten to the other Services (one endpoint
/// replaced, or turned not ready), one in ten to `web`, whose web-4 turns
/// not ready and ready again while web-1..3 stay ready (every pod keeps
/// serving). No request may fail; `agent_cpu_percent` is the agent's CPU
/// use over the churn; `converge_ms`, from the last change to the maps
/// holding every Service's last endpoints (ready ones only, as kube-proxy
/// serves them).
fn churn(settle: Duration, pause: Duration, services: u32, length: Duration) -> Option<Figures> {
    let web = |lab: &Lab, web_4_ready: bool| -> Vec<(Ipv4Addr, bool)> {
        API_PODS
            .iter()
            .map(|name| {
                let address = lab.pod(name).expect("a lab pod").address;
                (address, *name != "web-4" || web_4_ready)
            })
            .collect()
    };
    with_api_lab(
        |lab| web(lab, true),
        |lab, api, agent| {
            let service_path = "/api/v1/namespaces/default/services";
            let name = |service: u32| format!("churn-{service}");
            for first in (0..services).step_by(CHURN_RATE as usize) {
                let batch: Vec<u32> = (first..services.min(first + CHURN_RATE as u32)).collect();
                let created = api.batch(
                    &batch
                        .iter()
                        .map(|&service| {
                            let object = serde_json::json!({"apiVersion": "v1", "kind": "Service",
                                "metadata": {"name": name(service), "namespace": "default"},
                                "spec": {"ports": [{"name": "http", "port": 80,
                                    "targetPort": 8080, "protocol": "TCP"}]}});
                            ("POST", service_path.to_owned(), "application/json", object)
                        })
                        .chain(batch.iter().map(|&service| {
                            let slice = slice_of(&name(service), &churn_endpoints(service, 0));
                            ("POST", API_SLICES.to_owned(), "application/json", slice)
                        }))
                        .collect::<Vec<_>>(),
                );
                assert!(
                    created.len() == batch.len() * 2 && created.iter().all(|code| *code == 201),
                    "creating Services {first}..: {created:?}"
                );
            }
            let mut generations = vec![0u32; services as usize];
            let mut web_4_ready = true;
            let want = |generations: &[u32], web_4_ready: bool| {
                let ready = |endpoints: Vec<(Ipv4Addr, bool)>| {
                    endpoints
                        .into_iter()
                        .filter(|(_, ready)| *ready)
                        .map(|(address, _)| address)
                        .collect()
                };
                let mut want: BTreeMap<String, std::collections::BTreeSet<Ipv4Addr>> = generations
                    .iter()
                    .enumerate()
                    .map(|(service, generation)| {
                        (
                            format!("default/{}", name(service as u32)),
                            ready(churn_endpoints(service as u32, *generation)),
                        )
                    })
                    .collect();
                want.insert("default/web".into(), ready(web(lab, web_4_ready)));
                want
            };
            let made = Instant::now();
            let made_ms = converged(agent, &want(&generations, web_4_ready), made);
            eprintln!(
                "churn: {services} Services of {CHURN_ENDPOINTS} endpoints in the maps {made_ms} ms after the last was made"
            );

            let started = Instant::now();
            let load = api_lab_load(lab, pause);
            std::thread::sleep(settle);
            let cpu_before = agent.cpu_time();
            let churn_started = Instant::now();
            let mut changes = 0u64;
            let mut next = 0u32;
            while churn_started.elapsed() < length {
                let second = Instant::now();
                let mut calls = Vec::new();
                for index in 0..CHURN_RATE {
                    let (service, slice) = if index % 10 == 9 {
                        web_4_ready = !web_4_ready;
                        ("web".to_owned(), slice_of("web", &web(lab, web_4_ready)))
                    } else {
                        let service = next % services;
                        next += 1;
                        generations[service as usize] += 1;
                        let endpoints = churn_endpoints(service, generations[service as usize]);
                        (name(service), slice_of(&name(service), &endpoints))
                    };
                    calls.push((
                        "PATCH",
                        format!("{API_SLICES}/{service}-1"),
                        "application/merge-patch+json",
                        slice,
                    ));
                }
                let answered = api.batch(&calls);
                assert!(
                    answered.len() == calls.len() && answered.iter().all(|code| *code == 200),
                    "endpoint changes: {answered:?}"
                );
                changes += calls.len() as u64;
                // The rate: the rest of the second, if the batch left any.
                std::thread::sleep(Duration::from_secs(1).saturating_sub(second.elapsed()));
            }
            let churned = churn_started.elapsed();
            let last_change = Instant::now();
            let converge_ms = converged(agent, &want(&generations, web_4_ready), last_change);
            let cpu = agent.cpu_time().saturating_sub(cpu_before);
            eprintln!(
                "churn: {changes} changes in {:.1} s; maps converged {converge_ms} ms after the last; agent CPU {:.1} s",
                churned.as_secs_f64(),
                cpu.as_secs_f64()
            );
            std::thread::sleep(settle);
            let mut figures = load.figures(started);
            figures.converge_ms = Some(converge_ms);
            figures.changes_per_second = Some(changes as f64 / churned.as_secs_f64());
            figures.agent_cpu_percent = Some(100.0 * cpu.as_secs_f64() / churned.as_secs_f64());
            figures
        },
    )
}
