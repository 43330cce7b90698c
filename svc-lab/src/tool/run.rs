//! The commands of the tool.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use svc_agent::k8s::{Snapshot, manifests};

use super::{ToolError, agents, process, state::StateDir};
use crate::{
    cgroup,
    cluster::{
        Change, Cluster, ClusterEvent, PodRecord, describe,
        query::{Namespaces, Query},
        render,
    },
    netns::{self, Netns, PREFIX},
    pass_xdp, pin_root, server, wiring,
};

/// How long `apply`, `delete` and `up` wait for every agent to hold the
/// new tables.
const SYNC_WITHIN: Duration = Duration::from_secs(30);

fn fabric_name(id: &str) -> String {
    format!("{id}-fabric-net")
}
fn node_ns_name(id: &str, node: &str) -> String {
    format!("{id}-node-{node}")
}
fn client_ns_name(id: &str) -> String {
    format!("{id}-client-ext")
}
fn pod_ns_name(id: &str, node_number: u8, index: usize) -> String {
    format!("{id}-pod-{node_number}-{index}")
}
fn pin_dir(id: &str, node: &str) -> PathBuf {
    pin_root().join(id).join(node)
}

/// Objects of every file (or directory) in `files`, merged.
fn load_all(files: &[PathBuf]) -> Result<Snapshot, ToolError> {
    let mut all = Snapshot::default();
    for file in files {
        let snapshot = manifests::load(file)?;
        all.services.extend(snapshot.services);
        all.pods.extend(snapshot.pods);
        all.deployments.extend(snapshot.deployments);
        all.nodes.extend(snapshot.nodes);
        // EndpointSlices: the lab derives them from Pods, as the
        // EndpointSlice controller would; given ones are not used.
    }
    Ok(all)
}

/// `svc-lab up`.
pub fn up(
    state_root: &Path,
    files: &[PathBuf],
    nodes: usize,
    agents: Option<&Path>,
    agent_args: &[String],
) -> Result<(), ToolError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(crate::LabError::NotRoot.into());
    }
    crate::ensure_bpffs()?;
    let snapshot = load_all(files)?;
    let state = StateDir::lock(state_root)?;
    if let Some(existing) = state.load()? {
        if existing.keeper_pid.is_some_and(process::alive) {
            return Err(ToolError::AlreadyUp {
                state: state_root.to_owned(),
            });
        }
        // A lab whose keeper died (a crash, a killed `up`): clear it.
        teardown(&existing);
    }
    netns::sweep_stale(&pin_root());

    let (keeper_pid, mut keeper) = start_keeper(&state)?;
    let id = format!("{PREFIX}{keeper_pid}x0");
    let mut cluster = Cluster::with_nodes(id, &snapshot, nodes)?;
    cluster.keeper_pid = Some(keeper_pid);
    cluster.agent_args = agent_args.to_vec();
    state.save(&cluster)?;
    let result = build(&state, &mut cluster, &mut keeper, &snapshot, agents);
    if let Err(error) = result {
        teardown(&cluster);
        let _ = state.remove();
        return Err(error);
    }
    let everything = Query {
        namespaces: Namespaces::All,
        wide: true,
        ..Query::default()
    };
    let now = Timestamp::now();
    print!(
        "{}",
        render::pods_table(&cluster, &everything, now).unwrap_or_default()
    );
    println!();
    print!(
        "{}",
        render::services_table(&cluster, &everything, now).unwrap_or_default()
    );
    Ok(())
}

struct Keeper {
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

fn start_keeper(state: &StateDir) -> Result<(u32, Keeper), ToolError> {
    let exe = std::env::current_exe().map_err(|source| ToolError::Io {
        what: "finding svc-lab's own path".into(),
        source,
    })?;
    let log = state.log("keeper");
    let err = std::fs::File::create(&log).map_err(|source| ToolError::Io {
        what: format!("creating {}", log.display()),
        source,
    })?;
    let mut command = Command::new(exe);
    command.arg("hold");
    process::detach(&mut command);
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .map_err(|source| ToolError::Io {
            what: "starting the lab's keeper".into(),
            source,
        })?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(ToolError::Exited {
            what: "the lab's keeper".into(),
            tail: String::new(),
            log,
        });
    };
    Ok((
        child.id(),
        Keeper {
            stdin,
            stdout: BufReader::new(stdout),
        },
    ))
}

