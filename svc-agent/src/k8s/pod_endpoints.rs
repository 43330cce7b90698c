//! Without an API server nobody runs the EndpointSlice controller: this
//! module does its part for manifests mode, making the EndpointSlices of a
//! Service from the Pods its selector matches, with the controller's rules
//! (address, readiness, node, zone, named target ports per Pod).
use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::{
    api::{
        core::v1::{Container, Node, ObjectReference, Pod, Service, ServicePort},
        discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice},
    },
    apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
};

use super::{LABEL_SERVICE_NAME, LABEL_TOPOLOGY_ZONE, Snapshot, namespace_of};
use crate::model::IpFamily;

/// Give every Service that has a selector and no EndpointSlice of its own
/// the slices the EndpointSlice controller would make from `snapshot`'s
/// Pods. Services with slices keep them untouched.
pub fn add_missing_slices(snapshot: &mut Snapshot) {
    let with_slices = snapshot.slices_by_service();
    let mut derived = Vec::new();
    for service in &snapshot.services {
        let namespace = namespace_of(&service.metadata);
        let name = service.metadata.name.as_deref().unwrap_or_default();
        if with_slices.contains_key(&(namespace, name)) {
            continue;
        }
        derived.extend(slices_from_pods(service, &snapshot.pods, &snapshot.nodes));
    }
    snapshot
        .endpoint_slices
        .extend(derived.into_iter().map(Arc::new));
}

/// The EndpointSlices of `service` from the `pods` its selector matches:
/// for each of the Service's families, one slice per distinct set of
/// resolved ports, of the Pods' addresses of that family (the IPv4 ones
/// named `NAME-pods-N`, the IPv6 ones `NAME-pods6-N`). None for a Service
/// without selector or of type ExternalName.
pub fn slices_from_pods(service: &Service, pods: &[Pod], nodes: &[Node]) -> Vec<EndpointSlice> {
    service_families(service)
        .into_iter()
        .flat_map(|family| family_slices(service, pods, nodes, family))
        .collect()
}

/// The families the EndpointSlice controller makes slices for:
/// spec.ipFamilies, else (an object from before dual-stack) its cluster
/// IP's, else IPv4.
fn service_families(service: &Service) -> Vec<IpFamily> {
    let spec = service.spec.as_ref();
    let listed: Vec<IpFamily> = spec
        .and_then(|spec| spec.ip_families.as_deref())
        .unwrap_or_default()
        .iter()
        .filter_map(|name| IpFamily::from_api_name(name))
        .collect();
    if !listed.is_empty() {
        return listed;
    }
    let cluster_ip = spec
        .and_then(|spec| spec.cluster_ip.as_deref())
        .and_then(|ip| ip.trim().parse().ok());
    vec![cluster_ip.map_or(IpFamily::IPv4, IpFamily::of)]
}

fn family_slices(
    service: &Service,
    pods: &[Pod],
    nodes: &[Node],
    family: IpFamily,
) -> Vec<EndpointSlice> {
    let Some(spec) = service.spec.as_ref() else {
        return Vec::new();
    };
    let selector = spec.selector.clone().unwrap_or_default();
    if selector.is_empty() || spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let namespace = namespace_of(&service.metadata);
    let service_ports = spec.ports.as_deref().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);

    // Pods that resolve the Service's ports alike share a slice.
    let mut by_ports: BTreeMap<Vec<(String, i32, String)>, Vec<Endpoint>> = BTreeMap::new();
    let mut selected: Vec<&Pod> = pods
        .iter()
        .filter(|pod| namespace_of(&pod.metadata) == namespace)
        .filter(|pod| selects(&selector, pod))
        .collect();
    selected.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for pod in selected {
        let Some(endpoint) = pod_endpoint(pod, nodes, publish_not_ready, family) else {
            continue;
        };
        let ports = service_ports
            .iter()
            .filter_map(|port| {
                let number = target_port(pod, port)?;
                Some((
                    port.name.clone().unwrap_or_default(),
                    number,
                    port.protocol.clone().unwrap_or_else(|| "TCP".into()),
                ))
            })
            .collect();
        by_ports.entry(ports).or_default().push(endpoint);
    }

    let service_name = service.metadata.name.clone().unwrap_or_default();
    by_ports
        .into_iter()
        .enumerate()
        .map(|(index, (ports, endpoints))| EndpointSlice {
            metadata: ObjectMeta {
                name: Some(match family {
                    IpFamily::IPv4 => format!("{service_name}-pods-{}", index + 1),
                    IpFamily::IPv6 => format!("{service_name}-pods6-{}", index + 1),
                }),
                namespace: Some(namespace.to_owned()),
                labels: Some([(LABEL_SERVICE_NAME.to_owned(), service_name.clone())].into()),
                ..ObjectMeta::default()
            },
            address_type: family.api_name().into(),
            endpoints: Some(endpoints),
            ports: Some(
                ports
                    .into_iter()
                    .map(|(name, port, protocol)| EndpointPort {
                        name: Some(name),
                        port: Some(port),
                        protocol: Some(protocol),
                        app_protocol: None,
                    })
                    .collect(),
            ),
        })
        .collect()
}

