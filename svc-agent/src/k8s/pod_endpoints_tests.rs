use serde_json::{Value, json};

use super::*;

fn service(spec: Value) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "demo"},
        "spec": spec,
    }))
    .expect("valid Service")
}

fn web_service() -> Service {
    service(json!({
        "clusterIP": "198.19.0.10",
        "selector": {"app": "nginx"},
        "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
    }))
}

/// A running, ready nginx Pod `name` in `demo` with container port http=80
/// on node-1; `patch` is merged into the object (null removes a field).
fn pod(name: &str, ip: &str, patch: Value) -> Pod {
    let mut object = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "demo", "labels": {"app": "nginx"}},
        "spec": {
            "nodeName": "node-1",
            "containers": [{"name": "nginx", "ports": [{"name": "http", "containerPort": 80}]}],
        },
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    });
    merge(&mut object, patch);
    serde_json::from_value(object).expect("valid Pod")
}

fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(&key);
                } else {
                    merge(target.entry(key).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch,
    }
}

fn nodes() -> Vec<Node> {
    vec![
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "node-1", "labels": {"topology.kubernetes.io/zone": "zone-a"}},
        }))
        .expect("valid Node"),
    ]
}

/// "ADDRESS:PORT ready=.. serving=.. terminating=.. node=.. zone=.." per endpoint and port.
fn describe(slices: &[EndpointSlice]) -> Vec<String> {
    let mut lines = Vec::new();
    for slice in slices {
        assert_eq!(slice.address_type, "IPv4");
        let labels = slice.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get(LABEL_SERVICE_NAME).map(String::as_str),
            Some("web")
        );
        for endpoint in slice.endpoints.as_deref().unwrap_or_default() {
            let conditions = endpoint.conditions.clone().unwrap_or_default();
            for port in slice.ports.as_deref().unwrap_or_default() {
                lines.push(format!(
                    "{}:{} {}/{} ready={} serving={} terminating={} node={} zone={}",
                    endpoint.addresses.join(","),
                    port.port.unwrap_or_default(),
                    port.name.as_deref().unwrap_or_default(),
                    port.protocol.as_deref().unwrap_or_default(),
                    conditions.ready.unwrap_or_default(),
                    conditions.serving.unwrap_or_default(),
                    conditions.terminating.unwrap_or_default(),
                    endpoint.node_name.as_deref().unwrap_or("-"),
                    endpoint.zone.as_deref().unwrap_or("-"),
                ));
            }
        }
    }
    lines
}

#[test]
fn ready_pods_become_ready_endpoints_with_node_and_zone() {
    let slices = slices_from_pods(
        &web_service(),
        &[pod("web-1", "198.18.1.11", json!({}))],
        &nodes(),
    );
    assert_eq!(
        describe(&slices),
        [
            "198.18.1.11:80 http/TCP ready=true serving=true terminating=false node=node-1 zone=zone-a"
        ]
    );
}

#[test]
fn pod_state_decides_the_endpoint_conditions() {
    let deleting = json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}});
    let not_ready = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}});
    // (pod patch, expected endpoint or None when the Pod is no endpoint)
    let table = [
        (json!({}), Some("ready=true serving=true terminating=false")),
        (
            not_ready.clone(),
            Some("ready=false serving=false terminating=false"),
        ),
        (
            json!({"status": {"conditions": null}}),
            Some("ready=false serving=false terminating=false"),
        ),
        (
            deleting.clone(),
            Some("ready=false serving=true terminating=true"),
        ),
        (
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
            Some("ready=false serving=false terminating=true"),
        ),
        (json!({"status": {"phase": "Succeeded"}}), None),
        (json!({"status": {"phase": "Failed"}}), None),
        (json!({"status": {"podIP": null}}), None),
        (json!({"status": {"podIP": "fd00::11"}}), None),
        (
            json!({"spec": {"nodeName": null}}),
            Some("ready=true serving=true terminating=false"),
        ),
    ];
    for (patch, want) in table {
        let slices = slices_from_pods(
            &web_service(),
            &[pod("web-1", "198.18.1.11", patch.clone())],
            &nodes(),
        );
        let got = describe(&slices);
        match want {
            None => assert!(got.is_empty(), "{patch}: {got:?}"),
            Some(want) => {
                assert_eq!(got.len(), 1, "{patch}: {got:?}");
                assert!(got[0].contains(want), "{patch}: {got:?}");
            }
        }
    }
}

