//! svc-lb kernel programs: entry points only. Each maps the `Result` of its
//! `try_*` function to a verdict and counts every reason a packet was not
//! forwarded as it came.
#![no_std]
#![no_main]

mod csum;
mod ct;
mod lb;
mod maps;
mod nat;
mod packet;
mod reject;
mod stats;
mod tc;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::bpf_redirect,
    macros::classifier,
    programs::TcContext,
};

use crate::tc::Action;

/// Attached (TCX ingress) to the host side of every pod veth: sees what pods
/// send. Translates new flows to Service frontends, reverse-translates
/// replies of translated flows, and answers frontends without backends.
#[classifier]
pub fn svc_from_pod(ctx: TcContext) -> i32 {
    match tc::try_from_pod(&ctx) {
        Ok(Action::Pass) => TC_ACT_OK,
        Ok(Action::Bounce) => {
            stats::count_drop(svc_common::DropReason::NoBackendReset);
            // SAFETY: `skb` is the context pointer the kernel handed us.
            let ifindex = unsafe { (*ctx.skb.skb).ifindex };
            // Out of the interface the segment came in on: back to the pod.
            unsafe { bpf_redirect(ifindex, 0) as i32 }
        }
        Err(reason) => {
            stats::count_drop(reason);
            TC_ACT_SHOT
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
