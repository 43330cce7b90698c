//! Writing the desired tables into the maps, and reading them back.
//!
//! `apply` computes what to change against what the maps hold: read from
//! the kernel at the first apply (so it adopts whatever a previous agent
//! left, and is retryable after a failure), then kept in memory (held.rs),
//! so a change among many frontends costs only its own writes. Writes are
//! ordered so a packet never sees a header
//! whose count points at a missing slot (make before break): backends, then
//! slots, then the header with the new count; trailing slots, removed
//! frontends and orphaned backends go last.
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use aya::maps::{
    Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuValues, lpm_trie::LpmTrie,
};
use serde::Serialize;
use svc_common::{
    Affinity, AffinityKey, Backend, DropCounters, DropReason, Flow, FlowKey, FrontendCounters,
    FrontendKey, FrontendMeta, MAX_BACKENDS, MAX_FRONTENDS, MAX_SOURCE_RANGES, NodeConfig, RevNat,
    ServiceSlot, SourceRange, TablesGeneration, backend_flags, frontend_flags, names,
};

use super::{DataplaneError, codec, held::Held};
use crate::{
    FastMap, FastSet,
    model::{BackendRef, BackendState, Frontend, OnEmpty},
};

/// A frontend handed to [`Tables::apply`]: owned, borrowed, or shared. A
/// shared one (an `Arc`, as the agent's `Translator` hands them out) that
/// is the very one applied last time is known to be unchanged without
/// comparing it.
pub trait Desired {
    fn frontend(&self) -> &Frontend;

    fn shared(&self) -> Option<&Arc<Frontend>> {
        None
    }
}

impl Desired for Frontend {
    fn frontend(&self) -> &Frontend {
        self
    }
}

impl Desired for Arc<Frontend> {
    fn frontend(&self) -> &Frontend {
        self
    }

    fn shared(&self) -> Option<&Arc<Frontend>> {
        Some(self)
    }
}

impl<T: Desired> Desired for &T {
    fn frontend(&self) -> &Frontend {
        (**self).frontend()
    }

    fn shared(&self) -> Option<&Arc<Frontend>> {
        (**self).shared()
    }
}

/// Handles on every map of one datapath instance.
pub struct Tables {
    services: HashMap<MapData, FrontendKey, ServiceSlot>,
    backends: HashMap<MapData, u32, Backend>,
    rev_nat: HashMap<MapData, u32, RevNat>,
    meta: HashMap<MapData, u32, FrontendMeta>,
    ct: HashMap<MapData, FlowKey, Flow>,
    ct_new: HashMap<MapData, FlowKey, Flow>,
    frontend_stats: PerCpuArray<MapData, FrontendCounters>,
    drops: PerCpuArray<MapData, DropCounters>,
    affinity: HashMap<MapData, AffinityKey, Affinity>,
    source_ranges: LpmTrie<MapData, SourceRange, u8>,
    config: Array<MapData, NodeConfig>,
    generation: Array<MapData, TablesGeneration>,
    /// What the maps hold, once the first apply has read them.
    held: Option<Held>,
}

/// What one `apply` changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    pub frontends_written: usize,
    pub frontends_removed: usize,
    pub backends_removed: usize,
}

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

fn map_error(name: &'static str) -> impl Fn(MapError) -> DataplaneError {
    move |source| DataplaneError::Map {
        name,
        source: Box::new(source),
    }
}

/// A failed insert into `map` as an error: `Full` (naming `service` and
/// the map's capacity) when the map had no room, else the map's error.
fn insert_error<'a>(
    map: &'static str,
    service: &'a str,
    entries: u32,
) -> impl Fn(MapError) -> DataplaneError + 'a {
    move |e| {
        if is_full(&e) {
            DataplaneError::Full {
                map,
                service: service.to_owned(),
                entries,
            }
        } else {
            map_error(map)(e)
        }
    }
}

