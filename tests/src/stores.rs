//! svc-agent's watch stores (kube-runtime reflector stores, as its
//! reflectors fill them) and its translator and tables, for benchmarks
//! that time the agent's own path from a changed object to the maps:
//! the object into the store, its name to the `Translator`, the `Delta`
//! to `Tables::apply_delta`, as `svc-agent run` does for a watch event.
use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use kube::runtime::{reflector::store::Writer, watcher::Event};
use svc_agent::{
    dataplane::{ApplyReport, DataplaneError, Tables},
    k8s::source::{Cluster, Stores},
    model::{Config, NodeContext, Translator, slice_name},
};

pub struct AgentPath {
    services: Writer<Service>,
    slices: Writer<EndpointSlice>,
    /// Never written: the node context is given.
    _nodes: Writer<Node>,
    cluster: Cluster,
    translator: Translator,
    pub tables: Tables,
    node: NodeContext,
    config: Config,
}

impl AgentPath {
    /// Empty stores, programming `tables` for `node`.
    pub fn new(tables: Tables, node: NodeContext) -> Self {
        let services = Writer::new(());
        let slices = Writer::new(());
        let nodes = Writer::new(());
        let cluster = Cluster::Stores(Stores {
            services: services.as_reader(),
            slices: slices.as_reader(),
            nodes: nodes.as_reader(),
        });
        Self {
            services,
            slices,
            _nodes: nodes,
            cluster,
            translator: Translator::default(),
            tables,
            node,
            config: Config::default(),
        }
    }

    /// Every object in the stores (the same `Arc`s).
    pub fn snapshot(&self) -> std::sync::Arc<svc_agent::k8s::Snapshot> {
        self.cluster.snapshot()
    }

    /// The objects of an initial list, into the stores.
    pub fn list(&mut self, services: Vec<Service>, slices: Vec<EndpointSlice>) {
        for service in services {
            self.services.apply_watcher_event(&Event::Apply(service));
        }
        for slice in slices {
            self.slices.apply_watcher_event(&Event::Apply(slice));
        }
    }

    /// The agent's first sync: everything translated, the maps read back
    /// and written whole.
    pub fn sync_all(&mut self) -> Result<ApplyReport, DataplaneError> {
        self.translator
            .translate_snapshot(&self.cluster.snapshot(), &self.node, &self.config);
        let desired: Vec<_> = self.translator.frontends().cloned().collect();
        self.tables.apply(&desired)
    }

    /// A watch event for an EndpointSlice: into the store, then
    /// programmed.
    pub fn slice_changed(&mut self, slice: EndpointSlice) -> Result<ApplyReport, DataplaneError> {
        let name = slice_name(&slice);
        self.slices.apply_watcher_event(&Event::Apply(slice));
        let delta = self.translator.update(
            &self.cluster,
            &Default::default(),
            &[name].into_iter().collect(),
            &self.node,
            &self.config,
        );
        self.tables.apply_delta(&delta)
    }
}
