//! Keys and values of the load-balancing maps (modelled on Cilium's lb4 maps).

/// IP protocol numbers the datapath translates.
pub mod proto {
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    /// Errors only, about a TCP or UDP packet of a translated flow.
    pub const ICMP: u8 = 1;
    /// A Service protocol the agent writes; the programs do not translate
    /// SCTP yet.
    pub const SCTP: u8 = 132;
    /// IPv4 in IPv4 (RFC 2003): the encapsulation of direct server return.
    pub const IPIP: u8 = 4;
}

/// Map names, as pinned under the agent's bpffs directory.
pub mod names {
    pub const SERVICES: &str = "SERVICES_V1";
    pub const BACKENDS: &str = "BACKENDS_V1";
    pub const REV_NAT: &str = "REV_NAT_V1";
    /// The IPv6 twins of SERVICES, BACKENDS, REV_NAT and SOCK_REV_NAT
    /// (see the project's design notes: one map per family for what
    /// holds an address; rev_nat_id and backend id are shared).
    pub const SERVICES6: &str = "SERVICES6_V1";
    pub const BACKENDS6: &str = "BACKENDS6_V1";
    pub const REV_NAT6: &str = "REV_NAT6_V1";
    pub const SOCK_REV_NAT6: &str = "SOCK_RNAT6_V1";
    pub const FRONTEND_META: &str = "FE_META_V1";
    pub const CT: &str = "CT_V2";
    pub const CT_NEW: &str = "CT_NEW_V2";
    pub const FRONTEND_STATS: &str = "FE_STATS_V1";
    pub const DROP_STATS: &str = "DROPS_V2";
    pub const AFFINITY: &str = "AFFINITY_V1";
    pub const SOURCE_RANGES: &str = "SRC_RANGES_V1";
    pub const CONFIG: &str = "CONFIG_V1";
    pub const SOCK_REV_NAT: &str = "SOCK_RNAT_V1";
    pub const TABLES_GENERATION: &str = "TABLES_GEN_V1";
    pub const SERVICE_CIDRS: &str = "SVC_CIDRS_V1";
    /// The IPv6 service CIDRs (see [`crate::ServiceCidrs6`]).
    pub const SERVICE_CIDRS6: &str = "SVC_CIDRS6_V1";
    /// The Maglev frontends' lookup tables (see [`crate::maglev`]).
    pub const MAGLEV: &str = "MAGLEV_V1";
    /// Conntrack keys the agent's collector has just taken out of their
    /// table (see [`crate::CollectMark`]).
    pub const CT_COLLECTING: &str = "CT_COLLECT_V1";
    /// The node's own network namespace: sockets of any other are pods'
    /// (see [`crate::HostNetns`]).
    pub const HOST_NETNS: &str = "HOST_NETNS_V1";
    /// Interfaces the NIC's XDP program may send packets out of (ifindex →
    /// the interface's XDP features, as the kernel reports them). Not
    /// pinned, so not in [`ALL`]: each agent fills its own from the kernel
    /// when it attaches and on every rescan; empty, it only sends more
    /// packets the TC program's way.
    pub const XDP_TARGETS: &str = "XDP_TARGETS_V1";
    /// The host sides of pod veths (ifindex → 0), written as the agent
    /// attaches to them: a packet the NIC's programs route into one of
    /// these goes into the pod straight (bpf_redirect_peer, which only a
    /// veth or netkit device takes). Not pinned: each agent fills its own.
    pub const POD_IFACES: &str = "POD_IFACES_V1";
    /// Maps earlier versions pinned and this one no longer uses (a layout
    /// change gets a new name): unpinned when an agent loads.
    pub const RETIRED: [&str; 1] = ["DROPS_V1"];
    /// Maps earlier versions pinned whose entries this one carries over
    /// into its own (old name, new name): the conntrack tables, whose loss
    /// would break every established connection. The agent converts each
    /// entry (see the agent's dataplane/pins.rs), then unpins the old map.
    pub const CONVERTED: [(&str, &str); 2] = [("CT_V1", CT), ("CT_NEW_V1", CT_NEW)];
    /// Every map the agent pins, in the order they are created.
    pub const ALL: [&str; 22] = [
        SERVICES,
        BACKENDS,
        REV_NAT,
        SERVICES6,
        BACKENDS6,
        REV_NAT6,
        SOCK_REV_NAT6,
        FRONTEND_META,
        CT,
        CT_NEW,
        FRONTEND_STATS,
        DROP_STATS,
        AFFINITY,
        SOURCE_RANGES,
        CONFIG,
        SOCK_REV_NAT,
        TABLES_GENERATION,
        SERVICE_CIDRS,
        SERVICE_CIDRS6,
        MAGLEV,
        CT_COLLECTING,
        HOST_NETNS,
    ];
}

