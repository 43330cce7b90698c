use serde_json::json;

use super::*;

fn slice(
    name: &str,
    address_type: &str,
    ports: serde_json::Value,
    endpoints: serde_json::Value,
) -> EndpointSlice {
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "demo",
            "labels": {"kubernetes.io/service-name": "web"}
        },
        "addressType": address_type,
        "ports": ports,
        "endpoints": endpoints,
    }))
    .expect("valid EndpointSlice")
}

fn http_slice(name: &str, endpoints: serde_json::Value) -> EndpointSlice {
    slice(
        name,
        "IPv4",
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
        endpoints,
    )
}

fn summary(endpoints: &[Endpoint]) -> Vec<(String, bool, bool, bool, bool)> {
    endpoints
        .iter()
        .map(|ep| {
            (
                std::net::SocketAddr::new(ep.address, ep.port).to_string(),
                ep.ready,
                ep.serving,
                ep.terminating,
                ep.is_local,
            )
        })
        .collect()
}

/// Copies alike in locality, readiness and serving may still differ: in
/// terminating (an older controller writes `ready` alone: 198.18.1.14) or
/// in hints (slices rewritten one after the other: 198.18.1.15). Slice
/// names are random, so every field decides, never which slice came first.
#[test]
fn slices_merge_and_deduplicate_by_address_and_port() {
    let first = http_slice(
        "web-a",
        json!([
            {"addresses": ["198.18.1.12"], "conditions": {"ready": true}},
            {"addresses": ["198.18.1.11"], "conditions": {"ready": false, "serving": false}},
            {"addresses": ["198.18.1.14"], "conditions": {"ready": false}},
            {"addresses": ["198.18.1.15"], "hints": {"forZones": [{"name": "zone-a"}]}},
        ]),
    );
    let second = http_slice(
        "web-b",
        json!([
            {"addresses": ["198.18.1.11"], "conditions": {"ready": true}},
            {"addresses": ["198.18.1.12"], "conditions": {"ready": false}},
            {"addresses": ["198.18.1.13"]},
            {"addresses": ["198.18.1.14"], "conditions": {"ready": false, "serving": true, "terminating": true}},
            {"addresses": ["198.18.1.15"], "hints": {"forZones": [{"name": "zone-b"}]}},
        ]),
    );
    let forward = endpoints_of_port(
        [&first, &second],
        IpFamily::IPv4,
        "http",
        Protocol::TCP,
        "node-1",
    );
    let backward = endpoints_of_port(
        [&second, &first],
        IpFamily::IPv4,
        "http",
        Protocol::TCP,
        "node-1",
    );
    assert_eq!(forward, backward);
    // The ready copy wins; then the one serving while terminating.
    assert_eq!(
        summary(&forward),
        [
            ("198.18.1.11:8080".into(), true, true, false, false),
            ("198.18.1.12:8080".into(), true, true, false, false),
            ("198.18.1.13:8080".into(), true, true, false, false),
            ("198.18.1.14:8080".into(), false, true, true, false),
            ("198.18.1.15:8080".into(), true, true, false, false),
        ]
    );
}

#[test]
fn a_local_copy_of_an_endpoint_wins() {
    let remote = http_slice(
        "web-a",
        json!([{"addresses": ["198.18.1.11"], "nodeName": "node-2"}]),
    );
    let local = http_slice(
        "web-b",
        json!([{"addresses": ["198.18.1.11"], "nodeName": "node-1"}]),
    );
    let endpoints = endpoints_of_port(
        [&remote, &local],
        IpFamily::IPv4,
        "http",
        Protocol::TCP,
        "node-1",
    );
    assert_eq!(endpoints.len(), 1);
    assert!(endpoints[0].is_local);
}

#[test]
fn conditions_default_as_the_api_documents() {
    let slice = http_slice(
        "web-a",
        json!([
            {"addresses": ["198.18.1.11"]},
            {"addresses": ["198.18.1.12"], "conditions": {"ready": false, "serving": true, "terminating": true}},
        ]),
    );
    let endpoints = endpoints_of_port([&slice], IpFamily::IPv4, "http", Protocol::TCP, "node-1");
    assert_eq!(
        summary(&endpoints),
        [
            ("198.18.1.11:8080".into(), true, true, false, false),
            ("198.18.1.12:8080".into(), false, true, true, false),
        ]
    );
}

