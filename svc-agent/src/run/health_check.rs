//! healthCheckNodePort, as kube-proxy serves it: for each LoadBalancer
//! Service with externalTrafficPolicy=Local, HTTP on that port on the node,
//! 200 while the node has local endpoints for the Service (so the cloud load
//! balancer sends traffic here), 503 otherwise, with the count in the body.
//! Like kube-proxy, on the NodePort addresses when they are given, else on
//! every address of the node.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex, PoisonError},
};

use tokio::task::JoinHandle;

use super::http::{self, AgentStatus, Reply};
use crate::model::{BackendState, Frontend};

/// What one health check port reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// `NAMESPACE/NAME` of the Service.
    pub service: String,
    /// Ready endpoints of the Service on this node.
    pub local_endpoints: usize,
}

/// The health checks `frontends` ask for, by port.
pub fn health_checks<'a>(
    frontends: impl IntoIterator<Item = &'a Frontend>,
) -> BTreeMap<u16, HealthCheck> {
    let mut checks: BTreeMap<u16, (String, std::collections::BTreeSet<(std::net::IpAddr, u16)>)> =
        BTreeMap::new();
    for frontend in frontends {
        let Some(port) = frontend.health_check_node_port else {
            continue;
        };
        let (_, local) = checks
            .entry(port)
            .or_insert_with(|| (frontend.service.clone(), Default::default()));
        local.extend(
            frontend
                .backends
                .iter()
                .filter(|backend| backend.local && backend.state == BackendState::Ready)
                .map(|backend| (backend.address, backend.port)),
        );
    }
    checks
        .into_iter()
        .map(|(port, (service, local))| {
            let check = HealthCheck {
                service,
                local_endpoints: local.len(),
            };
            (port, check)
        })
        .collect()
}

/// kube-proxy's answer to a load balancer's probe: 200 while the Service
/// has local endpoints and the proxy is healthy (`proxy_healthy`, as
/// /healthz says).
pub fn reply(check: &HealthCheck, proxy_healthy: bool) -> Reply {
    let (namespace, name) = check
        .service
        .split_once('/')
        .unwrap_or(("", &check.service));
    let body = serde_json::json!({
        "service": {"namespace": namespace, "name": name},
        "localEndpoints": check.local_endpoints,
        "serviceProxyHealthy": proxy_healthy,
    })
    .to_string();
    Reply {
        code: if check.local_endpoints > 0 && proxy_healthy {
            200
        } else {
            503
        },
        content_type: "application/json",
        body,
    }
}

type Shared = Arc<Mutex<Option<HealthCheck>>>;

/// One healthCheckNodePort: its answer and a server per address bound.
struct Port {
    shared: Shared,
    serving: BTreeMap<IpAddr, JoinHandle<()>>,
}

/// The health check servers running, by port.
pub struct HealthCheckServers {
    /// Where each port is served.
    addresses: Vec<IpAddr>,
    /// The proxy's own health, for every answer.
    status: Arc<AgentStatus>,
    running: BTreeMap<u16, Port>,
    /// Binds that failed (logged once; retried until they work).
    failed: BTreeSet<(u16, IpAddr)>,
}

impl HealthCheckServers {
    /// Servers on every address until [`set_addresses`] says otherwise.
    ///
    /// [`set_addresses`]: Self::set_addresses
    pub fn new(status: Arc<AgentStatus>) -> Self {
        Self {
            addresses: vec![Ipv4Addr::UNSPECIFIED.into()],
            status,
            running: BTreeMap::new(),
            failed: BTreeSet::new(),
        }
    }

    /// Serves the ports on `addresses` from now on (every address with
    /// `None`): listeners on others stop, the next bind adds the new ones.
    pub fn set_addresses(&mut self, addresses: Option<Vec<IpAddr>>) {
        let addresses = addresses.unwrap_or_else(|| vec![Ipv4Addr::UNSPECIFIED.into()]);
        if addresses == self.addresses {
            return;
        }
        for running in self.running.values_mut() {
            running.serving.retain(|address, task| {
                let keep = addresses.contains(address);
                if !keep {
                    task.abort();
                }
                keep
            });
        }
        self.failed
            .retain(|(_, address)| addresses.contains(address));
        self.addresses = addresses;
    }

