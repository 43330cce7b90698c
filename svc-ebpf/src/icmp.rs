//! ICMP errors about translated flows, translated back: a backend's "port
//! unreachable", or a router's "fragmentation needed" about a packet sent
//! to a backend, must reach the client quoting the packet the client sent
//! (to the frontend), or its stack cannot relate the error to the socket,
//! and path-MTU discovery through the load balancer breaks.
use svc_common::{DropReason, flow_flags, proto, rev_nat_flags};

use crate::{
    action::Action,
    ct,
    headers::{
        ICMP_CSUM_AT, IP_CSUM_OFF, IP_DADDR_OFF, IP_SADDR_OFF, IPV4_CSUM_AT, IPV4_DADDR_AT,
        IPV4_SADDR_AT, L4_DPORT_AT,
    },
    lb,
    packet::{IcmpError, Packet},
    route,
};

#[inline(always)]
pub fn translate<P: Packet>(pkt: &P, err: &IcmpError) -> Result<Action, DropReason> {
    // The quoted packet went client → backend; its flow's reply entry is
    // keyed backend → client.
    let key = ct::flow_key(
        err.inner_daddr_be,
        err.inner_saddr_be,
        err.inner_dport_be,
        err.inner_sport_be,
        err.inner_proto,
    );
    let Some(entry) = ct::find(&key) else {
        return Ok(Action::PASS);
    };
    if entry.flags & flow_flags::REPLY == 0 {
        return Ok(Action::PASS);
    }
    let Some(frontend) = lb::rev_nat(entry.rev_nat_id) else {
        return Ok(Action::PASS);
    };
    let snat = entry.flags & flow_flags::SNAT != 0;
    let outer_daddr_be = if snat {
        entry.nat_addr_be
    } else {
        err.daddr_be
    };
    // The reporter is the backend itself: it, too, becomes the frontend.
    let outer_saddr_be = if err.saddr_be == err.inner_daddr_be {
        frontend.addr_be
    } else {
        err.saddr_be
    };
    let route = if frontend.flags & rev_nat_flags::LOCAL_ADDRESS != 0
        && outer_saddr_be == frontend.addr_be
    {
        let Some(route) =
            route::plan_raw(pkt, outer_saddr_be, outer_daddr_be, proto::ICMP, err.ip_len)
        else {
            return Ok(Action::PASS);
        };
        Some(route)
    } else {
        None
    };

    let icmp_csum_off = err.icmp_off + ICMP_CSUM_AT;
    quoted_addr(
        pkt,
        err,
        icmp_csum_off,
        err.inner_ip_off + IPV4_DADDR_AT,
        err.inner_daddr_be,
        frontend.addr_be,
    )?;
    quoted_port(
        pkt,
        icmp_csum_off,
        err.inner_l4_off + L4_DPORT_AT,
        err.inner_dport_be,
        frontend.port_be,
    )?;
    if snat {
        quoted_addr(
            pkt,
            err,
            icmp_csum_off,
            err.inner_ip_off + IPV4_SADDR_AT,
            err.inner_saddr_be,
            entry.nat_addr_be,
        )?;
        quoted_port(
            pkt,
            icmp_csum_off,
            err.inner_l4_off,
            err.inner_sport_be,
            entry.nat_port_be,
        )?;
        outer_addr(pkt, IP_DADDR_OFF, err.daddr_be, outer_daddr_be)?;
    }
    outer_addr(pkt, IP_SADDR_OFF, err.saddr_be, outer_saddr_be)?;
    match route {
        Some(route) => route::send(pkt, route, proto::ICMP),
        None => Ok(Action::PASS),
    }
}

#[inline(always)]
fn outer_addr<P: Packet>(
    pkt: &P,
    offset: usize,
    old_be: u32,
    new_be: u32,
) -> Result<(), DropReason> {
    if old_be == new_be {
        return Ok(());
    }
    pkt.update_l3_csum(IP_CSUM_OFF, old_be, new_be, 4)?;
    pkt.write(offset, &new_be)
}

/// An address inside the quote: the quoted IP header's checksum changes
/// with it, and the ICMP checksum (which covers the quote, with no pseudo
/// header) with both.
#[inline(always)]
fn quoted_addr<P: Packet>(
    pkt: &P,
    err: &IcmpError,
    icmp_csum_off: usize,
    offset: usize,
    old_be: u32,
    new_be: u32,
) -> Result<(), DropReason> {
    if old_be == new_be {
        return Ok(());
    }
    let inner_csum_off = err.inner_ip_off + IPV4_CSUM_AT;
    let before: u16 = pkt.read(inner_csum_off)?;
    pkt.update_l3_csum(inner_csum_off, old_be, new_be, 4)?;
    let after: u16 = pkt.read(inner_csum_off)?;
    pkt.update_l3_csum(icmp_csum_off, u32::from(before), u32::from(after), 2)?;
    pkt.update_l3_csum(icmp_csum_off, old_be, new_be, 4)?;
    pkt.write(offset, &new_be)
}

/// A port inside the quote. The quoted L4 checksum is left as it is: it
/// may not even be inside the quote, and no stack checks it.
#[inline(always)]
fn quoted_port<P: Packet>(
    pkt: &P,
    icmp_csum_off: usize,
    offset: usize,
    old_be: u16,
    new_be: u16,
) -> Result<(), DropReason> {
    if old_be == new_be {
        return Ok(());
    }
    pkt.update_l3_csum(icmp_csum_off, u32::from(old_be), u32::from(new_be), 2)?;
    pkt.write(offset, &new_be)
}
