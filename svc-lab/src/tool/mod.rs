//! The `svc-lab` tool: a lab that outlives the command that built it.
//!
//! Naming: every namespace and pin directory of a tool lab starts with
//! `svl<pid>x0`, where pid is the lab's keeper (`svc-lab hold`, which also
//! holds the fabric's XDP programs). While the keeper runs, no sweep
//! touches the lab; once it is gone (`down`, a crash, a kill) the next
//! `up`, `down` or test lab sweeps whatever is left, exactly as for
//! test labs whose process died.
mod agents;
mod process;
mod run;
mod state;

use std::path::PathBuf;

pub use self::agents::agent_binary;
pub use self::{
    run::{
        Target, apply, delete, delete_objects, describe, down, exec, get, hold, logs, restart,
        rollout_restart, rollout_status, route_lb, scale, serve, up,
    },
    state::DEFAULT_STATE,
};
use crate::{LabError, cluster::ClusterError};

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{what}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("lab state {path} is unreadable; `svc-lab down` removes it")]
    State {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("no lab is up (state {state}); start one with `svc-lab up -f MANIFESTS`")]
    NoLab { state: PathBuf },
    #[error("a lab is up already (state {state}); `svc-lab down` removes it")]
    AlreadyUp { state: PathBuf },
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Manifest(#[from] svc_agent::k8s::manifests::ManifestError),
    #[error("{what} exited before it was ready; its log {log}:\n{tail}")]
    Exited {
        what: String,
        log: PathBuf,
        tail: String,
    },
    #[error("{what} was not ready within {seconds} s; see {log}")]
    NotReady {
        what: String,
        seconds: u64,
        log: PathBuf,
    },
    #[error("unknown target {given:?}: use node/NAME, pod/NAME or client")]
    Target { given: String },
    #[error("route lb --via takes node/NAME or all, not {given:?}")]
    RouteVia { given: String },
    #[error("give deployment/NAME, not {given:?}")]
    NotADeployment { given: String },
    #[error("unknown resource type {given:?}: use pods, svc, endpoints or endpointslices")]
    ResourceType { given: String },
    #[error("{kind} {name} is not in this lab")]
    Unknown { kind: &'static str, name: String },
    #[error("no svc-agent next to svc-lab at {path}: build both (cargo build --release)")]
    NoAgent { path: PathBuf },
}
