//! Direct server return (`--lb-mode dsr|hybrid`): external traffic to a
//! backend on another node goes there as the client sent it, inside an
//! IPIP header (RFC 2003), and the backend answers the client directly.
//!
//! Why IPIP: it is the smallest encapsulation (20 bytes, so the MSS a
//! client may use drops by only that much), every Linux box and router
//! forwards it as plain IPv4, and it needs no tunnel device: the programs
//! add and strip the header themselves. What the backend's node needs
//! beyond the client's packet rides in the outer header:
//! - its destination is the backend pod's address (routed like any packet
//!   to that pod, so no per-node tunnel address is needed);
//! - its identification field carries the backend's port. RFC 6864 lets
//!   an atomic datagram (DF set, never fragmented, as these are) carry any
//!   value there. So the sender's choice is the whole of it: the backend's
//!   node needs no table that agrees with the sender's (an endpoint one
//!   node learnt a moment before the other is no trouble).
//!
//! The backend's node (its XDP program, [`receive`]) takes the header off
//! and hands the inner packet on as a flow to that backend: translated to
//! it, with conntrack entries that keep the frontend it was sent to (see
//! svc_common's `flow_flags::DELIVERED`), so the backend's replies leave
//! from that frontend, from this node, straight to the client. The same
//! entries serve the flow when the client's packets reach this node
//! directly (an ECMP route moved), which is how a connection survives the
//! loss of the node it came through, with Maglev picking the same backend
//! everywhere.
use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use svc_common::{DropReason, proto, rev_nat_flags};

use crate::{
    csum,
    headers::{
        ETH_HLEN, ETH_P_IP, ETH_PROTO_OFF, IP_DF, IP_MF_OFFSET_MASK, IP_OFF, IPV4_MIN_HLEN,
        IPV4_TTL_AT, Ipv4Header, L4_DPORT_AT, TCP_MIN_HLEN, TCP_SYN, TCPOLEN_MSS, TCPOPT_EOL,
        TCPOPT_MSS, TCPOPT_NOP,
    },
    lb,
    maps::{CONFIG_V1, OUTER_SCRATCH},
    packet::{Ipv4Flow, Packet},
};

/// The outer header's length: a plain IPv4 header.
pub const OUTER_LEN: u16 = IPV4_MIN_HLEN as u16;

/// The TTL of the outer header (the inner packet's own goes down by one
/// here, as a router's does).
const OUTER_TTL: u8 = 64;

/// What the outer header of a packet received by [`receive`] said: the
/// backend the inner packet is for, and this node's frontend it came to;
/// `backend_addr_be` 0 when the packet was not one.
#[derive(Clone, Copy)]
pub struct Delivered {
    pub backend_addr_be: u32,
    pub backend_port_be: u16,
    pub rev_nat_id: u32,
    /// The address replies must leave from when it is not that frontend's
    /// (a NodePort of another node's address), else 0.
    pub kept_addr_be: u32,
}

impl Delivered {
    pub const NONE: Delivered = Delivered {
        backend_addr_be: 0,
        backend_port_be: 0,
        rev_nat_id: 0,
        kept_addr_be: 0,
    };
}

/// This node's address (CONFIG_V1's), the outer source of what it sends
/// by direct server return; None before the agent set it.
#[inline(always)]
pub fn node_address() -> Option<u32> {
    // SAFETY: one field read in place.
    CONFIG_V1
        .get_ptr(0)
        .map(|config| unsafe { (*config).node_addr_be })
        .filter(|addr| *addr != 0)
}

/// Whether external flows of `protocol` to a backend on another node are
/// sent by direct server return on this node.
#[inline(always)]
pub fn used_for(mode: u8, protocol: u8) -> bool {
    mode == svc_common::lb_mode::DSR
        || (mode == svc_common::lb_mode::HYBRID && protocol == proto::TCP)
}

