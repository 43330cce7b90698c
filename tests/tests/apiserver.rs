//! The agent against a real kube-apiserver: Services and EndpointSlices
//! created, changed and deleted with API calls land in the pinned maps; the
//! API server going away keeps the last state; its return brings a 410 Gone
//! (watch cache off, compaction every second) that the agent recovers from
//! by listing again. `svc-agent diagnose` reads the same API server.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::{
    net::Ipv4Addr,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::{core::v1::Node, core::v1::Service, discovery::v1::EndpointSlice};
use serde_json::json;
use svc_agent::{
    dataplane::Tables,
    k8s::Snapshot,
    model::{self, Config, Frontend},
};
use svc_lab::{Lab, NodeSpec, PodSpec, Topology};
use tests::{
    agent::{Agent, wait_for},
    apiserver::{self, ApiServer},
};

const NODE: &str = "node-1";
const WEB_IP: &str = "198.19.0.30";
const SERVICES: &str = "/api/v1/namespaces/default/services";
const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";

fn slice(endpoints: &[Ipv4Addr]) -> serde_json::Value {
    let endpoints: Vec<_> = endpoints
        .iter()
        .map(|ip| {
            json!({"addresses": [ip.to_string()], "nodeName": NODE, "conditions": {"ready": true}})
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

fn service() -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {
            "type": "NodePort", "clusterIP": WEB_IP,
            "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30080, "protocol": "TCP"}]
        }
    })
}

/// What `plan` says for the objects the API server holds now.
fn plan(api: &ApiServer) -> Vec<Frontend> {
    let snapshot = Snapshot {
        services: api
            .list::<Service>("/api/v1/services")
            .into_iter()
            .map(Arc::new)
            .collect(),
        endpoint_slices: api
            .list::<EndpointSlice>("/apis/discovery.k8s.io/v1/endpointslices")
            .into_iter()
            .map(Arc::new)
            .collect(),
        nodes: api.list::<Node>("/api/v1/nodes"),
        ..Snapshot::default()
    };
    sorted(
        model::plan(&snapshot, NODE, &Config::default())
            .unwrap()
            .frontends,
    )
}

fn sorted(mut frontends: Vec<Frontend>) -> Vec<Frontend> {
    for frontend in &mut frontends {
        frontend.backends.sort();
    }
    frontends.sort_by_key(|f| (f.service.clone(), f.kind, f.address, f.port));
    frontends
}

fn kernel(pin_dir: &Path) -> Vec<Frontend> {
    let states = Tables::open_pinned(pin_dir).unwrap().read().unwrap();
    sorted(states.into_iter().map(|state| state.frontend).collect())
}

/// Waits until the maps equal `want`; how long that took.
fn converged(agent: &Agent, want: &[Frontend], within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let held = kernel(&agent.pin_dir);
        if held == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "maps did not converge within {within:?}\nkernel: {held:#?}\nwant: {want:#?}\nagent log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn metric(agent: &Agent, lab: &Lab, line_start: &str) -> Option<f64> {
    let (_, text) = agent.get(lab, "/metrics")?;
    text.lines()
        .find_map(|line| line.strip_prefix(line_start))
        .and_then(|value| value.trim().parse().ok())
}

