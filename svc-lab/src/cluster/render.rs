//! `svc-lab get`: tables as kubectl prints them (columns, order, widths,
//! AGE), and the objects as kubectl's `-o json|yaml` shows them.
use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Pod, Service},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta},
    jiff::Timestamp,
};
use serde_json::{Value, json};
use svc_agent::k8s::{namespace_of, object_key, pod_endpoints};

use super::{
    Cluster, ClusterError, allocate, pods,
    query::{self, Namespaces, Query, Selector},
    tabwriter, yaml,
};

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

/// Rows as `kubectl get` prints them; `None` when there is none (kubectl
/// then says so on stderr).
fn table(header: Vec<&str>, rows: Vec<Vec<String>>) -> Option<String> {
    if rows.is_empty() {
        return None;
    }
    let mut text = header.join("\t");
    text.push('\n');
    for row in rows {
        text.push_str(&row.join("\t"));
        text.push('\n');
    }
    Some(tabwriter::get_table(&text))
}

/// `-A` puts the namespace first.
fn with_namespace(query: &Query, meta: &ObjectMeta, mut row: Vec<String>) -> Vec<String> {
    if query.namespaces == Namespaces::All {
        row.insert(0, namespace_of(meta).to_owned());
    }
    row
}

fn header<'a>(query: &Query, columns: &[&'a str]) -> Vec<&'a str> {
    let mut header = columns.to_vec();
    if query.namespaces == Namespaces::All {
        header.insert(0, "NAMESPACE");
    }
    header
}

/// The objects a query selects, in the API server's order (namespace, then
/// name).
fn selected<'a, T: 'a>(
    objects: impl Iterator<Item = &'a T>,
    meta: impl Fn(&T) -> &ObjectMeta,
    query: &Query,
) -> Vec<&'a T> {
    let mut chosen: Vec<&T> = objects
        .filter(|object| {
            let meta = meta(object);
            query.namespaces.holds(meta)
                && query.selector.matches(meta.labels.as_ref())
                && query
                    .name
                    .as_ref()
                    .is_none_or(|name| meta.name.as_ref() == Some(name))
        })
        .collect();
    chosen.sort_by_key(|object| object_key(meta(object)));
    chosen
}

/// READY (ready/all containers) and RESTARTS of a Pod, from its container
/// statuses.
pub fn pod_readiness(pod: &Pod) -> (String, i32) {
    let containers = pod.spec.as_ref().map_or(0, |spec| spec.containers.len());
    let statuses = pod
        .status
        .as_ref()
        .and_then(|status| status.container_statuses.as_ref());
    let ready = statuses.map_or_else(
        || usize::from(pods::ready(pod)) * containers,
        |statuses| statuses.iter().filter(|s| s.ready).count(),
    );
    let restarts = statuses.map_or(0, |statuses| statuses.iter().map(|s| s.restart_count).sum());
    (format!("{ready}/{containers}"), restarts)
}

/// The STATUS column: Terminating while a deletion is under way, else the
/// phase.
fn pod_status(pod: &Pod) -> String {
    if pod.metadata.deletion_timestamp.is_some() {
        return "Terminating".into();
    }
    pod.status
        .as_ref()
        .and_then(|status| status.phase.clone())
        .unwrap_or_else(|| "Pending".into())
}

