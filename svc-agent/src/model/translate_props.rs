//! Properties of translation over generated clusters. The pools of
//! addresses and ports are small, so Services claim each other's addresses
//! and endpoints stand in several slices; the objects are the shapes the
//! API server accepts (a nodePort only on NodePort and LoadBalancer
//! Services, ingress only on LoadBalancer ones, unique port names per
//! slice), with conditions, address types and protocols of every kind.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
};

use k8s_openapi::{
    api::{
        core::v1::{
            ClientIPConfig, LoadBalancerIngress, LoadBalancerStatus, Service, ServicePort,
            ServiceSpec, ServiceStatus, SessionAffinityConfig,
        },
        discovery::v1::{
            Endpoint, EndpointConditions, EndpointHints, EndpointPort, EndpointSlice, ForZone,
        },
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use proptest::{prelude::*, sample::Index};

use super::{frontend_order, service_frontends};
use crate::model::endpoints::endpoints_of_port;
use crate::{
    FastSet,
    model::{
        BackendState, Config, Frontend, FrontendKind, IpFamily, LABEL_SERVICE_NAME, LeftOut,
        LeftOutReason, NodeContext, NodePortAddress, ObjectName, OnEmpty, Protocol, Snapshot,
        Translator, namespace_of, object_key, service_name, slice_name,
    },
};

const NODE: &str = "node-1";

/// ClusterIPs, externalIPs, LoadBalancer ingress and node addresses all
/// come from these four, so they meet.
fn frontend_address() -> impl Strategy<Value = Ipv4Addr> {
    (1u8..=4).prop_map(|last| Ipv4Addr::new(198, 19, 0, last))
}

fn frontend_addresses(most: usize) -> impl Strategy<Value = Vec<Ipv4Addr>> {
    prop::collection::btree_set(frontend_address(), 0..=most)
        .prop_map(|set| set.into_iter().collect())
}

/// One Service port: its number, protocol and NodePort. Service ports and
/// NodePorts share numbers, so a NodePort on a node address can meet a
/// ClusterIP or an externalIP.
#[derive(Clone, Debug)]
struct PortSpec {
    port: i32,
    protocol: &'static str,
    node_port: Option<i32>,
}

prop_compose! {
    fn service_spec()(
        type_ in prop::sample::select(&["ClusterIP", "NodePort", "LoadBalancer"][..]),
        namespace in prop::sample::select(&["a", "z"][..]),
        name in prop::sample::select(&["a", "m", "z"][..]),
        cluster_ip in frontend_address(),
        external_ips in frontend_addresses(2),
        ingress in prop::collection::vec(
            (frontend_address(), prop::sample::select(&[None, Some("VIP"), Some("Proxy")][..])),
            0..=2,
        ),
        // Unique (port, protocol), as the API requires.
        ports in prop::collection::btree_map(
            (prop::sample::select(&[80, 443][..]),
             prop::sample::select(&["TCP", "UDP", "SCTP"][..])),
            prop::option::of(prop::sample::select(&[80, 30080][..])),
            1..=3,
        ),
        unnamed in any::<bool>(),
        affinity in prop::option::of(prop::option::of(-1i32..=3)),
        external_local in any::<bool>(),
        internal_local in any::<bool>(),
        source_ranges in prop::collection::vec(
            prop::sample::select(&["198.18.0.0/16", "10.0.0.0/8", "fd00::/8", " 198.18.1.1/32 "][..]),
            0..=2,
        ),
        health_check_node_port in prop::option::of(prop::sample::select(&[0, 30999][..])),
    ) -> Service {
        let external = type_ != "ClusterIP";
        let ports: Vec<PortSpec> = ports
            .into_iter()
            .map(|((port, protocol), node_port)| PortSpec {
                port,
                protocol,
                node_port: node_port.filter(|_| external),
            })
            .collect();
        let named = ports.len() > 1 || !unnamed;
        let load_balancer = type_ == "LoadBalancer";
        Service {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                type_: Some(type_.to_owned()),
                cluster_ip: Some(cluster_ip.to_string()),
                cluster_ips: Some(vec![cluster_ip.to_string()]),
                external_ips: Some(external_ips.iter().map(ToString::to_string).collect()),
                ports: Some(
                    ports
                        .iter()
                        .enumerate()
                        .map(|(index, spec)| ServicePort {
                            name: named.then(|| format!("p{index}")),
                            port: spec.port,
                            protocol: Some(spec.protocol.to_owned()),
                            node_port: spec.node_port,
                            ..ServicePort::default()
                        })
                        .collect(),
                ),
                session_affinity: Some(
                    if affinity.is_some() { "ClientIP" } else { "None" }.to_owned(),
                ),
                session_affinity_config: affinity.flatten().map(|seconds| SessionAffinityConfig {
                    client_ip: Some(ClientIPConfig {
                        timeout_seconds: Some(seconds),
                    }),
                }),
                external_traffic_policy: (external || !external_ips.is_empty())
                    .then(|| policy(external_local)),
                internal_traffic_policy: Some(policy(internal_local)),
                load_balancer_source_ranges: load_balancer
                    .then(|| source_ranges.iter().map(|range| (*range).to_owned()).collect()),
                health_check_node_port: health_check_node_port
                    .filter(|_| load_balancer && external_local),
                ..ServiceSpec::default()
            }),
            status: load_balancer.then(|| ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(
                        ingress
                            .iter()
                            .map(|(ip, mode)| LoadBalancerIngress {
                                ip: Some(ip.to_string()),
                                ip_mode: mode.map(str::to_owned),
                                ..LoadBalancerIngress::default()
                            })
                            .collect(),
                    ),
                }),
                ..ServiceStatus::default()
            }),
        }
    }
}

