//! The datapath's tables as the agent sees them: the Service maps (written
//! only through a plan, see plan.rs and apply.rs), the node's settings, and
//! the counters and flows read back for dump (readback.rs).
//!
//! What the maps hold is read from the kernel at the first apply (so an
//! agent adopts whatever a previous one left, and is retryable after a
//! failure), then kept in memory (held.rs), so a change among many
//! frontends costs only its own writes.
use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use svc_common::{
    DropCounters, Flow, FlowKey, HostNetns, NodeConfig, ServiceCidrs, ServiceCidrs6, names,
};

use super::{
    DataplaneError, apply,
    codec::{self, NodeSettings},
    held::Held,
    maps::{KernelMaps, ServiceMaps as _, map_error, typed, typed_if_pinned},
    plan::{ApplyReport, Desired},
    sys,
};
use crate::model::Delta;

/// Handles on every map of one datapath instance.
pub struct Tables {
    pub(super) maps: KernelMaps,
    pub(super) ct: HashMap<MapData, FlowKey, Flow>,
    pub(super) ct_new: HashMap<MapData, FlowKey, Flow>,
    pub(super) drops: PerCpuArray<MapData, DropCounters>,
    config: Array<MapData, NodeConfig>,
    service_cidrs: Array<MapData, ServiceCidrs>,
    /// `None` in the pins of an agent from before it.
    service_cidrs6: Option<Array<MapData, ServiceCidrs6>>,
    host_netns: Array<MapData, HostNetns>,
    /// What the maps hold, once the first apply has read them.
    held: Option<Held>,
    /// Entries of the Maglev tables written from now on.
    maglev_size: u16,
}

impl Tables {
    pub(super) fn from_maps(
        mut open: impl FnMut(&'static str) -> Result<Map, DataplaneError>,
    ) -> Result<Self, DataplaneError> {
        Ok(Self {
            maps: KernelMaps::open(&mut open)?,
            ct: typed(names::CT, &mut open)?,
            ct_new: typed(names::CT_NEW, &mut open)?,
            drops: typed(names::DROP_STATS, &mut open)?,
            config: typed(names::CONFIG, &mut open)?,
            service_cidrs: typed(names::SERVICE_CIDRS, &mut open)?,
            service_cidrs6: typed_if_pinned(names::SERVICE_CIDRS6, &mut open)?,
            host_netns: typed(names::HOST_NETNS, &mut open)?,
            held: None,
            maglev_size: svc_common::maglev::DEFAULT_TABLE_SIZE,
        })
    }

    /// Makes the calling thread's network namespace the node's: the socket
    /// hooks tell the node's own sockets from pods' by it
    /// (svc_common::HostNetns). Until then every socket counts as the
    /// node's.
    pub fn set_host_netns(&mut self) -> Result<(), DataplaneError> {
        let cookie =
            sys::netns_cookie().map_err(|source| DataplaneError::NetnsCookie { source })?;
        self.host_netns
            .set(0, HostNetns { cookie }, 0)
            .map_err(map_error(names::HOST_NETNS))
    }

    /// Sets this node's addresses (source NAT, hairpin) and the service
    /// CIDRs for the programs.
    pub fn set_node(&mut self, node: &NodeSettings) -> Result<(), DataplaneError> {
        let too_many = || DataplaneError::TooManyServiceCidrs {
            count: node.service_cidrs.len(),
        };
        let cidrs = codec::service_cidrs(&node.service_cidrs).ok_or_else(too_many)?;
        let cidrs6 = codec::service_cidrs6(&node.service_cidrs).ok_or_else(too_many)?;
        let written = self
            .config
            .set(0, codec::node_config(node), 0)
            .map_err(map_error(names::CONFIG))
            .and_then(|()| {
                self.service_cidrs
                    .set(0, cidrs, 0)
                    .map_err(map_error(names::SERVICE_CIDRS))
            })
            .and_then(|()| match &mut self.service_cidrs6 {
                Some(map) => map
                    .set(0, cidrs6, 0)
                    .map_err(map_error(names::SERVICE_CIDRS6)),
                None if cidrs6.count == 0 => Ok(()),
                None => Err(DataplaneError::Map {
                    name: names::SERVICE_CIDRS6,
                    source: Box::new(aya::maps::MapError::KeyNotFound),
                }),
            });
        self.maps
            .next_generation()
            .map_err(map_error(names::TABLES_GENERATION))?;
        written
    }

    /// What the programs were last told about this node.
    pub fn node(&self) -> Result<NodeSettings, DataplaneError> {
        let config = self.config.get(&0, 0).map_err(map_error(names::CONFIG))?;
        let cidrs = self
            .service_cidrs
            .get(&0, 0)
            .map_err(map_error(names::SERVICE_CIDRS))?;
        let cidrs6 = match &self.service_cidrs6 {
            Some(map) => map.get(&0, 0).map_err(map_error(names::SERVICE_CIDRS6))?,
            None => ServiceCidrs6::default(),
        };
        Ok(codec::node_settings(&config, &cidrs, &cidrs6))
    }

    /// Makes the maps hold exactly `desired`: only entries that differ are
    /// written, in the order plan.rs gives, all or none (apply.rs).
    pub fn apply<F: Desired>(&mut self, desired: &[F]) -> Result<ApplyReport, DataplaneError> {
        apply::apply(&mut self.maps, &mut self.held, desired, self.maglev_size)
    }

    /// Applies a change: `delta`'s frontends written, its removed ones
    /// removed, the rest as the last apply left it. Costs in proportion
    /// to the change. Needs [`holds`](Self::holds): after a failure or
    /// [`forget_held`](Self::forget_held), [`apply`](Self::apply) must
    /// read the maps whole first.
    pub fn apply_delta(&mut self, delta: &Delta) -> Result<ApplyReport, DataplaneError> {
        apply::apply_delta(
            &mut self.maps,
            &mut self.held,
            &delta.written,
            &delta.removed,
        )
    }

    /// Whether this agent knows what the maps hold (an apply went through
    /// since the last failure or [`forget_held`](Self::forget_held)).
    pub fn holds(&self) -> bool {
        self.held.is_some()
    }

    /// Sets how many entries the Maglev tables written from now on get (a
    /// prime, see [`valid_maglev_table_size`]); tables of another size are
    /// rebuilt as their frontends are next planned, which the next apply
    /// does for all of them.
    pub fn set_maglev_table_size(&mut self, size: u16) {
        if size != self.maglev_size {
            self.maglev_size = size;
            self.held = None;
        }
    }

    /// Forgets what the maps were last made to hold: the next apply reads
    /// them from the kernel again, so it repairs whatever changed behind
    /// this agent's back (the periodic resync).
    pub fn forget_held(&mut self) {
        self.held = None;
    }
}
