//! `svc-lab get`: tables as kubectl prints them, and kubectl's JSON (a
//! `List` with the objects, status filled in).
use std::fmt::Write as _;

use k8s_openapi::{
    api::{
        core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Service},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta},
};
use serde_json::{Value, json};
use svc_agent::k8s::pod_endpoints;

use super::{Cluster, allocate, pods};

/// `app=nginx,tier=web` (a Deployment's matchLabels).
pub fn selector_text(selector: Option<&LabelSelector>) -> String {
    let labels = selector.and_then(|selector| selector.match_labels.as_ref());
    let text: Vec<String> = labels
        .into_iter()
        .flatten()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    if text.is_empty() {
        "{}".into()
    } else {
        text.join(",")
    }
}

fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|row| row[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<width$}   ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub fn pods_table(cluster: &Cluster, wide: bool) -> String {
    let mut rows = vec![vec!["NAME".into(), "READY".into(), "STATUS".into()]];
    if wide {
        rows[0].extend(["IP".into(), "NODE".into(), "LABELS".into()]);
    }
    for pod in &cluster.pods {
        let ready = if pods::ready(&pod.object) {
            "1/1"
        } else {
            "0/1"
        };
        let mut row = vec![
            pod.object.metadata.name.clone().unwrap_or_default(),
            ready.into(),
            "Running".into(),
        ];
        if wide {
            let ip = pod
                .object
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .unwrap_or_default();
            let labels: Vec<String> = pod
                .object
                .metadata
                .labels
                .iter()
                .flatten()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            row.extend([ip, pod.node.clone(), labels.join(",")]);
        }
        rows.push(row);
    }
    table(&rows)
}

fn ports_text(service: &Service) -> String {
    let ports = service.spec.as_ref().and_then(|spec| spec.ports.as_ref());
    let text: Vec<String> = ports
        .into_iter()
        .flatten()
        .map(|port| {
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            match port.node_port {
                Some(node_port) => format!("{}:{node_port}/{protocol}", port.port),
                None => format!("{}/{protocol}", port.port),
            }
        })
        .collect();
    text.join(",")
}

pub fn services_table(cluster: &Cluster, wide: bool) -> String {
    let mut rows = vec![vec![
        "NAME".into(),
        "TYPE".into(),
        "CLUSTER-IP".into(),
        "EXTERNAL-IP".into(),
        "PORT(S)".into(),
    ]];
    if wide {
        rows[0].push("SELECTOR".into());
    }
    for service in &cluster.services {
        let spec = service.spec.clone().unwrap_or_default();
        let external: Vec<String> = allocate::lb_ingress(service)
            .iter()
            .map(ToString::to_string)
            .chain(spec.external_ips.clone().unwrap_or_default())
            .collect();
        let external = match (external.is_empty(), spec.type_.as_deref()) {
            (true, Some("LoadBalancer")) => "<pending>".into(),
            (true, _) => "<none>".into(),
            (false, _) => external.join(","),
        };
        let mut row = vec![
            service.metadata.name.clone().unwrap_or_default(),
            spec.type_.clone().unwrap_or_else(|| "ClusterIP".into()),
            spec.cluster_ip.clone().unwrap_or_else(|| "<none>".into()),
            external,
            ports_text(service),
        ];
        if wide {
            let selector: Vec<String> = spec
                .selector
                .iter()
                .flatten()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            row.push(if selector.is_empty() {
                "<none>".into()
            } else {
                selector.join(",")
            });
        }
        rows.push(row);
    }
    table(&rows)
}

/// The EndpointSlices the EndpointSlice controller would make now.
pub fn slices(cluster: &Cluster, service: &Service) -> Vec<EndpointSlice> {
    let snapshot = cluster.snapshot();
    pod_endpoints::slices_from_pods(service, &snapshot.pods, &snapshot.nodes)
}

