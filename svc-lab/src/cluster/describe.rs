//! `svc-lab describe svc|pod NAME`: kubectl's describe layout (its field
//! order, `<none>`s and tab alignment) for what the lab holds, the lab's
//! events included.
use std::{collections::BTreeMap, fmt::Write as _};

use k8s_openapi::{
    api::core::v1::{
        Container, ContainerState, ContainerStatus, Pod, Probe, Service, Toleration, Volume,
    },
    apimachinery::pkg::{apis::meta::v1::Time, util::intstr::IntOrString},
    jiff::{Timestamp, tz::TimeZone},
};
use svc_agent::k8s::{namespace_of, object_key};

use super::{Cluster, ClusterError, ClusterEvent, query, render, tabwriter};

/// `describe svc|pod NAME` in `namespace`.
pub fn describe(
    cluster: &Cluster,
    what: &str,
    name: &str,
    namespace: &str,
    now: Timestamp,
) -> Result<String, ClusterError> {
    let key = format!("{namespace}/{name}");
    match render::kind(what) {
        Some(render::Kind::Services) => {
            let service = cluster
                .services
                .iter()
                .find(|service| object_key(&service.metadata) == key)
                .ok_or_else(|| ClusterError::NotFound {
                    kind: "services".into(),
                    name: name.to_owned(),
                })?;
            let events = cluster.events_of(&format!("service/{key}"));
            Ok(self::service(cluster, service, &events, now))
        }
        Some(render::Kind::Pods) => {
            let pod = cluster.pod(&key).ok_or_else(|| ClusterError::NotFound {
                kind: "pods".into(),
                name: name.to_owned(),
            })?;
            let events = cluster.events_of(&format!("pod/{key}"));
            Ok(self::pod(&pod.object, &events, now))
        }
        _ => Err(ClusterError::Invalid {
            object: what.to_owned(),
            reason: "the lab describes svc and pod".into(),
        }),
    }
}

/// kubectl's time format in describe (RFC 1123 with a numeric zone).
fn time(time: &Time) -> String {
    time.0
        .to_zoned(TimeZone::UTC)
        .strftime("%a, %d %b %Y %H:%M:%S %z")
        .to_string()
}

fn or_none(text: impl Into<String>) -> String {
    let text = text.into();
    if text.is_empty() {
        "<none>".into()
    } else {
        text
    }
}

/// `Title:\tfirst\n\tsecond\n...`, or `<none>`.
fn multiline(out: &mut String, title: &str, lines: &[String]) {
    match lines.split_first() {
        None => {
            let _ = writeln!(out, "{title}:\t<none>");
        }
        Some((first, rest)) => {
            let _ = writeln!(out, "{title}:\t{first}");
            for line in rest {
                let _ = writeln!(out, "\t{line}");
            }
        }
    }
}

fn labels(map: Option<&BTreeMap<String, String>>, skip: &[&str]) -> Vec<String> {
    map.into_iter()
        .flatten()
        .filter(|(key, _)| !skip.contains(&key.as_str()))
        .map(|(key, value)| format!("{key}={value}"))
        .collect()
}

/// Annotations kubectl does not show.
const HIDDEN_ANNOTATIONS: [&str; 1] = ["kubectl.kubernetes.io/last-applied-configuration"];

/// The events of one object, as kubectl's describe ends.
fn events(out: &mut String, events: &[&ClusterEvent], now: Timestamp) {
    if events.is_empty() {
        out.push_str("Events:\t<none>\n");
        return;
    }
    out.push_str(
        "Events:\n  Type\tReason\tAge\tFrom\tMessage\n  ----\t------\t----\t----\t-------\n",
    );
    for event in events {
        let age = if event.count > 1 {
            format!(
                "{} (x{} over {})",
                query::age(Some(&event.last), now),
                event.count,
                query::age(Some(&event.first), now)
            )
        } else {
            query::age(Some(&event.first), now)
        };
        let _ = writeln!(
            out,
            "  {}\t{}\t{age}\t{}\t{}",
            event.type_,
            event.reason,
            event.source,
            event.message.trim()
        );
    }
}

