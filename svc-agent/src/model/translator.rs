//! The whole cluster translated: [`plan`] and [`translate`] once, and
//! [`Translator`], the same with a memory, for an agent that translates
//! on every change.
//!
//! The memory is by name: each Service's frontends, each slice and whose
//! it is, and per address, port and protocol the frontends that claim it
//! and the one that owns it. A change of a few objects, named, costs their
//! Services' translation and the settling of the addresses those claim
//! ([`Translator::update`]); the result is a [`Delta`], what the maps must
//! write and remove. A whole [`Snapshot`] is compared by pointer: its
//! Services and EndpointSlices are `Arc`s shared with the watch stores,
//! which replace an object's `Arc` when the object changes.
use std::{collections::hash_map::Entry, net::IpAddr, sync::Arc};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};

use super::{
    Config, Frontend, LeftOut, NodeContext, NodeContextError, OnEmpty, Plan, Protocol,
    snapshot::{ObjectName, Objects, Snapshot, service_name, service_of, slice_name},
    translate::{address_taken, frontend_order, owner, refused, service_frontends},
};
use crate::{FastMap, FastSet};

/// The plan of node `node_name`: [`translate`] for its [`NodeContext`].
pub fn plan(
    snapshot: &Snapshot,
    node_name: &str,
    config: &Config,
) -> Result<Plan, NodeContextError> {
    let node = NodeContext::from_snapshot(snapshot, node_name, config)?;
    let mut translator = Translator::default();
    let frontends = sorted(translator.translate(snapshot, &node, config));
    let mut left_out = translator.left_out();
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

/// A frontend's address, port and protocol: one frontend each.
type Address = (IpAddr, u16, Protocol);

fn address(frontend: &Frontend) -> Address {
    (frontend.address, frontend.port, frontend.protocol)
}

/// What one translation changed in the frontends the node holds.
#[derive(Debug, Default)]
pub struct Delta {
    /// Frontends new or changed: the ones now wanted.
    pub written: Vec<Arc<Frontend>>,
    /// Frontends whose address, port and protocol the node no longer holds.
    pub removed: Vec<Arc<Frontend>>,
}

/// The cluster translated, remembered between translations so that the
/// next one costs in proportion to what changed: given the names of the
/// changed objects ([`update`](Self::update)), it reads and translates
/// only their Services and settles only the addresses they claim.
#[derive(Default)]
pub struct Translator {
    context: Option<(NodeContext, Config)>,
    /// Every Service translated, by name.
    services: FastMap<ObjectName, Translated>,
    /// Every EndpointSlice seen, by its own name.
    slices: FastMap<ObjectName, SeenSlice>,
    /// The slices of each Service, sorted by name (the order they are
    /// read in).
    slices_of: FastMap<ObjectName, Vec<Arc<EndpointSlice>>>,
    /// The frontends that claim each address.
    claims: FastMap<Address, Vec<Arc<Frontend>>>,
    /// The claim that owns each address: the frontends the node holds.
    owners: FastMap<Address, Arc<Frontend>>,
    /// Claims that lost their address, by address.
    taken: FastMap<Address, Vec<LeftOut>>,
    /// Frontends refused whoever claims their address (externalIPs not
    /// allowed, families not served), by Service.
    disallowed: FastMap<ObjectName, Vec<LeftOut>>,
    /// Owners with a healthCheckNodePort.
    health_checked: FastSet<Address>,
    /// Owners with no backend that drop (a Local policy with no endpoint
    /// here).
    dropping: FastSet<Address>,
    /// Backends over all owners.
    backends: usize,
    /// Bumped by every snapshot translation.
    pass: u64,
}

struct SeenSlice {
    slice: Arc<EndpointSlice>,
    owner: Option<ObjectName>,
    /// The last snapshot pass that saw it.
    pass: u64,
}

struct Translated {
    service: Arc<Service>,
    /// The last snapshot pass that saw it.
    pass: u64,
    /// The frontends it claims (externalIPs not allowed are not claims).
    claims: Vec<Arc<Frontend>>,
}

/// The Service a slice belongs to.
fn owner_of(slice: &EndpointSlice) -> Option<ObjectName> {
    service_of(slice).map(|(namespace, name)| (namespace.to_owned(), name.to_owned()))
}

impl Translator {
    /// The frontends of [`translate`] for `snapshot`, in no particular
    /// order, shared with the memory: a frontend that did not change is
    /// the same `Arc` as last time.
    pub fn translate(
        &mut self,
        snapshot: &Snapshot,
        node: &NodeContext,
        config: &Config,
    ) -> Vec<&Arc<Frontend>> {
        self.translate_snapshot(snapshot, node, config);
        self.frontends().collect()
    }

    /// Translates what differs between `snapshot` and the last
    /// translation: objects whose `Arc` is the one seen last time are
    /// unchanged (the watch stores replace an object's `Arc` when it
    /// changes), so this costs a pass over pointers plus the changed
    /// Services. Of two Services (or slices) of one name, the later wins,
    /// as a second `kubectl apply` of the name would.
    pub fn translate_snapshot(
        &mut self,
        snapshot: &Snapshot,
        node: &NodeContext,
        config: &Config,
    ) -> Delta {
        let mut dirty = self.set_context(node, config);
        self.pass += 1;
        let pass = self.pass;
        for slice in &snapshot.endpoint_slices {
            let name = slice_name(slice);
            match self.slices.get_mut(&name) {
                Some(seen) if Arc::ptr_eq(&seen.slice, slice) => seen.pass = pass,
                _ => self.set_slice(name, Some(slice.clone()), &mut dirty),
            }
        }
        let gone: Vec<ObjectName> = self
            .slices
            .iter()
            .filter(|(_, seen)| seen.pass != pass)
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            self.set_slice(name, None, &mut dirty);
        }

        // Each Service to translate again, and what it now is (None: gone).
        let mut work: FastMap<ObjectName, Option<Arc<Service>>> = FastMap::default();
        for service in &snapshot.services {
            let name = service_name(service);
            match self.services.get_mut(&name) {
                Some(translated) if Arc::ptr_eq(&translated.service, service) => {
                    translated.pass = pass;
                }
                _ => {
                    work.insert(name, Some(service.clone()));
                }
            }
        }
        for (name, translated) in &self.services {
            if translated.pass != pass && !work.contains_key(name) {
                work.insert(name.clone(), None);
            }
        }
        // Services whose slices changed and that did not: as they were.
        for name in dirty {
            if let Entry::Vacant(vacant) = work.entry(name) {
                let service = self.services.get(vacant.key()).map(|t| t.service.clone());
                vacant.insert(service);
            }
        }
        let mut touched = FastSet::default();
        for (name, service) in work {
            self.retranslate(&name, service, node, config, &mut touched);
        }
        self.settle(touched)
    }

    /// Translates again what the changed `services` and `slices` (by name;
    /// each added, replaced or deleted) touch, reading them from
    /// `objects`: the work is in proportion to the change, whatever the
    /// cluster's size.
    pub fn update(
        &mut self,
        objects: &impl Objects,
        services: &FastSet<ObjectName>,
        slices: &FastSet<ObjectName>,
        node: &NodeContext,
        config: &Config,
    ) -> Delta {
        let mut dirty = self.set_context(node, config);
        for name in slices {
            self.set_slice(name.clone(), objects.slice(name), &mut dirty);
        }
        dirty.extend(services.iter().cloned());
        let mut touched = FastSet::default();
        for name in dirty {
            let service = objects.service(&name);
            self.retranslate(&name, service, node, config, &mut touched);
        }
        self.settle(touched)
    }

    /// The frontends the node holds, in no particular order.
    pub fn frontends(&self) -> impl Iterator<Item = &Arc<Frontend>> {
        self.owners.values()
    }

    /// How many frontends, and backends over all of them, the node holds.
    pub fn counts(&self) -> (usize, usize) {
        (self.owners.len(), self.backends)
    }

    /// The frontends held with a healthCheckNodePort.
    pub fn health_checked(&self) -> impl Iterator<Item = &Frontend> {
        self.health_checked
            .iter()
            .map(|address| &*self.owners[address])
    }

    /// The frontends held that drop for want of a backend.
    pub fn dropping(&self) -> impl Iterator<Item = &Frontend> {
        self.dropping.iter().map(|address| &*self.owners[address])
    }

    /// The frontends the Services ask for that the node does not hold, and
    /// why (in no particular order).
    pub fn left_out(&self) -> Vec<LeftOut> {
        self.taken
            .values()
            .chain(self.disallowed.values())
            .flatten()
            .cloned()
            .collect()
    }

    /// Takes in this translation's node and flags; when they differ from
    /// the last one's, every Service is to be translated again.
    fn set_context(&mut self, node: &NodeContext, config: &Config) -> FastSet<ObjectName> {
        if self.context.as_ref().map(|(n, c)| (n, c)) == Some((node, config)) {
            return FastSet::default();
        }
        self.context = Some((node.clone(), config.clone()));
        self.services.keys().cloned().collect()
    }

    /// Slice `name` is now `slice` (None: gone); the Services it belonged
    /// to and belongs to are `dirty`.
    fn set_slice(
        &mut self,
        name: ObjectName,
        slice: Option<Arc<EndpointSlice>>,
        dirty: &mut FastSet<ObjectName>,
    ) {
        if let Some(SeenSlice {
            slice: old,
            owner: Some(owner),
            ..
        }) = self.slices.remove(&name)
        {
            if let Some(of_owner) = self.slices_of.get_mut(&owner) {
                of_owner.retain(|kept| !Arc::ptr_eq(kept, &old));
                if of_owner.is_empty() {
                    self.slices_of.remove(&owner);
                }
            }
            dirty.insert(owner);
        }
        let Some(slice) = slice else {
            return;
        };
        let owner = owner_of(&slice);
        if let Some(owner) = &owner {
            // Kept sorted by name: the order translation reads them in.
            let of_owner = self.slices_of.entry(owner.clone()).or_default();
            let at = of_owner.partition_point(|kept| kept.metadata.name <= slice.metadata.name);
            of_owner.insert(at, slice.clone());
            dirty.insert(owner.clone());
        }
        let pass = self.pass;
        self.slices.insert(name, SeenSlice { slice, owner, pass });
    }

    /// Service `name`, now `service` (None: gone), withdraws its claims
    /// and makes its new ones; the addresses of both are `touched`.
    fn retranslate(
        &mut self,
        name: &ObjectName,
        service: Option<Arc<Service>>,
        node: &NodeContext,
        config: &Config,
        touched: &mut FastSet<Address>,
    ) {
        if let Some(old) = self.services.remove(name) {
            for frontend in old.claims {
                let at = address(&frontend);
                if let Some(claims) = self.claims.get_mut(&at) {
                    claims.retain(|claim| !Arc::ptr_eq(claim, &frontend));
                    if claims.is_empty() {
                        self.claims.remove(&at);
                    }
                }
                touched.insert(at);
            }
        }
        self.disallowed.remove(name);
        let Some(service) = service else {
            return;
        };
        let slices: Vec<&EndpointSlice> = self
            .slices_of
            .get(name)
            .into_iter()
            .flat_map(|slices| slices.iter().map(|slice| &**slice))
            .collect();
        let mut claims = Vec::new();
        for frontend in service_frontends(&service, &slices, node, config) {
            if let Some(left_out) = refused(&frontend, config) {
                self.disallowed
                    .entry(name.clone())
                    .or_default()
                    .push(left_out);
                continue;
            }
            let frontend = Arc::new(frontend);
            let at = address(&frontend);
            self.claims.entry(at).or_default().push(frontend.clone());
            touched.insert(at);
            claims.push(frontend);
        }
        let pass = self.pass;
        self.services.insert(
            name.clone(),
            Translated {
                service,
                pass,
                claims,
            },
        );
    }

    /// Decides who owns each `touched` address now; what the node must
    /// write and remove for that.
    fn settle(&mut self, touched: FastSet<Address>) -> Delta {
        let mut delta = Delta::default();
        for at in touched {
            self.taken.remove(&at);
            let owner = self.claims.get(&at).and_then(|claims| {
                let owner = owner(claims)?;
                let losers: Vec<LeftOut> = claims
                    .iter()
                    .filter(|claim| !Arc::ptr_eq(claim, owner))
                    .map(|claim| address_taken(claim, owner))
                    .collect();
                if !losers.is_empty() {
                    self.taken.insert(at, losers);
                }
                Some(owner.clone())
            });
            let old = self.owners.remove(&at);
            if let Some(old) = &old {
                self.backends -= old.backends.len();
                self.health_checked.remove(&at);
                self.dropping.remove(&at);
            }
            let Some(owner) = owner else {
                delta.removed.extend(old);
                continue;
            };
            self.backends += owner.backends.len();
            if owner.health_check_node_port.is_some() {
                self.health_checked.insert(at);
            }
            if owner.on_empty == OnEmpty::Drop && owner.backends.is_empty() {
                self.dropping.insert(at);
            }
            if old.is_none_or(|old| !Arc::ptr_eq(&old, &owner) && *old != *owner) {
                delta.written.push(owner.clone());
            }
            self.owners.insert(at, owner);
        }
        delta
    }
}
