//! Frontend lookup and backend selection over the slot layout of SERVICES.
use aya_ebpf::helpers::bpf_get_prandom_u32;
use svc_common::{Backend, DropReason, FrontendKey, RevNat, frontend_flags};

use crate::{
    maps::{BACKENDS_V1, REV_NAT_V1, SERVICES_V1},
    packet::Ipv4Flow,
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

/// Picks a backend for a new flow to `flow`'s destination.
///
/// Ready backends (slots `1..=count`) are chosen uniformly at random: every
/// new flow is independent, so random choice spreads load like kube-proxy's
/// `statistic --mode random` without shared state between CPUs. Terminating
/// backends (the next `terminating_count` slots) serve only when no ready one
/// exists.
#[inline(always)]
pub fn select(flow: &Ipv4Flow) -> Result<Selection, DropReason> {
    let key = FrontendKey::new(flow.daddr_be, flow.dport_be, flow.proto, 0);
    // SAFETY: copied out at once; the agent replaces values whole.
    let Some(header) = (unsafe { SERVICES_V1.get(key) }).copied() else {
        return Ok(Selection::NotAFrontend);
    };
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
    // `candidates` <= u16::MAX, so the slot always fits the key's u16.
    // SAFETY: helper without arguments.
    let slot = (1 + unsafe { bpf_get_prandom_u32() } % candidates) as u16;
    // SAFETY: copied out at once.
    let backend_id = unsafe { SERVICES_V1.get(key.with_slot(slot)) }
        .map(|entry| entry.backend_id)
        .ok_or(DropReason::SlotMissing)?;
    let backend = backend(backend_id).ok_or(DropReason::SlotMissing)?;
    Ok(Selection::Backend(Selected {
        backend_id,
        backend,
        rev_nat_id: header.rev_nat_id,
    }))
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