#[test]
fn maps_follow_the_api_server_through_outages_and_410() {
    let Some(binary) = apiserver::binary() else {
        return;
    };
    let lab = Lab::up(&Topology {
        nodes: vec![NodeSpec {
            name: NODE.into(),
            pods: vec![
                PodSpec::new("web-1", &[8080], &[]),
                PodSpec::new("web-2", &[8080], &[]),
            ],
        }],
    })
    .unwrap();
    let (web_1, web_2) = (
        lab.pod("web-1").unwrap().address,
        lab.pod("web-2").unwrap().address,
    );
    let node = lab.node(NODE).unwrap();
    let mut api = ApiServer::start(node.netns(), binary);
    api.create(
        "/api/v1/nodes",
        &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE},
                "status": {"addresses": [{"type": "InternalIP", "address": node.address.to_string()}]}}),
    );
    api.create(SERVICES, &service());
    api.create(SLICES, &slice(&[web_1]));

    // As deploy/ runs it: its ServiceAccount, its ClusterRole, RBAC on.
    let kubeconfig = api.agent_kubeconfig();
    let mut agent = Agent::spawn(&lab, NODE, &["--kubeconfig", kubeconfig.to_str().unwrap()]);
    let took = agent.wait_healthy(&lab, Duration::from_secs(30));
    eprintln!("initial sync (API server): healthy after {took:?}");
    let want = plan(&api);
    let web = want.iter().filter(|f| f.service == "default/web").count();
    assert_eq!(web, 2, "ClusterIP and NodePort (beside default/kubernetes)");
    assert_eq!(kernel(&agent.pin_dir), want);

    // A slice changes, a Service goes and comes back.
    api.patch(&format!("{SLICES}/web-1"), &slice(&[web_1, web_2]));
    let took = converged(&agent, &plan(&api), Duration::from_secs(5));
    eprintln!("EndpointSlice patch → maps: {took:?}");
    let held = kernel(&agent.pin_dir);
    let web: Vec<_> = held.iter().filter(|f| f.service == "default/web").collect();
    assert_eq!(web.len(), 2);
    assert!(web.iter().all(|f| f.backends.len() == 2), "{web:#?}");
    api.delete(&format!("{SERVICES}/web"));
    let without_web = plan(&api);
    assert!(without_web.iter().all(|f| f.service != "default/web"));
    converged(&agent, &without_web, Duration::from_secs(5));
    api.create(SERVICES, &service());
    converged(&agent, &plan(&api), Duration::from_secs(5));

    // Let compaction pass the revision the Node watch started from.
    let want = plan(&api);
    std::thread::sleep(Duration::from_millis(2500));

    // The API server goes away: the agent keeps what it programmed.
    api.stop_apiserver();
    wait_for("the agent sees the outage", Duration::from_secs(60), || {
        agent.log().contains("watch failed").then_some(())
    });
    assert_eq!(kernel(&agent.pin_dir), want);
    assert_eq!(agent.get(&lab, "/healthz").map(|(code, _)| code), Some(200));

    // It comes back: watches resume, the ones from a compacted revision
    // get 410 Gone and list again, and changes land again.
    api.start_apiserver();
    api.patch(&format!("{SLICES}/web-1"), &slice(&[web_2]));
    let took = converged(&agent, &plan(&api), Duration::from_secs(60));
    eprintln!("after the API server came back, patch → maps: {took:?}");
    wait_for("a 410 Gone counted", Duration::from_secs(30), || {
        metric(&agent, &lab, "svc_agent_errors_total{kind=\"watch_gone\"}").filter(|n| *n >= 1.0)
    });
    assert!(agent.log().contains("listing again"), "{}", agent.log());
    assert!(agent.terminate().success());
}

const PODS: &str = "/api/v1/namespaces/default/pods";
const WEB_PODS: [(&str, &str); 3] = [
    ("web-a", "198.18.1.10"),
    ("web-b", "198.18.1.11"),
    ("web-c", "198.18.1.12"),
];

/// A lab of one node, for an API server on its loopback.
fn one_node() -> Lab {
    Lab::up(&Topology {
        nodes: vec![NodeSpec {
            name: NODE.into(),
            pods: Vec::new(),
        }],
    })
    .unwrap()
}

/// The Node, and the default ServiceAccount (pods need it; no controller
/// manager makes it).
fn create_node_and_service_account(api: &ApiServer, node_address: Ipv4Addr) {
    apiserver::create_node(api, NODE, node_address);
    api.create(
        "/api/v1/namespaces/default/serviceaccounts",
        &json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}),
    );
}

/// Pods labelled `app=APP` with a container port named http, made Running
/// and Ready through the status subresource (no kubelet runs).
fn create_ready_pods(api: &ApiServer, app: &str) {
    for (name, ip) in WEB_PODS {
        api.create(
            PODS,
            &json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "labels": {"app": app}},
                "spec": {
                    "nodeName": NODE,
                    "automountServiceAccountToken": false,
                    "containers": [{"name": "nginx", "image": "nginx",
                                    "ports": [{"name": "http", "containerPort": 8080}]}]
                }
            }),
        );
        api.patch(
            &format!("{PODS}/{name}/status"),
            &json!({"status": {
                "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                "conditions": [{"type": "Ready", "status": "True"}]
            }}),
        );
    }
}

/// The seed's Service: selector `app=SELECTOR`, target port http.
fn seed_service(name: &str, cluster_ip: &str, node_port: u16, selector: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "type": "NodePort", "clusterIP": cluster_ip, "selector": {"app": selector},
            "ports": [{"name": "http", "port": 80, "targetPort": "http",
                       "nodePort": node_port, "protocol": "TCP"}]
        }
    })
}

/// `svc-agent diagnose ARGS` in the node's namespace (where the API
/// server listens), with no $KUBECONFIG.
fn diagnose_command(lab: &Lab, args: &[&str]) -> std::process::Command {
    let mut command = lab
        .node(NODE)
        .unwrap()
        .netns()
        .command(tests::agent::agent_binary().to_str().unwrap())
        .unwrap();
    command
        .arg("diagnose")
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("KUBECONFIG");
    command
}

