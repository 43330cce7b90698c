//! The whole cluster translated: [`plan`] and [`translate`] once, and
//! [`Translator`], the same with a memory, for an agent that translates
//! the whole cluster on every change.
//!
//! The snapshot's Services and EndpointSlices are `Arc`s shared with the
//! watch stores, and a store replaces an object's `Arc` when the object
//! changes. So an object whose `Arc` is the one seen last time is the same
//! object, and a Service whose own `Arc` and slices are all unchanged keeps
//! its frontends; one change among 10 000 Services costs one Service's
//! translation plus a pass over pointers. The memory holds a clone of every
//! `Arc` it compares against, so no address can be reused by another object
//! while it is remembered.
use std::{collections::HashSet, sync::Arc};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};

use super::{
    Config, Frontend, LeftOut, NodeContext, NodeContextError, Plan,
    snapshot::{Snapshot, namespace_of, service_of},
    translate::{
        drop_address_clashes, drop_disallowed_external_ips, frontend_order, service_frontends,
    },
};
use crate::FastMap;

/// The plan of node `node_name`: [`translate`] for its [`NodeContext`].
pub fn plan(
    snapshot: &Snapshot,
    node_name: &str,
    config: &Config,
) -> Result<Plan, NodeContextError> {
    let node = NodeContext::from_snapshot(snapshot, node_name, config)?;
    let mut translator = Translator::default();
    let frontends = sorted(translator.translate(snapshot, &node, config));
    let mut left_out = translator.left_out().to_vec();
    left_out.sort();
    Ok(Plan {
        node: node_name.to_owned(),
        frontends,
        left_out,
    })
}

/// The frontends node `node` must hold for the Services in `snapshot`:
/// per Service port (IPv4 only) its ClusterIP, a NodePort on each NodePort
/// address, each load balancer VIP and each external IP, with the backends
/// kube-proxy would use from this node. Sorted by Service, port name,
/// protocol, kind, address and port; backends ready first, then
/// terminating, each by address and port.
pub fn translate(snapshot: &Snapshot, node: &NodeContext, config: &Config) -> Vec<Frontend> {
    sorted(Translator::default().translate(snapshot, node, config))
}

fn sorted(frontends: Vec<&Arc<Frontend>>) -> Vec<Frontend> {
    let mut frontends: Vec<Frontend> = frontends
        .into_iter()
        .map(|frontend| (**frontend).clone())
        .collect();
    frontends.sort_by(|a, b| frontend_order(a).cmp(&frontend_order(b)));
    frontends
}

/// `NAMESPACE` and `NAME` of a Service.
type ServiceName = (String, String);

#[derive(Default)]
pub struct Translator {
    context: Option<(NodeContext, Config)>,
    /// Bumped on every translation; entries not seen in it are forgotten.
    pass: u64,
    /// Every EndpointSlice of the last snapshot, by address.
    slices: FastMap<usize, SeenSlice>,
    /// The slices of each Service, by name.
    slices_of: FastMap<ServiceName, Vec<Arc<EndpointSlice>>>,
    /// Every Service of the last snapshot, by address, with its frontends.
    services: FastMap<usize, Translated>,
    /// The frontends the last translation left out, and why.
    left_out: Vec<LeftOut>,
}

struct SeenSlice {
    slice: Arc<EndpointSlice>,
    owner: Option<ServiceName>,
    pass: u64,
}

struct Translated {
    /// Held so that its address names it as long as it is remembered.
    _service: Arc<Service>,
    frontends: Vec<Arc<Frontend>>,
    pass: u64,
}

fn address<T>(object: &Arc<T>) -> usize {
    Arc::as_ptr(object) as usize
}

/// The Service a slice belongs to.
fn owner_of(slice: &EndpointSlice) -> Option<ServiceName> {
    service_of(slice).map(|(namespace, name)| (namespace.to_owned(), name.to_owned()))
}

impl Translator {
    /// The frontends of [`translate`] for `snapshot`, in
    /// no particular order, shared with the memory: a frontend that did not
    /// change is the same `Arc` as last time.
    pub fn translate(
        &mut self,
        snapshot: &Snapshot,
        node: &NodeContext,
        config: &Config,
    ) -> Vec<&Arc<Frontend>> {
        if self.context.as_ref().map(|(n, c)| (n, c)) != Some((node, config)) {
            self.services.clear();
            self.context = Some((node.clone(), config.clone()));
        }
        self.pass += 1;
        let pass = self.pass;
        let changed = self.note_slices(&snapshot.endpoint_slices);

        for service in &snapshot.services {
            let entry = self.services.get_mut(&address(service));
            let unchanged = entry.is_some()
                && (changed.is_empty()
                    || !changed.iter().any(|(namespace, name)| {
                        namespace == namespace_of(&service.metadata)
                            && service.metadata.name.as_deref() == Some(name.as_str())
                    }));
            match entry {
                Some(translated) if unchanged => translated.pass = pass,
                _ => {
                    let frontends = self.translate_one(service, node, config);
                    self.services.insert(
                        address(service),
                        Translated {
                            _service: service.clone(),
                            frontends,
                            pass,
                        },
                    );
                }
            }
        }
        self.services
            .retain(|_, translated| translated.pass == pass);

        let mut frontends: Vec<&Arc<Frontend>> = self
            .services
            .values()
            .flat_map(|translated| &translated.frontends)
            .collect();
        self.left_out.clear();
        drop_disallowed_external_ips(&mut frontends, config, &mut self.left_out);
        drop_address_clashes(&mut frontends, &mut self.left_out);
        frontends
    }

    /// The frontends the last [`translate`](Self::translate) left out, and
    /// why (in no particular order).
    pub fn left_out(&self) -> &[LeftOut] {
        &self.left_out
    }

    /// Takes in the snapshot's slices; returns the Services whose slices
    /// changed (a slice added, replaced or gone).
    fn note_slices(&mut self, slices: &[Arc<EndpointSlice>]) -> HashSet<ServiceName> {
        let pass = self.pass;
        let mut changed = HashSet::new();
        for slice in slices {
            if let Some(seen) = self.slices.get_mut(&address(slice)) {
                seen.pass = pass;
                continue;
            }
            let owner = owner_of(slice);
            if let Some(owner) = &owner {
                self.slices_of
                    .entry(owner.clone())
                    .or_default()
                    .push(slice.clone());
                changed.insert(owner.clone());
            }
            self.slices.insert(
                address(slice),
                SeenSlice {
                    slice: slice.clone(),
                    owner,
                    pass,
                },
            );
        }
        let slices_of = &mut self.slices_of;
        self.slices.retain(|_, seen| {
            if seen.pass == pass {
                return true;
            }
            if let Some(owner) = &seen.owner {
                if let Some(list) = slices_of.get_mut(owner) {
                    list.retain(|kept| !Arc::ptr_eq(kept, &seen.slice));
                    if list.is_empty() {
                        slices_of.remove(owner);
                    }
                }
                changed.insert(owner.clone());
            }
            false
        });
        changed
    }

    fn translate_one(
        &self,
        service: &Service,
        node: &NodeContext,
        config: &Config,
    ) -> Vec<Arc<Frontend>> {
        let name = (
            namespace_of(&service.metadata).to_owned(),
            service.metadata.name.clone().unwrap_or_default(),
        );
        let mut slices: Vec<&EndpointSlice> = self
            .slices_of
            .get(&name)
            .into_iter()
            .flatten()
            .map(|slice| &**slice)
            .collect();
        slices.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        service_frontends(service, &slices, node, config)
            .into_iter()
            .map(Arc::new)
            .collect()
    }
}