/// Capacities. `MAX_FRONTENDS` also bounds `rev_nat_id`, which indexes the
/// per-frontend counters array.
pub const MAX_FRONTENDS: u32 = 262_144;
/// 100 000 Services of 10 endpoints take 1.1 million (a header and a slot
/// per backend each); the map is allocated as it fills (no prealloc).
pub const MAX_SERVICE_SLOTS: u32 = 2_097_152;
pub const MAX_BACKENDS: u32 = 262_144;
pub const MAX_FLOWS: u32 = 262_144;
/// Flows not established yet (see [`names::CT_NEW`]): a flood of them
/// evicts its own kind, never an established flow.
pub const MAX_NEW_FLOWS: u32 = 65_536;
pub const MAX_AFFINITY: u32 = 65_536;
pub const MAX_SOURCE_RANGES: u32 = 16_384;
pub const MAX_SOCKETS: u32 = 65_536;
/// POD_IFACES' size (LRU: an entry of a veth long gone is evicted first).
pub const MAX_POD_IFACES: u32 = 4096;
pub const MAX_XDP_TARGETS: u32 = 1_024;
/// Service CIDRs SVC_CIDRS_V1 holds (`--service-cidr`; a dual-stack
/// cluster has one or two per family).
pub const MAX_SERVICE_CIDRS: usize = 4;
/// The XDP_TARGETS key no interface has (indexes start at 1): present once
/// the agent has filled the list. Without it the list is unknown and every
/// interface is taken to transmit XDP frames (a datapath loaded without
/// an agent, as packet tests do).
pub const XDP_TARGETS_KNOWN: u32 = 0;

/// Which traffic a frontend entry serves. Scope 0 is the only one written so
/// far; the field is reserved for per-traffic-policy tables.
pub const SCOPE_ALL: u8 = 0;

/// SERVICES key: one frontend (address, port, protocol) and one slot of it.
/// Slot 0 holds the frontend's header, slots 1.. its backends.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrontendKey {
    pub addr_be: u32,
    pub port_be: u16,
    pub proto: u8,
    pub scope: u8,
    pub slot: u16,
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<FrontendKey>() == 12);

impl FrontendKey {
    pub const fn new(addr_be: u32, port_be: u16, proto: u8, slot: u16) -> Self {
        Self {
            addr_be,
            port_be,
            proto,
            scope: SCOPE_ALL,
            slot,
            _pad: 0,
        }
    }

    pub const fn with_slot(&self, slot: u16) -> Self {
        Self { slot, ..*self }
    }
}

/// An IPv6 address as the IPv6 maps hold it: its 16 bytes in network
/// order.
pub type Ipv6Be = [u8; 16];

/// SERVICES6 key: [`FrontendKey`] of an IPv6 frontend.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrontendKey6 {
    pub addr: Ipv6Be,
    pub port_be: u16,
    pub proto: u8,
    pub scope: u8,
    pub slot: u16,
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<FrontendKey6>() == 24);

