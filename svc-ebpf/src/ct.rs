//! Connection tracking: a translated flow keeps its backend (and its source
//! NAT port) for its whole life, whatever happens to the Service's backend
//! set meanwhile.
//!
//! A flow has two entries, one per direction, and a lifecycle (timeouts in
//! svc_common::flow_timeout_ns):
//! - **new**: its first packet puts both entries in CT_NEW_V2, a smaller
//!   LRU table of its own. A reply marks both SEEN_REPLY. Spoofed SYNs
//!   never get further, so a flood of them evicts only its own kind and
//!   expires in seconds;
//! - **established**: the originator's first segment without SYN after a
//!   reply (the handshake's last ACK; for UDP the reply itself) moves both
//!   entries to CT_V2;
//! - **closing**: a FIN, or a RST that fits the flow, marks both closing:
//!   65 s after a FIN (the peer's TIME_WAIT, and a margin), 10 s after a
//!   RST; a SYN on the same tuple afterwards starts a new flow.
//!   A RST fits when its sequence number is near the one its direction's
//!   entry expects next (see [`rst_fits`]): a blind spoofed RST, which
//!   would otherwise cut a long idle connection's state to 10 s, does not;
//! - **gone**: an expired entry is removed by the next packet that finds
//!   it, by a NAT port claim that finds it, or by the agent's collector.
//!
//! The two entries of a flow live and die together: whatever one direction
//! learns (time, state) is written to both, and a forward entry whose NAT
//! port now belongs to another flow is dead, never used.
use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::bpf_get_prandom_u32,
};
use svc_common::{
    Backend, COLLECT_MARK_HOLD_NS, DropReason, Flow, FlowKey, RevNat, flow_flags, flow_timeout_ns,
    flow_timeouts, proto, time_units,
};

use crate::{
    clock::now,
    headers::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    lb,
    maps::{CT_COLLECT_V1, CT_NEW_V2, CT_V2},
    packet::{Ipv4Flow, Origin},
};

/// How many ports are tried (after the client's own) before SNAT takes one
/// from a flow that is not established.
const NAT_PORT_TRIES: u32 = 32;

/// A flow not established yet keeps its NAT port at least this long: a
/// real client's handshake (an RTT) is done well before, while a spoofed
/// SYN's flow never will be. Under a flood faster than the range renews in
/// this time, new SYNs find no port and are dropped; their clients retry.
const MIN_AGE_TO_TAKE_NS: u64 = 250_000_000;

/// A closing flow keeps its NAT port while any packet of it passed in this
/// long: after a FIN the other side may still send (a half-closed
/// connection), and a segment lost under load comes again after an RTO
/// (a second and up). A flow whose port were taken then would be reset.
/// Its last packet's time is known to within [`TOUCH_EVERY_NS`].
const CLOSING_IDLE_TO_TAKE_NS: u64 = 5_000_000_000;

/// How far a RST's sequence number may be from the one its direction's
/// entry expects next, ahead and behind. Ahead covers data conntrack did
/// not see: established packets served from the flow cache (up to its
/// slot lifetime, 25 ticks) leave the entry's number behind; behind covers
/// a RST answering a retransmission. A blind RST fits by chance with
/// odds (ahead + behind) / 2^32, about 1 in 250, as with netfilter's
/// window check; a RST that does not fit is forwarded (the endpoint checks
/// it more strictly, RFC 5961) but moves no state.
const RST_AHEAD: u32 = 1 << 24;
const RST_BEHIND: u32 = 1 << 16;

/// Whether a RST with sequence number `seq` can belong to a direction
/// whose next sequence number is `next`.
#[inline(always)]
pub fn rst_fits(seq: u32, next: u32) -> bool {
    seq.wrapping_sub(next).wrapping_add(RST_BEHIND) <= RST_AHEAD + RST_BEHIND
}

/// last_seen is rewritten at most this often: a write on every packet
/// would keep bouncing the entry's cache line between CPUs.
const TOUCH_EVERY_NS: u64 = 1_000_000_000;

