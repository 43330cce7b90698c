//! What to write: from what the maps hold (held.rs) and the frontends
//! wanted, the ordered map operations that take one to the other. Pure: no
//! kernel here, so the order of writes is data a test can read.
//!
//! The order keeps every frontend whole for the packets that look at it
//! (make before break). For a frontend written: its reverse translation
//! and metadata, new backends, then slots, then new source ranges, then the
//! header with the new count, then what the header no longer names
//! (trailing slots, old ranges, stale affinities). A reader never sees a
//! count that points at a missing slot, nor a slot naming a missing
//! backend. Removed frontends go header first (gone for new packets in one
//! step), then their slots and the rest; backends no slot names go last.
//!
//! Operations come in chunks, one per frontend (and one for the backends
//! no slot names any more, last). Each write carries the value it
//! replaces, so a chunk stopped half-way can be undone (apply.rs): whatever
//! fails, every frontend is either as it was or as it is wanted.
use std::{collections::BTreeSet, fmt, net::SocketAddr, sync::Arc};

use svc_common::{FrontendMeta, MAX_BACKENDS, MAX_FRONTENDS, ServiceSlot, frontend_flags, names};

use super::{
    DataplaneError, codec,
    entries::{BackendEntry as Backend, RevNatEntry as RevNat, SlotKey},
    held::Held,
    maglev,
    maps::RangeEntry,
};
use crate::{
    FastMap, FastSet,
    model::{BackendRef, Frontend, LbAlgorithm, OnEmpty},
};

/// A frontend handed to planning: owned, borrowed, or shared. A shared one
/// (an `Arc`, as the agent's `Translator` hands them out) that is the very
/// one planned last time is known to be unchanged without comparing it.
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

/// The name of the map of `address`'s family, of a pair.
fn by_family(address: std::net::IpAddr, v4: &'static str, v6: &'static str) -> &'static str {
    if address.is_ipv4() { v4 } else { v6 }
}

/// One map operation. `was` is what the entry held before (`None`: no
/// entry), for undoing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A fresh rev_nat_id's counters start from zero.
    ResetCounters {
        rev_nat_id: u32,
    },
    PutRevNat {
        rev_nat_id: u32,
        rev_nat: RevNat,
        was: Option<RevNat>,
    },
    PutMeta {
        rev_nat_id: u32,
        meta: FrontendMeta,
        was: Option<FrontendMeta>,
    },
    /// Backend ids are always new ones: an id is reused only after it was
    /// removed by an earlier plan.
    PutBackend {
        id: u32,
        backend: Backend,
    },
    /// A Maglev table, into a run of MAGLEV_V1 no header names yet (so
    /// nothing to undo: the header that will name it is written after).
    PutMaglev {
        start: u32,
        entries: Arc<[u32]>,
    },
    /// A header (slot 0) or a backend slot.
    PutSlot {
        key: SlotKey,
        slot: ServiceSlot,
        was: Option<ServiceSlot>,
    },
    PutRange(RangeEntry),
    RemoveRange(RangeEntry),
    /// Drops the frontend's sessionAffinity entries whose backend is not in
    /// `keep` (all of them with `None`). Soft state: not undone.
    ForgetAffinities {
        rev_nat_id: u32,
        keep: Option<BTreeSet<u32>>,
    },
    RemoveSlot {
        key: SlotKey,
        was: ServiceSlot,
    },
    RemoveRevNat {
        rev_nat_id: u32,
        was: RevNat,
    },
    RemoveMeta {
        rev_nat_id: u32,
        was: FrontendMeta,
    },
    RemoveBackend {
        id: u32,
        was: Backend,
    },
}

