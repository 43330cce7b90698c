//! svc-lb kernel programs: entry points only. Each maps the `Result` of its
//! `try_*` function to a verdict and counts every reason a packet was not
//! forwarded as it came.
#![no_std]
#![no_main]

mod csum;
mod ct;
mod ctx_tc;
mod ctx_xdp;
mod flow;
mod lb;
mod maps;
mod nat;
mod packet;
mod reject;
mod stats;
mod tc;
mod xdp;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT, xdp_action},
    helpers::bpf_redirect,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

use crate::flow::Action;

/// TCX ingress on the host side of every pod veth: sees what pods send.
/// Translates new flows to Service frontends, reverse-translates replies of
/// translated flows, and answers frontends without backends.
#[classifier]
pub fn svc_from_pod(ctx: TcContext) -> i32 {
    match tc::try_from_pod(&ctx) {
        Ok(Action::Pass) => TC_ACT_OK,
        Ok(Action::Bounce(reason)) => {
            stats::count_drop(reason);
            // SAFETY: `skb` is the context pointer the kernel handed us.
            let ifindex = unsafe { (*ctx.skb.skb).ifindex };
            // Out of the interface the packet came in on: back to the pod.
            // SAFETY: plain helper call.
            unsafe { bpf_redirect(ifindex, 0) as i32 }
        }
        Err(reason) => {
            stats::count_drop(reason);
            TC_ACT_SHOT
        }
    }
}

/// XDP on the node's NICs: Service traffic from outside (NodePort,
/// LoadBalancer and external IPs), and replies of flows translated here.
#[xdp]
pub fn svc_from_world(ctx: XdpContext) -> u32 {
    match xdp::try_from_world(&ctx) {
        Ok(Action::Pass) => xdp_action::XDP_PASS,
        Ok(Action::Bounce(reason)) => {
            stats::count_drop(reason);
            xdp_action::XDP_TX
        }
        Err(reason) => {
            stats::count_drop(reason);
            xdp_action::XDP_DROP
        }
    }
}

/// Passes everything: the baseline of the per-packet benchmark, and what the
/// lab attaches to the far end of a veth so XDP_TX frames arrive there.
#[xdp]
pub fn svc_xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
