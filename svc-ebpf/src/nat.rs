//! Address and port rewrites on socket buffers. The kernel helpers update
//! the IP and L4 checksums incrementally, and handle checksum-offloaded
//! (CHECKSUM_PARTIAL) packets correctly, which a hand update would not.
use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};
use svc_common::{DropReason, proto};

use crate::packet::{IP_CSUM_OFF, IP_DADDR_OFF, IP_SADDR_OFF, Ipv4Flow};

/// DNAT: destination becomes the backend.
#[inline(always)]
pub fn rewrite_destination(
    ctx: &TcContext,
    flow: &Ipv4Flow,
    addr_be: u32,
    port_be: u16,
) -> Result<(), DropReason> {
    rewrite_addr(ctx, flow, IP_DADDR_OFF, flow.daddr_be, addr_be)?;
    rewrite_port(ctx, flow, flow.l4_off + 2, flow.dport_be, port_be)
}

/// Reverse NAT: the source of a reply becomes the frontend again.
#[inline(always)]
pub fn rewrite_source(
    ctx: &TcContext,
    flow: &Ipv4Flow,
    addr_be: u32,
    port_be: u16,
) -> Result<(), DropReason> {
    rewrite_addr(ctx, flow, IP_SADDR_OFF, flow.saddr_be, addr_be)?;
    rewrite_port(ctx, flow, flow.l4_off, flow.sport_be, port_be)
}

#[inline(always)]
fn l4_flags(flow: &Ipv4Flow) -> u64 {
    if flow.proto == proto::UDP {
        // A UDP checksum of 0 means "none" and must stay 0.
        u64::from(BPF_F_MARK_MANGLED_0)
    } else {
        0
    }
}

#[inline(always)]
fn rewrite_addr(
    ctx: &TcContext,
    flow: &Ipv4Flow,
    offset: usize,
    old_be: u32,
    new_be: u32,
) -> Result<(), DropReason> {
    if old_be == new_be {
        return Ok(());
    }
    // The address is part of the L4 pseudo header.
    let l4 = l4_flags(flow) | u64::from(BPF_F_PSEUDO_HDR) | 4;
    ctx.l4_csum_replace(flow.l4_csum_off(), u64::from(old_be), u64::from(new_be), l4)
        .map_err(|_| DropReason::RewriteFailed)?;
    ctx.l3_csum_replace(IP_CSUM_OFF, u64::from(old_be), u64::from(new_be), 4)
        .map_err(|_| DropReason::RewriteFailed)?;
    ctx.store(offset, &new_be, 0)
        .map_err(|_| DropReason::RewriteFailed)
}

#[inline(always)]
fn rewrite_port(
    ctx: &TcContext,
    flow: &Ipv4Flow,
    offset: usize,
    old_be: u16,
    new_be: u16,
) -> Result<(), DropReason> {
    if old_be == new_be {
        return Ok(());
    }
    let l4 = l4_flags(flow) | 2;
    ctx.l4_csum_replace(flow.l4_csum_off(), u64::from(old_be), u64::from(new_be), l4)
        .map_err(|_| DropReason::RewriteFailed)?;
    ctx.store(offset, &new_be, 0)
        .map_err(|_| DropReason::RewriteFailed)
}
