//! deploy/ parses into the Kubernetes types, and the agent's ClusterRole
//! grants list and watch on Services, EndpointSlices and Nodes, nothing else.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::{collections::BTreeSet, path::PathBuf};

use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::ServiceAccount,
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};

fn documents(file: &str) -> Vec<serde_json::Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file);
    let text = std::fs::read_to_string(path).unwrap();
    text.split("\n---\n")
        .map(|document| serde_saphyr::from_str(document).unwrap())
        .collect()
}

fn typed<T: serde::de::DeserializeOwned>(documents: &[serde_json::Value], kind: &str) -> T {
    let document = documents
        .iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"));
    serde_json::from_value(document.clone()).unwrap()
}

#[test]
fn cluster_role_grants_list_and_watch_on_three_kinds_only() {
    let rbac = documents("rbac.yaml");
    let role: ClusterRole = typed(&rbac, "ClusterRole");
    let mut granted = BTreeSet::new();
    for rule in role.rules.unwrap() {
        assert!(rule.resource_names.is_none(), "{rule:?}");
        assert!(rule.non_resource_urls.is_none(), "{rule:?}");
        for group in rule.api_groups.unwrap() {
            for resource in rule.resources.clone().unwrap() {
                for verb in &rule.verbs {
                    granted.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    let expected: BTreeSet<(String, String, String)> = [
        ("", "services"),
        ("", "nodes"),
        ("discovery.k8s.io", "endpointslices"),
    ]
    .into_iter()
    .flat_map(|(group, resource)| {
        ["list", "watch"].map(|verb| (group.to_owned(), resource.to_owned(), verb.to_owned()))
    })
    .collect();
    assert_eq!(granted, expected);

    let binding: ClusterRoleBinding = typed(&rbac, "ClusterRoleBinding");
    assert_eq!(binding.role_ref.name, "svc-agent");
    let account: ServiceAccount = typed(&rbac, "ServiceAccount");
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(Some(&subject.name), account.metadata.name.as_ref());
    assert_eq!(subject.namespace, account.metadata.namespace);
}

#[test]
fn daemon_set_runs_on_every_node_in_the_host_network() {
    let daemon_set: DaemonSet = typed(&documents("daemonset.yaml"), "DaemonSet");
    let pod = daemon_set.spec.template.spec.unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.service_account_name.as_deref(), Some("svc-agent"));
    let tolerations = pod.tolerations.unwrap();
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none()),
        "a toleration for every taint"
    );
    let container = &pod.containers[0];
    let capabilities = container
        .security_context
        .as_ref()
        .unwrap()
        .capabilities
        .clone()
        .unwrap();
    assert_eq!(capabilities.drop.unwrap(), ["ALL"]);
    assert_eq!(
        capabilities.add.unwrap(),
        ["BPF", "NET_ADMIN", "PERFMON", "SYS_RESOURCE"]
    );
    let mounts: Vec<&str> = container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(mounts, ["/sys/fs/bpf", "/sys/fs/cgroup"]);
}
