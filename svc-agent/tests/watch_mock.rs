//! The API server source against a scripted API server (tower-test mock
//! service under kube's Client): initial lists gate the first update
//! (also when one list is slow), bookmarks move the resourceVersion without
//! an update, an event's update names its object, 410 Gone relists while keeping the last state, errors are
//! retried and counted. No root, no network.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use svc_agent::{
    k8s::{
        source::{self, Update, UpdateReceiver},
        watch::watch_api,
    },
    metrics::Metrics,
    model::Changed,
};
use tokio::time::{Instant, sleep, timeout};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resource {
    Services,
    Slices,
    Nodes,
}

impl Resource {
    fn of(path: &str) -> Self {
        if path.contains("endpointslices") {
            Resource::Slices
        } else if path.contains("nodes") {
            Resource::Nodes
        } else {
            Resource::Services
        }
    }
}

/// What the scripted API server answers.
#[derive(Default)]
struct Script {
    services: Vec<Value>,
    resource_version: u64,
    /// Answers for watches of Services, in order; a watch with none queued
    /// waits (as an idle watch does).
    service_watches: VecDeque<Response<Body>>,
    /// The Node list waits this long.
    slow_node_list: Duration,
    /// Every request: (resource, is a watch, query).
    requests: Vec<(Resource, bool, String)>,
}

type Shared = Arc<Mutex<Script>>;

fn service(name: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": "1"},
        "spec": {"clusterIP": ip, "ports": [{"port": 80, "protocol": "TCP"}]}
    })
}

fn list_body(resource: Resource, script: &Script) -> Value {
    let (kind, items) = match resource {
        Resource::Services => ("ServiceList", script.services.clone()),
        Resource::Slices => (
            "EndpointSliceList",
            vec![json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "web-1", "namespace": "default", "resourceVersion": "1",
                             "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["198.18.1.10"], "conditions": {"ready": true}}]
            })],
        ),
        Resource::Nodes => (
            "NodeList",
            vec![json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": "node-1", "resourceVersion": "1"},
                "status": {"addresses": [{"type": "InternalIP", "address": "198.18.0.11"}]}
            })],
        ),
    };
    json!({"kind": kind, "apiVersion": "v1", "items": items,
           "metadata": {"resourceVersion": script.resource_version.to_string()}})
}

