use std::{net::Ipv4Addr, sync::Arc};

use k8s_openapi::api::core::v1::Service;
use serde_json::{Value, json};

use super::*;
use crate::model::{Cidr, NodePortAddress, Plan, Protocol, Snapshot, Translator, translate};

const LOCAL_READY: &str = "198.18.1.11 node-1 ready";
const REMOTE_READY: &str = "198.18.2.11 node-2 ready";
const REMOTE_TERMINATING: &str = "198.18.2.12 node-2 terminating";
const LOCAL_TERMINATING: &str = "198.18.1.12 node-1 terminating";

fn service(mut object: Value) -> Service {
    object["apiVersion"] = json!("v1");
    object["kind"] = json!("Service");
    if object.pointer("/metadata/namespace").is_none() {
        object["metadata"]["namespace"] = json!("demo");
    }
    serde_json::from_value(object).expect("valid Service")
}

/// A Service `demo/web` of `type_` with port http 80 → 8080 (NodePort
/// 30080 unless ClusterIP), `extra` merged into its spec.
fn web(type_: &str, extra: Value) -> Service {
    let mut port = json!({"name": "http", "port": 80, "targetPort": "http"});
    if type_ != "ClusterIP" {
        port["nodePort"] = json!(30080);
    }
    let mut spec = json!({
        "type": type_,
        "clusterIP": "198.19.0.10",
        "clusterIPs": ["198.19.0.10"],
        "selector": {"app": "web"},
        "ports": [port],
    });
    for (key, value) in extra.as_object().into_iter().flatten() {
        spec[key] = value.clone();
    }
    service(json!({"metadata": {"name": "web"}, "spec": spec}))
}

/// An EndpointSlice of `demo/web` with port http = 8080 and endpoints
/// written "ADDRESS NODE ready|terminating|unready".
fn slice(name: &str, endpoints: &[&str]) -> EndpointSlice {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|text| {
            let fields: Vec<&str> = text.split(' ').collect();
            let (ready, serving, terminating) = match fields[2] {
                "ready" => (true, true, false),
                "terminating" => (false, true, true),
                _ => (false, false, false),
            };
            json!({
                "addresses": [fields[0]],
                "nodeName": fields[1],
                "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
            })
        })
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "demo", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))
    .expect("valid EndpointSlice")
}

fn node_1() -> NodeContext {
    NodeContext {
        name: "node-1".into(),
        zone: Some("zone-a".into()),
        node_addresses: vec![
            Ipv4Addr::new(198, 18, 0, 11).into(),
            Ipv4Addr::new(198, 18, 100, 11).into(),
        ],
    }
}

fn plan_of(services: Vec<Service>, endpoints: &[&str]) -> Vec<Frontend> {
    let snapshot = Snapshot {
        services: services.into_iter().map(Arc::new).collect(),
        endpoint_slices: vec![slice("web-abc", endpoints).into()],
        ..Snapshot::default()
    };
    translate(&snapshot, &node_1(), &Config::default())
}

/// What a Translator makes of `snapshot` on node-1: its frontends, sorted,
/// and what it left out.
fn translated(snapshot: &Snapshot, config: &Config) -> Plan {
    let mut translator = Translator::default();
    let mut frontends: Vec<Frontend> = translator
        .translate(snapshot, &node_1(), config)
        .into_iter()
        .map(|frontend| (**frontend).clone())
        .collect();
    frontends.sort_by(|a, b| frontend_order(a).cmp(&frontend_order(b)));
    Plan {
        node: "node-1".into(),
        frontends,
        left_out: translator.left_out().to_vec(),
    }
}

/// "KIND ADDRESS:PORT/PROTO [BACKEND STATE, ...] ON_EMPTY".
fn line(frontend: &Frontend) -> String {
    let backends: Vec<String> = frontend
        .backends
        .iter()
        .map(|b| {
            format!(
                "{} {}",
                std::net::SocketAddr::new(b.address, b.port),
                b.state
            )
        })
        .collect();
    let on_empty = match frontend.on_empty {
        OnEmpty::Reject => "reject",
        OnEmpty::Drop => "drop",
    };
    format!(
        "{} {}/{} [{}] {on_empty}",
        frontend.kind,
        std::net::SocketAddr::new(frontend.address, frontend.port),
        frontend.protocol,
        backends.join(", ")
    )
}

fn lines(frontends: &[Frontend]) -> Vec<String> {
    frontends.iter().map(line).collect()
}

