//! Frames as the fuzzer builds and rewrites them: tuples, checksums
//! (RFC 1071, RFC 1624), well-formed TCP and UDP packets.
use std::net::Ipv4Addr;

use svc_agent::model::Protocol;

use super::rng::Rng;

/// (address, port) of one end.
pub(super) type End = (Ipv4Addr, u16);

/// One direction of a flow: source, destination, protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Tuple {
    pub(super) src: End,
    pub(super) dst: End,
    pub(super) proto: u8,
}

pub(super) const TCP: u8 = 6;
pub(super) const UDP: u8 = 17;
pub(super) const ICMP: u8 = 1;
pub(super) const IPIP: u8 = 4;
pub(super) const SCTP: u8 = 132;

pub(super) fn proto_number(protocol: Protocol) -> u8 {
    match protocol {
        Protocol::TCP => TCP,
        Protocol::UDP => UDP,
        Protocol::SCTP => SCTP,
    }
}

pub(super) fn be16(frame: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([frame[at], frame[at + 1]])
}

pub(super) fn addr(frame: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(frame[at], frame[at + 1], frame[at + 2], frame[at + 3])
}

/// One's complement sum of the 16-bit words of `bytes`.
pub(super) fn ones_sum(bytes: &[u8]) -> u32 {
    bytes
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum()
}