impl FrontendKey6 {
    pub const fn new(addr: Ipv6Be, port_be: u16, proto: u8, slot: u16) -> Self {
        Self {
            addr,
            port_be,
            proto,
            scope: SCOPE_ALL,
            slot,
            _pad: 0,
        }
    }

    pub const fn with_slot(&self, slot: u16) -> Self {
        Self { slot, ..*self }
    }
}

/// SERVICES value. In slot 0 (the frontend header) `count`,
/// `terminating_count`, `rev_nat_id`, `flags`, `maglev_size` and
/// `affinity_timeout_s` are meaningful, and `backend_id` when
/// `maglev_size` is not 0; in slot n only `backend_id` is.
///
/// New flows pick among slots `1..=count`. Terminating backends sit in slots
/// `count+1..=count+terminating_count` and are used only when `count` is 0,
/// as kube-proxy falls back to serving-and-terminating endpoints.
///
/// A Maglev frontend (`maglev_size` not 0) has a lookup table of that many
/// entries in MAGLEV_V1, from the header's `backend_id` on (see
/// [`ServiceSlot::maglev_start`]): it holds the backends new flows pick
/// among (the ready ones, or the terminating ones when none is ready). An
/// entry of 0 (a table not written yet) picks at random, as without.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceSlot {
    pub backend_id: u32,
    pub count: u16,
    pub terminating_count: u16,
    pub rev_nat_id: u32,
    pub flags: u16,
    /// Was padding (0): the layout, and so the map's name, is unchanged.
    pub maglev_size: u16,
    pub affinity_timeout_s: u32,
}
const _: () = assert!(core::mem::size_of::<ServiceSlot>() == 20);

impl ServiceSlot {
    /// A Maglev header's first MAGLEV_V1 entry.
    #[inline(always)]
    pub const fn maglev_start(&self) -> u32 {
        self.backend_id
    }
}

/// Frontend flags (slot 0 `flags`).
pub mod frontend_flags {
    /// With no backend, drop instead of answering with a reset
    /// (externalTrafficPolicy=Local without a local endpoint).
    pub const DROP_WHEN_EMPTY: u16 = 1 << 0;
    /// Only clients inside the frontend's SRC_RANGES entries are served
    /// (loadBalancerSourceRanges).
    pub const SOURCE_RANGES: u16 = 1 << 1;
    /// The frontend's Service asks for Maglev selection (its table, if it
    /// has one, is named by `maglev_size` and `backend_id`).
    pub const MAGLEV: u16 = 1 << 2;
}

/// BACKENDS value, keyed by a `u32` backend id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Backend {
    pub addr_be: u32,
    pub port_be: u16,
    pub proto: u8,
    /// [`backend_flags`].
    pub flags: u8,
}
const _: () = assert!(core::mem::size_of::<Backend>() == 8);

/// BACKENDS6 value, keyed by a `u32` backend id (one id space with
/// BACKENDS): [`Backend`] of an IPv6 backend.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Backend6 {
    pub addr: Ipv6Be,
    pub port_be: u16,
    pub proto: u8,
    /// [`backend_flags`].
    pub flags: u8,
}
const _: () = assert!(core::mem::size_of::<Backend6>() == 20);

pub mod backend_flags {
    /// The backend runs on this node: external traffic reaches it without
    /// source NAT, replies pass this node anyway.
    pub const LOCAL: u8 = 1 << 0;
}

/// REV_NAT value, keyed by a `u32` rev_nat_id: the frontend replies must
/// appear to come from.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RevNat {
    pub addr_be: u32,
    pub port_be: u16,
    /// [`rev_nat_flags`].
    pub flags: u16,
}

pub mod rev_nat_flags {
    /// The frontend address is one of this node's own (a NodePort): the
    /// stack would drop a forwarded packet with that source as martian, so
    /// translated replies are routed out by the program itself.
    pub const LOCAL_ADDRESS: u16 = 1 << 0;
}
const _: () = assert!(core::mem::size_of::<RevNat>() == 8);

