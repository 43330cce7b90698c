//! `svc-agent run --manifests DIR` on a one-node lab: the kernel maps equal
//! `plan` after the initial sync, follow the directory when it changes, and
//! a killed and restarted agent never interrupts traffic.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::{
    collections::BTreeMap,
    fs,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use aya::programs::links::{FdLink, PinnedLink};
use openmetrics_parser::OpenMetricsType;
use svc_agent::{
    dataplane::Tables,
    k8s::manifests,
    model::{self, Config, Frontend, LeftOut, LeftOutReason},
};
use svc_lab::{Lab, NodeSpec, PodSpec, Topology};
use tests::agent::{Agent, LISTEN, agent_binary, http_get, wait_for};

const NODE: &str = "node-1";
const NODE_IP: &str = "198.18.0.11";
const WEB_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 30);

fn lab() -> Lab {
    let web = |name: &str| PodSpec::new(name, &[8080], &[]);
    Lab::up(&Topology {
        nodes: vec![NodeSpec {
            name: NODE.into(),
            pods: vec![web("web-1"), web("web-2"), PodSpec::new("curl", &[], &[])],
        }],
    })
    .unwrap()
}

/// A manifests directory removed on drop.
struct Manifests(PathBuf);

impl Manifests {
    fn new(lab: &Lab) -> Self {
        let dir = std::env::temp_dir().join(format!("{}-manifests", lab.id()));
        std::fs::create_dir_all(&dir).unwrap();
        let manifests = Self(dir);
        manifests.write("node.yaml", &node_yaml());
        manifests
    }

    fn write(&self, name: &str, text: &str) {
        // Written beside and renamed, as an editor or `kubectl` would.
        let temporary = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&temporary, text).unwrap();
        std::fs::rename(temporary, self.0.join(name)).unwrap();
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn plan(&self) -> Vec<Frontend> {
        let snapshot = manifests::load(&self.0).unwrap();
        normalized(
            model::plan(&snapshot, NODE, &Config::default())
                .unwrap()
                .frontends,
        )
    }
}

impl Drop for Manifests {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An agent of NODE synced from a manifests directory that holds
/// `web_yaml(web)`, started with `extra` arguments.
fn synced_agent(lab: &Lab, web: &[Ipv4Addr], extra: &[&str]) -> (Manifests, Agent) {
    let manifests = Manifests::new(lab);
    manifests.write("web.yaml", &web_yaml(web));
    let mut args = vec!["--manifests", manifests.path().to_str().unwrap()];
    args.extend_from_slice(extra);
    let mut agent = Agent::spawn(lab, NODE, &args);
    agent.wait_healthy(lab, Duration::from_secs(20));
    (manifests, agent)
}

fn node_yaml() -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {NODE}\nstatus:\n  addresses:\n  - type: InternalIP\n    address: {NODE_IP}\n"
    )
}

