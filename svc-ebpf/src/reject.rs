//! "Connection refused" for frontends without backends: the packet is
//! rewritten in place into the answer a closed port would give, and the
//! caller sends it back where it came from. TCP gets a reset (RFC 9293
//! 3.10.7.1), UDP an ICMP port unreachable (RFC 1122 4.1.3.1), as kube-proxy's
//! REJECT rules give. A packet too big for its route gets ICMP
//! fragmentation needed the same way.
use svc_common::{DropReason, proto};

use crate::{
    clock, csum,
    headers::{
        ETH_DEST_OFF, ETH_HLEN, ETH_P_IP, ETH_PROTO_OFF, ETH_SOURCE_OFF, ICMP_DEST_UNREACH,
        ICMP_EXC_TTL, ICMP_FRAG_NEEDED, ICMP_HLEN, ICMP_PORT_UNREACH, ICMP_QUOTED_L4,
        ICMP_TIME_EXCEEDED, IP_DF, IP_OFF, IPV4_MIN_HLEN, TCP_ACK, TCP_ACK_SEQ_AT, TCP_FIN,
        TCP_MIN_HLEN, TCP_RST, TCP_SEQ_AT, TCP_SYN,
    },
    maps::REJECT_BUDGET,
    packet::{Ipv4Flow, Packet},
};

/// The TTL of the answers.
const TTL: u8 = 64;
/// What an ICMP error quotes of the packet it answers: its IP header
/// (without options) and the first bytes of L4.
const QUOTE_LEN: usize = IPV4_MIN_HLEN + ICMP_QUOTED_L4;
/// A reset: IP and TCP headers without options.
const RESET_LEN: usize = IPV4_MIN_HLEN + TCP_MIN_HLEN;
/// An ICMP error: IP and ICMP headers, and the quote.
const ICMP_ERROR_LEN: usize = IPV4_MIN_HLEN + ICMP_HLEN + QUOTE_LEN;

/// Answers each CPU may send per second, and at once after a quiet spell:
/// the kernel's own ICMP limits (net.ipv4.icmp_msgs_per_sec and
/// icmp_msgs_burst), per CPU. A flood from spoofed sources gets no more.
const ANSWERS_PER_SECOND: u64 = 1_000;
const ANSWER_BURST: u64 = 50;
const NS_PER_ANSWER: u64 = 1_000_000_000 / ANSWERS_PER_SECOND;

/// Takes one answer from this CPU's token bucket; RejectRateLimited when
/// it is empty.
#[inline(always)]
fn spend_answer() -> Result<(), DropReason> {
    let Some(budget) = REJECT_BUDGET.get_ptr_mut(0) else {
        return Ok(());
    };
    let now = clock::now();
    // SAFETY: per-CPU slot, only this CPU uses it while we run.
    unsafe {
        let earned = now.saturating_sub((*budget).refilled_ns) / NS_PER_ANSWER;
        if earned > 0 {
            (*budget).tokens = ((*budget).tokens + earned).min(ANSWER_BURST);
            (*budget).refilled_ns = now;
        }
        if (*budget).tokens == 0 {
            return Err(DropReason::RejectRateLimited);
        }
        (*budget).tokens -= 1;
    }
    Ok(())
}

/// An IPv4 header from the frontend back to the client, checksum filled in.
#[inline(always)]
fn ip_header(flow: &Ipv4Flow, total_len: u16, protocol: u8) -> [u8; IPV4_MIN_HLEN] {
    let saddr = flow.daddr_be.to_ne_bytes();
    let daddr = flow.saddr_be.to_ne_bytes();
    let len = total_len.to_be_bytes();
    let frag = IP_DF.to_be_bytes();
    let mut ip: [u8; IPV4_MIN_HLEN] = [
        0x45, 0, len[0], len[1], 0, 0, frag[0], frag[1], TTL, protocol, 0, 0, saddr[0], saddr[1],
        saddr[2], saddr[3], daddr[0], daddr[1], daddr[2], daddr[3],
    ];
    let sum = csum::finish(csum::add_words(&ip, 0));
    ip[10] = sum[0];
    ip[11] = sum[1];
    ip
}

/// The Ethernet header back to the sender: the MAC addresses swap.
#[inline(always)]
fn write_eth_back<P: Packet>(
    pkt: &P,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
) -> Result<(), DropReason> {
    pkt.write(ETH_DEST_OFF, &src_mac)?;
    pkt.write(ETH_SOURCE_OFF, &dst_mac)?;
    pkt.write(ETH_PROTO_OFF, &ETH_P_IP.to_be())
}