/// `kubectl describe service`.
pub fn service(
    cluster: &Cluster,
    service: &Service,
    object_events: &[&ClusterEvent],
    now: Timestamp,
) -> String {
    let meta = &service.metadata;
    let spec = service.spec.clone().unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "Name:\t{}", meta.name.as_deref().unwrap_or_default());
    let _ = writeln!(out, "Namespace:\t{}", namespace_of(meta));
    multiline(&mut out, "Labels", &labels(meta.labels.as_ref(), &[]));
    multiline(
        &mut out,
        "Annotations",
        &labels(meta.annotations.as_ref(), &HIDDEN_ANNOTATIONS),
    );
    let _ = writeln!(
        out,
        "Selector:\t{}",
        render::labels_text(spec.selector.as_ref())
    );
    let _ = writeln!(
        out,
        "Type:\t{}",
        spec.type_.as_deref().unwrap_or("ClusterIP")
    );
    if let Some(policy) = &spec.ip_family_policy {
        let _ = writeln!(out, "IP Family Policy:\t{policy}");
    }
    let _ = writeln!(
        out,
        "IP Families:\t{}",
        or_none(spec.ip_families.clone().unwrap_or_default().join(","))
    );
    let _ = writeln!(out, "IP:\t{}", spec.cluster_ip.clone().unwrap_or_default());
    let _ = writeln!(
        out,
        "IPs:\t{}",
        or_none(spec.cluster_ips.clone().unwrap_or_default().join(","))
    );
    if let Some(external) = spec.external_ips.as_ref().filter(|ips| !ips.is_empty()) {
        let _ = writeln!(out, "External IPs:\t{}", external.join(","));
    }
    if let Some(address) = spec.load_balancer_ip.as_ref().filter(|ip| !ip.is_empty()) {
        let _ = writeln!(out, "IP:\t{address}");
    }
    if let Some(name) = spec.external_name.as_ref().filter(|name| !name.is_empty()) {
        let _ = writeln!(out, "External Name:\t{name}");
    }
    let ingress = super::allocate::lb_ingress(service);
    if !ingress.is_empty() {
        let ingress: Vec<String> = ingress.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "LoadBalancer Ingress:\t{}", ingress.join(", "));
    }
    let endpoints = render::endpoints(cluster, service);
    for port in spec.ports.iter().flatten() {
        let name = port.name.as_deref().filter(|name| !name.is_empty());
        let shown = name.unwrap_or("<unset>");
        let protocol = port.protocol.as_deref().unwrap_or("TCP");
        let _ = writeln!(out, "Port:\t{shown}\t{}/{protocol}", port.port);
        let target = match &port.target_port {
            Some(IntOrString::Int(number)) => number.to_string(),
            Some(IntOrString::String(named)) => named.clone(),
            None => port.port.to_string(),
        };
        let _ = writeln!(out, "TargetPort:\t{target}/{protocol}");
        if let Some(node_port) = port.node_port.filter(|port| *port != 0) {
            let _ = writeln!(out, "NodePort:\t{shown}\t{node_port}/{protocol}");
        }
        let _ = writeln!(
            out,
            "Endpoints:\t{}",
            render::format_endpoints(&endpoints, Some(name.unwrap_or_default()))
        );
    }
    let _ = writeln!(
        out,
        "Session Affinity:\t{}",
        spec.session_affinity.as_deref().unwrap_or("None")
    );
    if let Some(policy) = &spec.external_traffic_policy {
        let _ = writeln!(out, "External Traffic Policy:\t{policy}");
    }
    if let Some(port) = spec.health_check_node_port.filter(|port| *port != 0) {
        let _ = writeln!(out, "HealthCheck NodePort:\t{port}");
    }
    if let Some(ranges) = spec
        .load_balancer_source_ranges
        .as_ref()
        .filter(|ranges| !ranges.is_empty())
    {
        let _ = writeln!(out, "LoadBalancer Source Ranges:\t{}", ranges.join(","));
    }
    events(&mut out, object_events, now);
    tabwriter::describe(&out)
}