/// A conntrack key. Built by assigning into an all-zero constant: a struct
/// literal's `_pad: [0; 3]` (3 unaligned bytes) compiles to a call to a
/// memset subprogram, on every packet.
#[inline(always)]
pub fn flow_key(saddr_be: u32, daddr_be: u32, sport_be: u16, dport_be: u16, proto: u8) -> FlowKey {
    const EMPTY: FlowKey = FlowKey {
        saddr_be: 0,
        daddr_be: 0,
        sport_be: 0,
        dport_be: 0,
        proto: 0,
        _pad: [0; 3],
    };
    let mut key = EMPTY;
    key.saddr_be = saddr_be;
    key.daddr_be = daddr_be;
    key.sport_be = sport_be;
    key.dport_be = dport_be;
    key.proto = proto;
    key
}

/// The key of this packet's own direction.
#[inline(always)]
pub fn key_of(flow: &Ipv4Flow) -> FlowKey {
    flow_key(
        flow.saddr_be,
        flow.daddr_be,
        flow.sport_be,
        flow.dport_be,
        flow.proto,
    )
}

/// The two tables a flow's entries live in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Table {
    /// CT_V2.
    Established,
    /// CT_NEW_V2.
    New,
}

impl Table {
    #[inline(always)]
    fn get_ptr_mut(self, key: &FlowKey) -> Option<*mut Flow> {
        match self {
            Table::Established => CT_V2.get_ptr_mut(key),
            Table::New => CT_NEW_V2.get_ptr_mut(key),
        }
    }

    #[inline(always)]
    fn insert(self, key: &FlowKey, entry: &Flow, flags: u32) -> Result<(), DropReason> {
        let inserted = match self {
            Table::Established => CT_V2.insert(key, entry, u64::from(flags)),
            Table::New => CT_NEW_V2.insert(key, entry, u64::from(flags)),
        };
        inserted.map_err(|_| DropReason::FlowInsertFailed)
    }

    #[inline(always)]
    fn remove(self, key: &FlowKey) {
        // Absent already is as good as removed.
        let _ = match self {
            Table::Established => CT_V2.remove(key),
            Table::New => CT_NEW_V2.remove(key),
        };
    }
}

/// A flow's entry for one packet's direction, as [`lookup`] left it:
/// where it lies in its map, not a copy (the BPF stack has no room for
/// one). Valid while the program runs; another CPU may rewrite it
/// meanwhile, as it could have while a copy was being made.
pub struct Tracked {
    pub entry: *const Flow,
    /// The flow is established (in CT_V2): only then is it worth caching.
    pub established: bool,
}

/// The entry of a flow's other direction, from `entry` (this packet's).
/// None for a reply entry whose frontend is gone.
#[inline(always)]
fn peer_key(entry: &Flow, flow: &Ipv4Flow, origin: Origin) -> Option<FlowKey> {
    let snat = entry.flags & flow_flags::SNAT != 0;
    if entry.flags & flow_flags::REPLY == 0 {
        // Client → frontend; its replies come backend → client, or
        // backend → (NAT address, port).
        let (addr_be, port_be) = if snat {
            (entry.nat_addr_be, entry.nat_port_be)
        } else {
            (flow.saddr_be, flow.sport_be)
        };
        return Some(flow_key(
            entry.backend_addr_be,
            addr_be,
            entry.backend_port_be,
            port_be,
            flow.proto,
        ));
    }
    let frontend = frontend_of(entry, origin)?;
    let (addr_be, port_be) = if snat {
        (entry.nat_addr_be, entry.nat_port_be)
    } else {
        (flow.daddr_be, flow.dport_be)
    };
    Some(flow_key(
        addr_be,
        frontend.addr_be,
        port_be,
        frontend.port_be,
        flow.proto,
    ))
}

/// The frontend a flow's replies come from: its rev_nat_id's, with the
/// address a flow another node delivered here keeps in its place, if any
/// (another node's address for a NodePort; not one of this node's own, so
/// no flags). None when the frontend is gone from this node.
///
/// A delivered flow's backend is a pod of this node, so its replies come
/// only from pods: the NIC programs, whose stack has no room for it, skip
/// the override (`origin` is a constant where this is inlined).
#[inline(always)]
pub fn frontend_of(entry: &Flow, origin: Origin) -> Option<RevNat> {
    // The override after the lookup, not a branch around it: LLVM merges
    // two sources of the value into code the verifier refuses.
    let mut frontend = lb::rev_nat(entry.rev_nat_id)?;
    if origin == Origin::Pod && entry.flags & flow_flags::DELIVERED != 0 && entry.backend_id != 0 {
        frontend.addr_be = entry.backend_id;
        frontend.flags = 0;
    }
    Some(frontend)
}

