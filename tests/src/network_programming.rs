//! Network programming latency as kube-proxy's SLI means it: from an
//! EndpointSlice change at the API server to the node's datapath holding
//! it. A real kube-apiserver and etcd run on a one-node lab's loopback;
//! `svc-agent run` watches them as deploy/'s ServiceAccount; each change
//! is a merge patch of one Service's slice (one endpoint replaced) sent
//! over a kept-alive connection, and its latency runs from just before the
//! patch is sent to the moment this process reads the new endpoint's
//! address back from the pinned maps (read every [`POLL`]: on two cores a
//! spinning reader would take the CPU the API server, etcd and the agent
//! need, and inflate what it measures). So the API
//! server's write to etcd, the watch event, the agent's translation and
//! its map writes are all inside the figure.
use std::{
    net::Ipv4Addr,
    path::Path,
    sync::mpsc,
    time::{Duration, Instant},
};

use aya::maps::{Array, HashMap, MapData};
use serde_json::json;
use svc_common::{Backend, FrontendKey, ServiceSlot, names, proto};
use svc_lab::{Lab, NodeSpec, Topology};

use crate::{
    agent::{Agent, wait_for},
    apiserver::{self, ApiServer},
};

const NODE: &str = "node-1";
/// How often the maps are read while a change is awaited: the figures'
/// resolution (a read takes ~20 µs).
const POLL: Duration = Duration::from_micros(100);
const NAMESPACE: &str = "default";
const ENDPOINTS: u32 = 10;
/// Objects created per API call batch (one curl process each).
const BATCH: u32 = 500;

/// What [`measure`] found.
pub struct Figures {
    pub services: u32,
    /// Each change's latency, ms, sorted.
    pub latencies_ms: Vec<f64>,
    /// From the agent's start to every Service in the maps, ms.
    pub initial_sync_ms: f64,
}

impl Figures {
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let last = self.latencies_ms.len() - 1;
        self.latencies_ms[(last as f64 * q).round() as usize]
    }
}

fn cluster_ip(i: u32) -> Ipv4Addr {
    // 198.19.0.1 is the API server's own `kubernetes` Service.
    Ipv4Addr::new(198, 19, (1 + i / 250) as u8, (i % 250 + 1) as u8)
}

fn pod_address(n: u32) -> Ipv4Addr {
    // 62 500 addresses: beyond, Services share pods.
    let n = n % 62_500;
    Ipv4Addr::new(198, 18, (n / 250) as u8, (n % 250 + 1) as u8)
}

/// The address change `generation` (from 1) gives the first endpoint of
/// the Service it changes: one no slice holds yet.
fn changed_address(generation: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 250, 1)) + generation)
}

fn endpoints(i: u32, first: Ipv4Addr) -> serde_json::Value {
    let list: Vec<_> = (0..ENDPOINTS)
        .map(|e| {
            let address = if e == 0 {
                first
            } else {
                pod_address(i * ENDPOINTS + e)
            };
            json!({"addresses": [address.to_string()], "nodeName": NODE,
                   "conditions": {"ready": true}})
        })
        .collect();
    serde_json::Value::Array(list)
}