/// `kubectl describe pod`.
pub fn pod(pod: &Pod, object_events: &[&ClusterEvent], now: Timestamp) -> String {
    let meta = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "Name:\t{}", meta.name.as_deref().unwrap_or_default());
    let _ = writeln!(out, "Namespace:\t{}", namespace_of(meta));
    if let Some(priority) = spec.priority {
        let _ = writeln!(out, "Priority:\t{priority}");
    }
    if let Some(class) = spec.priority_class_name.as_ref().filter(|c| !c.is_empty()) {
        let _ = writeln!(out, "Priority Class Name:\t{class}");
    }
    match &spec.node_name {
        Some(node) => {
            let host = status.host_ip.clone().unwrap_or_default();
            let _ = writeln!(out, "Node:\t{node}/{host}");
        }
        None => out.push_str("Node:\t<none>\n"),
    }
    if let Some(started) = &status.start_time {
        let _ = writeln!(out, "Start Time:\t{}", time(started));
    }
    multiline(&mut out, "Labels", &labels(meta.labels.as_ref(), &[]));
    multiline(
        &mut out,
        "Annotations",
        &labels(meta.annotations.as_ref(), &HIDDEN_ANNOTATIONS),
    );
    match &meta.deletion_timestamp {
        Some(deleting) => {
            let _ = writeln!(
                out,
                "Status:\tTerminating (lasts {})",
                query::age(Some(deleting), now)
            );
            let _ = writeln!(
                out,
                "Termination Grace Period:\t{}s",
                meta.deletion_grace_period_seconds.unwrap_or_default()
            );
        }
        None => {
            let _ = writeln!(out, "Status:\t{}", status.phase.clone().unwrap_or_default());
        }
    }
    if let Some(reason) = status.reason.as_ref().filter(|r| !r.is_empty()) {
        let _ = writeln!(out, "Reason:\t{reason}");
    }
    if let Some(message) = status.message.as_ref().filter(|m| !m.is_empty()) {
        let _ = writeln!(out, "Message:\t{message}");
    }
    let _ = writeln!(out, "IP:\t{}", status.pod_ip.clone().unwrap_or_default());
    let ips = status.pod_ips.clone().unwrap_or_default();
    if ips.is_empty() {
        out.push_str("IPs:\t<none>\n");
    } else {
        out.push_str("IPs:\n");
        for ip in ips {
            let _ = writeln!(out, "  IP:\t{}", ip.ip);
        }
    }
    let controller = meta
        .owner_references
        .iter()
        .flatten()
        .find(|owner| owner.controller == Some(true));
    if let Some(owner) = controller {
        let _ = writeln!(out, "Controlled By:\t{}/{}", owner.kind, owner.name);
    }
    if let Some(nominated) = status
        .nominated_node_name
        .as_ref()
        .filter(|n| !n.is_empty())
    {
        let _ = writeln!(out, "NominatedNodeName:\t{nominated}");
    }
    let statuses = status.container_statuses.clone().unwrap_or_default();
    out.push_str("Containers:\n");
    for container in &spec.containers {
        describe_container(
            &mut out,
            container,
            statuses.iter().find(|s| s.name == container.name),
        );
    }
    let conditions = status.conditions.clone().unwrap_or_default();
    if !conditions.is_empty() {
        out.push_str("Conditions:\n  Type\tStatus\n");
        for condition in &conditions {
            let _ = writeln!(out, "  {} \t{} ", condition.type_, condition.status);
        }
    }
    describe_volumes(&mut out, spec.volumes.as_deref().unwrap_or_default());
    let qos = status
        .qos_class
        .clone()
        .unwrap_or_else(|| qos_class(&spec.containers).into());
    let _ = writeln!(out, "QoS Class:\t{qos}");
    multiline(
        &mut out,
        "Node-Selectors",
        &labels(spec.node_selector.as_ref(), &[]),
    );
    let tolerations: Vec<String> = spec.tolerations.iter().flatten().map(toleration).collect();
    multiline(&mut out, "Tolerations", &tolerations);
    events(&mut out, object_events, now);
    tabwriter::describe(&out)
}