/// REV_NAT6 value, keyed by rev_nat_id (one id space with REV_NAT):
/// [`RevNat`] of an IPv6 frontend.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RevNat6 {
    pub addr: Ipv6Be,
    pub port_be: u16,
    /// [`rev_nat_flags`].
    pub flags: u16,
}
const _: () = assert!(core::mem::size_of::<RevNat6>() == 20);

pub const SERVICE_NAME_LEN: usize = 128;
pub const PORT_NAME_LEN: usize = 16;

/// FE_META value, keyed by rev_nat_id: what the frontend is, for `dump`.
/// The kernel programs never read it; it lets the tables explain themselves
/// without the agent's memory.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrontendMeta {
    /// One of [`frontend_kind`].
    pub kind: u8,
    pub service_len: u8,
    pub port_name_len: u8,
    pub _pad: u8,
    /// healthCheckNodePort (host order), 0 for none.
    pub health_check_node_port: u16,
    pub _pad2: u16,
    /// `NAMESPACE/NAME`, UTF-8, `service_len` bytes used.
    pub service: [u8; SERVICE_NAME_LEN],
    /// The Service port's name, `port_name_len` bytes used.
    pub port_name: [u8; PORT_NAME_LEN],
}
const _: () = assert!(core::mem::size_of::<FrontendMeta>() == 152);

pub mod frontend_kind {
    pub const CLUSTER_IP: u8 = 1;
    pub const NODE_PORT: u8 = 2;
    pub const LOAD_BALANCER: u8 = 3;
    pub const EXTERNAL_IP: u8 = 4;
}

/// CT key: a flow's 5-tuple as it appears on the wire in one direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub saddr_be: u32,
    pub daddr_be: u32,
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 16);

/// CT value. A translated flow has two entries: the original direction
/// (client → frontend, `flags` without [`flow_flags::REPLY`]) and the reply
/// direction (backend → client or, with source NAT, backend → node).
/// 40 bytes, as CT_V1's were: the programs copy it onto the BPF stack.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    pub backend_id: u32,
    pub rev_nat_id: u32,
    pub last_seen_ns: u64,
    /// When the flow was created, in [`time_units`] (wrapping).
    pub created_units: u32,
    /// TCP: the sequence number this entry's direction sends next, as of
    /// the last segment conntrack saw (with [`flow_flags::SEQ_KNOWN`]). A
    /// RST far from it is not the flow's own and leaves the state alone.
    pub next_seq: u32,
    /// The backend's address as the flow was created: an established TCP
    /// connection keeps going to it even after the backend leaves the
    /// Service (as conntrack keeps a kube-proxy DNAT), while the pod lives.
    pub backend_addr_be: u32,
    /// With [`flow_flags::SNAT`]: in the original direction the source the
    /// packets get (node address, allocated port); in the reply direction the
    /// client's address the replies go back to.
    pub nat_addr_be: u32,
    pub backend_port_be: u16,
    pub nat_port_be: u16,
    /// [`flow_flags`].
    pub flags: u16,
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<Flow>() == 40);

/// A clock reading (nanoseconds) in the units of [`Flow::created_units`]:
/// 2^20 ns (about 1.05 ms), wrapping every 52 days; compare two with
/// `wrapping_sub`. Fine enough for the ages they are compared by (a
/// quarter of a second and up), and 4 bytes.
pub const fn time_units(ns: u64) -> u32 {
    (ns >> 20) as u32
}

/// The CT value of CT_V1 and CT_NEW_V1 (before [`Flow::next_seq`]; the
/// same size, fields in another order), kept
/// to carry their entries over into CT_V2 and CT_NEW_V2.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowV1 {
    pub backend_id: u32,
    pub rev_nat_id: u32,
    pub created_ns: u64,
    pub last_seen_ns: u64,
    pub backend_addr_be: u32,
    pub backend_port_be: u16,
    pub _pad: u16,
    pub nat_addr_be: u32,
    pub nat_port_be: u16,
    pub flags: u16,
}
const _: () = assert!(core::mem::size_of::<FlowV1>() == 40);

