//! `diagnose`'s one-shot read of the API server against a scripted one
//! (tower-test mock under kube's Client): the requests it makes, and the
//! errors a user meets (no such Service, no right to list Pods). No root,
//! no network.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use svc_agent::k8s::lookup::{LookupError, service_objects};

const SERVER: &str = "https://198.18.0.1:6443";

fn response(status: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn list(kind: &str, items: &[Value]) -> Value {
    json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items})
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
           "code": code, "reason": reason, "message": message})
}

/// Answers every request with `answer(path, query)`; the requests made,
/// as `PATH?QUERY`, once the lookup is done.
async fn lookup(
    with_nodes: bool,
    answer: fn(&str) -> Response<Body>,
) -> (Result<svc_agent::k8s::Snapshot, LookupError>, Vec<String>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let server = tokio::spawn(async move {
        let mut requests = Vec::new();
        while let Some((request, respond)) = handle.next_request().await {
            let path = request.uri().path();
            let query = request.uri().query().unwrap_or("");
            requests.push(format!("{path}?{query}"));
            respond.send_response(answer(path));
        }
        requests
    });
    let result = service_objects(&client, SERVER, "default", "web", with_nodes).await;
    drop(client);
    (result, server.await.unwrap())
}

fn web() -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
           "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})
}

#[tokio::test]
async fn reads_the_service_its_slices_the_namespace_pods_and_the_nodes() {
    let (result, requests) = lookup(true, |path| match path {
        "/api/v1/namespaces/default/services/web" => response(200, &web()),
        "/api/v1/namespaces/default/pods" => response(
            200,
            &list(
                "PodList",
                &[json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-a"}})],
            ),
        ),
        "/apis/apps/v1/namespaces/default/deployments" => response(
            200,
            &list(
                "DeploymentList",
                &[json!({"apiVersion": "apps/v1", "kind": "Deployment",
                         "metadata": {"name": "web", "namespace": "default"},
                         "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                                  "template": {"metadata": {"labels": {"app": "web"}},
                                               "spec": {"containers": [{"name": "web"}]}}}})],
            ),
        ),
        // A kind the credentials may not list is left out, not an error.
        "/apis/apps/v1/namespaces/default/statefulsets" => {
            response(403, &status(403, "Forbidden", "statefulsets is forbidden"))
        }
        _ => response(200, &list("List", &[])),
    })
    .await;
    let snapshot = result.unwrap();
    assert_eq!(snapshot.services.len(), 1);
    assert_eq!(snapshot.pods[0].metadata.name.as_deref(), Some("web-a"));
    assert!(snapshot.from_cluster);
    let workloads: Vec<(&str, &str, Option<i32>)> = snapshot
        .workloads
        .iter()
        .map(|w| (w.kind.as_str(), w.name.as_str(), w.replicas))
        .collect();
    assert_eq!(workloads, [("Deployment", "web", Some(2))]);
    assert_eq!(
        requests,
        [
            "/api/v1/namespaces/default/services/web?",
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?\
             &labelSelector=kubernetes.io%2Fservice-name%3Dweb",
            "/api/v1/namespaces/default/pods?",
            "/api/v1/nodes?",
            "/apis/apps/v1/namespaces/default/deployments?",
            "/apis/apps/v1/namespaces/default/replicasets?",
            "/apis/apps/v1/namespaces/default/statefulsets?",
            "/apis/apps/v1/namespaces/default/daemonsets?",
            "/apis/batch/v1/namespaces/default/jobs?",
        ]
    );
}

#[tokio::test]
async fn a_missing_service_is_named_with_the_server() {
    let (result, requests) = lookup(false, |_| {
        response(404, &status(404, "NotFound", "services \"web\" not found"))
    })
    .await;
    let error = result.unwrap_err();
    assert!(
        matches!(error, LookupError::ServiceNotFound { .. }),
        "{error}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "service default/web not found in the API server at {SERVER}; check the name \
             and the namespace (kubectl get services -n default)"
        )
    );
    assert_eq!(
        requests.len(),
        1,
        "nothing read after the Service: {requests:?}"
    );
}

#[tokio::test]
async fn pods_the_user_may_not_list_say_whose_rights_lack() {
    let (result, _) = lookup(false, |path| match path {
        "/api/v1/namespaces/default/services/web" => response(200, &web()),
        "/api/v1/namespaces/default/pods" => response(
            403,
            &status(
                403,
                "Forbidden",
                "pods is forbidden: User \"svc-lb\" cannot list",
            ),
        ),
        _ => response(200, &list("List", &[])),
    })
    .await;
    let error = result.unwrap_err().to_string();
    assert!(
        error.starts_with(&format!(
            "the API server at {SERVER} refused to list pods in namespace default \
             (pods is forbidden: User \"svc-lb\" cannot list); diagnose reads with the \
             kubeconfig's credentials"
        )),
        "{error}"
    );
}
