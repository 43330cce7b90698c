//! What the maps hold, as far as planning (plan.rs) needs to know, kept in
//! the agent's memory.
//!
//! It is read from the kernel once (the first apply adopts whatever an
//! earlier agent left) and then kept in step with every write, so an apply
//! costs syscalls only for the entries that change. The agent is the only
//! writer of these maps while it runs; any failed write throws this copy
//! away and the next apply reads the kernel again.
use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    sync::Arc,
};

use svc_common::{FrontendMeta, ServiceSlot};

use super::{
    entries::{BackendEntry as Backend, RevNatEntry as RevNat, SlotKey as FrontendKey},
    maps::{Contents, RangeEntry},
};
use crate::{FastMap as HashMap, FastSet as HashSet, model::Frontend};

#[derive(Default)]
pub(super) struct Held {
    /// SERVICES and SERVICES6: headers (slot 0) and backend slots.
    pub slots: HashMap<FrontendKey, ServiceSlot>,
    /// The header keys among `slots`.
    pub headers: HashSet<FrontendKey>,
    /// BACKENDS, by id.
    backends: HashMap<u32, Backend>,
    /// BACKENDS, by value.
    pub backend_ids: HashMap<Backend, u32>,
    /// How many slots name each backend id (ids in BACKENDS only).
    backend_refs: HashMap<u32, u32>,
    /// Backend ids whose last slot went since the last sweep.
    unreferenced: BTreeSet<u32>,
    /// REV_NAT, by rev_nat_id.
    pub rev_nats: HashMap<u32, RevNat>,
    /// FRONTEND_META, by rev_nat_id.
    pub metas: HashMap<u32, FrontendMeta>,
    /// SRC_RANGES, by rev_nat_id.
    pub ranges: HashMap<u32, BTreeSet<RangeEntry>>,
    pub rev_nat_ids: IdAllocator,
    pub backend_alloc: IdAllocator,
    /// The frontend last written under each header key: an equal frontend
    /// needs no write, and no look at its slots either.
    pub written: HashMap<FrontendKey, Arc<Frontend>>,
    /// Where MAGLEV_V1 holds the headers' tables, and where it has room.
    pub maglev: TableSpace,
    /// Starts of tables headers name that hold nothing (see
    /// `Contents::maglev_written`): never kept as they are.
    pub lost_tables: HashSet<u32>,
    /// How many entries a Maglev table written now gets
    /// (`--maglev-table-size`); tables written before with another size
    /// are replaced as their frontends are planned.
    pub maglev_size: u16,
}

impl Held {
    /// The mirror of maps holding `contents`; Maglev tables written from
    /// now on get `maglev_size` entries.
    pub fn new(contents: Contents, maglev_size: u16) -> Self {
        let Contents {
            slots,
            backends,
            rev_nats,
            metas,
            ranges: range_entries,
            maglev_written,
        } = contents;
        let mut ranges: HashMap<u32, BTreeSet<RangeEntry>> = HashMap::default();
        for range in range_entries {
            ranges.entry(range.rev_nat_id).or_default().insert(range);
        }
        let headers: HashSet<FrontendKey> =
            slots.keys().filter(|key| key.slot == 0).copied().collect();
        let mut backend_refs: HashMap<u32, u32> = backends.keys().map(|id| (*id, 0)).collect();
        for (key, slot) in &slots {
            if key.slot != 0
                && let Some(refs) = backend_refs.get_mut(&slot.backend_id)
            {
                *refs += 1;
            }
        }
        let unreferenced = backend_refs
            .iter()
            .filter(|(_, refs)| **refs == 0)
            .map(|(id, _)| *id)
            .collect();
        let lost_tables = headers
            .iter()
            .map(|key| slots[key])
            .filter(|header| {
                header.maglev_size != 0 && !maglev_written.contains(&header.maglev_start())
            })
            .map(|header| header.maglev_start())
            .collect();
        let maglev = TableSpace::new(
            headers
                .iter()
                .map(|key| slots[key])
                .filter(|header| header.maglev_size != 0)
                .map(|header| (header.maglev_start(), u32::from(header.maglev_size))),
            svc_common::maglev::MAX_ENTRIES,
        );
        let rev_nat_ids = IdAllocator::new(
            headers.iter().map(|key| slots[key].rev_nat_id),
            svc_common::MAX_FRONTENDS,
        );
        Self {
            rev_nat_ids,
            backend_alloc: IdAllocator::new(backends.keys().copied(), svc_common::MAX_BACKENDS),
            backend_ids: backends.iter().map(|(id, b)| (*b, *id)).collect(),
            backends,
            backend_refs,
            unreferenced,
            headers,
            slots,
            rev_nats,
            metas,
            ranges,
            written: HashMap::default(),
            maglev,
            lost_tables,
            maglev_size,
        }
    }