impl Op {
    /// The map this operation writes.
    pub fn map(&self) -> &'static str {
        match self {
            Op::ResetCounters { .. } => names::FRONTEND_STATS,
            Op::PutRevNat { rev_nat, .. } | Op::RemoveRevNat { was: rev_nat, .. } => {
                by_family(rev_nat.address, names::REV_NAT, names::REV_NAT6)
            }
            Op::PutMeta { .. } | Op::RemoveMeta { .. } => names::FRONTEND_META,
            Op::PutBackend { backend, .. } | Op::RemoveBackend { was: backend, .. } => {
                by_family(backend.address, names::BACKENDS, names::BACKENDS6)
            }
            Op::PutSlot { key, .. } | Op::RemoveSlot { key, .. } => {
                by_family(key.address, names::SERVICES, names::SERVICES6)
            }
            Op::PutRange(_) | Op::RemoveRange(_) => names::SOURCE_RANGES,
            Op::PutMaglev { .. } => names::MAGLEV,
            Op::ForgetAffinities { .. } => names::AFFINITY,
        }
    }

    /// The operation that puts back what this one changed; `None` for
    /// counters and affinities, which are soft state.
    pub fn inverse(&self) -> Option<Op> {
        Some(match self {
            Op::ResetCounters { .. } | Op::ForgetAffinities { .. } | Op::PutMaglev { .. } => {
                return None;
            }
            Op::PutRevNat {
                rev_nat_id,
                rev_nat,
                was,
            } => match was {
                Some(old) => Op::PutRevNat {
                    rev_nat_id: *rev_nat_id,
                    rev_nat: *old,
                    was: Some(*rev_nat),
                },
                None => Op::RemoveRevNat {
                    rev_nat_id: *rev_nat_id,
                    was: *rev_nat,
                },
            },
            Op::PutMeta {
                rev_nat_id,
                meta,
                was,
            } => match was {
                Some(old) => Op::PutMeta {
                    rev_nat_id: *rev_nat_id,
                    meta: *old,
                    was: Some(*meta),
                },
                None => Op::RemoveMeta {
                    rev_nat_id: *rev_nat_id,
                    was: *meta,
                },
            },
            Op::PutBackend { id, backend } => Op::RemoveBackend {
                id: *id,
                was: *backend,
            },
            Op::PutSlot { key, slot, was } => match was {
                Some(old) => Op::PutSlot {
                    key: *key,
                    slot: *old,
                    was: Some(*slot),
                },
                None => Op::RemoveSlot {
                    key: *key,
                    was: *slot,
                },
            },
            Op::PutRange(range) => Op::RemoveRange(*range),
            Op::RemoveRange(range) => Op::PutRange(*range),
            Op::RemoveSlot { key, was } => Op::PutSlot {
                key: *key,
                slot: *was,
                was: None,
            },
            Op::RemoveRevNat { rev_nat_id, was } => Op::PutRevNat {
                rev_nat_id: *rev_nat_id,
                rev_nat: *was,
                was: None,
            },
            Op::RemoveMeta { rev_nat_id, was } => Op::PutMeta {
                rev_nat_id: *rev_nat_id,
                meta: *was,
                was: None,
            },
            Op::RemoveBackend { id, was } => Op::PutBackend {
                id: *id,
                backend: *was,
            },
        })
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let slot = |key: &SlotKey| {
            format!(
                "{}/{}#{}",
                SocketAddr::new(key.address, u16::from_be(key.port_be)),
                key.proto,
                key.slot
            )
        };
        match self {
            Op::ResetCounters { rev_nat_id } => write!(f, "reset counters {rev_nat_id}"),
            Op::PutRevNat { rev_nat_id, .. } => write!(f, "put rev_nat {rev_nat_id}"),
            Op::PutMeta { rev_nat_id, .. } => write!(f, "put meta {rev_nat_id}"),
            Op::PutBackend { id, .. } => write!(f, "put backend {id}"),
            Op::PutMaglev { start, entries } => {
                write!(f, "put maglev table at {start} ({} entries)", entries.len())
            }
            Op::PutSlot {
                key, slot: header, ..
            } if key.slot == 0 => write!(
                f,
                "put header {} count {}+{}",
                slot(key),
                header.count,
                header.terminating_count
            ),
            Op::PutSlot {
                key, slot: entry, ..
            } => {
                write!(f, "put slot {} -> backend {}", slot(key), entry.backend_id)
            }
            Op::PutRange(range) => write!(f, "put range {range}"),
            Op::RemoveRange(range) => write!(f, "remove range {range}"),
            Op::ForgetAffinities { rev_nat_id, .. } => write!(f, "forget affinities {rev_nat_id}"),
            Op::RemoveSlot { key, .. } => write!(f, "remove slot {}", slot(key)),
            Op::RemoveRevNat { rev_nat_id, .. } => write!(f, "remove rev_nat {rev_nat_id}"),
            Op::RemoveMeta { rev_nat_id, .. } => write!(f, "remove meta {rev_nat_id}"),
            Op::RemoveBackend { id, .. } => write!(f, "remove backend {id}"),
        }
    }
}

