//! TC entry logic: pod veths (east-west Service traffic, and replies of
//! local backends to any client), and the NIC fallback behind XDP.
use aya_ebpf::programs::TcContext;
use svc_common::DropReason;

use crate::{action::Action, flow, packet::Origin, tunnel::Delivered};

#[inline(always)]
pub fn try_from_pod(ctx: &TcContext) -> Result<Action, DropReason> {
    flow::process(ctx, Origin::Pod, Delivered::NONE)
}

#[inline(always)]
pub fn try_from_world(ctx: &TcContext) -> Result<Action, DropReason> {
    flow::process(ctx, Origin::World, Delivered::NONE)
}
