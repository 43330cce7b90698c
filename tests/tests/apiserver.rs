//! The agent against a real kube-apiserver: Services and EndpointSlices
//! created, changed and deleted with API calls land in the pinned maps; the
//! API server going away keeps the last state; its return brings a 410 Gone
//! (watch cache off, compaction every second) that the agent recovers from
//! by listing again.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::{
    net::Ipv4Addr,
    path::Path,
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
        services: api.list::<Service>("/api/v1/services"),
        endpoint_slices: api.list::<EndpointSlice>("/apis/discovery.k8s.io/v1/endpointslices"),
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

    let kubeconfig = api.kubeconfig();
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
