use std::path::PathBuf;

use k8s_openapi::jiff::Timestamp;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use super::{query::Query, *};

fn seed(file: &str) -> Snapshot {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/seed")
        .join(file);
    svc_agent::k8s::manifests::load(&path).unwrap()
}

fn seed_cluster() -> (Cluster, Vec<Change>) {
    let dir = seed("");
    let mut cluster = Cluster::with_nodes("svl1x0".into(), &dir, 2).unwrap();
    let changes = cluster.apply(&dir, true).unwrap();
    (cluster, changes)
}

#[test]
fn the_seed_makes_two_nodes_three_replicas_and_four_services() {
    let (cluster, changes) = seed_cluster();
    let nodes: Vec<&str> = cluster.nodes.iter().map(NodeRecord::name).collect();
    assert_eq!(nodes, ["node-1", "node-2"]);
    // web-pods.yaml holds the Deployment's Pods: the Deployment makes
    // them, they are not made twice.
    assert_eq!(cluster.pods.len(), 3);
    let started = changes
        .iter()
        .filter(|c| matches!(c, Change::StartPod(_)))
        .count();
    assert_eq!(started, 3);
    let per_node: Vec<usize> = ["node-1", "node-2"]
        .iter()
        .map(|n| cluster.pods.iter().filter(|p| p.node == *n).count())
        .collect();
    assert_eq!(per_node, [2, 1]);
    let ips: Vec<String> = cluster
        .pods
        .iter()
        .map(|p| p.object.status.as_ref().unwrap().pod_ip.clone().unwrap())
        .collect();
    assert_eq!(ips, ["198.18.1.10", "198.18.2.10", "198.18.1.11"]);
    assert_eq!(cluster.services.len(), 4);
}

#[test]
fn services_keep_fitting_addresses_and_get_the_rest() {
    let (cluster, _) = seed_cluster();
    let service = |name: &str| {
        cluster
            .services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
            .unwrap()
    };
    let lb = service("web-lb");
    assert_eq!(
        lb.spec.as_ref().unwrap().cluster_ip.as_deref(),
        Some("198.19.0.12")
    );
    // 198.19.100.1 is not routed to the nodes: replaced by a pool address.
    assert_eq!(lb_ingress(lb), [std::net::Ipv4Addr::new(198, 19, 255, 1)]);
    let node_port = service("web-nodeport")
        .spec
        .as_ref()
        .unwrap()
        .ports
        .as_ref()
        .unwrap()[0]
        .node_port;
    assert_eq!(node_port, Some(30080));
    assert!(lb_ingress(service("web-clusterip")).is_empty());
}

#[test]
fn a_service_without_addresses_gets_them() {
    let (mut cluster, _) = seed_cluster();
    let service: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "fresh"},
        "spec": {"type": "LoadBalancer", "selector": {"app": "nginx"},
                 "ports": [{"port": 80}]}
    }))
    .unwrap();
    let snapshot = Snapshot {
        services: vec![service.into()],
        ..Snapshot::default()
    };
    cluster.apply(&snapshot, false).unwrap();
    let fresh = cluster.services.last().unwrap();
    let spec = fresh.spec.as_ref().unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("198.19.1.1"));
    assert_eq!(spec.ports.as_ref().unwrap()[0].node_port, Some(30000));
    assert_eq!(
        lb_ingress(fresh),
        [std::net::Ipv4Addr::new(198, 19, 255, 2)]
    );
    assert_eq!(fresh.metadata.namespace.as_deref(), Some("default"));
}

