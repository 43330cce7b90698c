//! Where the Kubernetes objects come from: the sources that fill a
//! [`Snapshot`] ([`manifests`] for a directory of YAML/JSON, [`watch`] for
//! the API server, [`lookup`] for one Service read once). The snapshot is
//! defined with the model that reads it, and re-exported here.
pub mod client;
pub mod lookup;
pub mod manifests;
pub mod manifests_watch;
pub mod pod_endpoints;
pub mod source;
pub mod watch;

use std::path::PathBuf;

pub use crate::model::{
    LABEL_SERVICE_NAME, LABEL_SERVICE_PROXY_NAME, LABEL_TOPOLOGY_ZONE, Snapshot, Workload,
    namespace_of, object_key,
};

/// Where the cluster's objects come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A directory of manifests (`run` reloads it when it changes).
    Manifests(PathBuf),
    /// The API server (this kubeconfig, or the in-cluster / default one).
    ApiServer { kubeconfig: Option<PathBuf> },
}

impl Source {
    /// The manifests when given, else the API server.
    pub fn new(manifests: Option<PathBuf>, kubeconfig: Option<PathBuf>) -> Self {
        match manifests {
            Some(dir) => Source::Manifests(dir),
            None => Source::ApiServer { kubeconfig },
        }
    }
}