/// Service `web` (ClusterIP WEB_IP:80 and NodePort 30080 → 8080) with one
/// EndpointSlice holding `endpoints`; and LoadBalancer `lb` with
/// externalTrafficPolicy=Local and healthCheckNodePort 32001.
fn web_yaml(endpoints: &[Ipv4Addr]) -> String {
    let endpoints: String = endpoints
        .iter()
        .map(|ip| {
            format!("- addresses: [\"{ip}\"]\n  nodeName: {NODE}\n  conditions: {{ready: true}}\n")
        })
        .collect();
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  type: NodePort
  clusterIP: {WEB_IP}
  ports: [{{port: 80, targetPort: 8080, nodePort: 30080, protocol: TCP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {{kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{{port: 8080, protocol: TCP}}]
endpoints:
{endpoints}---
apiVersion: v1
kind: Service
metadata: {{name: lb, namespace: default}}
spec:
  type: LoadBalancer
  clusterIP: 198.19.0.31
  externalTrafficPolicy: Local
  healthCheckNodePort: 32001
  ports: [{{port: 80, targetPort: 8080, nodePort: 30081, protocol: TCP}}]
status:
  loadBalancer:
    ingress: [{{ip: 198.19.255.1}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: lb-1
  namespace: default
  labels: {{kubernetes.io/service-name: lb}}
addressType: IPv4
ports: [{{port: 8080, protocol: TCP}}]
endpoints:
{endpoints}"#
    )
}

fn pod_ip(lab: &Lab, pod: &str) -> Ipv4Addr {
    lab.pod(pod).unwrap().address
}

/// Frontends in a canonical order, so the kernel's and the plan's compare.
fn normalized(mut frontends: Vec<Frontend>) -> Vec<Frontend> {
    for frontend in &mut frontends {
        frontend.backends.sort();
    }
    frontends.sort_by(|a, b| {
        (
            &a.service,
            &a.port_name,
            a.kind,
            a.address,
            a.port,
            a.protocol,
        )
            .cmp(&(
                &b.service,
                &b.port_name,
                b.kind,
                b.address,
                b.port,
                b.protocol,
            ))
    });
    frontends
}

fn kernel(pin_dir: &Path) -> Vec<Frontend> {
    let states = Tables::open_pinned(pin_dir).unwrap().read().unwrap();
    normalized(states.into_iter().map(|state| state.frontend).collect())
}

/// Waits until the kernel holds exactly what `plan` says; how long it took.
fn wait_converged(agent: &Agent, manifests: &Manifests, within: Duration) -> Duration {
    let started = Instant::now();
    let want = manifests.plan();
    let deadline = started + within;
    loop {
        let held = kernel(&agent.pin_dir);
        if held == want {
            return started.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "maps did not converge within {within:?}\nkernel: {held:#?}\nplan: {want:#?}\nagent log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn maps_equal_plan_after_sync_and_follow_the_directory() {
    let lab = lab();
    let (web_1, web_2) = (pod_ip(&lab, "web-1"), pod_ip(&lab, "web-2"));
    let manifests = Manifests::new(&lab);
    manifests.write("web.yaml", &web_yaml(&[web_1, web_2]));
    let mut agent = Agent::spawn(
        &lab,
        NODE,
        &["--manifests", manifests.path().to_str().unwrap()],
    );
    let took = agent.wait_healthy(&lab, Duration::from_secs(20));
    eprintln!("initial sync: healthy after {took:?}");
    assert_eq!(kernel(&agent.pin_dir), manifests.plan());
    assert_eq!(
        manifests.plan().len(),
        5,
        "web: ClusterIP, NodePort; lb: ClusterIP, NodePort, LB"
    );

    // Traffic flows through the programs the agent attached.
    let (code, body, stderr) = tests::curl(
        lab.pod("curl").unwrap().netns(),
        &format!("http://{WEB_IP}:80/"),
        5,
    );
    assert_eq!(code, Some(0), "curl through the ClusterIP: {stderr}");
    assert!(body.contains("pod=web-"), "{body}");

    // healthCheckNodePort: the node has local endpoints for lb.
    let (code, body) = http_get(&lab, NODE, "http://127.0.0.1:32001/").unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"localEndpoints\":2"), "{body}");

    // One endpoint goes: the maps follow.
    manifests.write("web.yaml", &web_yaml(&[web_1]));
    let took = wait_converged(&agent, &manifests, Duration::from_secs(5));
    eprintln!("file change → maps: {took:?}");
    let web = manifests.plan();
    assert!(web.iter().all(|frontend| frontend.backends.len() == 1));

    // No endpoint left: lb's health check says so.
    manifests.write("web.yaml", &web_yaml(&[]));
    wait_converged(&agent, &manifests, Duration::from_secs(5));
    let (code, body) = wait_for("health check 503", Duration::from_secs(5), || {
        http_get(&lab, NODE, "http://127.0.0.1:32001/").filter(|(code, _)| *code == 503)
    });
    assert_eq!(code, 503);
    assert!(body.contains("\"localEndpoints\":0"), "{body}");

    let (code, metrics) = agent.get(&lab, "/metrics").unwrap();
    assert_eq!(code, 200);
    let families = openmetrics_parser::openmetrics::parse_openmetrics(&metrics)
        .unwrap_or_else(|error| panic!("/metrics does not parse: {error:?}\n{metrics}"))
        .families;
    for (name, kind) in [
        ("svc_agent_initial_sync_seconds", OpenMetricsType::Gauge),
        (
            "kubeproxy_network_programming_duration_seconds",
            OpenMetricsType::Histogram,
        ),
        (
            "kubeproxy_sync_proxy_rules_duration_seconds",
            OpenMetricsType::Histogram,
        ),
        (
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            OpenMetricsType::Gauge,
        ),
        ("kubeproxy_proxy_healthz", OpenMetricsType::Counter),
        ("svc_agent_map_fill_ratio", OpenMetricsType::Gauge),
    ] {
        let family = families
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing in:\n{metrics}"));
        assert_eq!(family.family_type, kind, "{name}");
    }
    assert!(metrics.contains("\nsvc_agent_frontends 5\n"), "{metrics}");

    // SIGTERM: a clean exit, the datapath left in place.
    assert!(agent.terminate().success());
    assert_eq!(kernel(&agent.pin_dir), manifests.plan());
}

#[test]
fn healthz_waits_until_the_snapshot_can_be_programmed() {
    let lab = lab();
    let manifests = Manifests::new(&lab);
    std::fs::remove_file(manifests.path().join("node.yaml")).unwrap();
    manifests.write("web.yaml", &web_yaml(&[pod_ip(&lab, "web-1")]));
    let mut agent = Agent::spawn(
        &lab,
        NODE,
        &["--manifests", manifests.path().to_str().unwrap()],
    );
    // Without its Node the agent knows no NodePort address: not ready.
    wait_for("503 from /healthz", Duration::from_secs(10), || {
        agent.get(&lab, "/healthz").filter(|(code, _)| *code == 503)
    });
    assert!(
        kernel(&agent.pin_dir).is_empty(),
        "nothing programmed before the sync"
    );
    manifests.write("node.yaml", &node_yaml());
    agent.wait_healthy(&lab, Duration::from_secs(10));
    wait_converged(&agent, &manifests, Duration::from_secs(5));
}

/// kube-proxy's meaning: a node being deleted (a deletion time, or the
/// cluster autoscaler's taint) fails /healthz and the healthCheckNodePorts,
/// so load balancers drain it; /livez stays 200 (no restart for it).
#[test]
fn healthz_fails_while_the_node_is_being_deleted_and_livez_does_not() {
    let lab = lab();
    let (manifests, agent) = synced_agent(&lab, &[pod_ip(&lab, "web-1")], &[]);
    let check = || http_get(&lab, NODE, "http://127.0.0.1:32001/").map(|(code, _)| code);
    assert_eq!(check(), Some(200));
    for (metadata, spec, why) in [
        (
            "  deletionTimestamp: \"2026-12-03T05:00:00Z\"\n",
            "",
            "is being deleted",
        ),
        (
            "",
            "spec:\n  taints:\n  - key: ToBeDeletedByClusterAutoscaler\n    value: \"1764738000\"\n    effect: NoSchedule\n",
            "ToBeDeletedByClusterAutoscaler",
        ),
    ] {
        let node = node_yaml().replacen(
            &format!("  name: {NODE}\n"),
            &format!("  name: {NODE}\n{metadata}"),
            1,
        ) + spec;
        manifests.write("node.yaml", &node);
        let (_, body) = wait_for("503 from /healthz", Duration::from_secs(10), || {
            agent.get(&lab, "/healthz").filter(|(code, _)| *code == 503)
        });
        assert!(body.contains(why), "{body}");
        assert_eq!(agent.get(&lab, "/livez").map(|(code, _)| code), Some(200));
        assert_eq!(
            check(),
            Some(503),
            "the healthCheckNodePort drains the node too"
        );
        manifests.write("node.yaml", &node_yaml());
        wait_for("200 from /healthz", Duration::from_secs(10), || {
            agent.get(&lab, "/healthz").filter(|(code, _)| *code == 200)
        });
    }
}

/// One HTTP request through `to`; true when a lab server answered.
fn request(to: SocketAddr) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer.contains("pod=web-"))
    };
    attempt().unwrap_or(false)
}

#[test]
fn restarting_the_agent_under_load_fails_no_request() {
    let lab = lab();
    let manifests = Manifests::new(&lab);
    manifests.write(
        "web.yaml",
        &web_yaml(&[pod_ip(&lab, "web-1"), pod_ip(&lab, "web-2")]),
    );
    let args = ["--manifests", manifests.path().to_str().unwrap()];
    let mut agent = Agent::spawn(&lab, NODE, &args);
    agent.wait_healthy(&lab, Duration::from_secs(20));

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let netns = lab.pod("curl").unwrap().netns().path();
        std::thread::spawn(move || {
            svc_lab::netns::enter(&netns).unwrap();
            while !stop.load(Ordering::Relaxed) {
                let counter = if request(SocketAddr::from((WEB_IP, 80))) {
                    &ok
                } else {
                    &failed
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let requests_by = |count: u64| {
        wait_for("load requests", Duration::from_secs(10), || {
            (ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) >= count).then_some(())
        })
    };
    requests_by(50);
    for round in 0..3 {
        if round == 1 {
            assert!(agent.terminate().success());
        } else {
            agent.kill();
        }
        let before = ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed);
        requests_by(before + 20);
        let links_before = links(&agent.pin_dir);
        agent = Agent::spawn(&lab, NODE, &args);
        agent.wait_healthy(&lab, Duration::from_secs(20));
        assert_eq!(kernel(&agent.pin_dir), manifests.plan());
        // The same links (never detached), each now running a program the
        // new agent loaded.
        let links_after = links(&agent.pin_dir);
        assert_eq!(
            links_after.keys().collect::<Vec<_>>(),
            links_before.keys().collect::<Vec<_>>()
        );
        for (name, (link, program)) in &links_after {
            let (link_before, program_before) = links_before[name];
            assert_eq!(*link, link_before, "{name}: link replaced");
            assert_ne!(*program, program_before, "{name}: old program kept");
        }
        // It adopted the maps as they were: nothing rewritten, nothing removed.
        let log = agent.log();
        assert!(
            log.contains("written=0 removed=0"),
            "the restarted agent rewrote entries:\n{log}"
        );
        requests_by(before + 60);
    }
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("under restarts: {ok} requests answered, {failed} failed");
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    assert!(ok >= 230);
}

/// Every link the agent pinned: name → (link id, id of the program it runs).
fn links(pin_dir: &Path) -> BTreeMap<String, (u32, u32)> {
    let links: BTreeMap<String, (u32, u32)> = std::fs::read_dir(pin_dir.join("links"))
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let link = FdLink::from(PinnedLink::from_pin(entry.path()).unwrap());
            let info = link.info().unwrap();
            (
                entry.file_name().to_string_lossy().into_owned(),
                (info.id(), info.program_id()),
            )
        })
        .collect();
    // NIC: XDP and TC; pod veths: TC; socket hooks: four.
    assert!(links.len() >= 7, "{links:?}");
    links
}

/// Service `huge` with more endpoints than a frontend has slots (65 535),
/// its EndpointSlice as JSON (a YAML reader caps documents this big).
fn huge() -> (String, String) {
    let service = "apiVersion: v1\nkind: Service\nmetadata: {name: huge, namespace: default}\n\
                   spec:\n  clusterIP: 198.19.0.40\n  ports: [{port: 80, targetPort: 8080}]\n";
    let endpoints: Vec<serde_json::Value> = (0..=u32::from(u16::MAX))
        .map(|i| {
            let address = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i);
            serde_json::json!({"addresses": [address.to_string()]})
        })
        .collect();
    let slice = serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "huge-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "huge"}},
        "addressType": "IPv4",
        "ports": [{"port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    });
    (service.to_owned(), slice.to_string())
}

/// With --nodeport-addresses, healthCheckNodePort is served on those
/// addresses only, as kube-proxy serves it: an address as given, or the
/// node's addresses a CIDR holds.
#[test]
fn health_check_node_ports_listen_on_the_node_port_addresses() {
    for flag in [NODE_IP, "198.18.0.0/24"] {
        let lab = lab();
        let (_manifests, _agent) = synced_agent(
            &lab,
            &[pod_ip(&lab, "web-1")],
            &["--nodeport-addresses", flag],
        );
        let (code, body) = wait_for(
            "health check on the node address",
            Duration::from_secs(5),
            || http_get(&lab, NODE, &format!("http://{NODE_IP}:32001/")),
        );
        assert_eq!(code, 200, "{flag}: {body}");
        assert!(body.contains("\"localEndpoints\":1"), "{flag}: {body}");
        assert_eq!(
            http_get(&lab, NODE, "http://127.0.0.1:32001/"),
            None,
            "{flag}"
        );
    }
}

/// A healthCheckNodePort another process holds (kube-proxy, while both
/// run during a migration) is taken over once that process lets it go.
#[test]
fn a_health_check_node_port_held_elsewhere_is_taken_when_freed() {
    let lab = lab();
    let netns = lab.node(NODE).unwrap().netns();
    let holder = netns
        .in_thread(|| std::net::TcpListener::bind("0.0.0.0:32001"))
        .unwrap()
        .unwrap();
    let (_manifests, agent) = synced_agent(&lab, &[pod_ip(&lab, "web-1")], &[]);
    wait_for("the bind failure logged", Duration::from_secs(5), || {
        agent
            .log()
            .contains("healthCheckNodePort not served")
            .then_some(())
    });
    // Held: connections queue on the holder, which never answers.
    assert_eq!(
        http_get(&lab, NODE, "http://127.0.0.1:32001/").map(|(code, _)| code),
        None
    );
    drop(holder);
    let (code, body) = wait_for("the agent serves the port", Duration::from_secs(10), || {
        http_get(&lab, NODE, "http://127.0.0.1:32001/")
    });
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"localEndpoints\":1"), "{body}");
}

/// Another writer changes the maps behind the agent's back: the next
/// periodic resync reads them from the kernel and repairs them.
#[test]
fn maps_changed_behind_the_agent_are_repaired_at_the_next_resync() {
    let lab = lab();
    let (manifests, agent) = synced_agent(
        &lab,
        &[pod_ip(&lab, "web-1"), pod_ip(&lab, "web-2")],
        &["--resync-seconds", "1"],
    );
    let want = manifests.plan();
    assert_eq!(kernel(&agent.pin_dir), want);

    // One frontend removed, another left with one of its two backends.
    let mut tampered = want.clone();
    tampered.remove(0);
    assert_eq!(tampered[0].backends.len(), 2);
    tampered[0].backends.truncate(1);
    Tables::open_pinned(&agent.pin_dir)
        .unwrap()
        .apply(&tampered)
        .unwrap();

    let took = wait_converged(&agent, &manifests, Duration::from_secs(10));
    eprintln!("repaired {took:?} after the change");
    let (_, metrics) = agent.get(&lab, "/metrics").unwrap();
    assert!(
        metrics.contains("svc_agent_repaired_frontends_total 2"),
        "{metrics}"
    );
    let log = agent.log();
    assert!(log.contains("resync: the maps differed"), "{log}");
}

#[test]
fn a_service_too_big_for_the_maps_is_named_and_the_others_are_programmed() {
    let lab = lab();
    let manifests = Manifests::new(&lab);
    manifests.write("web.yaml", &web_yaml(&[pod_ip(&lab, "web-1")]));
    let (service, slice) = huge();
    manifests.write("huge.yaml", &service);
    manifests.write("huge-slice.json", &slice);
    let mut agent = Agent::spawn(
        &lab,
        NODE,
        &[
            "--manifests",
            manifests.path().to_str().unwrap(),
            "--healthz-timeout-seconds",
            "1",
        ],
    );
    let took = agent.wait_ready(&lab, Duration::from_secs(60));
    eprintln!("ready with a Service left out after {took:?}");
    let want: Vec<Frontend> = manifests
        .plan()
        .into_iter()
        .filter(|frontend| frontend.service != "default/huge")
        .collect();
    assert_eq!(want.len(), 5);
    assert_eq!(kernel(&agent.pin_dir), want);
    let log = agent.log();
    assert!(
        log.contains("map") && log.contains("is full") && log.contains("service=default/huge"),
        "{log}"
    );
    let (_, metrics) = agent.get(&lab, "/metrics").unwrap();
    assert!(
        metrics.contains("svc_agent_errors_total{kind=\"map_full\"} 1"),
        "{metrics}"
    );

    // The node cannot converge while the Service is there: /healthz says
    // so once the timeout has passed, /livez does not.
    let status = |path: &str| agent.get(&lab, path).map(|(code, _)| code);
    wait_for("/healthz 503", Duration::from_secs(10), || {
        (status("/healthz") == Some(503)).then_some(())
    });
    assert_eq!(status("/livez"), Some(200));
    assert_eq!(status("/readyz"), Some(200));

    // The reason shows in /left-out, /metrics, dump and diagnose.
    let (code, left_out) = agent.get(&lab, "/left-out").unwrap();
    assert_eq!(code, 200);
    let left_out: Vec<LeftOut> = serde_json::from_str(&left_out).unwrap();
    assert_eq!(left_out.len(), 1, "{left_out:?}");
    assert_eq!(left_out[0].service, "default/huge");
    assert!(
        matches!(&left_out[0].reason, LeftOutReason::MapFull { .. }),
        "{left_out:?}"
    );
    let (_, metrics) = agent.get(&lab, "/metrics").unwrap();
    assert!(
        metrics.contains(
            "svc_agent_left_out{service=\"default/huge\",frontend=\"\",reason=\"map_full\"} 1"
        ),
        "{metrics}"
    );
    let dump = agent_cli(&lab, &agent, &["dump"]);
    assert!(
        dump.contains(&format!("left out: {}", left_out[0])),
        "{dump}"
    );
    let diagnose = agent_cli(
        &lab,
        &agent,
        &[
            "diagnose",
            "default/huge",
            "--node",
            NODE,
            "--manifests",
            manifests.path().to_str().unwrap(),
        ],
    );
    assert!(
        diagnose.contains(&format!(
            "node {NODE} does not program part of this Service"
        )) && diagnose.contains("map is full"),
        "{diagnose}"
    );

    fs::remove_file(manifests.path().join("huge.yaml")).unwrap();
    fs::remove_file(manifests.path().join("huge-slice.json")).unwrap();
    wait_for("/healthz 200 again", Duration::from_secs(10), || {
        (status("/healthz") == Some(200)).then_some(())
    });
    assert_eq!(status("/livez"), Some(200));
    assert_eq!(kernel(&agent.pin_dir), want);
    let (_, left_out) = agent.get(&lab, "/left-out").unwrap();
    assert_eq!(left_out, "[]");
    let dump = agent_cli(&lab, &agent, &["dump"]);
    assert!(!dump.contains("left out"), "{dump}");
}

/// `svc-agent ARGS` in the agent's node, on its pins: its stdout.
fn agent_cli(lab: &Lab, agent: &Agent, args: &[&str]) -> String {
    let output = lab
        .node(NODE)
        .unwrap()
        .netns()
        .command(agent_binary().to_str().unwrap())
        .unwrap()
        .args(args)
        .arg("--pin-path")
        .arg(&agent.pin_dir)
        .args(["--agent", LISTEN])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn pod_interfaces_created_later_are_attached_and_forgotten_when_gone() {
    let lab = lab();
    let (_manifests, agent) = synced_agent(&lab, &[pod_ip(&lab, "web-1")], &[]);
    let links = agent.pin_dir.join("links");
    assert!(links.join("from_pod-lxc0").exists());
    let netns = lab.node(NODE).unwrap().netns();
    netns
        .ip(&[
            "link", "add", "lxc9", "type", "veth", "peer", "name", "late9",
        ])
        .unwrap();
    netns.ip(&["link", "set", "lxc9", "up"]).unwrap();
    let pin = links.join("from_pod-lxc9");
    let started = Instant::now();
    wait_for("lxc9 attached", Duration::from_secs(5), || {
        pin.exists().then_some(())
    });
    eprintln!("new veth attached after {:?}", started.elapsed());
    // Woken by the kernel's link notification, not by the slow rescan.
    let log = agent.log();
    let attached = log
        .lines()
        .find(|line| line.contains("pod interface attached") && line.contains("lxc9"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(attached.contains("trigger=\"link event\""), "{attached}");
    netns.ip(&["link", "del", "lxc9"]).unwrap();
    wait_for("lxc9 forgotten", Duration::from_secs(5), || {
        (!pin.exists()).then_some(())
    });
    assert!(
        links.join("from_pod-lxc0").exists(),
        "other veths keep theirs"
    );
}

/// A pod veth deleted and made again under the same name at once (a pod
/// replaced; the seed story's delete and re-create) is attached again,
/// however quickly: the agent follows interfaces by index, not by name.
#[test]
fn a_veth_made_again_under_its_name_is_attached_again() {
    let lab = lab();
    let (_manifests, agent) = synced_agent(&lab, &[pod_ip(&lab, "web-1")], &[]);
    let netns = lab.node(NODE).unwrap().netns();
    let attached_programs = |netns: &svc_lab::netns::Netns| {
        netns
            .in_thread(|| {
                aya::programs::SchedClassifier::query_tcx(
                    "lxc8",
                    aya::programs::TcAttachType::Ingress,
                )
                .map(|(_, programs)| programs.len())
                .unwrap_or(0)
            })
            .unwrap()
    };
    let add = [
        "link", "add", "lxc8", "type", "veth", "peer", "name", "late8",
    ];
    netns.ip(&add).unwrap();
    netns.ip(&["link", "set", "lxc8", "up"]).unwrap();
    wait_for("lxc8 attached", Duration::from_secs(5), || {
        (attached_programs(netns) == 1).then_some(())
    });
    // Gone and back within a few milliseconds: a new device (it starts
    // bare), which the agent attaches to under its new index.
    netns.ip(&["link", "del", "lxc8"]).unwrap();
    netns.ip(&add).unwrap();
    netns.ip(&["link", "set", "lxc8", "up"]).unwrap();
    let indexes = || -> Vec<String> {
        agent
            .log()
            .lines()
            .filter(|line| line.contains("pod interface attached") && line.contains("lxc8"))
            .filter_map(|line| {
                line.split("index=")
                    .nth(1)?
                    .split(' ')
                    .next()
                    .map(str::to_owned)
            })
            .collect()
    };
    let indexes = wait_for("lxc8 attached again", Duration::from_secs(5), || {
        let indexes = indexes();
        (indexes.len() == 2 && attached_programs(netns) == 1).then_some(indexes)
    });
    assert_ne!(indexes[0], indexes[1], "{indexes:?}");
    netns.ip(&["link", "del", "lxc8"]).unwrap();
}