/// A map refused an entry for want of room: E2BIG from hash maps, ENOSPC
/// from LPM tries.
fn is_full(error: &MapError) -> bool {
    matches!(
        error,
        MapError::SyscallError(e)
            if matches!(e.io_error.raw_os_error(), Some(libc::E2BIG | libc::ENOSPC))
    )
}

impl Tables {
    pub(super) fn from_maps(
        mut open: impl FnMut(&'static str) -> Result<Map, DataplaneError>,
    ) -> Result<Self, DataplaneError> {
        fn typed<T: TryFrom<Map, Error = MapError>>(
            name: &'static str,
            open: &mut impl FnMut(&'static str) -> Result<Map, DataplaneError>,
        ) -> Result<T, DataplaneError> {
            T::try_from(open(name)?).map_err(map_error(name))
        }
        Ok(Self {
            services: typed(names::SERVICES, &mut open)?,
            backends: typed(names::BACKENDS, &mut open)?,
            rev_nat: typed(names::REV_NAT, &mut open)?,
            meta: typed(names::FRONTEND_META, &mut open)?,
            ct: typed(names::CT, &mut open)?,
            ct_new: typed(names::CT_NEW, &mut open)?,
            frontend_stats: typed(names::FRONTEND_STATS, &mut open)?,
            drops: typed(names::DROP_STATS, &mut open)?,
            affinity: typed(names::AFFINITY, &mut open)?,
            source_ranges: typed(names::SOURCE_RANGES, &mut open)?,
            config: typed(names::CONFIG, &mut open)?,
            generation: typed(names::TABLES_GENERATION, &mut open)?,
            held: None,
        })
    }

    /// Sets this node's addresses (source NAT, hairpin) for the programs.
    pub fn set_node_config(&mut self, config: NodeConfig) -> Result<(), DataplaneError> {
        let written = self
            .config
            .set(0, config, 0)
            .map_err(map_error(names::CONFIG));
        self.next_generation()?;
        written
    }

    /// Tells the programs the tables changed: their flow caches stop using
    /// what they copied from the old ones. Called after the writes.
    fn next_generation(&mut self) -> Result<(), DataplaneError> {
        let error = map_error(names::TABLES_GENERATION);
        let current = self.generation.get(&0, 0).map_err(&error)?;
        let next = TablesGeneration {
            generation: current.generation.wrapping_add(1),
        };
        self.generation.set(0, next, 0).map_err(error)
    }

    pub fn node_config(&self) -> Result<NodeConfig, DataplaneError> {
        self.config.get(&0, 0).map_err(map_error(names::CONFIG))
    }

    /// Makes the maps hold exactly `desired` (see the module docs for the
    /// order of writes). Only entries that differ are written; what the
    /// maps hold is known from memory after the first apply (see held.rs).
    pub fn apply<F: Desired>(&mut self, desired: &[F]) -> Result<ApplyReport, DataplaneError> {
        let mut held = match self.held.take() {
            Some(held) => held,
            None => self.read_held()?,
        };
        let applied = self.apply_to(&mut held, desired);
        // After a failure some writes may have gone through.
        if !matches!(&applied, Ok(report) if *report == ApplyReport::default()) {
            self.next_generation()?;
        }
        let report = applied?;
        // Kept only when every write went through: after a failure the
        // next apply reads the kernel again.
        self.held = Some(held);
        Ok(report)
    }

    /// Forgets what the maps were last made to hold: the next apply reads
    /// them from the kernel again, so it repairs whatever changed behind
    /// this agent's back (the periodic resync).
    pub fn forget_held(&mut self) {
        self.held = None;
    }

    fn read_held(&self) -> Result<Held, DataplaneError> {
        Ok(Held::new(
            self.services
                .iter()
                .collect::<Result<_, _>>()
                .map_err(map_error(names::SERVICES))?,
            self.backends
                .iter()
                .collect::<Result<_, _>>()
                .map_err(map_error(names::BACKENDS))?,
            self.meta
                .iter()
                .collect::<Result<_, _>>()
                .map_err(map_error(names::FRONTEND_META))?,
            self.all_source_ranges()?,
        ))
    }

    fn apply_to<F: Desired>(
        &mut self,
        held: &mut Held,
        desired: &[F],
    ) -> Result<ApplyReport, DataplaneError> {
        let mut report = ApplyReport::default();
        let mut wanted_headers =
            FastSet::with_capacity_and_hasher(desired.len(), Default::default());
        for item in desired {
            let frontend = item.frontend();
            let key = codec::header_key(frontend);
            wanted_headers.insert(key);
            if let Some(last) = held.written.get_mut(&key) {
                if item
                    .shared()
                    .is_some_and(|shared| Arc::ptr_eq(shared, last))
                {
                    continue;
                }
                if **last == *frontend {
                    if let Some(shared) = item.shared() {
                        *last = shared.clone();
                    }
                    continue;
                }
            }
            if self.write_frontend(held, frontend, key)? {
                report.frontends_written += 1;
            }
            let written = item
                .shared()
                .cloned()
                .unwrap_or_else(|| Arc::new(frontend.clone()));
            held.written.insert(key, written);
        }

        let unwanted: Vec<FrontendKey> = held
            .headers
            .iter()
            .filter(|key| !wanted_headers.contains(*key))
            .copied()
            .collect();
        for key in unwanted {
            self.remove_frontend(held, key)?;
            report.frontends_removed += 1;
        }
        for id in held.take_unreferenced() {
            match self.backends.remove(&id) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_error(names::BACKENDS)(e)),
            }
            report.backends_removed += 1;
        }
        Ok(report)
    }