#[test]
fn publish_not_ready_addresses_makes_every_endpoint_ready() {
    let service = service(json!({
        "clusterIP": "198.19.0.10",
        "selector": {"app": "nginx"},
        "publishNotReadyAddresses": true,
        "ports": [{"name": "http", "port": 80, "targetPort": 80}],
    }));
    let not_ready = pod(
        "web-1",
        "198.18.1.11",
        json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
    );
    let got = describe(&slices_from_pods(&service, &[not_ready], &nodes()));
    assert_eq!(got.len(), 1);
    assert!(got[0].contains("ready=true serving=false"), "{got:?}");
}

#[test]
fn only_pods_in_the_namespace_matching_every_selector_label_count() {
    let service = service(json!({
        "clusterIP": "198.19.0.10",
        "selector": {"app": "nginx", "tier": "web"},
        "ports": [{"name": "http", "port": 80, "targetPort": 80}],
    }));
    let both = json!({"metadata": {"labels": {"app": "nginx", "tier": "web", "extra": "x"}}});
    let pods = [
        pod("match", "198.18.1.11", both.clone()),
        pod("one-label", "198.18.1.12", json!({})),
        pod(
            "other-value",
            "198.18.1.13",
            json!({"metadata": {"labels": {"app": "nginx", "tier": "db"}}}),
        ),
        pod(
            "other-namespace",
            "198.18.1.14",
            json!({"metadata": {"namespace": "prod", "labels": {"app": "nginx", "tier": "web"}}}),
        ),
    ];
    let got: Vec<String> = describe(&slices_from_pods(&service, &pods, &nodes()))
        .iter()
        .map(|line| line.split(' ').next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(got, ["198.18.1.11:80"]);
}

#[test]
fn the_seed_storys_wrong_selector_selects_nothing() {
    let broken = service(json!({
        "clusterIP": "198.19.0.13",
        "selector": {"app": "web"},
        "ports": [{"port": 80}],
    }));
    let pods = [
        pod("web-1", "198.18.1.11", json!({})),
        pod("web-2", "198.18.1.12", json!({})),
    ];
    assert!(slices_from_pods(&broken, &pods, &nodes()).is_empty());
}

#[test]
fn services_without_selector_or_external_name_get_no_slices() {
    let pods = [pod("web-1", "198.18.1.11", json!({}))];
    let table = [
        json!({"clusterIP": "198.19.0.10", "ports": [{"port": 80}]}),
        json!({"clusterIP": "198.19.0.10", "selector": {}, "ports": [{"port": 80}]}),
        json!({"type": "ExternalName", "externalName": "web.example", "selector": {"app": "nginx"}}),
    ];
    for spec in table {
        assert!(
            slices_from_pods(&service(spec.clone()), &pods, &nodes()).is_empty(),
            "{spec}"
        );
    }
}

#[test]
fn target_ports_resolve_per_pod() {
    let service = service(json!({
        "clusterIP": "198.19.0.10",
        "selector": {"app": "nginx"},
        "ports": [
            {"name": "http", "port": 80, "targetPort": "http"},
            {"name": "metrics", "port": 9000, "targetPort": 9113},
            {"name": "plain", "port": 7000},
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"},
        ],
    }));
    let containers = |http: i32| {
        json!({"spec": {"containers": [
            {"name": "nginx", "ports": [{"name": "http", "containerPort": http}, {"name": "dns", "containerPort": 5353}]},
        ]}})
    };
    let pods = [
        pod("web-1", "198.18.1.11", containers(8080)),
        pod("web-2", "198.18.1.12", containers(8081)),
        // The named port lives in a sidecar (an init container that keeps running).
        pod(
            "web-3",
            "198.18.1.13",
            json!({"spec": {
                "containers": [{"name": "app"}],
                "initContainers": [{"name": "proxy", "restartPolicy": "Always", "ports": [{"name": "http", "containerPort": 8082}]}],
            }}),
        ),
    ];
    let mut got = describe(&slices_from_pods(&service, &pods, &nodes()));
    got.sort();
    let got: Vec<String> = got
        .iter()
        .map(|line| line.split(" ready").next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        got,
        [
            // dns is TCP in the Pods, UDP in the Service: not resolved.
            "198.18.1.11:7000 plain/TCP",
            "198.18.1.11:8080 http/TCP",
            "198.18.1.11:9113 metrics/TCP",
            "198.18.1.12:7000 plain/TCP",
            "198.18.1.12:8081 http/TCP",
            "198.18.1.12:9113 metrics/TCP",
            "198.18.1.13:7000 plain/TCP",
            "198.18.1.13:8082 http/TCP",
            "198.18.1.13:9113 metrics/TCP",
        ]
    );
}

#[test]
fn services_with_their_own_slices_keep_them() {
    let own_slice: EndpointSlice = serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "web-own", "namespace": "demo", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["198.18.9.9"]}],
    }))
    .expect("valid EndpointSlice");
    let other: Service = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "api", "namespace": "demo"},
        "spec": {"clusterIP": "198.19.0.11", "selector": {"app": "nginx"}, "ports": [{"port": 80}]},
    }))
    .expect("valid Service");
    let mut snapshot = Snapshot {
        services: vec![web_service().into(), other.into()],
        endpoint_slices: vec![own_slice.into()],
        pods: vec![pod("web-1", "198.18.1.11", json!({}))],
        ..Snapshot::default()
    };
    add_missing_slices(&mut snapshot);
    let web: Vec<&str> = snapshot
        .slices_of("demo", "web")
        .filter_map(|slice| slice.metadata.name.as_deref())
        .collect();
    let api: Vec<&str> = snapshot
        .slices_of("demo", "api")
        .filter_map(|slice| slice.metadata.name.as_deref())
        .collect();
    assert_eq!(web, ["web-own"]);
    assert_eq!(api, ["api-pods-1"]);
}

