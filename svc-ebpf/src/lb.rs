//! Frontend lookup and backend selection over the slot layout of SERVICES,
//! with sessionAffinity and loadBalancerSourceRanges, written once for
//! both address families: [`Family`] is what differs (the keys, values and
//! maps), [`Ipv4`] and [`Ipv6`] implement it.
use aya_ebpf::{
    bindings::BPF_ANY,
    btf_maps::lpm_trie::Key,
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_coarse_ns},
};
use svc_common::{
    Affinity, AffinityKey, Backend, Backend6, DropReason, FrontendKey, FrontendKey6, Ipv6Be,
    RevNat, ServiceSlot, SourceRange, frontend_flags, maglev,
};

use crate::maps::{
    AFFINITY_V1, BACKENDS_V1, BACKENDS6_V1, MAGLEV_V1, REV_NAT_V1, SERVICES_V1, SERVICES6_V1,
    SRC_RANGES_HOST_PREFIX, SRC_RANGES_V1, SVC_CIDRS_V1,
};

/// An address family as frontend lookup and backend selection see it.
pub trait Family {
    /// An address, as the family's keys hold it.
    type Addr: Copy;
    /// A SERVICES key of the family.
    type Key: Copy;
    /// A BACKENDS value of the family.
    type Backend: Copy;

    fn key(addr: Self::Addr, port_be: u16, proto: u8, slot: u16) -> Self::Key;
    fn with_slot(key: &Self::Key, slot: u16) -> Self::Key;
    /// The SERVICES entry under `key`, copied (the agent replaces values
    /// whole).
    fn service_slot(key: &Self::Key) -> Option<ServiceSlot>;
    fn backend(backend_id: u32) -> Option<Self::Backend>;
    /// Whether `client` is inside one of the frontend's source ranges.
    fn source_allowed(header: &ServiceSlot, client: Self::Addr) -> bool;
    /// The backend `client` used last within the frontend's affinity
    /// timeout, if any; marks it used at `now`.
    fn remembered(header: &ServiceSlot, client: Self::Addr, now: u64) -> Option<u32>;
    /// Remembers `backend_id` as `client`'s, best effort: without the
    /// entry the next flow just picks anew.
    fn remember(header: &ServiceSlot, client: Self::Addr, backend_id: u32, now: u64);
    /// The Maglev hash of a flow from `client`:`client_port_be` to the
    /// frontend of `key`.
    fn flow_hash(client: Self::Addr, client_port_be: u16, key: &Self::Key) -> u32;
}

/// IPv4: SERVICES_V1, BACKENDS_V1, AFFINITY_V1 and SRC_RANGES_V1.
pub struct Ipv4;

/// IPv6: SERVICES6_V1 and BACKENDS6_V1. The agent writes no IPv6
/// frontend with sessionAffinity or source ranges yet (it leaves them out,
/// saying so), so there is no map for them: a client is never inside a
/// range and nothing is remembered.
pub struct Ipv6;

impl Family for Ipv4 {
    type Addr = u32;
    type Key = FrontendKey;
    type Backend = Backend;

    #[inline(always)]
    fn key(addr: u32, port_be: u16, proto: u8, slot: u16) -> FrontendKey {
        FrontendKey::new(addr, port_be, proto, slot)
    }

    #[inline(always)]
    fn with_slot(key: &FrontendKey, slot: u16) -> FrontendKey {
        key.with_slot(slot)
    }

    #[inline(always)]
    fn service_slot(key: &FrontendKey) -> Option<ServiceSlot> {
        // SAFETY: copied out at once; the agent replaces values whole.
        unsafe { SERVICES_V1.get(*key) }.copied()
    }

    #[inline(always)]
    fn backend(backend_id: u32) -> Option<Backend> {
        backend(backend_id)
    }

    #[inline(always)]
    fn source_allowed(header: &ServiceSlot, client: u32) -> bool {
        source_allowed(header, client)
    }

    #[inline(always)]
    fn remembered(header: &ServiceSlot, client: u32, now: u64) -> Option<u32> {
        let key = AffinityKey {
            rev_nat_id: header.rev_nat_id,
            client_addr_be: client,
        };
        let entry = AFFINITY_V1.get_ptr_mut(key)?;
        // SAFETY: valid until the next update of this key; copied, then
        // one field written.
        let affinity = unsafe { *entry };
        let timeout_ns = u64::from(header.affinity_timeout_s) * 1_000_000_000;
        if now.saturating_sub(affinity.last_used_ns) > timeout_ns {
            return None;
        }
        // SAFETY: as above.
        unsafe { (*entry).last_used_ns = now };
        Some(affinity.backend_id)
    }

