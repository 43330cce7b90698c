//! `svc-lab get`: tables as kubectl prints them, and kubectl's JSON (a
//! `List` with the objects, status filled in).
use std::fmt::Write as _;

use k8s_openapi::{
    api::{core::v1::Service, discovery::v1::EndpointSlice},
    apimachinery::pkg::apis::meta::v1::LabelSelector,
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

/// `IP:PORT` of every ready endpoint of `service`.
pub fn ready_endpoints(cluster: &Cluster, service: &Service) -> Vec<String> {
    let mut out = Vec::new();
    for slice in slices(cluster, service) {
        let ports: Vec<i32> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|port| port.port)
            .collect();
        for endpoint in slice.endpoints.iter().flatten() {
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            if !ready {
                continue;
            }
            for address in &endpoint.addresses {
                for port in &ports {
                    out.push(format!("{address}:{port}"));
                }
            }
        }
    }
    out
}

pub fn endpoints_table(cluster: &Cluster) -> String {
    let mut rows = vec![vec!["NAME".into(), "ENDPOINTS".into()]];
    for service in &cluster.services {
        let endpoints = ready_endpoints(cluster, service);
        rows.push(vec![
            service.metadata.name.clone().unwrap_or_default(),
            if endpoints.is_empty() {
                "<none>".into()
            } else {
                endpoints.join(",")
            },
        ]);
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

/// The EndpointSlices of every Service (the v1 Endpoints API is
/// deprecated; its successor is what the agents read).
pub fn endpoints_json(cluster: &Cluster) -> Result<Value, serde_json::Error> {
    let mut items = Vec::new();
    for service in &cluster.services {
        for slice in slices(cluster, service) {
            items.push(serde_json::to_value(&slice)?);
        }
    }
    Ok(list(items))
}
