//! The protocol headers the programs read and write: their layouts, field
//! offsets and the values they compare fields with, each defined once. IP
//! protocol numbers are svc_common::proto (the agent writes them too).
//! `*_AT` is a field's offset from its header's start, `*_OFF` from the
//! frame's.

/// Ethernet: destination MAC, source MAC, EtherType.
pub const ETH_HLEN: usize = 14;
pub const ETH_DEST_OFF: usize = 0;
pub const ETH_SOURCE_OFF: usize = 6;
pub const ETH_PROTO_OFF: usize = 12;
/// EtherType of IPv4.
pub const ETH_P_IP: u16 = 0x0800;

/// IPv4 header (without options), its fields, and where they are in the
/// frame.
pub const IPV4_MIN_HLEN: usize = 20;
/// The TTL, followed by the protocol.
pub const IPV4_TTL_AT: usize = 8;
pub const IPV4_CSUM_AT: usize = 10;
pub const IPV4_SADDR_AT: usize = 12;
pub const IPV4_DADDR_AT: usize = 16;
pub const IP_OFF: usize = ETH_HLEN;
pub const IP_TTL_OFF: usize = IP_OFF + IPV4_TTL_AT;
pub const IP_CSUM_OFF: usize = IP_OFF + IPV4_CSUM_AT;
pub const IP_SADDR_OFF: usize = IP_OFF + IPV4_SADDR_AT;
pub const IP_DADDR_OFF: usize = IP_OFF + IPV4_DADDR_AT;
/// Don't Fragment, in `frag_off` (host order).
pub const IP_DF: u16 = 0x4000;
/// More-fragments flag and fragment offset bits of `frag_off`.
pub const IP_MF_OFFSET_MASK: u16 = 0x3fff;

/// TCP and UDP both start with the source port, then the destination's.
pub const L4_DPORT_AT: usize = 2;

pub const TCP_MIN_HLEN: usize = 20;
pub const TCP_SEQ_AT: usize = 4;
pub const TCP_ACK_SEQ_AT: usize = 8;
pub const TCP_CSUM_AT: usize = 16;
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;
/// TCP options (RFC 9293): end of list, no-operation, maximum segment size
/// (kind, length 4, the size).
pub const TCPOPT_EOL: u8 = 0;
pub const TCPOPT_NOP: u8 = 1;
pub const TCPOPT_MSS: u8 = 2;
pub const TCPOLEN_MSS: u8 = 4;

pub const UDP_HLEN: usize = 8;
pub const UDP_CSUM_AT: usize = 6;

/// ICMP header: type, code, checksum, 4 bytes that depend on the type.
pub const ICMP_HLEN: usize = 8;
pub const ICMP_CSUM_AT: usize = 2;
/// How much of the L4 header an ICMP error quotes at least, after the IP
/// header (RFC 792: 64 bits): the ports.
pub const ICMP_QUOTED_L4: usize = 8;
/// ICMP types (RFC 792) and the codes of them the programs send.
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_PORT_UNREACH: u8 = 3;
pub const ICMP_FRAG_NEEDED: u8 = 4;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_EXC_TTL: u8 = 0;
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;

/// The fixed part of an IPv4 header, as on the wire.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ipv4Header {
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len_be: u16,
    pub id_be: u16,
    pub frag_off_be: u16,
    pub ttl: u8,
    pub proto: u8,
    pub check: [u8; 2],
    pub saddr_be: u32,
    pub daddr_be: u32,
}

/// A TCP header up to its flags.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TcpHead {
    pub sport_be: u16,
    pub dport_be: u16,
    pub seq_be: u32,
    pub _ack: u32,
    pub data_off: u8,
    pub flags: u8,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct UdpHeader {
    pub sport_be: u16,
    pub dport_be: u16,
    pub len_be: u16,
    pub _check: u16,
}

/// What the NIC's XDP program writes into a packet's metadata when it
/// translated the packet and passes it to the stack ("SLB1").
pub const XDP_META_TRANSLATED: u32 = 0x534c_4231;
