//! Service maps in memory, for tests without root: they hold what the
//! kernel's would, and fail at a chosen operation.
use std::{collections::BTreeSet, fmt::Write as _};

use aya::maps::MapError;
use std::net::SocketAddr;

use svc_common::{FrontendMeta, ServiceSlot};

use super::{
    DataplaneError, codec,
    entries::{BackendEntry, RevNatEntry, SlotKey},
    maps::{Contents, RangeEntry, ServiceMaps},
};
use crate::{FastMap, model::IpFamily};

#[derive(Clone, Debug, Default)]
pub struct FakeMaps {
    pub contents: Contents,
    /// AFFINITY: (rev_nat_id, client address) -> backend id.
    pub affinities: std::collections::BTreeMap<(u32, u32), u32>,
    /// FRONTEND_STATS packets, by rev_nat_id.
    pub counters: FastMap<u32, u64>,
    pub generation: u64,
    /// MAGLEV_V1's entries that are not 0.
    pub maglev: std::collections::BTreeMap<u32, u32>,
    /// Write operations so far.
    pub ops: usize,
    /// The operation (counted in `ops`) that fails, and its errno.
    pub fail_at: Option<(usize, i32)>,
}

impl FakeMaps {
    /// Counts one write; fails it when it is the chosen one.
    fn write(&mut self) -> Result<(), MapError> {
        let this = self.ops;
        self.ops += 1;
        match self.fail_at {
            Some((at, errno)) if at == this => {
                Err(MapError::SyscallError(aya::sys::SyscallError {
                    call: "fake map operation",
                    io_error: std::io::Error::from_raw_os_error(errno),
                }))
            }
            _ => Ok(()),
        }
    }

    /// The maps' entries as sorted lines, for golden files.
    pub fn render(&self) -> String {
        let mut lines = Vec::new();
        let c = &self.contents;
        let frontend = |key: &SlotKey| {
            format!(
                "{}/{}",
                SocketAddr::new(key.address, u16::from_be(key.port_be)),
                key.proto
            )
        };
        for (key, slot) in &c.slots {
            lines.push(if key.slot == 0 {
                let maglev = if slot.maglev_size != 0 {
                    format!(" maglev {} at {}", slot.maglev_size, slot.maglev_start())
                } else {
                    String::new()
                };
                format!(
                    "services {} #0 header rev_nat {} count {} terminating {} flags {:#x} \
                     affinity {}s{maglev}",
                    frontend(key),
                    slot.rev_nat_id,
                    slot.count,
                    slot.terminating_count,
                    slot.flags,
                    slot.affinity_timeout_s
                )
            } else {
                format!(
                    "services {} #{} backend {}",
                    frontend(key),
                    key.slot,
                    slot.backend_id
                )
            });
        }
        for (key, header) in c
            .slots
            .iter()
            .filter(|(key, h)| key.slot == 0 && h.maglev_size != 0)
        {
            let start = header.maglev_start();
            let mut shares = std::collections::BTreeMap::<u32, usize>::new();
            for index in start..start + u32::from(header.maglev_size) {
                *shares
                    .entry(self.maglev.get(&index).copied().unwrap_or(0))
                    .or_default() += 1;
            }
            let shares: Vec<String> = shares
                .iter()
                .map(|(id, entries)| format!("backend {id} x{entries}"))
                .collect();
            lines.push(format!(
                "maglev {} at {start}: {}",
                frontend(key),
                shares.join(", ")
            ));
        }
        for (id, backend) in &c.backends {
            lines.push(format!(
                "backends {id} {}/{} flags {:#x}",
                SocketAddr::new(backend.address, u16::from_be(backend.port_be)),
                backend.proto,
                backend.flags
            ));
        }
        for (id, rev_nat) in &c.rev_nats {
            lines.push(format!(
                "rev_nat {id} {} flags {:#x}",
                SocketAddr::new(rev_nat.address, u16::from_be(rev_nat.port_be)),
                rev_nat.flags
            ));
        }
        for (id, meta) in &c.metas {
            lines.push(format!(
                "meta {id} {} port {:?} kind {} health check {}",
                codec::meta_text(&meta.service, meta.service_len),
                codec::meta_text(&meta.port_name, meta.port_name_len),
                meta.kind,
                meta.health_check_node_port
            ));
        }
        for range in &c.ranges {
            lines.push(format!("src_ranges {} {range}", range.rev_nat_id));
        }
        for ((rev_nat_id, client), backend) in &self.affinities {
            lines.push(format!(
                "affinity {rev_nat_id} {} backend {backend}",
                codec::addr_from_be(*client)
            ));
        }
        // Lines sort by map, then by their text; ids are small numbers,
        // padded so 10 sorts after 9.
        lines.sort_by_key(|line| {
            line.split(' ')
                .map(|word| match word.parse::<u32>() {
                    Ok(n) => format!("{n:>10}"),
                    Err(_) => word.to_owned(),
                })
                .collect::<Vec<_>>()
        });
        let mut text = String::new();
        for line in lines {
            let _ = writeln!(text, "{line}");
        }
        text
    }
}

