//! Maglev backend selection (Eisenbud et al., NSDI 2016), the part the
//! kernel programs and the agent must compute alike.
//!
//! The agent builds each Maglev frontend a lookup table of `size` entries
//! (a prime) from its backends' identities only, so every node builds the
//! same table for the same backends; MAGLEV_V1 holds the tables one after
//! another, each entry a backend id. A new flow takes the entry its
//! 5-tuple's [`flow_hash`] names: the same flow gets the same backend on
//! every node.

/// Entries of a frontend's table unless `--maglev-table-size` says
/// otherwise: a prime, about 100 times the backends a Service usually has
/// (the paper asks for M >> N; Cilium's default is the same).
pub const DEFAULT_TABLE_SIZE: u16 = 16_381;

/// The largest prime a table size may be: it is held in a u16.
pub const MAX_TABLE_SIZE: u16 = 65_521;

/// The smallest table size taken: smaller tables spread flows too coarsely
/// to be worth a lookup.
pub const MIN_TABLE_SIZE: u16 = 251;

/// MAGLEV_V1's entries: 256 tables of the default size, 64 of the
/// largest. 32 MiB of kernel memory: an array stores each 4-byte entry in
/// 8 bytes.
pub const MAX_ENTRIES: u32 = 4_194_304;

/// Arbitrary, fixed: every node must hash a flow alike.
const SEED: u32 = 0x5f3c_91a7;

/// An IPv6 address folded into one word for [`flow_hash`]: its four
/// words (as the packet holds them) xored.
#[inline(always)]
pub const fn fold_ipv6(addr: [u8; 16]) -> u32 {
    word(&addr, 0) ^ word(&addr, 4) ^ word(&addr, 8) ^ word(&addr, 12)
}

#[inline(always)]
const fn word(addr: &[u8; 16], at: usize) -> u32 {
    u32::from_ne_bytes([addr[at], addr[at + 1], addr[at + 2], addr[at + 3]])
}

/// The 5-tuple's hash (addresses and ports in network order, as the
/// packet holds them), which picks the flow's table entry.
#[inline(always)]
pub const fn flow_hash(
    saddr_be: u32,
    daddr_be: u32,
    sport_be: u16,
    dport_be: u16,
    protocol: u8,
) -> u32 {
    let ports = ((sport_be as u32) << 16) | dport_be as u32;
    let mut hash = mix(SEED ^ saddr_be);
    hash = mix(hash ^ daddr_be);
    hash = mix(hash ^ ports);
    mix(hash ^ protocol as u32)
}

/// MurmurHash3's 32-bit finalizer: every input bit reaches every output bit.
#[inline(always)]
const fn mix(mut hash: u32) -> u32 {
    hash ^= hash >> 16;
    hash = hash.wrapping_mul(0x85eb_ca6b);
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(0xc2b2_ae35);
    hash ^ (hash >> 16)
}

/// The MAGLEV_V1 index of a flow's entry in the table that starts at
/// `start` and has `size` entries.
#[inline(always)]
pub const fn entry_index(start: u32, size: u16, hash: u32) -> u32 {
    start.wrapping_add(hash % size as u32)
}