fn build(
    state: &StateDir,
    cluster: &mut Cluster,
    keeper: &mut Keeper,
    snapshot: &Snapshot,
    agents: Option<&Path>,
) -> Result<(), ToolError> {
    let id = cluster.id.clone();
    let fabric = wiring::create_fabric(&fabric_name(&id))?;
    let mut node_namespaces = Vec::new();
    for node in &cluster.nodes {
        let ns = wiring::create_node(&fabric, &node_ns_name(&id, node.name()), node.number)?;
        node_namespaces.push((ns, node.number));
    }
    let routed: Vec<(&Netns, u8)> = node_namespaces.iter().map(|(ns, n)| (ns, *n)).collect();
    wiring::route_pod_cidrs(&routed)?;
    let numbers: Vec<u8> = cluster.nodes.iter().map(|n| n.number).collect();
    let client = wiring::create_client(&fabric, &client_ns_name(&id), &numbers)?;

    // The keeper attaches the fabric's XDP programs and holds them.
    let ports: Vec<String> = numbers.iter().map(|n| wiring::fabric_port(*n)).collect();
    let keeper_log = state.log("keeper");
    let request = format!("{} {}\n", fabric.name(), ports.join(","));
    let mut answer = String::new();
    let asked = keeper
        .stdin
        .write_all(request.as_bytes())
        .and_then(|()| keeper.stdin.flush());
    let read = asked.and_then(|()| keeper.stdout.read_line(&mut answer));
    if read.is_err() || answer.trim() != "ready" {
        return Err(ToolError::Exited {
            what: "the lab's keeper".into(),
            tail: agents::tail(&keeper_log),
            log: keeper_log,
        });
    }
    // From here the namespaces belong to the lab, not to this process.
    fabric.keep();
    client.keep();
    for (ns, _) in node_namespaces {
        ns.keep();
    }

    // Each node's cgroup, where its agent attaches the socket hooks, is
    // there before the pods start in it.
    if agents.is_some() {
        for node in &cluster.nodes {
            cgroup::create(&id, node.name())?;
        }
    }
    let changes = cluster.apply(snapshot, true)?;
    carry_out(state, cluster, &changes)?;
    if let Some(agent) = agents {
        start_agents(state, cluster, agent)?;
        wait_synced(state, cluster)?;
        note_left_out(state, cluster)?;
    }
    Ok(())
}

fn start_agents(state: &StateDir, cluster: &mut Cluster, agent: &Path) -> Result<(), ToolError> {
    for position in 0..cluster.nodes.len() {
        start_agent(state, cluster, position, agent)?;
    }
    Ok(())
}

/// Starts the agent of the node at `position` on its pins (the `agent`
/// binary), and waits until its initial sync is in the maps.
fn start_agent(
    state: &StateDir,
    cluster: &mut Cluster,
    position: usize,
    agent: &Path,
) -> Result<(), ToolError> {
    let id = cluster.id.clone();
    let name = cluster.nodes[position].name().to_owned();
    let number = cluster.nodes[position].number;
    let ns = Netns::existing(&node_ns_name(&id, &name))?;
    let pins = pin_dir(&id, &name);
    if let Some(parent) = pins.parent() {
        std::fs::create_dir_all(parent).map_err(|source| ToolError::Io {
            what: format!("creating {}", parent.display()),
            source,
        })?;
    }
    // The node's processes (svc-lab exec node/NAME) run in this cgroup,
    // where the agent attaches its socket hooks.
    let node_cgroup = cgroup::create(&id, &name)?;
    let pid = agents::start(
        state,
        &ns,
        &agents::Launch {
            agent,
            node: &name,
            address: wiring::node_address(number),
            pin_dir: &pins,
            cgroup: &node_cgroup,
            extra: &cluster.agent_args,
        },
    )?;
    cluster.nodes[position].agent_pid = Some(pid);
    state.save(cluster)?;
    let log = state.log(&format!("agent-{name}"));
    agents::wait_healthy(&ns, &name, pid, &log)
}

