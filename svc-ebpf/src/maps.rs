//! Every map the programs use, one block each: the value type when only
//! the programs use it, then the map and what it holds. Layouts and names
//! of the others come from svc-common; the agent creates and pins them (by
//! these names) before it loads programs.
use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, bpf_fib_lookup},
    btf_maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray},
    macros::btf_map,
};
use svc_common::{
    Affinity, AffinityKey, Backend, Backend6, CollectMark, DropCounters, DropReason, Flow, FlowKey,
    FrontendCounters, FrontendKey, FrontendKey6, FrontendMeta, HostNetns, MAX_AFFINITY,
    MAX_BACKENDS, MAX_COLLECT_MARKS, MAX_FLOWS, MAX_FRONTENDS, MAX_NEW_FLOWS, MAX_POD_IFACES,
    MAX_SERVICE_SLOTS, MAX_SOCKETS, MAX_SOURCE_RANGES, MAX_XDP_TARGETS, MaglevEntry, NodeConfig,
    RevNat, RevNat6, ServiceCidrs, ServiceCidrs6, ServiceSlot, SockKey, SockKey6, SourceRange,
    TablesGeneration, flow_cache, maglev,
};

use crate::headers::Ipv4Header;

/// Maps only the agent writes are not preallocated: they hold what the
/// cluster has, not their capacity, in kernel memory. Lookups cost the same.
const AGENT_WRITTEN: usize = BPF_F_NO_PREALLOC as usize;

/// Frontend (address, port, protocol, slot) → slot 0 header or slot n backend.
#[btf_map]
pub static SERVICES_V1: HashMap<
    FrontendKey,
    ServiceSlot,
    { MAX_SERVICE_SLOTS as usize },
    AGENT_WRITTEN,
> = HashMap::new();

/// backend_id → backend address.
#[btf_map]
pub static BACKENDS_V1: HashMap<u32, Backend, { MAX_BACKENDS as usize }, AGENT_WRITTEN> =
    HashMap::new();

/// rev_nat_id → the frontend address replies are rewritten to.
#[btf_map]
pub static REV_NAT_V1: HashMap<u32, RevNat, { MAX_FRONTENDS as usize }, AGENT_WRITTEN> =
    HashMap::new();

/// The IPv6 twins of the three maps above: the same ids (a rev_nat_id or
/// backend id is in one family's map only), addresses of 16 bytes.
#[btf_map]
pub static SERVICES6_V1: HashMap<
    FrontendKey6,
    ServiceSlot,
    { MAX_SERVICE_SLOTS as usize },
    AGENT_WRITTEN,
> = HashMap::new();

#[btf_map]
pub static BACKENDS6_V1: HashMap<u32, Backend6, { MAX_BACKENDS as usize }, AGENT_WRITTEN> =
    HashMap::new();

#[btf_map]
pub static REV_NAT6_V1: HashMap<u32, RevNat6, { MAX_FRONTENDS as usize }, AGENT_WRITTEN> =
    HashMap::new();

/// rev_nat_id → what the frontend is. Written by the agent, read by `dump`;
/// declared here so it is created, pinned and typed like the others.
#[btf_map]
pub static FE_META_V1: HashMap<u32, FrontendMeta, { MAX_FRONTENDS as usize }, AGENT_WRITTEN> =
    HashMap::new();

/// Conntrack of established flows: both directions of each (ct.rs has the
/// lifecycle). LRU, so a full table evicts the least recently seen flow
/// instead of refusing new ones. Reply entries of source-NATed flows double
/// as the NAT port table, together with CT_NEW_V2's.
#[btf_map]
pub static CT_V2: LruHashMap<FlowKey, Flow, { MAX_FLOWS as usize }> = LruHashMap::new();

/// Conntrack of flows not established yet, same layout: a table of their
/// own, so that a flood of new flows (spoofed SYNs) evicts only new flows.
/// Claiming a NAT port is inserting the flow's reply key here with
/// BPF_NOEXIST.
#[btf_map]
pub static CT_NEW_V2: LruHashMap<FlowKey, Flow, { MAX_NEW_FLOWS as usize }> = LruHashMap::new();