/// The operations for one frontend (or, last, for the backends no slot
/// names any more), and the Service they are for (named in errors). A
/// chunk runs whole or not at all (apply.rs): between chunks every
/// frontend is either as it was or as it is wanted.
#[derive(Debug)]
pub struct Chunk<'a> {
    pub service: Option<&'a str>,
    pub ops: &'a [Op],
}

/// Every operation of one update, in order (for tests: the agent runs
/// each chunk as it is planned).
#[cfg(test)]
#[derive(Debug, Default)]
pub struct Plan {
    pub ops: Vec<Op>,
}

/// What one update changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ApplyReport {
    pub frontends_written: usize,
    pub frontends_removed: usize,
    pub backends_removed: usize,
}

/// The plan that makes maps holding `held` hold exactly `desired`; `held`
/// becomes what the maps hold once it ran. On an error `held` is part-way:
/// throw it away.
#[cfg(test)]
pub fn plan<F: Desired>(held: &mut Held, desired: &[F]) -> Result<Plan, DataplaneError> {
    let mut ops = Vec::new();
    plan_each(held, desired, |chunk| {
        ops.extend_from_slice(chunk.ops);
        Ok(())
    })?;
    Ok(Plan { ops })
}

/// Plans the update chunk by chunk, and hands each chunk to `run` before
/// planning the next, so an update of any size holds one frontend's
/// operations at a time. Stops at the first error, of planning or of
/// `run`; `held` is then part-way: throw it away.
pub fn plan_each<F: Desired>(
    held: &mut Held,
    desired: &[F],
    mut run: impl FnMut(Chunk<'_>) -> Result<(), DataplaneError>,
) -> Result<ApplyReport, DataplaneError> {
    let mut report = ApplyReport::default();
    let mut planner = Planner::new(held);
    let mut wanted_headers = FastSet::with_capacity_and_hasher(desired.len(), Default::default());
    for item in desired {
        wanted_headers.insert(planner.want(item, &mut report, &mut run)?);
    }

    let mut unwanted: Vec<SlotKey> = planner
        .held
        .headers
        .iter()
        .filter(|key| !wanted_headers.contains(*key))
        .copied()
        .collect();
    unwanted.sort_unstable();
    for key in unwanted {
        planner.unwant(key, &mut report, &mut run)?;
    }
    planner.finish(&mut report, &mut run)?;
    Ok(report)
}

/// Plans a change: `written` wanted as they are, the headers of `removed`
/// not wanted any more (unless one of `written` has the same). Costs in
/// proportion to the change; what the maps hold otherwise stays.
pub fn plan_delta(
    held: &mut Held,
    written: &[Arc<Frontend>],
    removed: &[Arc<Frontend>],
    mut run: impl FnMut(Chunk<'_>) -> Result<(), DataplaneError>,
) -> Result<ApplyReport, DataplaneError> {
    let mut report = ApplyReport::default();
    let mut planner = Planner::new(held);
    let mut wanted_headers = FastSet::default();
    for item in written {
        wanted_headers.insert(planner.want(item, &mut report, &mut run)?);
    }
    let mut unwanted: Vec<SlotKey> = removed
        .iter()
        .map(|frontend| codec::header_key(frontend))
        .filter(|key| !wanted_headers.contains(key) && planner.held.headers.contains(key))
        .collect();
    unwanted.sort_unstable();
    unwanted.dedup();
    for key in unwanted {
        planner.unwant(key, &mut report, &mut run)?;
    }
    planner.finish(&mut report, &mut run)?;
    Ok(report)
}

struct Planner<'a> {
    held: &'a mut Held,
    /// The chunk being planned.
    ops: Vec<Op>,
    /// Maglev tables built during this update, by size and backends: the
    /// frontends of one Service port (ClusterIP, NodePorts, LoadBalancer
    /// IPs) share their backends, and the table is built once.
    tables: FastMap<(u16, Vec<SocketAddr>), Arc<maglev::Table>>,
}

impl<'a> Planner<'a> {
    /// A planner of one update of the maps holding `held`.
    fn new(held: &'a mut Held) -> Self {
        held.maglev.settle();
        Self {
            held,
            ops: Vec::new(),
            tables: FastMap::default(),
        }
    }

    fn push(&mut self, op: Op) {
        self.ops.push(op);
    }

    /// Plans and runs the writes `item` needs, if any; returns its header.
    fn want<F: Desired>(
        &mut self,
        item: &F,
        report: &mut ApplyReport,
        run: &mut impl FnMut(Chunk<'_>) -> Result<(), DataplaneError>,
    ) -> Result<SlotKey, DataplaneError> {
        let frontend = item.frontend();
        let key = codec::header_key(frontend);
        if let Some(last) = self.held.written.get_mut(&key) {
            if item
                .shared()
                .is_some_and(|shared| Arc::ptr_eq(shared, last))
            {
                return Ok(key);
            }
            if **last == *frontend {
                if let Some(shared) = item.shared() {
                    *last = shared.clone();
                }
                return Ok(key);
            }
        }
        self.write_frontend(frontend, key)?;
        if !self.ops.is_empty() {
            report.frontends_written += 1;
            self.hand_over(Some(&frontend.service), run)?;
        }
        let written = item
            .shared()
            .cloned()
            .unwrap_or_else(|| Arc::new(frontend.clone()));
        self.held.written.insert(key, written);
        Ok(key)
    }

    /// Plans and runs the removal of the frontend under header `key`.
    fn unwant(
        &mut self,
        key: SlotKey,
        report: &mut ApplyReport,
        run: &mut impl FnMut(Chunk<'_>) -> Result<(), DataplaneError>,
    ) -> Result<(), DataplaneError> {
        self.remove_frontend(key);
        report.frontends_removed += 1;
        self.hand_over(None, run)
    }

    /// Plans and runs the removal of the backends no slot names any more.
    fn finish(
        &mut self,
        report: &mut ApplyReport,
        run: &mut impl FnMut(Chunk<'_>) -> Result<(), DataplaneError>,
    ) -> Result<(), DataplaneError> {
        for (id, backend) in self.held.take_unreferenced() {
            self.push(Op::RemoveBackend { id, was: backend });
            report.backends_removed += 1;
        }
        self.hand_over(None, run)
    }

    /// Hands the chunk planned so far to `run`, if it has anything.
    fn hand_over(
        &mut self,
        service: Option<&str>,
        run: &mut impl FnMut(Chunk<'_>) -> Result<(), DataplaneError>,
    ) -> Result<(), DataplaneError> {
        if self.ops.is_empty() {
            return Ok(());
        }
        let ran = run(Chunk {
            service,
            ops: &self.ops,
        });
        self.ops.clear();
        ran
    }

    /// Plans the writes that make the maps hold `frontend` under header
    /// `key`, if any.
    fn write_frontend(&mut self, frontend: &Frontend, key: SlotKey) -> Result<(), DataplaneError> {
        let full = |map: &'static str, entries: u32| DataplaneError::Full {
            map,
            service: frontend.service.clone(),
            entries,
        };
        let ranges = source_ranges(frontend)?;
        let ordered: Vec<&BackendRef> = frontend
            .ready_backends()
            .chain(frontend.terminating_backends())
            .collect();
        let Ok(total) = u16::try_from(ordered.len()) else {
            return Err(full(names::SERVICES, u32::from(u16::MAX)));
        };

        let old_header = self.held.slots.get(&key).copied();
        let old_serving = old_header.map(|header| self.serving_ids(key, &header));
        let rev_nat_id = match old_header {
            Some(header) => header.rev_nat_id,
            None => self
                .held
                .rev_nat_ids
                .next()
                .ok_or_else(|| full(names::REV_NAT, MAX_FRONTENDS))?,
        };
        if old_header.is_none() {
            self.push(Op::ResetCounters { rev_nat_id });
        }
        let rev_nat = codec::rev_nat(frontend);
        let held_rev_nat = self.held.rev_nats.get(&rev_nat_id).copied();
        if held_rev_nat != Some(rev_nat) {
            self.push(Op::PutRevNat {
                rev_nat_id,
                rev_nat,
                was: held_rev_nat,
            });
            self.held.rev_nats.insert(rev_nat_id, rev_nat);
        }
        let meta = codec::meta(frontend);
        let held_meta = self.held.metas.get(&rev_nat_id).copied();
        if held_meta != Some(meta) {
            self.push(Op::PutMeta {
                rev_nat_id,
                meta,
                was: held_meta,
            });
            self.held.metas.insert(rev_nat_id, meta);
        }

        let mut backend_ids = BTreeSet::new();
        let mut slot_ids = Vec::with_capacity(ordered.len());
        for (slot, backend_ref) in (1..=total).zip(&ordered) {
            let backend = codec::backend(
                backend_ref.address,
                backend_ref.port,
                frontend.protocol,
                backend_ref.local,
            );
            let id = match self.held.backend_ids.get(&backend) {
                Some(id) => *id,
                None => {
                    let id = self
                        .held
                        .backend_alloc
                        .next()
                        .ok_or_else(|| full(names::BACKENDS, MAX_BACKENDS))?;
                    self.push(Op::PutBackend { id, backend });
                    self.held.add_backend(backend, id);
                    id
                }
            };
            backend_ids.insert(id);
            slot_ids.push((id, SocketAddr::new(backend_ref.address, backend_ref.port)));
            let slot_key = key.with_slot(slot);
            let was = self.held.slots.get(&slot_key).copied();
            if was.map(|slot| slot.backend_id) != Some(id) {
                let slot = ServiceSlot {
                    backend_id: id,
                    ..ServiceSlot::default()
                };
                self.push(Op::PutSlot {
                    key: slot_key,
                    slot,
                    was,
                });
                self.held.set_slot(slot_key, slot);
            }
        }

        // New ranges before the header flag that makes them count; old ones
        // after it.
        let ranges: BTreeSet<RangeEntry> = ranges
            .into_iter()
            .map(|range| RangeEntry {
                rev_nat_id,
                ..range
            })
            .collect();
        let held_ranges = self.held.ranges.remove(&rev_nat_id).unwrap_or_default();
        for range in ranges.difference(&held_ranges) {
            self.push(Op::PutRange(*range));
        }

        let ready = frontend.ready_backends().count() as u16;
        let mut flags = match frontend.on_empty {
            OnEmpty::Reject => 0,
            OnEmpty::Drop => frontend_flags::DROP_WHEN_EMPTY,
        };
        if !ranges.is_empty() {
            flags |= frontend_flags::SOURCE_RANGES;
        }
        let (maglev_start, maglev_size) = if frontend.lb_algorithm == LbAlgorithm::Maglev {
            flags |= frontend_flags::MAGLEV;
            // New flows pick among the ready backends, or the terminating
            // ones when none is ready: the table holds those.
            let serving = if ready > 0 {
                &slot_ids[..usize::from(ready)]
            } else {
                &slot_ids[..]
            };
            self.maglev_table(frontend, old_header, old_serving, serving)
        } else {
            (0, 0)
        };
        let header = ServiceSlot {
            backend_id: maglev_start,
            count: ready,
            terminating_count: total - ready,
            rev_nat_id,
            flags,
            maglev_size,
            affinity_timeout_s: frontend.affinity_timeout_seconds.unwrap_or(0),
        };
        if old_header != Some(header) {
            self.push(Op::PutSlot {
                key,
                slot: header,
                was: old_header,
            });
            self.held.set_slot(key, header);
        }
        if let Some(old) = old_header
            && old.maglev_size != 0
            && (old.maglev_start(), old.maglev_size) != (maglev_start, maglev_size)
        {
            self.held.maglev.release(old.maglev_start());
        }

        if let Some(old) = old_header {
            for slot in (total + 1)..=(old.count + old.terminating_count) {
                self.remove_slot(key.with_slot(slot));
            }
        }
        for range in held_ranges.difference(&ranges) {
            self.push(Op::RemoveRange(*range));
        }
        if !ranges.is_empty() {
            self.held.ranges.insert(rev_nat_id, ranges);
        }
        let changed = !self.ops.is_empty();
        if changed && header.affinity_timeout_s > 0 {
            self.push(Op::ForgetAffinities {
                rev_nat_id,
                keep: Some(backend_ids),
            });
        }
        Ok(())
    }

    /// The backend ids new flows to the frontend under `key` pick among,
    /// as the maps hold it with `header`: the ready slots, or the
    /// terminating ones when none is ready.
    fn serving_ids(&self, key: SlotKey, header: &ServiceSlot) -> Vec<u32> {
        let slots = if header.count > 0 {
            1..=header.count
        } else {
            1..=header.terminating_count
        };
        slots
            .filter_map(|slot| self.held.slots.get(&key.with_slot(slot)))
            .map(|slot| slot.backend_id)
            .collect()
    }

    /// Where the Maglev table of `frontend`, whose new flows pick among
    /// `serving` (backend id and address, in slot order), starts and how
    /// long it is: the table the old header names if it was built for the
    /// same backends at this size, else a new one written into free room.
    /// (0, 0), a table of none, when there is nothing to pick among or no
    /// room: new flows then pick at random.
    fn maglev_table(
        &mut self,
        frontend: &Frontend,
        old_header: Option<ServiceSlot>,
        old_serving: Option<Vec<u32>>,
        serving: &[(u32, SocketAddr)],
    ) -> (u32, u16) {
        let size = self.held.maglev_size;
        if serving.is_empty() || size == 0 {
            return (0, 0);
        }
        let ids: Vec<u32> = serving.iter().map(|(id, _)| *id).collect();
        if let Some(old) = old_header
            && old.maglev_size == size
            && old_serving.as_deref() == Some(&ids[..])
            && !self.held.lost_tables.contains(&old.maglev_start())
        {
            return (old.maglev_start(), size);
        }
        let Some(start) = self.held.maglev.allocate(u32::from(size)) else {
            tracing::warn!(
                service = %frontend.service,
                frontend = %frontend.label(),
                "no room left in {} for another Maglev table: new flows pick at random",
                names::MAGLEV
            );
            return (0, 0);
        };
        let addresses: Vec<SocketAddr> = serving.iter().map(|(_, address)| *address).collect();
        let table = self
            .tables
            .entry((size, addresses))
            .or_insert_with_key(|(size, addresses)| {
                Arc::new(maglev::Table::build(addresses, *size))
            })
            .clone();
        let id_of: FastMap<SocketAddr, u32> = serving
            .iter()
            .map(|(id, address)| (*address, *id))
            .collect();
        let entries: Arc<[u32]> = table
            .entries
            .iter()
            .map(|index| id_of[&table.backends[usize::from(*index)]])
            .collect();
        self.push(Op::PutMaglev { start, entries });
        (start, size)
    }

    fn remove_slot(&mut self, key: SlotKey) {
        if let Some(was) = self.held.slots.get(&key).copied() {
            self.push(Op::RemoveSlot { key, was });
            self.held.remove_slot(key);
        }
    }

    /// Header first: the frontend disappears for new packets in one step.
    fn remove_frontend(&mut self, key: SlotKey) {
        let Some(header) = self.held.slots.get(&key).copied() else {
            return;
        };
        let rev_nat_id = header.rev_nat_id;
        self.remove_slot(key);
        if header.maglev_size != 0 {
            self.held.maglev.release(header.maglev_start());
        }
        for slot in 1..=(header.count + header.terminating_count) {
            self.remove_slot(key.with_slot(slot));
        }
        for range in self
            .held
            .ranges
            .get(&rev_nat_id)
            .cloned()
            .unwrap_or_default()
        {
            self.push(Op::RemoveRange(range));
        }
        self.push(Op::ForgetAffinities {
            rev_nat_id,
            keep: None,
        });
        if let Some(was) = self.held.rev_nats.get(&rev_nat_id).copied() {
            self.push(Op::RemoveRevNat { rev_nat_id, was });
        }
        if let Some(was) = self.held.metas.get(&rev_nat_id).copied() {
            self.push(Op::RemoveMeta { rev_nat_id, was });
        }
        self.held.forget_frontend(rev_nat_id);
    }
}

/// The frontend's source ranges as SRC_RANGES entries (rev_nat_id 0: the
/// caller sets it), host bits cleared so equal prefixes give equal entries.
fn source_ranges(frontend: &Frontend) -> Result<BTreeSet<RangeEntry>, DataplaneError> {
    frontend
        .source_ranges
        .iter()
        .map(|cidr| {
            let bad = || DataplaneError::BadSourceRange {
                service: frontend.service.clone(),
                range: cidr.to_string(),
            };
            match cidr.address {
                std::net::IpAddr::V4(address) if cidr.prefix <= 32 => {
                    Ok(codec::source_range(0, address, cidr.prefix))
                }
                _ => Err(bad()),
            }
        })
        .collect()
}
