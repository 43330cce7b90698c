//! Connection tracking: a translated flow keeps its backend for its whole
//! life, whatever happens to the Service's backend set meanwhile.
use aya_ebpf::{bindings::BPF_ANY, helpers::bpf_ktime_get_ns};
use svc_common::{Backend, DropReason, Flow, FlowKey, flow_flags};

use crate::{maps::CT_V1, packet::Ipv4Flow};

/// The key of this packet's own direction.
#[inline(always)]
pub fn key_of(flow: &Ipv4Flow) -> FlowKey {
    FlowKey {
        saddr_be: flow.saddr_be,
        daddr_be: flow.daddr_be,
        sport_be: flow.sport_be,
        dport_be: flow.dport_be,
        proto: flow.proto,
        _pad: [0; 3],
    }
}

/// The key replies from `backend` to this packet's sender will carry.
#[inline(always)]
fn reply_key_of(flow: &Ipv4Flow, backend: &Backend) -> FlowKey {
    FlowKey {
        saddr_be: backend.addr_be,
        daddr_be: flow.saddr_be,
        sport_be: backend.port_be,
        dport_be: flow.sport_be,
        proto: flow.proto,
        _pad: [0; 3],
    }
}

/// Looks the packet's direction up and marks the entry as seen now.
#[inline(always)]
pub fn lookup(key: &FlowKey) -> Option<Flow> {
    let entry = CT_V1.get_ptr_mut(key)?;
    // SAFETY: the pointer is valid until the next update of this key; we
    // copy out and write one field, nothing else runs in between.
    unsafe {
        (*entry).last_seen_ns = bpf_ktime_get_ns();
        Some(*entry)
    }
}

/// Records both directions of a new translated flow.
#[inline(always)]
pub fn create(
    flow: &Ipv4Flow,
    backend_id: u32,
    backend: &Backend,
    rev_nat_id: u32,
) -> Result<(), DropReason> {
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let mut entry = Flow {
        backend_id,
        rev_nat_id,
        created_ns: now,
        last_seen_ns: now,
        flags: 0,
        _pad: 0,
    };
    CT_V1
        .insert(key_of(flow), entry, u64::from(BPF_ANY))
        .map_err(|_| DropReason::FlowInsertFailed)?;
    entry.flags = flow_flags::REPLY;
    CT_V1
        .insert(reply_key_of(flow, backend), entry, u64::from(BPF_ANY))
        .map_err(|_| DropReason::FlowInsertFailed)
}
