//! What the running agent reports on `/metrics`, in the OpenMetrics text
//! format Prometheus scrapes.
//!
//! Where kube-proxy has a metric with the same meaning, it is exported under
//! kube-proxy's name, type, labels and buckets (pkg/proxy/metrics), so the
//! dashboards and alerts written for kube-proxy keep working after the
//! switch. Everything else is svc-lb's own, prefixed `svc_agent_`.
//!
//! Live counters and histograms are prometheus-client metrics updated where
//! things happen; what is read from elsewhere (the kernel's drop counters,
//! the conntrack collector's census, what the last sync left out) is kept as
//! the last reading and written out by a collector at each scrape.
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError, atomic::AtomicU64},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use svc_common::{MAX_BACKENDS, MAX_FRONTENDS};

use crate::{
    dataplane::{Census, DropCounter},
    model::LeftOut,
};

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// kube-proxy's buckets for `network_programming_duration_seconds`: 0,
/// then 0.25 s and 0.5 s, every second to 59 s, every 5 s to 115 s, every
/// 30 s to 5 min.
fn network_programming_buckets() -> Vec<f64> {
    let mut buckets = vec![0.0, 0.25, 0.5];
    buckets.extend((1..=59).map(f64::from));
    buckets.extend((0..12).map(|i| 60.0 + 5.0 * f64::from(i)));
    buckets.extend((0..7).map(|i| 120.0 + 30.0 * f64::from(i)));
    buckets
}

/// Which kind of object changed at the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Service,
    /// An EndpointSlice (kube-proxy's "endpoint change").
    Endpoints,
}

/// How many changes the source had seen when it made a snapshot: what a
/// sync of that snapshot takes off the pending gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChangesSeen {
    pub services: u64,
    pub endpoints: u64,
}

/// Services whose traffic policy is Local and that this node has no
/// endpoint for (kube-proxy's `traffic_policy` label values).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoLocalEndpoints {
    pub internal: usize,
    pub external: usize,
}