    /// Records a backend just written to BACKENDS under `id`.
    pub fn add_backend(&mut self, backend: Backend, id: u32) {
        self.backend_ids.insert(backend, id);
        self.backends.insert(id, backend);
        self.backend_refs.insert(id, 0);
        self.unreferenced.insert(id);
    }

    /// Records a slot write.
    pub fn set_slot(&mut self, key: FrontendKey, slot: ServiceSlot) {
        if key.slot == 0 {
            self.headers.insert(key);
        } else {
            self.reference(slot.backend_id);
        }
        if let Some(old) = self.slots.insert(key, slot)
            && key.slot != 0
        {
            self.release(old.backend_id);
        }
    }

    /// Records a slot removal.
    pub fn remove_slot(&mut self, key: FrontendKey) {
        if key.slot == 0 {
            self.headers.remove(&key);
            self.written.remove(&key);
        }
        if let Some(old) = self.slots.remove(&key)
            && key.slot != 0
        {
            self.release(old.backend_id);
        }
    }

    fn reference(&mut self, id: u32) {
        if let Some(refs) = self.backend_refs.get_mut(&id) {
            *refs += 1;
            self.unreferenced.remove(&id);
        }
    }

    fn release(&mut self, id: u32) {
        if let Some(refs) = self.backend_refs.get_mut(&id) {
            *refs = refs.saturating_sub(1);
            if *refs == 0 {
                self.unreferenced.insert(id);
            }
        }
    }

    /// Backend ids no slot names any more; each is forgotten here, to be
    /// removed from BACKENDS by the caller.
    pub fn take_unreferenced(&mut self) -> Vec<(u32, Backend)> {
        let ids = std::mem::take(&mut self.unreferenced);
        let mut gone = Vec::with_capacity(ids.len());
        for id in ids {
            self.backend_refs.remove(&id);
            self.backend_alloc.release(id);
            if let Some(backend) = self.backends.remove(&id) {
                if self.backend_ids.get(&backend) == Some(&id) {
                    self.backend_ids.remove(&backend);
                }
                gone.push((id, backend));
            }
        }
        gone
    }

    /// Records a frontend's removal: its rev_nat_id is free again.
    pub fn forget_frontend(&mut self, rev_nat_id: u32) {
        self.rev_nats.remove(&rev_nat_id);
        self.metas.remove(&rev_nat_id);
        self.ranges.remove(&rev_nat_id);
        self.rev_nat_ids.release(rev_nat_id);
    }
}

/// The room in MAGLEV_V1: runs of entries, each one table's. A run given
/// back is not handed out again before [`TableSpace::settle`] (the next
/// update): a packet that read the old header a moment before it changed
/// may still read that table, and must find it as it was.
#[derive(Default)]
pub(super) struct TableSpace {
    /// start → length of every run in use.
    used: BTreeMap<u32, u32>,
    /// Runs given back during this update.
    settling: Vec<u32>,
    limit: u32,
}

impl TableSpace {
    fn new(used: impl IntoIterator<Item = (u32, u32)>, limit: u32) -> Self {
        Self {
            used: used.into_iter().collect(),
            settling: Vec::new(),
            limit,
        }
    }

    /// The start of a free run of `len` entries (the first that fits).
    pub fn allocate(&mut self, len: u32) -> Option<u32> {
        let mut start = 0u32;
        for (used_start, used_len) in &self.used {
            if used_start.saturating_sub(start) >= len {
                break;
            }
            start = start.max(used_start + used_len);
        }
        if self.limit.saturating_sub(start) < len {
            return None;
        }
        self.used.insert(start, len);
        Some(start)
    }