/// An IPIP packet another node sent here by direct server return: its
/// outer header taken off (the packet is then the client's, as it sent
/// it), and what it said. Anything else is left as it is (NONE), also IPIP
/// that is not ours (a tunnel to this node's own address; an inner packet
/// that is no TCP or UDP to a frontend this node knows: a Service
/// address, or a NodePort's port, served on another node's address).
#[inline(always)]
pub fn receive(ctx: &XdpContext) -> Result<Delivered, DropReason> {
    let ether_type: u16 = ctx.read(ETH_PROTO_OFF)?;
    if ether_type != ETH_P_IP.to_be() {
        return Ok(Delivered::NONE);
    }
    let [_ttl, protocol]: [u8; 2] = ctx.read(IP_OFF + IPV4_TTL_AT)?;
    if protocol != proto::IPIP {
        return Ok(Delivered::NONE);
    }
    let outer: Ipv4Header = ctx.read(IP_OFF)?;
    let Some(config) = CONFIG_V1.get(0) else {
        return Ok(Delivered::NONE);
    };
    if outer.version_ihl != 0x45
        || u16::from_be(outer.frag_off_be) & IP_MF_OFFSET_MASK != 0
        || outer.daddr_be == config.node_addr_be
    {
        return Ok(Delivered::NONE);
    }
    // A packet cut short inside is not ours either: the parser after
    // this judges it. (Lengths checked first, then read with `?`: a
    // failed read turned into NONE makes LLVM merge paths the verifier
    // refuses.)
    let inner_off = IP_OFF + IPV4_MIN_HLEN;
    if ctx.len() < inner_off + IPV4_MIN_HLEN {
        return Ok(Delivered::NONE);
    }
    let inner: Ipv4Header = ctx.read(inner_off)?;
    let inner_hlen = usize::from(inner.version_ihl & 0x0f) * 4;
    if inner.version_ihl >> 4 != 4
        || inner_hlen < IPV4_MIN_HLEN
        || (inner.proto != proto::TCP && inner.proto != proto::UDP)
    {
        return Ok(Delivered::NONE);
    }
    let dport_off = inner_off + inner_hlen + L4_DPORT_AT;
    if ctx.len() < dport_off + 2 {
        return Ok(Delivered::NONE);
    }
    let dport_be: u16 = ctx.read(dport_off)?;
    let (header, kept_addr_be) = match lb::frontend_header(inner.daddr_be, dport_be, inner.proto) {
        Some((_, header)) => (header, 0),
        // A NodePort of another node's address: this node serves the same
        // port on its own.
        None => match lb::frontend_header(config.node_addr_be, dport_be, inner.proto) {
            Some((_, header))
                if lb::rev_nat(header.rev_nat_id)
                    .is_some_and(|f| f.flags & rev_nat_flags::LOCAL_ADDRESS != 0) =>
            {
                (header, inner.daddr_be)
            }
            _ => return Ok(Delivered::NONE),
        },
    };
    // The Ethernet header moves up over the outer one, which goes.
    let ethernet: [u8; ETH_HLEN] = ctx.read(0)?;
    ctx.write(usize::from(OUTER_LEN), &ethernet)?;
    // SAFETY: the context pointer the kernel handed us.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, i32::from(OUTER_LEN)) } != 0 {
        return Err(DropReason::RewriteFailed);
    }
    Ok(Delivered {
        backend_addr_be: outer.daddr_be,
        backend_port_be: outer.id_be,
        rev_nat_id: header.rev_nat_id,
        kept_addr_be,
    })
}