/// Runs `svc-agent diagnose ARGS`: exit code, stdout, stderr.
fn diagnose(lab: &Lab, args: &[&str]) -> (Option<i32>, String, String) {
    let output = diagnose_command(lab, args).output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn diagnose_reads_the_api_server_the_mismatch_the_fix_and_the_kernel() {
    let Some(binary) = apiserver::binary() else {
        return;
    };
    let lab = one_node();
    let node = lab.node(NODE).unwrap();
    let api = ApiServer::start(node.netns(), binary);
    create_node_and_service_account(&api, node.address);
    let kubeconfig = api.kubeconfig();
    let kubeconfig = kubeconfig.to_str().unwrap();

    // The seed's mistake: the Service selects app=web, the pods are app=nginx.
    create_ready_pods(&api, "nginx");
    api.create(SERVICES, &seed_service("web", WEB_IP, 30080, "web"));
    let (code, text, stderr) = diagnose(&lab, &["default/web", "--kubeconfig", kubeconfig]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(text.starts_with("service default/web:\n"), "{text}");
    assert!(text.contains("selector app=web matches no pod"), "{text}");
    for (pod, _) in WEB_PODS {
        assert!(
            text.contains(&format!(
                "closest: pod {pod}  has app=nginx, selector wants app=web"
            )),
            "{text}"
        );
    }

    // The fix as the seed did it: the pods re-created with app=web; the
    // EndpointSlice the controller would write (none runs here).
    for (pod, _) in WEB_PODS {
        // At once: no kubelet would confirm a graceful deletion.
        api.delete(&format!("{PODS}/{pod}?gracePeriodSeconds=0"));
    }
    create_ready_pods(&api, "web");
    let endpoints: Vec<Ipv4Addr> = WEB_PODS.iter().map(|(_, ip)| ip.parse().unwrap()).collect();
    let mut fixed_slice = slice(&endpoints);
    fixed_slice["ports"] = json!([{"name": "http", "port": 8080, "protocol": "TCP"}]);
    api.create(SLICES, &fixed_slice);
    let (code, text, stderr) = diagnose(&lab, &["web", "--kubeconfig", kubeconfig]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!text.contains("matches no pod"), "{text}");
    assert!(
        text.contains("the Service has 3 ready endpoint(s); nothing found wrong"),
        "{text}"
    );

    // With --node, plan and kernel maps are compared: an agent syncs the
    // maps from the API server, and no packet has been counted yet.
    let pin_dir = node.pin_dir.to_str().unwrap();
    let with_node = |service| {
        let args = [
            "--kubeconfig",
            kubeconfig,
            "--node",
            NODE,
            "--pin-path",
            pin_dir,
        ];
        diagnose(&lab, &[&[service][..], &args[..]].concat())
    };
    let (_, text, _) = with_node("default/web");
    assert!(
        text.contains(&format!("(kernel maps not checked: no pins at {pin_dir})")),
        "{text}"
    );
    let agent_kubeconfig = api.agent_kubeconfig();
    let mut agent = Agent::spawn(
        &lab,
        NODE,
        &["--kubeconfig", agent_kubeconfig.to_str().unwrap()],
    );
    agent.wait_healthy(&lab, Duration::from_secs(30));
    let (code, text, stderr) = with_node("default/web");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        text.contains("the kernel of node node-1 holds the frontends but counted no packet"),
        "{text}"
    );
    assert!(!text.contains("lack frontends"), "{text}");
    // A Service created while no agent runs is in the plan, not the maps.
    assert!(agent.terminate().success());
    api.create(SERVICES, &seed_service("late", "198.19.0.31", 30081, "web"));
    let (code, text, stderr) = with_node("default/late");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        text.contains(
            "the kernel maps of node node-1 lack frontends the plan has (is the agent \
             running and synced?): ClusterIP 198.19.0.31:80/TCP"
        ),
        "{text}"
    );

    // A Deployment whose template the selector matches, and no pod: no
    // controller manager runs here, so it makes none, as a broken one.
    api.create(
        "/apis/apps/v1/namespaces/default/deployments",
        &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}},
                         "template": {"metadata": {"labels": {"app": "api"}},
                                      "spec": {"containers": [{"name": "api", "image": "api:1"}]}}}}),
    );
    api.create(SERVICES, &seed_service("api", "198.19.0.32", 30082, "api"));
    let (code, text, stderr) = diagnose(&lab, &["default/api", "--kubeconfig", kubeconfig]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        text.contains(
            "selector app=api matches no pod, but the pod template of Deployment default/api \
             (2 replicas) does: the workload makes none"
        ),
        "{text}"
    );
}