/// Rewrites a TCP segment into the reset that answers it.
#[inline(always)]
pub fn tcp_reset<P: Packet>(pkt: &P, flow: &Ipv4Flow) -> Result<(), DropReason> {
    if flow.tcp_flags & TCP_RST != 0 {
        // Never answer a reset with a reset.
        return Err(DropReason::NoBackendDrop);
    }
    spend_answer()?;
    let dst_mac: [u8; 6] = pkt.read(ETH_DEST_OFF)?;
    let src_mac: [u8; 6] = pkt.read(ETH_SOURCE_OFF)?;
    let their_seq = u32::from_be(pkt.read::<u32>(flow.l4_off + TCP_SEQ_AT)?);
    let their_ack: u32 = pkt.read(flow.l4_off + TCP_ACK_SEQ_AT)?;
    let headers = (flow.l4_off - IP_OFF) as u32 + u32::from(flow.l4_hlen);
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

    let ip = ip_header(flow, RESET_LEN as u16, proto::TCP);
    let sport = flow.dport_be.to_ne_bytes();
    let dport = flow.sport_be.to_ne_bytes();
    let seq = seq_be.to_ne_bytes();
    let ack = ack_be.to_ne_bytes();
    let mut tcp: [u8; TCP_MIN_HLEN] = [
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
    let sum = csum::finish(csum::add_words(
        &tcp,
        csum::pseudo_header(
            flow.daddr_be.to_ne_bytes(),
            flow.saddr_be.to_ne_bytes(),
            proto::TCP,
            TCP_MIN_HLEN as u16,
        ),
    ));
    tcp[16] = sum[0];
    tcp[17] = sum[1];

    pkt.resize(ETH_HLEN + RESET_LEN)?;
    write_eth_back(pkt, dst_mac, src_mac)?;
    pkt.write(IP_OFF, &ip)?;
    pkt.write(IP_OFF + IPV4_MIN_HLEN, &tcp)
}

/// Rewrites a UDP datagram into the ICMP port unreachable that answers it:
/// the original IP header and first 8 bytes of UDP ride along, so the
/// client's stack finds the socket.
#[inline(always)]
pub fn udp_unreachable<P: Packet>(pkt: &P, flow: &Ipv4Flow) -> Result<(), DropReason> {
    let answer = (ICMP_DEST_UNREACH, ICMP_PORT_UNREACH);
    icmp_error(pkt, flow, answer, [0; 4], DropReason::NoBackendDrop)
}

/// Rewrites a packet too big for its route into the ICMP fragmentation
/// needed that answers it, with the route's MTU (RFC 1191). It quotes the
/// packet as its sender sent it, before any translation, so the sender's
/// stack finds the socket and lowers that path's MTU.
#[inline(always)]
pub fn fragmentation_needed<P: Packet>(
    pkt: &P,
    flow: &Ipv4Flow,
    mtu: u16,
) -> Result<(), DropReason> {
    let answer = (ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED);
    let mtu = mtu.to_be_bytes();
    icmp_error(
        pkt,
        flow,
        answer,
        [0, 0, mtu[0], mtu[1]],
        DropReason::FragmentationNeeded,
    )
}

/// Rewrites a packet whose TTL runs out here into the ICMP time exceeded
/// that answers it (RFC 792), quoting it as its sender sent it: what a
/// router answers, and what traceroute counts hops by.
#[inline(always)]
pub fn time_exceeded<P: Packet>(pkt: &P, flow: &Ipv4Flow) -> Result<(), DropReason> {
    let answer = (ICMP_TIME_EXCEEDED, ICMP_EXC_TTL);
    icmp_error(pkt, flow, answer, [0; 4], DropReason::TimeExceeded)
}

/// An ICMP error of `(type, code)` (RFC 792), from the address the packet
/// was sent to: its IP header and first 8 bytes of L4 quoted, `rest` in
/// bytes 4-7 of the ICMP header (the next hop's MTU for fragmentation
/// needed, else zero). A packet with IP options, which would have to ride
/// along too, is rare enough to be dropped instead, counted as
/// `unanswered`.
#[inline(always)]
fn icmp_error<P: Packet>(
    pkt: &P,
    flow: &Ipv4Flow,
    (kind, code): (u8, u8),
    rest: [u8; 4],
    unanswered: DropReason,
) -> Result<(), DropReason> {
    if flow.l4_off != IP_OFF + IPV4_MIN_HLEN {
        return Err(unanswered);
    }
    spend_answer()?;
    let dst_mac: [u8; 6] = pkt.read(ETH_DEST_OFF)?;
    let src_mac: [u8; 6] = pkt.read(ETH_SOURCE_OFF)?;
    let original: [u8; QUOTE_LEN] = pkt.read(IP_OFF)?;

    let ip = ip_header(flow, ICMP_ERROR_LEN as u16, proto::ICMP);
    let mut icmp: [u8; ICMP_HLEN] = [kind, code, 0, 0, rest[0], rest[1], rest[2], rest[3]];
    let sum = csum::finish(csum::add_words(&original, csum::add_words(&icmp, 0)));
    icmp[2] = sum[0];
    icmp[3] = sum[1];

    pkt.resize(ETH_HLEN + ICMP_ERROR_LEN)?;
    write_eth_back(pkt, dst_mac, src_mac)?;
    pkt.write(IP_OFF, &ip)?;
    pkt.write(IP_OFF + IPV4_MIN_HLEN, &icmp)?;
    pkt.write(IP_OFF + IPV4_MIN_HLEN + ICMP_HLEN, &original)
}
