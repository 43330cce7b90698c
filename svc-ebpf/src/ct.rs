//! Connection tracking: a translated flow keeps its backend (and its source
//! NAT port) for its whole life, whatever happens to the Service's backend
//! set meanwhile. Idle entries expire by protocol and state; the LRU map
//! evicts the oldest when full.
use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::{bpf_get_prandom_u32, bpf_jiffies64, bpf_ktime_get_coarse_ns},
};
use svc_common::{Backend, DropReason, Flow, FlowKey, flow_flags, flow_timeouts, proto};

use crate::{
    maps::{CLOCK_V1, CT_V1},
    packet::{Ipv4Flow, TCP_FIN, TCP_RST},
};

/// How many ports are tried before SNAT gives up on a flow.
const NAT_PORT_TRIES: u32 = 32;

/// Flow timestamps need second, not nanosecond, precision: the coarse
/// clock, which only moves at the timer tick. Even that is a helper call
/// costing ~10 ns per packet, so each CPU keeps the value it read last with
/// the jiffy it read it in (jiffies64 is a plain load: the verifier inlines
/// it) and reads the clock again only once the tick has moved. A read just
/// as the tick moves may keep the previous tick's time for one tick: well
/// under the second that matters here.
#[inline(always)]
fn now() -> u64 {
    // SAFETY: helper without arguments.
    let jiffy = unsafe { bpf_jiffies64() };
    let Some(cached) = CLOCK_V1.get_ptr_mut(0) else {
        // SAFETY: helper without arguments.
        return unsafe { bpf_ktime_get_coarse_ns() };
    };
    // SAFETY: per-CPU slot, only this CPU uses it while we run.
    unsafe {
        if (*cached).jiffy != jiffy || (*cached).ns == 0 {
            (*cached).ns = bpf_ktime_get_coarse_ns();
            (*cached).jiffy = jiffy;
        }
        (*cached).ns
    }
}

/// last_seen is rewritten at most this often: a write on every packet
/// would keep bouncing the entry's cache line between CPUs.
const TOUCH_EVERY_NS: u64 = 1_000_000_000;

/// A conntrack key. Built by assigning into an all-zero constant: a struct
/// literal's `_pad: [0; 3]` (3 unaligned bytes) compiles to a call to a
/// memset subprogram, on every packet.
#[inline(always)]
pub fn flow_key(saddr_be: u32, daddr_be: u32, sport_be: u16, dport_be: u16, proto: u8) -> FlowKey {
    const EMPTY: FlowKey = FlowKey {
        saddr_be: 0,
        daddr_be: 0,
        sport_be: 0,
        dport_be: 0,
        proto: 0,
        _pad: [0; 3],
    };
    let mut key = EMPTY;
    key.saddr_be = saddr_be;
    key.daddr_be = daddr_be;
    key.sport_be = sport_be;
    key.dport_be = dport_be;
    key.proto = proto;
    key
}

/// The key of this packet's own direction.
#[inline(always)]
pub fn key_of(flow: &Ipv4Flow) -> FlowKey {
    flow_key(
        flow.saddr_be,
        flow.daddr_be,
        flow.sport_be,
        flow.dport_be,
        flow.proto,
    )
}

#[inline(always)]
fn timeout_ns(entry: &Flow, protocol: u8) -> u64 {
    if protocol != proto::TCP {
        flow_timeouts::UDP_NS
    } else if entry.flags & flow_flags::CLOSING != 0 {
        flow_timeouts::TCP_CLOSING_NS
    } else {
        flow_timeouts::TCP_ESTABLISHED_NS
    }
}

