//! The lab's state directory: `lab.json` (the [`Cluster`]), `manifests/`
//! (what the agents read), `logs/`. Every invocation holds `lock` while it
//! reads and changes the lab.
use std::{
    fs,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use svc_agent::k8s::Snapshot;

use super::ToolError;
use crate::cluster::Cluster;

pub const DEFAULT_STATE: &str = "/run/svc-lab";

pub struct StateDir {
    pub root: PathBuf,
    _lock: fs::File,
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> ToolError {
    move |source| ToolError::Io { what, source }
}

impl StateDir {
    /// Opens (creating) the directory and takes its lock, waiting for
    /// another invocation to finish.
    pub fn lock(root: &Path) -> Result<Self, ToolError> {
        for dir in [root.to_owned(), root.join("manifests"), root.join("logs")] {
            fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        }
        let path = root.join("lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(format!("opening {}", path.display())))?;
        // SAFETY: a valid open descriptor.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(ToolError::Io {
                what: format!("locking {}", path.display()),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Self {
            root: root.to_owned(),
            _lock: lock,
        })
    }

    fn cluster_path(&self) -> PathBuf {
        self.root.join("lab.json")
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.root.join("logs").join(format!("{name}.log"))
    }

    pub fn manifests(&self) -> PathBuf {
        self.root.join("manifests")
    }

    /// The lab, or `None` when none is up.
    pub fn load(&self) -> Result<Option<Cluster>, ToolError> {
        let path = self.cluster_path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ToolError::Io {
                    what: format!("reading {}", path.display()),
                    source,
                });
            }
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| ToolError::State { path, source })
    }

    /// The lab, or an error saying to run `up`.
    pub fn require(&self) -> Result<Cluster, ToolError> {
        self.load()?.ok_or_else(|| ToolError::NoLab {
            state: self.root.clone(),
        })
    }

    pub fn save(&self, cluster: &Cluster) -> Result<(), ToolError> {
        let text = serde_json::to_string_pretty(cluster).map_err(|source| ToolError::State {
            path: self.cluster_path(),
            source,
        })?;
        write_atomically(&self.cluster_path(), &text)
    }

    /// Writes the cluster's objects as one List for the agents (atomically:
    /// an agent never reads half a file).
    pub fn write_manifests(&self, snapshot: &Snapshot) -> Result<(), ToolError> {
        let mut items = Vec::new();
        let to_value = |value: Result<serde_json::Value, serde_json::Error>| {
            value.map_err(|source| ToolError::State {
                path: self.manifests(),
                source,
            })
        };
        for node in &snapshot.nodes {
            items.push(to_value(serde_json::to_value(node))?);
        }
        for pod in &snapshot.pods {
            items.push(to_value(serde_json::to_value(pod))?);
        }
        for deployment in &snapshot.deployments {
            items.push(to_value(serde_json::to_value(deployment))?);
        }
        for service in &snapshot.services {
            items.push(to_value(serde_json::to_value(&**service))?);
        }
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
        write_atomically(&self.manifests().join("cluster.json"), &list.to_string())
    }

    /// Removes the directory (the lock goes with it).
    pub fn remove(self) -> Result<(), ToolError> {
        fs::remove_dir_all(&self.root).map_err(io(format!("removing {}", self.root.display())))
    }
}

fn write_atomically(path: &Path, text: &str) -> Result<(), ToolError> {
    let temporary = path.with_extension("tmp");
    fs::write(&temporary, text).map_err(io(format!("writing {}", temporary.display())))?;
    fs::rename(&temporary, path).map_err(io(format!("writing {}", path.display())))
}
