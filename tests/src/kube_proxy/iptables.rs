//! Rules as kube-proxy's iptables proxier writes them for `iptables-restore`
//! (kubernetes/kubernetes `pkg/proxy/iptables/proxier.go`, `syncProxyRules`;
//! expected text in `pkg/proxy/iptables/proxier_test.go`).
//!
//! Layout, nat table: PREROUTING and OUTPUT jump to KUBE-SERVICES, which
//! holds one rule per ClusterIP (to KUBE-SVC-*) and, last, the jump to
//! KUBE-NODEPORTS for local destinations; KUBE-NODEPORTS sends each NodePort
//! to KUBE-EXT-* (mark for masquerade, then KUBE-SVC-*); KUBE-SVC-* picks an
//! endpoint with `statistic --mode random --probability 1/(n-i)` and jumps
//! to KUBE-SEP-*, which DNATs; POSTROUTING masquerades what was marked
//! (KUBE-POSTROUTING). Filter table: KUBE-FORWARD accepts marked and
//! established traffic and drops conntrack-invalid packets.
//!
//! kube-proxy installs the jumps from the built-in chains with separate
//! `iptables -I` calls and restores with `--noflush`; here one restore
//! file holds them too and replaces the tables whole (a full resync).
use std::fmt::Write as _;

use super::{CLUSTER_CIDR, MASQUERADE_MARK, ServicePort, TARGET_PORT, chain_hash};

/// KUBE-SVC-<hash>: base32(sha256(servicePortName + protocol))[:16].
pub fn service_chain(service: &ServicePort) -> String {
    format!(
        "KUBE-SVC-{}",
        chain_hash(&format!("{}tcp", service.service_port_name()), 16)
    )
}

/// KUBE-EXT-<hash>, same hash as the service chain.
pub fn external_chain(service: &ServicePort) -> String {
    format!(
        "KUBE-EXT-{}",
        chain_hash(&format!("{}tcp", service.service_port_name()), 16)
    )
}

/// KUBE-SEP-<hash>: base32(sha256(servicePortName + protocol + endpoint))[:16].
pub fn endpoint_chain(service: &ServicePort, endpoint: std::net::Ipv4Addr) -> String {
    format!(
        "KUBE-SEP-{}",
        chain_hash(
            &format!("{}tcp{endpoint}:{TARGET_PORT}", service.service_port_name()),
            16
        )
    )
}

/// The whole restore input for `services` (filter and nat tables).
pub fn ruleset(services: &[ServicePort]) -> String {
    let mut out = String::with_capacity(256 + services.len() * 2048);
    filter_table(&mut out);
    nat_table(&mut out, services);
    out
}

fn filter_table(out: &mut String) {
    let mark = MASQUERADE_MARK;
    out.push_str(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :KUBE-SERVICES - [0:0]\n:KUBE-EXTERNAL-SERVICES - [0:0]\n:KUBE-FORWARD - [0:0]\n\
         :KUBE-NODEPORTS - [0:0]\n:KUBE-PROXY-FIREWALL - [0:0]\n",
    );
    out.push_str(
        "-A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n\
         -A INPUT -m comment --comment \"kubernetes health check service ports\" -j KUBE-NODEPORTS\n\
         -A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES\n\
         -A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n\
         -A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n\
         -A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES\n\
         -A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n\
         -A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n",
    );
    let _ = writeln!(
        out,
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {mark}/{mark} -j ACCEPT"
    );
    out.push_str(
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         COMMIT\n",
    );
}

fn nat_table(out: &mut String, services: &[ServicePort]) {
    let mark = MASQUERADE_MARK;
    out.push_str(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
         :KUBE-SERVICES - [0:0]\n:KUBE-NODEPORTS - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n",
    );
    for service in services {
        let _ = writeln!(out, ":{} - [0:0]", service_chain(service));
        if service.node_port.is_some() {
            let _ = writeln!(out, ":{} - [0:0]", external_chain(service));
        }
        for endpoint in &service.endpoints {
            let _ = writeln!(out, ":{} - [0:0]", endpoint_chain(service, *endpoint));
        }
    }
    out.push_str(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n",
    );
    let _ = writeln!(
        out,
        "-A KUBE-POSTROUTING -m mark ! --mark {mark}/{mark} -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --xor-mark {mark}\n\
         -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n\
         -A KUBE-MARK-MASQ -j MARK --or-mark {mark}"
    );
    // KUBE-SERVICES: every ClusterIP first, the NodePort jump last; a
    // NodePort packet is matched against all of them before its own rule.
    for service in services {
        let name = service.service_port_name();
        let _ = writeln!(
            out,
            "-A KUBE-SERVICES -m comment --comment \"{name} cluster IP\" -m tcp -p tcp -d {} --dport {} -j {}",
            service.cluster_ip,
            service.port,
            service_chain(service)
        );
    }
    out.push_str(
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n",
    );
    for service in services {
        let Some(node_port) = service.node_port else {
            continue;
        };
        let _ = writeln!(
            out,
            "-A KUBE-NODEPORTS -m comment --comment {} -m tcp -p tcp --dport {node_port} -j {}",
            service.service_port_name(),
            external_chain(service)
        );
    }
    for service in services {
        service_chains(out, service);
    }
    out.push_str("COMMIT\n");
}

/// KUBE-EXT-* (NodePort Services only), KUBE-SVC-* and the KUBE-SEP-*
/// chains of one Service port.
fn service_chains(out: &mut String, service: &ServicePort) {
    let name = service.service_port_name();
    let svc = service_chain(service);
    if service.node_port.is_some() {
        let ext = external_chain(service);
        let _ = writeln!(
            out,
            "-A {ext} -m comment --comment \"masquerade traffic for {name} external destinations\" -j KUBE-MARK-MASQ\n\
             -A {ext} -j {svc}"
        );
    }
    let _ = writeln!(
        out,
        "-A {svc} -m comment --comment \"{name} cluster IP\" -m tcp -p tcp -d {} --dport {} ! -s {CLUSTER_CIDR} -j KUBE-MARK-MASQ",
        service.cluster_ip, service.port
    );
    let count = service.endpoints.len();
    for (i, endpoint) in service.endpoints.iter().enumerate() {
        let sep = endpoint_chain(service, *endpoint);
        let comment = format!("\"{name} -> {endpoint}:{TARGET_PORT}\"");
        if i + 1 < count {
            let probability = 1.0 / (count - i) as f64;
            let _ = writeln!(
                out,
                "-A {svc} -m comment --comment {comment} -m statistic --mode random --probability {probability:.10} -j {sep}"
            );
        } else {
            let _ = writeln!(out, "-A {svc} -m comment --comment {comment} -j {sep}");
        }
    }
    for endpoint in &service.endpoints {
        let sep = endpoint_chain(service, *endpoint);
        let _ = writeln!(
            out,
            "-A {sep} -m comment --comment {name} -s {endpoint} -j KUBE-MARK-MASQ\n\
             -A {sep} -m comment --comment {name} -m tcp -p tcp -j DNAT --to-destination {endpoint}:{TARGET_PORT}"
        );
    }
}