    /// Makes the maps hold `frontend` under header `key`. Returns whether
    /// anything was written.
    fn write_frontend(
        &mut self,
        held: &mut Held,
        frontend: &Frontend,
        key: FrontendKey,
    ) -> Result<bool, DataplaneError> {
        let full = |map: &'static str, entries: u32| DataplaneError::Full {
            map,
            service: frontend.service.clone(),
            entries,
        };
        let old_header = held.slots.get(&key).copied();
        let rev_nat_id = match old_header {
            Some(header) => header.rev_nat_id,
            None => held
                .rev_nat_ids
                .next()
                .ok_or_else(|| full(names::REV_NAT, MAX_FRONTENDS))?,
        };
        let mut changed = false;
        if old_header.is_none() {
            // A fresh rev_nat_id: its counters start from zero and its
            // reverse translation exists before any flow can use it.
            self.reset_counters(rev_nat_id)?;
            self.rev_nat
                .insert(rev_nat_id, codec::rev_nat(frontend), 0)
                .map_err(map_error(names::REV_NAT))?;
        }
        let meta = codec::meta(frontend);
        if held.metas.get(&rev_nat_id) != Some(&meta) {
            self.meta
                .insert(rev_nat_id, meta, 0)
                .map_err(map_error(names::FRONTEND_META))?;
            held.metas.insert(rev_nat_id, meta);
            changed = true;
        }

        let ordered: Vec<&BackendRef> = frontend
            .ready_backends()
            .chain(frontend.terminating_backends())
            .collect();
        let max_slots = usize::from(u16::MAX);
        if ordered.len() > max_slots {
            return Err(full(names::SERVICES, u32::from(u16::MAX)));
        }
        let mut backend_ids = BTreeSet::new();
        for (index, backend_ref) in ordered.iter().enumerate() {
            let backend = codec::backend(
                backend_ref.address,
                backend_ref.port,
                frontend.protocol,
                backend_ref.local,
            );
            let backend_id = match held.backend_ids.get(&backend) {
                Some(id) => *id,
                None => {
                    let id = held
                        .backend_alloc
                        .next()
                        .ok_or_else(|| full(names::BACKENDS, MAX_BACKENDS))?;
                    self.backends.insert(id, backend, 0).map_err(insert_error(
                        names::BACKENDS,
                        &frontend.service,
                        MAX_BACKENDS,
                    ))?;
                    held.add_backend(backend, id);
                    id
                }
            };
            backend_ids.insert(backend_id);
            // Slot numbers fit u16: checked against max_slots above.
            let slot_key = key.with_slot(index as u16 + 1);
            if held.slots.get(&slot_key).map(|slot| slot.backend_id) != Some(backend_id) {
                let slot = ServiceSlot {
                    backend_id,
                    ..ServiceSlot::default()
                };
                self.insert_slot(slot_key, slot, frontend)?;
                held.set_slot(slot_key, slot);
                changed = true;
            }
        }