struct Case {
    name: &'static str,
    service: Service,
    endpoints: &'static [&'static str],
    want: &'static [&'static str],
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "ClusterIP: every ready endpoint",
            service: web("ClusterIP", json!({})),
            endpoints: &[LOCAL_READY, REMOTE_READY],
            want: &[
                "ClusterIP 198.19.0.10:80/TCP [198.18.1.11:8080 ready, 198.18.2.11:8080 ready] reject",
            ],
        },
        Case {
            name: "no endpoints: reject",
            service: web("ClusterIP", json!({})),
            endpoints: &[],
            want: &["ClusterIP 198.19.0.10:80/TCP [] reject"],
        },
        Case {
            name: "headless Service: nothing",
            service: web(
                "ClusterIP",
                json!({"clusterIP": "None", "clusterIPs": ["None"]}),
            ),
            endpoints: &[LOCAL_READY],
            want: &[],
        },
        Case {
            name: "Service without cluster IP: nothing",
            service: web("ClusterIP", json!({"clusterIP": "", "clusterIPs": []})),
            endpoints: &[LOCAL_READY],
            want: &[],
        },
        Case {
            name: "ExternalName Service: nothing",
            service: web("ExternalName", json!({"externalName": "web.example"})),
            endpoints: &[LOCAL_READY],
            want: &[],
        },
        Case {
            name: "Service for another proxy: nothing",
            service: {
                let mut service = web("ClusterIP", json!({}));
                service.metadata.labels = Some(
                    [(
                        "service.kubernetes.io/service-proxy-name".into(),
                        "other".into(),
                    )]
                    .into(),
                );
                service
            },
            endpoints: &[LOCAL_READY],
            want: &[],
        },
        Case {
            name: "IPv6-only Service: its IPv6 ClusterIP without the IPv4 endpoints, no NodePort \
                   (node-1 has no IPv6 address)",
            service: web(
                "NodePort",
                json!({"clusterIP": "fd00::10", "clusterIPs": ["fd00::10"]}),
            ),
            endpoints: &[LOCAL_READY],
            want: &["ClusterIP [fd00::10]:80/TCP [] reject"],
        },
        Case {
            name: "dual-stack Service: a ClusterIP of each family, each with its family's endpoints",
            service: web(
                "ClusterIP",
                json!({"clusterIP": "fd00::10", "clusterIPs": ["fd00::10", "198.19.0.10"]}),
            ),
            endpoints: &[LOCAL_READY],
            want: &[
                "ClusterIP 198.19.0.10:80/TCP [198.18.1.11:8080 ready] reject",
                "ClusterIP [fd00::10]:80/TCP [] reject",
            ],
        },
        Case {
            name: "NodePort: one frontend per node address",
            service: web("NodePort", json!({})),
            endpoints: &[REMOTE_READY],
            want: &[
                "ClusterIP 198.19.0.10:80/TCP [198.18.2.11:8080 ready] reject",
                "NodePort 198.18.0.11:30080/TCP [198.18.2.11:8080 ready] reject",
                "NodePort 198.18.100.11:30080/TCP [198.18.2.11:8080 ready] reject",
            ],
        },
        Case {
            name: "LoadBalancer: VIP-mode IPv4 ingress at the Service port; Proxy mode, hostnames, IPv6 not",
            service: {
                let mut service = web("LoadBalancer", json!({}));
                service.status = serde_json::from_value(json!({"loadBalancer": {"ingress": [
                    {"ip": "198.19.100.1"},
                    {"ip": "198.19.100.2", "ipMode": "Proxy"},
                    {"ip": "198.19.100.3", "ipMode": "VIP"},
                    {"hostname": "lb.example"},
                    {"ip": "fd00::100"},
                ]}}))
                .expect("valid status");
                service
            },
            endpoints: &[REMOTE_READY],
            want: &[
                "ClusterIP 198.19.0.10:80/TCP [198.18.2.11:8080 ready] reject",
                "NodePort 198.18.0.11:30080/TCP [198.18.2.11:8080 ready] reject",
                "NodePort 198.18.100.11:30080/TCP [198.18.2.11:8080 ready] reject",
                "LoadBalancer 198.19.100.1:80/TCP [198.18.2.11:8080 ready] reject",
                "LoadBalancer 198.19.100.3:80/TCP [198.18.2.11:8080 ready] reject",
            ],
        },
        Case {
            name: "externalIPs: IPv4 ones at the Service port",
            service: web(
                "ClusterIP",
                json!({"externalIPs": ["198.19.200.1", "fd00::200"]}),
            ),
            endpoints: &[REMOTE_READY],
            want: &[
                "ClusterIP 198.19.0.10:80/TCP [198.18.2.11:8080 ready] reject",
                "ExternalIP 198.19.200.1:80/TCP [198.18.2.11:8080 ready] reject",
            ],
        },
        Case {
            name: "iTP=Local: the ClusterIP keeps local endpoints",
            service: web("ClusterIP", json!({"internalTrafficPolicy": "Local"})),
            endpoints: &[LOCAL_READY, REMOTE_READY],
            want: &["ClusterIP 198.19.0.10:80/TCP [198.18.1.11:8080 ready] drop"],
        },
        Case {
            name: "iTP=Local without local endpoint but with remote ones: drop",
            service: web("ClusterIP", json!({"internalTrafficPolicy": "Local"})),
            endpoints: &[REMOTE_READY],
            want: &["ClusterIP 198.19.0.10:80/TCP [] drop"],
        },
        Case {
            name: "iTP=Local without any endpoint: reject",
            service: web("ClusterIP", json!({"internalTrafficPolicy": "Local"})),
            endpoints: &[],
            want: &["ClusterIP 198.19.0.10:80/TCP [] reject"],
        },
        Case {
            name: "eTP=Local: external frontends keep local endpoints, the ClusterIP all",
            service: web("NodePort", json!({"externalTrafficPolicy": "Local"})),
            endpoints: &[LOCAL_READY, REMOTE_READY],
            want: &[
                "ClusterIP 198.19.0.10:80/TCP [198.18.1.11:8080 ready, 198.18.2.11:8080 ready] reject",
                "NodePort 198.18.0.11:30080/TCP [198.18.1.11:8080 ready] drop",
                "NodePort 198.18.100.11:30080/TCP [198.18.1.11:8080 ready] drop",
            ],
        },
        Case {
            name: "eTP=Local without local endpoint: external frontends drop",
            service: web("NodePort", json!({"externalTrafficPolicy": "Local"})),
            endpoints: &[REMOTE_READY],
            want: &[
                "ClusterIP 198.19.0.10:80/TCP [198.18.2.11:8080 ready] reject",
                "NodePort 198.18.0.11:30080/TCP [] drop",
                "NodePort 198.18.100.11:30080/TCP [] drop",
            ],
        },
        Case {
            name: "eTP=Local without any endpoint: reject everywhere",
            service: web("NodePort", json!({"externalTrafficPolicy": "Local"})),
            endpoints: &[],
            want: &[
                "ClusterIP 198.19.0.10:80/TCP [] reject",
                "NodePort 198.18.0.11:30080/TCP [] reject",
                "NodePort 198.18.100.11:30080/TCP [] reject",
            ],
        },
        Case {
            name: "eTP=Local applies to externalIPs of a ClusterIP Service",
            service: web(
                "ClusterIP",
                json!({"externalIPs": ["198.19.200.1"], "externalTrafficPolicy": "Local"}),
            ),
            endpoints: &[LOCAL_READY, REMOTE_READY],
            want: &[
                "ClusterIP 198.19.0.10:80/TCP [198.18.1.11:8080 ready, 198.18.2.11:8080 ready] reject",
                "ExternalIP 198.19.200.1:80/TCP [198.18.1.11:8080 ready] drop",
            ],
        },
        Case {
            name: "no ready endpoint: serving terminating ones, marked terminating",
            service: web("ClusterIP", json!({})),
            endpoints: &[
                REMOTE_TERMINATING,
                LOCAL_TERMINATING,
                "198.18.2.13 node-2 unready",
            ],
            want: &[
                "ClusterIP 198.19.0.10:80/TCP [198.18.1.12:8080 terminating, 198.18.2.12:8080 terminating] reject",
            ],
        },
        Case {
            name: "ready endpoints exclude terminating ones",
            service: web("ClusterIP", json!({})),
            endpoints: &[REMOTE_TERMINATING, REMOTE_READY],
            want: &["ClusterIP 198.19.0.10:80/TCP [198.18.2.11:8080 ready] reject"],
        },
        Case {
            name: "eTP=Local falls back to local terminating endpoints",
            service: web("NodePort", json!({"externalTrafficPolicy": "Local"})),
            endpoints: &[REMOTE_READY, LOCAL_TERMINATING],
            want: &[
                "ClusterIP 198.19.0.10:80/TCP [198.18.2.11:8080 ready] reject",
                "NodePort 198.18.0.11:30080/TCP [198.18.1.12:8080 terminating] drop",
                "NodePort 198.18.100.11:30080/TCP [198.18.1.12:8080 terminating] drop",
            ],
        },
    ]
}