impl From<FlowV1> for Flow {
    /// The same flow, its sequence numbers not known yet (any RST counts
    /// until a segment of the flow has been seen).
    fn from(old: FlowV1) -> Self {
        Flow {
            backend_id: old.backend_id,
            rev_nat_id: old.rev_nat_id,
            last_seen_ns: old.last_seen_ns,
            created_units: time_units(old.created_ns),
            next_seq: 0,
            backend_addr_be: old.backend_addr_be,
            nat_addr_be: old.nat_addr_be,
            backend_port_be: old.backend_port_be,
            nat_port_be: old.nat_port_be,
            flags: old.flags & !flow_flags::SEQ_KNOWN,
            _pad: 0,
        }
    }
}

pub mod flow_flags {
    /// The entry matches replies (backend → client): reverse-NAT them.
    pub const REPLY: u16 = 1 << 0;
    /// The source is translated too (remote backend of external traffic, or
    /// a pod reaching itself through its Service).
    pub const SNAT: u16 = 1 << 1;
    /// A FIN or RST was seen: the entry expires soon.
    pub const CLOSING: u16 = 1 << 2;
    /// With [`CLOSING`]: a RST ended the flow, not a FIN (no peer holds
    /// its tuple in TIME_WAIT).
    pub const RESET: u16 = 1 << 6;
    /// A packet of the reply direction has passed (set on both entries of a
    /// flow in CT_NEW; a flow in CT_V2 has been answered by definition).
    pub const SEEN_REPLY: u16 = 1 << 3;
    /// [`super::Flow::next_seq`] holds what a segment of this direction
    /// said.
    pub const SEQ_KNOWN: u16 = 1 << 4;
    /// UDP: the flow was still active [`super::flow_timeouts::UDP_STREAM_AFTER_NS`]
    /// after it began: a stream, not one exchange (netfilter's assured
    /// UDP), kept for the longer timeout.
    pub const STREAM: u16 = 1 << 5;
    /// Forward entry of a flow this node sends to a backend on another
    /// node by direct server return: its packets go there encapsulated,
    /// untranslated. Replies never pass here, so a TCP flow is established
    /// by its client's first segment without SYN (it answers the backend).
    pub const TUNNELLED: u16 = 1 << 7;
    /// Both entries of a flow another node sent here by direct server
    /// return. Its backend has no id on this node: `backend_id` holds
    /// instead the address replies leave from when it is not the address
    /// of the entry's rev_nat_id (a NodePort of another node's address:
    /// this node serves the port on its own), else 0.
    pub const DELIVERED: u16 = 1 << 8;
}

/// How long an idle flow is remembered, by protocol and state.
///
/// A flow lives in one of two tables. CT_NEW_V2 holds it from its first
/// packet until it is established: for TCP, once the originator sent a
/// segment without SYN after a reply came back (the handshake's last ACK);
/// for UDP, once a reply came back. Then both entries move to CT_V2. An
/// entry's timeout follows from the table that holds it and its flags
/// ([`flow_timeout_ns`]); the kernel programs and the agent's collector
/// both use that one function.
pub mod flow_timeouts {
    /// Established TCP (Cilium's default; netfilter keeps 5 days).
    pub const TCP_ESTABLISHED_NS: u64 = 6 * 3600 * 1_000_000_000;
    /// After a FIN, either table. The peer that closed first holds the
    /// tuple in TIME_WAIT for 60 s (Linux's TCP_TIMEWAIT_LEN); a new flow
    /// given the same tuple towards the backend before then (a NAT port,
    /// or a client port already used to another frontend of the pod)
    /// would meet it: the backend answers the SYN with an ACK for the old
    /// connection, and the client loses a second to its SYN retry. So the
    /// tuple stays held a little longer than that (netfilter: 120 s).
    pub const TCP_FIN_NS: u64 = 65 * 1_000_000_000;
    /// After a RST (netfilter's CLOSE): nobody keeps the tuple.
    pub const TCP_RESET_NS: u64 = 10 * 1_000_000_000;
    /// A UDP flow that was answered: one exchange (a DNS query) is kept
    /// this long, as netfilter's udp_timeout...
    pub const UDP_NS: u64 = 30 * 1_000_000_000;
    /// ...and one still active this long after it began...
    pub const UDP_STREAM_AFTER_NS: u64 = 2 * 1_000_000_000;
    /// ...is a stream, kept this long (netfilter's udp_timeout_stream). A
    /// node answering many one-shot queries through source NAT thus holds
    /// each NAT port 30 s, not 120.
    pub const UDP_STREAM_NS: u64 = 120 * 1_000_000_000;
    /// Not established yet (CT_NEW_V2): a handshake or an unanswered
    /// datagram. Spoofed SYNs hold a NAT port this long at most, and less
    /// when the ports run short (see the datapath's `ct::claim_port`).
    pub const NEW_NS: u64 = 30 * 1_000_000_000;
}