    /// Gives back the run that starts at `start`, once the update ends.
    pub fn release(&mut self, start: u32) {
        self.settling.push(start);
    }

    /// Frees the runs given back during the last update.
    pub fn settle(&mut self) {
        for start in self.settling.drain(..) {
            self.used.remove(&start);
        }
    }
}

/// Hands out ids from 1 (0 means "none"): every id never handed out
/// first, in order, and only then ids given back, the longest-released
/// first. An id comes back as late as it can: flows of a removed frontend
/// still name its rev_nat id until they expire, and must not be answered
/// from an unrelated frontend that got the id soon after.
#[derive(Default)]
pub(super) struct IdAllocator {
    used: BTreeSet<u32>,
    /// Ids from this one up to the limit were never handed out.
    fresh: u32,
    /// Ids given back, oldest first.
    released: VecDeque<u32>,
    limit: u32,
}

impl IdAllocator {
    /// `used`: the ids the maps hold (an agent adopting them); the ids
    /// below the highest of them that no entry holds count as released.
    fn new(used: impl IntoIterator<Item = u32>, limit: u32) -> Self {
        let used: BTreeSet<u32> = used.into_iter().collect();
        let fresh = used.last().map_or(1, |highest| highest + 1);
        let released = (1..fresh).filter(|id| !used.contains(id)).collect();
        Self {
            used,
            fresh,
            released,
            limit,
        }
    }

    pub fn next(&mut self) -> Option<u32> {
        if self.fresh < self.limit {
            let id = self.fresh;
            self.fresh += 1;
            self.used.insert(id);
            return Some(id);
        }
        while let Some(id) = self.released.pop_front() {
            if self.used.insert(id) {
                return Some(id);
            }
        }
        None
    }

    fn release(&mut self, id: u32) {
        if self.used.remove(&id) {
            self.released.push_back(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_never_used_come_first_then_the_longest_released() {
        let mut ids = IdAllocator::new([2], 7);
        // 1 was free below the adopted 2: released before anything here.
        assert_eq!(ids.next(), Some(3));
        assert_eq!(ids.next(), Some(4));
        ids.release(4);
        ids.release(2);
        assert_eq!(ids.next(), Some(5), "a fresh id before any released one");
        assert_eq!(ids.next(), Some(6));
        assert_eq!(ids.next(), Some(1), "7 is the limit: the oldest released");
        assert_eq!(ids.next(), Some(4));
        assert_eq!(ids.next(), Some(2));
        assert_eq!(ids.next(), None);
        ids.release(5);
        assert_eq!(ids.next(), Some(5));
    }

    #[test]
    fn table_space_fits_runs_into_gaps_and_reuses_a_run_only_once_settled() {
        let mut space = TableSpace::new([(10, 5)], 30);
        assert_eq!(space.allocate(10), Some(0), "the gap before the run in use");
        assert_eq!(space.allocate(10), Some(15));
        assert_eq!(space.allocate(6), None, "25..30 is too short");
        space.release(0);
        assert_eq!(space.allocate(10), None, "0..10 is not free before settle");
        space.settle();
        assert_eq!(space.allocate(10), Some(0));
        assert_eq!(space.allocate(5), Some(25), "the last run fits exactly");
    }

    #[test]
    fn a_backend_is_unreferenced_once_its_last_slot_goes() {
        let backend = Backend {
            address: std::net::Ipv4Addr::new(198, 18, 1, 7).into(),
            port_be: 80,
            proto: 6,
            flags: 0,
        };
        let mut held = Held::default();
        held.add_backend(backend, 9);
        let slot = |n| FrontendKey::new(std::net::Ipv4Addr::new(198, 19, 0, 1).into(), 80, 6, n);
        let naming = ServiceSlot {
            backend_id: 9,
            ..ServiceSlot::default()
        };
        held.set_slot(slot(1), naming);
        held.set_slot(slot(2), naming);
        held.remove_slot(slot(1));
        assert!(held.take_unreferenced().is_empty(), "slot 2 still names it");
        held.remove_slot(slot(2));
        assert_eq!(held.take_unreferenced(), [(9, backend)]);
        assert!(held.backend_ids.is_empty());
    }
}
