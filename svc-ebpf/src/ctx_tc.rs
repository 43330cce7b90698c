//! [`Packet`] for socket buffers (TC): kernel helpers do the stores and
//! checksum updates, which also keeps checksum-offloaded (CHECKSUM_PARTIAL)
//! packets right.
use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, bpf_fib_lookup},
    helpers::{bpf_fib_lookup, bpf_skb_change_tail},
    programs::TcContext,
};
use svc_common::DropReason;

use crate::packet::Packet;

impl Packet for TcContext {
    const RESOLVES_NEIGHBOURS: bool = true;

    #[inline(always)]
    fn read<T: Copy>(&self, offset: usize) -> Result<T, DropReason> {
        self.load(offset).map_err(|_| DropReason::Malformed)
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
    fn resize(&self, len: usize) -> Result<(), DropReason> {
        // SAFETY: the context pointer the kernel handed us.
        match unsafe { bpf_skb_change_tail(self.skb.skb, len as u32, 0) } {
            0 => Ok(()),
            _ => Err(DropReason::RewriteFailed),
        }
    }
}