#[test]
fn diagnose_errors_are_one_line_and_say_what_to_do() {
    let Some(binary) = apiserver::binary() else {
        return;
    };
    let lab = one_node();
    let node = lab.node(NODE).unwrap();
    let mut api = ApiServer::start(node.netns(), binary);
    let kubeconfig = api.kubeconfig();
    let kubeconfig = kubeconfig.to_str().unwrap();

    let (code, text, stderr) = diagnose(&lab, &["default/nope", "--kubeconfig", kubeconfig]);
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(
        stderr,
        format!(
            "svc-agent: service default/nope not found in the API server at {}; check the \
             name and the namespace (kubectl get services -n default)\n",
            apiserver::SERVER
        )
    );

    // No kubeconfig anywhere and not in a cluster.
    let output = diagnose_command(&lab, &["default/web"])
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", "/nonexistent")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("svc-agent: cannot find the API server:")
            && stderr.contains("give --kubeconfig"),
        "{stderr}"
    );

    api.stop_apiserver();
    let (code, _, stderr) = diagnose(&lab, &["default/web", "--kubeconfig", kubeconfig]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "svc-agent: cannot reach the API server at {} to get service default/web;",
            apiserver::SERVER
        )),
        "{stderr}"
    );
}

/// deploy/'s ServiceAccount may list and watch Services, EndpointSlices
/// and Nodes, and nothing else; deploy/'s DaemonSet passes the API server's
/// validation (a server-side dry run).
#[test]
fn the_agent_account_may_read_what_it_watches_and_nothing_else() {
    let Some(binary) = apiserver::binary() else {
        return;
    };
    let lab = one_node();
    let node = lab.node(NODE).unwrap();
    let api = ApiServer::start(node.netns(), binary);
    let token = api.token_for(apiserver::AGENT_ACCOUNT);
    let allowed = [
        "/api/v1/services",
        "/api/v1/services?watch=1&timeoutSeconds=1",
        "/api/v1/nodes",
        "/api/v1/nodes?fieldSelector=metadata.name%3Dnode-1&watch=1&timeoutSeconds=1",
        "/apis/discovery.k8s.io/v1/endpointslices",
        "/apis/discovery.k8s.io/v1/endpointslices?watch=1&timeoutSeconds=1",
    ];
    for path in allowed {
        let (code, body) = api.call_as(&token, "GET", path, None);
        assert_eq!(code, 200, "GET {path}: {body}");
    }
    let service = seed_service("web", WEB_IP, 30080, "web");
    let refused: [(&str, &str, Option<&serde_json::Value>); 8] = [
        ("GET", "/api/v1/pods", None),
        ("GET", "/api/v1/secrets", None),
        ("GET", "/api/v1/configmaps", None),
        // Not even one Service by name: the agent lists and watches.
        (
            "GET",
            "/api/v1/namespaces/default/services/kubernetes",
            None,
        ),
        ("GET", "/api/v1/endpoints", None),
        ("POST", SERVICES, Some(&service)),
        (
            "DELETE",
            "/api/v1/namespaces/default/services/kubernetes",
            None,
        ),
        ("PATCH", "/api/v1/nodes/node-1", Some(&json!({}))),
    ];
    for (method, path, body) in refused {
        let (code, answer) = api.call_as(&token, method, path, body);
        assert_eq!(code, 403, "{method} {path}: {answer}");
        assert!(
            answer.contains("system:serviceaccount:kube-system:svc-agent"),
            "{answer}"
        );
    }
    // A token that is not the API server's is not the agent.
    let (code, _) = api.call_as("not-a-token", "GET", "/api/v1/services", None);
    assert_eq!(code, 401);

    let daemonset: serde_json::Value = serde_saphyr::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/daemonset.yaml"
        ))
        .unwrap(),
    )
    .unwrap();
    let path = format!("{}?dryRun=All", apiserver::collection_path(&daemonset));
    let answer: serde_json::Value = serde_json::from_str(&api.create(&path, &daemonset)).unwrap();
    assert_eq!(answer["kind"], "DaemonSet", "{answer}");
    assert_eq!(answer["metadata"]["namespace"], "kube-system", "{answer}");
    let stored = api.request(
        "GET",
        "/apis/apps/v1/namespaces/kube-system/daemonsets/svc-agent",
        None,
    );
    assert_eq!(stored, None, "a dry run stores nothing");
}