#[test]
fn named_port_is_found_by_name_and_protocol() {
    let slice = slice(
        "dns-a",
        "IPv4",
        json!([
            {"name": "dns", "port": 5353, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 5354, "protocol": "TCP"},
            {"name": "metrics", "port": 9153},
        ]),
        json!([{"addresses": ["198.18.1.11"]}]),
    );
    // (port name, protocol, port the endpoint listens on)
    let table = [
        ("dns", Protocol::UDP, Some(5353)),
        ("dns", Protocol::TCP, None),
        ("dns-tcp", Protocol::TCP, Some(5354)),
        ("metrics", Protocol::TCP, Some(9153)),
        ("missing", Protocol::TCP, None),
    ];
    for (name, protocol, want) in table {
        let endpoints = endpoints_of_port([&slice], IpFamily::IPv4, name, protocol, "node-1");
        let got = endpoints.first().map(|endpoint| endpoint.port);
        assert_eq!(got, want, "{name}/{protocol}");
    }
}

#[test]
fn unnamed_slice_port_is_the_unnamed_service_port() {
    let slice = slice(
        "web-a",
        "IPv4",
        json!([{"port": 8080}]),
        json!([{"addresses": ["198.18.1.11"]}]),
    );
    assert_eq!(
        endpoints_of_port([&slice], IpFamily::IPv4, "", Protocol::TCP, "n").len(),
        1
    );
    assert!(endpoints_of_port([&slice], IpFamily::IPv4, "http", Protocol::TCP, "n").is_empty());
}

#[test]
fn what_an_ipv4_proxier_cannot_use_is_skipped() {
    let endpoints = json!([{"addresses": ["198.18.1.11"]}]);
    let ports = json!([{"name": "http", "port": 8080}]);
    let table = [
        (
            "IPv6 slice",
            slice(
                "a",
                "IPv6",
                ports.clone(),
                json!([{"addresses": ["fd00::11"]}]),
            ),
        ),
        (
            "FQDN slice",
            slice(
                "b",
                "FQDN",
                ports.clone(),
                json!([{"addresses": ["web.example"]}]),
            ),
        ),
        (
            "port 0",
            slice(
                "c",
                "IPv4",
                json!([{"name": "http", "port": 0}]),
                endpoints.clone(),
            ),
        ),
        (
            "no port number",
            slice("d", "IPv4", json!([{"name": "http"}]), endpoints.clone()),
        ),
        (
            "no address",
            slice("e", "IPv4", ports.clone(), json!([{"addresses": []}])),
        ),
        (
            "IPv6 address in IPv4 slice",
            slice(
                "f",
                "IPv4",
                ports.clone(),
                json!([{"addresses": ["fd00::11"]}]),
            ),
        ),
    ];
    for (what, slice) in table {
        assert!(
            endpoints_of_port([&slice], IpFamily::IPv4, "http", Protocol::TCP, "n").is_empty(),
            "{what} was used"
        );
    }
}

#[test]
fn each_family_reads_the_slices_of_its_address_type_only() {
    let ports = json!([{"name": "http", "port": 8080}]);
    let v4 = slice(
        "web-v4",
        "IPv4",
        ports.clone(),
        json!([{"addresses": ["198.18.1.11"], "nodeName": "node-1"}]),
    );
    let v6 = slice(
        "web-v6",
        "IPv6",
        ports.clone(),
        json!([
            {"addresses": ["fd00:198:18:1::11"], "nodeName": "node-1"},
            {"addresses": ["198.18.1.12"]},
            {"addresses": ["fd00:198:18:2::12"], "conditions": {"ready": false, "serving": true, "terminating": true}}
        ]),
    );
    let of = |family| endpoints_of_port([&v4, &v6], family, "http", Protocol::TCP, "node-1");
    assert_eq!(
        summary(&of(IpFamily::IPv4)),
        [("198.18.1.11:8080".into(), true, true, false, true)]
    );
    assert_eq!(
        summary(&of(IpFamily::IPv6)),
        [
            ("[fd00:198:18:1::11]:8080".into(), true, true, false, true),
            ("[fd00:198:18:2::12]:8080".into(), false, true, true, false),
        ]
    );
}

#[test]
fn only_the_first_address_counts_and_hints_are_read() {
    let slice = http_slice(
        "web-a",
        json!([{
            "addresses": ["198.18.1.11", "198.18.1.99"],
            "nodeName": "node-1",
            "hints": {"forZones": [{"name": "zone-a"}], "forNodes": [{"name": "node-1"}]}
        }]),
    );
    let endpoints = endpoints_of_port([&slice], IpFamily::IPv4, "http", Protocol::TCP, "node-1");
    assert_eq!(
        summary(&endpoints),
        [("198.18.1.11:8080".into(), true, true, false, true)]
    );
    assert_eq!(
        endpoints[0].zone_hints,
        BTreeSet::from(["zone-a".to_owned()])
    );
    assert_eq!(
        endpoints[0].node_hints,
        BTreeSet::from(["node-1".to_owned()])
    );
}