    #[inline(always)]
    fn remember(header: &ServiceSlot, client: u32, backend_id: u32, now: u64) {
        let key = AffinityKey {
            rev_nat_id: header.rev_nat_id,
            client_addr_be: client,
        };
        let affinity = Affinity {
            backend_id,
            _pad: 0,
            last_used_ns: now,
        };
        let _ = AFFINITY_V1.insert(key, affinity, u64::from(BPF_ANY));
    }

    #[inline(always)]
    fn flow_hash(client: u32, client_port_be: u16, key: &FrontendKey) -> u32 {
        maglev::flow_hash(client, key.addr_be, client_port_be, key.port_be, key.proto)
    }
}

impl Family for Ipv6 {
    type Addr = Ipv6Be;
    type Key = FrontendKey6;
    type Backend = Backend6;

    #[inline(always)]
    fn key(addr: Ipv6Be, port_be: u16, proto: u8, slot: u16) -> FrontendKey6 {
        FrontendKey6::new(addr, port_be, proto, slot)
    }

    #[inline(always)]
    fn with_slot(key: &FrontendKey6, slot: u16) -> FrontendKey6 {
        key.with_slot(slot)
    }

    #[inline(always)]
    fn service_slot(key: &FrontendKey6) -> Option<ServiceSlot> {
        // SAFETY: copied out at once; the agent replaces values whole.
        unsafe { SERVICES6_V1.get(*key) }.copied()
    }

    #[inline(always)]
    fn backend(backend_id: u32) -> Option<Backend6> {
        // SAFETY: copied out at once.
        unsafe { BACKENDS6_V1.get(backend_id) }.copied()
    }

    #[inline(always)]
    fn source_allowed(_header: &ServiceSlot, _client: Ipv6Be) -> bool {
        false
    }

    #[inline(always)]
    fn remembered(_header: &ServiceSlot, _client: Ipv6Be, _now: u64) -> Option<u32> {
        None
    }

    #[inline(always)]
    fn remember(_header: &ServiceSlot, _client: Ipv6Be, _backend_id: u32, _now: u64) {}

    #[inline(always)]
    fn flow_hash(client: Ipv6Be, client_port_be: u16, key: &FrontendKey6) -> u32 {
        maglev::flow_hash(
            maglev::fold_ipv6(client),
            maglev::fold_ipv6(key.addr),
            client_port_be,
            key.port_be,
            key.proto,
        )
    }
}

pub struct Selected<F: Family = Ipv4> {
    pub backend_id: u32,
    pub backend: F::Backend,
    pub rev_nat_id: u32,
}

pub enum Selection<F: Family = Ipv4> {
    /// The destination is no frontend of ours.
    NotAFrontend,
    /// A frontend with no usable backend.
    Empty {
        drop: bool,
    },
    Backend(Selected<F>),
}

/// Whether `addr_be` is in one of the service CIDRs (SVC_CIDRS_V1): when
/// it is no frontend, no Service serves it (or not on that port), and
/// nothing outside the node will either.
#[inline(always)]
pub fn in_service_cidrs(addr_be: u32) -> bool {
    // SAFETY: a map value, read in place: it is too big to copy onto the
    // stack of the TC programs, which have no room to spare.
    SVC_CIDRS_V1
        .get_ptr(0)
        .is_some_and(|cidrs| unsafe { (*cidrs).contain(addr_be) })
}

#[inline(always)]
pub fn frontend_header(
    addr_be: u32,
    port_be: u16,
    protocol: u8,
) -> Option<(FrontendKey, ServiceSlot)> {
    frontend_header_of::<Ipv4>(addr_be, port_be, protocol)
}

/// The header of the frontend at `addr`, `port_be` and `protocol` of
/// family `F`, with its key.
#[inline(always)]
pub fn frontend_header_of<F: Family>(
    addr: F::Addr,
    port_be: u16,
    protocol: u8,
) -> Option<(F::Key, ServiceSlot)> {
    let key = F::key(addr, port_be, protocol, 0);
    let header = F::service_slot(&key)?;
    Some((key, header))
}

