//! XDP entry logic: node NICs (north-south Service traffic, and replies of
//! flows this node translated towards other nodes).
use aya_ebpf::programs::XdpContext;
use svc_common::DropReason;

use crate::{action::Action, flow, packet::Origin};

#[inline(always)]
pub fn try_from_world(ctx: &XdpContext) -> Result<Action, DropReason> {
    flow::process(ctx, Origin::World)
}