fn json_response(status: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

/// A watch answer: the events, one JSON object a line, then the end.
fn watch_events(events: &[Value]) -> Response<Body> {
    let mut body = Vec::new();
    for event in events {
        body.extend(serde_json::to_vec(event).unwrap());
        body.push(b'\n');
    }
    Response::builder().body(Body::from(body)).unwrap()
}

/// Serves requests from `handle` with `script` until the test ends.
fn serve(mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>, script: Shared) {
    tokio::spawn(async move {
        while let Some((request, respond)) = handle.next_request().await {
            let path = request.uri().path().to_owned();
            let query = request.uri().query().unwrap_or("").to_owned();
            let resource = Resource::of(&path);
            let watch = query.contains("watch=true");
            script
                .lock()
                .unwrap()
                .requests
                .push((resource, watch, query.clone()));
            let script = script.clone();
            tokio::spawn(async move {
                let response = if !watch {
                    let delay = match resource {
                        Resource::Nodes => script.lock().unwrap().slow_node_list,
                        _ => Duration::ZERO,
                    };
                    sleep(delay).await;
                    let body = list_body(resource, &script.lock().unwrap());
                    json_response(200, &body)
                } else if resource == Resource::Services {
                    loop {
                        if let Some(response) = script.lock().unwrap().service_watches.pop_front() {
                            break response;
                        }
                        sleep(Duration::from_millis(5)).await;
                    }
                } else {
                    // Idle watches of the other kinds: nothing ever happens.
                    std::future::pending().await
                };
                respond.send_response(response);
            });
        }
    });
}

struct Harness {
    script: Shared,
    updates: UpdateReceiver,
    last: Option<Update>,
    metrics: Arc<Metrics>,
}

fn start(script: Script) -> Harness {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let script = Arc::new(Mutex::new(script));
    serve(handle, script.clone());
    let (sender, updates) = source::channel();
    let metrics = Arc::new(Metrics::default());
    tokio::spawn(watch_api(client, "node-1".into(), sender, metrics.clone()));
    Harness {
        script,
        updates,
        last: None,
        metrics,
    }
}

impl Harness {
    /// The Service names of the next update published (and every one
    /// queued with it).
    async fn next_services(&mut self) -> Vec<String> {
        let update = timeout(Duration::from_secs(10), self.updates.next())
            .await
            .expect("an update within 10 s")
            .expect("the source runs");
        let mut names: Vec<String> = update
            .cluster
            .snapshot()
            .services
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect();
        names.sort();
        self.last = Some(update);
        names
    }

    /// What the last update said changed.
    fn last_changed(&self) -> Changed {
        self.last.as_ref().expect("an update").changed.clone()
    }

    /// The queries of the list (or watch) requests for `resource`.
    fn queries(&self, resource: Resource, watch: bool) -> Vec<String> {
        let script = self.script.lock().unwrap();
        script
            .requests
            .iter()
            .filter(|(r, w, _)| *r == resource && *w == watch)
            .map(|(_, _, query)| query.clone())
            .collect()
    }

    async fn wait(&self, what: &str, check: impl Fn(&Script, &Metrics) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check(&self.script.lock().unwrap(), &self.metrics) {
            assert!(Instant::now() < deadline, "{what}: not within 10 s");
            sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A source that has published its first snapshot: Service web at
/// resourceVersion 10.
async fn synced_with_web() -> Harness {
    let mut harness = start(Script {
        services: vec![service("web", "198.19.0.30")],
        resource_version: 10,
        ..Script::default()
    });
    assert_eq!(harness.next_services().await, vec!["web"]);
    harness
}

#[tokio::test]
async fn no_snapshot_before_every_initial_list_even_a_slow_one() {
    let mut harness = start(Script {
        services: vec![service("web", "198.19.0.30")],
        resource_version: 10,
        slow_node_list: Duration::from_millis(400),
        ..Script::default()
    });
    let started = Instant::now();
    assert_eq!(harness.next_services().await, vec!["web".to_owned()]);
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "published after {:?}, before the Node list came",
        started.elapsed()
    );
    let snapshot = harness.last.as_ref().unwrap().cluster.snapshot();
    assert_eq!(snapshot.endpoint_slices.len(), 1);
    assert_eq!(snapshot.nodes.len(), 1);
    assert_eq!(harness.last_changed(), Changed::Everything);
    let node_lists = harness.queries(Resource::Nodes, false);
    assert!(
        node_lists[0].contains("fieldSelector=metadata.name%3Dnode-1"),
        "only this node is watched: {node_lists:?}"
    );
}

#[tokio::test]
async fn bookmarks_move_the_resource_version_and_events_publish() {
    let mut harness = synced_with_web().await;
    let bookmark = json!({"type": "BOOKMARK", "object": {
        "kind": "Service", "apiVersion": "v1", "metadata": {"resourceVersion": "55"}}});
    let added = json!({"type": "ADDED", "object": service("db", "198.19.0.31")});
    harness
        .script
        .lock()
        .unwrap()
        .service_watches
        .extend([watch_events(&[bookmark]), watch_events(&[added])]);
    assert_eq!(harness.next_services().await, vec!["db", "web"]);
    let mut only_db = Changed::nothing();
    only_db.service(("default".into(), "db".into()));
    assert_eq!(
        harness.last_changed(),
        only_db,
        "an event names its object, and only it"
    );
    let watches = harness.queries(Resource::Services, true);
    assert!(watches[0].contains("resourceVersion=10"), "{watches:?}");
    assert!(
        watches[1].contains("resourceVersion=55"),
        "the bookmark's version is where the watch resumes: {watches:?}"
    );
    assert!(
        watches[0].contains("allowWatchBookmarks=true"),
        "{watches:?}"
    );
}

/// What the agent never reads does not take room in its store:
/// managedFields and kubectl's last-applied copy are dropped, other
/// annotations kept.
#[tokio::test]
async fn stored_objects_lose_managed_fields_and_the_last_applied_copy() {
    let mut harness = synced_with_web().await;
    let mut db = service("db", "198.19.0.31");
    db["metadata"]["managedFields"] = json!([{"manager": "kubectl", "operation": "Update",
        "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]);
    db["metadata"]["annotations"] = json!({
        "kubectl.kubernetes.io/last-applied-configuration": "{\"kind\":\"Service\"}",
        "svc-lb.io/lb-algorithm": "maglev"
    });
    let added = json!({"type": "ADDED", "object": db});
    harness
        .script
        .lock()
        .unwrap()
        .service_watches
        .push_back(watch_events(&[added]));
    assert_eq!(harness.next_services().await, vec!["db", "web"]);
    let snapshot = harness.last.as_ref().unwrap().cluster.snapshot();
    let stored = snapshot
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("db"))
        .unwrap();
    assert_eq!(stored.metadata.managed_fields, None);
    let annotations: Vec<&String> = stored
        .metadata
        .annotations
        .iter()
        .flatten()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(annotations, ["svc-lb.io/lb-algorithm"]);
}

#[tokio::test]
async fn gone_410_relists_and_keeps_the_last_state_meanwhile() {
    let mut harness = synced_with_web().await;
    {
        let mut script = harness.script.lock().unwrap();
        // What the relist will see: web gone, db there.
        script.services = vec![service("db", "198.19.0.31")];
        script.resource_version = 90;
        script.service_watches.push_back(watch_events(&[json!({
            "type": "ERROR",
            "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "message": "too old resource version: 10 (80)", "reason": "Expired",
                       "code": 410}
        })]));
    }
    assert_eq!(harness.next_services().await, vec!["db"]);
    assert_eq!(
        harness.last_changed(),
        Changed::Everything,
        "web's deletion came as no event: a relist changes everything"
    );
    assert_eq!(harness.metrics.errors("watch_gone"), 1);
    let service_lists = harness.queries(Resource::Services, false);
    assert_eq!(service_lists.len(), 2, "initial list and the relist");
}

#[tokio::test]
async fn failed_watches_are_retried_and_counted() {
    let mut harness = synced_with_web().await;
    let unavailable = json_response(
        503,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": "etcd is down", "reason": "ServiceUnavailable", "code": 503}),
    );
    let added = json!({"type": "ADDED", "object": service("db", "198.19.0.31")});
    harness
        .script
        .lock()
        .unwrap()
        .service_watches
        .extend([unavailable, watch_events(&[added])]);
    // The error publishes nothing; the retried watch brings db.
    assert_eq!(harness.next_services().await, vec!["db", "web"]);
    harness
        .wait("the failure counted", |_, metrics| {
            metrics.errors("watch_start_failed") == 1
        })
        .await;
}