/// The reply entry that belongs with a forward entry, for a packet `flow`
/// of the forward direction.
#[inline(always)]
fn reply_of(forward: &Flow, flow: &Ipv4Flow) -> Flow {
    let mut reply = *forward;
    reply.flags = (forward.flags | flow_flags::REPLY) & !flow_flags::SEQ_KNOWN;
    if forward.flags & flow_flags::SNAT != 0 {
        reply.nat_addr_be = flow.saddr_be;
        reply.nat_port_be = flow.sport_be;
    }
    reply
}

/// Whether `peer` is the reply entry of forward entry `forward`, whose
/// packet `flow` is: a reply entry of the same frontend that, with source
/// NAT, sends back to this client.
#[inline(always)]
fn answers(peer: &Flow, forward: &Flow, flow: &Ipv4Flow) -> bool {
    peer.flags & flow_flags::REPLY != 0
        && peer.rev_nat_id == forward.rev_nat_id
        && (forward.flags & flow_flags::SNAT == 0
            || (peer.nat_addr_be == flow.saddr_be && peer.nat_port_be == flow.sport_be))
}

/// Looks the packet's direction up, in CT_V2 and then CT_NEW_V2, and
/// moves the flow along its lifecycle (see the module docs). An expired
/// entry, or a forward entry whose NAT port another flow holds now, is
/// removed and reported as absent: the packet starts a new flow.
///
/// Both entries are changed where they lie in the map, through their
/// pointers, and handed to the map helpers from there: copies of them on
/// the BPF stack, next to everything else the programs keep there, would
/// not fit its 512 bytes.
#[inline(always)]
pub fn lookup(key: &FlowKey, flow: &Ipv4Flow, origin: Origin) -> Option<Tracked> {
    let (table, entry) = match CT_V2.get_ptr_mut(key) {
        Some(entry) => (Table::Established, entry),
        None => (Table::New, CT_NEW_V2.get_ptr_mut(key)?),
    };
    let now = now();
    let established = table == Table::Established;
    // SAFETY (every access to `entry` and `peer` below): map values stay
    // valid until their key is updated or removed, which happens only where
    // noted; fields are read and written one at a time.
    let (mut flags, last_seen_ns, next_seq) =
        unsafe { ((*entry).flags, (*entry).last_seen_ns, (*entry).next_seq) };
    let idle = now.saturating_sub(last_seen_ns);
    let reply = flags & flow_flags::REPLY != 0;
    // A connection opened again on the tuple of one that closed (a client
    // port reused within the closing timeout) is a new flow, as netfilter
    // treats it: kept on the old, closing entry it would be forgotten
    // 10 s into its first idle spell.
    let reopens = !reply
        && flags & flow_flags::CLOSING != 0
        && flow.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    if reopens {
        // Its reply entry (and NAT port) goes with it, if that is still
        // its own: the port of a closing flow may have gone to another
        // flow (see `claim_port`), whose reply entry has the same key.
        // SAFETY: read where they lie, before the removals.
        if let Some(peer_key) = peer_key(unsafe { &*entry }, flow, origin)
            && table
                .get_ptr_mut(&peer_key)
                .is_some_and(|peer| unsafe { answers(&*peer, &*entry, flow) })
        {
            table.remove(&peer_key);
        }
        table.remove(key);
        return None;
    }
    if idle > flow_timeout_ns(flags, flow.proto, established) {
        table.remove(key);
        return None;
    }
    let snat = flags & flow_flags::SNAT != 0;
    let syn = flow.tcp_flags & TCP_SYN != 0;
    let seq_known = flags & flow_flags::SEQ_KNOWN != 0;
    let rst = flow.tcp_flags & TCP_RST != 0;
    if flow.proto == proto::TCP && !rst {
        // The direction's next sequence number, kept as it moves forward.
        let end = flow.tcp_seq_end();
        if !seq_known || (end.wrapping_sub(next_seq) as i32) > 0 {
            flags |= flow_flags::SEQ_KNOWN;
            unsafe {
                (*entry).next_seq = end;
                (*entry).flags = flags;
            }
        }
    }
    let fits = !rst || !seq_known || rst_fits(u32::from_be(flow.tcp_seq_be), next_seq);
    let closes =
        (flow.tcp_flags & TCP_FIN != 0 || (rst && fits)) && flags & flow_flags::CLOSING == 0;
    // A RST, also after a FIN: no peer keeps the tuple in TIME_WAIT now,
    // so the short timeout applies.
    let resets = rst && fits && flags & flow_flags::RESET == 0;
    let answered = reply && !established && flags & flow_flags::SEEN_REPLY == 0;
    let establishes = !established
        && if flow.proto == proto::TCP {
            // A tunnelled flow's replies never pass here: its client's
            // handshake ACK is the sign the backend answered.
            !reply && !syn && flags & (flow_flags::SEEN_REPLY | flow_flags::TUNNELLED) != 0
        } else {
            reply
        };
    let touch = idle > TOUCH_EVERY_NS;
    // The flow's age is read only for the packets it can decide.
    let streams = established
        && flow.proto == proto::UDP
        && flags & flow_flags::STREAM == 0
        // SAFETY: read where it lies.
        && time_units(now).wrapping_sub(unsafe { (*entry).created_units })
            > time_units(flow_timeouts::UDP_STREAM_AFTER_NS);
    // A forward entry with SNAT must still own its port (every packet: such
    // flows are never cached); one without is checked on a SYN (a client
    // retrying) and on the once-a-second touch.
    let check_peer = !reply && (snat || syn);
    if closes || resets || answered || establishes || touch || check_peer || streams {
        let mut shared = 0;
        if streams {
            shared |= flow_flags::STREAM;
        }
        if closes {
            shared |= flow_flags::CLOSING;
        }
        if resets {
            shared |= flow_flags::CLOSING | flow_flags::RESET;
        }
        if answered {
            shared |= flow_flags::SEEN_REPLY;
        }
        unsafe {
            // A closing flow's last packet is when it closed, at least:
            // how long it stayed quiet since decides whether its NAT port
            // may be taken (see `claim_port`).
            if touch || closes {
                (*entry).last_seen_ns = now;
            }
            (*entry).flags = flags | shared;
        }
        // SAFETY: read where it lies.
        if let Some(peer_key) = peer_key(unsafe { &*entry }, flow, origin) {
            let mut peer = table.get_ptr_mut(&peer_key);
            // How the reply entry is made again, if it is: over another
            // flow's (BPF_ANY) or where there is none (BPF_NOEXIST).
            let restore = match peer {
                // SAFETY: read where it lies.
                Some(holder) => unsafe {
                    if !reply
                        && snat
                        && ((*holder).flags & flow_flags::REPLY == 0
                            || (*holder).nat_addr_be != flow.saddr_be
                            || (*holder).nat_port_be != flow.sport_be)
                    {
                        // The port went to another flow (this one was not
                        // established and the ports ran short). The
                        // handshake's last ACK, from a client the backend
                        // answered on this port, takes it back from a
                        // flow that has not shown a live client yet (a
                        // SYN, most likely spoofed): the backend knows
                        // this connection on that port. Anything else
                        // finds this entry dead.
                        if !(establishes && !rst) || CT_V2.get_ptr(peer_key).is_some() {
                            table.remove(key);
                            return None;
                        }
                        Some(BPF_ANY)
                    } else {
                        None
                    }
                },
                None if !reply && snat && flags & flow_flags::CLOSING != 0 => {
                    // A closing flow's NAT port taken when the ports ran
                    // short (see `claim_port`): this entry is dead.
                    table.remove(key);
                    return None;
                }
                None if !reply => {
                    // The reply entry is gone (evicted, or expired first):
                    // made again. With SNAT that claims the same port, if
                    // it is free, also of established flows.
                    if snat && table == Table::New && CT_V2.get_ptr(peer_key).is_some() {
                        table.remove(key);
                        return None;
                    }
                    Some(BPF_NOEXIST)
                }
                None => None,
            };
            if let Some(mode) = restore {
                // SAFETY: read where it lies.
                let restored = reply_of(unsafe { &*entry }, flow);
                match table.insert(&peer_key, &restored, mode) {
                    Ok(()) => peer = table.get_ptr_mut(&peer_key),
                    Err(_) if snat => {
                        table.remove(key);
                        return None;
                    }
                    // Made meanwhile by another packet of the flow.
                    Err(_) => {}
                }
            }
            if let Some(peer) = peer {
                unsafe {
                    if touch || closes {
                        (*peer).last_seen_ns = now;
                    }
                    (*peer).flags |= shared;
                }
                if establishes {
                    return Some(promote(key, entry, &peer_key, peer));
                }
            }
        }
    }
    Some(Tracked { entry, established })
}