/// The conntrack keys the agent's collector took out last (see
/// svc-common's CollectMark).
#[btf_map]
pub static CT_COLLECT_V1: LruHashMap<FlowKey, CollectMark, { MAX_COLLECT_MARKS as usize }> =
    LruHashMap::new();

/// A token bucket of answers (reject.rs).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RejectBudget {
    pub tokens: u64,
    pub refilled_ns: u64,
}

/// Each CPU's budget of resets and ICMP errors (one entry). Only the
/// programs use it: it is not pinned, nor in svc-common.
#[btf_map]
pub static REJECT_BUDGET: PerCpuArray<RejectBudget, 1> = PerCpuArray::new();

/// Per-frontend packet and byte counters, indexed by rev_nat_id.
#[btf_map]
pub static FE_STATS_V1: PerCpuArray<FrontendCounters, { MAX_FRONTENDS as usize }> =
    PerCpuArray::new();

/// Per-reason counters of packets not forwarded as they came.
#[btf_map]
pub static DROPS_V2: PerCpuArray<DropCounters, { DropReason::SLOTS as usize }> = PerCpuArray::new();

/// sessionAffinity ClientIP: (frontend, client) → backend last used.
#[btf_map]
pub static AFFINITY_V1: LruHashMap<AffinityKey, Affinity, { MAX_AFFINITY as usize }> =
    LruHashMap::new();

/// loadBalancerSourceRanges: (frontend, client prefix) → allowed. A
/// prefix length counts the 32 bits of rev_nat_id and then the CIDR's.
#[btf_map]
pub static SRC_RANGES_V1: LpmTrie<SourceRange, u8, { MAX_SOURCE_RANGES as usize }> = LpmTrie::new();

/// The prefix length of one client address of one frontend (rev_nat_id's
/// 32 bits and all of the address's): what a lookup asks for.
pub const SRC_RANGES_HOST_PREFIX: u32 = 32 + 32;

/// A reading of the coarse clock, and the jiffy it was read in.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ClockReading {
    pub jiffy: u64,
    pub ns: u64,
}

/// The coarse clock as each CPU last read it (one entry; clock.rs). Only
/// the programs use it: it is not pinned, nor in svc-common.
#[btf_map]
pub static CLOCK_V1: PerCpuArray<ClockReading, 1> = PerCpuArray::new();

/// One direction of a cached flow: the packet's 5-tuple and what it becomes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CachedFlow {
    /// The packet's 5-tuple and attach point ([`flow_cache::key`]).
    pub key: [u64; 2],
    /// The jiffy (timer tick) from which on the slot is not used.
    pub valid_until_jiffy: u64,
    /// TABLES_GEN_V1 when the slot was filled.
    pub generation: u64,
    /// The packet's new source and destination, network order (equal to
    /// the old ones where that side is not translated).
    pub saddr_be: u32,
    pub daddr_be: u32,
    pub sport_be: u16,
    pub dport_be: u16,
    /// Frontend whose counters each packet adds to, with [`COUNTED`].
    pub rev_nat_id: u32,
    /// [`COUNTED`].
    pub flags: u32,
    /// What the rewrite adds to the IPv4 header checksum, and to the L4
    /// checksum (csum.rs `change`s, summed when the slot was filled), for
    /// program types that fold them in at once (see packet.rs
    /// `SummedRewrite`).
    pub l3_csum_change: u32,
    pub l4_csum_change: u32,
    /// FLOW_CACHE_EPOCHS of the slot's index when it was filled.
    pub epoch: u32,
}
const _: () = assert!(size_of::<CachedFlow>() == 64);

/// Packets of the slot count for frontend `rev_nat_id` (the original
/// direction; replies are not counted).
pub const COUNTED: u32 = 1 << 0;

/// The flow cache (cache.rs), per CPU. Only the programs use it: it is not
/// pinned, nor in svc-common, and each load of the programs starts empty.
#[btf_map]
pub static FLOW_CACHE: PerCpuArray<CachedFlow, { flow_cache::SLOTS as usize }> = PerCpuArray::new();

