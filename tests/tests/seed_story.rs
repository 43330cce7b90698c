//! The seed story driven through the `svc-lab` binary: pod to ClusterIP,
//! node to NodePort, client to NodePort on both nodes, client to the LB
//! IP, the refused mismatch, diagnose, the fix; and dump equal to plan.
//!
//! These need `svc-agent run` (being merged from the agent-run branch):
//! until it is, they are ignored; run them with `--ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

/// A lab under its own state directory, brought down on drop.
struct ToolLab {
    state: PathBuf,
}

fn binary(name: &str) -> PathBuf {
    // target/debug/deps/seed_story-HASH → target/debug/NAME
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join(name)
}

fn seed(file: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/seed")
        .join(file)
        .to_string_lossy()
        .into_owned()
}

impl ToolLab {
    fn up(files: &[&str]) -> Self {
        Self::up_with(files, &[])
    }

    /// `svc-lab up` of seed files, with `extra` flags.
    fn up_with(files: &[&str], extra: &[&str]) -> Self {
        // One state directory per lab: tests of this binary run in parallel.
        static LABS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = LABS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let state = std::env::temp_dir().join(format!("svc-lab-test-{}-{n}", std::process::id()));
        let lab = Self { state };
        let mut args = vec!["up".to_owned()];
        for file in files {
            args.extend(["-f".to_owned(), seed(file)]);
        }
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        let output = lab.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            output.status.success(),
            "up: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        lab
    }

