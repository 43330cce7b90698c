//! Rules as kube-proxy's nftables proxier writes them, as an `nft -f`
//! transaction (kubernetes/kubernetes `pkg/proxy/nftables/proxier.go`,
//! `syncProxyRules` and `setupNFTables`; expected text in
//! `pkg/proxy/nftables/proxier_test.go`, `baseRules`).
//!
//! Layout, table `ip kube-proxy`: the nat hooks jump to `services`, which
//! looks the destination up in two verdict maps, `service-ips` (address .
//! protocol . port) and, for the node's addresses (`nodeport-ips`),
//! `service-nodeports` (protocol . port); each Service port has a
//! `service-*` chain choosing an endpoint with `numgen random mod N vmap`,
//! an `external-*` chain (mark for masquerade, then the service chain) and
//! one `endpoint-*` chain per endpoint that DNATs. `masquerading` runs in
//! postrouting. The filter hooks check new connections against the
//! no-endpoint and cluster-ips maps, as upstream does.
use std::{fmt::Write as _, net::Ipv4Addr};

use super::{CLUSTER_CIDR, MASQUERADE_MARK, SERVICE_CIDR, ServicePort, TARGET_PORT, chain_hash};

const TABLE: &str = "ip kube-proxy";

/// `NAMESPACE/NAME/tcp/PORTNAME`, the readable part of the chain names.
fn chain_base(service: &ServicePort) -> String {
    format!(
        "{}/{}/tcp/{}",
        service.namespace,
        service.name,
        service.port_name()
    )
}

/// service-<hash8>-ns/name/tcp/port.
pub fn service_chain(service: &ServicePort) -> String {
    let base = chain_base(service);
    format!("service-{}-{base}", chain_hash(&base, 8))
}

/// external-<hash8>-ns/name/tcp/port (same hash as the service chain).
pub fn external_chain(service: &ServicePort) -> String {
    let base = chain_base(service);
    format!("external-{}-{base}", chain_hash(&base, 8))
}

/// endpoint-<hash8>-ns/name/tcp/port__ip/port.
pub fn endpoint_chain(service: &ServicePort, endpoint: Ipv4Addr) -> String {
    let base = format!("{}__{endpoint}/{TARGET_PORT}", chain_base(service));
    format!("endpoint-{}-{base}", chain_hash(&base, 8))
}

/// The transaction that programs `services` into an empty namespace;
/// `node_ips` accept NodePort traffic.
pub fn ruleset(node_ips: &[Ipv4Addr], services: &[ServicePort]) -> String {
    let mut out = String::with_capacity(4096 + services.len() * 2048);
    base_rules(&mut out, node_ips);
    for service in services {
        service_rules(&mut out, service);
    }
    out
}

/// What kube-proxy's incremental sync sends when `removed` left
/// `service` (which still lists it): the service chain rewritten, the
/// endpoint chain deleted.
pub fn endpoint_removed(service: &ServicePort, removed: Ipv4Addr) -> String {
    let mut remaining = service.clone();
    remaining.endpoints.retain(|e| *e != removed);
    let mut out = String::new();
    let chain = service_chain(&remaining);
    let _ = writeln!(out, "flush chain {TABLE} {chain}");
    service_chain_rules(&mut out, &remaining);
    let _ = writeln!(
        out,
        "delete chain {TABLE} {}",
        endpoint_chain(service, removed)
    );
    out
}