/// How long an entry with `flags`, of protocol `protocol`, may stay idle;
/// `established` says it lives in CT_V2, not CT_NEW_V2.
pub const fn flow_timeout_ns(flags: u16, protocol: u8, established: bool) -> u64 {
    if flags & flow_flags::CLOSING != 0 {
        if flags & flow_flags::RESET != 0 {
            flow_timeouts::TCP_RESET_NS
        } else {
            flow_timeouts::TCP_FIN_NS
        }
    } else if !established {
        flow_timeouts::NEW_NS
    } else if protocol == proto::TCP {
        flow_timeouts::TCP_ESTABLISHED_NS
    } else if flags & flow_flags::STREAM != 0 {
        flow_timeouts::UDP_STREAM_NS
    } else {
        flow_timeouts::UDP_NS
    }
}

/// CONFIG_V1 (one entry): this node's facts the programs need.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeConfig {
    /// Source address of SNATed flows to backends on other nodes.
    pub node_addr_be: u32,
    /// Source address a pod sees when it reaches itself through a Service.
    pub hairpin_addr_be: u32,
    /// Ports (host order) SNATed flows are given, inclusive.
    pub nat_port_min: u16,
    pub nat_port_max: u16,
    /// [`lb_mode`]: how external traffic reaches a backend on another
    /// node. (It took a byte of what was padding: a CONFIG_V1 written by
    /// an agent before it reads as [`lb_mode::SNAT`].)
    pub lb_mode: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<NodeConfig>() == 16);

/// HOST_NETNS_V1 (one entry): the network namespace the node's own
/// processes live in. The socket hooks run for every socket of the cgroup
/// they are attached to; on a real node that is the root cgroup, which
/// holds the pods too. A socket in another namespace is a pod's: its
/// connect() is balanced as the node's are, but its UDP and its flows to
/// frontends with sessionAffinity or source ranges stay on the per-packet
/// path, which sees the pod's address and follows backend changes.
/// A cookie of 0 (not written yet) makes every socket the node's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostNetns {
    /// The namespace's cookie (SO_NETNS_COOKIE, bpf_get_netns_cookie).
    pub cookie: u64,
}

/// How external traffic (NodePort, LoadBalancer, externalIPs) reaches a
/// backend on another node (`--lb-mode`).
pub mod lb_mode {
    /// Its source becomes the node's address; replies come back through
    /// this node, which translates them.
    pub const SNAT: u8 = 0;
    /// Direct server return: the client's packet, untouched, goes to the
    /// backend's node inside an IPIP header (see the datapath's tunnel.rs);
    /// the backend sees the client's address and answers it directly.
    pub const DSR: u8 = 1;
    /// DSR for TCP, SNAT for UDP (as Cilium names it).
    pub const HYBRID: u8 = 2;
}

