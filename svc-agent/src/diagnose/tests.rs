use std::path::PathBuf;

use super::*;
use crate::k8s::manifests;

fn seed() -> Snapshot {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/seed");
    manifests::load(&dir).unwrap()
}

/// The seed with `edit` applied to its objects, endpoints derived again.
fn seed_with(edit: impl FnOnce(&mut Snapshot)) -> Snapshot {
    let mut snapshot = seed();
    snapshot.endpoint_slices.clear();
    edit(&mut snapshot);
    crate::k8s::pod_endpoints::add_missing_slices(&mut snapshot);
    snapshot
}

fn service_mut<'a>(snapshot: &'a mut Snapshot, name: &str) -> &'a mut Service {
    let service = snapshot
        .services
        .iter_mut()
        .find(|s| s.metadata.name.as_deref() == Some(name))
        .unwrap();
    std::sync::Arc::make_mut(service)
}

#[test]
fn selector_matching_no_pod_names_the_closest_pods_and_the_label() {
    let findings = diagnose(&seed(), "default/web-broken", None, None).unwrap();
    let [Finding::SelectorMatchesNoPod { selector, closest }] = findings.as_slice() else {
        panic!("{findings:?}");
    };
    assert_eq!(selector, "app=web");
    // The Deployment first (what a user edits), then its three pods.
    assert_eq!(closest.len(), 4);
    assert_eq!(
        closest[0].workload,
        Some(("Deployment".to_owned(), Some(3)))
    );
    for candidate in closest {
        assert_eq!(
            candidate.differences,
            [LabelDifference {
                key: "app".into(),
                wanted: "web".into(),
                found: Some("nginx".into()),
            }]
        );
    }
    let text = findings[0].to_string();
    assert!(text.contains("closest: pod web-7d9c5b8f6d-4xk2p"), "{text}");
    assert!(
        text.contains("closest: Deployment default/web would make 3 pods labelled app=nginx"),
        "{text}"
    );
    assert!(
        text.contains("has app=nginx, selector wants app=web"),
        "{text}"
    );
}

/// The seed's situation before any cluster exists: a Deployment and the
/// Services as files, no pod. Its template stands for its pods.
#[test]
fn a_workload_template_stands_for_the_pods_it_will_make() {
    let snapshot = seed_with(|s| {
        s.pods.clear();
        s.workloads.push(crate::k8s::Workload {
            kind: "StatefulSet".into(),
            namespace: "default".into(),
            name: "db".into(),
            replicas: Some(1),
            labels: [("tier".to_owned(), "db".to_owned())].into(),
        });
    });
    let findings = diagnose(&snapshot, "default/web-broken", None, None).unwrap();
    let [Finding::SelectorMatchesNoPod { closest, .. }] = findings.as_slice() else {
        panic!("{findings:?}");
    };
    let named: Vec<String> = closest.iter().map(ToString::to_string).collect();
    assert_eq!(
        named,
        [
            "Deployment default/web would make 3 pods labelled app=nginx  has app=nginx, selector wants app=web"
        ],
        "the StatefulSet lacks the label: it ranks behind"
    );
}

/// A workload whose template the selector matches, without its pods: in
/// manifests they come once applied; in a cluster the workload makes none.
#[test]
fn a_workload_the_selector_matches_without_pods_is_named() {
    let without_pods = |from_cluster: bool| {
        seed_with(|s| {
            s.pods.clear();
            s.from_cluster = from_cluster;
            s.workloads.push(crate::k8s::Workload {
                kind: "ReplicaSet".into(),
                namespace: "default".into(),
                name: "web-5f6d".into(),
                replicas: Some(2),
                labels: [("app".to_owned(), "web".to_owned())].into(),
            });
        })
    };
    for from_cluster in [false, true] {
        let findings = diagnose(
            &without_pods(from_cluster),
            "default/web-broken",
            None,
            None,
        )
        .unwrap();
        let [Finding::WorkloadsMakeNoPod { workloads, .. }] = findings.as_slice() else {
            panic!("{findings:?}");
        };
        assert_eq!(workloads, &["ReplicaSet default/web-5f6d (2 replicas)"]);
        let text = findings[0].to_string();
        if from_cluster {
            assert!(text.contains("the workload makes none"), "{text}");
        } else {
            assert!(text.starts_with("no pod yet: ReplicaSet"), "{text}");
        }
    }
}