/// Picks a backend for a new flow from `client_addr_be` (port
/// `client_port_be`, when known) to `addr_be`, `port_be` and `protocol`, if
/// they are a frontend's. The client's address is checked against the
/// frontend's source ranges and keys its affinity.
///
/// Ready backends (slots `1..=count`) are chosen uniformly at random: every
/// new flow is independent, so random choice spreads load like kube-proxy's
/// `statistic --mode random` without shared state between CPUs. A Maglev
/// frontend instead takes the entry of its table the flow's 5-tuple hashes
/// to, the same on every node; without a client port (a socket not bound
/// yet) it picks at random. Terminating backends (the next
/// `terminating_count` slots) serve only when no ready one exists. With
/// sessionAffinity a client keeps its backend while it comes back within
/// the timeout and the backend still exists (the agent forgets affinities
/// to backends it removes from a frontend).
#[inline(always)]
pub fn select(
    client_addr_be: u32,
    client_port_be: Option<u16>,
    addr_be: u32,
    port_be: u16,
    protocol: u8,
) -> Result<Selection, DropReason> {
    let Some((key, header)) = frontend_header(addr_be, port_be, protocol) else {
        return Ok(Selection::NotAFrontend);
    };
    select_from::<Ipv4>(key, &header, client_addr_be, client_port_be)
}

/// [`select`] for a frontend already looked up: `key` and `header` as
/// [`frontend_header`] gave them.
#[inline(always)]
pub fn select_from<F: Family>(
    key: F::Key,
    header: &ServiceSlot,
    client: F::Addr,
    client_port_be: Option<u16>,
) -> Result<Selection<F>, DropReason> {
    if header.flags & frontend_flags::SOURCE_RANGES != 0 && !F::source_allowed(header, client) {
        return Err(DropReason::SourceRangeDenied);
    }
    let candidates = if header.count > 0 {
        u32::from(header.count)
    } else {
        u32::from(header.terminating_count)
    };
    if candidates == 0 {
        return Ok(Selection::Empty {
            drop: header.flags & frontend_flags::DROP_WHEN_EMPTY != 0,
        });
    }
    // Only frontends with affinity need the time (seconds matter: coarse).
    let now = if header.affinity_timeout_s > 0 {
        // SAFETY: helper without arguments.
        unsafe { bpf_ktime_get_coarse_ns() }
    } else {
        0
    };
    if header.affinity_timeout_s > 0
        && let Some(backend_id) = F::remembered(header, client, now)
        && let Some(backend) = F::backend(backend_id)
    {
        return Ok(Selection::Backend(Selected {
            backend_id,
            backend,
            rev_nat_id: header.rev_nat_id,
        }));
    }
    let hashed = match client_port_be {
        Some(client_port_be) if header.maglev_size != 0 => {
            maglev_entry(header, F::flow_hash(client, client_port_be, &key))
        }
        _ => None,
    };
    let backend_id = match hashed {
        Some(backend_id) => backend_id,
        None => {
            // `candidates` <= u16::MAX, so the slot always fits the key's u16.
            // SAFETY: helper without arguments.
            let slot = (1 + unsafe { bpf_get_prandom_u32() } % candidates) as u16;
            F::service_slot(&F::with_slot(&key, slot))
                .map(|entry| entry.backend_id)
                .ok_or(DropReason::SlotMissing)?
        }
    };
    let backend = F::backend(backend_id).ok_or(DropReason::SlotMissing)?;
    if header.affinity_timeout_s > 0 {
        F::remember(header, client, backend_id, now);
    }
    Ok(Selection::Backend(Selected {
        backend_id,
        backend,
        rev_nat_id: header.rev_nat_id,
    }))
}

/// The backend id of a Maglev frontend's table entry `hash` names; None
/// for an entry not written (0).
#[inline(always)]
fn maglev_entry(header: &ServiceSlot, hash: u32) -> Option<u32> {
    let index = maglev::entry_index(header.maglev_start(), header.maglev_size, hash);
    let backend_id = MAGLEV_V1.get(index)?.backend_id;
    (backend_id != 0).then_some(backend_id)
}

#[inline(always)]
fn source_allowed(header: &ServiceSlot, saddr_be: u32) -> bool {
    let key = Key::new(
        SRC_RANGES_HOST_PREFIX,
        SourceRange {
            rev_nat_id: header.rev_nat_id,
            addr_be: saddr_be,
        },
    );
    SRC_RANGES_V1.get(&key).is_some()
}

#[inline(always)]
pub fn backend(backend_id: u32) -> Option<Backend> {
    // SAFETY: copied out at once.
    unsafe { BACKENDS_V1.get(backend_id) }.copied()
}

#[inline(always)]
pub fn rev_nat(rev_nat_id: u32) -> Option<RevNat> {
    // SAFETY: copied out at once.
    unsafe { REV_NAT_V1.get(rev_nat_id) }.copied()
}