/// SVC_CIDRS_V1 (one entry): the cluster's service CIDRs, as the agent is
/// told them. A TCP or UDP packet to an address in one of them that is no
/// frontend (no Service holds the address, or not that port) is refused
/// as a closed port refuses it, not routed out towards a default route:
/// kube-proxy's nftables mode does the same.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceCidrs {
    /// How many of `cidrs` are set, from the first.
    pub count: u32,
    pub _pad: u32,
    pub cidrs: [ServiceCidr; MAX_SERVICE_CIDRS],
}
const _: () = assert!(core::mem::size_of::<ServiceCidrs>() == 40);

/// One service CIDR: an address is in it when `address & mask == network`
/// (all in network order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceCidr {
    pub network_be: u32,
    pub mask_be: u32,
}

impl ServiceCidrs {
    /// Whether `addr_be` (network order) is in one of the CIDRs.
    #[inline(always)]
    pub fn contain(&self, addr_be: u32) -> bool {
        let mut i = 0;
        while i < MAX_SERVICE_CIDRS {
            let cidr = self.cidrs[i];
            if (i as u32) < self.count && addr_be & cidr.mask_be == cidr.network_be {
                return true;
            }
            i += 1;
        }
        false
    }
}

/// SVC_CIDRS6_V1's one entry: [`ServiceCidrs`] of the IPv6 service CIDRs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceCidrs6 {
    /// How many of `cidrs` are set, from the first.
    pub count: u32,
    pub _pad: u32,
    pub cidrs: [ServiceCidr6; MAX_SERVICE_CIDRS],
}
const _: () = assert!(core::mem::size_of::<ServiceCidrs6>() == 136);

/// One IPv6 service CIDR: an address is in it when `address & mask ==
/// network`, byte by byte.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceCidr6 {
    pub network: Ipv6Be,
    pub mask: Ipv6Be,
}

impl ServiceCidrs6 {
    /// Whether `addr` is in one of the CIDRs.
    #[inline(always)]
    pub fn contain(&self, addr: &Ipv6Be) -> bool {
        let mut i = 0;
        while i < MAX_SERVICE_CIDRS {
            if (i as u32) < self.count && self.cidrs[i].holds(addr) {
                return true;
            }
            i += 1;
        }
        false
    }
}

impl ServiceCidr6 {
    #[inline(always)]
    fn holds(&self, addr: &Ipv6Be) -> bool {
        let mut byte = 0;
        while byte < 16 {
            if addr[byte] & self.mask[byte] != self.network[byte] {
                return false;
            }
            byte += 1;
        }
        true
    }
}

/// TABLES_GEN_V1 (one entry): raised by the agent after every change to
/// the tables, so the programs' flow caches (see [`crate::flow_cache`])
/// stop using what they copied from the old ones.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TablesGeneration {
    pub generation: u64,
}
const _: () = assert!(core::mem::size_of::<TablesGeneration>() == 8);

/// CT_COLLECT value: when the conntrack collector marked the key, just
/// before taking its entry out of its table (coarse monotonic ns, the
/// clock entries are stamped with). The collector puts an entry back when
/// a packet changed it since it was read as expired (a new flow on the
/// tuple); meanwhile the key has no entry. A TCP segment of a connection
/// under way that finds no entry for a key marked within
/// [`COLLECT_MARK_HOLD_NS`] is dropped (its sender sends it again) instead
/// of being balanced anew, possibly to another backend, which would reset
/// the connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CollectMark {
    pub marked_ns: u64,
}
const _: () = assert!(core::mem::size_of::<CollectMark>() == 8);

/// How long a collector's mark holds back packets that find no entry: far
/// longer than the two syscalls between the take and the put-back, even
/// with the collector's thread preempted in between.
pub const COLLECT_MARK_HOLD_NS: u64 = 1_000_000_000;