fn policy(local: bool) -> String {
    if local { "Local" } else { "Cluster" }.to_owned()
}

/// Backend addresses (four IPv4 ones, so slices repeat them), an IPv6 one
/// and none.
fn endpoint_addresses() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        8 => (1u8..=4).prop_map(|last| vec![Ipv4Addr::new(198, 18, 1, last).to_string()]),
        1 => Just(vec!["fd00::1".to_owned()]),
        1 => Just(Vec::new()),
    ]
}

/// Endpoint conditions: the combinations the API writes (ready; serving
/// while terminating; terminating; not ready), and any at all.
fn conditions() -> impl Strategy<Value = EndpointConditions> {
    let written = |ready, serving, terminating| EndpointConditions {
        ready: Some(ready),
        serving: Some(serving),
        terminating: Some(terminating),
    };
    let flag = || prop::option::of(any::<bool>());
    prop_oneof![
        3 => Just(written(true, true, false)),
        2 => Just(written(false, true, true)),
        1 => Just(written(false, false, true)),
        1 => Just(written(false, false, false)),
        2 => (flag(), flag(), flag()).prop_map(|(ready, serving, terminating)| {
            EndpointConditions { ready, serving, terminating }
        }),
    ]
}

prop_compose! {
    fn endpoint()(
        addresses in endpoint_addresses(),
        node_name in prop::sample::select(&[None, Some(NODE), Some("node-2")][..]),
        conditions in conditions(),
        zone_hint in prop::option::of(prop::sample::select(&["zone-a", "zone-b"][..])),
    ) -> Endpoint {
        Endpoint {
            addresses,
            node_name: node_name.map(str::to_owned),
            conditions: Some(conditions),
            // Read, not followed: no generated Service asks for topology.
            hints: zone_hint.map(|zone| EndpointHints {
                for_zones: Some(vec![ForZone { name: zone.to_owned() }]),
                ..EndpointHints::default()
            }),
            ..Endpoint::default()
        }
    }
}

/// A slice before it is given to a Service: the Service (an index into
/// the generated ones) and whether it is really that Service's.
#[derive(Clone, Debug)]
struct SliceSpec {
    owner: Index,
    /// In the other namespace than its Service's.
    elsewhere: bool,
    /// Without the service-name label.
    unlabelled: bool,
    address_type: &'static str,
    /// One for each port the Service may have, in order.
    ports: Vec<SlicePortSpec>,
    endpoints: Vec<Endpoint>,
}