/// Puts the outer header in front of a packet for its backend on another
/// node (from `saddr`, this node's address), once route.rs `send` made it
/// ready to leave (its TTL down by one, as a router's; the Ethernet
/// header for the next hop, which stays in front). Assembled in a per-CPU
/// scratch slot: the TC programs' stack has no room for it.
#[inline(always)]
pub fn encapsulate<P: Packet>(
    pkt: &P,
    saddr_be: u32,
    backend_addr_be: u32,
    backend_port_be: u16,
) -> Result<(), DropReason> {
    let [_version_ihl, tos]: [u8; 2] = pkt.read(IP_OFF)?;
    // A GSO packet's segments each get their own length when cut.
    let inner_len = pkt
        .len()
        .saturating_sub(IP_OFF)
        .min(usize::from(u16::MAX - OUTER_LEN)) as u16;
    pkt.push_outer_ipv4(u32::from(OUTER_LEN))?;
    let Some(outer) = OUTER_SCRATCH.get_ptr_mut(0) else {
        return Err(DropReason::RewriteFailed);
    };
    // SAFETY: this CPU's slot, used by this program alone while it runs.
    let outer = unsafe { &mut *outer };
    let length = inner_len + OUTER_LEN;
    outer.version_ihl = 0x45;
    outer.tos = tos;
    outer.tot_len_be = length.to_be();
    // The backend's port: see the module docs.
    outer.id_be = backend_port_be;
    outer.frag_off_be = IP_DF.to_be();
    outer.ttl = OUTER_TTL;
    outer.proto = proto::IPIP;
    outer.saddr_be = saddr_be;
    outer.daddr_be = backend_addr_be;
    let sum = u32::from(u16::from_be_bytes([0x45, tos]))
        + u32::from(length)
        + u32::from(u16::from_be(backend_port_be))
        + u32::from(IP_DF)
        + u32::from(u16::from_be_bytes([OUTER_TTL, proto::IPIP]))
        + csum::address_sum(saddr_be)
        + csum::address_sum(backend_addr_be);
    outer.check = csum::finish(sum);
    pkt.write(IP_OFF, outer)
}

/// How many TCP options [`clamp_mss`] walks before giving up (a SYN's
/// options fit in 40 bytes; stacks put the MSS first).
const MAX_OPTIONS: usize = 10;

/// Lowers the MSS option of a SYN to `max` (if it says more), with the
/// checksum: the client then sends segments that fit the route to the
/// backend's node with the outer header added. A SYN without the option
/// is left alone (its peer assumes 536 bytes, which fit).
#[inline(always)]
pub fn clamp_mss<P: Packet>(pkt: &P, flow: &Ipv4Flow, max: u16) -> Result<(), DropReason> {
    if flow.proto != proto::TCP || flow.tcp_flags & TCP_SYN == 0 {
        return Ok(());
    }
    let end = flow.l4_off + usize::from(flow.l4_hlen);
    let mut at = TCP_MIN_HLEN;
    for _ in 0..MAX_OPTIONS {
        // A constant bound on the offset, for the verifier.
        if at > 60 {
            return Ok(());
        }
        let off = flow.l4_off + at;
        if off + 2 > end {
            return Ok(());
        }
        let [kind, len]: [u8; 2] = pkt.read(off)?;
        match kind {
            TCPOPT_EOL => return Ok(()),
            TCPOPT_NOP => at += 1,
            TCPOPT_MSS if len == TCPOLEN_MSS && off + 4 <= end => {
                let mss_be: u16 = pkt.read(off + 2)?;
                if u16::from_be(mss_be) <= max {
                    return Ok(());
                }
                let new_be = max.to_be();
                // The checksum sums 16-bit words from the header's start:
                // a field at an odd offset counts with its bytes swapped.
                let (old, new) = if at.is_multiple_of(2) {
                    (mss_be, new_be)
                } else {
                    (mss_be.swap_bytes(), new_be.swap_bytes())
                };
                let udp = false;
                pkt.update_l4_csum(
                    flow.l4_csum_off(),
                    u32::from(old),
                    u32::from(new),
                    2,
                    false,
                    udp,
                )?;
                return pkt.write(off + 2, &new_be);
            }
            _ if len < 2 => return Ok(()),
            _ => at += usize::from(len),
        }
    }
    Ok(())
}
