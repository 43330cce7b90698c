//! Manifests mode: a [`Snapshot`] from a directory of YAML and JSON files
//! instead of an API server. Files hold one or more documents (YAML
//! documents split by `---` lines, JSON values one after another); a
//! document is an object or a list (`kind: List`, `ServiceList`, ...).
//! Objects are told apart by apiVersion and kind; kinds the agent does not
//! read are skipped. Services with a selector and no EndpointSlice get
//! endpoints from the Pods they select ([`super::pod_endpoints`]).
use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Snapshot, object_key, pod_endpoints};

/// Where a document came from: file, document number and, inside a list,
/// item number (both counted from 1, as a person reads the file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub path: Arc<Path>,
    pub document: usize,
    pub item: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} document {}", self.path.display(), self.document)?;
        if let Some(item) = self.item {
            write!(f, " item {item}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(
        "cannot read {}; pass --manifests a directory (or file) of Kubernetes \
         YAML/JSON manifests", path.display()
    )]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{location}: not valid YAML; fix the syntax (documents are split by lines holding only ---)"
    )]
    Yaml {
        location: Location,
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    #[error("{location}: not valid JSON; fix the syntax")]
    Json {
        location: Location,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{location}: not a Kubernetes object (this {found} lacks apiVersion or kind); \
         give every document both"
    )]
    NotAnObject {
        location: Location,
        found: &'static str,
    },
    #[error("{location}: {kind} has no items list; a list needs `items: [...]`")]
    ListWithoutItems { location: Location, kind: String },
    #[error(
        "{location}: {kind} {name} does not fit the {kind} schema at `{field}`; \
         compare it with `kubectl explain {}`", kind.to_lowercase()
    )]
    Schema {
        location: Location,
        kind: String,
        name: String,
        field: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The Snapshot held by the manifests at `path` (a directory: its `.yaml`,
/// `.yml` and `.json` files in name order, not descending; or one file),
/// with EndpointSlices derived from Pods for Services that have none.
pub fn load(path: &Path) -> Result<Snapshot, ManifestError> {
    let mut snapshot = Snapshot::default();
    for file in manifest_files(path)? {
        let text = fs::read_to_string(&file).map_err(|source| ManifestError::Read {
            path: file.clone(),
            source,
        })?;
        add_file(&mut snapshot, &file, &text)?;
    }
    warn_unprogrammable(&snapshot);
    pod_endpoints::add_missing_slices(&mut snapshot);
    Ok(snapshot)
}

fn manifest_files(path: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let read_error = |source| ManifestError::Read {
        path: path.to_owned(),
        source,
    };
    if !fs::metadata(path).map_err(read_error)?.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(path).map_err(read_error)? {
        let file = entry.map_err(read_error)?.path();
        let manifest = file
            .extension()
            .and_then(|extension| extension.to_str())
            .is_some_and(|extension| matches!(extension, "yaml" | "yml" | "json"));
        if manifest && file.is_file() {
            files.push(file);
        } else {
            tracing::debug!(file = %file.display(), "not a .yaml/.yml/.json file; skipped");
        }
    }
    files.sort();
    Ok(files)
}

/// Add the objects of one file (`path` names it in errors).
pub fn add_file(snapshot: &mut Snapshot, path: &Path, text: &str) -> Result<(), ManifestError> {
    let json = path
        .extension()
        .is_some_and(|extension| extension == "json");
    let documents = if json {
        json_documents(path, text)?
    } else {
        yaml_documents(path, text)?
    };
    for (location, value) in documents {
        add_document(snapshot, value, &location)?;
    }
    Ok(())
}

fn json_documents(path: &Path, text: &str) -> Result<Vec<(Location, Value)>, ManifestError> {
    let path: Arc<Path> = Arc::from(path);
    let stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let mut documents = Vec::new();
    for (index, value) in stream.enumerate() {
        let location = Location {
            path: Arc::clone(&path),
            document: index + 1,
            item: None,
        };
        match value {
            Ok(value) => documents.push((location, value)),
            Err(source) => return Err(ManifestError::Json { location, source }),
        }
    }
    Ok(documents)
}

/// YAML documents split as kubectl splits them: on lines starting with
/// `---` followed by nothing but blanks or a comment. Each document is
/// parsed alone, so an error names its document; it is padded with the
/// lines before it so the parser's line numbers are the file's.
fn yaml_documents(path: &Path, text: &str) -> Result<Vec<(Location, Value)>, ManifestError> {
    let path: Arc<Path> = Arc::from(path);
    let mut documents = Vec::new();
    let mut chunk = String::new();
    let mut chunks = Vec::new();
    for line in text.split_inclusive('\n') {
        let rest = line.strip_prefix("---").map(str::trim);
        if rest.is_some_and(|rest| rest.is_empty() || rest.starts_with('#')) {
            let lines_so_far = chunk.lines().count();
            chunks.push(std::mem::replace(&mut chunk, "\n".repeat(lines_so_far + 1)));
        } else {
            chunk.push_str(line);
        }
    }
    chunks.push(chunk);
    // Documents are numbered as a person counts them: blank ones (a
    // leading `---`, comments only) do not count.
    let real = chunks.into_iter().filter(|chunk| {
        chunk
            .lines()
            .any(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
    });
    for (index, chunk) in real.enumerate() {
        let location = Location {
            path: Arc::clone(&path),
            document: index + 1,
            item: None,
        };
        match serde_saphyr::from_str::<Value>(&chunk) {
            Ok(Value::Null) => {}
            Ok(value) => documents.push((location, value)),
            Err(source) => {
                return Err(ManifestError::Yaml {
                    location,
                    source: Box::new(source),
                });
            }
        }
    }
    Ok(documents)
}

fn add_document(
    snapshot: &mut Snapshot,
    value: Value,
    location: &Location,
) -> Result<(), ManifestError> {
    let found = match &value {
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        _ => "scalar",
    };
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let kind = value.get("kind").and_then(Value::as_str).map(str::to_owned);
    let (Some(api_version), Some(kind)) = (api_version, kind) else {
        return Err(ManifestError::NotAnObject {
            location: location.clone(),
            found,
        });
    };
    if let Some(item_kind) = kind.strip_suffix("List") {
        return add_list(snapshot, value, location, &api_version, item_kind);
    }
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "Service") => snapshot
            .services
            .push(Arc::new(typed(value, location, &kind)?)),
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            snapshot
                .endpoint_slices
                .push(Arc::new(typed(value, location, &kind)?));
        }
        ("v1", "Pod") => snapshot.pods.push(typed(value, location, &kind)?),
        ("apps/v1", "Deployment") => {
            snapshot.workloads.push(workload(&value, &kind));
            snapshot.deployments.push(typed(value, location, &kind)?);
        }
        ("apps/v1", "ReplicaSet" | "StatefulSet" | "DaemonSet") | ("batch/v1", "Job") => {
            snapshot.workloads.push(workload(&value, &kind));
        }
        ("v1", "Node") => snapshot.nodes.push(typed(value, location, &kind)?),
        _ => tracing::debug!(%location, %api_version, %kind, "kind not read by the agent; skipped"),
    }
    Ok(())
}