/// Moves an established flow's two entries from CT_NEW_V2 to CT_V2. Both
/// are in CT_V2 before either leaves CT_NEW_V2: a lookup on another CPU
/// finds the flow in one table or the other. The entry handed back is the
/// one in CT_V2 (the CT_NEW_V2 one is gone).
#[inline(always)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "a borrow hands the helper the map's own copy; a value would be copied onto the BPF stack first"
)]
fn promote(key: &FlowKey, entry: *mut Flow, peer_key: &FlowKey, peer: *mut Flow) -> Tracked {
    // SAFETY: both pointers are valid until their keys are removed below;
    // the helpers copy the values they are handed.
    unsafe {
        let _ = CT_V2.insert(peer_key, &*peer, u64::from(BPF_ANY));
        let _ = CT_V2.insert(key, &*entry, u64::from(BPF_ANY));
    }
    let Some(moved) = CT_V2.get_ptr(key) else {
        // Not moved (the insert failed): it stays new, for now.
        return Tracked {
            entry,
            established: false,
        };
    };
    let _ = CT_NEW_V2.remove(key);
    let _ = CT_NEW_V2.remove(peer_key);
    Tracked {
        entry: moved,
        established: true,
    }
}

/// Whether the agent's collector marked `key` a moment ago: it took the
/// key's entry out of its table and may be putting it back (see
/// svc-common's CollectMark). Asked only when a TCP segment of a
/// connection under way finds no entry, which is rare.
#[inline(always)]
pub fn being_collected(key: &FlowKey) -> bool {
    // SAFETY: one field read in place.
    CT_COLLECT_V1.get_ptr(key).is_some_and(|mark| {
        now().saturating_sub(unsafe { (*mark).marked_ns }) < COLLECT_MARK_HOLD_NS
    })
}

