//! `svc-agent plan` on the seed story's manifests (examples/seed): the
//! tables each node must hold, and the JSON contract other tools read.
//! No root, no kernel, no API server.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
use std::{path::PathBuf, process::Command};

use serde_json::Value;

fn seed_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/seed")
}

fn plan(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_svc-agent"))
        .arg("plan")
        .arg("--manifests")
        .arg(seed_dir())
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("svc-agent runs")
}

fn plan_json(node: &str) -> Value {
    let output = plan(&["--node", node, "-o", "json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("plan prints JSON")
}

/// "SERVICE KIND ADDRESS:PORT/PROTO -> BACKEND, ... (ON_EMPTY)" per frontend.
fn summary(plan: &Value) -> Vec<String> {
    plan["frontends"]
        .as_array()
        .expect("frontends array")
        .iter()
        .map(|f| {
            let backends: Vec<String> = f["backends"]
                .as_array()
                .expect("backends array")
                .iter()
                .map(|b| format!("{}:{}", b["address"].as_str().unwrap_or("?"), b["port"]))
                .collect();
            format!(
                "{} {} {}:{}/{} -> {} ({})",
                f["service"].as_str().unwrap_or("?"),
                f["kind"].as_str().unwrap_or("?"),
                f["address"].as_str().unwrap_or("?"),
                f["port"],
                f["protocol"].as_str().unwrap_or("?"),
                backends.join(", "),
                f["on_empty"].as_str().unwrap_or("?"),
            )
        })
        .collect()
}

const PODS: &str = "198.18.1.11:80, 198.18.1.12:80, 198.18.2.11:80";

#[test]
fn seed_story_plan_for_node_1() {
    let plan = plan_json("node-1");
    assert_eq!(plan["node"], "node-1");
    assert_eq!(
        summary(&plan),
        [
            "default/web-broken ClusterIP 198.19.0.13:80/TCP ->  (reject)".to_owned(),
            "default/web-broken NodePort 198.18.0.11:30090/TCP ->  (reject)".to_owned(),
            format!("default/web-clusterip ClusterIP 198.19.0.10:80/TCP -> {PODS} (reject)"),
            format!("default/web-lb ClusterIP 198.19.0.12:80/TCP -> {PODS} (reject)"),
            format!("default/web-lb NodePort 198.18.0.11:30081/TCP -> {PODS} (reject)"),
            format!("default/web-lb LoadBalancer 198.19.100.1:80/TCP -> {PODS} (reject)"),
            format!("default/web-nodeport ClusterIP 198.19.0.11:80/TCP -> {PODS} (reject)"),
            format!("default/web-nodeport NodePort 198.18.0.11:30080/TCP -> {PODS} (reject)"),
        ]
    );
}

#[test]
fn node_ports_are_served_on_the_planned_nodes_address() {
    let plan = plan_json("node-2");
    let node_ports: Vec<String> = summary(&plan)
        .into_iter()
        .filter(|line| line.contains(" NodePort "))
        .map(|line| line.split(' ').nth(2).unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        node_ports,
        [
            "198.18.0.12:30090/TCP",
            "198.18.0.12:30081/TCP",
            "198.18.0.12:30080/TCP"
        ]
    );
}

#[test]
fn plan_json_contract() {
    let plan = plan_json("node-1");
    let top: Vec<&str> = plan
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(top, ["frontends", "node"]);
    let frontend = plan["frontends"]
        .as_array()
        .expect("frontends")
        .iter()
        .find(|f| f["service"] == "default/web-lb" && f["kind"] == "LoadBalancer")
        .expect("web-lb's LoadBalancer frontend");
    let mut keys: Vec<&str> = frontend
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "address",
            "affinity_timeout_seconds",
            "backends",
            "health_check_node_port",
            "kind",
            "on_empty",
            "port",
            "port_name",
            "protocol",
            "service",
            "source_ranges",
        ]
    );
    assert_eq!(frontend["port_name"], "http");
    assert_eq!(frontend["address"], "198.19.100.1");
    assert_eq!(frontend["port"], 80);
    assert_eq!(frontend["protocol"], "TCP");
    assert_eq!(frontend["on_empty"], "reject");
    assert_eq!(frontend["affinity_timeout_seconds"], Value::Null);
    assert_eq!(frontend["health_check_node_port"], Value::Null);
    assert_eq!(frontend["source_ranges"], serde_json::json!([]));
    assert_eq!(
        frontend["backends"][0],
        serde_json::json!({"address": "198.18.1.11", "port": 80, "state": "ready", "local": true})
    );
}

#[test]
fn table_output_shows_the_broken_service_refusing() {
    let output = plan(&["--node", "node-1"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let table = String::from_utf8(output.stdout).expect("UTF-8");
    let broken: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("default/web-broken"))
        .collect();
    assert_eq!(broken.len(), 2, "{table}");
    assert!(
        broken.iter().all(|l| l.ends_with("<none: reject>")),
        "{table}"
    );
}

/// The addresses node-1's plan gives web-nodeport's NodePort with
/// `--nodeport-addresses FLAG`, sorted.
fn node_ports(flag: &str) -> Vec<String> {
    let output = plan(&[
        "--node",
        "node-1",
        "-o",
        "json",
        "--nodeport-addresses",
        flag,
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let plan: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let mut addresses: Vec<String> = summary(&plan)
        .into_iter()
        .filter(|line| line.contains("web-nodeport NodePort"))
        .map(|line| line.split(' ').nth(2).unwrap_or_default().to_owned())
        .collect();
    addresses.sort();
    addresses
}

#[test]
fn nodeport_addresses_flag_replaces_the_nodes_addresses() {
    assert_eq!(
        node_ports("198.18.7.1,198.18.7.2"),
        ["198.18.7.1:30080/TCP", "198.18.7.2:30080/TCP"]
    );
}

/// kube-proxy's forms: CIDRs pick among the Node's own addresses,
/// `primary` takes its first.
#[test]
fn nodeport_addresses_cidrs_and_primary_pick_among_the_nodes_addresses() {
    assert_eq!(node_ports("198.18.0.0/24"), ["198.18.0.11:30080/TCP"]);
    assert_eq!(node_ports("primary"), ["198.18.0.11:30080/TCP"]);
    assert_eq!(node_ports("10.0.0.0/8"), [] as [&str; 0]);
    let refused = plan(&["--node", "node-1", "--nodeport-addresses", "198.18.0.0/40"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("198.18.0.0/40"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[test]
fn unknown_node_fails_saying_what_to_do() {
    let output = plan(&["--node", "node-9"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("node \"node-9\""), "{stderr}");
    assert!(stderr.contains("node-1, node-2"), "{stderr}");
}
