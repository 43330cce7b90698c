//! Routing a translated packet out by the program itself. Needed where the
//! translation makes the source one of this node's own addresses (SNAT to
//! the node, replies from a NodePort): the stack drops forwarded packets
//! with a local source as martians. It also skips the stack's routing, so
//! it is the faster path wherever it applies.
//!
//! The route is looked up before the packet is rewritten: XDP cannot
//! resolve an unknown next hop, so it leaves such a packet untouched for
//! the TC program on the same NIC, which can (bpf_redirect_neigh).
use aya_ebpf::bindings::{
    BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
    bpf_fib_lookup,
};
use svc_common::{DropReason, proto};

use crate::{
    action::{Action, Verdict},
    headers::{ETH_DEST_OFF, ETH_SOURCE_OFF, IP_CSUM_OFF, IP_OFF, IP_TTL_OFF},
    maps::{FIB_SCRATCH, POD_IFACES_V1},
    packet::{Ipv4Flow, Packet},
};

const AF_INET: u8 = 2;

const _: () = assert!(size_of::<bpf_fib_lookup>().is_multiple_of(8));

pub enum Route {
    /// No usable route: leave it to the stack.
    Stack,
    /// Next hop known: these MAC addresses, out of `ifindex`.
    Resolved {
        ifindex: u32,
        smac: [u8; 6],
        dmac: [u8; 6],
    },
    /// Route known, next hop's MAC address not yet.
    Unresolved { ifindex: u32 },
    /// Route known, but the packet exceeds its MTU and may not be
    /// fragmented: it is answered, not sent (see [`too_big`]).
    TooBig { mtu: u16 },
}

impl Route {
    /// Whether a program of this kind can send the packet this way; when it
    /// cannot, it must pass the packet on untouched (to the TC program).
    /// Without any route the packet is translated and left to the stack,
    /// which knows best what to do with it.
    #[inline(always)]
    pub fn usable_by<P: Packet>(&self, pkt: &P) -> bool {
        match self {
            Route::Unresolved { .. } => P::RESOLVES_NEIGHBOURS,
            Route::Resolved { ifindex, .. } => P::SENDS_ANYWHERE || pkt.listed_target(*ifindex),
            Route::Stack | Route::TooBig { .. } => true,
        }
    }
}

/// The route a translated packet from `saddr` to `daddr` will take, or
/// None when this program cannot send it that way and must pass it on
/// untouched. `outer`: the length of the IPIP header it is sent inside
/// (see tunnel.rs), or 0; too big for the route, it gets the MTU it must
/// fit without that header.
#[inline(always)]
pub fn plan<P: Packet>(
    pkt: &P,
    saddr_be: u32,
    daddr_be: u32,
    flow: &Ipv4Flow,
    outer: u16,
) -> Option<Route> {
    let protocol = if outer != 0 { proto::IPIP } else { flow.proto };
    let len = wire_len(pkt, flow).saturating_add(outer);
    let route = match lookup(pkt, saddr_be, daddr_be, protocol, len) {
        // Fragmenting is the stack's job.
        Route::TooBig { .. } if !flow.dont_fragment => Route::Stack,
        Route::TooBig { mtu } => Route::TooBig {
            mtu: mtu.saturating_sub(outer),
        },
        route => route,
    };
    route.usable_by(pkt).then_some(route)
}

/// Packets up to this size skip the path MTU check of [`too_big`]: no link
/// of a node network is smaller (IPv6 requires 1280 of every link), and the
/// route lookup costs ~40 ns.
const ALWAYS_FITS: u16 = 1280;

/// The MTU a translated packet the stack is to forward would exceed, when
/// its sender forbade fragmenting it. Left to the stack, it would be
/// dropped with an ICMP error about the translated packet, which the
/// sender cannot match to its socket: path MTU discovery would fail.
#[inline(always)]
pub fn too_big<P: Packet>(pkt: &P, flow: &Ipv4Flow, saddr_be: u32, daddr_be: u32) -> Option<u16> {
    if !may_be_too_big(pkt, flow) {
        return None;
    }
    match lookup(pkt, saddr_be, daddr_be, flow.proto, wire_len(pkt, flow)) {
        Route::TooBig { mtu } => Some(mtu),
        _ => None,
    }
}