/// The v1 Endpoints object the endpoints controller would make for
/// `service`: one subset per set of ports, ready addresses in `addresses`,
/// the others in `notReadyAddresses`, each sorted by IP as the controller
/// sorts them; no subsets while nothing matches.
pub fn endpoints(cluster: &Cluster, service: &Service) -> Endpoints {
    let subsets: Vec<EndpointSubset> = slices(cluster, service)
        .into_iter()
        .map(|slice| {
            let mut ready = Vec::new();
            let mut not_ready = Vec::new();
            for endpoint in slice.endpoints.into_iter().flatten() {
                let is_ready = endpoint
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(true);
                let addresses = endpoint.addresses.iter().map(|ip| EndpointAddress {
                    ip: ip.clone(),
                    hostname: endpoint.hostname.clone(),
                    node_name: endpoint.node_name.clone(),
                    target_ref: endpoint.target_ref.clone(),
                });
                if is_ready {
                    ready.extend(addresses);
                } else {
                    not_ready.extend(addresses);
                }
            }
            ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            let ports = slice
                .ports
                .into_iter()
                .flatten()
                .map(|port| EndpointPort {
                    // Unnamed ports have no name in Endpoints.
                    name: port.name.filter(|name| !name.is_empty()),
                    port: port.port.unwrap_or_default(),
                    protocol: port.protocol,
                    app_protocol: port.app_protocol,
                })
                .collect();
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: Some(ports),
            }
        })
        .collect();
    Endpoints {
        metadata: ObjectMeta {
            name: service.metadata.name.clone(),
            namespace: service.metadata.namespace.clone(),
            labels: service.metadata.labels.clone(),
            ..ObjectMeta::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    }
}

/// The Services the endpoints controller keeps an Endpoints object for:
/// those with a selector, except ExternalName ones.
fn selecting_services(cluster: &Cluster) -> impl Iterator<Item = &Service> {
    cluster.services.iter().filter(|service| {
        service.spec.as_ref().is_some_and(|spec| {
            spec.selector.as_ref().is_some_and(|s| !s.is_empty())
                && spec.type_.as_deref() != Some("ExternalName")
        })
    })
}

/// `IP:PORT` of every ready address of `endpoints`, as kubectl's
/// ENDPOINTS column shows them.
fn ready_addresses(endpoints: &Endpoints) -> Vec<String> {
    let mut out = Vec::new();
    for subset in endpoints.subsets.iter().flatten() {
        for address in subset.addresses.iter().flatten() {
            for port in subset.ports.iter().flatten() {
                out.push(format!("{}:{}", address.ip, port.port));
            }
        }
    }
    out
}

fn none_if_empty(items: Vec<String>) -> String {
    if items.is_empty() {
        "<none>".into()
    } else {
        items.join(",")
    }
}

pub fn endpoints_table(cluster: &Cluster) -> String {
    let mut rows = vec![vec!["NAME".into(), "ENDPOINTS".into()]];
    for service in selecting_services(cluster) {
        let endpoints = endpoints(cluster, service);
        rows.push(vec![
            service.metadata.name.clone().unwrap_or_default(),
            none_if_empty(ready_addresses(&endpoints)),
        ]);
    }
    table(&rows)
}

pub fn endpoint_slices_table(cluster: &Cluster) -> String {
    let mut rows = vec![vec![
        "NAME".into(),
        "ADDRESSTYPE".into(),
        "PORTS".into(),
        "ENDPOINTS".into(),
    ]];
    for service in &cluster.services {
        for slice in slices(cluster, service) {
            let ports = slice.ports.iter().flatten();
            let ports = ports.filter_map(|port| port.port).map(|p| p.to_string());
            let addresses = slice.endpoints.iter().flatten();
            let addresses = addresses.flat_map(|e| e.addresses.clone());
            rows.push(vec![
                slice.metadata.name.clone().unwrap_or_default(),
                slice.address_type.clone(),
                none_if_empty(ports.collect()),
                none_if_empty(addresses.collect()),
            ]);
        }
    }
    table(&rows)
}

fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items})
}

pub fn pods_json(cluster: &Cluster) -> Result<Value, serde_json::Error> {
    let items = cluster
        .pods
        .iter()
        .map(|pod| serde_json::to_value(&pod.object))
        .collect::<Result<_, _>>()?;
    Ok(list(items))
}

pub fn services_json(cluster: &Cluster) -> Result<Value, serde_json::Error> {
    let items = cluster
        .services
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()?;
    Ok(list(items))
}

/// The v1 Endpoints of every Service with a selector, as `kubectl get
/// endpoints -o json` prints them.
pub fn endpoints_json(cluster: &Cluster) -> Result<Value, serde_json::Error> {
    let items = selecting_services(cluster)
        .map(|service| serde_json::to_value(endpoints(cluster, service)))
        .collect::<Result<_, _>>()?;
    Ok(list(items))
}

/// The EndpointSlices of every Service (what the agents read).
pub fn endpoint_slices_json(cluster: &Cluster) -> Result<Value, serde_json::Error> {
    let mut items = Vec::new();
    for service in &cluster.services {
        for slice in slices(cluster, service) {
            items.push(serde_json::to_value(&slice)?);
        }
    }
    Ok(list(items))
}
