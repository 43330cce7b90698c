//! Address and port rewrites, with every checksum they touch updated
//! incrementally: the IPv4 header checksum for addresses, the L4 checksum
//! for ports and (through the pseudo header) addresses.
use svc_common::{DropReason, proto};

use crate::{
    headers::{IP_CSUM_OFF, IP_DADDR_OFF, IP_SADDR_OFF, L4_DPORT_AT},
    packet::{Ipv4Flow, Packet},
};

/// Destination becomes `addr:port`.
#[inline(always)]
pub fn rewrite_destination<P: Packet>(
    pkt: &P,
    flow: &Ipv4Flow,
    addr_be: u32,
    port_be: u16,
) -> Result<(), DropReason> {
    let offsets = (IP_DADDR_OFF, flow.l4_off + L4_DPORT_AT);
    let old = (flow.daddr_be, flow.dport_be);
    rewrite_endpoint(pkt, flow, offsets, old, (addr_be, port_be))
}

/// Source becomes `addr:port`.
#[inline(always)]
pub fn rewrite_source<P: Packet>(
    pkt: &P,
    flow: &Ipv4Flow,
    addr_be: u32,
    port_be: u16,
) -> Result<(), DropReason> {
    let offsets = (IP_SADDR_OFF, flow.l4_off);
    let old = (flow.saddr_be, flow.sport_be);
    rewrite_endpoint(pkt, flow, offsets, old, (addr_be, port_be))
}

/// The address at `addr_off` and the port at `port_off` go from `old` to
/// `new` (network order), with both checksums.
#[inline(always)]
fn rewrite_endpoint<P: Packet>(
    pkt: &P,
    flow: &Ipv4Flow,
    (addr_off, port_off): (usize, usize),
    old: (u32, u16),
    new: (u32, u16),
) -> Result<(), DropReason> {
    if old == new {
        return Ok(());
    }
    let udp = flow.proto == proto::UDP;
    pkt.update_l4_csum_endpoint(flow.l4_csum_off(), old, new, udp)?;
    if old.0 != new.0 {
        pkt.update_l3_csum(IP_CSUM_OFF, old.0, new.0, 4)?;
        pkt.write(addr_off, &new.0)?;
    }
    if old.1 != new.1 {
        pkt.write(port_off, &new.1)?;
    }
    Ok(())
}
