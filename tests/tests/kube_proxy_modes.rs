//! Each way the kube-proxy benchmark serves Services forwards: a curl from
//! the external client to a NodePort, and from a pod to a ClusterIP,
//! through svc-lb, through kube-proxy's iptables rules (both backends) and
//! nftables rules, and straight to a pod; and still forwards after one
//! endpoint change.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests panic on failure"
)]

use tests::kube_proxy::{
    self, NodePorts,
    modes::{self, Mode},
};

fn forwards_before_and_after_one_change(mode: Mode) {
    let lab = modes::lab().expect("lab up (root)");
    let services = kube_proxy::services(3, &modes::endpoints(&lab), NodePorts::Last);
    let mut programmed = modes::program(&lab, mode, &services).unwrap();
    let targets = modes::targets(&lab, mode, &services).unwrap();
    let pod_targets = modes::pod_targets(&lab, mode, &services);
    assert!(!pod_targets.is_empty());
    for target in &targets {
        // Ten requests: the pods of both nodes answer some.
        for _ in 0..10 {
            let answer = modes::check_forwards(&lab, mode, *target).unwrap();
            assert!(answer.pod.starts_with("backend-"), "{answer:?}");
            if mode == Mode::SvcLbDsr {
                // Also node-2's pods, reached by direct server return.
                assert_eq!(answer.client.ip(), svc_lab::CLIENT_ADDRESS, "{answer:?}");
            }
        }
    }
    for target in &pod_targets {
        let answer = modes::check_pod_forwards(&lab, mode, *target).unwrap();
        assert!(answer.pod.starts_with("backend-"), "{answer:?}");
    }
    modes::change_one_endpoint(&lab, mode, &services, &mut programmed).unwrap();
    if mode.is_svclb() {
        // The agent's path wrote the change: node-1's maps hold one backend
        // fewer for the last Service's ClusterIP, the same for the others.
        let held = lab.tables(modes::NODES[0]).unwrap().read().unwrap();
        for service in &services {
            let frontend = held
                .iter()
                .map(|state| &state.frontend)
                .find(|f| f.address == service.cluster_ip)
                .unwrap_or_else(|| panic!("{} not programmed", service.name));
            let expected = if service.name == services[services.len() - 1].name {
                service.endpoints.len() - 1
            } else {
                service.endpoints.len()
            };
            assert_eq!(frontend.backends.len(), expected, "{}", service.name);
        }
    }
    for target in &targets {
        modes::check_forwards(&lab, mode, *target).unwrap();
    }
    for target in &pod_targets {
        modes::check_pod_forwards(&lab, mode, *target).unwrap();
    }
}

#[test]
fn svclb_forwards_to_a_nodeport() {
    forwards_before_and_after_one_change(Mode::SvcLb);
}

#[test]
fn svclb_dsr_forwards_to_a_nodeport_keeping_the_clients_address() {
    forwards_before_and_after_one_change(Mode::SvcLbDsr);
}

#[test]
fn iptables_legacy_rules_forward_to_a_nodeport() {
    forwards_before_and_after_one_change(Mode::Iptables);
}

#[test]
fn iptables_nft_rules_forward_to_a_nodeport() {
    forwards_before_and_after_one_change(Mode::IptablesNft);
}

#[test]
fn nftables_rules_forward_to_a_nodeport() {
    forwards_before_and_after_one_change(Mode::Nftables);
}

#[test]
fn direct_path_reaches_every_pod() {
    forwards_before_and_after_one_change(Mode::Direct);
}
