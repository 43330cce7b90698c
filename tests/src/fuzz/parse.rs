//! The datapath's parse, as designed (svc-ebpf packet.rs): which frames
//! are malformed and dropped, which are not the load balancer's and pass
//! untouched, and the tuple of the rest.
use super::frames::{ICMP, TCP, Tuple, UDP, addr, be16};

/// Where the IP header starts: after an untagged Ethernet header.
pub(super) const IP: usize = 14;

/// A frame the load balancer considers.
pub(super) enum Parsed {
    /// An IPv4 TCP or UDP packet: its L4 offset and tuple.
    Flow { l4: usize, tuple: Tuple },
    /// An ICMP error (destination unreachable, time exceeded, parameter
    /// problem) quoting a TCP or UDP packet.
    IcmpError(Quote),
}

/// Where an ICMP error's parts are, and the tuple of the packet it quotes.
pub(super) struct Quote {
    pub(super) icmp: usize,
    /// The quoted IP header, and its L4 header (the ports at least).
    pub(super) inner: usize,
    pub(super) inner_l4: usize,
    pub(super) end: usize,
    pub(super) tuple: Tuple,
}

/// A frame the load balancer does not consider.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Unparsed {
    /// Claims to be IPv4 TCP/UDP/ICMP error and is not well formed.
    Malformed,
    /// Not IPv4, a fragment, another protocol or ICMP message.
    Other,
}

pub(super) fn parse(frame: &[u8]) -> Result<Parsed, Unparsed> {
    use Unparsed::{Malformed, Other};
    if frame.len() < IP || be16(frame, 12) != 0x0800 {
        return Err(Other);
    }
    if frame.len() < IP + 20 {
        return Err(Malformed);
    }
    let ihl = usize::from(frame[IP] & 0x0f) * 4;
    if frame[IP] >> 4 != 4 || ihl < 20 {
        return Err(Malformed);
    }
    let total = usize::from(be16(frame, IP + 2));
    if total < ihl || IP + total > frame.len() {
        return Err(Malformed);
    }
    if be16(frame, IP + 6) & 0x3fff != 0 {
        return Err(Other);
    }
    let l4 = IP + ihl;
    let l4_len = total - ihl;
    let proto = frame[IP + 9];
    match proto {
        TCP => {
            if l4 + 14 > frame.len() {
                return Err(Malformed);
            }
            let header = usize::from(frame[l4 + 12] >> 4) * 4;
            if header < 20 || header > l4_len {
                return Err(Malformed);
            }
        }
        UDP => {
            if l4 + 8 > frame.len() {
                return Err(Malformed);
            }
            let length = usize::from(be16(frame, l4 + 4));
            if length < 8 || length > l4_len {
                return Err(Malformed);
            }
        }
        ICMP => return icmp_error(frame, l4, IP + total).map(Parsed::IcmpError),
        _ => return Err(Other),
    }
    Ok(Parsed::Flow {
        l4,
        tuple: tuple_at(frame, IP, l4),
    })
}

/// The tuple of the IP header at `ip` and the ports at `l4`.
pub(super) fn tuple_at(frame: &[u8], ip: usize, l4: usize) -> Tuple {
    Tuple {
        src: (addr(frame, ip + 12), be16(frame, l4)),
        dst: (addr(frame, ip + 16), be16(frame, l4 + 2)),
        proto: frame[ip + 9],
    }
}

/// ICMP errors quoting a TCP or UDP packet are parsed further: a quote
/// too short to hold the ports is malformed.
fn icmp_error(frame: &[u8], icmp: usize, end: usize) -> Result<Quote, Unparsed> {
    use Unparsed::{Malformed, Other};
    if icmp + 2 > frame.len() {
        return Err(Malformed);
    }
    if ![3, 11, 12].contains(&frame[icmp]) {
        return Err(Other);
    }
    let inner = icmp + 8;
    if inner + 2 > frame.len() {
        return Err(Malformed);
    }
    let inner_ihl = usize::from(frame[inner] & 0x0f) * 4;
    if frame[inner] >> 4 != 4 || inner_ihl < 20 {
        return Err(Malformed);
    }
    if inner + 10 > frame.len() {
        return Err(Malformed);
    }
    if ![TCP, UDP].contains(&frame[inner + 9]) {
        return Err(Other);
    }
    let inner_l4 = inner + inner_ihl;
    if inner_l4 + 8 > end {
        return Err(Malformed);
    }
    Ok(Quote {
        icmp,
        inner,
        inner_l4,
        end,
        tuple: tuple_at(frame, inner, inner_l4),
    })
}
