//! `svc-agent run`: the long-running node agent.
//!
//! It loads (or adopts) the datapath pinned at `--pin-path`, attaches it to
//! the node's NICs and to pod veths as they appear, then keeps the maps
//! equal to the source: source → snapshot → translate → apply, where apply
//! diffs against the kernel itself. Nothing is flushed at start or at exit:
//! a restarted agent converges from whatever the maps hold, and SIGTERM
//! leaves the datapath in place.
mod health_check;
mod http;
pub mod interfaces;
mod node_interfaces;
mod reconciler;
mod sync;

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Node;
use tokio::signal::unix::{SignalKind, signal};

use self::{
    health_check::HealthCheckServers, node_interfaces::NodeInterfaces, reconciler::Reconciler,
};
pub use self::{
    health_check::{HealthCheck, health_checks},
    http::{AgentStatus, fetch_left_out},
};
use crate::{
    dataplane::{Conntrack, Datapath, DataplaneError, Tables, coarse_now_ns},
    k8s::{
        Source,
        client::{self, ClientError},
        manifests_watch::watch_manifests,
        source,
        watch::watch_api,
    },
    metrics::Metrics,
    model::{NodeContextError, node_named},
};

/// Everything `run` is told.
#[derive(Clone, Debug)]
pub struct Settings {
    pub node: String,
    pub source: Source,
    pub pin_path: PathBuf,
    pub node_interfaces: Vec<String>,
    pub pod_interface_prefix: String,
    pub node_address: Option<Ipv4Addr>,
    pub hairpin_address: Ipv4Addr,
    pub nat_ports: (u16, u16),
    pub nodeport_addresses: Option<Vec<crate::model::NodePortAddress>>,
    /// externalIPs outside these are left out (empty: none is).
    pub external_ip_cidrs: Vec<crate::model::Cidr>,
    pub service_cidrs: Vec<crate::model::Cidr>,
    /// The node's backend selection (a Service's annotation overrides it).
    pub lb_algorithm: crate::model::LbAlgorithm,
    /// How external traffic reaches a backend on another node.
    pub lb_mode: crate::model::LbMode,
    /// Entries of each Maglev table.
    pub maglev_table_size: u16,
    pub listen: SocketAddr,
    /// How often the maps are read back and repaired (see
    /// `Tables::forget_held`).
    pub resync_period: Option<Duration>,
    /// cgroup v2 directory the socket hooks attach to, if any.
    pub cgroup: Option<PathBuf>,
    /// /healthz turns 503 once a change has waited this long for the maps.
    pub unhealthy_after: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error(transparent)]
    Node(#[from] NodeContextError),
    #[error(
        "node {node:?} has no IPv4 InternalIP/ExternalIP address: give one with --node-address"
    )]
    NoNodeAddress { node: String },
    #[error("cannot listen on {address}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{what}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("the {source_name} source stopped")]
    SourceStopped { source_name: &'static str },
}

impl RunError {
    /// The `kind` label of the error counter.
    pub fn kind(&self) -> &'static str {
        match self {
            RunError::Dataplane(_) => "map_write",
            RunError::Node(_) | RunError::NoNodeAddress { .. } => "node",
            _ => "other",
        }
    }
}

/// Runs the agent until SIGTERM or SIGINT.
pub fn run(settings: Settings) -> Result<(), RunError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| RunError::Io {
            what: "starting the async runtime",
            source,
        })?
        .block_on(agent(settings))
}

