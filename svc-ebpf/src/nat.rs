//! Address and port rewrites, with every checksum they touch updated
//! incrementally: the IPv4 header checksum for addresses, the L4 checksum
//! for ports and (through the pseudo header) addresses.
use svc_common::{DropReason, proto};

use crate::packet::{IP_CSUM_OFF, IP_DADDR_OFF, IP_SADDR_OFF, Ipv4Flow, Packet};

/// Destination becomes `addr:port`.
#[inline(always)]
pub fn rewrite_destination<P: Packet>(
    pkt: &P,
    flow: &Ipv4Flow,
    addr_be: u32,
    port_be: u16,
) -> Result<(), DropReason> {
    rewrite_addr(pkt, flow, IP_DADDR_OFF, flow.daddr_be, addr_be)?;
    rewrite_port(pkt, flow, flow.l4_off + 2, flow.dport_be, port_be)
}

/// Source becomes `addr:port`.
#[inline(always)]
pub fn rewrite_source<P: Packet>(
    pkt: &P,
    flow: &Ipv4Flow,
    addr_be: u32,
    port_be: u16,
) -> Result<(), DropReason> {
    rewrite_addr(pkt, flow, IP_SADDR_OFF, flow.saddr_be, addr_be)?;
    rewrite_port(pkt, flow, flow.l4_off, flow.sport_be, port_be)
}

#[inline(always)]
fn rewrite_addr<P: Packet>(
    pkt: &P,
    flow: &Ipv4Flow,
    offset: usize,
    old_be: u32,
    new_be: u32,
) -> Result<(), DropReason> {
    if old_be == new_be {
        return Ok(());
    }
    let udp = flow.proto == proto::UDP;
    pkt.update_l4_csum(flow.l4_csum_off(), old_be, new_be, 4, true, udp)?;
    pkt.update_l3_csum(IP_CSUM_OFF, old_be, new_be, 4)?;
    pkt.write(offset, &new_be)
}

#[inline(always)]
fn rewrite_port<P: Packet>(
    pkt: &P,
    flow: &Ipv4Flow,
    offset: usize,
    old_be: u16,
    new_be: u16,
) -> Result<(), DropReason> {
    if old_be == new_be {
        return Ok(());
    }
    let udp = flow.proto == proto::UDP;
    pkt.update_l4_csum(
        flow.l4_csum_off(),
        u32::from(old_be),
        u32::from(new_be),
        2,
        false,
        udp,
    )?;
    pkt.write(offset, &new_be)
}
