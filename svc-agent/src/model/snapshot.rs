//! Every object one translation reads: a [`Snapshot`] of the Services,
//! EndpointSlices, Pods, Workloads and Nodes, as the sources (k8s/) fill it.
use std::{collections::HashMap, sync::Arc};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Node, Pod, Service},
    discovery::v1::EndpointSlice,
};

/// Label an EndpointSlice carries naming the Service it belongs to.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Label a Node carries naming its zone (topology hints match on it).
pub const LABEL_TOPOLOGY_ZONE: &str = "topology.kubernetes.io/zone";
/// Services with this label are served by another proxy, not by us (nor by
/// kube-proxy).
pub const LABEL_SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";

/// Every object one translation reads, as the API server (or a manifests
/// directory) had them at one moment. Services and EndpointSlices are
/// shared with the watch stores (an `Arc` each), so a snapshot of a large
/// cluster costs no deep copy.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub services: Vec<Arc<Service>>,
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
    pub pods: Vec<Pod>,
    /// Parsed for the record; Pods, not Deployments, stand for endpoints.
    pub deployments: Vec<Deployment>,
    /// Pod templates of workloads (Deployments, ReplicaSets, StatefulSets,
    /// DaemonSets, Jobs): the pods they will make, for `diagnose`.
    pub workloads: Vec<Workload>,
    pub nodes: Vec<Node>,
    /// Read from a running cluster (its Pods are what runs), not from
    /// manifests (where workloads' Pods do not exist yet).
    pub from_cluster: bool,
}

/// A workload's pod template: what the pods it makes will be labelled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// `Deployment`, `ReplicaSet`, `StatefulSet`, `DaemonSet` or `Job`.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// `spec.replicas` (Kubernetes' default of 1 when absent); None for a
    /// DaemonSet (one pod per node) and a Job (`parallelism` pods at once).
    pub replicas: Option<i32>,
    pub labels: std::collections::BTreeMap<String, String>,
}

impl Snapshot {
    /// The Node object named `name`, if the snapshot has it.
    pub fn node(&self, name: &str) -> Option<&Node> {
        node_named(&self.nodes, name)
    }

    /// The EndpointSlices of Service `namespace/name`.
    pub fn slices_of<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a EndpointSlice> + 'a {
        self.endpoint_slices
            .iter()
            .filter(move |slice| service_of(slice) == Some((namespace, name)))
            .map(|slice| &**slice)
    }

    /// Every Service's EndpointSlices at once, keyed by (namespace, Service
    /// name): one pass over the slices instead of one per Service.
    pub fn slices_by_service(&self) -> HashMap<(&str, &str), Vec<&EndpointSlice>> {
        let mut index: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for slice in &self.endpoint_slices {
            if let Some(service) = service_of(slice) {
                index.entry(service).or_default().push(slice);
            }
        }
        index
    }
}

/// The Service an EndpointSlice belongs to, as (namespace, name): the
/// `kubernetes.io/service-name` label, in the slice's own namespace.
pub fn service_of(slice: &EndpointSlice) -> Option<(&str, &str)> {
    let name = slice.metadata.labels.as_ref()?.get(LABEL_SERVICE_NAME)?;
    Some((namespace_of(&slice.metadata), name.as_str()))
}

/// An object's namespace; objects without one live in `default`, as
/// `kubectl apply` would put them.
pub fn namespace_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

/// `NAMESPACE/NAME` of an object.
pub fn object_key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}",
        namespace_of(meta),
        meta.name.as_deref().unwrap_or("")
    )
}

/// The Node object named `name` among `nodes`.
pub fn node_named<'a>(nodes: &'a [Node], name: &str) -> Option<&'a Node> {
    nodes
        .iter()
        .find(|node| node.metadata.name.as_deref() == Some(name))
}

/// `(NAMESPACE, NAME)` of an object.
pub type ObjectName = (String, String);

/// An object's name as an [`ObjectName`].
pub fn object_name(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> ObjectName {
    (
        namespace_of(meta).to_owned(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// A Service's name as an [`ObjectName`].
pub fn service_name(service: &Service) -> ObjectName {
    object_name(&service.metadata)
}

/// An EndpointSlice's own name as an [`ObjectName`].
pub fn slice_name(slice: &EndpointSlice) -> ObjectName {
    object_name(&slice.metadata)
}

/// Services and EndpointSlices looked up by name, as they are now: what a
/// translation of a few changed objects reads (the API source's watch
/// stores answer without a copy of the cluster).
pub trait Objects {
    fn service(&self, name: &ObjectName) -> Option<Arc<Service>>;
    fn slice(&self, name: &ObjectName) -> Option<Arc<EndpointSlice>>;
}

/// A snapshot answers by a walk over its objects; of two of one name, the
/// later, as [`Translator::translate_snapshot`](super::Translator::translate_snapshot)
/// takes them.
impl Objects for Snapshot {
    fn service(&self, name: &ObjectName) -> Option<Arc<Service>> {
        let found = self.services.iter().rfind(|s| service_name(s) == *name);
        found.cloned()
    }

    fn slice(&self, name: &ObjectName) -> Option<Arc<EndpointSlice>> {
        let found = self
            .endpoint_slices
            .iter()
            .rfind(|s| slice_name(s) == *name);
        found.cloned()
    }
}

/// What changed since the objects were last translated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Changed {
    /// Anything may have: read every object (a first list, a relist whose
    /// deletions came as no event, a new Node, a reloaded directory).
    #[default]
    Everything,
    /// Only these, each added, replaced or deleted.
    Objects {
        services: crate::FastSet<ObjectName>,
        slices: crate::FastSet<ObjectName>,
    },
}

impl Changed {
    /// Nothing yet.
    pub fn nothing() -> Self {
        Self::Objects {
            services: Default::default(),
            slices: Default::default(),
        }
    }

    pub fn service(&mut self, name: ObjectName) {
        if let Self::Objects { services, .. } = self {
            services.insert(name);
        }
    }

    pub fn slice(&mut self, name: ObjectName) {
        if let Self::Objects { slices, .. } = self {
            slices.insert(name);
        }
    }

    /// What changed in `self`'s time and then in `later`'s.
    pub fn merge(&mut self, later: Changed) {
        match (&mut *self, later) {
            (Self::Everything, _) => {}
            (_, Self::Everything) => *self = Self::Everything,
            (
                Self::Objects { services, slices },
                Self::Objects {
                    services: more_services,
                    slices: more_slices,
                },
            ) => {
                services.extend(more_services);
                slices.extend(more_slices);
            }
        }
    }
}
