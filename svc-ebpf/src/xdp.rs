//! XDP entry logic: node NICs (north-south Service traffic, and replies of
//! flows this node translated towards other nodes, and flows other nodes
//! send here by direct server return).
use aya_ebpf::programs::XdpContext;
use svc_common::DropReason;

use crate::{action::Action, flow, packet::Origin, tunnel};

/// A packet another node sent here by direct server return loses its
/// outer header first, and goes on as the flow it carries.
#[inline(always)]
pub fn try_from_world(ctx: &XdpContext) -> Result<Action, DropReason> {
    let delivered = tunnel::receive(ctx)?;
    flow::process(ctx, Origin::World, delivered)
}
