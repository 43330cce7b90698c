//! The generated rule text for a small case, against the names and rules
//! upstream's own tests expect.
use std::net::Ipv4Addr;

use super::{NodePorts, ServicePort, iptables, nftables, services};

fn upstream_svc1() -> ServicePort {
    ServicePort {
        namespace: "ns1".into(),
        name: "svc1".into(),
        cluster_ip: Ipv4Addr::new(172, 30, 0, 41),
        port: 80,
        node_port: Some(3001),
        endpoints: vec![Ipv4Addr::new(10, 180, 0, 1)],
    }
}

#[test]
fn chain_names_match_upstream_hashes() {
    // pkg/proxy/iptables/proxier_test.go: KUBE-SVC-XPGD46QRK7WJZT7O and
    // KUBE-SEP-SXIVWICOYRO3J4NJ for ns1/svc1:p80 -> 10.180.0.1:80 (but
    // upstream's endpoint port is 80; ours is 8080, so only the SVC name
    // is compared); pkg/proxy/nftables/proxier_test.go:
    // service-ULMVA6XW-ns1/svc1/tcp/p80.
    let svc = upstream_svc1();
    assert_eq!(iptables::service_chain(&svc), "KUBE-SVC-XPGD46QRK7WJZT7O");
    assert_eq!(iptables::external_chain(&svc), "KUBE-EXT-XPGD46QRK7WJZT7O");
    assert_eq!(
        nftables::service_chain(&svc),
        "service-ULMVA6XW-ns1/svc1/tcp/p80"
    );
    assert_eq!(
        super::chain_hash("ns1/svc1:p80tcp10.180.0.1:80", 16),
        "SXIVWICOYRO3J4NJ"
    );
}

#[test]
fn iptables_spreads_endpoints_with_decreasing_probabilities() {
    let list = services(
        2,
        &[
            Ipv4Addr::new(198, 18, 1, 10),
            Ipv4Addr::new(198, 18, 1, 11),
            Ipv4Addr::new(198, 18, 2, 10),
        ],
        NodePorts::All,
    );
    let text = iptables::ruleset(&list);
    let svc = iptables::service_chain(&list[1]);
    let picks: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&format!("-A {svc} ")) && l.contains(" -> "))
        .collect();
    assert_eq!(picks.len(), 3);
    assert!(
        picks[0].contains("--probability 0.3333333333"),
        "{}",
        picks[0]
    );
    assert!(
        picks[1].contains("--probability 0.5000000000"),
        "{}",
        picks[1]
    );
    assert!(!picks[2].contains("statistic"), "{}", picks[2]);
    let sep = iptables::endpoint_chain(&list[1], Ipv4Addr::new(198, 18, 2, 10));
    assert!(text.contains(&format!(
        "-A {sep} -m comment --comment bench/svc-1:p80 -m tcp -p tcp -j DNAT --to-destination 198.18.2.10:8080\n"
    )));
}

#[test]
fn iptables_nodeport_jump_is_the_last_rule_of_kube_services() {
    let list = services(3, &[Ipv4Addr::new(198, 18, 1, 10)], NodePorts::All);
    let text = iptables::ruleset(&list);
    let kube_services: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("-A KUBE-SERVICES "))
        .collect();
    assert_eq!(kube_services.len(), 4);
    assert!(kube_services[3].ends_with("-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"));
    let nodeports: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("-A KUBE-NODEPORTS "))
        .collect();
    assert!(
        nodeports[2].contains("--dport 20002 -j KUBE-EXT-"),
        "{}",
        nodeports[2]
    );
    assert!(text.contains("-j MASQUERADE --random-fully\n"));
    assert_eq!(text.matches("COMMIT\n").count(), 2);
}

#[test]
fn nftables_service_uses_numgen_over_every_endpoint() {
    let svc = upstream_svc1();
    let text = nftables::ruleset(&[Ipv4Addr::new(198, 18, 0, 11)], std::slice::from_ref(&svc));
    for line in [
        "add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 ip daddr 172.30.0.41 ip saddr != 198.18.0.0/16 jump mark-for-masquerade",
        "add rule ip kube-proxy services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports",
        "add element ip kube-proxy nodeport-ips { 198.18.0.11 }",
        "add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }",
        "add element ip kube-proxy service-nodeports { tcp . 3001 : goto external-ULMVA6XW-ns1/svc1/tcp/p80 }",
        "add rule ip kube-proxy masquerading masquerade fully-random",
    ] {
        assert!(text.lines().any(|l| l == line), "missing: {line}\n{text}");
    }
    let endpoint = nftables::endpoint_chain(&svc, Ipv4Addr::new(10, 180, 0, 1));
    assert!(text.contains(&format!(
        "numgen random mod 1 vmap {{ 0 : goto {endpoint} }}"
    )));
    assert!(text.contains(&format!(
        "add rule ip kube-proxy {endpoint} meta l4proto tcp dnat to 10.180.0.1:8080"
    )));
}

#[test]
fn nftables_endpoint_removal_rewrites_one_chain() {
    let list = services(
        1,
        &[Ipv4Addr::new(198, 18, 1, 10), Ipv4Addr::new(198, 18, 2, 10)],
        NodePorts::Last,
    );
    let removed = Ipv4Addr::new(198, 18, 2, 10);
    let text = nftables::endpoint_removed(&list[0], removed);
    let chain = nftables::service_chain(&list[0]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], format!("flush chain ip kube-proxy {chain}"));
    assert!(
        lines[2].contains("numgen random mod 1 vmap"),
        "{}",
        lines[2]
    );
    assert_eq!(
        lines[3],
        format!(
            "delete chain ip kube-proxy {}",
            nftables::endpoint_chain(&list[0], removed)
        )
    );
    assert_eq!(lines.len(), 4);
}

#[test]
fn only_the_last_service_gets_node_port_rules_unless_all_do() {
    let list = services(3, &[Ipv4Addr::new(198, 18, 1, 10)], NodePorts::Last);
    assert_eq!(
        list.iter().map(|s| s.node_port).collect::<Vec<_>>(),
        [None, None, Some(20002)]
    );
    let text = iptables::ruleset(&list);
    let nodeports: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("-A KUBE-NODEPORTS "))
        .collect();
    assert_eq!(nodeports.len(), 1);
    assert!(
        nodeports[0].contains("--dport 20002 -j KUBE-EXT-"),
        "{}",
        nodeports[0]
    );
    assert_eq!(text.matches(":KUBE-EXT-").count(), 1);
    // Every ClusterIP still has its rule in KUBE-SERVICES.
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("-A KUBE-SERVICES ") && l.contains(" cluster IP\" "))
            .count(),
        3
    );
    let nft = nftables::ruleset(&[Ipv4Addr::new(198, 18, 0, 11)], &list);
    assert_eq!(
        nft.matches("add element ip kube-proxy service-nodeports")
            .count(),
        1
    );
    assert_eq!(
        nft.matches("add element ip kube-proxy service-ips").count(),
        3
    );
    assert_eq!(nft.matches("add chain ip kube-proxy external-").count(), 1);
}
