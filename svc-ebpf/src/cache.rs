//! A per-CPU exact-match cache of established flows in front of conntrack
//! (the idea of Open vSwitch's EMC). A packet of a flow the cache holds is
//! rewritten from its slot, found by array indexing that the verifier
//! inlines, with the checksum changes summed when the slot was filled. The
//! conntrack path calls into the kernel's hash table (on the project's VM,
//! with retpolines and Safe-RET, ~20 ns of a ~70 ns hit) and works the
//! rewrite out again for every packet. `bench packet` measures both.
//!
//! A slot is a copy of what the slow path decided for one direction of a
//! flow, so it is used only while that decision cannot have changed:
//! - the tables it was made from are the current ones: the agent raises
//!   TABLES_GEN_V1 after every change, which retires every slot;
//! - the conntrack entry needs no write: a slot lives [`SLOT_TICKS`] timer
//!   ticks (25 to 250 ms, by the kernel's HZ), then the slow path takes a
//!   packet again and fills the slot anew. So the slow path still sees
//!   every busy flow several times a second, which keeps touching
//!   `last_seen` (at most once a second anyway, ct.rs) and checking expiry
//!   as without the cache; a busy entry evicted from a full table is
//!   noticed that late at most;
//! - the packet changes no state: FIN and RST (closing) take the slow
//!   path, and so does SYN (opening);
//! - the slot belongs to this connection, not to an earlier one on the
//!   same 5-tuple: a client port used again at once (within the slot's
//!   life) may go to another backend. Every SYN raises its slot index's
//!   epoch in FLOW_CACHE_EPOCHS, one array shared by all CPUs, which
//!   retires what any CPU cached at that index;
//! - the decision depended on nothing but the 5-tuple and the attach
//!   point: only flows the slow path handed to the stack are cached (not
//!   the ones routed by the program, whose route can change), and packets
//!   that may need an ICMP answer (a TTL running out, the path MTU check:
//!   see flow.rs) take the slow path.
//!
//! One slot per hash: a flow whose hash collides takes the slot over.
//! Per CPU: no locks and no torn slots, and with RSS a flow's packets stay
//! on one CPU.
use aya_ebpf::helpers::bpf_jiffies64;
use svc_common::{DropReason, flow_cache};

use crate::{
    csum,
    headers::{TCP_FIN, TCP_RST, TCP_SYN},
    maps::{COUNTED, CachedFlow, FLOW_CACHE, FLOW_CACHE_EPOCHS, TABLES_GEN_V1},
    packet::{Ipv4Flow, Origin, Packet, SummedRewrite},
    route,
};

/// What the slow path decided for a flow's direction, to be cached.
pub struct Decision {
    pub saddr_be: u32,
    pub daddr_be: u32,
    pub sport_be: u16,
    pub dport_be: u16,
    /// The frontend counted per packet, if any.
    pub counted: Option<u32>,
}

/// How many timer ticks a slot is used for: 25 ms at HZ=1000, 100 ms at
/// HZ=250, 250 ms at HZ=100. Counted in ticks, so a hit reads only the
/// jiffies counter (a load: the verifier inlines bpf_jiffies64).
pub const SLOT_TICKS: u64 = 25;

#[inline(always)]
fn jiffies() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_jiffies64() }
}

/// A packet's way into the cache: its direction's key, and the tables'
/// generation, read before the slow path reads the tables and stamped on
/// the slot it fills, so a change made meanwhile retires the slot.
pub struct Probe {
    key: [u64; 2],
    /// The key's slot index.
    slot: u32,
    generation: u64,
}

impl Probe {
    /// For a packet like `flow` arriving from `origin`.
    #[inline(always)]
    pub fn new(flow: &Ipv4Flow, origin: Origin) -> Self {
        let key = flow_cache::key(
            (flow.saddr_be, flow.daddr_be),
            (flow.sport_be, flow.dport_be),
            flow.proto,
            origin == Origin::World,
        );
        Self {
            key,
            slot: flow_cache::slot(&key),
            generation: TABLES_GEN_V1.get(0).map_or(0, |g| g.generation),
        }
    }

    /// The slot index's epoch now.
    #[inline(always)]
    fn epoch(&self) -> u32 {
        FLOW_CACHE_EPOCHS.get(self.slot).copied().unwrap_or(0)
    }

    /// The cached decision for this packet, when one holds (see the module
    /// docs).
    #[inline(always)]
    pub fn lookup<P: Packet>(&self, pkt: &P, flow: &Ipv4Flow) -> Option<CachedFlow> {
        // Packets that change the flow's state or may need an ICMP answer
        // are checked for first: a SYN, say, need not read a slot (a cache
        // miss of its own) to find the flow is not there.
        if flow.tcp_flags & TCP_SYN != 0 {
            // A connection opens (or answers its opening) on this tuple:
            // what any CPU cached for it was an earlier one's.
            if let Some(epoch) = FLOW_CACHE_EPOCHS.get_ptr_mut(self.slot) {
                // SAFETY: an array element; a lost increment between two
                // CPUs still changes the value, which is all that counts.
                unsafe { *epoch = (*epoch).wrapping_add(1) };
            }
            return None;
        }
        if flow.tcp_flags & (TCP_FIN | TCP_RST) != 0
            || flow.ttl <= 1
            || route::may_be_too_big(pkt, flow)
        {
            return None;
        }
        let slot = FLOW_CACHE.get_ptr(self.slot)?;
        // SAFETY: per-CPU slot, only this CPU writes it, and not while we run.
        let cached = unsafe { &*slot };
        let usable = cached.key == self.key
            && cached.generation == self.generation
            && jiffies() < cached.valid_until_jiffy
            && cached.epoch == self.epoch();
        usable.then_some(*cached)
    }

    /// Caches `decision` for the packets like `flow` that follow.
    #[inline(always)]
    pub fn fill(&self, flow: &Ipv4Flow, decision: &Decision) {
        let Some(slot) = FLOW_CACHE.get_ptr_mut(self.slot) else {
            return;
        };
        let epoch = self.epoch();
        let (rev_nat_id, counted) = match decision.counted {
            Some(id) => (id, COUNTED),
            None => (0, 0),
        };
        let l3_csum_change = csum::address_change(flow.saddr_be, decision.saddr_be)
            + csum::address_change(flow.daddr_be, decision.daddr_be);
        let l4_csum_change = l3_csum_change
            + csum::port_change(flow.sport_be, decision.sport_be)
            + csum::port_change(flow.dport_be, decision.dport_be);
        // SAFETY: per-CPU slot, only this CPU writes it, and not while we run.
        unsafe {
            *slot = CachedFlow {
                key: self.key,
                valid_until_jiffy: jiffies() + SLOT_TICKS,
                generation: self.generation,
                saddr_be: decision.saddr_be,
                daddr_be: decision.daddr_be,
                sport_be: decision.sport_be,
                dport_be: decision.dport_be,
                rev_nat_id,
                flags: counted,
                l3_csum_change,
                l4_csum_change,
                epoch,
            };
        }
    }
}

/// Rewrites a packet like `flow` as the slot `hit` says.
#[inline(always)]
pub fn rewrite<P: Packet>(pkt: &P, flow: &Ipv4Flow, hit: &CachedFlow) -> Result<(), DropReason> {
    let to = SummedRewrite {
        saddr_be: hit.saddr_be,
        daddr_be: hit.daddr_be,
        sport_be: hit.sport_be,
        dport_be: hit.dport_be,
        l3_csum_change: hit.l3_csum_change,
        l4_csum_change: hit.l4_csum_change,
    };
    pkt.rewrite_summed(flow, &to)
}
