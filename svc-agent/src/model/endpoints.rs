//! The endpoints of one Service port, merged from its EndpointSlices the way
//! kube-proxy's EndpointSliceCache merges them (pkg/proxy/endpointslicecache.go).
use std::{
    collections::{BTreeMap, BTreeSet, btree_map::Entry},
    net::IpAddr,
};

use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::{IpFamily, Protocol};

/// One endpoint of one Service port, with the facts kube-proxy's rules read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub address: IpAddr,
    pub port: u16,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// The endpoint runs on the node being planned (its nodeName).
    pub is_local: bool,
    /// hints.forZones: the zones whose nodes should send to it.
    pub zone_hints: BTreeSet<String>,
    /// hints.forNodes: the nodes that should send to it.
    pub node_hints: BTreeSet<String>,
}

impl Endpoint {
    /// How strongly a copy of an endpoint found in several slices claims
    /// its place: a local copy wins (as upstream), then a ready one, then a
    /// serving one, then one that says it is terminating (usable when
    /// nothing is ready; an older controller writes `ready` alone). Copies
    /// alike in all that are told apart by their hints: every field
    /// counts, so the merge does not depend on slice order.
    fn claim(&self) -> (bool, bool, bool, bool, &BTreeSet<String>, &BTreeSet<String>) {
        (
            self.is_local,
            self.ready,
            self.serving,
            self.terminating,
            &self.zone_hints,
            &self.node_hints,
        )
    }
}

/// The endpoints of `family` of the Service port named `port_name` with
/// `protocol`, from `slices` (the Service's own), for node `node_name`;
/// deduplicated by address and port, sorted by them.
///
/// Slices of another address type (the other family's, or FQDN), slice
/// ports without a name or number, endpoints without an address or with
/// one of another family are skipped, as kube-proxy's proxier of the
/// family does. Only an endpoint's first address counts.
pub(crate) fn endpoints_of_port<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    family: IpFamily,
    port_name: &str,
    protocol: Protocol,
    node_name: &str,
) -> Vec<Endpoint> {
    // Keyed by address and port: deduplicating stays linear in the
    // endpoints (a Service can have tens of thousands), and the values come
    // out sorted.
    let mut merged: BTreeMap<(IpAddr, u16), Endpoint> = BTreeMap::new();
    for slice in slices {
        if slice.address_type != family.api_name() {
            continue;
        }
        let Some(port) = slice_port(slice, port_name, protocol) else {
            continue;
        };
        for endpoint in slice.endpoints.as_deref().unwrap_or_default() {
            let Some(address) = endpoint.addresses.first() else {
                continue;
            };
            let Some(address) = family.parse(address) else {
                continue;
            };
            let conditions = endpoint.conditions.clone().unwrap_or_default();
            let hints = endpoint.hints.clone().unwrap_or_default();
            let candidate = Endpoint {
                address,
                port,
                // Unknown readiness and serving mean yes, unknown
                // terminating means no (the API's documented defaults).
                ready: conditions.ready.unwrap_or(true),
                serving: conditions.serving.unwrap_or(true),
                terminating: conditions.terminating.unwrap_or(false),
                is_local: !node_name.is_empty() && endpoint.node_name.as_deref() == Some(node_name),
                zone_hints: hints
                    .for_zones
                    .unwrap_or_default()
                    .into_iter()
                    .map(|zone| zone.name)
                    .collect(),
                node_hints: hints
                    .for_nodes
                    .unwrap_or_default()
                    .into_iter()
                    .map(|node| node.name)
                    .collect(),
            };
            match merged.entry((address, port)) {
                Entry::Occupied(mut known) if candidate.claim() > known.get().claim() => {
                    known.insert(candidate);
                }
                Entry::Occupied(_) => {}
                Entry::Vacant(slot) => {
                    slot.insert(candidate);
                }
            }
        }
    }
    merged.into_values().collect()
}

/// The port number `slice` gives the Service port `port_name`/`protocol`.
/// A slice port without a name is the unnamed Service port (the API
/// defaults the name to "" and the protocol to TCP).
fn slice_port(slice: &EndpointSlice, port_name: &str, protocol: Protocol) -> Option<u16> {
    slice
        .ports
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter(|port| port.name.as_deref().unwrap_or("") == port_name)
        .filter(|port| Protocol::from_api(port.protocol.as_deref()) == Some(protocol))
        .find_map(|port| port.port.and_then(|number| u16::try_from(number).ok()))
        .filter(|number| *number != 0)
}

#[cfg(test)]
#[path = "endpoints_tests.rs"]
mod tests;