#[test]
fn frontends_follow_kube_proxy_rules() {
    let mut failures = Vec::new();
    for case in cases() {
        let got = lines(&plan_of(vec![case.service], case.endpoints));
        if got != case.want {
            failures.push(format!(
                "{}:\n  got  {got:#?}\n  want {:#?}",
                case.name, case.want
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn frontends_name_their_service_and_port() {
    let frontends = plan_of(vec![web("ClusterIP", json!({}))], &[LOCAL_READY]);
    assert_eq!(frontends[0].service, "demo/web");
    assert_eq!(frontends[0].port_name, "http");
}

#[test]
fn session_affinity_client_ip_sets_the_timeout() {
    // (spec fields, affinity timeout)
    let table = [
        (json!({}), None),
        (json!({"sessionAffinity": "None"}), None),
        (json!({"sessionAffinity": "ClientIP"}), Some(10_800)),
        (
            json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}),
            Some(60),
        ),
    ];
    for (spec, want) in table {
        let frontends = plan_of(vec![web("NodePort", spec.clone())], &[LOCAL_READY]);
        for frontend in &frontends {
            assert_eq!(
                frontend.affinity_timeout_seconds,
                want,
                "{spec} {}",
                line(frontend)
            );
        }
        assert_eq!(frontends.len(), 3);
    }
}

#[test]
fn source_ranges_apply_to_load_balancer_frontends_only() {
    let mut service = web(
        "LoadBalancer",
        json!({"loadBalancerSourceRanges": [" 198.18.50.0/24 ", "fd00::/64", "not-a-cidr", "198.18.60.7/32"]}),
    );
    service.status =
        serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "198.19.100.1"}]}}))
            .expect("valid status");
    let frontends = plan_of(vec![service], &[LOCAL_READY]);
    for frontend in &frontends {
        let want: &[&str] = if frontend.kind == FrontendKind::LoadBalancer {
            &["198.18.50.0/24", "198.18.60.7/32"]
        } else {
            &[]
        };
        let ranges: Vec<String> = frontend
            .source_ranges
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(ranges, want, "{}", line(frontend));
    }
    assert!(
        frontends
            .iter()
            .any(|f| f.kind == FrontendKind::LoadBalancer)
    );
}