#[test]
fn ip_families_and_cluster_ips_are_set_as_a_dual_stack_api_server_sets_them() {
    let (mut cluster, _) = seed_cluster();
    let apply = |cluster: &mut Cluster, name: &str, extra: serde_json::Value| {
        let mut spec = serde_json::json!({
            "type": "LoadBalancer", "selector": {"app": "nginx"}, "ports": [{"port": 80}]
        });
        for (key, value) in extra.as_object().unwrap() {
            spec[key] = value.clone();
        }
        let service: Service = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name}, "spec": spec
        }))
        .unwrap();
        let snapshot = Snapshot {
            services: vec![service.into()],
            ..Snapshot::default()
        };
        cluster.apply(&snapshot, false).map(|_| {
            let service = cluster.services.last().unwrap();
            let spec = service.spec.clone().unwrap();
            let ingress: Vec<String> = lb_ingress(service)
                .iter()
                .map(ToString::to_string)
                .collect();
            (
                spec.ip_families.unwrap(),
                spec.cluster_ips.unwrap(),
                ingress,
            )
        })
    };
    let (families, cluster_ips, ingress) =
        apply(&mut cluster, "single", serde_json::json!({})).unwrap();
    assert_eq!(families, ["IPv4"]);
    assert!(
        cluster_ips[0].starts_with("198.19.") && cluster_ips.len() == 1,
        "{cluster_ips:?}"
    );
    assert!(
        ingress.len() == 1 && ingress[0].starts_with("198.19.255."),
        "{ingress:?}"
    );

    let (families, cluster_ips, ingress) = apply(
        &mut cluster,
        "both",
        serde_json::json!({"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv6"]}),
    )
    .unwrap();
    assert_eq!(families, ["IPv6", "IPv4"]);
    assert!(
        cluster_ips[0].starts_with("fd00:198:19::") && cluster_ips[1].starts_with("198.19."),
        "{cluster_ips:?}"
    );
    assert!(
        ingress.len() == 2 && ingress[0].starts_with("fd00:198:19::ff:"),
        "{ingress:?}"
    );

    let (families, cluster_ips, _) = apply(
        &mut cluster,
        "v6",
        serde_json::json!({"ipFamilies": ["IPv6"], "clusterIP": "fd00:198:19::20"}),
    )
    .unwrap();
    assert_eq!(
        (families, cluster_ips),
        (vec!["IPv6".to_owned()], vec!["fd00:198:19::20".to_owned()])
    );

    for (name, extra, says) in [
        (
            "two-single",
            serde_json::json!({"ipFamilies": ["IPv4", "IPv6"]}),
            "need ipFamilyPolicy PreferDualStack or RequireDualStack",
        ),
        (
            "taken",
            serde_json::json!({"ipFamilies": ["IPv6"], "clusterIP": "fd00:198:19::20"}),
            "fd00:198:19::20 is already allocated",
        ),
        (
            "outside",
            serde_json::json!({"ipFamilies": ["IPv6"], "clusterIP": "fd00:198:18::20"}),
            "outside the lab's Service ranges",
        ),
    ] {
        let error = apply(&mut cluster, name, extra).unwrap_err().to_string();
        assert!(error.contains(says), "{name}: {error}");
    }
}

#[test]
fn changing_a_deployment_selector_is_refused_until_it_is_deleted() {
    let (mut cluster, _) = seed_cluster();
    let mut changed = seed("web-deployment.yaml");
    let spec = &mut changed.deployments[0].spec;
    spec.selector.match_labels = Some([("app".to_owned(), "web".to_owned())].into());
    let error = cluster.apply(&changed, false).unwrap_err();
    let text = error.to_string();
    assert!(text.contains("field is immutable"), "{text}");
    assert!(text.contains("svc-lab delete deployment/web"), "{text}");
    assert_eq!(cluster.pods.len(), 3, "a refused apply changes nothing");

    let deleted = cluster.delete("deployment", "default/web").unwrap();
    let terminating: Vec<&String> = deleted
        .iter()
        .filter_map(|c| match c {
            Change::TerminatePod(key) => Some(key),
            _ => None,
        })
        .collect();
    assert_eq!(terminating.len(), 3);
    // Terminating until the kubelet's part is done.
    assert!(
        cluster
            .pods
            .iter()
            .all(|pod| pod.object.metadata.deletion_timestamp.is_some())
    );
    for key in terminating.into_iter().cloned().collect::<Vec<_>>() {
        assert!(cluster.finish_termination(&key).is_some());
    }
    assert!(cluster.pods.is_empty());
    cluster.apply(&changed, false).unwrap();
    assert_eq!(cluster.pods.len(), 3);
}

