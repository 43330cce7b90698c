//! A client of the API server, configured as kubectl is: the kubeconfig
//! given, else the in-cluster config, $KUBECONFIG or ~/.kube/config.
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot use kubeconfig {}; give a readable one with --kubeconfig", path.display())]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "cannot find the API server: neither the in-cluster config nor a kubeconfig \
         ($KUBECONFIG or ~/.kube/config) could be loaded; give --kubeconfig, or \
         --manifests DIR to read manifests instead"
    )]
    NoConfig {
        #[source]
        source: kube::config::InferConfigError,
    },
    #[error("cannot make a client for the API server at {server}")]
    Client {
        server: String,
        #[source]
        source: kube::Error,
    },
}

/// The API server's address and credentials: from `kubeconfig`, else
/// inferred (in-cluster, $KUBECONFIG, ~/.kube/config).
pub async fn config(kubeconfig: Option<&Path>) -> Result<kube::Config, ClientError> {
    let Some(path) = kubeconfig else {
        return kube::Config::infer()
            .await
            .map_err(|source| ClientError::NoConfig { source });
    };
    let kubeconfig_error =
        |source: Box<dyn std::error::Error + Send + Sync>| ClientError::Kubeconfig {
            path: path.to_owned(),
            source,
        };
    let file = kube::config::Kubeconfig::read_from(path).map_err(|e| kubeconfig_error(e.into()))?;
    kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| kubeconfig_error(e.into()))
}

/// A client for `config`. Without kube's own retry layer: it honours an
/// API server's Retry-After (10 s on a 503 while it starts), which held
/// the agent's watches that long after an outage; the watches retry on
/// their own, within a second (watch.rs).
pub fn client(mut config: kube::Config) -> Result<kube::Client, ClientError> {
    config.default_retry = false;
    let server = config.cluster_url.to_string();
    kube::Client::try_from(config).map_err(|source| ClientError::Client { server, source })
}
