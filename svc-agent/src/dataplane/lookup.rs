//! `svc-agent lookup`: which frontend and backend this node's kernel
//! tables choose for one flow, and why, read from the maps as the
//! programs read them. A tracked flow keeps the backend its conntrack
//! entry names; a new one to a frontend with sessionAffinity goes to the
//! client's remembered backend while that lasts; a new one to a Maglev
//! frontend gets the backend its table entry names, the same on every
//! node; any other new one gets a backend at random among the frontend's
//! candidates, which lookup lists instead of guessing one.
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};

use serde::Serialize;
use svc_common::{AffinityKey, FlowKey, ServiceSlot, flow_flags, maglev};

use super::{
    DataplaneError, Tables,
    codec::{addr_be, addr_from_be, protocol_number},
    entries::SlotKey,
    maps::{ServiceMaps as _, map_error},
    readback,
};
use crate::model::{BackendState, Frontend, FrontendKind, LbMode, Protocol};
use svc_common::names;

/// Why the flow goes where [`Lookup`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// A conntrack entry of the flow names its backend.
    Conntrack,
    /// sessionAffinity: the client's remembered backend.
    Affinity,
    /// A new flow to a Maglev frontend: its table's entry for the flow.
    Maglev,
    /// A new flow: one of `candidates`, at random.
    Random,
    /// The frontend has no backend: the flow is refused (or dropped).
    NoBackend,
}

/// How the chosen backend sees the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// With the node's address and a NAT port (a tracked flow says so).
    Snat,
    /// With the client's own address.
    Direct,
    /// By direct server return: with the client's own address, and it
    /// answers the client directly (the flow's entry on the node that sent
    /// it inside IPIP, or on the backend's node that took delivery).
    Dsr,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Lookup {
    /// `NAMESPACE/NAME` of the frontend's Service.
    pub frontend: String,
    pub backend: Option<SocketAddrV4>,
    pub via: Via,
    /// For a tracked flow, from its entry; for a new one from outside the
    /// node (not to a ClusterIP) once its backend is known (Maglev,
    /// affinity), from where that backend runs and the node's
    /// `--lb-mode`; else unknown.
    pub mode: Option<Mode>,
    /// For [`Via::Random`] and [`Via::Maglev`]: the backends a new flow is
    /// picked among.
    pub candidates: Vec<SocketAddrV4>,
}

impl Tables {
    /// What the tables choose for a `protocol` flow from `from` to `to`;
    /// None when `to` is no frontend of this node.
    pub fn lookup(
        &self,
        protocol: Protocol,
        from: SocketAddrV4,
        to: SocketAddrV4,
    ) -> Result<Option<Lookup>, DataplaneError> {
        Ok(self
            .lookup_each(protocol, &[from], to)?
            .and_then(|mut lookups| lookups.pop()))
    }

    /// [`Tables::lookup`] for flows from each of `froms` to `to`, the
    /// tables read once.
    pub fn lookup_each(
        &self,
        protocol: Protocol,
        froms: &[SocketAddrV4],
        to: SocketAddrV4,
    ) -> Result<Option<Vec<Lookup>>, DataplaneError> {
        // The frontends without their counters, which lookup does not need.
        let contents = self.maps.contents()?;
        let frontends = readback::frontends(&contents);
        let Some((frontend, rev_nat_id)) = frontends.iter().find(|(frontend, _)| {
            frontend.address == *to.ip()
                && frontend.port == to.port()
                && frontend.protocol == protocol
        }) else {
            return Ok(None);
        };
        // The node's mode says how a new flow reaches a remote backend; a
        // node not configured yet has none (source NAT's default).
        let lb_mode = self.node().map(|node| node.lb_mode).unwrap_or_default();
        let header = contents.slots.get(&SlotKey::new(
            (*to.ip()).into(),
            to.port().to_be(),
            protocol_number(protocol),
            0,
        ));
        froms
            .iter()
            .map(|from| {
                self.lookup_one(
                    protocol,
                    *from,
                    to,
                    &frontends,
                    (frontend, *rev_nat_id, header),
                    lb_mode,
                )
            })
            .collect::<Result<Vec<Lookup>, DataplaneError>>()
            .map(Some)
    }

