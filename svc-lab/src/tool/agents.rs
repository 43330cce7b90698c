//! One `svc-agent run` per node, inside the node's namespace, and waiting
//! for it: `/readyz`, then the kernel tables equal to the plan.
use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use svc_agent::{
    dataplane::Tables,
    k8s::Snapshot,
    model::{self, BackendState, Config, FrontendKind, Protocol},
};

use super::{ToolError, process, state::StateDir};
use crate::{HAIRPIN_ADDRESS, NAT_PORTS, SERVICE_CIDR, SERVICE_CIDR6, netns::Netns};

pub const HEALTH_ADDRESS: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 10266));
const READY_WITHIN: Duration = Duration::from_secs(60);

/// The svc-agent binary beside this svc-lab binary.
pub fn agent_binary() -> Result<PathBuf, ToolError> {
    let path = std::env::current_exe()
        .map_err(|source| ToolError::Io {
            what: "finding svc-lab's own path".into(),
            source,
        })?
        .with_file_name("svc-agent");
    if !path.exists() {
        return Err(ToolError::NoAgent { path });
    }
    Ok(path)
}

/// One node's `svc-agent run`.
pub struct Launch<'a> {
    /// The svc-agent binary.
    pub agent: &'a Path,
    pub node: &'a str,
    pub address: Ipv4Addr,
    pub pin_dir: &'a Path,
    pub cgroup: &'a Path,
    /// The user's flags, last: `run` takes the last of a flag given twice.
    pub extra: &'a [String],
}

/// Starts `launch` in the node's namespace `ns`; returns its pid.
pub fn start(state: &StateDir, ns: &Netns, launch: &Launch<'_>) -> Result<u32, ToolError> {
    let mut command = ns.command(&launch.agent.to_string_lossy())?;
    command
        .arg("run")
        .args(["--node", launch.node])
        .arg("--manifests")
        .arg(state.manifests())
        .arg("--pin-path")
        .arg(launch.pin_dir)
        .args(["--node-interfaces", "eth0"])
        .args(["--pod-interface-prefix", "lxc"])
        .args(["--node-address", &launch.address.to_string()])
        .args(["--hairpin-address", &HAIRPIN_ADDRESS.to_string()])
        .args(["--nat-ports", &format!("{}-{}", NAT_PORTS.0, NAT_PORTS.1)])
        .args(["--service-cidr", SERVICE_CIDR])
        .args(["--service-cidr", SERVICE_CIDR6])
        .args(["--listen", &HEALTH_ADDRESS.to_string()])
        .arg("--cgroup")
        .arg(launch.cgroup)
        .args(launch.extra);
    process::spawn(&mut command, &state.log(&format!("agent-{}", launch.node)))
}

/// Waits for the agent's `/readyz` to answer 200.
pub fn wait_healthy(ns: &Netns, name: &str, pid: u32, log: &Path) -> Result<(), ToolError> {
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        if !process::alive(pid) {
            return Err(ToolError::Exited {
                what: format!("svc-agent of node {name}"),
                log: log.to_owned(),
                tail: tail(log),
            });
        }
        if ns.in_thread(ready)? {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(ToolError::NotReady {
                what: format!("svc-agent of node {name}"),
                seconds: READY_WITHIN.as_secs(),
                log: log.to_owned(),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `GET /readyz` answered 200: the initial sync is in the maps (run
/// inside the node's namespace).
pub fn ready() -> bool {
    let Ok(mut stream) = TcpStream::connect(HEALTH_ADDRESS) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .lines()
        .next()
        .is_some_and(|status| status.split_whitespace().nth(1) == Some("200"))
}

/// The last lines of a log.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// What a frontend is, without counters or names: what must match between
/// the plan and the kernel.
pub type FrontendShape = (
    std::net::IpAddr,
    u16,
    Protocol,
    FrontendKind,
    Vec<(std::net::IpAddr, u16, BackendState)>,
);

pub fn shape(frontend: &model::Frontend) -> FrontendShape {
    let mut backends: Vec<_> = frontend
        .backends
        .iter()
        .map(|b| (b.address, b.port, b.state))
        .collect();
    backends.sort();
    (
        frontend.address,
        frontend.port,
        frontend.protocol,
        frontend.kind,
        backends,
    )
}

/// Whether node `name`'s kernel tables hold exactly its plan.
pub fn synced(snapshot: &Snapshot, name: &str, pin_dir: &Path) -> bool {
    let Ok(plan) = model::plan(snapshot, name, &Config::default()) else {
        return false;
    };
    let Ok(states) = Tables::open_pinned(pin_dir).and_then(|tables| tables.read()) else {
        return false;
    };
    let mut want: Vec<FrontendShape> = plan.frontends.iter().map(shape).collect();
    let mut have: Vec<FrontendShape> = states.iter().map(|s| shape(&s.frontend)).collect();
    want.sort();
    have.sort();
    want == have
}
