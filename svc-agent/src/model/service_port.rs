//! What kube-proxy reads from a Service, for one address family
//! (pkg/proxy/serviceport.go, servicechangetracker.go, pkg/api/v1/service).
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;

use super::snapshot::{LABEL_SERVICE_PROXY_NAME, object_key};
use super::{Cidr, IpFamily, LbAlgorithm, Protocol, topology::TrafficPolicy};

/// sessionAffinityConfig.clientIP.timeoutSeconds when the Service leaves it
/// out (the API server's default: three hours).
pub(crate) const DEFAULT_AFFINITY_TIMEOUT_SECONDS: u32 = 10_800;

/// Annotations asking for topology-aware routing; the deprecated one wins
/// when both are set, as upstream.
const ANNOTATION_TOPOLOGY_AWARE_HINTS: &str = "service.kubernetes.io/topology-aware-hints";
const ANNOTATION_TOPOLOGY_MODE: &str = "service.kubernetes.io/topology-mode";

/// The Service's own backend selection, over the node's `--lb-algorithm`:
/// `random` or `maglev` (any other value is ignored).
pub const ANNOTATION_LB_ALGORITHM: &str = "svc-lb.io/lb-algorithm";

/// A Service kube-proxy programs, reduced to what the rules need, as the
/// proxier of one family sees it: every address below is of that family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServiceInfo {
    /// `NAMESPACE/NAME`.
    pub key: String,
    pub family: IpFamily,
    pub cluster_ip: IpAddr,
    pub external_ips: Vec<IpAddr>,
    /// status.loadBalancer.ingress IPs in VIP mode (not `ipMode: Proxy`).
    pub load_balancer_vips: Vec<IpAddr>,
    /// loadBalancerSourceRanges of the family. As kube-proxy, a Service
    /// whose ranges are all of the other family is open on this one.
    pub source_ranges: Vec<Cidr>,
    pub affinity_timeout_seconds: Option<u32>,
    pub internal_local: bool,
    pub external_local: bool,
    pub health_check_node_port: Option<u16>,
    /// The Service asks for topology-aware routing (annotation or
    /// spec.trafficDistribution): hints on its endpoints may be honoured.
    pub topology_requested: bool,
    /// The [`ANNOTATION_LB_ALGORITHM`] annotation, when it names one.
    pub lb_algorithm: Option<LbAlgorithm>,
    pub ports: Vec<ServicePortInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServicePortInfo {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
    pub node_port: Option<u16>,
}

impl ServiceInfo {
    /// The Service as kube-proxy's proxier of `family` sees it, or `None`
    /// when it programs nothing for it: headless (clusterIP None or
    /// unset), ExternalName, labelled for another proxy, or without a
    /// cluster IP of the family.
    pub(crate) fn for_family(service: &Service, family: IpFamily) -> Option<Self> {
        let spec = service.spec.as_ref()?;
        let labels = service.metadata.labels.as_ref();
        if labels.is_some_and(|labels| labels.contains_key(LABEL_SERVICE_PROXY_NAME)) {
            return None;
        }
        let service_type = spec.type_.as_deref().unwrap_or("ClusterIP");
        let cluster_ip_set = spec
            .cluster_ip
            .as_deref()
            .is_some_and(|ip| !ip.is_empty() && ip != "None");
        if !cluster_ip_set || service_type == "ExternalName" {
            return None;
        }
        let cluster_ip = cluster_ip(service, family)?;

        let external_ips = family.parse_all(spec.external_ips.as_deref().unwrap_or_default());
        let externally_accessible = matches!(service_type, "LoadBalancer" | "NodePort")
            || (service_type == "ClusterIP"
                && !spec.external_ips.as_deref().unwrap_or_default().is_empty());
        let external_local =
            externally_accessible && spec.external_traffic_policy.as_deref() == Some("Local");
        let health_check_node_port = (service_type == "LoadBalancer" && external_local)
            .then(|| spec.health_check_node_port.and_then(port_number))
            .flatten();

        let affinity_timeout_seconds =
            (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
                spec.session_affinity_config
                    .as_ref()
                    .and_then(|config| config.client_ip.as_ref())
                    .and_then(|client_ip| client_ip.timeout_seconds)
                    .and_then(|seconds| u32::try_from(seconds).ok())
                    .filter(|seconds| *seconds > 0)
                    .unwrap_or(DEFAULT_AFFINITY_TIMEOUT_SECONDS)
            });

