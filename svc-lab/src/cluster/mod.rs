//! The lab's cluster as data: its Nodes, Pods, Deployments and Services,
//! and what applying or deleting manifests changes. Pure: the tool turns
//! the [`Change`]s into namespaces and processes.
mod allocate;
pub mod describe;
pub mod pods;
pub mod query;
pub mod render;
mod services;
mod tabwriter;
pub mod yaml;

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus, Pod, Service},
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff::Timestamp,
};
use serde::{Deserialize, Serialize};
use svc_agent::k8s::{Snapshot, namespace_of, object_key};

pub use self::allocate::{in_lb_pool, lb_ingress};
use crate::wiring;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "The Deployment {name:?} is invalid: spec.selector: Invalid value: {selector}: field is immutable. \
         A Deployment's selector cannot change: delete it (svc-lab delete deployment/{name}) and apply it again"
    )]
    SelectorImmutable { name: String, selector: String },
    #[error("no more {what} for {object}")]
    Exhausted { what: &'static str, object: String },
    #[error("{object}: {reason}")]
    Invalid { object: String, reason: String },
    #[error("{kind} {name:?} not found")]
    NotFound { kind: String, name: String },
    #[error("nodes are made by `svc-lab up`; Node {name} cannot be applied later")]
    NodeAfterUp { name: String },
}

/// kubectl's error for a Deployment `key` (NAMESPACE/NAME) that is not
/// there.
fn no_deployment(key: &str) -> ClusterError {
    ClusterError::NotFound {
        kind: "deployments.apps".into(),
        name: key.rsplit('/').next().unwrap_or(key).to_owned(),
    }
}

/// A node of the lab.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeRecord {
    pub number: u8,
    pub object: Node,
    pub agent_pid: Option<u32>,
}

impl NodeRecord {
    pub fn name(&self) -> &str {
        self.object.metadata.name.as_deref().unwrap_or_default()
    }
}

/// A Pod of the lab: the object (status filled in), where it runs, and its
/// lab server's process.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PodRecord {
    pub object: Pod,
    pub node: String,
    /// Its place on the node (address 198.18.NODE.(10+index), veth lxcINDEX).
    pub index: usize,
    /// `NAMESPACE/NAME` of the Deployment that made it.
    pub owner: Option<String>,
    pub server_pid: Option<u32>,
}

impl PodRecord {
    pub fn key(&self) -> String {
        object_key(&self.object.metadata)
    }
}

/// Everything the lab holds; saved as JSON in the state directory.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Cluster {
    /// Prefix of every namespace and pin directory (`svl<keeper pid>x0`).
    pub id: String,
    /// The process that holds the lab (see `svc-lab hold`).
    pub keeper_pid: Option<u32>,
    pub nodes: Vec<NodeRecord>,
    pub pods: Vec<PodRecord>,
    pub deployments: Vec<Deployment>,
    pub services: Vec<Service>,
    /// Pods placed so far (round-robin over nodes).
    pub placed: u64,
    /// Flags every node's agent gets after the lab's own (`up --agent-arg`).
    #[serde(default)]
    pub agent_args: Vec<String>,
    /// What happened to objects, for `describe` (oldest first).
    #[serde(default)]
    pub events: Vec<ClusterEvent>,
}

/// An event about an object, as `kubectl describe` lists them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterEvent {
    /// `service/NAMESPACE/NAME` or `pod/NAMESPACE/NAME`.
    pub object: String,
    /// Normal or Warning.
    pub type_: String,
    pub reason: String,
    pub message: String,
    /// Who reported it (kubectl's From column).
    pub source: String,
    pub first: Time,
    pub last: Time,
    pub count: u32,
}

/// Events kept per object; older ones go first.
const EVENTS_PER_OBJECT: usize = 20;

/// What applying or deleting changed, for the tool to carry out and print.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Start the Pod of this key (its record is in the cluster already).
    StartPod(String),
    /// Terminate this Pod as the kubelet does: it is terminating now (its
    /// endpoint not ready, still serving); after its preStop hook, SIGTERM,
    /// then SIGKILL once its grace period is over; then its record goes
    /// ([`Cluster::finish_termination`]).
    TerminatePod(String),
    /// A message as kubectl prints it (`service/web created`).
    Said(String),
}

