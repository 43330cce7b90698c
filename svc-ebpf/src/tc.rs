//! TC entry logic: pod veths (east-west Service traffic, and replies of
//! local backends to any client), and the NIC fallback behind XDP.
use aya_ebpf::programs::TcContext;
use svc_common::DropReason;

use crate::{
    action::Action,
    flow,
    packet::{self, Origin, Packet as _, Parsed},
    route,
    tunnel::Delivered,
};

#[inline(always)]
pub fn try_from_pod(ctx: &TcContext) -> Result<Action, DropReason> {
    flow::process(ctx, Origin::Pod, Delivered::NONE)
}

/// What the XDP program in front already translated goes into its pod,
/// or to the stack (route.rs `into_pod`); the rest is looked up here.
#[inline(always)]
pub fn try_from_world(ctx: &TcContext) -> Result<Action, DropReason> {
    if ctx.translated_by_xdp() {
        return match packet::parse(ctx)? {
            Parsed::Ipv4(flow) => route::into_pod(ctx, &flow),
            _ => Ok(Action::PASS),
        };
    }
    flow::process(ctx, Origin::World, Delivered::NONE)
}