/// A slice's port for the Service port at the same place: mostly named
/// after it, numbered 8080 or 8081 (or 0 or 70000, which the API refuses).
#[derive(Clone, Debug)]
struct SlicePortSpec {
    present: bool,
    /// Under another name than the Service port's.
    misnamed: bool,
    /// Without a protocol (which means TCP).
    unset_protocol: bool,
    number: i32,
}

prop_compose! {
    fn slice_port_spec()(
        present in prop::bool::weighted(0.8),
        misnamed in prop::bool::weighted(0.1),
        unset_protocol in prop::bool::weighted(0.25),
        number in prop::sample::select(&[8080, 8080, 8080, 8081, 8081, 8081, 0, 70000][..]),
    ) -> SlicePortSpec {
        SlicePortSpec { present, misnamed, unset_protocol, number }
    }
}

prop_compose! {
    fn slice_spec()(
        owner in any::<Index>(),
        elsewhere in prop::bool::weighted(0.1),
        unlabelled in prop::bool::weighted(0.1),
        address_type in prop::sample::select(&["IPv4", "IPv4", "IPv4", "IPv4", "IPv4", "IPv6"][..]),
        ports in prop::collection::vec(slice_port_spec(), 3),
        endpoints in prop::collection::vec(endpoint(), 0..=4),
    ) -> SliceSpec {
        SliceSpec { owner, elsewhere, unlabelled, address_type, ports, endpoints }
    }
}

/// Everything one translation reads.
#[derive(Clone, Debug)]
struct Cluster {
    services: Vec<Service>,
    slices: Vec<EndpointSlice>,
    node: NodeContext,
    config: Config,
}

prop_compose! {
    fn cluster()(
        mut services in prop::collection::vec(service_spec(), 1..=4),
        slices in prop::collection::vec(slice_spec(), 0..=8),
        node_addresses in frontend_addresses(2),
        nodeport_addresses in prop::option::of(frontend_addresses(2)),
        external_ip_cidrs in prop::collection::vec(
            prop::sample::select(&["198.19.0.0/30", "198.19.0.4/32", "0.0.0.0/0"][..]),
            0..=1,
        ),
    ) -> Cluster {
        // Unique names; which sorts first is left to chance.
        for (index, service) in services.iter_mut().enumerate() {
            if let Some(name) = service.metadata.name.as_mut() {
                name.push_str(&index.to_string());
            }
        }
        let slices = slices
            .into_iter()
            .enumerate()
            .map(|(index, spec)| slice_of(&services, index, spec))
            .collect();
        Cluster {
            services,
            slices,
            node: NodeContext {
                name: NODE.to_owned(),
                zone: None,
                node_addresses: node_addresses.into_iter().map(IpAddr::from).collect(),
            },
            config: Config {
                lb_algorithm: Default::default(),
                nodeport_addresses: nodeport_addresses.map(|addresses| {
                    addresses
                        .into_iter()
                        .map(|address| NodePortAddress::Address(address.into()))
                        .collect()
                }),
                external_ip_cidrs: external_ip_cidrs
                    .iter()
                    .map(|cidr| cidr.parse().expect("CIDR"))
                    .collect(),
            },
        }
    }
}

fn slice_of(services: &[Service], index: usize, spec: SliceSpec) -> EndpointSlice {
    let owner = &services[spec.owner.index(services.len())];
    let namespace = match (namespace_of(&owner.metadata), spec.elsewhere) {
        ("a", true) => "z",
        ("z", true) => "a",
        (namespace, _) => namespace,
    };
    let labels = (!spec.unlabelled).then(|| {
        [(
            LABEL_SERVICE_NAME.to_owned(),
            owner.metadata.name.clone().unwrap_or_default(),
        )]
        .into()
    });
    let service_ports = owner
        .spec
        .iter()
        .flat_map(|spec| spec.ports.iter().flatten());
    let ports = service_ports
        .zip(spec.ports)
        .enumerate()
        .filter(|(_, (_, port))| port.present)
        .map(|(at, (service_port, port))| EndpointPort {
            name: if port.misnamed {
                Some(format!("x{at}"))
            } else {
                service_port.name.clone()
            },
            port: Some(port.number),
            // Unset means TCP: still the TCP port, another protocol's no more.
            protocol: service_port
                .protocol
                .clone()
                .filter(|_| !port.unset_protocol),
            ..EndpointPort::default()
        });
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("s{index}")),
            namespace: Some(namespace.to_owned()),
            labels,
            ..ObjectMeta::default()
        },
        address_type: spec.address_type.to_owned(),
        ports: Some(ports.collect()),
        endpoints: Some(spec.endpoints),
    }
}