/// `svc-lab restart node/NAME [--kill] [--agent PATH]`: stops the node's
/// agent (SIGTERM, or SIGKILL with `kill`), starts `agent` on the same
/// pins (an upgrade when it is another build) and waits until its initial
/// sync is in the maps. The datapath serves throughout. Returns how long
/// the node had no agent.
pub fn restart(
    state_root: &Path,
    node: &str,
    kill: bool,
    agent: &Path,
) -> Result<Duration, ToolError> {
    let state = StateDir::lock(state_root)?;
    let mut cluster = state.require()?;
    let position = cluster
        .nodes
        .iter()
        .position(|n| n.name() == node)
        .ok_or_else(|| ToolError::Unknown {
            kind: "node",
            name: node.to_owned(),
        })?;
    let started = Instant::now();
    if let Some(pid) = cluster.nodes[position].agent_pid.take() {
        if kill {
            process::kill(pid);
        } else {
            process::stop(pid);
        }
    }
    state.save(&cluster)?;
    start_agent(&state, &mut cluster, position, agent)?;
    Ok(started.elapsed())
}

/// Waits until every running agent's tables equal its plan, and says how
/// long that took.
fn wait_synced(state: &StateDir, cluster: &Cluster) -> Result<(), ToolError> {
    let started = Instant::now();
    let snapshot = manifests::load(&state.manifests())?;
    for node in &cluster.nodes {
        if node.agent_pid.is_none() {
            continue;
        }
        let pins = pin_dir(&cluster.id, node.name());
        while !agents::synced(&snapshot, node.name(), &pins) {
            if started.elapsed() > SYNC_WITHIN {
                return Err(ToolError::NotReady {
                    what: format!("the tables of node {}", node.name()),
                    seconds: SYNC_WITHIN.as_secs(),
                    log: state.log(&format!("agent-{}", node.name())),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    if cluster.nodes.iter().any(|n| n.agent_pid.is_some()) {
        eprintln!(
            "(every node's tables match its plan after {} ms)",
            started.elapsed().as_millis()
        );
    }
    Ok(())
}

/// Starts and stops the pods `changes` name, prints the rest, saves the
/// lab and writes the manifests the agents read. Pods to terminate go
/// last, as the kubelet ends them: once the agents hold them as
/// terminating (and the new pods as ready), each preStop sleep, then
/// SIGTERM (the server drains), then SIGKILL when the grace period is
/// over; then their records go.
fn carry_out(state: &StateDir, cluster: &mut Cluster, changes: &[Change]) -> Result<(), ToolError> {
    let mut terminating = Vec::new();
    for change in changes {
        match change {
            Change::StartPod(key) => {
                start_pod(state, cluster, key)?;
                state.save(cluster)?;
            }
            Change::TerminatePod(key) => terminating.push(key.clone()),
            Change::Said(text) => println!("{text}"),
        }
    }
    state.save(cluster)?;
    state.write_manifests(&cluster.snapshot())?;
    if terminating.is_empty() {
        return Ok(());
    }
    wait_synced(state, cluster)?;
    terminate_pods(state, cluster, &terminating)
}

/// The kubelet's part of deleting `keys`, all at once.
fn terminate_pods(
    state: &StateDir,
    cluster: &mut Cluster,
    keys: &[String],
) -> Result<(), ToolError> {
    let started = Instant::now();
    let pods: Vec<(PodRecord, Duration, Duration)> = keys
        .iter()
        .filter_map(|key| cluster.pod(key).cloned())
        .map(|pod| {
            let (pre_stop, grace) = crate::cluster::pods::termination(&pod.object);
            (pod, pre_stop, grace)
        })
        .collect();
    let mut by_pre_stop: Vec<&(PodRecord, Duration, Duration)> = pods.iter().collect();
    by_pre_stop.sort_by_key(|(_, pre_stop, _)| *pre_stop);
    for (pod, pre_stop, _) in &by_pre_stop {
        if let Some(wait) = pre_stop.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        if let Some(pid) = pod.server_pid {
            process::signal_term(pid);
        }
    }
    for (pod, _, grace) in &pods {
        if let Some(pid) = pod.server_pid {
            let left = grace.saturating_sub(started.elapsed());
            process::wait_or_kill(pid, left);
        }
        if let Some(record) = cluster.finish_termination(&pod.key())
            && let Some(node) = cluster.node(&record.node)
        {
            netns::delete(&pod_ns_name(&cluster.id, node.number, record.index));
        }
    }
    state.save(cluster)?;
    state.write_manifests(&cluster.snapshot())
}

fn start_pod(state: &StateDir, cluster: &mut Cluster, key: &str) -> Result<(), ToolError> {
    let id = cluster.id.clone();
    let unknown = || ToolError::Unknown {
        kind: "pod",
        name: key.to_owned(),
    };
    let pod = cluster.pod(key).ok_or_else(unknown)?.clone();
    let node = cluster.node(&pod.node).ok_or_else(unknown)?;
    let node_ns = Netns::existing(&node_ns_name(&id, &pod.node))?;
    let (ns, _, _) = wiring::create_pod(
        &node_ns,
        &pod_ns_name(&id, node.number, pod.index),
        node.number,
        pod.index,
    )?;
    let name = pod.object.metadata.name.clone().unwrap_or_default();
    let (tcp, udp) = crate::cluster::pods::ports(&pod.object);
    let list = |ports: &[u16]| {
        ports
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let exe = std::env::current_exe().map_err(|source| ToolError::Io {
        what: "finding svc-lab's own path".into(),
        source,
    })?;
    let mut command = ns.command(&exe.to_string_lossy())?;
    // In its node's cgroup, as kubepods sit under a real node's root
    // cgroup: the node's socket hooks see the pod's sockets.
    if let Some(node_cgroup) = existing_node_cgroup(&id, &pod.node)? {
        cgroup::join_on_spawn(&mut command, &node_cgroup)?;
    }
    command.args(["serve", "--pod", &name, "--node", &pod.node]);
    if !tcp.is_empty() {
        command.args(["--tcp", &list(&tcp)]);
    }
    if !udp.is_empty() {
        command.args(["--udp", &list(&udp)]);
    }
    let log = state.log(&format!("pod-{name}"));
    let pid = spawn_until_ready(&mut command, &log, &format!("the server of pod {name}"))?;
    ns.keep();
    if let Some(record) = cluster.pods.iter_mut().find(|p| p.key() == key) {
        record.server_pid = Some(pid);
    }
    Ok(())
}

/// Starts a process that prints `ready` on stdout once it serves.
fn spawn_until_ready(command: &mut Command, log: &Path, what: &str) -> Result<u32, ToolError> {
    let err = std::fs::File::create(log).map_err(|source| ToolError::Io {
        what: format!("creating {}", log.display()),
        source,
    })?;
    process::detach(command);
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .map_err(|source| ToolError::Io {
            what: format!("starting {what}"),
            source,
        })?;
    let mut line = String::new();
    if let Some(stdout) = child.stdout.take() {
        let _ = BufReader::new(stdout).read_line(&mut line);
    }
    if line.trim() != "ready" {
        let _ = child.kill();
        let _ = child.wait();
        return Err(ToolError::Exited {
            what: what.to_owned(),
            log: log.to_owned(),
            tail: agents::tail(log),
        });
    }
    Ok(child.id())
}

/// `svc-lab apply -f ...`.
pub fn apply(state_root: &Path, files: &[PathBuf]) -> Result<(), ToolError> {
    let snapshot = load_all(files)?;
    let mut pending = Vec::new();
    change(state_root, |cluster| {
        let changes = cluster.apply(&snapshot, false)?;
        pending = cluster.rollouts_pending();
        Ok(changes)
    })?;
    // A Deployment given a new template rolls out as its controller would,
    // while kubectl apply has returned.
    for key in pending {
        roll_out_in_background(state_root, &key)?;
    }
    Ok(())
}

/// `svc-lab delete -f ...`.
pub fn delete_objects(state_root: &Path, files: &[PathBuf]) -> Result<(), ToolError> {
    let snapshot = load_all(files)?;
    change(state_root, |cluster| Ok(cluster.delete_objects(&snapshot)?))
}

/// `svc-lab delete KIND/NAME` (NAME may be NAMESPACE/NAME... as
/// `-n`-less kubectl: the default namespace).
pub fn delete(state_root: &Path, kind: &str, name: &str) -> Result<(), ToolError> {
    let key = if name.contains('/') {
        name.to_owned()
    } else {
        format!("default/{name}")
    };
    change(state_root, |cluster| Ok(cluster.delete(kind, &key)?))
}

/// `deployment/NAME` (default namespace) or `deployment/NAMESPACE/NAME`
/// as a key.
fn deployment_key(target: &str) -> Result<String, ToolError> {
    let name = target
        .strip_prefix("deployment/")
        .or_else(|| target.strip_prefix("deploy/"))
        .ok_or_else(|| ToolError::NotADeployment {
            given: target.to_owned(),
        })?;
    Ok(if name.contains('/') {
        name.to_owned()
    } else {
        format!("default/{name}")
    })
}

/// `svc-lab scale deployment/NAME --replicas N`: new pods are started,
/// excess ones terminated gracefully; returns when it is done.
pub fn scale(state_root: &Path, target: &str, replicas: i32) -> Result<(), ToolError> {
    let key = deployment_key(target)?;
    change(state_root, |cluster| Ok(cluster.scale(&key, replicas)?))
}

/// `svc-lab rollout restart deployment/NAME [--no-wait]`: every pod
/// replaced as the Deployment's strategy allows (see [`rollout_status`]).
/// Returns when the rollout is complete; with `no_wait` at once, leaving
/// it to a `rollout status` of its own in the background (as the
/// Deployment controller goes on without kubectl), whose output is
/// STATE/rollout-NAMESPACE-NAME.log.
pub fn rollout_restart(state_root: &Path, target: &str, no_wait: bool) -> Result<(), ToolError> {
    let key = deployment_key(target)?;
    change(state_root, |cluster| Ok(cluster.rollout_restart(&key)?))?;
    if !no_wait {
        return rollout_status(state_root, target);
    }
    roll_out_in_background(state_root, &key)
}

/// A `rollout status` of Deployment `key` of its own, in the background
/// (as the Deployment controller goes on without kubectl); its output goes
/// to STATE/rollout-NAMESPACE-NAME.log.
fn roll_out_in_background(state_root: &Path, key: &str) -> Result<(), ToolError> {
    let exe = std::env::current_exe().map_err(|source| ToolError::Io {
        what: "finding svc-lab's own binary".into(),
        source,
    })?;
    // Detached like the lab's other processes: a terminal's Ctrl-C or
    // hang-up for the next command must not stop the rollout.
    process::spawn(
        std::process::Command::new(exe)
            .arg("--state")
            .arg(state_root)
            .args(["rollout", "status", &format!("deployment/{key}")]),
        &state_root.join(format!("rollout-{}.log", key.replace('/', "-"))),
    )?;
    Ok(())
}

/// `svc-lab rollout status deployment/NAME`: carries the rollout on step
/// by step (new pods started, ready and programmed on every node, then old
/// ones terminated gracefully, within maxSurge and maxUnavailable) and
/// returns once it is complete, printing what kubectl rollout status
/// prints. Each step holds the lab's state alone: other commands, or a
/// second `rollout status`, go in between steps.
pub fn rollout_status(state_root: &Path, target: &str) -> Result<(), ToolError> {
    let key = deployment_key(target)?;
    let name = key.rsplit('/').next().unwrap_or(&key).to_owned();
    loop {
        let mut complete = false;
        change(state_root, |cluster| {
            complete = cluster.rollout_complete(&key)?;
            if complete {
                return Ok(Vec::new());
            }
            println!("{}", cluster.rollout_progress(&key)?);
            let changes = cluster.rollout_step(&key)?;
            if changes.is_empty() {
                return Err(crate::cluster::ClusterError::Invalid {
                    object: format!("deployment.apps/{name}"),
                    reason: "its rollout cannot progress".into(),
                }
                .into());
            }
            Ok(changes)
        })?;
        if complete {
            println!("deployment {name:?} successfully rolled out");
            return Ok(());
        }
    }
}

fn change(
    state_root: &Path,
    f: impl FnOnce(&mut Cluster) -> Result<Vec<Change>, ToolError>,
) -> Result<(), ToolError> {
    let state = StateDir::lock(state_root)?;
    let mut cluster = state.require()?;
    let changes = f(&mut cluster)?;
    carry_out(&state, &mut cluster, &changes)?;
    wait_synced(&state, &cluster)?;
    note_left_out(&state, &mut cluster)
}

/// What each node's agent left out at its last sync, as Warning events on
/// the Services (kubectl's From: `svc-agent, NODE`).
fn note_left_out(state: &StateDir, cluster: &mut Cluster) -> Result<(), ToolError> {
    let now = Time(Timestamp::now());
    let mut events = Vec::new();
    for node in cluster.nodes.iter().filter(|node| node.agent_pid.is_some()) {
        let ns = Netns::existing(&node_ns_name(&cluster.id, node.name()))?;
        let address = agents::HEALTH_ADDRESS;
        let left_out = match ns.in_thread(move || svc_agent::run::fetch_left_out(address))? {
            Ok(left_out) => left_out,
            Err(error) => {
                tracing::warn!(node = node.name(), %error, "no /left-out from the agent");
                continue;
            }
        };
        for left in left_out {
            events.push(ClusterEvent {
                object: format!("service/{}", left.service),
                type_: "Warning".into(),
                reason: "LeftOut".into(),
                message: left.detail(),
                source: format!("svc-agent, {}", node.name()),
                first: now.clone(),
                last: now.clone(),
                count: 1,
            });
        }
    }
    if events.is_empty() {
        return Ok(());
    }
    for event in events {
        cluster.record(event);
    }
    state.save(cluster)
}

/// `svc-lab get pods|svc|endpoints|endpointslices [NAME] [-o wide|json|yaml]`.
pub fn get(
    state_root: &Path,
    what: &str,
    name: Option<&str>,
    output: Option<&str>,
    query: &Query,
) -> Result<render::Listing, ToolError> {
    let state = StateDir::lock(state_root)?;
    let cluster = state.require()?;
    let (output, wide) = render::Output::parse(output)?;
    let query = Query {
        wide,
        ..query.clone()
    };
    Ok(render::get(
        &cluster,
        what,
        name,
        output,
        &query,
        Timestamp::now(),
    )?)
}

/// `svc-lab describe svc|pod NAME [-n NAMESPACE]`.
pub fn describe(
    state_root: &Path,
    what: &str,
    name: &str,
    namespace: &str,
) -> Result<String, ToolError> {
    let state = StateDir::lock(state_root)?;
    let cluster = state.require()?;
    Ok(describe::describe(
        &cluster,
        what,
        name,
        namespace,
        Timestamp::now(),
    )?)
}

/// Where `exec` and `logs` go.
pub enum Target {
    Node(String),
    Pod(String),
    Client,
}

impl Target {
    pub fn parse(text: &str) -> Result<Self, ToolError> {
        match text.split_once('/') {
            Some(("node" | "nodes" | "no", name)) => Ok(Self::Node(name.to_owned())),
            Some(("pod" | "pods" | "po", name)) => Ok(Self::Pod(name.to_owned())),
            None if text == "client" => Ok(Self::Client),
            _ => Err(ToolError::Target {
                given: text.to_owned(),
            }),
        }
    }
}

/// The cgroup of lab `id`'s node `node`, if its agent made it (a lab up
/// with --no-agent has none).
fn existing_node_cgroup(id: &str, node: &str) -> Result<Option<PathBuf>, ToolError> {
    let path = cgroup::node_path(id, node)?;
    Ok(path.exists().then_some(path))
}

fn find_pod<'a>(cluster: &'a Cluster, name: &str) -> Result<&'a PodRecord, ToolError> {
    cluster
        .pods
        .iter()
        .find(|pod| pod.key() == name || pod.object.metadata.name.as_deref() == Some(name))
        .ok_or_else(|| ToolError::Unknown {
            kind: "pod",
            name: name.to_owned(),
        })
}

/// `svc-lab exec TARGET -- CMD...`: the command's exit status.
pub fn exec(
    state_root: &Path,
    target: &Target,
    command: &[String],
) -> Result<ExitStatus, ToolError> {
    let (ns_name, pin, node_cgroup) = {
        let state = StateDir::lock(state_root)?;
        let cluster = state.require()?;
        match target {
            Target::Node(name) => {
                cluster.node(name).ok_or_else(|| ToolError::Unknown {
                    kind: "node",
                    name: name.clone(),
                })?;
                (
                    node_ns_name(&cluster.id, name),
                    Some(pin_dir(&cluster.id, name)),
                    existing_node_cgroup(&cluster.id, name)?,
                )
            }
            Target::Pod(name) => {
                let pod = find_pod(&cluster, name)?;
                let number = cluster.node(&pod.node).map_or(0, |n| n.number);
                (
                    pod_ns_name(&cluster.id, number, pod.index),
                    None,
                    existing_node_cgroup(&cluster.id, &pod.node)?,
                )
            }
            Target::Client => (client_ns_name(&cluster.id), None, None),
        }
        // The lock is released here: the command may run svc-lab itself.
    };
    let Some((program, args)) = command.split_first() else {
        return Err(ToolError::Target {
            given: "an empty command".into(),
        });
    };
    let ns = Netns::existing(&ns_name)?;
    let mut command = ns.command(program)?;
    command.args(args);
    // svc-lab's own directory (where svc-agent is) first on PATH.
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let path = std::env::var("PATH").unwrap_or_default();
        command.env("PATH", format!("{}:{path}", dir.display()));
    }
    if let Some(pin) = pin {
        command.env("SVC_PIN_PATH", pin);
    }
    // A process of the node, or of one of its pods: the node's socket
    // hooks apply.
    if let Some(node_cgroup) = node_cgroup {
        cgroup::join_on_spawn(&mut command, &node_cgroup)?;
    }
    command.status().map_err(|source| ToolError::Io {
        what: format!("running {program}"),
        source,
    })
}

/// `svc-lab logs node/NAME|pod/NAME`.
pub fn logs(state_root: &Path, target: &Target) -> Result<String, ToolError> {
    let state = StateDir::lock(state_root)?;
    let cluster = state.require()?;
    let log = match target {
        Target::Node(name) => {
            cluster.node(name).ok_or_else(|| ToolError::Unknown {
                kind: "node",
                name: name.clone(),
            })?;
            state.log(&format!("agent-{name}"))
        }
        Target::Pod(name) => {
            let pod = find_pod(&cluster, name)?;
            state.log(&format!(
                "pod-{}",
                pod.object.metadata.name.as_deref().unwrap_or_default()
            ))
        }
        Target::Client => {
            return Err(ToolError::Target {
                given: "client (it runs nothing of the lab's)".into(),
            });
        }
    };
    std::fs::read_to_string(&log).map_err(|source| ToolError::Io {
        what: format!("reading {}", log.display()),
        source,
    })
}

/// `svc-lab down`: every process, namespace and pin of the lab, and its
/// state; also of a lab whose `up` was killed. Leftovers of other dead
/// labs go too.
pub fn down(state_root: &Path) -> Result<(), ToolError> {
    if state_root.exists() {
        let state = StateDir::lock(state_root)?;
        // Unreadable state still goes: the sweep below finds the rest.
        if let Ok(Some(cluster)) = state.load() {
            teardown(&cluster);
            println!("lab {} removed", cluster.id);
        }
        state.remove()?;
    }
    netns::sweep_stale(&pin_root());
    cgroup::sweep_stale();
    Ok(())
}

/// Stops the lab's processes (agents first: a stopping agent leaves the
/// datapath, so its pins go next), removes pins and namespaces.
fn teardown(cluster: &Cluster) {
    for node in &cluster.nodes {
        if let Some(pid) = node.agent_pid {
            process::stop(pid);
        }
    }
    for pod in &cluster.pods {
        if let Some(pid) = pod.server_pid {
            process::stop(pid);
        }
    }
    if let Some(pid) = cluster.keeper_pid {
        process::stop(pid);
    }
    crate::remove_lab_pins(&pin_root().join(&cluster.id));
    cgroup::remove_lab(&cluster.id);
    let prefix = format!("{}-", cluster.id);
    for name in netns::lab_namespaces() {
        if name.starts_with(&prefix) {
            netns::delete(&name);
        }
    }
}

/// `svc-lab hold` (hidden): the lab's keeper. Reads `FABRIC_NS PORT,...`
/// on stdin, attaches the pass-everything XDP program to those fabric
/// ports, says `ready`, and holds them until it is stopped.
pub fn hold() -> Result<(), ToolError> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|source| ToolError::Io {
            what: "reading the fabric to hold".into(),
            source,
        })?;
    let (fabric, ports) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
    let ports: Vec<String> = ports
        .split(',')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    let _datapath = pass_xdp(&Netns::existing(fabric)?, ports)?;
    println!("ready");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}

/// `svc-lab serve` (hidden): a pod's lab server; says `ready` once every
/// port is bound, then serves until it is stopped.
pub fn serve(pod: &str, node: &str, tcp: &[u16], udp: &[u16]) -> Result<(), ToolError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| ToolError::Io {
            what: "starting a runtime".into(),
            source,
        })?;
    let identity = server::Identity {
        pod: pod.to_owned(),
        node: node.to_owned(),
    };
    runtime.block_on(async move {
        let listeners = server::bind(identity, tcp, udp)
            .await
            .map_err(|source| ToolError::Io {
                what: "binding the lab server's ports".into(),
                source,
            })?;
        println!("ready");
        let _ = std::io::stdout().flush();
        // SIGTERM drains, as the kubelet expects of a container: stop
        // accepting, answer what is in flight, exit.
        let mut terminate = tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        )
        .map_err(|source| ToolError::Io {
            what: "installing the SIGTERM handler".into(),
            source,
        })?;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            terminate.recv().await;
            let _ = stop.send(true);
        });
        server::serve(listeners, stop_rx).await;
        Ok(())
    })
}

/// Routes the client's LoadBalancer IPs through `via`: node/NAME pins
/// them to that node, `all` spreads them over every node (ECMP, by
/// addresses and ports). Returns the route as `ip route` shows it.
pub fn route_lb(state_root: &Path, via: &str) -> Result<String, ToolError> {
    let state = StateDir::lock(state_root)?;
    let cluster = state.require()?;
    let numbers: Vec<u8> = if via == "all" {
        cluster.nodes.iter().map(|node| node.number).collect()
    } else {
        let name = via
            .strip_prefix("node/")
            .ok_or_else(|| ToolError::RouteVia {
                given: via.to_owned(),
            })?;
        let node = cluster.node(name).ok_or_else(|| ToolError::Unknown {
            kind: "node",
            name: name.to_owned(),
        })?;
        vec![node.number]
    };
    let client = Netns::existing(&client_ns_name(&cluster.id))?;
    wiring::route_lb_pool(&client, &numbers)?;
    let shown = client.ip(&["route", "show", wiring::LB_POOL])?;
    Ok(String::from_utf8_lossy(&shown.stdout).into_owned())
}
