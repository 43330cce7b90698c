//! The TC program on pod veths: east-west Service traffic.
use aya_ebpf::programs::TcContext;
use svc_common::{DropReason, flow_flags, proto};

use crate::{
    ct, lb,
    lb::Selection,
    nat,
    packet::{self, Packet, Parsed},
    reject, stats,
};

/// What to do with a packet that was not dropped.
pub enum Action {
    /// Hand it (rewritten or not) to the stack.
    Pass,
    /// It was turned into a reply to its sender: send it back out.
    Bounce,
}

impl Packet for TcContext {
    #[inline(always)]
    fn read<T: Copy>(&self, offset: usize) -> Result<T, DropReason> {
        self.load(offset).map_err(|_| DropReason::Malformed)
    }

    #[inline(always)]
    fn len(&self) -> usize {
        TcContext::len(self) as usize
    }
}

#[inline(always)]
pub fn try_from_pod(ctx: &TcContext) -> Result<Action, DropReason> {
    let Parsed::Ipv4(flow) = packet::parse(ctx)? else {
        return Ok(Action::Pass);
    };

    if let Some(entry) = ct::lookup(&ct::key_of(&flow)) {
        if entry.flags & flow_flags::REPLY != 0 {
            // A frontend removed under a live flow leaves nothing to
            // translate back to; the client would reset the reply anyway.
            let frontend = lb::rev_nat(entry.rev_nat_id).ok_or(DropReason::SlotMissing)?;
            nat::rewrite_source(ctx, &flow, frontend.addr_be, frontend.port_be)?;
            return Ok(Action::Pass);
        }
        if let Some(backend) = lb::backend(entry.backend_id) {
            stats::count_frontend(entry.rev_nat_id, u32::from(flow.ip_len));
            nat::rewrite_destination(ctx, &flow, backend.addr_be, backend.port_be)?;
            return Ok(Action::Pass);
        }
        // The flow's backend is gone: choose again below, as a new flow.
    }

    match lb::select(&flow)? {
        Selection::NotAFrontend => Ok(Action::Pass),
        Selection::Empty { drop } => {
            if drop || flow.proto != proto::TCP {
                return Err(DropReason::NoBackendDrop);
            }
            reject::tcp_reset(ctx, &flow)?;
            Ok(Action::Bounce)
        }
        Selection::Backend(selected) => {
            ct::create(
                &flow,
                selected.backend_id,
                &selected.backend,
                selected.rev_nat_id,
            )?;
            stats::count_frontend(selected.rev_nat_id, u32::from(flow.ip_len));
            nat::rewrite_destination(
                ctx,
                &flow,
                selected.backend.addr_be,
                selected.backend.port_be,
            )?;
            Ok(Action::Pass)
        }
    }
}