#[test]
fn health_check_node_port_marks_external_frontends_of_local_load_balancers() {
    let status = json!({"loadBalancer": {"ingress": [{"ip": "198.19.100.1"}]}});
    // (type, externalTrafficPolicy, health check port wanted on external frontends)
    let table = [
        ("LoadBalancer", "Local", Some(32000)),
        ("LoadBalancer", "Cluster", None),
        ("NodePort", "Local", None),
    ];
    for (type_, policy, want) in table {
        let mut service = web(
            type_,
            json!({"externalTrafficPolicy": policy, "healthCheckNodePort": 32000}),
        );
        service.status = serde_json::from_value(status.clone()).expect("valid status");
        let frontends = plan_of(vec![service], &[LOCAL_READY]);
        for frontend in &frontends {
            let expected = if frontend.kind == FrontendKind::ClusterIP {
                None
            } else {
                want
            };
            assert_eq!(
                frontend.health_check_node_port,
                expected,
                "{type_}/{policy}: {}",
                line(frontend)
            );
        }
        assert!(frontends.len() >= 3, "{type_}/{policy}");
    }
}

/// `--lb-algorithm` for the node, the `svc-lb.io/lb-algorithm` annotation
/// over it (an unknown value is ignored); Maglev on external frontends
/// only: a ClusterIP's flows start on the node that balances them.
#[test]
fn the_lb_algorithm_comes_from_the_annotation_or_the_node_for_external_frontends() {
    use crate::model::LbAlgorithm::{Maglev, Random};
    let status = json!({"loadBalancer": {"ingress": [{"ip": "198.19.100.1"}]}});
    // (node's algorithm, annotation, external frontends' algorithm)
    let table = [
        (Random, None, Random),
        (Maglev, None, Maglev),
        (Random, Some("maglev"), Maglev),
        (Maglev, Some("random"), Random),
        (Maglev, Some(" maglev "), Maglev),
        (Random, Some("ring-hash"), Random),
    ];
    for (node, annotation, want) in table {
        let mut service = web("LoadBalancer", json!({}));
        service.status = serde_json::from_value(status.clone()).expect("valid status");
        if let Some(value) = annotation {
            service.metadata.annotations =
                Some([("svc-lb.io/lb-algorithm".to_owned(), value.to_owned())].into());
        }
        let snapshot = Snapshot {
            services: vec![service.into()],
            endpoint_slices: vec![slice("web-abc", &[LOCAL_READY]).into()],
            ..Snapshot::default()
        };
        let config = Config {
            lb_algorithm: node,
            ..Config::default()
        };
        let frontends = translate(&snapshot, &node_1(), &config);
        let kinds: std::collections::BTreeSet<FrontendKind> =
            frontends.iter().map(|frontend| frontend.kind).collect();
        assert_eq!(
            kinds,
            [
                FrontendKind::ClusterIP,
                FrontendKind::NodePort,
                FrontendKind::LoadBalancer
            ]
            .into()
        );
        for frontend in &frontends {
            let expected = if frontend.kind == FrontendKind::ClusterIP {
                Random
            } else {
                want
            };
            assert_eq!(
                frontend.lb_algorithm,
                expected,
                "{node} {annotation:?}: {}",
                line(frontend)
            );
        }
    }
}

#[test]
fn configured_nodeport_addresses_replace_the_nodes_own() {
    let snapshot = Snapshot {
        services: vec![web("NodePort", json!({})).into()],
        endpoint_slices: vec![slice("web-abc", &[LOCAL_READY]).into()],
        ..Snapshot::default()
    };
    let config = Config {
        nodeport_addresses: Some(vec![NodePortAddress::Address(
            Ipv4Addr::new(198, 18, 7, 7).into(),
        )]),
        ..Config::default()
    };
    let node_ports: Vec<String> = translate(&snapshot, &node_1(), &config)
        .iter()
        .filter(|f| f.kind == FrontendKind::NodePort)
        .map(line)
        .collect();
    assert_eq!(
        node_ports,
        ["NodePort 198.18.7.7:30080/TCP [198.18.1.11:8080 ready] reject"]
    );
}

/// Slice with three ready endpoints hinted for zones a, b, a.
fn hinted_slice() -> EndpointSlice {
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "web-hinted", "namespace": "demo", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [
            {"addresses": ["198.18.1.11"], "zone": "zone-a", "hints": {"forZones": [{"name": "zone-a"}]}},
            {"addresses": ["198.18.2.11"], "zone": "zone-b", "hints": {"forZones": [{"name": "zone-b"}]}},
            {"addresses": ["198.18.1.13"], "zone": "zone-a", "hints": {"forZones": [{"name": "zone-a"}]}},
        ],
    }))
    .expect("valid EndpointSlice")
}

#[test]
fn topology_hints_count_when_the_service_asks_for_them() {
    let all = vec!["198.18.1.11", "198.18.1.13", "198.18.2.11"];
    let zone_a = vec!["198.18.1.11", "198.18.1.13"];
    // (annotations, trafficDistribution, backends on a zone-a node)
    let table = [
        (json!({}), None, all.clone()),
        (
            json!({"service.kubernetes.io/topology-mode": "Auto"}),
            None,
            zone_a.clone(),
        ),
        (
            json!({"service.kubernetes.io/topology-aware-hints": "auto"}),
            None,
            zone_a.clone(),
        ),
        (
            json!({"service.kubernetes.io/topology-mode": "Disabled"}),
            None,
            all.clone(),
        ),
        (
            json!({"service.kubernetes.io/topology-aware-hints": "disabled", "service.kubernetes.io/topology-mode": "Auto"}),
            None,
            all.clone(),
        ),
        (json!({}), Some("PreferClose"), zone_a.clone()),
    ];
    for (annotations, distribution, want) in table {
        let mut service = web("ClusterIP", json!({}));
        service.metadata.annotations = serde_json::from_value(annotations.clone()).expect("map");
        if let Some(spec) = service.spec.as_mut() {
            spec.traffic_distribution = distribution.map(str::to_owned);
        }
        let snapshot = Snapshot {
            services: vec![service.into()],
            endpoint_slices: vec![hinted_slice().into()],
            ..Snapshot::default()
        };
        let frontends = translate(&snapshot, &node_1(), &Config::default());
        let got: Vec<String> = frontends[0]
            .backends
            .iter()
            .map(|b| b.address.to_string())
            .collect();
        assert_eq!(got, want, "{annotations} {distribution:?}");
    }
}