#[test]
fn a_missing_label_ranks_behind_a_differing_one() {
    let snapshot = seed_with(|s| {
        s.pods[0].metadata.labels = Some([("tier".to_owned(), "x".to_owned())].into());
    });
    let findings = diagnose(&snapshot, "default/web-broken", None, None).unwrap();
    let Finding::SelectorMatchesNoPod { closest, .. } = &findings[0] else {
        panic!("{findings:?}");
    };
    assert_eq!(closest.len(), 3, "the Deployment and two pods");
    assert!(closest.iter().all(|c| c.pod != "web-7d9c5b8f6d-4xk2p"));
}

#[test]
fn matching_pods_not_ready_are_named() {
    let snapshot = seed_with(|s| {
        let status = s.pods[1].status.as_mut().unwrap();
        status.conditions.as_mut().unwrap()[0].status = "False".into();
    });
    let findings = diagnose(&snapshot, "default/web-clusterip", None, None).unwrap();
    assert_eq!(
        findings,
        [Finding::PodsNotReady {
            pods: vec!["web-7d9c5b8f6d-9tq7m".into()],
            matching: 3,
        }]
    );
}

#[test]
fn target_port_name_not_among_the_pods_ports() {
    let snapshot = seed_with(|s| {
        let spec = service_mut(s, "web-clusterip").spec.as_mut().unwrap();
        spec.ports.as_mut().unwrap()[0].target_port = Some(IntOrString::String("web".into()));
    });
    let findings = diagnose(&snapshot, "default/web-clusterip", None, None).unwrap();
    let [
        Finding::TargetPortNotFound {
            target_port, pods, ..
        },
    ] = findings.as_slice()
    else {
        panic!("{findings:?}");
    };
    assert_eq!(target_port, "web");
    assert_eq!(pods.len(), 3);
}

#[test]
fn local_policy_without_local_endpoint_on_the_node() {
    // node-2 runs one web pod; make it not ready, so node-2 has none.
    let snapshot = seed_with(|s| {
        service_mut(s, "web-nodeport")
            .spec
            .as_mut()
            .unwrap()
            .external_traffic_policy = Some("Local".into());
        let status = s.pods[2].status.as_mut().unwrap();
        status.conditions.as_mut().unwrap()[0].status = "False".into();
    });
    let on_node_2 = diagnose(&snapshot, "default/web-nodeport", Some("node-2"), None).unwrap();
    assert!(
        on_node_2.contains(&Finding::LocalPolicyNoLocalEndpoint {
            node: "node-2".into()
        }),
        "{on_node_2:?}"
    );
    let on_node_1 = diagnose(&snapshot, "default/web-nodeport", Some("node-1"), None).unwrap();
    assert!(
        !on_node_1
            .iter()
            .any(|f| matches!(f, Finding::LocalPolicyNoLocalEndpoint { .. })),
        "{on_node_1:?}"
    );
}

fn kernel_of(snapshot: &Snapshot, node: &str, packets: u64) -> KernelView {
    let plan = model::plan(snapshot, node, &Config::default()).unwrap();
    KernelView {
        node: node.into(),
        frontends: plan
            .frontends
            .into_iter()
            .enumerate()
            .map(|(i, frontend)| FrontendState {
                frontend,
                rev_nat_id: i as u32 + 1,
                packets,
                bytes: packets * 60,
            })
            .collect(),
        left_out: Vec::new(),
    }
}

#[test]
fn frontend_missing_from_the_kernel() {
    let snapshot = seed();
    let mut kernel = kernel_of(&snapshot, "node-1", 5);
    kernel.frontends.retain(|s| {
        !(s.frontend.service == "default/web-nodeport" && s.frontend.kind == FrontendKind::NodePort)
    });
    let findings = diagnose(
        &snapshot,
        "default/web-nodeport",
        Some("node-1"),
        Some(&kernel),
    )
    .unwrap();
    let [Finding::FrontendMissing { frontends, .. }] = findings.as_slice() else {
        panic!("{findings:?}");
    };
    assert_eq!(frontends, &["NodePort 198.18.0.11:30080/TCP"]);
}

