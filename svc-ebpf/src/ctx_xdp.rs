//! [`Packet`] for XDP frames: direct, bounds-checked access and RFC 1624
//! checksum updates (there are no checksum helpers for XDP, and frames at
//! XDP carry complete checksums).
use aya_ebpf::{
    bindings::bpf_fib_lookup,
    helpers::{bpf_fib_lookup, bpf_xdp_adjust_head, bpf_xdp_adjust_meta, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use svc_common::{DropReason, XDP_TARGETS_KNOWN, proto};

use crate::{
    csum,
    headers::{
        ETH_HLEN, IP_CSUM_OFF, IP_SADDR_OFF, TCP_CSUM_AT, UDP_CSUM_AT, UDP_HLEN,
        XDP_META_TRANSLATED,
    },
    maps::XDP_TARGETS_V1,
    packet::{Ipv4Flow, Packet, SummedRewrite},
};

/// data and data_end, read afresh. Volatile loads: LLVM then knows nothing
/// linking one access's bounds check to another's, so it cannot drop a check
/// as implied by an earlier one, which the verifier (tracking only each
/// pointer's own proven range) would reject. Every access keeps its own
/// check, at the price of two loads from the context, and nothing else.
#[inline(always)]
fn bounds(ctx: &XdpContext) -> (usize, usize) {
    // SAFETY: `ctx` points at the xdp_md the kernel handed us.
    unsafe {
        let md = ctx.ctx;
        (
            core::ptr::read_volatile(&(*md).data) as usize,
            core::ptr::read_volatile(&(*md).data_end) as usize,
        )
    }
}

#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, DropReason> {
    let (start, end) = bounds(ctx);
    // The verifier needs this comparison against data_end before any access.
    if start + offset + size_of::<T>() > end {
        return Err(DropReason::Malformed);
    }
    Ok((start + offset) as *mut T)
}

#[inline(always)]
fn field_bytes(value: u32, size: u8) -> [u8; 4] {
    if size == 4 {
        value.to_ne_bytes()
    } else {
        let b = (value as u16).to_ne_bytes();
        [b[0], b[1], 0, 0]
    }
}

/// The L4 checksum `current` with `change` (see [`csum::change`]) folded
/// in, or None to leave it. `udp`: a zero checksum means "none" and stays
/// so, and a computed zero is sent as 0xffff.
#[inline(always)]
fn updated_l4(current: [u8; 2], change: u32, udp: bool) -> Option<[u8; 2]> {
    if udp && current == [0, 0] {
        // No checksum, and none to keep.
        return None;
    }
    let updated = csum::apply(current, change);
    Some(if udp && updated == [0, 0] {
        [0xff, 0xff]
    } else {
        updated
    })
}

/// Folds `change` into the L4 checksum at `csum_off` (see [`updated_l4`]).
#[inline(always)]
fn update_l4(ctx: &XdpContext, csum_off: usize, change: u32, udp: bool) -> Result<(), DropReason> {
    match updated_l4(ctx.read(csum_off)?, change, udp) {
        Some(updated) => ctx.write(csum_off, &updated),
        None => Ok(()),
    }
}

/// The L4 half of [`Packet::rewrite_summed`]: the ports and the checksum at
/// `CSUM_AT`, under one bounds check of the header's first `SPAN` bytes.
/// Constant offsets per protocol, so the verifier can follow the check.
#[inline(always)]
fn rewrite_l4_cached<const SPAN: usize, const CSUM_AT: usize>(
    ctx: &XdpContext,
    l4_off: usize,
    to: &SummedRewrite,
    udp: bool,
) -> Result<(), DropReason> {
    const { assert!(CSUM_AT + 2 <= SPAN) };
    let l4 = ptr_at::<[u8; SPAN]>(ctx, l4_off)?.cast::<u8>();
    // SAFETY: the header's first SPAN bytes were bounds checked just above.
    unsafe {
        let csum = l4.add(CSUM_AT).cast::<[u8; 2]>();
        if let Some(updated) = updated_l4(csum.read_unaligned(), to.l4_csum_change, udp) {
            csum.write_unaligned(updated);
        }
        l4.cast::<[u16; 2]>()
            .write_unaligned([to.sport_be, to.dport_be]);
    }
    Ok(())
}

impl Packet for XdpContext {
    const RESOLVES_NEIGHBOURS: bool = false;
    const SENDS_ANYWHERE: bool = false;
    const SPARE_STACK: bool = true;

    #[inline(always)]
    fn read<T: Copy>(&self, offset: usize) -> Result<T, DropReason> {
        let ptr = ptr_at::<T>(self, offset)?;
        // SAFETY: bounds checked against data_end above.
        Ok(unsafe { ptr.read_unaligned() })
    }

    #[inline(always)]
    fn len(&self) -> usize {
        let (start, end) = bounds(self);
        // The kernel keeps data_end at or past data.
        end.wrapping_sub(start)
    }

    #[inline(always)]
    fn write<T: Copy>(&self, offset: usize, value: &T) -> Result<(), DropReason> {
        let ptr = ptr_at::<T>(self, offset)?;
        // SAFETY: bounds checked against data_end above.
        unsafe { ptr.write_unaligned(*value) };
        Ok(())
    }

    #[inline(always)]
    fn update_l3_csum(
        &self,
        csum_off: usize,
        old: u32,
        new: u32,
        size: u8,
    ) -> Result<(), DropReason> {
        let current: [u8; 2] = self.read(csum_off)?;
        let change = csum::change(field_bytes(old, size), field_bytes(new, size), size);
        self.write(csum_off, &csum::apply(current, change))
    }

    #[inline(always)]
    fn update_l4_csum(
        &self,
        csum_off: usize,
        old: u32,
        new: u32,
        size: u8,
        _pseudo: bool,
        udp: bool,
    ) -> Result<(), DropReason> {
        let change = csum::change(field_bytes(old, size), field_bytes(new, size), size);
        update_l4(self, csum_off, change, udp)
    }

    #[inline(always)]
    fn update_l4_csum_endpoint(
        &self,
        csum_off: usize,
        (old_addr_be, old_port_be): (u32, u16),
        (new_addr_be, new_port_be): (u32, u16),
        udp: bool,
    ) -> Result<(), DropReason> {
        // One read-modify-write of the checksum for both fields.
        let change = csum::address_change(old_addr_be, new_addr_be)
            + csum::port_change(old_port_be, new_port_be);
        update_l4(self, csum_off, change, udp)
    }

    #[inline(always)]
    fn rewrite_summed(&self, flow: &Ipv4Flow, to: &SummedRewrite) -> Result<(), DropReason> {
        if flow.proto == proto::UDP {
            rewrite_l4_cached::<UDP_HLEN, UDP_CSUM_AT>(self, flow.l4_off, to, true)?;
        } else {
            // The TCP header up to the end of its checksum.
            rewrite_l4_cached::<{ TCP_CSUM_AT + 2 }, TCP_CSUM_AT>(self, flow.l4_off, to, false)?;
        }
        if (to.saddr_be, to.daddr_be) != (flow.saddr_be, flow.daddr_be) {
            // One bounds check for the header checksum and both addresses.
            let csum_to_daddr = ptr_at::<[u8; 10]>(self, IP_CSUM_OFF)?.cast::<u8>();
            // SAFETY: the 10 bytes from the checksum to the end of the
            // destination address were bounds checked just above.
            unsafe {
                let csum = csum_to_daddr.cast::<[u8; 2]>();
                csum.write_unaligned(csum::apply(csum.read_unaligned(), to.l3_csum_change));
                let addresses = csum_to_daddr.add(IP_SADDR_OFF - IP_CSUM_OFF);
                addresses
                    .cast::<[u32; 2]>()
                    .write_unaligned([to.saddr_be, to.daddr_be]);
            }
        }
        Ok(())
    }

    #[inline(always)]
    fn ingress_ifindex(&self) -> u32 {
        // SAFETY: `ctx` points at the xdp_md the kernel handed us.
        unsafe { (*self.ctx).ingress_ifindex }
    }

    #[inline(always)]
    fn mark_translated(&self) {
        let len = size_of::<u32>() as i32;
        // SAFETY: plain helper call on our context; it moves data_meta
        // only, and every pointer is read afresh after it.
        if unsafe { bpf_xdp_adjust_meta(self.ctx, -len) } != 0 {
            return;
        }
        // SAFETY: as in `bounds`.
        let (meta, data) = unsafe {
            (
                core::ptr::read_volatile(&(*self.ctx).data_meta) as usize,
                core::ptr::read_volatile(&(*self.ctx).data) as usize,
            )
        };
        if meta + size_of::<u32>() > data {
            return;
        }
        // SAFETY: checked against data just above.
        unsafe { (meta as *mut u32).write_unaligned(XDP_META_TRANSLATED) };
    }

    #[inline(always)]
    fn translated_by_xdp(&self) -> bool {
        false
    }

    #[inline(always)]
    fn listed_target(&self, ifindex: u32) -> bool {
        XDP_TARGETS_V1.get_ptr(XDP_TARGETS_KNOWN).is_none()
            || XDP_TARGETS_V1.get_ptr(ifindex).is_some()
    }

    #[inline(always)]
    fn gso_size(&self) -> u32 {
        0
    }

    #[inline(always)]
    fn fib_lookup(&self, params: &mut bpf_fib_lookup) -> i64 {
        // SAFETY: `params` is a valid, fully initialised lookup struct.
        unsafe {
            bpf_fib_lookup(
                self.ctx.cast(),
                params,
                size_of::<bpf_fib_lookup>() as i32,
                0,
            )
        }
    }

    #[inline(always)]
    fn resize(&self, len: usize) -> Result<(), DropReason> {
        let delta = len as i32 - self.len() as i32;
        // SAFETY: the context pointer the kernel handed us.
        match unsafe { bpf_xdp_adjust_tail(self.ctx, delta) } {
            0 => Ok(()),
            _ => Err(DropReason::RewriteFailed),
        }
    }

    #[inline(always)]
    fn push_outer_ipv4(&self, bytes: u32) -> Result<(), DropReason> {
        let ethernet: [u8; ETH_HLEN] = self.read(0)?;
        // SAFETY: the context pointer the kernel handed us.
        if unsafe { bpf_xdp_adjust_head(self.ctx, -(bytes as i32)) } != 0 {
            return Err(DropReason::RewriteFailed);
        }
        self.write(0, &ethernet)
    }
}