/// `kind: List` holds objects of any kind; `ServiceList` and the like hold
/// items that may leave out their apiVersion and kind.
fn add_list(
    snapshot: &mut Snapshot,
    mut value: Value,
    location: &Location,
    api_version: &str,
    item_kind: &str,
) -> Result<(), ManifestError> {
    let Some(Value::Array(items)) = value.get_mut("items").map(Value::take) else {
        return Err(ManifestError::ListWithoutItems {
            location: location.clone(),
            kind: format!("{item_kind}List"),
        });
    };
    let typed_list = !item_kind.is_empty();
    for (index, mut item) in items.into_iter().enumerate() {
        if let (true, Value::Object(fields)) = (typed_list, &mut item) {
            fields
                .entry("apiVersion")
                .or_insert_with(|| Value::from(api_version));
            fields
                .entry("kind")
                .or_insert_with(|| Value::from(item_kind));
        }
        let item_location = Location {
            item: Some(index + 1),
            ..location.clone()
        };
        add_document(snapshot, item, &item_location)?;
    }
    Ok(())
}

/// A workload's name, replicas and template labels, read from its object
/// as written (no schema beyond those fields: diagnose only compares
/// labels).
pub(crate) fn workload(value: &Value, kind: &str) -> super::Workload {
    let text = |pointer: &str| {
        value
            .pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let labels = value
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(key, value)| Some((key.clone(), value.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let replicas = match kind {
        "DaemonSet" | "Job" => None,
        _ => Some(
            value
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .and_then(|n| i32::try_from(n).ok())
                .unwrap_or(1),
        ),
    };
    super::Workload {
        kind: kind.to_owned(),
        namespace: text("/metadata/namespace").unwrap_or_else(|| "default".to_owned()),
        name: text("/metadata/name").unwrap_or_default(),
        replicas,
        labels,
    }
}

fn typed<T: DeserializeOwned>(
    value: Value,
    location: &Location,
    kind: &str,
) -> Result<T, ManifestError> {
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>")
        .to_owned();
    serde_path_to_error::deserialize(value).map_err(|error| ManifestError::Schema {
        location: location.clone(),
        kind: kind.to_owned(),
        name,
        field: error.path().to_string(),
        source: error.into_inner(),
    })
}

/// The log target of what an API server would have allocated: `run` warns
/// of it (a frontend will be missing); `plan` and `diagnose` show it only
/// at debug level (RUST_LOG=allocation=debug), beside their answer.
pub const ALLOCATION_LOG: &str = "allocation";

/// Manifests have no allocator: say so when a Service misses what the API
/// server would have filled in.
fn warn_unprogrammable(snapshot: &Snapshot) {
    for service in &snapshot.services {
        let Some(spec) = service.spec.as_ref() else {
            continue;
        };
        let service_type = spec.type_.as_deref().unwrap_or("ClusterIP");
        if service_type != "ExternalName" && spec.cluster_ip.as_deref().unwrap_or("").is_empty() {
            tracing::warn!(
                target: ALLOCATION_LOG,
                service = %object_key(&service.metadata),
                "no spec.clusterIP and no API server to allocate one: not programmed; set spec.clusterIP"
            );
        }
        let missing_node_port = spec
            .ports
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|port| port.node_port.is_none());
        let wants_node_ports = service_type == "NodePort"
            || (service_type == "LoadBalancer"
                && spec.allocate_load_balancer_node_ports != Some(false));
        if wants_node_ports && missing_node_port {
            tracing::warn!(
                target: ALLOCATION_LOG,
                service = %object_key(&service.metadata),
                "a port has no nodePort and no API server to allocate one: no NodePort frontend for it; set ports[].nodePort"
            );
        }
    }
}

#[cfg(test)]
#[path = "manifests_tests.rs"]
mod tests;
