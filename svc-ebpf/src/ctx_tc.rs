//! [`Packet`] for socket buffers (TC): reads are direct where the headers
//! sit in the linear part, kernel helpers do the stores and checksum
//! updates, which also keeps checksum-offloaded (CHECKSUM_PARTIAL) packets
//! right.
use aya_ebpf::{
    bindings::{
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR,
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, bpf_fib_lookup,
    },
    helpers::{bpf_fib_lookup, bpf_skb_adjust_room, bpf_skb_change_tail},
    programs::TcContext,
};
use svc_common::DropReason;

use crate::{
    headers::XDP_META_TRANSLATED,
    nat,
    packet::{Ipv4Flow, Packet, SummedRewrite},
};

/// data and data_end, read afresh (volatile, as for XDP: every access
/// keeps its own bounds check, and no pointer outlives a helper call that
/// may move the packet).
#[inline(always)]
fn bounds(ctx: &TcContext) -> (usize, usize) {
    // SAFETY: `ctx` points at the __sk_buff the kernel handed us.
    unsafe {
        let skb = ctx.skb.skb;
        (
            core::ptr::read_volatile(&(*skb).data) as usize,
            core::ptr::read_volatile(&(*skb).data_end) as usize,
        )
    }
}

impl Packet for TcContext {
    #[inline(always)]
    fn mark_translated(&self) {}

    #[inline(always)]
    fn translated_by_xdp(&self) -> bool {
        // SAFETY: `ctx` points at the __sk_buff the kernel handed us.
        let (meta, data) = unsafe {
            let skb = self.skb.skb;
            (
                core::ptr::read_volatile(&(*skb).data_meta) as usize,
                core::ptr::read_volatile(&(*skb).data) as usize,
            )
        };
        // SAFETY: checked against data (where the metadata ends) first.
        meta + size_of::<u32>() <= data
            && unsafe { (meta as *const u32).read_unaligned() } == XDP_META_TRANSLATED
    }

    const RESOLVES_NEIGHBOURS: bool = true;
    const SENDS_ANYWHERE: bool = true;
    const SPARE_STACK: bool = false;

    #[inline(always)]
    fn read<T: Copy>(&self, offset: usize) -> Result<T, DropReason> {
        // A one-byte read's check, `start + offset + 1 > end`, reaches the
        // verifier as `start + offset >= end` (LLVM knows the sum cannot
        // wrap), and a pointer proven below data_end with no constant offset
        // gets no range from the verifier. So fields are read in pairs.
        const { assert!(size_of::<T>() >= 2, "read byte fields in pairs") };
        let (start, end) = bounds(self);
        if start + offset + size_of::<T>() > end {
            // Past the linear part: bpf_skb_load_bytes also reads the paged
            // fragments, and fails only past the end of the packet. A helper
            // call per read costs ~5 ns, so it is the exception, not the
            // rule: on veths and most NICs the headers are linear.
            return self.load(offset).map_err(|_| DropReason::Malformed);
        }
        // SAFETY: bounds checked against data_end just above.
        Ok(unsafe { ((start + offset) as *const T).read_unaligned() })
    }

    #[inline(always)]
    fn len(&self) -> usize {
        TcContext::len(self) as usize
    }

    #[inline(always)]
    fn write<T: Copy>(&self, offset: usize, value: &T) -> Result<(), DropReason> {
        self.store(offset, value, 0)
            .map_err(|_| DropReason::RewriteFailed)
    }

    #[inline(always)]
    fn update_l3_csum(
        &self,
        csum_off: usize,
        old: u32,
        new: u32,
        size: u8,
    ) -> Result<(), DropReason> {
        self.l3_csum_replace(csum_off, u64::from(old), u64::from(new), u64::from(size))
            .map_err(|_| DropReason::RewriteFailed)
    }

    #[inline(always)]
    fn update_l4_csum(
        &self,
        csum_off: usize,
        old: u32,
        new: u32,
        size: u8,
        pseudo: bool,
        udp: bool,
    ) -> Result<(), DropReason> {
        let mut flags = u64::from(size);
        if pseudo {
            flags |= u64::from(BPF_F_PSEUDO_HDR);
        }
        if udp {
            flags |= u64::from(BPF_F_MARK_MANGLED_0);
        }
        self.l4_csum_replace(csum_off, u64::from(old), u64::from(new), flags)
            .map_err(|_| DropReason::RewriteFailed)
    }

    #[inline(always)]
    fn ingress_ifindex(&self) -> u32 {
        // SAFETY: the context pointer the kernel handed us.
        unsafe { (*self.skb.skb).ingress_ifindex }
    }

    #[inline(always)]
    fn listed_target(&self, _ifindex: u32) -> bool {
        true
    }

    #[inline(always)]
    fn gso_size(&self) -> u32 {
        // SAFETY: the context pointer the kernel handed us.
        unsafe { (*self.skb.skb).gso_size }
    }

    #[inline(always)]
    fn fib_lookup(&self, params: &mut bpf_fib_lookup) -> i64 {
        // SAFETY: `params` is a valid, fully initialised lookup struct.
        unsafe {
            bpf_fib_lookup(
                self.skb.skb.cast(),
                params,
                size_of::<bpf_fib_lookup>() as i32,
                0,
            )
        }
    }

    #[inline(always)]
    fn rewrite_summed(&self, flow: &Ipv4Flow, to: &SummedRewrite) -> Result<(), DropReason> {
        // The sums are of no use to an skb (see the trait): one change at
        // a time, through the helpers.
        nat::rewrite_destination(self, flow, to.daddr_be, to.dport_be)?;
        nat::rewrite_source(self, flow, to.saddr_be, to.sport_be)
    }

    #[inline(always)]
    fn resize(&self, len: usize) -> Result<(), DropReason> {
        // SAFETY: the context pointer the kernel handed us.
        match unsafe { bpf_skb_change_tail(self.skb.skb, len as u32, 0) } {
            0 => Ok(()),
            _ => Err(DropReason::RewriteFailed),
        }
    }

    #[inline(always)]
    fn push_outer_ipv4(&self, bytes: u32) -> Result<(), DropReason> {
        // The room goes after the MAC header; the flag marks a GSO packet's
        // segments as IPIP-encapsulated, so they are cut right.
        let flags = u64::from(BPF_F_ADJ_ROOM_ENCAP_L3_IPV4);
        // SAFETY: the context pointer the kernel handed us.
        match unsafe { bpf_skb_adjust_room(self.skb.skb, bytes as i32, BPF_ADJ_ROOM_MAC, flags) } {
            0 => Ok(()),
            _ => Err(DropReason::RewriteFailed),
        }
    }
}