/// Whether the packet's TTL runs out here: it arrived with 1 or less and
/// this node forwards it (translated, from `saddr` to `daddr`), by the
/// program's `route` or, without one, by the stack's, looked up for such
/// packets only. A packet for this node itself does not expire.
#[inline(always)]
pub fn expires<P: Packet>(
    pkt: &P,
    flow: &Ipv4Flow,
    route: Option<&Route>,
    saddr_be: u32,
    daddr_be: u32,
) -> bool {
    if flow.ttl > 1 {
        return false;
    }
    match route {
        Some(Route::Stack) => false,
        Some(_) => true,
        None => !matches!(
            lookup(pkt, saddr_be, daddr_be, flow.proto, wire_len(pkt, flow)),
            Route::Stack
        ),
    }
}

/// Whether [`too_big`] has a route to look up for this packet: it forbids
/// fragmenting and is bigger than every link.
#[inline(always)]
pub fn may_be_too_big<P: Packet>(pkt: &P, flow: &Ipv4Flow) -> bool {
    flow.dont_fragment && wire_len(pkt, flow) > ALWAYS_FITS
}

/// The length of the IP packets this one leaves as, which the route's MTU
/// must fit: itself, or for a GSO packet each segment the kernel will cut
/// it into. (bpf_fib_lookup checks the length it is given, GSO or not.)
#[inline(always)]
fn wire_len<P: Packet>(pkt: &P, flow: &Ipv4Flow) -> u16 {
    match pkt.gso_size() {
        0 => flow.ip_len,
        size => {
            let headers = (flow.l4_off - IP_OFF) as u32 + u32::from(flow.l4_hlen);
            (headers + size).min(u32::from(flow.ip_len)) as u16
        }
    }
}

/// The MTU of the route from `saddr` to `daddr`: asked with the largest
/// length, which no MTU fits. None without a route.
#[inline(always)]
pub fn mtu<P: Packet>(pkt: &P, saddr_be: u32, daddr_be: u32, protocol: u8) -> Option<u16> {
    match lookup(pkt, saddr_be, daddr_be, protocol, u16::MAX) {
        Route::TooBig { mtu } => Some(mtu),
        _ => None,
    }
}

/// [`plan`] for any IP protocol and length, fragmenting left to the stack.
#[inline(always)]
pub fn plan_raw<P: Packet>(
    pkt: &P,
    saddr_be: u32,
    daddr_be: u32,
    protocol: u8,
    ip_len: u16,
) -> Option<Route> {
    let route = match lookup(pkt, saddr_be, daddr_be, protocol, ip_len) {
        Route::TooBig { .. } => Route::Stack,
        route => route,
    };
    route.usable_by(pkt).then_some(route)
}

/// The route of a packet from `saddr` to `daddr` (its addresses after
/// translation). The lookup's 64-byte argument lives in a per-CPU scratch
/// slot (FIB_SCRATCH), not on the BPF stack, which has no room left for
/// it beside the rest of the program.
#[inline(always)]
fn lookup<P: Packet>(pkt: &P, saddr_be: u32, daddr_be: u32, protocol: u8, ip_len: u16) -> Route {
    let Some(params) = FIB_SCRATCH.get_ptr_mut(0) else {
        return Route::Stack;
    };
    // Zeroed as eight word stores: zeroing it any other way (`zeroed()`,
    // a zeroed array of words) compiles to a call to a byte-loop memset
    // subprogram, ~200 instructions on every routed packet; volatile
    // stores cannot be merged into one.
    let words = params.cast::<u64>();
    for i in 0..size_of::<bpf_fib_lookup>() / 8 {
        // SAFETY: within the map value, which is 8-byte aligned.
        unsafe { words.add(i).write_volatile(0) };
    }
    // SAFETY: all 64 bytes are written (zero) above, every field of
    // bpf_fib_lookup is a plain integer or a union of them, so all-zero is
    // a valid value; the slot is this CPU's, used by this program alone
    // while it runs.
    let params = unsafe { &mut *params };
    params.family = AF_INET;
    params.l4_protocol = protocol;
    params.__bindgen_anon_1.tot_len = ip_len;
    params.ifindex = pkt.ingress_ifindex();
    params.__bindgen_anon_3.ipv4_src = saddr_be;
    params.__bindgen_anon_4.ipv4_dst = daddr_be;
    match pkt.fib_lookup(params) {
        ret if ret == i64::from(BPF_FIB_LKUP_RET_SUCCESS) => Route::Resolved {
            ifindex: params.ifindex,
            smac: params.smac,
            dmac: params.dmac,
        },
        ret if ret == i64::from(BPF_FIB_LKUP_RET_NO_NEIGH) => Route::Unresolved {
            ifindex: params.ifindex,
        },
        // SAFETY: the kernel sets mtu_result (in place of tot_len) with
        // this answer; both are plain u16s.
        ret if ret == i64::from(BPF_FIB_LKUP_RET_FRAG_NEEDED) => Route::TooBig {
            mtu: unsafe { params.__bindgen_anon_1.mtu_result },
        },
        _ => Route::Stack,
    }
}

