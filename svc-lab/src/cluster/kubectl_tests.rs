//! svc-lab's `get` and `describe` side by side with real kubectl 1.20
//! output: tests/fixtures/kubectl holds kubectl's recordings and the
//! objects they were made from (RECORDED.md says how). The same objects go
//! into a lab cluster; svc-lab must print the very same bytes, AGE
//! included (the clock is set to the recording's from one AGE cell).
use k8s_openapi::{
    api::core::v1::{Pod, Service},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::{SignedDuration, Timestamp},
};
use serde_json::{Value, json};

use super::{
    Cluster, PodRecord, describe,
    query::{Namespaces, Query, Selector},
    render::{self, Output},
};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/kubectl");

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}"))
        .unwrap_or_else(|error| panic!("{name}: {error}"))
}

fn yaml(name: &str) -> Value {
    serde_saphyr::from_str(&fixture(name)).unwrap_or_else(|error| panic!("{name}: {error}"))
}

/// Deep-merges `patch` into `target` (a JSON merge patch, as the pods'
/// status was sent).
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

/// What the API server stored for the recorded 9tq7m pod.
fn stored_pod() -> Value {
    yaml("get-pod-yaml.txt")
}

/// The pods as the API server held them: the posted objects, their status
/// patches, and what admission added (the same for every pod of the
/// namespace: priority, tolerations, the token volume), taken from the one
/// pod kubectl printed whole.
fn pods() -> Vec<Pod> {
    let stored = stored_pod();
    let posted = yaml("objects/posted/04-pods.yaml");
    posted["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pod| {
            let mut pod = pod.clone();
            let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
            let namespace = pod["metadata"]["namespace"].as_str().unwrap().to_owned();
            let status_file = if namespace == "default" {
                format!("objects/posted/05-pod-status-{name}.json")
            } else {
                format!("objects/posted/05-pod-status-{namespace}-{name}.json")
            };
            let status: Value = serde_json::from_str(&fixture(&status_file)).unwrap();
            merge(&mut pod, &status);
            pod["metadata"]["creationTimestamp"] = stored["metadata"]["creationTimestamp"].clone();
            if namespace == "default" {
                for field in ["priority", "tolerations", "volumes"] {
                    pod["spec"][field] = stored["spec"][field].clone();
                }
                pod["spec"]["containers"][0]["volumeMounts"] =
                    stored["spec"]["containers"][0]["volumeMounts"].clone();
                pod["spec"]["containers"][0]["ports"][0]["protocol"] = json!("TCP");
            }
            serde_json::from_value(pod).unwrap()
        })
        .collect()
}

/// The Services as the API server held them: the posted objects with the
/// server's defaults and web-lb's status.
fn services() -> Vec<Service> {
    let stored = yaml("get-svc-yaml.txt");
    let posted = yaml("objects/06-services.yaml");
    posted["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|service| {
            let mut service = service.clone();
            service["metadata"]["creationTimestamp"] =
                stored["metadata"]["creationTimestamp"].clone();
            service["spec"]["sessionAffinity"] = json!("None");
            let kind = service["spec"]["type"].as_str().unwrap().to_owned();
            if kind != "ClusterIP" {
                service["spec"]["externalTrafficPolicy"] = json!("Cluster");
            }
            for port in service["spec"]["ports"].as_array_mut().unwrap() {
                port["protocol"] = json!("TCP");
            }
            if service["metadata"]["name"] == "web-lb" {
                service["status"] = stored["status"].clone();
            }
            serde_json::from_value(service).unwrap()
        })
        .collect()
}

fn cluster() -> Cluster {
    Cluster {
        pods: pods()
            .into_iter()
            .map(|object| PodRecord {
                node: object.spec.as_ref().unwrap().node_name.clone().unwrap(),
                object,
                index: 0,
                owner: None,
                server_pid: None,
            })
            .collect(),
        services: services(),
        ..Cluster::default()
    }
}

/// Seconds of a kubectl AGE below ten minutes (`3m1s`, `59s`).
fn age_seconds(age: &str) -> i64 {
    let (minutes, rest) = age.split_once('m').unwrap_or(("0", age));
    let seconds = rest.trim_end_matches('s');
    minutes.parse::<i64>().unwrap() * 60 + seconds.parse::<i64>().unwrap_or(0)
}

/// When `recorded` was printed: `row`'s AGE cell plus its object's
/// creation time.
fn recorded_at(recorded: &str, row: &str, created: &Time) -> Timestamp {
    let header = recorded.lines().next().unwrap();
    let column = header.find("AGE").unwrap();
    let line = recorded
        .lines()
        .find(|line| line.split_whitespace().any(|cell| cell == row))
        .unwrap_or_else(|| panic!("no row {row} in\n{recorded}"));
    let age = line[column..].split_whitespace().next().unwrap();
    created.0 + SignedDuration::from_secs(age_seconds(age))
}

/// `recorded` without the API server's own `kubernetes` Service, which a
/// lab does not have.
fn without_kubernetes(recorded: &str) -> String {
    recorded
        .lines()
        .filter(|line| !line.split_whitespace().any(|cell| cell == "kubernetes"))
        .map(|line| format!("{line}\n"))
        .collect()
}

fn get(cluster: &Cluster, what: &str, query: &Query, now: Timestamp) -> String {
    let listing = render::get(cluster, what, None, Output::Table, query, now).unwrap();
    assert_eq!(listing.stderr, "");
    listing.stdout
}

fn query(namespaces: Namespaces, selector: &str, wide: bool) -> Query {
    Query {
        namespaces,
        selector: Selector::parse(selector).unwrap(),
        wide,
        name: None,
    }
}

fn default_ns() -> Namespaces {
    Namespaces::One("default".into())
}