#[test]
fn named_target_ports_resolve_through_slice_port_names() {
    let service = service(json!({
        "metadata": {"name": "web"},
        "spec": {
            "clusterIP": "198.19.0.10",
            "ports": [
                {"name": "http", "port": 80, "targetPort": "web"},
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"},
            ],
        },
    }));
    let slice: EndpointSlice = serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": "demo", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}, {"name": "dns", "port": 5353, "protocol": "UDP"}],
        "endpoints": [{"addresses": ["198.18.1.11"]}],
    }))
    .expect("valid EndpointSlice");
    let snapshot = Snapshot {
        services: vec![service.into()],
        endpoint_slices: vec![slice.into()],
        ..Snapshot::default()
    };
    let frontends = translate(&snapshot, &node_1(), &Config::default());
    assert_eq!(
        lines(&frontends),
        [
            "ClusterIP 198.19.0.10:53/UDP [198.18.1.11:5353 ready] reject",
            "ClusterIP 198.19.0.10:80/TCP [198.18.1.11:8080 ready] reject",
        ]
    );
    assert_eq!(frontends[0].protocol, Protocol::UDP);
}

#[test]
fn slices_of_other_services_and_namespaces_are_not_mixed_in() {
    let mut other_namespace = slice("web-other-ns", &["198.18.3.11 node-1 ready"]);
    other_namespace.metadata.namespace = Some("prod".into());
    let mut other_service = slice("api-abc", &["198.18.3.12 node-1 ready"]);
    other_service.metadata.labels =
        Some([("kubernetes.io/service-name".into(), "api".into())].into());
    let snapshot = Snapshot {
        services: vec![web("ClusterIP", json!({})).into()],
        endpoint_slices: vec![
            other_namespace.into(),
            other_service.into(),
            slice("web-abc", &[LOCAL_READY]).into(),
        ],
        ..Snapshot::default()
    };
    let frontends = translate(&snapshot, &node_1(), &Config::default());
    assert_eq!(
        lines(&frontends),
        ["ClusterIP 198.19.0.10:80/TCP [198.18.1.11:8080 ready] reject"]
    );
}

#[test]
fn output_order_does_not_depend_on_input_order() {
    let named = |name: &str, ip: &str, node_port: u16| {
        service(json!({
            "metadata": {"name": name},
            "spec": {"type": "NodePort", "clusterIP": ip, "ports": [{"port": 80, "nodePort": node_port}]},
        }))
    };
    let forward = vec![
        named("b", "198.19.0.2", 30001),
        named("a", "198.19.0.1", 30002),
    ];
    let backward = vec![
        named("a", "198.19.0.1", 30002),
        named("b", "198.19.0.2", 30001),
    ];
    let order = |services| -> Vec<(String, FrontendKind, IpAddr)> {
        plan_of(services, &[])
            .into_iter()
            .map(|f| (f.service, f.kind, f.address))
            .collect()
    };
    let got = order(forward);
    assert_eq!(got, order(backward));
    assert_eq!(
        got.iter()
            .map(|(s, k, _)| format!("{s} {k}"))
            .collect::<Vec<_>>(),
        [
            "demo/a ClusterIP",
            "demo/a NodePort",
            "demo/a NodePort",
            "demo/b ClusterIP",
            "demo/b NodePort",
            "demo/b NodePort",
        ]
    );
}

#[test]
fn backends_list_ready_before_terminating_each_by_address() {
    let got = backends(&[
        endpoint("198.18.2.1", 80, false),
        endpoint("198.18.1.9", 80, true),
        endpoint("198.18.1.2", 81, false),
        endpoint("198.18.1.2", 80, true),
    ]);
    let text: Vec<String> = got
        .iter()
        .map(|b| {
            format!(
                "{} {}",
                std::net::SocketAddr::new(b.address, b.port),
                b.state
            )
        })
        .collect();
    assert_eq!(
        text,
        [
            "198.18.1.2:80 ready",
            "198.18.1.9:80 ready",
            "198.18.1.2:81 terminating",
            "198.18.2.1:80 terminating",
        ]
    );
}

fn endpoint(address: &str, port: u16, ready: bool) -> Endpoint {
    Endpoint {
        address: address.parse().expect("address"),
        port,
        ready,
        serving: true,
        terminating: !ready,
        is_local: false,
        zone_hints: Default::default(),
        node_hints: Default::default(),
    }
}

