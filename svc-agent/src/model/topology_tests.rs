//! The cases of upstream's TestCategorizeEndpoints (pkg/proxy/topology_test.go),
//! re-expressed with our addresses, plus same-node hints. Upstream cases
//! that only existed behind since-removed feature gates are given with
//! today's behaviour: terminating fallback is always on, and any topology
//! annotation value but "" and "disabled" turns hints on.
use std::{collections::BTreeSet, net::Ipv4Addr};

use super::*;

/// Endpoint 198.18.1.`host`:80. `flags`: R ready, S serving, T terminating,
/// L on this node.
fn ep(host: u8, flags: &str, zones: &[&str]) -> Endpoint {
    Endpoint {
        address: Ipv4Addr::new(198, 18, 1, host).into(),
        port: 80,
        ready: flags.contains('R'),
        serving: flags.contains('S'),
        terminating: flags.contains('T'),
        is_local: flags.contains('L'),
        zone_hints: zones.iter().map(|zone| (*zone).to_owned()).collect(),
        node_hints: BTreeSet::new(),
    }
}

fn with_node_hints(mut endpoint: Endpoint, nodes: &[&str]) -> Endpoint {
    endpoint.node_hints = nodes.iter().map(|node| (*node).to_owned()).collect();
    endpoint
}

/// `flags`: I internalTrafficPolicy Local, E externalTrafficPolicy Local,
/// X externally accessible (has a NodePort), H topology requested.
fn policy(flags: &str) -> TrafficPolicy {
    TrafficPolicy {
        internal_local: flags.contains('I'),
        external_local: flags.contains('E'),
        externally_accessible: flags.contains('X'),
        topology_requested: flags.contains('H'),
    }
}

struct Case {
    name: &'static str,
    zone: Option<&'static str>,
    policy: TrafficPolicy,
    endpoints: Vec<Endpoint>,
    /// Hosts of the expected Cluster endpoints; `None`: policy unused.
    cluster: Option<&'static [u8]>,
    local: Option<&'static [u8]>,
    has_any: bool,
}

