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
        core::v1::{Node, Pod, Service},
        discovery::v1::EndpointSlice,
    },
    serde::de::DeserializeOwned,
};
use kube::{Api, Client, Resource, api::ListParams};

use super::{LABEL_SERVICE_NAME, Snapshot};

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
        nodes,
        ..Snapshot::default()
    })
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