/// The entry for `key` in either table, as it is; no state changes (for
/// ICMP errors quoting a flow's packet).
#[inline(always)]
pub fn find(key: &FlowKey) -> Option<Flow> {
    // SAFETY: copied out at once.
    unsafe { CT_V2.get(key).or_else(|| CT_NEW_V2.get(key)) }.copied()
}

/// Source NAT for a new flow: the address it gets, and the port range.
/// Not an `Option`: where LLVM merges paths it reads an option's data from
/// stack slots that hold something else on the `None` path, which the
/// verifier refuses; every field is set on every path instead.
pub struct Snat {
    /// Zero: the flow keeps its source.
    pub addr_be: u32,
    pub port_min: u16,
    pub port_max: u16,
}

impl Snat {
    pub const NONE: Snat = Snat {
        addr_be: 0,
        port_min: 0,
        port_max: 0,
    };
}

/// What a new flow was given.
pub struct Created {
    /// The source port after SNAT (network order); unchanged without SNAT.
    pub nat_port_be: u16,
}

/// Records both directions of a new translated flow in CT_NEW_V2, with
/// `flags` (none, [`flow_flags::TUNNELLED`] or [`flow_flags::DELIVERED`]).
/// With `snat` (an address), the flow's source becomes that
/// address and a port no other flow to the same backend uses (the
/// client's own port when free). Entries of
/// an earlier flow with the same keys in CT_V2 (a UDP flow whose backend
/// left) are removed, or lookups would keep finding them first.
#[inline(always)]
pub fn create(
    flow: &Ipv4Flow,
    backend_id: u32,
    backend: &Backend,
    rev_nat_id: u32,
    snat: Snat,
    flags: u16,
) -> Result<Created, DropReason> {
    let now = now();
    // One value and one key on the stack, made the reply entry first and
    // then the forward one (the helpers copy what they are handed): two of
    // each would not fit the BPF stack beside the rest of the program.
    let mut entry = Flow {
        backend_id,
        rev_nat_id,
        last_seen_ns: now,
        created_units: time_units(now),
        next_seq: 0,
        backend_addr_be: backend.addr_be,
        nat_addr_be: 0,
        backend_port_be: backend.port_be,
        nat_port_be: 0,
        flags: flow_flags::REPLY | flags,
        _pad: 0,
    };
    let mut key = flow_key(
        backend.addr_be,
        flow.saddr_be,
        backend.port_be,
        flow.sport_be,
        flow.proto,
    );
    let nat_port_be = if snat.addr_be == 0 {
        remove_established(&key);
        Table::New.insert(&key, &entry, BPF_ANY)?;
        entry.flags = flags;
        flow.sport_be
    } else {
        entry.flags |= flow_flags::SNAT;
        entry.nat_addr_be = flow.saddr_be;
        entry.nat_port_be = flow.sport_be;
        key.daddr_be = snat.addr_be;
        let port_be = claim_port(&mut key, &entry, flow.sport_be, &snat, now)?;
        entry.flags = flow_flags::SNAT | flags;
        entry.nat_addr_be = snat.addr_be;
        entry.nat_port_be = port_be;
        port_be
    };
    if flow.proto == proto::TCP {
        entry.flags |= flow_flags::SEQ_KNOWN;
        entry.next_seq = flow.tcp_seq_end();
    }
    key.saddr_be = flow.saddr_be;
    key.daddr_be = flow.daddr_be;
    key.sport_be = flow.sport_be;
    key.dport_be = flow.dport_be;
    remove_established(&key);
    Table::New.insert(&key, &entry, BPF_ANY)?;
    Ok(Created { nat_port_be })
}