#[test]
fn nodes_cannot_be_applied_after_up() {
    let (mut cluster, _) = seed_cluster();
    let error = cluster.apply(&seed("nodes.yaml"), false).unwrap_err();
    assert!(matches!(error, ClusterError::NodeAfterUp { .. }));
}

#[test]
fn deleting_what_is_not_there_names_it() {
    let (mut cluster, _) = seed_cluster();
    let error = cluster.delete("svc", "default/nope").unwrap_err();
    assert_eq!(error.to_string(), "services \"nope\" not found");
}

#[test]
fn get_endpoints_prints_v1_endpoints_with_not_ready_addresses_apart() {
    let (mut cluster, _) = seed_cluster();
    // The second pod (198.18.2.10) turns not ready.
    let status = cluster.pods[1].object.status.as_mut().unwrap();
    for condition in status.conditions.iter_mut().flatten() {
        if condition.type_ == "Ready" {
            condition.status = "False".into();
        }
    }
    let listing = render::get(
        &cluster,
        "endpoints",
        None,
        render::Output::Json,
        &Query::default(),
        Timestamp::now(),
    )
    .unwrap();
    let list: serde_json::Value = serde_json::from_str(&listing.stdout).unwrap();
    assert_eq!(list["kind"], "List");
    let clusterip = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["metadata"]["name"] == "web-clusterip")
        .unwrap();
    assert_eq!(clusterip["kind"], "Endpoints");
    assert_eq!(clusterip["apiVersion"], "v1");
    let subsets = clusterip["subsets"].as_array().unwrap();
    assert_eq!(subsets.len(), 1, "{clusterip}");
    let ips = |field: &str| -> Vec<&str> {
        subsets[0][field]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["ip"].as_str().unwrap())
            .collect()
    };
    assert_eq!(ips("addresses"), ["198.18.1.10", "198.18.1.11"]);
    assert_eq!(ips("notReadyAddresses"), ["198.18.2.10"]);
    assert_eq!(subsets[0]["addresses"][0]["targetRef"]["kind"], "Pod");
    assert_eq!(
        subsets[0]["ports"],
        serde_json::json!([{"name": "http", "port": 80, "protocol": "TCP"}])
    );
    let table = render::endpoints_table(&cluster, &Query::default(), Timestamp::now()).unwrap();
    assert!(
        table.contains("web-clusterip   198.18.1.10:80,198.18.1.11:80   "),
        "{table}"
    );
}

#[test]
fn get_endpointslices_keeps_the_slices() {
    let (cluster, _) = seed_cluster();
    let list = render::endpoint_slices_json(&cluster, &Query::default()).unwrap();
    let kinds: Vec<&str> = list
        .iter()
        .map(|item| item["kind"].as_str().unwrap())
        .collect();
    assert!(!kinds.is_empty());
    assert!(
        kinds.iter().all(|kind| *kind == "EndpointSlice"),
        "{kinds:?}"
    );
}

fn started(changes: &[Change]) -> usize {
    changes
        .iter()
        .filter(|c| matches!(c, Change::StartPod(_)))
        .count()
}

fn terminated(changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::TerminatePod(key) => Some(key.clone()),
            _ => None,
        })
        .collect()
}

/// A Deployment's pod deleted: it terminates (still there, terminating)
/// and the ReplicaSet makes a replacement at once.
#[test]
fn a_deleted_pod_of_a_deployment_is_replaced() {
    let (mut cluster, _) = seed_cluster();
    let victim = cluster.pods[0].key();
    let changes = cluster.delete("pod", &victim).unwrap();
    assert_eq!(terminated(&changes), std::slice::from_ref(&victim));
    assert_eq!(started(&changes), 1);
    let live = cluster
        .pods
        .iter()
        .filter(|pod| pod.object.metadata.deletion_timestamp.is_none())
        .count();
    assert_eq!(live, 3);
    let endpoints = render::endpoints(&cluster, &cluster.services[0]);
    let ready: Vec<String> = endpoints
        .subsets
        .iter()
        .flatten()
        .flat_map(|s| s.addresses.iter().flatten().map(|a| a.ip.clone()))
        .collect();
    let victim_ip = cluster
        .pod(&victim)
        .unwrap()
        .object
        .status
        .as_ref()
        .unwrap()
        .pod_ip
        .clone()
        .unwrap();
    assert!(
        !ready.contains(&victim_ip),
        "a terminating pod is not ready: {ready:?}"
    );
    cluster.finish_termination(&victim).unwrap();
    assert_eq!(cluster.pods.len(), 3);
}