fn base_rules(out: &mut String, node_ips: &[Ipv4Addr]) {
    let t = TABLE;
    let mark = MASQUERADE_MARK;
    let _ = write!(
        out,
        "add table {t} {{ comment \"rules for kube-proxy\" ; }}\n\
add set {t} cluster-ips {{ type ipv4_addr ; comment \"Active ClusterIPs\" ; }}\n\
add set {t} nodeport-ips {{ type ipv4_addr ; comment \"IPs that accept NodePort traffic\" ; }}\n\
add map {t} firewall-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment \"destinations that are subject to LoadBalancerSourceRanges\" ; }}\n\
add map {t} no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ; comment \"vmap to drop or reject packets to service nodeports with no endpoints\" ; }}\n\
add map {t} no-endpoint-services {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment \"vmap to drop or reject packets to services with no endpoints\" ; }}\n\
add map {t} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }}\n\
add map {t} service-nodeports {{ type inet_proto . inet_service : verdict ; comment \"NodePort traffic\" ; }}\n\
add chain {t} cluster-ips-check\n\
add chain {t} filter-prerouting-pre-dnat {{ type filter hook prerouting priority -110 ; }}\n\
add chain {t} filter-output-pre-dnat {{ type filter hook output priority -110 ; }}\n\
add chain {t} filter-forward {{ type filter hook forward priority 0 ; }}\n\
add chain {t} filter-input {{ type filter hook input priority 0 ; }}\n\
add chain {t} filter-output {{ type filter hook output priority 0 ; }}\n\
add chain {t} firewall-check\n\
add chain {t} mark-for-masquerade\n\
add chain {t} masquerading\n\
add chain {t} nat-output {{ type nat hook output priority -100 ; }}\n\
add chain {t} nat-postrouting {{ type nat hook postrouting priority 100 ; }}\n\
add chain {t} nat-prerouting {{ type nat hook prerouting priority -100 ; }}\n\
add chain {t} nodeport-endpoints-check\n\
add chain {t} reject-chain {{ comment \"helper for @no-endpoint-services / @no-endpoint-nodeports\" ; }}\n\
add chain {t} services\n\
add chain {t} service-endpoints-check\n\
add rule {t} cluster-ips-check ip daddr @cluster-ips reject comment \"Reject traffic to invalid ports of ClusterIPs\"\n\
add rule {t} cluster-ips-check ip daddr {{ {SERVICE_CIDR} }} drop comment \"Drop traffic to unallocated ClusterIPs\"\n\
add rule {t} filter-prerouting-pre-dnat ct state new jump firewall-check\n\
add rule {t} filter-forward ct state new jump service-endpoints-check\n\
add rule {t} filter-forward ct state new jump cluster-ips-check\n\
add rule {t} filter-input ct state new jump nodeport-endpoints-check\n\
add rule {t} filter-input ct state new jump service-endpoints-check\n\
add rule {t} filter-output ct state new jump service-endpoints-check\n\
add rule {t} filter-output-pre-dnat ct state new jump firewall-check\n\
add rule {t} filter-output ct state new jump cluster-ips-check\n\
add rule {t} firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips\n\
add rule {t} mark-for-masquerade mark set mark or {mark}\n\
add rule {t} masquerading mark and {mark} == 0 return\n\
add rule {t} masquerading mark set mark xor {mark}\n\
add rule {t} masquerading masquerade fully-random\n\
add rule {t} nat-output jump services\n\
add rule {t} nat-postrouting jump masquerading\n\
add rule {t} nat-prerouting jump services\n\
add rule {t} nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports\n\
add rule {t} reject-chain reject\n\
add rule {t} services ip daddr . meta l4proto . th dport vmap @service-ips\n\
add rule {t} services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports\n\
add rule {t} service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services\n"
    );
    for ip in node_ips {
        let _ = writeln!(out, "add element {t} nodeport-ips {{ {ip} }}");
    }
}

/// The `service-*` chain's rules: masquerade off-cluster sources, then pick
/// an endpoint.
fn service_chain_rules(out: &mut String, service: &ServicePort) {
    let t = TABLE;
    let chain = service_chain(service);
    let _ = writeln!(
        out,
        "add rule {t} {chain} ip daddr {} ip saddr != {CLUSTER_CIDR} jump mark-for-masquerade",
        service.cluster_ip
    );
    let targets: Vec<String> = service
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| format!("{i} : goto {}", endpoint_chain(service, *e)))
        .collect();
    let _ = writeln!(
        out,
        "add rule {t} {chain} numgen random mod {} vmap {{ {} }}",
        service.endpoints.len(),
        targets.join(" , ")
    );
}

fn service_rules(out: &mut String, service: &ServicePort) {
    let t = TABLE;
    let chain = service_chain(service);
    // Chains before the rules that jump to them.
    let _ = writeln!(out, "add chain {t} {chain}");
    for endpoint in &service.endpoints {
        let ep = endpoint_chain(service, *endpoint);
        let _ = writeln!(
            out,
            "add chain {t} {ep}\n\
             add rule {t} {ep} ip saddr {endpoint} jump mark-for-masquerade\n\
             add rule {t} {ep} meta l4proto tcp dnat to {endpoint}:{TARGET_PORT}"
        );
    }
    service_chain_rules(out, service);
    let _ = writeln!(
        out,
        "add element {t} cluster-ips {{ {} }}\n\
         add element {t} service-ips {{ {} . tcp . {} : goto {chain} }}",
        service.cluster_ip, service.cluster_ip, service.port
    );
    // The external chain only for Services reachable from outside.
    if let Some(node_port) = service.node_port {
        let external = external_chain(service);
        let _ = writeln!(
            out,
            "add chain {t} {external}\n\
             add rule {t} {external} jump mark-for-masquerade\n\
             add rule {t} {external} goto {chain}\n\
             add element {t} service-nodeports {{ tcp . {node_port} : goto {external} }}"
        );
    }
}
