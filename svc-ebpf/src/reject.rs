//! "Connection refused": turns a TCP segment sent to a frontend without
//! backends into the reset a closed port would answer with (RFC 9293 3.10.7.1),
//! so clients fail at once instead of retrying SYNs for a minute.
use aya_ebpf::{helpers::bpf_skb_change_tail, programs::TcContext};
use svc_common::{DropReason, proto};

use crate::{
    csum,
    packet::{ETH_HLEN, IP_OFF, Ipv4Flow, Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
};

const RESET_IP_LEN: u16 = 40;
const RESET_FRAME_LEN: u32 = ETH_HLEN as u32 + RESET_IP_LEN as u32;
const IP_DF: u8 = 0x40;
const RESET_TTL: u8 = 64;

/// Rewrites the packet in place into the reset. The caller sends it back out
/// of the interface it arrived on.
#[inline(always)]
pub fn tcp_reset(ctx: &TcContext, flow: &Ipv4Flow) -> Result<(), DropReason> {
    if flow.tcp_flags & TCP_RST != 0 {
        // Never answer a reset with a reset.
        return Err(DropReason::NoBackendDrop);
    }
    let dst_mac: [u8; 6] = ctx.read(0)?;
    let src_mac: [u8; 6] = ctx.read(6)?;
    let their_seq = u32::from_be(ctx.read::<u32>(flow.l4_off + 4)?);
    let their_ack: u32 = ctx.read(flow.l4_off + 8)?;
    let data_off: u8 = ctx.read(flow.l4_off + 12)?;
    let headers = (flow.l4_off - IP_OFF) as u32 + u32::from(data_off >> 4) * 4;
    let payload = u32::from(flow.ip_len).saturating_sub(headers);

    let (seq_be, ack_be, flags) = if flow.tcp_flags & TCP_ACK != 0 {
        (their_ack, 0, TCP_RST)
    } else {
        let syn_fin =
            u32::from(flow.tcp_flags & TCP_SYN != 0) + u32::from(flow.tcp_flags & TCP_FIN != 0);
        (
            0,
            their_seq.wrapping_add(payload + syn_fin).to_be(),
            TCP_RST | TCP_ACK,
        )
    };

    let saddr = flow.daddr_be.to_ne_bytes();
    let daddr = flow.saddr_be.to_ne_bytes();
    let len = RESET_IP_LEN.to_be_bytes();
    let mut ip: [u8; 20] = [
        0x45,
        0,
        len[0],
        len[1],
        0,
        0,
        IP_DF,
        0,
        RESET_TTL,
        proto::TCP,
        0,
        0,
        saddr[0],
        saddr[1],
        saddr[2],
        saddr[3],
        daddr[0],
        daddr[1],
        daddr[2],
        daddr[3],
    ];
    let ip_csum = csum::finish(csum::add_words(&ip, 0));
    ip[10] = ip_csum[0];
    ip[11] = ip_csum[1];

    let sport = flow.dport_be.to_ne_bytes();
    let dport = flow.sport_be.to_ne_bytes();
    let seq = seq_be.to_ne_bytes();
    let ack = ack_be.to_ne_bytes();
    let mut tcp: [u8; 20] = [
        sport[0],
        sport[1],
        dport[0],
        dport[1],
        seq[0],
        seq[1],
        seq[2],
        seq[3],
        ack[0],
        ack[1],
        ack[2],
        ack[3],
        5 << 4,
        flags,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    let tcp_csum = csum::finish(csum::add_words(
        &tcp,
        csum::pseudo_header(saddr, daddr, proto::TCP, 20),
    ));
    tcp[16] = tcp_csum[0];
    tcp[17] = tcp_csum[1];

    // SAFETY: the context pointer the kernel handed us.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, RESET_FRAME_LEN, 0) } != 0 {
        return Err(DropReason::RewriteFailed);
    }
    // Back to the sender: the MAC addresses swap too.
    let eth: [u8; 14] = [
        src_mac[0], src_mac[1], src_mac[2], src_mac[3], src_mac[4], src_mac[5], dst_mac[0],
        dst_mac[1], dst_mac[2], dst_mac[3], dst_mac[4], dst_mac[5], 0x08, 0x00,
    ];
    store(ctx, 0, &eth)?;
    store(ctx, IP_OFF, &ip)?;
    store(ctx, IP_OFF + 20, &tcp)
}

#[inline(always)]
fn store<T>(ctx: &TcContext, offset: usize, value: &T) -> Result<(), DropReason> {
    ctx.store(offset, value, 0)
        .map_err(|_| DropReason::RewriteFailed)
}