#[test]
fn scaling_starts_and_terminates_the_newest_pods() {
    let (mut cluster, _) = seed_cluster();
    let changes = cluster.scale("default/web", 5).unwrap();
    assert_eq!(started(&changes), 2);
    assert!(terminated(&changes).is_empty());
    let newest: Vec<String> = cluster.pods[3..].iter().map(PodRecord::key).collect();
    let changes = cluster.scale("default/web", 3).unwrap();
    assert_eq!(started(&changes), 0);
    assert_eq!(terminated(&changes), newest);
    assert!(cluster.scale("default/nope", 1).is_err());
}

/// Runs a rollout restart of the seed's 3-replica Deployment with
/// `strategy` step by step; returns each step's (started, terminated), and
/// checks at each step that live pods never exceed 3 + `surge` and
/// available ones never fall below 3 - `unavailable`.
fn roll(strategy: serde_json::Value, surge: usize, unavailable: usize) -> Vec<(usize, usize)> {
    roll_after(strategy, surge, unavailable, |cluster| {
        cluster.rollout_restart("default/web").unwrap();
    })
}

/// [`roll`], the new template made by `renew`.
fn roll_after(
    strategy: serde_json::Value,
    surge: usize,
    unavailable: usize,
    renew: impl FnOnce(&mut Cluster),
) -> Vec<(usize, usize)> {
    let (mut cluster, _) = seed_cluster();
    cluster.deployments[0].spec.strategy = Some(serde_json::from_value(strategy).unwrap());
    let old: Vec<String> = cluster.pods.iter().map(PodRecord::key).collect();
    renew(&mut cluster);
    let live = |cluster: &Cluster| {
        cluster
            .pods
            .iter()
            .filter(|pod| pod.object.metadata.deletion_timestamp.is_none())
            .count()
    };
    let mut steps = Vec::new();
    let mut terminated_all = Vec::new();
    while !cluster.rollout_complete("default/web").unwrap() {
        assert!(steps.len() < 10, "no end: {steps:?}");
        let before = live(&cluster);
        let changes = cluster.rollout_step("default/web").unwrap();
        let (up, down) = (started(&changes), terminated(&changes));
        assert!(before + up <= 3 + surge, "{before} + {up} pods at once");
        assert!(
            before + up - down.len() >= 3 - unavailable,
            "{before} + {up} - {} pods available",
            down.len()
        );
        steps.push((up, down.len()));
        terminated_all.extend(down);
    }
    assert_eq!(terminated_all, old, "every old pod goes, oldest first");
    steps
}

#[test]
fn a_rollout_restart_follows_the_strategy() {
    // Kubernetes' defaults, 25% each: one pod more at a time, none less.
    assert_eq!(roll(serde_json::json!({}), 1, 0), [(1, 1); 3]);
    // One pod fewer at a time, none more: the first step only terminates.
    assert_eq!(
        roll(
            serde_json::json!({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}),
            0,
            1
        ),
        [(0, 1), (1, 1), (1, 1), (1, 0)]
    );
    // Everything at once, in both directions.
    assert_eq!(
        roll(
            serde_json::json!({"rollingUpdate": {"maxSurge": "100%", "maxUnavailable": "100%"}}),
            3,
            3
        ),
        [(3, 3)]
    );
    assert_eq!(
        roll(serde_json::json!({"type": "Recreate"}), 0, 3),
        [(0, 3), (3, 0)]
    );
}

