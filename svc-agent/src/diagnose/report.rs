//! `svc-agent diagnose` as a command: read the objects (manifests or the
//! API server), the kernel maps when the pins are there, and [`diagnose`].
use std::{fmt, path::PathBuf};

use super::{DiagnoseError, Finding, KernelView, diagnose};
use crate::{
    dataplane::Tables,
    k8s::{Snapshot, Source, client, lookup, manifests},
};

/// What `diagnose` is asked.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `NAMESPACE/NAME`, or `NAME` in the default namespace.
    pub service: String,
    pub source: Source,
    /// The node to plan and whose kernel maps to compare.
    pub node: Option<String>,
    /// Where that node's maps are pinned.
    pub pin_path: PathBuf,
    /// Where that node's agent answers (what it left out, and why).
    pub agent: std::net::SocketAddr,
}

/// The findings for one Service, and what could not be checked.
#[derive(Clone, Debug)]
pub struct Report {
    /// `NAMESPACE/NAME`.
    pub service: String,
    pub findings: Vec<Finding>,
    /// A node was given but its pins were not there: the kernel maps were
    /// not compared.
    pub kernel_unchecked: Option<PathBuf>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "service {}:", self.service)?;
        for finding in &self.findings {
            writeln!(f, "- {finding}")?;
        }
        if let Some(pin_path) = &self.kernel_unchecked {
            writeln!(
                f,
                "(kernel maps not checked: no pins at {})",
                pin_path.display()
            )?;
        }
        Ok(())
    }
}

/// Reads what `settings` points at and diagnoses the Service.
pub fn report(settings: &Settings) -> Result<Report, DiagnoseError> {
    let (namespace, name) = settings
        .service
        .split_once('/')
        .unwrap_or(("default", &settings.service));
    let key = format!("{namespace}/{name}");
    let snapshot = match &settings.source {
        Source::Manifests(path) => manifests::load(path)?,
        Source::ApiServer { kubeconfig } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| DiagnoseError::Runtime { source })?
            .block_on(from_api_server(
                kubeconfig.as_deref(),
                namespace,
                name,
                settings.node.is_some(),
            ))?,
    };
    let node = settings.node.as_deref();
    let tables = node.and_then(|_| Tables::open_pinned(&settings.pin_path).ok());
    let kernel = match (node, tables) {
        (Some(node), Some(tables)) => Some(KernelView {
            node: node.to_owned(),
            frontends: tables.read()?,
            // Without an agent answering, the kernel alone is compared.
            left_out: crate::run::fetch_left_out(settings.agent).unwrap_or_default(),
        }),
        _ => None,
    };
    let findings = diagnose(&snapshot, &key, node, kernel.as_ref())?;
    Ok(Report {
        service: key,
        findings,
        kernel_unchecked: (node.is_some() && kernel.is_none()).then(|| settings.pin_path.clone()),
    })
}

async fn from_api_server(
    kubeconfig: Option<&std::path::Path>,
    namespace: &str,
    name: &str,
    with_nodes: bool,
) -> Result<Snapshot, DiagnoseError> {
    let config = client::config(kubeconfig).await?;
    let server = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_owned();
    let client = client::client(config)?;
    Ok(lookup::service_objects(&client, &server, namespace, name, with_nodes).await?)
}
