//! Header parsing shared by every attach point. Reads go through [`Packet`],
//! so each program type supplies its own bounds-checked access; every offset
//! comes from the headers themselves (the IPv4 IHL is honoured).
use aya_ebpf::bindings::bpf_fib_lookup;
use svc_common::{DropReason, proto};

use crate::headers::{
    ETH_P_IP, ETH_PROTO_OFF, ICMP_DEST_UNREACH, ICMP_HLEN, ICMP_PARAMETER_PROBLEM, ICMP_QUOTED_L4,
    ICMP_TIME_EXCEEDED, IP_DF, IP_MF_OFFSET_MASK, IP_OFF, IPV4_DADDR_AT, IPV4_MIN_HLEN,
    IPV4_SADDR_AT, IPV4_TTL_AT, Ipv4Header, L4_DPORT_AT, TCP_CSUM_AT, TCP_FIN, TCP_MIN_HLEN,
    TCP_SYN, TcpHead, UDP_CSUM_AT, UDP_HLEN, UdpHeader,
};

/// Bounds-checked access to packet bytes, and the rewrites NAT needs. Each
/// attach point implements it with its own primitives (skb helpers for TC,
/// direct access for XDP).
pub trait Packet {
    /// Whether this program type can send to a next hop whose MAC address
    /// is not known yet (TC: bpf_redirect_neigh; XDP cannot).
    const RESOLVES_NEIGHBOURS: bool;
    /// Whether this program type can send a packet out of any interface
    /// (TC); else only out of those [`Self::listed_target`] says. Test it
    /// first, as a constant, where the check is made: the TC programs,
    /// whose stack has no room to spare, then get none of the check's code
    /// (a method doing both, even inlined, costs them stack).
    const SENDS_ANYWHERE: bool;
    /// Whether the program has stack to spare beyond the translation's
    /// (XDP); the TC programs have none, and skip what only improves a
    /// path (the MSS clamp of tunnelled SYNs, which path MTU discovery
    /// stands in for). A constant, for the same reason as the one above.
    const SPARE_STACK: bool;
    /// Reads a `T` at `offset`, or fails when the packet is shorter. `T` is
    /// at least two bytes: byte fields are read in pairs (see ctx_tc.rs).
    fn read<T: Copy>(&self, offset: usize) -> Result<T, DropReason>;
    /// Length of the whole packet (link layer included).
    fn len(&self) -> usize;
    /// Writes `value` at `offset`; checksums are not touched.
    fn write<T: Copy>(&self, offset: usize, value: &T) -> Result<(), DropReason>;
    /// Folds the change of a `size`-byte (2 or 4) field from `old` to `new`
    /// into the checksum at `csum_off` (an IPv4 header checksum, or ICMP's).
    fn update_l3_csum(
        &self,
        csum_off: usize,
        old: u32,
        new: u32,
        size: u8,
    ) -> Result<(), DropReason>;
    /// The same for an L4 checksum: `size` is 2 or 4 bytes, `pseudo` when the
    /// field is part of the pseudo header (addresses), `udp` when a zero
    /// checksum means "none" and must stay so.
    fn update_l4_csum(
        &self,
        csum_off: usize,
        old: u32,
        new: u32,
        size: u8,
        pseudo: bool,
        udp: bool,
    ) -> Result<(), DropReason>;
    /// The L4 checksum update for an endpoint (address and port, both
    /// source or both destination) rewritten from `old` to `new`, network
    /// order; the address is part of the pseudo header. Program types that
    /// can do it in one read-modify-write override this.
    #[inline(always)]
    fn update_l4_csum_endpoint(
        &self,
        csum_off: usize,
        (old_addr_be, old_port_be): (u32, u16),
        (new_addr_be, new_port_be): (u32, u16),
        udp: bool,
    ) -> Result<(), DropReason> {
        if old_addr_be != new_addr_be {
            self.update_l4_csum(csum_off, old_addr_be, new_addr_be, 4, true, udp)?;
        }
        if old_port_be != new_port_be {
            let (old, new) = (u32::from(old_port_be), u32::from(new_port_be));
            self.update_l4_csum(csum_off, old, new, 2, false, udp)?;
        }
        Ok(())
    }
    /// Rewrites the packet's addresses and ports to `to`'s. Program types
    /// whose checksums are plain packet bytes (XDP) fold `to`'s summed
    /// checksum changes in at once; with an skb, whose checksum state
    /// (CHECKSUM_PARTIAL) treats address and port changes differently, each
    /// change goes through the helpers.
    fn rewrite_summed(&self, flow: &Ipv4Flow, to: &SummedRewrite) -> Result<(), DropReason>;
    /// Cuts or grows the packet to `len` bytes.
    fn resize(&self, len: usize) -> Result<(), DropReason>;
    /// Makes room for an IPv4 header of `bytes` between the Ethernet header
    /// (which stays first, as it was) and the IP packet: an encapsulation.
    fn push_outer_ipv4(&self, bytes: u32) -> Result<(), DropReason>;
    /// The interface the packet arrived on.
    fn ingress_ifindex(&self) -> u32;
    /// Whether XDP_TARGETS_V1 lists `ifindex`: an XDP program's packet sent
    /// out of it (or back out of the one it came in on) gets there, through
    /// a driver that transmits XDP frames. Elsewhere the packet must go on
    /// untouched to the TC program.
    fn listed_target(&self, ifindex: u32) -> bool;
    /// For a GSO packet (TC only: locally made with TSO, or merged by GRO),
    /// the payload of each segment the kernel will cut it into; else 0.
    fn gso_size(&self) -> u32;
    /// `bpf_fib_lookup` for this packet's context.
    fn fib_lookup(&self, params: &mut bpf_fib_lookup) -> i64;
    /// XDP: marks a packet this program translated and passes to the stack
    /// (in its metadata, which the skb keeps), so the NIC's TC program
    /// behind it need not look it up again and may send it straight into
    /// its pod (see route.rs `into_pod`). Best effort; TC: nothing.
    fn mark_translated(&self);
    /// TC: whether the XDP program in front marked this packet (see
    /// [`Self::mark_translated`]). XDP: false.
    fn translated_by_xdp(&self) -> bool;
}