/// Per flow cache slot index, shared by all CPUs: raised by every SYN of a
/// tuple with that index, retiring what any CPU cached there (cache.rs).
/// Not pinned either.
#[btf_map]
pub static FLOW_CACHE_EPOCHS: Array<u32, { flow_cache::SLOTS as usize }> = Array::new();

/// Scratch space for one route lookup's argument (route.rs), per CPU: too
/// big for the BPF stack beside the rest. Not pinned.
#[btf_map]
pub static FIB_SCRATCH: PerCpuArray<bpf_fib_lookup, 1> = PerCpuArray::new();

/// Where the outer header of a packet sent by direct server return is
/// put together (tunnel.rs), per CPU: the TC programs' stack has no room
/// for it. Not pinned.
#[btf_map]
pub static OUTER_SCRATCH: PerCpuArray<Ipv4Header, 1> = PerCpuArray::new();

/// The agent's count of changes to the tables (one entry): a cached flow
/// copied from older tables is not used.
#[btf_map]
pub static TABLES_GEN_V1: Array<TablesGeneration, 1> = Array::new();

/// The cluster's service CIDRs (one entry): see svc-common's ServiceCidrs.
#[btf_map]
pub static SVC_CIDRS_V1: Array<ServiceCidrs, 1> = Array::new();

/// The cluster's IPv6 service CIDRs (one entry): svc-common's
/// ServiceCidrs6.
#[btf_map]
pub static SVC_CIDRS6_V1: Array<ServiceCidrs6, 1> = Array::new();

/// The Maglev frontends' lookup tables, one after another (svc-common's
/// maglev module): each entry a backend id, 0 for none. A frontend's
/// header says where its table starts and how long it is. An array, as
/// Katran keeps its rings: one lookup, no hashing, 32 MiB whatever the
/// cluster holds. Mmapable: the agent writes a table into its memory.
#[btf_map]
pub static MAGLEV_V1: Array<
    MaglevEntry,
    { maglev::MAX_ENTRIES as usize },
    { BPF_F_MMAPABLE as usize },
> = Array::new();

/// This node's addresses (one entry, index 0).
#[btf_map]
pub static CONFIG_V1: Array<NodeConfig, 1> = Array::new();

/// The host sides of pod veths (ifindex → 0; svc_common's names::POD_IFACES).
#[btf_map]
pub static POD_IFACES_V1: LruHashMap<u32, u32, { MAX_POD_IFACES as usize }> = LruHashMap::new();

/// The node's own network namespace (svc_common::HostNetns, index 0).
#[btf_map]
pub static HOST_NETNS_V1: Array<HostNetns, 1> = Array::new();

/// Socket-level load balancing: which frontend a connected socket's backend
/// stands for (UDP replies, getpeername).
#[btf_map]
pub static SOCK_RNAT_V1: LruHashMap<SockKey, RevNat, { MAX_SOCKETS as usize }> = LruHashMap::new();

/// SOCK_RNAT_V1 of sockets pointed at IPv6 backends.
#[btf_map]
pub static SOCK_RNAT6_V1: LruHashMap<SockKey6, RevNat6, { MAX_SOCKETS as usize }> =
    LruHashMap::new();

/// Interfaces whose driver transmits XDP frames (ifindex → its XDP
/// features, netdev's NETDEV_XDP_ACT_* bits), written by the agent. XDP
/// sends a packet out of (or back out of) one of these only: redirected
/// to any other (a VLAN, a VXLAN, a veth whose peer has no XDP program),
/// the kernel drops it. The TC program, whose skbs go anywhere, takes
/// such packets instead. Until the agent first fills it (key
/// XDP_TARGETS_KNOWN), every interface counts as one. Not pinned.
#[btf_map]
pub static XDP_TARGETS_V1: HashMap<u32, u64, { MAX_XDP_TARGETS as usize }, AGENT_WRITTEN> =
    HashMap::new();