fn snapshot(services: &[Service], slices: &[EndpointSlice]) -> Snapshot {
    Snapshot {
        services: services.iter().cloned().map(Arc::new).collect(),
        endpoint_slices: slices.iter().cloned().map(Arc::new).collect(),
        ..Snapshot::default()
    }
}

/// What one translation gives: the frontends and what it left out, both
/// sorted.
type Outcome = (Vec<Frontend>, Vec<LeftOut>);

fn outcome_of(
    translator: &mut Translator,
    snapshot: &Snapshot,
    node: &NodeContext,
    config: &Config,
) -> Outcome {
    translator.translate(snapshot, node, config);
    outcome_now(translator)
}

/// What `translator` holds now.
fn outcome_now(translator: &Translator) -> Outcome {
    let mut left_out = translator.left_out();
    left_out.sort();
    (in_order(translator.frontends()), left_out)
}

/// The frontends sorted as `translate` sorts them.
fn in_order<'a>(frontends: impl IntoIterator<Item = &'a Arc<Frontend>>) -> Vec<Frontend> {
    let mut frontends: Vec<Frontend> = frontends
        .into_iter()
        .map(|frontend| (**frontend).clone())
        .collect();
    frontends.sort_by(|a, b| frontend_order(a).cmp(&frontend_order(b)));
    frontends
}

/// The names of the Services and slices that differ from `before` to
/// `after` (added, changed or deleted), as a watch reports them.
fn changed_between(
    before: &Snapshot,
    after: &Snapshot,
) -> (FastSet<ObjectName>, FastSet<ObjectName>) {
    fn differing<T: PartialEq>(
        before: &[Arc<T>],
        after: &[Arc<T>],
        name: impl Fn(&T) -> ObjectName,
    ) -> FastSet<ObjectName> {
        let by_name = |objects: &[Arc<T>]| -> BTreeMap<ObjectName, Arc<T>> {
            objects.iter().map(|o| (name(o), o.clone())).collect()
        };
        let (before, after) = (by_name(before), by_name(after));
        before
            .keys()
            .chain(after.keys())
            .filter(|key| before.get(*key) != after.get(*key))
            .cloned()
            .collect()
    }
    (
        differing(&before.services, &after.services, service_name),
        differing(&before.endpoint_slices, &after.endpoint_slices, slice_name),
    )
}

fn outcome(cluster: &Cluster) -> Outcome {
    outcome_of(
        &mut Translator::default(),
        &snapshot(&cluster.services, &cluster.slices),
        &cluster.node,
        &cluster.config,
    )
}

/// The Service a frontend is of.
fn service_named<'a>(cluster: &'a Cluster, key: &str) -> &'a Service {
    cluster
        .services
        .iter()
        .find(|service| object_key(&service.metadata) == key)
        .expect("a frontend names a generated Service")
}

/// The Service's own slices, as they come in the cluster.
fn slices_in_order<'a>(cluster: &'a Cluster, service: &Service) -> Vec<&'a EndpointSlice> {
    cluster
        .slices
        .iter()
        .filter(|slice| {
            slice.metadata.namespace.as_deref() == Some(namespace_of(&service.metadata))
                && slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|labels| labels.get(LABEL_SERVICE_NAME))
                    == service.metadata.name.as_ref()
        })
        .collect()
}

/// The Service's own slices, by name (as the translator orders them).
fn slices_of<'a>(cluster: &'a Cluster, service: &Service) -> Vec<&'a EndpointSlice> {
    let mut slices = slices_in_order(cluster, service);
    slices.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    slices
}