fn four_zoned() -> Vec<Endpoint> {
    vec![
        ep(3, "RS", &["zone-a"]),
        ep(4, "RS", &["zone-b"]),
        ep(5, "RS", &["zone-c"]),
        ep(6, "RS", &["zone-a"]),
    ]
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "hints honoured when the Service asks for topology",
            zone: Some("zone-a"),
            policy: policy("H"),
            endpoints: four_zoned(),
            cluster: Some(&[3, 6]),
            local: None,
            has_any: true,
        },
        Case {
            name: "hints ignored when the Service does not ask (annotation empty or disabled)",
            zone: Some("zone-a"),
            policy: policy(""),
            endpoints: four_zoned(),
            cluster: Some(&[3, 4, 5, 6]),
            local: None,
            has_any: true,
        },
        Case {
            name: "eTP=Local: topology applies to Cluster endpoints, not to Local ones",
            zone: Some("zone-a"),
            policy: policy("EXH"),
            endpoints: vec![
                ep(3, "RSL", &["zone-a"]),
                ep(4, "RSL", &["zone-b"]),
                ep(5, "RS", &["zone-c"]),
                ep(6, "RS", &["zone-a"]),
            ],
            cluster: Some(&[3, 6]),
            local: Some(&[3, 4]),
            has_any: true,
        },
        Case {
            name: "iTP=Local: topology applies to Cluster endpoints, not to Local ones",
            zone: Some("zone-a"),
            policy: policy("IXH"),
            endpoints: vec![
                ep(3, "RSL", &["zone-a"]),
                ep(4, "RSL", &["zone-b"]),
                ep(5, "RS", &["zone-c"]),
                ep(6, "RS", &["zone-a"]),
            ],
            cluster: Some(&[3, 6]),
            local: Some(&[3, 4]),
            has_any: true,
        },
        Case {
            name: "node without zone label: no filtering",
            zone: None,
            policy: policy("H"),
            endpoints: vec![ep(3, "RS", &["zone-a"])],
            cluster: Some(&[3]),
            local: None,
            has_any: true,
        },
        Case {
            name: "empty zone label: no filtering",
            zone: Some(""),
            policy: policy("H"),
            endpoints: vec![ep(3, "RS", &["zone-a"])],
            cluster: Some(&[3]),
            local: None,
            has_any: true,
        },
        Case {
            name: "node in a zone no endpoint is hinted for: no filtering",
            zone: Some("zone-b"),
            policy: policy("H"),
            endpoints: vec![ep(3, "RS", &["zone-a"])],
            cluster: Some(&[3]),
            local: None,
            has_any: true,
        },
        Case {
            name: "unready endpoint in the zone is left out",
            zone: Some("zone-a"),
            policy: policy("H"),
            endpoints: vec![
                ep(3, "RS", &["zone-a"]),
                ep(4, "RS", &["zone-b"]),
                ep(5, "RS", &["zone-c"]),
                ep(6, "", &["zone-a"]),
            ],
            cluster: Some(&[3]),
            local: None,
            has_any: true,
        },
        Case {
            name: "only unready endpoints in the zone: no filtering",
            zone: Some("zone-a"),
            policy: policy("H"),
            endpoints: vec![
                ep(3, "", &["zone-a"]),
                ep(4, "RS", &["zone-b"]),
                ep(5, "RS", &["zone-c"]),
                ep(6, "", &["zone-a"]),
            ],
            cluster: Some(&[4, 5]),
            local: None,
            has_any: true,
        },
        Case {
            name: "an endpoint without hints: no filtering",
            zone: Some("zone-a"),
            policy: policy("H"),
            endpoints: vec![
                ep(3, "RS", &["zone-a"]),
                ep(4, "RS", &["zone-b"]),
                ep(5, "RS", &[]),
                ep(6, "RS", &["zone-a"]),
            ],
            cluster: Some(&[3, 4, 5, 6]),
            local: None,
            has_any: true,
        },
        Case {
            name: "several hints per endpoint: any endpoint hinted for the zone",
            zone: Some("zone-c"),
            policy: policy("H"),
            endpoints: vec![
                ep(3, "RS", &["zone-a", "zone-b", "zone-c"]),
                ep(4, "RS", &["zone-b", "zone-c"]),
                ep(5, "RS", &["zone-b", "zone-d"]),
                ep(6, "RS", &["zone-c"]),
            ],
            cluster: Some(&[3, 4, 6]),
            local: None,
            has_any: true,
        },
        Case {
            name: "conflicting topology and localness",
            zone: Some("zone-a"),
            policy: policy("EXH"),
            endpoints: vec![
                ep(10, "RSL", &["zone-a"]),
                ep(11, "RSL", &["zone-b"]),
                ep(12, "RS", &["zone-a"]),
                ep(13, "RS", &["zone-b"]),
            ],
            cluster: Some(&[10, 12]),
            local: Some(&[10, 11]),
            has_any: true,
        },
        Case {
            name: "iTP=Local without endpoints",
            zone: None,
            policy: policy("I"),
            endpoints: vec![],
            cluster: None,
            local: Some(&[]),
            has_any: false,
        },
        Case {
            name: "iTP=Local with only remote endpoints: none here, some elsewhere",
            zone: None,
            policy: policy("I"),
            endpoints: vec![ep(10, "RS", &[]), ep(11, "RS", &[])],
            cluster: None,
            local: Some(&[]),
            has_any: true,
        },
        Case {
            name: "iTP=Local with all endpoints local",
            zone: None,
            policy: policy("I"),
            endpoints: vec![ep(10, "RSL", &[]), ep(11, "RSL", &[])],
            cluster: None,
            local: Some(&[10, 11]),
            has_any: true,
        },
        Case {
            name: "iTP=Local with some endpoints local",
            zone: None,
            policy: policy("I"),
            endpoints: vec![ep(10, "RSL", &[]), ep(11, "RS", &[])],
            cluster: None,
            local: Some(&[10]),
            has_any: true,
        },
        Case {
            name: "Cluster policy, no endpoint ready nor terminating",
            zone: None,
            policy: policy(""),
            endpoints: vec![ep(10, "", &[]), ep(11, "", &[])],
            cluster: Some(&[]),
            local: None,
            has_any: false,
        },
        Case {
            name: "Cluster policy, some endpoints ready",
            zone: None,
            policy: policy(""),
            endpoints: vec![ep(10, "", &[]), ep(11, "RS", &[])],
            cluster: Some(&[11]),
            local: None,
            has_any: true,
        },
        Case {
            name: "Cluster policy, all endpoints serving and terminating: fall back to them",
            zone: None,
            policy: policy(""),
            endpoints: vec![ep(10, "STL", &[]), ep(11, "ST", &[])],
            cluster: Some(&[10, 11]),
            local: None,
            has_any: true,
        },
        Case {
            name: "terminating but not serving endpoints are no fallback",
            zone: None,
            policy: policy(""),
            endpoints: vec![ep(10, "T", &[]), ep(11, "T", &[])],
            cluster: Some(&[]),
            local: None,
            has_any: false,
        },
        Case {
            name: "iTP=Local, eTP=Cluster, some endpoints local",
            zone: None,
            policy: policy("IX"),
            endpoints: vec![ep(10, "RSL", &[]), ep(11, "RS", &[])],
            cluster: Some(&[10, 11]),
            local: Some(&[10]),
            has_any: true,
        },
        Case {
            name: "iTP=Cluster, eTP=Local, some endpoints local",
            zone: None,
            policy: policy("EX"),
            endpoints: vec![ep(10, "RSL", &[]), ep(11, "RS", &[])],
            cluster: Some(&[10, 11]),
            local: Some(&[10]),
            has_any: true,
        },
        Case {
            name: "iTP=Local, eTP=Local, some endpoints local",
            zone: None,
            policy: policy("IEX"),
            endpoints: vec![ep(10, "RSL", &[]), ep(11, "RS", &[])],
            cluster: Some(&[10, 11]),
            local: Some(&[10]),
            has_any: true,
        },
        Case {
            name: "iTP=Local, eTP=Local, all endpoints remote",
            zone: None,
            policy: policy("IEX"),
            endpoints: vec![ep(10, "RS", &[]), ep(11, "RS", &[])],
            cluster: Some(&[10, 11]),
            local: Some(&[]),
            has_any: true,
        },
        Case {
            name: "iTP=Local, eTP=Local, all endpoints remote and terminating",
            zone: None,
            policy: policy("IEX"),
            endpoints: vec![ep(10, "ST", &[]), ep(11, "ST", &[])],
            cluster: Some(&[10, 11]),
            local: Some(&[]),
            has_any: true,
        },
        Case {
            name: "iTP=Cluster, eTP=Local, with terminating endpoints",
            zone: None,
            policy: policy("EX"),
            endpoints: vec![
                ep(10, "RS", &[]),
                ep(11, "L", &[]),
                ep(12, "STL", &[]),
                ep(13, "ST", &[]),
            ],
            cluster: Some(&[10]),
            local: Some(&[12]),
            has_any: true,
        },
        Case {
            name: "eTP=Local ignored when not externally accessible",
            zone: None,
            policy: policy("E"),
            endpoints: vec![ep(10, "RS", &[]), ep(11, "RSL", &[])],
            cluster: Some(&[10, 11]),
            local: None,
            has_any: true,
        },
        Case {
            name: "no Cluster endpoints for an iTP=Local internal-only Service",
            zone: None,
            policy: policy("I"),
            endpoints: vec![ep(10, "RS", &[]), ep(11, "RSL", &[])],
            cluster: None,
            local: Some(&[11]),
            has_any: true,
        },
        Case {
            name: "same-node hints win over zone hints when one is for this node",
            zone: Some("zone-a"),
            policy: policy("H"),
            endpoints: vec![
                with_node_hints(ep(3, "RS", &["zone-a"]), &["node-1"]),
                with_node_hints(ep(4, "RS", &["zone-a"]), &["node-2"]),
                with_node_hints(ep(5, "RS", &["zone-b"]), &["node-3"]),
            ],
            cluster: Some(&[3]),
            local: None,
            has_any: true,
        },
        Case {
            name: "same-node hints for other nodes only: zone hints decide",
            zone: Some("zone-a"),
            policy: policy("H"),
            endpoints: vec![
                with_node_hints(ep(3, "RS", &["zone-a"]), &["node-2"]),
                with_node_hints(ep(4, "RS", &["zone-a"]), &["node-2"]),
                with_node_hints(ep(5, "RS", &["zone-b"]), &["node-3"]),
            ],
            cluster: Some(&[3, 4]),
            local: None,
            has_any: true,
        },
        Case {
            name: "ready endpoints win over terminating ones even outside the zone",
            zone: Some("zone-a"),
            policy: policy("H"),
            endpoints: vec![ep(3, "ST", &["zone-a"]), ep(4, "RS", &["zone-b"])],
            cluster: Some(&[4]),
            local: None,
            has_any: true,
        },
    ]
}