async fn agent(settings: Settings) -> Result<(), RunError> {
    let started = Instant::now();
    let status = Arc::new(AgentStatus::new(settings.unhealthy_after));
    let listener = http::bind(settings.listen).await?;
    tokio::spawn(http::serve_status(listener, status.clone()));
    tracing::info!(listen = %settings.listen, "serving /healthz and /metrics");

    let (mut datapath, mut nodes, mut pods) = attach(&settings, &status)?;
    collect_conntrack(&settings.pin_path, status.metrics.clone())?;
    let (mut updates, source_name) = watch_source(&settings, &status).await?;

    let mut terminate = signal(SignalKind::terminate()).map_err(|source| RunError::Io {
        what: "installing the SIGTERM handler",
        source,
    })?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|source| RunError::Io {
        what: "installing the SIGINT handler",
        source,
    })?;
    let mut rescan = tokio::time::interval(interfaces::RESCAN);
    let mut link_events = match interfaces::LinkEvents::subscribe() {
        Ok(events) => Some(events),
        Err(error) => {
            tracing::warn!(%error, every_ms = interfaces::RESCAN.as_millis() as u64, "no link notifications; listing interfaces periodically only");
            None
        }
    };
    let mut health_check_servers = HealthCheckServers::new(status.clone());
    let mut reconciler = Reconciler::new(started);
    let mut resync = settings
        .resync_period
        .map(|period| tokio::time::interval_at(tokio::time::Instant::now() + period, period));
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = rescan.tick() => {
                pods.attach_new(&mut datapath, &status, "rescan");
                nodes.rescan(&mut datapath, &status);
                nodes.refresh_xdp_targets(&mut datapath);
                health_check_servers.bind_missing().await;
            }
            changed = link_changed(&mut link_events) => {
                if let Err(error) = changed {
                    tracing::warn!(%error, "link notifications failed; listing interfaces periodically only");
                    link_events = None;
                }
                pods.attach_new(&mut datapath, &status, "link event");
                nodes.refresh_xdp_targets(&mut datapath);
            }
            update = updates.next() => {
                let Some(update) = update else {
                    return Err(RunError::SourceStopped { source_name });
                };
                // Before the sync: once ready, the node's interfaces are
                // attached.
                let node_objects = update.cluster.nodes();
                let node = node_named(&node_objects, &settings.node);
                nodes.node_seen(node, &mut datapath, &status);
                status.node_deleting(node.and_then(node_deleting));
                status.behind();
                reconciler.changed(update);
            }
            () = until(reconciler.due_at()) => {}
            () = next_resync(&mut resync) => {
                if reconciler.resync(datapath.tables()) {
                    status.behind();
                }
            }
        }
        reconciler
            .reconcile(
                datapath.tables(),
                &settings,
                &status,
                &mut health_check_servers,
            )
            .await;
    }
    tracing::info!("stopping; the datapath stays pinned and keeps serving");
    Ok(())
}

/// The cluster autoscaler's taint on a node it is about to remove.
const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

/// Why this node is going away, if it is (kube-proxy's healthz fails then,
/// so load balancers stop sending it new connections first).
fn node_deleting(node_object: &Node) -> Option<String> {
    let node = node_object.metadata.name.as_deref().unwrap_or_default();
    if node_object.metadata.deletion_timestamp.is_some() {
        return Some(format!("node {node} is being deleted"));
    }
    let tainted = node_object
        .spec
        .as_ref()
        .and_then(|spec| spec.taints.as_ref())
        .is_some_and(|taints| taints.iter().any(|t| t.key == TO_BE_DELETED_TAINT));
    tainted
        .then(|| format!("node {node} is tainted {TO_BE_DELETED_TAINT}: it is about to be removed"))
}

/// `at`, or never.
async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The next link change, or never without notifications.
async fn link_changed(events: &mut Option<interfaces::LinkEvents>) -> std::io::Result<()> {
    match events {
        Some(events) => events.changed().await,
        None => std::future::pending().await,
    }
}

/// Loads (or adopts) the pinned datapath and attaches it: node interfaces
/// (given, or those found before the Node object is known), socket hooks,
/// the pod veths there already are.
fn attach(
    settings: &Settings,
    status: &AgentStatus,
) -> Result<(Datapath, NodeInterfaces, PodInterfaces), RunError> {
    let mut datapath = Datapath::load(Some(&settings.pin_path))?;
    let nodes = NodeInterfaces::attach_at_start(settings, &mut datapath, status)?;
    // The agent runs in the node's network namespace: sockets of any other
    // are pods', which the socket hooks treat as such from the start.
    datapath.tables().set_host_netns()?;
    if let Some(cgroup) = &settings.cgroup {
        datapath.attach_cgroup(cgroup)?;
        tracing::info!(cgroup = %cgroup.display(), "socket hooks attached");
    }
    let mut pods = PodInterfaces::new(&settings.pod_interface_prefix);
    pods.attach_new(&mut datapath, status, "start");
    datapath.finish_migrations()?;
    Ok((datapath, nodes, pods))
}

/// How often expired conntrack entries are removed (and the kernel's drop
/// counters read for /metrics).
const CONNTRACK_COLLECT_EVERY: Duration = Duration::from_secs(5);

