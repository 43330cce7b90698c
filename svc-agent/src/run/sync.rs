//! One sync: an update in, the maps equal to what it asks for this node.
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use super::{HealthCheck, RunError, Settings, health_checks};
use crate::{
    dataplane::{ApplyReport, DataplaneError, NodeSettings, Tables},
    k8s::source::Update,
    metrics::{Metrics, NoLocalEndpoints},
    model::{
        Changed, Config, Frontend, FrontendKind, LeftOut, LeftOutReason, NodeContext, OnEmpty,
        Translator,
    },
};

/// What one sync programmed.
#[derive(Debug)]
pub struct Synced {
    /// How many frontends, and backends over all of them, the maps now hold.
    pub frontends: usize,
    pub backends: usize,
    /// Services with a Local traffic policy and no endpoint on this node.
    pub no_local_endpoints: NoLocalEndpoints,
    /// The healthCheckNodePorts to serve, as of these tables.
    pub health_checks: BTreeMap<u16, HealthCheck>,
    /// Where to serve them: the NodePort addresses `--nodeport-addresses`
    /// picks on this node, or every address (`None`) without it.
    pub health_check_addresses: Option<Vec<std::net::IpAddr>>,
    pub report: ApplyReport,
    /// Frontends and Services left out: by rule (an address clash, an
    /// externalIP not allowed) or because the maps could not take them
    /// (their old entries, if any, stay as they were).
    pub left_out: Vec<LeftOut>,
}

impl Synced {
    /// Whether something could not be written: the maps are behind.
    pub fn converged(&self) -> bool {
        !self.left_out.iter().any(|left| left.reason.is_failure())
    }
}

/// Programs `update` for this node into `tables`: node addresses first,
/// then the frontends. What changed is translated and written alone
/// ([`Tables::apply_delta`]); everything is, against the maps read back,
/// when the agent does not know what they hold, after any failure, and
/// when `whole` (the last sync left a Service out). A Service that does
/// not fit a full map is named in an error and left out; every other
/// Service is programmed.
pub fn sync(
    tables: &mut Tables,
    translator: &mut Translator,
    update: &Update,
    whole: bool,
    settings: &Settings,
    metrics: &Metrics,
) -> Result<Synced, RunError> {
    let config = Config {
        nodeport_addresses: settings.nodeport_addresses.clone(),
        external_ip_cidrs: settings.external_ip_cidrs.clone(),
        lb_algorithm: settings.lb_algorithm,
    };
    let node = NodeContext::from_nodes(&update.cluster.nodes(), &settings.node, &config)?;
    let health_check_addresses = config
        .nodeport_addresses
        .as_ref()
        .map(|_| config.all_nodeport_addresses(&node));
    let node_address = settings
        .node_address
        .or_else(|| {
            node.node_addresses
                .iter()
                .find_map(|address| match address {
                    std::net::IpAddr::V4(address) => Some(*address),
                    std::net::IpAddr::V6(_) => None,
                })
        })
        .ok_or_else(|| RunError::NoNodeAddress {
            node: settings.node.clone(),
        })?;
    let node_settings = NodeSettings {
        node_address,
        hairpin_address: settings.hairpin_address,
        nat_ports: settings.nat_ports,
        service_cidrs: settings.service_cidrs.clone(),
        lb_mode: settings.lb_mode,
    };
    if tables.node().ok().as_ref() != Some(&node_settings) {
        tables.set_node(&node_settings)?;
        tracing::info!(%node_address, hairpin = %settings.hairpin_address, "node config set");
    }
    tables.set_maglev_table_size(settings.maglev_table_size);

    let delta = match &update.changed {
        Changed::Everything => {
            translator.translate_snapshot(&update.cluster.snapshot(), &node, &config)
        }
        Changed::Objects { services, slices } => {
            translator.update(&update.cluster, services, slices, &node, &config)
        }
    };
    let mut left_out = translator.left_out();
    if tables.holds() && !whole {
        match tables.apply_delta(&delta) {
            Ok(report) => {
                left_out.sort();
                let (frontends, backends) = translator.counts();
                return Ok(Synced {
                    frontends,
                    backends,
                    no_local_endpoints: no_local_endpoints(translator.dropping()),
                    health_checks: health_checks(translator.health_checked()),
                    health_check_addresses,
                    report,
                    left_out,
                });
            }
            // The maps are read back and everything applied: the error,
            // if it comes again, is handled there.
            Err(error) => tracing::warn!(%error, "applying the change failed; applying everything"),
        }
    }

    // Shared with the translator's memory, so apply knows the unchanged
    // ones by identity.
    let mut desired: Vec<Arc<Frontend>> = translator.frontends().cloned().collect();
    let mut unwritable = BTreeSet::new();
    loop {
        match tables.apply(&desired) {
            Ok(report) => {
                left_out.sort();
                return Ok(Synced {
                    frontends: desired.len(),
                    backends: desired.iter().map(|f| f.backends.len()).sum(),
                    no_local_endpoints: no_local_endpoints(desired.iter().map(|f| &**f)),
                    health_checks: health_checks(desired.iter().map(|f| &**f)),
                    health_check_addresses,
                    report,
                    left_out,
                });
            }
            Err(error) => {
                // An error about one Service leaves that Service out;
                // anything else fails the sync, to be retried whole.
                let Some(service) = error.service().map(str::to_owned) else {
                    return Err(error.into());
                };
                metrics.error(if matches!(error, DataplaneError::Full { .. }) {
                    "map_full"
                } else {
                    "bad_service"
                });
                tracing::error!(
                    %service, %error,
                    "this Service is not programmed (its old entries stay); every other Service is"
                );
                let retried = !unwritable.insert(service.clone());
                if !retried {
                    left_out.push(LeftOut {
                        service: service.clone(),
                        frontend: String::new(),
                        reason: match &error {
                            DataplaneError::Full { map, .. } => LeftOutReason::MapFull {
                                map: (*map).to_owned(),
                            },
                            other => LeftOutReason::Unwritable {
                                error: other.to_string(),
                            },
                        },
                    });
                }
                desired.retain(|frontend| frontend.service != service);
                if !retried {
                    // Keep what the kernel holds for it, if anything.
                    let held = tables.read()?;
                    desired.extend(
                        held.into_iter()
                            .filter(|state| state.frontend.service == service)
                            .map(|state| Arc::new(state.frontend)),
                    );
                }
            }
        }
    }
}

/// kube-proxy's `no_local_endpoints_total`: Services whose Local policy
/// leaves this node without an endpoint while other nodes have some (their
/// frontends drop instead of reject), counted once per policy.
fn no_local_endpoints<'a>(frontends: impl IntoIterator<Item = &'a Frontend>) -> NoLocalEndpoints {
    let mut internal = BTreeSet::new();
    let mut external = BTreeSet::new();
    for frontend in frontends {
        if frontend.on_empty != OnEmpty::Drop || !frontend.backends.is_empty() {
            continue;
        }
        if frontend.kind == FrontendKind::ClusterIP {
            internal.insert(frontend.service.as_str());
        } else {
            external.insert(frontend.service.as_str());
        }
    }
    NoLocalEndpoints {
        internal: internal.len(),
        external: external.len(),
    }
}