/// Contested addresses go by kind (ClusterIP, NodePort, LoadBalancer,
/// externalIP), whatever the names: the Service that sorts first never
/// wins by its name alone.
#[test]
fn a_frontend_address_claimed_twice_goes_by_kind_not_by_name() {
    struct Case {
        name: &'static str,
        /// The owner by right, named to sort last.
        owner: Value,
        /// The claimant, named to sort first.
        claimant: Value,
        /// "SERVICE KIND ADDRESS:PORT" of every frontend programmed.
        expected: &'static [&'static str],
        /// "SERVICE FRONTEND <- OWNER OWNER_KIND" of every one left out.
        left_out: &'static [&'static str],
    }
    let cases = [
        Case {
            name: "an externalIP on the kubernetes Service's ClusterIP",
            owner: json!({
                "metadata": {"name": "kubernetes", "namespace": "default"},
                "spec": {"clusterIP": "198.19.0.1", "ports": [{"port": 443}]},
            }),
            claimant: json!({
                "metadata": {"name": "x", "namespace": "aaa"},
                "spec": {"clusterIP": "198.19.0.2", "externalIPs": ["198.19.0.1"], "ports": [{"port": 443}]},
            }),
            expected: &[
                "aaa/x ClusterIP 198.19.0.2:443",
                "default/kubernetes ClusterIP 198.19.0.1:443",
            ],
            left_out: &["aaa/x ExternalIP 198.19.0.1:443/TCP <- default/kubernetes ClusterIP"],
        },
        Case {
            name: "an externalIP on a node address, at a NodePort",
            owner: json!({
                "metadata": {"name": "zzz"},
                "spec": {"type": "NodePort", "clusterIP": "198.19.0.3",
                         "ports": [{"port": 80, "nodePort": 30080}]},
            }),
            claimant: json!({
                "metadata": {"name": "aaa"},
                "spec": {"clusterIP": "198.19.0.4", "externalIPs": ["198.18.0.11"],
                         "ports": [{"port": 30080}]},
            }),
            expected: &[
                "demo/aaa ClusterIP 198.19.0.4:30080",
                "demo/zzz ClusterIP 198.19.0.3:80",
                "demo/zzz NodePort 198.18.0.11:30080",
                "demo/zzz NodePort 198.18.100.11:30080",
            ],
            left_out: &["demo/aaa ExternalIP 198.18.0.11:30080/TCP <- demo/zzz NodePort"],
        },
        Case {
            name: "a LoadBalancer ingress IP on a ClusterIP",
            owner: json!({
                "metadata": {"name": "zzz"},
                "spec": {"clusterIP": "198.19.0.5", "ports": [{"port": 80}]},
            }),
            claimant: json!({
                "metadata": {"name": "aaa"},
                "spec": {"type": "LoadBalancer", "clusterIP": "198.19.0.6",
                         "ports": [{"port": 80, "nodePort": 30081}]},
                "status": {"loadBalancer": {"ingress": [{"ip": "198.19.0.5"}]}},
            }),
            expected: &[
                "demo/aaa ClusterIP 198.19.0.6:80",
                "demo/aaa NodePort 198.18.0.11:30081",
                "demo/aaa NodePort 198.18.100.11:30081",
                "demo/zzz ClusterIP 198.19.0.5:80",
            ],
            left_out: &["demo/aaa LoadBalancer 198.19.0.5:80/TCP <- demo/zzz ClusterIP"],
        },
    ];
    for case in cases {
        for order in [
            vec![service(case.owner.clone()), service(case.claimant.clone())],
            vec![service(case.claimant.clone()), service(case.owner.clone())],
        ] {
            let snapshot = Snapshot {
                services: order.into_iter().map(Arc::new).collect(),
                ..Snapshot::default()
            };
            let plan = translated(&snapshot, &Config::default());
            let mut got: Vec<String> = plan
                .frontends
                .iter()
                .map(|f| format!("{} {} {}:{}", f.service, f.kind, f.address, f.port))
                .collect();
            got.sort();
            assert_eq!(got, case.expected, "{}", case.name);
            let left_out: Vec<String> = plan
                .left_out
                .iter()
                .map(|left| match &left.reason {
                    LeftOutReason::AddressTaken { owner, owner_kind } => {
                        format!("{} {} <- {owner} {owner_kind}", left.service, left.frontend)
                    }
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(left_out, case.left_out, "{}", case.name);
        }
    }
}

/// A Translator's frontends, sorted as `translate` sorts them.
fn remembered(
    translator: &mut Translator,
    snapshot: &Snapshot,
    node: &NodeContext,
) -> Vec<Frontend> {
    let mut frontends: Vec<Frontend> = translator
        .translate(snapshot, node, &Config::default())
        .into_iter()
        .map(|frontend| (**frontend).clone())
        .collect();
    frontends.sort_by(|a, b| super::frontend_order(a).cmp(&super::frontend_order(b)));
    frontends
}

#[test]
fn a_translator_follows_changed_added_and_removed_objects() {
    let api = service(json!({
        "metadata": {"name": "api"},
        "spec": {"clusterIP": "198.19.0.20", "ports": [{"port": 80}]},
    }));
    let mut snapshot = Snapshot {
        services: vec![web("NodePort", json!({})).into(), api.into()],
        endpoint_slices: vec![slice("web-abc", &[LOCAL_READY]).into()],
        ..Snapshot::default()
    };
    let node = node_1();
    let mut translator = Translator::default();
    let mut check = |snapshot: &Snapshot, node: &NodeContext, step: &str| {
        let got = remembered(&mut translator, snapshot, node);
        assert_eq!(got, translate(snapshot, node, &Config::default()), "{step}");
        got
    };
    assert_eq!(check(&snapshot, &node, "first").len(), 4);

    // A replaced slice (a new Arc, as a store makes on change).
    snapshot.endpoint_slices[0] = slice("web-abc", &[LOCAL_READY, REMOTE_READY]).into();
    let got = check(&snapshot, &node, "slice changed");
    assert_eq!(got[1].backends.len(), 2, "{:?}", lines(&got));

    // A second slice of the same Service, then the first one gone.
    snapshot
        .endpoint_slices
        .push(slice("web-def", &[LOCAL_TERMINATING]).into());
    check(&snapshot, &node, "slice added");
    snapshot.endpoint_slices.remove(0);
    let got = check(&snapshot, &node, "slice removed");
    assert!(
        got.iter()
            .filter(|f| f.service == "demo/web")
            .all(|f| f.backends.len() == 1 && f.backends[0].state == BackendState::Terminating),
        "{:?}",
        lines(&got)
    );

    // A Service gone, and another node context.
    snapshot.services.remove(1);
    assert!(
        check(&snapshot, &node, "service removed")
            .iter()
            .all(|f| f.service == "demo/web")
    );
    let moved = NodeContext {
        node_addresses: vec![Ipv4Addr::new(198, 18, 0, 99).into()],
        ..node_1()
    };
    let got = check(&snapshot, &moved, "node context changed");
    assert!(
        got.iter().any(|f| f.kind == FrontendKind::NodePort
            && f.address == IpAddr::from(Ipv4Addr::new(198, 18, 0, 99))),
        "{:?}",
        lines(&got)
    );
}

/// --external-ip-cidrs: externalIPs inside are programmed, those outside
/// left out with the reason; other kinds are never touched by it.
#[test]
fn external_ips_outside_the_allowed_cidrs_are_left_out() {
    let snapshot = Snapshot {
        services: vec![
            service(json!({
                "metadata": {"name": "web"},
                "spec": {"clusterIP": "198.19.0.7",
                         "externalIPs": ["198.19.200.1", "198.18.9.9"],
                         "ports": [{"port": 80}]},
            }))
            .into(),
        ],
        ..Snapshot::default()
    };
    let config = Config {
        external_ip_cidrs: vec!["198.19.200.0/24".parse().unwrap()],
        ..Config::default()
    };
    let plan = translated(&snapshot, &config);
    let got: Vec<String> = plan
        .frontends
        .iter()
        .map(|f| format!("{} {}", f.kind, f.address))
        .collect();
    assert_eq!(got, ["ClusterIP 198.19.0.7", "ExternalIP 198.19.200.1"]);
    assert_eq!(
        plan.left_out,
        [LeftOut {
            service: "demo/web".into(),
            frontend: "ExternalIP 198.18.9.9:80/TCP".into(),
            reason: LeftOutReason::ExternalIpNotAllowed,
        }]
    );
    let everything = translated(&snapshot, &Config::default());
    assert_eq!(everything.frontends.len(), 3);
    assert!(everything.left_out.is_empty());
}

#[test]
fn cidrs_parse_and_match_by_prefix() {
    let cidr: Cidr = "198.19.200.0/24".parse().unwrap();
    assert!(cidr.contains(Ipv4Addr::new(198, 19, 200, 255).into()));
    assert!(!cidr.contains(Ipv4Addr::new(198, 19, 201, 0).into()));
    let all: Cidr = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains(Ipv4Addr::new(198, 18, 1, 1).into()));
    let host: Cidr = "198.18.1.1/32".parse().unwrap();
    assert!(host.contains(Ipv4Addr::new(198, 18, 1, 1).into()));
    assert!(!host.contains(Ipv4Addr::new(198, 18, 1, 2).into()));
    for bad in ["198.18.1.1", "198.18.1.1/33", "fd00::/129", "x/8"] {
        let parsed: Result<Cidr, _> = bad.parse();
        assert!(parsed.is_err(), "{bad}");
    }
}

