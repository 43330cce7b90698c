//! The maps that hold the Service tables, behind one trait of small parts.
//!
//! [`ServiceMaps`] is everything a plan (plan.rs) can do to the kernel:
//! put or remove one entry of one map. [`KernelMaps`] does it with aya on
//! the real maps; the tests' fake (fake.rs) does it in memory and can fail
//! at any chosen operation.
use std::{collections::BTreeSet, fmt, net::Ipv4Addr, os::fd::AsFd as _};

use aya::maps::{
    Array, HashMap, IterableMap as _, Map, MapData, MapError, PerCpuArray, PerCpuValues,
    lpm_trie::LpmTrie,
};
use svc_common::{
    Affinity, AffinityKey, Backend, Backend6, FrontendCounters, FrontendKey, FrontendKey6,
    FrontendMeta, MaglevEntry, RevNat, RevNat6, ServiceSlot, SourceRange, TablesGeneration, names,
};

use super::{
    DataplaneError,
    entries::{BackendEntry, ByFamily, RevNatEntry, SlotKey},
    sys,
};
use crate::{FastMap, model::IpFamily};

/// One SRC_RANGES entry: a frontend's (rev_nat_id) client prefix. The
/// prefix length counts the 32 bits of `rev_nat_id` too, as the LPM key does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RangeEntry {
    pub rev_nat_id: u32,
    pub prefix_len: u32,
    pub addr_be: u32,
}

impl fmt::Display for RangeEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            Ipv4Addr::from(self.addr_be.to_ne_bytes()),
            self.prefix_len.saturating_sub(32)
        )
    }
}

impl RangeEntry {
    fn lpm_key(self) -> aya::maps::lpm_trie::Key<SourceRange> {
        aya::maps::lpm_trie::Key::new(
            self.prefix_len,
            SourceRange {
                rev_nat_id: self.rev_nat_id,
                addr_be: self.addr_be,
            },
        )
    }
}

/// What the Service maps of both families hold, read whole.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Contents {
    pub slots: FastMap<SlotKey, ServiceSlot>,
    pub backends: FastMap<u32, BackendEntry>,
    pub rev_nats: FastMap<u32, RevNatEntry>,
    pub metas: FastMap<u32, FrontendMeta>,
    pub ranges: BTreeSet<RangeEntry>,
    /// The starts of the headers' Maglev tables that hold entries (the
    /// first names a backend). One that does not was lost with its map
    /// (MAGLEV_V1 made anew under old headers) and must be written again.
    pub maglev_written: BTreeSet<u32>,
}

impl Contents {
    /// Fills `maglev_written` from `first_entry`, which reads the first
    /// entry of the table that starts at its argument.
    pub fn with_written_tables(
        mut self,
        mut first_entry: impl FnMut(u32) -> Result<u32, DataplaneError>,
    ) -> Result<Self, DataplaneError> {
        for (key, header) in &self.slots {
            if key.slot == 0 && header.maglev_size != 0 && first_entry(header.maglev_start())? != 0
            {
                self.maglev_written.insert(header.maglev_start());
            }
        }
        Ok(self)
    }
}

/// The writes and reads a plan needs, one map entry at a time, of either
/// family (an id's entry is in the map of its family). A remove of an
/// entry that is not there may fail with `KeyNotFound`; the applier takes
/// that as done.
pub trait ServiceMaps {
    fn contents(&self) -> Result<Contents, DataplaneError>;
    fn put_slot(&mut self, key: SlotKey, slot: ServiceSlot) -> Result<(), MapError>;
    fn remove_slot(&mut self, key: SlotKey) -> Result<(), MapError>;
    fn put_backend(&mut self, id: u32, backend: BackendEntry) -> Result<(), MapError>;
    fn remove_backend(&mut self, id: u32, family: IpFamily) -> Result<(), MapError>;
    fn put_rev_nat(&mut self, id: u32, rev_nat: RevNatEntry) -> Result<(), MapError>;
    fn remove_rev_nat(&mut self, id: u32, family: IpFamily) -> Result<(), MapError>;
    fn put_meta(&mut self, id: u32, meta: FrontendMeta) -> Result<(), MapError>;
    fn remove_meta(&mut self, id: u32) -> Result<(), MapError>;
    fn put_range(&mut self, range: RangeEntry) -> Result<(), MapError>;
    fn remove_range(&mut self, range: RangeEntry) -> Result<(), MapError>;
    /// Writes a Maglev table into MAGLEV_V1 from entry `start` on.
    fn put_maglev(&mut self, start: u32, entries: &[u32]) -> Result<(), MapError>;
    /// Zeroes a frontend's packet and byte counters.
    fn reset_counters(&mut self, rev_nat_id: u32) -> Result<(), MapError>;
    /// Removes the frontend's sessionAffinity entries whose backend is not
    /// in `keep` (all of them when `keep` is `None`).
    fn forget_affinities(
        &mut self,
        rev_nat_id: u32,
        keep: Option<&BTreeSet<u32>>,
    ) -> Result<(), MapError>;
    /// Tells the programs the tables changed: their flow caches stop using
    /// what they copied from the old ones.
    fn next_generation(&mut self) -> Result<(), MapError>;
}