/// Where a packet entered the node.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Sent by a pod on this node (TC on the pod's veth).
    Pod,
    /// Arrived on a node interface from the network (XDP on the NIC).
    World,
}

/// A packet's new addresses and ports (network order; equal to the old
/// ones where that side does not change), with what the change adds to
/// the IPv4 header checksum and to the L4 checksum, summed beforehand
/// (csum.rs `change`s): what the flow cache keeps (cache.rs).
#[derive(Clone, Copy)]
pub struct SummedRewrite {
    pub saddr_be: u32,
    pub daddr_be: u32,
    pub sport_be: u16,
    pub dport_be: u16,
    pub l3_csum_change: u32,
    pub l4_csum_change: u32,
}

/// What a packet is, as far as the load balancer cares.
pub enum Parsed {
    /// Not IPv4 TCP/UDP/ICMP error, or a fragment: not ours to translate.
    Other,
    Ipv4(Ipv4Flow),
    /// An ICMP error quoting a TCP/UDP packet (maybe of a translated flow).
    IcmpError(IcmpError),
}

/// An ICMP destination unreachable / time exceeded / parameter problem,
/// and the header of the packet it is about.
#[derive(Clone, Copy)]
pub struct IcmpError {
    pub icmp_off: usize,
    pub saddr_be: u32,
    pub daddr_be: u32,
    pub ip_len: u16,
    /// The quoted packet: its IP header offset and L4 offset, as it was
    /// sent (client → backend, or node → backend with SNAT).
    pub inner_ip_off: usize,
    pub inner_l4_off: usize,
    pub inner_saddr_be: u32,
    pub inner_daddr_be: u32,
    pub inner_sport_be: u16,
    pub inner_dport_be: u16,
    pub inner_proto: u8,
}