/// Every frontend each Service asks for, before the rules between
/// Services decide who keeps a shared address.
fn candidates(cluster: &Cluster) -> Vec<Frontend> {
    cluster
        .services
        .iter()
        .flat_map(|service| {
            service_frontends(
                service,
                &slices_of(cluster, service),
                &cluster.node,
                &cluster.config,
            )
        })
        .collect()
}

fn key_of(frontend: &Frontend) -> (IpAddr, u16, Protocol) {
    (frontend.address, frontend.port, frontend.protocol)
}

/// Whether the frontend's traffic may only go to this node's endpoints:
/// internalTrafficPolicy for a ClusterIP, externalTrafficPolicy for the
/// others (every generated Service with them is externally accessible).
fn local_policy(service: &Service, kind: FrontendKind) -> bool {
    let spec = service.spec.as_ref().expect("generated with a spec");
    let policy = if kind == FrontendKind::ClusterIP {
        &spec.internal_traffic_policy
    } else {
        &spec.external_traffic_policy
    };
    policy.as_deref() == Some("Local")
}

/// One copy of an endpoint in one slice, its conditions defaulted as the
/// API documents (ready and serving unless said otherwise).
#[derive(Clone, Debug)]
struct EndpointCopy {
    ready: bool,
    /// Serving while terminating: the fallback when nothing is ready.
    terminating: bool,
    local: bool,
}

/// The copies of each endpoint (address and port) of a Service port in
/// the Service's IPv4 slices.
fn copies(
    cluster: &Cluster,
    service: &Service,
    frontend: &Frontend,
) -> BTreeMap<(IpAddr, u16), Vec<EndpointCopy>> {
    let mut copies: BTreeMap<(IpAddr, u16), Vec<EndpointCopy>> = BTreeMap::new();
    for slice in slices_of(cluster, service) {
        if slice.address_type != IpFamily::of(frontend.address).api_name() {
            continue;
        }
        let port = slice.ports.iter().flatten().find(|port| {
            port.name.as_deref().unwrap_or("") == frontend.port_name
                && port.protocol.as_deref().unwrap_or("TCP") == frontend.protocol.to_string()
        });
        let Some(port) = port
            .and_then(|port| port.port)
            .and_then(|number| u16::try_from(number).ok())
            .filter(|number| *number != 0)
        else {
            continue;
        };
        for endpoint in slice.endpoints.iter().flatten() {
            let Some(Ok(address)) = endpoint.addresses.first().map(|a| a.parse::<IpAddr>()) else {
                continue;
            };
            if IpFamily::of(address) != IpFamily::of(frontend.address) {
                continue;
            }
            let conditions = endpoint.conditions.clone().unwrap_or_default();
            let ready = conditions.ready.unwrap_or(true);
            copies
                .entry((address, port))
                .or_default()
                .push(EndpointCopy {
                    ready,
                    terminating: !ready
                        && conditions.serving.unwrap_or(true)
                        && conditions.terminating.unwrap_or(false),
                    local: endpoint.node_name.as_deref() == Some(NODE),
                });
        }
    }
    copies
}

/// The generated cluster and the same objects in another order.
fn cluster_and_shuffled() -> impl Strategy<Value = (Cluster, Vec<Service>, Vec<EndpointSlice>)> {
    cluster().prop_flat_map(|cluster| {
        let services = Just(cluster.services.clone()).prop_shuffle();
        let slices = Just(cluster.slices.clone()).prop_shuffle();
        (Just(cluster), services, slices)
    })
}

/// What becomes of an object between two snapshots, as a watch store has
/// it.
#[derive(Clone, Copy, Debug)]
enum Fate {
    /// The same `Arc`.
    Kept,
    /// A new `Arc` of the same object (a store replaces an object's `Arc`
    /// on every event).
    Renewed,
    /// Another generated object under the same name.
    Changed,
    Deleted,
}

fn fates(count: usize) -> impl Strategy<Value = Vec<Fate>> {
    let fate = prop::sample::select(&[Fate::Kept, Fate::Renewed, Fate::Changed, Fate::Deleted][..]);
    prop::collection::vec(fate, count)
}