/// `ifindex` as a value of its own, for XDP: where several ways into the
/// NIC program's `finish` meet, LLVM widens the register that holds a
/// route's ifindex before it knows the route has one, and on another way
/// that register holds a pointer, which the verifier refuses to shift.
/// (The TC programs have no stack for the slot, and no such merge.)
#[inline(always)]
fn settled<P: Packet>(ifindex: u32) -> u32 {
    if P::SPARE_STACK {
        core::hint::black_box(ifindex)
    } else {
        ifindex
    }
}

/// Sends the (already translated) packet along `route`: Ethernet header
/// rewritten and the TTL decremented, as a router must. A TTL about to
/// expire goes to the stack (a flow's packet is answered before it gets
/// here, see flow.rs; what remains are ICMP errors being translated).
#[inline(always)]
pub fn send<P: Packet>(pkt: &P, route: Route, protocol: u8) -> Result<Action, DropReason> {
    let [ttl, _protocol]: [u8; 2] = pkt.read(IP_TTL_OFF)?;
    if ttl <= 1 {
        return Ok(Action::PASS);
    }
    let action = match route {
        // (A packet too big to send is answered before it gets here: see
        // flow.rs.)
        Route::Stack | Route::TooBig { .. } => return Ok(Action::PASS),
        Route::Resolved {
            ifindex,
            smac,
            dmac,
        } => {
            pkt.write(ETH_DEST_OFF, &dmac)?;
            pkt.write(ETH_SOURCE_OFF, &smac)?;
            Action::redirect(settled::<P>(ifindex))
        }
        Route::Unresolved { ifindex } => Action::redirect_neigh(settled::<P>(ifindex)),
    };
    let old = u16::from_ne_bytes([ttl, protocol]);
    let new = u16::from_ne_bytes([ttl - 1, protocol]);
    pkt.update_l3_csum(IP_CSUM_OFF, u32::from(old), u32::from(new), 2)?;
    pkt.write(IP_TTL_OFF, &(ttl - 1))?;
    Ok(action)
}

/// A packet the NIC's XDP program translated and passed to the stack (see
/// Packet::mark_translated), now at the TC program behind it: when its
/// route leads into a pod's veth (POD_IFACES_V1), it goes into the pod
/// straight, past the node's IP stack (forwarding, netfilter, the veth's
/// transmit queue), its MAC addresses and TTL set as the stack would have.
/// Anything else goes to the stack, without a second look-up: XDP has
/// done that work.
#[inline(always)]
pub fn into_pod<P: Packet>(pkt: &P, flow: &Ipv4Flow) -> Result<Action, DropReason> {
    let Some(route @ (Route::Resolved { ifindex, .. } | Route::Unresolved { ifindex })) =
        plan(pkt, flow.saddr_be, flow.daddr_be, flow, 0)
    else {
        return Ok(Action::PASS);
    };
    if POD_IFACES_V1.get_ptr(ifindex).is_none() {
        return Ok(Action::PASS);
    }
    // The pod's device takes it as addressed to itself whatever its MAC
    // addresses (bpf_redirect_peer scrubs it so): an unresolved neighbour
    // does not hold it back.
    Ok(match send(pkt, route, flow.proto)?.verdict() {
        // A TTL about to run out: the stack answers it.
        Verdict::Pass => Action::PASS,
        _ => Action::redirect_peer(ifindex),
    })
}