/// Every selector label is on the Pod with the same value.
pub fn selects(selector: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.metadata.labels.as_ref();
    selector
        .iter()
        .all(|(key, value)| labels.and_then(|labels| labels.get(key)) == Some(value))
}

/// The Pod as an endpoint of `family`, or `None` when it has no address
/// of that family yet or has finished (phase Succeeded or Failed).
fn pod_endpoint(
    pod: &Pod,
    nodes: &[Node],
    publish_not_ready: bool,
    family: IpFamily,
) -> Option<Endpoint> {
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let address = pod_ip(pod, family)?;
    let serving = status
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|condition| condition.type_ == "Ready" && condition.status == "True");
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let node_name = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.node_name.clone())
        .filter(|name| !name.is_empty());
    let zone = node_name.as_deref().and_then(|node_name| {
        nodes
            .iter()
            .find(|node| node.metadata.name.as_deref() == Some(node_name))?
            .metadata
            .labels
            .as_ref()?
            .get(LABEL_TOPOLOGY_ZONE)
            .filter(|zone| !zone.is_empty())
            .cloned()
    });
    Some(Endpoint {
        addresses: vec![address],
        conditions: Some(EndpointConditions {
            // A terminating Pod is never ready, unless the Service publishes
            // not-ready addresses.
            ready: Some(publish_not_ready || (serving && !terminating)),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        node_name,
        zone,
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            ..ObjectReference::default()
        }),
        ..Endpoint::default()
    })
}

/// The Pod's address of `family`: from status.podIPs, else status.podIP.
fn pod_ip(pod: &Pod, family: IpFamily) -> Option<String> {
    let status = pod.status.as_ref()?;
    let from_list = status
        .pod_ips
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|pod_ip| &pod_ip.ip);
    from_list
        .chain(&status.pod_ip)
        .find_map(|ip| family.parse(ip))
        .map(|ip| ip.to_string())
}

/// The Pod port `port` sends to: its targetPort number, or the number of
/// the Pod's container port of that name and protocol (sidecar init
/// containers count). `None` when the Pod has no such named port.
fn target_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(number)) => Some(*number),
        Some(IntOrString::String(name)) => {
            let spec = pod.spec.as_ref()?;
            let sidecars = spec
                .init_containers
                .as_deref()
                .unwrap_or_default()
                .iter()
                .filter(|container| container.restart_policy.as_deref() == Some("Always"));
            let found = spec
                .containers
                .iter()
                .chain(sidecars)
                .find_map(|container| named_port(container, name, protocol));
            if found.is_none() {
                tracing::debug!(
                    pod = ?pod.metadata.name,
                    port = %name,
                    "pod has no container port of that name; not an endpoint for this Service port"
                );
            }
            found
        }
    }
}

fn named_port(container: &Container, name: &str, protocol: &str) -> Option<i32> {
    container
        .ports
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|port| {
            port.name.as_deref() == Some(name)
                && port.protocol.as_deref().unwrap_or("TCP") == protocol
        })
        .map(|port| port.container_port)
}

#[cfg(test)]
#[path = "pod_endpoints_tests.rs"]
mod tests;
