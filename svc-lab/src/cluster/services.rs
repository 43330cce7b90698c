//! A Service as the API server stores it: ClusterIP, NodePorts and the load
//! balancer's ingress IP filled in.
use std::net::IpAddr;

use k8s_openapi::{
    api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Service, ServiceSpec, ServiceStatus},
    apimachinery::pkg::util::intstr::IntOrString,
};
use svc_agent::{
    k8s::{namespace_of, object_key},
    model::IpFamily,
};

use super::{
    ClusterError,
    allocate::{self, Taken},
};

/// The API server's defaults for what a manifest leaves out: TCP, the
/// target port equal to the port, no session affinity, Cluster traffic
/// policies, SingleStack (the families: `ip_families`).
fn api_defaults(spec: &mut ServiceSpec, type_: &str) {
    spec.type_.get_or_insert_with(|| type_.to_owned());
    spec.session_affinity.get_or_insert_with(|| "None".into());
    spec.internal_traffic_policy
        .get_or_insert_with(|| "Cluster".into());
    if matches!(type_, "NodePort" | "LoadBalancer") {
        spec.external_traffic_policy
            .get_or_insert_with(|| "Cluster".into());
    }
    spec.ip_family_policy
        .get_or_insert_with(|| "SingleStack".into());
    for port in spec.ports.iter_mut().flatten() {
        port.protocol.get_or_insert_with(|| "TCP".into());
        port.target_port.get_or_insert(IntOrString::Int(port.port));
    }
}

/// spec.ipFamilies as the API server of a dual-stack cluster (IPv4
/// first) sets them: SingleStack takes the family asked for (by
/// ipFamilies, else by the clusterIP asked for, else IPv4);
/// PreferDualStack and RequireDualStack take both, the one asked for
/// first.
fn ip_families(spec: &ServiceSpec) -> Result<Vec<IpFamily>, String> {
    let mut asked = Vec::new();
    for name in spec.ip_families.iter().flatten() {
        let family = IpFamily::from_api_name(name)
            .ok_or_else(|| format!("spec.ipFamilies: {name:?} is neither IPv4 nor IPv6"))?;
        if asked.contains(&family) {
            return Err(format!("spec.ipFamilies: {name} is given twice"));
        }
        asked.push(family);
    }
    let primary = asked
        .first()
        .copied()
        .or(asked_cluster_ips(spec).next().map(IpFamily::of))
        .unwrap_or(IpFamily::IPv4);
    match spec.ip_family_policy.as_deref() {
        Some("PreferDualStack" | "RequireDualStack") => Ok(vec![primary, primary.other()]),
        _ if asked.len() > 1 => Err(
            "spec.ipFamilies: two families need ipFamilyPolicy PreferDualStack or RequireDualStack"
                .into(),
        ),
        _ => Ok(vec![primary]),
    }
}

/// The ClusterIPs asked for: clusterIPs, then clusterIP.
fn asked_cluster_ips(spec: &ServiceSpec) -> impl Iterator<Item = IpAddr> + '_ {
    spec.cluster_ips
        .iter()
        .flatten()
        .chain(&spec.cluster_ip)
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
}

/// The ClusterIP asked for in `family`.
fn asked_cluster_ip(spec: &ServiceSpec, family: IpFamily) -> Option<IpAddr> {
    asked_cluster_ips(spec).find(|ip| family.holds(*ip))
}