/// Whether the tuple a new flow without source NAT would reach `backend`
/// on is held by a live flow of another frontend: the client's port is
/// already in use towards that backend, through another of its Service
/// addresses (a client may use one port towards two destinations; the
/// backend sees one tuple). Translated as it is, the new flow would take
/// the live one's replies. `kept_addr`: the address a flow another node
/// delivered here keeps for its replies, else 0 (see
/// flow_flags::DELIVERED).
#[inline(always)]
pub fn reply_tuple_taken(
    flow: &Ipv4Flow,
    backend: &Backend,
    rev_nat_id: u32,
    kept_addr_be: u32,
) -> bool {
    let key = flow_key(
        backend.addr_be,
        flow.saddr_be,
        backend.port_be,
        flow.sport_be,
        flow.proto,
    );
    let (holder, established) = match CT_V2.get_ptr(key) {
        Some(holder) => (holder, true),
        None => match CT_NEW_V2.get_ptr(key) {
            Some(holder) => (holder, false),
            None => return false,
        },
    };
    // SAFETY: read at once. The same frontend is the same client tuple:
    // this flow's own earlier entry (a SYN retried after its forward
    // entry went).
    let holder = unsafe { &*holder };
    // The same rev_nat_id with another kept address (a NodePort's port,
    // served on every node's address) is another frontend.
    let held_kept_be = if holder.flags & flow_flags::DELIVERED != 0 {
        holder.backend_id
    } else {
        0
    };
    (holder.rev_nat_id != rev_nat_id || held_kept_be != kept_addr_be)
        && !expired(holder, flow.proto, established, now())
}

/// Removes an entry of `key` from CT_V2, if there is one. Almost never is
/// there: a look first, which takes no lock, spares each new flow two
/// removals, which take the bucket's.
#[inline(always)]
fn remove_established(key: &FlowKey) {
    if CT_V2.get_ptr(key).is_some() {
        let _ = CT_V2.remove(key);
    }
}

/// Whether an entry was idle longer than its timeout allows.
#[inline(always)]
fn expired(entry: &Flow, protocol: u8, established: bool, now: u64) -> bool {
    now.saturating_sub(entry.last_seen_ns) > flow_timeout_ns(entry.flags, protocol, established)
}