    fn run(&self, args: &[&str]) -> Output {
        let svc_lab = binary("svc-lab");
        Command::new(&svc_lab)
            .arg("--state")
            .arg(&self.state)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e} (cargo build --bins first)", svc_lab.display()))
    }

    fn curl(&self, target: &str, url: &str) -> Output {
        self.run(&["exec", target, "--", "curl", "-sS", "--max-time", "3", url])
    }

    fn answers(&self, target: &str, url: &str) -> String {
        self.answers_with(target, url, &[])
    }

    /// [`answers`](Self::answers) for a URL with an IPv6 address in
    /// brackets (curl's --globoff).
    fn answers_globoff(&self, target: &str, url: &str) -> String {
        self.answers_with(target, url, &["-g"])
    }

    fn answers_with(&self, target: &str, url: &str, flags: &[&str]) -> String {
        // The tables may land a moment after a change: poll with a deadline.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut args = vec!["exec", target, "--", "curl", "-sS", "--max-time", "3"];
            args.extend(flags);
            args.push(url);
            let output = self.run(&args);
            if output.status.success() {
                return String::from_utf8_lossy(&output.stdout).into_owned();
            }
            assert!(
                Instant::now() < deadline,
                "{target} → {url}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `svc-agent dump -o json` on node `node`.
    fn dump(&self, node: &str) -> serde_json::Value {
        let dump = self.run(&[
            "exec",
            &format!("node/{node}"),
            "--",
            "svc-agent",
            "dump",
            "-o",
            "json",
        ]);
        serde_json::from_slice(&dump.stdout).unwrap()
    }

    /// The LoadBalancer IP the lab gave web-lb.
    fn lb_ip(&self) -> String {
        let output = self.run(&["get", "svc", "web-lb", "-o", "json"]);
        let service: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        service["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn first_pod(&self) -> String {
        let output = self.run(&["get", "pods", "-o", "json"]);
        let list: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(list["kind"], "List");
        list["items"][0]["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

impl Drop for ToolLab {
    fn drop(&mut self) {
        // No unwrap here: a panic while a failing test unwinds would abort.
        let _ = Command::new(binary("svc-lab"))
            .arg("--state")
            .arg(&self.state)
            .arg("down")
            .output();
    }
}

const SEED: [&str; 3] = ["nodes.yaml", "web-deployment.yaml", "web-services.yaml"];

/// `up --agent-arg` reaches every node's agent, over the lab's own value:
/// a NodePort request the node sends to a pod elsewhere is source-NATed
/// from the port range given.
#[test]
fn agent_flags_given_to_up_override_the_labs_own() {
    let lab = ToolLab::up_with(&SEED, &["--agent-arg=--nat-ports=61000-61031"]);
    for node in ["198.18.0.11", "198.18.0.12"] {
        let snated = (0..40)
            .map(|_| lab.answers("client", &format!("http://{node}:30080/")))
            .find_map(|answer| {
                let client = answer.split("client=").nth(1)?.trim().to_owned();
                let (ip, port) = client.rsplit_once(':')?;
                (ip == node).then(|| port.parse::<u16>().unwrap())
            })
            .unwrap_or_else(|| panic!("no request to {node} went to a pod elsewhere"));
        assert!(
            (61000..=61031).contains(&snated),
            "{node}: NAT port {snated}"
        );
    }
}

#[test]
fn seed_story_traffic_the_mismatch_and_the_fix() {
    let lab = ToolLab::up(&SEED);
    let pod = lab.first_pod();
    assert!(
        lab.answers(&format!("pod/{pod}"), "http://198.19.0.10/")
            .contains("pod=web-")
    );
    assert!(
        lab.answers("node/node-1", "http://198.18.0.11:30080/")
            .contains("pod=web-")
    );
    for node in ["198.18.0.11", "198.18.0.12"] {
        assert!(
            lab.answers("client", &format!("http://{node}:30080/"))
                .contains("pod=web-")
        );
    }
    assert!(
        lab.answers("client", "http://198.19.255.1/")
            .contains("pod=web-")
    );

    assert!(
        lab.run(&["apply", "-f", &seed("broken-selector.yaml")])
            .status
            .success()
    );
    // Refused at once: curl's exit code 7, "Couldn't connect to server".
    let refused = lab.curl("client", "http://198.18.0.11:30090/");
    assert_eq!(refused.status.code(), Some(7));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Couldn't connect"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // kubectl's way to see why: no pod has the label, the Service says so.
    let selected = lab.run(&["get", "pods", "-l", "app=web"]);
    assert!(selected.status.success());
    assert_eq!(String::from_utf8_lossy(&selected.stdout), "");
    assert_eq!(
        String::from_utf8_lossy(&selected.stderr),
        "No resources found in default namespace.\n"
    );
    let described = text(&lab.run(&["describe", "svc", "web-broken"]));
    assert!(
        described.contains("Selector:                 app=web\n"),
        "{described}"
    );
    assert!(
        described.contains("Endpoints:                <none>\n"),
        "{described}"
    );
    assert!(described.contains("Warning  NoEndpoints"), "{described}");
    let fixed = seed("fix/web-deployment.yaml");
    let immutable = lab.run(&["apply", "-f", &fixed]);
    assert!(!immutable.status.success());
    assert!(String::from_utf8_lossy(&immutable.stderr).contains("field is immutable"));
    assert!(lab.run(&["delete", "deployment/web"]).status.success());
    assert!(lab.run(&["apply", "-f", &fixed]).status.success());
    assert!(
        lab.answers("client", "http://198.18.0.11:30090/")
            .contains("pod=web-")
    );
    let pods = text(&lab.run(&["get", "pods", "-l", "app=web", "-o", "wide"]));
    let mut lines = pods.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap()
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED NODE",
            "READINESS GATES"
        ]
    );
    assert_eq!(lines.clone().count(), 3, "{pods}");
    assert!(
        lines.all(|line| line.contains(" 1/1 ") && line.contains(" Running ")),
        "{pods}"
    );
    let described = text(&lab.run(&["describe", "svc", "web-broken"]));
    assert!(
        described.contains("Normal   EndpointsChanged"),
        "{described}"
    );
    assert!(
        !described.contains("Endpoints:                <none>"),
        "{described}"
    );

    // A Service that claims web-lb's address as an externalIP: every
    // agent leaves it out, and describe says so with the agents' words.
    let steal = std::env::temp_dir().join(format!("svc-lb-steal-{}.yaml", std::process::id()));
    std::fs::write(
        &steal,
        "apiVersion: v1\nkind: Service\nmetadata: {name: web-steal}\n\
         spec:\n  selector: {app: web}\n  externalIPs: [198.19.255.1]\n  ports: [{port: 80}]\n",
    )
    .unwrap();
    let applied = lab.run(&["apply", "-f", steal.to_str().unwrap()]);
    let _ = std::fs::remove_file(&steal);
    assert!(applied.status.success());
    let described = text(&lab.run(&["describe", "svc", "web-steal"]));
    for node in ["node-1", "node-2"] {
        let line = described
            .lines()
            .find(|line| line.contains("LeftOut") && line.contains(&format!("svc-agent, {node}")))
            .unwrap_or_else(|| panic!("no LeftOut event from {node}:\n{described}"));
        assert!(line.contains("ExternalIP 198.19.255.1:80/TCP"), "{line}");
        assert!(line.contains("default/web-lb"), "{line}");
    }
}

fn text(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn dump_equals_plan_after_sync() {
    let lab = ToolLab::up(&SEED);
    assert_dump_equals_plan(&lab);
}

/// Each node's `dump` (less counters and ids) equals its `plan` of the
/// lab's manifests.
fn assert_dump_equals_plan(lab: &ToolLab) {
    let manifests = lab.state.join("manifests");
    for node in ["node-1", "node-2"] {
        let plan = Command::new(binary("svc-agent"))
            .args(["plan", "-o", "json", "--node", node, "--manifests"])
            .arg(&manifests)
            .output()
            .unwrap();
        let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
        let dump = lab.dump(node);
        let strip = |frontends: &serde_json::Value| {
            let mut out: Vec<serde_json::Value> = frontends
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    let mut f = f.clone();
                    for counter in ["packets", "bytes", "rev_nat_id"] {
                        f.as_object_mut().unwrap().remove(counter);
                    }
                    f
                })
                .collect();
            out.sort_by_key(ToString::to_string);
            out
        };
        assert_eq!(
            strip(&dump["frontends"]),
            strip(&plan["frontends"]),
            "node {node}"
        );
    }
}

/// The seed story's Services made RequireDualStack, and an IPv6-only one:
/// a pod and a node reach each over IPv6 (and the dual-stack ones over
/// IPv4), and each node's kernel tables equal its plan, IPv6 frontends
/// included.
#[test]
fn dual_stack_services_answer_over_both_families_and_dump_equals_plan() {
    let services = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/dual-stack/web-services.yaml")
        .to_string_lossy()
        .into_owned();
    let lab = ToolLab::up(&["nodes.yaml", "web-deployment.yaml"]);
    assert!(lab.run(&["apply", "-f", &services]).status.success());
    let pod = format!("pod/{}", lab.first_pod());
    for target in [pod.as_str(), "node/node-1", "node/node-2"] {
        for url in [
            "http://[fd00:198:19::10]/",
            "http://[fd00:198:19::11]/",
            "http://[fd00:198:19::12]/",
            "http://[fd00:198:19::13]/",
            "http://198.19.0.10/",
        ] {
            let answers = lab.answers_globoff(target, url);
            assert!(answers.contains("pod=web-"), "{target} → {url}: {answers}");
        }
    }
    let ipv6_frontends = |node: &str| -> usize {
        lab.dump(node)["frontends"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["address"].as_str().unwrap().contains(':'))
            .count()
    };
    // Four ClusterIPs, two NodePorts (web-nodeport's and web-lb's on the
    // node's IPv6 address), web-lb's IPv6 ingress.
    assert_eq!(ipv6_frontends("node-1"), 7);
    assert_dump_equals_plan(&lab);
}

#[test]
fn diagnose_names_the_closest_pods_in_the_lab() {
    let lab = ToolLab::up(&SEED);
    assert!(
        lab.run(&["apply", "-f", &seed("broken-selector.yaml")])
            .status
            .success()
    );
    let manifests = lab.state.join("manifests").to_string_lossy().into_owned();
    let output = lab.run(&[
        "exec",
        "node/node-1",
        "--",
        "svc-agent",
        "diagnose",
        "default/web-broken",
        "--manifests",
        &manifests,
        "--node",
        "node-1",
    ]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("selector app=web matches no pod"), "{text}");
    assert!(
        text.contains("has app=nginx, selector wants app=web"),
        "{text}"
    );
}

/// `svc-lab restart node/NAME [--kill]`: the node's agent is replaced (a
/// new process, which logs its own start) on the same pins, and the node
/// serves before, between and after.
#[test]
fn restarting_a_node_agent_replaces_it_and_the_node_keeps_serving() {
    let lab = ToolLab::up(&SEED);
    let starts = || {
        String::from_utf8_lossy(&lab.run(&["logs", "node/node-1"]).stdout)
            .matches("initial sync in the maps")
            .count()
    };
    assert_eq!(starts(), 1);
    for (round, kill) in [true, false].into_iter().enumerate() {
        let mut args = vec!["restart", "node/node-1"];
        if kill {
            args.push("--kill");
        }
        let output = lab.run(&args);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let said = String::from_utf8_lossy(&output.stdout);
        let verb = if kill { "killed" } else { "stopped" };
        assert!(
            said.contains(&format!("agent {verb} and ready again")),
            "{said}"
        );
        assert_eq!(starts(), round + 2, "a new agent synced");
        assert!(
            lab.answers("client", "http://198.18.0.11:30080/")
                .contains("pod=web-")
        );
    }
    let unknown = lab.run(&["restart", "node/node-9"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("node-9"));
}

/// `svc-agent lookup` on `node` for flows from each of `clients` to `lb`:
/// the backend each gets, and how many candidates it is picked among.
fn maglev_picks(lab: &ToolLab, node: &str, lb: &str, clients: &[String]) -> (Vec<String>, usize) {
    let from = clients.join(",");
    let output = lab.run(&[
        "exec",
        &format!("node/{node}"),
        "--",
        "svc-agent",
        "lookup",
        "--proto",
        "tcp",
        "--to",
        lb,
        "--from",
        &from,
        "-o",
        "json",
    ]);
    let answers: Vec<serde_json::Value> = serde_json::from_str(&text(&output)).unwrap();
    assert_eq!(answers.len(), clients.len());
    let candidates = answers[0]["candidates"].as_array().unwrap().len();
    let backends = answers
        .iter()
        .map(|answer| {
            assert_eq!(answer["via"], "maglev", "{node}: {answer}");
            answer["backend"].as_str().unwrap().to_owned()
        })
        .collect();
    (backends, candidates)
}

/// With `--lb-algorithm maglev`, both nodes pick the same backend for
/// each of 1 000 client tuples to the LB IP, as `svc-agent lookup` on
/// each says; once one backend of six is gone, both agree again and at
/// most 1/6 + 2% of the tuples got another backend.
#[test]
fn maglev_gives_every_flow_the_same_backend_on_both_nodes() {
    let lab = ToolLab::up_with(&SEED, &["--agent-arg=--lb-algorithm=maglev"]);
    let lb = format!("{}:80", lab.lb_ip());
    let scale = |replicas: &str| {
        text(&lab.run(&["scale", "deployment/web", "--replicas", replicas]));
    };
    scale("6");
    let mut state: u32 = 0x9e37_79b9;
    let clients: Vec<String> = (0..1000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            format!(
                "198.18.{}.{}:{}",
                64 + (state >> 24) % 64,
                (state >> 16) as u8,
                1024 + (state & 0xffff) % 60000
            )
        })
        .collect();
    // Both nodes' tables follow a change within moments: wait for them.
    let agreed = |backends: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (on_1, n_1) = maglev_picks(&lab, "node-1", &lb, &clients);
            let (on_2, n_2) = maglev_picks(&lab, "node-2", &lb, &clients);
            if n_1 == backends && n_2 == backends {
                let differ = on_1.iter().zip(&on_2).filter(|(a, b)| a != b).count();
                assert_eq!(differ, 0, "node-1 and node-2 disagree on {differ} flows");
                return on_1;
            }
            assert!(
                Instant::now() < deadline,
                "candidates {n_1} and {n_2}, not {backends}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let six = agreed(6);
    let spread: std::collections::BTreeSet<&String> = six.iter().collect();
    assert_eq!(spread.len(), 6, "1000 flows over 6 backends use them all");
    scale("5");
    let five = agreed(5);
    let moved = six.iter().zip(&five).filter(|(a, b)| a != b).count();
    println!("{moved} of 1000 flows moved with 1 of 6 backends removed");
    assert!(moved <= 1000 / 6 + 20, "{moved} flows moved, over 1/N + 2%");
    assert!(
        moved >= 100,
        "only {moved} moved: the removed backend had about 167"
    );
}

/// Packets node `node`'s LoadBalancer frontend counted.
fn lb_packets(lab: &ToolLab, node: &str) -> u64 {
    lab.dump(node)["frontends"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|frontend| frontend["kind"] == "LoadBalancer")
        .map(|frontend| frontend["packets"].as_u64().unwrap())
        .sum()
}

/// `svc-lab route lb --via node/NAME` sends the client's LoadBalancer
/// traffic through that node only; `--via all` spreads it over both again
/// (ECMP by addresses and ports).
#[test]
fn the_lb_route_pins_to_one_node_or_spreads_over_all() {
    let lab = ToolLab::up(&SEED);
    let url = format!("http://{}/", lab.lb_ip());
    let counts = || (lb_packets(&lab, "node-1"), lb_packets(&lab, "node-2"));
    let requests = |n: usize| {
        for _ in 0..n {
            lab.answers("client", &url);
        }
    };
    let shown = text(&lab.run(&["route", "lb", "--via", "node/node-1"]));
    assert!(shown.contains("via 198.18.0.11"), "{shown}");
    let before = counts();
    requests(10);
    let after = counts();
    assert!(after.0 >= before.0 + 10, "node-1: {before:?} -> {after:?}");
    assert_eq!(after.1, before.1, "node-2 got LB traffic while pinned away");

    text(&lab.run(&["route", "lb", "--via", "node/node-2"]));
    let before = counts();
    requests(10);
    let after = counts();
    assert_eq!(after.0, before.0, "node-1 got LB traffic while pinned away");
    assert!(after.1 >= before.1 + 10, "node-2: {before:?} -> {after:?}");

    let shown = text(&lab.run(&["route", "lb", "--via", "all"]));
    assert!(
        shown.contains("nexthop via 198.18.0.11") && shown.contains("nexthop via 198.18.0.12"),
        "{shown}"
    );
    // The multipath route hashes by addresses: one client and one LB IP
    // take one of the two next hops, whichever it is.
    let before = counts();
    requests(10);
    let after = counts();
    let took = |now: u64, then: u64| u8::from(now >= then + 10);
    assert_eq!(
        took(after.0, before.0) + took(after.1, before.1),
        1,
        "{before:?} -> {after:?}"
    );

    let refused = lab.run(&["route", "lb", "--via", "node-9"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("node/NAME or all"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// Bytes node `node`'s eth0 received so far.
fn rx_bytes(lab: &ToolLab, node: &str) -> u64 {
    let shown = text(&lab.run(&[
        "exec",
        &format!("node/{node}"),
        "--",
        "ip",
        "-s",
        "-j",
        "link",
        "show",
        "eth0",
    ]));
    let links: serde_json::Value = serde_json::from_str(&shown).unwrap();
    links[0]["stats64"]["rx"]["bytes"].as_u64().unwrap()
}

/// The answers of a lab server in curl's output, in order.
fn lab_answers(output: &str) -> Vec<svc_lab::server::Answer> {
    output
        .lines()
        .filter_map(svc_lab::server::Answer::parse)
        .collect()
}

const DSR: [&str; 2] = [
    "--agent-arg=--lb-mode=dsr",
    "--agent-arg=--lb-algorithm=maglev",
];

/// With `--lb-mode dsr`, every pod behind the LB IP sees the client's own
/// address, also node-2's pod, which node-1 (where the client's route
/// leads) reaches by direct server return; requests of three full
/// segments cross the tunnel (the MSS clamped to what fits); and a
/// download from node-2's pod through node-1 does not pass node-1: it
/// receives the client's ACKs, not the data.
#[test]
fn dsr_backends_see_the_client_and_answer_it_directly() {
    let lab = ToolLab::up_with(&SEED, &DSR);
    let lb = lab.lb_ip();
    text(&lab.run(&["route", "lb", "--via", "node/node-1"]));
    let client = svc_lab::wiring::CLIENT_ADDRESS.to_string();
    let pad = format!("X-Pad: {}", "x".repeat(4000));
    let mut nodes = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let output = text(&lab.run(&[
            "exec",
            "client",
            "--",
            "curl",
            "-sS",
            "--max-time",
            "3",
            "-H",
            &pad,
            &format!("http://{lb}/"),
        ]));
        let answer = &lab_answers(&output)[0];
        assert_eq!(answer.client.ip().to_string(), client, "{answer:?}");
        nodes.insert(answer.node.clone());
    }
    assert!(
        nodes.contains("node-2"),
        "no request reached node-2: {nodes:?}"
    );

    // A request, then a download on the same connection (the same pod),
    // until one is node-2's.
    let url = format!("http://{lb}/");
    let stream = format!("http://{lb}/stream");
    let served = (0..30).find_map(|_| {
        let before = rx_bytes(&lab, "node-1");
        let output = lab.run(&[
            "exec",
            "client",
            "--",
            "curl",
            "-s",
            "--max-time",
            "2",
            &url,
            &stream,
            "-o",
            "/dev/stdout",
            "-o",
            "/dev/null",
            "-w",
            "size=%{size_download}\n",
        ]);
        let received = rx_bytes(&lab, "node-1") - before;
        let shown = String::from_utf8_lossy(&output.stdout).into_owned();
        let answer = lab_answers(&shown).into_iter().next()?;
        let size: u64 = shown.lines().last()?.strip_prefix("size=")?.parse().ok()?;
        (answer.node == "node-2").then_some((size, received))
    });
    let (size, received) = served.expect("no download was served by node-2's pod");
    println!("downloaded {size} bytes through node-1, which received {received}");
    assert!(size > 1_000_000, "downloaded only {size} bytes");
    assert!(
        received < size / 10,
        "node-1 received {received} bytes of a {size}-byte download"
    );
}

/// With DSR and Maglev, a keep-alive connection opened through node-1
/// keeps working when the client's route moves to node-2 in its middle
/// (an ECMP next hop failed): every request on it is answered, on the
/// one connection, by the one pod.
#[test]
fn dsr_with_maglev_keeps_a_connection_when_the_route_moves() {
    let lab = ToolLab::up_with(&SEED, &DSR);
    let lb = lab.lb_ip();
    text(&lab.run(&["route", "lb", "--via", "node/node-1"]));
    let urls: Vec<String> = (0..12).map(|_| format!("http://{lb}/")).collect();
    let mut command = Command::new(binary("svc-lab"));
    command
        .arg("--state")
        .arg(&lab.state)
        .args([
            "exec",
            "client",
            "--",
            "curl",
            "-sS",
            "-N",
            "--max-time",
            "30",
        ])
        .args([
            "--rate",
            "3/s",
            "-w",
            "port=%{local_port} connects=%{num_connects}\n",
        ])
        .args(&urls)
        .stdout(std::process::Stdio::piped());
    let mut curl = command.spawn().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(curl.stdout.take().unwrap()));
    let mut output = Vec::new();
    // Three answers through node-1, then the route moves.
    while output
        .iter()
        .filter(|l: &&String| l.starts_with("port="))
        .count()
        < 3
    {
        output.push(lines.next().expect("curl ended early").unwrap());
    }
    let moved = text(&lab.run(&["route", "lb", "--via", "node/node-2"]));
    assert!(moved.contains("via 198.18.0.12"), "{moved}");
    output.extend(lines.map(Result::unwrap));
    assert!(curl.wait().unwrap().success(), "{output:#?}");
    let answers = lab_answers(&output.join("\n"));
    assert_eq!(answers.len(), 12, "{output:#?}");
    assert!(
        answers.iter().all(|a| a.pod == answers[0].pod),
        "{answers:#?}"
    );
    let transfers: Vec<&String> = output.iter().filter(|l| l.starts_with("port=")).collect();
    assert!(
        transfers
            .iter()
            .all(|t| t.split(' ').next() == transfers[0].split(' ').next()),
        "not one connection: {transfers:#?}"
    );
    assert_eq!(
        transfers
            .iter()
            .filter(|t| t.ends_with("connects=1"))
            .count(),
        1,
        "{transfers:#?}"
    );
}