/// `svc-lab apply` of the Deployment with another pod template (a new
/// image, say) changes no pod itself: the rollout then goes step by step
/// within the strategy, as after a rollout restart. A new replica count
/// alone is taken at once.
#[test]
fn applying_a_new_template_rolls_out_within_the_strategy() {
    let strategy = serde_json::json!({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}});
    let steps = roll_after(strategy.clone(), 0, 1, |cluster| {
        let mut snapshot = Snapshot::default();
        let mut deployment = cluster.deployments[0].clone();
        deployment
            .spec
            .template
            .metadata
            .get_or_insert_default()
            .labels
            .get_or_insert_default()
            .insert("release".into(), "2".into());
        snapshot.deployments.push(deployment);
        let changes = cluster.apply(&snapshot, false).unwrap();
        assert_eq!(
            (started(&changes), terminated(&changes).len()),
            (0, 0),
            "{changes:?}"
        );
        assert_eq!(cluster.rollouts_pending(), ["default/web"]);
    });
    assert_eq!(steps, [(0, 1), (1, 1), (1, 1), (1, 0)]);

    let (mut cluster, _) = seed_cluster();
    let mut snapshot = Snapshot::default();
    let mut deployment = cluster.deployments[0].clone();
    deployment.spec.replicas = Some(5);
    snapshot.deployments.push(deployment);
    let changes = cluster.apply(&snapshot, false).unwrap();
    assert_eq!(started(&changes), 2);
    assert!(cluster.rollouts_pending().is_empty());
}

#[test]
fn a_strategy_the_api_server_refuses_is_said_so() {
    let (mut cluster, _) = seed_cluster();
    cluster.deployments[0].spec.strategy = Some(
        serde_json::from_value(
            serde_json::json!({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}),
        )
        .unwrap(),
    );
    cluster.rollout_restart("default/web").unwrap();
    let error = cluster.rollout_step("default/web").unwrap_err().to_string();
    assert!(
        error.contains("may not be 0 when `maxSurge` is 0"),
        "{error}"
    );
}

#[test]
fn termination_reads_pre_stop_sleeps_and_the_grace_period() {
    let pod = |lifecycle: serde_json::Value, grace: Option<i64>| -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"terminationGracePeriodSeconds": grace,
                     "containers": [{"name": "c", "lifecycle": lifecycle}]}
        }))
        .unwrap()
    };
    let seconds = Duration::from_secs;
    for (lifecycle, grace, want) in [
        (
            serde_json::json!({"preStop": {"exec": {"command": ["sleep", "5"]}}}),
            None,
            (seconds(5), seconds(30)),
        ),
        (
            serde_json::json!({"preStop": {"exec": {"command": ["/bin/sh", "-c", "sleep 7"]}}}),
            Some(10),
            (seconds(7), seconds(10)),
        ),
        (
            serde_json::json!({"preStop": {"sleep": {"seconds": 3}}}),
            None,
            (seconds(3), seconds(30)),
        ),
        // preStop cannot outlast the grace period.
        (
            serde_json::json!({"preStop": {"exec": {"command": ["sleep", "60"]}}}),
            Some(20),
            (seconds(20), seconds(20)),
        ),
        (serde_json::json!(null), Some(0), (seconds(0), seconds(0))),
    ] {
        assert_eq!(
            pods::termination(&pod(lifecycle.clone(), grace)),
            want,
            "{lifecycle}"
        );
    }
}

/// `get endpoints NAME`: that Service's endpoints, from every pod (the
/// name picks the Service, not the pods).
#[test]
fn get_by_name_picks_the_object_not_what_it_is_made_of() {
    let (cluster, _) = seed_cluster();
    let listing = render::get(
        &cluster,
        "endpoints",
        Some("web-clusterip"),
        render::Output::Table,
        &Query::default(),
        Timestamp::now(),
    )
    .unwrap();
    let rows: Vec<&str> = listing.stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{}", listing.stdout);
    assert!(
        rows[0].starts_with("web-clusterip   198.18.1.10:80,198.18.1.11:80,198.18.2.10:80"),
        "{}",
        listing.stdout
    );
    let missing = render::get(
        &cluster,
        "pods",
        Some("nope"),
        render::Output::Table,
        &Query::default(),
        Timestamp::now(),
    );
    assert!(matches!(missing, Err(ClusterError::NotFound { .. })));
}
