//! The conntrack collector: removes the entries whose timeout has passed
//! (svc_common::flow_timeout_ns, the rule the programs apply too) from both
//! conntrack tables, so table space and NAT ports come back without waiting
//! for a packet to find them or for the LRU to evict, and counts what is
//! left for /metrics.
//!
//! An entry judged expired is taken out of its table in one step
//! (BPF_MAP_LOOKUP_AND_DELETE_ELEM) and put back if it changed since it
//! was read: between the read and the removal a packet may have ended the
//! expired flow and started a new one on the same tuple, whose entry a
//! plain removal would have deleted (its next packet would then have been
//! balanced again, or its reply sent out untranslated). Between the take
//! and the put-back that flow has no entry: a TCP key is marked in
//! CT_COLLECT first (svc_common::CollectMark), and the programs hold back
//! (drop, to be sent again) a segment of a connection under way that
//! finds no entry for a key marked a moment ago, instead of balancing it
//! to another backend.
use std::{os::fd::AsFd as _, path::Path};

use aya::maps::{HashMap, IterableMap as _, MapData};
use svc_common::{CollectMark, Flow, FlowKey, flow_flags, flow_timeout_ns, names, proto};

use super::{DataplaneError, maps, open_pinned_map, sys};

/// Both conntrack tables, opened from an agent's pins.
pub struct Conntrack {
    established: HashMap<MapData, FlowKey, Flow>,
    new: HashMap<MapData, FlowKey, Flow>,
    marks: HashMap<MapData, FlowKey, CollectMark>,
}

/// What one collection found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// Entries (one per direction) of flows not established yet.
    pub new: u64,
    /// Entries of established flows, not closing.
    pub established: u64,
    /// Entries after a FIN or RST, in either table.
    pub closing: u64,
    /// Source NAT ports held (reply entries of SNATed flows).
    pub nat_ports: u64,
    /// Entries removed by this collection.
    pub collected: u64,
}

impl Conntrack {
    pub fn open_pinned(pin_dir: &Path) -> Result<Self, DataplaneError> {
        fn open<V: aya::Pod>(
            pin_dir: &Path,
            name: &'static str,
        ) -> Result<HashMap<MapData, FlowKey, V>, DataplaneError> {
            HashMap::try_from(open_pinned_map(pin_dir, name)?).map_err(maps::map_error(name))
        }
        Ok(Self {
            established: open(pin_dir, names::CT)?,
            new: open(pin_dir, names::CT_NEW)?,
            marks: open(pin_dir, names::CT_COLLECTING)?,
        })
    }

    /// Removes every entry idle past its timeout at `now_ns` (the coarse
    /// monotonic clock the programs stamp entries with) and counts the
    /// rest.
    pub fn collect(&mut self, now_ns: u64) -> Result<Census, DataplaneError> {
        let mut census = Census::default();
        for (table, name, established) in [
            (&self.established, names::CT, true),
            (&self.new, names::CT_NEW, false),
        ] {
            let map_error = |source: std::io::Error| DataplaneError::Map {
                name,
                source: Box::new(aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                    call: "bpf_map_lookup_and_delete_elem",
                    io_error: source,
                })),
            };
            // Keys first: removing while the kernel walks the hash table
            // would restart the walk.
            let keys: Vec<FlowKey> = table.keys().filter_map(Result::ok).collect();
            for key in keys {
                // Gone meanwhile (a packet found it expired, or it moved).
                let Ok(entry) = table.get(&key, 0) else {
                    continue;
                };
                let idle = now_ns.saturating_sub(entry.last_seen_ns);
                if idle > flow_timeout_ns(entry.flags, key.proto, established) {
                    if key.proto == proto::TCP {
                        // Before the take: a segment that finds the key
                        // empty from then on is held back (see above).
                        // Stamped now, not with the pass's `now_ns`: a
                        // long pass would hand out marks already old.
                        let mark = CollectMark {
                            marked_ns: coarse_now_ns(),
                        };
                        self.marks
                            .insert(key, mark, sys::ANY)
                            .map_err(maps::map_error(names::CT_COLLECTING))?;
                    }
                    let fd = table.map().fd().as_fd();
                    let mut taken = Flow::default();
                    let key_bytes = sys::bytes_of(&key);
                    if !sys::take(fd, key_bytes, sys::bytes_of_mut(&mut taken))
                        .map_err(map_error)?
                    {
                        continue;
                    }
                    if taken == entry {
                        census.collected += 1;
                        continue;
                    }
                    // A packet changed it since the read: not ours to end.
                    // Put back unless a packet made another there since.
                    match sys::update(fd, key_bytes, sys::bytes_of(&taken), sys::NOEXIST) {
                        Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
                            return Err(map_error(e));
                        }
                        _ => {}
                    }
                    continue;
                }
                if entry.flags & flow_flags::CLOSING != 0 {
                    census.closing += 1;
                } else if established {
                    census.established += 1;
                } else {
                    census.new += 1;
                }
                if entry.flags & (flow_flags::REPLY | flow_flags::SNAT)
                    == flow_flags::REPLY | flow_flags::SNAT
                {
                    census.nat_ports += 1;
                }
            }
        }
        Ok(census)
    }
}

/// The clock conntrack entries are stamped with: the kernel's coarse
/// monotonic clock (bpf_ktime_get_coarse_ns).
pub fn coarse_now_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the struct it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) };
    (now.tv_sec as u64) * 1_000_000_000 + now.tv_nsec as u64
}