#[test]
fn a_dual_stack_service_gets_a_slice_of_each_family_from_the_pods_addresses() {
    let dual = service(json!({
        "clusterIP": "fd00:198:19::10",
        "clusterIPs": ["fd00:198:19::10", "198.19.0.10"],
        "ipFamilies": ["IPv6", "IPv4"],
        "ipFamilyPolicy": "RequireDualStack",
        "selector": {"app": "nginx"},
        "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
    }));
    let pods = [
        pod(
            "web-a",
            "198.18.1.10",
            json!({"status": {"podIPs": [{"ip": "198.18.1.10"}, {"ip": "fd00:198:18:1::10"}]}}),
        ),
        // Only an IPv4 address yet: in the IPv4 slice only.
        pod("web-b", "198.18.1.11", json!({})),
    ];
    let slices = slices_from_pods(&dual, &pods, &nodes());
    let summary: Vec<(String, String, Vec<String>)> = slices
        .iter()
        .map(|slice| {
            (
                slice.metadata.name.clone().unwrap(),
                slice.address_type.clone(),
                slice
                    .endpoints
                    .iter()
                    .flatten()
                    .map(|endpoint| endpoint.addresses.join(","))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "web-pods6-1".to_owned(),
                "IPv6".to_owned(),
                vec!["fd00:198:18:1::10".to_owned()]
            ),
            (
                "web-pods-1".to_owned(),
                "IPv4".to_owned(),
                vec!["198.18.1.10".to_owned(), "198.18.1.11".to_owned()]
            ),
        ]
    );
    // A Service written before dual-stack, with an IPv6 cluster IP only.
    let v6_only = service(json!({
        "clusterIP": "fd00:198:19::10",
        "selector": {"app": "nginx"},
        "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
    }));
    let slices = slices_from_pods(&v6_only, &pods, &nodes());
    assert_eq!(
        slices
            .iter()
            .map(|slice| slice.address_type.as_str())
            .collect::<Vec<_>>(),
        ["IPv6"]
    );
}