#[test]
fn get_pods_prints_kubectls_columns_rows_and_widths() {
    let cluster = cluster();
    let created = cluster.pods[0]
        .object
        .metadata
        .creation_timestamp
        .clone()
        .unwrap();
    for (file, row, query) in [
        (
            "get-pods.txt",
            "nginx-deploy-6d4cf56db6-4xk2p",
            query(default_ns(), "", false),
        ),
        (
            "get-pods-wide.txt",
            "nginx-deploy-6d4cf56db6-4xk2p",
            query(default_ns(), "", true),
        ),
        (
            "get-pods-all-namespaces.txt",
            "client",
            query(Namespaces::All, "", false),
        ),
        (
            "get-pods-selector.txt",
            "nginx-deploy-6d4cf56db6-4xk2p",
            query(default_ns(), "app=nginx", false),
        ),
        (
            "get-pods-namespace.txt",
            "client",
            query(Namespaces::One("other".into()), "", false),
        ),
    ] {
        let recorded = fixture(file);
        let now = recorded_at(&recorded, row, &created);
        assert_eq!(get(&cluster, "pods", &query, now), recorded, "{file}");
    }
}

#[test]
fn get_svc_and_endpoints_print_kubectls_columns_rows_and_widths() {
    let cluster = cluster();
    let created = cluster.services[0]
        .metadata
        .creation_timestamp
        .clone()
        .unwrap();
    for (file, query) in [
        ("get-svc.txt", query(default_ns(), "", false)),
        ("get-svc-wide.txt", query(default_ns(), "", true)),
        (
            "get-svc-all-namespaces.txt",
            query(Namespaces::All, "", false),
        ),
    ] {
        let recorded = fixture(file);
        let now = recorded_at(&recorded, "web-clusterip", &created);
        assert_eq!(
            get(&cluster, "svc", &query, now),
            without_kubernetes(&recorded),
            "{file}"
        );
    }
    // The endpoints controller also keeps an (empty) Endpoints for
    // web-broken; none ran while kubectl recorded, so that row is left
    // out of the comparison.
    let recorded = fixture("get-endpoints.txt");
    let now = recorded_at(&recorded, "web-clusterip", &created);
    let printed = get(&cluster, "endpoints", &Query::default(), now);
    let printed: String = printed
        .lines()
        .filter(|line| !line.starts_with("web-broken "))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(printed, recorded);
}

#[test]
fn nothing_found_is_said_as_kubectl_says_it() {
    let cluster = cluster();
    let now = Timestamp::now();
    let empty = render::get(
        &cluster,
        "pods",
        None,
        Output::Table,
        &query(Namespaces::One("empty".into()), "", false),
        now,
    )
    .unwrap();
    assert_eq!(
        (empty.stdout.as_str(), empty.stderr),
        ("", fixture("no-pods.txt"))
    );
    let none = render::get(
        &cluster,
        "pods",
        None,
        Output::Table,
        &query(Namespaces::All, "app=nothing", false),
        now,
    )
    .unwrap();
    assert_eq!(none.stderr, fixture("no-pods-all-namespaces.txt"));
}

#[test]
fn describe_svc_prints_what_kubectl_prints() {
    let cluster = cluster();
    let now = Timestamp::now();
    for (file, name) in [
        ("describe-svc-clusterip.txt", "web-clusterip"),
        ("describe-svc-nodeport.txt", "web-nodeport"),
        ("describe-svc-loadbalancer.txt", "web-lb"),
        ("describe-svc-externalips.txt", "web-external"),
        ("describe-svc-no-endpoints.txt", "web-broken"),
    ] {
        let printed = describe::describe(&cluster, "svc", name, "default", now).unwrap();
        assert_eq!(printed, fixture(file), "{file}");
    }
}

#[test]
fn describe_pod_prints_what_kubectl_prints() {
    let cluster = cluster();
    let now = Timestamp::now();
    for (file, name) in [
        ("describe-pod.txt", "nginx-deploy-6d4cf56db6-9tq7m"),
        (
            "describe-pod-not-ready.txt",
            "nginx-deploy-6d4cf56db6-h8w3z",
        ),
    ] {
        let printed = describe::describe(&cluster, "pod", name, "default", now).unwrap();
        assert_eq!(printed, fixture(file), "{file}");
    }
}

#[test]
fn events_follow_the_lab_and_read_as_kubectl_lists_them() {
    let mut cluster = cluster();
    let created = Time("2026-12-03T04:05:47Z".parse().unwrap());
    cluster.record(super::ClusterEvent {
        object: "service/default/web-broken".into(),
        type_: "Warning".into(),
        reason: "NoEndpoints".into(),
        message: "no ready endpoint".into(),
        source: "svc-lab".into(),
        first: created.clone(),
        last: created.clone(),
        count: 1,
    });
    let later = Time(created.0 + SignedDuration::from_secs(60));
    cluster.record(super::ClusterEvent {
        object: "service/default/web-broken".into(),
        type_: "Warning".into(),
        reason: "NoEndpoints".into(),
        message: "no ready endpoint".into(),
        source: "svc-lab".into(),
        first: later.clone(),
        last: later,
        count: 1,
    });
    let now = created.0 + SignedDuration::from_secs(181);
    let printed = describe::describe(&cluster, "svc", "web-broken", "default", now).unwrap();
    let events: Vec<&str> = printed
        .lines()
        .skip_while(|l| !l.starts_with("Events:"))
        .collect();
    assert_eq!(
        events,
        [
            "Events:",
            "  Type     Reason       Age                  From     Message",
            "  ----     ------       ----                 ----     -------",
            "  Warning  NoEndpoints  2m1s (x2 over 3m1s)  svc-lab  no ready endpoint",
        ]
    );
}