/// An IPv4 TCP or UDP packet, fields as on the wire.
#[derive(Clone, Copy)]
pub struct Ipv4Flow {
    pub l4_off: usize,
    /// Bytes of the IP datagram (header included), from `tot_len`; an IPv4
    /// BIG TCP packet (see [`datagram_len`]) counts as 65 535, which is all
    /// its users need: its segments' length for the route, a sequence
    /// number within a RST's window, a lower bound for the counters.
    pub ip_len: u16,
    pub saddr_be: u32,
    pub daddr_be: u32,
    pub proto: u8,
    pub sport_be: u16,
    pub dport_be: u16,
    /// TCP flags byte; 0 for UDP.
    pub tcp_flags: u8,
    /// TCP sequence number (network order); 0 for UDP.
    pub tcp_seq_be: u32,
    /// Bytes of the TCP or UDP header.
    pub l4_hlen: u8,
    /// The sender set Don't Fragment: too big for a route, the packet is
    /// answered with ICMP fragmentation needed (path MTU discovery).
    pub dont_fragment: bool,
    /// Time to live as it arrived: at 1 or less, a packet the node would
    /// forward is answered with ICMP time exceeded.
    pub ttl: u8,
}

impl Ipv4Flow {
    /// TCP: the sequence number after this segment (its payload, and one
    /// each for SYN and FIN).
    #[inline(always)]
    pub fn tcp_seq_end(&self) -> u32 {
        let headers = (self.l4_off - IP_OFF) as u32 + u32::from(self.l4_hlen);
        let payload = u32::from(self.ip_len).saturating_sub(headers);
        let flags =
            u32::from(self.tcp_flags & TCP_SYN != 0) + u32::from(self.tcp_flags & TCP_FIN != 0);
        u32::from_be(self.tcp_seq_be)
            .wrapping_add(payload)
            .wrapping_add(flags)
    }

    /// Offset of the L4 checksum field.
    pub fn l4_csum_off(&self) -> usize {
        if self.proto == proto::TCP {
            self.l4_off + TCP_CSUM_AT
        } else {
            self.l4_off + UDP_CSUM_AT
        }
    }
}

/// Parses Ethernet + IPv4 + TCP/UDP. Errors only for packets that claim to be
/// IPv4 TCP/UDP and are not well formed; those are dropped, so no half-parsed
/// packet is ever rewritten. Each header is one read (one bounds check),
/// its fields taken from the copy.
#[inline(always)]
pub fn parse<P: Packet>(pkt: &P) -> Result<Parsed, DropReason> {
    let ether_type: u16 = pkt.read(ETH_PROTO_OFF)?;
    if ether_type != ETH_P_IP.to_be() {
        return Ok(Parsed::Other);
    }
    let ip: Ipv4Header = pkt.read(IP_OFF)?;
    if ip.version_ihl >> 4 != 4 {
        return Err(DropReason::Malformed);
    }
    let ihl = usize::from(ip.version_ihl & 0x0f) * 4;
    if ihl < IPV4_MIN_HLEN {
        return Err(DropReason::Malformed);
    }
    let ip_len = datagram_len(pkt, u16::from_be(ip.tot_len_be));
    if (ip_len as usize) < ihl || IP_OFF + ip_len as usize > pkt.len() {
        return Err(DropReason::Malformed);
    }
    let frag_off = u16::from_be(ip.frag_off_be);
    if frag_off & IP_MF_OFFSET_MASK != 0 {
        // Fragments carry no (or only the first) L4 header; they pass to the
        // stack untranslated.
        return Ok(Parsed::Other);
    }
    let (saddr_be, daddr_be) = (ip.saddr_be, ip.daddr_be);
    let l4_off = IP_OFF + ihl;
    let l4_len = ip_len as usize - ihl;
    let (sport_be, dport_be, tcp_flags, tcp_seq_be, l4_hlen) = match ip.proto {
        proto::TCP => {
            let tcp: TcpHead = pkt.read(l4_off)?;
            let tcp_hlen = usize::from(tcp.data_off >> 4) * 4;
            if tcp_hlen < TCP_MIN_HLEN || tcp_hlen > l4_len {
                return Err(DropReason::Malformed);
            }
            (
                tcp.sport_be,
                tcp.dport_be,
                tcp.flags,
                tcp.seq_be,
                tcp_hlen as u8,
            )
        }
        proto::UDP => {
            let udp: UdpHeader = pkt.read(l4_off)?;
            let udp_len = usize::from(u16::from_be(udp.len_be));
            if udp_len < UDP_HLEN || udp_len > l4_len {
                return Err(DropReason::Malformed);
            }
            (udp.sport_be, udp.dport_be, 0, 0, UDP_HLEN as u8)
        }
        proto::ICMP => {
            // No ICMP message is a GSO packet: its length fits `tot_len`.
            let ip_len = u16::try_from(ip_len).map_err(|_| DropReason::Malformed)?;
            return parse_icmp_error(pkt, l4_off, ip_len, saddr_be, daddr_be);
        }
        _ => return Ok(Parsed::Other),
    };
    Ok(Parsed::Ipv4(Ipv4Flow {
        l4_off,
        ip_len: ip_len.min(u32::from(u16::MAX)) as u16,
        saddr_be,
        daddr_be,
        proto: ip.proto,
        sport_be,
        dport_be,
        tcp_flags,
        tcp_seq_be,
        l4_hlen,
        dont_fragment: frag_off & IP_DF != 0,
        ttl: ip.ttl,
    }))
}

