//! A Service as the API server stores it: ClusterIP, NodePorts and the load
//! balancer's ingress IP filled in.
use std::net::Ipv4Addr;

use k8s_openapi::{
    api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Service, ServiceSpec, ServiceStatus},
    apimachinery::pkg::util::intstr::IntOrString,
};
use svc_agent::k8s::{namespace_of, object_key};

use super::{
    ClusterError,
    allocate::{self, Taken},
};

/// The API server's defaults for what a manifest leaves out: TCP, the
/// target port equal to the port, no session affinity, Cluster traffic
/// policies, one IPv4 family.
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

/// spec.ipFamilies as the API server of a single-stack IPv4 cluster sets
/// them (the lab's Service range is IPv4 only): IPv4, also for
/// PreferDualStack; IPv6 or RequireDualStack are refused, as that API
/// server refuses them.
fn ip_families(spec: &mut ServiceSpec) -> Result<(), String> {
    let asked = spec.ip_families.clone().unwrap_or_default();
    if let Some(family) = asked.iter().find(|family| *family != "IPv4") {
        return Err(format!(
            "spec.ipFamilies: {family} is not configured in the lab (its Service range is IPv4 only)"
        ));
    }
    match spec.ip_family_policy.as_deref() {
        Some("RequireDualStack") => Err(
            "spec.ipFamilyPolicy: RequireDualStack needs a dual-stack cluster; the lab's Service range is IPv4 only"
                .into(),
        ),
        _ => {
            spec.ip_families = Some(vec!["IPv4".into()]);
            Ok(())
        }
    }
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
    ip_families(&mut spec).map_err(invalid)?;

    // ClusterIP: "None" (headless) stays; else the manifest's, the
    // previous one, or a new one.
    let headless = spec.cluster_ip.as_deref() == Some("None");
    if !headless {
        let asked: Option<Ipv4Addr> = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok());
        let kept = previous_spec
            .and_then(|p| p.cluster_ip.as_deref())
            .and_then(|ip| ip.parse().ok());
        let address = match asked {
            Some(ip) if !allocate::in_service_range(ip) => {
                return Err(invalid(format!(
                    "spec.clusterIP {ip} is outside the lab's Service range 198.19.0.0/16"
                )));
            }
            Some(ip) if taken.cluster_ips.contains(&ip) => {
                return Err(invalid(format!("spec.clusterIP {ip} is already allocated")));
            }
            Some(ip) => ip,
            None => match kept {
                Some(ip) => ip,
                None => taken.cluster_ip(&key)?,
            },
        };
        taken.cluster_ips.insert(address);
        spec.cluster_ip = Some(address.to_string());
        spec.cluster_ips = Some(vec![address.to_string()]);
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
    if type_ == "LoadBalancer" {
        let wanted = allocate::lb_ingress(&service)
            .into_iter()
            .chain(previous.map(allocate::lb_ingress).unwrap_or_default())
            .find(|ip| allocate::in_lb_pool(*ip) && !taken.lb_ips.contains(ip));
        let address = match wanted {
            Some(ip) => ip,
            None => taken.lb_ip(&key)?,
        };
        service.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![LoadBalancerIngress {
                    ip: Some(address.to_string()),
                    ip_mode: Some("VIP".into()),
                    ..LoadBalancerIngress::default()
                }]),
            }),
            ..ServiceStatus::default()
        });
    } else {
        service.status = None;
    }
    Ok(service)
}
