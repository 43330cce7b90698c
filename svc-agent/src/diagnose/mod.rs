//! `svc-agent diagnose`: why a Service does or does not get traffic.
//!
//! [`diagnose`] is pure: it reads a [`Snapshot`] (from manifests or the
//! API server) and, when given, what the kernel holds for one node
//! ([`KernelView`], from the pinned maps), and lists [`Finding`]s, most
//! basic first. [`report`] is the command around it: it reads those.
mod report;
mod selector;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
};

use k8s_openapi::{
    api::core::v1::{Pod, Service},
    apimachinery::pkg::util::intstr::IntOrString,
};

pub use self::{
    report::{Report, Settings, report},
    selector::{Candidate, Closest, LabelDifference, closest_pods, selects},
};
use crate::{
    dataplane::{DataplaneError, FrontendState},
    k8s::{
        Snapshot, client::ClientError, lookup::LookupError, manifests::ManifestError, namespace_of,
        object_key,
    },
    model::{self, Config, FrontendKind, IpFamily, LeftOut, Protocol, ServiceInfo},
};

#[derive(Debug, thiserror::Error)]
pub enum DiagnoseError {
    #[error("service {service} not found in the manifests")]
    NoService { service: String },
    #[error("planning node {node}")]
    Plan {
        node: String,
        source: model::NodeContextError,
    },
    #[error(transparent)]
    Manifests(#[from] ManifestError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error("reading the kernel maps")]
    Kernel(#[from] DataplaneError),
    #[error("starting the async runtime")]
    Runtime { source: std::io::Error },
}

/// One reason a Service gets (or does not get) traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// The Service has no selector: its endpoints come from EndpointSlices
    /// someone else writes.
    NoSelector,
    /// No Pod in the namespace carries every selector label.
    SelectorMatchesNoPod {
        selector: String,
        closest: Vec<Closest>,
    },
    /// No Pod matches, but these workloads' templates do: in a cluster,
    /// they make none (a failing ReplicaSet, a scale of 0, ...); in
    /// manifests, their Pods come once applied.
    WorkloadsMakeNoPod {
        selector: String,
        /// `KIND NAMESPACE/NAME (N replicas)`.
        workloads: Vec<String>,
        from_cluster: bool,
    },
    /// Pods match, but these are not ready.
    PodsNotReady { pods: Vec<String>, matching: usize },
    /// A Service port's targetPort names a port no matching Pod declares.
    TargetPortNotFound {
        service_port: String,
        target_port: String,
        pods: Vec<String>,
    },
    /// externalTrafficPolicy=Local and no ready endpoint on this node:
    /// external traffic to it is dropped here.
    LocalPolicyNoLocalEndpoint { node: String },
    /// IPv6 frontends for traffic from outside the node: served to the
    /// node's own processes and its pods (socket hooks), not yet to
    /// packets from outside (no per-packet IPv6 path).
    Ipv6ExternalNotServed {
        node: String,
        frontends: Vec<String>,
    },
    /// The plan has these frontends but the kernel maps do not.
    FrontendMissing {
        node: String,
        frontends: Vec<String>,
    },
    /// The node does not program these frontends (or the whole Service),
    /// for the reasons given: by rule (an address another Service owns,
    /// an externalIP not allowed) or because the maps could not take them.
    LeftOut { node: String, reasons: Vec<String> },
    /// The kernel holds these frontends, but no packet was counted on them.
    NoPackets {
        node: String,
        frontends: Vec<String>,
    },
    /// Ready endpoints exist (and the kernel matches, when it was read).
    Serving { endpoints: usize },
}

/// What the kernel of one node holds (`dump`).
#[derive(Clone, Debug)]
pub struct KernelView {
    pub node: String,
    pub frontends: Vec<FrontendState>,
    /// What the node's agent says it left out (empty when it did not
    /// answer).
    pub left_out: Vec<LeftOut>,
}

/// Findings for Service `key` (`NAMESPACE/NAME`); `node` plans for that
/// node (traffic policy Local), `kernel` compares the plan with the maps.
pub fn diagnose(
    snapshot: &Snapshot,
    key: &str,
    node: Option<&str>,
    kernel: Option<&KernelView>,
) -> Result<Vec<Finding>, DiagnoseError> {
    let service = snapshot
        .services
        .iter()
        .find(|s| object_key(&s.metadata) == key)
        .ok_or_else(|| DiagnoseError::NoService {
            service: key.to_owned(),
        })?;
    let mut findings = Vec::new();
    let spec = service.spec.clone().unwrap_or_default();
    let selector = spec.selector.clone().unwrap_or_default();
    let namespace = namespace_of(&service.metadata);
    let pods: Vec<&Pod> = snapshot
        .pods
        .iter()
        .filter(|pod| namespace_of(&pod.metadata) == namespace)
        .collect();
    let matching: Vec<&Pod> = pods
        .iter()
        .copied()
        .filter(|pod| selects(&selector, pod))
        .collect();
    if selector.is_empty() {
        findings.push(Finding::NoSelector);
    } else if matching.is_empty()
        && let makers = matching_workloads(snapshot, namespace, &selector)
        && !makers.is_empty()
    {
        findings.push(Finding::WorkloadsMakeNoPod {
            selector: selector::text(&selector),
            workloads: makers,
            from_cluster: snapshot.from_cluster,
        });
    } else if matching.is_empty() {
        // Workloads' templates stand for the pods they will make: with
        // manifests alone, before any cluster, they are all there is.
        let candidates: Vec<Candidate> = snapshot
            .workloads
            .iter()
            .filter(|workload| workload.namespace == namespace)
            .map(Candidate::workload)
            .chain(pods.iter().map(|pod| Candidate::pod(pod)))
            .collect();
        findings.push(Finding::SelectorMatchesNoPod {
            selector: selector::text(&selector),
            closest: closest_pods(&selector, &candidates),
        });
    } else {
        let not_ready: Vec<String> = matching
            .iter()
            .filter(|pod| !pod_ready(pod))
            .map(|pod| pod.metadata.name.clone().unwrap_or_default())
            .collect();
        if !not_ready.is_empty() {
            findings.push(Finding::PodsNotReady {
                pods: not_ready,
                matching: matching.len(),
            });
        }
        findings.extend(named_port_findings(service, &matching));
    }

    let node_findings = match node {
        Some(node) => plan_findings(snapshot, service, key, node, kernel)?,
        None => Vec::new(),
    };
    findings.extend(node_findings);
    if findings.is_empty() {
        findings.push(Finding::Serving {
            endpoints: ready_endpoints(snapshot, namespace, service),
        });
    }
    Ok(findings)
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn named_port_findings(service: &Service, matching: &[&Pod]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    for port in ports {
        let Some(IntOrString::String(name)) = &port.target_port else {
            continue;
        };
        let declares = |pod: &&Pod| {
            pod.spec.iter().flat_map(|s| &s.containers).any(|c| {
                c.ports
                    .iter()
                    .flatten()
                    .any(|p| p.name.as_deref() == Some(name.as_str()))
            })
        };
        let missing: Vec<String> = matching
            .iter()
            .filter(|pod| !declares(pod))
            .map(|pod| pod.metadata.name.clone().unwrap_or_default())
            .collect();
        if !missing.is_empty() {
            findings.push(Finding::TargetPortNotFound {
                service_port: port.name.clone().unwrap_or_else(|| port.port.to_string()),
                target_port: name.clone(),
                pods: missing,
            });
        }
    }
    findings
}

fn ready_endpoints(snapshot: &Snapshot, namespace: &str, service: &Service) -> usize {
    let name = service.metadata.name.as_deref().unwrap_or_default();
    let addresses: BTreeSet<&String> = snapshot
        .slices_of(namespace, name)
        .flat_map(|slice| slice.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .flat_map(|e| &e.addresses)
        .collect();
    addresses.len()
}

type FrontendId = (IpAddr, u16, Protocol, FrontendKind);

fn frontend_text(id: &FrontendId) -> String {
    format!(
        "{} {}/{}",
        id.3,
        std::net::SocketAddr::new(id.0, id.1),
        id.2
    )
}

fn plan_findings(
    snapshot: &Snapshot,
    service: &Service,
    key: &str,
    node: &str,
    kernel: Option<&KernelView>,
) -> Result<Vec<Finding>, DiagnoseError> {
    let mut findings = Vec::new();
    let config = Config::default();
    let plan = model::plan(snapshot, node, &config).map_err(|source| DiagnoseError::Plan {
        node: node.to_owned(),
        source,
    })?;
    let planned: Vec<&model::Frontend> =
        plan.frontends.iter().filter(|f| f.service == key).collect();
    let reasons: BTreeSet<String> = plan
        .left_out
        .iter()
        .chain(kernel.iter().flat_map(|kernel| &kernel.left_out))
        .filter(|left| left.service == key)
        .map(LeftOut::detail)
        .collect();
    if !reasons.is_empty() {
        findings.push(Finding::LeftOut {
            node: node.to_owned(),
            reasons: reasons.into_iter().collect(),
        });
    }
    // translate's reading of the Service, not a second one.
    let local_policy = IpFamily::ALL.into_iter().any(|family| {
        ServiceInfo::for_family(service, family).is_some_and(|info| info.external_local)
    });
    let external: Vec<&&model::Frontend> = planned
        .iter()
        .filter(|f| f.kind != FrontendKind::ClusterIP)
        .collect();
    if local_policy
        && !external.is_empty()
        && external.iter().all(|f| f.ready_backends().next().is_none())
    {
        findings.push(Finding::LocalPolicyNoLocalEndpoint {
            node: node.to_owned(),
        });
    }
    let ipv6_external: Vec<String> = external
        .iter()
        .filter(|f| f.address.is_ipv6())
        .map(|f| f.label())
        .collect();
    if !ipv6_external.is_empty() {
        findings.push(Finding::Ipv6ExternalNotServed {
            node: node.to_owned(),
            frontends: ipv6_external,
        });
    }
    let Some(kernel) = kernel else {
        return Ok(findings);
    };
    let id = |f: &model::Frontend| (f.address, f.port, f.protocol, f.kind);
    let held: Vec<&FrontendState> = kernel
        .frontends
        .iter()
        .filter(|s| s.frontend.service == key)
        .collect();
    let held_ids: BTreeSet<FrontendId> = held.iter().map(|s| id(&s.frontend)).collect();
    let missing: Vec<String> = planned
        .iter()
        .map(|f| id(f))
        .filter(|i| !held_ids.contains(i))
        .map(|i| frontend_text(&i))
        .collect();
    if !missing.is_empty() {
        findings.push(Finding::FrontendMissing {
            node: kernel.node.clone(),
            frontends: missing,
        });
    }
    let silent: Vec<String> = held
        .iter()
        .filter(|s| s.packets == 0)
        .map(|s| frontend_text(&id(&s.frontend)))
        .collect();
    if !silent.is_empty() && silent.len() == held.len() {
        findings.push(Finding::NoPackets {
            node: kernel.node.clone(),
            frontends: silent,
        });
    }
    Ok(findings)
}

/// The workloads of `namespace` whose pod template the selector matches.
fn matching_workloads(
    snapshot: &Snapshot,
    namespace: &str,
    selector: &BTreeMap<String, String>,
) -> Vec<String> {
    snapshot
        .workloads
        .iter()
        .filter(|workload| workload.namespace == namespace)
        .filter(|workload| {
            selector
                .iter()
                .all(|(key, value)| workload.labels.get(key) == Some(value))
        })
        .map(|workload| {
            let replicas = match workload.replicas {
                Some(1) => " (1 replica)".to_owned(),
                Some(n) => format!(" ({n} replicas)"),
                None => String::new(),
            };
            format!(
                "{} {}/{}{replicas}",
                workload.kind, workload.namespace, workload.name
            )
        })
        .collect()
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::NoSelector => write!(
                f,
                "the Service has no selector: its endpoints come only from EndpointSlices written for it"
            ),
            Finding::SelectorMatchesNoPod { selector, closest } => {
                write!(
                    f,
                    "selector {selector} matches no pod: the Service has no endpoints and connections are refused"
                )?;
                for candidate in closest {
                    write!(f, "\n  closest: {candidate}")?;
                }
                if !closest.is_empty() {
                    write!(
                        f,
                        "\n  fix: change the Service's selector, or the pods' labels (a Deployment's \
                         selector is immutable: delete and re-create it)"
                    )?;
                }
                Ok(())
            }
            Finding::WorkloadsMakeNoPod {
                selector,
                workloads,
                from_cluster: true,
            } => write!(
                f,
                "selector {selector} matches no pod, but the pod template of {} does: the \
                 workload makes none (scaled to 0, or its pods fail to be created: see \
                 kubectl describe on it and its ReplicaSet's events)",
                workloads.join(", ")
            ),
            Finding::WorkloadsMakeNoPod {
                selector,
                workloads,
                from_cluster: false,
            } => write!(
                f,
                "no pod yet: {} will make pods the selector {selector} matches once applied",
                workloads.join(", ")
            ),
            Finding::PodsNotReady { pods, matching } => write!(
                f,
                "{} of {matching} matching pods are not ready (no traffic until they are): {}",
                pods.len(),
                pods.join(", ")
            ),
            Finding::TargetPortNotFound {
                service_port,
                target_port,
                pods,
            } => write!(
                f,
                "port {service_port}: targetPort {target_port:?} is not a named container port of {}",
                pods.join(", ")
            ),
            Finding::LocalPolicyNoLocalEndpoint { node } => write!(
                f,
                "externalTrafficPolicy=Local and no ready endpoint on node {node}: \
                 external traffic arriving there is dropped"
            ),
            Finding::Ipv6ExternalNotServed { node, frontends } => write!(
                f,
                "on node {node}, these IPv6 frontends answer the node's own processes and its \
                 pods only (socket hooks): IPv6 packets from outside the node are not translated \
                 yet: {}",
                frontends.join(", ")
            ),
            Finding::FrontendMissing { node, frontends } => write!(
                f,
                "the kernel maps of node {node} lack frontends the plan has (is the agent running and synced?): {}",
                frontends.join(", ")
            ),
            Finding::LeftOut { node, reasons } => {
                write!(f, "node {node} does not program part of this Service:")?;
                for reason in reasons {
                    write!(f, "\n  {reason}")?;
                }
                Ok(())
            }
            Finding::NoPackets { node, frontends } => write!(
                f,
                "the kernel of node {node} holds the frontends but counted no packet on them \
                 (is traffic reaching this node?): {}",
                frontends.join(", ")
            ),
            Finding::Serving { endpoints } => {
                write!(
                    f,
                    "the Service has {endpoints} ready endpoint(s); nothing found wrong"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests;