type Labels = [(&'static str, String); 1];

fn label(key: &'static str, value: impl Into<String>) -> Labels {
    [(key, value.into())]
}

/// The metrics kube-proxy exports under the same names.
#[derive(Debug)]
struct KubeProxy {
    sync_duration: Histogram,
    network_programming: Histogram,
    last_sync: Gauge<f64, AtomicU64>,
    last_queued: Gauge<f64, AtomicU64>,
    endpoint_changes: Counter,
    endpoint_changes_pending: Gauge,
    service_changes: Counter,
    service_changes_pending: Gauge,
    no_local_endpoints: Family<Labels, Gauge>,
    healthz: Family<Labels, Counter>,
    livez: Family<Labels, Counter>,
}

impl KubeProxy {
    fn new() -> Self {
        Self {
            sync_duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            network_programming: Histogram::new(network_programming_buckets()),
            last_sync: Gauge::default(),
            last_queued: Gauge::default(),
            endpoint_changes: Counter::default(),
            endpoint_changes_pending: Gauge::default(),
            service_changes: Counter::default(),
            service_changes_pending: Gauge::default(),
            no_local_endpoints: Family::default(),
            healthz: Family::default(),
            livez: Family::default(),
        }
    }

    fn register(&self, registry: &mut Registry) {
        // The registry appends `_total` to counters' names.
        registry.register(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds (one sync: diff and map writes)",
            self.sync_duration.clone(),
        );
        registry.register(
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds (from the change seen by the agent's watch to its map writes done)",
            self.network_programming.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            self.last_sync.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            self.last_queued.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_endpoint_changes",
            "Cumulative proxy rules Endpoint changes",
            self.endpoint_changes.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
            "Pending proxy rules Endpoint changes",
            self.endpoint_changes_pending.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_service_changes",
            "Cumulative proxy rules Service changes",
            self.service_changes.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_service_changes_pending",
            "Pending proxy rules Service changes",
            self.service_changes_pending.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
            "Number of services with a Local traffic policy and no endpoints",
            self.no_local_endpoints.clone(),
        );
        registry.register(
            "kubeproxy_proxy_healthz",
            "Cumulative proxy healthz HTTP status",
            self.healthz.clone(),
        );
        registry.register(
            "kubeproxy_proxy_livez",
            "Cumulative proxy livez HTTP status",
            self.livez.clone(),
        );
    }
}

/// svc-lb's own live metrics.
#[derive(Debug, Default)]
struct Own {
    initial_sync: Gauge<f64, AtomicU64>,
    frontends: Gauge,
    backends: Gauge,
    map_fill: Family<Labels, Gauge<f64, AtomicU64>>,
    resyncs: Counter,
    repaired: Counter,
    conntrack_collected: Counter,
    errors: Family<Labels, Counter>,
}

impl Own {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "svc_agent_initial_sync_seconds",
            "Time from start until the initial snapshot was in the maps",
            self.initial_sync.clone(),
        );
        registry.register(
            "svc_agent_frontends",
            "Frontends in the maps",
            self.frontends.clone(),
        );
        registry.register(
            "svc_agent_backends",
            "Backend references (slots) in the maps",
            self.backends.clone(),
        );
        registry.register(
            "svc_agent_map_fill_ratio",
            "Entries in use over capacity",
            self.map_fill.clone(),
        );
        registry.register(
            "svc_agent_resyncs",
            "Periodic resyncs (maps read back from the kernel)",
            self.resyncs.clone(),
        );
        registry.register(
            "svc_agent_repaired_frontends",
            "Frontends a resync found changed behind the agent's back and rewrote",
            self.repaired.clone(),
        );
        registry.register(
            "svc_agent_conntrack_collected",
            "Expired conntrack entries removed by the collector",
            self.conntrack_collected.clone(),
        );
        registry.register("svc_agent_errors", "Errors by kind", self.errors.clone());
    }
}

/// What was last read from elsewhere, written out at each scrape.
#[derive(Debug, Default)]
struct Readings {
    /// The conntrack collector's last count.
    conntrack: Option<Census>,
    /// The datapath's per-reason drop counters, summed over CPUs.
    drops: Vec<DropCounter>,
    /// What the last sync left out.
    left_out: Vec<LeftOut>,
}

#[derive(Debug, Default)]
struct ReadingsCollector(Arc<Mutex<Readings>>);

impl Collector for ReadingsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let readings = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(census) = readings.conntrack {
            let mut entries = encoder.encode_descriptor(
                "svc_agent_conntrack_entries",
                "Conntrack entries (one per direction of a flow) by state, at the collector's last pass",
                None,
                MetricType::Gauge,
            )?;
            for (state, count) in [
                ("new", census.new),
                ("established", census.established),
                ("closing", census.closing),
            ] {
                ConstGauge::new(count).encode(entries.encode_family(&label("state", state))?)?;
            }
            ConstGauge::new(census.nat_ports).encode(encoder.encode_descriptor(
                "svc_agent_nat_ports_in_use",
                "Source NAT ports held by flows",
                None,
                MetricType::Gauge,
            )?)?;
        }
        if !readings.drops.is_empty() {
            let mut drops = encoder.encode_descriptor(
                "svc_agent_datapath_drops",
                "Packets the datapath did not forward as they came, by reason (answered with a reset or ICMP error, or dropped)",
                None,
                MetricType::Counter,
            )?;
            for drop in &readings.drops {
                ConstCounter::new(drop.packets)
                    .encode(drops.encode_family(&label("reason", drop.reason))?)?;
            }
        }
        if !readings.left_out.is_empty() {
            let mut left_out = encoder.encode_descriptor(
                "svc_agent_left_out",
                "Frontends (frontend=\"\" for a whole Service) the node does not program, by Service and reason",
                None,
                MetricType::Gauge,
            )?;
            for left in &readings.left_out {
                let labels = [
                    ("service", left.service.as_str()),
                    ("frontend", left.frontend.as_str()),
                    ("reason", left.reason.label()),
                ];
                ConstGauge::new(1i64).encode(left_out.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The agent's metrics; shared between the sync loop, the sources and the
/// HTTP endpoint.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    kube_proxy: KubeProxy,
    own: Own,
    readings: Arc<Mutex<Readings>>,
    /// Errors by kind, for [`Metrics::errors`] (the registry's family is
    /// written, not read).
    error_counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let kube_proxy = KubeProxy::new();
        let own = Own::default();
        let readings = Arc::new(Mutex::new(Readings::default()));
        let mut registry = Registry::default();
        kube_proxy.register(&mut registry);
        own.register(&mut registry);
        registry.register_collector(Box::new(ReadingsCollector(readings.clone())));
        Self {
            registry,
            kube_proxy,
            own,
            readings,
            error_counts: Mutex::default(),
        }
    }
}

/// Seconds since the epoch, for kube-proxy's timestamp gauges.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

fn gauge_value(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

impl Metrics {
    fn readings<T>(&self, f: impl FnOnce(&mut Readings) -> T) -> T {
        // A panic elsewhere never makes the numbers unreadable.
        f(&mut self.readings.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Start of the agent until the initial snapshot was in the maps.
    pub fn initial_sync(&self, took: Duration) {
        self.own.initial_sync.set(took.as_secs_f64());
    }

    /// The source saw a change: counted, and pending until a sync of a
    /// snapshot that holds it.
    pub fn change_seen(&self, change: Change) {
        let (total, pending) = match change {
            Change::Service => (
                &self.kube_proxy.service_changes,
                &self.kube_proxy.service_changes_pending,
            ),
            Change::Endpoints => (
                &self.kube_proxy.endpoint_changes,
                &self.kube_proxy.endpoint_changes_pending,
            ),
        };
        total.inc();
        pending.inc();
        self.kube_proxy.last_queued.set(unix_now());
    }

    /// The changes seen so far (stamped on the snapshot made now).
    pub fn changes_seen(&self) -> ChangesSeen {
        ChangesSeen {
            services: self.kube_proxy.service_changes.get(),
            endpoints: self.kube_proxy.endpoint_changes.get(),
        }
    }

    /// One sync: how long the map writes took, how long since the change
    /// that caused it, what the maps now hold, and the changes the
    /// snapshot held.
    pub fn applied(&self, sync: &AppliedSync) {
        let kube_proxy = &self.kube_proxy;
        kube_proxy.sync_duration.observe(sync.took.as_secs_f64());
        kube_proxy
            .network_programming
            .observe(sync.since_change.as_secs_f64());
        kube_proxy.last_sync.set(unix_now());
        let pending = |total: &Counter, pending: &Gauge, synced: u64| {
            pending.set(gauge_value(total.get().saturating_sub(synced)));
        };
        pending(
            &kube_proxy.service_changes,
            &kube_proxy.service_changes_pending,
            sync.changes.services,
        );
        pending(
            &kube_proxy.endpoint_changes,
            &kube_proxy.endpoint_changes_pending,
            sync.changes.endpoints,
        );
        for (policy, count) in [
            ("internal", sync.no_local_endpoints.internal),
            ("external", sync.no_local_endpoints.external),
        ] {
            kube_proxy
                .no_local_endpoints
                .get_or_create(&label("traffic_policy", policy))
                .set(gauge_value(count as u64));
        }
        self.own.frontends.set(gauge_value(sync.frontends as u64));
        self.own.backends.set(gauge_value(sync.backends as u64));
        for (map, used, capacity) in [
            ("frontends", sync.frontends, MAX_FRONTENDS),
            ("backends", sync.backends, MAX_BACKENDS),
        ] {
            self.own
                .map_fill
                .get_or_create(&label("map", map))
                .set(used as f64 / f64::from(capacity));
        }
    }

    /// One periodic resync, which rewrote `repaired` frontends.
    pub fn resynced(&self, repaired: usize) {
        self.own.resyncs.inc();
        self.own.repaired.inc_by(repaired as u64);
    }

    /// One pass of the conntrack collector.
    pub fn conntrack(&self, census: Census) {
        self.own.conntrack_collected.inc_by(census.collected);
        self.readings(|readings| readings.conntrack = Some(census));
    }

    /// The kernel's drop counters, summed over CPUs.
    pub fn drops(&self, drops: &[DropCounter]) {
        self.readings(|readings| readings.drops = drops.to_vec());
    }

    /// What the last sync left out, and why.
    pub fn left_out(&self, left_out: &[LeftOut]) {
        self.readings(|readings| readings.left_out = left_out.to_vec());
    }

    /// What the last sync left out (`/left-out`).
    pub fn left_out_now(&self) -> Vec<LeftOut> {
        self.readings(|readings| readings.left_out.clone())
    }

    /// Counts an error of `kind` (e.g. `watch_gone`, `map_full`).
    pub fn error(&self, kind: &'static str) {
        self.own.errors.get_or_create(&label("kind", kind)).inc();
        *self
            .error_counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(kind)
            .or_default() += 1;
    }

    /// How many errors of `kind` were counted.
    pub fn errors(&self, kind: &str) -> u64 {
        self.error_counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(kind)
            .copied()
            .unwrap_or_default()
    }

    /// One `/healthz` answer (kube-proxy counts them by status code).
    pub fn healthz_answered(&self, code: u16) {
        self.kube_proxy
            .healthz
            .get_or_create(&label("code", code.to_string()))
            .inc();
    }

    /// One `/livez` answer.
    pub fn livez_answered(&self, code: u16) {
        self.kube_proxy
            .livez
            .get_or_create(&label("code", code.to_string()))
            .inc();
    }

    /// The OpenMetrics text exposition ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(%error, "/metrics could not be written");
        }
        out
    }
}

/// What [`Metrics::applied`] records of one sync.
#[derive(Clone, Copy, Debug, Default)]
pub struct AppliedSync {
    /// The diff and map writes.
    pub took: Duration,
    /// Since the source saw the first change the snapshot holds.
    pub since_change: Duration,
    /// The changes the snapshot holds.
    pub changes: ChangesSeen,
    /// Frontends and backend slots the maps now hold.
    pub frontends: usize,
    pub backends: usize,
    pub no_local_endpoints: NoLocalEndpoints,
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
