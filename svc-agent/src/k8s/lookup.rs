//! One Service and the objects that bear on it, read once from the API
//! server (for `diagnose`): the Service, its EndpointSlices
//! (discovery.k8s.io/v1), the Pods of its namespace (the selector checks)
//! and, to plan a node, the Nodes.
//!
//! This reads with the caller's credentials: listing Pods is beyond the
//! agent's ClusterRole, so a refusal says whose rights are lacking.
use std::sync::Arc;

use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet},
        batch::v1::Job,
        core::v1::{Node, Pod, Service},
        discovery::v1::EndpointSlice,
    },
    serde::de::DeserializeOwned,
};
use kube::{Api, Client, Resource, api::ListParams};

use super::{LABEL_SERVICE_NAME, Snapshot, Workload, manifests};

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error(
        "service {namespace}/{name} not found in the API server at {server}; check the \
         name and the namespace (kubectl get services -n {namespace})"
    )]
    ServiceNotFound {
        namespace: String,
        name: String,
        server: String,
    },
    #[error(
        "the API server at {server} refused to {action} ({reason}); diagnose reads with \
         the kubeconfig's credentials: use one allowed to get services and list \
         endpointslices, pods and nodes"
    )]
    Refused {
        server: String,
        action: String,
        reason: String,
    },
    #[error(
        "cannot reach the API server at {server} to {action}; is it running, and does the \
         kubeconfig point at it?"
    )]
    Unreachable {
        server: String,
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("the API server at {server} failed to {action} ({reason})")]
    Failed {
        server: String,
        action: String,
        reason: String,
    },
    #[error("reading the API server's answer to {action} failed")]
    Answer {
        action: String,
        #[source]
        source: kube::Error,
    },
}

/// What the API server at `server` (for messages) holds for Service
/// `namespace/name`; the Nodes too when `with_nodes`.
pub async fn service_objects(
    client: &Client,
    server: &str,
    namespace: &str,
    name: &str,
    with_nodes: bool,
) -> Result<Snapshot, LookupError> {
    let fail = |action: String| move |error| lookup_error(server, action, error);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let service = services
        .get_opt(name)
        .await
        .map_err(fail(format!("get service {namespace}/{name}")))?
        .ok_or_else(|| LookupError::ServiceNotFound {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            server: server.to_owned(),
        })?;
    let of_service = ListParams::default().labels(&format!("{LABEL_SERVICE_NAME}={name}"));
    let endpoint_slices: Vec<EndpointSlice> = list(
        Api::namespaced(client.clone(), namespace),
        &of_service,
        fail(format!("list endpointslices in namespace {namespace}")),
    )
    .await?;
    let pods: Vec<Pod> = list(
        Api::namespaced(client.clone(), namespace),
        &ListParams::default(),
        fail(format!("list pods in namespace {namespace}")),
    )
    .await?;
    let nodes: Vec<Node> = if with_nodes {
        list(
            Api::all(client.clone()),
            &ListParams::default(),
            fail("list nodes".to_owned()),
        )
        .await?
    } else {
        Vec::new()
    };
    Ok(Snapshot {
        services: vec![Arc::new(service)],
        endpoint_slices: endpoint_slices.into_iter().map(Arc::new).collect(),
        pods,
        workloads: workloads(client, namespace).await,
        nodes,
        from_cluster: true,
        ..Snapshot::default()
    })
}

/// The workloads of `namespace` whose pods a selector may be meant for:
/// Deployments, ReplicaSets no Deployment owns, StatefulSets, DaemonSets,
/// Jobs. Best effort: a kind the credentials may not list is left out.
async fn workloads(client: &Client, namespace: &str) -> Vec<Workload> {
    let mut found = Vec::new();
    found.extend(of_kind::<Deployment>(client, namespace, "Deployment").await);
    found.extend(of_kind::<ReplicaSet>(client, namespace, "ReplicaSet").await);
    found.extend(of_kind::<StatefulSet>(client, namespace, "StatefulSet").await);
    found.extend(of_kind::<DaemonSet>(client, namespace, "DaemonSet").await);
    found.extend(of_kind::<Job>(client, namespace, "Job").await);
    found
}

async fn of_kind<K>(client: &Client, namespace: &str, kind: &str) -> Vec<Workload>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let objects = match api.list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(error) => {
            tracing::debug!(%kind, %error, "workloads not listed; diagnose goes on without them");
            return Vec::new();
        }
    };
    objects
        .iter()
        .filter_map(|object| serde_json::to_value(object).ok())
        .filter(|value| {
            // A Deployment's ReplicaSets: the Deployment stands for them.
            let owners = value
                .pointer("/metadata/ownerReferences")
                .and_then(|o| o.as_array());
            !owners
                .into_iter()
                .flatten()
                .any(|owner| owner["kind"] == "Deployment")
        })
        .map(|value| manifests::workload(&value, kind))
        .collect()
}

async fn list<K>(
    api: Api<K>,
    params: &ListParams,
    fail: impl FnOnce(kube::Error) -> LookupError,
) -> Result<Vec<K>, LookupError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    Ok(api.list(params).await.map_err(fail)?.items)
}

fn lookup_error(server: &str, action: String, error: kube::Error) -> LookupError {
    let server = server.to_owned();
    match error {
        kube::Error::Api(status) if matches!(status.code, 401 | 403) => LookupError::Refused {
            server,
            action,
            reason: status.message,
        },
        kube::Error::Api(status) => LookupError::Failed {
            server,
            action,
            reason: format!("{} {}", status.code, status.message),
        },
        kube::Error::HyperError(_) | kube::Error::Service(_) => LookupError::Unreachable {
            server,
            action,
            source: error,
        },
        _ => LookupError::Answer {
            action,
            source: error,
        },
    }
}