/// Claims a source port for an SNATed flow by inserting its reply entry
/// into CT_NEW_V2 with BPF_NOEXIST: the insert itself is the atomic
/// test-and-set, so two flows (on any CPU) never share a (backend, node
/// address, port) triple. A port held by an established flow (CT_V2) is
/// skipped until that flow expires; one held by an expired flow is taken.
/// When every port tried is held, one is taken from the flow that needs it
/// least: the oldest among them not established (and older than
/// [`MIN_AGE_TO_TAKE_NS`]), else the closing one quiet the longest (and
/// longer than [`CLOSING_IDLE_TO_TAKE_NS`]). Under a flood of spoofed SYNs
/// or of short connections, real clients still get ports, while a real
/// handshake under way and a closing connection still talking keep their
/// own (the flow that lost its port finds out at its next packet, see
/// [`lookup`]; a handshake slower than that age, under a flood that keeps
/// the CPUs busy, gets its port back with its last ACK). A closing flow's
/// port taken before its timeout may still be in the backend's TIME_WAIT:
/// the client may lose a second to a SYN retry, which is better than no
/// port.
#[inline(always)]
fn claim_port(
    reply_key: &mut FlowKey,
    reply: &Flow,
    preferred_be: u16,
    snat: &Snat,
    now: u64,
) -> Result<u16, DropReason> {
    let min = u32::from(snat.port_min);
    let span = u32::from(snat.port_max).saturating_sub(min) + 1;
    // The client's own port first, when in the range; then consecutive
    // ports from a random one, so a range no longer than the tries is
    // searched whole.
    let preferred = u32::from(u16::from_be(preferred_be));
    // SAFETY: helper without arguments.
    let start = unsafe { bpf_get_prandom_u32() } % span;
    // The port of the oldest flow seen that is not established, and when
    // that flow was created: taken when no port is free.
    let mut oldest_port: u32 = 0;
    let mut oldest_created = time_units(now.saturating_sub(MIN_AGE_TO_TAKE_NS));
    // The port of the closing flow (in CT_V2) quiet the longest, and its
    // last packet's time: taken when no other is.
    let mut quietest_port: u32 = 0;
    let mut quietest_seen = now.saturating_sub(CLOSING_IDLE_TO_TAKE_NS);
    for attempt in 0..=NAT_PORT_TRIES {
        let port = if attempt == 0 {
            if preferred < min || preferred >= min + span {
                continue;
            }
            preferred as u16
        } else {
            (min + (start + attempt) % span) as u16
        };
        reply_key.dport_be = port.to_be();
        if let Some(holder) = CT_V2.get_ptr(*reply_key) {
            // SAFETY: read at once.
            let (flags, seen) = unsafe { ((*holder).flags, (*holder).last_seen_ns) };
            // SAFETY: read at once.
            if !expired(unsafe { &*holder }, reply_key.proto, true, now) {
                if flags & flow_flags::CLOSING != 0 && seen < quietest_seen {
                    quietest_seen = seen;
                    quietest_port = u32::from(port);
                }
                continue;
            }
            let _ = CT_V2.remove(*reply_key);
        }
        if Table::New.insert(reply_key, reply, BPF_NOEXIST).is_ok() {
            // A flow established between the look and the insert holds
            // the port now: give it back.
            if CT_V2.get_ptr(*reply_key).is_none() {
                return Ok(port.to_be());
            }
            Table::New.remove(reply_key);
        } else if let Some(holder) = CT_NEW_V2.get_ptr(*reply_key) {
            // SAFETY: read at once.
            if expired(unsafe { &*holder }, reply_key.proto, false, now) {
                Table::New.insert(reply_key, reply, BPF_ANY)?;
                return Ok(port.to_be());
            }
            // SAFETY: read at once.
            let created = unsafe { (*holder).created_units };
            if (created.wrapping_sub(oldest_created) as i32) < 0 {
                oldest_created = created;
                oldest_port = u32::from(port);
            }
        }
    }
    if oldest_port != 0 {
        reply_key.dport_be = (oldest_port as u16).to_be();
        Table::New.insert(reply_key, reply, BPF_ANY)?;
        return Ok(reply_key.dport_be);
    }
    if quietest_port != 0 {
        reply_key.dport_be = (quietest_port as u16).to_be();
        // Its forward entry finds its reply entry gone and dies.
        let _ = CT_V2.remove(*reply_key);
        Table::New.insert(reply_key, reply, BPF_ANY)?;
        return Ok(reply_key.dport_be);
    }
    Err(DropReason::NatPortsExhausted)
}