        // Ranges go in before the header flag that makes them count.
        let ranges =
            self.write_source_ranges(frontend, rev_nat_id, held.ranges.get(&rev_nat_id))?;
        let held_ranges = held.ranges.get(&rev_nat_id);
        if held_ranges.map_or(!ranges.is_empty(), |held| *held != ranges) {
            changed = true;
        }
        if ranges.is_empty() {
            held.ranges.remove(&rev_nat_id);
        } else {
            held.ranges.insert(rev_nat_id, ranges);
        }
        let ready = frontend.ready_backends().count() as u16;
        let mut flags = match frontend.on_empty {
            OnEmpty::Reject => 0,
            OnEmpty::Drop => frontend_flags::DROP_WHEN_EMPTY,
        };
        if !frontend.source_ranges.is_empty() {
            flags |= frontend_flags::SOURCE_RANGES;
        }
        let header = ServiceSlot {
            backend_id: 0,
            count: ready,
            terminating_count: ordered.len() as u16 - ready,
            rev_nat_id,
            flags,
            _pad: 0,
            affinity_timeout_s: frontend.affinity_timeout_seconds.unwrap_or(0),
        };
        if old_header != Some(header) {
            self.insert_slot(key, header, frontend)?;
            held.set_slot(key, header);
            changed = true;
        }
        if let Some(old) = old_header {
            let old_total = old.count + old.terminating_count;
            for slot in (ordered.len() as u16 + 1)..=old_total {
                self.remove_slot(key.with_slot(slot))?;
                held.remove_slot(key.with_slot(slot));
                changed = true;
            }
        }
        if changed && header.affinity_timeout_s > 0 {
            self.forget_affinities(rev_nat_id, |backend_id| !backend_ids.contains(&backend_id))?;
        }
        Ok(changed)
    }

    /// Makes SRC_RANGES hold exactly the frontend's source ranges, and
    /// returns them: (prefix length, address).
    fn write_source_ranges(
        &mut self,
        frontend: &Frontend,
        rev_nat_id: u32,
        present: Option<&BTreeSet<(u32, u32)>>,
    ) -> Result<BTreeSet<(u32, u32)>, DataplaneError> {
        let mut wanted = BTreeSet::new();
        for text in &frontend.source_ranges {
            let (addr, len) =
                codec::parse_cidr(text).ok_or_else(|| DataplaneError::BadSourceRange {
                    service: frontend.service.clone(),
                    range: text.clone(),
                })?;
            let key = codec::source_range_key(rev_nat_id, addr, len);
            wanted.insert((key.prefix_len(), key.data().addr_be));
        }
        let none = BTreeSet::new();
        let present = present.unwrap_or(&none);
        let mut inserted = Vec::new();
        for (prefix_len, addr_be) in &wanted {
            if !present.contains(&(*prefix_len, *addr_be)) {
                let key = aya::maps::lpm_trie::Key::new(
                    *prefix_len,
                    SourceRange {
                        rev_nat_id,
                        addr_be: *addr_be,
                    },
                );
                if let Err(e) = self.source_ranges.insert(&key, 1, 0) {
                    // Nothing of this attempt stays behind: what was held
                    // before is all the maps (and `held`) know of.
                    for (prefix_len, addr_be) in inserted {
                        self.remove_source_range(rev_nat_id, prefix_len, addr_be)?;
                    }
                    return Err(insert_error(
                        names::SOURCE_RANGES,
                        &frontend.service,
                        MAX_SOURCE_RANGES,
                    )(e));
                }
                inserted.push((*prefix_len, *addr_be));
            }
        }
        for (prefix_len, addr_be) in present.difference(&wanted) {
            self.remove_source_range(rev_nat_id, *prefix_len, *addr_be)?;
        }
        Ok(wanted)
    }

    /// Every SRC_RANGES entry, by rev_nat_id: (prefix length, address).
    fn all_source_ranges(&self) -> Result<FastMap<u32, BTreeSet<(u32, u32)>>, DataplaneError> {
        let mut all: FastMap<u32, BTreeSet<(u32, u32)>> = FastMap::default();
        for key in self.source_ranges.keys() {
            let key = key.map_err(map_error(names::SOURCE_RANGES))?;
            all.entry(key.data().rev_nat_id)
                .or_default()
                .insert((key.prefix_len(), key.data().addr_be));
        }
        Ok(all)
    }

    fn remove_source_range(
        &mut self,
        rev_nat_id: u32,
        prefix_len: u32,
        addr_be: u32,
    ) -> Result<(), DataplaneError> {
        let key = aya::maps::lpm_trie::Key::new(
            prefix_len,
            SourceRange {
                rev_nat_id,
                addr_be,
            },
        );
        match self.source_ranges.remove(&key) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_error(names::SOURCE_RANGES)(e)),
        }
    }

    /// Drops sessionAffinity entries of a frontend whose backend `stale`
    /// says is no longer one of its backends.
    fn forget_affinities(
        &mut self,
        rev_nat_id: u32,
        stale: impl Fn(u32) -> bool,
    ) -> Result<(), DataplaneError> {
        let doomed: Vec<AffinityKey> = self
            .affinity
            .iter()
            .filter_map(Result::ok)
            .filter(|(key, value)| key.rev_nat_id == rev_nat_id && stale(value.backend_id))
            .map(|(key, _)| key)
            .collect();
        for key in doomed {
            match self.affinity.remove(&key) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_error(names::AFFINITY)(e)),
            }
        }
        Ok(())
    }

    fn insert_slot(
        &mut self,
        key: FrontendKey,
        slot: ServiceSlot,
        frontend: &Frontend,
    ) -> Result<(), DataplaneError> {
        let capacity = self.services_capacity();
        self.services.insert(key, slot, 0).map_err(insert_error(
            names::SERVICES,
            &frontend.service,
            capacity,
        ))
    }

    fn services_capacity(&self) -> u32 {
        svc_common::MAX_SERVICE_SLOTS
    }

    fn remove_slot(&mut self, key: FrontendKey) -> Result<(), DataplaneError> {
        match self.services.remove(&key) {
            Err(MapError::KeyNotFound) | Ok(()) => Ok(()),
            Err(e) => Err(map_error(names::SERVICES)(e)),
        }
    }

    /// Header first: the frontend disappears for new packets in one step.
    fn remove_frontend(&mut self, held: &mut Held, key: FrontendKey) -> Result<(), DataplaneError> {
        let Some(header) = held.slots.get(&key).copied() else {
            return Ok(());
        };
        self.remove_slot(key)?;
        held.remove_slot(key);
        for slot in 1..=(header.count + header.terminating_count) {
            self.remove_slot(key.with_slot(slot))?;
            held.remove_slot(key.with_slot(slot));
        }
        let ranges = held
            .ranges
            .get(&header.rev_nat_id)
            .cloned()
            .unwrap_or_default();
        for (prefix_len, addr_be) in ranges {
            self.remove_source_range(header.rev_nat_id, prefix_len, addr_be)?;
        }
        self.forget_affinities(header.rev_nat_id, |_| true)?;
        for result in [
            self.rev_nat.remove(&header.rev_nat_id),
            self.meta.remove(&header.rev_nat_id),
        ] {
            match result {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_error(names::REV_NAT)(e)),
            }
        }
        held.forget_frontend(header.rev_nat_id);
        Ok(())
    }

    fn reset_counters(&mut self, rev_nat_id: u32) -> Result<(), DataplaneError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, io_error)| DataplaneError::Map {
            name: names::FRONTEND_STATS,
            source: Box::new(MapError::SyscallError(aya::sys::SyscallError {
                call: "nr_cpus",
                io_error,
            })),
        })?;
        let zeros = PerCpuValues::try_from(vec![FrontendCounters::default(); cpus]).map_err(
            |io_error| DataplaneError::Map {
                name: names::FRONTEND_STATS,
                source: Box::new(MapError::SyscallError(aya::sys::SyscallError {
                    call: "per-cpu values",
                    io_error,
                })),
            },
        )?;
        self.frontend_stats
            .set(rev_nat_id, zeros, 0)
            .map_err(map_error(names::FRONTEND_STATS))
    }

    fn read_slots(&self) -> Result<BTreeMap<FrontendKey, ServiceSlot>, DataplaneError> {
        self.services
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_error(names::SERVICES))
    }

    /// Every frontend the kernel holds, with backends and counters, sorted.
    pub fn read(&self) -> Result<Vec<FrontendState>, DataplaneError> {
        let slots = self.read_slots()?;
        let ranges = self.all_source_ranges()?;
        let mut states = Vec::new();
        for (key, header) in slots.iter().filter(|(key, _)| key.slot == 0) {
            let meta = self.meta.get(&header.rev_nat_id, 0).ok();
            let protocol = codec::protocol_from_number(key.proto);
            let (Some(protocol), Some(meta)) = (protocol, meta) else {
                continue;
            };
            let kind = codec::kind_from_number(meta.kind);
            let Some(kind) = kind else { continue };
            let mut backends = Vec::new();
            for slot in 1..=(header.count + header.terminating_count) {
                let Some(entry) = slots.get(&key.with_slot(slot)) else {
                    continue;
                };
                let Ok(backend) = self.backends.get(&entry.backend_id, 0) else {
                    continue;
                };
                backends.push(BackendRef {
                    address: codec::addr_from_be(backend.addr_be),
                    port: u16::from_be(backend.port_be),
                    state: if slot <= header.count {
                        BackendState::Ready
                    } else {
                        BackendState::Terminating
                    },
                    local: backend.flags & backend_flags::LOCAL != 0,
                });
            }
            let counters = self.frontend_counters(header.rev_nat_id)?;
            let source_ranges = ranges
                .get(&header.rev_nat_id)
                .into_iter()
                .flatten()
                .map(|(prefix_len, addr_be)| {
                    format!("{}/{}", codec::addr_from_be(*addr_be), prefix_len - 32)
                })
                .collect();
            states.push(FrontendState {
                frontend: Frontend {
                    service: codec::meta_text(&meta.service, meta.service_len),
                    port_name: codec::meta_text(&meta.port_name, meta.port_name_len),
                    kind,
                    address: codec::addr_from_be(key.addr_be),
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
                },
                rev_nat_id: header.rev_nat_id,
                packets: counters.packets,
                bytes: counters.bytes,
            });
        }
        states.sort_by(|a, b| {
            let key = |s: &FrontendState| {
                (
                    s.frontend.service.clone(),
                    s.frontend.kind,
                    s.frontend.address,
                    s.frontend.port,
                    s.frontend.protocol,
                )
            };
            key(a).cmp(&key(b))
        });
        Ok(states)
    }

    fn frontend_counters(&self, rev_nat_id: u32) -> Result<FrontendCounters, DataplaneError> {
        let per_cpu = self
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

    /// Every conntrack entry (both directions of each flow), established
    /// ones (CT_V2) first, then the ones not established yet (CT_NEW_V2).
    pub fn flows(&self) -> Result<Vec<(FlowKey, Flow)>, DataplaneError> {
        let mut flows: Vec<(FlowKey, Flow)> = self
            .ct
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_error(names::CT))?;
        for entry in self.ct_new.iter() {
            flows.push(entry.map_err(map_error(names::CT_NEW))?);
        }
        Ok(flows)
    }
}
