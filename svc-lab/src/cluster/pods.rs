//! Pods as the lab runs them: made from Deployments as a ReplicaSet would,
//! their ports (what the lab server listens on) and whether they are ready.
use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{
            ContainerState, ContainerStateRunning, ContainerStatus, Pod, PodCondition, PodIP,
            PodSpec, PodStatus, Probe, Toleration,
        },
    },
    apimachinery::pkg::{
        apis::meta::v1::{ObjectMeta, OwnerReference, Time},
        util::intstr::IntOrString,
    },
};

/// Set to "false" on a Pod (or a Deployment's template) to keep it not
/// ready, as a failing readiness probe would.
pub const ANNOTATION_READY: &str = "svc-lab/ready";
/// The label a ReplicaSet puts on its Pods.
pub const LABEL_TEMPLATE_HASH: &str = "pod-template-hash";

/// The TCP and UDP container ports of a Pod.
pub fn ports(pod: &Pod) -> (Vec<u16>, Vec<u16>) {
    let mut tcp = Vec::new();
    let mut udp = Vec::new();
    for container in pod.spec.iter().flat_map(|spec| &spec.containers) {
        for port in container.ports.iter().flatten() {
            let Ok(number) = u16::try_from(port.container_port) else {
                continue;
            };
            match port.protocol.as_deref().unwrap_or("TCP") {
                "UDP" => udp.push(number),
                _ => tcp.push(number),
            }
        }
    }
    tcp.sort_unstable();
    tcp.dedup();
    udp.sort_unstable();
    udp.dedup();
    (tcp, udp)
}

/// Whether the lab server can pass this Pod's readiness probes (it listens
/// on every TCP containerPort and answers any HTTP path) and nothing asks
/// for it to stay not ready.
pub fn ready(pod: &Pod) -> bool {
    let annotated_not_ready = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(ANNOTATION_READY))
        .is_some_and(|value| value == "false");
    if annotated_not_ready {
        return false;
    }
    let (tcp, _) = ports(pod);
    pod.spec
        .iter()
        .flat_map(|spec| &spec.containers)
        .all(|container| {
            container.readiness_probe.as_ref().is_none_or(|probe| {
                probe_met(probe, &tcp, |name| {
                    container
                        .ports
                        .iter()
                        .flatten()
                        .find(|port| port.name.as_deref() == Some(name))
                        .map(|port| port.container_port)
                })
            })
        })
}

fn probe_met(probe: &Probe, tcp: &[u16], named: impl Fn(&str) -> Option<i32>) -> bool {
    let port = if let Some(http) = &probe.http_get {
        &http.port
    } else if let Some(socket) = &probe.tcp_socket {
        &socket.port
    } else {
        // exec and gRPC probes: the lab server cannot answer them.
        return false;
    };
    let number = match port {
        IntOrString::Int(number) => Some(*number),
        IntOrString::String(name) => named(name),
    };
    number
        .and_then(|number| u16::try_from(number).ok())
        .is_some_and(|number| tcp.contains(&number))
}

/// Kubernetes' default terminationGracePeriodSeconds.
const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// How a Pod terminates: its preStop sleep (an exec of `sleep N`, also
/// through a shell, or the sleep action), and its grace period, which
/// bounds preStop and the drain after SIGTERM together.
pub fn termination(pod: &Pod) -> (Duration, Duration) {
    let spec = pod.spec.as_ref();
    let grace = spec
        .and_then(|spec| spec.termination_grace_period_seconds)
        .and_then(|seconds| u64::try_from(seconds).ok())
        .map_or(DEFAULT_GRACE, Duration::from_secs);
    let pre_stop = spec
        .iter()
        .flat_map(|spec| &spec.containers)
        .filter_map(|container| container.lifecycle.as_ref()?.pre_stop.as_ref())
        .filter_map(|hook| {
            if let Some(sleep) = &hook.sleep {
                return u64::try_from(sleep.seconds).ok().map(Duration::from_secs);
            }
            let command = hook.exec.as_ref()?.command.as_ref()?;
            let words: Vec<&str> = command
                .iter()
                .flat_map(|word| word.split_whitespace())
                .collect();
            let at = words.iter().position(|word| word.ends_with("sleep"))?;
            let seconds: f64 = words.get(at + 1)?.parse().ok()?;
            Duration::try_from_secs_f64(seconds).ok()
        })
        .max()
        .unwrap_or_default();
    (pre_stop.min(grace), grace)
}

