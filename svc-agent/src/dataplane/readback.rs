//! Reading the tables back from the kernel, for dump and diagnose: the
//! kernel's truth, not the agent's memory.
use serde::Serialize;
use svc_common::{
    DropReason, Flow, FlowKey, FrontendCounters, backend_flags, frontend_flags, names,
};

use super::{
    DataplaneError, Tables, codec,
    maps::{Contents, ServiceMaps as _, map_error},
};
use crate::model::{BackendRef, BackendState, Cidr, Frontend, LbAlgorithm, OnEmpty};

/// A frontend as the kernel holds it, with its counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FrontendState {
    #[serde(flatten)]
    pub frontend: Frontend,
    pub rev_nat_id: u32,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DropCounter {
    pub reason: &'static str,
    pub packets: u64,
}

/// The frontends `contents` hold, each with its rev_nat_id, sorted by
/// Service, kind, address, port and protocol. Entries a frontend cannot be
/// made of (no metadata, an unknown protocol or kind) are left out.
pub fn frontends(contents: &Contents) -> Vec<(Frontend, u32)> {
    let mut frontends = Vec::new();
    for (key, header) in contents.slots.iter().filter(|(key, _)| key.slot == 0) {
        let meta = contents.metas.get(&header.rev_nat_id);
        let protocol = codec::protocol_from_number(key.proto);
        let (Some(protocol), Some(meta)) = (protocol, meta) else {
            continue;
        };
        let Some(kind) = codec::kind_from_number(meta.kind) else {
            continue;
        };
        let backends = (1..=(header.count + header.terminating_count))
            .filter_map(|slot| {
                let entry = contents.slots.get(&key.with_slot(slot))?;
                let backend = contents.backends.get(&entry.backend_id)?;
                Some(BackendRef {
                    address: backend.address,
                    port: u16::from_be(backend.port_be),
                    state: if slot <= header.count {
                        BackendState::Ready
                    } else {
                        BackendState::Terminating
                    },
                    local: backend.flags & backend_flags::LOCAL != 0,
                })
            })
            .collect();
        let source_ranges = contents
            .ranges
            .iter()
            .filter(|range| range.rev_nat_id == header.rev_nat_id)
            .map(|range| Cidr {
                address: codec::addr_from_be(range.addr_be).into(),
                prefix: range.prefix_len.saturating_sub(32) as u8,
            })
            .collect();
        let frontend = Frontend {
            service: codec::meta_text(&meta.service, meta.service_len),
            port_name: codec::meta_text(&meta.port_name, meta.port_name_len),
            kind,
            address: key.address,
            port: u16::from_be(key.port_be),
            protocol,
            backends,
            affinity_timeout_seconds: (header.affinity_timeout_s > 0)
                .then_some(header.affinity_timeout_s),
            on_empty: if header.flags & frontend_flags::DROP_WHEN_EMPTY != 0 {
                OnEmpty::Drop
            } else {
                OnEmpty::Reject
            },
            source_ranges,
            health_check_node_port: (meta.health_check_node_port != 0)
                .then_some(meta.health_check_node_port),
            lb_algorithm: if header.flags & frontend_flags::MAGLEV != 0 {
                LbAlgorithm::Maglev
            } else {
                LbAlgorithm::Random
            },
        };
        frontends.push((frontend, header.rev_nat_id));
    }
    frontends.sort_by(|(a, _), (b, _)| {
        (&a.service, a.kind, a.address, a.port, a.protocol)
            .cmp(&(&b.service, b.kind, b.address, b.port, b.protocol))
    });
    frontends
}

impl Tables {
    /// Every frontend the kernel holds, with backends and counters, sorted.
    pub fn read(&self) -> Result<Vec<FrontendState>, DataplaneError> {
        frontends(&self.maps.contents()?)
            .into_iter()
            .map(|(frontend, rev_nat_id)| {
                let counters = self.frontend_counters(rev_nat_id)?;
                Ok(FrontendState {
                    frontend,
                    rev_nat_id,
                    packets: counters.packets,
                    bytes: counters.bytes,
                })
            })
            .collect()
    }

    fn frontend_counters(&self, rev_nat_id: u32) -> Result<FrontendCounters, DataplaneError> {
        let per_cpu = self
            .maps
            .frontend_stats
            .get(&rev_nat_id, 0)
            .map_err(map_error(names::FRONTEND_STATS))?;
        Ok(per_cpu
            .iter()
            .fold(FrontendCounters::default(), |sum, c| FrontendCounters {
                packets: sum.packets + c.packets,
                bytes: sum.bytes + c.bytes,
            }))
    }

    /// Packets not forwarded as they came, by reason, summed over CPUs.
    pub fn drop_counters(&self) -> Result<Vec<DropCounter>, DataplaneError> {
        DropReason::ALL
            .iter()
            .map(|reason| {
                let per_cpu = self
                    .drops
                    .get(&(*reason as u32), 0)
                    .map_err(map_error(names::DROP_STATS))?;
                Ok(DropCounter {
                    reason: reason.name(),
                    packets: per_cpu.iter().map(|counters| counters.packets).sum(),
                })
            })
            .collect()
    }

    /// The entries of established flows (CT_V2), both directions of each.
    pub fn established_flows(&self) -> Result<Vec<(FlowKey, Flow)>, DataplaneError> {
        self.ct
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_error(names::CT))
    }

    /// Every conntrack entry (both directions of each flow), established
    /// ones (CT_V2) first, then the ones not established yet (CT_NEW_V2).
    pub fn flows(&self) -> Result<Vec<(FlowKey, Flow)>, DataplaneError> {
        let mut flows = self.established_flows()?;
        for entry in self.ct_new.iter() {
            flows.push(entry.map_err(map_error(names::CT_NEW))?);
        }
        Ok(flows)
    }
}
