//! svc-lb kernel programs: entry points only. Each maps the `Result` of its
//! `try_*` function to a verdict and counts every reason a packet was not
//! forwarded as it came.
//!
//! The modules form layers, each using only the ones before it (`cargo
//! xtask lint` fails on any import cycle):
//! 1. `headers` (layouts, offsets, flag values), `action` (what a program
//!    decides), `csum`, `maps` (every map, one commented block), `clock`,
//!    `stats`;
//! 2. `packet` (bounds-checked access and parsing), with `ctx_xdp` and
//!    `ctx_tc` implementing it for each program type;
//! 3. `nat` (rewrites), `route` (FIB lookup, redirect), `reject` (TCP reset
//!    and ICMP unreachable answers);
//! 4. `lb` (frontend lookup, backend pick), `ct` (conntrack, source NAT
//!    ports), `cache` (the per-CPU flow cache), `icmp` (errors about
//!    translated flows), `tunnel` (direct server return's IPIP);
//! 5. `flow`: one packet's way through cache, conntrack and frontends
//!    (`reply`, `forward`, `new_flow`, each deciding a translation that
//!    `finish` carries out);
//! 6. entry points: `xdp`, `tc`, `sock` (socket hooks) and this file.
#![no_std]
#![no_main]

mod action;
mod cache;
mod clock;
mod csum;
mod ct;
mod ctx_tc;
mod ctx_xdp;
mod flow;
mod headers;
mod icmp;
mod lb;
mod maps;
mod nat;
mod packet;
mod reject;
mod route;
mod sock;
mod stats;
mod tc;
mod tunnel;
mod xdp;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT, xdp_action},
    helpers::{bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer},
    macros::{cgroup_sock_addr, classifier, xdp},
    programs::{SockAddrContext, TcContext, XdpContext},
};

use svc_common::DropReason;

use crate::action::{Action, Verdict};

// The entry functions are `inline(always)`: the macros wrap each in an
// outer function, and a body grown past LLVM's inlining threshold becomes a
// BPF-to-BPF call with its own frame, ~8 ns on every packet.

/// TCX ingress on the host side of every pod veth: sees what pods send.
/// Translates new flows to Service frontends, reverse-translates replies of
/// translated flows, and answers frontends without backends.
#[classifier]
#[inline(always)]
pub fn svc_from_pod(ctx: TcContext) -> i32 {
    tc_verdict(&ctx, tc::try_from_pod(&ctx))
}

/// TCX ingress on the node's NICs, behind the XDP program: takes what XDP
/// passed on untouched because its next hop needs resolving first.
#[classifier]
#[inline(always)]
pub fn svc_from_world_tc(ctx: TcContext) -> i32 {
    tc_verdict(&ctx, tc::try_from_world(&ctx))
}

/// XDP on the node's NICs: Service traffic from outside (NodePort,
/// LoadBalancer and external IPs), and replies of flows translated here.
#[xdp]
#[inline(always)]
pub fn svc_from_world(ctx: XdpContext) -> u32 {
    let action = match xdp::try_from_world(&ctx) {
        Ok(action) => action,
        Err(reason) => {
            stats::count_drop(reason);
            return xdp_action::XDP_DROP;
        }
    };
    match action.verdict() {
        Verdict::Pass => xdp_action::XDP_PASS,
        Verdict::Bounce(reason) => {
            stats::count_drop_at(reason);
            xdp_action::XDP_TX
        }
        Verdict::Redirect(ifindex) => {
            // SAFETY: `ctx` points at the xdp_md the kernel handed us.
            if ifindex == unsafe { (*ctx.ctx).ingress_ifindex } {
                xdp_action::XDP_TX
            } else {
                // SAFETY: plain helper call.
                unsafe { bpf_redirect(ifindex, 0) as u32 }
            }
        }
        // Never produced for XDP (route.rs leaves those packets to TC).
        Verdict::RedirectNeigh(_) | Verdict::RedirectPeer(_) => xdp_action::XDP_PASS,
    }
}

/// The verdict of a TC program for what its `try_*` function decided.
#[inline(always)]
fn tc_verdict(ctx: &TcContext, result: Result<Action, DropReason>) -> i32 {
    let action = match result {
        Ok(action) => action,
        Err(reason) => {
            stats::count_drop(reason);
            return TC_ACT_SHOT;
        }
    };
    match action.verdict() {
        Verdict::Pass => TC_ACT_OK,
        Verdict::Bounce(reason) => {
            stats::count_drop_at(reason);
            // SAFETY: `skb` is the context pointer the kernel handed us.
            let ifindex = unsafe { (*ctx.skb.skb).ifindex };
            // Out of the interface the packet came in on: back to its sender.
            // SAFETY: plain helper call.
            unsafe { bpf_redirect(ifindex, 0) as i32 }
        }
        // SAFETY: plain helper call.
        Verdict::Redirect(ifindex) => unsafe { bpf_redirect(ifindex, 0) as i32 },
        // SAFETY: plain helper call; no neighbour hint, the kernel resolves.
        Verdict::RedirectNeigh(ifindex) => unsafe {
            bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) as i32
        },
        // SAFETY: plain helper call.
        Verdict::RedirectPeer(ifindex) => unsafe { bpf_redirect_peer(ifindex, 0) as i32 },
    }
}

/// connect() of the node's own processes: a frontend becomes a backend.
#[cgroup_sock_addr(connect4)]
pub fn svc_sock_connect4(ctx: SockAddrContext) -> i32 {
    sock_verdict(sock::try_translate4(&ctx))
}

/// sendmsg() on unconnected UDP sockets of the node's processes.
#[cgroup_sock_addr(sendmsg4)]
pub fn svc_sock_sendmsg4(ctx: SockAddrContext) -> i32 {
    sock_verdict(sock::try_translate4(&ctx))
}

/// recvmsg() on UDP sockets: replies show the frontend as their source.
#[cgroup_sock_addr(recvmsg4)]
pub fn svc_sock_recvmsg4(ctx: SockAddrContext) -> i32 {
    sock_verdict(sock::try_reverse4(&ctx))
}

/// getpeername(): the peer is the frontend that was dialled.
#[cgroup_sock_addr(getpeername4)]
pub fn svc_sock_getpeername4(ctx: SockAddrContext) -> i32 {
    sock_verdict(sock::try_reverse4(&ctx))
}

/// The four above for IPv6 sockets (IPv4-mapped destinations included).
#[cgroup_sock_addr(connect6)]
pub fn svc_sock_connect6(ctx: SockAddrContext) -> i32 {
    sock_verdict(sock::try_translate6(&ctx))
}

#[cgroup_sock_addr(sendmsg6)]
pub fn svc_sock_sendmsg6(ctx: SockAddrContext) -> i32 {
    sock_verdict(sock::try_translate6(&ctx))
}

#[cgroup_sock_addr(recvmsg6)]
pub fn svc_sock_recvmsg6(ctx: SockAddrContext) -> i32 {
    sock_verdict(sock::try_reverse6(&ctx))
}

#[cgroup_sock_addr(getpeername6)]
pub fn svc_sock_getpeername6(ctx: SockAddrContext) -> i32 {
    sock_verdict(sock::try_reverse6(&ctx))
}

#[inline(always)]
fn sock_verdict(result: Result<sock::Syscall, DropReason>) -> i32 {
    match result {
        Ok(verdict) => verdict.code(),
        Err(reason) => {
            // The socket is left alone (to its original destination) rather
            // than failing the syscall on a map hiccup.
            stats::count_drop(reason);
            sock::Syscall::Allow.code()
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