/// The Service maps of one datapath instance, in the kernel.
pub struct KernelMaps {
    pub(super) services: HashMap<MapData, FrontendKey, ServiceSlot>,
    pub(super) backends: HashMap<MapData, u32, Backend>,
    pub(super) rev_nat: HashMap<MapData, u32, RevNat>,
    /// The IPv6 maps; `None` in the pins of an agent from before them
    /// (read by a newer `dump` or lab during an upgrade: they hold
    /// nothing, and nothing can be written there).
    pub(super) services6: Option<HashMap<MapData, FrontendKey6, ServiceSlot>>,
    pub(super) backends6: Option<HashMap<MapData, u32, Backend6>>,
    pub(super) rev_nat6: Option<HashMap<MapData, u32, RevNat6>>,
    pub(super) meta: HashMap<MapData, u32, FrontendMeta>,
    pub(super) frontend_stats: PerCpuArray<MapData, FrontendCounters>,
    pub(super) affinity: HashMap<MapData, AffinityKey, Affinity>,
    pub(super) source_ranges: LpmTrie<MapData, SourceRange, u8>,
    pub(super) generation: Array<MapData, TablesGeneration>,
    pub(super) maglev: Array<MapData, MaglevEntry>,
    /// MAGLEV_V1's values mapped into this process, once a table is
    /// written.
    maglev_values: Option<sys::MappedArray>,
}

/// Bytes between two entries of MAGLEV_V1 in memory: array maps keep each
/// value in a multiple of 8 bytes.
const MAGLEV_STRIDE: usize = size_of::<MaglevEntry>().next_multiple_of(8);

pub(super) fn map_error(name: &'static str) -> impl Fn(MapError) -> DataplaneError {
    move |source| DataplaneError::Map {
        name,
        source: Box::new(source),
    }
}