/// Looks the packet's direction up. A live entry is marked seen now (and
/// closing on FIN/RST); an expired one is removed and reported as absent.
#[inline(always)]
pub fn lookup(key: &FlowKey, flow: &Ipv4Flow) -> Option<Flow> {
    let entry = CT_V1.get_ptr_mut(key)?;
    let now = now();
    // SAFETY: the pointer is valid until the next update of this key; we
    // copy out and write fields, nothing else runs in between on this CPU.
    unsafe {
        let mut current = *entry;
        if now.saturating_sub(current.last_seen_ns) > timeout_ns(&current, flow.proto) {
            let _ = CT_V1.remove(key);
            return None;
        }
        if now.saturating_sub(current.last_seen_ns) > TOUCH_EVERY_NS {
            current.last_seen_ns = now;
            (*entry).last_seen_ns = now;
        }
        if flow.tcp_flags & (TCP_FIN | TCP_RST) != 0 && current.flags & flow_flags::CLOSING == 0 {
            current.flags |= flow_flags::CLOSING;
            (*entry).flags = current.flags;
        }
        Some(current)
    }
}

/// Source NAT for a new flow: the address it gets, and the port range.
pub struct Snat {
    pub addr_be: u32,
    pub port_min: u16,
    pub port_max: u16,
}

/// What a new flow was given.
pub struct Created {
    /// The source port after SNAT (network order); unchanged without SNAT.
    pub nat_port_be: u16,
}

/// Records both directions of a new translated flow. With `snat_addr`, the
/// flow's source becomes that address and a port no other flow to the same
/// backend uses (the client's own port when free).
#[inline(always)]
pub fn create(
    flow: &Ipv4Flow,
    backend_id: u32,
    backend: &Backend,
    rev_nat_id: u32,
    snat: Option<Snat>,
) -> Result<Created, DropReason> {
    let now = now();
    let mut reply = Flow {
        backend_id,
        rev_nat_id,
        created_ns: now,
        last_seen_ns: now,
        backend_addr_be: backend.addr_be,
        backend_port_be: backend.port_be,
        _pad: 0,
        nat_addr_be: 0,
        nat_port_be: 0,
        flags: flow_flags::REPLY,
    };
    let mut reply_key = flow_key(
        backend.addr_be,
        flow.saddr_be,
        backend.port_be,
        flow.sport_be,
        flow.proto,
    );
    let mut forward = Flow { flags: 0, ..reply };

    let nat_port_be = match snat {
        None => {
            CT_V1
                .insert(reply_key, reply, u64::from(BPF_ANY))
                .map_err(|_| DropReason::FlowInsertFailed)?;
            flow.sport_be
        }
        Some(snat) => {
            reply.flags |= flow_flags::SNAT;
            reply.nat_addr_be = flow.saddr_be;
            reply.nat_port_be = flow.sport_be;
            reply_key.daddr_be = snat.addr_be;
            let port_be = claim_port(&mut reply_key, &reply, flow.sport_be, &snat)?;
            forward.flags |= flow_flags::SNAT;
            forward.nat_addr_be = snat.addr_be;
            forward.nat_port_be = port_be;
            port_be
        }
    };
    CT_V1
        .insert(key_of(flow), forward, u64::from(BPF_ANY))
        .map_err(|_| DropReason::FlowInsertFailed)?;
    Ok(Created { nat_port_be })
}

/// Claims a source port for an SNATed flow by inserting its reply entry with
/// BPF_NOEXIST: the insert itself is the atomic test-and-set, so two flows
/// (on any CPU) can never share a (backend, node address, port) triple.
#[inline(always)]
fn claim_port(
    reply_key: &mut FlowKey,
    reply: &Flow,
    preferred_be: u16,
    snat: &Snat,
) -> Result<u16, DropReason> {
    let min = u32::from(snat.port_min);
    let span = u32::from(snat.port_max).saturating_sub(min) + 1;
    let mut port = u16::from_be(preferred_be);
    for _ in 0..NAT_PORT_TRIES {
        if u32::from(port) >= min && u32::from(port) < min + span {
            reply_key.dport_be = port.to_be();
            if CT_V1
                .insert(*reply_key, *reply, u64::from(BPF_NOEXIST))
                .is_ok()
            {
                return Ok(port.to_be());
            }
        }
        // SAFETY: helper without arguments.
        port = (min + unsafe { bpf_get_prandom_u32() } % span) as u16;
    }
    Err(DropReason::NatPortsExhausted)
}