pub fn pods_table(cluster: &Cluster, query: &Query, now: Timestamp) -> Option<String> {
    let mut columns = vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"];
    if query.wide {
        columns.extend(["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]);
    }
    let pods = selected(
        cluster.pods.iter().map(|pod| &pod.object),
        |pod| &pod.metadata,
        query,
    );
    let rows = pods
        .into_iter()
        .map(|pod| {
            let (ready, restarts) = pod_readiness(pod);
            let mut row = vec![
                pod.metadata.name.clone().unwrap_or_default(),
                ready,
                pod_status(pod),
                restarts.to_string(),
                query::age(pod.metadata.creation_timestamp.as_ref(), now),
            ];
            if query.wide {
                let status = pod.status.clone().unwrap_or_default();
                let spec = pod.spec.clone().unwrap_or_default();
                row.extend([
                    status.pod_ip.unwrap_or_else(|| "<none>".into()),
                    spec.node_name.unwrap_or_else(|| "<none>".into()),
                    status
                        .nominated_node_name
                        .unwrap_or_else(|| "<none>".into()),
                    "<none>".into(),
                ]);
            }
            with_namespace(query, &pod.metadata, row)
        })
        .collect();
    table(header(query, &columns), rows)
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
    if text.is_empty() {
        "<none>".into()
    } else {
        text.join(",")
    }
}

/// EXTERNAL-IP as kubectl prints it: a LoadBalancer's ingress addresses
/// and externalIPs (`<pending>` while it has none), other types' externalIPs.
pub fn external_ips(service: &Service) -> String {
    let spec = service.spec.clone().unwrap_or_default();
    let external: Vec<String> = allocate::lb_ingress(service)
        .iter()
        .map(ToString::to_string)
        .chain(spec.external_ips.clone().unwrap_or_default())
        .collect();
    match (external.is_empty(), spec.type_.as_deref()) {
        (true, Some("LoadBalancer")) => "<pending>".into(),
        (true, _) => "<none>".into(),
        (false, _) => external.join(","),
    }
}

pub fn services_table(cluster: &Cluster, query: &Query, now: Timestamp) -> Option<String> {
    let mut columns = vec![
        "NAME",
        "TYPE",
        "CLUSTER-IP",
        "EXTERNAL-IP",
        "PORT(S)",
        "AGE",
    ];
    if query.wide {
        columns.push("SELECTOR");
    }
    let services = selected(cluster.services.iter(), |service| &service.metadata, query);
    let rows = services
        .into_iter()
        .map(|service| {
            let spec = service.spec.clone().unwrap_or_default();
            let mut row = vec![
                service.metadata.name.clone().unwrap_or_default(),
                spec.type_.clone().unwrap_or_else(|| "ClusterIP".into()),
                spec.cluster_ip.clone().unwrap_or_else(|| "<none>".into()),
                external_ips(service),
                ports_text(service),
                query::age(service.metadata.creation_timestamp.as_ref(), now),
            ];
            if query.wide {
                row.push(labels_text(spec.selector.as_ref()));
            }
            with_namespace(query, &service.metadata, row)
        })
        .collect();
    table(header(query, &columns), rows)
}

/// `k=v,k=v`, or `<none>`.
pub fn labels_text(labels: Option<&BTreeMap<String, String>>) -> String {
    let text: Vec<String> = labels
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    none_if_empty(text)
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
            // Made with the Service, as the endpoints controller does.
            creation_timestamp: service.metadata.creation_timestamp.clone(),
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

/// `IP:PORT` of the ready addresses of `endpoints` (of the port named
/// `port` only, if given) as kubectl prints them: port by port, the first
/// three, then how many more.
pub fn format_endpoints(endpoints: &Endpoints, port: Option<&str>) -> String {
    const SHOWN: usize = 3;
    let Some(subsets) = endpoints.subsets.as_ref().filter(|s| !s.is_empty()) else {
        return "<none>".into();
    };
    let mut all = Vec::new();
    for subset in subsets {
        let addresses = subset.addresses.iter().flatten();
        match subset.ports.as_ref().filter(|ports| !ports.is_empty()) {
            None => all.extend(addresses.map(|address| address.ip.clone())),
            Some(ports) => {
                for each in ports {
                    if port.is_none_or(|name| each.name.as_deref().unwrap_or_default() == name) {
                        all.extend(
                            addresses
                                .clone()
                                .map(|address| format!("{}:{}", address.ip, each.port)),
                        );
                    }
                }
            }
        }
    }
    let shown = all[..all.len().min(SHOWN)].join(",");
    if all.len() > SHOWN {
        format!("{shown} + {} more...", all.len() - SHOWN)
    } else {
        shown
    }
}

fn none_if_empty(items: Vec<String>) -> String {
    if items.is_empty() {
        "<none>".into()
    } else {
        items.join(",")
    }
}

pub fn endpoints_table(cluster: &Cluster, query: &Query, now: Timestamp) -> Option<String> {
    let services = selected(
        selecting_services(cluster),
        |service| &service.metadata,
        query,
    );
    let rows = services
        .into_iter()
        .map(|service| {
            let endpoints = endpoints(cluster, service);
            let row = vec![
                service.metadata.name.clone().unwrap_or_default(),
                format_endpoints(&endpoints, None),
                query::age(endpoints.metadata.creation_timestamp.as_ref(), now),
            ];
            with_namespace(query, &service.metadata, row)
        })
        .collect();
    table(header(query, &["NAME", "ENDPOINTS", "AGE"]), rows)
}

pub fn endpoint_slices_table(cluster: &Cluster, query: &Query, now: Timestamp) -> Option<String> {
    let services = selected(
        cluster.services.iter(),
        |service| &service.metadata,
        &Query {
            selector: Selector::default(),
            ..query.clone()
        },
    );
    let mut rows = Vec::new();
    for service in services {
        for slice in slices(cluster, service) {
            if !query.selector.matches(slice.metadata.labels.as_ref()) {
                continue;
            }
            let ports = slice.ports.iter().flatten();
            let ports = ports.filter_map(|port| port.port).map(|p| p.to_string());
            let addresses = slice.endpoints.iter().flatten();
            let addresses = addresses.flat_map(|e| e.addresses.clone());
            let row = vec![
                slice.metadata.name.clone().unwrap_or_default(),
                slice.address_type.clone(),
                none_if_empty(ports.collect()),
                none_if_empty(addresses.collect()),
                query::age(service.metadata.creation_timestamp.as_ref(), now),
            ];
            rows.push(with_namespace(query, &service.metadata, row));
        }
    }
    table(
        header(query, &["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]),
        rows,
    )
}

/// kubectl's `-o json|yaml` of a list: a `List` of the objects.
pub fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items})
}

fn values<T: serde::Serialize>(objects: Vec<&T>) -> Result<Vec<Value>, serde_json::Error> {
    objects.into_iter().map(serde_json::to_value).collect()
}

/// The Pods a query selects, as the API serves them.
pub fn pods_json(cluster: &Cluster, query: &Query) -> Result<Vec<Value>, serde_json::Error> {
    values(selected(
        cluster.pods.iter().map(|pod| &pod.object),
        |pod| &pod.metadata,
        query,
    ))
}

pub fn services_json(cluster: &Cluster, query: &Query) -> Result<Vec<Value>, serde_json::Error> {
    values(selected(cluster.services.iter(), |s| &s.metadata, query))
}

/// The v1 Endpoints of every selected Service with a selector.
pub fn endpoints_json(cluster: &Cluster, query: &Query) -> Result<Vec<Value>, serde_json::Error> {
    let services = selected(selecting_services(cluster), |s| &s.metadata, query);
    let endpoints: Vec<Endpoints> = services
        .into_iter()
        .map(|service| endpoints(cluster, service))
        .collect();
    values(endpoints.iter().collect())
}

/// The EndpointSlices of every selected Service (what the agents read).
pub fn endpoint_slices_json(
    cluster: &Cluster,
    query: &Query,
) -> Result<Vec<Value>, serde_json::Error> {
    let mut items = Vec::new();
    for service in selected(cluster.services.iter(), |s| &s.metadata, query) {
        for slice in slices(cluster, service) {
            items.push(serde_json::to_value(&slice)?);
        }
    }
    Ok(items)
}

/// How `get` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

impl Output {
    /// `-o` as given: (format, wide).
    pub fn parse(given: Option<&str>) -> Result<(Self, bool), ClusterError> {
        match given {
            None => Ok((Output::Table, false)),
            Some("wide") => Ok((Output::Table, true)),
            Some("json") => Ok((Output::Json, false)),
            Some("yaml") => Ok((Output::Yaml, false)),
            Some(other) => Err(ClusterError::Invalid {
                object: format!("-o {other}"),
                reason: "the lab prints wide, json or yaml".into(),
            }),
        }
    }
}

/// What `get` prints: the listing on stdout, kubectl's "No resources
/// found" on stderr.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    pub stdout: String,
    pub stderr: String,
}

/// The kinds `get` knows, by kubectl's names for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Pods,
    Services,
    Endpoints,
    EndpointSlices,
}