/// Starts the conntrack collector on a thread of its own: a pass over a
/// full table takes a while, and the sync loop must not wait for it. Each
/// pass also reads the datapath's drop counters into /metrics.
fn collect_conntrack(pin_path: &std::path::Path, metrics: Arc<Metrics>) -> Result<(), RunError> {
    let mut conntrack = Conntrack::open_pinned(pin_path)?;
    let counters = Tables::open_pinned(pin_path)?;
    std::thread::Builder::new()
        .name("conntrack-collector".into())
        .spawn(move || {
            let mut failing = false;
            loop {
                match conntrack.collect(coarse_now_ns()) {
                    Ok(census) => {
                        failing = false;
                        metrics.conntrack(census);
                    }
                    Err(error) => {
                        metrics.error("conntrack_collect");
                        if !std::mem::replace(&mut failing, true) {
                            tracing::error!(%error, "collecting expired conntrack entries failed; retrying");
                        }
                    }
                }
                if let Ok(drops) = counters.drop_counters() {
                    metrics.drops(&drops);
                }
                std::thread::sleep(CONNTRACK_COLLECT_EVERY);
            }
        })
        .map_err(|source| RunError::Io {
            what: "starting the conntrack collector",
            source,
        })?;
    Ok(())
}

/// Starts watching the source of truth: the updates it publishes, and its
/// name for errors.
async fn watch_source(
    settings: &Settings,
    status: &AgentStatus,
) -> Result<(source::UpdateReceiver, &'static str), RunError> {
    let (updates, receiver) = source::channel();
    let source_name = match &settings.source {
        Source::Manifests(dir) => {
            tokio::spawn(watch_manifests(
                dir.clone(),
                updates,
                status.metrics.clone(),
            ));
            "manifests"
        }
        Source::ApiServer { kubeconfig } => {
            let client = client::client(client::config(kubeconfig.as_deref()).await?)?;
            tokio::spawn(watch_api(
                client,
                settings.node.clone(),
                updates,
                status.metrics.clone(),
            ));
            "API server"
        }
    };
    Ok((receiver, source_name))
}

/// The next tick of the periodic resync; never without one.
async fn next_resync(resync: &mut Option<tokio::time::Interval>) {
    match resync {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The pod veths the TC program is attached to, by name and index.
struct PodInterfaces {
    prefix: String,
    attached: BTreeMap<String, u32>,
    /// Reported once, retried on every poll.
    failing: BTreeMap<String, u32>,
}

impl PodInterfaces {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            attached: BTreeMap::new(),
            failing: BTreeMap::new(),
        }
    }

    /// Attaches to every interface with the prefix not attached yet, and
    /// forgets the ones that are gone. One of the same name with another
    /// index (a veth made again, however quickly) is a new interface: the
    /// old one's link went with its device, so it is attached afresh.
    /// `trigger` says what woke the listing (for the log).
    fn attach_new(&mut self, datapath: &mut Datapath, status: &AgentStatus, trigger: &str) {
        let present: BTreeMap<String, u32> = match interfaces::with_prefix(&self.prefix) {
            Ok(interfaces) => interfaces.into_iter().collect(),
            Err(error) => {
                tracing::warn!(%error, "cannot list interfaces");
                return;
            }
        };
        self.attached.retain(|name, index| {
            let now = present.get(name);
            if now != Some(index) {
                match now {
                    Some(new) => tracing::info!(interface = %name, old_index = *index, new_index = *new, "pod interface made again"),
                    None => tracing::info!(interface = %name, "pod interface gone"),
                }
                datapath.forget_pod_interface(name);
                return false;
            }
            true
        });
        self.failing
            .retain(|name, index| present.get(name) == Some(index));
        for (interface, index) in &present {
            if self.attached.contains_key(interface) {
                continue;
            }
            match datapath.attach_pod_interface(interface) {
                Ok(()) => {
                    tracing::info!(%interface, index, trigger, "pod interface attached");
                    self.failing.remove(interface);
                    self.attached.insert(interface.clone(), *index);
                }
                Err(error) => {
                    status.metrics.error("attach");
                    if self.failing.insert(interface.clone(), *index).is_none() {
                        tracing::error!(%interface, %error, "attaching to pod interface failed; retrying");
                    }
                }
            }
        }
    }
}