/// A snapshot and the node and settings it is translated for.
type Translation = (Snapshot, NodeContext, Config);

/// Two snapshots of one cluster: the first, and the second made of what
/// became of its objects (the very `Arc`s where kept), with the slices of
/// another cluster added (renamed, they belong to whichever Service has
/// their label's name), now and then for another node and settings.
#[derive(Clone, Debug)]
struct History {
    first: Translation,
    second: Translation,
}

prop_compose! {
    fn history()(
        before in cluster(),
        other in cluster(),
        service_fates in fates(4),
        slice_fates in fates(8),
        moved in prop::bool::weighted(0.2),
    ) -> History {
        let first = snapshot(&before.services, &before.slices);
        let services = first.services.iter().zip(&service_fates).enumerate().filter_map(
            |(index, (service, fate))| fated(service, *fate, || {
                let mut changed = other.services[index % other.services.len()].clone();
                changed.metadata.name.clone_from(&service.metadata.name);
                changed.metadata.namespace.clone_from(&service.metadata.namespace);
                changed
            }),
        );
        let slices = first.endpoint_slices.iter().zip(&slice_fates).enumerate().filter_map(
            |(index, (slice, fate))| fated(slice, *fate, || EndpointSlice {
                metadata: ObjectMeta {
                    labels: other.slices.get(index).and_then(|s| s.metadata.labels.clone()),
                    ..slice.metadata.clone()
                },
                ..other.slices.get(index).cloned().unwrap_or_else(|| (**slice).clone())
            }),
        );
        let added = other.slices.iter().map(|slice| {
            let mut slice = slice.clone();
            slice.metadata.name = slice.metadata.name.map(|name| format!("new-{name}"));
            Arc::new(slice)
        });
        let after = Snapshot {
            services: services.collect(),
            endpoint_slices: slices.chain(added).collect(),
            ..Snapshot::default()
        };
        let second = if moved {
            (after, other.node, other.config)
        } else {
            (after, before.node.clone(), before.config.clone())
        };
        History {
            first: (first, before.node, before.config),
            second,
        }
    }
}

/// What `fate` makes of `object`; `changed` makes another object of the
/// same name.
fn fated<T: Clone>(object: &Arc<T>, fate: Fate, changed: impl FnOnce() -> T) -> Option<Arc<T>> {
    match fate {
        Fate::Kept => Some(object.clone()),
        Fate::Renewed => Some(Arc::new((**object).clone())),
        Fate::Changed => Some(Arc::new(changed())),
        Fate::Deleted => None,
    }
}

