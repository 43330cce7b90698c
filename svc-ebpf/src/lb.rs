//! Frontend lookup and backend selection over the slot layout of SERVICES,
//! with sessionAffinity and loadBalancerSourceRanges.
use aya_ebpf::{
    bindings::BPF_ANY,
    btf_maps::lpm_trie::Key,
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_coarse_ns},
};
use svc_common::{
    Affinity, AffinityKey, Backend, DropReason, FrontendKey, RevNat, ServiceSlot, SourceRange,
    frontend_flags, maglev,
};

use crate::maps::{
    AFFINITY_V1, BACKENDS_V1, MAGLEV_V1, REV_NAT_V1, SERVICES_V1, SRC_RANGES_HOST_PREFIX,
    SRC_RANGES_V1, SVC_CIDRS_V1,
};

pub struct Selected {
    pub backend_id: u32,
    pub backend: Backend,
    pub rev_nat_id: u32,
}

pub enum Selection {
    /// The destination is no frontend of ours.
    NotAFrontend,
    /// A frontend with no usable backend.
    Empty {
        drop: bool,
    },
    Backend(Selected),
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
    let key = FrontendKey::new(addr_be, port_be, protocol, 0);
    // SAFETY: copied out at once; the agent replaces values whole.
    let header = unsafe { SERVICES_V1.get(key) }.copied()?;
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
    select_from(key, &header, client_addr_be, client_port_be)
}

/// [`select`] for a frontend already looked up: `key` and `header` as
/// [`frontend_header`] gave them.
#[inline(always)]
pub fn select_from(
    key: FrontendKey,
    header: &ServiceSlot,
    client_addr_be: u32,
    client_port_be: Option<u16>,
) -> Result<Selection, DropReason> {
    if header.flags & frontend_flags::SOURCE_RANGES != 0 && !source_allowed(header, client_addr_be)
    {
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
    let affinity_key = AffinityKey {
        rev_nat_id: header.rev_nat_id,
        client_addr_be,
    };
    // Only frontends with affinity need the time (seconds matter: coarse).
    let now = if header.affinity_timeout_s > 0 {
        // SAFETY: helper without arguments.
        unsafe { bpf_ktime_get_coarse_ns() }
    } else {
        0
    };
    if header.affinity_timeout_s > 0
        && let Some(selected) = remembered(&affinity_key, header, now)
    {
        return Ok(Selection::Backend(selected));
    }
    let hashed = match client_port_be {
        Some(client_port_be) if header.maglev_size != 0 => {
            let hash = maglev::flow_hash(
                client_addr_be,
                key.addr_be,
                client_port_be,
                key.port_be,
                key.proto,
            );
            maglev_entry(header, hash)
        }
        _ => None,
    };
    let backend_id = match hashed {
        Some(backend_id) => backend_id,
        None => {
            // `candidates` <= u16::MAX, so the slot always fits the key's u16.
            // SAFETY: helper without arguments.
            let slot = (1 + unsafe { bpf_get_prandom_u32() } % candidates) as u16;
            // SAFETY: copied out at once.
            unsafe { SERVICES_V1.get(key.with_slot(slot)) }
                .map(|entry| entry.backend_id)
                .ok_or(DropReason::SlotMissing)?
        }
    };
    let backend = backend(backend_id).ok_or(DropReason::SlotMissing)?;
    if header.affinity_timeout_s > 0 {
        let affinity = Affinity {
            backend_id,
            _pad: 0,
            last_used_ns: now,
        };
        // Best effort: without the entry the next flow just picks anew.
        let _ = AFFINITY_V1.insert(affinity_key, affinity, u64::from(BPF_ANY));
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

/// The client's remembered backend, if recent enough and still present.
#[inline(always)]
fn remembered(key: &AffinityKey, header: &ServiceSlot, now: u64) -> Option<Selected> {
    let entry = AFFINITY_V1.get_ptr_mut(key)?;
    // SAFETY: valid until the next update of this key; copied, then one
    // field written.
    let affinity = unsafe { *entry };
    let timeout_ns = u64::from(header.affinity_timeout_s) * 1_000_000_000;
    if now.saturating_sub(affinity.last_used_ns) > timeout_ns {
        return None;
    }
    let backend = backend(affinity.backend_id)?;
    // SAFETY: as above.
    unsafe { (*entry).last_used_ns = now };
    Some(Selected {
        backend_id: affinity.backend_id,
        backend,
        rev_nat_id: header.rev_nat_id,
    })
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