fn remove<K: std::hash::Hash + Eq, V>(map: &mut FastMap<K, V>, key: &K) -> Result<(), MapError> {
    map.remove(key).map(|_| ()).ok_or(MapError::KeyNotFound)
}

impl ServiceMaps for FakeMaps {
    fn contents(&self) -> Result<Contents, DataplaneError> {
        self.contents
            .clone()
            .with_written_tables(|start| Ok(self.maglev.get(&start).copied().unwrap_or(0)))
    }

    fn put_slot(&mut self, key: SlotKey, slot: ServiceSlot) -> Result<(), MapError> {
        self.write()?;
        self.contents.slots.insert(key, slot);
        Ok(())
    }

    fn remove_slot(&mut self, key: SlotKey) -> Result<(), MapError> {
        self.write()?;
        remove(&mut self.contents.slots, &key)
    }

    fn put_backend(&mut self, id: u32, backend: BackendEntry) -> Result<(), MapError> {
        self.write()?;
        self.contents.backends.insert(id, backend);
        Ok(())
    }

    fn remove_backend(&mut self, id: u32, family: IpFamily) -> Result<(), MapError> {
        self.write()?;
        match self.contents.backends.get(&id) {
            Some(backend) if IpFamily::of(backend.address) != family => Err(MapError::KeyNotFound),
            _ => remove(&mut self.contents.backends, &id),
        }
    }

    fn put_rev_nat(&mut self, id: u32, rev_nat: RevNatEntry) -> Result<(), MapError> {
        self.write()?;
        self.contents.rev_nats.insert(id, rev_nat);
        Ok(())
    }

    fn remove_rev_nat(&mut self, id: u32, family: IpFamily) -> Result<(), MapError> {
        self.write()?;
        match self.contents.rev_nats.get(&id) {
            Some(rev_nat) if IpFamily::of(rev_nat.address) != family => Err(MapError::KeyNotFound),
            _ => remove(&mut self.contents.rev_nats, &id),
        }
    }

    fn put_meta(&mut self, id: u32, meta: FrontendMeta) -> Result<(), MapError> {
        self.write()?;
        self.contents.metas.insert(id, meta);
        Ok(())
    }

    fn remove_meta(&mut self, id: u32) -> Result<(), MapError> {
        self.write()?;
        remove(&mut self.contents.metas, &id)
    }

    fn put_range(&mut self, range: RangeEntry) -> Result<(), MapError> {
        self.write()?;
        self.contents.ranges.insert(range);
        Ok(())
    }

    fn put_maglev(&mut self, start: u32, entries: &[u32]) -> Result<(), MapError> {
        self.write()?;
        for (index, backend_id) in (start..).zip(entries) {
            self.maglev.insert(index, *backend_id);
        }
        Ok(())
    }

    fn remove_range(&mut self, range: RangeEntry) -> Result<(), MapError> {
        self.write()?;
        if self.contents.ranges.remove(&range) {
            Ok(())
        } else {
            Err(MapError::KeyNotFound)
        }
    }

    fn reset_counters(&mut self, rev_nat_id: u32) -> Result<(), MapError> {
        self.write()?;
        self.counters.insert(rev_nat_id, 0);
        Ok(())
    }

    fn forget_affinities(
        &mut self,
        rev_nat_id: u32,
        keep: Option<&BTreeSet<u32>>,
    ) -> Result<(), MapError> {
        self.write()?;
        self.affinities.retain(|(id, _), backend| {
            *id != rev_nat_id || keep.is_some_and(|ids| ids.contains(backend))
        });
        Ok(())
    }

    fn next_generation(&mut self) -> Result<(), MapError> {
        self.generation += 1;
        Ok(())
    }
}