/// The length of the IP datagram whose header says `tot_len`. A GSO packet
/// bigger than `tot_len` can say (IPv4 BIG TCP: built by the stack of a
/// device with `gso_ipv4_max_size` over 64 KiB, or merged by GRO up to
/// `gro_ipv4_max_size`) carries 0 there, and fills the rest of the buffer;
/// the kernel reads it the same way (`skb_ip_totlen`). Only an skb can be
/// one: in XDP, 0 stays a malformed length.
#[inline(always)]
fn datagram_len<P: Packet>(pkt: &P, tot_len: u16) -> u32 {
    if tot_len == 0 && pkt.gso_size() != 0 {
        pkt.len().saturating_sub(IP_OFF) as u32
    } else {
        u32::from(tot_len)
    }
}

/// ICMP errors quoting a TCP or UDP packet; other ICMP is not ours. A quote
/// cut too short to hold the ports is malformed.
#[inline(always)]
fn parse_icmp_error<P: Packet>(
    pkt: &P,
    icmp_off: usize,
    ip_len: u16,
    saddr_be: u32,
    daddr_be: u32,
) -> Result<Parsed, DropReason> {
    // Reads at offsets the packet decides are at least 2 bytes wide: LLVM
    // turns a 1-byte bounds check `p + 1 > end` into `p >= end`, which the
    // verifier does not take as a proof of one readable byte.
    let [icmp_type, _code]: [u8; 2] = pkt.read(icmp_off)?;
    if icmp_type != ICMP_DEST_UNREACH
        && icmp_type != ICMP_TIME_EXCEEDED
        && icmp_type != ICMP_PARAMETER_PROBLEM
    {
        return Ok(Parsed::Other);
    }
    let inner_ip_off = icmp_off + ICMP_HLEN;
    let [version_ihl, _tos]: [u8; 2] = pkt.read(inner_ip_off)?;
    let inner_ihl = usize::from(version_ihl & 0x0f) * 4;
    if version_ihl >> 4 != 4 || inner_ihl < IPV4_MIN_HLEN {
        return Err(DropReason::Malformed);
    }
    let [_ttl, inner_proto]: [u8; 2] = pkt.read(inner_ip_off + IPV4_TTL_AT)?;
    if inner_proto != proto::TCP && inner_proto != proto::UDP {
        return Ok(Parsed::Other);
    }
    let inner_l4_off = inner_ip_off + inner_ihl;
    // The quote holds at least the first bytes of L4: the ports.
    if inner_l4_off + ICMP_QUOTED_L4 > IP_OFF + usize::from(ip_len) {
        return Err(DropReason::Malformed);
    }
    Ok(Parsed::IcmpError(IcmpError {
        icmp_off,
        saddr_be,
        daddr_be,
        ip_len,
        inner_ip_off,
        inner_l4_off,
        inner_saddr_be: pkt.read(inner_ip_off + IPV4_SADDR_AT)?,
        inner_daddr_be: pkt.read(inner_ip_off + IPV4_DADDR_AT)?,
        inner_sport_be: pkt.read(inner_l4_off)?,
        inner_dport_be: pkt.read(inner_l4_off + L4_DPORT_AT)?,
        inner_proto,
    }))
}