    /// One flow's answer: `frontend` (with its rev_nat_id and SERVICES
    /// header) is the one `to` names, `frontends` every frontend,
    /// `lb_mode` the node's.
    fn lookup_one(
        &self,
        protocol: Protocol,
        from: SocketAddrV4,
        to: SocketAddrV4,
        frontends: &[(Frontend, u32)],
        (frontend, rev_nat_id, header): (&Frontend, u32, Option<&ServiceSlot>),
        lb_mode: LbMode,
    ) -> Result<Lookup, DataplaneError> {
        let key = flow_key(protocol, from, to);
        let tracked = match self.ct.get(&key, 0) {
            Ok(flow) => Some(flow),
            Err(_) => self.ct_new.get(&key, 0).ok(),
        };
        if let Some(flow) = tracked.filter(|flow| flow.flags & flow_flags::REPLY == 0) {
            let frontend = frontends
                .iter()
                .find(|(_, rev_nat_id)| *rev_nat_id == flow.rev_nat_id)
                .map_or_else(
                    || "(removed)".to_owned(),
                    |(frontend, _)| frontend.service.clone(),
                );
            let mode = if flow.flags & (flow_flags::TUNNELLED | flow_flags::DELIVERED) != 0 {
                Mode::Dsr
            } else if flow.flags & flow_flags::SNAT != 0 {
                Mode::Snat
            } else {
                Mode::Direct
            };
            return Ok(Lookup {
                frontend,
                backend: Some(SocketAddrV4::new(
                    addr_from_be(flow.backend_addr_be),
                    u16::from_be(flow.backend_port_be),
                )),
                via: Via::Conntrack,
                mode: Some(mode),
                candidates: Vec::new(),
            });
        }
        let ready: Vec<SocketAddrV4> = candidates(frontend, BackendState::Ready);
        let candidates = if ready.is_empty() {
            candidates(frontend, BackendState::Terminating)
        } else {
            ready
        };
        let mut lookup = Lookup {
            frontend: frontend.service.clone(),
            backend: None,
            via: if candidates.is_empty() {
                Via::NoBackend
            } else {
                Via::Random
            },
            mode: None,
            candidates,
        };
        if let Some(header) = header.filter(|header| header.maglev_size != 0)
            && !lookup.candidates.is_empty()
        {
            let hash = maglev::flow_hash(
                key.saddr_be,
                key.daddr_be,
                key.sport_be,
                key.dport_be,
                key.proto,
            );
            let index = maglev::entry_index(header.maglev_start(), header.maglev_size, hash);
            let backend_id = self
                .maps
                .maglev
                .get(&index, 0)
                .map_err(map_error(names::MAGLEV))?
                .backend_id;
            if let Some(backend) = self.backend(backend_id)? {
                lookup.backend = Some(backend);
                lookup.via = Via::Maglev;
            }
        }
        if frontend.affinity_timeout_seconds.is_some()
            && let Some(backend) = self.remembered(rev_nat_id, *from.ip())?
            && lookup.candidates.contains(&backend)
        {
            lookup.backend = Some(backend);
            lookup.via = Via::Affinity;
        }
        if let Some(backend) = lookup.backend {
            lookup.mode = new_flow_mode(frontend, backend, lb_mode);
        }
        Ok(lookup)
    }

    /// The backend sessionAffinity remembers for `client` at frontend
    /// `rev_nat_id` (the programs check its age; lookup does not).
    fn remembered(
        &self,
        rev_nat_id: u32,
        client: Ipv4Addr,
    ) -> Result<Option<SocketAddrV4>, DataplaneError> {
        let key = AffinityKey {
            rev_nat_id,
            client_addr_be: addr_be(client),
        };
        let Ok(affinity) = self.maps.affinity.get(&key, 0) else {
            return Ok(None);
        };
        self.backend(affinity.backend_id)
    }

    /// The address of backend `backend_id`; None for an id BACKENDS does
    /// not hold (0 among them).
    fn backend(&self, backend_id: u32) -> Result<Option<SocketAddrV4>, DataplaneError> {
        match self.maps.backends.get(&backend_id, 0) {
            Ok(backend) => Ok(Some(SocketAddrV4::new(
                addr_from_be(backend.addr_be),
                u16::from_be(backend.port_be),
            ))),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(error) => Err(map_error(names::BACKENDS)(error)),
        }
    }
}

/// How a new flow from outside the node to `frontend` reaches `backend`,
/// once known: directly on this node, else as the node's `lb_mode` says.
/// None for a ClusterIP, which pods reach (with the client's address, on
/// any node).
fn new_flow_mode(frontend: &Frontend, backend: SocketAddrV4, lb_mode: LbMode) -> Option<Mode> {
    if frontend.kind == FrontendKind::ClusterIP {
        return None;
    }
    let local = frontend
        .backends
        .iter()
        .find(|b| std::net::SocketAddr::new(b.address, b.port) == backend.into())?
        .local;
    Some(if local {
        Mode::Direct
    } else if lb_mode.tunnels(frontend.protocol) {
        Mode::Dsr
    } else {
        Mode::Snat
    })
}

fn candidates(frontend: &Frontend, wanted: BackendState) -> Vec<SocketAddrV4> {
    frontend
        .backends
        .iter()
        .filter(|backend| backend.state == wanted)
        .filter_map(|backend| match backend.address {
            IpAddr::V4(address) => Some(SocketAddrV4::new(address, backend.port)),
            IpAddr::V6(_) => None,
        })
        .collect()
}

/// The conntrack key of the original direction, as ct.rs builds it.
fn flow_key(protocol: Protocol, from: SocketAddrV4, to: SocketAddrV4) -> FlowKey {
    FlowKey {
        saddr_be: addr_be(*from.ip()),
        daddr_be: addr_be(*to.ip()),
        sport_be: from.port().to_be(),
        dport_be: to.port().to_be(),
        proto: protocol_number(protocol),
        _pad: [0; 3],
    }
}