#[test]
fn frontend_present_but_no_packets() {
    let snapshot = seed();
    let kernel = kernel_of(&snapshot, "node-1", 0);
    let findings = diagnose(&snapshot, "default/web-lb", Some("node-1"), Some(&kernel)).unwrap();
    let [Finding::NoPackets { frontends, .. }] = findings.as_slice() else {
        panic!("{findings:?}");
    };
    assert_eq!(
        frontends.len(),
        3,
        "ClusterIP, NodePort, LoadBalancer: {frontends:?}"
    );
}

#[test]
fn a_serving_service_says_so() {
    let snapshot = seed();
    let kernel = kernel_of(&snapshot, "node-1", 7);
    let findings = diagnose(&snapshot, "default/web-lb", Some("node-1"), Some(&kernel)).unwrap();
    assert_eq!(findings, [Finding::Serving { endpoints: 3 }]);
}

#[test]
fn an_unknown_service_is_an_error() {
    let error = diagnose(&seed(), "default/nope", None, None).unwrap_err();
    assert_eq!(
        error.to_string(),
        "service default/nope not found in the manifests"
    );
}

/// An externalIP on another Service's ClusterIP is left out by the plan;
/// diagnose names the frontend and its owner. What the agent reports as
/// left out (a full map) shows beside it.
#[test]
fn frontends_left_out_are_named_with_their_reason() {
    let snapshot = seed_with(|s| {
        service_mut(s, "web-lb").spec.as_mut().unwrap().external_ips =
            Some(vec!["198.19.0.10".into()]);
    });
    let mut kernel = kernel_of(&snapshot, "node-1", 3);
    kernel.left_out.push(LeftOut {
        service: "default/web-lb".into(),
        frontend: String::new(),
        reason: model::LeftOutReason::MapFull {
            map: "SOURCE_RANGES_V1".into(),
        },
    });
    let findings = diagnose(&snapshot, "default/web-lb", Some("node-1"), Some(&kernel)).unwrap();
    let [Finding::LeftOut { node, reasons }] = findings.as_slice() else {
        panic!("{findings:?}");
    };
    assert_eq!(node, "node-1");
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].starts_with("ExternalIP 198.19.0.10:80/TCP: the address belongs to default/web-clusterip's ClusterIP"),
        "{reasons:?}"
    );
    assert_eq!(reasons[1], "the SOURCE_RANGES_V1 map is full");
    // Not the other Services' business.
    let findings = diagnose(
        &snapshot,
        "default/web-clusterip",
        Some("node-1"),
        Some(&kernel),
    )
    .unwrap();
    assert_eq!(findings, [Finding::Serving { endpoints: 3 }]);
}

/// A dual-stack NodePort on a node with an IPv6 address: its IPv6
/// NodePort answers the node and its pods only, and diagnose says so; the
/// IPv4 one is not named.
#[test]
fn ipv6_external_frontends_are_said_to_serve_the_node_and_its_pods_only() {
    let snapshot = seed_with(|s| {
        let spec = service_mut(s, "web-nodeport").spec.as_mut().unwrap();
        spec.ip_families = Some(vec!["IPv4".into(), "IPv6".into()]);
        spec.cluster_ips = Some(vec!["198.19.0.11".into(), "fd00:198:19::11".into()]);
        for pod in &mut s.pods {
            let status = pod.status.as_mut().unwrap();
            let v4 = status.pod_ip.clone().unwrap();
            let v6 = format!(
                "fd00:198:18:{}",
                v4.trim_start_matches("198.18.").replace('.', "::")
            );
            status.pod_ips = Some(
                [v4, v6]
                    .map(|ip| k8s_openapi::api::core::v1::PodIP { ip })
                    .into(),
            );
        }
        let node = &mut s.nodes[0];
        let addresses = node.status.as_mut().unwrap().addresses.as_mut().unwrap();
        addresses.push(k8s_openapi::api::core::v1::NodeAddress {
            type_: "InternalIP".into(),
            address: "fd00:198:18::11".into(),
        });
    });
    let findings = diagnose(&snapshot, "default/web-nodeport", Some("node-1"), None).unwrap();
    assert!(
        findings.contains(&Finding::Ipv6ExternalNotServed {
            node: "node-1".into(),
            frontends: vec!["NodePort [fd00:198:18::11]:30080/TCP".into()],
        }),
        "{findings:?}"
    );
    let text = findings
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(text.contains("not translated yet"), "{text}");
}