/// What the API server's admission adds to a Pod spec: priority 0 and
/// the five-minute tolerations of not-ready and unreachable nodes.
pub fn admit(spec: &mut PodSpec) {
    spec.priority.get_or_insert(0);
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for taint in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let has = tolerations
            .iter()
            .any(|t| t.key.as_deref() == Some(taint) && t.effect.as_deref() == Some("NoExecute"));
        if !has {
            tolerations.push(Toleration {
                key: Some(taint.into()),
                operator: Some("Exists".into()),
                effect: Some("NoExecute".into()),
                toleration_seconds: Some(300),
                value: None,
            });
        }
    }
}

/// The status the kubelet would report for a lab Pod running since `now`,
/// with its addresses (IPv4 first, as the lab's pod network is).
pub fn running_status(pod: &Pod, pod_ips: &[String], host_ip: &str, now: &Time) -> PodStatus {
    let is_ready = ready(pod);
    let ready = if is_ready { "True" } else { "False" };
    let condition = |type_: &str, status: &str| PodCondition {
        type_: type_.into(),
        status: status.into(),
        ..PodCondition::default()
    };
    PodStatus {
        phase: Some("Running".into()),
        pod_ip: pod_ips.first().cloned(),
        pod_ips: Some(pod_ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect()),
        host_ip: Some(host_ip.into()),
        conditions: Some(vec![
            condition("PodScheduled", "True"),
            condition("Initialized", "True"),
            condition("ContainersReady", ready),
            condition("Ready", ready),
        ]),
        start_time: Some(now.clone()),
        container_statuses: Some(
            pod.spec
                .iter()
                .flat_map(|spec| &spec.containers)
                .map(|container| ContainerStatus {
                    name: container.name.clone(),
                    image: container.image.clone().unwrap_or_default(),
                    image_id: String::new(),
                    // One lab server process plays every container.
                    container_id: Some(format!(
                        "svc-lab://{}",
                        pod.metadata.name.as_deref().unwrap_or_default()
                    )),
                    ready: is_ready,
                    restart_count: 0,
                    started: Some(true),
                    state: Some(ContainerState {
                        running: Some(ContainerStateRunning {
                            started_at: Some(now.clone()),
                        }),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                })
                .collect(),
        ),
        ..PodStatus::default()
    }
}

/// The hash a ReplicaSet puts in its Pods' names and labels: 10 characters
/// derived from the Pod template.
pub fn template_hash(deployment: &Deployment) -> String {
    let template = serde_json::to_string(&deployment.spec.template).unwrap_or_default();
    // FNV-1a: stable across runs and builds.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in template.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    encode(hash, 10)
}

/// The pods a Deployment asks for (spec.replicas, 1 when absent).
pub fn replicas(deployment: &Deployment) -> usize {
    usize::try_from(deployment.spec.replicas.unwrap_or(1)).unwrap_or_default()
}

/// How a Deployment replaces its pods when its template changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Every old pod goes before new ones start.
    Recreate,
    /// At most `surge` pods above the replica count, at most `unavailable`
    /// below it (pods, resolved from spec.strategy.rollingUpdate).
    RollingUpdate { surge: usize, unavailable: usize },
}

/// A Deployment's strategy, as the Deployment controller resolves it:
/// maxSurge and maxUnavailable default to 25%, a percentage of the
/// replicas rounds up for the surge and down for unavailability, and if
/// both come to 0, one pod may be unavailable (the API server refuses
/// both 0 given as such; here it is said so).
pub fn strategy(deployment: &Deployment) -> Result<Strategy, String> {
    let strategy = deployment.spec.strategy.clone().unwrap_or_default();
    match strategy.type_.as_deref() {
        Some("Recreate") => return Ok(Strategy::Recreate),
        None | Some("RollingUpdate") => {}
        Some(other) => {
            return Err(format!(
                "spec.strategy.type: Unsupported value: {other:?}: supported values: \"Recreate\", \"RollingUpdate\""
            ));
        }
    }
    let replicas = replicas(deployment);
    let rolling = strategy.rolling_update.unwrap_or_default();
    let quarter = IntOrString::String("25%".into());
    let resolve = |value: Option<IntOrString>, field: &str, round_up: bool| match value
        .unwrap_or_else(|| quarter.clone())
    {
        IntOrString::Int(n) => usize::try_from(n)
            .map_err(|_| format!("spec.strategy.rollingUpdate.{field}: must be >= 0, not {n}")),
        IntOrString::String(text) => {
            let percent: usize = text
                    .strip_suffix('%')
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| {
                        format!("spec.strategy.rollingUpdate.{field}: {text:?} is neither a number nor a percentage")
                    })?;
            let scaled = replicas * percent;
            Ok(if round_up {
                scaled.div_ceil(100)
            } else {
                scaled / 100
            })
        }
    };
    let given_zero = |value: &Option<IntOrString>| match value {
        Some(IntOrString::Int(n)) => *n == 0,
        Some(IntOrString::String(text)) => text == "0%",
        None => false,
    };
    if given_zero(&rolling.max_surge) && given_zero(&rolling.max_unavailable) {
        return Err(
            "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0"
                .into(),
        );
    }
    let surge = resolve(rolling.max_surge, "maxSurge", true)?;
    let unavailable = resolve(rolling.max_unavailable, "maxUnavailable", false)?;
    Ok(Strategy::RollingUpdate {
        surge,
        // As the controller resolves it: some pod must be allowed to go.
        unavailable: if surge == 0 && unavailable == 0 {
            1
        } else {
            unavailable
        },
    })
}