/// node-1 with an address of each family.
fn dual_stack_node() -> NodeContext {
    NodeContext {
        name: "node-1".into(),
        zone: None,
        node_addresses: ["198.18.0.11", "fd00:198:18::11"]
            .map(|text| text.parse().unwrap())
            .into(),
    }
}

/// `slice()` of the IPv6 address type.
fn slice_v6(name: &str, endpoints: &[&str]) -> EndpointSlice {
    let mut slice = slice(name, endpoints);
    slice.address_type = "IPv6".into();
    slice
}

/// A RequireDualStack LoadBalancer, IPv6 its primary family, with
/// addresses of both families everywhere one can be given.
fn dual_stack_web() -> Service {
    let mut service = web(
        "LoadBalancer",
        json!({
            "ipFamilyPolicy": "RequireDualStack",
            "ipFamilies": ["IPv6", "IPv4"],
            "clusterIP": "fd00:198:19::10",
            "clusterIPs": ["fd00:198:19::10", "198.19.0.10"],
            "externalIPs": ["fd00:198:18:200::1", "198.18.200.1"],
            "loadBalancerSourceRanges": ["198.18.0.0/16", "fd00:198:18::/48"],
        }),
    );
    service.status = serde_json::from_value(json!({"loadBalancer": {"ingress": [
        {"ip": "198.18.100.1"}, {"ip": "fd00:198:18:100::1"}
    ]}}))
    .unwrap();
    service
}