impl PartialEq for PodRecord {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key() && self.node == other.node && self.index == other.index
    }
}
impl Eq for PodRecord {}

impl Cluster {
    /// Nodes from `snapshot`'s Node objects, else `count` nodes
    /// node-1..node-N; each gets its pod CIDRs and InternalIPs (one of
    /// each family).
    pub fn with_nodes(id: String, snapshot: &Snapshot, count: usize) -> Result<Self, ClusterError> {
        let given: Vec<Node> = if snapshot.nodes.is_empty() {
            (1..=count)
                .map(|n| Node {
                    metadata: ObjectMeta {
                        name: Some(format!("node-{n}")),
                        ..ObjectMeta::default()
                    },
                    ..Node::default()
                })
                .collect()
        } else {
            snapshot.nodes.clone()
        };
        if given.is_empty() || given.len() > wiring::MAX_NODES {
            return Err(ClusterError::Invalid {
                object: "nodes".into(),
                reason: format!("a lab has 1 to {} nodes", wiring::MAX_NODES),
            });
        }
        let mut nodes = Vec::new();
        for (index, mut node) in given.into_iter().enumerate() {
            let number = u8::try_from(index + 1).map_err(|_| ClusterError::Invalid {
                object: "nodes".into(),
                reason: "too many nodes".into(),
            })?;
            let name = node.metadata.name.clone().unwrap_or_default();
            let address = wiring::node_address(number).to_string();
            node.spec = Some(NodeSpec {
                pod_cidr: Some(wiring::pod_cidr(number)),
                pod_cidrs: Some(vec![wiring::pod_cidr(number), wiring::pod_cidr6(number)]),
                ..node.spec.unwrap_or_default()
            });
            node.status = Some(NodeStatus {
                addresses: Some(vec![
                    NodeAddress {
                        type_: "InternalIP".into(),
                        address,
                    },
                    NodeAddress {
                        type_: "InternalIP".into(),
                        address: wiring::node_address6(number).to_string(),
                    },
                    NodeAddress {
                        type_: "Hostname".into(),
                        address: name,
                    },
                ]),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..NodeCondition::default()
                }]),
                ..NodeStatus::default()
            });
            nodes.push(NodeRecord {
                number,
                object: node,
                agent_pid: None,
            });
        }
        Ok(Self {
            id,
            nodes,
            ..Self::default()
        })
    }

    pub fn node(&self, name: &str) -> Option<&NodeRecord> {
        self.nodes.iter().find(|node| node.name() == name)
    }

    pub fn pod(&self, key: &str) -> Option<&PodRecord> {
        self.pods.iter().find(|pod| pod.key() == key)
    }

    /// Applies every object of `snapshot` (Nodes only at `up`): Deployments
    /// first, then Pods, then Services.
    pub fn apply(&mut self, snapshot: &Snapshot, at_up: bool) -> Result<Vec<Change>, ClusterError> {
        self.noting_endpoints(|cluster| cluster.apply_objects(snapshot, at_up))
    }

    fn apply_objects(
        &mut self,
        snapshot: &Snapshot,
        at_up: bool,
    ) -> Result<Vec<Change>, ClusterError> {
        let mut changes = Vec::new();
        if !at_up && let Some(node) = snapshot.nodes.first() {
            return Err(ClusterError::NodeAfterUp {
                name: node.metadata.name.clone().unwrap_or_default(),
            });
        }
        // Check every Deployment before changing anything.
        for deployment in &snapshot.deployments {
            self.check_selector(deployment)?;
        }
        for deployment in &snapshot.deployments {
            changes.extend(self.apply_deployment(deployment)?);
        }
        for pod in &snapshot.pods {
            if let Some(owner) = self.owning_deployment(pod) {
                changes.push(Change::Said(format!(
                    "pod/{} skipped: Deployment {owner} makes its own Pods",
                    pod.metadata.name.as_deref().unwrap_or_default()
                )));
                continue;
            }
            changes.extend(self.apply_pod(pod.clone(), None)?);
        }
        for service in &snapshot.services {
            changes.push(self.apply_service(service)?);
        }
        Ok(changes)
    }

    fn check_selector(&self, deployment: &Deployment) -> Result<(), ClusterError> {
        let key = object_key(&deployment.metadata);
        let Some(existing) = self
            .deployments
            .iter()
            .find(|d| object_key(&d.metadata) == key)
        else {
            return Ok(());
        };
        let old = &existing.spec.selector;
        let new = &deployment.spec.selector;
        if old != new {
            return Err(ClusterError::SelectorImmutable {
                name: deployment.metadata.name.clone().unwrap_or_default(),
                selector: render::selector_text(Some(new)),
            });
        }
        Ok(())
    }

    /// A Pod the manifests give that a ReplicaSet of a Deployment (given
    /// now or earlier) made: it carries the template hash label and the
    /// Deployment selects it.
    fn owning_deployment(&self, pod: &Pod) -> Option<String> {
        let labels = pod.metadata.labels.as_ref()?;
        labels.get(pods::LABEL_TEMPLATE_HASH)?;
        self.deployments
            .iter()
            .find(|deployment| {
                namespace_of(&deployment.metadata) == namespace_of(&pod.metadata)
                    && deployment
                        .spec
                        .selector
                        .match_labels
                        .as_ref()
                        .is_some_and(|selector| {
                            selector.iter().all(|(k, v)| labels.get(k) == Some(v))
                        })
            })
            .map(|deployment| object_key(&deployment.metadata))
    }

    fn apply_deployment(&mut self, deployment: &Deployment) -> Result<Vec<Change>, ClusterError> {
        let key = object_key(&deployment.metadata);
        let mut deployment = deployment.clone();
        deployment.metadata.namespace = Some(namespace_of(&deployment.metadata).to_owned());
        let name = deployment.metadata.name.clone().unwrap_or_default();
        let existing = self
            .deployments
            .iter()
            .position(|d| object_key(&d.metadata) == key);
        let verb = if existing.is_some() {
            "configured"
        } else {
            "created"
        };
        // A strategy the API server would refuse is refused here, before
        // any change.
        pods::strategy(&deployment).map_err(|reason| ClusterError::Invalid {
            object: format!("deployment.apps/{name}"),
            reason,
        })?;
        match existing {
            Some(position) => self.deployments[position] = deployment.clone(),
            None => self.deployments.push(deployment.clone()),
        }
        // A new template is rolled out step by step within the strategy,
        // as the Deployment controller does (`svc-lab apply` carries it on
        // in the background: see [`Self::rollouts_pending`]); a new count
        // alone is reconciled at once, as a scale is.
        let (_, old) = self.pods_by_template(&deployment);
        let mut changes = if old.is_empty() {
            self.reconcile_replicas(&deployment)?
        } else {
            Vec::new()
        };
        changes.insert(0, Change::Said(format!("deployment.apps/{name} {verb}")));
        Ok(changes)
    }

    /// The Deployments with live pods of an older template: rollouts under
    /// way (or to start), by key.
    pub fn rollouts_pending(&self) -> Vec<String> {
        self.deployments
            .iter()
            .filter(|deployment| !self.pods_by_template(deployment).1.is_empty())
            .map(|deployment| object_key(&deployment.metadata))
            .collect()
    }

    /// What a Deployment's ReplicaSets do: pods of an older template go,
    /// pods beyond the count go (the newest first), and new pods make up
    /// the count. Terminating pods count for nothing.
    fn reconcile_replicas(&mut self, deployment: &Deployment) -> Result<Vec<Change>, ClusterError> {
        let replicas = pods::replicas(deployment);
        let (current, old) = self.pods_by_template(deployment);
        let mut changes = Vec::new();
        for pod_key in current.iter().skip(replicas).chain(&old) {
            changes.extend(self.remove_pod(pod_key));
        }
        changes.extend(self.make_replicas(deployment, replicas.saturating_sub(current.len()))?);
        Ok(changes)
    }

    /// `count` new pods of Deployment `deployment`'s current template.
    fn make_replicas(
        &mut self,
        deployment: &Deployment,
        count: usize,
    ) -> Result<Vec<Change>, ClusterError> {
        let key = object_key(&deployment.metadata);
        let mut changes = Vec::new();
        for _ in 0..count {
            self.placed += 1;
            let pod = pods::replica(deployment, self.placed);
            changes.extend(self.apply_pod(pod, Some(key.clone()))?);
        }
        Ok(changes)
    }

    /// `scale deployment/NAME --replicas N`.
    pub fn scale(&mut self, key: &str, replicas: i32) -> Result<Vec<Change>, ClusterError> {
        self.change_deployment(key, "scaled", |deployment| {
            deployment.spec.replicas = Some(replicas);
        })
    }

    /// `rollout restart deployment/NAME`: a new template (its
    /// restartedAt annotation). The pods are then replaced step by step,
    /// as the strategy allows ([`Self::rollout_step`]).
    pub fn rollout_restart(&mut self, key: &str) -> Result<Vec<Change>, ClusterError> {
        let deployment = self.deployment_mut(key)?;
        let template = deployment
            .spec
            .template
            .metadata
            .get_or_insert_with(ObjectMeta::default);
        template
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(
                "kubectl.kubernetes.io/restartedAt".into(),
                Timestamp::now().to_string(),
            );
        let name = deployment.metadata.name.clone().unwrap_or_default();
        Ok(vec![Change::Said(format!(
            "deployment.apps/{name} restarted"
        ))])
    }

    fn deployment_mut(&mut self, key: &str) -> Result<&mut Deployment, ClusterError> {
        self.deployments
            .iter_mut()
            .find(|d| object_key(&d.metadata) == key)
            .ok_or_else(|| no_deployment(key))
    }

    /// Deployment `key`'s live (not terminating) pods, oldest first: those
    /// of its current template, and the others.
    fn pods_by_template(&self, deployment: &Deployment) -> (Vec<String>, Vec<String>) {
        let key = object_key(&deployment.metadata);
        let hash = pods::template_hash(deployment);
        let (current, old): (Vec<&PodRecord>, Vec<&PodRecord>) = self
            .pods
            .iter()
            .filter(|pod| pod.owner.as_deref() == Some(key.as_str()))
            .filter(|pod| pod.object.metadata.deletion_timestamp.is_none())
            .partition(|pod| {
                pod.object
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|labels| labels.get(pods::LABEL_TEMPLATE_HASH))
                    .is_some_and(|pod_hash| *pod_hash == hash)
            });
        let keys = |pods: Vec<&PodRecord>| pods.into_iter().map(PodRecord::key).collect();
        (keys(current), keys(old))
    }

    /// The rollout of Deployment `key` is complete: as many pods of its
    /// template as it asks for, none of an older one.
    pub fn rollout_complete(&self, key: &str) -> Result<bool, ClusterError> {
        let deployment = self.deployment(key)?;
        let (current, old) = self.pods_by_template(deployment);
        Ok(old.is_empty() && current.len() == pods::replicas(deployment))
    }

    /// How far a rollout of Deployment `key` is: kubectl rollout status's
    /// line while it waits.
    pub fn rollout_progress(&self, key: &str) -> Result<String, ClusterError> {
        let deployment = self.deployment(key)?;
        let (current, old) = self.pods_by_template(deployment);
        let replicas = pods::replicas(deployment);
        let name = deployment.metadata.name.as_deref().unwrap_or_default();
        Ok(if current.len() < replicas {
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} out of {replicas} new replicas have been updated...",
                current.len()
            )
        } else {
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
                old.len()
            )
        })
    }

    /// One step of Deployment `key`'s rollout to its current template,
    /// within its strategy: new pods (started, ready and programmed before
    /// anything else happens), then as many old pods terminated as keeps
    /// enough available. RollingUpdate keeps at most replicas + maxSurge
    /// pods and at least replicas - maxUnavailable available (terminating
    /// pods count for neither, as with the Deployment controller);
    /// Recreate terminates every old pod first. Nothing once complete.
    pub fn rollout_step(&mut self, key: &str) -> Result<Vec<Change>, ClusterError> {
        self.noting_endpoints(|cluster| {
            let deployment = cluster.deployment(key)?.clone();
            let name = deployment.metadata.name.clone().unwrap_or_default();
            let strategy = pods::strategy(&deployment).map_err(|reason| ClusterError::Invalid {
                object: format!("deployment.apps/{name}"),
                reason,
            })?;
            let replicas = pods::replicas(&deployment);
            let (current, old) = cluster.pods_by_template(&deployment);
            let (create, remove) = match strategy {
                pods::Strategy::Recreate if !old.is_empty() => (0, old.len()),
                pods::Strategy::Recreate => (replicas.saturating_sub(current.len()), 0),
                pods::Strategy::RollingUpdate { surge, unavailable } => {
                    let create = (replicas + surge)
                        .saturating_sub(current.len() + old.len())
                        .min(replicas.saturating_sub(current.len()));
                    let available = current.len() + create + old.len();
                    let remove = available
                        .saturating_sub(replicas.saturating_sub(unavailable))
                        .min(old.len());
                    (create, remove)
                }
            };
            let mut changes = cluster.make_replicas(&deployment, create)?;
            for pod_key in old.iter().take(remove) {
                changes.extend(cluster.remove_pod(pod_key));
            }
            Ok(changes)
        })
    }

    fn deployment(&self, key: &str) -> Result<&Deployment, ClusterError> {
        self.deployments
            .iter()
            .find(|d| object_key(&d.metadata) == key)
            .ok_or_else(|| no_deployment(key))
    }

    /// Edits Deployment `key` as `edit` says, then lets its ReplicaSets
    /// catch up (kubectl's `deployment.apps/NAME VERB` first).
    fn change_deployment(
        &mut self,
        key: &str,
        verb: &str,
        edit: impl FnOnce(&mut Deployment),
    ) -> Result<Vec<Change>, ClusterError> {
        self.noting_endpoints(|cluster| {
            let deployment = cluster.deployment_mut(key)?;
            edit(deployment);
            let deployment = deployment.clone();
            let name = deployment.metadata.name.clone().unwrap_or_default();
            let mut changes = vec![Change::Said(format!("deployment.apps/{name} {verb}"))];
            changes.extend(cluster.reconcile_replicas(&deployment)?);
            Ok(changes)
        })
    }

    fn apply_pod(
        &mut self,
        mut pod: Pod,
        owner: Option<String>,
    ) -> Result<Vec<Change>, ClusterError> {
        pod.metadata.namespace = Some(namespace_of(&pod.metadata).to_owned());
        let key = object_key(&pod.metadata);
        let name = pod.metadata.name.clone().unwrap_or_default();
        if self.pod(&key).is_some() {
            return Ok(vec![Change::Said(format!("pod/{name} unchanged"))]);
        }
        let wanted = pod.spec.as_ref().and_then(|spec| spec.node_name.clone());
        let node = match wanted {
            Some(wanted) => self.node(&wanted).ok_or_else(|| ClusterError::Invalid {
                object: format!("pod/{name}"),
                reason: format!("spec.nodeName {wanted} is not a node of this lab"),
            })?,
            None => {
                let count = self.nodes.len().max(1) as u64;
                let index = usize::try_from(self.pods.len() as u64 % count).unwrap_or_default();
                self.nodes.get(index).ok_or_else(|| ClusterError::Invalid {
                    object: format!("pod/{name}"),
                    reason: "the lab has no node".into(),
                })?
            }
        };
        let node_name = node.name().to_owned();
        let number = node.number;
        let host_ip = wiring::node_address(number).to_string();
        let index = (0..wiring::MAX_PODS_PER_NODE)
            .find(|index| {
                !self
                    .pods
                    .iter()
                    .any(|pod| pod.node == node_name && pod.index == *index)
            })
            .ok_or_else(|| ClusterError::Exhausted {
                what: "pod addresses",
                object: format!("node {node_name}"),
            })?;
        let address = wiring::pod_address(number, index).map_err(|_| ClusterError::Exhausted {
            what: "pod addresses",
            object: format!("node {node_name}"),
        })?;
        let mut spec = pod.spec.take().unwrap_or_default();
        spec.node_name = Some(node_name.clone());
        pods::admit(&mut spec);
        pod.spec = Some(spec);
        let now = Time(Timestamp::now());
        pod.metadata.creation_timestamp = Some(now.clone());
        pod.status = Some(pods::running_status(
            &pod,
            &[
                address.to_string(),
                wiring::pod_address6(address).to_string(),
            ],
            &host_ip,
            &now,
        ));
        self.pods.push(PodRecord {
            object: pod,
            node: node_name,
            index,
            owner,
            server_pid: None,
        });
        Ok(vec![
            Change::StartPod(key),
            Change::Said(format!("pod/{name} created")),
        ])
    }

    fn apply_service(&mut self, service: &Service) -> Result<Change, ClusterError> {
        let key = object_key(&service.metadata);
        let existing = self
            .services
            .iter()
            .position(|s| object_key(&s.metadata) == key);
        let previous = existing.map(|position| self.services.remove(position));
        let others = allocate::Taken::of(&self.services);
        let mut service = services::allocate(service, previous.as_ref(), others)?;
        service.metadata.creation_timestamp = previous
            .as_ref()
            .and_then(|previous| previous.metadata.creation_timestamp.clone())
            .or_else(|| Some(Time(Timestamp::now())));
        let name = service.metadata.name.clone().unwrap_or_default();
        self.services.push(service);
        let verb = if previous.is_some() {
            "configured"
        } else {
            "created"
        };
        Ok(Change::Said(format!("service/{name} {verb}")))
    }

    /// Starts a Pod's termination: a deletion time and grace period, so its
    /// endpoint turns terminating (not ready, still serving) at once.
    fn remove_pod(&mut self, key: &str) -> Vec<Change> {
        let Some(pod) = self.pods.iter_mut().find(|pod| pod.key() == key) else {
            return Vec::new();
        };
        let name = pod.object.metadata.name.clone().unwrap_or_default();
        if pod.object.metadata.deletion_timestamp.is_some() {
            return vec![Change::Said(format!("pod/{name} is terminating already"))];
        }
        let (_, grace) = pods::termination(&pod.object);
        pod.object.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        pod.object.metadata.deletion_grace_period_seconds =
            Some(i64::try_from(grace.as_secs()).unwrap_or(i64::MAX));
        vec![
            Change::TerminatePod(key.to_owned()),
            Change::Said(format!("pod/{name} deleted")),
        ]
    }

    /// The end of a termination: the Pod's record goes.
    pub fn finish_termination(&mut self, key: &str) -> Option<PodRecord> {
        let position = self.pods.iter().position(|pod| pod.key() == key)?;
        self.noting_endpoints(|cluster| Ok(cluster.pods.remove(position)))
            .ok()
    }

    /// Deletes `kind` `namespace/name` (kind as kubectl accepts it: pod,
    /// pods, po, deployment, deploy, service, svc, ...).
    pub fn delete(&mut self, kind: &str, key: &str) -> Result<Vec<Change>, ClusterError> {
        self.noting_endpoints(|cluster| cluster.delete_one(kind, key))
    }

    fn delete_one(&mut self, kind: &str, key: &str) -> Result<Vec<Change>, ClusterError> {
        let name = key.rsplit('/').next().unwrap_or(key).to_owned();
        let not_found = |kind: &str| ClusterError::NotFound {
            kind: kind.to_owned(),
            name: name.clone(),
        };
        match kind.to_ascii_lowercase().as_str() {
            "pod" | "pods" | "po" => {
                let owner = self.pod(key).and_then(|pod| pod.owner.clone());
                let mut changes = self.remove_pod(key);
                if changes.is_empty() {
                    return Err(not_found("pods"));
                }
                // Its ReplicaSet makes a replacement at once.
                let deployment = owner.and_then(|owner| {
                    self.deployments
                        .iter()
                        .find(|d| object_key(&d.metadata) == owner)
                        .cloned()
                });
                if let Some(deployment) = deployment {
                    changes.extend(self.reconcile_replicas(&deployment)?);
                }
                Ok(changes)
            }
            "deployment" | "deployments" | "deploy" | "deployment.apps" => {
                let position = self
                    .deployments
                    .iter()
                    .position(|d| object_key(&d.metadata) == key)
                    .ok_or_else(|| not_found("deployments.apps"))?;
                self.deployments.remove(position);
                let mut changes = vec![Change::Said(format!("deployment.apps/{name} deleted"))];
                let owned: Vec<String> = self
                    .pods
                    .iter()
                    .filter(|pod| pod.owner.as_deref() == Some(key))
                    .map(PodRecord::key)
                    .collect();
                for pod in owned {
                    changes.extend(self.remove_pod(&pod));
                }
                Ok(changes)
            }
            "service" | "services" | "svc" => {
                let position = self
                    .services
                    .iter()
                    .position(|s| object_key(&s.metadata) == key)
                    .ok_or_else(|| not_found("services"))?;
                self.services.remove(position);
                Ok(vec![Change::Said(format!("service/{name} deleted"))])
            }
            other => Err(ClusterError::Invalid {
                object: format!("{other}/{name}"),
                reason: "the lab deletes pods, deployments and services".into(),
            }),
        }
    }

    /// Deletes every object `snapshot` names.
    pub fn delete_objects(&mut self, snapshot: &Snapshot) -> Result<Vec<Change>, ClusterError> {
        let mut changes = Vec::new();
        for service in &snapshot.services {
            changes.extend(self.delete("service", &object_key(&service.metadata))?);
        }
        for deployment in &snapshot.deployments {
            changes.extend(self.delete("deployment", &object_key(&deployment.metadata))?);
        }
        for pod in &snapshot.pods {
            if self.owning_deployment(pod).is_none() {
                changes.extend(self.delete("pod", &object_key(&pod.metadata))?);
            }
        }
        Ok(changes)
    }

    /// Each Service's ready endpoints as kubectl shows them.
    fn ready_endpoints(&self) -> BTreeMap<String, String> {
        self.services
            .iter()
            .map(|service| {
                let endpoints = render::endpoints(self, service);
                (
                    object_key(&service.metadata),
                    render::format_endpoints(&endpoints, None),
                )
            })
            .collect()
    }

    /// Runs `change`, then records an event on every Service whose ready
    /// endpoints it changed.
    fn noting_endpoints<T>(
        &mut self,
        change: impl FnOnce(&mut Self) -> Result<T, ClusterError>,
    ) -> Result<T, ClusterError> {
        let before = self.ready_endpoints();
        let done = change(self)?;
        self.note_endpoint_changes(&before);
        Ok(done)
    }

    /// An event on every Service with a selector whose ready endpoints
    /// changed since `before` (a new Service's first set included).
    fn note_endpoint_changes(&mut self, before: &BTreeMap<String, String>) {
        let now = Time(Timestamp::now());
        for (service, endpoints) in self.ready_endpoints() {
            if before.get(&service) == Some(&endpoints) {
                continue;
            }
            let selects = self
                .services
                .iter()
                .find(|s| object_key(&s.metadata) == service)
                .and_then(|s| s.spec.as_ref()?.selector.as_ref())
                .is_some_and(|selector| !selector.is_empty());
            if !selects {
                continue;
            }
            let (type_, reason, message) = if endpoints == "<none>" || endpoints.is_empty() {
                (
                    "Warning",
                    "NoEndpoints",
                    "no ready endpoint: the selector matches no ready pod".to_owned(),
                )
            } else {
                (
                    "Normal",
                    "EndpointsChanged",
                    format!("ready endpoints: {endpoints}"),
                )
            };
            self.record(ClusterEvent {
                object: format!("service/{service}"),
                type_: type_.into(),
                reason: reason.into(),
                message,
                source: "svc-lab".into(),
                first: now.clone(),
                last: now.clone(),
                count: 1,
            });
        }
    }

    /// Adds `event`, or counts it again when the same source said the
    /// same about the object before.
    pub fn record(&mut self, event: ClusterEvent) {
        let same = self.events.iter_mut().rev().find(|e| {
            e.object == event.object
                && e.source == event.source
                && e.reason == event.reason
                && e.message == event.message
        });
        if let Some(last) = same {
            last.count += 1;
            last.last = event.last;
            return;
        }
        let object = event.object.clone();
        self.events.push(event);
        let of_object = self.events.iter().filter(|e| e.object == object).count();
        if of_object > EVENTS_PER_OBJECT
            && let Some(oldest) = self.events.iter().position(|e| e.object == object)
        {
            self.events.remove(oldest);
        }
    }

    /// The events of `object` (`service/KEY`, `pod/KEY`), oldest first.
    pub fn events_of(&self, object: &str) -> Vec<&ClusterEvent> {
        self.events.iter().filter(|e| e.object == object).collect()
    }

    /// The objects the agents read: Nodes, Pods, Deployments, Services.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            services: self.services.iter().cloned().map(Arc::new).collect(),
            endpoint_slices: Vec::new(),
            pods: self.pods.iter().map(|pod| pod.object.clone()).collect(),
            deployments: self.deployments.clone(),
            // The lab's Pods are all made: no template stands in for them.
            workloads: Vec::new(),
            nodes: self.nodes.iter().map(|node| node.object.clone()).collect(),
            from_cluster: true,
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
#[path = "kubectl_tests.rs"]
mod kubectl_tests;
