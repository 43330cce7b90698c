//! Which endpoints a Service port may use from this node: kube-proxy's
//! CategorizeEndpoints (pkg/proxy/topology.go) in our words.
use super::endpoints::Endpoint;

/// The policies of one Service port that decide its usable endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TrafficPolicy {
    /// internalTrafficPolicy: Local.
    pub internal_local: bool,
    /// externalTrafficPolicy: Local (on an externally accessible Service).
    pub external_local: bool,
    /// The port has a NodePort, a load balancer VIP or an external IP.
    pub externally_accessible: bool,
    /// The Service asks for topology-aware routing.
    pub topology_requested: bool,
}

impl TrafficPolicy {
    /// Some traffic to the port goes to any node's endpoints: internal
    /// traffic under Cluster policy, or external traffic at all (even under
    /// eTP=Local, traffic from inside the cluster short-circuits to them).
    pub(crate) fn uses_cluster_endpoints(&self) -> bool {
        !self.internal_local || self.externally_accessible
    }

    /// Some traffic to the port goes only to this node's endpoints.
    pub(crate) fn uses_local_endpoints(&self) -> bool {
        self.internal_local || (self.external_local && self.externally_accessible)
    }
}

/// The node being planned, as topology sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NodeTopology<'a> {
    pub name: &'a str,
    pub zone: Option<&'a str>,
}

/// The usable endpoints of a Service port, by policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Categorized {
    /// For Cluster policy, topology applied; `None` when no traffic to the
    /// port uses Cluster policy.
    pub cluster: Option<Vec<Endpoint>>,
    /// For Local policy; `None` when no traffic to the port uses it.
    pub local: Option<Vec<Endpoint>>,
    /// Some node in the cluster has a usable endpoint (even when none is
    /// usable from here): what tells "drop" from "reject" for an empty
    /// Local frontend.
    pub has_any: bool,
}

/// Which hints, if any, narrow the Cluster endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TopologyMode {
    Everywhere,
    SameZone,
    SameNode,
}

/// Usable endpoints are the ready ones; when none is, the serving and
/// terminating ones (separately for Cluster and Local). Cluster endpoints
/// follow topology hints when the Service asks for it and the hints cover
/// every ready endpoint and this node.
pub(crate) fn categorize(
    endpoints: &[Endpoint],
    policy: &TrafficPolicy,
    node: NodeTopology<'_>,
) -> Categorized {
    let mut categorized = Categorized::default();
    if endpoints.is_empty() {
        if policy.uses_cluster_endpoints() {
            categorized.cluster = Some(Vec::new());
        }
        if policy.uses_local_endpoints() {
            categorized.local = Some(Vec::new());
        }
        return categorized;
    }

    if policy.uses_cluster_endpoints() {
        let mode = topology_mode(endpoints, policy, node);
        let mut cluster = pick(endpoints, |ep| ep.ready && available(ep, mode, node));
        // With no ready endpoint for this topology the mode would have been
        // Everywhere already: here no endpoint is ready anywhere.
        if cluster.is_empty() {
            cluster = pick(endpoints, |ep| ep.serving && ep.terminating);
        }
        categorized.has_any = !cluster.is_empty();
        categorized.cluster = Some(cluster);
    }

    if policy.uses_local_endpoints() {
        let usable = |ep: &Endpoint| ep.ready || (ep.serving && ep.terminating);
        categorized.has_any |= endpoints.iter().any(usable);
        let mut local = pick(endpoints, |ep| ep.is_local && ep.ready);
        if local.is_empty() {
            local = pick(endpoints, |ep| ep.is_local && ep.serving && ep.terminating);
        }
        categorized.local = Some(local);
    }
    categorized
}

fn topology_mode(
    endpoints: &[Endpoint],
    policy: &TrafficPolicy,
    node: NodeTopology<'_>,
) -> TopologyMode {
    if !policy.topology_requested {
        return TopologyMode::Everywhere;
    }
    let ready: Vec<&Endpoint> = endpoints.iter().filter(|ep| ep.ready).collect();
    if ready.is_empty() {
        return TopologyMode::Everywhere;
    }
    let all_node_hinted = ready.iter().all(|ep| !ep.node_hints.is_empty());
    if all_node_hinted && ready.iter().any(|ep| ep.node_hints.contains(node.name)) {
        return TopologyMode::SameNode;
    }
    let all_zone_hinted = ready.iter().all(|ep| !ep.zone_hints.is_empty());
    let zone_hinted = node
        .zone
        .is_some_and(|zone| ready.iter().any(|ep| ep.zone_hints.contains(zone)));
    if all_zone_hinted && zone_hinted {
        return TopologyMode::SameZone;
    }
    TopologyMode::Everywhere
}

fn available(endpoint: &Endpoint, mode: TopologyMode, node: NodeTopology<'_>) -> bool {
    match mode {
        TopologyMode::Everywhere => true,
        TopologyMode::SameNode => endpoint.node_hints.contains(node.name),
        TopologyMode::SameZone => node
            .zone
            .is_some_and(|zone| endpoint.zone_hints.contains(zone)),
    }
}

fn pick(endpoints: &[Endpoint], usable: impl Fn(&Endpoint) -> bool) -> Vec<Endpoint> {
    endpoints.iter().filter(|ep| usable(ep)).cloned().collect()
}

#[cfg(test)]
#[path = "topology_tests.rs"]
mod tests;