fn hosts(endpoints: Option<&Vec<Endpoint>>) -> Option<Vec<u8>> {
    endpoints.map(|endpoints| {
        endpoints
            .iter()
            .map(|endpoint| match endpoint.address {
                std::net::IpAddr::V4(address) => address.octets()[3],
                std::net::IpAddr::V6(_) => unreachable!("IPv4 endpoints only"),
            })
            .collect()
    })
}

#[test]
fn categorize_matches_upstream_cases() {
    let mut failures = Vec::new();
    for case in cases() {
        let node = NodeTopology {
            name: "node-1",
            zone: case.zone,
        };
        let got = categorize(&case.endpoints, &case.policy, node);
        let want_cluster = case.cluster.map(<[u8]>::to_vec);
        let want_local = case.local.map(<[u8]>::to_vec);
        if hosts(got.cluster.as_ref()) != want_cluster
            || hosts(got.local.as_ref()) != want_local
            || got.has_any != case.has_any
        {
            failures.push(format!(
                "{}: cluster {:?} (want {want_cluster:?}), local {:?} (want {want_local:?}), \
                 has_any {} (want {})",
                case.name,
                hosts(got.cluster.as_ref()),
                hosts(got.local.as_ref()),
                got.has_any,
                case.has_any
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn policy_uses_cluster_and_local_endpoints_like_upstream() {
    // (flags, uses Cluster, uses Local)
    let table = [
        ("", true, false),
        ("I", false, true),
        ("IX", true, true),
        ("E", true, false),
        ("EX", true, true),
        ("IEX", true, true),
    ];
    for (flags, cluster, local) in table {
        let policy = policy(flags);
        assert_eq!(policy.uses_cluster_endpoints(), cluster, "{flags}: cluster");
        assert_eq!(policy.uses_local_endpoints(), local, "{flags}: local");
    }
}