/// CT_COLLECT's size (LRU): the marks of the last keys collected; an old
/// mark is evicted, or ignored once past [`COLLECT_MARK_HOLD_NS`].
pub const MAX_COLLECT_MARKS: u32 = 4096;

/// AFFINITY key: sessionAffinity ClientIP per frontend.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AffinityKey {
    pub rev_nat_id: u32,
    pub client_addr_be: u32,
}
const _: () = assert!(core::mem::size_of::<AffinityKey>() == 8);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Affinity {
    pub backend_id: u32,
    pub _pad: u32,
    pub last_used_ns: u64,
}
const _: () = assert!(core::mem::size_of::<Affinity>() == 16);

/// SRC_RANGES key data (after the LPM prefix length): a frontend's
/// loadBalancerSourceRanges entry. The prefix length covers the 32 bits of
/// `rev_nat_id` plus the CIDR's bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SourceRange {
    pub rev_nat_id: u32,
    pub addr_be: u32,
}
const _: () = assert!(core::mem::size_of::<SourceRange>() == 8);

/// SOCK_RNAT key: a socket (by cookie) and the backend the socket hook
/// connected it to, for UDP replies and getpeername().
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SockKey {
    pub cookie: u64,
    pub backend_addr_be: u32,
    pub backend_port_be: u16,
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<SockKey>() == 16);

/// SOCK_RNAT6 key: [`SockKey`] of a socket pointed at an IPv6 backend.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SockKey6 {
    pub cookie: u64,
    pub backend_addr: Ipv6Be,
    pub backend_port_be: u16,
    pub _pad: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<SockKey6>() == 32);

/// MAGLEV_V1 value: one entry of a Maglev frontend's table (see
/// [`crate::maglev`]). A struct, so `bpftool map dump` names the field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaglevEntry {
    /// The backend new flows hashed to this entry go to; 0: none yet.
    pub backend_id: u32,
}
const _: () = assert!(core::mem::size_of::<MaglevEntry>() == 4);

/// FE_STATS value (per CPU), indexed by rev_nat_id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrontendCounters {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(core::mem::size_of::<FrontendCounters>() == 16);

/// DROPS value (per CPU), indexed by [`crate::DropReason`]. A struct, not a
/// bare u64, so `bpftool map dump` names the field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounters {
    pub packets: u64,
}
const _: () = assert!(core::mem::size_of::<DropCounters>() == 8);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type is repr(C), has no implicit padding (the size
    // assertions above pin each layout) and is valid for any bit pattern.
    unsafe impl aya::Pod for super::FrontendKey {}
    unsafe impl aya::Pod for super::FrontendKey6 {}
    unsafe impl aya::Pod for super::Backend6 {}
    unsafe impl aya::Pod for super::RevNat6 {}
    unsafe impl aya::Pod for super::SockKey6 {}
    unsafe impl aya::Pod for super::HostNetns {}
    unsafe impl aya::Pod for super::ServiceSlot {}
    unsafe impl aya::Pod for super::Backend {}
    unsafe impl aya::Pod for super::RevNat {}
    unsafe impl aya::Pod for super::FrontendMeta {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::Flow {}
    unsafe impl aya::Pod for super::FlowV1 {}
    unsafe impl aya::Pod for super::FrontendCounters {}
    unsafe impl aya::Pod for super::DropCounters {}
    unsafe impl aya::Pod for super::NodeConfig {}
    unsafe impl aya::Pod for super::AffinityKey {}
    unsafe impl aya::Pod for super::Affinity {}
    unsafe impl aya::Pod for super::SourceRange {}
    unsafe impl aya::Pod for super::SockKey {}
    unsafe impl aya::Pod for super::TablesGeneration {}
    unsafe impl aya::Pod for super::CollectMark {}
    unsafe impl aya::Pod for super::ServiceCidrs {}
    unsafe impl aya::Pod for super::ServiceCidrs6 {}
    unsafe impl aya::Pod for super::MaglevEntry {}
}