fn describe_container(out: &mut String, container: &Container, status: Option<&ContainerStatus>) {
    let _ = writeln!(out, "  {}:", container.name);
    if let Some(status) = status {
        let _ = writeln!(
            out,
            "    Container ID:\t{}",
            status.container_id.clone().unwrap_or_default()
        );
    }
    let _ = writeln!(
        out,
        "    Image:\t{}",
        container.image.clone().unwrap_or_default()
    );
    if let Some(status) = status {
        let _ = writeln!(out, "    Image ID:\t{}", status.image_id);
    }
    let ports = container.ports.clone().unwrap_or_default();
    let protocol = |protocol: &Option<String>| protocol.clone().unwrap_or_else(|| "TCP".into());
    let container_ports: Vec<String> = ports
        .iter()
        .map(|port| format!("{}/{}", port.container_port, protocol(&port.protocol)))
        .collect();
    let host_ports: Vec<String> = ports
        .iter()
        .map(|port| {
            format!(
                "{}/{}",
                port.host_port.unwrap_or_default(),
                protocol(&port.protocol)
            )
        })
        .collect();
    for (singular, plural, list) in [
        ("Port", "Ports", container_ports),
        ("Host Port", "Host Ports", host_ports),
    ] {
        let joined = list.join(", ");
        if list.len() > 1 {
            let _ = writeln!(out, "    {plural}:\t{joined}");
        } else {
            let _ = writeln!(out, "    {singular}:\t{}", or_none(joined));
        }
    }
    if let Some(status) = status {
        if let Some(state) = &status.state {
            describe_state(out, "State", state);
        }
        if let Some(last) = status
            .last_state
            .as_ref()
            .filter(|last| last.terminated.is_some())
        {
            describe_state(out, "Last State", last);
        }
        let _ = writeln!(
            out,
            "    Ready:\t{}",
            if status.ready { "True" } else { "False" }
        );
        let _ = writeln!(out, "    Restart Count:\t{}", status.restart_count);
    }
    for (name, probe) in [
        ("Liveness", &container.liveness_probe),
        ("Readiness", &container.readiness_probe),
        ("Startup", &container.startup_probe),
    ] {
        if let Some(probe) = probe {
            let _ = writeln!(out, "    {name}:\t{}", probe_text(probe));
        }
    }
    let env: Vec<String> = container
        .env
        .iter()
        .flatten()
        .map(|var| format!("{}:\t{}", var.name, var.value.clone().unwrap_or_default()))
        .collect();
    if env.is_empty() {
        out.push_str("    Environment:\t<none>\n");
    } else {
        out.push_str("    Environment:\n");
        for line in env {
            let _ = writeln!(out, "      {line}");
        }
    }
    let mounts = container.volume_mounts.clone().unwrap_or_default();
    if mounts.is_empty() {
        out.push_str("    Mounts:\t<none>\n");
    } else {
        out.push_str("    Mounts:\n");
        for mount in mounts {
            let mode = if mount.read_only == Some(true) {
                "ro"
            } else {
                "rw"
            };
            let _ = writeln!(
                out,
                "      {} from {} ({mode})",
                mount.mount_path, mount.name
            );
        }
    }
}

fn describe_state(out: &mut String, title: &str, state: &ContainerState) {
    if let Some(running) = &state.running {
        let _ = writeln!(out, "    {title}:\tRunning");
        if let Some(started) = &running.started_at {
            let _ = writeln!(out, "      Started:\t{}", time(started));
        }
    } else if let Some(waiting) = &state.waiting {
        let _ = writeln!(out, "    {title}:\tWaiting");
        let _ = writeln!(
            out,
            "      Reason:\t{}",
            waiting.reason.clone().unwrap_or_default()
        );
    } else if let Some(terminated) = &state.terminated {
        let _ = writeln!(out, "    {title}:\tTerminated");
        let _ = writeln!(
            out,
            "      Reason:\t{}",
            terminated.reason.clone().unwrap_or_default()
        );
        if let Some(message) = terminated.message.as_ref().filter(|m| !m.is_empty()) {
            let _ = writeln!(out, "      Message:\t{message}");
        }
        let _ = writeln!(out, "      Exit Code:\t{}", terminated.exit_code);
        if let Some(signal) = terminated.signal.filter(|signal| *signal != 0) {
            let _ = writeln!(out, "      Signal:\t{signal}");
        }
        for (name, at) in [
            ("Started", &terminated.started_at),
            ("Finished", &terminated.finished_at),
        ] {
            let _ = writeln!(
                out,
                "      {name}:\t{}",
                at.as_ref().map(time).unwrap_or_default()
            );
        }
    } else {
        let _ = writeln!(out, "    {title}:\tWaiting");
    }
}