proptest! {
    #[test]
    fn translation_does_not_depend_on_the_order_of_objects(
        (cluster, services, slices) in cluster_and_shuffled(),
    ) {
        let shuffled = outcome_of(
            &mut Translator::default(),
            &snapshot(&services, &slices),
            &cluster.node,
            &cluster.config,
        );
        prop_assert_eq!(outcome(&cluster), shuffled);
    }

    #[test]
    fn no_two_frontends_share_an_address_port_and_protocol(cluster in cluster()) {
        let (frontends, _) = outcome(&cluster);
        let mut keys = BTreeSet::new();
        for frontend in &frontends {
            prop_assert!(keys.insert(key_of(frontend)), "{} twice", frontend.label());
        }
    }

    /// Every frontend a Service asks for is programmed or left out with a
    /// reason; a shared address goes to the kind first in precedence
    /// (ClusterIP, NodePort, LoadBalancer, externalIP) whatever the names,
    /// to the first Service by name only between frontends of one kind,
    /// and each frontend left out names the one that has it.
    #[test]
    fn a_shared_address_goes_by_kind_then_name_and_the_rest_is_left_out(cluster in cluster()) {
        let (frontends, left_out) = outcome(&cluster);
        let candidates = candidates(&cluster);

        let mut asked: Vec<(String, String)> = candidates
            .iter()
            .map(|frontend| (frontend.service.clone(), frontend.label()))
            .collect();
        let mut answered: Vec<(String, String)> = frontends
            .iter()
            .map(|frontend| (frontend.service.clone(), frontend.label()))
            .chain(left_out.iter().map(|left| (left.service.clone(), left.frontend.clone())))
            .collect();
        asked.sort();
        answered.sort();
        prop_assert_eq!(asked, answered);
        for frontend in &frontends {
            prop_assert!(candidates.contains(frontend), "{} changed", frontend.label());
        }

        let mut claims: BTreeMap<_, Vec<&Frontend>> = BTreeMap::new();
        for candidate in &candidates {
            let allowed = candidate.kind != FrontendKind::ExternalIP
                || cluster.config.allows_external_ip(candidate.address);
            if allowed {
                claims.entry(key_of(candidate)).or_default().push(candidate);
            }
        }
        let owners: BTreeMap<_, &Frontend> =
            frontends.iter().map(|frontend| (key_of(frontend), frontend)).collect();
        prop_assert_eq!(
            owners.keys().collect::<Vec<_>>(),
            claims.keys().collect::<Vec<_>>()
        );
        for (key, claimants) in &claims {
            let owner = owners[key];
            for claimant in claimants {
                prop_assert!(
                    (owner.kind, &owner.service) <= (claimant.kind, &claimant.service),
                    "{} {} holds what {} {} claims",
                    owner.service, owner.label(), claimant.service, claimant.label()
                );
            }
        }

        for left in &left_out {
            let frontend = candidates
                .iter()
                .find(|c| c.service == left.service && c.label() == left.frontend)
                .expect("a frontend left out was asked for");
            match &left.reason {
                LeftOutReason::ExternalIpNotAllowed => {
                    prop_assert_eq!(frontend.kind, FrontendKind::ExternalIP);
                    prop_assert!(!cluster.config.allows_external_ip(frontend.address));
                }
                LeftOutReason::AddressTaken { owner, owner_kind } => {
                    let holder = owners[&key_of(frontend)];
                    prop_assert_eq!(owner, &holder.service);
                    prop_assert_eq!(*owner_kind, holder.kind);
                }
                other => prop_assert!(false, "translation cannot leave out for {:?}", other),
            }
        }
    }

    /// Backends are endpoints of the Service's own IPv4 slices on the
    /// frontend's port (by name and protocol): all ready ones the policy
    /// lets this node use, or, with none ready, only terminating ones that
    /// still serve. Local policy takes this node's endpoints only.
    #[test]
    fn backends_are_the_ready_endpoints_of_the_services_slices_or_else_terminating_ones(
        cluster in cluster(),
    ) {
        let (frontends, _) = outcome(&cluster);
        for frontend in &frontends {
            let service = service_named(&cluster, &frontend.service);
            let local = local_policy(service, frontend.kind);
            let copies = copies(&cluster, service, frontend);
            let label = frontend.label();
            let states: BTreeSet<BackendState> =
                frontend.backends.iter().map(|backend| backend.state).collect();
            prop_assert!(states.len() <= 1, "{} mixes ready and terminating", label);

            for backend in &frontend.backends {
                let seen = copies
                    .get(&(backend.address, backend.port))
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let fits = |copy: &EndpointCopy| {
                    (!local || copy.local)
                        && match backend.state {
                            BackendState::Ready => copy.ready,
                            BackendState::Terminating => copy.terminating,
                        }
                };
                prop_assert!(
                    seen.iter().any(fits),
                    "{}: {}:{} {} is no such endpoint of its slices",
                    label, backend.address, backend.port, backend.state
                );
                prop_assert!(!backend.local || seen.iter().any(|copy| copy.local));
            }

            // Endpoints every slice agrees about are in, or kept out, for sure.
            for ((address, port), seen) in &copies {
                let usable = seen.iter().all(|copy| copy.ready && (!local || copy.local));
                if usable {
                    prop_assert!(
                        frontend.backends.iter().any(|backend| backend.address == *address
                            && backend.port == *port
                            && backend.state == BackendState::Ready),
                        "{}: ready endpoint {}:{} is missing", label, address, port
                    );
                }
            }
        }
    }

    /// A frontend without backends rejects, unless Local policy leaves it
    /// empty on this node while the Service has endpoints elsewhere: then
    /// it drops.
    #[test]
    fn a_frontend_without_backends_rejects_unless_local_policy_has_endpoints_elsewhere(
        cluster in cluster(),
    ) {
        let (frontends, _) = outcome(&cluster);
        for frontend in frontends.iter().filter(|frontend| frontend.backends.is_empty()) {
            let service = service_named(&cluster, &frontend.service);
            let local = local_policy(service, frontend.kind);
            let copies = copies(&cluster, service, frontend);
            let usable = |copy: &EndpointCopy| copy.ready || copy.terminating;
            let some_usable = copies.values().flatten().any(usable);
            let surely_usable = copies.values().any(|seen| seen.iter().all(usable));
            match frontend.on_empty {
                OnEmpty::Drop => prop_assert!(
                    local && some_usable,
                    "{} drops without Local policy or endpoints", frontend.label()
                ),
                OnEmpty::Reject => prop_assert!(
                    !local || !surely_usable,
                    "{} rejects though endpoints elsewhere serve", frontend.label()
                ),
            }
        }
    }

    /// The translator remembers each Service's frontends while its objects
    /// stay the same `Arc`s; whatever changed, was renewed, added or
    /// deleted in between, and on another node, it agrees with a fresh one,
    /// and again when the first snapshot comes back.
    #[test]
    fn a_translator_with_memory_agrees_with_a_fresh_one(history in history()) {
        let History { first, second } = history;
        let mut translator = Translator::default();
        for (snapshot, node, config) in [&first, &second, &first] {
            let fresh = outcome_of(&mut Translator::default(), snapshot, node, config);
            prop_assert_eq!(outcome_of(&mut translator, snapshot, node, config), fresh);
        }
    }

    /// Told only the names of the objects that changed, the translator
    /// holds what a fresh translation of the new objects gives, and its
    /// delta takes the frontends it held before to those (what the maps
    /// are changed by), whatever changed, was added or deleted, and on
    /// another node or with other settings, and back.
    #[test]
    fn an_update_of_the_changed_objects_agrees_with_a_fresh_translation(history in history()) {
        let History { first, second } = history;
        let mut translator = Translator::default();
        translator.translate_snapshot(&first.0, &first.1, &first.2);
        for (before, (after, node, config)) in [(&first.0, &second), (&second.0, &first)] {
            let mut held: BTreeMap<(IpAddr, u16, Protocol), Arc<Frontend>> = translator
                .frontends()
                .map(|f| ((f.address, f.port, f.protocol), f.clone()))
                .collect();
            let (services, slices) = changed_between(before, after);
            let delta = translator.update(after, &services, &slices, node, config);
            for gone in &delta.removed {
                let was = held.remove(&(gone.address, gone.port, gone.protocol));
                prop_assert!(was.is_some(), "{} removed but not held", gone.label());
            }
            for written in &delta.written {
                held.insert((written.address, written.port, written.protocol), written.clone());
            }
            let fresh = outcome_of(&mut Translator::default(), after, node, config);
            prop_assert_eq!(&outcome_now(&translator), &fresh);
            prop_assert_eq!(in_order(held.values()), fresh.0);
        }
    }

    /// An endpoint in several slices (a Service's slices are named at
    /// random) merges into the same one whichever slice comes first.
    #[test]
    fn an_endpoint_in_several_slices_merges_the_same_in_any_order(
        (cluster, _, shuffled) in cluster_and_shuffled(),
    ) {
        let shuffled = Cluster { slices: shuffled, ..cluster.clone() };
        for service in &cluster.services {
            let ports = service.spec.iter().flat_map(|spec| spec.ports.iter().flatten());
            for port in ports {
                let name = port.name.as_deref().unwrap_or("");
                let protocol = Protocol::from_api(port.protocol.as_deref()).expect("generated");
                let merged = |cluster: &Cluster| {
                    endpoints_of_port(slices_in_order(cluster, service), IpFamily::IPv4, name, protocol, NODE)
                };
                prop_assert_eq!(merged(&cluster), merged(&shuffled));
            }
        }
    }
}