/// Opens `name` with `open` as the map type `T`, or `None` when it is not
/// pinned: a map newer than the agent whose pins these are.
pub(super) fn typed_if_pinned<T: TryFrom<Map, Error = MapError>>(
    name: &'static str,
    open: &mut impl FnMut(&'static str) -> Result<Map, DataplaneError>,
) -> Result<Option<T>, DataplaneError> {
    match open(name) {
        Ok(map) => T::try_from(map).map(Some).map_err(map_error(name)),
        Err(DataplaneError::NotPinned { .. }) => Ok(None),
        Err(error) => Err(error),
    }
}

/// A map [`typed_if_pinned`] found, or the error of writing to one an
/// older agent's pins lack.
fn older<T>(map: &mut Option<T>) -> Result<&mut T, MapError> {
    map.as_mut().ok_or_else(|| {
        syscall_error(
            "a map the agent of these pins does not have (an older one)",
            std::io::Error::from_raw_os_error(libc::ENOENT),
        )
    })
}

/// Opens `name` with `open` as the map type `T`.
pub(super) fn typed<T: TryFrom<Map, Error = MapError>>(
    name: &'static str,
    open: &mut impl FnMut(&'static str) -> Result<Map, DataplaneError>,
) -> Result<T, DataplaneError> {
    T::try_from(open(name)?).map_err(map_error(name))
}

impl KernelMaps {
    pub(super) fn open(
        open: &mut impl FnMut(&'static str) -> Result<Map, DataplaneError>,
    ) -> Result<Self, DataplaneError> {
        Ok(Self {
            services: typed(names::SERVICES, open)?,
            backends: typed(names::BACKENDS, open)?,
            rev_nat: typed(names::REV_NAT, open)?,
            services6: typed_if_pinned(names::SERVICES6, open)?,
            backends6: typed_if_pinned(names::BACKENDS6, open)?,
            rev_nat6: typed_if_pinned(names::REV_NAT6, open)?,
            meta: typed(names::FRONTEND_META, open)?,
            frontend_stats: typed(names::FRONTEND_STATS, open)?,
            affinity: typed(names::AFFINITY, open)?,
            source_ranges: typed(names::SOURCE_RANGES, open)?,
            generation: typed(names::TABLES_GENERATION, open)?,
            maglev: typed(names::MAGLEV, open)?,
            maglev_values: None,
        })
    }

    /// Every SRC_RANGES entry.
    pub(super) fn ranges(&self) -> Result<BTreeSet<RangeEntry>, DataplaneError> {
        self.source_ranges
            .keys()
            .map(|key| {
                let key = key.map_err(map_error(names::SOURCE_RANGES))?;
                Ok(RangeEntry {
                    rev_nat_id: key.data().rev_nat_id,
                    prefix_len: key.prefix_len(),
                    addr_be: key.data().addr_be,
                })
            })
            .collect()
    }
}

fn syscall_error(call: &'static str, io_error: std::io::Error) -> MapError {
    MapError::SyscallError(aya::sys::SyscallError { call, io_error })
}

impl ServiceMaps for KernelMaps {
    fn contents(&self) -> Result<Contents, DataplaneError> {
        let mut slots = FastMap::default();
        for entry in self.services.iter() {
            let (key, slot) = entry.map_err(map_error(names::SERVICES))?;
            slots.insert(SlotKey::from_v4(&key), slot);
        }
        for entry in self.services6.iter().flat_map(HashMap::iter) {
            let (key, slot) = entry.map_err(map_error(names::SERVICES6))?;
            slots.insert(SlotKey::from_v6(&key), slot);
        }
        let mut backends = FastMap::default();
        for entry in self.backends.iter() {
            let (id, backend) = entry.map_err(map_error(names::BACKENDS))?;
            backends.insert(id, BackendEntry::from_v4(&backend));
        }
        for entry in self.backends6.iter().flat_map(HashMap::iter) {
            let (id, backend) = entry.map_err(map_error(names::BACKENDS6))?;
            backends.insert(id, BackendEntry::from_v6(&backend));
        }
        let mut rev_nats = FastMap::default();
        for entry in self.rev_nat.iter() {
            let (id, rev_nat) = entry.map_err(map_error(names::REV_NAT))?;
            rev_nats.insert(id, RevNatEntry::from_v4(&rev_nat));
        }
        for entry in self.rev_nat6.iter().flat_map(HashMap::iter) {
            let (id, rev_nat) = entry.map_err(map_error(names::REV_NAT6))?;
            rev_nats.insert(id, RevNatEntry::from_v6(&rev_nat));
        }
        Contents {
            slots,
            backends,
            rev_nats,
            metas: self
                .meta
                .iter()
                .collect::<Result<_, _>>()
                .map_err(map_error(names::FRONTEND_META))?,
            ranges: self.ranges()?,
            maglev_written: BTreeSet::new(),
        }
        .with_written_tables(|start| {
            self.maglev
                .get(&start, 0)
                .map(|entry| entry.backend_id)
                .map_err(map_error(names::MAGLEV))
        })
    }

    fn put_slot(&mut self, key: SlotKey, slot: ServiceSlot) -> Result<(), MapError> {
        match key.kernel() {
            ByFamily::V4(key) => self.services.insert(key, slot, 0),
            ByFamily::V6(key) => older(&mut self.services6)?.insert(key, slot, 0),
        }
    }

    fn remove_slot(&mut self, key: SlotKey) -> Result<(), MapError> {
        match key.kernel() {
            ByFamily::V4(key) => self.services.remove(&key),
            ByFamily::V6(key) => older(&mut self.services6)?.remove(&key),
        }
    }

    fn put_backend(&mut self, id: u32, backend: BackendEntry) -> Result<(), MapError> {
        match backend.kernel() {
            ByFamily::V4(backend) => self.backends.insert(id, backend, 0),
            ByFamily::V6(backend) => older(&mut self.backends6)?.insert(id, backend, 0),
        }
    }

    fn remove_backend(&mut self, id: u32, family: IpFamily) -> Result<(), MapError> {
        match family {
            IpFamily::IPv4 => self.backends.remove(&id),
            IpFamily::IPv6 => older(&mut self.backends6)?.remove(&id),
        }
    }

    fn put_rev_nat(&mut self, id: u32, rev_nat: RevNatEntry) -> Result<(), MapError> {
        match rev_nat.kernel() {
            ByFamily::V4(rev_nat) => self.rev_nat.insert(id, rev_nat, 0),
            ByFamily::V6(rev_nat) => older(&mut self.rev_nat6)?.insert(id, rev_nat, 0),
        }
    }

    fn remove_rev_nat(&mut self, id: u32, family: IpFamily) -> Result<(), MapError> {
        match family {
            IpFamily::IPv4 => self.rev_nat.remove(&id),
            IpFamily::IPv6 => older(&mut self.rev_nat6)?.remove(&id),
        }
    }

    fn put_meta(&mut self, id: u32, meta: FrontendMeta) -> Result<(), MapError> {
        self.meta.insert(id, meta, 0)
    }

    fn remove_meta(&mut self, id: u32) -> Result<(), MapError> {
        self.meta.remove(&id)
    }

    fn put_range(&mut self, range: RangeEntry) -> Result<(), MapError> {
        self.source_ranges.insert(&range.lpm_key(), 1, 0)
    }

    fn remove_range(&mut self, range: RangeEntry) -> Result<(), MapError> {
        self.source_ranges.remove(&range.lpm_key())
    }

    /// Through the map's memory (MAGLEV_V1 is BPF_F_MMAPABLE): a table of
    /// 16 381 entries is one copy, not 16 381 syscalls. The header that
    /// names the table is written after, by syscall, which orders it after
    /// these stores for every reader.
    fn put_maglev(&mut self, start: u32, entries: &[u32]) -> Result<(), MapError> {
        let values = match &mut self.maglev_values {
            Some(values) => values,
            None => {
                let len = svc_common::maglev::MAX_ENTRIES as usize * MAGLEV_STRIDE;
                let mapped = sys::MappedArray::map(self.maglev.map().fd().as_fd(), len)
                    .map_err(|e| syscall_error("mmap", e))?;
                self.maglev_values.insert(mapped)
            }
        };
        for (index, backend_id) in (start..).zip(entries) {
            values
                .write(index as usize * MAGLEV_STRIDE, &backend_id.to_ne_bytes())
                .map_err(|e| syscall_error("maglev table write", e))?;
        }
        Ok(())
    }

    fn reset_counters(&mut self, rev_nat_id: u32) -> Result<(), MapError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| syscall_error("nr_cpus", e))?;
        let zeros = PerCpuValues::try_from(vec![FrontendCounters::default(); cpus])
            .map_err(|e| syscall_error("per-cpu values", e))?;
        self.frontend_stats.set(rev_nat_id, zeros, 0)
    }

    fn forget_affinities(
        &mut self,
        rev_nat_id: u32,
        keep: Option<&BTreeSet<u32>>,
    ) -> Result<(), MapError> {
        let doomed: Vec<AffinityKey> = self
            .affinity
            .iter()
            .filter_map(Result::ok)
            .filter(|(key, value)| {
                key.rev_nat_id == rev_nat_id
                    && keep.is_none_or(|ids| !ids.contains(&value.backend_id))
            })
            .map(|(key, _)| key)
            .collect();
        for key in doomed {
            match self.affinity.remove(&key) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn next_generation(&mut self) -> Result<(), MapError> {
        let current = self.generation.get(&0, 0)?;
        let next = TablesGeneration {
            generation: current.generation.wrapping_add(1),
        };
        self.generation.set(0, next, 0)
    }
}