/// A probe as kubectl sums it up, with the API server's defaults.
fn probe_text(probe: &Probe) -> String {
    let port = |port: &IntOrString| match port {
        IntOrString::Int(number) => number.to_string(),
        IntOrString::String(name) => name.clone(),
    };
    let action = if let Some(http) = &probe.http_get {
        let scheme = http
            .scheme
            .as_deref()
            .unwrap_or("HTTP")
            .to_ascii_lowercase();
        let host = http.host.clone().unwrap_or_default();
        let path = http.path.clone().unwrap_or_default();
        format!("http-get {scheme}://{host}:{}{path}", port(&http.port))
    } else if let Some(tcp) = &probe.tcp_socket {
        format!(
            "tcp-socket {}:{}",
            tcp.host.clone().unwrap_or_default(),
            port(&tcp.port)
        )
    } else if let Some(exec) = &probe.exec {
        format!(
            "exec [{}]",
            exec.command.clone().unwrap_or_default().join(" ")
        )
    } else {
        "unknown".into()
    };
    format!(
        "{action} delay={}s timeout={}s period={}s #success={} #failure={}",
        probe.initial_delay_seconds.unwrap_or(0),
        probe.timeout_seconds.unwrap_or(1),
        probe.period_seconds.unwrap_or(10),
        probe.success_threshold.unwrap_or(1),
        probe.failure_threshold.unwrap_or(3),
    )
}

fn describe_volumes(out: &mut String, volumes: &[Volume]) {
    if volumes.is_empty() {
        out.push_str("Volumes:\t<none>\n");
        return;
    }
    out.push_str("Volumes:\n");
    for volume in volumes {
        let _ = writeln!(out, "  {}:", volume.name);
        if let Some(secret) = &volume.secret {
            let _ = writeln!(
                out,
                "    Type:\tSecret (a volume populated by a Secret)\n    SecretName:\t{}\n    Optional:\t{}",
                secret.secret_name.clone().unwrap_or_default(),
                secret.optional.unwrap_or(false)
            );
        } else if let Some(config_map) = &volume.config_map {
            let _ = writeln!(
                out,
                "    Type:\tConfigMap (a volume populated by a ConfigMap)\n    Name:\t{}\n    Optional:\t{}",
                config_map.name,
                config_map.optional.unwrap_or(false)
            );
        } else if let Some(empty_dir) = &volume.empty_dir {
            let _ = writeln!(
                out,
                "    Type:\tEmptyDir (a temporary directory that shares a pod's lifetime)\n    Medium:\t{}\n    SizeLimit:\t<unset>",
                empty_dir.medium.clone().unwrap_or_default()
            );
        } else if let Some(host_path) = &volume.host_path {
            let _ = writeln!(
                out,
                "    Type:\tHostPath (bare host directory volume)\n    Path:\t{}\n    HostPathType:\t{}",
                host_path.path,
                or_none(host_path.type_.clone().unwrap_or_default())
            );
        } else {
            out.push_str("    <unknown>\n");
        }
    }
}

/// The QoS class the API server gives a Pod: BestEffort without requests
/// or limits, Guaranteed when every container's limits equal its requests
/// for CPU and memory, else Burstable.
fn qos_class(containers: &[Container]) -> &'static str {
    let resources = || containers.iter().filter_map(|c| c.resources.as_ref());
    let none = resources().all(|r| {
        r.requests.as_ref().is_none_or(BTreeMap::is_empty)
            && r.limits.as_ref().is_none_or(BTreeMap::is_empty)
    });
    if none {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|container| {
        let Some(resources) = &container.resources else {
            return false;
        };
        ["cpu", "memory"].iter().all(|name| {
            let limit = resources.limits.as_ref().and_then(|l| l.get(*name));
            let request = resources.requests.as_ref().and_then(|r| r.get(*name));
            limit.is_some() && (request.is_none() || request == limit)
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// `key=value:Effect op=Exists for 300s`, as kubectl writes a toleration.
fn toleration(toleration: &Toleration) -> String {
    let mut text = toleration.key.clone().unwrap_or_default();
    if let Some(value) = toleration.value.as_ref().filter(|v| !v.is_empty()) {
        let _ = write!(text, "={value}");
    }
    if let Some(effect) = toleration.effect.as_ref().filter(|e| !e.is_empty()) {
        let _ = write!(text, ":{effect}");
    }
    let exists = toleration.operator.as_deref() == Some("Exists")
        && toleration.value.as_deref().is_none_or(str::is_empty);
    if exists {
        text.push_str(if text.is_empty() {
            "op=Exists"
        } else {
            " op=Exists"
        });
    }
    if let Some(seconds) = toleration.toleration_seconds {
        let _ = write!(text, " for {seconds}s");
    }
    text
}