#[test]
fn a_dual_stack_service_gets_each_familys_frontends_from_that_familys_addresses_and_slices() {
    let v4 = slice("web-v4", &[LOCAL_READY]);
    let v6 = slice_v6("web-v6", &["fd00:198:18:1::11 node-1 ready"]);
    let frontends = service_frontends(
        &dual_stack_web(),
        &[&v4, &v6],
        &dual_stack_node(),
        &Config::default(),
    );
    assert_eq!(
        lines(&frontends),
        [
            "ClusterIP 198.19.0.10:80/TCP [198.18.1.11:8080 ready] reject",
            "NodePort 198.18.0.11:30080/TCP [198.18.1.11:8080 ready] reject",
            "LoadBalancer 198.18.100.1:80/TCP [198.18.1.11:8080 ready] reject",
            "ExternalIP 198.18.200.1:80/TCP [198.18.1.11:8080 ready] reject",
            "ClusterIP [fd00:198:19::10]:80/TCP [[fd00:198:18:1::11]:8080 ready] reject",
            "NodePort [fd00:198:18::11]:30080/TCP [[fd00:198:18:1::11]:8080 ready] reject",
            "LoadBalancer [fd00:198:18:100::1]:80/TCP [[fd00:198:18:1::11]:8080 ready] reject",
            "ExternalIP [fd00:198:18:200::1]:80/TCP [[fd00:198:18:1::11]:8080 ready] reject",
        ]
    );
    let ranges: Vec<(String, Vec<String>)> = frontends
        .iter()
        .filter(|f| f.kind == FrontendKind::LoadBalancer)
        .map(|f| {
            (
                f.address.to_string(),
                f.source_ranges.iter().map(ToString::to_string).collect(),
            )
        })
        .collect();
    assert_eq!(
        ranges,
        [
            ("198.18.100.1".into(), vec!["198.18.0.0/16".into()]),
            ("fd00:198:18:100::1".into(), vec!["fd00:198:18::/48".into()]),
        ]
    );
}

#[test]
fn cluster_ips_pair_with_ip_families_by_index() {
    let v4 = slice("web-v4", &[LOCAL_READY]);
    let v6 = slice_v6("web-v6", &["fd00:198:18:1::11 node-1 ready"]);
    let cluster_ips = |spec: Value| -> Vec<String> {
        service_frontends(
            &web("ClusterIP", spec),
            &[&v4, &v6],
            &dual_stack_node(),
            &Config::default(),
        )
        .iter()
        .map(|f| f.address.to_string())
        .collect()
    };
    assert_eq!(
        cluster_ips(
            json!({"ipFamilies": ["IPv6"], "clusterIP": "fd00:198:19::10", "clusterIPs": ["fd00:198:19::10"]})
        ),
        ["fd00:198:19::10"]
    );
    // A Service being upgraded to dual-stack: its second family's IP is
    // not allocated yet.
    assert_eq!(
        cluster_ips(json!({"ipFamilies": ["IPv4", "IPv6"], "clusterIPs": ["198.19.0.10"]})),
        ["198.19.0.10"]
    );
    // An address of the other family where the family list says one: the
    // API server never writes it, and it is not taken.
    assert_eq!(
        cluster_ips(
            json!({"ipFamilies": ["IPv4"], "clusterIP": "fd00:198:19::10", "clusterIPs": ["fd00:198:19::10"]})
        ),
        [] as [String; 0]
    );
    // Written before dual-stack: spec.clusterIP alone.
    assert_eq!(
        cluster_ips(json!({"clusterIP": "fd00:198:19::10", "clusterIPs": null})),
        ["fd00:198:19::10"]
    );
}

#[test]
fn ipv6_frontends_are_held_and_those_asking_for_what_ipv6_does_not_serve_left_out() {
    let mut sticky = dual_stack_web();
    sticky.metadata.name = Some("sticky".into());
    if let Some(spec) = sticky.spec.as_mut() {
        spec.session_affinity = Some("ClientIP".into());
        spec.load_balancer_source_ranges = None;
        spec.cluster_ips = Some(vec!["fd00:198:19::11".into(), "198.19.0.11".into()]);
        spec.external_ips = None;
        spec.ports.as_mut().unwrap()[0].node_port = Some(30081);
    }
    sticky.status = None;
    let snapshot = Snapshot {
        services: vec![Arc::new(dual_stack_web()), Arc::new(sticky)],
        endpoint_slices: vec![
            slice("web-v4", &[LOCAL_READY]).into(),
            slice_v6("web-v6", &["fd00:198:18:1::11 node-1 ready"]).into(),
        ],
        ..Snapshot::default()
    };
    let mut translator = Translator::default();
    let mut held: Vec<String> = translator
        .translate(&snapshot, &dual_stack_node(), &Config::default())
        .into_iter()
        .map(|frontend| frontend.label())
        .filter(|label| label.contains('['))
        .collect();
    held.sort();
    // web's IPv6 frontends but its load balancer (source ranges); none of
    // sticky's (sessionAffinity).
    assert_eq!(
        held,
        [
            "ClusterIP [fd00:198:19::10]:80/TCP",
            "ExternalIP [fd00:198:18:200::1]:80/TCP",
            "NodePort [fd00:198:18::11]:30080/TCP",
        ]
    );
    let mut left_out: Vec<String> = translator
        .left_out()
        .iter()
        .map(ToString::to_string)
        .collect();
    left_out.sort();
    assert_eq!(
        left_out,
        [
            "demo/sticky ClusterIP [fd00:198:19::11]:80/TCP: sessionAffinity is not served for IPv6 frontends yet",
            "demo/sticky NodePort [fd00:198:18::11]:30081/TCP: sessionAffinity is not served for IPv6 frontends yet",
            "demo/web LoadBalancer [fd00:198:18:100::1]:80/TCP: loadBalancerSourceRanges is not served for IPv6 frontends yet",
        ]
    );
}