    /// Serves exactly `checks`: updates the answers of running ports, starts
    /// new ones, stops the ports no Service asks for any more.
    pub async fn update(&mut self, checks: BTreeMap<u16, HealthCheck>) {
        self.running.retain(|port, running| {
            let keep = checks.contains_key(port);
            if !keep {
                running.serving.values().for_each(JoinHandle::abort);
            }
            keep
        });
        self.failed.retain(|(port, _)| checks.contains_key(port));
        for (port, check) in checks {
            match self.running.get(&port) {
                Some(running) => {
                    *running
                        .shared
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(check);
                }
                None => {
                    let port_state = Port {
                        shared: Arc::new(Mutex::new(Some(check))),
                        serving: BTreeMap::new(),
                    };
                    self.running.insert(port, port_state);
                }
            }
        }
        self.bind_missing().await;
    }

    /// Binds every port on the addresses it is not served on yet: a port
    /// another process held (kube-proxy, while both run during a
    /// migration) is taken once it is free.
    pub async fn bind_missing(&mut self) {
        for (port, running) in &mut self.running {
            for address in &self.addresses {
                if running.serving.contains_key(address) {
                    continue;
                }
                let service = running
                    .shared
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_ref()
                    .map(|check| check.service.clone())
                    .unwrap_or_default();
                let listener = match http::bind(SocketAddr::from((*address, *port))).await {
                    Ok(listener) => listener,
                    Err(error) => {
                        if self.failed.insert((*port, *address)) {
                            tracing::error!(%service, %error, "healthCheckNodePort not served; retrying every few seconds");
                        }
                        continue;
                    }
                };
                self.failed.remove(&(*port, *address));
                tracing::info!(%service, %address, port, "serving healthCheckNodePort");
                let answers = running.shared.clone();
                let status = self.status.clone();
                let task = tokio::spawn(http::serve(listener, move |_path| {
                    match answers
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .as_ref()
                    {
                        Some(check) => reply(check, status.unhealthy().is_none()),
                        None => http::text(503, "no such Service\n"),
                    }
                }));
                running.serving.insert(*address, task);
            }
        }
    }
}

impl Drop for HealthCheckServers {
    fn drop(&mut self) {
        for running in self.running.values() {
            running.serving.values().for_each(JoinHandle::abort);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BackendRef, FrontendKind, OnEmpty, Protocol};

    fn frontend(address: [u8; 4], backends: Vec<BackendRef>) -> Frontend {
        Frontend {
            service: "shop/web".into(),
            port_name: String::new(),
            kind: FrontendKind::LoadBalancer,
            address: Ipv4Addr::from(address).into(),
            port: 80,
            protocol: Protocol::TCP,
            backends,
            affinity_timeout_seconds: None,
            on_empty: OnEmpty::Drop,
            source_ranges: Vec::new(),
            health_check_node_port: Some(32000),
            lb_algorithm: Default::default(),
        }
    }

    fn backend(last: u8, state: BackendState, local: bool) -> BackendRef {
        BackendRef {
            address: Ipv4Addr::new(198, 18, 1, last).into(),
            port: 8080,
            state,
            local,
        }
    }

    #[test]
    fn counts_local_ready_endpoints_once_across_frontends() {
        let backends = vec![
            backend(10, BackendState::Ready, true),
            backend(11, BackendState::Ready, false),
            backend(12, BackendState::Terminating, true),
        ];
        let checks = health_checks(&[
            frontend([198, 19, 255, 1], backends.clone()),
            frontend([198, 18, 0, 11], backends),
        ]);
        let check = &checks[&32000];
        assert_eq!(check.local_endpoints, 1);
        assert_eq!(reply(check, true).code, 200);
        assert!(reply(check, true).body.contains("\"localEndpoints\":1"));
        assert!(
            reply(check, true)
                .body
                .contains("\"serviceProxyHealthy\":true")
        );
    }

    /// kube-proxy's KEP-3836: an unhealthy proxy fails every Service's
    /// check, local endpoints or not, and says why.
    #[test]
    fn an_unhealthy_proxy_answers_503_with_local_endpoints() {
        let checks = health_checks(&[frontend(
            [198, 19, 255, 1],
            vec![backend(10, BackendState::Ready, true)],
        )]);
        let answer = reply(&checks[&32000], false);
        assert_eq!(answer.code, 503);
        assert!(answer.body.contains("\"serviceProxyHealthy\":false"));
        assert!(answer.body.contains("\"localEndpoints\":1"));
    }

    #[test]
    fn no_local_endpoint_answers_503() {
        let checks = health_checks(&[frontend(
            [198, 19, 255, 1],
            vec![backend(11, BackendState::Ready, false)],
        )]);
        assert_eq!(reply(&checks[&32000], true).code, 503);
    }
}