        Some(Self {
            key: object_key(&service.metadata),
            family,
            cluster_ip,
            external_ips,
            load_balancer_vips: load_balancer_vips(service, family),
            source_ranges: source_ranges(spec.load_balancer_source_ranges.as_deref(), family),
            affinity_timeout_seconds,
            internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
            external_local,
            health_check_node_port,
            topology_requested: topology_requested(service),
            lb_algorithm: service
                .metadata
                .annotations
                .as_ref()
                .and_then(|annotations| annotations.get(ANNOTATION_LB_ALGORITHM))
                .and_then(|name| LbAlgorithm::from_name(name.trim())),
            ports: spec
                .ports
                .as_deref()
                .unwrap_or_default()
                .iter()
                .filter_map(|port| {
                    Some(ServicePortInfo {
                        name: port.name.clone().unwrap_or_default(),
                        port: port_number(port.port)?,
                        protocol: Protocol::from_api(port.protocol.as_deref())?,
                        node_port: port.node_port.and_then(port_number),
                    })
                })
                .collect(),
        })
    }

    /// The traffic policies that apply to `port` of this Service.
    pub(crate) fn traffic_policy(&self, port: &ServicePortInfo) -> TrafficPolicy {
        TrafficPolicy {
            internal_local: self.internal_local,
            external_local: self.external_local,
            externally_accessible: port.node_port.is_some()
                || !self.load_balancer_vips.is_empty()
                || !self.external_ips.is_empty(),
            topology_requested: self.topology_requested,
        }
    }
}

/// The Service's cluster IP of `family` (kube-proxy's
/// GetClusterIPByFamily): spec.clusterIPs pairs with spec.ipFamilies, one
/// per family. An object written before dual-stack has neither field
/// filled, and its spec.clusterIP counts if it is of the family.
fn cluster_ip(service: &Service, family: IpFamily) -> Option<IpAddr> {
    let spec = service.spec.as_ref()?;
    let families = spec.ip_families.as_deref().unwrap_or_default();
    let cluster_ips = spec.cluster_ips.as_deref().unwrap_or_default();
    if !families.is_empty() {
        let index = families.iter().position(|name| name == family.api_name())?;
        return family.parse(cluster_ips.get(index)?);
    }
    if !cluster_ips.is_empty() {
        return family.parse_all(cluster_ips).into_iter().next();
    }
    family.parse(spec.cluster_ip.as_deref()?)
}

fn load_balancer_vips(service: &Service, family: IpFamily) -> Vec<IpAddr> {
    let ingress = service
        .status
        .as_ref()
        .and_then(|status| status.load_balancer.as_ref())
        .and_then(|load_balancer| load_balancer.ingress.as_deref())
        .unwrap_or_default();
    let vips: Vec<String> = ingress
        .iter()
        // `ipMode: Proxy`: the load balancer proxies to the nodes itself;
        // its address must not be captured on the node.
        .filter(|ingress| ingress.ip_mode.as_deref().is_none_or(|mode| mode == "VIP"))
        .filter_map(|ingress| ingress.ip.clone())
        .collect();
    family.parse_all(&vips)
}

/// loadBalancerSourceRanges of `family`, trimmed (validation lets padding
/// through).
fn source_ranges(ranges: Option<&[String]>, family: IpFamily) -> Vec<Cidr> {
    ranges
        .unwrap_or_default()
        .iter()
        .filter_map(|range| range.trim().parse::<Cidr>().ok())
        .filter(|cidr| cidr.family() == family)
        .collect()
}

/// Whether hints on the Service's endpoints may be honoured: it sets
/// spec.trafficDistribution, or a topology annotation to anything but
/// empty or disabled (kube-proxy 1.30's rule).
fn topology_requested(service: &Service) -> bool {
    let distribution = service
        .spec
        .as_ref()
        .and_then(|spec| spec.traffic_distribution.as_deref())
        .is_some_and(|distribution| !distribution.is_empty());
    let annotations = service.metadata.annotations.as_ref();
    let annotation = annotations.and_then(|annotations| {
        annotations
            .get(ANNOTATION_TOPOLOGY_AWARE_HINTS)
            .or_else(|| annotations.get(ANNOTATION_TOPOLOGY_MODE))
    });
    let annotated =
        annotation.is_some_and(|value| !matches!(value.as_str(), "" | "disabled" | "Disabled"));
    distribution || annotated
}

/// A port number from the API (1..=65535); `None` for 0 or out of range.
fn port_number(number: i32) -> Option<u16> {
    u16::try_from(number).ok().filter(|port| *port != 0)
}