pub(super) fn kind(given: &str) -> Option<Kind> {
    match given {
        "pods" | "pod" | "po" => Some(Kind::Pods),
        "svc" | "service" | "services" => Some(Kind::Services),
        "endpoints" | "ep" => Some(Kind::Endpoints),
        "endpointslices" | "endpointslice" => Some(Kind::EndpointSlices),
        _ => None,
    }
}

/// `get KIND [NAME] [-o ...]` over `query`, at `now` (for AGE).
pub fn get(
    cluster: &Cluster,
    what: &str,
    name: Option<&str>,
    output: Output,
    query: &Query,
    now: Timestamp,
) -> Result<Listing, ClusterError> {
    let kind = kind(what).ok_or_else(|| ClusterError::Invalid {
        object: what.to_owned(),
        reason: "unknown resource type: use pods, svc, endpoints or endpointslices".into(),
    })?;
    // One object by name: the query's namespace, and its name.
    let query = &Query {
        name: name.map(str::to_owned),
        ..query.clone()
    };
    let items = match kind {
        Kind::Pods => pods_json(cluster, query),
        Kind::Services => services_json(cluster, query),
        Kind::Endpoints => endpoints_json(cluster, query),
        Kind::EndpointSlices => endpoint_slices_json(cluster, query),
    }
    .map_err(|error| ClusterError::Invalid {
        object: what.to_owned(),
        reason: error.to_string(),
    })?;
    if let Some(name) = name
        && items.is_empty()
    {
        return Err(ClusterError::NotFound {
            kind: what.to_owned(),
            name: name.to_owned(),
        });
    }
    let document = match (name, items.len()) {
        (Some(_), 1) => items.into_iter().next().unwrap_or_default(),
        _ => list(items),
    };
    let stdout = match output {
        Output::Json => serde_json::to_string_pretty(&document).unwrap_or_default() + "\n",
        Output::Yaml => yaml::to_yaml(&document),
        Output::Table => {
            let table = match kind {
                Kind::Pods => pods_table(cluster, query, now),
                Kind::Services => services_table(cluster, query, now),
                Kind::Endpoints => endpoints_table(cluster, query, now),
                Kind::EndpointSlices => endpoint_slices_table(cluster, query, now),
            };
            match table {
                Some(table) => table,
                None => {
                    return Ok(Listing {
                        stdout: String::new(),
                        stderr: query.namespaces.nothing_found() + "\n",
                    });
                }
            }
        }
    };
    Ok(Listing {
        stdout,
        stderr: String::new(),
    })
}