/// Runs `services` Services of `ENDPOINTS` endpoints each against a real
/// API server and times `changes` endpoint changes. None (saying why)
/// without a kube-apiserver binary (`cargo xtask apiserver`).
pub fn measure(services: u32, changes: u32) -> Option<Figures> {
    let binary = apiserver::binary()?;
    let lab = Lab::up(&Topology {
        nodes: vec![NodeSpec {
            name: NODE.into(),
            pods: Vec::new(),
        }],
    })
    .unwrap();
    let lab_node = lab.node(NODE).unwrap();
    let api = ApiServer::start(lab_node.netns(), binary);
    apiserver::create_node(&api, NODE, lab_node.address);
    create_services(&api, services);

    let started = Instant::now();
    let kubeconfig = api.agent_kubeconfig();
    let mut agent = Agent::spawn(&lab, NODE, &["--kubeconfig", kubeconfig.to_str().unwrap()]);
    agent.wait_ready(&lab, Duration::from_secs(300));
    let maps = Maps::open(&agent.pin_dir);
    let last = services - 1;
    wait_for("every Service in the maps", Duration::from_secs(60), || {
        maps.holds(cluster_ip(last), pod_address(last * ENDPOINTS))
            .then_some(())
    });
    let initial_sync_ms = started.elapsed().as_secs_f64() * 1e3;
    // Where the agent's start went, for the record.
    for line in agent.log().lines() {
        if ["list complete", "initial sync", "synced", "loaded"]
            .iter()
            .any(|what| line.contains(what))
        {
            eprintln!("agent: {line}");
        }
    }

    // The patches go from a thread in the node's namespace (the API
    // server listens on its loopback), each reporting when it was sent.
    let (ask, asked) = mpsc::channel::<(u32, serde_json::Value)>();
    let (sent, sent_at) = mpsc::channel::<Instant>();
    let admin = api.kubeconfig();
    let netns = lab_node.netns().path();
    let patcher = std::thread::spawn(move || {
        svc_lab::netns::enter(&netns).unwrap();
        patch_slices(&admin, &asked, &sent);
    });
    let mut latencies_ms = Vec::new();
    for generation in 1..=changes {
        // Spread over the Services, the last one included.
        let i = last - (generation * 97) % services;
        let address = changed_address(generation);
        ask.send((i, endpoints(i, address))).unwrap();
        let sent = sent_at.recv_timeout(Duration::from_secs(30)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !maps.holds(cluster_ip(i), address) {
            assert!(
                Instant::now() < deadline,
                "change {generation} (svc-{i}) not in the maps within 30 s:\n{}",
                agent.log()
            );
            std::thread::sleep(POLL);
        }
        latencies_ms.push(sent.elapsed().as_secs_f64() * 1e3);
    }
    drop(ask);
    patcher.join().unwrap();
    latencies_ms.sort_by(f64::total_cmp);
    Some(Figures {
        services,
        latencies_ms,
        initial_sync_ms,
    })
}

fn create_services(api: &ApiServer, services: u32) {
    let service_path = format!("/api/v1/namespaces/{NAMESPACE}/services");
    let slice_path = format!("/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices");
    for start in (0..services).step_by(BATCH as usize) {
        let end = (start + BATCH).min(services);
        let mut calls = Vec::new();
        for i in start..end {
            calls.push((
                "POST",
                service_path.clone(),
                "application/json",
                json!({"apiVersion": "v1", "kind": "Service",
                       "metadata": {"name": format!("svc-{i}")},
                       "spec": {"clusterIP": cluster_ip(i).to_string(),
                                "ports": [{"name": "http", "port": 80, "targetPort": 8080,
                                           "protocol": "TCP"}]}}),
            ));
            calls.push((
                "POST",
                slice_path.clone(),
                "application/json",
                json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                       "metadata": {"name": format!("svc-{i}-1"),
                                    "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
                       "addressType": "IPv4",
                       "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                       "endpoints": endpoints(i, pod_address(i * ENDPOINTS))}),
            ));
        }
        let statuses = api.batch(&calls);
        assert!(
            statuses.len() == calls.len() && statuses.iter().all(|s| *s == 201),
            "creating Services {start}..{end}: {statuses:?}"
        );
    }
}

/// Merge-patches each asked slice's endpoints over one kept-alive
/// connection (a kube client), sending the time just before each patch.
fn patch_slices(
    kubeconfig: &Path,
    asked: &mpsc::Receiver<(u32, serde_json::Value)>,
    sent: &mpsc::Sender<Instant>,
) {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::api::{Api, Patch, PatchParams};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        let client = kube::Client::try_from(config).unwrap();
        let slices: Api<EndpointSlice> = Api::namespaced(client, NAMESPACE);
        // One call first, so the connection is open before the timing.
        slices.get("svc-0-1").await.unwrap();
        while let Ok((i, endpoints)) = asked.recv() {
            let patch = Patch::Merge(json!({"endpoints": endpoints}));
            let _ = sent.send(Instant::now());
            slices
                .patch(&format!("svc-{i}-1"), &PatchParams::default(), &patch)
                .await
                .unwrap();
        }
    });
}

/// The pinned Service maps, read as the datapath reads them.
struct Maps {
    services: HashMap<MapData, FrontendKey, ServiceSlot>,
    backends: Array<MapData, Backend>,
}

impl Maps {
    fn open(pin_dir: &Path) -> Self {
        let open = |name: &str| MapData::from_pin(pin_dir.join(name)).unwrap();
        Self {
            services: HashMap::try_from(aya::maps::Map::HashMap(open(names::SERVICES))).unwrap(),
            backends: Array::try_from(aya::maps::Map::Array(open(names::BACKENDS))).unwrap(),
        }
    }

    /// Whether the ClusterIP frontend `address`:80 has a ready backend at
    /// `backend`.
    fn holds(&self, address: Ipv4Addr, backend: Ipv4Addr) -> bool {
        let header = FrontendKey::new(u32::from(address).to_be(), 80u16.to_be(), proto::TCP, 0);
        let Ok(slot) = self.services.get(&header, 0) else {
            return false;
        };
        (1..=slot.count).any(|s| {
            self.services
                .get(&header.with_slot(s), 0)
                .and_then(|entry| self.backends.get(&entry.backend_id, 0))
                .is_ok_and(|b| b.addr_be == u32::from(backend).to_be())
        })
    }
}
