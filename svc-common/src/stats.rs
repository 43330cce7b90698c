//! Reasons a packet addressed to the datapath was not forwarded as-is. Each
//! reason indexes one per-CPU counter in DROPS_V2.

/// Index into DROPS_V2.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// A header was cut short or claimed a length the packet does not have.
    Malformed = 0,
    /// A frontend with no usable backend; a TCP reset was sent back.
    NoBackendReset = 1,
    /// A frontend with no usable backend, and no reply is made: the
    /// frontend is marked drop-when-empty, or the packet must not be
    /// answered (a reset, an ICMP error, an unsupported header layout).
    NoBackendDrop = 2,
    /// A slot or backend the frontend header points at is missing.
    SlotMissing = 3,
    /// The conntrack table refused an insert.
    FlowInsertFailed = 4,
    /// A kernel helper that rewrites the packet failed.
    RewriteFailed = 5,
    /// The client is outside the frontend's loadBalancerSourceRanges.
    SourceRangeDenied = 6,
    /// No source port was free for SNAT towards that backend.
    NatPortsExhausted = 7,
    /// UDP to a frontend with no usable backend: answered with ICMP port
    /// unreachable.
    NoBackendUnreachable = 8,
    /// Source NAT was needed but the agent has not set this node's
    /// addresses (CONFIG_V1) yet.
    NodeConfigMissing = 9,
    /// A packet that may not be fragmented was too big for the route to
    /// its translated destination: answered with ICMP fragmentation needed,
    /// quoting it as its sender sent it (path MTU discovery).
    FragmentationNeeded = 10,
    /// A packet with its TTL about to run out, that the node would forward
    /// after translating it: answered with ICMP time exceeded, quoting it
    /// as its sender sent it (traceroute through a Service).
    TimeExceeded = 11,
    /// A reset or ICMP error was due, but this CPU had sent its share for
    /// the moment (a token bucket: spoofed sources must not turn the node
    /// into a reflector).
    RejectRateLimited = 12,
    /// A pod's new connection would reach its backend on the very tuple a
    /// live connection of the same pod (through another frontend) uses:
    /// dropped, as netfilter drops a clash, so the live one is kept.
    /// External clients get the hairpin source instead and never see this.
    TupleClash = 13,
    /// TCP to an address of the service CIDRs that no frontend serves (no
    /// Service holds the address, or not that port): answered with a
    /// reset instead of being routed out, as kube-proxy's nftables mode
    /// answers it.
    ServiceCidrReset = 14,
    /// The same for UDP: answered with ICMP port unreachable.
    ServiceCidrUnreachable = 15,
    /// A TCP segment of a connection under way found no conntrack entry
    /// while the agent's collector held its tuple's entry out (see
    /// CollectMark): dropped, so the sender sends it again once the entry
    /// is back, instead of being balanced to another backend.
    CtBeingCollected = 16,
    /// A packet to send by direct server return had no route to its
    /// backend's node that the program can take, or does not fit it once
    /// encapsulated and may be fragmented (only the stack fragments).
    TunnelUnroutable = 17,
}

const _: () = assert!(DropReason::COUNT <= DropReason::SLOTS);

impl DropReason {
    pub const COUNT: u32 = 18;
    /// DROPS_V2's size: room for reasons to come without a new map.
    pub const SLOTS: u32 = 32;

    pub const ALL: [DropReason; Self::COUNT as usize] = [
        DropReason::Malformed,
        DropReason::NoBackendReset,
        DropReason::NoBackendDrop,
        DropReason::SlotMissing,
        DropReason::FlowInsertFailed,
        DropReason::RewriteFailed,
        DropReason::SourceRangeDenied,
        DropReason::NatPortsExhausted,
        DropReason::NoBackendUnreachable,
        DropReason::NodeConfigMissing,
        DropReason::FragmentationNeeded,
        DropReason::TimeExceeded,
        DropReason::RejectRateLimited,
        DropReason::TupleClash,
        DropReason::ServiceCidrReset,
        DropReason::ServiceCidrUnreachable,
        DropReason::CtBeingCollected,
        DropReason::TunnelUnroutable,
    ];

    /// The name `dump` and the metrics use.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::NoBackendReset => "no_backend_reset",
            DropReason::NoBackendDrop => "no_backend_drop",
            DropReason::SlotMissing => "slot_missing",
            DropReason::FlowInsertFailed => "flow_insert_failed",
            DropReason::RewriteFailed => "rewrite_failed",
            DropReason::SourceRangeDenied => "source_range_denied",
            DropReason::NatPortsExhausted => "nat_ports_exhausted",
            DropReason::NoBackendUnreachable => "no_backend_unreachable",
            DropReason::NodeConfigMissing => "node_config_missing",
            DropReason::FragmentationNeeded => "fragmentation_needed",
            DropReason::TimeExceeded => "time_exceeded",
            DropReason::RejectRateLimited => "reject_rate_limited",
            DropReason::TupleClash => "tuple_clash",
            DropReason::ServiceCidrReset => "service_cidr_reset",
            DropReason::ServiceCidrUnreachable => "service_cidr_unreachable",
            DropReason::CtBeingCollected => "ct_being_collected",
            DropReason::TunnelUnroutable => "tunnel_unroutable",
        }
    }
}