/// `count` characters of Kubernetes' name alphabet (no vowels, no 0/1/3)
/// spelling `value`.
pub fn encode(mut value: u64, count: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let base = ALPHABET.len() as u64;
    (0..count)
        .map(|_| {
            let character = ALPHABET[(value % base) as usize] as char;
            value /= base;
            character
        })
        .collect()
}

/// Replica `sequence` of `deployment`: its template's labels (plus the
/// template hash), annotations and spec, named `DEPLOYMENT-HASH-SUFFIX`.
pub fn replica(deployment: &Deployment, sequence: u64) -> Pod {
    let hash = template_hash(deployment);
    let name = deployment.metadata.name.clone().unwrap_or_default();
    let template = deployment.spec.template.clone();
    let template_meta = template.metadata.unwrap_or_default();
    let mut labels: BTreeMap<String, String> = template_meta.labels.unwrap_or_default();
    labels.insert(LABEL_TEMPLATE_HASH.into(), hash.clone());
    // Spread the suffix so consecutive replicas do not look alike.
    let suffix = encode(sequence.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 7, 5);
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{hash}-{suffix}")),
            namespace: deployment.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: template_meta.annotations,
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: format!("{name}-{hash}"),
                controller: Some(true),
                block_owner_deletion: Some(true),
                uid: String::new(),
            }]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, HTTPGetAction, PodSpec, TCPSocketAction,
    };

    use super::*;

    fn pod(probe: Option<Probe>, annotations: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| ((*k).into(), (*v).into()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "web".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some("http".into()),
                        container_port: 80,
                        ..ContainerPort::default()
                    }]),
                    readiness_probe: probe,
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    fn http_probe(port: IntOrString) -> Option<Probe> {
        Some(Probe {
            http_get: Some(HTTPGetAction {
                port,
                ..HTTPGetAction::default()
            }),
            ..Probe::default()
        })
    }

    #[test]
    fn readiness_follows_probes_and_the_annotation() {
        assert!(ready(&pod(None, &[])));
        assert!(ready(&pod(http_probe(IntOrString::Int(80)), &[])));
        assert!(ready(&pod(
            http_probe(IntOrString::String("http".into())),
            &[]
        )));
        assert!(!ready(&pod(http_probe(IntOrString::Int(8080)), &[])));
        assert!(!ready(&pod(
            http_probe(IntOrString::String("metrics".into())),
            &[]
        )));
        let tcp = Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(81),
                ..TCPSocketAction::default()
            }),
            ..Probe::default()
        });
        assert!(!ready(&pod(tcp, &[])));
        let exec = Some(Probe::default());
        assert!(!ready(&pod(exec, &[])));
        assert!(!ready(&pod(None, &[(ANNOTATION_READY, "false")])));
    }

    #[test]
    fn replicas_have_distinct_names_and_the_template_hash() {
        let deployment: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "nginx"}},
                     "template": {"metadata": {"labels": {"app": "nginx"}},
                                  "spec": {"containers": [{"name": "nginx"}]}}}
        }))
        .unwrap();
        let a = replica(&deployment, 0);
        let b = replica(&deployment, 1);
        assert_ne!(a.metadata.name, b.metadata.name);
        let name = a.metadata.name.unwrap();
        assert!(name.starts_with(&format!("web-{}-", template_hash(&deployment))));
        let labels = a.metadata.labels.unwrap();
        assert_eq!(labels.get("app").map(String::as_str), Some("nginx"));
        assert!(labels.contains_key(LABEL_TEMPLATE_HASH));
    }
}