pub(super) fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// RFC 1624 (eqn. 3): the checksum `old` after the words `from` became
/// `to`: HC' = ~(~HC + ~m + m').
pub(super) fn updated_checksum(old: u16, from: &[u8], to: &[u8]) -> u16 {
    let not_from: u32 = from
        .chunks(2)
        .map(|w| u32::from(!u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    !fold(u32::from(!old) + not_from + ones_sum(to))
}

/// `frame` with its source and destination made `source` and
/// `destination`, checksums updated (a UDP datagram without a checksum
/// keeps none; one whose checksum comes to 0 gets 0xffff).
pub(super) fn rewrite(frame: &[u8], source: End, destination: End) -> Vec<u8> {
    let mut out = frame.to_vec();
    let l4 = 14 + usize::from(frame[14] & 0x0f) * 4;
    let proto = frame[23];
    let mut old_words = Vec::new();
    let mut new_words = Vec::new();
    old_words.extend_from_slice(&frame[26..34]);
    out[26..30].copy_from_slice(&source.0.octets());
    out[30..34].copy_from_slice(&destination.0.octets());
    new_words.extend_from_slice(&out[26..34]);
    let ip_csum = updated_checksum(be16(frame, 24), &frame[26..34], &out[26..34]);
    out[24..26].copy_from_slice(&ip_csum.to_be_bytes());
    old_words.extend_from_slice(&frame[l4..l4 + 4]);
    out[l4..l4 + 2].copy_from_slice(&source.1.to_be_bytes());
    out[l4 + 2..l4 + 4].copy_from_slice(&destination.1.to_be_bytes());
    new_words.extend_from_slice(&out[l4..l4 + 4]);
    let csum_at = if proto == TCP { l4 + 16 } else { l4 + 6 };
    let old = be16(frame, csum_at);
    if proto == UDP && old == 0 {
        return out;
    }
    let mut new = updated_checksum(old, &old_words, &new_words);
    if proto == UDP && new == 0 {
        new = 0xffff;
    }
    out[csum_at..csum_at + 2].copy_from_slice(&new.to_be_bytes());
    out
}

pub(super) fn set_addr(frame: &mut [u8], at: usize, address: Ipv4Addr) {
    frame[at..at + 4].copy_from_slice(&address.octets());
}

pub(super) fn set_port(frame: &mut [u8], at: usize, port: u16) {
    frame[at..at + 2].copy_from_slice(&port.to_be_bytes());
}

/// An ICMP error from `src` to `dst` of `kind` (type, code), `rest` the
/// four header bytes after the checksum, quoting `quote`; checksums
/// correct.
pub(super) fn icmp_frame(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    kind: (u8, u8),
    rest: [u8; 4],
    quote: &[u8],
) -> Vec<u8> {
    let mut frame = crate::icmp_error_frame(src, dst, kind, quote);
    let icmp = 14 + 20;
    let csum = updated_checksum(be16(&frame, icmp + 2), &frame[icmp + 4..icmp + 8], &rest);
    frame[icmp + 4..icmp + 8].copy_from_slice(&rest);
    frame[icmp + 2..icmp + 4].copy_from_slice(&csum.to_be_bytes());
    frame
}

/// Checks an ICMP error frame's checksums from scratch: its IP header's,
/// the ICMP message's and the quoted IP header's.
pub(super) fn verify_icmp_checksums(frame: &[u8]) -> Result<(), String> {
    let icmp = 14 + usize::from(frame[14] & 0x0f) * 4;
    let end = 14 + usize::from(be16(frame, 16));
    let inner = icmp + 8;
    let inner_end = inner + usize::from(frame[inner] & 0x0f) * 4;
    let parts = [
        ("IPv4 header", 14, icmp),
        ("ICMP", icmp, end),
        ("quoted IPv4 header", inner, inner_end),
    ];
    match parts
        .into_iter()
        .find(|(_, from, to)| fold(ones_sum(&frame[*from..*to])) != 0xffff)
    {
        Some((what, ..)) => Err(format!("{what} checksum")),
        None => Ok(()),
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Builds an Ethernet + IPv4 frame: `ihl_words` 32-bit words of IP
/// header (options are NOPs), the L4 bytes as given (checksums correct).
pub(super) fn ipv4_frame(tuple: &Tuple, l4: Vec<u8>, ihl_words: u8, ttl: u8, frag: u16) -> Vec<u8> {
    let ihl = usize::from(ihl_words) * 4;
    let total = ihl + l4.len();
    let mut frame = vec![0u8; 14 + total];
    frame[0..6].copy_from_slice(&crate::HOST_MAC);
    frame[6..12].copy_from_slice(&crate::POD_MAC);
    frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = 14;
    frame[ip] = 0x40 | ihl_words;
    frame[ip + 2..ip + 4].copy_from_slice(&(total as u16).to_be_bytes());
    frame[ip + 4..ip + 6].copy_from_slice(&0x1234u16.to_be_bytes());
    frame[ip + 6..ip + 8].copy_from_slice(&frag.to_be_bytes());
    frame[ip + 8] = ttl;
    frame[ip + 9] = tuple.proto;
    frame[ip + 12..ip + 16].copy_from_slice(&tuple.src.0.octets());
    frame[ip + 16..ip + 20].copy_from_slice(&tuple.dst.0.octets());
    for byte in &mut frame[ip + 20..ip + ihl] {
        *byte = 1;
    }
    let l4_at = ip + ihl;
    frame[l4_at..].copy_from_slice(&l4);
    let ip_csum = !fold(ones_sum(&frame[ip..ip + ihl]));
    frame[ip + 10..ip + 12].copy_from_slice(&ip_csum.to_be_bytes());
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&tuple.src.0.octets());
    pseudo.extend_from_slice(&tuple.dst.0.octets());
    pseudo.extend_from_slice(&[0, tuple.proto]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    let csum_at = match tuple.proto {
        TCP => Some(l4_at + 16),
        UDP => Some(l4_at + 6),
        _ => None,
    };
    if let Some(at) = csum_at
        && at + 2 <= frame.len()
    {
        let mut sum = !fold(ones_sum(&pseudo) + ones_sum(&frame[l4_at..]));
        if tuple.proto == UDP && sum == 0 {
            sum = 0xffff;
        }
        frame[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    }
    frame
}

/// TCP header (no options) and payload; checksum left for [`ipv4_frame`].
pub(super) fn tcp_l4(tuple: &Tuple, flags: u8, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut l4 = vec![0u8; 20];
    l4[0..2].copy_from_slice(&tuple.src.1.to_be_bytes());
    l4[2..4].copy_from_slice(&tuple.dst.1.to_be_bytes());
    l4[4..8].copy_from_slice(&seq.to_be_bytes());
    l4[8..12].copy_from_slice(&7u32.to_be_bytes());
    l4[12] = 5 << 4;
    l4[13] = flags;
    l4[14..16].copy_from_slice(&64240u16.to_be_bytes());
    l4.extend_from_slice(payload);
    l4
}

pub(super) fn udp_l4(tuple: &Tuple, payload: &[u8]) -> Vec<u8> {
    let mut l4 = vec![0u8; 8];
    l4[0..2].copy_from_slice(&tuple.src.1.to_be_bytes());
    l4[2..4].copy_from_slice(&tuple.dst.1.to_be_bytes());
    l4[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    l4.extend_from_slice(payload);
    l4
}

pub(super) const SYN: u8 = 0x02;
pub(super) const ACK: u8 = 0x10;
pub(super) const PSH: u8 = 0x08;

/// A well-formed frame of `tuple`: TCP (SYN when `opening`, else ACK, with
/// or without data) or UDP.
pub(super) fn packet(
    rng: &mut Rng,
    tuple: &Tuple,
    opening: bool,
    ihl_words: u8,
    ttl: u8,
) -> Vec<u8> {
    let length = rng.below(64);
    let payload = rng.bytes(length);
    let l4 = if tuple.proto == TCP {
        let flags = if opening {
            SYN
        } else if payload.is_empty() {
            ACK
        } else {
            ACK | PSH
        };
        tcp_l4(tuple, flags, rng.next_u64() as u32, &payload)
    } else {
        udp_l4(tuple, &payload)
    };
    ipv4_frame(tuple, l4, ihl_words, ttl, 0)
}