/// `service` with its addresses: kept from `previous` (the same Service
/// applied before) or from the manifest when they fit the lab's ranges,
/// else handed out from what `taken` leaves free.
pub fn allocate(
    service: &Service,
    previous: Option<&Service>,
    mut taken: Taken,
) -> Result<Service, ClusterError> {
    let key = object_key(&service.metadata);
    let invalid = |reason: String| ClusterError::Invalid {
        object: format!("service/{key}"),
        reason,
    };
    let mut service = service.clone();
    service.metadata.namespace = Some(namespace_of(&service.metadata).to_owned());
    let mut spec = service.spec.take().unwrap_or_default();
    let type_ = spec.type_.clone().unwrap_or_else(|| "ClusterIP".into());
    if type_ == "ExternalName" {
        service.spec = Some(spec);
        return Ok(service);
    }
    let previous_spec = previous.and_then(|p| p.spec.as_ref());
    api_defaults(&mut spec, &type_);
    let families = ip_families(&spec).map_err(invalid)?;
    spec.ip_families = Some(
        families
            .iter()
            .map(|family| family.api_name().to_owned())
            .collect(),
    );

    // ClusterIPs, one per family: "None" (headless) stays; else the
    // manifest's, the previous one, or a new one.
    let headless = spec.cluster_ip.as_deref() == Some("None");
    if !headless {
        let mut addresses = Vec::new();
        for family in &families {
            let kept = previous_spec.and_then(|p| asked_cluster_ip(p, *family));
            let address = match asked_cluster_ip(&spec, *family) {
                Some(ip) if !allocate::in_service_range(ip) => {
                    return Err(invalid(format!(
                        "spec.clusterIPs: {ip} is outside the lab's Service ranges \
                         198.19.0.0/16 and fd00:198:19::/112"
                    )));
                }
                Some(ip) if taken.cluster_ips.contains(&ip) => {
                    return Err(invalid(format!(
                        "spec.clusterIPs: {ip} is already allocated"
                    )));
                }
                Some(ip) => ip,
                None => match kept {
                    Some(ip) => ip,
                    None => taken.cluster_ip(&key, *family)?,
                },
            };
            taken.cluster_ips.insert(address);
            addresses.push(address.to_string());
        }
        spec.cluster_ip = addresses.first().cloned();
        spec.cluster_ips = Some(addresses);
    }

    // NodePorts for NodePort and LoadBalancer Services.
    if matches!(type_.as_str(), "NodePort" | "LoadBalancer") {
        for (index, port) in spec.ports.iter_mut().flatten().enumerate() {
            let kept = previous_spec
                .and_then(|p| p.ports.as_ref())
                .and_then(|ports| {
                    ports
                        .iter()
                        .find(|p| p.name == port.name && p.port == port.port)
                })
                .and_then(|p| p.node_port);
            let node_port = match port.node_port {
                Some(asked)
                    if !(allocate::NODE_PORTS.0..=allocate::NODE_PORTS.1).contains(&asked) =>
                {
                    return Err(invalid(format!(
                        "spec.ports[{index}].nodePort {asked} is outside 30000-32767"
                    )));
                }
                Some(asked) if taken.node_ports.contains(&asked) => {
                    return Err(invalid(format!(
                        "spec.ports[{index}].nodePort {asked} is already allocated"
                    )));
                }
                Some(asked) => asked,
                None => match kept {
                    Some(kept) => kept,
                    None => taken.node_port(&key)?,
                },
            };
            taken.node_ports.insert(node_port);
            port.node_port = Some(node_port);
        }
    }
    service.spec = Some(spec);

    // The lab's load balancer: an ingress IP from its pool. A manifest's
    // address outside the pool would not be routed to the nodes, so it is
    // replaced, as a cloud provider overwrites status.
    // One address per family of the Service.
    if type_ == "LoadBalancer" {
        let mut ingress = Vec::new();
        for family in &families {
            let wanted = allocate::lb_ingress(&service)
                .into_iter()
                .chain(previous.map(allocate::lb_ingress).unwrap_or_default())
                .find(|ip| {
                    family.holds(*ip) && allocate::in_lb_pool(*ip) && !taken.lb_ips.contains(ip)
                });
            let address = match wanted {
                Some(ip) => ip,
                None => taken.lb_ip(&key, *family)?,
            };
            taken.lb_ips.insert(address);
            ingress.push(LoadBalancerIngress {
                ip: Some(address.to_string()),
                ip_mode: Some("VIP".into()),
                ..LoadBalancerIngress::default()
            });
        }
        service.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(ingress),
            }),
            ..ServiceStatus::default()
        });
    } else {
        service.status = None;
    }
    Ok(service)
}
